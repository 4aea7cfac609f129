"""Bokeh Diffusion adapter for FLUX.1-dev (atfortes/BokehDiffusion: ``config.json`` + ``model.safetensors``).

The adapter (shared/reference/bokeh-diffusion.md §4–5) is the generic FLUX bokeh adapter of
:mod:`bokehdepth.models.flux_adapter` with the names ``to_k_bokeh``/``to_v_bokeh``. Its input is the bokeh level
on the 0–30 axis divided by 30 (no clamping, as published), or −1 for the unconditional label of real CFG.

The reference loads ``model.safetensors`` with ``strict=False``, so a misnamed file silently gives plain FLUX.
Here ``config.json`` must hold only the known constructor fields and the weights must match exactly.
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from ..io import atomic_dir
from .checkpoints import PublishedFile, load_state_dict_file, load_strict, weights_root
from .flux_adapter import (
    FluxAdapterConfig,
    FluxBokehAdapter,
    block_names,
    published_adapter_shapes,
    transformer_attn_dim,
)

__all__ = [
    "BASE_REPO",
    "CONFIG",
    "LEVEL_MAX",
    "NULL_LABEL",
    "PUBLISHED",
    "bokeh_diffusion_config",
    "level_to_input",
    "load_bokeh_diffusion_adapter",
    "published_keys",
    "save_bokeh_diffusion_adapter",
    "unwrap_checkpoint",
]

BACKEND = "bokeh-diffusion"
REPO = "atfortes/BokehDiffusion"
PUBLISHED = PublishedFile("model.safetensors", REPO)
CONFIG = PublishedFile("config.json", REPO)
BASE_REPO = "black-forest-labs/FLUX.1-dev"
LEVEL_MIN, LEVEL_MAX = 0.0, 30.0
NULL_LABEL = -1.0

#: config.json field → FluxAdapterConfig field (the reference class's constructor arguments).
_CONFIG_FIELDS = {
    "attn_hidden_dim": "attn_dim",
    "bokeh_input_dim": "input_dim",
    "bokeh_hidden_dim": "hidden_dim",
    "bokeh_context_dim": "context_dim",
    "lora_rank": "rank",
    "lora_alpha": "alpha",
    "unfreeze_q": "unfreeze_q",
    "unfreeze_k": "unfreeze_k",
    "blocks": "blocks",
}
#: accepted but without effect on the processors, as in the reference (they keep scale 1.0).
_INERT_FIELDS = {"lora_scale", "bokeh_scale"}


def bokeh_diffusion_config(**overrides) -> FluxAdapterConfig:
    """The released configuration (inferred config.json): rank 128, no alpha, Q+K LoRA, all 57 blocks."""
    cfg = dict(cond_name="bokeh", attn_dim=3072, context_dim=768, hidden_dim=64, input_dim=1, rank=128, alpha=None)
    cfg.update(overrides)
    return FluxAdapterConfig(**cfg)


def level_to_input(level: float) -> float:
    """Model input from a bokeh level in 0–30: ``level/30`` (not clamped, as published)."""
    level = float(level)
    if not LEVEL_MIN <= level <= LEVEL_MAX:
        raise InputError(f"--bokeh-target/--bokeh-pivot: levels are 0–30, got {level:g}")
    return level / LEVEL_MAX


def published_keys(name: str = BACKEND) -> dict[str, tuple[int, ...]]:
    """key → shape of ``model.safetensors`` (460 keys), built on a meta-device FLUX.1-dev transformer."""
    if name != BACKEND:
        raise InputError(f"backend '{name}' is not provided by {__name__}")
    return dict(_published_shapes())


@functools.lru_cache(maxsize=1)
def _published_shapes() -> tuple[tuple[str, tuple[int, ...]], ...]:
    """(key, shape) pairs, computed once per process (building the meta transformer takes ~0.3 s)."""
    return tuple(published_adapter_shapes(bokeh_diffusion_config()).items())


def unwrap_checkpoint(name: str, raw: object) -> dict[str, torch.Tensor]:
    """``model.safetensors`` is already flat and unprefixed: returned as is after a type check."""
    if name != BACKEND:
        raise InputError(f"backend '{name}' is not provided by {__name__}")
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError("model.safetensors: expected a flat state dict of tensors")
    return dict(raw)


def _locate(weights: str | os.PathLike | None) -> tuple[Path, Path]:
    """(config.json, model.safetensors) inside the adapter folder; missing files raise MissingWeightsError."""
    root = weights_root(weights)
    if root is None:
        raise CONFIG.missing(Path("weights") / CONFIG.filename)
    if root.suffix == ".safetensors":
        folder, model_path = root.parent, root
    else:
        folder, model_path = root, root / PUBLISHED.filename
    config_path = folder / CONFIG.filename
    if not config_path.is_file():
        raise CONFIG.missing(config_path)
    if not model_path.is_file():
        raise PUBLISHED.missing(model_path)
    return config_path, model_path


def read_config(config_path: Path, transformer: nn.Module) -> FluxAdapterConfig:
    """Parse config.json strictly into a :class:`FluxAdapterConfig` for ``transformer``."""
    try:
        raw = json.loads(Path(config_path).read_text())
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{config_path}: not valid JSON ({exc}); re-download it") from exc
    if not isinstance(raw, dict):
        raise CheckpointError(f"{config_path}: expected a JSON object")
    unknown = sorted(set(raw) - set(_CONFIG_FIELDS) - _INERT_FIELDS)
    if unknown:
        raise CheckpointError(
            f"{config_path}: unknown adapter config fields {unknown}; is this a Bokeh Diffusion folder?"
        )
    kwargs = {_CONFIG_FIELDS[k]: v for k, v in raw.items() if k in _CONFIG_FIELDS}
    kwargs.setdefault("attn_dim", transformer_attn_dim(transformer))
    names = block_names(transformer)
    if kwargs.get("blocks") is not None:
        bad = [b for b in kwargs["blocks"] if b not in names]
        if bad:
            raise CheckpointError(f"{config_path}: blocks {bad[:3]} are not blocks of the base transformer")
        if list(kwargs["blocks"]) == names:
            kwargs["blocks"] = None
    try:
        return bokeh_diffusion_config(**kwargs)
    except TypeError as exc:
        raise CheckpointError(f"{config_path}: bad adapter config ({exc})") from exc


def load_bokeh_diffusion_adapter(
    weights: str | os.PathLike | None,
    transformer: nn.Module,
    install: bool = True,
) -> FluxBokehAdapter:
    """Load the released adapter folder strictly and (by default) install it into ``transformer``.

    Args:
        weights: folder with ``config.json`` and ``model.safetensors`` (or the ``.safetensors`` file with its
            config beside it); None: ``$BOKEHDEPTH_WEIGHTS``.
        transformer: FLUX.1-dev ``FluxTransformer2DModel`` (or a tiny test config whose width the config matches).

    Raises:
        MissingWeightsError: a file is missing (names atfortes/BokehDiffusion and the fetch command).
        CheckpointError: config or weights do not match strictly.
    """
    config_path, model_path = _locate(weights)
    config = read_config(config_path, transformer)
    adapter = FluxBokehAdapter.for_transformer(transformer, config)
    state = unwrap_checkpoint(BACKEND, load_state_dict_file(model_path))
    load_strict(adapter, state, model_path)
    if install:
        adapter.install(transformer)
    return adapter


def save_bokeh_diffusion_adapter(adapter: FluxBokehAdapter, folder: str | os.PathLike) -> Path:
    """Write ``config.json`` + ``model.safetensors`` in the released layout (atomically)."""
    from safetensors.torch import save_file

    cfg = asdict(adapter.config)
    names = [n.split(".attn")[0] for n in adapter.processor_names]
    config = {src: cfg[dst] for src, dst in _CONFIG_FIELDS.items()}
    config["blocks"] = names if cfg["blocks"] is None else list(cfg["blocks"])
    config.update(lora_scale=1.0, bokeh_scale=1.0)
    state = {k: v.detach().to("cpu").contiguous() for k, v in adapter.state_dict().items()}
    with atomic_dir(folder) as tmp:
        (tmp / CONFIG.filename).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / PUBLISHED.filename))
    return Path(folder)
