"""Depth slabs for occlusion-aware rendering, and the front-to-back compositing rule.

Occlusion scheme (shared/reference/renderer.md §3.4): the signed defocus ``d = K·(disp − disp_focus)`` px
(``d > 0`` nearer than focus) is cut into slabs whose centres are spaced ``step`` px apart, with ``d = 0``
(the focus plane) always a centre. Each pixel is split linearly between its two nearest centres (no
banding). Every slab is scattered on its own (colour premultiplied by the slab weight α, plus α itself),
giving per target pixel a colour sum ``C_l`` and a weight sum ``A_l``; slabs are then composited near → far:

    c_l = C_l / A_l,  a_l = min(A_l, 1)
    out += T · a_l · c_l,  T *= (1 − a_l)          (T = 1 before the nearest slab)
    result = out / (1 − T)

so a slab hides whatever lies behind it in proportion to how much of it covers the pixel, and the final
division renormalises where the covering slabs leave holes. With one slab (``occlusion=False``) this is
exactly plain scatter-and-normalise ``C / A``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["LayerSplit", "assign_layers", "composite"]

EPS_WEIGHT = 1e-12
"""Accumulated weights at or below this are treated as 'nothing landed here'."""


@dataclass(frozen=True)
class LayerSplit:
    """Assignment of every pixel to at most two depth slabs.

    Attributes:
        centres: (L,) float64 slab centres in signed defocus px, descending (index 0 = nearest).
        index: (H, W, 2) int32 slab indices (second entry = first + 1, or −1 when unused).
        alpha: (H, W, 2) float64 weights of the two slabs, summing to 1 per pixel.
    """

    centres: np.ndarray
    index: np.ndarray
    alpha: np.ndarray

    @property
    def n_layers(self) -> int:
        return int(self.centres.shape[0])


def assign_layers(d: np.ndarray, occlusion: bool = True, step: float = 1.0, max_layers: int = 32) -> LayerSplit:
    """Split a signed defocus map into slabs.

    Args:
        d: (H, W) signed defocus ``K·(disp − disp_focus)`` in px (positive = nearer than focus).
        occlusion: False → one slab holding every pixel (plain scatter-and-normalise).
        step: smallest spacing of slab centres, px of blur radius.
        max_layers: at most this many slabs; the spacing grows when the defocus range needs it.
    """
    d = np.asarray(d, dtype=np.float64)
    h, w = d.shape
    index = np.full((h, w, 2), -1, dtype=np.int32)
    alpha = np.zeros((h, w, 2), dtype=np.float64)
    d_hi, d_lo = (float(d.max()), float(d.min())) if d.size else (0.0, 0.0)
    if not occlusion or d_hi - d_lo <= 0.0:
        index[..., 0] = 0
        alpha[..., 0] = 1.0
        centre = 0.0 if not occlusion else d_hi
        return LayerSplit(np.array([centre]), index, alpha)
    max_layers = max(int(max_layers), 2)
    spacing = max(float(step), (d_hi - d_lo) / (max_layers - 2))
    top = math.ceil(d_hi / spacing - 1e-9)
    bottom = math.floor(d_lo / spacing + 1e-9)
    centres = spacing * np.arange(top, bottom - 1, -1, dtype=np.float64)
    from .layer_kernels import split_linear  # numba: imported only when slabs are needed

    split_linear(d, float(centres[0]), spacing, centres.shape[0], index, alpha)
    return LayerSplit(centres, index, alpha)


def composite(colour_sums: list[np.ndarray], weight_sums: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Front-to-back compositing of per-slab scatter results (numpy; used by the exact backend).

    Args:
        colour_sums: per slab, near → far, (H, W, 3) float64 ``C_l`` (linear light).
        weight_sums: per slab (H, W) float64 ``A_l``.

    Returns:
        (H, W, 3) float64 linear image, and the (H, W) coverage ``1 − T``.
    """
    out = np.zeros_like(colour_sums[0])
    trans = np.ones_like(weight_sums[0])
    for c_sum, a_sum in zip(colour_sums, weight_sums):
        hit = a_sum > EPS_WEIGHT
        a = np.where(hit, np.minimum(a_sum, 1.0), 0.0)
        f = np.where(hit, trans * a / np.where(hit, a_sum, 1.0), 0.0)
        out += f[..., None] * c_sum
        trans = trans * (1.0 - a)
    cover = 1.0 - trans
    ok = cover > EPS_WEIGHT
    out = np.where(ok[..., None], out / np.where(ok, cover, 1.0)[..., None], 0.0)
    return out, cover
