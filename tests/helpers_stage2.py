"""Tiny in-memory scenes and stacks for the Stage-2 tests (no renderer needed).

A scene is two fronto-parallel planes (near left half, far right half) with a random texture; each stack frame
blurs every plane with a box of the analytic radius ``K·|disp − disp_focus|`` (px), a cheap stand-in for the
renderer that keeps the stack's physics (blur grows with K and with the inverse-depth offset).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bokehdepth.data import write_manifest
from bokehdepth.io import Stack, write_image, write_stack


def _box_blur(img: np.ndarray, r: int) -> np.ndarray:
    if r <= 0:
        return img
    k = 2 * r + 1
    pad = np.pad(img, ((r, r), (r, r), (0, 0)), mode="edge")
    c = pad.cumsum(0).cumsum(1)
    c = np.pad(c, ((1, 0), (1, 0), (0, 0)))
    h, w = img.shape[:2]
    return (c[k : k + h, k : k + w] - c[:h, k : k + w] - c[k : k + h, :w] + c[:h, :w]) / (k * k)


def make_scene(
    seed: int, size: int = 32, Ks=(2.0, 4.0, 8.0), width: int | None = None
) -> tuple[np.ndarray, np.ndarray, Stack]:
    """(image (H,W,3), depth (H,W) metres, metric Stack with the sharp frame 0) at ``size`` × ``width`` px
    (``width`` None: square)."""
    rng = np.random.default_rng(seed)
    width = width or size
    img = rng.random((size, width, 3)).astype(np.float32)
    near, far = rng.uniform(0.8, 1.5), rng.uniform(3.0, 8.0)
    depth = np.full((size, width), far, np.float32)
    depth[:, : width // 2] = near
    disp_focus = 1.0 / near
    frames = [img]
    for K in Ks:
        fr = img.copy()
        r = int(round(K * abs(1.0 / far - disp_focus)))
        fr[:, width // 2 :] = _box_blur(img, r)[:, width // 2 :]
        frames.append(fr.astype(np.float32))
    stack = Stack(frames=frames, K=[0.0, *Ks], disp_focus=disp_focus, focus_side="near")
    return img, depth, stack


def write_dataset(root: Path, n: int, size: int = 32, width: int | None = None) -> Path:
    """A synth-style dataset folder (``<id>/image.png``, ``depth.npy``, ``stack/``) + ``manifest.jsonl`` of
    ``size`` × ``width`` px scenes (``width`` None: square)."""
    rows = []
    width = width or size
    for i in range(n):
        img, depth, stack = make_scene(i, size, width=width)
        d = root / f"{i:06d}"
        d.mkdir(parents=True)
        write_image(d / "image.png", img)
        np.save(d / "depth.npy", depth)
        write_stack(stack, d / "stack")
        rows.append(
            {
                "id": f"{i:06d}",
                "image": f"{i:06d}/image.png",
                "depth": f"{i:06d}/depth.npy",
                "stack": f"{i:06d}/stack",
                "K": stack.K,
                "K_convention": "metric",
                "disp_focus": stack.disp_focus,
                "focus_side": stack.focus_side,
                "intrinsics": {"fx": float(width), "fy": float(width), "cx": (width - 1) / 2, "cy": (size - 1) / 2},
                "split": "test" if i % 4 == 3 else "train",
                "size": [size, width],
            }
        )
    return write_manifest(root / "manifest.jsonl", rows)
