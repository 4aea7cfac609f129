"""Shared test setup: offline hubs, a non-interactive matplotlib backend, small deterministic inputs."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_KEYS = REPO_ROOT.parent / "shared" / "reference" / "keys"


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture
def shared_keys() -> Path:
    """Folder of the published checkpoint key lists (../shared/reference/keys)."""
    if not SHARED_KEYS.is_dir():
        pytest.skip(f"{SHARED_KEYS} not present: the published key lists live in ../shared beside the repo")
    return SHARED_KEYS


def read_tsv_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """key → shape from a shared/reference/keys/*.tsv file, in file order."""
    import json

    out: dict[str, tuple[int, ...]] = {}
    for line in path.read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape, _dtype = line.split("\t")
        out[key] = tuple(json.loads(shape))
    return out
