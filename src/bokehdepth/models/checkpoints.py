"""Checkpoint files: safe loading, strict comparison with a model, and missing-file errors.

Only safetensors or ``torch.load(weights_only=True)`` is ever used: no arbitrary unpickling.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import CheckpointError, InputError, MissingWeightsError

__all__ = [
    "KeyReport",
    "PublishedFile",
    "compare_keys",
    "file_sha256",
    "load_state_dict_file",
    "load_strict",
    "read_safetensors_metadata",
    "resolve_local_weights",
    "resolve_weights",
    "weights_root",
]


@dataclass(frozen=True)
class PublishedFile:
    """A released checkpoint file: its name and the Hugging Face repository that publishes it."""

    filename: str
    repo: str

    def missing(self, path: str | os.PathLike) -> MissingWeightsError:
        return MissingWeightsError(str(path), self.repo, self.filename)


def weights_root(weights: str | os.PathLike | None) -> Path | None:
    """The weights location: ``--weights`` if given, else ``$BOKEHDEPTH_WEIGHTS``, else None."""
    if weights:
        return Path(weights)
    env = os.environ.get("BOKEHDEPTH_WEIGHTS")
    return Path(env) if env else None


def resolve_weights(weights: str | os.PathLike | None, published: PublishedFile) -> Path:
    """Find a released file: ``weights`` may be the file itself or a folder holding it.

    Raises:
        MissingWeightsError: naming the file, the repository that publishes it and the fetch command.
    """
    root = weights_root(weights)
    if root is None:
        raise published.missing(Path("weights") / published.filename)
    path = root / published.filename if root.is_dir() else root
    if not path.is_file():
        raise published.missing(path)
    return path


def load_state_dict_file(path: str | os.PathLike) -> dict:
    """Load a checkpoint file safely: ``.safetensors`` via safetensors, anything else via
    ``torch.load(weights_only=True)`` on CPU. Returns the raw object (often a dict, possibly nested)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found; check --weights")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt zip, truncated file, pickled objects that are not tensors
        raise CheckpointError(
            f"{path}: corrupt or unsafe checkpoint ({type(exc).__name__}: {str(exc).splitlines()[0][:160]}); "
            "re-download it (only tensor checkpoints are loaded, never arbitrary pickles)"
        ) from exc


@dataclass
class KeyReport:
    """Result of comparing a state dict with the expected keys and shapes."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # key, expected, found

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.mismatched)

    def summary(self, limit: int = 5) -> str:
        """One line: counts plus the first ``limit`` keys of each kind."""
        parts = []
        for label, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            if items:
                more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
                parts.append(f"{len(items)} {label}: {', '.join(items[:limit])}{more}")
        if self.mismatched:
            shown = ", ".join(f"{k} expected {list(e)} found {list(f)}" for k, e, f in self.mismatched[:limit])
            parts.append(f"{len(self.mismatched)} mis-shaped: {shown}")
        return "; ".join(parts) if parts else "all keys match"

    def lines(self) -> list[str]:
        """Every problem, one per line (for `weights check`)."""
        out = [f"missing\t{k}" for k in self.missing]
        out += [f"unexpected\t{k}" for k in self.unexpected]
        out += [f"mis-shaped\t{k}\texpected {list(e)}\tfound {list(f)}" for k, e, f in self.mismatched]
        return out


def compare_keys(state_dict: Mapping[str, object], expected: Mapping[str, tuple[int, ...]]) -> KeyReport:
    """Compare a state dict (tensors or shapes) with ``expected`` key → shape."""
    report = KeyReport()
    for key, shape in expected.items():
        if key not in state_dict:
            report.missing.append(key)
            continue
        found = tuple(getattr(state_dict[key], "shape", state_dict[key]))
        if found != tuple(shape):
            report.mismatched.append((key, tuple(shape), found))
    report.unexpected = [k for k in state_dict if k not in expected]
    return report


def load_strict(module, state_dict: Mapping[str, object], source: str | os.PathLike) -> None:
    """``module.load_state_dict(state_dict, strict=True)`` with a one-line error naming the keys."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    report = compare_keys(state_dict, expected)
    if not report.ok:
        raise CheckpointError(f"{source}: checkpoint does not match the model strictly: {report.summary()}")
    module.load_state_dict(dict(state_dict), strict=True)


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file (hex)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            while block := f.read(chunk):
                h.update(block)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror})") from exc
    return h.hexdigest()


def resolve_local_weights(weights: str | os.PathLike | None, default: Path, retrain: str) -> Path:
    """A project-trained weights file: ``weights`` (a file, or a folder holding ``default.name``), or the
    embedded ``default`` when None. ``retrain`` is the command named in the error when the file is absent."""
    path = Path(weights) if weights is not None else Path(default)
    if path.is_dir():
        path = path / Path(default).name
    if not path.is_file():
        raise CheckpointError(f"{path}: weights not found; pass --weights FILE or retrain with '{retrain}'")
    return path


def read_safetensors_metadata(path: str | os.PathLike, retrain: str) -> dict[str, str]:
    """The string metadata of a safetensors file (where the compact models keep their config)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except Exception as exc:
        raise CheckpointError(
            f"{path}: not a safetensors file ({type(exc).__name__}); pass a file written by '{retrain}'"
        ) from exc
