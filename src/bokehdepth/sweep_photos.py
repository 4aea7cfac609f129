"""Real photo brackets for the sweep: EXIF → K per photo, size alignment, the reference, and the stack.

Two kinds of bracket are recognised from the focus distances (after overrides):

- **aperture bracket** — one focus distance (within 1 %), different f-numbers: a calibrated stack whose
  reference is the sharpest photo (smallest K); :func:`bokehdepth.sweep.sweep_stack` runs on it.
- **focus bracket** — different focus distances: each photo has its own ``disp_focus``;
  :func:`bokehdepth.sweep_focus.sweep_focus_bracket` searches depth per pixel.

Photos are display-encoded (sRGB); the sweep linearises them with gamma 2.2. They are resized (area
averaging) to a common working size — the smallest photo's size, capped at ``max_width`` px — and K is
computed at that width. :func:`register_bracket` then aligns every photo to the reference by a global motion
(:mod:`bokehdepth.register`: ``translation`` for a hand-held bracket; ``affine`` also follows the
magnification change of focus breathing); without it the photos must be registered (tripod).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InputError
from .io import Stack
from .lens import LensSettings

__all__ = ["PhotoBracket", "load_photo_bracket", "register_bracket"]

PHOTO_GAMMA = 2.2
"""Linearising exponent applied to display-encoded photos (sRGB approximated by a pure power)."""


@dataclass
class PhotoBracket:
    """Photos at a common working size with their camera settings.

    Attributes:
        stack: metric :class:`Stack` (frames, K at the working width, reference = smallest K for an aperture
            bracket, the middle focus distance for a focus bracket, gamma 2.2,
            ``source="photos"``, ``disp_focus`` = 1/median focus distance, ``lens`` = settings per photo).
        settings: LensSettings per photo at the working width.
        kind: ``"aperture"`` (one focus distance) or ``"focus"`` (several).
        paths: the photo files.
        sizes: (H, W) in px of each photo (after the EXIF orientation); ``depth --photos`` returns depth at the
            reference photo's size.
        registration: one :class:`bokehdepth.register.Alignment` per photo when the photos were aligned to the
            reference (also in ``stack.extra["registration"]`` as dicts), else empty.
    """

    stack: Stack
    settings: list[LensSettings]
    kind: str
    paths: list[Path]
    sizes: list[tuple[int, int]]
    registration: list = field(default_factory=list)

    @property
    def photo_size(self) -> tuple[int, int]:
        """(H, W) in px of the smallest photo (by area), the size the sweep's outputs are returned at."""
        return min(self.sizes, key=lambda hw: hw[0] * hw[1])

    @property
    def disp_focus(self) -> np.ndarray:
        """(N,) focus disparity of each photo, 1/m."""
        return np.array([s.disp_focus for s in self.settings])


def _per_photo(values: Sequence[float] | float | None, n: int, flag: str) -> list[float | None]:
    if values is None:
        return [None] * n
    if isinstance(values, (int, float)):
        return [float(values)] * n
    values = list(values)
    if len(values) == 1:
        return [float(values[0])] * n
    if len(values) != n:
        raise InputError(f"{flag}: give one value for all photos or one per photo ({n}), got {len(values)}")
    return [float(v) for v in values]


