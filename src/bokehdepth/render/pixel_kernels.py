"""numba kernels behind :func:`.api.render`'s per-pixel work: input checks, defocus, gamma encode/decode.

Each is one fused, row-parallel pass (numpy would take several full-image temporaries and float64 ``pow``)
writing into arrays the caller allocates with numpy (which puts large arrays on huge pages: numba's own
allocations cost a page fault every 4 KiB, ≈ 0.2 CPU-s per 250 MB on the benchmark machine).
Gamma runs in float32 (``powf``, ≤ 1 ulp); a pixel the renderer left untouched still comes back bit-exact,
because :func:`decode` returns the pixel's own input value wherever the rendered linear value equals the
pixel's encoded value (to 1e-12 relative: ``decode(encode(v)) = v`` is exact there, not a power of a power).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

__all__ = ["decode", "defocus", "disp_ok", "encode"]


@njit(cache=True, parallel=True)
def encode(image, gamma, clip, lin):
    """Linear light ``lin = x ** gamma`` with ``x = clip(image, 0, 1)`` (or ``image`` as is when ``clip`` is
    False), and the raw image's range.

    Args:
        image: (H, W, 3) float32 display values.
        gamma: exponent (> 0).
        clip: clip to [0, 1] before the power.
        lin: (H, W, 3) float32 output.

    Returns:
        ``(lo, hi, n_bad)``: lowest and highest finite raw value, number of NaN/inf values.
    """
    h, w = image.shape[0], image.shape[1]
    g = np.float32(gamma)
    row_lo = np.full(h, np.inf)
    row_hi = np.full(h, -np.inf)
    row_bad = np.zeros(h, dtype=np.int64)
    for y in prange(h):
        lo = np.inf
        hi = -np.inf
        bad = 0
        for x in range(w):
            for c in range(3):
                v = image[y, x, c]
                if not math.isfinite(v):
                    bad += 1
                    v = np.float32(0.0)
                lo = min(lo, v)
                hi = max(hi, v)
                if clip:
                    v = min(max(v, np.float32(0.0)), np.float32(1.0))
                lin[y, x, c] = v**g if v > 0.0 else np.float32(0.0)
        row_lo[y] = lo
        row_hi[y] = hi
        row_bad[y] = bad
    if h == 0:
        return 0.0, 0.0, 0
    return row_lo.min(), row_hi.max(), row_bad.sum()


@njit(cache=True, parallel=True)
def disp_ok(disp):
    """True when every value of the (H, W) float32 disparity map (1/m) is finite and ≥ 0."""
    h, w = disp.shape
    row_ok = np.ones(h, dtype=np.bool_)
    for y in prange(h):
        for x in range(w):
            v = disp[y, x]
            if not (math.isfinite(v) and v >= 0.0):
                row_ok[y] = False
    return row_ok.all()


@njit(cache=True, parallel=True)
def defocus(disp, K, disp_focus, d, radius):
    """Signed defocus ``d = K·(disp − disp_focus)`` px and blur radius ``|d|`` px into the (H, W) float64
    outputs ``d`` and ``radius`` (as :func:`.api.defocus_map`); returns the largest radius."""
    h, w = disp.shape
    row_max = np.zeros(h)
    for y in prange(h):
        top = 0.0
        for x in range(w):
            v = K * (np.float64(disp[y, x]) - disp_focus)
            d[y, x] = v
            radius[y, x] = abs(v)
            top = max(top, abs(v))
        row_max[y] = top
    return row_max.max() if h > 0 else 0.0


@njit(cache=True, parallel=True)
def decode(out, lin, source, gamma, res):
    """Display values ``clip(max(out, 0) ** (1/gamma), 0, 1)`` into ``res`` ((H, W, 3) float32).

    Args:
        out: (H, W, 3) rendered linear light.
        lin: (H, W, 3) the encoded input (:func:`encode`).
        source: (H, W, 3) the values ``lin`` was encoded from; returned as is wherever ``out`` equals ``lin``
            to 1e-12 relative (an untouched pixel comes back bit-exact).
        gamma: the encoding exponent.
    """
    h, w = out.shape[0], out.shape[1]
    inv = np.float32(1.0 / gamma)
    for y in prange(h):
        for x in range(w):
            for c in range(3):
                v = out[y, x, c]
                ref = np.float64(lin[y, x, c])
                if abs(v - ref) <= 1e-12 * ref or v == ref:
                    u = source[y, x, c]
                elif v > 0.0:
                    u = np.float32(v) ** inv
                else:
                    u = np.float32(0.0)
                res[y, x, c] = min(max(u, np.float32(0.0)), np.float32(1.0))
