"""``bokehdepth train stage2``: train a Stage-2 depth model with DSFA (accelerate: one CPU, one GPU or many).

- ``--model compact``: the embedded compact ViT + DSFA model (:mod:`bokehdepth.models.compact_depth`), from
  scratch, on CPU. Loss: see :func:`compact_losses` (log-L1 on the monocular branch, relative L1 on the
  unsigned defocus offset |Δ|, a side cross-entropy and a log-L1 on the confidence-blended depth).
- ``--model dav2-dsfa-s|b|l``: Depth Anything V2 + DSFA as published (``train_dsfa.py``/``dsfa_train.json``):
  initialised from a DAv2 metric checkpoint (``--init``; DSFA blocks with the published init), nothing
  frozen, AdamW lr 5e-6 for all parameters, wd 0.01, SILog on depth in [0.001, 80] m, raw normalised K,
  bf16 on GPU. ``--freeze-backbone`` trains only DSFA + head (not published; for small GPUs).

Data: a JSONL manifest written by ``bokehdepth synth`` (read with :func:`bokehdepth.data.read_manifest`); frames are resized so
the short side is ``--size`` and cropped to a square: ``--crop center`` (the compact default) the same centre
square every epoch, ``--crop random`` (the DAv2 default, the published recipe's shared 518² random crop) a new
square per sample and epoch, the same for the reference, every stack frame, the depth and the cached cost
volume. Each epoch's order, flips and crops are drawn from (``--seed``, epoch) alone, so a run can stop
anywhere and go on identically.

Checkpoints are resumable and exact: ``OUT/last/`` holds ``model.safetensors``, ``optimizer.pt`` (tensors only,
read back with ``weights_only=True``), ``rng.safetensors`` (torch and loader RNG states) and ``state.json``
(step, epoch and batch within it, training seconds so far, the stack-dropout RNG, the LR scheduler, the fp16
GradScaler state when there is one, and the run's settings: see :func:`_run_settings`). ``--resume`` continues
from it as if the run had never stopped, and refuses flags that would make the resumed run differ from the
uninterrupted one (:func:`_check_resume_settings`); ``OUT/loss.jsonl`` logs every step once (a fresh run
starts it over; a resumed run drops the lines after the checkpoint's step). A fresh run into an ``OUT`` that
holds a checkpoint is refused unless ``--overwrite``. ``OUT/last`` is replaced whole: a crash while saving
leaves the previous checkpoint. Only the main process writes.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import hashlib
import json
import math
import os
import random
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import BokehDepthError, CheckpointError, InputError, OutputError

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
_LAST_FORMAT = "bokehdepth-stage2-last-v2"  # state.json "format" of OUT/last


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
    p.add_argument(
        "--crop",
        default=None,
        choices=CROPS,
        help="the --size square of each resized scene: 'center' every epoch (default for compact) or 'random' per "
        "sample and epoch, shared by the reference, the stack and the depth (default for DAv2, as published)",
    )
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
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from OUT/last if present (the flags that set the data order and the optimisation must be "
        "the checkpoint's; --steps, --max-minutes, --save-every may change)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="start a new run in an OUT that holds an earlier run's checkpoint (OUT/last is deleted); without it "
        "such an OUT is refused",
    )
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
    0 unknown); gamma [B] each stack's encoding gamma (``stack.json`` ``gamma``); cost [B,J,H,W] the compact
    model's cached defocus cost volume, or None.
    """

    ref: object
    stack: object
    K: object
    disp_focus: object
    disp_span: object
    depth: object
    metric: object
    focus_sign: object
    gamma: object
    cost: object = None

    def to(self, device, non_blocking: bool = False) -> Stage2Batch:
        """Move every tensor to ``device`` (accelerate calls this on prepared loaders)."""
        return Stage2Batch(
            **{k: None if v is None else v.to(device, non_blocking=non_blocking) for k, v in self.__dict__.items()}
        )


def _valid_gt(gt, min_depth: float = 1e-3, max_depth: float = 80.0):
    """The GT validity mask used by every loss here: finite depth strictly inside (min_depth, max_depth) m.

    gt: [B, H, W] metres (0 or NaN where unknown). Returns a bool tensor of the same shape.
    """
    import torch

    return (gt > min_depth) & (gt < max_depth) & torch.isfinite(gt)


def silog_loss(pred, gt, min_depth: float = 1e-3, max_depth: float = 80.0, lam: float = 0.5):
    """Published SILog: ``sqrt(mean(d²) − λ·mean(d)²)`` with ``d = log gt − log pred`` over valid GT pixels.

    pred, gt: [B, H, W] metres. Returns a scalar tensor (mean over the batch).
    """
    import torch

    mask = _valid_gt(gt, min_depth, max_depth)
    d = torch.where(mask, torch.log(gt.clamp(min=min_depth)) - torch.log(pred.clamp(min=min_depth)), 0.0)
    n = mask.flatten(1).sum(1).clamp(min=1)
    m1 = d.flatten(1).sum(1) / n
    m2 = (d**2).flatten(1).sum(1) / n
    return torch.sqrt((m2 - lam * m1**2).clamp(min=1e-8)).mean()


CROPS = ("center", "random")


