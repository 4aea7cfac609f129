"""The ``udv2-dsfa`` depth backend: images and stacks in, metric depth at the input size out.

Reproduces the reference Stage-2 (``pipeline.py``, shared/reference/bokehdepth.md §4):

- the image and every stack frame (values 0–255) are zero-padded to an aspect in [0.5, 2.5], resized bilinearly
  (``align_corners=False``) to H·W ∈ [2e5, 6e5] with sides rounded up to multiples of 14, then /255 and
  ImageNet-normalised;
- the stack passed to the model holds only the non-reference frames, in stack order, with their raw K as
  [1, N]; the model prepends the reference with K = 0;
- camera: the user's intrinsics, else the reference's fake pinhole (fx = fy = 0.7·W, centred), padded and
  scaled by the unrounded factor; its rays replace the predicted ones;
- depth and confidence are resized back bilinearly (``align_corners=False``) to the padded size and the padding
  is cropped. (The reference ``pipeline.py`` resizes to the *unpadded* size before cropping, which only matters
  for aspects outside [0.5, 2.5], where its output is smaller than the input; this backend follows
  ``UniDepthV2DSFA.infer`` there, so the output is always H×W.)
- fp16 autocast on CUDA by default, as the reference; float32 on CPU.

Metric stacks (``K_convention == "metric"``, px·m) are converted to the normalised convention the model was
trained on: ``K_n = K·(disp_max − disp_min)·512/W`` (``lens.metric_to_normalized_K``), with the disparity span
estimated from a first, single-frame pass of the same model: the 1st and 99th percentiles of 1/depth over the
image (a robust stand-in for the per-image min–max normalisation used in training).
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InputError
from .unidepth_geometry import (
    Geometry,
    default_intrinsics,
    intrinsics_to_input,
    intrinsics_to_network,
    plan_geometry,
    resize_back,
)

if TYPE_CHECKING:
    from ..io import Stack
    from ..pipelines.depth import DepthResult
    from .unidepth import UniDepthV2DSFA

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "SPAN_PERCENTILES", "UniDepthPredictor"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SPAN_PERCENTILES = (1.0, 99.0)


class UniDepthPredictor:
    """Runs a loaded :class:`UniDepthV2DSFA` on one image (+ stack) with the reference pre/post-processing."""

    backend = "udv2-dsfa"

    def __init__(
        self,
        model: UniDepthV2DSFA,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        info: dict | None = None,
    ):
        self.model = model.eval()
        self.device = torch.device(device)
        self.dtype = dtype
        self.info = dict(info or {})
        self.cfg = model.cfg

    # -- pieces ---------------------------------------------------------------------------------------------
    def geometry(self, height: int, width: int) -> Geometry:
        """Padding/resize plan for an input of ``height``×``width`` px."""
        return plan_geometry(height, width, self.cfg.ratio_bounds, self.cfg.pixel_bounds, self.cfg.vit.patch_size)

    def to_network(self, images: np.ndarray, geom: Geometry) -> torch.Tensor:
        """(N, H, W, 3) floats in [0, 1] → [N, 3, h, w] network input: ×255, zero pad, bilinear resize, /255,
        ImageNet normalisation (the reference order)."""
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32)).permute(0, 3, 1, 2).to(self.device)
        x = F.pad(x * 255.0, geom.paddings, value=0.0)
        x = F.interpolate(x, size=geom.network_hw, mode="bilinear", align_corners=False) / 255.0
        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1)
        return (x - mean) / std

    def _autocast(self):
        dtype = self.dtype
        if dtype is None and self.device.type == "cuda":
            dtype = torch.float16
        if dtype is None or dtype == torch.float32:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=dtype)

    def _forward(self, image, frames, k, K_input, geom, single_frame):
        x = self.to_network(image[None], geom)
        stack = self.to_network(frames, geom)[None] if frames is not None and len(frames) else None
        k_t = torch.as_tensor(k, dtype=torch.float32, device=self.device)[None] if stack is not None else None
        K_net = intrinsics_to_network(torch.as_tensor(K_input, dtype=torch.float32), geom)[None].to(self.device)
        with torch.inference_mode(), self._autocast():
            out = self.model(x, stack, k_t, intrinsics=K_net, single_frame=single_frame)
        depth = resize_back(out["depth"].float(), geom)[0, 0].cpu().numpy()
        conf = resize_back(out["confidence"].float(), geom)[0, 0].cpu().numpy()
        K_pred = intrinsics_to_input(out["intrinsics"][0].float().cpu(), geom).numpy()
        return depth, conf, K_pred

    @staticmethod
    def disparity_span(depth: np.ndarray, percentiles: tuple[float, float] = SPAN_PERCENTILES) -> tuple[float, float]:
        """(disp_min, disp_max) in 1/m: the given percentiles of 1/depth over finite positive depth."""
        d = depth[np.isfinite(depth) & (depth > 0)]
        if d.size == 0:
            raise InputError("udv2-dsfa: no valid depth to estimate the disparity span of a metric stack")
        lo, hi = np.percentile(1.0 / d, percentiles)
        return float(lo), float(hi)

    # -- public ---------------------------------------------------------------------------------------------
    def predict(
        self,
        image: np.ndarray | None,
        stack: Stack | None = None,
        single_frame: bool = False,
        intrinsics: np.ndarray | None = None,
    ) -> DepthResult:
        """Metric depth of the sharp reference.

        Args:
            image: (H, W, 3) float RGB in [0, 1], the sharp reference; None uses the stack's reference frame.
            stack: its bokeh stack (``read_stack``), split by ``pipelines.depth.split_stack``: the reference
                frame (and any other K = 0 frame) is dropped, the model prepends the reference with K = 0.
                None runs the model on the image alone.
            single_frame: bypass the DSFA blocks (the ablation); the stack is not encoded.
            intrinsics: optional (3, 3) pinhole matrix of the input in px; default fx = fy = 0.7·W, centred.

        Returns:
            ``DepthResult``: depth (H, W) float32 metres (NaN where not finite), confidence (H, W), info.
        """
        from ..io import validate_image
        from ..pipelines.depth import DepthResult, split_stack

        t0 = time.perf_counter()
        inp = split_stack(image, stack)
        image = validate_image(inp.image)
        h, w = image.shape[:2]
        geom = self.geometry(h, w)
        K_input = self._check_intrinsics(intrinsics, h, w)
        info: dict[str, Any] = {
            "backend": self.backend,
            **self.info,
            "single_frame": bool(single_frame),
            "n_frames": 0 if single_frame else int(len(inp.frames)),
            "network_size": list(geom.network_hw),
            "paddings_lrtb": list(geom.paddings),
            "resize_factor": geom.factor,
            "camera": K_input.tolist(),
            "camera_source": "user" if intrinsics is not None else "default fx=fy=0.7*W, centred",
        }
        frames, k = None, None
        if len(inp.frames) and not single_frame:
            frames, k = inp.frames, inp.K.astype(np.float32)
            info.update(K_convention=inp.convention, K_stack=k.tolist())
            if inp.convention == "metric":
                k = self._metric_to_normalized(image, k, K_input, geom, w, info)
            info["K_model"] = [float(v) for v in k]
        depth, conf, K_pred = self._forward(image, frames, k, K_input, geom, single_frame)
        depth = np.where(np.isfinite(depth) & (depth > 0), depth, np.nan).astype(np.float32)
        info["intrinsics_predicted"] = K_pred.tolist()
        info["seconds"] = time.perf_counter() - t0
        return DepthResult(depth=depth, confidence=conf.astype(np.float32), info=info)

    def _metric_to_normalized(self, image, k, K_input, geom, stack_width, info) -> np.ndarray:
        from ..lens import metric_to_normalized_K

        depth0, _, _ = self._forward(image, None, None, K_input, geom, True)
        lo, hi = self.disparity_span(depth0)
        if not hi > lo:
            raise InputError("udv2-dsfa: the single-frame depth is flat; cannot convert a metric stack's K")
        info["disparity_span"] = {"disp_min": lo, "disp_max": hi, "percentiles": list(SPAN_PERCENTILES)}
        return np.asarray(metric_to_normalized_K(k.astype(np.float64), lo, hi, stack_width), dtype=np.float32)

    @staticmethod
    def _check_intrinsics(intrinsics: np.ndarray | None, h: int, w: int) -> np.ndarray:
        if intrinsics is None:
            return default_intrinsics(h, w).numpy()
        K = np.asarray(intrinsics, dtype=np.float32)
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            raise InputError(f"intrinsics: expected a finite 3x3 pinhole matrix with fx, fy > 0 px, got {K.tolist()}")
        return K
