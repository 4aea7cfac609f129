"""Fast CPU backend: numba-parallel row-difference scatter, O(N·r), race-free, fused slab compositing, with
an optional multi-resolution path for large blur radii.

Algorithm (shared/reference/renderer.md §4.2–4.4; docs/renderer.md "Fast CPU path"):

1. Slabs are grouped into contiguous runs (near → far) that share a *scale* ``s`` (1, 2, 4, …): a slab
   whose largest radius is at most ``base_radius`` px is rendered at full resolution (``s = 1``), a larger
   one at ``1/s`` resolution with ``s`` the smallest power of two that brings its radius to
   ``≤ base_radius`` (capped at ``max_scale``). ``multiscale=False`` puts every slab at ``s = 1`` (the
   full-resolution path, which evaluates the exact oracle's kernel).
2. Per group, the sources are area-averaged into ``s×s`` blocks per slab (α, α·r, α·colour; at ``s = 1``
   this is the identity) and bucketed by (slab, block row) with a counting sort, each bucket ordered by
   descending reach ``⌊r + 0.5⌋`` so that a scan for one row offset stops at the first source that
   cannot reach it. A block's source carries ``v = ᾱ / S(r̄/s)`` and its premultiplied colour ``c̄·v``.
3. Each thread owns whole *target* rows (no atomics). For target row ``ty`` and each slab of the group,
   near → far, it adds, per source within reach, the disc row at ``dy = ty − sy``: the plateau as one span
   in a difference array (two adds), the soft ring pixel by pixel into a point buffer. A prefix sum over
   the touched x-range gives the slab's ``C_l`` and ``A_l`` on that row, composited front to back into the
   group's premultiplied colour and transmittance (:mod:`.layers` has the rule).
4. The groups are composited front to back at full resolution, a coarse group's colour and transmittance
   upsampled bilinearly (blurred content is low-pass, so little is lost; docs/performance.md measures it).

Extra memory: O(N) for the bucketed sources plus O(W·L) row buffers per thread.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from .kernels import disc_sum_table, edge_table, edge_weight_tab, reach, row_extent
from .layers import EPS_WEIGHT, LayerSplit

__all__ = ["BASE_RADIUS", "MAX_SCALE", "render_linear", "slab_scales"]

BASE_RADIUS = 6.0
"""Multi-resolution threshold, px: slabs whose radius is at most this are rendered at full resolution."""
MAX_SCALE = 8
"""Coarsest multi-resolution factor (a slab is rendered at ≥ 1/MAX_SCALE of the input resolution)."""


@njit(cache=True, inline="always")
def _interp(table: np.ndarray, step: float, r: float) -> float:
    u = r / step
    i = int(u)
    f = u - i
    return table[i] + f * (table[i + 1] - table[i])


@njit(cache=True, parallel=True)
def _sort_entries(index, alpha, slab_group, n_groups):
    """Counting sort of the (pixel, slot) entries with α > 0 by (group, row), parallel over rows.

    Returns ``offsets`` ((G·H + 1,) int64 start of each (group, row) list) and ``ent`` (int32 ``x·2 + slot``).
    """
    h, w = index.shape[0], index.shape[1]
    counts = np.zeros(n_groups * h + 1, dtype=np.int64)
    for y in prange(h):
        for x in range(w):
            for j in range(2):
                lay = index[y, x, j]
                if lay >= 0 and alpha[y, x, j] > 0.0:
                    counts[slab_group[lay] * h + y + 1] += 1
    for i in range(1, counts.shape[0]):
        counts[i] += counts[i - 1]
    ent = np.empty(counts[-1], dtype=np.int32)
    fill = counts[:-1].copy()
    for y in prange(h):
        for x in range(w):
            for j in range(2):
                lay = index[y, x, j]
                if lay >= 0 and alpha[y, x, j] > 0.0:
                    k = slab_group[lay] * h + y
                    ent[fill[k]] = x * 2 + j
                    fill[k] += 1
    return counts, ent


@njit(cache=True)
def _emit_row(lin, radius, index, alpha, eoff, ent, g, lay_lo, s, by, acc):
    """Accumulate the block row ``by`` (full-res rows ``by·s … by·s + s − 1``) of group ``g`` (first slab
    ``lay_lo``) into ``acc[l, bx] = (Σα, Σα·r, Σα·c0, Σα·c1, Σα·c2)``."""
    h = radius.shape[0]
    for y in range(by * s, min(h, by * s + s)):
        for e in range(eoff[g * h + y], eoff[g * h + y + 1]):
            x = ent[e] >> 1
            j = ent[e] & 1
            r = radius[y, x]
            a = alpha[y, x, j]
            lay = index[y, x, j] - lay_lo
            bx = x // s
            acc[lay, bx, 0] += a
            acc[lay, bx, 1] += a * r
            acc[lay, bx, 2] += a * lin[y, x, 0]
            acc[lay, bx, 3] += a * lin[y, x, 1]
            acc[lay, bx, 4] += a * lin[y, x, 2]


@njit(cache=True, parallel=True)
def _bucket_sources(lin, radius, index, alpha, eoff, ent, g, lay_lo, n_l, s, r_bound, step, s_table):
    """Block-averaged sources of slabs ``lay_lo … lay_lo + n_l − 1`` at scale ``s``, counting-sorted by
    (slab, block row, descending reach); parallel over block rows (each key holds its row).

    Returns ``offsets`` ((n_l·H' + 1,) int64 start of each (slab, row) bucket), ``xs`` (int32 block column),
    ``reaches`` (int32 ⌊r' + 0.5⌋), ``rs`` (float64 radius r' = r̄/s in coarse px), ``cv`` ((n, 4) float64
    premultiplied colour·v and v = ᾱ/S(r')), and per slab its max reach and first/last occupied rows.
    """
    h, w = radius.shape
    hs = (h + s - 1) // s
    ws = (w + s - 1) // s
    inv_area = 1.0 / (s * s)
    nb = reach(r_bound) + 1
    counts = np.zeros(n_l * hs * nb + 1, dtype=np.int64)
    n_chunks = min(hs, 64)
    per = (hs + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        acc = np.zeros((n_l if s > 1 else 0, ws, 5))
        for by in range(chunk * per, min(hs, (chunk + 1) * per)):
            if s == 1:  # full resolution: every entry is its own source
                for e in range(eoff[g * h + by], eoff[g * h + by + 1]):
                    x = ent[e] >> 1
                    lay = index[by, x, ent[e] & 1] - lay_lo
                    rr = min(reach(radius[by, x]), nb - 1)
                    counts[(lay * hs + by) * nb + (nb - 1 - rr) + 1] += 1
                continue
            _emit_row(lin, radius, index, alpha, eoff, ent, g, lay_lo, s, by, acc)
            for y in range(by * s, min(h, by * s + s)):
                for e in range(eoff[g * h + y], eoff[g * h + y + 1]):
                    x = ent[e] >> 1
                    bx = x // s
                    lay = index[y, x, ent[e] & 1] - lay_lo
                    a = acc[lay, bx, 0]
                    if a > 0.0:
                        rr = min(reach(acc[lay, bx, 1] / (a * s)), nb - 1)
                        counts[(lay * hs + by) * nb + (nb - 1 - rr) + 1] += 1
                    for c in range(5):
                        acc[lay, bx, c] = 0.0
    layer_reach = np.zeros(n_l, dtype=np.int64)
    layer_y0 = np.full(n_l, hs, dtype=np.int64)
    layer_y1 = np.full(n_l, -1, dtype=np.int64)
    for lay in range(n_l):
        for y in range(hs):
            base = (lay * hs + y) * nb + 1
            for slot in range(nb):
                if counts[base + slot] > 0:
                    layer_reach[lay] = max(layer_reach[lay], nb - 1 - slot)
                    layer_y0[lay] = min(layer_y0[lay], y)
                    layer_y1[lay] = max(layer_y1[lay], y)
    for i in range(1, counts.shape[0]):
        counts[i] += counts[i - 1]
    total = counts[-1]
    xs = np.empty(total, dtype=np.int32)
    reaches = np.empty(total, dtype=np.int32)
    rs = np.empty(total)
    cv = np.empty((total, 4))
    fill = counts[:-1].copy()
    for chunk in prange(n_chunks):
        acc = np.zeros((n_l if s > 1 else 0, ws, 5))
        for by in range(chunk * per, min(hs, (chunk + 1) * per)):
            if s == 1:
                for e in range(eoff[g * h + by], eoff[g * h + by + 1]):
                    x = ent[e] >> 1
                    j = ent[e] & 1
                    lay = index[by, x, j] - lay_lo
                    r = radius[by, x]
                    rr = min(reach(r), nb - 1)
                    k = (lay * hs + by) * nb + (nb - 1 - rr)
                    pos = fill[k]
                    fill[k] += 1
                    v = alpha[by, x, j] / _interp(s_table, step, r)
                    xs[pos] = x
                    reaches[pos] = rr
                    rs[pos] = r
                    cv[pos, 0] = lin[by, x, 0] * v
                    cv[pos, 1] = lin[by, x, 1] * v
                    cv[pos, 2] = lin[by, x, 2] * v
                    cv[pos, 3] = v
                continue
            _emit_row(lin, radius, index, alpha, eoff, ent, g, lay_lo, s, by, acc)
            for y in range(by * s, min(h, by * s + s)):
                for e in range(eoff[g * h + y], eoff[g * h + y + 1]):
                    x = ent[e] >> 1
                    bx = x // s
                    lay = index[y, x, ent[e] & 1] - lay_lo
                    a = acc[lay, bx, 0]
                    if a > 0.0:  # first visit of this (slab, block): emit it, then clear it
                        r = acc[lay, bx, 1] / (a * s)
                        rr = min(reach(r), nb - 1)
                        k = (lay * hs + by) * nb + (nb - 1 - rr)
                        pos = fill[k]
                        fill[k] += 1
                        v = a * inv_area / _interp(s_table, step, r)
                        xs[pos] = bx
                        reaches[pos] = rr
                        rs[pos] = r
                        cv[pos, 0] = acc[lay, bx, 2] / a * v
                        cv[pos, 1] = acc[lay, bx, 3] / a * v
                        cv[pos, 2] = acc[lay, bx, 4] / a * v
                        cv[pos, 3] = v
                    for c in range(5):
                        acc[lay, bx, c] = 0.0
    offsets = np.empty(n_l * hs + 1, dtype=np.int64)
    for i in range(n_l * hs + 1):
        offsets[i] = counts[i * nb]
    return offsets, xs, reaches, rs, cv, layer_reach, layer_y0, layer_y1


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def _scatter_rows(h, w, table, offsets, xs, reaches, rs, cv, layer_reach, layer_y0, layer_y1, n_chunks):
    """Row-owned scatter + front-to-back compositing of one group of slabs on an (h, w) grid.

    Returns the premultiplied colour ``Σ T·a_l·c_l`` (h, w, 3) and the transmittance ``T`` (h, w).
    """
    n_layers = layer_reach.shape[0]
    max_reach = 0
    for lay in range(n_layers):
        max_reach = max(max_reach, layer_reach[lay])
    out = np.zeros((h, w, 3))
    trans_out = np.ones((h, w))
    rows_per = (h + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        diff = np.zeros((w + 1, 4))
        point = np.zeros((w, 4))
        ring = np.empty(max_reach + 2)
        for ty in range(chunk * rows_per, min(h, (chunk + 1) * rows_per)):
            acc_out = out[ty]
            trans = trans_out[ty]
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
                        c0 = cv[i, 0]
                        c1 = cv[i, 1]
                        c2 = cv[i, 2]
                        v = cv[i, 3]
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
                            point[x, 0] += k * c0
                            point[x, 1] += k * c1
                            point[x, 2] += k * c2
                            point[x, 3] += k * v
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
                            point[xr, 0] += k * c0
                            point[xr, 1] += k * c1
                            point[xr, 2] += k * c2
                            point[xr, 3] += k * v
                        n_left = min(n_ring, x - start + 1)
                        for j in range(n_left):
                            k = ring[j]
                            xl = x - start - j
                            point[xl, 0] += k * c0
                            point[xl, 1] += k * c1
                            point[xl, 2] += k * c2
                            point[xl, 3] += k * v
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
                    a_sum = s3 + point[x, 3]
                    if a_sum > EPS_WEIGHT:
                        cov = min(a_sum, 1.0)
                        f = trans[x] * cov / a_sum
                        acc_out[x, 0] += f * (s0 + point[x, 0])
                        acc_out[x, 1] += f * (s1 + point[x, 1])
                        acc_out[x, 2] += f * (s2 + point[x, 2])
                        trans[x] *= 1.0 - cov
                    point[x, 0] = 0.0
                    point[x, 1] = 0.0
                    point[x, 2] = 0.0
                    point[x, 3] = 0.0
                for c in range(4):
                    diff[xb + 1, c] = 0.0
    return out, trans_out


@njit(cache=True, parallel=True)
def _composite_upsampled(out, trans, g_out, g_trans, s):
    """``out += T·up(g_out)``, ``T *= up(g_trans)`` in place, ``up`` = bilinear ×s (pixel centres aligned:
    full-res pixel y sits at coarse coordinate (y + 0.5)/s − 0.5, clamped to the grid)."""
    h, w = trans.shape
    hs, ws = g_trans.shape
    inv = 1.0 / s
    lo = np.full(hs, ws, dtype=np.int64)  # per coarse row: columns where the group covers anything
    hi = np.full(hs, -1, dtype=np.int64)
    for yc in prange(hs):
        for xc in range(ws):
            if g_trans[yc, xc] < 1.0:
                lo[yc] = min(lo[yc], xc)
                hi[yc] = max(hi[yc], xc)
    for y in prange(h):
        fy = min(max((y + 0.5) * inv - 0.5, 0.0), hs - 1.0)
        y0 = int(fy)
        y1 = min(y0 + 1, hs - 1)
        ty = fy - y0
        xc0 = min(lo[y0], lo[y1])
        xc1 = max(hi[y0], hi[y1])
        if xc1 < xc0:
            continue
        for x in range(max((xc0 - 1) * s, 0), min((xc1 + 2) * s, w)):
            fx = min(max((x + 0.5) * inv - 0.5, 0.0), ws - 1.0)
            x0 = int(fx)
            x1 = min(x0 + 1, ws - 1)
            tx = fx - x0
            w00 = (1.0 - ty) * (1.0 - tx)
            w01 = (1.0 - ty) * tx
            w10 = ty * (1.0 - tx)
            w11 = ty * tx
            gt = w00 * g_trans[y0, x0] + w01 * g_trans[y0, x1] + w10 * g_trans[y1, x0] + w11 * g_trans[y1, x1]
            if gt >= 1.0:
                continue  # nothing of this group lands here
            t = trans[y, x]
            for c in range(3):
                out[y, x, c] += t * (
                    w00 * g_out[y0, x0, c] + w01 * g_out[y0, x1, c] + w10 * g_out[y1, x0, c] + w11 * g_out[y1, x1, c]
                )
            trans[y, x] = t * gt


@njit(cache=True, parallel=True)
def _normalise(out, trans):
    """``out / (1 − T)`` where covered (else 0), in place; returns the coverage ``1 − T``."""
    h, w = trans.shape
    cover = np.empty((h, w))
    for y in prange(h):
        for x in range(w):
            cov = 1.0 - trans[y, x]
            cover[y, x] = cov
            if cov > EPS_WEIGHT:
                for c in range(3):
                    out[y, x, c] /= cov
            else:
                for c in range(3):
                    out[y, x, c] = 0.0
    return cover


def slab_scales(split: LayerSplit, base_radius: float = BASE_RADIUS, max_scale: int = MAX_SCALE) -> np.ndarray:
    """Resolution divisor per slab, (L,) int64 powers of two: 1 while the slab's largest radius
    (``|centre| + spacing`` px) is ≤ ``base_radius``, else the smallest ``s`` with radius/s ≤ base_radius,
    at most ``max_scale``. A single slab (plain scatter) always gets 1."""
    centres = np.asarray(split.centres, dtype=np.float64)
    if centres.shape[0] < 2:
        return np.ones(centres.shape[0], dtype=np.int64)
    spacing = float(centres[0] - centres[1])
    r_top = np.abs(centres) + spacing
    need = np.maximum(r_top / float(base_radius), 1.0)
    s = 2 ** np.ceil(np.log2(need) - 1e-9)
    return np.clip(s, 1, max(int(max_scale), 1)).astype(np.int64)


def _groups(scales: np.ndarray) -> list[tuple[int, int, int]]:
    """Contiguous runs ``(first slab, count, scale)`` of equal scale, near → far."""
    runs: list[tuple[int, int, int]] = []
    for lay, s in enumerate(scales.tolist()):
        if runs and runs[-1][2] == s:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1, s)
        else:
            runs.append((lay, 1, s))
    return runs


def render_linear(
    lin: np.ndarray,
    radius: np.ndarray,
    split: LayerSplit,
    *,
    multiscale: bool = False,
    base_radius: float = BASE_RADIUS,
    max_scale: int = MAX_SCALE,
) -> tuple[np.ndarray, np.ndarray]:
    """Render linear-light colour with the row-difference scatter.

    Args:
        lin: (H, W, 3) linear-light image (``image ** gamma``).
        radius: (H, W) blur radius px (``|d|``).
        split: the slab assignment (one slab = plain scatter-and-normalise).
        multiscale: render slabs of radius > ``base_radius`` px at reduced resolution (faster, approximate:
            ≥ 40 dB against the exact oracle in docs/performance.md); False = full resolution everywhere.
        base_radius: px, see :func:`slab_scales`.
        max_scale: coarsest resolution divisor.

    Returns:
        (H, W, 3) float64 linear result and (H, W) coverage ``1 − T``.
    """
    import numba

    lin = np.ascontiguousarray(lin, dtype=np.float64)
    radius = np.ascontiguousarray(radius, dtype=np.float64)
    h, w = radius.shape
    r_max = float(radius.max(initial=0.0))
    step, s_table = disc_sum_table(r_max)
    table = edge_table()
    n_threads = numba.get_num_threads()
    if multiscale:
        scales = slab_scales(split, base_radius, max_scale)
    else:
        scales = np.ones(split.n_layers, dtype=np.int64)
    groups = _groups(scales)
    slab_group = np.repeat(np.arange(len(groups)), [n for _, n, _ in groups])
    eoff, ent = _sort_entries(split.index, split.alpha, slab_group, len(groups))
    out = trans = None
    for g, (lay_lo, n_l, s) in enumerate(groups):
        buckets = _bucket_sources(
            lin, radius, split.index, split.alpha, eoff, ent, g, lay_lo, n_l, s, r_max / s, step, s_table
        )
        hs, ws = -(-h // s), -(-w // s)
        g_out, g_trans = _scatter_rows(hs, ws, table, *buckets, max(1, min(hs, 8 * n_threads)))
        if out is None and s == 1:
            out, trans = g_out, g_trans
            continue
        if out is None:
            out, trans = np.zeros((h, w, 3)), np.ones((h, w))
        _composite_upsampled(out, trans, g_out, g_trans, s)
    cover = _normalise(out, trans)
    return out, cover
