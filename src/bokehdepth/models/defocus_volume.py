"""A defocus cost volume: how well each stack frame is explained by re-blurring the sharp reference.

For a calibrated stack the blur radius of a pixel in frame ``i`` is ``r = K_i·|Δ|`` px with
``Δ = disp − disp_focus`` (1/m). For each candidate offset ``δ_j`` (1/m) the reference is blurred with a disc
of radius ``K_i·δ_j`` in linear light and compared with frame ``i``; the absolute differences, averaged over
colour and a small window and summed over frames, form a cost per (pixel, candidate) whose minimum sits at
the pixel's true ``|Δ|`` wherever there is texture. This is the classical depth-from-defocus cue (the same
forward model the sweep regresses, :mod:`bokehdepth.sweep`) handed to a network as features: it ignores
occlusion at depth edges and is flat where the reference has no texture, which the network learns to
handle.

Discs are applied as FFT products (:func:`fft_disc_blur`, shared with the compact generator's blur pyramid)
on a mirror-padded image, so the cost of a candidate does not grow with its radius. Everything here is a
pure function of its inputs (no parameters, no gradients needed).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

__all__ = [
    "DiscEdge",
    "candidate_offsets",
    "defocus_cost_volume",
    "disc_edge_weight",
    "disc_kernel_spectra",
    "fft_disc_blur",
    "mirror_pad",
]


def candidate_offsets(n: int, max_offset: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """``n`` candidate unsigned offsets ``|Δ|`` in 1/m from 0 to ``max_offset``, quadratically spaced: denser
    near 0, i.e. near the focus plane (wherever it is), where a small offset is a small blur and the cost is
    most discriminative."""
    t = torch.linspace(0.0, 1.0, n, device=device, dtype=dtype)
    return max_offset * t * t


DiscEdge = Literal["logistic", "clip"]
"""Disc edge profiles, as a function of ``t = radius − distance`` (px):

- ``"logistic"``: the renderer's own soft edge (:mod:`bokehdepth.render.kernels`: 1 on the plateau
  ``t ≥ 1``, 0 from ``t ≤ −0.5``, so ``r ≤ 0.5`` is the identity); the cost volume's forward model.
- ``"clip"``: ``clip(t + 0.5, 0, 1)``, area ≈ π·r² (:func:`bokehdepth.models.compact_generator.disc_kernel`);
  the compact generator's blur pyramid, which its trained weights depend on.
