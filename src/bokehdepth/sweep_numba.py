"""numba kernels of the sweep's inner loops (fused loops, single-threaded: they are memory-bound, and the FFTs already use every core).

Imported lazily by :mod:`bokehdepth.sweep_blur` and :mod:`bokehdepth.sweep_fill`; ``cache=True`` keeps the
compiled code between runs.
"""

from __future__ import annotations

import numpy as np
from numba import njit

__all__ = ["recursive_pass", "sq_diff_sum", "tracker_push"]


@njit(cache=True)
def sq_diff_sum(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out[y, x] = Σ_c (a[c, y, x] − b[c, y, x])²`` for float32 channel-first (C, H, W) images."""
    c, h, w = a.shape
    for y in range(h):
        for x in range(w):
            out[y, x] = 0.0
        for ch in range(c):
            for x in range(w):
                d = a[ch, y, x] - b[ch, y, x]
                out[y, x] += d * d


@njit(cache=True)
def tracker_push(
    k: int,
    cost: np.ndarray,
    prev: np.ndarray,
    best: np.ndarray,
    kbest: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    total: np.ndarray,
) -> None:
    """One step of the streaming argmin over radii, in place: the fused form of
    :func:`bokehdepth.sweep_blur.tracker_step` (its specification; tests check the two equal on ties and on
    minima at the first and last candidate). ``prev`` is the cost at ``k − 1`` (ignored for k = 0) and is
    overwritten with ``cost``."""
    h, w = cost.shape
    for y in range(h):
        for x in range(w):
            c = cost[y, x]
            if k > 0 and kbest[y, x] == k - 1:
                right[y, x] = c
            if c < best[y, x]:
                best[y, x] = c
                kbest[y, x] = k
                left[y, x] = prev[y, x] if k > 0 else c
                right[y, x] = c
            total[y, x] += c
            prev[y, x] = c


@njit(cache=True)
def recursive_pass(data: np.ndarray, weights: np.ndarray) -> None:
    """In place, per channel and row: causal then anti-causal first-order recursion along axis 2 of
    ``data`` (C, H, W) with feedback ``weights`` (H, W) (``weights[:, j]`` links column j − 1 → j)."""
    nc, h, w = data.shape
    for idx in range(nc * h):
        ch = idx // h
        y = idx % h
        for j in range(1, w):
            data[ch, y, j] += weights[y, j] * (data[ch, y, j - 1] - data[ch, y, j])
        for j in range(w - 2, -1, -1):
            data[ch, y, j] += weights[y, j + 1] * (data[ch, y, j + 1] - data[ch, y, j])
