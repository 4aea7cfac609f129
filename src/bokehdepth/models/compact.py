"""The embedded default models (CPU, offline, weights shipped in ``bokehdepth/weights/``).

- Stage-1: :class:`~bokehdepth.models.compact_generator.CompactGenerator` (sharp image + normalised K → bokeh
  frame, no depth), weights ``compact_generator.safetensors``; docs/stage1.md.
- Stage-2: :class:`~bokehdepth.models.compact_depth.CompactDepthModel` (small ViT + DSFA, stack → metric
  depth), weights ``compact_depth.safetensors``; docs/stage2.md.

This module only re-exports them. The Stage-2 names are resolved lazily (on first access), so importing the
generator never requires the depth model's module and vice versa.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .compact_generator import DEFAULT_WEIGHTS as GENERATOR_WEIGHTS

if TYPE_CHECKING:  # resolved lazily by __getattr__ below
    from .compact_depth import DEFAULT_WEIGHTS as DEPTH_WEIGHTS
    from .compact_depth import CompactDepthConfig, CompactDepthModel, load_compact_depth, save_compact_depth
from .compact_generator import (
    CompactGenerator,
    CompactGeneratorConfig,
    load_compact_generator,
    save_compact_generator,
)

__all__ = [
    "DEPTH_WEIGHTS",
    "GENERATOR_WEIGHTS",
    "CompactDepthConfig",
    "CompactDepthModel",
    "CompactGenerator",
    "CompactGeneratorConfig",
    "load_compact_depth",
    "load_compact_generator",
    "save_compact_depth",
    "save_compact_generator",
]

_DEPTH_NAMES = {
    "CompactDepthConfig": "CompactDepthConfig",
    "CompactDepthModel": "CompactDepthModel",
    "load_compact_depth": "load_compact_depth",
    "save_compact_depth": "save_compact_depth",
    "DEPTH_WEIGHTS": "DEFAULT_WEIGHTS",
}


def __getattr__(name: str) -> Any:
    """Lazy access to the Stage-2 compact depth model's names (``bokehdepth.models.compact_depth``)."""
    if name in _DEPTH_NAMES:
        module = importlib.import_module(".compact_depth", __package__)
        return getattr(module, _DEPTH_NAMES[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
