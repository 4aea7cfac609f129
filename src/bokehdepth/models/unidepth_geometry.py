"""UniDepthV2 input/output geometry: aspect padding, resize to the pixel budget, pinhole cameras and rays.

Pure functions, no weights. They reproduce the published Stage-2 preprocessing
(shared/reference/bokehdepth.md §4, "Preprocessing, exactly"):

1. zero-pad the image (before normalising) until W/H lies in ``ratio_bounds`` (default [0.5, 2.5]);
2. resize bilinearly (``align_corners=False``) so that H·W lies in ``pixel_bounds`` (default [2e5, 6e5]),
   each side rounded *up* to a multiple of 14; the camera is scaled by the *unrounded* factor;
3. the default camera is fx = fy = 0.7·W (input width, px), centred at (W/2, H/2), shifted by the padding;
4. rays are unit vectors through pixel centres ``(x + 0.5, y + 0.5)``;
5. outputs are resized back bilinearly (``align_corners=False``) to the padded size and the padding is cropped.

Conventions: sizes are (H, W) in pixels; intrinsics are 3×3 pinhole matrices in pixels; rays are
[B, 3, H, W] unit vectors in the camera frame (x right, y down, z forward).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import ceil

import torch
import torch.nn.functional as F

__all__ = [
    "Geometry",
    "compute_paddings",
    "compute_resize",
    "default_intrinsics",
    "intrinsics_from_rays",
    "intrinsics_to_input",
    "intrinsics_to_network",
    "plan_geometry",
    "rays_from_intrinsics",
    "resize_back",
]


def compute_paddings(height: int, width: int, ratio_bounds: tuple[float, float] = (0.5, 2.5)):
    """Zero padding that brings the aspect ratio W/H into ``ratio_bounds``.

    Returns:
        ``((left, right, top, bottom), (padded_h, padded_w))`` in pixels; the target size is truncated to an
        integer and the padding split with the extra pixel at the end, as the reference does.
    """
    if height <= 0 or width <= 0:
        raise ValueError(f"image size must be positive, got {height}x{width}")
    aspect = width / height
    lo, hi = ratio_bounds
    target = min(hi, max(lo, aspect))
    if aspect > target:  # too wide: pad top/bottom
        new_h, new_w = int(width / target), width
        top = (new_h - height) // 2
        return (0, 0, top, new_h - height - top), (new_h, new_w)
    new_h, new_w = height, int(height * target)  # too tall (or already inside): pad left/right
    left = (new_w - width) // 2
    return (left, new_w - width - left, 0, 0), (new_h, new_w)


def compute_resize(
    height: int, width: int, pixel_bounds: tuple[float, float] = (2e5, 6e5), multiple: int = 14
) -> tuple[float, tuple[int, int]]:
    """Resize factor and network input size for a (padded) image of ``height``×``width`` px.

    The factor ``sqrt(target / (H·W))`` brings the pixel count into ``pixel_bounds``; each side is
    ``int(side·factor)`` rounded *up* to a multiple of ``multiple``. The factor returned is the unrounded one
    (the reference scales the camera by it).
    """
    n = height * width
    lo, hi = pixel_bounds
    target = min(hi, max(lo, n))
    factor = (target / n) ** 0.5
    new_h = ceil(int(height * factor) / multiple) * multiple
    new_w = ceil(int(width * factor) / multiple) * multiple
    return factor, (new_h, new_w)


@dataclass(frozen=True)
class Geometry:
    """How one input size maps to the network input.

    Attributes:
        input_hw: (H, W) of the input image, px.
        paddings: (left, right, top, bottom) zero padding, px.
        padded_hw: (H, W) after padding, px.
        factor: unrounded resize factor (network px per padded px).
        network_hw: (H, W) of the network input, multiples of the patch size.
    """

    input_hw: tuple[int, int]
    paddings: tuple[int, int, int, int]
    padded_hw: tuple[int, int]
    factor: float
    network_hw: tuple[int, int]


def plan_geometry(
    height: int,
    width: int,
    ratio_bounds: tuple[float, float] = (0.5, 2.5),
    pixel_bounds: tuple[float, float] = (2e5, 6e5),
    multiple: int = 14,
) -> Geometry:
    """Padding + resize plan for an input of ``height``×``width`` px (see the module docstring)."""
    paddings, padded = compute_paddings(height, width, ratio_bounds)
    factor, net = compute_resize(*padded, pixel_bounds, multiple)
    return Geometry((height, width), paddings, padded, factor, net)


def default_intrinsics(height: int, width: int, focal_ratio: float = 0.7) -> torch.Tensor:
    """The reference's fake pinhole camera for an input of ``height``×``width`` px: fx = fy = ratio·W, centred.

    Returns:
        float32 [3, 3] in input pixels.
    """
    f = focal_ratio * width
    return torch.tensor([[f, 0.0, width * 0.5], [0.0, f, height * 0.5], [0.0, 0.0, 1.0]], dtype=torch.float32)


def intrinsics_to_network(K: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Input-pixel intrinsics [..., 3, 3] → network-input pixels: shift the centre by the padding, then scale
    the first two rows by the unrounded resize factor (as the reference's camera crop + resize)."""
    K = K.clone().float()
    left, _, top, _ = geom.paddings
    K[..., 0, 2] += left
    K[..., 1, 2] += top
    K[..., :2, :] *= geom.factor
    return K


