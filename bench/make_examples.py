"""Regenerate examples/motorcycle.png + examples/motorcycle_depth.npy from scikit-image's Middlebury pair.

Source: ``skimage.data.stereo_motorcycle()`` (Middlebury 2014 "Motorcycle", 4x downsampled by scikit-image:
left image 500x741 and its disparity in px, invalid = inf). Calibration of that downsampled pair
(shared/reference/environment.md §6): f = 994.978 px, B = 193.001 mm, doffs = 31.086 px, so
``Z = f·B / (d + doffs)`` (mm → m). Invalid disparity → NaN. Both are resized to ``--width`` px wide: the image
with area averaging, the depth with nearest neighbour (no mixed depths at edges). Deterministic.

    venv/bin/python bench/make_examples.py [--width 448] [-o examples]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

F_PX = 994.978
BASELINE_MM = 193.001
DOFFS_PX = 31.086
CX, CY = 311.193, 254.877


def motorcycle(width: int) -> tuple[np.ndarray, np.ndarray, dict[str, float]]:
    """(image float32 (H, W, 3) sRGB, depth float32 (H, W) metres with NaN invalid, intrinsics px) at ``width``."""
    import cv2
    import skimage.data

    left, _right, disp = skimage.data.stereo_motorcycle()
    disp = np.asarray(disp, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        depth = F_PX * BASELINE_MM / (disp + DOFFS_PX) / 1000.0
    depth[~np.isfinite(disp)] = np.nan
    h0, w0 = disp.shape
    s = width / w0
    height = int(round(h0 * s))
    image = cv2.resize(left, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    depth = cv2.resize(depth.astype(np.float32), (width, height), interpolation=cv2.INTER_NEAREST)
    intr = {"fx": F_PX * s, "fy": F_PX * s, "cx": (CX + 0.5) * s - 0.5, "cy": (CY + 0.5) * s - 0.5}
    return image, depth.astype(np.float32), intr


def main() -> None:
    from bokehdepth.io import write_depth, write_image, write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=448, help="output width in px (default 448)")
    ap.add_argument("-o", "--output", default=str(Path(__file__).resolve().parents[1] / "examples"))
    args = ap.parse_args()
    out = Path(args.output)
    image, depth, intr = motorcycle(args.width)
    write_image(out / "motorcycle.png", image)
    write_depth(out / "motorcycle_depth.npy", depth)
    write_json(out / "motorcycle.json", {"intrinsics_px": intr, "size": list(depth.shape), "units": "metres"})
    ok = np.isfinite(depth)
    print(
        f"{out}/motorcycle.png {image.shape[1]}x{image.shape[0]}; depth {np.nanmin(depth):.3f}-{np.nanmax(depth):.3f} m, "
        f"{100 * (1 - ok.mean()):.1f} % invalid"
    )


if __name__ == "__main__":
    main()
