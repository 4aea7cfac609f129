"""Benchmark of the synthetic data engine: scenes per second at 256² with a 4-frame stack (K = 0, 1.5, 3, 6 px·m).

Measures, in one run:
- the end-to-end ``generate_dataset`` throughput (scene + stack render + PNG/NPY writes) with 1 worker
  process (the baseline) and with 2 workers, after a one-scene warm-up that loads the numba kernels;
- the split of one scene's cost: ``make_scene`` alone, ``render_scene_stack`` alone, and the writes.

    nice venv/bin/python bench/synth.py [--scenes 12] [--size 256] [--workers 1 2] [--json docs/synth_bench.json]

Wall-clock figures depend on what else runs on the machine (the load average at the end is recorded); the CPU
seconds per scene (``time.process_time`` of the single-process split) do much less.
Worker processes are spawned fresh, so their time includes importing numpy/cv2/numba and loading the cached
renderer kernels (≈ 1–3 s each): the figure is what a user sees for a dataset of this size.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description="synthetic data engine throughput")
    ap.add_argument("--scenes", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--backend", default="cpu", help="renderer backend (cpu, torch)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()

    import numpy as np

    from bokehdepth.synth import generate_dataset, make_scene, render_scene_stack
    from bokehdepth.synth.stacks import choose_focus, default_Ks

    Ks = default_Ks(args.size)
    tmp = Path(tempfile.mkdtemp(prefix="synth_bench_"))
    try:
        generate_dataset(tmp / "warm", 1, size=args.size, seed=999, progress=False, backend=args.backend)
        # split of one scene's cost (single process, warm)
        t_scene, t_render, c_scene, c_render = [], [], [], []
        for seed in range(4):
            t0, c0 = time.perf_counter(), time.process_time()
            sc = make_scene(10_000 + seed, args.size)
            t1, c1 = time.perf_counter(), time.process_time()
            focus, side, _ = choose_focus(sc.depth, np.random.default_rng(seed))
            render_scene_stack(sc.image, sc.depth, Ks, focus, focus_side=side, backend=args.backend)
            t2, c2 = time.perf_counter(), time.process_time()
            t_scene.append(t1 - t0)
            t_render.append(t2 - t1)
            c_scene.append(c1 - c0)
            c_render.append(c2 - c1)
        results = {}
        for w in args.workers:
            t0 = time.perf_counter()
            generate_dataset(
                tmp / f"w{w}", args.scenes, size=args.size, seed=0, workers=w, progress=False, backend=args.backend
            )
            dt = time.perf_counter() - t0
            results[w] = {"seconds": dt, "scenes_per_s": args.scenes / dt}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    base = results[args.workers[0]]["scenes_per_s"]
    out = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": platform.platform(),
        "size": args.size,
        "Ks": Ks,
        "frames": len(Ks) + 1,
        "scenes": args.scenes,
        "loadavg_1min_at_end": os.getloadavg()[0],
        "make_scene_s": float(np.median(t_scene)),
        "render_stack_s": float(np.median(t_render)),
        "make_scene_cpu_s": float(np.median(c_scene)),
        "render_stack_cpu_s": float(np.median(c_render)),
        "workers": {str(w): {**r, "speedup_vs_first": r["scenes_per_s"] / base} for w, r in results.items()},
    }
    print(
        f"make_scene {out['make_scene_s']:.3f} s wall / {out['make_scene_cpu_s']:.3f} s CPU, render_scene_stack "
        f"({out['frames']} frames) {out['render_stack_s']:.3f} s wall / {out['render_stack_cpu_s']:.3f} s CPU "
        f"per scene (median of 4); load average {out['loadavg_1min_at_end']:.1f} on {os.cpu_count()} cores"
    )
    for w, r in out["workers"].items():
        print(
            f"workers={w}: {r['scenes_per_s']:.2f} scenes/s ({r['seconds']:.1f} s for {args.scenes}), "
            f"x{r['speedup_vs_first']:.2f} vs workers={args.workers[0]}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
