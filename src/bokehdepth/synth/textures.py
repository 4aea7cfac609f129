"""Textures for synthetic scenes, in linear light: crops of real photographs shipped with scikit-image and
procedural patterns (1/f noise, stripes, text-like marks, checkers, near-textureless patches).

Every generator is a pure function of a ``numpy.random.Generator`` and a size and returns float32
(H, W, 3) linear-light RGB in [0, 1]. Photographs are loaded from the installed scikit-image package (no
download) and converted from sRGB to linear light.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np

__all__ = [
    "PHOTO_NAMES",
    "TEXTURE_KINDS",
    "linear_to_srgb",
    "load_photo",
    "random_texture",
    "srgb_to_linear",
    "texture",
]

PHOTO_NAMES: tuple[str, ...] = (
    "astronaut",
    "camera",
    "chelsea",
    "coffee",
    "rocket",
    "retina",
    "hubble_deep_field",
    "immunohistochemistry",
    "moon",
    "page",
    "text",
    "coins",
    "clock",
    "grass",
    "gravel",
    "brick",
    "cell",
)
"""scikit-image sample photographs that load offline (no pooch download)."""


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    """sRGB-encoded values in [0, 1] → linear light (IEC 61966-2-1 piecewise curve)."""
    x = np.asarray(x, dtype=np.float32)
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4).astype(np.float32)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    """Linear light in [0, 1] → sRGB-encoded values in [0, 1] (IEC 61966-2-1 piecewise curve)."""
    x = np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0)
    return np.where(x <= 0.0031308, x * 12.92, 1.055 * np.power(x, 1.0 / 2.4) - 0.055).astype(np.float32)


@functools.lru_cache(maxsize=len(PHOTO_NAMES))
def load_photo(name: str) -> np.ndarray:
    """One scikit-image sample photograph as float32 linear-light RGB (H, W, 3); grey photos replicated.

    Cached per process (the files are read from the installed package, never downloaded).
    """
    import skimage.data

    if name not in PHOTO_NAMES:
        raise ValueError(f"unknown photo {name!r}; choose one of {PHOTO_NAMES}")
    arr = np.asarray(getattr(skimage.data, name)())
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = arr[..., :3]
    if arr.dtype == np.uint8:  # sRGB decode through a 256-entry table
        arr = srgb_to_linear(np.arange(256, dtype=np.float32) / 255.0)[arr]
    else:
        arr = srgb_to_linear(np.clip(arr.astype(np.float32), 0.0, 1.0))
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    arr.setflags(write=False)
    return arr


@functools.lru_cache(maxsize=len(PHOTO_NAMES))
def _is_grey(name: str) -> bool:
    """Whether a photograph has identical channels (then it may be tinted)."""
    photo = load_photo(name)
    return bool(np.array_equal(photo[..., 0], photo[..., 1]) and np.array_equal(photo[..., 1], photo[..., 2]))


def _random_colour(rng: np.random.Generator) -> np.ndarray:
    """A random linear-light RGB colour (3,), neither black nor white."""
    hue = rng.uniform(0, 1)
    sat = rng.uniform(0.1, 0.9)
    val = rng.uniform(0.15, 0.95)
    import colorsys

    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val), dtype=np.float32)
    return srgb_to_linear(rgb)


def photo_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A random crop of a random photograph, resized to (h, w), randomly flipped; grey ones tinted."""
    import cv2

    name = PHOTO_NAMES[int(rng.integers(len(PHOTO_NAMES)))]
    photo = load_photo(name)
    ph, pw = photo.shape[:2]
    frac = rng.uniform(0.35, 1.0)
    ch = max(8, int(ph * frac))
    cw = max(8, min(pw, int(ch * w / max(h, 1))))
    ch = min(ch, ph)
    y0 = int(rng.integers(0, ph - ch + 1))
    x0 = int(rng.integers(0, pw - cw + 1))
    crop = np.ascontiguousarray(photo[y0 : y0 + ch, x0 : x0 + cw])
    out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if cw > w else cv2.INTER_LINEAR)
    if rng.uniform() < 0.5:
        out = out[:, ::-1]
    if _is_grey(name) and rng.uniform() < 0.7:
        out = out * (_random_colour(rng) * 0.6 + 0.4)
    return np.ascontiguousarray(np.clip(out, 0.0, 1.0), dtype=np.float32)


