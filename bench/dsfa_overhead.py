"""DSFA overhead: DAv2 + DSFA against the plain encoder, random weights at the real shape.

Compared in one run, at 518×518, for a stack of ``--frames`` frames plus the reference:

- ``plain x1``: DAv2 (backbone + DPT head) on the reference alone;
- ``plain batch``: the backbone on all F = frames + 1 images as one batch, head on the reference (the published
  design runs the backbone per frame, so this is the fair baseline for the DSFA blocks, DESIGN.md);
- ``dsfa``: the full DAv2-DSFA forward (backbone on all frames + 2 DSFA blocks + head on the reference);
- ``yardstick``: ``plain batch`` + one more backbone layer on all frames per DSFA block, as the backbone runs
  it. Each published block's spatial branch is such a layer (MSA + MLP over every frame's tokens, plus one K
  token), and the focus branch needs every frame's output, so an exact DSFA cannot cost much less than this;
  it can cost less than the yardstick itself where its own attention kernel is faster than the backbone's.

    nice venv/bin/python bench/dsfa_overhead.py --variant s --device cpu --repeats 2
    python bench/dsfa_overhead.py --variant l --device cuda --repeats 10   # on a GPU
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _time(fn, repeats: int, sync, clock) -> float:
    """Best of ``repeats`` after one warm-up, in seconds of ``clock``."""
    fn()  # warm-up
    sync()
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        fn()
        sync()
        best = min(best, clock() - t)
    return best


def main() -> None:
    import torch

    from bokehdepth.models.depth_anything import build_model
    from bokehdepth.models.dsfa import fuse_frame_features

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="s", choices=("s", "b", "l"))
    ap.add_argument("--size", type=int, default=518)
    ap.add_argument("--frames", type=int, default=3, help="stack frames besides the reference")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16", "float16"))
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads (0: torch default); with 1 the process CPU time is reported, which a shared, busy machine does not distort",
    )
    args = ap.parse_args()
    if args.threads > 0:  # 0: leave torch's default
        torch.set_num_threads(args.threads)

    dev, dtype = torch.device(args.device), getattr(torch, args.dtype)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    model = build_model(f"dav2-dsfa-{args.variant}").to(dev, dtype).eval()
    s, n = args.size, args.frames
    ref = torch.randn(1, 3, s, s, device=dev, dtype=dtype)
    stack = torch.randn(1, n, 3, s, s, device=dev, dtype=dtype)
    k = torch.tensor([[10.0, 20.0, 30.0][:n] + [30.0] * max(0, n - 3)], device=dev, dtype=dtype)
    ph = pw = s // 14
    bb, neck, head = model.model.backbone, model.model.neck, model.model.head

    def plain_x1():
        feats = bb.forward_with_filtered_kwargs(ref).feature_maps
        head(neck(list(feats), ph, pw), ph, pw)

    def plain_batch():
        pix = torch.cat([ref[:, None], stack], 1).flatten(0, 1)
        feats = bb.forward_with_filtered_kwargs(pix).feature_maps
        feats = fuse_frame_features(list(feats), {}, n + 1, None)
        head(neck(feats, ph, pw), ph, pw)

    def dsfa():
        model(ref, stack, k)

    n_blocks = len(model.encoder_fusion.layers)
    tokens = torch.randn(n + 1, 1 + ph * pw, bb.config.hidden_size, device=dev, dtype=dtype)
    layer = bb.encoder.layer[0]

    def spatial_yardstick():
        for _ in range(n_blocks):
            layer(tokens)

    cpu_clock = dev.type == "cpu" and args.threads == 1
    clock = time.process_time if cpu_clock else time.perf_counter
    with torch.no_grad():
        t1 = _time(plain_x1, args.repeats, sync, clock)
        tb = _time(plain_batch, args.repeats, sync, clock)
        td = _time(dsfa, args.repeats, sync, clock)
        tf = tb + _time(spatial_yardstick, args.repeats, sync, clock)
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "CPU"
    unit = "process CPU seconds, 1 thread" if cpu_clock else "wall seconds"
    print(
        f"DAv2-{args.variant.upper()} {s}x{s}, {n} frames + ref, {args.dtype}, {name}, best of {args.repeats}, {unit}"
    )
    print("| run | seconds | vs plain batch |")
    print("|---|---|---|")
    rows = [("plain x1 (reference only)", t1), ("plain batch (all frames)", tb)]
    rows += [(f"yardstick: plain batch + {n_blocks} backbone layers on all frames", tf), ("dsfa", td)]
    for label, t in rows:
        print(f"| {label} | {t:.3f} | {t / tb:.2f}x |")
    print(f"dsfa vs plain x1: {td / t1:.2f}x; dsfa vs the yardstick: {td / tf:.2f}x")


if __name__ == "__main__":
    main()
