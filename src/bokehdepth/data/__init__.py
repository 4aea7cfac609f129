"""torch Datasets: manifests of synthetic scenes/stacks and RGB-D folders (NYUv2, KITTI, ETH3D layouts).

Names are imported lazily, so ``import bokehdepth.data`` does not load torch.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["RGBDFolder", "Stage1Dataset", "Stage2Dataset", "read_manifest", "write_manifest"]

_WHERE = {
    "read_manifest": "manifest",
    "write_manifest": "manifest",
    "Stage1Dataset": "datasets",
    "Stage2Dataset": "datasets",
    "RGBDFolder": "rgbd",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
