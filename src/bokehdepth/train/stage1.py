"""``bokehdepth train stage1``: train a Stage-1 stack generator.

- ``--model compact`` (CPU): the embedded :class:`~bokehdepth.models.compact_generator.CompactGenerator`,
  trained to imitate the classical renderer from the sharp image alone. Samples are (sharp, K, target) from
  :class:`bokehdepth.data.Stage1Dataset` (targets rendered online with the published focus convention, K ~
  U(1, 30) in the normalised convention). Loss: L1 + ``grad_weight`` · L1 of the image gradients (finite
  differences; the gradient term measures how blurred each edge is). accelerate runs the loop (one CPU, one
  GPU or many, the same code); checkpoints are safetensors and resumable; a JSONL loss log and a tqdm bar.
- ``--model kontext-adapter`` (GPU): the FLUX.1-Kontext bokeh adapter with the published rectified-flow
  objective, in :mod:`bokehdepth.train.stage1_adapter` (``train_kontext_adapter``).

Rendering a target costs far more CPU than a training step of the compact model, so by default the trainer
first renders a *bank* of ``bank_epochs`` passes over the dataset (each pass draws new K and new crops) and then
trains on random crops and flips of the bank; ``--bank-epochs 0`` renders every sample online instead.

Outputs in ``--out``: ``checkpoint.safetensors`` (model + optimiser + step, for ``--resume``),
``compact_generator.safetensors`` (the weights alone, config in the metadata: the embedded-weights format),
``loss_log.jsonl`` (one object per logged step) and ``train_config.json``. The retrain command of the
shipped weights is in docs/stage1.md.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError, OutputError

__all__ = ["CompactTrainConfig", "add_arguments", "run", "train_compact_generator"]

CHECKPOINT_NAME = "checkpoint.safetensors"
WEIGHTS_NAME = "compact_generator.safetensors"
LOG_NAME = "loss_log.jsonl"


@dataclass
class CompactTrainConfig:
    """Training settings of the compact generator (the CLI flags carry the same names and text)."""

    data: str
    """Manifest (``manifest.jsonl``) or dataset folder written by ``bokehdepth synth``/``generate_dataset``."""
    out: str
    """Output folder for checkpoints, the exported weights and the loss log."""
    steps: int = 700
    """Optimiser steps."""
    batch_size: int = 6
    """Crops per step."""
    crop: int = 192
    """Training crop size in px (a multiple of the model's size multiple, 32 by default)."""
    bank_size: int = 256
    """Size (px) at which Stage1Dataset renders bank samples (crops are taken from these)."""
    bank_epochs: int = 3
    """Passes over the dataset rendered once into a bank (new K and crop each pass); 0 = fully online."""
    split: str | None = "train"
    """Manifest split to train on (None: all records)."""
    lr: float = 3e-3
    """Peak AdamW learning rate (linear warm-up, cosine decay to 5 %)."""
    warmup: int = 30
    """Warm-up steps."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    grad_weight: float = 1.0
    """Weight of the image-gradient L1 term."""
    clip: float = 1.0
    """Gradient-norm clip."""
    seed: int = 0
    """Seed of the model init, the dataset draws and the crops."""
    log_every: int = 10
    """Steps between loss-log lines."""
    checkpoint_every: int = 50
    """Steps between resumable checkpoints (and at the end)."""
    resume: bool = False
    """Continue from ``out/checkpoint.safetensors`` if it exists."""
    threads: int | None = None
    """torch CPU threads (None: torch's default)."""
    num_workers: int = 0
    """DataLoader worker processes for online rendering."""
    device: str = "cpu"
    """``cpu`` (default) or ``cuda``; accelerate places the model."""
    model: dict[str, Any] = field(default_factory=dict)
    """Overrides of :class:`~bokehdepth.models.compact_generator.CompactGeneratorConfig` fields."""
    progress: bool = True
    """Show a tqdm bar."""
    max_minutes: float | None = None
    """Wall-clock budget of the loop in minutes: stop early (checkpoint + weights written) when it is spent."""


# ----------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------
# flags both models share; their defaults differ per model, so the parser leaves them None
_SHARED = ("steps", "batch_size", "lr", "warmup", "split", "seed", "log_every", "checkpoint_every")
# flags of one model only: (dest, flag)
_COMPACT_ONLY = (
    ("crop", "--crop"),
    ("bank_size", "--bank-size"),
    ("bank_epochs", "--bank-epochs"),
    ("grad_weight", "--grad-weight"),
    ("threads", "--threads"),
    ("num_workers", "--num-workers"),
    ("model_config", "--model-config"),
    ("max_minutes", "--max-minutes"),
)
_ADAPTER_ONLY = (
    ("base", "--base"),
    ("size", "--size"),
    ("rank", "--rank"),
    ("mixed_precision", "--mixed-precision"),
    ("gradient_checkpointing", "--gradient-checkpointing"),
    ("init_weights", "--init-weights"),
    ("max_sequence_length", "--max-sequence-length"),
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``bokehdepth train stage1`` (compact generator and, via ``--model``, the Kontext adapter)."""
    parser.add_argument(
        "--model",
        choices=("compact", "kontext-adapter"),
        default="compact",
        help="compact: the embedded CPU generator; kontext-adapter: the FLUX.1-Kontext bokeh adapter (GPU)",
    )
    parser.add_argument("--data", required=True, help="manifest.jsonl or dataset folder (bokehdepth synth)")
    parser.add_argument("--out", "-o", required=True, help="output folder (checkpoints, weights, loss log)")
    d = CompactTrainConfig(data="", out="")
    parser.add_argument("--steps", type=int, default=None, help=f"optimiser steps (compact: {d.steps})")
    parser.add_argument("--batch-size", type=int, default=None, help=f"samples per step (compact: {d.batch_size})")
    parser.add_argument("--lr", type=float, default=None, help=f"peak learning rate (compact: {d.lr})")
    parser.add_argument("--warmup", type=int, default=None, help=f"warm-up steps (compact: {d.warmup})")
    parser.add_argument("--split", default=None, help="manifest split to train on (train), 'all' for every record")
    parser.add_argument("--seed", type=int, default=None, help=f"seed (compact: {d.seed})")
    parser.add_argument("--log-every", type=int, default=None, help=f"steps between loss-log lines ({d.log_every})")
    parser.add_argument(
        "--checkpoint-every", type=int, default=None, help=f"steps between checkpoints (compact: {d.checkpoint_every})"
    )
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.safetensors")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    c = parser.add_argument_group("--model compact")
    c.add_argument("--crop", type=int, default=None, help=f"training crop in px, multiple of 32 ({d.crop})")
    c.add_argument("--bank-size", type=int, default=None, help=f"bank render size in px ({d.bank_size})")
    c.add_argument(
        "--bank-epochs",
        type=int,
        default=None,
        help=f"passes rendered once into a bank; 0 renders every sample online ({d.bank_epochs})",
    )
    c.add_argument("--grad-weight", type=float, default=None, help=f"weight of the gradient L1 term ({d.grad_weight})")
    c.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    c.add_argument("--num-workers", type=int, default=None, help="DataLoader workers for online rendering (0)")
    c.add_argument(
        "--model-config",
        default=None,
        help="JSON object of CompactGeneratorConfig overrides, e.g. '{\"base_channels\": 8}'",
    )
    c.add_argument(
        "--max-minutes",
        type=float,
        default=None,
        help="stop the loop after this many minutes (checkpoint and weights are written; resume with --resume)",
    )
    k = parser.add_argument_group("--model kontext-adapter (defaults: bokehdepth.train.flux_common.FluxTrainConfig)")
    k.add_argument("--base", default=None, help="local FLUX.1-Kontext-dev folder (diffusers layout)")
    k.add_argument("--size", type=int, default=None, help="training resolution in px (512)")
    k.add_argument("--rank", type=int, default=None, help="LoRA rank (128)")
    k.add_argument("--mixed-precision", default=None, choices=("no", "fp16", "bf16"), help="accelerate precision")
    k.add_argument("--gradient-checkpointing", action="store_true", default=None, help="recompute activations")
    k.add_argument("--init-weights", default=None, help="adapter weights to start from (bokeh_lora.bin layout)")
    k.add_argument("--max-sequence-length", type=int, default=None, help="T5 tokens (512)")


def _reject(args: argparse.Namespace, flags: tuple[tuple[str, str], ...], model: str) -> None:
    for dest, flag in flags:
        if getattr(args, dest, None) not in (None, False):
            raise InputError(f"{flag}: not a flag of --model {model}; drop it")


def run(args: argparse.Namespace) -> int:
    if args.model == "kontext-adapter":
        _reject(args, _COMPACT_ONLY, "kontext-adapter")
        return _run_kontext_adapter(args)
    _reject(args, _ADAPTER_ONLY, "compact")
    try:
        overrides = json.loads(args.model_config) if args.model_config else {}
    except ValueError as exc:
        raise InputError(f"--model-config: not valid JSON ({exc}); pass e.g. '{{\"base_channels\": 8}}'") from exc
    if not isinstance(overrides, dict):
        raise InputError("--model-config: expected a JSON object of CompactGeneratorConfig fields")
    given = {
        name: getattr(args, name)
        for name in (*_SHARED, "crop", "bank_size", "bank_epochs", "grad_weight", "threads", "num_workers")
        if getattr(args, name) is not None
    }
    if given.get("split") == "all":
        given["split"] = None
    cfg = CompactTrainConfig(
        data=args.data,
        out=args.out,
        resume=args.resume,
        device=args.device,
        model=overrides,
        progress=not args.no_progress,
        max_minutes=args.max_minutes,
        **given,
    )
    result = train_compact_generator(cfg)
    print(f"trained {result['step']} steps; weights: {result['weights']}")
    return 0


def _run_kontext_adapter(args: argparse.Namespace) -> int:
    from .stage1_adapter import train_kontext_adapter

    result = train_kontext_adapter(args)
    print(f"trained {result['step']} steps; adapter: {result['weights']}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
class _CropBank:
    """Pre-rendered (image, K, target) samples served as random aligned crops with flips (torch Dataset)."""

    def __init__(self, images, Ks, targets, crop: int, seed: int):
        self.images, self.Ks, self.targets = images, Ks, targets
        self.crop, self.seed = crop, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> dict[str, Any]:
        import numpy as np

        rng = np.random.default_rng([self.seed, self.epoch, index])
        img, tgt = self.images[index], self.targets[index]
        h, w = img.shape[-2:]
        c = self.crop
        y0, x0 = int(rng.integers(0, h - c + 1)), int(rng.integers(0, w - c + 1))
        img, tgt = img[:, y0 : y0 + c, x0 : x0 + c], tgt[:, y0 : y0 + c, x0 : x0 + c]
        if rng.uniform() < 0.5:
            img, tgt = img.flip(-1), tgt.flip(-1)
        return {"image": img.contiguous(), "K": self.Ks[index], "target": tgt.contiguous()}


def _build_dataset(cfg: CompactTrainConfig, multiple: int):
    """The training Dataset: a rendered bank of crops, or Stage1Dataset itself (online)."""
    from tqdm.auto import tqdm

    from ..data import Stage1Dataset

    if cfg.crop % multiple or cfg.crop < multiple:
        raise InputError(f"--crop: must be a positive multiple of {multiple} px, got {cfg.crop}")
    if cfg.bank_epochs <= 0:
        return Stage1Dataset(cfg.data, size=cfg.crop, split=cfg.split, seed=cfg.seed)
    if cfg.bank_size < cfg.crop:
        raise InputError(f"--bank-size: must be >= --crop ({cfg.crop} px), got {cfg.bank_size}")
    ds = Stage1Dataset(cfg.data, size=cfg.bank_size, split=cfg.split, seed=cfg.seed)
    images, Ks, targets = [], [], []
    total = cfg.bank_epochs * len(ds)
    with tqdm(total=total, desc="render bank", unit="sample", disable=not cfg.progress) as bar:
        for epoch in range(cfg.bank_epochs):
            ds.set_epoch(epoch)
            for i in range(len(ds)):
                s = ds[i]
                images.append(s["image"])
                Ks.append(s["K"])
                targets.append(s["target"])
                bar.update(1)
    return _CropBank(images, Ks, targets, cfg.crop, cfg.seed)


# ----------------------------------------------------------------------------------------------------------
# loss
# ----------------------------------------------------------------------------------------------------------
def stage1_loss(pred, target, grad_weight: float = 1.0) -> tuple[Any, dict[str, float]]:
    """L1 + ``grad_weight``·L1 of horizontal and vertical finite differences; tensors (B, 3, H, W)."""
    l1 = (pred - target).abs().mean()

    def grads(x):
        return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]

    (pgx, pgy), (tgx, tgy) = grads(pred), grads(target)
    lg = 0.5 * ((pgx - tgx).abs().mean() + (pgy - tgy).abs().mean())
    loss = l1 + grad_weight * lg
    return loss, {"loss": float(loss.detach()), "l1": float(l1.detach()), "grad": float(lg.detach())}


# ----------------------------------------------------------------------------------------------------------
# checkpoints
# ----------------------------------------------------------------------------------------------------------
def _optimizer_tensors(optimizer) -> tuple[dict[str, Any], dict[str, Any]]:
    """Flatten an optimiser state dict into (tensors, JSON-able rest) for safetensors."""
    import torch

    sd = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v) and v.ndim > 0:
                tensors[f"optim.{pid}.{k}"] = v.detach().contiguous().cpu()
            else:
                scalars[f"{pid}.{k}"] = float(v)
    return tensors, {"scalars": scalars, "param_groups": sd["param_groups"]}


def _restore_optimizer(optimizer, tensors: dict[str, Any], rest: dict[str, Any]) -> None:
    import torch

    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, name = key.split(".", 2)
        state.setdefault(int(pid), {})[name] = v
    for key, v in rest["scalars"].items():
        pid, name = key.split(".", 1)
        state.setdefault(int(pid), {})[name] = torch.tensor(v)
    optimizer.load_state_dict({"state": state, "param_groups": rest["param_groups"]})


def _save_checkpoint(path: Path, model, optimizer, step: int, cfg: CompactTrainConfig) -> None:
    from safetensors.torch import save_file

    from ..io import atomic_file

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    opt_tensors, opt_rest = _optimizer_tensors(optimizer)
    tensors.update(opt_tensors)
    meta = {
        "step": str(step),
        "model_config": model.config.to_json(),
        "train_config": json.dumps(asdict(cfg)),
        "optimizer": json.dumps(opt_rest),
    }
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def _load_checkpoint(path: Path, model, optimizer) -> int:
    from safetensors import safe_open

    from ..errors import CheckpointError
    from ..models.checkpoints import load_state_dict_file, load_strict

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        step, opt_rest = int(meta["step"]), json.loads(meta["optimizer"])
    except Exception as exc:
        raise CheckpointError(f"{path}: not a Stage-1 training checkpoint ({exc}); drop --resume") from exc
    if json.loads(meta["model_config"]) != json.loads(model.config.to_json()):
        raise CheckpointError(f"{path}: written for another model config; use the same --model-config or drop --resume")
    raw = load_state_dict_file(path)
    load_strict(model, {k[6:]: v for k, v in raw.items() if k.startswith("model.")}, path)
    _restore_optimizer(optimizer, {k: v for k, v in raw.items() if k.startswith("optim.")}, opt_rest)
    return step


# ----------------------------------------------------------------------------------------------------------
# the loop
# ----------------------------------------------------------------------------------------------------------
def _lr_factor(step: int, warmup: int, total: int) -> float:
    if step < warmup:
        return (step + 1) / max(1, warmup)
    t = (step - warmup) / max(1, total - warmup)
    return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))


def train_compact_generator(cfg: CompactTrainConfig) -> dict[str, Any]:
    """Train (or resume) the compact generator; return ``{"step", "weights", "checkpoint", "log"}``.

    Raises:
        InputError: bad settings or data. CheckpointError: an unusable ``--resume`` checkpoint.
    """
    import torch
    from accelerate import Accelerator
    from tqdm.auto import tqdm

    from ..io import atomic_file, write_json
    from ..models.compact_generator import CompactGenerator, CompactGeneratorConfig, save_compact_generator

    if cfg.steps < 1 or cfg.batch_size < 1:
        raise InputError(f"--steps/--batch-size: must be >= 1, got {cfg.steps}/{cfg.batch_size}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)
    try:
        model_cfg = CompactGeneratorConfig(**cfg.model)
    except (TypeError, ValueError) as exc:
        raise InputError(f"--model-config: {exc}") from exc
    model = CompactGenerator(model_cfg)
    dataset = _build_dataset(cfg, model.size_multiple)  # checks the data before anything is written
    out = Path(cfg.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror}); choose another --out") from exc
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    start = 0
    ckpt_path, log_path = out / CHECKPOINT_NAME, out / LOG_NAME
    if cfg.resume and ckpt_path.is_file():
        start = _load_checkpoint(ckpt_path, model, optimizer)
    write_json(out / "train_config.json", asdict(cfg))
    generator = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset,
        batch_size=min(cfg.batch_size, len(dataset)),
        shuffle=True,
        drop_last=True,
        num_workers=cfg.num_workers,
        generator=generator,
    )
    accelerator = Accelerator(cpu=cfg.device == "cpu", mixed_precision="no")
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: _lr_factor(s + start, cfg.warmup, cfg.steps))
    model, optimizer, loader, scheduler = accelerator.prepare(model, optimizer, loader, scheduler)

    step, epoch = start, start // max(1, len(loader))
    t0 = time.time()
    deadline = None if cfg.max_minutes is None else t0 + 60.0 * cfg.max_minutes
    stop = False
    bar = tqdm(total=cfg.steps, initial=start, desc="train stage1 (compact)", unit="step", disable=not cfg.progress)
    with open(log_path, "a") as log:
        while step < cfg.steps and not stop:
            dataset.set_epoch(epoch)
            for batch in loader:
                if step >= cfg.steps or stop:
                    break
                model.train()
                pred = model(batch["image"], batch["K"])
                loss, parts = stage1_loss(pred, batch["target"], cfg.grad_weight)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                if cfg.clip:
                    accelerator.clip_grad_norm_(model.parameters(), cfg.clip)
                optimizer.step()
                lr_now = scheduler.get_last_lr()[0]  # the lr this step trained with (step() sets the next one)
                scheduler.step()
                step += 1
                bar.update(1)
                bar.set_postfix(loss=f"{parts['loss']:.4f}")
                stop = deadline is not None and time.time() > deadline
                if step % cfg.log_every == 0 or step == cfg.steps or stop:
                    rec = {"step": step, **parts, "lr": lr_now, "time_s": time.time() - t0}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                if step % cfg.checkpoint_every == 0 or step == cfg.steps or stop:
                    _save_checkpoint(ckpt_path, accelerator.unwrap_model(model), optimizer, step, cfg)
            epoch += 1
    bar.close()
    final = accelerator.unwrap_model(model).eval()
    weights = out / WEIGHTS_NAME
    with atomic_file(weights) as tmp:
        save_compact_generator(
            final, tmp, {"trained_steps": step, "train_config": {k: v for k, v in asdict(cfg).items() if k != "model"}}
        )
    return {"step": step, "weights": str(weights), "checkpoint": str(ckpt_path), "log": str(log_path)}
