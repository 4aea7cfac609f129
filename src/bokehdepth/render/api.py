"""Public renderer API: input checks, focus, gamma, highlights, backend dispatch, stacks.

``render(image, disp, K, disp_focus)`` spreads every source pixel over a soft-edged disc of radius
``r = K·|disp − disp_focus|`` px (kernel: :mod:`.kernels`), in linear light (``image ** gamma``), normalised
by the accumulated weight, with occlusion handled by depth slabs composited front to back
(:mod:`.layers`), and returns ``result ** (1/gamma)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from ..errors import InputError
from ..io import Stack, validate_depth, validate_image
from .kernels import TAIL
from .layers import assign_layers

__all__ = [
    "BACKENDS",
    "DEFAULT_GAMMA",
    "defocus_map",
    "render",
    "render_stack",
    "resolve_focus",
]

Backend = Literal["auto", "cpu", "torch", "exact"]
BACKENDS = ("auto", "cpu", "torch", "exact")

DEFAULT_GAMMA = 2.2
"""Linear-light exponent: BokehDepth renders its synthetic stacks with BokehMe at γ = 2.2 (MPIB / Dr.Bokeh
demos use 2.2 too; BokehMe's own demo default is 4)."""

HIGHLIGHT_THRESHOLD = 220.0 / 255.0
"""Display value above which an out-of-focus pixel is boosted (BokehMe)."""
HIGHLIGHT_RATIO = 0.4
"""Maximum relative boost of a highlight (BokehMe)."""


def _to_numpy(x: Any) -> tuple[np.ndarray, Any]:
    """Return ``(array, torch_device_or_None)``; torch tensors are moved to the host."""
    if hasattr(x, "detach") and hasattr(x, "device"):
        return x.detach().float().cpu().numpy(), x.device
    return np.asarray(x), None


def _check_scalar(value: Any, name: str, flag: str, unit: str, allow_zero: bool = True) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} ({flag}): expected a number in {unit}, got {value!r}") from exc
    if not math.isfinite(v) or v < 0 or (v == 0 and not allow_zero):
        need = ">= 0" if allow_zero else "> 0"
        raise InputError(f"{name} ({flag}): must be finite and {need} {unit}, got {value!r}")
    return v


def resolve_focus(
    disp: np.ndarray,
    disp_focus: float | None = None,
    focus_m: float | None = None,
    focus_xy: tuple[int, int] | None = None,
    window: int = 5,
) -> float:
    """The focus disparity in 1/m from exactly one of: ``disp_focus`` (1/m), ``focus_m`` (m), or ``focus_xy``
    (a pixel (x, y): the median disparity of a ``window``×``window`` patch around it)."""
    given = [k for k, v in (("disp_focus", disp_focus), ("focus_m", focus_m), ("focus_xy", focus_xy)) if v is not None]
    if len(given) != 1:
        raise InputError(
            "focus: give exactly one of disp_focus (--focus-disp, 1/m), focus_m (--focus-m, m) or "
            f"focus_xy (--focus-xy X,Y); got {given or 'none'}"
        )
    if disp_focus is not None:
        return _check_scalar(disp_focus, "disp_focus", "--focus-disp", "1/m")
    if focus_m is not None:
        return 1.0 / _check_scalar(focus_m, "focus_m", "--focus-m", "m", allow_zero=False)
    try:
        x, y = (int(round(float(v))) for v in focus_xy)  # type: ignore[union-attr]
    except (TypeError, ValueError) as exc:
        raise InputError(f"focus_xy (--focus-xy): expected a pixel X,Y, got {focus_xy!r}") from exc
    h, w = disp.shape
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"focus_xy (--focus-xy): pixel ({x}, {y}) is outside the {w}x{h} image")
    half = window // 2
    patch = disp[max(y - half, 0) : y + half + 1, max(x - half, 0) : x + half + 1]
    return float(np.median(patch))


def defocus_map(disp: np.ndarray, K: float, disp_focus: float) -> np.ndarray:
    """Signed defocus ``d = K·(disp − disp_focus)`` px, float64 (H, W); positive = nearer than focus,
    blur radius ``|d|``."""
    return float(K) * (np.asarray(disp, dtype=np.float64) - float(disp_focus))


