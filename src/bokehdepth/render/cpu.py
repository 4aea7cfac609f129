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
   in a difference array (two adds), the soft ring pixel by pixel into a point buffer — or, in the
   multi-resolution path for slabs whose radii are all ≥ ``AA_RADIUS`` (:func:`slab_edges`), the
   anti-aliased disc row: one span and two fractional end pixels (:func:`.kernels.aa_row`). A prefix sum
   over the touched x-range gives the slab's ``C_l`` and ``A_l`` on that row, composited front to back into
   the group's premultiplied colour and transmittance (:mod:`.layers` has the rule).
4. One final row-parallel pass composites the groups front to back at full resolution, a coarse group's
   colour and transmittance upsampled bilinearly (blurred content is low-pass, so little is lost;
   docs/performance.md measures it), and normalises. The full-resolution group is rendered straight into
   the output arrays, which that pass updates in place.

Large arrays are allocated with numpy (huge pages) and filled by the kernels: numba's own allocations fault
every 4 KiB page, which cost ≈ 0.2 CPU-s per 250 MB on the benchmark machine.

Extra memory: O(N) for the bucketed sources plus O(W·L) row buffers per thread.
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import njit, prange

from .kernels import aa_row, disc_sum_table, edge_table, edge_weight_tab, reach, row_extent
from .layers import EPS_WEIGHT, LayerSplit

__all__ = ["AA_RADIUS", "BASE_RADIUS", "MAX_SCALE", "render_linear", "slab_edges", "slab_scales"]

BASE_RADIUS = 6.0
"""Multi-resolution threshold, px: slabs whose radius is at most this are rendered at full resolution."""
MAX_SCALE = 8
"""Coarsest multi-resolution factor (a slab is rendered at ≥ 1/MAX_SCALE of the input resolution)."""
AA_RADIUS = 1.5
"""Multi-resolution path, px: slabs whose radii are all at least this use the cheaper anti-aliased disc edge
(:func:`slab_edges`); the exact soft edge differs from it most at small radii."""


@njit(cache=True, inline="always")
def _interp(table: np.ndarray, step: float, r: float) -> float:
    u = r / step
    i = int(u)
    f = u - i
    return table[i] + f * (table[i + 1] - table[i])


@njit(cache=True, parallel=True)
def _entry_pass(index, alpha, slab_group, keys, ent, fill):
    """Counting sort of the (pixel, slot) entries with α > 0 by key (group, row), parallel over rows (a row's
    keys belong to it alone). ``fill=False`` counts into ``keys[key + 1]``; ``fill=True`` takes ``keys`` as
    the running start of each key and writes ``ent`` (int32 ``x·2 + slot``)."""
    h, w = index.shape[0], index.shape[1]
    for y in prange(h):
        for x in range(w):
            for j in range(2):
                lay = index[y, x, j]
                if lay >= 0 and alpha[y, x, j] > 0.0:
                    k = slab_group[lay] * h + y
                    if fill:
                        ent[keys[k]] = x * 2 + j
                        keys[k] += 1
                    else:
                        keys[k + 1] += 1


def _sort_entries(index: np.ndarray, alpha: np.ndarray, slab_group: np.ndarray, n_groups: int):
    """Entries sorted by (group, row): ``offsets`` ((G·H + 1,) int64 start of each (group, row) list) and
    ``ent`` (int32 ``x·2 + slot``)."""
    h = index.shape[0]
    offsets = np.zeros(n_groups * h + 1, dtype=np.int64)
    _entry_pass(index, alpha, slab_group, offsets, np.empty(0, dtype=np.int32), False)
    np.cumsum(offsets, out=offsets)
    ent = np.empty(offsets[-1], dtype=np.int32)  # numpy allocates large arrays on huge pages: few page faults
    _entry_pass(index, alpha, slab_group, offsets[:-1].copy(), ent, True)
    return offsets, ent


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


@njit(cache=True, inline="always")
def _place(keys, k, fill, xs, reaches, rs, cv, x, rr, r, v, c0, c1, c2):
    """Count a source under key ``k`` (``fill=False``) or write it at its key's next slot (``fill=True``)."""
    if not fill:
        keys[k + 1] += 1
        return
    pos = keys[k]
    keys[k] += 1
    xs[pos] = x
    reaches[pos] = rr
    rs[pos] = r
    cv[pos, 0] = c0 * v
    cv[pos, 1] = c1 * v
    cv[pos, 2] = c2 * v
    cv[pos, 3] = v


