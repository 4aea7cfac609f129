"""The training core shared by the two FLUX bokeh adapters (Stage-1 Kontext adapter, Bokeh Diffusion).

Published recipe (shared/reference/bokehdepth.md §5; Bokeh Diffusion's training code is unreleased and its
paper describes the same data recipe): FLUX transformer, VAE and text encoders frozen; only the adapter
(level embedding + LoRA processors) trains; rectified-flow objective on VAE latents,

    x_t = (1 − σ)·x_0 + σ·ε,   σ ~ U(0, 1) (uniform timestep density),   loss = ‖v_θ(x_t, σ) − (ε − x_0)‖²,

with ``noise_offset`` 0.05 (ε += 0.05·N(0, 1) per sample and channel), distilled-guidance input 1.0, the level
dropped to −1 and the caption to "" with probability 0.1, gradient clipping 1.0, warm-up then cosine decay.
The published optimiser is Prodigy (lr 1.0); it is not a dependency here, so AdamW is used (lr 1e-4 default).
For Kontext the sharp image's latents are appended after the noisy target tokens with image-id type 1, as the
pipeline does at inference, and the loss covers the target tokens only.

accelerate runs the loop (one CPU, one GPU or many, the same code). Checkpoints are one safetensors file
(``checkpoint.safetensors``: adapter tensors, AdamW state, step in the metadata) so ``resume`` continues exactly;
the adapter is also exported in its released layout. A JSONL loss log and a tqdm bar show progress.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import InputError

__all__ = ["FluxTrainConfig", "train_flux_adapter"]

CHECKPOINT_NAME = "checkpoint.safetensors"
LOG_NAME = "loss_log.jsonl"


@dataclass
class FluxTrainConfig:
    """Settings of a FLUX adapter training run (CLI flags carry the same names).

    Attributes:
        data: manifest.jsonl or dataset folder (``bokehdepth synth`` layout: image + depth (+ mask) per record).
        out: output folder (checkpoint, exported adapter, loss log, config).
        base: local diffusers folder of the base model (FLUX.1-Kontext-dev or FLUX.1-dev).
        steps: optimiser steps.
        batch_size: samples per step and process.
        size: training resolution in px (square, multiple of 16; 512 published).
        lr: peak AdamW learning rate.
        weight_decay: AdamW weight decay (0.01 published).
        warmup: linear warm-up steps (100 published), then cosine decay to 0.
        clip: gradient-norm clip (1.0).
        rank: LoRA rank (128 published).
        context_dim, hidden_dim: bokeh-token width (768) and embedding hidden width (64).
        label_dropout: probability of replacing the level by the null label −1 (0.1).
        caption_dropout: probability of an empty prompt (0.1).
        noise_offset: per-channel noise offset (0.05).
        guidance: distilled-guidance input during training (1.0).
        K_range: (min, max) of the sampled blur level / normalised K (1, 30).
        max_sequence_length: T5 tokens (512 published; fewer is faster).
        split: manifest split to train on (None: all).
        mixed_precision: accelerate's ``no`` / ``fp16`` / ``bf16`` (bf16 published).
        gradient_checkpointing: recompute transformer activations in the backward pass (less memory).
        init_weights: adapter weights to start from (released layout); None starts from the published init.
        seed: seed of the adapter init, the data draws and the noise.
        log_every, checkpoint_every: steps between loss-log lines / resumable checkpoints (and at the end).
        resume: continue from ``out/checkpoint.safetensors``.
        device: ``cpu`` or ``cuda`` (accelerate places everything).
        progress: tqdm bar.
    """

    data: str
    out: str
    base: str | None = None
    steps: int = 1000
    batch_size: int = 4
    size: int = 512
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup: int = 100
    clip: float = 1.0
    rank: int = 128
    context_dim: int = 768
    hidden_dim: int = 64
    label_dropout: float = 0.1
    caption_dropout: float = 0.1
    noise_offset: float = 0.05
    guidance: float = 1.0
    K_range: tuple[float, float] = (1.0, 30.0)
    max_sequence_length: int = 512
    split: str | None = "train"
    mixed_precision: str = "no"
    gradient_checkpointing: bool = False
    init_weights: str | None = None
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int = 200
    resume: bool = False
    device: str = "cpu"
    progress: bool = True

    def check(self) -> None:
        if self.size % 16 or self.size < 16:
            raise InputError(f"--size: must be a multiple of 16 px, got {self.size}")
        if self.steps < 1 or self.batch_size < 1:
            raise InputError("--steps/--batch-size: must be >= 1")
        for name in ("label_dropout", "caption_dropout"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise InputError(f"--{name.replace('_', '-')}: a probability in [0, 1]")


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Learning-rate multiplier: linear warm-up over ``warmup`` steps, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / max(1, warmup)
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _save_checkpoint(path: Path, adapter, optimizer, step: int, config: dict) -> None:
    """Adapter tensors + AdamW state in one safetensors file (atomic), step and param groups in the metadata."""
    from safetensors.torch import save_file

    from ..io import atomic_file

    tensors = {f"adapter.{k}": v.detach().cpu().contiguous() for k, v in adapter.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = value.detach().cpu().reshape(value.shape).contiguous()
    meta = {"step": str(step), "param_groups": json.dumps(opt["param_groups"]), "config": json.dumps(config)}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_checkpoint(path: Path, adapter, optimizer) -> int:
    """Restore what :func:`_save_checkpoint` wrote (strict for the adapter); returns the step."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    from ..models.checkpoints import load_strict

    tensors = load_file(str(path))
    with safe_open(str(path), "pt") as f:
        meta = f.metadata() or {}
    if "step" not in meta:
        raise InputError(f"{path}: not a training checkpoint of this trainer; remove it or drop --resume")
    load_strict(adapter, {k[8:]: v for k, v in tensors.items() if k.startswith("adapter.")}, path)
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, pid, name = key.split(".", 2)
            state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
    return int(meta["step"])


