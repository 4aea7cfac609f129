"""Stage-1 Kontext backend: a normalised-K bokeh stack from one sharp image with FLUX.1-Kontext-dev + the
BokehDepth adapter (``bokeh_lora.bin``), as ``run_inference.sh`` runs it (shared/reference/bokehdepth.md §3):

- the reference is resized with LANCZOS to the working size (512×512 by default; each side floored to a
  multiple of 16) and passed to diffusers' ``FluxKontextPipeline`` with ``max_area = h·w`` and
  ``_auto_resize=False`` (so Kontext neither rescales the output to ~1024² nor the reference);
- ONE batched call for all K: prompt ``PROMPT_TEMPLATE`` per K, N CPU generators all seeded with ``seed``
  (every K starts from the same noise, so frames stay aligned), the K token ``clamp(K, 1, 30)/30``;
- 50 steps, distilled guidance 7.0, ``true_cfg_scale`` 1 (no negative prompt), bf16 on GPU;
- LAB colour transfer ref → frame matching mean and std;
- unlike the reference (which keeps 512×512), frames are resized back to the input's size and the sharp input
  is frame 0 with K = 0 (the stack folder contract); ``K_convention = "normalized"``, ``source = "generated"``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ..errors import InputError
from ..io import Stack, validate_image

__all__ = ["DEFAULT_PROMPT_TEMPLATE", "KontextSettings", "KontextStackGenerator", "working_size"]

DEFAULT_PROMPT_TEMPLATE = (
    "Set dof_cond = {value:.2f} (stronger background defocus); preserve subject sharpness; "
    "keep composition, lighting, and colors unchanged."
)


@dataclass
class KontextSettings:
    """Generation settings (defaults = the published run_inference.sh).

    Attributes:
        size: working (height, width) in px, each floored to a multiple of 16; None keeps the input's aspect
            ratio at an area of 512² px.
        steps: denoising steps (50).
        guidance: FLUX distilled-guidance scale (7.0).
        prompt_template: format string with ``{value}`` (raw K) and optionally ``{aperture}`` (max(1, 30/K)).
        color_transfer: LAB mean+std transfer from the reference to each frame (on).
        max_sequence_length: T5 tokens (512).
    """

    size: tuple[int, int] | None = (512, 512)
    steps: int = 50
    guidance: float = 7.0
    prompt_template: str = DEFAULT_PROMPT_TEMPLATE
    color_transfer: bool = True
    max_sequence_length: int = 512


def working_size(height: int, width: int, size: tuple[int, int] | None, multiple: int = 16) -> tuple[int, int]:
    """(h, w) px the model runs at: ``size`` floored to ``multiple``, or the input's aspect at area 512²."""
    if size is None:
        scale = (512 * 512 / (height * width)) ** 0.5
        size = (round(height * scale), round(width * scale))
    h, w = (int(s) // multiple * multiple for s in size)
    if h < multiple or w < multiple:
        raise InputError(f"working size {size} is too small; each side needs at least {multiple} px")
    return h, w


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8))


def _resize(image: np.ndarray, height: int, width: int) -> np.ndarray:
    """LANCZOS resize of a float (H, W, 3) image in [0, 1] (8-bit, as the reference)."""
    from PIL import Image

    if image.shape[:2] == (height, width):
        return image.astype(np.float32)
    return np.asarray(_pil(image).resize((width, height), Image.LANCZOS), dtype=np.float32) / 255.0


