"""torch backend (CUDA, or CPU for tests): the same row-difference scatter and slab compositing as
:mod:`.cpu`, vectorised over sources.

For each slab and each row offset ``dy ∈ [−R, R]`` (sources sorted by descending reach, so the ones that
reach ``|dy|`` are a prefix), every source adds its plateau span to a float64 difference buffer with
``index_add_`` (two entries), and its soft-ring pixels (expanded with ``repeat_interleave``) to a point
buffer; a ``cumsum`` along x turns the differences into spans. Slabs are composited front to back with the
rule of :mod:`.layers`. Memory: two (H, W+1, 4) float64 buffers plus O(N) per slab.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .kernels import EDGE_SLOPE, PLATEAU, TAIL, disc_sum_table
from .layers import EPS_WEIGHT, LayerSplit

__all__ = ["render_linear"]

_CHUNK = 1 << 21
"""Most (source, row) pairs expanded at once (bounds temporary memory)."""


def _edge_weight(r, delta):
    """Kernel k_r(δ) of :mod:`.kernels` on tensors (same formula, evaluated with exp)."""
    import torch

    lo = 1.0 / (1.0 + np.exp(EDGE_SLOPE * TAIL))
    hi = 1.0 / (1.0 + np.exp(-EDGE_SLOPE * PLATEAU))
    s = torch.sigmoid(EDGE_SLOPE * (r - delta))
    return ((s - lo) / (hi - lo)).clamp(0.0, 1.0)


def _scatter_layer(lin, ys, xs, rs, vs, diff, point):
    """Scatter one slab's sources into ``diff`` ((H·(W+1), 4)) and ``point`` ((H·W, 4)).

    Every (source, row offset dy) pair with ``|dy| ≤ ⌊r + 0.5⌋`` is expanded at once (in chunks of at most
    ``_CHUNK`` pairs) and handled by :func:`_scatter_rows`.
    """
    import torch

    h, w = lin.shape[0], lin.shape[1]
    reach = torch.floor(rs + TAIL).long()
    colour = torch.cat([lin[ys, xs] * vs[:, None], vs[:, None]], dim=1)  # (n, 4): v·c, v
    n_rows = 2 * reach + 1
    ends = torch.cumsum(n_rows, 0)
    bounds = [0]
    while bounds[-1] < n_rows.numel():  # source chunks holding at most _CHUNK pairs (at least one source)
        done = int(ends[bounds[-1] - 1]) if bounds[-1] else 0
        nxt = int(torch.searchsorted(ends, done + _CHUNK, right=True))
        bounds.append(max(nxt, bounds[-1] + 1))
    for c0, c1 in zip(bounds[:-1], bounds[1:]):
        n = n_rows[c0:c1]
        src = torch.repeat_interleave(torch.arange(c0, c1, device=rs.device), n)
        first = torch.cumsum(n, 0) - n
        dy = torch.arange(src.numel(), device=rs.device) - first[src - c0] - reach[src]
        ty = ys[src] + dy
        ok = (ty >= 0) & (ty < h)
        src, dy, ty = src[ok], dy[ok], ty[ok]
        _scatter_rows(ty, xs[src], rs[src], colour[src], dy.abs().to(rs.dtype), w, diff, point)


def _scatter_rows(ty, x, r, colour, ady, w, diff, point):
    """Add the disc rows of (source, row) pairs: target row ``ty``, source column ``x``, radius ``r``,
    ``colour`` (v·c, v), |dy| ``ady`` (all 1-D tensors of one length)."""
    import torch

    q_out = (r + TAIL) ** 2 - ady * ady
    keep = q_out >= 0
    ty, x, r, colour, ady = ty[keep], x[keep], r[keep], colour[keep], ady[keep]
    wo = torch.floor(torch.sqrt(q_out[keep])).long()
    ri = r - PLATEAU
    q_in = ri * ri - ady * ady
    has_in = (ri >= 0) & (q_in >= 0)
    wi = torch.where(has_in, torch.floor(torch.sqrt(q_in.clamp_min(0))).long(), torch.full_like(wo, -1))
    # plateau spans into the difference buffer
    a = (x - wi).clamp_min(0)
    b = (x + wi + 1).clamp_max(w)
    span = has_in & (a < b)
    base = ty * (w + 1)
    diff.index_add_(0, (base + a)[span], colour[span])
    diff.index_add_(0, (base + b)[span], -colour[span])
    # centre pixel of rows without a plateau
    centre = ~has_in
    if bool(centre.any()):
        k = _edge_weight(r[centre], ady[centre])
        point.index_add_(0, ty[centre] * w + x[centre], colour[centre] * k[:, None])
    # soft ring: dx = start … wo on both sides
    start = torch.where(has_in, wi + 1, torch.ones_like(wi))
    n_ring = (wo - start + 1).clamp_min(0)
    total = int(n_ring.sum())
    if total == 0:
        return
    src = torch.repeat_interleave(torch.arange(n_ring.numel(), device=x.device), n_ring)
    first = torch.cumsum(n_ring, 0) - n_ring
    dx = start[src] + (torch.arange(total, device=x.device) - first[src])
    k = _edge_weight(r[src], torch.sqrt(dx.to(r.dtype) ** 2 + ady[src] ** 2))
    val = colour[src] * k[:, None]
    for side in (1, -1):
        tx = x[src] + side * dx
        ok = (tx >= 0) & (tx < w)
        point.index_add_(0, (ty[src] * w + tx)[ok], val[ok])


def render_linear(
    lin: np.ndarray, radius: np.ndarray, split: LayerSplit, device: Any = None
) -> tuple[np.ndarray, np.ndarray]:
    """Render linear-light colour with torch on ``device`` (default: CUDA if available, else CPU).

    Args:
        lin: (H, W, 3) linear-light image (``image ** gamma``).
        radius: (H, W) blur radius px (``|d|``).
        split: the slab assignment (one slab = plain scatter-and-normalise).
        device: torch device.

    Returns:
        (H, W, 3) float64 linear result and (H, W) coverage ``1 − T`` (numpy).
    """
    import torch

    if device is None:
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dt = torch.float64
    h, w = radius.shape
    lin_t = torch.as_tensor(np.ascontiguousarray(lin), dtype=dt, device=device)
    rad_t = torch.as_tensor(np.ascontiguousarray(radius), dtype=dt, device=device)
    step, table = disc_sum_table(float(radius.max(initial=0.0)))
    table_t = torch.as_tensor(table, dtype=dt, device=device)
    u = rad_t / step
    i = u.long()
    norm = table_t[i] + (u - i) * (table_t[i + 1] - table_t[i])  # S(r), as the cpu backend
    index = torch.as_tensor(split.index, device=device)
    alpha = torch.as_tensor(split.alpha, dtype=dt, device=device)
    out = torch.zeros((h, w, 3), dtype=dt, device=device)
    trans = torch.ones((h, w), dtype=dt, device=device)
    diff = torch.zeros((h * (w + 1), 4), dtype=dt, device=device)
    point = torch.zeros((h * w, 4), dtype=dt, device=device)
    for layer in range(split.n_layers):
        weight = torch.where(index[..., 0] == layer, alpha[..., 0], 0.0) + torch.where(
            index[..., 1] == layer, alpha[..., 1], 0.0
        )
        ys, xs = torch.nonzero(weight > 0, as_tuple=True)
        if ys.numel() == 0:
            continue
        diff.zero_()
        point.zero_()
        _scatter_layer(lin_t, ys, xs, rad_t[ys, xs], weight[ys, xs] / norm[ys, xs], diff, point)
        acc = torch.cumsum(diff.view(h, w + 1, 4), dim=1)[:, :w] + point.view(h, w, 4)
        a_sum = acc[..., 3]
        hit = a_sum > EPS_WEIGHT
        cov = torch.where(hit, a_sum.clamp_max(1.0), 0.0)
        f = torch.where(hit, trans * cov / torch.where(hit, a_sum, 1.0), 0.0)
        out += f[..., None] * acc[..., :3]
        trans = trans * (1.0 - cov)
    cover = 1.0 - trans
    ok = cover > EPS_WEIGHT
    out = torch.where(ok[..., None], out / torch.where(ok, cover, 1.0)[..., None], 0.0)
    return out.cpu().numpy(), cover.cpu().numpy()
