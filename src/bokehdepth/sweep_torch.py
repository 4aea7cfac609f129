"""torch path of the sweep's blur measurement (CUDA, or CPU for testing): the same disc bank and matching
cost as :func:`bokehdepth.sweep_blur.measure_blur`, with ``torch.fft`` and ``avg_pool2d`` on the device.

Only the cost volume runs on the device (it is > 90 % of the work); the per-pixel regression, confidence and
fill stay in numpy. Selected by ``SweepConfig.device`` (``bokehdepth sweep --device cuda``).
"""

from __future__ import annotations

import numpy as np

from .errors import InputError
from .sweep_blur import (
    BlurMeasurement,
    _kernel_fft,
    _MinTracker,
    _padded_shape,
    border_normaliser,
    disc_kernel,
    radius_grid,
)

__all__ = ["measure_blur_torch"]


def measure_blur_torch(
    reference_lin: np.ndarray,
    frames_lin: list[np.ndarray],
    *,
    max_radius: float = 24.0,
    step: float = 0.5,
    window: int = 15,
    device: str = "cuda",
    progress: bool = False,
) -> BlurMeasurement:
    """As :func:`bokehdepth.sweep_blur.measure_blur` (no cost volume kept), computed with torch on ``device``.

    Args:
        reference_lin: (H, W, C) float linear light.
        frames_lin: M frames (H, W, C) float linear light.
        device: a torch device string (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if window < 1 or window % 2 == 0:
        raise InputError(f"--window: must be an odd number of pixels >= 1, got {window}")
    try:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise InputError(f"--device {device}: CUDA is not available here; use --device cpu")
    except RuntimeError as exc:
        raise InputError(f"--device: unknown torch device {device!r} ({exc})") from exc
    radii = radius_grid(max_radius, step)
    h, w, c = reference_lin.shape
    if window // 2 >= min(h, w):
        raise InputError(f"--window: {window} px is larger than the {w}x{h} image")
    shape = _padded_shape(h, w, int(np.ceil(float(radii.max()))) + 2)
    ref = torch.zeros((c, *shape), dtype=torch.float32, device=dev)
    ref[:, :h, :w] = torch.as_tensor(np.moveaxis(np.asarray(reference_lin, np.float32), -1, 0), device=dev)
    spec = torch.fft.rfft2(ref)
    frames = torch.stack([torch.as_tensor(np.moveaxis(np.asarray(f, np.float32), -1, 0)) for f in frames_lin]).to(dev)
    m = frames.shape[0]
    best = torch.full((m, h, w), float("inf"), device=dev)
    kbest = torch.zeros((m, h, w), dtype=torch.int32, device=dev)
    left, right, prev = (torch.zeros((m, h, w), device=dev) for _ in range(3))
    total = torch.zeros((m, h, w), dtype=torch.float64, device=dev)
    p = window // 2
    for k, r in tqdm(list(enumerate(radii)), desc="sweep: disc bank (torch)", disable=not progress, leave=False):
        kernel = disc_kernel(float(r))
        kf = torch.as_tensor(_kernel_fft(kernel, shape), device=dev)
        blurred = torch.fft.irfft2(spec * kf[None], s=shape)[:, :h, :w]
        blurred = (blurred / torch.as_tensor(border_normaliser(kernel, h, w), device=dev).clamp_min(1e-8)).clamp_min(0)
        sq = ((blurred[None] - frames) ** 2).sum(dim=1, keepdim=True)
        cost = F.avg_pool2d(F.pad(sq, (p, p, p, p), mode="reflect"), window, stride=1)[:, 0] if p else sq[:, 0]
        if k > 0:
            right = torch.where(kbest == k - 1, cost, right)
        better = cost < best
        best = torch.where(better, cost, best)
        kbest = torch.where(better, torch.full_like(kbest, k), kbest)
        left = torch.where(better, prev if k > 0 else cost, left)
        right = torch.where(better, cost, right)
        total += cost
        prev = cost
    out = []
    for i in range(m):
        t = _MinTracker((h, w))
        t.best, t.k, t.left, t.right = (x[i].cpu().numpy() for x in (best, kbest, left, right))
        t.total, t.n = total[i].cpu().numpy(), len(radii)
        out.append(t.result(radii))
    radius, valid, curv = (np.stack(x) for x in zip(*out))
    return BlurMeasurement(radius, valid, curv, None, radii)
