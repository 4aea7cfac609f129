"""Time ``bokehdepth run`` end to end: one 512×512 image, K 10 20 30, embedded compact defaults.

Reports per-stage wall seconds (Stage-1 stack, Stage-2 depth, writing the run folder), the process CPU time
(on a shared machine CPU-seconds / threads estimates the uncontended wall time), the 1-minute load average,
and, as the baseline
measured in the same run, the Stage-2 model on the image alone (``single_frame``: plain monocular depth), so
the ratio says what the stack costs on top of a monocular depth model. Target: total ≤ 10 s on 2 CPU cores.

    nice venv/bin/python bench/run_pipeline.py --threads 2 --repeats 3
    venv/bin/python bench/run_pipeline.py --device cuda      # on a GPU machine
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def _image(path: str | None, size: int) -> np.ndarray:
    """The example photo (or ``path``) resized to size×size, else a synthetic scene."""
    import cv2

    from bokehdepth.io import read_image

    root = Path(__file__).resolve().parents[1]
    src = Path(path) if path else root / "examples" / "motorcycle.png"
    if src.is_file():
        return np.clip(cv2.resize(read_image(src), (size, size), interpolation=cv2.INTER_AREA), 0, 1)
    from bokehdepth.synth import make_scene

    return make_scene(0, size).image


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="image side in px")
    ap.add_argument("--K", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    ap.add_argument("--stage1", default="compact")
    ap.add_argument("--stage2", default="compact")
    ap.add_argument("--weights", default=None, help="folder of released checkpoints")
    ap.add_argument("--stage1-weights", default=None, help="Stage-1 weights file (default: embedded)")
    ap.add_argument("--stage2-weights", default=None, help="Stage-2 weights file (default: embedded)")
    ap.add_argument("--image", default=None, help="image to time (default examples/motorcycle.png)")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument(
        "--figure",
        default=None,
        help="also run the image at its own size and write a contact sheet (input, stack, depth) here",
    )
    args = ap.parse_args()

    import torch

    from bokehdepth.io import write_image
    from bokehdepth.pipelines.bokehdepth import BokehDepthPipeline, RunConfig, new_run_dir

    torch.set_num_threads(args.threads)
    image = _image(args.image, args.size)
    cfg = RunConfig(
        Ks=tuple(args.K),
        stage1=args.stage1,
        stage2=args.stage2,
        weights=args.weights,
        stage1_weights=args.stage1_weights,
        stage2_weights=args.stage2_weights,
        device=args.device,
    )
    t0 = time.perf_counter()
    pipe = BokehDepthPipeline.load(cfg)
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.png"
        write_image(src, image)
        pipe.run_image(src, Path(tmp) / "warmup")  # first call: allocations, kernels
        rows, base = [], []
        for _ in range(args.repeats):
            t0, c0 = time.perf_counter(), time.process_time()
            run = pipe.run_image(src, new_run_dir(Path(tmp) / "runs"))
            total, cpu = time.perf_counter() - t0, time.process_time() - c0
            t = json.loads((run / "pipeline_summary.json").read_text())["timings_s"]
            rows.append(
                {"total_s": total, "cpu_s": cpu, **{k: t[k] for k in ("read_s", "stage1_s", "stage2_s", "write_s")}}
            )
            t0 = time.perf_counter()
            pipe.predictor.predict(image, None, single_frame=True)
            base.append(time.perf_counter() - t0)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    out = {
        "size": args.size,
        "K": args.K,
        "threads": args.threads,
        "device": args.device,
        "backends": [args.stage1, args.stage2],
        "load_s": load_s,
        "median_s": med,
        "baseline_monocular_s": statistics.median(base),
        "ratio_vs_monocular": med["total_s"] / statistics.median(base),
        "repeats": args.repeats,
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{args.size}² image, K {' '.join(f'{k:g}' for k in args.K)}, {args.stage1}+{args.stage2}, "
        f"{args.threads} threads, {args.device}: total {med['total_s']:.2f} s (stage-1 {med['stage1_s']:.2f}, "
        f"stage-2 {med['stage2_s']:.2f}, read {med['read_s']:.2f}, write {med['write_s']:.2f}; "
        f"process CPU {med['cpu_s']:.2f} s = {med['cpu_s'] / args.threads:.2f} s per thread); "
        f"load {load_s:.2f} s; monocular baseline {out['baseline_monocular_s']:.2f} s "
        f"(run = {out['ratio_vs_monocular']:.1f}× monocular); load average {out['load_average_1min']:.1f}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
    if args.figure:
        _figure(pipe, args.image, Path(args.figure))


def _figure(pipe, image_path: str | None, out: Path) -> None:
    """Run the image at its own size and write input | frames | depth colour map as one picture."""
    from bokehdepth.io import read_image, write_image
    from bokehdepth.viz import contact_sheet

    root = Path(__file__).resolve().parents[1]
    src = Path(image_path) if image_path else root / "examples" / "motorcycle.png"
    with tempfile.TemporaryDirectory() as tmp:
        run = pipe.run_image(src, Path(tmp) / "run")
        index = json.loads((run / "defocus_stack" / "stack_index.json").read_text())
        images = [read_image(run / "ref.png")]
        labels = ["input (sharp)"]
        for i in index["ids"]:
            images.append(read_image(run / "defocus_stack" / f"{i}.png"))
            labels.append(f"generated, K = {index['k_values'][i]:g}")
        images.append(read_image(run / "depth_color.png"))
        s = json.loads((run / "pipeline_summary.json").read_text())["depth_stats_m"]
        labels.append(f"depth {s['min']:.1f}-{s['max']:.1f} m")
        depth = np.load(run / "depth.npy")
    write_image(out, contact_sheet(images, labels, cols=len(images), tile=320))
    print(f"wrote {out}")
    gt_path = src.with_name(src.stem + "_depth.npy")
    if gt_path.is_file():  # the shipped example has stereo ground truth: how metric is the run's depth?
        from bokehdepth.eval.metrics import compute_metrics

        gt = np.load(gt_path)
        for align in ("none", "median"):
            m = compute_metrics(depth, gt, align=align)
            print(
                f"{src.name} vs {gt_path.name} (align {align}): AbsRel {m['abs_rel']:.3f}, "
                f"delta1 {m['delta1']:.3f}, RMSE {m['rmse']:.3f} m"
            )


if __name__ == "__main__":
    main()
