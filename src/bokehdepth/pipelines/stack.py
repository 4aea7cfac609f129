"""Stage-1: a bokeh stack from one sharp image, with no depth map (``bokehdepth stack``).

Two backends behind one interface (docs/internals.md "Stage-1"):

- ``"compact"`` (default, CPU, offline): :class:`CompactStackGenerator`, the small K-conditioned U-Net of
  :mod:`bokehdepth.models.compact_generator` with its embedded weights.
- ``"kontext"``: FLUX.1-Kontext-dev + the released bokeh adapter (``bokeh_lora.bin``), in
  :mod:`bokehdepth.pipelines.kontext_stack` (imported only when asked for).

``load_stack_generator(backend, weights, device, **kw).generate(image, Ks, seed, progress) -> Stack``: frame 0
is the sharp input (K = 0), then one frame per K, ``K_convention="normalized"`` (K in px at 512-px width per
unit of per-image min–max normalised disparity, shared/reference/bokehdepth.md §2), ``source="generated"``,
at the input's size and aspect.

K range policy (both backends): every K must be finite and > 0 (frame 0 is already the sharp K = 0 image);
K outside the published training range [1, 30] is clamped into it with a warning (the published inference
clamps the K embedding's input the same way), and ``stack.json`` records the clamped K that the frame shows
plus ``K_requested`` with the values asked for.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any, Literal, Protocol

import numpy as np

from ..errors import InputError
from ..io import Stack, validate_image

__all__ = [
    "DEFAULT_KS",
    "K_RANGE",
    "CompactStackGenerator",
    "StackGenerator",
    "check_Ks",
    "generate_stack",
    "load_stack_generator",
    "requested_Ks",
    "working_size",
]

DEFAULT_KS: tuple[float, ...] = (10.0, 20.0, 30.0)
"""Default stack K values (normalised convention), as the reference ``run_inference.sh``."""

K_RANGE: tuple[float, float] = (1.0, 30.0)
"""The published Stage-1 training range of normalised K."""

StackBackend = Literal["compact", "kontext"]


class StackGenerator(Protocol):
    """What every Stage-1 backend provides."""

    def generate(self, image: np.ndarray, Ks: Sequence[float], seed: int = 42, progress: bool = False) -> Stack: ...


def requested_Ks(values: Sequence[str] | str | None) -> list[float]:
    """The K list a user asked for: ``--K`` when given, else the ``K_VALUES`` environment variable
    (numbers separated by spaces or commas), else :data:`DEFAULT_KS`. Errors name where the bad value came from."""
    from ..io import parse_floats

    if values is not None and len(values) > 0:
        return parse_floats(values, "--K")
    env = os.environ.get("K_VALUES", "").strip()
    return parse_floats(env, "K_VALUES") if env else list(DEFAULT_KS)


def check_Ks(Ks: Sequence[float], flag: str = "--K") -> tuple[list[float], list[str]]:
    """Validate normalised K values; return (the values clamped to :data:`K_RANGE`, one warning per clamp).

    Raises:
        InputError: no K, a non-finite K, or K ≤ 0.
    """
    Ks = [float(k) for k in Ks]
    if not Ks:
        raise InputError(f"{flag}: give at least one K value, e.g. {flag} 10 20 30")
    lo, hi = K_RANGE
    out, notes = [], []
    for k in Ks:
        if not math.isfinite(k) or k <= 0:
            raise InputError(
                f"{flag}: K must be a finite number > 0 (normalised K, published range {lo:g}-{hi:g}); got {k:g} "
                "(frame 0 is already the sharp K = 0 image)"
            )
        c = min(max(k, lo), hi)
        if c != k:
            notes.append(
                f"{flag}: K = {k:g} is outside the published range [{lo:g}, {hi:g}] of normalised K; "
                f"clamped to {c:g} as the published inference does"
            )
        out.append(c)
    return out, notes


def working_size(height: int, width: int, short_side: int, multiple: int) -> tuple[int, int]:
    """(H, W) at which the network runs: the short side scaled down to ``short_side`` px (never up), the
    aspect kept, each side rounded to a multiple of ``multiple`` px (at least one multiple)."""
    scale = min(1.0, short_side / min(height, width))

    def rnd(n: float) -> int:
        return max(multiple, int(round(n / multiple)) * multiple)

    return rnd(height * scale), rnd(width * scale)


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float (H, W, 3) image to ``size`` = (H, W): area averaging to shrink, bicubic to enlarge."""
    import cv2

    h, w = size
    if image.shape[:2] == (h, w):
        return image
    shrink = h * w < image.shape[0] * image.shape[1]
    out = cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC)
    return np.clip(out, 0.0, 1.0).astype(np.float32)


