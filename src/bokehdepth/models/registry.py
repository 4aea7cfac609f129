"""Named backends with released checkpoints: the one list that `weights keys/check`, docs and tests iterate.

Each backend's implementation module provides two functions:

- ``published_keys(name) -> dict[str, tuple[int, ...]]``: key → shape of the full-size model exactly as its
  published checkpoint stores it, in ``state_dict()`` order, computed from a model built on the ``meta``
  device (nothing downloaded, no memory used).
- ``unwrap_checkpoint(name, raw) -> dict[str, Tensor]``: the flat published-layout state dict inside a loaded
  checkpoint object (strips the nesting and prefixes the reference loaders strip; see
  shared/reference/keys/README.md).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType
from typing import Literal

from ..errors import InputError
from .checkpoints import PublishedFile

__all__ = ["BACKENDS", "Backend", "BackendName", "get_backend"]

BackendName = Literal["kontext-adapter", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa", "bokeh-diffusion"]


@dataclass(frozen=True)
class Backend:
    """A full-size backend with a released checkpoint.

    Attributes:
        name: preset name used on the CLI.
        module: import path of the implementation (see the module docstring for its two functions).
        published: the released file and the repository that publishes it.
        reference_keys: file name of its key list in ``shared/reference/keys/``.
        role: ``"depth"`` (Stage-2), ``"stack"`` (Stage-1) or ``"t2i"`` (text-to-image).
    """

    name: str
    module: str
    published: PublishedFile
    reference_keys: str
    role: Literal["depth", "stack", "t2i"]

    def load_module(self) -> ModuleType:
        return importlib.import_module(self.module)

    def published_keys(self) -> dict[str, tuple[int, ...]]:
        return self.load_module().published_keys(self.name)

    def unwrap_checkpoint(self, raw: object) -> dict:
        return self.load_module().unwrap_checkpoint(self.name, raw)


_BD = "fogradio/BokehDepth"
BACKENDS: dict[str, Backend] = {
    b.name: b
    for b in [
        Backend(
            "kontext-adapter",
            "bokehdepth.models.kontext_adapter",
            PublishedFile("bokeh_lora.bin", _BD),
            "flux_kontext_bokeh_adapter.tsv",
            "stack",
        ),
        Backend(
            "dav2-dsfa-s",
            "bokehdepth.models.depth_anything",
            PublishedFile("DAV2_dsfa_release.pth", _BD),
            "dav2_dsfa_vits.tsv",
            "depth",
        ),
        Backend(
            "dav2-dsfa-b",
            "bokehdepth.models.depth_anything",
            PublishedFile("DAV2_dsfa_release.pth", _BD),
            "dav2_dsfa_vitb.tsv",
            "depth",
        ),
        Backend(
            "dav2-dsfa-l",
            "bokehdepth.models.depth_anything",
            PublishedFile("DAV2_dsfa_release.pth", _BD),
            "dav2_dsfa_vitl.tsv",
            "depth",
        ),
        Backend(
            "udv2-dsfa",
            "bokehdepth.models.unidepth",
            PublishedFile("UDv2_dsfa_release.pth", _BD),
            "udv2_dsfa_vitl14.tsv",
            "depth",
        ),
        Backend(
            "bokeh-diffusion",
            "bokehdepth.models.bokeh_diffusion",
            PublishedFile("model.safetensors", "atfortes/BokehDiffusion"),
            "bokeh_diffusion_adapter.tsv",
            "t2i",
        ),
    ]
}


def get_backend(name: str) -> Backend:
    """Look up a backend by name; unknown names fail with the list of known ones."""
    try:
        return BACKENDS[name]
    except KeyError:
        raise InputError(f"backend '{name}' is unknown; choose one of: {', '.join(BACKENDS)}") from None
