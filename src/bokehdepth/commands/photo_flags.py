"""The flags that describe a real photo bracket (``--photos`` and its EXIF overrides), shared by ``sweep`` and
``depth``, and the one-line warning for a flag that does not apply to the input."""

from __future__ import annotations

import argparse
import sys

DEFAULT_MAX_WIDTH = 1024
"""Working width cap (px) for photos when ``--max-width`` is not given."""

DEFAULT_REGISTER = "translation"
"""How photos are aligned to the reference when ``--register`` is not given."""

PHOTO_ONLY_FLAGS = ("--focal-mm", "--f-number", "--sensor-mm", "--max-width", "--register")
"""Flags that apply to ``--photos`` only (``--focus-m`` is shared with stacks in ``sweep``)."""


def add_photo_arguments(p: argparse.ArgumentParser, *, photos_help: str, focus_help: str) -> None:
    """Add ``--photos``, ``--focus-m``, ``--focal-mm``, ``--f-number``, ``--sensor-mm``, ``--max-width`` and
    ``--register``."""
    from ..register import MOTIONS

    p.add_argument("--photos", nargs="+", metavar="PHOTO", help=photos_help)
    p.add_argument("--focus-m", nargs="+", type=float, help=focus_help)
    p.add_argument("--focal-mm", type=float, help="photos: focal length in mm (EXIF FocalLength)")
    p.add_argument("--f-number", nargs="+", type=float, help="photos: f-number, one or per photo (EXIF FNumber)")
    p.add_argument(
        "--sensor-mm",
        type=float,
        help="photos: sensor width in mm, as specs give it (the long side of a 3:2 or 4:3 sensor; "
        "portrait photos are turned by their EXIF Orientation); else from FocalLengthIn35mmFilm",
    )
    p.add_argument(
        "--max-width",
        type=int,
        default=None,
        help=f"photos: working width cap in px (0 = full size; default {DEFAULT_MAX_WIDTH})",
    )
    p.add_argument(
        "--register",
        choices=MOTIONS,
        default=None,
        help=f"photos: align each photo to the reference by this motion (default {DEFAULT_REGISTER}, for a "
        "hand-held bracket; euclidean adds rotation, affine also scale, e.g. focus breathing; none: use the "
        "photos as shot, e.g. from a tripod)",
    )


def photo_only_flags_given(args: argparse.Namespace) -> dict[str, bool]:
    """``{flag: given}`` for :data:`PHOTO_ONLY_FLAGS` (for :func:`ignore_flags`)."""
    return {flag: getattr(args, flag[2:].replace("-", "_")) is not None for flag in PHOTO_ONLY_FLAGS}


def load_bracket_from_args(args: argparse.Namespace):
    """:func:`bokehdepth.sweep_photos.load_photo_bracket` on ``args.photos`` with the flags' overrides (the
    photos as shot: :func:`register_from_args` aligns them, after the checks that need no alignment)."""
    from ..errors import InputError
    from ..sweep_photos import load_photo_bracket

    if args.max_width is not None and args.max_width < 0:
        raise InputError(f"--max-width: give a width in px (0 = full size), got {args.max_width}")
    return load_photo_bracket(
        args.photos,
        focal_mm=args.focal_mm,
        f_number=args.f_number,
        focus_m=args.focus_m,
        sensor_mm=args.sensor_mm,
        max_width=DEFAULT_MAX_WIDTH if args.max_width is None else args.max_width,
    )


def register_from_args(args: argparse.Namespace, bracket):
    """:func:`bokehdepth.sweep_photos.register_bracket` with ``--register`` (default :data:`DEFAULT_REGISTER`)."""
    from ..sweep_photos import register_bracket

    return register_bracket(bracket, DEFAULT_REGISTER if args.register is None else args.register)


def ignore_flags(args: argparse.Namespace, flags: dict[str, bool], why: str) -> None:
    """Warn (one ``warning: FLAG ignored: why`` line each on stderr) about the flags in ``flags`` that were
    given and do not apply; they are appended to ``args.ignored_flags`` (created if missing)."""
    if not hasattr(args, "ignored_flags"):
        args.ignored_flags = []
    for flag, given in flags.items():
        if given:
            sys.stderr.write(f"warning: {flag} ignored: {why}\n")
            args.ignored_flags.append(flag)
