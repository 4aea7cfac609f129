"""Blur measurement for the Depth-from-Bokeh Sweep: re-blur the reference with a bank of soft discs and
match each frame locally.

Everything here works in linear light on float32 arrays: images (H, W, C), radii in pixels.

The disc is the renderer's soft disc (:mod:`bokehdepth.render.kernels`, after
shared/reference/renderer.md §2.2), normalised to unit sum. For a fronto-parallel plane the scatter renderer reduces to a *normalised* convolution — each output
pixel is divided by the weight that reached it — so near the image border the re-blur divides by the
convolution of an all-ones image, exactly like the renderer's accumulated-weight normaliser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .errors import InputError

__all__ = [
    "BlurMeasurement",
    "bank_kernels",
    "bank_shape",
    "disc_kernel",
    "measure_blur",
    "radius_grid",
    "reblur",
    "reblur_bank",
    "tracker_init",
    "tracker_step",
]


def disc_kernel(radius: float) -> np.ndarray:
    """The renderer's soft disc of blur radius ``radius`` px as a float64 (2R+1, 2R+1) kernel with sum 1,
    R = ⌊radius + 0.5⌋.

    Evaluates :func:`bokehdepth.render.kernels.edge_weight` (vectorised, same constants): a logistic edge
    ``σ(8·(r − ρ))`` rescaled to be exactly 1 for ρ ≤ r − 1 and exactly 0 for ρ ≥ r + 0.5, so r ≤ 0.5 px is
    the identity.

    >>> k = disc_kernel(3.0); k.shape, round(float(k.sum()), 6)
    ((7, 7), 1.0)
    """
    from .render.kernels import EDGE_SLOPE, PLATEAU, TAIL

    if not np.isfinite(radius) or radius < 0:
        raise InputError(f"disc radius must be finite and >= 0 px, got {radius}")
    half = int(np.floor(radius + TAIL))
    y, x = np.mgrid[-half : half + 1, -half : half + 1]
    t = radius - np.hypot(x, y)
    lo = 1.0 / (1.0 + np.exp(EDGE_SLOPE * TAIL))
    hi = 1.0 / (1.0 + np.exp(-EDGE_SLOPE * PLATEAU))
    w = (1.0 / (1.0 + np.exp(-EDGE_SLOPE * t)) - lo) / (hi - lo)
    w = np.where(t >= PLATEAU, 1.0, np.where(t <= -TAIL, 0.0, w))
    return w / w.sum()


def radius_grid(max_radius: float, step: float = 0.5) -> np.ndarray:
    """Candidate blur radii (px): 0, step, 2·step, … up to ``max_radius`` inclusive, float64.

    Needs ``0 < step <= max_radius / 2``, i.e. at least three candidates: with fewer, every minimum sits at
    the end of the range (no radius is measurable) and the parabola refinement has no neighbours.

    >>> radius_grid(2.0).tolist()
    [0.0, 0.5, 1.0, 1.5, 2.0]
    """
    if not (np.isfinite(max_radius) and max_radius > 0):
        raise InputError(f"--max-radius: must be a finite number > 0 px, got {max_radius}")
    if not (np.isfinite(step) and 0 < step <= max_radius / 2):
        raise InputError(
            f"--step: candidate radius spacing must be > 0 and <= --max-radius/2 = {max_radius / 2:g} px "
            f"(at least 3 candidate radii), got {step}; lower --step or raise --max-radius"
        )
    n = int(np.floor(max_radius / step + 1e-9)) + 1
    return np.arange(n, dtype=np.float64) * step


def _padded_shape(h: int, w: int, pad: int) -> tuple[int, int]:
    from scipy.fft import next_fast_len

    return next_fast_len(h + 2 * pad, real=True), next_fast_len(w + 2 * pad, real=True)


def _kernel_fft(k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of a (2R+1, 2R+1) kernel placed with its centre at the origin (wrap-around), for ``shape``."""
    from scipy.fft import rfft2

    half = k.shape[0] // 2
    full = np.zeros(shape, dtype=np.float32)
    idx = np.arange(-half, half + 1)
    full[np.ix_(idx % shape[0], idx % shape[1])] = k
    return rfft2(full, workers=-1)


