"""Calibrated bokeh stacks of synthetic scenes, in the metric or the published normalised K convention.

Metric convention (default): ``disp = 1/depth`` in 1/m, K in px·m at the scene width, blur radius
``r = K·|disp − disp_focus|`` px. The default K list at 256 px width is :data:`DEFAULT_METRIC_K_256`
(1.5, 3, 6 px·m); with scene disparities in 0.05–2 1/m the largest radius is ≈ 12 px at K = 6. Other widths
scale K with the width (``lens.scale_K_for_resize``).

Normalised convention (``reference/bokehdepth.md`` §2, what the released models were trained on): per-image
min–max normalised disparity ``disp_norm ∈ [0, 1]``, focus from the foreground (:func:`published_focus`),
K_n in px at 512-px width (1–30, default 10 20 30); rendered with ``K_n · W / 512`` on ``disp_norm``.

Focus planes for metric stacks are random (:func:`choose_focus`): the nearest surface (``focus_side="near"``),
the farthest (``"far"``), the subject, or a uniform disparity in between.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from ..io import Stack
from ..lens import NORMALIZED_K_WIDTH, scale_K_for_resize

__all__ = [
    "DEFAULT_METRIC_K_256",
    "DEFAULT_NORMALIZED_K",
    "FOCUS_MODES",
    "choose_focus",
    "default_Ks",
    "normalize_disp",
    "published_focus",
    "render_scene_stack",
]

DEFAULT_METRIC_K_256 = (1.5, 3.0, 6.0)
"""Default metric K list (px·m) at 256-px width; frame 0 (K = 0) is added in front."""

DEFAULT_NORMALIZED_K = (10.0, 20.0, 30.0)
"""Default normalised K list (px at 512-px width per unit normalised disparity), as ``run_inference.sh``."""

FOCUS_MODES = ("near", "far", "subject", "uniform")
"""How :func:`choose_focus` picks the focus plane (each with probability 1/4)."""

KConvention = Literal["metric", "normalized"]


def default_Ks(width: int, K_convention: KConvention = "metric") -> list[float]:
    """The default K list for a scene of ``width`` px (without the K = 0 reference frame)."""
    if K_convention == "normalized":
        return list(DEFAULT_NORMALIZED_K)
    return [float(scale_K_for_resize(k, 256, width)) for k in DEFAULT_METRIC_K_256]


def choose_focus(
    depth: np.ndarray, rng: np.random.Generator, subject_disp: float | None = None, mode: str | None = None
) -> tuple[float, str | None, str]:
    """Pick a focus disparity (1/m) for a scene.

    Args:
        depth: (H, W) metres, finite.
        rng: random generator (the mode and the uniform draw come from it).
        subject_disp: the subject's disparity (1/m) for mode ``"subject"`` (falls back to ``"uniform"``).
        mode: one of :data:`FOCUS_MODES`, or None to draw one uniformly.

    Returns:
        ``(disp_focus, focus_side, mode)``; ``focus_side`` is ``"near"`` when focus is on the nearest surface
        (every point is at or behind it), ``"far"`` on the farthest, else None.
    """
    disp = 1.0 / depth.astype(np.float64)
    dmin, dmax = float(disp.min()), float(disp.max())
    mode = mode or FOCUS_MODES[int(rng.integers(len(FOCUS_MODES)))]
    if mode not in FOCUS_MODES:
        raise ValueError(f"focus mode must be one of {FOCUS_MODES}, got {mode!r}")
    if mode == "near":
        return dmax, "near", mode
    if mode == "far":
        return dmin, "far", mode
    if mode == "subject" and subject_disp is not None:
        return float(subject_disp), None, mode
    return float(rng.uniform(dmin, dmax)), None, "uniform"


def normalize_disp(depth: np.ndarray, valid: np.ndarray | None = None) -> tuple[np.ndarray, float, float]:
    """Per-image min–max normalised disparity as in the published data pipeline.

    ``disp_norm = (1/depth − dmin) / (dmax − dmin + 1e-8)`` over valid pixels (finite, > 0); invalid pixels
    take the median of the valid ones; with no valid pixel everything is 0.5.

    Returns:
        ``(disp_norm float32 (H, W) in [0, 1], dmin, dmax)`` with dmin, dmax in 1/m.
    """
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    if valid is not None:
        ok &= valid
    if not ok.any():
        return np.full(depth.shape, 0.5, np.float32), 0.0, 0.0
    disp = np.zeros_like(depth)
    disp[ok] = 1.0 / depth[ok]
    dmin, dmax = float(disp[ok].min()), float(disp[ok].max())
    dn = (disp - dmin) / (dmax - dmin + 1e-8)
    dn[~ok] = float(np.median(dn[ok]))
    return np.clip(dn, 0.0, 1.0).astype(np.float32), dmin, dmax


def published_focus(
    disp_norm: np.ndarray, depth: np.ndarray, mask: np.ndarray | None, flatten: bool = False
) -> tuple[float, np.ndarray]:
    """Focus of the published synthetic data (``reference/bokehdepth.md`` §2, step 2).

    1. Foreground = mask pixels whose depth is at or below the 96th percentile of the mask's depth.
    2. ``dn_focus`` = median of the foreground's normalised disparities that lie above their own median.
    3. If the foreground spans ≤ 10 m of depth, ``dn_focus`` is clipped to the foreground's disparity
       extremes and to [0, 1], and with ``flatten=True`` the foreground's disparity is set to it (the whole
       subject in focus, as in the published Stage-1 targets; our reading of the code description).

    Without a mask (or an empty one) the nearest 10 % of pixels stand in for the foreground.

    Args:
        disp_norm: (H, W) normalised disparity in [0, 1].
        depth: (H, W) depth in metres (NaN/≤ 0 invalid).
        mask: (H, W) bool foreground mask or None.
        flatten: flatten the foreground to the focus value in the returned map.

    Returns:
        ``(dn_focus in [0, 1], disp_norm)`` (a flattened copy if ``flatten``, else the input).
    """
    depth = np.asarray(depth, dtype=np.float64)
    ok = np.isfinite(depth) & (depth > 0)
    if not ok.any():
        return 0.5, disp_norm
    fg = ok & mask.astype(bool) if mask is not None else np.zeros_like(ok)
    if not fg.any():  # no foreground: the nearest 10 % of the valid pixels
        fg = ok & (disp_norm >= np.percentile(disp_norm[ok], 90))
    fg &= depth <= np.percentile(depth[fg], 96)
    d = disp_norm[fg].astype(np.float64)
    upper = d[d > np.median(d)]
    dn_focus = float(np.median(upper if upper.size else d))
    out = disp_norm
    fg_depth = depth[fg]
    if fg_depth.max() - fg_depth.min() <= 10.0:
        dn_focus = float(np.clip(dn_focus, d.min(), d.max()))
        if flatten:
            out = disp_norm.copy()
            out[fg] = np.clip(dn_focus, 0.0, 1.0)
    return float(np.clip(dn_focus, 0.0, 1.0)), out


def render_scene_stack(
    image: np.ndarray,
    depth: np.ndarray,
    Ks: Sequence[float],
    disp_focus: float | None = None,
    *,
    K_convention: KConvention = "metric",
    mask: np.ndarray | None = None,
    focus_side: str | None = None,
    gamma: float = 2.2,
    backend: str = "cpu",
) -> Stack:
    """Render a calibrated stack of one scene with :func:`bokehdepth.render.render_stack`.

    Args:
        image: float32 (H, W, 3) sRGB in [0, 1].
        depth: (H, W) metres, finite and > 0.
        Ks: K per blurred frame, without the reference: px·m at width W (metric) or px at 512 px per unit
            normalised disparity (normalized).
        disp_focus: focus disparity in 1/m (metric; required there). Ignored for ``"normalized"``, where the
            focus comes from :func:`published_focus` with ``mask``.
        K_convention: ``"metric"`` or ``"normalized"``.
        mask: foreground mask (H, W) for the normalised focus.
        focus_side: recorded in the stack (``"near"``/``"far"``/None).
        gamma: rendering gamma (linear-light exponent).
        backend: renderer backend.

    Returns:
        :class:`~bokehdepth.io.Stack`: frame 0 the sharp image (K = 0), then one frame per K; ``disp_focus``
        always in 1/m (for normalised stacks the metric equivalent of the normalised focus), and for
        normalised stacks ``extra`` holds ``disp_focus_norm``, ``disp_min``, ``disp_max`` (1/m).
    """
    from ..render import render_stack

    h, w = depth.shape
    Ks = [float(k) for k in Ks]
    if K_convention == "metric":
        if disp_focus is None:
            raise ValueError("metric stacks need disp_focus (1/m)")
        disp = (1.0 / depth.astype(np.float64)).astype(np.float32)
        st = render_stack(image, disp, Ks, disp_focus=float(disp_focus), gamma=gamma, backend=backend)
        return Stack(
            frames=list(st.frames),
            K=[0.0] + Ks,
            disp_focus=float(disp_focus),
            gamma=gamma,
            source="render",
            K_convention="metric",
            focus_side=focus_side,
        )
    if K_convention != "normalized":
        raise ValueError(f"K_convention must be 'metric' or 'normalized', got {K_convention!r}")
    dn, dmin, dmax = normalize_disp(depth)
    dn_focus, _ = published_focus(dn, depth, mask)
    k_render = [k * w / NORMALIZED_K_WIDTH for k in Ks]
    st = render_stack(image, dn, k_render, disp_focus=dn_focus, gamma=gamma, backend=backend)
    side = "near" if dn_focus >= float(dn.max()) else "far" if dn_focus <= float(dn.min()) else None
    return Stack(
        frames=list(st.frames),
        K=[0.0] + Ks,
        disp_focus=float(dmin + dn_focus * (dmax - dmin)),
        gamma=gamma,
        source="render",
        K_convention="normalized",
        focus_side=side,
        extra={"disp_focus_norm": dn_focus, "disp_min": dmin, "disp_max": dmax},
    )
