"""Figures and numbers for docs/renderer.md: the two occlusion cases, plain scatter vs depth slabs.

    nice venv/bin/python bench/render_figures.py            # writes docs/img/render_*.png, prints the numbers

Case A: sharp foreground (a checkerboard card at the focus distance) over a blurred background photo.
Case B: blurred foreground (the card, nearer than focus) over a sharp background (focus on the photo).
Each figure shows input | plain scatter-and-normalise | occlusion-aware (slabs), plus zoomed crops, and a
profile plot across the card's edge. The bleed numbers use the step-edge scene of the tests: black
subject / white background, γ = 1, r = 8 px on the blurred side.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def card_scene(size: int = 256) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(image, depth_m, card_mask): a checkerboard card (1 m) in front of a photo (4 m)."""
    from skimage import data, transform

    bg = transform.resize(data.coffee(), (size, size), anti_aliasing=True).astype(np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    card = (xx > size * 0.3) & (xx < size * 0.62) & (yy > size * 0.2) & (yy < size * 0.85)
    checker = (((xx // 8) + (yy // 8)) % 2).astype(np.float32)
    fg = np.stack([0.9 * checker + 0.05, 0.9 * checker + 0.05, 0.2 + 0.6 * checker], axis=-1)
    image = np.where(card[..., None], fg, bg).astype(np.float32)
    depth = np.where(card, 1.0, 4.0).astype(np.float32)
    return image, depth, card


def bleed_numbers() -> dict[str, float]:
    """Step edge (columns < 24 subject, ≥ 24 background), 48×48, γ = 1: fraction of the other side's colour."""
    from bokehdepth.render.api import render

    h = w = 48
    image = np.ones((h, w, 3), np.float32)
    image[:, : w // 2] = 0.0
    left = np.arange(w)[None, :] < w // 2
    out = {}
    # A: sharp subject (left, in focus) over a background blurred to r = 8 px
    disp = np.where(left, 1.0, 1.0 - 0.8) * np.ones((h, 1), np.float32)
    for occ in (False, True):
        res = render(image, disp, 10.0, 1.0, gamma=1.0, occlusion=occ)
        tag = "slabs" if occ else "plain"
        out[f"A_{tag}_first_px"] = float(res[24, w // 2 - 1, 0])
        out[f"A_{tag}_6px_in"] = float(res[24, w // 2 - 7, 0])
    # B: blurred subject (left, r = 8 px, nearer) over a sharp background in focus
    disp = np.where(left, 1.8, 1.0) * np.ones((h, 1), np.float32)
    for occ in (False, True):
        res = render(image, disp, 10.0, 1.0, gamma=1.0, occlusion=occ)
        tag = "slabs" if occ else "plain"
        ramp = 1.0 - res[24, w // 2 - 3 : w // 2 + 9, 0]
        out[f"B_{tag}_fg_fraction_cols_-3..+8"] = [round(float(v), 3) for v in ramp]
    return out


def main(argv: list[str] | None = None) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bokehdepth.io import write_image
    from bokehdepth.render.api import render
    from bokehdepth.viz import contact_sheet

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(REPO / "docs" / "img"))
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    image, depth, card = card_scene()
    disp = 1.0 / depth
    size = image.shape[0]
    cases = {
        "A": dict(focus_m=1.0, K=16.0, title="sharp card (focus) over blurred background (r = 12 px)"),
        "B": dict(focus_m=4.0, K=16.0, title="blurred card (r = 12 px) over sharp background (focus)"),
    }
    row = int(size * 0.5)
    edge = int(size * 0.62)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    for ax, (name, case) in zip(axes, cases.items()):
        plain = render(image, disp, case["K"], focus_m=case["focus_m"], occlusion=False)
        slabs = render(image, disp, case["K"], focus_m=case["focus_m"], occlusion=True)
        ys = slice(int(size * 0.35), int(size * 0.35) + 64)
        xs = slice(edge - 32, edge + 32)
        tiles = [image, plain, slabs, image[ys, xs], plain[ys, xs], slabs[ys, xs]]
        labels = ["input", "plain scatter", "occlusion-aware", "input (zoom)", "plain (zoom)", "slabs (zoom)"]
        write_image(out / f"render_occlusion_{name}.png", contact_sheet(tiles, labels, cols=3, tile=256))
        xr = np.arange(edge - 24, edge + 24)
        lum = [x[row, xr].mean(axis=1) for x in (image, plain, slabs)]
        for y, lab, style in zip(lum, ("input", "plain scatter", "occlusion-aware"), (":", "--", "-")):
            ax.plot(xr - edge, y, style, label=lab)
        ax.axvline(0, color="grey", lw=0.5)
        ax.set_title(f"{name}: {case['title']}", fontsize=8)
        ax.set_xlabel("px from the card's right edge (card at < 0)")
    axes[0].set_ylabel("mean RGB along one row")
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "render_occlusion_profiles.png", dpi=110)
    for k, v in bleed_numbers().items():
        print(f"{k}: {v}")
    print(f"figures in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