def _highlight_boost(image: np.ndarray, radius: np.ndarray) -> np.ndarray:
    """BokehMe's highlight boost (renderer.md §2.3), before gamma: ``I·(1 + 0.4·m1·m2)`` with
    ``m2 = clip(tanh(10·(I − 220/255)), 0, 1)`` per channel and the out-of-focus mask
    ``m1 = clip(tanh(4·(r − 1)), 0, 1)`` (BokehMe tests |Δ normalised disparity| > 0.1; here: blur > 1 px)."""
    m1 = np.clip(np.tanh(4.0 * (radius - 1.0)), 0.0, 1.0)[..., None]
    m2 = np.clip(np.tanh(10.0 * (image - HIGHLIGHT_THRESHOLD)), 0.0, 1.0)
    return image * (1.0 + HIGHLIGHT_RATIO * m1 * m2)


def _render_linear(lin, radius, split, backend: str, device: Any, multiscale: bool = False):
    if backend == "cpu":
        from .cpu import render_linear

        return render_linear(lin, radius, split, multiscale=multiscale)
    if backend == "exact":
        from .reference import render_linear

        return render_linear(lin, radius, split)
    from .cuda import render_linear

    return render_linear(lin, radius, split, device=device)


def _pick_backend(backend: str, device: Any) -> tuple[str, Any]:
    if backend not in BACKENDS:
        raise InputError(f"backend (--backend): unknown backend {backend!r}; use one of cpu, torch, exact, auto")
    on_cuda = device is not None and getattr(device, "type", "cpu") == "cuda"
    if backend == "auto":
        return ("torch", device) if on_cuda else ("cpu", None)
    if backend == "torch" and device is None:
        import torch

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return backend, device


def render(
    image: Any,
    disp: Any,
    K: float,
    disp_focus: float | None = None,
    *,
    focus_m: float | None = None,
    focus_xy: tuple[int, int] | None = None,
    gamma: float = DEFAULT_GAMMA,
    occlusion: bool = True,
    backend: Backend = "auto",
    highlight: bool = False,
    layer_step: float = 1.0,
    max_layers: int = 32,
    multiscale: bool = True,
) -> np.ndarray:
    """Render defocus blur (bokeh) from an all-in-focus image and its disparity.

    Args:
        image: (H, W, 3) float RGB in [0, 1] (display values; numpy array or torch tensor).
        disp: (H, W) disparity = 1/depth in 1/m, finite and ≥ 0.
        K: blur strength in px·m at this image width: blur radius ``r = K·|disp − disp_focus|`` px.
        disp_focus: focus disparity in 1/m; or give ``focus_m`` (metres) or ``focus_xy`` ((x, y) pixel whose
            disparity is put in focus) instead: exactly one of the three.
        gamma: linear-light exponent; the scatter runs on ``image ** gamma``.
        occlusion: True → depth-slab compositing (a sharp foreground stays sharp); False → plain
            scatter-and-normalise.
        backend: ``"cpu"`` (numba), ``"torch"`` (CUDA if available, else CPU), ``"exact"`` (direct O(N·r²)
            scatter) or ``"auto"`` (torch for CUDA tensors, else cpu).
        highlight: boost bright out-of-focus pixels before rendering (BokehMe's highlight trick).
        layer_step: smallest spacing of the occlusion slabs, px of blur radius.
        max_layers: most occlusion slabs; the spacing widens for large defocus ranges.
        multiscale: cpu backend only: render slabs blurred by more than ~6 px at 1/2 … 1/8 resolution and
            upsample them (several times faster at large radii, ≥ 40 dB from the exact scatter); False =
            full resolution everywhere (matches the exact backend to rounding). Ignored by other backends.

    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    from . import pixel_kernels as pk

    image_np, device = _to_numpy(image)
    disp_np, _ = _to_numpy(disp)
    K = _check_scalar(K, "K", "--K", "px·m")
    gamma = _check_scalar(gamma, "gamma", "--gamma", "(exponent)", allow_zero=False)
    img, lin = _encode_image(image_np, gamma)
    dmap = _checked_disp(disp_np, img.shape)
    focus = resolve_focus(dmap, disp_focus, focus_m, focus_xy)
    backend, device = _pick_backend(backend, device)

    d, radius = np.empty(dmap.shape), np.empty(dmap.shape)
    r_max = pk.defocus(dmap, K, focus, d, radius)
    if radius.size == 0 or r_max <= TAIL:  # every pixel in focus: exact identity
        return np.clip(img, 0.0, 1.0)
    src = img
    if highlight:
        src = _highlight_boost(np.clip(img, 0.0, 1.0), radius).astype(np.float32)
        pk.encode(src, gamma, False, lin)
    split = assign_layers(d, occlusion=occlusion, step=layer_step, max_layers=max_layers)
    out, _ = _render_linear(lin, radius, split, backend, device, multiscale)
    result = np.empty(img.shape, dtype=np.float32)
    pk.decode(out, lin, src, gamma, result)
    return result


def _encode_image(image: np.ndarray, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """Check an (H, W, 3) image in [0, 1] and gamma-encode it in one pass: ``(float32 image, float32
    clip(image, 0, 1) ** gamma)``. Errors are raised with :func:`bokehdepth.io.validate_image`'s messages."""
    from .pixel_kernels import encode

    if image.ndim != 3 or image.shape[2] != 3:
        validate_image(image, "image")  # raises: wrong shape
    img = np.ascontiguousarray(image, dtype=np.float32)
    lin = np.empty(img.shape, dtype=np.float32)
    lo, hi, n_bad = encode(img, gamma, True, lin)
    if n_bad:
        validate_image(img, "image")  # raises: NaN or inf
    if lo < -1e-6 or hi > 1 + 1e-6:
        raise InputError(f"image: values must lie in [0, 1], found {lo:.4g}..{hi:.4g}; divide by 255 or clip")
    return img, lin