"""


def disc_edge_weight(radius: torch.Tensor | float, dist: torch.Tensor, edge: DiscEdge) -> torch.Tensor:
    """Unnormalised weight of a disc of ``radius`` px at ``dist`` px from its centre, edge profile ``edge``."""
    if edge == "clip":
        return (radius + 0.5 - dist).clamp(0.0, 1.0)  # this exact arithmetic: the generator's weights use it
    if edge == "logistic":
        from ..render.kernels import EDGE_LO, EDGE_SLOPE, EDGE_SPAN, PLATEAU, TAIL  # numba: only when used

        t = radius - dist
        k = ((torch.sigmoid(EDGE_SLOPE * t) - EDGE_LO) / EDGE_SPAN).clamp(0.0, 1.0)
        return torch.where(t >= PLATEAU, 1.0, torch.where(t <= -TAIL, 0.0, k))
    raise ValueError(f"disc edge must be 'logistic' or 'clip', got {edge!r}")


def _wrapped_offsets(n: int, device, dtype) -> torch.Tensor:
    """Integer pixel offsets of an n-long FFT axis: 0, 1, …, n//2 then −(n − n//2 − 1), …, −1 (exact)."""
    i = torch.arange(n, device=device)
    return torch.where(i <= n // 2, i, i - n).to(dtype)


def disc_kernel_spectra(radius: torch.Tensor, size: tuple[int, int], edge: DiscEdge = "logistic") -> torch.Tensor:
    """Real FFT spectra of centred, normalised discs.

    Args:
        radius: [...] disc radii in px.
        size: (H, W) of the (padded) image the kernels will be applied to.
        edge: the disc's edge profile (:data:`DiscEdge`; default: the renderer's logistic soft edge, for which
            a radius ≤ 0.5 is the identity).

    Returns:
        [..., H, W//2 + 1] complex spectra (kernel origin at pixel (0, 0), wrapped).
    """
    h, w = size
    dev, dt = radius.device, radius.dtype
    yy, xx = _wrapped_offsets(h, dev, dt), _wrapped_offsets(w, dev, dt)
    dist = torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    k = disc_edge_weight(radius[..., None, None], dist, edge)
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    return torch.fft.rfft2(k)


@functools.lru_cache(maxsize=16)
def _cached_spectra(
    radii: tuple[float, ...], size: tuple[int, int], edge: DiscEdge, device: str, dtype: torch.dtype
) -> torch.Tensor:
    """Memoised :func:`disc_kernel_spectra` for a fixed set of radii (the generator's pyramid calls it with a
    handful of sizes). Built outside inference mode: a cached inference tensor could not take part in a later
    backward pass."""
    with torch.inference_mode(False), torch.no_grad():
        return disc_kernel_spectra(torch.tensor(radii, device=device, dtype=dtype), size, edge)


def mirror_pad(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Pad the last two axes by ``pad`` px with mirror reflection (edge pixel not repeated), to any width.

    Equal to ``F.pad(x, (pad,) * 4, mode="reflect")`` where that works (``pad`` < H and W); beyond, the
    reflection is repeated (the image tiled mirrored, period 2·(n − 1)), so a constant image stays constant
    and the extension keeps the image's texture statistics however wide the pad. A 1-px axis is replicated.
    """
    h, w = x.shape[-2:]
    if pad < h and pad < w:
        return F.pad(x, (pad, pad, pad, pad), mode="reflect")

    def index(n: int) -> torch.Tensor:
        i = torch.arange(-pad, n + pad, device=x.device)
        if n == 1:
            return torch.zeros_like(i)
        m = i.remainder(2 * (n - 1))
        return torch.where(m >= n, 2 * (n - 1) - m, m)

    return x.index_select(-2, index(h)).index_select(-1, index(w))


def fft_disc_blur(
    image: torch.Tensor, radii: torch.Tensor | Sequence[float], edge: DiscEdge = "logistic"
) -> torch.Tensor:
    """Convolve an image with discs of several radii by FFT: mirror-pad (:func:`mirror_pad`) by the widest
    disc's reach, zero-extend to fast FFT lengths, multiply by the centred kernels' spectra, crop.

    The result is the exact linear convolution with the mirror-extended image: the kernels' support (distance
    < r + 0.5) never reaches past the padding, so the FFT's wrap-around never reaches the cropped centre.
    Differentiable in ``image`` (the kernels are constants).

    Args:
        image: (B, C, H, W), in linear light.
        radii: disc radii in px: a sequence of L floats shared by the batch (its spectra are memoised), or a
            [B, L] tensor with radii per sample.
        edge: the disc's edge profile (:data:`DiscEdge`).

    Returns:
        (B, L, C, H, W): one blurred copy per radius, in ``image``'s dtype (computed in float32 at least).
    """
    from scipy.fft import next_fast_len

    b, c, h, w = image.shape
    work = image if image.dtype == torch.float64 else image.float()
    shared = not isinstance(radii, torch.Tensor)
    r = torch.as_tensor(radii, dtype=work.dtype, device=image.device)
    if (shared and r.ndim != 1) or (not shared and (r.ndim != 2 or r.shape[0] != b)):
        raise ValueError(f"fft_disc_blur: radii must be a sequence [L] or a tensor [B={b}, L], got {tuple(r.shape)}")
    r = r.clamp(min=0.0)
    pad = int(torch.ceil(r.max()).item()) + 1 if r.numel() else 1
    ph, pw = next_fast_len(h + 2 * pad, True), next_fast_len(w + 2 * pad, True)
    padded = mirror_pad(work, pad)
    spec = torch.fft.rfft2(padded, s=(ph, pw))  # zero-extended to (ph, pw): (B, C, ph, pw//2+1)
    if shared:
        kernels = _cached_spectra(tuple(r.tolist()), (ph, pw), edge, str(image.device), work.dtype)[None]
    else:
        unique, inverse = torch.unique(r, return_inverse=True)  # a batch usually shares its radii
        kernels = disc_kernel_spectra(unique, (ph, pw), edge)[inverse]  # (B, L, ph, pw//2+1)
    out = torch.fft.irfft2(spec[:, None] * kernels[:, :, None], s=(ph, pw))  # (B, L, C, ph, pw)
    return out[..., pad : pad + h, pad : pad + w].to(image.dtype)


@torch.no_grad()
def defocus_cost_volume(
    ref: torch.Tensor,
    stack: torch.Tensor,
    K_px: torch.Tensor,
    offsets: torch.Tensor,
    gamma: float | torch.Tensor = 2.2,
    window: int = 7,
) -> torch.Tensor:
    """Per-pixel cost of each candidate offset.

    Args:
        ref: [B, C, H, W] sharp reference, gamma-encoded in [0, 1] (C = 3, or 1 for a grey cost).
        stack: [B, N, C, H, W] defocused frames, same encoding.
        K_px: [B, N] blur per unit offset for each frame, px per 1/m at this image width (radius = K·δ px).
        offsets: [J] candidate ``|Δ|`` in 1/m (see :func:`candidate_offsets`).
        gamma: the frames' encoding gamma (blur happens in linear light, as the renderer does): a number, or
            a [B] tensor with one gamma per sample (a batch may mix stacks rendered with different gammas).
        window: side of the box window (px) the per-pixel differences are averaged over.

    Returns:
        [B, J, H, W] cost: the window-averaged mean absolute difference between each frame and the re-blurred
        reference, summed over frames (linear light, same units as the image).
    """
    b, n, _, h, w = stack.shape
    g = torch.as_tensor(gamma, dtype=ref.dtype, device=ref.device)
    if g.numel() not in (1, b) or not bool((g > 0).all()):
        raise ValueError(f"defocus_cost_volume: gamma must be > 0, a number or one per sample ({b}), got {gamma}")
    g = g.reshape(-1, 1, 1, 1)
    lin_ref = ref.clamp(0, 1) ** g
    lin_stack = stack.clamp(0, 1) ** g[:, None]
    radii = (K_px.to(ref.dtype)[:, :, None] * offsets.to(ref.dtype)[None, None, :]).clamp(min=0.0)  # [B, N, J]
    cost = ref.new_zeros(b, offsets.numel(), h, w)
    for i in range(n):
        blurred = fft_disc_blur(lin_ref, radii[:, i], edge="logistic")  # [B, J, C, H, W]
        cost += (blurred - lin_stack[:, i, None]).abs().mean(2)
    return F.avg_pool2d(cost, window, stride=1, padding=window // 2, count_include_pad=False)
