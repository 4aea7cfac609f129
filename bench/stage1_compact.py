"""Benchmark the compact Stage-1 generator (docs/stage1.md).

1. Accuracy on held-out synthetic scenes: for each scene and K, the target is the classical renderer with the
   ground-truth depth (published normalised convention: per-image min–max normalised disparity, focus on the
   foreground with the subject flattened into focus, radius K·W/512 px per unit); the compact generator sees
   only the sharp image. PSNR and SSIM (scikit-image) per K, next to the identity baseline "the sharp image
   as the prediction".
2. Speed on one 512×512 frame: the compact generator (network + blur pyramid, one K; and a 3-K stack per
   frame) against the renderer (which needs the depth map) on the same frame, measured in the same run.

Held-out means a dataset seed the shipped weights never saw (training used seed 0; default here seed 1).

    nice venv/bin/python bench/stage1_compact.py --data /path/heldout/manifest.jsonl
    nice venv/bin/python bench/stage1_compact.py --make-data /tmp/heldout --scenes 8 --size 512 --seed 1

``--device cuda`` runs the generator (and the renderer's torch backend) on a GPU.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np


def _targets(image: np.ndarray, depth: np.ndarray, mask: np.ndarray | None, Ks, backend: str):
    """Renderer frames for each normalised K (published convention) and the time of each render (s)."""
    from bokehdepth.render import render
    from bokehdepth.synth.stacks import normalize_disp, published_focus

    dn, _, _ = normalize_disp(depth)
    dn_focus, dn_render = published_focus(dn, depth, mask, flatten=True)
    w = image.shape[1]
    frames, times = [], []
    for k in Ks:
        t = time.perf_counter()
        frames.append(render(image, dn_render, k * w / 512.0, disp_focus=dn_focus, gamma=2.2, backend=backend))
        times.append(time.perf_counter() - t)
    return frames, times, (dn_render, dn_focus)


def _metrics(pred: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    pred = np.clip(pred, 0, 1).astype(np.float64)
    target = np.clip(target, 0, 1).astype(np.float64)
    return (
        float(peak_signal_noise_ratio(target, pred, data_range=1.0)),
        float(structural_similarity(target, pred, channel_axis=2, data_range=1.0)),
    )


def _median_time(fn, repeats: int) -> tuple[float, float]:
    """(median wall-clock s, median CPU s of this process, all threads) over ``repeats`` calls after a warm-up."""
    fn()  # warm-up (numba compile, allocator, FFT plans)
    walls, cpus = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", help="held-out manifest.jsonl or dataset folder (normalised or metric; needs depth)")
    p.add_argument("--make-data", help="generate the held-out scenes into this folder first")
    p.add_argument("--scenes", type=int, default=8, help="scenes to generate with --make-data (8)")
    p.add_argument("--size", type=int, default=512, help="scene size for --make-data (512)")
    p.add_argument("--seed", type=int, default=1, help="dataset seed for --make-data (1; training used 0)")
    p.add_argument("--K", type=float, nargs="+", default=[5.0, 10.0, 20.0, 30.0], help="normalised K values")
    p.add_argument("--weights", default=None, help="compact generator weights (default: embedded)")
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads (2)")
    p.add_argument("--repeats", type=int, default=5, help="timing repeats (median)")
    p.add_argument("--max-scenes", type=int, default=None, help="evaluate at most this many scenes")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)

    import torch

    from bokehdepth.data import read_manifest
    from bokehdepth.data.datasets import load_depth_for
    from bokehdepth.io import read_image
    from bokehdepth.pipelines.stack import CompactStackGenerator

    torch.set_num_threads(args.threads)
    if args.make_data:
        from bokehdepth.synth import generate_dataset

        args.data = str(
            generate_dataset(
                args.make_data, args.scenes, size=args.size, Ks=[30.0], K_convention="normalized", seed=args.seed
            )
        )
    if not args.data:
        p.error("give --data or --make-data")
    records = read_manifest(args.data, split=None)[: args.max_scenes]
    gen = CompactStackGenerator(weights=args.weights, device=args.device)
    backend = "torch" if args.device.startswith("cuda") else "cpu"

    # speed on one 512×512 frame (the first scene, resized)
    import cv2

    rec = records[0]
    image = cv2.resize(read_image(rec["image"]), (512, 512), interpolation=cv2.INTER_AREA)
    depth = cv2.resize(load_depth_for(rec["depth"], read_image(rec["image"]).shape[:2]), (512, 512), cv2.INTER_NEAREST)
    mask = None
    if rec.get("mask"):
        mask = cv2.resize(read_image(rec["mask"])[..., 0], (512, 512), interpolation=cv2.INTER_NEAREST) > 0.5
    speed = {}
    s_wall, s_cpu = _median_time(lambda: gen.generate(image, [10.0, 20.0, 30.0]), args.repeats)
    speed["stack_10_20_30_per_frame"] = {"wall_s": s_wall / 3.0, "cpu_s": s_cpu / 3.0}
    # the compact generator is timed before the renderer: numba's worker threads, once started, can keep
    # spinning and would be charged to this process's CPU time
    gen_times = {k: _median_time(lambda k=k: gen.generate(image, [k]), args.repeats) for k in (10.0, 30.0)}
    for k in (10.0, 30.0):
        (g_wall, g_cpu), (r_wall, r_cpu) = (
            gen_times[k],
            _median_time(lambda k=k: _targets(image, depth, mask, [k], backend), args.repeats),
        )
        speed[k] = {
            "compact_wall_s": g_wall,
            "compact_cpu_s": g_cpu,
            "renderer_wall_s": r_wall,
            "renderer_cpu_s": r_cpu,
            "ratio_wall": g_wall / r_wall,
        }

    per_k = {k: {"compact": [], "identity": []} for k in args.K}
    for rec in records:
        image = read_image(rec["image"])
        depth = load_depth_for(rec["depth"], image.shape[:2])
        mask = read_image(rec["mask"])[..., 0] > 0.5 if rec.get("mask") else None
        targets, _, _ = _targets(image, depth, mask, args.K, backend)
        stack = gen.generate(image, args.K)
        for k, tgt, pred in zip(args.K, targets, stack.frames[1:]):
            per_k[k]["compact"].append(_metrics(pred, tgt))
            per_k[k]["identity"].append(_metrics(image, tgt))

    rows = []
    for k in args.K:
        row = {"K": k}
        for name in ("compact", "identity"):
            arr = np.array(per_k[k][name])
            row[f"{name}_psnr"], row[f"{name}_ssim"] = float(arr[:, 0].mean()), float(arr[:, 1].mean())
        rows.append(row)

    print(f"held-out scenes: {len(records)} ({args.data}); device {args.device}, torch threads {args.threads}")
    print("| K | compact PSNR (dB) | identity PSNR (dB) | compact SSIM | identity SSIM |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['K']:g} | {r['compact_psnr']:.2f} | {r['identity_psnr']:.2f} | "
            f"{r['compact_ssim']:.4f} | {r['identity_ssim']:.4f} |"
        )
    print(
        "\n| 512×512 frame | compact wall (s) | compact CPU (s) | renderer + GT depth wall (s) | "
        "renderer CPU (s) | compact / renderer (wall) |"
    )
    print("|---|---|---|---|---|---|")
    for k in (10.0, 30.0):
        s = speed[k]
        print(
            f"| K = {k:g} | {s['compact_wall_s']:.3f} | {s['compact_cpu_s']:.3f} | {s['renderer_wall_s']:.3f} | "
            f"{s['renderer_cpu_s']:.3f} | {s['ratio_wall']:.2f} |"
        )
    print(f"\n3-frame stack (K 10 20 30), compact, per frame: {s_wall / 3:.3f} s wall, {s_cpu / 3:.3f} s CPU")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "speed": {str(k): v for k, v in speed.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
