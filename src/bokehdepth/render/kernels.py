"""The scatter kernel shared by every backend: a soft-edged disc, normalised per source pixel.

A source pixel whose blur radius is ``r`` px (``r = K·|disp − disp_focus|``) spreads over the target pixels
at distance ``δ`` px (integer pixel offsets, ``δ = √(dx² + dy²)``) with the weight

    k_r(δ) = clip((σ(8·(r − δ)) − σ(−4)) / (σ(8) − σ(−4)), 0, 1)

i.e. BokehMe's logistic edge ``σ(8(r − δ)) = 0.5 + 0.5·tanh(4(r − δ))`` (50 % at ``δ ≈ r``, 10–90 % over
≈0.55 px), rescaled so that it is exactly 1 on the plateau ``δ ≤ r − 1`` and exactly 0 from ``δ ≥ r + 0.5``
on (the tail cut). Consequences, by construction:

- ``r ≤ 0.5`` px → only ``δ = 0`` has weight: an in-focus pixel is an exact identity, and ``k`` is continuous
  in ``r`` (a neighbour's weight grows from 0 as ``r`` passes 0.5).
- the plateau is exactly 1, so a row of the disc is an interior span of constant weight plus a thin ring
  (``r − 1 < δ < r + 0.5``) of O(1) pixels per row: the row-difference fast path evaluates the *same*
  kernel, no approximation.

Each source's weights are divided by ``S(r) = Σ_q k_r(δ_q)`` over the whole (unclipped) window, so every
source carries unit energy (splats leaving the image are lost, not renormalised).

All functions here are numba ``@njit`` scalar helpers so that the numba backends inline them; they also run
as plain Python.
"""

from __future__ import annotations

import functools
import math

import numpy as np
from numba import njit, prange

__all__ = [
    "EDGE_LO",
    "EDGE_SLOPE",
    "EDGE_SPAN",
    "PLATEAU",
    "TAIL",
    "aa_row",
    "disc_sum",
    "disc_sum_aa",
    "disc_sum_table",
    "edge_table",
    "edge_weight",
    "edge_weight_tab",
    "reach",
    "row_extent",
]

EDGE_SLOPE = 8.0
"""Slope of the logistic edge, 1/px: σ(8(r − δ)) (BokehMe's 0.5 + 0.5·tanh(4(r − δ)))."""
PLATEAU = 1.0
"""The weight is exactly 1 for δ ≤ r − PLATEAU (px)."""
TAIL = 0.5
"""The weight is exactly 0 for δ ≥ r + TAIL (px): the tail cut."""

EDGE_LO = 1.0 / (1.0 + math.exp(EDGE_SLOPE * TAIL))  # σ(−4)
EDGE_HI = 1.0 / (1.0 + math.exp(-EDGE_SLOPE * PLATEAU))  # σ(8)
EDGE_SPAN = EDGE_HI - EDGE_LO
"""The edge weight is ``(σ(EDGE_SLOPE·t) − EDGE_LO) / EDGE_SPAN`` on the ring, ``t = r − δ``."""


@njit(cache=True, inline="always")
def edge_weight(r: float, delta: float) -> float:
    """Unnormalised weight k_r(δ) in [0, 1] of a target at distance ``delta`` px from a source of radius ``r`` px."""
    t = r - delta
    if t >= PLATEAU:
        return 1.0
    if t <= -TAIL:
        return 0.0
    s = 1.0 / (1.0 + math.exp(-EDGE_SLOPE * t))
    return (s - EDGE_LO) / EDGE_SPAN


@njit(cache=True, inline="always")
def reach(r: float) -> int:
    """Largest |dx| or |dy| (px) that can receive weight from a source of radius ``r`` px: ⌊r + 0.5⌋."""
    return int(math.floor(r + TAIL))


@njit(cache=True, inline="always")
def row_extent(r: float, dy: int) -> tuple[int, int]:
    """Half-widths of one disc row at vertical offset ``dy`` px.

    Returns ``(wi, wo)``: pixels with ``|dx| ≤ wi`` are on the plateau (weight exactly 1; ``wi = −1`` if the
    row has no plateau), pixels with ``wi < |dx| ≤ wo`` form the soft ring, ``|dx| > wo`` get nothing
    (``wo = −1`` if the row is empty).
    """
    ro = r + TAIL
    q = ro * ro - dy * dy
    if q < 0.0:
        return -1, -1
    wo = int(math.floor(math.sqrt(q)))
    wi = -1
    ri = r - PLATEAU
    if ri >= 0.0:
        qi = ri * ri - dy * dy
        if qi >= 0.0:
            wi = int(math.floor(math.sqrt(qi)))
    return wi, wo


