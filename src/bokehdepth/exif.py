"""EXIF helpers: the camera settings of a photo, as pure functions over Pillow's EXIF reader.

Units: focal length in mm, focus (subject) distance in metres, sensor width in mm, image size in pixels
*after* the EXIF orientation is applied (a portrait photo stored landscape with Orientation 6 has its
width and height swapped), i.e. the size :func:`bokehdepth.io.read_image` returns.

Tags read (EXIF 2.3 numbering): ``FocalLength`` (0x920A), ``FNumber`` (0x829D), ``SubjectDistance``
(0x9206, metres; 0 means unknown, 0xFFFFFFFF/… infinity), ``SubjectDistanceRange`` (0xA40C, a category:
1 macro, 2 close view, 3 distant view; informative only, never used as a distance),
``FocalLengthIn35mmFilm`` (0xA405), ``ExifImageWidth``/``ExifImageHeight`` (0xA002/0xA003), ``Orientation``
(0x0112), ``Make``/``Model``/``LensModel`` (informative). Maker-note focus distances are vendor specific and
not parsed; pass ``--focus-m`` when ``SubjectDistance`` is absent.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import InputError
from .lens import LensSettings, sensor_width_from_35mm

__all__ = ["EXIF_TAGS", "lens_settings_from_photo", "read_exif"]

EXIF_TAGS: dict[str, int] = {
    "Make": 0x010F,
    "Model": 0x0110,
    "Orientation": 0x0112,
    "FNumber": 0x829D,
    "SubjectDistance": 0x9206,
    "FocalLength": 0x920A,
    "ExifImageWidth": 0xA002,
    "ExifImageHeight": 0xA003,
    "FocalLengthIn35mmFilm": 0xA405,
    "SubjectDistanceRange": 0xA40C,
    "LensModel": 0xA434,
}
"""Tag name → EXIF tag id of every tag :func:`read_exif` looks for."""

_EXIF_IFD = 0x8769
_IFD0_TAGS = ("Make", "Model", "Orientation")
_SUBJECT_RANGE = {0: "unknown", 1: "macro", 2: "close view", 3: "distant view"}


def _as_float(value: Any) -> float | None:
    """A rational/int/tuple EXIF value as float, or None if absent or not finite."""
    if value is None:
        return None
    try:
        if isinstance(value, tuple) and len(value) == 2:
            num, den = value
            out = float(num) / float(den) if float(den) != 0 else math.inf
        else:
            out = float(value)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return out if not math.isnan(out) else None


def read_exif(path: str | os.PathLike) -> dict[str, Any]:
    """Read the camera tags of a photo.

    Returns a dict with keys (absent tags are None):
      ``focal_mm`` (mm), ``f_number``, ``focus_m`` (m, from SubjectDistance; None if 0/unknown, ``inf`` when the
      camera says infinity), ``subject_distance_range`` (str category or None), ``focal_35mm`` (mm),
      ``width_px`` and ``height_px`` (after orientation), ``orientation`` (1–8, 1 if absent), ``make``,
      ``model``, ``lens_model``.

    Raises:
        InputError: the file is missing or not a readable image.
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder, not a photo; list the photo files (e.g. {path}/*.jpg)")
    if not path.is_file():
        raise InputError(f"{path}: photo not found; check the path")
    try:
        with Image.open(path) as im:
            width, height = im.size
            exif = im.getexif()
            ifd0 = dict(exif)
            sub = dict(exif.get_ifd(_EXIF_IFD)) if exif else {}
    except UnidentifiedImageError as exc:
        raise InputError(f"{path}: not a supported image; use a JPEG, TIFF, PNG or WebP photo") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise InputError(f"{path}: image is corrupt or truncated ({exc}); re-export it") from exc

    def tag(name: str) -> Any:
        tid = EXIF_TAGS[name]
        if name in _IFD0_TAGS:
            return ifd0.get(tid, sub.get(tid))
        return sub.get(tid, ifd0.get(tid))

    orientation = int(_as_float(tag("Orientation")) or 1)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    focus = _as_float(tag("SubjectDistance"))
    if focus is not None and focus <= 0:
        focus = None  # 0 means "unknown" in EXIF
    elif focus is not None and focus > 1e6:
        focus = math.inf  # 0xFFFFFFFF means "infinity"
    rng = _as_float(tag("SubjectDistanceRange"))

    def text(name: str) -> str | None:
        v = tag(name)
        if v is None:
            return None
        return str(v).strip("\x00 ").strip() or None

    f35 = _as_float(tag("FocalLengthIn35mmFilm"))
    return {
        "focal_mm": _as_float(tag("FocalLength")),
        "f_number": _as_float(tag("FNumber")),
        "focus_m": focus,
        "subject_distance_range": None if rng is None else _SUBJECT_RANGE.get(int(rng), "unknown"),
        "focal_35mm": f35 if f35 and f35 > 0 else None,
        "width_px": int(width),
        "height_px": int(height),
        "orientation": orientation,
        "make": text("Make"),
        "model": text("Model"),
        "lens_model": text("LensModel"),
    }


def lens_settings_from_photo(
    path: str | os.PathLike,
    *,
    focal_mm: float | None = None,
    f_number: float | None = None,
    focus_m: float | None = None,
    sensor_mm: float | None = None,
    width_px: float | None = None,
) -> LensSettings:
    """Camera settings of a photo from its EXIF, with explicit values overriding the tags.

    The sensor width (mm) comes from ``sensor_mm`` (the width as specs give it, along the stored image's width:
    for a photo whose EXIF Orientation turns it upright by 90°, the width across the upright photo is
    ``sensor_mm`` × width / height) or, failing that, from ``FocalLengthIn35mmFilm`` via
    :func:`bokehdepth.lens.sensor_width_from_35mm` (square pixels). ``width_px`` defaults to the photo's width
    after orientation (K is then in px·m at that width).

    Raises:
        InputError: a needed tag is missing — the message names the tag and the flag that supplies it, e.g.
            ``photo.jpg: EXIF has no FNumber; pass --f-number`` — or a value is out of range (f-number ≤ 0,
            focus distance ≤ focal length, ...).
    """
    info = read_exif(path)
    name = Path(path).name

    def need(value: float | None, tag: str, flag: str) -> float:
        if value is None:
            raise InputError(f"{path}: EXIF has no {tag}; pass {flag}")
        return float(value)

    focal = need(focal_mm if focal_mm is not None else info["focal_mm"], "FocalLength", "--focal-mm")
    fnum = need(f_number if f_number is not None else info["f_number"], "FNumber", "--f-number")
    focus = focus_m if focus_m is not None else info["focus_m"]
    if focus is None:
        rng = info["subject_distance_range"]
        hint = f" (SubjectDistanceRange says only '{rng}')" if rng else ""
        raise InputError(f"{path}: EXIF has no SubjectDistance{hint}; pass --focus-m")
    if math.isinf(focus):
        raise InputError(f"{path}: EXIF SubjectDistance is infinity; pass a finite focus distance with --focus-m")
    width = float(width_px) if width_px is not None else float(info["width_px"])
    if sensor_mm is not None and info["orientation"] in (5, 6, 7, 8):
        # the sensor width as specs give it runs along the stored image's width; an upright portrait photo's
        # width runs along the sensor's height
        sensor_mm = float(sensor_mm) * info["width_px"] / info["height_px"]
    if sensor_mm is None:
        if info["focal_35mm"] is None:
            raise InputError(f"{path}: EXIF has no FocalLengthIn35mmFilm to derive the sensor width; pass --sensor-mm")
        if not focal > 0:
            raise InputError(f"--focal-mm: focal length must be > 0 mm, got {focal} ({name})")
        # the crop factor is the camera's own pair of tags: FocalLengthIn35mmFilm / FocalLength (a --focal-mm
        # override corrects the focal length, not the sensor)
        exif_focal = info["focal_mm"] if info["focal_mm"] is not None and info["focal_mm"] > 0 else focal
        sensor_mm = sensor_width_from_35mm(exif_focal, info["focal_35mm"], info["width_px"], info["height_px"])
    try:
        return LensSettings(focal, fnum, float(focus), float(sensor_mm), width)
    except InputError as exc:
        raise InputError(f"{path}: {exc}") from exc
