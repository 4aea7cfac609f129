"""``bokehdepth depth``: Stage-2 metric depth from an image and its bokeh stack.

``bokehdepth depth IMAGE --stack STACK_DIR -o OUT_DIR`` (the contract), or from a real aperture bracket
``bokehdepth depth --photos A.jpg B.jpg … -o OUT_DIR [--focal-mm F --f-number N … --focus-m S --sensor-mm W]
[--register MOTION]``: the photos become a metric stack (K in px·m from each photo's lens settings, the sharpest
photo as the reference, every other photo aligned to it, see :mod:`bokehdepth.sweep_photos`) and depth comes
back at the photos' size.
"""

from __future__ import annotations

import argparse
import os

from ..errors import InputError
from .photo_flags import (
    add_photo_arguments,
    ignore_flags,
    load_bracket_from_args,
    photo_only_flags_given,
    register_from_args,
)

BACKENDS = ("compact", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa")
DEPTH_OUTPUTS = ("depth.npy", "depth_color.png", "depth_info.json")
"""Every file ``depth`` writes."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "depth",
        help="metric depth from an image and its bokeh stack, or from an aperture bracket of photos (Stage-2)",
        description="Metric depth from an image and its bokeh stack (or from an aperture bracket of photos with "
        "--photos). Writes OUT_DIR/depth.npy (float32 metres, input size, NaN invalid), OUT_DIR/depth_color.png "
        "and OUT_DIR/depth_info.json.",
    )
    p.add_argument("image", nargs="?", help="the sharp input image (the stack's reference)")
    p.add_argument("--stack", help="stack folder (frame_*.png + stack.json, or a defocus_stack/)")
    add_photo_arguments(
        p,
        photos_help="instead of IMAGE --stack: an aperture bracket of one scene (same focus, different "
        "f-numbers; EXIF or the flags below give the lens settings); the sharpest photo is the reference",
        focus_help="photos: focus distance in m, one or per photo (EXIF SubjectDistance)",
    )
    p.add_argument(
        "--focus-side",
        choices=("near", "far"),
        help="the focus plane is the nearest / farthest surface (sets or overrides the stack's focus_side)",
    )
    p.add_argument("--backend", choices=BACKENDS, default="compact", help="depth model (default: compact)")
    p.add_argument(
        "--weights",
        default=os.environ.get("WEIGHTS_PATH"),
        help="weights file or folder (default: embedded for compact; $BOKEHDEPTH_WEIGHTS / $WEIGHTS_PATH otherwise)",
    )
    p.add_argument("--single-frame", action="store_true", help="bypass the DSFA blocks (reference image only)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=run)


def _from_stack(args: argparse.Namespace):
    """(image, stack, None) from IMAGE --stack STACK_DIR."""
    from ..io import read_image, read_stack

    ignore_flags(
        args,
        {**photo_only_flags_given(args), "--focus-m": args.focus_m is not None},
        "it applies to --photos only; a stack folder carries its K and focus in stack.json",
    )
    return read_image(args.image), read_stack(args.stack), None


def _check_weights_first(args: argparse.Namespace) -> None:
    """A released backend whose weights file is missing fails with its usual one-line error before any input
    is read (a bracket of full-size photos takes a while to decode)."""
    if args.backend == "compact":
        return
    from ..errors import MissingWeightsError
    from ..models.checkpoints import resolve_weights
    from ..models.registry import get_backend
    from ..pipelines.depth import load_depth_predictor

    try:
        resolve_weights(args.weights, get_backend(args.backend).published)
    except MissingWeightsError:
        load_depth_predictor(args.backend, args.weights, args.device)  # raises the backend's own message
        raise


def _from_photos(args: argparse.Namespace):
    """(reference photo, metric stack, the reference photo's (H, W)) from an aperture bracket."""
    import numpy as np

    bracket = load_bracket_from_args(args)
    if bracket.kind != "aperture":
        focus = bracket.stack.lens
        lo, hi = min(s["focus_m"] for s in focus), max(s["focus_m"] for s in focus)
        raise InputError(
            f"--photos: a focus bracket (focus {lo:g}-{hi:g} m); Stage-2 depth needs an aperture bracket (one "
            "focus distance, several f-numbers): run `bokehdepth sweep --photos ...` for a focus bracket"
        )
    stack = bracket.stack
    if not args.single_frame and np.ptp(stack.K) <= 0.05 * max(stack.K):
        raise InputError(
            f"--photos: the f-numbers give K {[round(k, 4) for k in stack.K]} (px·m), too alike to carry a "
            "defocus cue; bracket a wider range of f-numbers (e.g. f/8 and f/2) or pass --single-frame"
        )
    if args.single_frame:  # the reference alone needs no alignment
        ignore_flags(args, {"--register": args.register is not None}, "--single-frame uses the reference photo alone")
    else:
        stack = register_from_args(args, bracket).stack
    return stack.frames[stack.reference], stack, bracket.sizes[stack.reference]


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_dir, write_depth_outputs, write_json
    from ..pipelines.depth import load_depth_predictor, split_stack
    from ..sweep_photos import resize_map

    if args.photos is not None and (args.image is not None or args.stack is not None):
        raise InputError("depth: give either IMAGE --stack STACK_DIR or --photos A.jpg B.jpg ..., not both")
    if args.photos is None and (args.image is None or args.stack is None):
        missing = "IMAGE" if args.image is None else "--stack STACK_DIR"
        raise InputError(f"depth: {missing} missing; give IMAGE --stack STACK_DIR (or --photos A.jpg B.jpg ...)")
    _check_weights_first(args)
    image, stack, photo_size = _from_photos(args) if args.photos else _from_stack(args)
    if args.focus_side is not None:
        stack.focus_side = args.focus_side
    split_stack(image, stack)  # size check before any model is loaded
    predictor = load_depth_predictor(args.backend, args.weights, args.device)
    result = predictor.predict(image, stack, single_frame=args.single_frame)
    depth = result.depth if photo_size is None else resize_map(result.depth, photo_size)
    info = {"image": str(args.image), "stack": str(args.stack), **result.info}
    if args.photos:
        info |= {
            "image": str(args.photos[stack.reference]),  # the sharpest photo, the reference
            "stack": None,
            "photos": [str(p) for p in args.photos],
            "K": [float(k) for k in stack.K],
            "K_convention": stack.K_convention,
            "disp_focus": stack.disp_focus,
            "lens": stack.lens,
            "photo_working_size": list(stack.size),
            "photo_size": list(photo_size),  # the reference photo's (H, W): the size of depth.npy
            "registration": stack.extra.get("registration", []),
        }
    info["ignored_flags"] = getattr(args, "ignored_flags", [])
    with atomic_dir(args.output, owned=DEPTH_OUTPUTS) as tmp:
        write_depth_outputs(tmp, depth)
        write_json(tmp / "depth_info.json", info)
    print(f"wrote {args.output}/depth.npy and depth_color.png ({args.backend})")
    return 0
