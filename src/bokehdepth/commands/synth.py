"""``bokehdepth synth -o DIR --scenes N [--size S] [--K K …] [--depth-range NEAR FAR] [--seed SEED]
[--workers W] [--K-convention metric|normalized] [--noise SIGMA]``: procedural scenes with metric depth, calibrated stacks and a manifest."""

from __future__ import annotations

import argparse
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "synth",
        help="generate procedural scenes with exact metric depth, calibrated bokeh stacks and manifest.jsonl",
        description="Generate a synthetic dataset (see docs/data.md). Deterministic from --seed; rerunning with "
        "the same arguments resumes an interrupted run.",
    )
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="dataset folder to create or resume")
    p.add_argument("--scenes", type=int, required=True, metavar="N", help="number of scenes")
    p.add_argument("--size", type=int, default=256, metavar="S", help="square image size in px (default 256)")
    p.add_argument(
        "--K",
        nargs="+",
        default=None,
        metavar="K",
        help="K per blurred frame (frame 0 is the sharp reference, K=0): px·m at --size for the metric "
        "convention (default 1.5 3 6 at 256 px, scaled with the size), px at 512 px per unit normalised "
        "disparity for --K-convention normalized (default 10 20 30)",
    )
    p.add_argument(
        "--depth-range",
        nargs=2,
        default=None,
        metavar=("NEAR", "FAR"),
        help="scene depth range in metres (default 0.5 20; FAR >= 4 x NEAR); e.g. 0.5 5 for rooms and table "
        "tops, where a short-tele aperture bracket resolves depth",
    )
    p.add_argument(
        "--noise",
        type=float,
        default=0.0,
        metavar="SIGMA",
        help="largest sensor-noise σ (display values, 0-1 scale, at most 0.1): each scene draws its σ from "
        "[0, SIGMA] and every frame gets Gaussian noise of it before 8-bit storage, like a photo (default 0)",
    )
    p.add_argument("--seed", type=int, default=0, help="master seed (default 0)")
    p.add_argument("--workers", type=int, default=1, metavar="W", help="worker processes (default 1)")
    p.add_argument(
        "--K-convention",
        dest="K_convention",
        choices=("metric", "normalized"),
        default="metric",
        help="metric: disp in 1/m, K in px·m, random focus planes (default); normalized: the published "
        "convention (per-image normalised disparity, focus on the foreground)",
    )
    p.add_argument("--preview", type=int, default=4, metavar="N", help="scenes in preview.png (0: none)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar (shown on a terminal)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import parse_floats
    from ..synth.dataset import generate_dataset, write_preview

    Ks = parse_floats(args.K, "--K") if args.K else None
    extra = {"depth_range": parse_floats(args.depth_range, "--depth-range")} if args.depth_range else {}
    manifest = generate_dataset(
        args.output,
        args.scenes,
        size=args.size,
        Ks=Ks,
        seed=args.seed,
        K_convention=args.K_convention,
        workers=args.workers,
        noise=args.noise,
        **extra,
        progress=sys.stderr.isatty() and not args.no_progress,
    )
    if args.preview > 0:
        preview = write_preview(manifest, manifest.parent / "preview.png", n=args.preview)
        sys.stdout.write(f"preview\t{preview}\n")
    sys.stdout.write(f"manifest\t{manifest}\n")
    return 0