def intrinsics_to_input(K: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Inverse of :func:`intrinsics_to_network` (the reference's ``_postprocess_intrinsics``)."""
    K = K.clone().float()
    K[..., :2, :] /= geom.factor
    left, _, top, _ = geom.paddings
    K[..., 0, 2] -= left
    K[..., 1, 2] -= top
    return K


def rays_from_intrinsics(K: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Unit viewing rays through the pixel centres of a pinhole camera.

    Args:
        K: [B, 3, 3] intrinsics in pixels (fx, fy, cx, cy; no skew).
        height, width: image size in pixels.

    Returns:
        [B, 3, H, W] float32 unit vectors ``((u − cx)/fx, (v − cy)/fy, 1) / norm`` with ``u = x + 0.5``.
    """
    K = K.float()
    dev = K.device
    u = torch.arange(width, device=dev, dtype=torch.float32) + 0.5
    v = torch.arange(height, device=dev, dtype=torch.float32) + 0.5
    fx, fy = K[:, 0, 0, None, None], K[:, 1, 1, None, None]
    cx, cy = K[:, 0, 2, None, None], K[:, 1, 2, None, None]
    x = ((u[None, None, :] - cx) / fx).expand(-1, height, width)
    y = ((v[None, :, None] - cy) / fy).expand(-1, height, width)
    rays = torch.stack([x, y, torch.ones_like(x)], dim=1)
    return rays / rays.norm(dim=1, keepdim=True).clamp(min=1e-4)


def intrinsics_from_rays(rays: torch.Tensor) -> torch.Tensor:
    """Pinhole intrinsics that best explain a ray map (least squares, per image).

    From ``x/z = (u − cx)/fx``: ``u = fx·(x/z) + cx`` is a line fit over the pixel centres (same for v).

    Args:
        rays: [B, 3, H, W] viewing rays (any length, z > 0).

    Returns:
        [B, 3, 3] float32 intrinsics in pixels.
    """
    b, _, h, w = rays.shape
    rays = rays.double()
    a = (rays[:, 0] / rays[:, 2]).reshape(b, -1)
    c = (rays[:, 1] / rays[:, 2]).reshape(b, -1)
    u = (torch.arange(w, dtype=torch.float64, device=rays.device) + 0.5).expand(h, w).reshape(-1)
    v = (torch.arange(h, dtype=torch.float64, device=rays.device) + 0.5)[:, None].expand(h, w).reshape(-1)

    def fit(t: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tm, ym = t.mean(1, keepdim=True), target.mean()
        slope = ((t - tm) * (target - ym)).sum(1) / ((t - tm) ** 2).sum(1)
        return slope, ym - slope * tm[:, 0]

    fx, cx = fit(a, u)
    fy, cy = fit(c, v)
    K = torch.zeros(b, 3, 3, dtype=torch.float64, device=rays.device)
    K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
    return K.float()


def resize_back(x: torch.Tensor, geom: Geometry) -> torch.Tensor:
    """Network-resolution map [B, C, h, w] → input resolution [B, C, H, W]: bilinear resize
    (``align_corners=False``) to the padded size, then crop the padding."""
    x = F.interpolate(x.float(), size=geom.padded_hw, mode="bilinear", align_corners=False)
    left, right, top, bottom = geom.paddings
    ph, pw = geom.padded_hw
    return x[..., top : ph - bottom, left : pw - right]
