"""Small stand-ins for the Stage-1 generator and Stage-2 predictor (same interfaces as
``pipelines.stack`` / ``pipelines.depth``), and image fixtures for the run and app tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bokehdepth.io import Stack, write_image


class FakeGenerator:
    """Frame for K: the image blended towards its mean by K/40 (deterministic, cheap). Counts calls."""

    def __init__(self) -> None:
        self.calls = 0

    def generate(self, image: np.ndarray, Ks: list[float], seed: int = 42, progress: bool = False) -> Stack:
        self.calls += 1
        mean = image.mean(axis=(0, 1), keepdims=True)
        frames = [image] + [(1 - k / 40) * image + (k / 40) * mean for k in Ks]
        return Stack(
            frames=[f.astype(np.float32) for f in frames],
            K=[0.0, *Ks],
            reference=0,
            source="generated",
            K_convention="normalized",
            extra={"backend": "fake", "seed": seed},
        )


@dataclass
class FakeDepthResult:
    depth: np.ndarray
    confidence: np.ndarray | None
    info: dict[str, Any] = field(default_factory=dict)


class FakePredictor:
    """depth (m) = 1 + 2·mean RGB + 5·mean |frame − reference| over the frames: depends on the stack."""

    def predict(self, image: np.ndarray, stack: Stack | None, single_frame: bool = False) -> FakeDepthResult:
        depth = 1.0 + 2.0 * image.mean(axis=-1)
        if stack is not None and not single_frame:
            ref = stack.frames[stack.reference]
            diffs = [np.abs(f - ref).mean(axis=-1) for i, f in enumerate(stack.frames) if i != stack.reference]
            depth = depth + 5.0 * np.mean(diffs, axis=0)
        return FakeDepthResult(depth.astype(np.float32), np.full(depth.shape, 0.5, np.float32), {"backend": "fake"})


def use_fakes(monkeypatch) -> FakeGenerator:
    """Make ``BokehDepthPipeline.load`` build the fakes instead of the real backends; returns the generator."""
    from bokehdepth.pipelines import bokehdepth as pipe

    gen = FakeGenerator()
    monkeypatch.setattr(pipe, "_load_generator", lambda backend, weights, device, base: gen)
    monkeypatch.setattr(pipe, "_load_predictor", lambda backend, weights, device: FakePredictor())
    return gen


def make_image(path: Path, h: int = 40, w: int = 56, seed: int = 0) -> Path:
    """A smooth random colour image (H, W) written to ``path``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
    img = np.stack([xx, yy, 0.5 + 0.3 * np.sin(6 * xx + 4 * yy)], -1) * 0.7 + 0.3 * rng.random((h, w, 3))
    write_image(path, np.clip(img, 0, 1).astype(np.float32))
    return path


def make_corrupt(path: Path) -> Path:
    """A file with an image suffix that is not an image (truncated PNG header)."""
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 20)
    return path
