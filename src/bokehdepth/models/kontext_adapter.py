"""BokehDepth Stage-1 bokeh adapter for FLUX.1-Kontext-dev (``bokeh_lora.bin``, fogradio/BokehDepth).

The adapter (shared/reference/bokehdepth.md §3) is the generic FLUX bokeh adapter of
:mod:`bokehdepth.models.flux_adapter` with the BokehDepth names ``to_k_dof``/``to_v_dof``, rank 128, alpha 128
(scale 1), query and key LoRA on, all 57 attention modules adapted. Its conditioning input is the blur strength
``K`` in the normalised convention (px at 512-px width per unit of per-image normalised disparity), fed to the
embedding as ``clamp(K, 1, 30)/30``; −1 is the dropped (unconditional) label used in training.

Loading is strict: the file must hold exactly the published keys and shapes (after the key forms the reference
loader accepts: flat ``embedding_layer.*`` + ``adapter_modules.<i>.*``, or bare numeric ``<i>.*`` processor keys).
A ``module.``-prefixed (DDP-wrapped) file, which the reference silently loads as nothing, fails here with a
message naming the fix.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .checkpoints import PublishedFile, load_state_dict_file, load_strict, resolve_weights
from .flux_adapter import (
    FluxAdapterConfig,
    FluxBokehAdapter,
    infer_lora_dims,
    published_adapter_shapes,
    transformer_attn_dim,
)

__all__ = [
    "BASE_REPO",
    "K_MAX",
    "K_MIN",
    "PUBLISHED",
    "k_to_input",
    "kontext_adapter_config",
    "load_kontext_adapter",
    "published_keys",
    "unwrap_checkpoint",
]

BACKEND = "kontext-adapter"
PUBLISHED = PublishedFile("bokeh_lora.bin", "fogradio/BokehDepth")
BASE_REPO = "black-forest-labs/FLUX.1-Kontext-dev"
K_MIN, K_MAX = 1.0, 30.0
_NUMERIC = re.compile(r"^(\d+)\.(.+)$")


def kontext_adapter_config(**overrides) -> FluxAdapterConfig:
    """The released configuration (run_inference.sh): rank 128, alpha 128, Q+K LoRA, all blocks."""
    cfg = dict(cond_name="dof", attn_dim=3072, context_dim=768, hidden_dim=64, input_dim=1, rank=128, alpha=128.0)
    cfg.update(overrides)
    return FluxAdapterConfig(**cfg)


def k_to_input(K: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Embedding input (N,) from normalised K (px at 512 px per unit normalised disparity): clamp(K, 1, 30)/30."""
    k = torch.as_tensor(K, dtype=torch.float32).reshape(-1)
    if not torch.isfinite(k).all():
        raise InputError(f"--K: values must be finite, got {k.tolist()}")
    return k.clamp(K_MIN, K_MAX) / K_MAX


def published_keys(name: str = BACKEND) -> dict[str, tuple[int, ...]]:
    """key → shape of ``bokeh_lora.bin`` (460 keys), from the adapter built on a meta-device FLUX transformer."""
    if name != BACKEND:
        raise InputError(f"backend '{name}' is not provided by {__name__}")
    return dict(_published_shapes())


@functools.lru_cache(maxsize=1)
def _published_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) pairs, computed once per process (building the meta transformer takes ~0.3 s)."""
    return tuple(published_adapter_shapes(kontext_adapter_config()).items())


def unwrap_checkpoint(name: str, raw: object) -> dict[str, torch.Tensor]:
    """The flat published-layout state dict inside a loaded ``bokeh_lora.bin``.

    Accepted as the reference loader does: ``embedding_layer.*`` + ``adapter_modules.<i>.*`` keys, or bare
    numeric processor keys ``<i>.*`` (mapped to ``adapter_modules.<i>.*``). Any other key is kept, so the strict
    comparison reports it as unexpected. A ``module.`` prefix fails at once with the fix.
    """
    if name != BACKEND:
        raise InputError(f"backend '{name}' is not provided by {__name__}")
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(
            "bokeh_lora.bin: expected a flat state dict of tensors (key → tensor); got a nested object"
        )
    if raw and all(str(k).startswith("module.") for k in raw):
        raise CheckpointError(
            "bokeh_lora.bin: every key starts with 'module.' (saved from a DDP-wrapped model); the reference "
            "loader would silently load nothing. Save the unwrapped adapter (accelerator.unwrap_model) or strip "
            "the prefix"
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in raw.items():
        m = _NUMERIC.match(str(key))
        out[f"adapter_modules.{m.group(1)}.{m.group(2)}" if m else str(key)] = value
    return out


def load_kontext_adapter(
    weights: str | os.PathLike | None,
    transformer: nn.Module,
    install: bool = True,
) -> FluxBokehAdapter:
    """Load ``bokeh_lora.bin`` strictly into an adapter that fits ``transformer`` (and install it).

    Args:
        weights: the file, or a folder holding ``bokeh_lora.bin`` (None: ``$BOKEHDEPTH_WEIGHTS``).
            ``.safetensors`` files are read with safetensors, anything else with ``torch.load(weights_only=True)``.
        transformer: diffusers ``FluxTransformer2DModel`` of FLUX.1-Kontext-dev (or a tiny test config: the
            LoRA rank and token widths are read from the file, the attention width from the transformer, and the
            published key list must then match exactly).
        install: put the processors into ``transformer``.

    Raises:
        MissingWeightsError: no file (names fogradio/BokehDepth and the fetch command).
        CheckpointError: not loadable strictly, naming the first offending keys.
    """
    path = resolve_weights(weights, PUBLISHED)
    state = unwrap_checkpoint(BACKEND, load_state_dict_file(path))
    try:
        dims = infer_lora_dims(state, "dof")
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    config = kontext_adapter_config(attn_dim=transformer_attn_dim(transformer), alpha=float(dims["rank"]), **dims)
    adapter = FluxBokehAdapter.for_transformer(transformer, config)
    load_strict(adapter, state, Path(path))
    if install:
        adapter.install(transformer)
    return adapter