@njit(cache=True)
def disc_sum(r: float) -> float:
    """S(r) = Σ k_r(δ) over the full integer window around a source (the per-source normaliser), in O(r).

    Sums rows ``dy = 0 … reach`` of one half-disc (rows ±dy are equal) using the plateau/ring split.
    """
    total = 0.0
    rmax = reach(r)
    for dy in range(rmax + 1):
        wi, wo = row_extent(r, dy)
        if wo < 0:
            continue
        row = 0.0
        if wi >= 0:
            row = 2.0 * wi + 1.0
            start = wi + 1
        else:
            row = edge_weight(r, float(dy))
            start = 1
        for dx in range(start, wo + 1):
            row += 2.0 * edge_weight(r, math.sqrt(dx * dx + dy * dy))
        total += row if dy == 0 else 2.0 * row
    return total


@njit(cache=True, inline="always")
def aa_row(r: float, dy: int) -> tuple[int, float]:
    """One row of the *anti-aliased* disc (the cheaper kernel of the multi-resolution path's coarse slabs).

    The row at vertical offset ``dy`` px is the segment ``|x| ≤ xe = √(r² − dy²)`` box-filtered onto the
    pixels: pixels with ``|dx| < n`` get weight 1 and the two end pixels ``|dx| = n`` get ``f``, with
    ``n = ⌊xe + 0.5⌋`` and ``f = xe + 0.5 − n`` ∈ [0, 1); a row whose segment is shorter than one pixel
    (``n = 0``) is a single centre pixel of weight ``2·xe`` (weight 1 on the centre row, so ``r < 0.5`` is a
    point). Every row's weight sums to ``2·xe``, continuous in ``r``.

    Returns ``(n, f)``; ``n = −1`` for an empty row (``|dy| ≥ r``, except the centre row).
    """
    q = r * r - dy * dy
    if q <= 0.0:
        return (0, 1.0) if dy == 0 else (-1, 0.0)
    xe = math.sqrt(q)
    m = xe + 0.5
    n = int(m)
    if n == 0:
        return 0, (1.0 if dy == 0 else 2.0 * xe)
    return n, m - n


@njit(cache=True)
def disc_sum_aa(r: float) -> float:
    """Σ of the anti-aliased disc's weights (:func:`aa_row`) over all rows: its per-source normaliser."""
    total = 0.0
    for dy in range(reach(r) + 1):
        n, f = aa_row(r, dy)
        if n < 0:
            continue
        row = f if n == 0 else 2.0 * n - 1.0 + 2.0 * f
        total += row if dy == 0 else 2.0 * row
    return total


EDGE_TABLE_STEP = 1.0 / 1024.0
"""Sampling step (px of t = r − δ) of :func:`edge_table`; linear interpolation error < 1e-6."""


def edge_table() -> np.ndarray:
    """k as a function of ``t = r − δ`` on [−TAIL, PLATEAU] (plus one guard sample), step
    :data:`EDGE_TABLE_STEP`, float64: the fast paths interpolate it instead of calling ``exp``."""
    n = int(round((PLATEAU + TAIL) / EDGE_TABLE_STEP)) + 2
    t = -TAIL + EDGE_TABLE_STEP * np.arange(n)
    s = 1.0 / (1.0 + np.exp(-EDGE_SLOPE * t))
    return np.clip((s - EDGE_LO) / EDGE_SPAN, 0.0, 1.0)


@njit(cache=True, inline="always")
def edge_weight_tab(r: float, delta: float, table: np.ndarray) -> float:
    """:func:`edge_weight` by linear interpolation in ``table`` (from :func:`edge_table`)."""
    t = r - delta
    if t >= PLATEAU:
        return 1.0
    if t <= -TAIL:
        return 0.0
    u = (t + TAIL) * (1.0 / EDGE_TABLE_STEP)
    i = int(u)
    f = u - i
    return table[i] + f * (table[i + 1] - table[i])


def disc_sum_table(r_max: float, max_entries: int = 1 << 16, *, aa: bool = False) -> tuple[float, np.ndarray]:
    """Tabulated S(r) on [0, ⌈r_max⌉ + 1]: returns ``(step, table)`` with ``table[i] = S(i·step)``; linear
    interpolation in it is within ~3e-5 (relative) of :func:`disc_sum` at step 1/1024 px. ``aa=True``
    tabulates :func:`disc_sum_aa` (the anti-aliased disc) instead.

    The table depends only on ``⌈r_max⌉`` px, so it is memoised (a stack's frames and repeated renders reuse
    it; ~20–40 ms saved per call at r_max 32); each call returns a fresh copy."""
    step, table = _disc_sum_table(float(math.ceil(max(r_max, 0.0))), int(max_entries), bool(aa))
    return step, table.copy()


@functools.lru_cache(maxsize=16)
def _disc_sum_table(r_top: float, max_entries: int, aa: bool) -> tuple[float, np.ndarray]:
    step = max(1.0 / 1024.0, (r_top + 1.0) / (max_entries - 2))
    n = int(math.ceil((r_top + 1.0) / step)) + 2
    return step, _disc_sum_grid(step, n, aa)


@njit(cache=True, parallel=True)
def _disc_sum_grid(step: float, n: int, aa: bool) -> np.ndarray:
    out = np.empty(n)
    for i in prange(n):
        out[i] = disc_sum_aa(i * step) if aa else disc_sum(i * step)
    return out
