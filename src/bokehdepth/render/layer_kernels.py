"""numba kernel behind :func:`.layers.assign_layers` (kept apart so that importing :mod:`.layers` stays cheap)."""

from __future__ import annotations

import numpy as np
from numba import njit, prange

__all__ = ["split_linear"]


@njit(cache=True, parallel=True)
def split_linear(d, top, spacing, n, index, alpha):
    """Linear split of a signed defocus map between its two nearest slab centres, in place, one pass.

    Args:
        d: (H, W) float64 signed defocus px.
        top: centre of slab 0 (the nearest), px; centres are ``top − l·spacing``.
        spacing: px between centres.
        n: number of slabs.
        index: (H, W, 2) int32 out, pre-filled with −1: slabs ``⌊u⌋`` and ``⌊u⌋ + 1`` with
            ``u = (top − d)/spacing`` clipped to ``[0, n − 2]`` (the second only where its weight is > 0).
        alpha: (H, W, 2) float64 out, pre-filled with 0: weights ``1 − frac`` and ``frac``.
    """
    hi = max(n - 2, 0)
    for y in prange(d.shape[0]):
        for x in range(d.shape[1]):
            u = (top - d[y, x]) / spacing
            i0 = min(max(np.floor(u), 0.0), hi)
            frac = min(max(u - i0, 0.0), 1.0)
            index[y, x, 0] = int(i0)
            alpha[y, x, 0] = 1.0 - frac
            if frac > 0.0:
                index[y, x, 1] = int(i0) + 1
                alpha[y, x, 1] = frac
