"""Depth-from-Bokeh Sweep: metric depth from a calibrated bokeh stack, with no learned weights.

BokehDepth's proposition (shared/reference/bokehdepth.md §6): the blur radius of a pixel in frame i is
``r_i = K_i·δ + ε_i`` with ``δ = |disp − disp_focus|`` (1/m) and K_i in px·m, so the least-squares line
through the origin, ``δ̂ = Σ K_i r_i / Σ K_i²``, is an unbiased estimate of δ when the ε_i have zero mean, and
a consistent one (its variance σ²/ΣK_i² shrinks as frames are added). Depth is ``1/(disp_focus ± δ̂)``.

Pipeline (:func:`sweep_stack`):

1. Linear light: frames ``^gamma`` (the stack's gamma, as the renderer).
2. Blur of each frame relative to the reference, per pixel (:mod:`bokehdepth.sweep_blur`): the reference is
   re-blurred with a bank of soft discs (the renderer's kernel) and each frame is matched in a window;
   sub-pixel radius by a parabola through the cost minimum. When the reference is itself slightly blurred
   (K_ref > 0, a photo bracket), disc blurs compose approximately like Gaussians (second moments add:
   ``r_i² ≈ r_ref² + ρ_i²``), so the measured relative radius ρ_i is regressed on
   ``K_eff,i = sqrt(K_i² − K_ref²)`` (exact when K_ref = 0).
3. Regression through the origin (:func:`regress_offset`), per pixel → δ̂ and the residual.
4. Confidence (:func:`confidence_map`) from local texture energy of the reference, the regression residual
   and the fraction of frames whose radius was measurable.
5. Edge-aware fill (:mod:`bokehdepth.sweep_fill`): low-confidence pixels take the confidence-weighted
   domain-transform normalised convolution of δ̂ guided by the reference image.
6. Sign: ``focus_side="near"`` (focus plane = nearest surface, all else behind) gives ``disp_focus − δ̂``;
   ``"far"`` gives ``disp_focus + δ̂``; otherwise both solutions plus an ambiguity mask, and depth is NaN
   where they differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np

from .errors import InputError
from .io import Stack

__all__ = [
    "SweepConfig",
    "SweepResult",
    "check_config",
    "confidence_map",
    "depth_from_offset",
    "normalized_disp_range",
    "regress_offset",
    "sweep_stack",
    "texture_energy",
]

FocusSide = Literal["near", "far"]


@dataclass(frozen=True)
class SweepConfig:
    """Settings of the sweep estimator.

    Attributes:
        window: side of the square matching window in px (odd).
        max_radius: largest candidate blur radius in px (frames blurrier than this at a pixel are dropped
            from that pixel's regression).
        step: spacing of the candidate radii in px.
        focus_side: ``"near"`` / ``"far"`` resolves the sign (overrides the stack's ``focus_side``).
        fill: fill low-confidence pixels by edge-aware propagation.
        keep_confidence: confidence (0–1) above which a pixel keeps its own estimate; below, it is blended
            linearly with the propagated value.
        sigma_s: spatial scale of the propagation in px.
        sigma_r: edge sensitivity of the propagation (summed RGB difference of the display image).
        texture_scale: gradient energy (display units², windowed mean of |∇grey|²) at which the texture
            factor of the confidence is 0.5.
        residual_scale: regression residual (px, RMS) at which the residual factor of the confidence is 0.5.
        disp_range: (disp_min, disp_max) in 1/m, only for ``K_convention == "normalized"`` stacks: the scene
            disparities that normalised disparity 0 and 1 stand for (``disp = disp_min + dn·(disp_max −
            disp_min)``); turns the normalised offset into 1/m. Default: the stack's ``extra["disp_min"]``,
            ``extra["disp_max"]`` when it records them (synth's normalized stacks do), else no metric scale.
        offset_only: normalized stacks: give only the normalised offset, even when a range is known.
        focus_m: focus distance in m, overrides the stack's ``disp_focus``.
        device: ``"numpy"`` (scipy.fft + numba, default) or a torch device (``"cuda"``, ``"cpu"``) for the
            blur measurement (:mod:`bokehdepth.sweep_torch`).
        progress: show tqdm progress bars.
    """

    window: int = 15
    max_radius: float = 24.0
    step: float = 0.5
    focus_side: FocusSide | None = None
    fill: bool = True
    keep_confidence: float = 0.5
    sigma_s: float = 24.0
    sigma_r: float = 0.15
    texture_scale: float = 2e-4
    residual_scale: float = 1.0
    disp_range: tuple[float, float] | None = None
    offset_only: bool = False
    focus_m: float | None = None
    device: str = "numpy"
    progress: bool = False


@dataclass
class SweepResult:
    """Output of :func:`sweep_stack`. All maps are float32 (H, W) at the stack's size.

    Attributes:
        disp_offset: |disp − disp_focus| after the fill, in 1/m (``offset_units == "1/m"``) or in units of
            normalised disparity (``"normalized"``); NaN where unknown.
        raw_offset: the per-pixel regression estimate before the fill (same units).
        confidence: 0–1 confidence of ``raw_offset``.
        depth: metres, NaN where unknown or ambiguous; None without a metric scale.
        depth_near / depth_far: the solutions nearer / farther than the focus plane (metres; depth_far is NaN
            where δ̂ ≥ disp_focus), set only when the sign is unresolved.
        ambiguous: bool (H, W), True where the two solutions differ; None when the sign is resolved.
        radius: (M, H, W) measured blur radius (px) of each non-reference frame.
        valid: (M, H, W) bool, radius measurable (not clipped at ``max_radius``).
        K_eff: (M,) effective K (px·m, or px per unit normalised disparity) of each non-reference frame.
        frame_index: (M,) index in the stack of each non-reference frame.
        disp_focus: focus disparity used (1/m) or None.
        focus_side: the resolved side or None.
        offset_units: ``"1/m"`` or ``"normalized"``.
        info: settings and timings.
    """

    disp_offset: np.ndarray
    raw_offset: np.ndarray
    confidence: np.ndarray
    depth: np.ndarray | None
    depth_near: np.ndarray | None
    depth_far: np.ndarray | None
    ambiguous: np.ndarray | None
    radius: np.ndarray
    valid: np.ndarray
    K_eff: np.ndarray
    frame_index: list[int]
    disp_focus: float | None
    focus_side: FocusSide | None
    offset_units: str
    info: dict[str, Any] = field(default_factory=dict)


def regress_offset(
    K: np.ndarray, radius: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares line through the origin of radius against K, per pixel (the sweep proposition).

    ``δ̂ = Σ w_i K_i r_i / Σ w_i K_i²`` and the weighted RMS residual
    ``s = sqrt(Σ w_i (r_i − K_i δ̂)² / max(Σ w_i − 1, 1))`` (px). With weights independent of the noise and
    ``r_i = K_i δ + ε_i``, E[ε] = 0, δ̂ is unbiased and its variance σ²/Σ w_i K_i² (equal weights) shrinks
    as frames are added.

    Args:
        K: (M,) blur strengths (px·m).
        radius: (M, ...) measured radii (px).
        weights: (M, ...) or (M,) non-negative weights (0 drops a measurement); default all 1.
    Returns:
        (δ̂ (...) in 1/m, NaN where Σ w K² = 0; residual (...) in px).
    """
    K = np.asarray(K, dtype=np.float64)
    radius = np.asarray(radius, dtype=np.float64)
    if K.ndim != 1 or radius.shape[0] != K.shape[0]:
        raise InputError(f"regress_offset: K must be (M,) and radius (M, ...), got {K.shape} and {radius.shape}")
    if (K < 0).any() or not np.isfinite(K).all():
        raise InputError(f"regress_offset: K must be finite and >= 0, got {K.tolist()}")
    shape = (-1,) + (1,) * (radius.ndim - 1)
    Kb = K.reshape(shape)
    if weights is None:
        w = np.ones_like(radius)
    else:
        w = np.asarray(weights, dtype=np.float64)
        w = np.broadcast_to(w.reshape(shape) if w.ndim == 1 else w, radius.shape)
        if (w < 0).any():
            raise InputError("regress_offset: weights must be >= 0")
    w = np.where(np.isfinite(radius), w, 0.0)
    r = np.nan_to_num(radius)
    sxx = (w * Kb * Kb).sum(axis=0)
    sxy = (w * Kb * r).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = np.where(sxx > 0, sxy / sxx, np.nan)
        res = r - Kb * np.nan_to_num(delta)[None]
        dof = np.maximum(w.sum(axis=0) - 1.0, 1.0)
        resid = np.sqrt((w * res * res).sum(axis=0) / dof)
    return delta, resid


def depth_from_offset(offset: np.ndarray, disp_focus: float, side: FocusSide) -> np.ndarray:
    """Metric depth (m) from the unsigned inverse-depth offset δ (1/m).

    ``side="near"`` means the focus plane is the nearest surface, so every point is behind it:
    ``depth = 1/(disp_focus − δ)`` (NaN where δ ≥ disp_focus: beyond infinity). ``side="far"``: in front,
    ``depth = 1/(disp_focus + δ)``.
    """
    if side not in ("near", "far"):
        raise InputError(f"--focus-side: must be 'near' or 'far', got {side!r}")
    if not disp_focus > 0:
        raise InputError(f"disp_focus must be > 0 1/m, got {disp_focus}")
    disp = disp_focus - offset if side == "near" else disp_focus + offset
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(disp > 0, 1.0 / np.where(disp > 0, disp, 1.0), np.nan).astype(np.float32)


def texture_energy(image: np.ndarray, window: int) -> np.ndarray:
    """Windowed mean of the squared gradient of the grey display image (H, W, 3) in [0, 1]; (H, W) float32."""
    from .sweep_blur import box_mean

    grey = np.asarray(image, dtype=np.float32).mean(axis=2)
    gy, gx = np.gradient(grey)
    return box_mean(gx * gx + gy * gy, window)


def confidence_map(
    texture: np.ndarray, residual: np.ndarray, valid_fraction: np.ndarray, config: SweepConfig
) -> np.ndarray:
    """Confidence in [0, 1] of the per-pixel regression.

    ``texture/(texture + texture_scale) · 1/(1 + (residual/residual_scale)²) · valid_fraction``: low on
    flat regions (the re-blur cannot tell radii apart there), when the frames disagree with one line through
    the origin (occlusion boundaries, misalignment), and when frames were too blurred to measure.
    """
    t = texture / (texture + config.texture_scale)
    r = 1.0 / (1.0 + (np.nan_to_num(residual, nan=np.inf) / config.residual_scale) ** 2)
    return np.clip(t * r * valid_fraction, 0.0, 1.0).astype(np.float32)


def _linear(frame: np.ndarray, gamma: float) -> np.ndarray:
    return np.power(np.clip(frame, 0.0, 1.0), gamma, dtype=np.float32)


def check_config(config: SweepConfig) -> None:
    """Check the settings shared by stacks and focus brackets (the first lines of every sweep)."""
    from .sweep_blur import radius_grid

    if config.window < 1 or config.window % 2 == 0:
        raise InputError(f"--window: must be an odd number of pixels >= 1, got {config.window}")
    radius_grid(config.max_radius, config.step)  # --max-radius > 0, 0 < --step <= --max-radius/2
    if not config.keep_confidence > 0:
        raise InputError(f"keep_confidence: must be > 0, got {config.keep_confidence}")


def _check_stack(stack: Stack, config: SweepConfig, where: str) -> None:
    if len(stack) < 2:
        raise InputError(
            f"{where}: {len(stack)} frame; the sweep needs a reference and at least one blurred frame (>= 2 frames)"
        )
    if not stack.gamma > 0:
        raise InputError(f"{where}: gamma must be > 0, got {stack.gamma}")
    check_config(config)


def _extra_number(stack: Stack, key: str, where: str) -> float | None:
    """``stack.extra[key]`` as a finite float, None when absent; an error naming the field otherwise."""
    value = stack.extra.get(key)
    if value is None:
        return None
    numeric = isinstance(value, int | float) and not isinstance(value, bool)
    out = float(value) if numeric else float("nan")
    if not np.isfinite(out):
        raise InputError(f"{where}: field {key!r} must be a finite number, got {value!r}; fix or regenerate the stack")
    return out


def normalized_disp_range(stack: Stack, config: SweepConfig, where: str = "stack") -> tuple[float, float] | None:
    """The metric disparity range (1/m) that a normalized stack's normalised disparity 0–1 spans.

    ``config.disp_range`` (``--disp-range``) if given, else the stack's ``extra["disp_min"]`` /
    ``extra["disp_max"]`` (what :func:`bokehdepth.synth.stacks.render_scene_stack` records), else None;
    always None with ``config.offset_only``.
    """
    if config.offset_only:
        return None
    if config.disp_range is not None:
        dmin, dmax = (float(x) for x in config.disp_range)
        if not (np.isfinite(dmin) and np.isfinite(dmax) and 0 <= dmin < dmax):
            raise InputError(f"--disp-range: need 0 <= DMIN < DMAX in 1/m, got {dmin:g} {dmax:g}")
        return dmin, dmax
    lo, hi = _extra_number(stack, "disp_min", where), _extra_number(stack, "disp_max", where)
    if lo is None or hi is None:
        return None
    if not 0 <= lo < hi:
        raise InputError(
            f"{where}: 'disp_min' {lo:g} and 'disp_max' {hi:g} (1/m) need 0 <= disp_min < disp_max; fix the stack "
            "or pass --disp-range DMIN DMAX"
        )
    return lo, hi


def _disp_focus_and_scale(stack: Stack, config: SweepConfig, where: str = "stack") -> tuple[float | None, float, str]:
    """(disp_focus in 1/m or None, factor from the stack's K unit to px per offset unit, offset units).

    ``stack.disp_focus`` is in 1/m for both conventions (DESIGN.md, stack.json). A normalized stack's K_n is
    px at 512-px width per unit normalised disparity ``dn``; with the range (dmin, dmax) of
    :func:`normalized_disp_range`, ``disp = dmin + dn·(dmax − dmin)``, so ``r = K_n·W/512·|dn − dn_focus|
    = K_n·W/512/(dmax − dmin)·|disp − disp_focus|`` (``lens.normalized_to_metric_K``), and the focus in 1/m
    is ``dmin + dn_focus·(dmax − dmin)`` with ``dn_focus`` = ``extra["disp_focus_norm"]`` (so that the
    focus follows a ``--disp-range`` that differs from the one the stack was made with); without it the
    stack's metric ``disp_focus``; ``--focus-m`` overrides both.
    """
    w = stack.size[1]
    if config.focus_m is not None and not (np.isfinite(config.focus_m) and config.focus_m > 0):
        raise InputError(f"--focus-m: must be > 0 m, got {config.focus_m}")
    focus = None if config.focus_m is None else 1.0 / config.focus_m
    stack_focus = stack.disp_focus
    if stack_focus is not None and not (np.isfinite(stack_focus) and stack_focus > 0):
        stack_focus = None
    if stack.K_convention == "metric":
        disp_focus = focus if focus is not None else stack_focus
        if disp_focus is None:
            raise InputError(
                f"{where}: a metric stack needs 'disp_focus' (focus disparity in 1/m, > 0); add it or pass --focus-m"
            )
        return float(disp_focus), 1.0, "1/m"
    from .lens import NORMALIZED_K_WIDTH, normalized_to_metric_K

    rng = normalized_disp_range(stack, config, where)
    if rng is None:  # normalised offset: px per unit normalised disparity at this width
        return None, w / NORMALIZED_K_WIDTH, "normalized"
    dmin, dmax = rng
    if focus is None:
        dn_focus = _extra_number(stack, "disp_focus_norm", where)
        if dn_focus is not None:
            focus = dmin + dn_focus * (dmax - dmin)
        elif stack_focus is not None:
            focus = stack_focus
        else:
            raise InputError(
                f"{where}: a normalized stack without 'disp_focus' (1/m) or 'disp_focus_norm' has no focus "
                "for metric depth; pass --focus-m (or --offset-only)"
            )
        if not focus > 0:
            raise InputError(
                f"{where}: the focus disparity {focus:g} 1/m implied by the disparity range {dmin:g}..{dmax:g} is "
                "not > 0; pass --focus-m or a --disp-range with DMIN > 0"
            )
    return float(focus), float(normalized_to_metric_K(1.0, dmin, dmax, w)), "1/m"


def _measure(ref_lin: np.ndarray, frames_lin: list[np.ndarray], config: SweepConfig, keep_cost: bool = False):
    """Blur of each frame relative to the reference on ``config.device`` (numpy or a torch device)."""
    kw = dict(
        max_radius=config.max_radius,
        step=config.step,
        window=config.window,
        keep_cost=keep_cost,
        progress=config.progress,
    )
    if config.device == "numpy":
        from .sweep_blur import measure_blur

        return measure_blur(ref_lin, frames_lin, **kw)
    from .sweep_torch import measure_blur_torch

    return measure_blur_torch(ref_lin, frames_lin, device=config.device, **kw)


def _blend_fill(raw: np.ndarray, conf: np.ndarray, guide: np.ndarray, config: SweepConfig) -> np.ndarray:
    """Edge-aware fill and blend, the last step of stacks and focus brackets alike.

    ``fill`` = :func:`bokehdepth.sweep_fill.normalized_fill` of ``raw`` (H, W) weighted by ``conf``, guided by
    ``guide`` (H, W, 3) display values; each pixel keeps ``α·raw + (1 − α)·fill`` with
    ``α = clip(conf / keep_confidence, 0, 1)``. Where ``raw`` is NaN the pixel takes ``fill``; where no
    confident pixel reaches (``fill`` NaN) it keeps ``raw``; NaN only where both are. float32 (H, W).
    """
    from .sweep_fill import normalized_fill

    filled, _ = normalized_fill(raw, conf, guide, config.sigma_s, config.sigma_r)
    has_raw, has_fill = np.isfinite(raw), np.isfinite(filled)
    alpha = np.clip(np.asarray(conf, dtype=np.float64) / config.keep_confidence, 0.0, 1.0)
    alpha = np.where(has_raw, np.where(has_fill, alpha, 1.0), 0.0)
    out = alpha * np.where(has_raw, raw, 0.0) + (1.0 - alpha) * np.where(has_fill, filled, 0.0)
    return np.where(has_raw | has_fill, out, np.nan).astype(np.float32)


def _range_info(stack: Stack, config: SweepConfig) -> dict[str, Any]:
    rng = normalized_disp_range(stack, config)
    src = "--disp-range" if config.disp_range is not None else "stack.json disp_min/disp_max"
    return {"min": rng[0], "max": rng[1], "source": src, "units": "1/m"}


def sweep_stack(
    stack: Stack, config: SweepConfig | None = None, *, where: str = "stack", **overrides: Any
) -> SweepResult:
    """Run the Depth-from-Bokeh Sweep on a stack.

    Args:
        stack: frames in [0, 1] display values with K per frame; ``stack.reference`` is the sharpest frame.
        config: :class:`SweepConfig`; keyword ``overrides`` replace its fields.
        where: how error messages name the stack (the CLI passes the stack.json path).
    Returns:
        :class:`SweepResult` (maps (H, W) at the stack's size).
    Raises:
        InputError: fewer than 2 frames, no frame blurrier than the reference, a metric stack without
            ``disp_focus``, a bad window, radius range or ``--step``.
    Warns:
        UserWarning: ``disp_range`` / ``offset_only`` given for a metric stack (they do not apply there).
    """
    import time
    import warnings

    config = replace(config or SweepConfig(), **overrides)
    _check_stack(stack, config, where)
    if stack.K_convention == "metric" and (config.disp_range is not None or config.offset_only):
        warnings.warn(
            f"{where}: disp_range / offset_only apply only to normalized stacks; this stack is metric, ignored",
            stacklevel=2,
        )
        config = replace(config, disp_range=None, offset_only=False)
    t0 = time.perf_counter()
    disp_focus, k_scale, units = _disp_focus_and_scale(stack, config, where)
    ref = stack.reference
    K = np.asarray(stack.K, dtype=np.float64) * k_scale
    others = [i for i in range(len(stack)) if i != ref and K[i] ** 2 - K[ref] ** 2 > 1e-12 * max(K.max(), 1) ** 2]
    if not others:
        raise InputError(f"{where}: no frame is blurrier than the reference (K = {stack.K}); add frames with larger K")
    K_eff = np.sqrt(K[others] ** 2 - K[ref] ** 2)
    ref_lin = _linear(stack.frames[ref], stack.gamma)
    frames_lin = [_linear(stack.frames[i], stack.gamma) for i in others]
    meas = _measure(ref_lin, frames_lin, config)
    t_measure = time.perf_counter() - t0
    raw, resid = regress_offset(K_eff, meas.radius, meas.valid.astype(np.float64))
    texture = texture_energy(stack.frames[ref], config.window)
    conf = confidence_map(texture, resid, meas.valid.mean(axis=0), config)
    conf = np.where(np.isfinite(raw), conf, 0.0).astype(np.float32)
    offset = _blend_fill(raw, conf, stack.frames[ref], config) if config.fill else raw.astype(np.float32)
    side = config.focus_side if config.focus_side is not None else stack.focus_side
    depth = depth_near = depth_far = ambiguous = None
    if disp_focus is not None:
        if side is not None:
            depth = depth_from_offset(offset, disp_focus, side)
        else:
            depth_near = depth_from_offset(offset, disp_focus, "far")  # in front of the focus plane
            depth_far = depth_from_offset(offset, disp_focus, "near")  # behind it
            tol = 0.5 / float(K_eff.max())  # below half a pixel at the strongest frame: in focus
            ambiguous = (offset > tol) & np.isfinite(depth_far)
            depth = np.where(ambiguous, np.nan, depth_near).astype(np.float32)
    info = {
        "K": list(stack.K),
        "K_eff": K_eff.tolist(),
        "reference": ref,
        "disp_focus": disp_focus,
        "focus_side": side,
        "offset_units": units,
        "disp_range": None if units == "normalized" or stack.K_convention == "metric" else _range_info(stack, config),
        "window": config.window,
        "max_radius": config.max_radius,
        "step": config.step,
        "device": config.device,
        "fill": "domain-transform normalized convolution" if config.fill else None,
        "seconds_measure": t_measure,
        "seconds_total": time.perf_counter() - t0,
    }
    return SweepResult(
        disp_offset=offset.astype(np.float32),
        raw_offset=raw.astype(np.float32),
        confidence=conf,
        depth=depth,
        depth_near=depth_near,
        depth_far=depth_far,
        ambiguous=ambiguous,
        radius=meas.radius,
        valid=meas.valid,
        K_eff=K_eff,
        frame_index=others,
        disp_focus=disp_focus,
        focus_side=side,
        offset_units=units,
        info=info,
    )
