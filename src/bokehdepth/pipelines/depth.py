"""Stage-2: metric depth from an image and its bokeh stack, through any depth backend.

``load_depth_predictor(backend, weights, device)`` returns an object with
``.predict(image, stack, single_frame=False) -> DepthResult``. Backends: ``compact`` (embedded default, CPU),
``dav2-dsfa-s|b|l`` (:mod:`bokehdepth.models.depth_anything`) and ``udv2-dsfa``
(:mod:`bokehdepth.models.unidepth`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import Stack

__all__ = [
    "DEPTH_BACKENDS",
    "CompactDepthPredictor",
    "DepthResult",
    "StackInputs",
    "load_depth_predictor",
    "predict_depth",
    "split_stack",
]

DEPTH_BACKENDS = ("compact", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa")


@dataclass
class DepthResult:
    """Output of a depth predictor.

    Attributes:
        depth: (H, W) float32 metric depth in metres at the input size; NaN marks invalid pixels.
        confidence: (H, W) float32 or None.
        info: backend, weights, K handling and timings (seconds).
    """

    depth: np.ndarray
    confidence: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class StackInputs:
    """A stack split into the sharp reference and the other frames.

    Attributes:
        image: (H, W, 3) float32 sharp reference in [0, 1].
        frames: (N, H, W, 3) float32 non-reference frames (N may be 0).
        K: (N,) K of those frames, in ``convention`` units.
        convention: ``"metric"`` (px·m at width W) or ``"normalized"``.
        disp_focus: focus disparity in 1/m, or None when unknown.
    """

    image: np.ndarray
    frames: np.ndarray
    K: np.ndarray
    convention: str
    disp_focus: float | None


def split_stack(image: np.ndarray | None, stack: Stack | None) -> StackInputs:
    """Separate the reference from the stack frames and check sizes.

    ``image`` (the user's sharp input) wins over the stack's reference frame when given; frames with K = 0
    other than the reference are dropped (they carry no defocus). Raises InputError when the image and the
    stack differ in size.
    """
    if stack is None:
        if image is None:
            raise InputError("depth: give an image, a stack, or both")
        return StackInputs(
            np.asarray(image, np.float32), np.zeros((0, *image.shape), np.float32), np.zeros(0), "metric", None
        )
    ref = stack.frames[stack.reference] if image is None else image
    if ref.shape[:2] != stack.size:
        h, w = stack.size
        raise InputError(
            f"--stack: frames are {w}x{h} but the image is {ref.shape[1]}x{ref.shape[0]}; "
            "pass the image the stack was made from (or resize one to match)"
        )
    idx = [i for i in range(len(stack.frames)) if i != stack.reference and stack.K[i] > 0]
    frames = np.stack([stack.frames[i] for i in idx]) if idx else np.zeros((0, *ref.shape), np.float32)
    return StackInputs(
        image=np.asarray(ref, np.float32),
        frames=frames.astype(np.float32),
        K=np.asarray([stack.K[i] for i in idx], np.float64),
        convention=stack.K_convention,
        disp_focus=stack.disp_focus,
    )


class CompactDepthPredictor:
    """Predictor for the embedded compact ViT + DSFA model (:mod:`bokehdepth.models.compact_depth`)."""

    def __init__(self, weights=None, device: str = "cpu"):
        from ..models.compact_depth import DEFAULT_WEIGHTS, load_compact_depth

        self.weights = str(weights or DEFAULT_WEIGHTS)
        self.device = device
        self.model = load_compact_depth(weights, device)

    def predict(self, image: np.ndarray | None, stack: Stack | None, single_frame: bool = False) -> DepthResult:
        import torch
        import torch.nn.functional as F

        from ..models.compact_depth import focus_sign_of, prepare_k

        t0 = time.perf_counter()
        inp = split_stack(image, stack)
        h, w = inp.image.shape[:2]
        cfg = self.model.cfg
        hw, ww = _working_size(h, w, cfg.image_size, cfg.patch_size)

        def to_t(a: np.ndarray) -> torch.Tensor:
            t = torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()
            return F.interpolate(t, size=(hw, ww), mode="bilinear", antialias=True, align_corners=False)

        dev = self.device
        ref = to_t(inp.image[None]).to(dev)
        frames = to_t(inp.frames).unsqueeze(0).to(dev) if len(inp.frames) else None
        k_in = prepare_k(torch.tensor(inp.K, dtype=torch.float32)[None], inp.convention, w, ww, cfg.k_unit).to(dev)
        single = single_frame or frames is None
        metric = inp.convention == "metric" and inp.disp_focus is not None and not single
        df = torch.tensor([inp.disp_focus if metric else float("nan")], dtype=torch.float32, device=dev)
        side = focus_sign_of(stack.focus_side if stack is not None else None)
        sign = torch.tensor([side], dtype=torch.float32, device=dev)
        with torch.no_grad():
            gamma = float(stack.gamma) if stack is not None else 2.2  # the stack's encoding, for the cost volume
            out = self.model(ref, frames, k_in, single_frame=single, disp_focus=df, focus_sign=sign, gamma=gamma)
            depth = self.model.depth_from_outputs(out, df, sign)
            depth = F.interpolate(depth[:, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
        arr = depth.float().cpu().numpy().astype(np.float32)
        arr[~(np.isfinite(arr) & (arr > 0))] = np.nan
        return DepthResult(
            arr,
            None,
            {
                "backend": "compact",
                "weights": self.weights,
                "single_frame": bool(single_frame),
                "n_frames": int(len(inp.frames)),
                "K_convention": inp.convention,
                "depth_from": "disp_focus + offset" if metric else "log_depth",
                "blended_with_log_depth": bool(metric),
                "focus_side": stack.focus_side if stack is not None else None,
                "stack_gamma": gamma,
                "side_rule": "recorded focus_side" if metric and side else "relative" if metric else None,
                "working_size": [hw, ww],
                "seconds": time.perf_counter() - t0,
            },
        )


def _working_size(h: int, w: int, short: int, multiple: int) -> tuple[int, int]:
    """(H', W') with the short side ``short`` px, aspect kept, both rounded to multiples of ``multiple``."""
    s = short / min(h, w)
    return (
        max(multiple, int(round(h * s / multiple)) * multiple),
        max(multiple, int(round(w * s / multiple)) * multiple),
    )


def load_depth_predictor(backend: str = "compact", weights=None, device: str = "cpu"):
    """Build a depth predictor.

    Args:
        backend: ``compact``, ``dav2-dsfa-s|b|l`` or ``udv2-dsfa``.
        weights: file or folder of the weights (None: embedded for compact, ``$BOKEHDEPTH_WEIGHTS`` otherwise).
        device: ``"cpu"`` or ``"cuda"``.

    Raises:
        InputError: unknown backend. MissingWeightsError: released weights not on disk.
    """
    if backend == "compact":
        return CompactDepthPredictor(weights, device)
    if backend in ("dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l"):
        from ..models.depth_anything import load_predictor

        return load_predictor(backend, weights, device)
    if backend == "udv2-dsfa":
        from ..models.unidepth import load_predictor

        return load_predictor(backend, weights, device)
    raise InputError(f"--backend: unknown depth backend '{backend}'; choose one of: {', '.join(DEPTH_BACKENDS)}")


def predict_depth(
    image: np.ndarray | None,
    stack: Stack | None,
    backend: str = "compact",
    weights=None,
    device: str = "cpu",
    single_frame: bool = False,
) -> DepthResult:
    """One-shot convenience: load the backend and predict."""
    return load_depth_predictor(backend, weights, device).predict(image, stack, single_frame=single_frame)