def _checked_disp(disp: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The (H, W) disparity map (1/m) as contiguous float32, checked (shape as the image's, finite, ≥ 0) in
    one pass; errors are raised with :func:`bokehdepth.io.validate_depth`'s messages."""
    from .pixel_kernels import disp_ok

    if disp.ndim != 2 or tuple(disp.shape) != tuple(shape[:2]):
        validate_depth(disp, "disp", kind="disp", shape=shape[:2])  # raises: wrong shape
    dmap = np.ascontiguousarray(disp, dtype=np.float32)
    if not disp_ok(dmap):
        return validate_depth(dmap, "disp", kind="disp", shape=shape[:2])  # raises: NaN, inf or < 0
    return dmap


def render_stack(
    image: Any,
    disp: Any,
    Ks: Sequence[float],
    disp_focus: float | None = None,
    *,
    focus_m: float | None = None,
    focus_xy: tuple[int, int] | None = None,
    gamma: float = DEFAULT_GAMMA,
    occlusion: bool = True,
    backend: Backend = "auto",
    highlight: bool = False,
    progress: bool = False,
    lens: Any = None,
    multiscale: bool = True,
) -> Stack:
    """Render a bokeh stack: frame 0 is the sharp input (K = 0), then one frame per K (px·m).

    Arguments as :func:`render`; ``lens`` (optional camera settings, per frame or one dict) is stored in the
    stack's metadata. Returns a metric :class:`bokehdepth.io.Stack` (``source="render"``) for
    :func:`bokehdepth.io.write_stack`.
    """
    if isinstance(Ks, (int, float)) or not len(Ks):
        raise InputError(f"Ks (--K): give a list of one or more K values in px·m, got {Ks!r}")
    Ks = [_check_scalar(k, "K", "--K", "px·m") for k in Ks]
    image_np, device = _to_numpy(image)
    disp_np, _ = _to_numpy(disp)
    img = validate_image(image_np, "image")
    dmap = validate_depth(disp_np, "disp", kind="disp", shape=img.shape[:2])
    focus = resolve_focus(dmap, disp_focus, focus_m, focus_xy)
    source: Any = img
    if device is not None:  # keep the caller's device (a CUDA tensor selects the torch backend under "auto")
        import torch

        source = torch.as_tensor(img, device=device)
    frames = [np.clip(img, 0.0, 1.0).copy()]
    from tqdm.auto import tqdm

    for k in tqdm(Ks, desc="render stack", unit="frame", disable=not progress):
        frames.append(
            render(
                source,
                dmap,
                k,
                focus,
                gamma=gamma,
                occlusion=occlusion,
                backend=backend,
                highlight=highlight,
                multiscale=multiscale,
            )
        )
    return Stack(
        frames=frames,
        K=[0.0, *Ks],
        disp_focus=focus,
        reference=0,
        gamma=float(gamma),
        lens=lens,
        source="render",
        K_convention="metric",
    )
