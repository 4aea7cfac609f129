"""RGB-D folders in the layouts users already have (NYUv2, KITTI, ETH3D, or a flat rgb/ + depth/ pair).

Accepted trees (``layout="auto"`` detects them in this order):

- ``eth3d``: ``<scene>/images/dslr_images_undistorted/<name>.JPG`` (or ``dslr_images``) with
  ``<scene>/ground_truth_masked/dslr_images/<name>.JPG``: the ETH3D depth file, raw little-endian float32,
  row-major, the image's size; 0 / inf invalid. A ``.npy`` beside it (same stem) is read instead if present.
- ``kitti``: ``image/<name>.png`` with ``groundtruth_depth/<name'>.png`` (the KITTI depth-selection naming,
  the first ``_image_`` → ``_groundtruth_depth_``; the same name also works): 16-bit PNG, metres = value / 256,
  0 invalid.
- ``nyuv2``: BTS-style ``**/rgb_<id>.jpg`` with ``sync_depth_<id>.png`` in the same folder, or
  ``rgb/<name>.*`` with ``depth/<name>.png``: 16-bit PNG in millimetres (scale 1000), 0 invalid; ``.npy``
  depth is read in metres.
- ``flat``: ``rgb/`` (or ``image/``) and ``depth/`` holding the same stems; depth ``.npy``/``.pfm`` in metres,
  or integer PNG/TIFF with ``depth_scale`` (units per metre).

Evaluation crops (as masks; the arrays stay whole), fractions of H and W as the usual protocols:
``"eigen"`` on NYUv2 = rows 45:471, cols 41:601 of 480×640 (scaled for other sizes); ``"eigen"`` on KITTI =
rows 0.3324–0.9135·H, cols 0.0359–0.9640·W; ``"garg"`` (KITTI) = rows 0.4081–0.9919·H, cols 0.0359–0.9640·W.
Default depth caps: NYUv2 1e-3–10 m, KITTI 1e-3–80 m, others none.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import IMAGE_SUFFIXES, read_depth, read_image

__all__ = ["CROPS", "LAYOUT_DEFAULTS", "LAYOUTS", "RGBDFolder", "crop_mask", "detect_layout"]

LAYOUTS = ("auto", "nyuv2", "kitti", "eth3d", "flat")
CROPS = ("none", "eigen", "garg")
LAYOUT_DEFAULTS: dict[str, dict[str, Any]] = {
    "nyuv2": {"depth_scale": 1000.0, "min_depth": 1e-3, "max_depth": 10.0, "crop": "eigen"},
    "kitti": {"depth_scale": 256.0, "min_depth": 1e-3, "max_depth": 80.0, "crop": "garg"},
    "eth3d": {"depth_scale": None, "min_depth": 1e-3, "max_depth": None, "crop": "none"},
    "flat": {"depth_scale": None, "min_depth": 1e-3, "max_depth": None, "crop": "none"},
}
"""Per layout: integer-PNG depth units per metre, valid depth range (m) and evaluation crop."""


def crop_mask(shape: tuple[int, int], crop: str, layout: str) -> np.ndarray:
    """Bool (H, W) evaluation mask of a named crop (see the module docstring)."""
    h, w = shape
    m = np.zeros((h, w), bool)
    if crop in (None, "none"):
        m[:] = True
    elif crop == "eigen" and layout == "nyuv2":
        m[round(45 / 480 * h) : round(471 / 480 * h), round(41 / 640 * w) : round(601 / 640 * w)] = True
    elif crop == "eigen":
        m[int(0.3324324 * h) : int(0.91351351 * h), int(0.0359477 * w) : int(0.96405229 * w)] = True
    elif crop == "garg":
        m[int(0.40810811 * h) : int(0.99189189 * h), int(0.03594771 * w) : int(0.96405229 * w)] = True
    else:
        raise InputError(f"--crop: unknown crop {crop!r}; use none, eigen or garg")
    return m


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def detect_layout(root: Path) -> str:
    """Guess the layout of an RGB-D folder (see the module docstring)."""
    if any(root.glob("*/ground_truth_masked")) or (root / "ground_truth_masked").is_dir():
        return "eth3d"
    if (root / "groundtruth_depth").is_dir() and (root / "image").is_dir():
        return "kitti"
    if next(root.rglob("sync_depth_*.png"), None) is not None:
        return "nyuv2"
    if ((root / "rgb").is_dir() or (root / "image").is_dir()) and (root / "depth").is_dir():
        return "flat"
    raise InputError(
        f"{root}: not a recognised RGB-D folder (expected rgb/ + depth/, image/ + groundtruth_depth/, "
        "rgb_*.jpg + sync_depth_*.png, or ETH3D <scene>/ground_truth_masked/); see docs/data.md"
    )


def _find_depth(folder: Path, stem: str, suffixes: tuple[str, ...]) -> Path | None:
    for suf in suffixes:
        p = folder / f"{stem}{suf}"
        if p.exists():
            return p
    return None


def _pairs(root: Path, layout: str) -> list[tuple[str, Path, Path]]:
    """(name, image path, depth path) for every sample; InputError naming the first missing depth file."""
    pairs: list[tuple[str, Path, Path]] = []
    if layout == "eth3d":
        scenes = (
            [root]
            if (root / "ground_truth_masked").is_dir()
            else sorted(p.parent for p in root.glob("*/ground_truth_masked"))
        )
        for scene in scenes:
            img_dir = next(
                (
                    scene / "images" / d
                    for d in ("dslr_images_undistorted", "dslr_images")
                    if (scene / "images" / d).is_dir()
                ),
                None,
            )
            if img_dir is None:
                raise InputError(f"{scene / 'images'}: no dslr_images_undistorted/ or dslr_images/ folder")
            gt_dir = scene / "ground_truth_masked" / "dslr_images"
            for img in _images_in(img_dir):
                npy = gt_dir / f"{img.stem}.npy"
                gt = npy if npy.exists() else gt_dir / img.name
                if not gt.exists():
                    raise InputError(f"{gt}: ground-truth depth missing for {img}; add it or remove the image")
                pairs.append((f"{scene.name}_{img.stem}", img, gt))
        return pairs
    if layout == "kitti" and (root / "groundtruth_depth").is_dir():
        gt_dir = root / "groundtruth_depth"
        for img in _images_in(root / "image"):
            cand = [gt_dir / img.name.replace("_image_", "_groundtruth_depth_", 1), gt_dir / img.name]
            gt = next((c for c in cand if c.exists()), None)
            if gt is None:
                raise InputError(f"{cand[0]}: ground-truth depth missing for {img}; add it or remove the image")
            pairs.append((img.stem, img, gt))
        return pairs
    if layout == "nyuv2" and next(root.rglob("sync_depth_*.png"), None) is not None:
        for img in sorted(root.rglob("rgb_*.jpg")) + sorted(root.rglob("rgb_*.png")):
            gt = img.parent / f"sync_depth_{img.stem[len('rgb_') :]}.png"
            if not gt.exists():
                raise InputError(f"{gt}: ground-truth depth missing for {img}; add it or remove the image")
            rel = img.parent.relative_to(root)
            name = "_".join([*rel.parts, img.stem]) if rel.parts else img.stem
            pairs.append((name, img, gt))
        return pairs
    img_dir = root / "rgb" if (root / "rgb").is_dir() else root / "image"
    depth_dir = root / "depth"
    if not img_dir.is_dir() or not depth_dir.is_dir():
        raise InputError(f"{root}: expected rgb/ (or image/) and depth/ folders for layout {layout!r}")
    for img in _images_in(img_dir):
        gt = _find_depth(depth_dir, img.stem, (".npy", ".png", ".pfm", ".tif", ".tiff"))
        if gt is None:
            raise InputError(f"{depth_dir / (img.stem + '.npy')}: ground-truth depth missing for {img}")
        pairs.append((img.stem, img, gt))
    return pairs


def _read_eth3d_depth(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """ETH3D raw float32 depth (H·W values, row-major) of the image's shape."""
    if path.suffix.lower() == ".npy":
        return read_depth(path)
    raw = np.fromfile(path, dtype="<f4")
    if raw.size != shape[0] * shape[1]:
        raise InputError(
            f"{path}: holds {raw.size} float32 values but its image is {shape[1]}x{shape[0]}; "
            "use the undistorted images that match ground_truth_masked"
        )
    return raw.reshape(shape)


