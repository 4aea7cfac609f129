"""Training the BokehDepth Stage-1 bokeh adapter on FLUX.1-Kontext-dev (the ``--model kontext-adapter`` path of
``bokehdepth train stage1``).

Entry point for :mod:`bokehdepth.train.stage1`::

    train_kontext_adapter(config: KontextAdapterTrainConfig | argparse.Namespace) -> dict
        # returns {"step": int, "loss": float, "weights": "<out>/bokeh_lora.bin", "checkpoint": "<out>/checkpoint.safetensors"}

``KontextAdapterTrainConfig`` is :class:`bokehdepth.train.flux_common.FluxTrainConfig` (fields: data, out, base,
steps, batch_size, size, lr, weight_decay, warmup, clip, rank, context_dim, hidden_dim, label_dropout,
caption_dropout, noise_offset, guidance, K_range, max_sequence_length, split, mixed_precision,
gradient_checkpointing, init_weights, seed, log_every, checkpoint_every, resume, device, progress). A namespace
(``bokehdepth train stage1`` flags) is converted field by field; ``base`` falls back to ``$BOKEHDEPTH_FLUX_BASE``.

Data: (sharp, K, bokeh) triplets from :class:`bokehdepth.data.Stage1Dataset` — the target is rendered online by
this project's renderer from the sharp image and its depth with the published focus convention, K ~ U(1, 30)
in the normalised convention (shared/reference/bokehdepth.md §2, §5). Conditioning as at inference: the prompt
template with the raw K and the K token ``clamp(K, 1, 30)/30``; K → −1 and prompt → "" with probability 0.1.
Objective: rectified flow on the noisy *target* tokens, with the sharp image's latents appended as Kontext
reference tokens (image-id type 1); loss on the target tokens only. Output: ``bokeh_lora.bin`` (the released
layout, flat, loadable with ``torch.load(weights_only=True)``), a resumable ``checkpoint.safetensors`` and
``loss_log.jsonl``. Full-size runs need a GPU (published: 4 GPUs, bf16, 512 px, batch 4, 40 epochs).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .flux_common import FluxTrainConfig, config_from_namespace, train_flux_adapter

__all__ = ["KontextAdapterTrainConfig", "train_kontext_adapter"]

KontextAdapterTrainConfig = FluxTrainConfig


def _prompts(records: list[dict], K: Any) -> list[str]:
    from ..pipelines.kontext_stack import DEFAULT_PROMPT_TEMPLATE

    return [DEFAULT_PROMPT_TEMPLATE.format(value=float(k)) for k in K.tolist()]


def _export(adapter: Any, out: Path) -> Path:
    import torch

    from ..io import atomic_file

    path = Path(out) / "bokeh_lora.bin"
    with atomic_file(path) as tmp:
        torch.save({k: v.detach().cpu() for k, v in adapter.state_dict().items()}, tmp)
    return path


def train_kontext_adapter(config: FluxTrainConfig | argparse.Namespace) -> dict[str, Any]:
    """Train the Kontext bokeh adapter (see the module docstring); returns step, last loss and output paths."""
    from ..models.kontext_adapter import k_to_input

    cfg = config if isinstance(config, FluxTrainConfig) else config_from_namespace(config)
    return train_flux_adapter(cfg, "kontext", _prompts, k_to_input, _export)
