"""Shared fixtures for the sweep and depth tests: textured images, rendered plane stacks, EXIF photos."""

from __future__ import annotations

import numpy as np
from PIL import Image
from PIL.TiffImagePlugin import IFDRational

from bokehdepth.io import Stack


def texture(h: int, w: int, seed: int = 0, cell: int = 4) -> np.ndarray:
    """Smooth random RGB texture in [0, 1], (h, w, 3) float32 (cubic upsampling of random cells)."""
    import cv2

    rng = np.random.default_rng(seed)
    small = rng.random((max(h // cell, 2), max(w // cell, 2), 3)).astype(np.float32)
    return np.clip(cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def plane_stack(
    depth_m: float | np.ndarray,
    Ks=(10.0, 20.0, 30.0),
    disp_focus: float = 0.5,
    size=(64, 64),
    seed: int = 0,
    noise: float = 0.0,
    image: np.ndarray | None = None,
    focus_side: str | None = None,
) -> Stack:
    """A stack rendered by the renderer from a depth map (a scalar: fronto-parallel plane), optional noise."""
    from bokehdepth.render.api import render_stack

    h, w = size
    img = texture(h, w, seed) if image is None else image
    depth = np.broadcast_to(np.asarray(depth_m, dtype=np.float32), (h, w))
    stack = render_stack(img, (1.0 / depth).astype(np.float32), list(Ks), disp_focus=disp_focus, gamma=2.2)
    if noise:
        rng = np.random.default_rng(seed + 1000)
        stack.frames = [np.clip(f + rng.normal(0.0, noise, f.shape), 0, 1).astype(np.float32) for f in stack.frames]
    stack.focus_side = focus_side
    return stack


def make_exif(*, orientation=None, fnumber=None, focal=None, subject=None, f35=None) -> Image.Exif:
    """EXIF with exactly the lens tags given (None: left out) plus Make (Pillow writes no PNG eXIf chunk for an
    empty IFD0); FNumber, FocalLength and SubjectDistance as rationals."""
    exif = Image.Exif()
    exif[0x010F] = "bokehdepth-test"
    if orientation is not None:
        exif[0x0112] = orientation
    sub = exif.get_ifd(0x8769)
    if fnumber is not None:
        sub[0x829D] = IFDRational(round(fnumber * 10), 10)
    if focal is not None:
        sub[0x920A] = IFDRational(round(focal * 100), 100)
    if subject is not None:
        sub[0x9206] = IFDRational(round(subject * 1000), 1000)
    if f35 is not None:
        sub[0xA405] = int(f35)
    return exif


def save_photo(path, img, *, fnumber=None, focal=50.0, subject=2.0, f35=50, orientation=None):
    """Write ``img`` (H, W, 3 in [0, 1]) as an 8-bit photo with the EXIF lens tags given (None: tag left out);
    ``orientation``: the EXIF Orientation tag (``img`` is the stored, not the upright, picture)."""
    exif = make_exif(orientation=orientation, fnumber=fnumber, focal=focal, subject=subject, f35=f35)
    Image.fromarray(np.round(np.clip(img, 0, 1) * 255).astype(np.uint8)).save(path, exif=exif, quality=98)
    return path
