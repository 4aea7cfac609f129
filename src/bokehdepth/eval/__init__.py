"""Metric-depth evaluation: metrics, the dataset runner and plots."""

from __future__ import annotations

from .metrics import METRIC_NAMES, align_prediction, average_metrics, compute_metrics, valid_mask

__all__ = ["METRIC_NAMES", "align_prediction", "average_metrics", "compute_metrics", "valid_mask"]