class RGBDFolder:
    """An RGB-D evaluation/training folder (see the module docstring for the trees).

    Args:
        root: the folder.
        layout: ``auto``, ``nyuv2``, ``kitti``, ``eth3d`` or ``flat``.
        crop: evaluation crop (``none``, ``eigen``, ``garg``); None = the layout's default (NYUv2 eigen,
            KITTI garg, else none).
        depth_scale: integer depth PNG units per metre; None = the layout's default (NYUv2 1000, KITTI 256).
        min_depth / max_depth: valid ground-truth range in m; None = the layout's default.

    ``load(i)`` returns numpy arrays: ``name``, ``image`` (H, W, 3) float32, ``depth`` (H, W) metres with NaN
    invalid, ``valid`` (finite, > 0, within the range), ``eval_mask`` (valid and inside the crop).
    ``dataset[i]`` returns the same as torch tensors (depth 0 where invalid).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        layout: str = "auto",
        crop: str | None = None,
        depth_scale: float | None = None,
        min_depth: float | None = None,
        max_depth: float | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise InputError(f"{self.root}: RGB-D folder not found; check the path")
        if layout not in LAYOUTS:
            raise InputError(f"--layout: unknown layout {layout!r}; use one of {', '.join(LAYOUTS)}")
        self.layout = detect_layout(self.root) if layout == "auto" else layout
        d = LAYOUT_DEFAULTS[self.layout]
        self.crop = crop if crop is not None else d["crop"]
        if self.crop not in CROPS:
            raise InputError(f"--crop: unknown crop {self.crop!r}; use none, eigen or garg")
        self.depth_scale = depth_scale if depth_scale is not None else d["depth_scale"]
        self.min_depth = min_depth if min_depth is not None else d["min_depth"]
        self.max_depth = max_depth if max_depth is not None else d["max_depth"]
        self.samples = _pairs(self.root, self.layout)
        if not self.samples:
            raise InputError(f"{self.root}: no image/depth pairs found for layout {self.layout!r}; see docs/data.md")

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> dict[str, Any]:
        """Sample ``index`` as numpy arrays (see the class docstring)."""
        name, img_path, depth_path = self.samples[index]
        image = read_image(img_path)
        shape = image.shape[:2]
        if self.layout == "eth3d":
            depth = _read_eth3d_depth(depth_path, shape)
        else:
            depth = read_depth(depth_path, scale=self.depth_scale)
        if depth.shape != shape:
            raise InputError(
                f"{depth_path}: depth is {depth.shape[1]}x{depth.shape[0]} but {img_path.name} is "
                f"{shape[1]}x{shape[0]}; sizes must match"
            )
        depth = depth.astype(np.float32)
        valid = np.isfinite(depth) & (depth > 0)
        if self.min_depth is not None:
            valid &= depth >= self.min_depth
        if self.max_depth is not None:
            valid &= depth <= self.max_depth
        depth = np.where(valid, depth, np.nan).astype(np.float32)
        return {
            "name": name,
            "image": image,
            "depth": depth,
            "valid": valid,
            "eval_mask": valid & crop_mask(shape, self.crop, self.layout),
        }

    def __getitem__(self, index: int) -> dict[str, Any]:
        import torch

        s = self.load(index)
        return {
            "name": s["name"],
            "image": torch.from_numpy(s["image"].transpose(2, 0, 1).copy()),
            "depth": torch.from_numpy(np.nan_to_num(s["depth"], nan=0.0)),
            "valid": torch.from_numpy(s["valid"]),
            "eval_mask": torch.from_numpy(s["eval_mask"]),
        }
