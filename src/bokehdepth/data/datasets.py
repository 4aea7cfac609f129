"""torch Datasets over synthetic manifests: Stage-1 (sharp image, K, bokeh target) and Stage-2 (image, stack,
K list, depth, valid mask).

Augmentations are drawn from ``numpy.random.default_rng([seed, epoch, index])`` so a sample is reproducible;
call ``set_epoch(e)`` each epoch for fresh draws. Tensors are float32; images (3, H, W) in [0, 1] (sRGB
display values, as stored).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch.utils.data

from ..errors import InputError
from ..io import read_image, read_stack
from .manifest import read_manifest

__all__ = ["Stage1Dataset", "Stage2Dataset", "load_depth_for", "crop_resize_params"]


def load_depth_for(path: str | os.PathLike, shape: tuple[int, int]) -> np.ndarray:
    """Load a float depth ``.npy`` (metres) and check it is (H, W) = ``shape``; InputError naming the file."""
    from ..io import read_depth

    depth = read_depth(path)
    if depth.shape != tuple(shape):
        raise InputError(
            f"{path}: depth is {depth.shape[1]}x{depth.shape[0]} but its image is {shape[1]}x{shape[0]}; "
            "regenerate the sample"
        )
    return depth


def _read_mask(path: str | None, shape: tuple[int, int]) -> np.ndarray | None:
    if not path:
        return None
    m = read_image(path)[..., 0] > 0.5
    if m.shape != tuple(shape):
        raise InputError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but its image is {shape[1]}x{shape[0]}")
    return m


def crop_resize_params(
    rng: np.random.Generator, h: int, w: int, crop: int | tuple[int, int] | None, scale_range: tuple[float, float]
) -> tuple[int, int, int, int]:
    """A crop window (y0, x0, ch, cw) in px: a fixed ``crop`` size at a random place, or a random square-ish
    window of ``scale_range`` × the short side when ``crop`` is None."""
    if crop is not None:
        ch, cw = (crop, crop) if isinstance(crop, int) else crop
        if ch > h or cw > w:
            raise InputError(f"crop: {cw}x{ch} is larger than the {w}x{h} sample; use a smaller crop")
    else:
        s = rng.uniform(*scale_range)
        ch = cw = max(8, int(round(min(h, w) * s)))
    y0 = int(rng.integers(0, h - ch + 1))
    x0 = int(rng.integers(0, w - cw + 1))
    return y0, x0, ch, cw


def _resize(arr: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    import cv2

    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    if nearest:
        interp = cv2.INTER_NEAREST
    else:
        interp = cv2.INTER_AREA if arr.shape[1] > w else cv2.INTER_LINEAR
    out = cv2.resize(np.ascontiguousarray(arr), (w, h), interpolation=interp)
    return out.reshape((h, w) + arr.shape[2:])


def _as_hw(size: int | Sequence[int] | None) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


class Stage1Dataset(torch.utils.data.Dataset):
    """Stage-1 samples: a sharp image, a normalised K and the bokeh target rendered on the fly.

    As the published Stage-1 training (``reference/bokehdepth.md`` §2, §5): per-image min–max normalised
    disparity from the record's exact depth, focus from the foreground (the scene's subject mask) with the
    subject flattened into focus, ``K ~ U(K_range)`` in px at 512-px width per unit normalised disparity; the
    target is rendered with ``K · size / 512`` px by :func:`bokehdepth.render.render`.

    Args:
        manifest: manifest file or dataset folder.
        size: output size in px (int or (H, W)); samples are cropped (``crop_scale``) and resized to it.
        K_range: (min, max) normalised K.
        split: split(s) to use, or None for all.
        flip: random horizontal flips.
        crop_scale: range of the random square crop, as a fraction of the short side (1, 1 = no crop).
        seed: augmentation seed.
        gamma: rendering gamma.
        flatten_subject: flatten the subject's disparity to the focus (published behaviour).
        backend: renderer backend.

    Yields dicts: ``image`` (3, H, W), ``K`` () float32 (normalised K), ``target`` (3, H, W),
    ``disp_focus_norm`` () float32, ``id`` str.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        size: int | Sequence[int] = 256,
        K_range: tuple[float, float] = (1.0, 30.0),
        *,
        split: str | Sequence[str] | None = "train",
        flip: bool = True,
        crop_scale: tuple[float, float] = (0.7, 1.0),
        seed: int = 0,
        gamma: float = 2.2,
        flatten_subject: bool = True,
        backend: str = "cpu",
    ) -> None:
        self.records = read_manifest(manifest, split=split)
        if not self.records:
            raise InputError(f"{manifest}: no samples in split {split!r}; check --split or the manifest")
        if not 0 <= K_range[0] <= K_range[1]:
            raise InputError(f"K_range: need 0 <= min <= max, got {K_range}")
        self.size = _as_hw(size)
        self.K_range = (float(K_range[0]), float(K_range[1]))
        self.flip, self.crop_scale, self.seed = flip, crop_scale, int(seed)
        self.gamma, self.flatten_subject, self.backend = gamma, flatten_subject, backend
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        from ..render import render
        from ..synth.stacks import normalize_disp, published_focus

        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        image = read_image(rec["image"])
        depth = load_depth_for(rec["depth"], image.shape[:2])
        mask = _read_mask(rec.get("mask"), image.shape[:2])
        h, w = depth.shape
        y0, x0, ch, cw = crop_resize_params(rng, h, w, None, self.crop_scale)
        sl = (slice(y0, y0 + ch), slice(x0, x0 + cw))
        out_hw = self.size or (ch, cw)
        image = _resize(image[sl], out_hw)
        depth = _resize(depth[sl], out_hw, nearest=True)
        mask = None if mask is None else _resize(mask[sl].astype(np.uint8), out_hw, nearest=True).astype(bool)
        if self.flip and rng.uniform() < 0.5:
            image, depth = image[:, ::-1], depth[:, ::-1]
            mask = None if mask is None else mask[:, ::-1]
        image, depth = np.ascontiguousarray(image), np.ascontiguousarray(depth)
        mask = None if mask is None else np.ascontiguousarray(mask)
        K = float(rng.uniform(*self.K_range))
        dn, _, _ = normalize_disp(depth)
        dn_focus, dn_render = published_focus(dn, depth, mask, flatten=self.flatten_subject)
        width = out_hw[1]
        target = render(
            image, dn_render, K * width / 512.0, disp_focus=dn_focus, gamma=self.gamma, backend=self.backend
        )
        return {
            "image": torch.from_numpy(image.transpose(2, 0, 1).copy()),
            "K": torch.tensor(K, dtype=torch.float32),
            "target": torch.from_numpy(np.ascontiguousarray(target.transpose(2, 0, 1), dtype=np.float32)),
            "disp_focus_norm": torch.tensor(dn_focus, dtype=torch.float32),
            "id": rec["id"],
        }