def border_normaliser(kernel: np.ndarray, h: int, w: int) -> np.ndarray:
    """Weight of ``kernel`` (2R+1, 2R+1) that lands inside an (h, w) image around each pixel, float32 (h, w):
    the zero-padded convolution of an all-ones image (1 in the interior). The kernel offsets that stay
    inside the image form a rectangle of the kernel, so this is one rectangle sum per pixel from the
    kernel's 2-D prefix sums (four gathers, no convolution)."""
    n = kernel.shape[0]
    R = n // 2
    P = np.zeros((n + 1, n + 1), dtype=np.float64)
    P[1:, 1:] = np.cumsum(np.cumsum(kernel[::-1, ::-1], axis=0), axis=1)

    def bounds(size: int) -> tuple[np.ndarray, np.ndarray]:
        # offsets j (kernel index) with 0 <= p + j - R < size  →  j in [max(0, R - p), min(n, size + R - p))
        p = np.arange(size)
        return np.clip(R - p, 0, n), np.clip(size + R - p, 0, n)

    y0, y1 = bounds(h)
    x0, x1 = bounds(w)
    rows = np.flatnonzero((y0 > 0) | (y1 < n))  # rows whose kernel is cut vertically (near top/bottom)
    full = (P[n, x1] - P[0, x1] - P[n, x0] + P[0, x0]).astype(np.float32)  # every other row
    out = np.broadcast_to(full, (h, w)).copy()
    a, b = y0[rows][:, None], y1[rows][:, None]
    out[rows] = P[b, x1[None, :]] - P[a, x1[None, :]] - P[b, x0[None, :]] + P[a, x0[None, :]]
    return out


def bank_shape(h: int, w: int, radii: np.ndarray) -> tuple[int, int]:
    """FFT size (rows, cols) of the disc bank for an (h, w) image: zero padding by the largest radius + 2 px
    (no wrap-around), rounded up to a fast length."""
    return _padded_shape(h, w, int(np.ceil(float(np.max(radii)))) + 2)


def bank_kernels(radii: np.ndarray, shape: tuple[int, int], h: int, w: int):
    """The disc bank, backend-neutral: yields ``(k, kernel_fft, normaliser)`` per candidate radius, with
    ``kernel_fft`` the complex64 rfft2 (``shape``) of the soft disc of radius ``radii[k]`` centred at the
    origin and ``normaliser`` the float32 (h, w) :func:`border_normaliser` clamped to ≥ 1e-8.

    The re-blur of an image with spectrum ``S`` (C, *shape) is then
    ``max(irfft2(S · kernel_fft)[:, :h, :w] / normaliser, 0)``, in numpy (:func:`reblur_bank`) or torch
    (:mod:`bokehdepth.sweep_torch`) alike."""
    for k, r in enumerate(radii):
        kernel = disc_kernel(float(r))
        yield k, _kernel_fft(kernel, shape), np.maximum(border_normaliser(kernel, h, w), 1e-8)


def _reblur_bank_cf(image_lin: np.ndarray, radii: np.ndarray):
    """Channel-first core of :func:`reblur_bank`: yields ``(k, blurred (C, H, W) float32)``."""
    from scipy.fft import irfft2, rfft2

    image_lin = np.asarray(image_lin, dtype=np.float32)
    h, w, c = image_lin.shape
    shape = bank_shape(h, w, radii)
    buf = np.zeros((c, *shape), dtype=np.float32)
    buf[:, :h, :w] = np.moveaxis(image_lin, -1, 0)
    spec = rfft2(buf, workers=-1)
    for k, kf, norm in bank_kernels(radii, shape, h, w):
        blurred = irfft2(spec * kf[None], s=shape, workers=-1)[:, :h, :w] / norm[None]
        yield k, np.maximum(blurred, 0.0, out=blurred).astype(np.float32, copy=False)


