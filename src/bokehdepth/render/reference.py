"""The exact direct scatter, O(N·r²): the slow, obviously-right oracle for the fast backends.

Every source pixel visits its whole square window, evaluates the kernel of :mod:`.kernels` at every target
(``edge_weight``, with the per-source normaliser summed by brute force over the same window, independently
of the fast paths' span/ring split), and adds colour·weight and weight into full-image accumulators, one
slab at a time; slabs are composited with :func:`.layers.composite`.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .kernels import edge_weight, reach
from .layers import LayerSplit, composite

__all__ = ["render_linear", "scatter_layer"]


@njit(cache=True)
def scatter_layer(lin: np.ndarray, radius: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Direct scatter of one slab.

    Args:
        lin: (H, W, 3) float64 linear-light colour.
        radius: (H, W) float64 blur radius, px.
        weight: (H, W) float64 slab weight α of each source (0 = not in this slab).

    Returns:
        (H, W, 4) float64: Σ α·w·colour (3 channels) and Σ α·w, with w the per-source normalised kernel.
    """
    h, w = radius.shape
    acc = np.zeros((h, w, 4))
    for sy in range(h):
        for sx in range(w):
            a = weight[sy, sx]
            if a <= 0.0:
                continue
            r = radius[sy, sx]
            rr = reach(r)
            total = 0.0
            for dy in range(-rr, rr + 1):
                for dx in range(-rr, rr + 1):
                    total += edge_weight(r, math.sqrt(dx * dx + dy * dy))
            scale = a / total
            for dy in range(-rr, rr + 1):
                ty = sy + dy
                if ty < 0 or ty >= h:
                    continue
                for dx in range(-rr, rr + 1):
                    tx = sx + dx
                    if tx < 0 or tx >= w:
                        continue
                    k = edge_weight(r, math.sqrt(dx * dx + dy * dy)) * scale
                    if k == 0.0:
                        continue
                    acc[ty, tx, 0] += k * lin[sy, sx, 0]
                    acc[ty, tx, 1] += k * lin[sy, sx, 1]
                    acc[ty, tx, 2] += k * lin[sy, sx, 2]
                    acc[ty, tx, 3] += k
    return acc


def render_linear(lin: np.ndarray, radius: np.ndarray, split: LayerSplit) -> tuple[np.ndarray, np.ndarray]:
    """Render linear-light colour with the exact scatter.

    Args:
        lin: (H, W, 3) linear-light image (``image ** gamma``).
        radius: (H, W) blur radius px (``|d|``).
        split: the slab assignment (one slab = plain scatter-and-normalise).

    Returns:
        (H, W, 3) float64 linear result and (H, W) coverage ``1 − T``.
    """
    lin = np.ascontiguousarray(lin, dtype=np.float64)
    radius = np.ascontiguousarray(radius, dtype=np.float64)
    colour_sums, weight_sums = [], []
    for layer in range(split.n_layers):
        weight = np.where(split.index[..., 0] == layer, split.alpha[..., 0], 0.0)
        weight += np.where(split.index[..., 1] == layer, split.alpha[..., 1], 0.0)
        acc = scatter_layer(lin, radius, np.ascontiguousarray(weight))
        colour_sums.append(acc[..., :3])
        weight_sums.append(acc[..., 3])
    return composite(colour_sums, weight_sums)
