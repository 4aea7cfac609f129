"""Fast CPU backend: numba-parallel row-difference scatter, O(N·r), race-free, fused slab compositing.

Algorithm (shared/reference/renderer.md §4.2–4.4):

1. Sources are bucketed by (slab, source row) with a counting sort, each bucket ordered by descending reach
   ``⌊r + 0.5⌋`` so that a scan for one row offset stops at the first source that cannot reach it.
2. Each thread owns whole *target* rows (no atomics, no shared writes). For target row ``ty`` and each slab,
   near → far, it visits the sources within reach and adds, per source, the disc row at ``dy = ty − sy``:
   the plateau as one span in a float64 difference array (two adds), the soft ring pixel by pixel into a
   point buffer. A prefix sum over the touched x-range gives the slab's ``C_l`` and ``A_l`` on that row,
   which are composited front to back into the row's output at once (:mod:`.layers` has the rule).
3. Extra memory: O(N) for the bucketed sources plus O(W) row buffers per thread.

Work per source is O(r) (2 adds per row for the plateau + the ring pixels); the kernel is the same as the
exact oracle's (:mod:`.kernels`), so results agree to floating-point rounding.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .kernels import disc_sum_table, edge_table, edge_weight_tab, reach, row_extent
from .layers import EPS_WEIGHT, LayerSplit

__all__ = ["render_linear"]


@njit(cache=True, parallel=True)
def _normalisers(radius: np.ndarray, step: float, table: np.ndarray) -> np.ndarray:
    """Per-source S(r) (:func:`.kernels.disc_sum`) by linear interpolation in its table, (H, W) float64."""
    h, w = radius.shape
    out = np.empty((h, w))
    inv = 1.0 / step
    for y in prange(h):
        for x in range(w):
            u = radius[y, x] * inv
            i = int(u)
            f = u - i
            out[y, x] = table[i] + f * (table[i + 1] - table[i])
    return out


@njit(cache=True, parallel=True)
def _bucket_sources(radius, norm, index, alpha, n_layers):
    """Counting sort of the (source, slab) entries by (slab, row, descending reach), parallel over rows
    (every key holds its row, so rows never share a counter or an output slot).

    Returns ``offsets`` ((L·H + 1,) int64 start of each (slab, row) bucket), ``xs`` (int32 column),
    ``reaches`` (int32 ⌊r + 0.5⌋), ``rs`` (float64 radius), ``vs`` (float64 α/S), and per slab the max reach
    and first/last occupied source rows.
    """
    h, w = radius.shape
    rmax = 0
    for y in range(h):
        for x in range(w):
            rr = reach(radius[y, x])
            if rr > rmax:
                rmax = rr
    nb = rmax + 1
    counts = np.zeros(n_layers * h * nb + 1, dtype=np.int64)
    for y in prange(h):
        for x in range(w):
            rr = reach(radius[y, x])
            for j in range(2):
                lay = index[y, x, j]
                if lay >= 0 and alpha[y, x, j] > 0.0:
                    counts[(lay * h + y) * nb + (rmax - rr) + 1] += 1
    layer_reach = np.zeros(n_layers, dtype=np.int64)
    layer_y0 = np.full(n_layers, h, dtype=np.int64)
    layer_y1 = np.full(n_layers, -1, dtype=np.int64)
    for lay in range(n_layers):
        for y in range(h):
            base = (lay * h + y) * nb + 1
            for slot in range(nb):
                if counts[base + slot] > 0:
                    layer_reach[lay] = max(layer_reach[lay], rmax - slot)
                    layer_y0[lay] = min(layer_y0[lay], y)
                    layer_y1[lay] = max(layer_y1[lay], y)
    for i in range(1, counts.shape[0]):
        counts[i] += counts[i - 1]
    total = counts[-1]
    xs = np.empty(total, dtype=np.int32)
    reaches = np.empty(total, dtype=np.int32)
    rs = np.empty(total)
    vs = np.empty(total)
    fill = counts[:-1].copy()
    for y in prange(h):
        for x in range(w):
            r = radius[y, x]
            rr = reach(r)
            for j in range(2):
                lay = index[y, x, j]
                a = alpha[y, x, j]
                if lay < 0 or a <= 0.0:
                    continue
                k = (lay * h + y) * nb + (rmax - rr)
                pos = fill[k]
                fill[k] += 1
                xs[pos] = x
                reaches[pos] = rr
                rs[pos] = r
                vs[pos] = a / norm[y, x]
    offsets = np.empty(n_layers * h + 1, dtype=np.int64)
    for i in range(n_layers * h + 1):
        offsets[i] = counts[i * nb]
    return offsets, xs, reaches, rs, vs, layer_reach, layer_y0, layer_y1


@njit(cache=True, parallel=True)
def _scatter_rows(lin, table, offsets, xs, reaches, rs, vs, layer_reach, layer_y0, layer_y1, n_chunks):
    """Row-owned scatter + front-to-back compositing. Returns (H, W, 3) linear colour and (H, W) coverage."""
    h, w = lin.shape[0], lin.shape[1]
    n_layers = layer_reach.shape[0]
    max_reach = 0
    for lay in range(n_layers):
        max_reach = max(max_reach, layer_reach[lay])
    out = np.zeros((h, w, 3))
    cover = np.zeros((h, w))
    rows_per = (h + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        diff = np.zeros((w + 1, 4))
        point = np.zeros((4, w))
        ring = np.empty(max_reach + 2)
        acc_out = np.zeros((w, 3))
        trans = np.ones(w)
        for ty in range(chunk * rows_per, min(h, (chunk + 1) * rows_per)):
            acc_out[:] = 0.0
            trans[:] = 1.0
            for lay in range(n_layers):
                rl = layer_reach[lay]
                sy0 = max(ty - rl, layer_y0[lay])
                sy1 = min(ty + rl, layer_y1[lay])
                xa = w
                xb = -1
                for sy in range(sy0, sy1 + 1):
                    dy = abs(ty - sy)
                    for i in range(offsets[lay * h + sy], offsets[lay * h + sy + 1]):
                        if reaches[i] < dy:
                            break  # bucket is sorted by descending reach
                        r = rs[i]
                        wi, wo = row_extent(r, dy)
                        if wo < 0:
                            continue
                        x = xs[i]
                        v = vs[i]
                        c0 = lin[sy, x, 0] * v
                        c1 = lin[sy, x, 1] * v
                        c2 = lin[sy, x, 2] * v
                        if wi >= 0:
                            a = max(x - wi, 0)
                            b = min(x + wi + 1, w)
                            if a < b:
                                diff[a, 0] += c0
                                diff[a, 1] += c1
                                diff[a, 2] += c2
                                diff[a, 3] += v
                                diff[b, 0] -= c0
                                diff[b, 1] -= c1
                                diff[b, 2] -= c2
                                diff[b, 3] -= v
                            start = wi + 1
                        else:
                            k = edge_weight_tab(r, float(dy), table)
                            point[0, x] += k * c0
                            point[1, x] += k * c1
                            point[2, x] += k * c2
                            point[3, x] += k * v
                            start = 1
                        n_ring = wo + 1 - start
                        for j in range(n_ring):
                            dx = start + j
                            ring[j] = edge_weight_tab(r, math.sqrt(dx * dx + dy * dy), table)
                        # right side: x + start … min(x + wo, w − 1); left side: x − start … max(x − wo, 0)
                        n_right = min(n_ring, w - x - start)
                        for j in range(n_right):
                            k = ring[j]
                            xr = x + start + j
                            point[0, xr] += k * c0
                            point[1, xr] += k * c1
                            point[2, xr] += k * c2
                            point[3, xr] += k * v
                        n_left = min(n_ring, x - start + 1)
                        for j in range(n_left):
                            k = ring[j]
                            xl = x - start - j
                            point[0, xl] += k * c0
                            point[1, xl] += k * c1
                            point[2, xl] += k * c2
                            point[3, xl] += k * v
                        lo = max(x - wo, 0)
                        hi = min(x + wo, w - 1)
                        if lo < xa:
                            xa = lo
                        if hi > xb:
                            xb = hi
                if xb < xa:
                    continue
                s0 = 0.0
                s1 = 0.0
                s2 = 0.0
                s3 = 0.0
                for x in range(xa, xb + 1):
                    s0 += diff[x, 0]
                    s1 += diff[x, 1]
                    s2 += diff[x, 2]
                    s3 += diff[x, 3]
                    diff[x, 0] = 0.0
                    diff[x, 1] = 0.0
                    diff[x, 2] = 0.0
                    diff[x, 3] = 0.0
                    a_sum = s3 + point[3, x]
                    if a_sum > EPS_WEIGHT:
                        cov = min(a_sum, 1.0)
                        f = trans[x] * cov / a_sum
                        acc_out[x, 0] += f * (s0 + point[0, x])
                        acc_out[x, 1] += f * (s1 + point[1, x])
                        acc_out[x, 2] += f * (s2 + point[2, x])
                        trans[x] *= 1.0 - cov
                    point[0, x] = 0.0
                    point[1, x] = 0.0
                    point[2, x] = 0.0
                    point[3, x] = 0.0
                for c in range(4):
                    diff[xb + 1, c] = 0.0
            for x in range(w):
                cov = 1.0 - trans[x]
                cover[ty, x] = cov
                if cov > EPS_WEIGHT:
                    out[ty, x, 0] = acc_out[x, 0] / cov
                    out[ty, x, 1] = acc_out[x, 1] / cov
                    out[ty, x, 2] = acc_out[x, 2] / cov
    return out, cover


def render_linear(lin: np.ndarray, radius: np.ndarray, split: LayerSplit) -> tuple[np.ndarray, np.ndarray]:
    """Render linear-light colour with the row-difference scatter.

    Args:
        lin: (H, W, 3) linear-light image (``image ** gamma``).
        radius: (H, W) blur radius px (``|d|``).
        split: the slab assignment (one slab = plain scatter-and-normalise).

    Returns:
        (H, W, 3) float64 linear result and (H, W) coverage ``1 − T``.
    """
    import numba

    lin = np.ascontiguousarray(lin, dtype=np.float64)
    radius = np.ascontiguousarray(radius, dtype=np.float64)
    step, s_table = disc_sum_table(float(radius.max(initial=0.0)))
    norm = _normalisers(radius, step, s_table)
    buckets = _bucket_sources(radius, norm, split.index, split.alpha, split.n_layers)
    h = radius.shape[0]
    n_chunks = max(1, min(h, 8 * numba.get_num_threads()))
    return _scatter_rows(lin, edge_table(), *buckets, n_chunks)
