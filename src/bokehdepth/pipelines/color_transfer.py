"""LAB colour transfer used after generation by both FLUX pipelines.

As published (``color_transfer_lab`` in both reference repos): both images to CIELAB with OpenCV on 8-bit RGB
(L scaled to 0–255, a/b offset by 128); per channel the target is shifted so its mean equals the source's and,
with ``adjust_std``, scaled so its standard deviation does too; clipped to 0–255 and truncated to uint8, back to
RGB. BokehDepth Stage-1 uses mean and std (ref → frame); Bokeh Diffusion's grounded mode uses the mean only
(pivot → target).
"""

from __future__ import annotations

import numpy as np

__all__ = ["color_transfer_lab"]


def _to_u8(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype == np.uint8:
        return image
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def color_transfer_lab(source: np.ndarray, target: np.ndarray, adjust_std: bool = True) -> np.ndarray:
    """Give ``target`` the LAB colour statistics of ``source``.

    Args:
        source: (H, W, 3) RGB, float in [0, 1] or uint8 (any size).
        target: (h, w, 3) RGB, float in [0, 1] or uint8.
        adjust_std: also match each channel's standard deviation (a channel with zero spread is only shifted).

    Returns:
        float32 (h, w, 3) RGB in [0, 1] (8-bit quantised, as the reference).
    """
    import cv2

    src = cv2.cvtColor(_to_u8(source), cv2.COLOR_RGB2LAB).astype(np.float32)
    tgt = cv2.cvtColor(_to_u8(target), cv2.COLOR_RGB2LAB).astype(np.float32)
    s_mean, s_std = src.reshape(-1, 3).mean(0), src.reshape(-1, 3).std(0)
    t_mean, t_std = tgt.reshape(-1, 3).mean(0), tgt.reshape(-1, 3).std(0)
    out = tgt - t_mean
    if adjust_std:
        out = out * np.where(t_std > 1e-6, s_std / np.maximum(t_std, 1e-6), 1.0)
    out = np.clip(out + s_mean, 0.0, 255.0).astype(np.uint8)
    return cv2.cvtColor(out, cv2.COLOR_LAB2RGB).astype(np.float32) / 255.0
