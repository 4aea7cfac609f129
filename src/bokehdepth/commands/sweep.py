"""``bokehdepth sweep``: the Depth-from-Bokeh Sweep (no learned weights).

``bokehdepth sweep STACK_DIR -o OUT_DIR [--focus-side near|far] [--window W] [--max-radius R]`` or
``bokehdepth sweep --photos A.jpg B.jpg … -o OUT_DIR [--focal-mm F --f-number N … --focus-m S … --sensor-mm W]
[--register MOTION]`` (photos aligned to the reference first, ``translation`` by default)
writes ``depth.npy`` (metres, NaN unknown), ``disp_offset.npy`` (|disp − disp_focus|), ``confidence.npy``,
``depth_color.png``, ``sweep_plot.png`` and ``sweep.json``; with the sign unresolved also ``depth_near.npy``,
``depth_far.npy`` and ``ambiguous.npy``.

A flag that does not apply to the input (``--disp-range`` / ``--offset-only`` for a metric stack or photos,
the photo flags for a stack folder, ``--focus-side`` for a focus bracket, …) is ignored with one
``warning: --FLAG ignored: …`` line on stderr (and listed in ``sweep.json`` under ``ignored_flags``); a
contradictory combination (``--disp-range`` with ``--offset-only``) is an error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..errors import InputError
from .photo_flags import (
    add_photo_arguments,
    ignore_flags,
    load_bracket_from_args,
    photo_only_flags_given,
    register_from_args,
)

SWEEP_OUTPUTS = (
    "depth.npy",
    "depth_color.png",
    "depth_near.npy",
    "depth_far.npy",
    "ambiguous.npy",
    "disp_offset.npy",
    "confidence.npy",
    "sweep_plot.png",
    "sweep.json",
)
"""Every file ``sweep`` can write; a rerun into the same folder leaves none of an earlier run's behind."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "sweep",
        help="calibrated stack or photo bracket -> metric depth (Depth-from-Bokeh Sweep, no weights)",
        description="Per pixel, measure the blur of every frame relative to the sharpest one and regress it on "
        "K (r = K·|disp − disp_focus|) to get the inverse-depth offset, then metric depth.",
    )
    p.add_argument("stack", nargs="?", help="stack folder (frame_*.png + stack.json)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.add_argument(
        "--focus-side",
        choices=("near", "far"),
        help="the focus plane is the nearest / farthest surface (stacks and aperture brackets; a focus bracket "
        "settles the sign itself)",
    )
    p.add_argument("--window", type=int, default=15, help="matching window side in px, odd (default 15)")
    p.add_argument("--max-radius", type=float, default=24.0, help="largest blur radius searched, px (default 24)")
    p.add_argument(
        "--step", type=float, default=0.5, help="spacing of candidate radii, px, <= --max-radius/2 (default 0.5)"
    )
    p.add_argument("--no-fill", action="store_true", help="no edge-aware fill of low-confidence pixels")
    p.add_argument(
        "--disp-range",
        nargs=2,
        type=float,
        metavar=("DMIN", "DMAX"),
        help="normalized stacks only: the scene disparities (1/m) that normalised disparity 0 and 1 stand for, "
        "for metric depth (default: the stack's disp_min/disp_max when stack.json records them); ignored with "
        "a warning for metric stacks and photos",
    )
    p.add_argument(
        "--offset-only",
        action="store_true",
        help="normalized stacks only: write only the normalised offset (no depth); ignored with a warning for "
        "metric stacks and photos",
    )
    add_photo_arguments(
        p,
        photos_help="an aperture or focus bracket of photos (EXIF)",
        focus_help="focus distance in m (stack: one value; photos: one or per photo)",
    )
    p.add_argument(
        "--device",
        default="numpy",
        help="blur measurement: numpy (default; scipy.fft + numba) or a torch device (cuda, cpu); stacks, "
        "aperture and focus brackets",
    )
    p.add_argument("--progress", action="store_true", help="show progress bars")
    p.set_defaults(func=run)


def _config(args: argparse.Namespace, focus_m: float | None, *, side: bool = True, normalized: bool = False):
    from ..sweep import SweepConfig

    return SweepConfig(
        window=args.window,
        max_radius=args.max_radius,
        step=args.step,
        focus_side=args.focus_side if side else None,
        fill=not args.no_fill,
        disp_range=tuple(args.disp_range) if args.disp_range and normalized else None,
        offset_only=bool(args.offset_only and normalized),
        focus_m=focus_m,
        device=args.device,
        progress=args.progress,
    )


