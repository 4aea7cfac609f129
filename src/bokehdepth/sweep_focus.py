"""Focus brackets: photos focused at different distances, one sweep over candidate disparities per pixel.

Forward model: frame i blurs a point at disparity ``d`` (1/m) to ``r_i(d) = K_i·|d − disp_focus_i|`` px. With
disc blurs composing approximately like Gaussians (second moments add), frame i equals the reference
re-blurred by ``ρ_i(d) = sqrt(r_i² − r_ref²)`` when ``r_i ≥ r_ref``, and the reference equals frame i
re-blurred by ``sqrt(r_ref² − r_i²)`` otherwise. Both matching-cost volumes (reference → frame and frame →
reference, as in :mod:`bokehdepth.sweep_blur`) are computed once; then for every candidate ``d`` on a grid
the per-frame costs are read at the predicted radii (linear interpolation along the radius axis) and summed,
and each pixel takes the ``d`` of least total cost (parabola refinement). Because the focus planes differ,
the total cost is not symmetric about any one focus plane, so the search also settles the front/back sign.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from .errors import InputError
from .io import Stack
from .sweep import SweepConfig, SweepResult, _blend_fill, _linear, _measure, check_config, texture_energy

__all__ = ["disp_grid_for", "sweep_focus_bracket"]


def disp_grid_for(K: np.ndarray, disp_focus: np.ndarray, max_radius: float, n: int = 96) -> np.ndarray:
    """Candidate disparities (1/m): ``n`` uniform samples over the range where at least one frame's
    predicted blur stays within ``max_radius`` px, clipped at 0 (infinity)."""
    reach = max_radius / float(np.max(K))
    lo = max(0.0, float(np.min(disp_focus)) - reach)
    hi = float(np.max(disp_focus)) + reach
    return np.linspace(lo, hi, n)


def _lerp(vol: np.ndarray, pos: float) -> np.ndarray:
    """Linear interpolation of vol (R, H, W) at fractional index ``pos`` (clipped to the last sample)."""
    R = vol.shape[0]
    pos = min(max(pos, 0.0), R - 1.0)
    k = min(int(np.floor(pos)), R - 2) if R > 1 else 0
    t = pos - k
    return vol[k] if R == 1 else (1.0 - t) * vol[k] + t * vol[k + 1]


def sweep_focus_bracket(
    stack: Stack,
    disp_focus: np.ndarray,
    config: SweepConfig | None = None,
    disp_grid: np.ndarray | None = None,
    **overrides: Any,
) -> SweepResult:
    """Depth from a focus bracket.

    Args:
        stack: frames (display values, ``stack.gamma``), metric K per frame (px·m at the frames' width);
            ``stack.reference`` is the sharpest frame.
        disp_focus: (N,) focus disparity of each frame, 1/m.
        config: :class:`SweepConfig` (window, max_radius, step, fill settings, device); ``focus_side``,
            ``disp_range``, ``offset_only`` and ``focus_m`` do not apply (the search settles the sign; the
            focus distances are ``disp_focus``) and are ignored with a warning.
        disp_grid: candidate disparities (1/m); default :func:`disp_grid_for`.
    Returns:
        :class:`SweepResult` with ``depth`` (m), ``disp_offset`` = |d − disp_focus_ref| (1/m), and the
        predicted radii per non-reference frame in ``radius``; ``info["bracket"] == "focus"``.
    """
    import warnings

    config = replace(config or SweepConfig(), **overrides)
    check_config(config)
    unused = [n for n in ("focus_side", "disp_range", "focus_m") if getattr(config, n) is not None]
    unused += ["offset_only"] if config.offset_only else []
    if unused:
        warnings.warn(f"focus bracket: {', '.join(unused)} do not apply, ignored", stacklevel=2)
    t0 = time.perf_counter()
    n = len(stack)
    disp_focus = np.asarray(disp_focus, dtype=np.float64)
    if n < 2 or disp_focus.shape != (n,):
        raise InputError(f"focus bracket: need >= 2 frames and one focus distance per frame, got {n}, {disp_focus}")
    K = np.asarray(stack.K, dtype=np.float64)
    if not (K > 0).all():
        raise InputError(f"focus bracket: every photo needs K > 0 px·m, got {K.tolist()}")
    ref = stack.reference
    others = [i for i in range(n) if i != ref]
    grid = disp_grid_for(K, disp_focus, config.max_radius) if disp_grid is None else np.asarray(disp_grid, float)
    lin = [_linear(f, stack.gamma) for f in stack.frames]
    fwd = _measure(lin[ref], [lin[i] for i in others], config, keep_cost=True)
    quiet = replace(config, progress=False)
    bwd = [_measure(lin[i], [lin[ref]], quiet, keep_cost=True).cost[0] for i in others]
    step = float(fwd.radii[1] - fwd.radii[0])
    h, w = stack.size
    total = np.empty((len(grid), h, w), dtype=np.float32)
    for g, d in enumerate(grid):
        acc = np.zeros((h, w), dtype=np.float32)
        r_ref = K[ref] * abs(d - disp_focus[ref])
        for m, i in enumerate(others):
            rho2 = (K[i] * abs(d - disp_focus[i])) ** 2 - r_ref**2
            acc += _lerp(fwd.cost[m], np.sqrt(rho2) / step) if rho2 >= 0 else _lerp(bwd[m], np.sqrt(-rho2) / step)
        total[g] = acc
    kbest = np.argmin(total, axis=0)
    kc = np.clip(kbest, 1, len(grid) - 2)
    take = lambda idx: np.take_along_axis(total, idx[None], axis=0)[0]  # noqa: E731
    c0, c1, c2 = take(kc - 1), take(kc), take(kc + 1)
    denom = c0 - 2 * c1 + c2
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(denom > 0, 0.5 * (c0 - c2) / denom, 0.0)
    pos = np.where((kbest == 0) | (kbest == len(grid) - 1), kbest, kc + np.clip(off, -0.5, 0.5))
    dstep = float(grid[1] - grid[0])
    disp = (grid[0] + dstep * pos).astype(np.float32)
    # confidence: texture × how far the best candidate stands below the average one
    mean = total.mean(axis=0)
    contrast = np.clip(1.0 - c1 / np.maximum(mean, 1e-12), 0.0, 1.0)
    tex = texture_energy(stack.frames[ref], config.window)
    conf = (tex / (tex + config.texture_scale) * contrast / (contrast + 0.1) * 1.1).clip(0, 1).astype(np.float32)
    conf = np.where((kbest == 0) | (kbest == len(grid) - 1), 0.5 * conf, conf).astype(np.float32)
    raw = disp
    if config.fill:
        disp = _blend_fill(raw, conf, stack.frames[ref], config)
    with np.errstate(divide="ignore"):
        depth = np.where(disp > 0, 1.0 / np.maximum(disp, 1e-12), np.nan).astype(np.float32)
    radius = np.stack([K[i] * np.abs(disp - disp_focus[i]) for i in others]).astype(np.float32)
    info = {
        "bracket": "focus",
        "K": K.tolist(),
        "disp_focus_per_frame": disp_focus.tolist(),
        "reference": ref,
        "disp_grid": [float(grid[0]), float(grid[-1]), len(grid)],
        "window": config.window,
        "max_radius": config.max_radius,
        "step": config.step,
        "device": config.device,
        "fill": "domain-transform normalized convolution" if config.fill else None,
        "seconds_total": time.perf_counter() - t0,
    }
    return SweepResult(
        disp_offset=np.abs(disp - disp_focus[ref]).astype(np.float32),
        raw_offset=np.abs(raw - disp_focus[ref]).astype(np.float32),
        confidence=conf,
        depth=depth,
        depth_near=None,
        depth_far=None,
        ambiguous=None,
        radius=radius,
        valid=np.ones_like(radius, dtype=bool),
        K_eff=K[others],
        frame_index=others,
        disp_focus=float(disp_focus[ref]),
        focus_side=None,
        offset_units="1/m",
        info=info,
    )
