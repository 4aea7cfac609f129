"""Write a synthetic dataset: per-scene folders and ``manifest.jsonl``; deterministic, parallel, resumable.

Layout of ``out_dir``::

    dataset.json            the generation arguments (a rerun with other arguments is refused)
    manifest.jsonl          one record per scene (see bokehdepth.data.manifest)
    preview.png             contact sheet of a few scenes (written by the CLI)
    000000/image.png        sharp sRGB image (8-bit)
    000000/depth.npy        float32 metric depth (H, W), metres
    000000/mask.png         subject mask (8-bit, 255 = subject), the foreground of the published focus rule
    000000/stack/           stack folder: frame_000.png (sharp, K = 0) … + stack.json
    000000/record.json      this scene's manifest record (written last: marks the scene as finished)

Each scene folder is written atomically, so an interrupted run leaves only finished scenes; a rerun with the
same arguments skips them, and a rerun with a larger ``n_scenes`` (other arguments equal) extends the dataset.
Scene ``i`` is drawn from its own seed (:func:`scene_seeds`: ``SeedSequence([seed, i])``, redrawn in the rare
case it repeats an earlier scene's), so the output is byte-identical for the same arguments whatever
``workers`` is, and no scene appears twice.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import atomic_dir, write_depth, write_image, write_json, write_stack
from .scenes import DEPTH_RANGE

__all__ = ["DatasetConfig", "generate_dataset", "make_sample", "scene_seed", "scene_seeds", "write_preview"]

FORMAT_VERSION = 1


@dataclass(frozen=True)
class DatasetConfig:
    """Arguments that define a synthetic dataset (stored as ``dataset.json``).

    Attributes:
        n_scenes: number of scenes.
        size: image size in px (square).
        Ks: K per blurred frame (the K = 0 reference is added): px·m at ``size`` (metric) or px at 512 px per
            unit normalised disparity (normalized).
        seed: master seed.
        K_convention: ``"metric"`` or ``"normalized"``.
        val_fraction / test_fraction: expected share of scenes in the val / test splits.
        gamma: rendering gamma.
        depth_range: ``(near, far)`` scene depth range in metres (default 0.5–20 m,
            :data:`~bokehdepth.synth.scenes.DEPTH_RANGE`); a ``dataset.json`` without it was made with the default.
        backend: renderer backend of the stacks (``"cpu"``: numba; ``"torch"`` differs at the 40 dB level, so a
            folder is resumed with the backend that started it).
        noise: largest sensor-noise σ (display values, 0–1 scale); each scene draws its σ uniformly from
            [0, noise] and every frame (the sharp reference and ``image.png`` included) gets independent
            Gaussian noise of that σ before 8-bit storage, as a photo would. 0 (default): noise-free.
    """

    n_scenes: int
    size: int
    Ks: tuple[float, ...]
    seed: int
    K_convention: str = "metric"
    val_fraction: float = 0.05
    test_fraction: float = 0.05
    gamma: float = 2.2
    format_version: int = FORMAT_VERSION
    depth_range: tuple[float, float] = DEPTH_RANGE
    backend: str = "cpu"
    noise: float = 0.0


MAX_NOISE = 0.1
"""Largest accepted ``--noise`` σ (display values)."""


def _draw_seed(seed: int, index: int, attempt: int) -> int:
    key = [int(seed), int(index)] if attempt == 0 else [int(seed), int(index), 2, attempt]
    return int(np.random.SeedSequence(key).generate_state(1, dtype=np.uint32)[0])


def scene_seeds(seed: int, n: int) -> list[int]:
    """The seeds of scenes ``0 … n−1`` (passed to :func:`~bokehdepth.synth.scenes.make_scene`).

    Scene ``i`` gets the 32-bit draw of ``SeedSequence([seed, i])``. Distinct indices collide at the birthday
    rate (about n²/2³³; for seed 0 first at scene 55 170), and a collision would put the same scene in a
    dataset twice, possibly in train and test; such a draw is replaced by ``SeedSequence([seed, i, 2, a])``
    for the first attempt ``a`` ≥ 1 that is new. Seed ``i`` depends only on scenes ``≤ i``, so a longer
    dataset starts with the same scenes.
    """
    out: list[int] = []
    seen: set[int] = set()
    for i in range(int(n)):
        attempt = 0
        s = _draw_seed(seed, i, attempt)
        while s in seen:
            attempt += 1
            s = _draw_seed(seed, i, attempt)
        seen.add(s)
        out.append(s)
    return out


def scene_seed(seed: int, index: int) -> int:
    """The seed of scene ``index`` (see :func:`scene_seeds`; O(index), so compute the table once for many)."""
    return scene_seeds(seed, int(index) + 1)[-1]


def _scene_id(index: int) -> str:
    return f"{index:06d}"


def make_sample(
    cfg: DatasetConfig, index: int, out_dir: Path, s_seed: int | None = None, backend: str | None = None
) -> dict[str, Any]:
    """Make scene ``index`` of a dataset and write its folder atomically; return its manifest record.

    ``s_seed``: the scene's seed if already known (``scene_seeds(cfg.seed, n)[index]``); ``backend``
    overrides ``cfg.backend``.
    """
    from .scenes import make_scene
    from .stacks import choose_focus, render_scene_stack

    sid = _scene_id(index)
    s_seed = scene_seed(cfg.seed, index) if s_seed is None else int(s_seed)
    backend = cfg.backend if backend is None else backend
    rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), 1]))
    u = rng.uniform()
    split = "test" if u < cfg.test_fraction else "val" if u < cfg.test_fraction + cfg.val_fraction else "train"
    scene = make_scene(s_seed, cfg.size, depth_range=tuple(cfg.depth_range))
    if cfg.K_convention == "metric":
        disp_focus, side, mode = choose_focus(scene.depth, rng, scene.disp_focus)
        stack = render_scene_stack(
            scene.image, scene.depth, cfg.Ks, disp_focus, focus_side=side, gamma=cfg.gamma, backend=backend
        )
    else:
        mode = "published"
        stack = render_scene_stack(
            scene.image,
            scene.depth,
            cfg.Ks,
            K_convention="normalized",
            mask=scene.subject_mask,
            gamma=cfg.gamma,
            backend=backend,
        )
    image = scene.image
    if cfg.noise > 0:  # drawn only with noise, so noise-free datasets keep their scenes bit for bit
        sigma = float(rng.uniform(0.0, cfg.noise))
        noise_rng = np.random.default_rng(np.random.SeedSequence([int(cfg.seed), int(index), 3]))
        frames = [np.clip(f + noise_rng.normal(0.0, sigma, f.shape), 0.0, 1.0).astype(np.float32) for f in stack.frames]
        stack = replace(stack, frames=frames, extra={**stack.extra, "noise_sigma": sigma})
        image = frames[stack.reference]
    record = {
        "id": sid,
        "image": f"{sid}/image.png",
        "depth": f"{sid}/depth.npy",
        "mask": f"{sid}/mask.png",
        "stack": f"{sid}/stack",
        "K": stack.K,
        "K_convention": stack.K_convention,
        "disp_focus": stack.disp_focus,
        "focus_side": stack.focus_side,
        "focus_mode": mode,
        "intrinsics": scene.intrinsics,
        "split": split,
        "seed": s_seed,
        "size": [int(scene.depth.shape[0]), int(scene.depth.shape[1])],
        "scene_depth_range": [float(v) for v in cfg.depth_range],  # make_scene(seed, size, depth_range=this)
        "depth_minmax": [float(scene.depth.min()), float(scene.depth.max())],
        "gamma": cfg.gamma,
    }
    record.update({k: v for k, v in stack.extra.items()})
    stack.extra["scene_seed"] = s_seed
    stack.extra["scene_depth_range"] = [float(v) for v in cfg.depth_range]
    with atomic_dir(out_dir / sid) as tmp:
        write_image(tmp / "image.png", image)
        write_depth(tmp / "depth.npy", scene.depth)
        write_image(tmp / "mask.png", scene.subject_mask.astype(np.float32))
        write_stack(stack, tmp / "stack")
        (tmp / "record.json").write_text(json.dumps(record, sort_keys=True, indent=1) + "\n")
    return record


def _worker_init() -> None:
    """Each worker renders single-threaded: the pool supplies the parallelism."""
    os.environ.setdefault("NUMBA_NUM_THREADS", "1")
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _load_finished(out_dir: Path, index: int) -> dict[str, Any] | None:
    path = out_dir / _scene_id(index) / "record.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except ValueError:
        return None


def _check_config(out_dir: Path, cfg: DatasetConfig) -> None:
    """Refuse a folder made with other arguments. ``n_scenes`` may differ: scene i does not depend on it, so a
    rerun with a larger count extends the dataset (and a smaller one lists the first scenes)."""
    cfg_path = out_dir / "dataset.json"
    want = json.loads(json.dumps(asdict(cfg)))
    version = _package_version()
    if cfg_path.exists():
        try:
            have = json.loads(cfg_path.read_text())
        except ValueError:
            have = None
        made_by = have.pop(_VERSION_KEY, None) if isinstance(have, dict) else None
        if isinstance(have, dict):  # fields added later take their defaults in older folders
            defaults = {f.name: f.default for f in fields(DatasetConfig) if f.default is not MISSING}
            have = {**json.loads(json.dumps(defaults)), **have}
        if not isinstance(have, dict) or {**have, "n_scenes": cfg.n_scenes} != want:
            raise InputError(
                f"{cfg_path}: this folder holds a dataset made with other arguments; "
                "choose a new output folder or rerun with the same arguments to resume"
            )
        if made_by != version:
            warnings.warn(
                f"{cfg_path}: made by bokehdepth {made_by or 'before 0.1'}, resumed by {version}; if the scene "
                "generator changed in between, the new scenes differ in style from the old ones",
                stacklevel=3,
            )
        if have != want:
            write_json(cfg_path, {**want, **({_VERSION_KEY: made_by} if made_by else {})})
    elif out_dir.exists() and any(out_dir.iterdir()):
        raise InputError(f"{out_dir}: folder is not empty and is not a synth dataset; choose a new output folder")
    else:
        write_json(cfg_path, {**want, _VERSION_KEY: version})


_VERSION_KEY = "bokehdepth_version"


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("bokehdepth")
    except metadata.PackageNotFoundError:
        return "unknown"


def _check_blur_size(Ks: Sequence[float], K_convention: str, size: int, near: float, far: float) -> None:
    """Refuse settings whose largest blur radius (px) exceeds the image: nothing left to see, endless render."""
    if K_convention != "metric":
        return  # normalised disparity spans [0, 1]: the radius is at most K·size/512
    radius = max(Ks) * (1.0 / near - 1.0 / far)
    if radius > size:
        raise InputError(
            f"--depth-range/--K: the largest blur radius would be {radius:.4g} px, more than the {size}-px image "
            f"(K {max(Ks):g} px·m × (1/{near:g} − 1/{far:g}) 1/m); raise NEAR or lower --K"
        )


def generate_dataset(
    out_dir: str | os.PathLike,
    n_scenes: int,
    size: int = 256,
    Ks: Sequence[float] | None = None,
    seed: int = 0,
    *,
    K_convention: str = "metric",
    workers: int = 1,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    gamma: float = 2.2,
    backend: str = "cpu",
    progress: bool = True,
    depth_range: Sequence[float] = DEPTH_RANGE,
    noise: float = 0.0,
) -> Path:
    """Generate (or resume) a synthetic dataset; return the path of its ``manifest.jsonl``.

    Args:
        out_dir: dataset folder (created; an existing one is resumed if it was made with the same arguments).
        n_scenes: number of scenes (≥ 1).
        size: square image size in px (≥ 16).
        Ks: K per blurred frame; default :func:`~bokehdepth.synth.stacks.default_Ks` for the size/convention.
        seed: master seed; the output is a pure function of the arguments.
        K_convention: ``"metric"`` (px·m at ``size``) or ``"normalized"`` (published convention).
        workers: processes (1 = in this process).
        val_fraction / test_fraction: expected split shares.
        gamma: rendering gamma.
        depth_range: ``(near, far)`` scene depth range in metres (far ≥ 4·near).
        backend: renderer backend (``"cpu"`` numba by default).
        progress: show a tqdm bar.
        noise: largest per-scene sensor-noise σ (display values, see :class:`DatasetConfig`; 0: none).
    """
    from tqdm.auto import tqdm

    from ..data.manifest import MANIFEST_NAME, write_manifest
    from .scenes import check_depth_range
    from .stacks import default_Ks

    if n_scenes < 1:
        raise InputError(f"--scenes: need at least 1 scene, got {n_scenes}")
    if size < 16:
        raise InputError(f"--size: scenes must be at least 16 px, got {size}")
    if K_convention not in ("metric", "normalized"):
        raise InputError(f"--K-convention: use 'metric' or 'normalized', got {K_convention!r}")
    Ks = default_Ks(size, K_convention) if not Ks else [float(k) for k in Ks]  # type: ignore[arg-type]
    if any(not np.isfinite(k) or k <= 0 for k in Ks):
        raise InputError(f"--K: K values must be finite and > 0, got {Ks}")
    if workers < 1:
        raise InputError(f"--workers: need at least 1, got {workers}")
    try:
        near_far = check_depth_range(tuple(depth_range))  # type: ignore[arg-type]
    except (ValueError, TypeError) as exc:
        raise InputError(f"--depth-range: {exc}") from None
    if not (np.isfinite(noise) and 0.0 <= noise <= MAX_NOISE):
        raise InputError(f"--noise: sensor-noise σ must be in [0, {MAX_NOISE}] (display values), got {noise}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; choose another output path")
    cfg = DatasetConfig(
        n_scenes=int(n_scenes),
        size=int(size),
        Ks=tuple(Ks),
        seed=int(seed),
        K_convention=K_convention,
        val_fraction=float(val_fraction),
        test_fraction=float(test_fraction),
        gamma=float(gamma),
        depth_range=near_far,
        backend=str(backend),
        noise=float(noise),
    )
    _check_blur_size(Ks, K_convention, size, *near_far)
    _check_config(out, cfg)
    seeds = scene_seeds(cfg.seed, n_scenes)
    records: dict[int, dict[str, Any]] = {}
    todo = []
    for i in range(n_scenes):
        rec = _load_finished(out, i)
        if rec is None:
            todo.append(i)
        else:
            records[i] = rec
    bar = tqdm(total=n_scenes, initial=n_scenes - len(todo), desc="synth", unit="scene", disable=not progress)
    try:
        if workers == 1 or len(todo) <= 1:
            for i in todo:
                records[i] = make_sample(cfg, i, out, seeds[i])
                bar.update(1)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            ctx = mp.get_context("spawn")
            with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init) as pool:
                futures = {pool.submit(make_sample, cfg, i, out, seeds[i]): i for i in todo}
                for fut in as_completed(futures):
                    records[futures[fut]] = fut.result()
                    bar.update(1)
    finally:
        bar.close()
    return write_manifest(out / MANIFEST_NAME, [records[i] for i in range(n_scenes)])


def write_preview(manifest: str | os.PathLike, path: str | os.PathLike, n: int = 4) -> Path:
    """Contact sheet of the first ``n`` scenes: per row the image, its depth colour map and the stack frames."""
    from ..data.manifest import read_manifest
    from ..io import read_image, read_stack
    from ..viz import contact_sheet, depth_to_color

    records = read_manifest(manifest)[:n]
    tiles, labels = [], []
    cols = 0
    for rec in records:
        depth = np.load(rec["depth"])
        stack = read_stack(rec["stack"])
        row = [read_image(rec["image"]), depth_to_color(depth)] + list(stack.frames)
        lab = [f"{rec['id']} image", f"depth {depth.min():.1f}-{depth.max():.1f} m"] + [
            f"K={k:g}" + (f" {rec.get('focus_side')}" if i == 0 and rec.get("focus_side") else "")
            for i, k in enumerate(stack.K)
        ]
        cols = max(cols, len(row))
        tiles.append(row)
        labels.append(lab)
    flat, flat_labels = [], []
    for row, lab in zip(tiles, labels):
        pad = cols - len(row)
        flat += row + [np.ones_like(row[0])] * pad
        flat_labels += lab + [""] * pad
    sheet = contact_sheet(flat, flat_labels, cols=cols, tile=160)
    path = Path(path)
    write_image(path, sheet)
    return path