def reblur_bank(image_lin: np.ndarray, radii: np.ndarray):
    """Yield ``(k, blurred)`` for each candidate radius: ``image_lin`` (H, W, C) linear light re-blurred by the
    soft disc of radius ``radii[k]`` px with border normalisation, float32 (H, W, C).

    One forward FFT of the zero-padded image, then one product and one inverse FFT per radius (scipy.fft,
    all cores); the border normaliser comes from :func:`border_normaliser`."""
    for k, blurred in _reblur_bank_cf(image_lin, radii):
        yield k, np.moveaxis(blurred, 0, -1)


def reblur(image_lin: np.ndarray, radius: float) -> np.ndarray:
    """``image_lin`` (H, W, C) re-blurred by one soft disc of ``radius`` px (border-normalised), float32."""
    return next(reblur_bank(image_lin, np.array([float(radius)])))[1]


def box_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Mean over a ``window``×``window`` box (border reflected without repeating the edge pixel, as torch's
    ``reflect`` padding), float32 (H, W)."""
    import cv2

    return cv2.blur(np.asarray(x, dtype=np.float32), (window, window), borderType=cv2.BORDER_REFLECT_101)


@dataclass
class BlurMeasurement:
    """Per-frame, per-pixel blur radii of the frames relative to the reference.

    Attributes:
        radius: (M, H, W) float32 px, sub-pixel radius of the disc that best turns the reference into frame m.
        valid: (M, H, W) bool, False where the best radius sits at the top of the candidate range (clipped).
        curvature: (M, H, W) float32, second difference of the matching cost at the minimum divided by the
            mean cost (how sharply the radius is determined; ~0 on textureless pixels).
        cost: (M, R, H, W) float32 matching-cost volume (windowed mean of the squared difference summed
            over channels, linear light) or None when not kept.
        radii: (R,) candidate radii in px.
    """

    radius: np.ndarray
    valid: np.ndarray
    curvature: np.ndarray
    cost: np.ndarray | None
    radii: np.ndarray


def tracker_step(k: int, cost, state: dict, where) -> dict:
    """One step of the streaming arg-min over candidate radii, for any array library.

    The specification of :func:`bokehdepth.sweep_numba.tracker_push` (the fused numpy-path kernel, tested
    equal to this): with ``cost`` the cost of candidate ``k`` (pushed in order 0, 1, 2, …), the state arrays
    ``best`` (least cost so far), ``k`` (its index, int32), ``left`` / ``right`` (the costs at ``k − 1`` /
    ``k + 1``, each the minimum's own cost where that neighbour is not (yet) sampled), ``total`` (running
    sum, float64) and ``prev`` (the cost at ``k − 1``) become those after candidate ``k``. Ties keep the
    first minimum (strict ``<``).

    Args:
        k: candidate index.
        cost: cost of candidate ``k``, any shape (numpy array or torch tensor).
        state: dict of arrays of ``cost``'s shape and backend (see :func:`tracker_init`).
        where: ``np.where`` or ``torch.where``.
    Returns:
        the new state (the input dict is not modified).
    """
    kbest, right = state["k"], state["right"]
    if k > 0:
        right = where(kbest == k - 1, cost, right)
    better = cost < state["best"]
    return {
        "best": where(better, cost, state["best"]),
        "k": where(better, kbest * 0 + k, kbest),
        "left": where(better, state["prev"] if k > 0 else cost, state["left"]),
        "right": where(better, cost, right),
        "total": state["total"] + cost,
        "prev": cost,
    }


def tracker_init(shape: tuple[int, ...]) -> dict:
    """Empty numpy state for :func:`tracker_step` / :class:`_MinTracker` (``best`` = +inf, the rest 0)."""
    return {
        "best": np.full(shape, np.inf, dtype=np.float32),
        "k": np.zeros(shape, dtype=np.int32),
        "left": np.zeros(shape, dtype=np.float32),
        "right": np.zeros(shape, dtype=np.float32),
        "total": np.zeros(shape, dtype=np.float64),
        "prev": np.zeros(shape, dtype=np.float32),
    }


class _MinTracker:
    """Streaming argmin of cost curves sampled at uniform radii, keeping the two neighbours of the minimum
    for a parabola fit, so the (R, H, W) volume need not be stored. ``push`` runs the fused numba kernel
    (:func:`bokehdepth.sweep_numba.tracker_push`, the array form is :func:`tracker_step`); ``result`` turns
    a final state of either into radii."""

    def __init__(self, shape: tuple[int, int]):
        st = tracker_init(shape)
        self.best, self.k, self.left, self.right, self.total, self.prev = (
            st[n] for n in ("best", "k", "left", "right", "total", "prev")
        )
        self.n = 0

    @classmethod
    def from_state(cls, state: dict, n: int) -> _MinTracker:
        """A tracker holding a finished :func:`tracker_step` state (numpy arrays) after ``n`` candidates."""
        t = cls.__new__(cls)
        t.best, t.k, t.left, t.right, t.total, t.prev = (
            np.asarray(state[n_]) for n_ in ("best", "k", "left", "right", "total", "prev")
        )
        t.k = t.k.astype(np.int32, copy=False)
        t.n = n
        return t

    def push(self, k: int, cost: np.ndarray) -> None:
        """Add the cost (H, W) of candidate ``k`` (pushed in order 0, 1, 2, …)."""
        from .sweep_numba import tracker_push

        tracker_push(k, cost, self.prev, self.best, self.k, self.left, self.right, self.total)
        self.n += 1

    def result(self, radii: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(radius px, valid = minimum not at the last sample, curvature = 2nd difference / mean cost)."""
        R = len(radii)
        step = float(radii[1] - radii[0]) if R > 1 else 1.0
        c0, c1, c2 = self.left, self.best, self.right
        at_end = self.k == R - 1
        c0 = np.where(self.k == 0, c2, c0)  # mirror at r = 0 (the cost is even in r there)
        c2 = np.where(at_end, c0, c2)
        denom = c0 - 2.0 * c1 + c2
        with np.errstate(divide="ignore", invalid="ignore"):
            offset = np.where(denom > 0, 0.5 * (c0 - c2) / denom, 0.0)
        pos = np.clip(self.k + np.clip(offset, -0.5, 0.5), 0, R - 1)
        radius = (radii[0] + step * pos).astype(np.float32)
        curvature = (np.maximum(denom, 0.0) / np.maximum(self.total / max(self.n, 1), 1e-12)).astype(np.float32)
        return radius, ~at_end, curvature