def _run_stack(args: argparse.Namespace):
    from ..io import read_stack, stack_metadata_path
    from ..sweep import check_config, normalized_disp_range, sweep_stack

    ignore_flags(
        args,
        photo_only_flags_given(args),
        "it applies to --photos only; a stack folder carries its K in stack.json",
    )
    if args.focus_m is not None and len(args.focus_m) != 1:
        raise InputError("--focus-m: give one focus distance for a stack")
    check_config(_config(args, None, normalized=True))  # bad flags fail before the stack is read
    stack = read_stack(args.stack)
    where = str(stack_metadata_path(args.stack) or args.stack)
    normalized = stack.K_convention == "normalized"
    if normalized:
        if args.offset_only:
            ignore_flags(
                args,
                {"--focus-m": args.focus_m is not None, "--focus-side": args.focus_side is not None},
                "--offset-only writes no depth",
            )
            args.focus_m = args.focus_side = None
        elif normalized_disp_range(stack, _config(args, None, normalized=True), where) is None:
            raise InputError(
                f"{where}: K_convention is 'normalized' and the stack records no disp_min/disp_max (no metric "
                "scale), so depth is undefined; pass --disp-range DMIN DMAX (scene disparity range, 1/m) or "
                "--offset-only for the normalised offset"
            )
    else:
        ignore_flags(
            args,
            {"--disp-range": args.disp_range is not None, "--offset-only": args.offset_only},
            f"{where} is a metric stack (K in px·m), which has a metric scale of its own",
        )
    config = _config(args, args.focus_m[0] if args.focus_m else None, normalized=normalized)
    return sweep_stack(stack, config, where=where), stack, None


def _run_photos(args: argparse.Namespace):
    from ..sweep import check_config, sweep_stack
    from ..sweep_focus import sweep_focus_bracket

    ignore_flags(
        args,
        {"--disp-range": args.disp_range is not None, "--offset-only": args.offset_only},
        "photos give a metric stack (K in px·m from the lens settings)",
    )
    check_config(_config(args, None))
    bracket = register_from_args(args, load_bracket_from_args(args))
    where = "--photos"
    if bracket.kind == "focus":
        ignore_flags(
            args,
            {"--focus-side": args.focus_side is not None},
            "this is a focus bracket, whose depth search settles front/behind itself",
        )
        result = sweep_focus_bracket(bracket.stack, bracket.disp_focus, _config(args, None, side=False))
    else:
        result = sweep_stack(bracket.stack, _config(args, None), where=where)
    return result, bracket.stack, bracket.photo_size


def run(args: argparse.Namespace) -> int:
    import numpy as np

    from ..io import atomic_dir, write_depth_outputs, write_json
    from ..sweep_photos import to_photo_size
    from ..sweep_plot import plot_sweep

    if (args.stack is None) == (args.photos is None):
        raise InputError("sweep: give either a STACK_DIR or --photos A.jpg B.jpg ..., not both or neither")
    if args.disp_range is not None and args.offset_only:
        raise InputError("--offset-only: writes no depth, so --disp-range has no use with it; drop one of the two")
    args.ignored_flags = []
    result, stack, photo_size = _run_photos(args) if args.photos else _run_stack(args)
    maps = result if photo_size is None else to_photo_size(result, photo_size)  # outputs at the photos' size
    out = Path(args.output)
    with atomic_dir(out, owned=SWEEP_OUTPUTS) as tmp:
        extra = {"disp_offset": maps.disp_offset, "confidence": maps.confidence}
        if maps.depth is not None:
            if maps.ambiguous is not None:
                extra |= {"depth_near": maps.depth_near, "depth_far": maps.depth_far}
                np.save(tmp / "ambiguous.npy", maps.ambiguous.astype(bool))
            write_depth_outputs(tmp, maps.depth, extra)
        else:
            for key, arr in extra.items():
                np.save(tmp / f"{key}.npy", np.asarray(arr, dtype=np.float32))
        plot_sweep(result, tmp / "sweep_plot.png")
        info = dict(result.info)
        info |= {
            "input": str(args.stack) if args.stack else [str(p) for p in args.photos],
            "size": list(maps.confidence.shape),
            "working_size": list(stack.size),
            "offset_units": result.offset_units,
            "depth_written": result.depth is not None,
            "ambiguous_fraction": None if result.ambiguous is None else float(result.ambiguous.mean()),
            "lens": stack.lens,
            "registration": stack.extra.get("registration", []),
            "ignored_flags": args.ignored_flags,
        }
        write_json(tmp / "sweep.json", info)
    msg = f"sweep: wrote {out}"
    if result.ambiguous is not None and result.ambiguous.any():
        msg += (
            f" ({100 * result.ambiguous.mean():.1f} % of pixels ambiguous in front/behind focus: depth.npy is NaN "
            "there; see depth_near.npy / depth_far.npy or pass --focus-side)"
        )
    sys.stdout.write(msg + "\n")
    return 0
