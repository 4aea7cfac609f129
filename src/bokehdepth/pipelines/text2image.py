"""Bokeh Diffusion text-to-image on FLUX.1-dev with the bokeh-level adapter (shared/reference/bokeh-diffusion.md §6).

The published loop (``inference_flux.py::generate_image``) on diffusers' ``FluxPipeline`` components:

- one CPU generator seeded with ``seed`` per target (every target restarts from the same seed); one noise draw
  of shape (1, 16, 2·(H//16), 2·(W//16)) in the transformer dtype, *expanded* to the batch;
- plain mode: batch 1 with label ``target/30``; grounded mode (``num_grounding_steps > 0`` and a pivot): batch 2
  (target, pivot) from identical noise, the grounded attention substitution (:func:`~bokehdepth.models.
  flux_adapter.grounded_swap`, ids [1, 1]) during the first ``num_grounding_steps`` steps, and at the end a LAB
  colour transfer pivot → target matching the mean only;
- sigmas ``linspace(1, 1/N, N)`` with the resolution-dependent shift ``mu``; distilled guidance (3.0);
- real CFG when ``true_cfg > 1``: a second pass with the null label −1, the negative prompt
  "bad quality, low resolution", guidance 1.0 and no swap, ``pred = neg + true_cfg·(pos − neg)``.

Outputs are named as the reference: ``<label>-bokeh<T>.jpg`` (:func:`output_name`).
"""

from __future__ import annotations

import glob
import os
import string
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = [
    "NEGATIVE_PROMPT",
    "BokehText2Image",
    "GenerationSettings",
    "output_label",
    "output_name",
    "result_outputs",
    "write_results",
]

NEGATIVE_PROMPT = "bad quality, low resolution"
_PUNCT = str.maketrans("", "", string.punctuation)


def output_label(prompt: str) -> str:
    """The reference file label: lower-cased, ASCII punctuation removed, spaces → ``_``, first 75 characters."""
    return prompt.lower().translate(_PUNCT).replace(" ", "_")[:75]


def output_name(prompt: str, target: float) -> str:
    """``<label>-bokeh<T>.jpg`` with ``T`` = target formatted ``.0f`` (12.4 and 12.0 share a name, as published)."""
    return f"{output_label(prompt)}-bokeh{float(target):.0f}.jpg"


@dataclass
class GenerationSettings:
    """Settings of one generation (defaults = the reference script's).

    Attributes:
        steps: denoising steps (30).
        guidance: FLUX distilled-guidance scale (3.0; 3–6 recommended).
        true_cfg: real classifier-free guidance scale; on only when > 1 (two transformer passes per step).
        height, width: output size in px, multiples of 16 (512 × 512).
        max_sequence_length: T5 tokens (512).
        negative_prompt: used only when ``true_cfg > 1``.
    """

    steps: int = 30
    guidance: float = 3.0
    true_cfg: float = 1.0
    height: int = 512
    width: int = 512
    max_sequence_length: int = 512
    negative_prompt: str = NEGATIVE_PROMPT

    def check(self) -> None:
        if self.height % 16 or self.width % 16 or self.height < 16 or self.width < 16:
            raise InputError(f"--height/--width: must be positive multiples of 16 px, got {self.height}x{self.width}")
        if self.steps < 1:
            raise InputError(f"--steps: needs at least 1 step, got {self.steps}")
        if not np.isfinite(self.guidance) or not np.isfinite(self.true_cfg):
            raise InputError("--guidance/--true-cfg: must be finite numbers")


