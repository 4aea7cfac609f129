"""``bokehdepth eval``: score depth predictions (metres) against ground truth.

Two forms:
- ``bokehdepth eval --pred PRED_DIR --gt GT_DIR [--align none|median|lstsq] [--min-depth a --max-depth b]
  [--json OUT] [--plots DIR]``: both folders hold ``<name>.npy`` depth in metres.
- ``bokehdepth eval --data DIR --backend NAME [--weights PATH] [...]``: run a depth backend over a synthetic
  dataset (``manifest.jsonl``) or an RGB-D folder (NYUv2 / KITTI / ETH3D layouts) and score it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "eval",
        help="metric-depth table (AbsRel, SqRel, RMSE, RMSE-log, SILog, log10, δ1-3) of predictions or a backend",
        description="Score depth predictions against ground truth (see docs/data.md for the metric definitions "
        "and the RGB-D folder layouts).",
    )
    p.add_argument("--pred", metavar="PRED_DIR", help="folder of predicted <name>.npy depth maps (metres)")
    p.add_argument("--gt", metavar="GT_DIR", help="folder of ground-truth <name>.npy depth maps (metres)")
    p.add_argument(
        "--data",
        nargs="+",
        metavar="DIR",
        help="synthetic dataset folder(s) or RGB-D folder(s) to run --backend on (one table row each; with "
        "several, --json holds {'datasets': {name: metrics}} and --plots/--save-pred get one subfolder each)",
    )
    p.add_argument("--backend", help="depth backend for --data (compact, dav2-dsfa-s|b|l, udv2-dsfa)")
    p.add_argument("--weights", help="weights file or folder for --backend")
    p.add_argument("--device", default="cpu", help="device for --backend (default cpu)")
    p.add_argument("--single-frame", action="store_true", help="run --backend with its DSFA blocks bypassed")
    p.add_argument("--split", default=None, help="manifest split for --data (train, val, test; default all)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N samples of --data")
    p.add_argument("--layout", default="auto", help="RGB-D layout for --data: auto, nyuv2, kitti, eth3d, flat")
    p.add_argument("--crop", default=None, help="evaluation crop for RGB-D data: none, eigen, garg")
    p.add_argument("--depth-scale", type=float, default=None, help="integer depth PNG units per metre")
    p.add_argument("--align", choices=("none", "median", "lstsq"), default="none", help="alignment (default none)")
    p.add_argument(
        "--align-space", choices=("depth", "disp"), default="depth", help="space of the lstsq fit (default depth)"
    )
    p.add_argument("--min-depth", type=float, default=1e-3, help="minimum ground-truth depth in m (default 0.001)")
    p.add_argument("--max-depth", type=float, default=None, help="maximum ground-truth depth in m (default none)")
    p.add_argument("--json", metavar="OUT", help="write the mean metrics (and per-image ones) as JSON")
    p.add_argument("--plots", metavar="DIR", help="write error histogram, pred-vs-gt scatter and error maps here")
    p.add_argument("--error-maps", type=int, default=8, help="per-image error maps in --plots (default 8)")
    p.add_argument("--save-pred", metavar="DIR", help="with --data: save predictions as <name>.npy here")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown on a terminal)")
    p.set_defaults(func=run)


def _check_args(args: argparse.Namespace) -> None:
    from ..errors import InputError

    folders = args.pred is not None or args.gt is not None
    if folders and args.data is not None:
        raise InputError("--data: give either --pred and --gt, or --data with --backend, not both")
    if folders and (args.pred is None or args.gt is None):
        raise InputError("--pred/--gt: give both folders")
    if not folders and args.data is None:
        raise InputError("--pred/--gt: give --pred PRED_DIR --gt GT_DIR, or --data DIR --backend NAME")
    if args.data is not None and not args.backend:
        raise InputError("--backend: --data needs a depth backend to run (e.g. --backend compact)")
    if args.min_depth is not None and args.max_depth is not None and args.max_depth <= args.min_depth:
        raise InputError(f"--max-depth: must exceed --min-depth ({args.min_depth}), got {args.max_depth}")
    if args.min_depth is not None and args.min_depth < 0:
        raise InputError(f"--min-depth: must be >= 0 m, got {args.min_depth}")


def _load_predictor(args: argparse.Namespace):
    from ..errors import InputError

    try:
        from ..pipelines.depth import load_depth_predictor
    except ImportError as exc:
        raise InputError(
            f"--backend {args.backend}: depth pipelines are not available in this install ({exc})"
        ) from exc
    predictor = load_depth_predictor(args.backend, weights=args.weights, device=args.device)
    if args.single_frame:

        class _SingleFrame:
            def predict(self, image, stack):
                return predictor.predict(image, stack, single_frame=True)

        return _SingleFrame()
    return predictor


def dataset_subfolders(folders: list[str]) -> list[str]:
    """One distinct subfolder name per ``--data`` folder ("" for a single one) for ``--save-pred``/``--plots``.

    The folder's own name, or ``<parent>_<name>`` (then ``…_2``, ``…_3``) where two folders share a name.
    """
    if len(folders) == 1:
        return [""]
    names = [Path(f).name for f in folders]
    out: list[str] = []
    for f, name in zip(folders, names):
        if names.count(name) > 1:
            name = f"{Path(f).resolve().parent.name}_{name}"
        base, i = name, 2
        while name in out:
            name, i = f"{base}_{i}", i + 1
        out.append(name)
    return out


def run(args: argparse.Namespace) -> int:
    import contextlib

    from ..eval.runner import evaluate_folders, evaluate_predictor, format_table
    from ..io import atomic_dir, write_json

    _check_args(args)
    common = {"align": args.align, "min_depth": args.min_depth, "max_depth": args.max_depth, "space": args.align_space}
    with contextlib.ExitStack() as stack:
        plots = stack.enter_context(atomic_dir(args.plots)) if args.plots else None
        common.update(error_maps=args.error_maps if plots else 0)
        if args.pred is not None:
            results = [evaluate_folders(args.pred, args.gt, plots_dir=plots, **common)]
        else:
            predictor = _load_predictor(args)
            save = stack.enter_context(atomic_dir(args.save_pred)) if args.save_pred else None
            rgbd = {"layout": args.layout, "crop": args.crop, "depth_scale": args.depth_scale}
            subs = dataset_subfolders(args.data)
            results = []
            for data, sub in zip(args.data, subs):
                result = evaluate_predictor(
                    predictor,
                    data,
                    split=args.split,
                    limit=args.limit,
                    save_pred=None if save is None else save / sub,
                    rgbd_kwargs=rgbd,
                    progress=sys.stderr.isatty() and not args.no_progress,
                    plots_dir=None if plots is None else plots / sub,
                    **common,
                )
                result.settings.update(backend=args.backend, weights=args.weights, single_frame=args.single_frame)
                if len(subs) > 1 and sub != Path(data).name:
                    result.name = f"{result.name} [{sub}]"  # two datasets share a folder name
                results.append(result)
        if args.json:
            if len(results) == 1:
                write_json(args.json, results[0].to_json())
            else:
                write_json(args.json, {"datasets": {r.name: r.to_json() for r in results}})
    sys.stdout.write(format_table(results) + "\n")
    if args.json:
        sys.stdout.write(f"json\t{args.json}\n")
    elif len(results) == 1:
        sys.stdout.write(json.dumps(results[0].mean) + "\n")
    return 0
