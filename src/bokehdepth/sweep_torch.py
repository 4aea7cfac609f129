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
    _MinTracker,
    bank_kernels,
    bank_shape,
    radius_grid,
    tracker_init,
    tracker_step,
)

__all__ = ["measure_blur_torch", "torch_device"]


def torch_device(device: str):
    """``torch.device(device)``, checked: an unknown name or CUDA without a GPU is an ``--device`` error."""
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise InputError(f"--device: unknown torch device {device!r} ({exc}); use numpy, cpu or cuda") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise InputError(f"--device {device}: CUDA is not available here; use --device numpy or cpu")
    return dev


def measure_blur_torch(
    reference_lin: np.ndarray,
    frames_lin: list[np.ndarray],
    *,
    max_radius: float = 24.0,
    step: float = 0.5,
    window: int = 15,
    keep_cost: bool = False,
    device: str = "cuda",
    progress: bool = False,
) -> BlurMeasurement:
    """As :func:`bokehdepth.sweep_blur.measure_blur`, computed with torch on ``device``.

    The disc bank (:func:`~bokehdepth.sweep_blur.bank_kernels`) and the arg-min update
    (:func:`~bokehdepth.sweep_blur.tracker_step`) are the numpy path's own; only the FFTs, the squared
    difference and the window mean run in torch.

    Args:
        reference_lin: (H, W, C) float linear light.
        frames_lin: M frames (H, W, C) float linear light.
        keep_cost: also return the (M, R, H, W) cost volume (in host memory, numpy).
        device: a torch device string (``"cuda"``, ``"cuda:1"``, ``"cpu"``).
    """
    import torch
    import torch.nn.functional as F
    from tqdm.auto import tqdm

    if window < 1 or window % 2 == 0:
        raise InputError(f"--window: must be an odd number of pixels >= 1, got {window}")
    dev = torch_device(device)
    radii = radius_grid(max_radius, step)
    h, w, c = reference_lin.shape
    if window // 2 >= min(h, w):
        raise InputError(f"--window: {window} px is larger than the {w}x{h} image")
    shape = bank_shape(h, w, radii)
    ref = torch.zeros((c, *shape), dtype=torch.float32, device=dev)
    ref[:, :h, :w] = torch.as_tensor(np.moveaxis(np.asarray(reference_lin, np.float32), -1, 0), device=dev)
    spec = torch.fft.rfft2(ref)
    frames = torch.stack([torch.as_tensor(np.moveaxis(np.asarray(f, np.float32), -1, 0)) for f in frames_lin]).to(dev)
    m = frames.shape[0]
    state = {k: torch.as_tensor(v, device=dev) for k, v in tracker_init((m, h, w)).items()}
    vol = np.empty((m, len(radii), h, w), dtype=np.float32) if keep_cost else None
    p = window // 2
    bank = bank_kernels(radii, shape, h, w)
    for k, kf, norm in tqdm(bank, total=len(radii), desc="sweep: disc bank (torch)", disable=not progress, leave=False):
        blurred = torch.fft.irfft2(spec * torch.as_tensor(kf, device=dev)[None], s=shape)[:, :h, :w]
        blurred = (blurred / torch.as_tensor(norm, device=dev)).clamp_min(0)
        sq = ((blurred[None] - frames) ** 2).sum(dim=1, keepdim=True)
        cost = F.avg_pool2d(F.pad(sq, (p, p, p, p), mode="reflect"), window, stride=1)[:, 0] if p else sq[:, 0]
        state = tracker_step(k, cost, state, torch.where)
        if vol is not None:
            vol[:, k] = cost.cpu().numpy()
    host = {key: val.cpu().numpy() for key, val in state.items()}
    out = [
        _MinTracker.from_state({key: val[i] for key, val in host.items()}, len(radii)).result(radii) for i in range(m)
    ]
    radius, valid, curv = (np.stack(x) for x in zip(*out))
    return BlurMeasurement(radius, valid, curv, vol, radii)
