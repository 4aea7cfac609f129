"""Shared helpers for the UniDepthV2-DSFA tests: tiny random models, inputs, checkpoint files."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bokehdepth.models.unidepth import UniDepthConfig, UniDepthV2DSFA

KEYS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "keys"
TSV = "udv2_dsfa_vitl14.tsv"


def reference_rows() -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) rows of the published key list, in order (skips the test when ../shared is absent)."""
    import pytest

    if not (KEYS_DIR / TSV).is_file():
        pytest.skip(f"reference key list {KEYS_DIR / TSV} not present (../shared beside the repo)")
    rows = []
    for line in (KEYS_DIR / TSV).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        rows.append((key, tuple(json.loads(shape))))
    return rows


def tiny_model(seed: int = 0, **overrides) -> UniDepthV2DSFA:
    """A tiny random UniDepthV2-DSFA in eval mode; DSFA gates raised to 0.5 so the stack visibly matters."""
    from dataclasses import replace

    torch.manual_seed(seed)
    model = UniDepthV2DSFA(replace(UniDepthConfig.tiny(), **overrides)).eval()
    if not model.cfg.identity_init:
        with torch.no_grad():
            for name, p in model.pixel_encoder.fusion_blocks.named_parameters():
                if "gamma" in name:
                    p.fill_(0.5)
    return model


def tiny_inputs(batch: int = 1, n: int = 3, hw: tuple[int, int] = (56, 84), seed: int = 1):
    """(image [B,3,H,W], stack [B,N,3,H,W], K [B,N]) random normalised inputs."""
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, 3, *hw, generator=g)
    stack = image[:, None] + 0.5 * torch.randn(batch, n, 3, *hw, generator=g)
    k = torch.linspace(10.0, 30.0, n).expand(batch, n).clone()
    return image, stack, k


def save_checkpoint(path: Path, obj: object) -> Path:
    torch.save(obj, path)
    return path


def one_thread():
    """Generator for an autouse fixture: tiny models run far faster on one intra-op thread on a busy 2-core
    machine (no spin-waiting); the previous setting is restored afterwards."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
