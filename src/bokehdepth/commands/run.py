"""``bokehdepth run IMAGE|DIR``: one image (or every image of a folder) → bokeh stack + metric depth, in the
reference pipeline's output layout (see ``docs/run.md``).

Single image: ``OUTPUT_ROOT/run_YYYYMMDD_HHMMSS/`` (local time, as the reference).
Folder: ``OUTPUT_ROOT/<image stem>/`` per image (``<stem>_<ext>`` when two images share a stem), so a rerun
finds and skips the finished ones (their ``pipeline_summary.json`` exists); ``accelerate launch -m
bokehdepth.cli run DIR`` (GPUs) or ``torchrun --nproc_per_node N -m bokehdepth.cli run DIR`` (CPU) splits the
image list across processes (image i goes to process i mod N).

The reference script's environment variables are the defaults of the matching flags: ``REF_IMAGE`` (IMAGE),
``K_VALUES`` (--K), ``OUTPUT_ROOT`` (--output-root), ``ADAPTER_CKPT`` (--stage1-weights), ``WEIGHTS_PATH``
(--stage2-weights), ``CONFIG_PATH`` (--config), ``PRETRAINED_MODEL`` (--base), ``SEED`` (--seed).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TypeVar

from ..errors import InputError

T = TypeVar("T")

DEFAULT_OUTPUT_ROOT = "outputs"
ENV_DEFAULTS = {
    "input": "REF_IMAGE",
    "K": "K_VALUES",
    "output_root": "OUTPUT_ROOT",
    "stage1_weights": "ADAPTER_CKPT",
    "stage2_weights": "WEIGHTS_PATH",
    "config": "CONFIG_PATH",
    "base": "PRETRAINED_MODEL",
    "seed": "SEED",
}


def register(sub: argparse._SubParsersAction) -> None:
    desc = (
        "One sharp image (or every image of a folder) -> bokeh stack (Stage-1) -> metric depth (Stage-2), "
        "written as OUTPUT_ROOT/run_YYYYMMDD_HHMMSS/ (folders: OUTPUT_ROOT/<image stem>/) with ref.png, "
        "defocus_stack/, manifest.jsonl, depth.npy, depth_color.png and the summaries. "
        "Defaults: embedded compact models on CPU, K 10 20 30, seed 42."
    )
    p = sub.add_parser("run", help="image or folder -> bokeh stack + metric depth (end to end)", description=desc)
    p.add_argument("input", nargs="?", metavar="IMAGE|DIR", help="an image or a folder of images (env REF_IMAGE)")
    p.add_argument(
        "--K",
        nargs="+",
        metavar="K",
        help="blur strengths, normalized K > 0 (px at 512-px width per unit of normalised disparity; published "
        "range 1-30, Stage-1 clamps into it); one generated frame each (env K_VALUES; default 10 20 30)",
    )
    p.add_argument(
        "--output-root", metavar="DIR", help=f"where run folders go (env OUTPUT_ROOT; default ./{DEFAULT_OUTPUT_ROOT})"
    )
    p.add_argument("--stage1", default="compact", choices=("compact", "kontext"), help="Stage-1 stack backend")
    p.add_argument(
        "--stage2",
        default="compact",
        choices=("compact", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa"),
        help="Stage-2 depth backend",
    )
    p.add_argument(
        "--weights",
        metavar="DIR",
        help="folder of released checkpoints (bokeh_lora.bin, UDv2_dsfa_release.pth, DAV2_dsfa_release.pth); "
        "env BOKEHDEPTH_WEIGHTS. Compact backends use the weights embedded in the package",
    )
    p.add_argument("--stage1-weights", metavar="FILE", help="the Stage-1 weights file itself (env ADAPTER_CKPT)")
    p.add_argument("--stage2-weights", metavar="FILE", help="the Stage-2 weights file itself (env WEIGHTS_PATH)")
    p.add_argument("--config", metavar="FILE", help="reference UniDepth config JSON, recorded (env CONFIG_PATH)")
    p.add_argument(
        "--base", metavar="DIR", help="local FLUX.1-Kontext-dev folder for --stage1 kontext (env PRETRAINED_MODEL)"
    )
    p.add_argument("--seed", type=int, help="Stage-1 random seed (env SEED; default 42)")
    p.add_argument("--device", help="torch device (default: the accelerate process's device, cuda if available)")
    p.add_argument("--overwrite", action="store_true", help="folder mode: rerun images that are already finished")
    p.set_defaults(func=run)


def shard(items: Sequence[T], index: int, count: int) -> list[T]:
    """The share of process ``index`` of ``count``: items index, index + count, ... (balanced, disjoint)."""
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} out of range for {count} processes")
    return list(items[index::count])


def run_names(images: Sequence[Path]) -> dict[Path, str]:
    """Folder name per image in folder mode: the stem, or ``<stem>_<ext>`` where stems collide."""
    stems: dict[str, int] = {}
    for p in images:
        stems[p.stem] = stems.get(p.stem, 0) + 1
    return {p: p.stem if stems[p.stem] == 1 else f"{p.stem}_{p.suffix.lstrip('.').lower()}" for p in images}


def _process_slot(device: str | None = None) -> tuple[int, int, str]:
    """(process index, number of processes, device) from accelerate: one process when not launched; under
    ``accelerate launch`` / ``torchrun`` the launcher's rank and world size (on CPU-only machines accelerate
    sees the processes only when asked for CPU, hence ``cpu=``)."""
    import torch
    from accelerate import PartialState

    cpu = (device or "").startswith("cpu") or not torch.cuda.is_available()
    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, str(state.device)


def _env(args: argparse.Namespace, name: str) -> str | None:
    value = getattr(args, name)
    if value is None or value == []:
        env = os.environ.get(ENV_DEFAULTS[name], "").strip()
        return env or None
    return value


def build_config(args: argparse.Namespace, device: str):
    """The :class:`RunConfig` of the parsed flags, environment-variable defaults applied."""
    from ..pipelines.bokehdepth import RunConfig
    from ..pipelines.stack import requested_Ks

    Ks = tuple(requested_Ks(args.K))
    seed_arg = _env(args, "seed")
    try:
        seed = 42 if seed_arg is None else int(seed_arg)
    except ValueError:
        raise InputError(f"SEED: expected an integer, got {seed_arg!r}") from None
    return RunConfig(
        Ks=Ks,
        stage1=args.stage1,
        stage2=args.stage2,
        weights=args.weights,
        stage1_weights=_env(args, "stage1_weights"),
        stage2_weights=_env(args, "stage2_weights"),
        config=_env(args, "config"),
        base=_env(args, "base"),
        seed=seed,
        device=device,
    ).check()


def run(args: argparse.Namespace) -> int:
    source = _env(args, "input")
    if source is None:
        raise InputError("IMAGE: give an image or a folder of images (or set REF_IMAGE)")
    source = Path(source)
    if not source.exists():
        raise InputError(f"{source}: not found; give an image or a folder of images")
    output_root = Path(_env(args, "output_root") or DEFAULT_OUTPUT_ROOT)
    if source.is_dir():
        return _run_folder(args, source, output_root)
    return _run_single(args, source, output_root)


def _run_single(args: argparse.Namespace, image: Path, output_root: Path) -> int:
    from ..io import read_image
    from ..pipelines.bokehdepth import BokehDepthPipeline, new_run_dir

    device = args.device
    if device is None:
        _, _, device = _process_slot()
    config = build_config(args, device)
    read_image(image)  # a bad file fails before the models load
    pipeline = BokehDepthPipeline.load(config)
    run_dir = pipeline.run_image(image, new_run_dir(output_root), extra_args={"output_root": str(output_root)})
    sys.stdout.write(f"{run_dir}\n")
    return 0


def _run_folder(args: argparse.Namespace, folder: Path, output_root: Path) -> int:
    from tqdm.auto import tqdm

    from ..errors import BokehDepthError
    from ..io import list_images
    from ..pipelines.bokehdepth import BokehDepthPipeline, is_finished

    images = list_images(folder)
    if not images:
        raise InputError(f"{folder}: no images (.png, .jpg, .tif, .webp, .bmp) in this folder")
    index, count, device = _process_slot(args.device)
    config = build_config(args, args.device or device)
    names = run_names(images)
    mine = shard(images, index, count)
    todo = [p for p in mine if args.overwrite or not is_finished(output_root / names[p])]
    skipped = len(mine) - len(todo)
    tag = f"[process {index}/{count}] " if count > 1 else ""
    if not todo:
        sys.stderr.write(f"{tag}all {len(mine)} images already finished in {output_root}; --overwrite reruns them\n")
        return 0
    pipeline = BokehDepthPipeline.load(config)
    failed: list[tuple[Path, str]] = []
    done = 0
    bar = tqdm(todo, desc=f"{tag}bokehdepth run", unit="image", position=index, dynamic_ncols=True)
    for path in bar:
        bar.set_postfix_str(path.name)
        try:
            pipeline.run_image(path, output_root / names[path], extra_args={"output_root": str(output_root)})
            done += 1
        except BokehDepthError as exc:
            failed.append((path, str(exc)))
            tqdm.write(f"error: {exc}", file=sys.stderr)
        except Exception as exc:  # a backend failing on one image must not lose the others
            msg = f"{path}: failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
            failed.append((path, msg))
            tqdm.write(f"error: {msg}", file=sys.stderr)
    bar.close()
    sys.stderr.write(
        f"{tag}{len(mine)} images: {done} done, {skipped} skipped (finished before), {len(failed)} failed; "
        f"results in {output_root}\n"
    )
    if failed:
        names_failed = ", ".join(p.name for p, _ in failed)
        sys.stderr.write(f"error: {len(failed)} of {len(mine)} images failed: {names_failed}; see the messages above\n")
        return 2
    return 0