class BokehText2Image:
    """FLUX.1-dev + Bokeh Diffusion adapter.

    Args:
        weights: adapter folder with ``config.json`` + ``model.safetensors`` (None: ``$BOKEHDEPTH_WEIGHTS``).
        base: local FLUX.1-dev folder (diffusers layout with ``model_index.json``).
        device, dtype: ``"auto"`` dtype = bf16 on CUDA (as published), fp32 on CPU.
        cpu_offload: ``enable_model_cpu_offload`` for GPUs with less memory than the ~35 GB bf16 needs.
        vae_tiling: ``vae.enable_tiling()``.

    Raises:
        MissingWeightsError: adapter files or base folder missing, checked before anything is loaded.
    """

    def __init__(
        self,
        weights: str | os.PathLike | None = None,
        base: str | os.PathLike | None = None,
        device: str = "cpu",
        dtype: Any = "auto",
        cpu_offload: bool = False,
        vae_tiling: bool = False,
    ):
        from ..models.bokeh_diffusion import BASE_REPO, _locate, load_bokeh_diffusion_adapter
        from ..models.flux_adapter import check_base_folder
        from .flux_loading import load_adapted_pipeline

        _locate(weights)  # fail fast on missing adapter files
        base_dir = check_base_folder(base, BASE_REPO)
        from diffusers import FluxPipeline

        pipe, adapter = load_adapted_pipeline(
            FluxPipeline, base_dir, load_bokeh_diffusion_adapter, weights,
            dtype=dtype, device=device, cpu_offload=cpu_offload, vae_tiling=vae_tiling,
        )  # fmt: skip
        self.pipe, self.adapter = pipe, adapter
        self.info = {"weights": str(weights), "base": str(base_dir)}

    @classmethod
    def from_pipeline(cls, pipe, adapter) -> BokehText2Image:
        """Wrap an existing ``FluxPipeline`` and :class:`FluxBokehAdapter` (installed here if needed)."""
        self = cls.__new__(cls)
        if not adapter.is_installed:
            adapter.install(pipe.transformer)
        self.pipe, self.adapter, self.info = pipe, adapter, {}
        return self

    # ------------------------------------------------------------------------------------------------------
    def generate(
        self,
        prompt: str,
        target: float,
        pivot: float | None = None,
        num_grounding_steps: int = 0,
        seed: int = 65578,
        settings: GenerationSettings | None = None,
        progress: bool = False,
        return_pivot: bool = False,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """One image at bokeh level ``target`` (0–30), float32 (H, W, 3) in [0, 1].

        Grounded iff ``num_grounding_steps > 0`` and ``pivot`` is given (a pivot with 0 steps is ignored, as
        published; steps > 0 without a pivot is rejected). With ``return_pivot`` (grounded mode only) the pivot
        image is returned too: ``(target_image, pivot_image)``.
        """
        from ..models.bokeh_diffusion import level_to_input
        from .color_transfer import color_transfer_lab

        s = settings or GenerationSettings()
        s.check()
        if not isinstance(prompt, str) or not prompt.strip():
            raise InputError("--prompt: give a non-empty text prompt")
        num_grounding_steps = int(num_grounding_steps)
        if num_grounding_steps < 0:
            raise InputError(f"--num-grounding-steps: must be >= 0, got {num_grounding_steps}")
        if num_grounding_steps > 0 and pivot is None:
            raise InputError("--num-grounding-steps > 0 needs --bokeh-pivot (the level whose layout is shared)")
        grounded = num_grounding_steps > 0
        labels = [level_to_input(target)] + ([level_to_input(pivot)] if grounded else [])
        images = self._denoise(prompt, labels, num_grounding_steps, seed, s, progress)
        if not grounded:
            return images[0]
        out = color_transfer_lab(images[1], images[0], adjust_std=False)
        return (out, images[1]) if return_pivot else out

    def _denoise(
        self,
        prompt: str,
        labels: Sequence[float],
        num_grounding_steps: int,
        seed: int,
        s: GenerationSettings,
        progress: bool,
    ) -> np.ndarray:
        """The published loop on a batch of ``len(labels)`` samples (index 0 target, 1 pivot); (n, H, W, 3)."""
        import torch
        from diffusers.pipelines.flux.pipeline_flux import calculate_shift, retrieve_timesteps
        from diffusers.utils.torch_utils import randn_tensor
        from tqdm.auto import tqdm

        pipe, adapter = self.pipe, self.adapter
        tr, sched = pipe.transformer, pipe.scheduler
        n = len(labels)
        device = pipe._execution_device
        dtype = tr.dtype
        with torch.no_grad():
            embeds = adapter.embed(labels).to(dtype)
            null_embeds = adapter.embed([-1.0] * n).to(dtype)
            pe, pooled, text_ids = pipe.encode_prompt(
                prompt=prompt,
                prompt_2=None,
                device=device,
                num_images_per_prompt=n,
                max_sequence_length=s.max_sequence_length,
            )
            do_cfg = s.true_cfg > 1.0
            if do_cfg:
                neg_pe, neg_pooled, neg_ids = pipe.encode_prompt(
                    prompt=s.negative_prompt,
                    prompt_2=None,
                    device=device,
                    num_images_per_prompt=n,
                    max_sequence_length=s.max_sequence_length,
                )
            channels = tr.config.in_channels // 4
            lat_h, lat_w = 2 * (s.height // (pipe.vae_scale_factor * 2)), 2 * (s.width // (pipe.vae_scale_factor * 2))
            gen = torch.Generator("cpu").manual_seed(int(seed))
            noise = randn_tensor((1, channels, lat_h, lat_w), generator=gen, device=torch.device("cpu"), dtype=dtype)
            noise = noise.to(device).expand(n, -1, -1, -1)
            latents = pipe._pack_latents(noise, n, channels, lat_h, lat_w)
            img_ids = pipe._prepare_latent_image_ids(n, lat_h // 2, lat_w // 2, device, dtype)
            sigmas = np.linspace(1.0, 1.0 / s.steps, s.steps)
            mu = calculate_shift(
                latents.shape[1],
                sched.config.get("base_image_seq_len", 256),
                sched.config.get("max_image_seq_len", 4096),
                sched.config.get("base_shift", 0.5),
                sched.config.get("max_shift", 1.15),
            )
            timesteps, _ = retrieve_timesteps(sched, s.steps, device, sigmas=sigmas, mu=mu)
            sched.set_begin_index(0)
            guidance = torch.full([n], s.guidance, device=device, dtype=torch.float32)
            swap_ids = [1, 1] if num_grounding_steps > 0 else None
            for i, t in enumerate(tqdm(timesteps, desc="generate", disable=not progress, leave=False)):
                timestep = t.expand(n).to(dtype)
                kwargs = adapter.attention_kwargs(embeds, i < num_grounding_steps, swap_ids)
                pred = tr(
                    hidden_states=latents,
                    timestep=timestep / 1000,
                    guidance=guidance,
                    pooled_projections=pooled,
                    encoder_hidden_states=pe,
                    txt_ids=text_ids,
                    img_ids=img_ids,
                    joint_attention_kwargs=kwargs,
                    return_dict=False,
                )[0]
                if do_cfg:
                    neg = tr(
                        hidden_states=latents,
                        timestep=timestep / 1000,
                        guidance=torch.ones_like(guidance),
                        pooled_projections=neg_pooled,
                        encoder_hidden_states=neg_pe,
                        txt_ids=neg_ids,
                        img_ids=img_ids,
                        joint_attention_kwargs=adapter.attention_kwargs(null_embeds),
                        return_dict=False,
                    )[0]
                    pred = neg + s.true_cfg * (pred - neg)
                latents = sched.step(pred, t, latents, return_dict=False)[0]
            lat = pipe._unpack_latents(latents, s.height, s.width, pipe.vae_scale_factor)
            lat = lat / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
            decoded = pipe.vae.decode(lat.to(pipe.vae.dtype), return_dict=False)[0]
            images = pipe.image_processor.postprocess(decoded, output_type="np")
        pipe.maybe_free_model_hooks()
        return np.asarray(images, dtype=np.float32)

    def generate_levels(
        self,
        prompt: str,
        targets: Sequence[float],
        pivot: float | None = None,
        num_grounding_steps: int = 0,
        seed: int = 65578,
        settings: GenerationSettings | None = None,
        progress: bool = False,
    ) -> list[np.ndarray]:
        """One image per target, each from the same seed (the pair is regenerated per target, as published)."""
        if not targets:
            raise InputError("--bokeh-target: give at least one level (0–30)")
        out = []
        for target in tqdm_iter(targets, progress):
            out.append(self.generate(prompt, target, pivot, num_grounding_steps, seed, settings, progress=False))
        return out


def tqdm_iter(items: Sequence[Any], progress: bool):
    """``items`` wrapped in a tqdm bar when ``progress``."""
    from tqdm.auto import tqdm

    return tqdm(items, desc="levels", disable=not progress)


def result_outputs(prompt: str, targets: Sequence[float]) -> tuple[str, ...]:
    """What :func:`write_results` owns in its output folder: this prompt's ``<label>-bokeh<T>.jpg`` for these
    targets, ``contact_sheet.png`` and ``generation.json`` (rewritten by every run). Never a pattern: another
    prompt's images in a shared folder, or this prompt's other levels, are kept on a rerun."""
    names = dict.fromkeys(glob.escape(output_name(prompt, t)) for t in targets)
    return (*names, "contact_sheet.png", "generation.json")


def write_results(
    out_dir: str | os.PathLike,
    prompt: str,
    targets: Sequence[float],
    images: Sequence[np.ndarray],
    info: dict[str, Any] | None = None,
) -> list[Path]:
    """Write ``<label>-bokeh<T>.jpg`` per target (JPEG quality 75, PIL's default as the reference), a
    ``contact_sheet.png`` of the levels and ``generation.json``, atomically. Returns the image paths."""
    from ..io import atomic_dir, write_image, write_json
    from ..viz import contact_sheet

    names = [output_name(prompt, t) for t in targets]
    with atomic_dir(out_dir, owned=result_outputs(prompt, targets)) as tmp:
        for name, image in zip(names, images):  # same name twice: the later target wins, as published
            write_image(tmp / name, image, quality=75)
        sheet = contact_sheet(list(images), [f"bokeh {float(t):g}" for t in targets])
        write_image(tmp / "contact_sheet.png", sheet)
        write_json(
            tmp / "generation.json",
            {"prompt": prompt, "targets": [float(t) for t in targets], "files": names, **(info or {})},
        )
    return [Path(out_dir) / n for n in dict.fromkeys(names)]