class Stage2Dataset(torch.utils.data.Dataset):
    """Stage-2 samples: image, stack (frame 0 the sharp reference), K per frame, metric depth, valid mask.

    Augmentations (the same for every frame, the depth and the mask): a random crop (``crop`` px, or a random
    window of ``crop_scale`` × the short side), a resize to ``size`` and a horizontal flip. K follows the
    geometry: a crop keeps metric K and a resize scales it by the width ratio; normalised K (defined at
    512 px of the *full* image width) is scaled by full width / crop width, so K stays "px at 512 px". The
    normalised disparity span still refers to the full image. Intrinsics are updated likewise.

    Args:
        manifest: manifest file or dataset folder.
        size: output size (int or (H, W)) or None to keep the (cropped) size.
        split: split(s) or None.
        crop: fixed crop size (int or (H, W)) in px; None for no crop unless ``crop_scale`` is given.
        crop_scale: random crop range as a fraction of the short side; None for no random crop.
        flip: random horizontal flips.
        frames: indices of the stack frames to keep (0 must be first), None for all.
        seed: augmentation seed.

    Yields dicts: ``image`` (3, H, W), ``stack`` (N, 3, H, W), ``K`` (N,), ``K_convention`` str,
    ``disp_focus`` () 1/m, ``depth`` (H, W) metres (0 where invalid), ``valid`` (H, W) bool,
    ``intrinsics`` (4,) fx, fy, cx, cy px, ``focus_side`` str ("" if unknown), ``id`` str.
    """

    def __init__(
        self,
        manifest: str | os.PathLike,
        size: int | Sequence[int] | None = None,
        *,
        split: str | Sequence[str] | None = None,
        crop: int | Sequence[int] | None = None,
        crop_scale: tuple[float, float] | None = None,
        flip: bool = False,
        frames: Sequence[int] | None = None,
        seed: int = 0,
    ) -> None:
        self.records = read_manifest(manifest, split=split)
        if not self.records:
            raise InputError(f"{manifest}: no samples in split {split!r}; check --split or the manifest")
        if frames is not None and (not frames or frames[0] != 0):
            raise InputError(f"frames: must start with the reference frame 0, got {list(frames)}")
        self.size = _as_hw(size)
        self.crop = _as_hw(crop)
        self.crop_scale, self.flip, self.seed = crop_scale, flip, int(seed)
        self.frames = None if frames is None else [int(i) for i in frames]
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the augmentation draws (call once per epoch)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        rec = self.records[index]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        stack = read_stack(rec["stack"])
        h, w = stack.size
        depth = load_depth_for(rec["depth"], (h, w))
        if len(stack.K) != len(rec["K"]):
            raise InputError(f"{rec['stack']}: stack has {len(stack.K)} frames, manifest lists {len(rec['K'])} K")
        idx = self.frames or list(range(len(stack.frames)))
        if max(idx) >= len(stack.frames):
            raise InputError(f"{rec['stack']}: frames {idx} asked but the stack has {len(stack.frames)} frames")
        frames = np.stack([stack.frames[i] for i in idx])  # (N, H, W, 3)
        K = np.array([stack.K[i] for i in idx], dtype=np.float64)
        intr = rec["intrinsics"]
        fx, fy, cx, cy = (float(intr[k]) for k in ("fx", "fy", "cx", "cy"))
        if self.crop is not None or self.crop_scale is not None:
            y0, x0, ch, cw = crop_resize_params(rng, h, w, self.crop, self.crop_scale or (1.0, 1.0))
        else:
            y0, x0, ch, cw = 0, 0, h, w
        frames = frames[:, y0 : y0 + ch, x0 : x0 + cw]
        depth = depth[y0 : y0 + ch, x0 : x0 + cw]
        cx, cy = cx - x0, cy - y0
        if stack.K_convention == "normalized":
            K = K * (w / cw)
        out_hw = self.size or (ch, cw)
        if out_hw != (ch, cw):
            sx, sy = out_hw[1] / cw, out_hw[0] / ch
            frames = np.stack([_resize(f, out_hw) for f in frames])
            depth = _resize(depth, out_hw, nearest=True)
            fx, fy = fx * sx, fy * sy
            cx, cy = (cx + 0.5) * sx - 0.5, (cy + 0.5) * sy - 0.5
            if stack.K_convention == "metric":
                K = K * sx
        if self.flip and rng.uniform() < 0.5:
            frames, depth = frames[:, :, ::-1], depth[:, ::-1]
            cx = out_hw[1] - 1 - cx
        valid = np.isfinite(depth) & (depth > 0)
        depth = np.where(valid, depth, 0.0).astype(np.float32)
        stack_t = torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2), dtype=np.float32))
        return {
            "image": stack_t[0].clone(),
            "stack": stack_t,
            "K": torch.from_numpy(K.astype(np.float32)),
            "K_convention": stack.K_convention,
            "disp_focus": torch.tensor(float(stack.disp_focus or 0.0), dtype=torch.float32),
            "depth": torch.from_numpy(np.ascontiguousarray(depth)),
            "valid": torch.from_numpy(np.ascontiguousarray(valid)),
            "intrinsics": torch.tensor([fx, fy, cx, cy], dtype=torch.float32),
            "focus_side": stack.focus_side or "",
            "id": rec["id"],
        }