class KontextStackGenerator:
    """FLUX.1-Kontext-dev + BokehDepth adapter stack generator.

    Args:
        weights: ``bokeh_lora.bin`` or the folder holding it (None: ``$BOKEHDEPTH_WEIGHTS``).
        base: local FLUX.1-Kontext-dev folder (diffusers layout, ``model_index.json``).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` …
        dtype: ``"auto"`` (bf16 on CUDA as published, fp32 on CPU), ``"bf16"``, ``"fp16"``, ``"fp32"``.
        cpu_offload: ``enable_model_cpu_offload`` (smaller GPUs; keeps one component on the GPU at a time).
        vae_tiling: ``vae.enable_tiling()`` (less memory for the VAE at large sizes).
        settings: :class:`KontextSettings` (or pass its fields as keyword arguments).

    Raises:
        MissingWeightsError: ``bokeh_lora.bin`` or the base folder is missing (names the repository and the
            fetch command). Both are checked before anything is loaded.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        base: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: Any = "auto",
        cpu_offload: bool = False,
        vae_tiling: bool = False,
        settings: KontextSettings | None = None,
        **overrides: Any,
    ):
        from ..models.checkpoints import resolve_weights
        from ..models.flux_adapter import check_base_folder
        from ..models.kontext_adapter import BASE_REPO, PUBLISHED, load_kontext_adapter

        resolve_weights(weights, PUBLISHED)  # fail fast, before the (large) base model loads
        base_dir = check_base_folder(base, BASE_REPO)
        from diffusers import FluxKontextPipeline

        from .flux_loading import load_adapted_pipeline

        pipe, adapter = load_adapted_pipeline(
            FluxKontextPipeline, base_dir, load_kontext_adapter, weights,
            dtype=dtype, device=device, cpu_offload=cpu_offload, vae_tiling=vae_tiling,
        )  # fmt: skip
        self._setup(pipe, adapter, settings, overrides)
        self.info["weights"], self.info["base"] = str(resolve_weights(weights, PUBLISHED)), str(base_dir)

    @classmethod
    def from_pipeline(cls, pipe, adapter, settings: KontextSettings | None = None, **overrides: Any):
        """Wrap an existing ``FluxKontextPipeline`` and a :class:`FluxBokehAdapter` (installed here if needed)."""
        self = cls.__new__(cls)
        if not adapter.is_installed:
            adapter.install(pipe.transformer)
        self._setup(pipe, adapter, settings, overrides)
        return self

    def _setup(self, pipe, adapter, settings: KontextSettings | None, overrides: dict[str, Any]) -> None:
        settings = settings or KontextSettings()
        unknown = set(overrides) - set(KontextSettings.__dataclass_fields__)
        if unknown:
            raise InputError(f"KontextStackGenerator: unknown settings {sorted(unknown)}")
        self.settings = KontextSettings(**{**asdict(settings), **overrides})
        self.pipe, self.adapter = pipe, adapter
        self.info: dict[str, Any] = {"backend": "kontext"}

    def prompts(self, Ks: Sequence[float]) -> list[str]:
        """One prompt per K: the template with ``{value}`` = raw K and ``{aperture}`` = max(1, 30/K)."""
        return [self.settings.prompt_template.format(value=k, aperture=max(1.0, 30.0 / max(k, 1e-6))) for k in Ks]

    def generate(self, image: np.ndarray, Ks: Sequence[float], seed: int = 42, progress: bool = False) -> Stack:
        """Generate the stack.

        Args:
            image: sharp float32 RGB (H, W, 3) in [0, 1].
            Ks: blur strengths in the normalised convention (px at 512-px width per unit normalised disparity,
                published range 1–30; values outside are clamped for the K token, the prompt keeps them raw).
            seed: the seed of every K's noise (shared noise).
            progress: show diffusers' step progress bar.

        Returns:
            Stack with frame 0 = ``image`` (K = 0) and one frame per K, all at (H, W).
        """
        import torch

        from ..models.kontext_adapter import k_to_input
        from .color_transfer import color_transfer_lab

        image = validate_image(image)
        Ks = [float(k) for k in Ks]
        if not Ks or any(not np.isfinite(k) or k <= 0 for k in Ks):
            raise InputError(f"--K: give one or more finite K values > 0 (published range 1–30), got {Ks}")
        H, W = image.shape[:2]
        s = self.settings
        h, w = working_size(H, W, s.size)
        ref = _resize(image, h, w)
        t0 = time.perf_counter()
        with torch.no_grad():
            embeds = self.adapter.embed(k_to_input(Ks))
        generators = [torch.Generator("cpu").manual_seed(int(seed)) for _ in Ks]
        self.pipe.set_progress_bar_config(disable=not progress, desc="kontext")
        out = self.pipe(
            image=_pil(ref),
            prompt=self.prompts(Ks),
            height=h,
            width=w,
            num_inference_steps=s.steps,
            guidance_scale=s.guidance,
            generator=generators,
            joint_attention_kwargs=self.adapter.attention_kwargs(embeds),
            max_area=h * w,
            _auto_resize=False,
            max_sequence_length=s.max_sequence_length,
            output_type="np",
        ).images
        frames = []
        for frame in np.asarray(out, dtype=np.float32):
            if s.color_transfer:
                frame = color_transfer_lab(ref, frame, adjust_std=True)
            frames.append(_resize(frame, H, W))
        info = {
            **self.info,
            "seed": int(seed),
            "working_size": [h, w],
            "steps": s.steps,
            "guidance": s.guidance,
            "prompt_template": s.prompt_template,
            "color_transfer": s.color_transfer,
            "seconds": round(time.perf_counter() - t0, 3),
        }
        return Stack(
            frames=[image] + frames,
            K=[0.0] + Ks,
            disp_focus=None,
            reference=0,
            source="generated",
            K_convention="normalized",
            extra={"generator": info},
        )
