"""``bokehdepth train t2i``: train the Bokeh Diffusion adapter (FLUX.1-dev, text + bokeh level → image).

Bokeh Diffusion's training code is unreleased; this follows its paper's data recipe as the sibling BokehDepth
code implements it (shared/reference/bokeh-diffusion.md §7): all-in-focus photos with a depth map are blurred
synthetically by this project's renderer (:class:`bokehdepth.data.Stage1Dataset`: per-image normalised
disparity, focus on the subject, ``K ~ U(1, 30)`` px at 512 px), the level is K on the same 0–30 axis fed as
``K/30``, dropped to the null label −1 with probability 0.1 (the unconditional label of real CFG), and the
caption (the record's ``caption`` field, the first of ``captions``, else "a photo") is dropped with probability
0.1. Objective: rectified flow on the blurred image's latents (:mod:`bokehdepth.train.flux_common`).

Outputs in ``--out``: the adapter in the released layout (``adapter/config.json`` + ``adapter/model.safetensors``,
loadable by ``bokehdepth generate --weights OUT/adapter``), ``checkpoint.safetensors`` (``--resume``),
``loss_log.jsonl``, ``train_config.json``.

GPUs: ``accelerate launch -m bokehdepth.cli train t2i --device cuda --mixed-precision bf16
--gradient-checkpointing ...``; the same script runs a tiny config on one CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .flux_common import FluxTrainConfig, add_flux_arguments, config_from_namespace, train_flux_adapter

__all__ = ["add_arguments", "run", "train_t2i_adapter"]

DEFAULT_CAPTION = "a photo"


def _caption(record: dict) -> str:
    if isinstance(record.get("caption"), str) and record["caption"].strip():
        return record["caption"]
    caps = record.get("captions")
    if isinstance(caps, list) and caps and isinstance(caps[0], str):
        return caps[0]
    return DEFAULT_CAPTION


def _prompts(records: list[dict], K: Any) -> list[str]:
    return [_caption(r) for r in records]


def _level_input(K: Any) -> Any:
    from ..models.bokeh_diffusion import LEVEL_MAX

    return K / LEVEL_MAX


def _export(adapter: Any, out: Path) -> Path:
    from ..models.bokeh_diffusion import save_bokeh_diffusion_adapter

    return save_bokeh_diffusion_adapter(adapter, Path(out) / "adapter")


def train_t2i_adapter(config: FluxTrainConfig) -> dict[str, Any]:
    """Train the Bokeh Diffusion adapter; returns step, last loss and output paths."""
    return train_flux_adapter(config, "t2i", _prompts, _level_input, _export)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_flux_arguments(parser)


def run(args: argparse.Namespace) -> int:
    result = train_t2i_adapter(config_from_namespace(args))
    print(f"trained {result['step']} steps; adapter: {result['weights']}")
    return 0
