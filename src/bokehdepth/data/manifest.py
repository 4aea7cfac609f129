"""The dataset manifest: ``manifest.jsonl``, one JSON object per sample (one writer, one reader).

Record fields (paths relative to the manifest's folder in the file, resolved to absolute by the reader):

- ``id`` (str), ``image`` (sRGB PNG), ``depth`` (float32 ``.npy``, metres), ``stack`` (stack folder),
  optional ``mask`` (8-bit PNG, foreground/subject mask),
- ``K``: K per stack frame including the reference frame 0 (K = 0); px·m at the image width for
  ``K_convention == "metric"``, px at 512-px width per unit normalised disparity for ``"normalized"``,
- ``K_convention``, ``disp_focus`` (1/m), ``focus_side`` (``"near"``/``"far"``/null),
- ``intrinsics`` ``{"fx", "fy", "cx", "cy"}`` (px), ``split`` (``train``/``val``/``test``), ``seed`` (int),
  ``size`` ``[H, W]`` (px); extra fields are kept.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_file

__all__ = ["MANIFEST_NAME", "PATH_FIELDS", "REQUIRED_FIELDS", "read_manifest", "write_manifest"]

MANIFEST_NAME = "manifest.jsonl"
PATH_FIELDS = ("image", "depth", "stack", "mask")
REQUIRED_FIELDS = ("id", "image", "depth", "stack", "K", "K_convention", "disp_focus", "intrinsics", "split", "size")
SPLITS = ("train", "val", "test")


def _manifest_path(path: str | os.PathLike) -> Path:
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.exists():
        raise InputError(f"{path}: manifest not found; generate one with 'bokehdepth synth -o DIR --scenes N'")
    return path


def _check_record(rec: Any, where: str) -> None:
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object per line; fix or regenerate the manifest")
    missing = [k for k in REQUIRED_FIELDS if k not in rec]
    if missing:
        raise InputError(f"{where}: record lacks field(s) {', '.join(missing)}; regenerate the manifest")
    if not isinstance(rec["K"], list) or not all(isinstance(k, (int, float)) and k >= 0 for k in rec["K"]):
        raise InputError(f"{where}: 'K' must be a list of numbers >= 0; fix the manifest line")
    if rec["K_convention"] not in ("metric", "normalized"):
        raise InputError(f"{where}: 'K_convention' must be 'metric' or 'normalized'; fix the manifest line")
    if rec["split"] not in SPLITS:
        raise InputError(f"{where}: 'split' must be one of {', '.join(SPLITS)}; fix the manifest line")
    size = rec["size"]
    if not (isinstance(size, list) and len(size) == 2 and all(isinstance(s, int) and s > 0 for s in size)):
        raise InputError(f"{where}: 'size' must be [H, W] in pixels; fix the manifest line")
    intr = rec["intrinsics"]
    if not isinstance(intr, dict) or any(k not in intr for k in ("fx", "fy", "cx", "cy")):
        raise InputError(f"{where}: 'intrinsics' needs fx, fy, cx, cy (px); fix the manifest line")


def read_manifest(
    path: str | os.PathLike, split: str | Iterable[str] | None = None, check_files: bool = True
) -> list[dict[str, Any]]:
    """Read a manifest (the ``.jsonl`` file or the dataset folder holding ``manifest.jsonl``).

    Args:
        path: manifest file or dataset folder.
        split: keep only this split (or these splits); None keeps all.
        check_files: check that each record's image, depth and stack exist.

    Returns:
        Records in file order, with ``image``/``depth``/``stack``/``mask`` resolved to absolute path strings.

    Raises:
        InputError: naming the file and line for bad JSON, missing fields, bad values, duplicate ids or
            missing files.
    """
    mpath = _manifest_path(path)
    root = mpath.parent.resolve()
    keep = None if split is None else ({split} if isinstance(split, str) else set(split))
    if keep is not None and not keep <= set(SPLITS):
        raise InputError(f"--split: unknown split(s) {sorted(keep - set(SPLITS))}; use train, val or test")
    try:
        lines = mpath.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{mpath}: cannot read manifest ({exc}); check the file") from exc
    records: list[dict[str, Any]] = []
    seen: set[str] = set()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{mpath}:{lineno}"
        try:
            rec = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{where}: not valid JSON ({exc.args[0]}); fix or regenerate the manifest") from exc
        _check_record(rec, where)
        if rec["id"] in seen:
            raise InputError(f"{where}: duplicate id {rec['id']!r}; ids must be unique")
        seen.add(rec["id"])
        if keep is not None and rec["split"] not in keep:
            continue
        for key in PATH_FIELDS:
            if rec.get(key) is None:
                continue
            p = Path(rec[key])
            p = p if p.is_absolute() else root / p
            if check_files and not p.exists():
                raise InputError(f"{p}: listed in {where} but missing; regenerate the dataset or fix the manifest")
            rec[key] = str(p)
        records.append(rec)
    return records


def write_manifest(path: str | os.PathLike, records: Iterable[dict[str, Any]]) -> Path:
    """Write records as JSON lines (keys sorted, so the bytes depend only on the content), atomically.

    Paths inside records are written as given (make them relative to the manifest's folder).
    """
    path = Path(path)
    text = "".join(json.dumps(rec, sort_keys=True) + "\n" for rec in records)
    with atomic_file(path) as tmp:
        tmp.write_text(text)
    return path