def measure_blur(
    reference_lin: np.ndarray,
    frames_lin: list[np.ndarray],
    *,
    max_radius: float = 24.0,
    step: float = 0.5,
    window: int = 15,
    keep_cost: bool = False,
    progress: bool = False,
) -> BlurMeasurement:
    """Blur radius (px) of each frame relative to the reference, per pixel.

    Args:
        reference_lin: (H, W, C) sharp reference in linear light.
        frames_lin: M frames (H, W, C) in linear light.
        max_radius: largest candidate radius in px.
        step: spacing of candidate radii in px (sub-pixel values come from a parabola fit).
        window: side of the square matching window in px (odd).
        keep_cost: keep the full cost volume (needed for focus brackets and plots).
    """
    if window < 1 or window % 2 == 0:
        raise InputError(f"--window: must be an odd number of pixels >= 1, got {window}")
    from tqdm.auto import tqdm

    radii = radius_grid(max_radius, step)
    h, w = reference_lin.shape[:2]
    trackers = [_MinTracker((h, w)) for _ in frames_lin]
    vol = np.empty((len(frames_lin), len(radii), h, w), dtype=np.float32) if keep_cost else None
    from .sweep_numba import sq_diff_sum

    frames_cf = [np.ascontiguousarray(np.moveaxis(f, -1, 0), dtype=np.float32) for f in frames_lin]
    sq = np.empty((h, w), dtype=np.float32)
    bank = _reblur_bank_cf(reference_lin, radii)
    for k, blurred in tqdm(bank, total=len(radii), desc="sweep: disc bank", disable=not progress, leave=False):
        for m, frame in enumerate(frames_cf):
            sq_diff_sum(blurred, frame, sq)
            cost = box_mean(sq, window)
            trackers[m].push(k, cost)
            if vol is not None:
                vol[m, k] = cost
    radius, valid, curv = (np.stack(x) for x in zip(*(t.result(radii) for t in trackers)))
    return BlurMeasurement(radius, valid, curv, vol, radii)
