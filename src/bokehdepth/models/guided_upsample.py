"""Edge-aware upsampling of low-resolution prediction maps, guided by the full-resolution image.

A head that predicts at 1/s of the input resolution and upsamples bilinearly mixes the two sides of every
depth edge over about s pixels; in relative depth that costs most where a near object stands in front of a far
background (the near pixels get part of the far value). Joint bilateral upsampling (Kopf et al., SIGGRAPH
2007) weighs each low-resolution sample near a pixel by its distance *and* by how much the image there (the
guide averaged over the sample's s×s block) resembles the image at the pixel, so samples across an image edge
count little.

Pure functions of their inputs; differentiable in ``low`` (the weights depend on the guide only).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["joint_bilateral_upsample"]


def joint_bilateral_upsample(
    low: torch.Tensor,
    guide: torch.Tensor,
    scale: int,
    radius: int = 2,
    sigma_spatial: float = 1.0,
    sigma_range: float = 0.1,
) -> torch.Tensor:
    """Upsample ``low`` by an integer ``scale`` with weights from the distance and the guide's similarity.

    Args:
        low: [B, C, h, w] maps at 1/``scale`` resolution (any units; each channel is averaged alike).
        guide: [B, G, h·scale, w·scale] image, e.g. RGB in [0, 1].
        scale: integer upsampling factor (sample (i, j) of ``low`` covers the guide's block
            ``[i·scale, (i+1)·scale) × [j·scale, (j+1)·scale)``, as ``avg_pool2d`` makes it).
        radius: neighbourhood half-width, in low-resolution samples, around the sample under each pixel.
        sigma_spatial: spatial Gaussian σ in low-resolution samples (distance between the pixel's centre and the
            sample's block centre).
        sigma_range: Gaussian σ of the Euclidean distance between the guide at the pixel and the guide's mean
            over the sample's block (guide units). ``inf`` leaves only the spatial weights.

    Returns:
        [B, C, h·scale, w·scale] in ``low``'s dtype. A constant map stays constant; where the guide is flat the
        result is a spatially smooth interpolation of ``low``.
    """
    b, c, h, w = low.shape
    hh, ww = guide.shape[-2:]
    if scale < 1 or (hh, ww) != (h * scale, w * scale):
        raise ValueError(f"joint_bilateral_upsample: guide {hh}x{ww} is not low {h}x{w} times scale {scale}")
    if scale == 1:
        return low
    k = 2 * radius + 1
    guide = guide.to(low.dtype)
    g_low = F.avg_pool2d(guide, scale)
    pad = (radius, radius, radius, radius)
    # [B, C, k², h, w]: each low-res sample's k×k neighbourhood (edge samples repeated beyond the border)
    values = F.unfold(F.pad(low, pad, mode="replicate"), k).view(b, c, k * k, h, w)
    g_vals = F.unfold(F.pad(g_low, pad, mode="replicate"), k).view(b, guide.shape[1], k * k, h, w)
    # every pixel centre in low-res sample coordinates, and the sample it falls in
    dev = low.device
    ys = (torch.arange(hh, device=dev, dtype=low.dtype) + 0.5) / scale - 0.5
    xs = (torch.arange(ww, device=dev, dtype=low.dtype) + 0.5) / scale - 0.5
    iy = torch.div(torch.arange(hh, device=dev), scale, rounding_mode="floor")
    ix = torch.div(torch.arange(ww, device=dev), scale, rounding_mode="floor")
    values = values[..., iy, :][..., ix]  # [B, C, k², H, W]
    g_vals = g_vals[..., iy, :][..., ix]
    off = torch.arange(-radius, radius + 1, device=dev, dtype=low.dtype)
    dy = (iy.to(low.dtype)[:, None] + off[None, :]) - ys[:, None]  # [H, k]
    dx = (ix.to(low.dtype)[:, None] + off[None, :]) - xs[:, None]  # [W, k]
    d2 = dy.T[:, None, :, None] ** 2 + dx.T[None, :, None, :] ** 2  # [k, k, H, W]
    weight = torch.exp(-d2.reshape(k * k, hh, ww) / (2 * sigma_spatial**2))[None]  # [1, k², H, W]
    if sigma_range != float("inf"):
        diff2 = ((g_vals - guide[:, :, None]) ** 2).sum(1)  # [B, k², H, W]
        # relative to the best match: the same weights once normalised, but they cannot all underflow to 0
        diff2 = diff2 - diff2.amin(1, keepdim=True)
        weight = weight * torch.exp(-diff2 / (2 * sigma_range**2))
    norm = weight.sum(1, keepdim=True).clamp(min=torch.finfo(low.dtype).tiny)
    return (values * weight[:, None]).sum(2) / norm
