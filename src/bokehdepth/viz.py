"""Pictures people would rather see than read: depth colour maps and contact sheets.

Depth colour map (the ``depth_color.png`` contract): matplotlib's ``magma_r`` (near = bright), value range
the 5th–95th percentile of finite positive depth, as the reference pipeline; invalid pixels black.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["DEPTH_COLORMAP", "contact_sheet", "depth_to_color", "depth_range"]

DEPTH_COLORMAP = "magma_r"


def depth_range(depth: np.ndarray, lo_pct: float = 5.0, hi_pct: float = 95.0) -> tuple[float, float]:
    """(lo, hi) display range in metres: percentiles of finite positive depth."""
    vals = depth[np.isfinite(depth) & (depth > 0)]
    if vals.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(vals, [lo_pct, hi_pct])
    if hi <= lo:
        hi = lo + 1e-6
    return float(lo), float(hi)


def depth_to_color(
    depth: np.ndarray, vmin: float | None = None, vmax: float | None = None, cmap: str = DEPTH_COLORMAP
) -> np.ndarray:
    """Colour-map a depth map (m) to float32 RGB (H, W, 3) in [0, 1]; NaN/invalid → black."""
    from matplotlib import colormaps

    depth = np.asarray(depth, dtype=np.float32)
    lo, hi = depth_range(depth)
    lo = lo if vmin is None else vmin
    hi = hi if vmax is None else vmax
    valid = np.isfinite(depth) & (depth > 0)
    t = np.clip((np.where(valid, depth, lo) - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = colormaps[cmap](t)[..., :3].astype(np.float32)
    rgb[~valid] = 0.0
    return rgb


def contact_sheet(
    images: Sequence[np.ndarray],
    labels: Sequence[str] | None = None,
    cols: int | None = None,
    tile: int = 256,
) -> np.ndarray:
    """Tile images (float (H, W, 3) or (H, W) in [0, 1]) into one float32 RGB sheet with optional labels.

    Each image is resized to ``tile`` px width, keeping aspect.
    """
    from PIL import Image, ImageDraw

    if not images:
        raise ValueError("contact_sheet: no images")
    cols = cols or min(len(images), 4)
    tiles = []
    for img in images:
        arr = np.asarray(img, dtype=np.float32)
        if arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        h, w = arr.shape[:2]
        th = max(1, round(h * tile / w))
        im = Image.fromarray(np.round(np.clip(arr, 0, 1) * 255).astype(np.uint8)).resize((tile, th), Image.BILINEAR)
        tiles.append(im)
    label_h = 16 if labels else 0
    th = max(t.height for t in tiles)
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * tile, rows * (th + label_h)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        x, y = c * tile, r * (th + label_h)
        sheet.paste(t, (x, y + label_h))
        if labels:
            draw.text((x + 3, y + 2), str(labels[i]), fill=(0, 0, 0))
    return np.asarray(sheet, dtype=np.float32) / 255.0
