"""A defocus cost volume: how well each stack frame is explained by re-blurring the sharp reference.

For a calibrated stack the blur radius of a pixel in frame ``i`` is ``r = K_i·|Δ|`` px with
``Δ = disp − disp_focus`` (1/m). For each candidate offset ``δ_j`` (1/m) the reference is blurred with a disc
of radius ``K_i·δ_j`` in linear light and compared with frame ``i``; the absolute differences, averaged over
colour and a small window and summed over frames, form a cost per (pixel, candidate) whose minimum sits at
the pixel's true ``|Δ|`` wherever there is texture. This is the classical depth-from-defocus cue (the same
forward model the sweep regresses, :mod:`bokehdepth.sweep`) handed to a network as features: it ignores
occlusion at depth edges and is flat where the reference has no texture, which the network learns to
handle.

Discs are applied as FFT products on a reflect-padded image, so the cost of a candidate does not grow with
its radius. Everything here is a pure function of its inputs (no parameters, no gradients needed).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["candidate_offsets", "defocus_cost_volume", "disc_kernel_spectra"]


def candidate_offsets(n: int, max_offset: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """``n`` candidate unsigned offsets ``|Δ|`` in 1/m from 0 to ``max_offset``, quadratically spaced (denser
    near 0, where far surfaces sit and a small offset is a small blur)."""
    t = torch.linspace(0.0, 1.0, n, device=device, dtype=dtype)
    return max_offset * t * t


def disc_kernel_spectra(radius: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Real FFT spectra of centred, normalised soft-edged discs.

    Args:
        radius: [...] disc radii in px; the renderer's own soft edge (:mod:`bokehdepth.render.kernels`:
            logistic, 1 on the plateau ``dist ≤ r − 1``, 0 from ``dist ≥ r + 0.5``, so ``r ≤ 0.5`` is the
            identity).
        size: (H, W) of the (padded) image the kernels will be applied to.

    Returns:
        [..., H, W//2 + 1] complex spectra (kernel origin at pixel (0, 0), wrapped).
    """
    from ..render.kernels import EDGE_LO, EDGE_SLOPE, EDGE_SPAN, PLATEAU, TAIL  # numba: only when a volume is built

    h, w = size
    dev, dt = radius.device, radius.dtype
    yy = torch.fft.fftfreq(h, 1.0 / h, device=dev, dtype=dt)  # 0, 1, …, −1 : wrapped offsets
    xx = torch.fft.fftfreq(w, 1.0 / w, device=dev, dtype=dt)
    dist = torch.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    t = radius[..., None, None] - dist
    k = ((torch.sigmoid(EDGE_SLOPE * t) - EDGE_LO) / EDGE_SPAN).clamp(0.0, 1.0)
    k = torch.where(t >= PLATEAU, 1.0, torch.where(t <= -TAIL, 0.0, k))
    k = k / k.sum(dim=(-2, -1), keepdim=True)
    return torch.fft.rfft2(k)


@torch.no_grad()
def defocus_cost_volume(
    ref: torch.Tensor,
    stack: torch.Tensor,
    K_px: torch.Tensor,
    offsets: torch.Tensor,
    gamma: float = 2.2,
    window: int = 7,
) -> torch.Tensor:
    """Per-pixel cost of each candidate offset.

    Args:
        ref: [B, C, H, W] sharp reference, gamma-encoded in [0, 1] (C = 3, or 1 for a grey cost).
        stack: [B, N, C, H, W] defocused frames, same encoding.
        K_px: [B, N] blur per unit offset for each frame, px per 1/m at this image width (radius = K·δ px).
        offsets: [J] candidate ``|Δ|`` in 1/m (see :func:`candidate_offsets`).
        gamma: the frames' encoding gamma (blur happens in linear light, as the renderer does).
        window: side of the box window (px) the per-pixel differences are averaged over.

    Returns:
        [B, J, H, W] cost: the window-averaged mean absolute difference between each frame and the re-blurred
        reference, summed over frames (linear light, same units as the image).
    """
    from scipy.fft import next_fast_len

    b, n, _, h, w = stack.shape
    lin_ref = ref.clamp(0, 1) ** gamma
    lin_stack = stack.clamp(0, 1) ** gamma
    radii = (K_px.to(ref.dtype)[:, :, None] * offsets.to(ref.dtype)[None, None, :]).clamp(min=0.0)  # [B, N, J]
    pad = int(min(torch.ceil(radii.max()).item() + 1, h - 1, w - 1))
    padded = F.pad(lin_ref, (pad, pad, pad, pad), mode="reflect")
    hp, wp = (
        next_fast_len(h + 2 * pad, True),
        next_fast_len(w + 2 * pad, True),
    )  # the rest of the frame is zero (never read back)
    spec_ref = torch.fft.rfft2(padded, s=(hp, wp))  # [B, C, hp, wp//2+1]
    unique, inverse = torch.unique(radii, return_inverse=True)  # a batch usually shares its K values
    spectra = disc_kernel_spectra(unique, (hp, wp))[inverse]  # [B, N, J, hp, wp//2+1]
    cost = ref.new_zeros(b, offsets.numel(), h, w)
    for i in range(n):
        blurred = torch.fft.irfft2(spec_ref[:, None] * spectra[:, i, :, None], s=(hp, wp))  # [B, J, C, hp, wp]
        blurred = blurred[..., pad : pad + h, pad : pad + w]
        cost += (blurred - lin_stack[:, i, None]).abs().mean(2)
    return F.avg_pool2d(cost, window, stride=1, padding=window // 2, count_include_pad=False)
