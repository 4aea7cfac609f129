"""Procedural scenes with exact metric depth, calibrated stacks rendered from them, and dataset manifests."""

from __future__ import annotations

from .dataset import DatasetConfig, generate_dataset, scene_seed, scene_seeds, write_preview
from .scenes import DEPTH_RANGE, Scene, make_scene
from .stacks import (
    DEFAULT_METRIC_K_256,
    DEFAULT_NORMALIZED_K,
    choose_focus,
    default_Ks,
    normalize_disp,
    published_focus,
    render_scene_stack,
)

__all__ = [
    "DEFAULT_METRIC_K_256",
    "DEFAULT_NORMALIZED_K",
    "DEPTH_RANGE",
    "DatasetConfig",
    "Scene",
    "choose_focus",
    "default_Ks",
    "generate_dataset",
    "make_scene",
    "normalize_disp",
    "published_focus",
    "render_scene_stack",
    "scene_seed",
    "scene_seeds",
    "write_preview",
]