def _step_module(adapter, transformer):
    """One ``nn.Module`` whose forward maps levels → bokeh tokens → transformer prediction, so that
    accelerate/DDP see a single forward holding every trainable parameter."""
    import torch

    class AdapterStep(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.adapter = adapter
            self.transformer = transformer

        def forward(self, levels, **kwargs):
            embeds = self.adapter.embed(levels).to(self.transformer.dtype)
            kwargs["joint_attention_kwargs"] = self.adapter.attention_kwargs(embeds)
            return self.transformer(**kwargs, return_dict=False)[0]

    return AdapterStep()


def train_flux_adapter(
    cfg: FluxTrainConfig,
    kind: str,
    make_prompts: Callable[[list[dict], Any], list[str]],
    to_level_input: Callable[[Any], Any],
    export: Callable[[Any, Path], Path],
) -> dict[str, Any]:
    """Train a FLUX bokeh adapter (see the module docstring).

    Args:
        cfg: settings.
        kind: ``"kontext"`` (FluxKontextPipeline; sharp image as reference tokens, target = bokeh image) or
            ``"t2i"`` (FluxPipeline; text + level → bokeh image).
        make_prompts: (records of the batch, K tensor (B,)) → one prompt per sample (before caption dropout).
        to_level_input: K tensor (B,) → embedding input (B,) (before label dropout).
        export: (adapter, out folder) → path of the adapter written in its released layout.

    Returns:
        ``{"step", "loss", "weights", "checkpoint"}``.
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from ..data import Stage1Dataset, read_manifest
    from ..models.flux_adapter import FluxAdapterConfig, FluxBokehAdapter, check_base_folder, transformer_attn_dim

    cfg.check()
    repo = "black-forest-labs/FLUX.1-Kontext-dev" if kind == "kontext" else "black-forest-labs/FLUX.1-dev"
    base = check_base_folder(cfg.base, repo)
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT_NAME
    dataset = Stage1Dataset(cfg.data, size=cfg.size, K_range=cfg.K_range, split=cfg.split, seed=cfg.seed)
    records = {r["id"]: r for r in read_manifest(cfg.data, split=cfg.split, check_files=False)}

    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision=cfg.mixed_precision)
    device = accelerator.device
    torch.manual_seed(cfg.seed)
    from diffusers import FluxKontextPipeline, FluxPipeline

    pipe_cls = FluxKontextPipeline if kind == "kontext" else FluxPipeline
    pipe = pipe_cls.from_pretrained(str(base), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    for module in (pipe.transformer, pipe.vae, pipe.text_encoder, pipe.text_encoder_2):
        module.requires_grad_(False)
        module.eval()
    pipe.vae.to(device)
    pipe.text_encoder.to(device)
    pipe.text_encoder_2.to(device)
    if cfg.gradient_checkpointing:
        pipe.transformer.enable_gradient_checkpointing()

    cond = "dof" if kind == "kontext" else "bokeh"
    adapter_cfg = FluxAdapterConfig(
        cond_name=cond,
        attn_dim=transformer_attn_dim(pipe.transformer),
        context_dim=cfg.context_dim,
        hidden_dim=cfg.hidden_dim,
        rank=cfg.rank,
        alpha=float(cfg.rank) if kind == "kontext" else None,
    )
    adapter = FluxBokehAdapter.for_transformer(pipe.transformer, adapter_cfg)
    if cfg.init_weights:
        from ..models.checkpoints import load_state_dict_file, load_strict

        load_strict(adapter, load_state_dict_file(cfg.init_weights), cfg.init_weights)
    adapter.install(pipe.transformer)
    model = _step_module(adapter, pipe.transformer)
    optimizer = torch.optim.AdamW(adapter.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    step = 0
    if cfg.resume and ckpt_path.exists():
        step = _load_checkpoint(ckpt_path, adapter, optimizer)

    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=cfg.batch_size,
        shuffle=True,
        drop_last=False,
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_config.json").write_text(json.dumps({"kind": kind, **asdict(cfg)}, indent=2) + "\n")

    scale, shift = pipe.vae.config.scaling_factor, pipe.vae.config.shift_factor
    gen = torch.Generator().manual_seed(cfg.seed + 1000 * step)
    vae_dtype = pipe.vae.dtype

    def latent_dist(images):  # (B, 3, H, W) in [0, 1] → VAE posterior over (B, C, h, w)
        return pipe.vae.encode((images * 2.0 - 1.0).to(device, vae_dtype)).latent_dist

    bar = tqdm(total=cfg.steps, initial=step, desc=f"train {kind} adapter", disable=not cfg.progress)
    loss_value, epoch, t0 = float("nan"), 0, time.perf_counter()
    log = open(out / LOG_NAME, "a")  # noqa: SIM115 (closed in finally)
    try:
        while step < cfg.steps:
            dataset.set_epoch(epoch)
            epoch += 1
            for batch in loader:
                if step >= cfg.steps:
                    break
                B = batch["K"].shape[0]
                K = batch["K"].float().cpu()
                recs = [records.get(i, {}) for i in batch["id"]]
                prompts = make_prompts(recs, K)
                drop_caption = torch.rand(B, generator=gen) < cfg.caption_dropout
                prompts = ["" if d else p for p, d in zip(prompts, drop_caption.tolist())]
                levels = to_level_input(K).float()
                levels = torch.where(torch.rand(B, generator=gen) < cfg.label_dropout, -1.0, levels)
                with torch.no_grad():
                    pe, pooled, txt_ids = pipe.encode_prompt(
                        prompt=prompts, prompt_2=None, device=device, max_sequence_length=cfg.max_sequence_length
                    )
                    x0 = (latent_dist(batch["target"]).sample() - shift) * scale
                    ref = None
                    if kind == "kontext":
                        ref = (latent_dist(batch["image"]).mode() - shift) * scale
                dtype = pipe.transformer.dtype
                x0 = x0.to(dtype)
                C, h, w = x0.shape[1:]
                noise = torch.randn(x0.shape, generator=gen).to(device, dtype)
                noise = noise + cfg.noise_offset * torch.randn((B, C, 1, 1), generator=gen).to(device, dtype)
                sigma = torch.rand(B, generator=gen).to(device, dtype)
                s4 = sigma[:, None, None, None]
                x_t = (1.0 - s4) * x0 + s4 * noise
                target = pipe._pack_latents(noise - x0, B, C, h, w)
                hidden = pipe._pack_latents(x_t, B, C, h, w)
                img_ids = pipe._prepare_latent_image_ids(B, h // 2, w // 2, device, dtype)
                n_target = hidden.shape[1]
                if ref is not None:
                    ref_ids = pipe._prepare_latent_image_ids(B, h // 2, w // 2, device, dtype)
                    ref_ids[..., 0] = 1
                    hidden = torch.cat([hidden, pipe._pack_latents(ref.to(dtype), B, C, h, w)], dim=1)
                    img_ids = torch.cat([img_ids, ref_ids], dim=0)
                with accelerator.accumulate(model):
                    pred = model(
                        levels.to(device),
                        hidden_states=hidden,
                        timestep=sigma,
                        guidance=torch.full((B,), cfg.guidance, device=device, dtype=torch.float32),
                        pooled_projections=pooled.to(dtype),
                        encoder_hidden_states=pe.to(dtype),
                        txt_ids=txt_ids,
                        img_ids=img_ids,
                    )[:, :n_target]
                    loss = torch.nn.functional.mse_loss(pred.float(), target.float())
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        accelerator.clip_grad_norm_(adapter.parameters(), cfg.clip)
                    for group in optimizer.param_groups:
                        group["lr"] = cfg.lr * lr_factor(step, cfg.warmup, cfg.steps)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                loss_value = float(loss.detach())
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}")
                if step % cfg.log_every == 0 or step == cfg.steps:
                    line = {"step": step, "loss": loss_value, "lr": optimizer.param_groups[0]["lr"]}
                    line["seconds"] = round(time.perf_counter() - t0, 2)
                    log.write(json.dumps(line) + "\n")
                    log.flush()
                if accelerator.is_main_process and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
                    _save_checkpoint(ckpt_path, accelerator.unwrap_model(model).adapter, optimizer, step, asdict(cfg))
    finally:
        bar.close()
        log.close()
    weights = export(accelerator.unwrap_model(model).adapter, out) if accelerator.is_main_process else None
    adapter.remove(pipe.transformer)
    return {"step": step, "loss": loss_value, "weights": str(weights), "checkpoint": str(ckpt_path)}


def config_from_namespace(args: Any, **defaults: Any) -> FluxTrainConfig:
    """A :class:`FluxTrainConfig` from an argparse namespace (fields it lacks keep their defaults)."""
    fields = FluxTrainConfig.__dataclass_fields__
    values = {**defaults}
    for name in fields:
        if hasattr(args, name) and getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if "progress" not in values and hasattr(args, "no_progress"):
        values["progress"] = not args.no_progress
    if values.get("split") == "all":
        values["split"] = None
    if isinstance(values.get("K_range"), list):
        values["K_range"] = tuple(values["K_range"])
    for required in ("data", "out"):
        if required not in values:
            raise InputError(f"--{required}: required")
    if values.get("base") is None and os.environ.get("BOKEHDEPTH_FLUX_BASE"):
        values["base"] = os.environ["BOKEHDEPTH_FLUX_BASE"]
    return FluxTrainConfig(**values)


def add_flux_arguments(parser: Any, include_data: bool = True) -> None:
    """Flags of :class:`FluxTrainConfig` (shared by ``train t2i`` and the Kontext adapter)."""
    d = FluxTrainConfig(data="", out="")
    if include_data:
        parser.add_argument("--data", required=True, help="manifest.jsonl or dataset folder (bokehdepth synth)")
        parser.add_argument("--out", "-o", required=True, help="output folder (checkpoint, adapter, loss log)")
    parser.add_argument("--base", default=None, help="local diffusers folder of the FLUX base model")
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimiser steps ({d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"samples per step ({d.batch_size})")
    parser.add_argument("--size", type=int, default=d.size, help=f"training resolution px, multiple of 16 ({d.size})")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"peak AdamW learning rate ({d.lr})")
    parser.add_argument("--warmup", type=int, default=d.warmup, help=f"warm-up steps ({d.warmup})")
    parser.add_argument("--rank", type=int, default=d.rank, help=f"LoRA rank ({d.rank})")
    parser.add_argument("--context-dim", type=int, default=d.context_dim, help="bokeh-token width (768)")
    parser.add_argument("--hidden-dim", type=int, default=d.hidden_dim, help="embedding hidden width (64)")
    parser.add_argument("--label-dropout", type=float, default=d.label_dropout, help="P(level → −1) (0.1)")
    parser.add_argument("--caption-dropout", type=float, default=d.caption_dropout, help="P(prompt → '') (0.1)")
    parser.add_argument("--max-sequence-length", type=int, default=d.max_sequence_length, help="T5 tokens (512)")
    parser.add_argument("--split", default=d.split, help="manifest split, 'all' for every record")
    parser.add_argument("--mixed-precision", default=d.mixed_precision, choices=["no", "fp16", "bf16"])
    parser.add_argument("--gradient-checkpointing", action="store_true", help="recompute activations (less memory)")
    parser.add_argument("--init-weights", default=None, help="start from these adapter weights")
    parser.add_argument("--seed", type=int, default=d.seed, help=f"seed ({d.seed})")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="steps between loss-log lines")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
