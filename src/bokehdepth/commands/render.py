"""``bokehdepth render IMAGE (--depth D | --disp D) --K K [K ...] (--focus-m M | --focus-disp D | --focus-xy X,Y)
-o OUT``: one K → one bokeh image, several K → a stack folder (frame 0 = the sharp input, K = 0)."""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = (
    "Blur radius r = K·|disp − disp_focus| px (K in px·m at the image's width, disp = 1/depth in 1/m). "
    "Instead of --K give camera settings: --focal-mm F --f-number N [N ...] --sensor-mm W with --focus-m S."
)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render bokeh from an image + depth/disparity (one image, or a stack for several K)",
        description="Occlusion-aware classical bokeh renderer.",
        epilog=_EPILOG,
    )
    p.add_argument("image", help="all-in-focus RGB image (PNG, JPEG, TIFF, ...)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--depth", help="metric depth map in metres (.npy, .pfm, float .tif, 16-bit .png)")
    src.add_argument("--disp", help="disparity map = 1/depth in 1/m (.npy, .pfm, float .tif, 16-bit .png)")
    p.add_argument("--depth-scale", type=float, default=None, help="divide integer PNG/TIFF values by this")
    p.add_argument("--K", nargs="+", default=None, metavar="K", help="blur strength(s) in px·m at the image width")
    p.add_argument("--focal-mm", type=float, default=None, help="focal length (mm), with --f-number/--sensor-mm")
    p.add_argument("--f-number", nargs="+", default=None, metavar="N", help="f-number(s); one frame each")
    p.add_argument("--sensor-mm", type=float, default=36.0, help="sensor width (mm), default 36 (full frame)")
    focus = p.add_mutually_exclusive_group(required=True)
    focus.add_argument("--focus-m", type=float, help="focus distance in metres")
    focus.add_argument("--focus-disp", type=float, help="focus disparity in 1/m")
    focus.add_argument("--focus-xy", help="focus on the depth of pixel X,Y (column, row)")
    p.add_argument("--gamma", type=float, default=2.2, help="linear-light exponent (default 2.2)")
    p.add_argument("--backend", choices=("cpu", "torch", "exact"), default="cpu", help="renderer backend")
    p.add_argument("--no-occlusion", action="store_true", help="plain scatter-and-normalise (no depth slabs)")
    p.add_argument("--highlight", action="store_true", help="boost bright out-of-focus pixels (BokehMe)")
    p.add_argument(
        "--full-resolution",
        action="store_true",
        help="cpu backend: scatter every blur at full resolution (slower; default renders large blurs at reduced "
        "resolution, >= 40 dB from the exact scatter)",
    )
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="output PNG bit depth")
    p.add_argument("-o", "--output", required=True, help="output image (one K) or stack folder (several K)")
    p.set_defaults(func=run)


def _parse_xy(text: str) -> tuple[int, int]:
    from ..errors import InputError

    try:
        x, y = (int(v) for v in text.replace(" ", "").split(","))
    except ValueError as exc:
        raise InputError(f"--focus-xy: expected two integers X,Y (column, row), got {text!r}") from exc
    return x, y


def _blur_strengths(args: argparse.Namespace, width: int) -> tuple[list[float], object]:
    """K values (px·m) from --K or from camera settings; plus the lens metadata for the stack."""
    from ..errors import InputError
    from ..io import parse_floats
    from ..lens import LensSettings

    if args.K is not None and (args.focal_mm is not None or args.f_number is not None):
        raise InputError("--K: give either --K or camera settings (--focal-mm/--f-number), not both")
    if args.K is not None:
        return parse_floats(args.K, "--K"), None
    if args.focal_mm is None or args.f_number is None:
        raise InputError("--K: give --K K [K ...] or --focal-mm F --f-number N [N ...] (with --focus-m)")
    if args.focus_m is None:
        raise InputError("--focus-m: camera settings need the focus distance --focus-m in metres")
    lenses = [
        LensSettings(args.focal_mm, n, args.focus_m, args.sensor_mm, width)
        for n in parse_floats(args.f_number, "--f-number")
    ]
    return [ls.K for ls in lenses], [ls.to_dict() for ls in lenses]


def run(args: argparse.Namespace) -> int:
    import math

    from ..errors import InputError
    from ..io import IMAGE_SUFFIXES, read_depth, read_image, validate_depth, write_image, write_stack
    from ..render.api import render, render_stack

    image = read_image(args.image)
    h, w = image.shape[:2]
    if args.depth is not None:
        depth = validate_depth(read_depth(args.depth, args.depth_scale), args.depth, kind="depth", shape=(h, w))
        disp = 1.0 / depth
    else:
        disp = validate_depth(read_depth(args.disp, args.depth_scale), args.disp, kind="disp", shape=(h, w))
    Ks, lens = _blur_strengths(args, w)
    if any(not math.isfinite(k) or k < 0 for k in Ks):
        raise InputError(f"--K: blur strengths must be finite and >= 0 px·m, got {Ks}")
    if args.gamma is not None and not (math.isfinite(args.gamma) and args.gamma > 0):
        raise InputError(f"--gamma: must be a finite number > 0, got {args.gamma}")
    focus = {
        "disp_focus": args.focus_disp,
        "focus_m": args.focus_m,
        "focus_xy": _parse_xy(args.focus_xy) if args.focus_xy else None,
    }
    opts = {
        "gamma": args.gamma,
        "occlusion": not args.no_occlusion,
        "backend": args.backend,
        "multiscale": not args.full_resolution,
    }
    out = Path(args.output)
    if len(Ks) == 1:
        if out.suffix.lower() not in IMAGE_SUFFIXES:
            raise InputError(f"-o: {out}: one K renders one image; give an image path such as out.png")
        result = render(image, disp, Ks[0], highlight=args.highlight, **focus, **opts)
        write_image(out, result, bits=args.bits)
    else:
        if out.suffix.lower() in IMAGE_SUFFIXES:
            raise InputError(f"-o: {out}: several K values make a stack folder; give a folder path, not an image")
        stack = render_stack(image, disp, Ks, highlight=args.highlight, progress=True, lens=lens, **focus, **opts)
        write_stack(stack, out, bits=args.bits)
    return 0
