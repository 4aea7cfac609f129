"""``bokehdepth calibrate [PHOTO] [--focal-mm F --f-number N --focus-m S --sensor-mm W --width-px P] [--json]``.

Prints the blur strength K (px·m: blur radius r = K·|1/depth − 1/focus| px) of a camera setting, a table of
blur radius (px) against depth (m), and K at the standard f-stops. Settings come from a photo's EXIF
(``bokehdepth.exif``) and/or the flags; flags win over tags.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

from ..errors import InputError

FSTOPS = (1.4, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0, 16.0)
"""Standard full f-stops of the K-against-f-number table."""

DEPTH_FACTORS = (0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0, math.inf)
"""Depths of the radius table, as multiples of the focus distance."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "calibrate",
        help="camera settings or a photo's EXIF -> K (px·m) and blur-radius tables",
        description="Blur strength K in px·m (blur radius r = K·|1/depth − 1/focus| px) from camera settings "
        "or a photo's EXIF; flags override EXIF tags.",
    )
    p.add_argument("photo", nargs="?", help="photo whose EXIF supplies the settings (optional)")
    p.add_argument("--focal-mm", type=float, help="real focal length in mm (EXIF FocalLength)")
    p.add_argument("--f-number", type=float, help="aperture f-number (EXIF FNumber)")
    p.add_argument("--focus-m", type=float, help="focus distance in metres (EXIF SubjectDistance)")
    p.add_argument("--sensor-mm", type=float, help="sensor width in mm (else from EXIF FocalLengthIn35mmFilm)")
    p.add_argument("--width-px", type=float, help="image width in px at which K is wanted (else the photo's width)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    p.set_defaults(func=run)


def _settings(args: argparse.Namespace):
    from ..lens import LensSettings

    if args.photo:
        from ..exif import lens_settings_from_photo

        return lens_settings_from_photo(
            args.photo,
            focal_mm=args.focal_mm,
            f_number=args.f_number,
            focus_m=args.focus_m,
            sensor_mm=args.sensor_mm,
            width_px=args.width_px,
        )
    for flag in ("focal_mm", "f_number", "focus_m", "sensor_mm", "width_px"):
        if getattr(args, flag) is None:
            name = "--" + flag.replace("_", "-")
            raise InputError(f"{name}: needed without a photo; pass {name} (or give a PHOTO with EXIF)")
    return LensSettings(args.focal_mm, args.f_number, args.focus_m, args.sensor_mm, args.width_px)


def calibration_report(settings) -> dict[str, Any]:
    """Everything ``calibrate`` prints, as a JSON-ready dict.

    Keys: ``K`` (px·m), ``disp_focus`` (1/m), ``settings`` (the LensSettings fields), ``table`` (rows of
    ``depth_m``, ``disp`` (1/m), ``radius_px``, ``side`` near/focus/far; ``depth_m`` null for infinity),
    ``fstops`` (rows of ``f_number``, ``K``).
    """
    from ..lens import k_from_camera

    K = settings.K
    table = []
    for factor in DEPTH_FACTORS:
        depth = settings.focus_m * factor
        disp = 0.0 if math.isinf(depth) else 1.0 / depth
        radius = K * abs(disp - settings.disp_focus)
        side = "focus" if factor == 1.0 else ("near" if factor < 1.0 else "far")
        table.append({"depth_m": None if math.isinf(depth) else depth, "disp": disp, "radius_px": radius, "side": side})
    fstops = [
        {
            "f_number": n,
            "K": float(k_from_camera(settings.focal_mm, n, settings.focus_m, settings.sensor_mm, settings.width_px)),
        }
        for n in FSTOPS
    ]
    return {"K": K, "disp_focus": settings.disp_focus, "settings": settings.to_dict(), "table": table, "fstops": fstops}


def run(args: argparse.Namespace) -> int:
    report = calibration_report(_settings(args))
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return 0
    s = report["settings"]
    out = [
        f"K = {report['K']:.4f} px·m  (blur radius r = K·|1/depth − 1/focus| px)",
        f"camera: {s['focal_mm']:g} mm f/{s['f_number']:g}, focus {s['focus_m']:g} m, "
        f"sensor {s['sensor_mm']:.3f} mm, width {s['width_px']:g} px; disp_focus = {report['disp_focus']:.4f} 1/m",
        "",
        f"{'depth (m)':>10}  {'disp (1/m)':>10}  {'radius (px)':>11}  side",
    ]
    for row in report["table"]:
        depth = "inf" if row["depth_m"] is None else f"{row['depth_m']:.3f}"
        out.append(f"{depth:>10}  {row['disp']:>10.4f}  {row['radius_px']:>11.2f}  {row['side']}")
    out += ["", f"{'f-number':>8}  {'K (px·m)':>10}"]
    out += [f"{row['f_number']:>8g}  {row['K']:>10.3f}" for row in report["fstops"]]
    sys.stdout.write("\n".join(out) + "\n")
    return 0
