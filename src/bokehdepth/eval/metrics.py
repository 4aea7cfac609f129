"""Standard metric-depth error measures, per image, with masks, depth caps and optional alignment.

For valid pixels i = 1..n (ground truth finite and > 0, inside [min_depth, max_depth], prediction finite and
> 0 after alignment and clipping, and inside ``mask`` if given), with prediction p and ground truth g in metres:

- ``abs_rel`` = mean |p − g| / g
- ``sq_rel`` = mean (p − g)² / g
- ``rmse`` = sqrt(mean (p − g)²)  (metres)
- ``rmse_log`` = sqrt(mean (ln p − ln g)²)
- ``silog`` = 100 · sqrt(mean d² − (mean d)²) with d = ln p − ln g: the scale-invariant log error as the
  KITTI benchmark and the BTS/AdaBins/ZoeDepth evaluation report it (100 × the standard deviation of the
  log difference, λ = 1)
- ``log10`` = mean |log10 p − log10 g|
- ``delta1/2/3`` = share of pixels with max(p/g, g/p) < 1.25, 1.25², 1.25³

Alignment (fitted on the valid pixels, before the prediction is clipped to [min_depth, max_depth]):
``"none"``; ``"median"``: p ← p · median(g)/median(p) (scale); ``"lstsq"``: least-squares scale and shift,
in depth (``space="depth"``: min Σ(s·p + t − g)²) or in disparity (``space="disp"``: min Σ(s/p + t − 1/g)²,
then p ← 1/(s/p + t), the usual choice for affine-invariant disparity models).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

import numpy as np

from ..errors import InputError

__all__ = ["METRIC_NAMES", "align_prediction", "average_metrics", "compute_metrics", "valid_mask"]

METRIC_NAMES = ("abs_rel", "sq_rel", "rmse", "rmse_log", "silog", "log10", "delta1", "delta2", "delta3")
"""Metric keys, in table order. Lower is better for all but the deltas."""

Align = Literal["none", "median", "lstsq"]


def valid_mask(
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
) -> np.ndarray:
    """Pixels where the ground truth is finite, > 0, within [min_depth, max_depth] and inside ``mask``."""
    gt = np.asarray(gt, dtype=np.float64)
    ok = np.isfinite(gt) & (gt > 0)
    if min_depth is not None:
        ok &= gt >= min_depth
    if max_depth is not None:
        ok &= gt <= max_depth
    if mask is not None:
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != gt.shape:
            raise InputError(f"mask: shape {mask.shape} does not match the ground truth {gt.shape}")
        ok &= mask
    return ok


def align_prediction(
    pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, align: Align = "none", space: str = "depth"
) -> np.ndarray:
    """Return ``pred`` (metres) aligned to ``gt`` on the ``valid`` pixels (see the module docstring)."""
    pred = np.asarray(pred, dtype=np.float64)
    if align == "none":
        return pred
    ok = valid & np.isfinite(pred) & (pred > 0)
    if ok.sum() < 2:
        return pred
    p, g = pred[ok], np.asarray(gt, dtype=np.float64)[ok]
    if align == "median":
        return pred * (np.median(g) / np.median(p))
    if align != "lstsq":
        raise InputError(f"--align: use none, median or lstsq, got {align!r}")
    if space == "disp":
        x, y = 1.0 / p, 1.0 / g
    elif space == "depth":
        x, y = p, g
    else:
        raise InputError(f"--align-space: use depth or disp, got {space!r}")
    A = np.stack([x, np.ones_like(x)], axis=1)
    (s, t), *_ = np.linalg.lstsq(A, y, rcond=None)
    if space == "depth":
        return s * pred + t
    with np.errstate(divide="ignore", invalid="ignore"):
        disp = s / pred + t
        return np.where(disp > 0, 1.0 / disp, np.nan)


def compute_metrics(
    pred: np.ndarray,
    gt: np.ndarray,
    mask: np.ndarray | None = None,
    align: Align = "none",
    min_depth: float | None = 1e-3,
    max_depth: float | None = None,
    space: str = "depth",
) -> dict[str, float]:
    """Error measures of one depth prediction against its ground truth (both (H, W) metres).

    Args:
        pred: predicted depth (m); NaN/inf/≤ 0 pixels are treated as invalid predictions and excluded.
        gt: ground-truth depth (m); NaN/inf/≤ 0 mark missing ground truth.
        mask: optional bool (H, W), True where the pixel counts (e.g. an Eigen/Garg crop).
        align: ``"none"``, ``"median"`` or ``"lstsq"``.
        min_depth / max_depth: ground-truth range that counts (m); the prediction is clipped to it after
            alignment (as the usual NYU/KITTI protocol does). None disables the bound.
        space: ``"depth"`` or ``"disp"`` for least-squares alignment.

    Returns:
        ``{name: value}`` for :data:`METRIC_NAMES` plus ``n_pixels``; NaN metrics if no pixel is valid.
    """
    pred = np.asarray(pred, dtype=np.float64)
    gt = np.asarray(gt, dtype=np.float64)
    if pred.shape != gt.shape:
        raise InputError(f"prediction is {pred.shape} but ground truth is {gt.shape}; resize one to match")
    valid = valid_mask(gt, mask, min_depth, max_depth)
    pred = align_prediction(pred, gt, valid, align, space)
    lo = min_depth if min_depth is not None else -np.inf
    hi = max_depth if max_depth is not None else np.inf
    with np.errstate(invalid="ignore"):
        pred = np.clip(pred, lo, hi)
    valid &= np.isfinite(pred) & (pred > 0)
    n = int(valid.sum())
    if n == 0:
        return {**{k: float("nan") for k in METRIC_NAMES}, "n_pixels": 0}
    p, g = pred[valid], gt[valid]
    diff = p - g
    d = np.log(p) - np.log(g)
    ratio = np.maximum(p / g, g / p)
    return {
        "abs_rel": float(np.mean(np.abs(diff) / g)),
        "sq_rel": float(np.mean(diff**2 / g)),
        "rmse": float(np.sqrt(np.mean(diff**2))),
        "rmse_log": float(np.sqrt(np.mean(d**2))),
        "silog": float(100.0 * np.sqrt(max(np.mean(d**2) - np.mean(d) ** 2, 0.0))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25**2)),
        "delta3": float(np.mean(ratio < 1.25**3)),
        "n_pixels": n,
    }


def average_metrics(per_image: Iterable[Mapping[str, float]]) -> dict[str, float]:
    """Mean of each metric over images (images with no valid pixel are skipped); adds ``n_images``."""
    rows = [r for r in per_image if r.get("n_pixels", 1) > 0]
    out: dict[str, float] = {k: float(np.mean([r[k] for r in rows])) if rows else float("nan") for k in METRIC_NAMES}
    out["n_images"] = len(rows)
    return out