def load_photo_bracket(
    paths: Sequence[str | os.PathLike],
    *,
    focal_mm: float | None = None,
    f_number: Sequence[float] | float | None = None,
    focus_m: Sequence[float] | float | None = None,
    sensor_mm: float | None = None,
    max_width: int | None = 1024,
) -> PhotoBracket:
    """Read a bracket of photos of one static scene.

    Args:
        paths: two or more photo files.
        focal_mm, sensor_mm: override / supply FocalLength and the sensor width (mm) for every photo.
        f_number, focus_m: one value for all photos or one per photo (overrides / supplies FNumber and
            SubjectDistance).
        max_width: cap on the working width in px (None or 0: the smallest photo's width).
    Raises:
        InputError: fewer than two photos, a missing EXIF tag (naming the tag and the flag), different aspect
            ratios, all photos equally blurred.
    """
    import cv2

    from .exif import lens_settings_from_photo, read_exif
    from .io import read_image

    paths = [Path(p) for p in paths]
    if len(paths) < 2:
        raise InputError(f"--photos: a bracket needs at least 2 photos of the same scene, got {len(paths)}")
    n = len(paths)
    fnums = _per_photo(f_number, n, "--f-number")
    focuses = _per_photo(focus_m, n, "--focus-m")
    infos = [read_exif(p) for p in paths]
    sizes = [(info["width_px"], info["height_px"]) for info in infos]
    w0, h0 = min(sizes, key=lambda s: s[0] * s[1])
    for p, (w, h) in zip(paths, sizes):
        if abs(w / h - w0 / h0) > 0.01 * (w0 / h0):
            raise InputError(
                f"{p}: aspect ratio {w}x{h} differs from {w0}x{h0}; crop the photos to the same framing first"
            )
    work_w = w0 if not max_width else min(w0, int(max_width))
    work_h = max(1, round(h0 * work_w / w0))
    settings = [
        lens_settings_from_photo(
            p, focal_mm=focal_mm, f_number=fnums[i], focus_m=focuses[i], sensor_mm=sensor_mm, width_px=work_w
        )
        for i, p in enumerate(paths)
    ]
    frames = []
    for p in paths:
        img = read_image(p)
        if img.shape[:2] != (work_h, work_w):
            img = cv2.resize(img, (work_w, work_h), interpolation=cv2.INTER_AREA)
        frames.append(np.clip(img, 0.0, 1.0).astype(np.float32))
    K = [s.K for s in settings]
    focus = np.array([s.focus_m for s in settings])
    kind = "aperture" if np.ptp(focus) <= 0.01 * np.median(focus) else "focus"
    if kind == "aperture" and np.ptp(K) <= 1e-6 * max(K):
        raise InputError("--photos: all photos have the same K (same f-number and focus); bracket the aperture")
    # aperture bracket: the sharpest photo; focus bracket: the middle focus distance (least blur on average)
    reference = int(np.argmin(K)) if kind == "aperture" else int(np.argsort(focus)[len(focus) // 2])
    stack = Stack(
        frames=frames,
        K=K,
        disp_focus=float(1.0 / np.median(focus)),
        reference=reference,
        gamma=PHOTO_GAMMA,
        lens=[s.to_dict() for s in settings],
        source="photos",
        K_convention="metric",
        names=[p.name for p in paths],
        extra={"bracket": kind},
    )
    return PhotoBracket(stack=stack, settings=settings, kind=kind, paths=paths, sizes=[(h, w) for w, h in sizes])


def register_bracket(bracket: PhotoBracket, motion: str) -> PhotoBracket:
    """The bracket with every photo aligned to the reference by ``motion`` (:mod:`bokehdepth.register`, each
    photo against the most alike one already aligned; a photo whose alignment is not trusted is kept as shot,
    with one warning naming it); ``"none"`` returns it as it is.
    The alignments go to ``registration`` and, as dicts, to ``stack.extra["registration"]``."""
    from dataclasses import replace

    from .register import MOTIONS, register_to_reference

    if motion not in MOTIONS:
        raise InputError(f"--register: {motion!r} is not one of {', '.join(MOTIONS)}")
    if motion == "none":
        return bracket
    stack = bracket.stack
    # each photo against the most alike one already aligned: nearest in K (aperture bracket) or in focus
    # disparity (focus bracket)
    key = list(stack.K) if bracket.kind == "aperture" else [float(d) for d in bracket.disp_focus]
    names = [str(p) for p in bracket.paths]
    frames, found = register_to_reference(stack.frames, stack.reference, motion, names, key)
    stack = replace(stack, frames=frames, extra={**stack.extra, "registration": [a.to_dict() for a in found]})
    return replace(bracket, stack=stack, registration=found)


def resize_map(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W) map to ``size`` = (H', W'): bilinear for float maps with NaN kept where most of the
    source is NaN, nearest for boolean masks."""
    import cv2

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    if arr.dtype == bool:
        return cv2.resize(arr.astype(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST).astype(bool)
    valid = np.isfinite(arr)
    vals = cv2.resize(np.where(valid, arr, 0.0).astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    weight = cv2.resize(valid.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = vals / weight
    out[weight < 0.5] = np.nan
    return out.astype(np.float32)


def to_photo_size(result, size: tuple[int, int]):
    """A sweep result with its per-pixel output maps (depth, offsets, confidence, ambiguity) resized from the
    working size back to the photos' size (H, W); per-frame radius maps stay at the working size."""
    from dataclasses import replace

    fields = ("disp_offset", "raw_offset", "confidence", "depth", "depth_near", "depth_far", "ambiguous")
    changes = {f: resize_map(getattr(result, f), size) for f in fields if getattr(result, f, None) is not None}
    return replace(result, **changes)