class CompactStackGenerator:
    """The embedded compact generator as a Stage-1 backend (CPU by default).

    Args:
        weights: a compact generator safetensors file (or a folder holding ``compact_generator.safetensors``);
            None uses the embedded default.
        device: torch device string.
        short_side: the network's working short side in px (inputs smaller than this run at their own size).
        threads: torch CPU threads while generating (restored afterwards); default 1: the network is small, and
            on a CPU shared with other jobs one thread ran 3-10x faster than two (docs/stage1.md); None leaves
            torch's setting.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        device: str = "cpu",
        short_side: int = 512,
        threads: int | None = 1,
    ):
        from ..models.checkpoints import file_sha256
        from ..models.compact_generator import load_compact_generator, resolve_generator_weights

        if short_side < 16:
            raise InputError(f"--working-size: must be at least 16 px, got {short_side}")
        self.weights = resolve_generator_weights(weights)
        self.model = load_compact_generator(self.weights, device=device)
        self.device = device
        self.short_side = int(short_side)
        self.threads = threads
        self.weights_sha256 = file_sha256(self.weights)

    def generate(self, image: np.ndarray, Ks: Sequence[float], seed: int = 42, progress: bool = False) -> Stack:
        """Frame 0 = ``image`` (float32 (H, W, 3) in [0, 1]), then one frame per normalised K, at the input size.

        The network is deterministic; ``seed`` is only recorded (it matters for the Kontext backend).
        """
        import torch
        from tqdm.auto import tqdm

        image = np.clip(validate_image(image), 0.0, 1.0)
        requested = [float(k) for k in Ks]
        Ks_used, notes = check_Ks(requested)
        for note in notes:
            warnings.warn(note, stacklevel=2)
        h, w = image.shape[:2]
        wh, ww = working_size(h, w, self.short_side, self.model.size_multiple)
        work = _resize(image, (wh, ww))
        frames = [image]
        threads_before = torch.get_num_threads()
        if self.threads:
            torch.set_num_threads(self.threads)
        try:
            with torch.inference_mode():
                x = torch.from_numpy(work).permute(2, 0, 1)[None].to(self.device)
                pyramid = self.model.pyramid(x)
                for k in tqdm(Ks_used, desc="stack (compact)", unit="frame", disable=not progress):
                    kt = torch.tensor([k], dtype=torch.float32, device=self.device)
                    out = self.model.compose(x, kt, pyramid)[0].permute(1, 2, 0).cpu().numpy()
                    frames.append(_resize(np.ascontiguousarray(out, dtype=np.float32), (h, w)))
        finally:
            torch.set_num_threads(threads_before)
        extra: dict[str, Any] = {
            "backend": "compact",
            "weights": str(self.weights),
            "weights_sha256": self.weights_sha256,
            "seed": int(seed),
            "working_size": [wh, ww],
        }
        if Ks_used != requested:
            extra["K_requested"] = [0.0, *requested]
        return Stack(
            frames=frames,
            K=[0.0, *Ks_used],
            disp_focus=None,
            reference=0,
            gamma=self.model.config.gamma,
            source="generated",
            K_convention="normalized",
            extra=extra,
        )


def load_stack_generator(
    backend: StackBackend | str = "compact",
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    **kw: Any,
) -> StackGenerator:
    """A Stage-1 backend by name.

    Args:
        backend: ``"compact"`` or ``"kontext"``.
        weights: compact: a generator safetensors file or None (embedded); kontext: ``bokeh_lora.bin`` or a
            folder holding it (default ``$BOKEHDEPTH_WEIGHTS``).
        device: torch device.
        **kw: backend options (compact: ``short_side``, ``threads``; kontext: ``base``, ``dtype``, ...).

    Raises:
        InputError: unknown backend. MissingWeightsError: the Kontext adapter file is not on disk.
    """
    if backend == "compact":
        return CompactStackGenerator(weights=weights, device=device, **kw)
    if backend == "kontext":
        from ..models.checkpoints import resolve_weights
        from ..models.registry import get_backend

        adapter = resolve_weights(weights, get_backend("kontext-adapter").published)  # fails with the fetch command
        from .kontext_stack import KontextStackGenerator

        return KontextStackGenerator(weights=adapter, device=device, **kw)
    raise InputError(f"--backend: unknown stack backend '{backend}'; choose compact or kontext")


def generate_stack(
    image: np.ndarray,
    Ks: Sequence[float] = DEFAULT_KS,
    backend: StackBackend | str = "compact",
    weights: str | os.PathLike | None = None,
    device: str = "cpu",
    seed: int = 42,
    progress: bool = False,
    **kw: Any,
) -> Stack:
    """One-shot convenience: load the backend and generate one stack (see :func:`load_stack_generator`)."""
    generator = load_stack_generator(backend, weights=weights, device=device, **kw)
    return generator.generate(image, Ks, seed=seed, progress=progress)