@njit(cache=True, parallel=True)
def _bucket_pass(lin, radius, index, alpha, eoff, ent, g, lay_lo, n_l, s, nb, step, s_tables, slab_aa, keys, out, fill):
    """One pass of the counting sort of group ``g``'s sources (slabs ``lay_lo … lay_lo + n_l − 1``, block-
    averaged at scale ``s``) by key (slab, block row, descending reach ``min(⌊r' + 0.5⌋, nb − 1)``), parallel
    over block rows (a key holds one row). ``fill=False`` counts (``keys[key + 1] += 1``); ``fill=True``
    takes ``keys`` as running starts and writes ``out = (xs, reaches, rs, cv)``: block column, reach, radius
    ``r' = r̄/s`` in coarse px, and ``(c̄·v, v)`` with ``v = ᾱ/S(r')``: ``S`` of the slab's kernel, tabulated
    in ``s_tables[1]`` for slabs with ``slab_aa`` (anti-aliased disc), else in ``s_tables[0]`` (soft disc)."""
    xs, reaches, rs, cv = out
    h, w = radius.shape
    hs = (h + s - 1) // s
    ws = (w + s - 1) // s
    inv_area = 1.0 / (s * s)
    n_chunks = min(hs, 64)
    per = (hs + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        acc = np.zeros((n_l if s > 1 else 0, ws, 5))
        for by in range(chunk * per, min(hs, (chunk + 1) * per)):
            if s == 1:  # full resolution: every entry is its own source
                for e in range(eoff[g * h + by], eoff[g * h + by + 1]):
                    x = ent[e] >> 1
                    j = ent[e] & 1
                    r = radius[by, x]
                    rr = min(reach(r), nb - 1)
                    lay = index[by, x, j] - lay_lo
                    k = (lay * hs + by) * nb + (nb - 1 - rr)
                    v = alpha[by, x, j] / _interp(s_tables[slab_aa[lay]], step, r) if fill else 0.0
                    _place(keys, k, fill, xs, reaches, rs, cv, x, rr, r, v, lin[by, x, 0], lin[by, x, 1], lin[by, x, 2])
                continue
            _emit_row(lin, radius, index, alpha, eoff, ent, g, lay_lo, s, by, acc)
            for y in range(by * s, min(h, by * s + s)):
                for e in range(eoff[g * h + y], eoff[g * h + y + 1]):
                    bx = (ent[e] >> 1) // s
                    lay = index[y, ent[e] >> 1, ent[e] & 1] - lay_lo
                    a = acc[lay, bx, 0]
                    if a > 0.0:  # first visit of this (slab, block): emit it, then clear it
                        r = acc[lay, bx, 1] / (a * s)
                        rr = min(reach(r), nb - 1)
                        k = (lay * hs + by) * nb + (nb - 1 - rr)
                        v = a * inv_area / _interp(s_tables[slab_aa[lay]], step, r) if fill else 0.0
                        ia = 1.0 / a
                        c = acc[lay, bx]
                        _place(keys, k, fill, xs, reaches, rs, cv, bx, rr, r, v, c[2] * ia, c[3] * ia, c[4] * ia)
                        for q in range(5):
                            acc[lay, bx, q] = 0.0


@njit(cache=True)
def _slab_extents(counts, n_l, hs, nb):
    """Per slab: the largest reach and the first/last occupied row, from the per-key source counts."""
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
    return layer_reach, layer_y0, layer_y1


def _bucket_sources(lin, radius, index, alpha, eoff, ent, g, lay_lo, n_l, s, r_bound, step, s_tables, slab_aa):
    """Block-averaged sources of slabs ``lay_lo … lay_lo + n_l − 1`` at scale ``s``, counting-sorted by
    (slab, block row, descending reach) with :func:`_bucket_pass`.

    Returns ``offsets`` ((n_l·H' + 1,) int64 start of each (slab, row) bucket), ``xs`` (int32 block column),
    ``reaches`` (int32 ⌊r' + 0.5⌋), ``rs`` (float64 radius r' in coarse px), ``cv`` ((n, 4) float64
    premultiplied colour·v and v), and per slab its max reach and first/last occupied rows.
    """
    hs = -(-radius.shape[0] // s)
    nb = reach(r_bound) + 1
    args = (lin, radius, index, alpha, eoff, ent, g, lay_lo, n_l, s, nb, step, s_tables, slab_aa)
    counts = np.zeros(n_l * hs * nb + 1, dtype=np.int64)
    empty = (np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0), np.empty((0, 4)))
    _bucket_pass(*args, counts, empty, False)
    extents = _slab_extents(counts, n_l, hs, nb)
    np.cumsum(counts, out=counts)
    n = counts[-1]
    out = (np.empty(n, np.int32), np.empty(n, np.int32), np.empty(n), np.empty((n, 4)))
    _bucket_pass(*args, counts[:-1].copy(), out, True)
    return (counts[::nb].copy(), *out, *extents)


@njit(cache=True, inline="always")
def _add4(buf, x, k, c0, c1, c2, v):
    """``buf[x] += k·(c0, c1, c2, v)``."""
    buf[x, 0] += k * c0
    buf[x, 1] += k * c1
    buf[x, 2] += k * c2
    buf[x, 3] += k * v


@njit(cache=True, inline="always")
def _add_span(diff, a, b, c0, c1, c2, v):
    """Constant weight on pixels ``[a, b)`` of a row: two entries of the difference array."""
    if a < b:
        _add4(diff, a, 1.0, c0, c1, c2, v)
        _add4(diff, b, -1.0, c0, c1, c2, v)


@njit(cache=True, inline="always")
def _splat_soft(diff, point, ring, table, x, r, dy, w, c0, c1, c2, v):
    """One row (offset ``dy``) of the exact soft disc of a source at column ``x``: the plateau as a span, the
    ring pixel by pixel (weights from the edge ``table``). Returns the half-width ``wo`` (−1 = empty row)."""
    wi, wo = row_extent(r, dy)
    if wo < 0:
        return -1
    if wi >= 0:
        _add_span(diff, max(x - wi, 0), min(x + wi + 1, w), c0, c1, c2, v)
        start = wi + 1
    else:
        _add4(point, x, edge_weight_tab(r, float(dy), table), c0, c1, c2, v)
        start = 1
    n_ring = wo + 1 - start
    for j in range(n_ring):
        dx = start + j
        ring[j] = edge_weight_tab(r, math.sqrt(dx * dx + dy * dy), table)
    for j in range(min(n_ring, w - x - start)):  # right side: x + start … min(x + wo, w − 1)
        _add4(point, x + start + j, ring[j], c0, c1, c2, v)
    for j in range(min(n_ring, x - start + 1)):  # left side: x − start … max(x − wo, 0)
        _add4(point, x - start - j, ring[j], c0, c1, c2, v)
    return wo


@njit(cache=True, inline="always")
def _splat_aa(diff, point, x, r, dy, w, c0, c1, c2, v):
    """One row of the anti-aliased disc (:func:`.kernels.aa_row`): a span of weight 1 and two fractional end
    pixels. Returns the half-width ``n`` (−1 = empty row)."""
    n, f = aa_row(r, dy)
    if n <= 0:
        if n == 0:
            _add4(point, x, f, c0, c1, c2, v)
        return n
    _add_span(diff, max(x - n + 1, 0), min(x + n, w), c0, c1, c2, v)
    if x - n >= 0:
        _add4(point, x - n, f, c0, c1, c2, v)
    if x + n < w:
        _add4(point, x + n, f, c0, c1, c2, v)
    return n


@njit(cache=True, inline="always")
def _splat_slab_row(
    ty, lay, h, w, slab_aa, table, offsets, xs, reaches, rs, cv, layer_reach, layer_y0, layer_y1, diff, point, ring
):
    """Add every source of slab ``lay`` that reaches target row ``ty`` into the row buffers; returns the
    touched column range ``(xa, xb)`` (``xb < xa``: nothing)."""
    rl = layer_reach[lay]
    xa = w
    xb = -1
    for sy in range(max(ty - rl, layer_y0[lay]), min(ty + rl, layer_y1[lay]) + 1):
        dy = abs(ty - sy)
        for i in range(offsets[lay * h + sy], offsets[lay * h + sy + 1]):
            if reaches[i] < dy:
                break  # bucket is sorted by descending reach
            x = xs[i]
            if slab_aa[lay]:
                half = _splat_aa(diff, point, x, rs[i], dy, w, cv[i, 0], cv[i, 1], cv[i, 2], cv[i, 3])
            else:
                half = _splat_soft(diff, point, ring, table, x, rs[i], dy, w, cv[i, 0], cv[i, 1], cv[i, 2], cv[i, 3])
            if half >= 0:
                xa = min(xa, max(x - half, 0))
                xb = max(xb, min(x + half, w - 1))
    return xa, xb


@njit(cache=True, inline="always")
def _composite_row(diff, point, xa, xb, colour_row, trans_row):
    """Prefix-sum the row buffers over ``[xa, xb]`` into one slab's ``C_l``, ``A_l`` and composite them under
    the row's transmittance ``trans_row`` into its premultiplied colour ``colour_row``; clears the buffers."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for x in range(xa, xb + 1):
        s0 += diff[x, 0]
        s1 += diff[x, 1]
        s2 += diff[x, 2]
        s3 += diff[x, 3]
        a_sum = s3 + point[x, 3]
        if a_sum > EPS_WEIGHT:
            cov = min(a_sum, 1.0)
            f = trans_row[x] * cov / a_sum
            colour_row[x, 0] += f * (s0 + point[x, 0])
            colour_row[x, 1] += f * (s1 + point[x, 1])
            colour_row[x, 2] += f * (s2 + point[x, 2])
            trans_row[x] *= 1.0 - cov
        for c in range(4):
            diff[x, c] = 0.0
            point[x, c] = 0.0
    for c in range(4):
        diff[xb + 1, c] = 0.0


@njit(cache=True, parallel=True, fastmath=True, error_model="numpy")
def _scatter_rows(
    colour, trans, slab_aa, table, offsets, xs, reaches, rs, cv, layer_reach, layer_y0, layer_y1, n_chunks
):
    """Row-owned scatter + front-to-back compositing of one group of slabs on an (h, w) grid, with the exact
    soft disc (edge ``table``) or, for slabs with ``slab_aa``, the anti-aliased disc.

    Fills ``colour`` (h, w, 3) with the premultiplied colour ``Σ T·a_l·c_l`` and ``trans`` (h, w) with the
    transmittance ``T``; returns ``span`` (h, 2) int64, per row the first and last column any slab touched.
    """
    h, w = trans.shape
    max_reach = 0
    for lay in range(layer_reach.shape[0]):
        max_reach = max(max_reach, layer_reach[lay])
    span = np.empty((h, 2), dtype=np.int64)
    rows_per = (h + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        diff = np.zeros((w + 1, 4))
        point = np.zeros((w, 4))
        ring = np.empty(max_reach + 2)
        for ty in range(chunk * rows_per, min(h, (chunk + 1) * rows_per)):
            colour[ty] = 0.0
            trans[ty] = 1.0
            lo = w
            hi = -1
            for lay in range(layer_reach.shape[0]):
                xa, xb = _splat_slab_row(
                    ty,
                    lay,
                    h,
                    w,
                    slab_aa,
                    table,
                    offsets,
                    xs,
                    reaches,
                    rs,
                    cv,
                    layer_reach,
                    layer_y0,
                    layer_y1,
                    diff,
                    point,
                    ring,
                )
                if xb >= xa:
                    _composite_row(diff, point, xa, xb, colour[ty], trans[ty])
                    lo = min(lo, xa)
                    hi = max(hi, xb)
            span[ty, 0] = lo
            span[ty, 1] = hi
    return span


@njit(cache=True, inline="always")
def _bilinear_axis(i, s, n):
    """Coarse sample position of full-resolution index ``i`` at scale ``s`` on an axis of ``n`` coarse
    pixels (centres aligned, clamped): ``(i0, i1, t)``."""
    f = min(max((i + 0.5) / s - 0.5, 0.0), n - 1.0)
    i0 = int(f)
    return i0, min(i0 + 1, n - 1), f - i0


@njit(cache=True, inline="always")
def _composite_direct(acc, trans, g_colour, g_trans, lo, hi):
    """``acc += T·colour``, ``T *= T_g`` over columns ``[lo, hi]`` of a full-resolution group's row."""
    for x in range(lo, hi + 1):
        t = trans[x]
        for c in range(3):
            acc[x, c] += t * g_colour[x, c]
        trans[x] = t * g_trans[x]


@njit(cache=True, inline="always")
def _composite_bilinear(acc, trans, g_colour, g_trans, s, y0, y1, ty, lo, hi):
    """As :func:`_composite_direct` for a coarse group (scale ``s``), sampled bilinearly between coarse rows
    ``y0``, ``y1`` (weight ``ty`` on ``y1``) over the full-resolution columns its coarse columns ``[lo, hi]``
    can reach."""
    w = trans.shape[0]
    for x in range(max((lo - 1) * s, 0), min((hi + 2) * s, w)):
        x0, x1, tx = _bilinear_axis(x, s, g_trans.shape[1])
        w00 = (1.0 - ty) * (1.0 - tx)
        w01 = (1.0 - ty) * tx
        w10 = ty * (1.0 - tx)
        w11 = ty * tx
        t = trans[x]
        for c in range(3):
            acc[x, c] += t * (
                w00 * g_colour[y0, x0, c]
                + w01 * g_colour[y0, x1, c]
                + w10 * g_colour[y1, x0, c]
                + w11 * g_colour[y1, x1, c]
            )
        trans[x] = t * (w00 * g_trans[y0, x0] + w01 * g_trans[y0, x1] + w10 * g_trans[y1, x0] + w11 * g_trans[y1, x1])


@njit(cache=True, parallel=True, fastmath=True)
def _composite_groups(colours, transes, spans, scales, out, cover, n_chunks):
    """Composite the groups (near → far) at full resolution and normalise, in one row-parallel pass.

    Group ``g`` is ``colours[g]`` (premultiplied colour) and ``transes[g]`` (transmittance) at scale
    ``scales[g]``; a coarse group is upsampled bilinearly (pixel centres aligned, edges clamped):
    ``out += T·up(colour)``, ``T *= up(T_g)``; finally ``out / (1 − T)`` where covered (else 0). Only the
    columns a group touched (``spans``, widened by the interpolation footprint) are visited. Writes the
    (h, w, 3) linear colour into ``out`` and the coverage ``1 − T`` into ``cover``; a full-resolution group
    may live in ``out``/``cover`` themselves (each row is read before it is written).
    """
    h, w = cover.shape
    rows_per = (h + n_chunks - 1) // n_chunks
    for chunk in prange(n_chunks):
        acc = np.empty((w, 3))
        trans = np.empty(w)
        for y in range(chunk * rows_per, min(h, (chunk + 1) * rows_per)):
            acc[:, :] = 0.0
            trans[:] = 1.0
            for g in range(len(colours)):
                s = scales[g]
                span = spans[g]
                y0, y1, ty = _bilinear_axis(y, s, span.shape[0])
                lo = min(span[y0, 0], span[y1, 0]) if s > 1 else span[y, 0]
                hi = max(span[y0, 1], span[y1, 1]) if s > 1 else span[y, 1]
                if hi < lo:
                    continue
                if s == 1:
                    _composite_direct(acc, trans, colours[g][y], transes[g][y], lo, hi)
                else:
                    _composite_bilinear(acc, trans, colours[g], transes[g], s, y0, y1, ty, lo, hi)
            for x in range(w):
                cov = 1.0 - trans[x]
                cover[y, x] = cov
                inv = 1.0 / cov if cov > EPS_WEIGHT else 0.0
                for c in range(3):
                    out[y, x, c] = acc[x, c] * inv


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


def slab_edges(split: LayerSplit, aa_radius: float = AA_RADIUS) -> np.ndarray:
    """Which slabs the multi-resolution path renders with the anti-aliased disc edge (:func:`.kernels.aa_row`)
    instead of the exact soft edge: (L,) int64 flags, 1 where every radius the slab holds
    (``|centre| − spacing`` px and up) is at least ``aa_radius``. A pixel between a soft and an anti-aliased
    slab gets the blend of both kernels that the linear slab split gives it, so the kernel changes
    continuously with the radius. A single slab (plain scatter) keeps the soft edge."""
    centres = np.asarray(split.centres, dtype=np.float64)
    if centres.shape[0] < 2:
        return np.zeros(centres.shape[0], dtype=np.int64)
    spacing = float(centres[0] - centres[1])
    return (np.abs(centres) - spacing >= aa_radius).astype(np.int64)


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
    phases: dict[str, float] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render linear-light colour with the row-difference scatter.

    Args:
        lin: (H, W, 3) float32 or float64 linear-light image (``image ** gamma``).
        radius: (H, W) blur radius px (``|d|``).
        split: the slab assignment (one slab = plain scatter-and-normalise).
        multiscale: render slabs of radius > ``base_radius`` px at reduced resolution, with the cheaper
            anti-aliased disc edge (faster, approximate: ≥ 40 dB against the exact oracle in
            docs/performance.md); False = full resolution and the exact kernel everywhere.
        base_radius: px, see :func:`slab_scales`.
        max_scale: coarsest resolution divisor.
        phases: if given, CPU seconds per phase are added to it (``bench/render.py --phases``).

    Returns:
        (H, W, 3) float64 linear result and (H, W) coverage ``1 − T``.
    """
    import numba
    from numba.typed import List

    clock = _PhaseClock(phases)
    if lin.dtype not in (np.float32, np.float64):
        lin = lin.astype(np.float64)
    lin = np.ascontiguousarray(lin)
    radius = np.ascontiguousarray(radius, dtype=np.float64)
    h, w = radius.shape
    r_max = float(radius.max(initial=0.0))
    table = edge_table()
    n_threads = numba.get_num_threads()
    if multiscale:
        scales, edges = slab_scales(split, base_radius, max_scale), slab_edges(split)
    else:
        scales, edges = np.ones(split.n_layers, dtype=np.int64), np.zeros(split.n_layers, dtype=np.int64)
    groups = _groups(scales)
    slab_group = np.repeat(np.arange(len(groups)), [n for _, n, _ in groups])
    eoff, ent = clock("sort entries by run", _sort_entries, split.index, split.alpha, slab_group, len(groups))
    out, cover = np.empty((h, w, 3)), np.empty((h, w))
    n_chunks = max(1, min(h, 8 * n_threads))
    colours, transes, spans = List(), List(), List()
    for g, (lay_lo, n_l, s) in enumerate(groups):
        slab_aa = edges[lay_lo : lay_lo + n_l]
        step, s_soft = clock("S(r) table", disc_sum_table, r_max / s)
        s_tables = np.stack([s_soft, clock("S(r) table", disc_sum_table, r_max / s, aa=True)[1]])
        buckets = clock(
            "bucket sources",
            _bucket_sources,
            *(lin, radius, split.index, split.alpha, eoff, ent, g, lay_lo, n_l, s, r_max / s, step, s_tables, slab_aa),
        )
        hs, ws = -(-h // s), -(-w // s)
        if s == 1 and not any(c is out for c in colours):  # the full-resolution run lives in the outputs
            colour, trans = out, cover
        else:
            colour, trans = np.empty((hs, ws, 3)), np.empty((hs, ws))
        tag = "scatter full-res run" if s == 1 else "scatter coarse runs"
        args = (colour, trans, slab_aa, table, *buckets, max(1, min(hs, 8 * n_threads)))
        spans.append(clock(tag, _scatter_rows, *args))
        colours.append(colour)
        transes.append(trans)
    group_scales = np.array([s for _, _, s in groups], dtype=np.int64)
    clock("composite runs + normalise", _composite_groups, colours, transes, spans, group_scales, out, cover, n_chunks)
    return out, cover


class _PhaseClock:
    """Calls a function and, when a ``phases`` dict was given, adds its CPU seconds under a name."""

    def __init__(self, phases: dict[str, float] | None):
        self.phases = phases

    def __call__(self, name, fn, *args, **kwargs):
        if self.phases is None:
            return fn(*args, **kwargs)
        c0 = time.process_time()
        res = fn(*args, **kwargs)
        self.phases[name] = self.phases.get(name, 0.0) + time.process_time() - c0
        return res