def pink_noise_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """1/f^β noise (β ∈ [0.8, 2]) mapped between two random colours."""
    beta = rng.uniform(0.8, 2.0)
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    amp = f ** (-beta / 1.0)
    amp[0, 0] = 0.0
    spec = amp * (rng.standard_normal(amp.shape) + 1j * rng.standard_normal(amp.shape))
    n = np.fft.irfft2(spec, s=(h, w))
    n = (n - n.mean()) / (n.std() + 1e-12)
    t = np.clip(0.5 + 0.25 * n, 0.0, 1.0)[..., None]
    c0, c1 = _random_colour(rng), _random_colour(rng)
    return np.ascontiguousarray((1 - t) * c0 + t * c1, dtype=np.float32)


def stripes_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Straight stripes (sine or square profile) at a random angle and period (4–40 px)."""
    theta = rng.uniform(0, np.pi)
    period = rng.uniform(4.0, 40.0)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    phase = (xx * np.cos(theta) + yy * np.sin(theta)) * (2 * np.pi / period) + rng.uniform(0, 2 * np.pi)
    s = np.sin(phase)
    t = (s > 0).astype(np.float32) if rng.uniform() < 0.5 else 0.5 + 0.5 * s
    t = t[..., None]
    c0, c1 = _random_colour(rng), _random_colour(rng)
    return np.ascontiguousarray((1 - t) * c0 + t * c1, dtype=np.float32)


def checker_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A checkerboard with random cell size (4–32 px) and colours."""
    cell = int(rng.integers(4, 33))
    yy, xx = np.mgrid[0:h, 0:w]
    t = (((yy // cell) + (xx // cell)) % 2).astype(np.float32)[..., None]
    c0, c1 = _random_colour(rng), _random_colour(rng)
    return np.ascontiguousarray((1 - t) * c0 + t * c1, dtype=np.float32)


def text_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Lines of random letters drawn with PIL's built-in bitmap font (a page of text-like marks)."""
    from PIL import Image, ImageDraw

    alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     .,;"
    scale = int(rng.integers(1, 4))
    sh, sw = max(h // scale, 12), max(w // scale, 12)
    im = Image.new("L", (sw, sh), 255)
    draw = ImageDraw.Draw(im)
    line_h = int(rng.integers(10, 16))
    for y in range(int(rng.integers(0, 4)), sh, line_h):
        n = sw // 6 + 1
        line = "".join(alphabet[int(i)] for i in rng.integers(0, len(alphabet), n))
        draw.text((int(rng.integers(-4, 3)), y), line, fill=0)
    t = np.asarray(im.resize((w, h), Image.NEAREST), dtype=np.float32)[..., None] / 255.0
    ink, paper = _random_colour(rng) * 0.3, _random_colour(rng) * 0.4 + 0.5
    return np.ascontiguousarray(t * paper + (1 - t) * ink, dtype=np.float32)


def flat_texture(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A near-textureless patch: one colour, a faint smooth gradient and ≤ 1 % noise (defocus is the only cue)."""
    c = _random_colour(rng)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    grad = 1.0 + rng.uniform(-0.1, 0.1) * (xx / max(w - 1, 1) - 0.5) + rng.uniform(-0.1, 0.1) * (yy / max(h - 1, 1))
    noise = 1.0 + rng.uniform(0.0, 0.01) * rng.standard_normal((h, w)).astype(np.float32)
    return np.ascontiguousarray(np.clip(c * (grad * noise)[..., None], 0.0, 1.0), dtype=np.float32)


TEXTURE_KINDS: dict[str, tuple[float, Callable[[np.random.Generator, int, int], np.ndarray]]] = {
    "photo": (0.45, photo_texture),
    "pink_noise": (0.17, pink_noise_texture),
    "stripes": (0.1, stripes_texture),
    "checker": (0.06, checker_texture),
    "text": (0.1, text_texture),
    "flat": (0.12, flat_texture),
}
"""Texture kinds: name → (sampling probability, generator)."""


def texture(kind: str, rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """A texture of the named kind, float32 linear RGB (h, w, 3)."""
    if kind not in TEXTURE_KINDS:
        raise ValueError(f"unknown texture kind {kind!r}; choose one of {sorted(TEXTURE_KINDS)}")
    return TEXTURE_KINDS[kind][1](rng, h, w)


def random_texture(rng: np.random.Generator, h: int, w: int) -> tuple[str, np.ndarray]:
    """(kind, texture) with the kind drawn by the probabilities in :data:`TEXTURE_KINDS`."""
    names = list(TEXTURE_KINDS)
    p = np.array([TEXTURE_KINDS[n][0] for n in names])
    kind = names[int(rng.choice(len(names), p=p / p.sum()))]
    return kind, texture(kind, rng, h, w)
