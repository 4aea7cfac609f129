"""Shared helpers for the synth / data / eval tests: a tiny synthetic dataset."""

from __future__ import annotations

from pathlib import Path

TINY_SIZE = 32
TINY_KS = (1.0, 2.0)


def make_tiny_dataset(folder: Path, n: int = 3, seed: int = 7, **kwargs) -> Path:
    """Generate an n-scene 32 px dataset with two blurred frames; return its manifest path."""
    from bokehdepth.synth import generate_dataset

    kwargs.setdefault("Ks", TINY_KS)
    return generate_dataset(folder, n, size=TINY_SIZE, seed=seed, progress=False, **kwargs)


def tree_bytes(folder: Path) -> dict[str, bytes]:
    """Relative path → file bytes for every file under ``folder``."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