def prepare_scene(image, stack, depth, size: int, max_frames: int, multiple: int = 1, crop: str = "center"):
    """Resize (short side ``size``) and centre-crop a scene to ``size``² (rounded down to ``multiple``).

    With ``crop="random"`` the arrays keep the whole resized frame and ``"crop"`` holds the square's side:
    :class:`_SceneSet` cuts a square at a position the sampler draws (the same for every array of the scene).

    Args:
        image: (H, W, 3) float32 reference; stack: :class:`bokehdepth.io.Stack`; depth: (H, W) metres.

    Returns:
        dict of numpy arrays: ``ref`` uint8 (3,S,S), ``stack`` uint8 (N,3,S,S), ``K`` (N,) of the crop in the
        stack's convention, ``convention``, ``disp_focus``, ``gamma`` (the stack's encoding gamma), ``depth``
        float32 (S,S).

    K follows the geometry as in :class:`bokehdepth.data.Stage2Dataset`: metric K (px·m at the frame width)
    scales with the resize and is kept by the crop; normalised K (px at 512 px of the *whole* image width per
    unit of normalised disparity) is kept by the resize and scaled by resized width / crop width by the crop,
    so that it stays "px at 512 px" of the cropped frame (the width the model sees).
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
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}, got {crop!r}")
    side = (size // multiple) * multiple
    if crop == "center":
        top, left, ch, cw = (nh - side) // 2, (nw - side) // 2, side, side
    else:  # the whole resized frame; the square is cut per sample
        top, left, ch, cw = 0, 0, nh, nw

    def rs(a: np.ndarray, mode: str) -> np.ndarray:
        t = torch.from_numpy(np.ascontiguousarray(a)).float()
        t = t.permute(0, 3, 1, 2) if t.dim() == 4 else t[:, None]
        kw = {"antialias": True, "align_corners": False} if mode == "bilinear" else {}
        t = F.interpolate(t, size=(nh, nw), mode=mode, **kw)[..., top : top + ch, left : left + cw]
        return t.numpy()

    frames = np.concatenate([inp.image[None], inp.frames[order]], 0)
    px = np.clip(rs(frames, "bilinear") * 255 + 0.5, 0, 255).astype(np.uint8)
    K = inp.K[order]
    if inp.convention == "metric":
        K = scale_K_for_resize(K, w, nw)
    else:  # the crop keeps the blur in px but narrows the frame the 512-px reference width stands for
        K = K * (nw / side)
    d = rs(np.asarray(depth, np.float32)[None], "nearest")[0, 0]
    extra = {"crop": side} if crop == "random" else {}
    return {
        "ref": px[0],
        "stack": px[1:],
        "K": K.astype(np.float32),
        "convention": inp.convention,
        "disp_focus": float("nan") if inp.disp_focus is None else float(inp.disp_focus),
        "gamma": float(stack.gamma),
        "depth": np.nan_to_num(d, nan=0.0).astype(np.float32),
        **extra,
    }


def load_manifest_scenes(
    manifest: str | Path | Sequence[str | Path],
    split: str | None,
    size: int,
    max_frames: int,
    multiple: int = 1,
    max_scenes=None,
    crop: str = "center",
) -> list[dict]:
    """Read one or several synth manifests (:func:`bokehdepth.data.read_manifest`) and prepare every scene of
    ``split`` (None: all) in memory (see :func:`prepare_scene`); ``focus_sign`` comes from the record's
    ``focus_side``. Scene ids are prefixed with the manifest's index when there are several. ``max_scenes``
    caps the total; ``crop`` as in :func:`prepare_scene`.

    Every sample of a batch has the same number of stack frames: ``min(max_frames, longest stack)`` (frames
    with K > 0 besides the reference). A scene with fewer is an :class:`InputError` naming the scene and its
    manifest (a silent cut would shorten every other scene's stack to it).
    """
    from tqdm import tqdm

    from ..data import read_manifest
    from ..io import read_depth, read_image, read_stack
    from ..models.compact_depth import SIDE_SIGN

    if max_frames < 0:
        raise InputError(f"--max-frames: {max_frames} is negative; pass 0 or more stack frames per sample")
    manifests = [manifest] if isinstance(manifest, (str, Path)) else list(manifest)
    rows = []
    for m, path in enumerate(manifests):
        if not Path(path).exists():
            raise InputError(f"--data: {path} not found; create one with 'bokehdepth synth -o DIR --scenes N'")
        found = read_manifest(path, split=split)
        if not found:
            raise InputError(f"{path}: no scenes with split '{split}'; check --split")
        rows += [({**r, "id": f"{m}/{r['id']}"} if len(manifests) > 1 else r, path) for r in found]
    if max_scenes:
        rows = rows[:max_scenes]
    scenes, sources = [], []
    for r, path in tqdm(rows, desc="loading scenes", leave=False):
        stack = read_stack(r["stack"])
        sc = prepare_scene(read_image(r["image"]), stack, read_depth(r["depth"]), size, max_frames, multiple, crop)
        sc["id"] = r["id"]
        sc["focus_sign"] = SIDE_SIGN.get(r.get("focus_side") or stack.focus_side or "", 0.0)
        scenes.append(sc)
        sources.append(path)
    needed = min(max_frames, max(len(s["K"]) for s in scenes))
    for sc, path in zip(scenes, sources):
        if len(sc["K"]) < needed:
            raise InputError(
                f"{path}: scene {sc['id']} has {len(sc['K'])} stack frame(s) with K > 0 besides the reference, "
                f"but the other scenes give {needed} (--max-frames {max_frames}); remove the scene from the "
                f"manifest or pass --max-frames {len(sc['K'])}"
            )
    return scenes


def collate(scenes: list[dict]) -> Stage2Batch:
    """Stack prepared scenes into a :class:`Stage2Batch` (float tensors)."""
    import torch

    depth = torch.from_numpy(np.stack([s["depth"] for s in scenes]))
    valid = _valid_gt(depth)
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
        gamma=torch.tensor([float(s["gamma"]) for s in scenes], dtype=torch.float32),
        cost=torch.from_numpy(np.stack([s["cost"] for s in scenes])).float() if "cost" in scenes[0] else None,
    )


_PER_PIXEL = ("ref", "stack", "depth", "cost")


def crop_scene(scene: dict, u: float | None = None, v: float | None = None) -> dict:
    """The ``scene["crop"]``² square of a scene prepared with ``crop="random"`` whose top-left corner lies at
    fraction ``u`` of the free rows and ``v`` of the free columns (0: top/left edge, →1: bottom/right edge;
    None: the centre square, as ``crop="center"`` cuts it), cut alike from every per-pixel array; a scene
    without ``"crop"`` is returned as it is."""
    if "crop" not in scene:
        return scene
    side = scene["crop"]
    h, w = scene["depth"].shape

    def start(frac: float | None, free: int) -> int:
        return free // 2 if frac is None else min(int(frac * (free + 1)), free)

    top, left = start(u, h - side), start(v, w - side)
    s = {k: v for k, v in scene.items() if k != "crop"}
    for k in _PER_PIXEL:
        if k in s:
            s[k] = np.ascontiguousarray(s[k][..., top : top + side, left : left + side])
    return s


class _SceneSet:
    """torch-style dataset over prepared scenes; a key ``(index, flip, u, v)`` (from :class:`_EpochSampler`)
    returns the scene's square at ``(u, v)`` (:func:`crop_scene`, scenes prepared with ``crop="random"``),
    mirrored horizontally when ``flip``; a plain index returns the centre square, unflipped."""

    def __init__(self, scenes: list[dict]):
        self.scenes = scenes

    def __len__(self) -> int:
        return len(self.scenes)

    def __getitem__(self, key) -> dict:
        i, flip, u, v = key if isinstance(key, tuple) else (key, False, None, None)
        s = dict(crop_scene(self.scenes[i], u, v))
        if flip:  # every per-pixel array is flipped together (the disc is symmetric)
            for k in _PER_PIXEL:
                if k in s:
                    s[k] = s[k][..., ::-1].copy()
        return s


class _EpochSampler:
    """Sampler of ``(index, flip, u, v)`` keys: a shuffled order, a flip and a crop position per sample drawn
    from (seed, epoch) alone (the crop after the order and flips, so that these do not depend on it).

    Nothing of it depends on what was fetched before (accelerate's loaders fetch one batch ahead), so a
    resumed run sets the epoch, skips the batches it already trained on and sees exactly the same samples.
    ``set_epoch`` is the method accelerate's prepared loaders forward their epoch to.
    """

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self.epoch = n, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        import torch

        g = torch.Generator().manual_seed(((self.seed & 0xFFFFFFFF) << 32) | (self.epoch & 0xFFFFFFFF))
        order = torch.randperm(self.n, generator=g).tolist()
        flips = (torch.rand(self.n, generator=g) < 0.5).tolist()
        crops = torch.rand(self.n, 2, generator=g, dtype=torch.float64).tolist()
        return iter((i, f, u, v) for i, f, (u, v) in zip(order, flips, crops))


def _core(model):
    """The model inside accelerate's wrappers (DDP, torch.compile), for attribute access (cfg, helpers);
    the forward itself must go through the wrapper (DDP syncs gradients there)."""
    from accelerate.utils import extract_model_from_parallel

    return extract_model_from_parallel(model, keep_fp32_wrapper=True)


def compact_k_input(batch: Stage2Batch, cfg, width: int | None = None):
    """[B, N] DSFA K input of the compact model for a batch at its working size (each sample in its own K
    convention; see :func:`bokehdepth.models.compact_depth.prepare_k`). ``width``: the width (px) the samples
    are cropped to for the model when the batch holds whole frames (``crop="random"`` scenes; normalised K
    refers to it), else None: the batch's width."""
    import torch

    from ..models.compact_depth import prepare_k

    w = width or batch.ref.shape[-1]
    return torch.where(
        batch.metric[:, None],
        prepare_k(batch.K, "metric", w, w, cfg.k_unit),
        prepare_k(batch.K, "normalized", w, w, cfg.k_unit),
    )


def cache_cost_volumes(model, scenes: list[dict], batch_size: int = 16) -> None:
    """Compute the compact model's defocus cost volume once per (unflipped) scene and keep it in
    ``scene["cost"]`` (float16 [J, H, W]); the volume depends on the data only (the frames, K and each stack's
    gamma), not on the weights. Scenes prepared with ``crop="random"`` get it over their whole frame and
    :func:`crop_scene` cuts it with the frames."""
    from itertools import groupby

    import torch
    from tqdm import tqdm

    def size(s: dict) -> tuple[int, ...]:
        return s["depth"].shape

    chunks = []  # of one frame size each (scenes prepared with crop="random" keep their own)
    for _, same in groupby(sorted((s for s in scenes if len(s["K"])), key=size), key=size):
        same = list(same)
        chunks += [same[i : i + batch_size] for i in range(0, len(same), batch_size)]
    for chunk in tqdm(chunks, desc="cost volumes", leave=False):
        b = collate(chunk)
        with torch.no_grad():
            k_in = compact_k_input(b, model.cfg, chunk[0].get("crop"))
            cost = model.cost_volume(b.ref, b.stack, k_in, gamma=b.gamma)
        cost = cost.to(torch.float16).numpy()
        for s, c in zip(chunk, cost):
            s["cost"] = c


def compact_step(model, batch: Stage2Batch, single_frame: bool, log_disp_weight: float = 1.0):
    """Compact model loss (see :func:`compact_losses`). Returns (loss, depth [B, H, W] metres).

    ``model`` is the model as accelerate prepared it: the forward runs through the wrapper (so DDP syncs the
    gradients); the config and the depth helpers are read from the model inside it.
    """
    import torch

    core = _core(model)
    k_in = compact_k_input(batch, core.cfg)
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
        gamma=batch.gamma,
    )
    return compact_losses(
        core, out, df, batch.focus_sign, batch.depth, max_depth=core.cfg.max_depth, log_disp_weight=log_disp_weight
    )


def compact_losses(
    model,
    out: dict,
    disp_focus,
    focus_sign,
    gt,
    min_depth: float = 1e-3,
    max_depth: float | None = None,
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

    Args: model: the compact model (unwrapped); out: model outputs; disp_focus [B] 1/m (NaN unknown);
    focus_sign [B]; gt [B, H, W] metres, valid in (min_depth, max_depth) m; max_depth None: the model's
    ``cfg.max_depth`` (the range its monocular branch is clamped to).
    Returns: (scalar loss, blended depth [B, H, W] metres).
    """
    import torch
    import torch.nn.functional as F

    if max_depth is None:
        max_depth = model.cfg.max_depth
    mask = _valid_gt(gt, min_depth, max_depth)
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
        loss = loss + offset_loss(
            out["offset"][has], torch.zeros_like(df[has, 0, 0]), gt[has], min_depth, max_depth, delta=delta[has]
        )
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

    mask = _valid_gt(gt, min_depth, max_depth)
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


def _config_overrides(args) -> dict:
    """``--config`` as a dict (an empty one without it); one-line errors for bad JSON."""
    if not args.config:
        return {}
    try:
        overrides = json.loads(args.config)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"--config: not valid JSON ({exc.msg} at character {exc.pos}); pass a JSON object, "
            """e.g. --config '{"dim": 32}'"""
        ) from exc
    if not isinstance(overrides, dict):
        raise InputError(
            f"--config: expected a JSON object of config fields, got {type(overrides).__name__}; "
            """e.g. --config '{"dim": 32}'"""
        )
    return overrides


def _build(args):
    """(model, step_fn, default lr, default wd, size, multiple)."""
    if args.model == "compact":
        from ..models.compact_depth import CompactDepthConfig, CompactDepthModel, load_compact_depth

        if args.init:
            if args.config:
                raise InputError(
                    "--config: not allowed with --init (the --init checkpoint carries its own config); "
                    "drop --config, or drop --init to train a new model from scratch"
                )
            model = load_compact_depth(args.init).train()
        else:
            overrides = _config_overrides(args)
            known = {f.name for f in dataclasses.fields(CompactDepthConfig)}
            unknown = sorted(set(overrides) - known)
            if unknown:
                raise InputError(
                    f"--config: unknown CompactDepthConfig field(s) {', '.join(unknown)}; "
                    f"the fields are {', '.join(sorted(known))}"
                )
            try:
                model = CompactDepthModel(CompactDepthConfig(**overrides))
            except BokehDepthError:
                raise
            except (TypeError, ValueError, AssertionError, RuntimeError) as exc:
                raise InputError(
                    f"--config: invalid compact model config ({type(exc).__name__}: {exc}); fix the value in --config"
                ) from exc
        step = functools.partial(compact_step, log_disp_weight=args.log_disp_weight)
        return model, step, 3e-4, 0.05, args.size or model.cfg.image_size, model.cfg.patch_size
    from transformers import Dinov2Config

    from ..models.depth_anything import build_model, load_base_weights

    overrides = _config_overrides(args)
    known = set(Dinov2Config().to_dict()) | {
        "kind",
        "max_depth",
        "identity_init",
        "dsfa_heads",
        "neck_hidden_sizes",
        "fusion_hidden_size",
        "initializer_range",
    }
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise InputError(
            f"--config: unknown field(s) {', '.join(unknown)} for {args.model}; give Dinov2Config fields "
            "(hidden_size, num_hidden_layers, …) or dsfa_heads, neck_hidden_sizes, fusion_hidden_size, max_depth"
        )
    try:
        model = build_model(args.model, **overrides)
    except BokehDepthError:
        raise
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as exc:
        raise InputError(
            f"--config: invalid {args.model} config ({type(exc).__name__}: {exc}); fix the value in --config"
        ) from exc
    if args.init:
        # a plain DAv2 checkpoint (the published recipe's init) has no DSFA weights: load_weights then makes the
        # blocks an identity (right for inference); training starts them at the published init (gates 0.1)
        dsfa = {k: v.clone() for k, v in model.encoder_fusion.state_dict().items()}
        if load_base_weights(model, args.init) in ("dav2-original", "transformers"):
            model.encoder_fusion.load_state_dict(dsfa)
    if args.freeze_backbone:
        for prm in model.model.backbone.parameters():
            prm.requires_grad_(False)
    return model, dav2_step, 5e-6, 0.01, args.size or 518, 14


# ------------------------------------------------------------------------------------------------------------
# checkpoints: OUT/last
# ------------------------------------------------------------------------------------------------------------
def _recover_last(out: Path) -> None:
    """Finish or undo a save that a crash interrupted (see :func:`_write_last`), and drop its leftovers.

    ``OUT/.last.new`` exists only complete (it appears by one rename) and is newer than ``OUT/.last.prev``;
    either stands in for a missing ``OUT/last``. A save killed while writing leaves its temporary folder
    (``OUT/.last.new.tmp-*``, see :func:`bokehdepth.io.atomic_dir`): never complete, it is removed."""
    last, new, prev = out / "last", out / ".last.new", out / ".last.prev"
    if not last.exists():
        for cand in (new, prev):
            if cand.is_dir():
                os.replace(cand, last)
                break
    for stale in (new, prev, *out.glob(".last.new.tmp-*")):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale)
        elif stale.exists() or stale.is_symlink():
            stale.unlink()


def _write_last(out: Path, weights: dict, optimizer_state: dict, rng: dict, state: dict) -> None:
    """Write ``OUT/last`` so that a crash at any moment leaves one complete checkpoint: the new one is built in
    a temporary folder that becomes ``OUT/.last.new`` by one rename (:func:`bokehdepth.io.atomic_dir`), then
    ``last`` → ``.last.prev``, ``.last.new`` → ``last`` (:func:`_recover_last` completes an interrupted swap)."""
    import torch
    from safetensors.torch import save_file

    from ..io import atomic_dir

    last, new, prev = out / "last", out / ".last.new", out / ".last.prev"
    _recover_last(out)
    with atomic_dir(new) as tmp:
        save_file({k: v.detach().contiguous().cpu() for k, v in weights.items()}, str(tmp / "model.safetensors"))
        torch.save(optimizer_state, tmp / "optimizer.pt")
        save_file({k: v.contiguous().cpu() for k, v in rng.items()}, str(tmp / "rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state) + "\n")
    try:
        if last.exists():
            os.replace(last, prev)
        os.replace(new, last)
        shutil.rmtree(prev, ignore_errors=True)
    except OSError as exc:
        raise OutputError(f"{last}: cannot replace the checkpoint ({exc.strerror}); check the disk and -o") from exc


def _save(out: Path, model, optimizer, accelerator, rng: dict, state: dict) -> None:
    """Checkpoint to ``OUT/last`` (every process gathers the weights; the main process writes)."""
    accelerator.wait_for_everyone()
    weights = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        _write_last(out, weights, optimizer.state_dict(), rng, state)
    accelerator.wait_for_everyone()


def _read_last(last: Path, model_name: str) -> dict:
    """Read and check every file of ``last`` (nothing is applied yet): ``{"state", "model", "optimizer",
    "rng"}``. A missing, truncated or foreign file is a :class:`CheckpointError` naming it."""
    import torch
    from safetensors.torch import load_file

    fix = f"delete {last} to start over (or run without --resume)"

    def read(name: str, loader):
        path = last / name
        if not path.is_file():
            raise CheckpointError(f"{path}: missing from the checkpoint; {fix}")
        try:
            return loader(path)
        except Exception as exc:  # truncated safetensors, corrupt zip, pickled objects that are not tensors
            msg = str(exc).splitlines()[0][:160] if str(exc) else ""
            raise CheckpointError(f"{path}: unreadable or truncated ({type(exc).__name__}: {msg}); {fix}") from exc

    state = read("state.json", lambda p: json.loads(p.read_text()))
    path = last / "state.json"
    if not isinstance(state, dict) or state.get("format") != _LAST_FORMAT:
        raise CheckpointError(f"{path}: not a {_LAST_FORMAT} checkpoint state (older or foreign); {fix}")
    ints = ("step", "epoch", "batch_in_epoch")
    if not all(isinstance(state.get(k), int) and state[k] >= 0 for k in ints) or not isinstance(
        state.get("elapsed_s"), (int, float)
    ):
        raise CheckpointError(f"{path}: {', '.join(ints)} or elapsed_s missing or invalid; {fix}")
    if state.get("model") != model_name:
        raise CheckpointError(
            f"{path}: the checkpoint is of --model {state.get('model')}, not {model_name}; pass --model "
            f"{state.get('model')}, or {fix}"
        )
    rng = read("rng.safetensors", lambda p: load_file(str(p)))
    if not {"torch", "loader"} <= set(rng):
        raise CheckpointError(f"{last / 'rng.safetensors'}: torch or loader RNG state missing; {fix}")
    return {
        "state": state,
        "model": read("model.safetensors", lambda p: load_file(str(p))),
        "optimizer": read("optimizer.pt", lambda p: torch.load(p, map_location="cpu", weights_only=True)),
        "rng": rng,
    }


def _pyrandom_state(rng: random.Random) -> list:
    """``random.Random`` state as JSON (lists)."""
    version, internal, gauss = rng.getstate()
    return [version, list(internal), gauss]


# what a resumed run must share with the run that wrote the checkpoint (the data order and the optimisation):
# state.json key -> flag; a difference is an error (see _check_resume_settings)
_SAME_ON_RESUME = {
    "model": "--model",
    "config": "--config",
    "split": "--split",
    "max_scenes": "--max-scenes",
    "max_frames": "--max-frames",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "stack_dropout": "--stack-dropout",
    "single_frame": "--single-frame",
    "log_disp_weight": "--log-disp-weight",
    "mixed_precision": "--mixed-precision",
    "freeze_backbone": "--freeze-backbone",
    "size": "--size",
    "crop": "--crop",
}
# restored with the optimizer state: left out, the checkpoint's value is used; given and different, refused
_RESTORED_ON_RESUME = {"lr": "--lr", "weight_decay": "--weight-decay"}
# may change on resume, silently (the cosine schedule follows the new values from the checkpoint's step on):
# steps, max_minutes; and save_every, gradient_checkpointing, cpu, which the checkpoint does not record


def _manifest_fingerprints(paths: Sequence[str | Path]) -> list[dict]:
    """``[{"path": resolved path, "sha256": of the manifest's bytes}]`` for ``--data`` (a cheap fingerprint: the
    manifest, not the images it lists)."""
    found = []
    for path in paths:
        path = Path(path)
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError as exc:
            raise InputError(f"--data: {path} not found; create one with 'bokehdepth synth -o DIR --scenes N'") from exc
        except OSError as exc:
            raise InputError(
                f"--data: {path}: cannot read it ({exc.strerror}); check the path and its permissions"
            ) from exc
        found.append({"path": str(path.resolve()), "sha256": digest})
    return found


def _run_settings(args, num_processes: int) -> dict:
    """The flags of this run that a checkpoint records (``state.json`` ``settings``), from the arguments alone.

    ``lr``/``weight_decay`` are the given values (None: the preset's); :func:`run` replaces them with the values
    the optimizer trains with, and adds ``size`` and ``model_config`` once the model is built."""
    return {
        "model": args.model,
        "config": _config_overrides(args),
        "init": None if args.init is None else str(Path(args.init).resolve()),
        "num_processes": int(num_processes),
        "data": _manifest_fingerprints(args.data),
        "split": args.split,
        "max_scenes": args.max_scenes,
        "max_frames": args.max_frames,
        "batch_size": args.batch_size,
        "seed": args.seed,
        "lr": args.lr,
        "weight_decay": args.weight_decay,
        "steps": args.steps,
        "max_minutes": args.max_minutes,
        "stack_dropout": args.stack_dropout,
        "single_frame": bool(args.single_frame),
        "log_disp_weight": args.log_disp_weight,
        "mixed_precision": args.mixed_precision,
        "freeze_backbone": bool(args.freeze_backbone),
        "crop": _crop_mode(args),
    }


def _crop_mode(args) -> str:
    """``--crop`` as given, else the model's default: ``center`` for compact, ``random`` for DAv2 (published)."""
    return args.crop or ("center" if args.model == "compact" else "random")


def _model_settings(args, model, size: int) -> dict:
    """Settings known once the model is built: the crop size and (compact) the model's whole config."""
    cfg = getattr(model, "cfg", None) if args.model == "compact" else None
    return {"size": int(size), "model_config": None if cfg is None else json.loads(json.dumps(dataclasses.asdict(cfg)))}


def _describe(value) -> str:
    """A setting as it appears in a message."""
    if value is None:
        return "(not given)"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, dict):
        return f"'{json.dumps(value)}'" if value else "(not given)"
    return str(value)


def _as_flag(flag: str, value) -> str:
    """What to pass to get ``value`` for ``flag`` ("leave out FLAG" where the value is the absence)."""
    if value is None or value is False or value == {}:
        return f"leave out {flag}"
    if value is True:
        return f"pass {flag}"
    return f"pass {flag} {_describe(value)}"


def _check_resume_settings(saved: dict | None, current: dict, path: Path, warn) -> None:
    """Compare the settings of this run with those of the checkpoint's run (``saved``, from ``path``).

    Refused (a :class:`InputError` naming the flag, the checkpoint's value and the fix): anything that would make
    the resumed run differ from the uninterrupted one (the keys of ``_SAME_ON_RESUME``, the data by content,
    the number of processes, the compact model's config), and ``--lr``/``--weight-decay`` given with another
    value than the checkpoint's (left out, the checkpoint's are used: they are restored with the optimizer).
    Accepted: another ``--steps``/``--max-minutes`` (the cosine schedule follows them from the checkpoint's step
    on); with one ``warn`` line each: another ``--init`` (the checkpoint's weights replace it), the same
    manifests at another path. Only the keys present in both are compared; ``saved`` None (a checkpoint from before settings were
    recorded) is checked by the caller."""
    if saved is None:
        return
    new_run = "or start a new run in another -o"
    for key, flag in _SAME_ON_RESUME.items():
        if key in current and key in saved and current[key] != saved[key]:
            raise InputError(
                f"{flag} {_describe(current[key])} differs from the checkpoint's {_describe(saved[key])} ({path}); "
                f"{_as_flag(flag, saved[key])} to resume, {new_run}"
            )
    for key, flag in _RESTORED_ON_RESUME.items():
        if current.get(key) is not None and key in saved and current[key] != saved[key]:
            raise InputError(
                f"{flag} {current[key]} differs from the checkpoint's {saved[key]} ({path}; restored with the "
                f"optimizer state); leave out {flag} or pass {flag} {saved[key]} to resume, {new_run}"
            )
    if "data" in current and "data" in saved:
        cur, old = current["data"], saved["data"]
        if [d["sha256"] for d in cur] != [d["sha256"] for d in old]:
            paths = " ".join(d["path"] for d in old)
            changed = [c["path"] for c, o in zip(cur, old) if c["path"] == o["path"] and c["sha256"] != o["sha256"]]
            what = f" ({', '.join(changed)} changed since)" if changed and len(cur) == len(old) else ""
            raise InputError(
                f"--data {' '.join(d['path'] for d in cur)} differs from the checkpoint's {paths}{what} ({path}; "
                f"compared by the sha256 of each manifest); pass --data {paths} with the manifests as they were "
                f"to resume, {new_run}"
            )
        if [d["path"] for d in cur] != [d["path"] for d in old]:
            warn(f"--data: the manifests moved since the checkpoint ({path}), with the same bytes; resuming")
    if "num_processes" in current and "num_processes" in saved and current["num_processes"] != saved["num_processes"]:
        raise InputError(
            f"this run has {current['num_processes']} process(es), the checkpoint's had {saved['num_processes']} "
            f"({path}; it sets which samples each process sees); launch with accelerate launch --num_processes "
            f"{saved['num_processes']} to resume, {new_run}"
        )
    if current.get("model_config") is not None and saved.get("model_config") is not None:
        cur, old = current["model_config"], saved["model_config"]
        diff = [f"{k} {cur.get(k)} ≠ {old.get(k)}" for k in sorted(set(cur) | set(old)) if cur.get(k) != old.get(k)]
        if diff:
            raise InputError(
                f"--config/--init: the model's config differs from the checkpoint's ({'; '.join(diff)}; {path}); "
                f"resume with the --config/--init of the run that wrote it, {new_run}"
            )
    if "init" in current and "init" in saved and current["init"] != saved["init"]:
        warn(
            f"--init {_describe(current['init'])} differs from the checkpoint's {_describe(saved['init'])} ({path}); "
            "the checkpoint's weights are used (--init only starts a new run)"
        )


def _scaler_state(scaler) -> dict | None:
    """The fp16 GradScaler's state as JSON (a few floats and ints), or None without an enabled scaler."""
    if scaler is None:
        return None
    state = scaler.state_dict()
    return {k: (int(v) if isinstance(v, int) else float(v)) for k, v in state.items()} or None


def _restore_scaler(scaler, state, path: Path, fix: str) -> None:
    """Load a state from :func:`_scaler_state` into ``scaler``; a malformed one is a :class:`CheckpointError`."""
    keys = {"scale": float, "growth_factor": float, "backoff_factor": float, "growth_interval": int}
    ok = isinstance(state, dict) and all(
        isinstance(state.get(k), (int, float)) and not isinstance(state.get(k), bool) and math.isfinite(state[k])
        for k in keys
    )
    ok = ok and state["scale"] > 0 and isinstance(state.get("_growth_tracker"), int)
    if not ok:
        raise CheckpointError(f"{path}: grad_scaler state invalid ({state!r:.120}); {fix}")
    scaler.load_state_dict({**{k: t(state[k]) for k, t in keys.items()}, "_growth_tracker": state["_growth_tracker"]})


def _open_log(path: Path, resumed_step: int | None):
    """``OUT/loss.jsonl`` for appending: emptied on a fresh run (``resumed_step`` None); on resume, cut to the
    lines with step ≤ ``resumed_step`` (one per step, lines cut by a crash dropped)."""
    from ..io import atomic_file

    if resumed_step is None:
        return path.open("w")
    kept: dict[int, str] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict) and isinstance(rec.get("step"), int) and rec["step"] <= resumed_step:
                kept[rec["step"]] = line
    with atomic_file(path) as tmp:
        tmp.write_text("".join(kept[k] + "\n" for k in sorted(kept)))
    return path.open("a")


def _export(out: Path, model, args) -> Path:
    from ..io import atomic_file

    if args.model == "compact":
        from ..models.compact_depth import save_compact_depth

        path = out / "compact_depth.safetensors"
        with atomic_file(path) as tmp:
            save_compact_depth(model, tmp, {"train_args": {k: str(v) for k, v in vars(args).items() if k != "func"}})
        return path
    from safetensors.torch import save_file

    from ..models.depth_anything import to_published_state_dict

    path = out / f"{args.model}.safetensors"
    with atomic_file(path) as tmp:
        save_file({k: v.contiguous() for k, v in to_published_state_dict(model).items()}, str(tmp))
    return path


def _check_args(args) -> None:
    """One-line errors for flag values that would crash mid-run or silently do nothing."""
    for flag, value in (("--steps", args.steps), ("--batch-size", args.batch_size), ("--save-every", args.save_every)):
        if value < 1:
            raise InputError(f"{flag} {value}: must be at least 1")
    if not 0.0 <= args.stack_dropout <= 1.0:
        raise InputError(f"--stack-dropout {args.stack_dropout}: a fraction of steps; pass a value in [0, 1]")
    if args.max_minutes is not None and not args.max_minutes > 0:
        raise InputError(f"--max-minutes {args.max_minutes}: pass a positive number of minutes, or leave it out")
    if args.model == "compact" and args.freeze_backbone:
        raise InputError("--freeze-backbone: only for the dav2-dsfa presets; the compact model trains whole")
    if args.resume and args.overwrite:
        raise InputError(
            "--overwrite: not with --resume (--resume continues OUT/last, --overwrite deletes it and starts over); "
            "pass one of them"
        )
    out = Path(args.output)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; choose another output folder with -o")


def run(args: argparse.Namespace) -> int:
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs
    from tqdm import tqdm

    from ..models.checkpoints import load_strict

    _check_args(args)
    # DSFA (and the stack inputs) sit idle on single-frame steps, and DAv2 never uses DINOv2's mask_token nor
    # the first fusion layer's residual unit: DDP must not wait for their gradients
    unused = args.single_frame or args.stack_dropout > 0 or args.model != "compact"
    handlers = [DistributedDataParallelKwargs(find_unused_parameters=True)] if unused else []
    try:
        accelerator = Accelerator(mixed_precision=args.mixed_precision, cpu=args.cpu, kwargs_handlers=handlers)
    except ValueError as exc:  # e.g. bf16 on a GPU without it
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"--mixed-precision {args.mixed_precision}: {msg}; pass another --mixed-precision") from exc
    if args.mixed_precision != "no" and not accelerator.native_amp:  # accelerate would train in fp32
        raise InputError(
            f"--mixed-precision {args.mixed_precision}: not available on {accelerator.device.type} "
            "(it would silently train in fp32); pass --mixed-precision bf16 or no, or train on a GPU"
        )
    is_main = accelerator.is_main_process
    out = Path(args.output)
    last = out / "last"
    if is_main and out.is_dir():
        _recover_last(out)
    accelerator.wait_for_everyone()
    if not args.resume and not args.overwrite and last.exists():
        raise OutputError(
            f"{out} holds a checkpoint of an earlier run ({last}); pass --resume to continue it, or --overwrite to "
            "start over"
        )
    resume = args.resume and last.exists()

    def warn(message: str) -> None:
        if is_main:
            sys.stderr.write(f"warning: {message}\n")

    if args.resume and not resume:
        warn(f"--resume: no checkpoint in {last}; starting from step 0")
    saved = _read_last(last, args.model) if resume else None  # checked before anything is built or written
    settings = _run_settings(args, accelerator.num_processes)
    saved_settings = None
    if saved is not None:
        saved_settings = saved["state"].get("settings")
        if saved_settings is None:
            warn(
                f"{last / 'state.json'} records no run settings (a checkpoint from before they were kept): "
                "--data, --batch-size, --seed and the other flags cannot be checked against it; resume with the "
                "flags of the run that wrote it"
            )
        elif not isinstance(saved_settings, dict):
            raise CheckpointError(
                f"{last / 'state.json'}: settings invalid (not a JSON object); delete {last} to start over "
                "(or run without --resume)"
            )
        else:
            saved_settings.setdefault("crop", "center")  # checkpoints from before --crop: centre crops only
        _check_resume_settings(saved_settings, settings, last / "state.json", warn)

    torch.manual_seed(args.seed)
    model, step_fn, lr, wd, size, multiple = _build(args)
    built = _model_settings(args, model, size)
    if saved is not None:  # before the (slow) scene loading
        _check_resume_settings(saved_settings, built, last / "state.json", warn)
    settings.update(built)
    if args.gradient_checkpointing:
        if args.model == "compact":
            model.gradient_checkpointing = True
        else:
            model.model.backbone.gradient_checkpointing_enable()
    scenes = load_manifest_scenes(
        args.data, args.split, size, args.max_frames, multiple, args.max_scenes, settings["crop"]
    )
    if args.model == "compact" and model.cfg.cost_bins and not args.single_frame:
        cache_cost_volumes(model, scenes)
    sampler = _EpochSampler(len(scenes), args.seed)
    loader_rng = torch.Generator().manual_seed(args.seed)  # worker seeds only; the order comes from `sampler`
    loader = torch.utils.data.DataLoader(
        _SceneSet(scenes),
        batch_size=min(args.batch_size, len(scenes)),
        sampler=sampler,
        drop_last=True,
        collate_fn=collate,
        generator=loader_rng,
    )
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=args.lr or lr, weight_decay=wd if args.weight_decay is None else args.weight_decay
    )
    clock = {"before": 0.0, "t0": time.time()}  # training seconds of earlier runs; start of this one

    def elapsed() -> float:
        return clock["before"] + time.time() - clock["t0"]

    def progress(s: int) -> float:
        """Fraction of training done: by steps, or by training time under --max-minutes."""
        frac = s / max(1, args.steps)
        if args.max_minutes:
            frac = max(frac, elapsed() / (60 * args.max_minutes))
        return min(1.0, frac)

    warmup = max(1, min(args.steps, 400) // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * progress(s)))
    )
    drop_rng = random.Random(args.seed + 1)
    step = epoch = pos = 0
    fix = f"delete {last} to start over (or run without --resume)"
    if saved is not None:
        try:
            load_strict(model, saved["model"], last / "model.safetensors")
        except CheckpointError as exc:
            raise CheckpointError(
                f"{exc}; resume with the --model/--config of the run that wrote it, or {fix}"
            ) from exc
    model, optimizer, loader = accelerator.prepare(model, optimizer, loader)
    if saved is not None:  # after prepare, so that the optimizer state lands on the parameters' device
        try:
            optimizer.load_state_dict(saved["optimizer"])
        except (ValueError, KeyError, TypeError, IndexError, RuntimeError) as exc:
            raise CheckpointError(
                f"{last / 'optimizer.pt'}: does not fit this model's optimizer ({type(exc).__name__}: {exc}); {fix}"
            ) from exc
        state, rng = saved["state"], saved["rng"]
        try:
            sched.load_state_dict(state["scheduler"])
            version, internal, gauss = state["drop_rng"]
            drop_rng.setstate((version, tuple(internal), gauss))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise CheckpointError(
                f"{last / 'state.json'}: scheduler or RNG state invalid ({type(exc).__name__}: {exc}); {fix}"
            ) from exc
        try:
            torch.set_rng_state(rng["torch"])
            loader_rng.set_state(rng["loader"])
            if "cuda" in rng and accelerator.device.type == "cuda":
                torch.cuda.set_rng_state(rng["cuda"], accelerator.device)
        except (RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{last / 'rng.safetensors'}: invalid RNG state ({exc}); {fix}") from exc
        if accelerator.scaler is not None:
            if "grad_scaler" in state:
                _restore_scaler(accelerator.scaler, state["grad_scaler"], last / "state.json", fix)
            else:
                warn(
                    f"{last / 'state.json'}: no fp16 GradScaler state in the checkpoint; the loss scale starts "
                    "over at its initial value"
                )
        step, epoch, pos = state["step"], state["epoch"], state["batch_in_epoch"]
        clock["before"] = float(state["elapsed_s"])
        if saved_settings is not None:  # kept as they were when the run started (provenance)
            settings["init"] = saved_settings.get("init", settings["init"])
    # the values the optimizer trains with (on resume: restored from the checkpoint)
    settings["lr"] = float(sched.base_lrs[0])
    settings["weight_decay"] = float(optimizer.param_groups[0]["weight_decay"])
    model.train()
    n_batches = len(loader)
    if n_batches == 0:
        raise InputError(f"--batch-size {args.batch_size}: no full batch per process; use a smaller batch size")
    if pos >= n_batches:
        epoch, pos = epoch + 1, 0

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"{out}: cannot create the output folder ({exc.strerror}); choose another -o") from exc
    log = None
    if is_main:
        if not resume:  # a fresh run owns OUT: an earlier run's checkpoint must not be resumed with this log
            shutil.rmtree(last, ignore_errors=True)
        log = _open_log(out / "loss.jsonl", step if resume else None)

    def snapshot() -> tuple[dict, dict]:
        rng = {"torch": torch.get_rng_state(), "loader": loader_rng.get_state()}
        if accelerator.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(accelerator.device)
        state = {
            "format": _LAST_FORMAT,
            "model": args.model,
            "step": step,
            "epoch": epoch,
            "batch_in_epoch": pos,
            "elapsed_s": elapsed(),
            "drop_rng": _pyrandom_state(drop_rng),
            "scheduler": sched.state_dict(),
            "settings": settings,
        }
        scaler = _scaler_state(accelerator.scaler)
        if scaler is not None:
            state["grad_scaler"] = scaler
        return rng, state

    bar = tqdm(total=args.steps, initial=step, desc=f"stage2 {args.model}", disable=not is_main)
    done = step >= args.steps or progress(step) >= 1.0
    try:
        while not done:
            sampler.set_epoch(epoch)
            loader.set_epoch(epoch)
            for batch in accelerator.skip_first_batches(loader, pos) if pos else loader:
                single = args.single_frame or drop_rng.random() < args.stack_dropout
                with accelerator.autocast():
                    loss, _ = step_fn(model, batch, single)
                optimizer.zero_grad(set_to_none=True)
                accelerator.backward(loss)
                accelerator.clip_grad_norm_(params, 1.0)
                lr_now = sched.get_last_lr()[0]  # the lr this step trains with (sched.step sets the next one)
                optimizer.step()
                sched.step()
                step, pos = step + 1, pos + 1
                value = accelerator.reduce(loss.detach(), reduction="mean").item()
                bar.update(1)
                bar.set_postfix(loss=f"{value:.4f}")
                if log is not None:
                    rec = {"step": step, "loss": value, "lr": lr_now, "time": elapsed()}
                    log.write(json.dumps(rec) + "\n")
                    log.flush()
                if step % args.save_every == 0:
                    _save(out, model, optimizer, accelerator, *snapshot())
                if step >= args.steps or progress(step) >= 1.0:
                    done = True
                    break
            else:
                epoch, pos = epoch + 1, 0
    finally:
        bar.close()
        if log is not None:
            log.close()
    _save(out, model, optimizer, accelerator, *snapshot())
    if is_main:
        path = _export(out, accelerator.unwrap_model(model), args)
        print(f"wrote {path}")
    accelerator.wait_for_everyone()
    return 0
