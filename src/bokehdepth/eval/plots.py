"""Evaluation pictures: per-image error maps, the relative-error histogram and a pred-vs-gt scatter (PNG).

Figures are drawn with matplotlib's ``Figure`` directly (Agg canvas, no pyplot state, no display needed). Colour maps: depth ``magma_r`` as
``bokehdepth.viz``; error maps ``inferno`` on |p − g|/g clipped to [0, 0.5], invalid pixels black.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..io import atomic_file, write_image

__all__ = ["error_histogram", "error_map", "pred_vs_gt_scatter", "write_error_map"]


def error_map(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, vmax: float = 0.5) -> np.ndarray:
    """Absolute relative error |p − g|/g as float32 RGB (H, W, 3), ``inferno`` over [0, vmax]; invalid black."""
    from matplotlib import colormaps

    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(pred - gt) / gt
    rel = np.where(valid & np.isfinite(rel), rel, 0.0)
    rgb = colormaps["inferno"](np.clip(rel / vmax, 0.0, 1.0))[..., :3].astype(np.float32)
    rgb[~valid] = 0.0
    return rgb


def write_error_map(
    path: str | os.PathLike, pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, image: np.ndarray | None = None
) -> Path:
    """Write one picture per image: [image |] gt depth | predicted depth | relative error (shared depth range)."""
    from ..viz import contact_sheet, depth_range, depth_to_color

    lo, hi = depth_range(np.where(valid, gt, np.nan))
    tiles = ([image] if image is not None else []) + [
        depth_to_color(np.where(valid, gt, np.nan), lo, hi),
        depth_to_color(pred, lo, hi),
        error_map(pred, gt, valid),
    ]
    labels = (["image"] if image is not None else []) + [
        f"gt {lo:.2f}-{hi:.2f} m",
        "prediction",
        "|p-g|/g, 0-0.5",
    ]
    path = Path(path)
    write_image(path, contact_sheet(tiles, labels, cols=len(tiles)))
    return path


def _save_figure(fig, path: str | os.PathLike) -> Path:
    path = Path(path)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    return path


def error_histogram(rel_errors: np.ndarray, path: str | os.PathLike, title: str = "") -> Path:
    """Histogram of per-pixel relative errors (p − g)/g over all images (clipped to ±1)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    vals = np.clip(np.asarray(rel_errors, dtype=np.float64), -1.0, 1.0)
    ax.hist(vals, bins=100, range=(-1, 1), color="#444")
    ax.axvline(0.0, color="r", lw=0.8)
    ax.set_xlabel("relative error (pred − gt) / gt")
    ax.set_ylabel("pixels")
    ax.set_title(title or "relative depth error")
    fig.tight_layout()
    return _save_figure(fig, path)


def pred_vs_gt_scatter(
    pred: np.ndarray, gt: np.ndarray, path: str | os.PathLike, title: str = "", max_points: int = 20000, seed: int = 0
) -> Path:
    """Scatter of predicted vs ground-truth depth (m, log-log), a random subsample of ``max_points``."""
    from matplotlib.figure import Figure

    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    if pred.size > max_points:
        idx = np.random.default_rng(seed).choice(pred.size, max_points, replace=False)
        pred, gt = pred[idx], gt[idx]
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.subplots()
    ax.scatter(gt, pred, s=1, alpha=0.3, color="#1f4e79", rasterized=True)
    if gt.size:
        lo, hi = float(min(gt.min(), pred.min())), float(max(gt.max(), pred.max()))
        ax.plot([lo, hi], [lo, hi], "r-", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel("ground truth depth (m)")
    ax.set_ylabel("predicted depth (m)")
    ax.set_title(title or "prediction vs ground truth")
    fig.tight_layout()
    return _save_figure(fig, path)
