"""Edge-aware propagation for the sweep: confidence-weighted normalised convolution with the domain-transform
recursive filter (Gastal & Oliveira, "Domain Transform for Edge-Aware Image and Video Processing", 2011),
guided by the reference image.

``fill = RF(confidence · value) / RF(confidence)``: values spread from confident (textured) pixels into
low-confidence (textureless) ones along the image, but not across the guide's edges, where the domain
transform stretches distances (``1 + σs/σr · Σ_c |∂I_c|`` per pixel step).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError

__all__ = ["domain_transform_filter", "normalized_fill"]


def domain_transform_filter(
    data: np.ndarray, guide: np.ndarray, sigma_s: float = 24.0, sigma_r: float = 0.15, iterations: int = 3
) -> np.ndarray:
    """Edge-aware smoothing of ``data`` (C, H, W) guided by ``guide`` (H, W, 3) in [0, 1] (display values).

    Args:
        sigma_s: spatial standard deviation in px.
        sigma_r: range standard deviation in guide units (summed absolute RGB difference).
        iterations: alternating horizontal/vertical passes (3 is the paper's recommendation).
    Returns:
        float64 (C, H, W).
    """
    from .sweep_numba import recursive_pass

    if sigma_s <= 0 or sigma_r <= 0:
        raise InputError(f"domain transform: sigma_s and sigma_r must be > 0, got {sigma_s}, {sigma_r}")
    out = np.array(data, dtype=np.float64, copy=True)
    guide = np.asarray(guide, dtype=np.float64)
    dx = np.zeros(guide.shape[:2])
    dy = np.zeros(guide.shape[:2])
    dx[:, 1:] = np.abs(np.diff(guide, axis=1)).sum(axis=2)
    dy[1:, :] = np.abs(np.diff(guide, axis=0)).sum(axis=2)
    ratio = sigma_s / sigma_r
    dist_x = 1.0 + ratio * dx
    dist_y = 1.0 + ratio * dy
    for i in range(iterations):
        sigma_i = sigma_s * np.sqrt(3.0) * 2.0 ** (iterations - i - 1) / np.sqrt(4.0**iterations - 1.0)
        a = np.exp(-np.sqrt(2.0) / sigma_i)
        recursive_pass(out, a**dist_x)
        t = np.ascontiguousarray(out.transpose(0, 2, 1))
        recursive_pass(t, np.ascontiguousarray((a**dist_y).T))
        out = np.ascontiguousarray(t.transpose(0, 2, 1))
    return out


def normalized_fill(
    values: np.ndarray,
    confidence: np.ndarray,
    guide: np.ndarray,
    sigma_s: float = 24.0,
    sigma_r: float = 0.15,
    min_support: float = 1e-4,
) -> tuple[np.ndarray, np.ndarray]:
    """Propagate ``values`` (H, W) from confident pixels, edge-aware.

    Args:
        values: (H, W) any unit; NaN where unknown (treated as confidence 0).
        confidence: (H, W) in [0, 1].
        guide: (H, W, 3) display image in [0, 1].
    Returns:
        (filled (H, W) float32, NaN where no confident pixel reaches; support (H, W) float32 = filtered
        confidence, a measure of how much evidence backs the filled value).
    """
    values = np.asarray(values, dtype=np.float64)
    conf = np.where(np.isfinite(values), np.clip(confidence, 0.0, 1.0), 0.0)
    stack = np.stack([conf * np.nan_to_num(values), conf])
    num, den = domain_transform_filter(stack, guide, sigma_s, sigma_r)
    with np.errstate(divide="ignore", invalid="ignore"):
        filled = np.where(den > min_support, num / den, np.nan)
    return filled.astype(np.float32), den.astype(np.float32)
