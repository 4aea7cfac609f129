"""Stage-2 ablation: does the bokeh stack help the compact depth model?

Three arms on held-out synthetic scenes (manifest splits ``val`` and ``test``, never trained on):

1. ``stack``: the compact model with its stack (DSFA on);
2. ``single-frame``: the same weights with DSFA bypassed (``--single-frame``);
3. ``no-stack-trained``: the same architecture trained without stacks (``train stage2 --single-frame``),
   run single-frame.

Metrics (no alignment, metric depth): AbsRel, δ1 (and RMSE), averaged over scenes, via bokehdepth.eval.metrics.

    nice venv/bin/python bench/stage2_ablation.py --data DATA/manifest.jsonl \
        --mono-weights RUN_MONO/compact_depth.safetensors [--stack-weights FILE] [--json OUT.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="synth manifest.jsonl")
    ap.add_argument("--splits", default="val,test", help="held-out splits (comma list)")
    ap.add_argument("--stack-weights", default=None, help="compact weights trained with stacks (default: embedded)")
    ap.add_argument("--mono-weights", default=None, help="compact weights trained without stacks (arm 3)")
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="write the per-arm means here")
    args = ap.parse_args()

    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.io import read_depth, read_image, read_stack
    from bokehdepth.pipelines.depth import load_depth_predictor

    manifest = Path(args.data)
    splits = set(args.splits.split(","))
    rows = [json.loads(x) for x in manifest.read_text().splitlines() if x.strip()]
    rows = [r for r in rows if r.get("split") in splits][: args.max_scenes]
    arms = {"stack": (load_depth_predictor("compact", args.stack_weights, args.device), False)}
    arms["single-frame"] = (arms["stack"][0], True)
    if args.mono_weights:
        arms["no-stack-trained"] = (load_depth_predictor("compact", args.mono_weights, args.device), True)
    per_arm: dict[str, list[dict]] = {a: [] for a in arms}
    t0 = time.time()
    for r in tqdm(rows, desc="ablation"):
        image = read_image(manifest.parent / r["image"])
        stack = read_stack(manifest.parent / r["stack"])
        gt = read_depth(manifest.parent / r["depth"])
        for name, (pred, single) in arms.items():
            d = pred.predict(image, stack, single_frame=single).depth
            per_arm[name].append(compute_metrics(d, gt, max_depth=80.0))
    summary = {}
    for name, ms in per_arm.items():
        summary[name] = {k: float(np.nanmean([m[k] for m in ms])) for k in ("abs_rel", "delta1", "rmse")}
    base = summary["stack"]["abs_rel"]
    print(f"held-out scenes: {len(rows)} ({args.splits}) from {manifest}; {time.time() - t0:.0f} s")
    print("| arm | AbsRel | δ1 | RMSE (m) | AbsRel vs stack |")
    print("|---|---|---|---|---|")
    for name, s in summary.items():
        rel = "—" if name == "stack" else f"stack is {100 * (1 - base / s['abs_rel']):.0f} % lower"
        print(f"| {name} | {s['abs_rel']:.3f} | {s['delta1']:.3f} | {s['rmse']:.2f} | {rel} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"n_scenes": len(rows), "arms": summary}, indent=2))


if __name__ == "__main__":
    main()
