"""``bokehdepth train stage2``: train a Stage-2 depth model with DSFA (accelerate: one CPU, one GPU or many).

- ``--model compact``: the embedded compact ViT + DSFA model (:mod:`bokehdepth.models.compact_depth`), from
  scratch, on CPU. Loss: see :func:`compact_losses` (log-L1 on the monocular branch, relative L1 on the
  unsigned defocus offset |Δ|, a side cross-entropy and a log-L1 on the confidence-blended depth).
- ``--model dav2-dsfa-s|b|l``: Depth Anything V2 + DSFA as published (``train_dsfa.py``/``dsfa_train.json``):
  initialised from a DAv2 metric checkpoint (``--init``; DSFA blocks with the published init), nothing
  frozen, AdamW lr 5e-6 for all parameters, wd 0.01, SILog on depth in [0.001, 80] m, raw normalised K,
  bf16 on GPU. ``--freeze-backbone`` trains only DSFA + head (not published; for small GPUs).

Data: a JSONL manifest written by ``bokehdepth synth`` (read with :func:`bokehdepth.data.read_manifest`); frames are resized so
the short side is ``--size`` and centre-cropped to a square. Checkpoints are resumable: ``OUT/last/`` holds
``model.safetensors``, ``optimizer.pt`` (tensors only, read back with ``weights_only=True``) and
``state.json``; ``OUT/loss.jsonl`` logs every step.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = [
    "Stage2Batch",
    "add_arguments",
    "offset_loss",
    "run",
    "silog_loss",
    "prepare_scene",
    "load_manifest_scenes",
    "compact_losses",
]

_DAV2 = ("dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data",
        required=True,
        nargs="+",
        metavar="MANIFEST",
        help="manifest.jsonl from 'bokehdepth synth' (several: trained on their union, e.g. two depth ranges)",
    )
    p.add_argument("--model", default="compact", choices=("compact", *_DAV2), help="model to train")
    p.add_argument("-o", "--output", required=True, help="output folder (checkpoints, loss.jsonl, final weights)")
    p.add_argument("--init", default=None, help="initial weights (DAv2 .pth/.safetensors; compact safetensors)")
    p.add_argument("--steps", type=int, default=2000, help="optimiser steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: 3e-4 compact, 5e-6 DAv2)")
    p.add_argument("--weight-decay", type=float, default=None, help="AdamW weight decay (0.05 compact, 0.01 DAv2)")
    p.add_argument("--size", type=int, default=None, help="training crop in px (default: 128 compact, 518 DAv2)")
    p.add_argument("--max-frames", type=int, default=3, help="non-reference stack frames per sample")
    p.add_argument("--single-frame", action="store_true", help="train without stacks (the ablation arm)")
    p.add_argument(
        "--log-disp-weight",
        type=float,
        default=1.0,
        help="compact: weight of the defocus branch's log-disparity term (true side; see compact_losses)",
    )
    p.add_argument(
        "--stack-dropout",
        type=float,
        default=0.0,
        help="compact: fraction of steps trained single-frame (no stack, no focus), so one set of weights also "
        "serves --single-frame (the embedded recipe uses 0.2)",
    )
    p.add_argument("--split", default="train", help="manifest split to train on")
    p.add_argument("--max-scenes", type=int, default=None, help="use at most this many scenes")
    p.add_argument("--mixed-precision", default="no", choices=("no", "fp16", "bf16"))
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--freeze-backbone", action="store_true", help="DAv2: train DSFA + head only (not published)")
    p.add_argument(
        "--max-minutes", type=float, default=None, help="stop after this wall time (the cosine schedule follows it)"
    )
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last if present")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cpu", action="store_true", help="force CPU even when a GPU is present")
    p.add_argument(
        "--config",
        default=None,
        help="JSON overrides: CompactDepthConfig fields (compact) or backbone config fields (DAv2, e.g. tiny test models)",
    )


@dataclass
class Stage2Batch:
    """Tensors of one training batch (B samples, N stack frames, H×W working size).

    ref [B,3,H,W] in [0,1]; stack [B,N,3,H,W]; K [B,N] K in the sample's convention; k_width [B] the
    frame width (px) that metric K refers to at the working scale; disp_focus [B] 1/m (NaN unknown);
    disp_span [B] 1/m (GT inverse-depth span, for the normalised K of DAv2); depth [B,H,W] metres (0 invalid);
    metric [B] bool; focus_sign [B] sign of ``disp − disp_focus`` known from ``focus_side`` (−1 near, +1 far,
    0 unknown); cost [B,J,H,W] the compact model's cached defocus cost volume, or None.
    """

    ref: object
    stack: object
    K: object
    disp_focus: object
    disp_span: object
    depth: object
    metric: object
    focus_sign: object
    cost: object = None

    def to(self, device, non_blocking: bool = False) -> Stage2Batch:
        """Move every tensor to ``device`` (accelerate calls this on prepared loaders)."""
        return Stage2Batch(
            **{k: None if v is None else v.to(device, non_blocking=non_blocking) for k, v in self.__dict__.items()}
        )


def silog_loss(pred, gt, min_depth: float = 1e-3, max_depth: float = 80.0, lam: float = 0.5):
    """Published SILog: ``sqrt(mean(d²) − λ·mean(d)²)`` with ``d = log gt − log pred`` over valid GT pixels.

    pred, gt: [B, H, W] metres. Returns a scalar tensor (mean over the batch).
    """
    import torch

    mask = (gt > min_depth) & (gt < max_depth) & torch.isfinite(gt)
    d = torch.where(mask, torch.log(gt.clamp(min=min_depth)) - torch.log(pred.clamp(min=min_depth)), 0.0)
    n = mask.flatten(1).sum(1).clamp(min=1)
    m1 = d.flatten(1).sum(1) / n
    m2 = (d**2).flatten(1).sum(1) / n
    return torch.sqrt((m2 - lam * m1**2).clamp(min=1e-8)).mean()


def prepare_scene(image, stack, depth, size: int, max_frames: int, multiple: int = 1):
    """Resize (short side ``size``) and centre-crop a scene to ``size``² (rounded down to ``multiple``).

    Args:
        image: (H, W, 3) float32 reference; stack: :class:`bokehdepth.io.Stack`; depth: (H, W) metres.

    Returns:
        dict of numpy arrays: ``ref`` uint8 (3,S,S), ``stack`` uint8 (N,3,S,S), ``K`` (N,) rescaled to the
        working width for metric stacks, ``convention``, ``disp_focus``, ``depth`` float32 (S,S).
    """
    import torch
    import torch.nn.functional as F

    from ..lens import scale_K_for_resize
    from ..pipelines.depth import split_stack

    inp = split_stack(image, stack)
    order = np.argsort(inp.K)
    if len(order) > max_frames:  # keep an even spread of K over the stack
        order = order[np.linspace(0, len(order) - 1, max_frames).round().astype(int)]
    h, w = inp.image.shape[:2]
    s = size / min(h, w)
    nh, nw = max(size, round(h * s)), max(size, round(w * s))
    crop = (size // multiple) * multiple
    top, left = (nh - crop) // 2, (nw - crop) // 2

    def rs(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a)).float()
        t = t.permute(0, 3, 1, 2) if t.dim() == 4 else t[:, None]
        kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
        t = F.interpolate(t, size=(nh, nw), mode=mode, **kw)[..., top : top + crop, left : left + crop]
        return t.numpy()

    frames = np.concatenate([inp.image[None], inp.frames[order]], 0)
    px = np.clip(rs(frames, "bilinear") * 255 + 0.5, 0, 255).astype(np.uint8)
    K = inp.K[order]
    if inp.convention == "metric":
        K = scale_K_for_resize(K, w, nw)
    d = rs(np.asarray(depth, np.float32)[None], "nearest")[0, 0]
    return {
        "ref": px[0],
        "stack": px[1:],
        "K": K.astype(np.float32),
        "convention": inp.convention,
        "disp_focus": float("nan") if inp.disp_focus is None else float(inp.disp_focus),
        "depth": np.nan_to_num(d, nan=0.0).astype(np.float32),
    }


def load_manifest_scenes(
    manifest: str | Path | Sequence[str | Path],
    split: str | None,
    size: int,
    max_frames: int,
    multiple: int = 1,
    max_scenes=None,
) -> list[dict]:
    """Read one or several synth manifests (:func:`bokehdepth.data.read_manifest`) and prepare every scene of
    ``split`` (None: all) in memory (see :func:`prepare_scene`); ``focus_sign`` comes from the record's
    ``focus_side``. Scene ids are prefixed with the manifest's index when there are several. ``max_scenes``
    caps the total."""
    from tqdm import tqdm

    from ..data import read_manifest
    from ..io import read_depth, read_image, read_stack
    from ..models.compact_depth import SIDE_SIGN

    manifests = [manifest] if isinstance(manifest, (str, Path)) else list(manifest)
    rows = []
    for m, path in enumerate(manifests):
        if not Path(path).exists():
            raise InputError(f"--data: {path} not found; create one with 'bokehdepth synth -o DIR --scenes N'")
        found = read_manifest(path, split=split)
        if not found:
            raise InputError(f"{path}: no scenes with split '{split}'; check --split")
        rows += [{**r, "id": f"{m}/{r['id']}"} if len(manifests) > 1 else r for r in found]
    if max_scenes:
        rows = rows[:max_scenes]
    scenes = []
    for r in tqdm(rows, desc="loading scenes", leave=False):
        stack = read_stack(r["stack"])
        sc = prepare_scene(read_image(r["image"]), stack, read_depth(r["depth"]), size, max_frames, multiple)
        sc["id"] = r["id"]
        sc["focus_sign"] = SIDE_SIGN.get(r.get("focus_side") or stack.focus_side or "", 0.0)
        scenes.append(sc)
    n = min(len(s["K"]) for s in scenes)
    if n < max_frames:
        for s in scenes:
            s["stack"], s["K"] = s["stack"][:n], s["K"][:n]
    return scenes


def collate(scenes: list[dict]) -> Stage2Batch:
    """Stack prepared scenes into a :class:`Stage2Batch` (float tensors)."""
    import torch

    depth = torch.from_numpy(np.stack([s["depth"] for s in scenes]))
    valid = depth > 0
    span = []
    for i in range(len(scenes)):
        dv = depth[i][valid[i]]
        span.append(float((1 / dv.min() - 1 / dv.max()).item()) if dv.numel() else 1.0)
    return Stage2Batch(
        ref=torch.from_numpy(np.stack([s["ref"] for s in scenes])).float() / 255,
        stack=torch.from_numpy(np.stack([s["stack"] for s in scenes])).float() / 255,
        K=torch.from_numpy(np.stack([s["K"] for s in scenes])),
        disp_focus=torch.tensor([s["disp_focus"] for s in scenes], dtype=torch.float32),
        disp_span=torch.tensor(span, dtype=torch.float32).clamp(min=1e-3),
        depth=depth,
        metric=torch.tensor([s["convention"] == "metric" for s in scenes]),
        focus_sign=torch.tensor([float(s.get("focus_sign", 0.0)) for s in scenes], dtype=torch.float32),
        cost=torch.from_numpy(np.stack([s["cost"] for s in scenes])).float() if "cost" in scenes[0] else None,
    )


class _SceneSet:
    """torch-style dataset over prepared scenes (random horizontal flips)."""

    def __init__(self, scenes: list[dict], seed: int):
        self.scenes, self.rng = scenes, random.Random(seed)

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, i: int) -> dict:
        s = dict(self.scenes[i])
        if self.rng.random() < 0.5:  # every per-pixel array is flipped together (the disc is symmetric)
            for key in ("ref", "stack", "depth", "cost"):
                if key in s:
                    s[key] = s[key][..., ::-1].copy()
        return s


def compact_k_input(batch: Stage2Batch, cfg):
    """[B, N] DSFA K input of the compact model for a batch at its working size (each sample in its own K
    convention; see :func:`bokehdepth.models.compact_depth.prepare_k`)."""
    import torch

    from ..models.compact_depth import prepare_k

    w = batch.ref.shape[-1]
    return torch.where(
        batch.metric[:, None],
        prepare_k(batch.K, "metric", w, w, cfg.k_unit),
        prepare_k(batch.K, "normalized", w, w, cfg.k_unit),
    )


def cache_cost_volumes(model, scenes: list[dict], batch_size: int = 16) -> None:
    """Compute the compact model's defocus cost volume once per (unflipped) scene and keep it in
    ``scene["cost"]`` (float16 [J, H, W]); the volume depends on the data only, not on the weights."""
    import torch
    from tqdm import tqdm

    with_stack = [s for s in scenes if len(s["K"])]
    for i in tqdm(range(0, len(with_stack), batch_size), desc="cost volumes", leave=False):
        chunk = with_stack[i : i + batch_size]
        b = collate(chunk)
        cost = model.cost_volume(b.ref, b.stack, compact_k_input(b, model.cfg)).to(torch.float16).numpy()
        for s, c in zip(chunk, cost):
            s["cost"] = c


def compact_step(model, batch: Stage2Batch, single_frame: bool, log_disp_weight: float = 1.0):
    """Compact model loss (see :func:`compact_losses`). Returns (loss, depth [B, H, W] metres)."""
    import torch

    k_in = compact_k_input(batch, model.cfg)
    df = torch.where(batch.metric, batch.disp_focus, torch.full_like(batch.disp_focus, float("nan")))
    if single_frame:
        df = torch.full_like(df, float("nan"))
    out = model(
        batch.ref,
        batch.stack,
        k_in,
        single_frame=single_frame,
        disp_focus=df,
        focus_sign=batch.focus_sign,
        cost=batch.cost,
    )
    return compact_losses(model, out, df, batch.focus_sign, batch.depth, log_disp_weight=log_disp_weight)


def compact_losses(
    model,
    out: dict,
    disp_focus,
    focus_sign,
    gt,
    min_depth: float = 1e-3,
    max_depth: float = 80.0,
    log_disp_weight: float = 1.0,
):
    """Loss of the compact model, every term with bounded gradients:

    - monocular: mean |log pred − log gt| (absolute scale: the synthetic depth distribution is learnable);
    - where ``disp_focus`` is known: :func:`offset_loss` on the unsigned offset |Δ| (what the blur measures),
      plus ``log_disp_weight·|log(disp_focus ± |Δ|) − log(1/gt)|`` with the true side (the defocus branch's log-depth error,
      which is what AbsRel weighs: the same |Δ| error costs more on far pixels; the gradient is at most
      ``1/min_disp`` through the clamp), a binary cross-entropy for the side head (nearer than focus), weighted by ``|Δ| / (|Δ| + 0.05)`` (the
      side is unobservable at the focus plane), and |log depth − log gt| of the blended output, which trains
      the confidence (branches detached, so each branch is trained by its own term).

    Args: out: model outputs; disp_focus [B] 1/m (NaN unknown); focus_sign [B]; gt [B, H, W] metres.
    Returns: (scalar loss, blended depth [B, H, W] metres).
    """
    import torch
    import torch.nn.functional as F

    mask = (gt > min_depth) & (gt < max_depth) & torch.isfinite(gt)
    n = mask.flatten(1).sum(1).clamp(min=1)
    log_gt = torch.log(gt.clamp(min=min_depth))

    def masked_mean(x, rows=None):
        per = torch.where(mask, x, 0.0).flatten(1).sum(1) / n
        return per.mean() if rows is None else per[rows].mean()

    log_mono = out["log_depth"].clamp(max=math.log(max_depth))
    loss = masked_mean((log_mono - log_gt).abs())
    depth = model.depth_from_outputs(out, disp_focus, focus_sign)
    has = torch.isfinite(disp_focus)
    if has.any():
        df = torch.nan_to_num(disp_focus).view(-1, 1, 1)
        delta = 1.0 / gt.clamp(min=min_depth) - df
        loss = loss + offset_loss(out["offset"][has], torch.zeros_like(df[has, 0, 0]), gt[has], delta=delta[has])
        cfg = model.cfg
        disp_true_side = (df + torch.where(delta < 0, -1.0, 1.0) * out["offset"]).clamp(cfg.min_disp, cfg.max_disp)
        loss = loss + log_disp_weight * masked_mean((torch.log(disp_true_side) + log_gt).abs(), has)
        wgt = delta.abs() / (delta.abs() + 0.05)
        bce = F.binary_cross_entropy_with_logits(out["side"], (delta > 0).to(gt.dtype), reduction="none")
        loss = loss + 0.5 * masked_mean(wgt * bce, has)
        detached = {k: v.detach() for k, v in out.items() if k != "confidence"}
        detached["confidence"] = out["confidence"]
        blended = model.depth_from_outputs(detached, disp_focus, focus_sign)
        loss = loss + masked_mean((torch.log(blended) - log_gt).abs(), has)
    return loss, depth


def offset_loss(offset, disp_focus, gt, min_depth: float = 1e-3, max_depth: float = 80.0, delta=None):
    """Relative L1 in inverse depth: ``mean|disp_focus + Δ − 1/gt| / mean(1/gt)`` per sample over valid GT
    (bounded gradients, unlike a log loss through ``1/(disp_focus + Δ)``). With ``delta`` given (the unsigned
    head), the target is ``|delta|`` instead: ``mean|Δ − |delta|| / mean(1/gt)``.

    offset: [B, H, W] Δ (1/m); disp_focus: [B] (1/m); gt: [B, H, W] metres; delta: [B, H, W] 1/m or None.
    """
    import torch

    mask = (gt > min_depth) & (gt < max_depth) & torch.isfinite(gt)
    gdisp = torch.where(mask, 1.0 / gt.clamp(min=min_depth), 0.0)
    if delta is None:
        err = torch.where(mask, (disp_focus.view(-1, 1, 1) + offset - gdisp).abs(), 0.0)
    else:
        err = torch.where(mask, (offset - delta.abs()).abs(), 0.0)
    n = mask.flatten(1).sum(1).clamp(min=1)
    return ((err.flatten(1).sum(1) / n) / (gdisp.flatten(1).sum(1) / n).clamp(min=1e-6)).mean()


def dav2_step(model, batch: Stage2Batch, single_frame: bool):
    """DAv2 + DSFA: published SILog on sigmoid·max_depth output; metric K converted with the GT span."""
    import torch

    from ..lens import metric_to_normalized_K

    w = batch.ref.shape[-1]
    k_norm = torch.where(
        batch.metric[:, None], metric_to_normalized_K(batch.K, 0.0, 1.0, w) * batch.disp_span[:, None], batch.K
    )
    from ..models.depth_anything import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN, device=batch.ref.device).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=batch.ref.device).view(3, 1, 1)
    depth = model((batch.ref - mean) / std, (batch.stack - mean) / std, k_norm, single_frame=single_frame)
    return silog_loss(depth, batch.depth), depth


def _build(args):
    """(model, step_fn, default lr, default wd, size, multiple)."""
    if args.model == "compact":
        from ..models.compact_depth import CompactDepthConfig, CompactDepthModel, load_compact_depth

        if args.init:
            model = load_compact_depth(args.init).train()
        else:
            overrides = json.loads(args.config) if args.config else {}
            for key in ("taps", "dsfa_taps"):
                if key in overrides:
                    overrides[key] = tuple(overrides[key])
            model = CompactDepthModel(CompactDepthConfig(**overrides))
        step = functools.partial(compact_step, log_disp_weight=args.log_disp_weight)
        return model, step, 3e-4, 0.05, args.size or model.cfg.image_size, model.cfg.patch_size
    from ..models.depth_anything import build_model, load_base_weights

    model = build_model(args.model, **(json.loads(args.config) if args.config else {}))
    if args.init:
        load_base_weights(model, args.init)
    if args.freeze_backbone:
        for prm in model.model.backbone.parameters():
            prm.requires_grad_(False)
    return model, dav2_step, 5e-6, 0.01, args.size or 518, 14


def _save(out: Path, model, optimizer, step: int, accelerator) -> None:
    import torch
    from safetensors.torch import save_file

    from ..io import atomic_dir

    unwrapped = accelerator.unwrap_model(model)
    with atomic_dir(out / "last") as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in unwrapped.state_dict().items()}
        save_file(state, str(tmp / "model.safetensors"))
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        (tmp / "state.json").write_text(json.dumps({"step": step}))


def _export(out: Path, model, args) -> Path:
    if args.model == "compact":
        from ..models.compact_depth import save_compact_depth

        path = out / "compact_depth.safetensors"
        save_compact_depth(model, path, {"train_args": {k: str(v) for k, v in vars(args).items() if k != "func"}})
        return path
    from safetensors.torch import save_file

    from ..models.depth_anything import to_published_state_dict

    path = out / f"{args.model}.safetensors"
    save_file({k: v.contiguous() for k, v in to_published_state_dict(model).items()}, str(path))
    return path


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import Accelerator
    from safetensors.torch import load_file
    from tqdm import tqdm

    accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu)
    torch.manual_seed(args.seed)
    model, step_fn, lr, wd, size, multiple = _build(args)
    if args.gradient_checkpointing:
        if args.model == "compact":
            model.gradient_checkpointing = True
        else:
            model.model.backbone.gradient_checkpointing_enable()
    scenes = load_manifest_scenes(args.data, args.split, size, args.max_frames, multiple, args.max_scenes)
    if args.model == "compact" and model.cfg.cost_bins and not args.single_frame:
        cache_cost_volumes(model, scenes)
    loader = torch.utils.data.DataLoader(
        _SceneSet(scenes, args.seed),
        batch_size=min(args.batch_size, len(scenes)),
        shuffle=True,
        drop_last=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(args.seed),
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.lr or lr, weight_decay=wd if args.weight_decay is None else args.weight_decay
    )
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    start = 0
    if args.resume and (out / "last" / "state.json").is_file():
        from ..models.checkpoints import load_strict

        load_strict(model, load_file(str(out / "last" / "model.safetensors")), out / "last" / "model.safetensors")
        optimizer.load_state_dict(torch.load(out / "last" / "optimizer.pt", weights_only=True))
        start = json.loads((out / "last" / "state.json").read_text())["step"]
    base_lr = optimizer.param_groups[0]["lr"]
    t_start = time.time()

    def progress(s: int) -> float:
        """Fraction of training done: by steps, or by wall time under --max-minutes."""
        frac = s / max(1, args.steps)
        if args.max_minutes:
            frac = max(frac, (time.time() - t_start) / (60 * args.max_minutes))
        return min(1.0, frac)

    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda s: min(1.0, (s + 1) / max(1, min(args.steps, 400) // 20)) * 0.5 * (1 + math.cos(math.pi * progress(s))),
        last_epoch=start - 1 if start else -1,
    )
    if start:
        for g in optimizer.param_groups:
            g.setdefault("initial_lr", base_lr)
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    model.train()
    log = (out / "loss.jsonl").open("a")
    step, t0 = start, time.time()
    drop_rng = random.Random(args.seed + 1)
    bar = tqdm(total=args.steps, initial=start, desc=f"stage2 {args.model}", disable=not accelerator.is_main_process)
    while step < args.steps and progress(step) < 1.0:
        for batch in loader:
            if step >= args.steps or progress(step) >= 1.0:
                break
            with accelerator.autocast():
                single = args.single_frame or drop_rng.random() < args.stack_dropout
                loss, _ = step_fn(accelerator.unwrap_model(model) if args.model == "compact" else model, batch, single)
            optimizer.zero_grad(set_to_none=True)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, 1.0)
            optimizer.step()
            sched.step()
            step += 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}")
            log.write(
                json.dumps({"step": step, "loss": loss.item(), "lr": sched.get_last_lr()[0], "time": time.time() - t0})
                + "\n"
            )
            log.flush()
            if step % args.save_every == 0:
                _save(out, model, optimizer, step, accelerator)
    bar.close()
    log.close()
    _save(out, model, optimizer, step, accelerator)
    if accelerator.is_main_process:
        path = _export(out, accelerator.unwrap_model(model), args)
        print(f"wrote {path}")
    return 0
