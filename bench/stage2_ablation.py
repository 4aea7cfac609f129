"""Stage-2 ablation: does the bokeh stack help the compact depth model?

Three arms on held-out synthetic scenes (manifest splits ``val`` and ``test``, never trained on):

1. ``stack``: the compact model with its stack (DSFA on);
2. ``single-frame``: the same weights with DSFA bypassed (``--single-frame``);
3. ``no-stack-trained``: the same architecture trained without stacks (``train stage2 --single-frame``),
   run single-frame.

With ``--baselines`` references are added: ``constant`` (the median depth of the training scenes, one
number for every pixel) and the classical Depth-from-Bokeh sweep (``bokehdepth.sweep.sweep_stack``, no
learning) on the same stacks, twice: ``sweep, unambiguous px`` is its own output, which leaves a pixel empty
(NaN) where the stack does not record the focus side and the two solutions differ, so it is scored on fewer
pixels (the ``coverage`` column: scored / valid ground-truth pixels); ``sweep, all px`` fills those pixels with
the nearer solution (the compact model's relative side rule at p = ½), so it is scored like the model.

Metrics (no alignment, metric depth): AbsRel, δ1 (and RMSE), averaged over scenes, via bokehdepth.eval.metrics.
A second table splits AbsRel by whether the stack records its focus side (``focus_side`` near/far: the sign of
``disp − disp_focus`` is known) or not (focus inside the scene: the sign must come from image cues).

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
    ap.add_argument("--baselines", action="store_true", help="add the constant-depth and classical-sweep arms")
    ap.add_argument(
        "--real",
        nargs=2,
        metavar=("IMAGE", "DEPTH"),
        default=None,
        help="also a real RGB-D example (e.g. examples/motorcycle.png examples/motorcycle_depth.npy) with a "
        "stack rendered from its depth at the default metric K, focused on the nearest 10 %% of the scene",
    )
    args = ap.parse_args()

    from bokehdepth.data import read_manifest
    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.io import read_depth, read_image, read_stack
    from bokehdepth.pipelines.depth import load_depth_predictor

    manifest = Path(args.data)
    rows = read_manifest(manifest, split=args.splits.split(","))[: args.max_scenes]
    const = None
    if args.baselines:
        train = read_manifest(manifest, split="train", check_files=False)[:500]
        const = float(np.median([np.nanmedian(read_depth(r["depth"])) for r in train]))
    arms = {"stack": (load_depth_predictor("compact", args.stack_weights, args.device), False)}
    arms["single-frame"] = (arms["stack"][0], True)
    if args.mono_weights:
        arms["no-stack-trained"] = (load_depth_predictor("compact", args.mono_weights, args.device), True)
    per_arm: dict[str, list[dict]] = {a: [] for a in arms}
    side_known = [bool(r.get("focus_side")) for r in rows]
    t0 = time.time()
    if const is not None:
        per_arm["constant"], per_arm["sweep, unambiguous px"], per_arm["sweep, all px"] = [], [], []
    for r in tqdm(rows, desc="ablation"):
        image, stack, gt = read_image(r["image"]), read_stack(r["stack"]), read_depth(r["depth"])
        for name, (pred, single) in arms.items():
            d = pred.predict(image, stack, single_frame=single).depth
            per_arm[name].append(compute_metrics(d, gt, max_depth=80.0))
        if const is not None:
            from bokehdepth.sweep import sweep_stack

            per_arm["constant"].append(compute_metrics(np.full_like(gt, const), gt, max_depth=80.0))
            sw = sweep_stack(stack)
            filled = sw.depth if sw.ambiguous is None else np.where(sw.ambiguous, sw.depth_near, sw.depth)
            per_arm["sweep, unambiguous px"].append(compute_metrics(sw.depth, gt, max_depth=80.0))
            per_arm["sweep, all px"].append(compute_metrics(filled, gt, max_depth=80.0))
    real = {}
    if args.real:
        from bokehdepth.render import render_stack
        from bokehdepth.synth.stacks import default_Ks

        image, gt = read_image(args.real[0]), read_depth(args.real[1])
        valid = np.isfinite(gt) & (gt > 0)
        disp = np.where(valid, 1.0 / np.where(valid, gt, 1.0), np.nan)
        disp = np.where(valid, disp, np.nanmedian(disp)).astype(np.float32)  # holes: rendering only
        focus = float(np.percentile(disp[valid], 90))
        stack = render_stack(image, disp, default_Ks(image.shape[1]), disp_focus=focus)
        for name, (pred, single) in arms.items():
            d = pred.predict(image, stack, single_frame=single).depth
            real[name] = compute_metrics(d, np.where(valid, gt, np.nan), max_depth=80.0)
    summary = {}
    for name, ms in per_arm.items():
        summary[name] = {k: float(np.nanmean([m[k] for m in ms])) for k in ("abs_rel", "delta1", "rmse")}
        n_gt = [m["n_pixels"] for m in per_arm["constant" if "constant" in per_arm else "stack"]]
        summary[name]["coverage"] = float(np.sum([m["n_pixels"] for m in ms]) / max(1, np.sum(n_gt)))
    base = summary["stack"]["abs_rel"]
    print(f"held-out scenes: {len(rows)} ({args.splits}) from {manifest}; {time.time() - t0:.0f} s")
    if const is not None:
        print(f"constant arm: {const:.3f} m (median depth of the training scenes)")
    print("| arm | AbsRel | δ1 | RMSE (m) | coverage | AbsRel vs stack |")
    print("|---|---|---|---|---|---|")
    for name, s in summary.items():
        rel = "—" if name == "stack" else f"stack is {100 * (1 - base / s['abs_rel']):.0f} % lower"
        print(f"| {name} | {s['abs_rel']:.3f} | {s['delta1']:.3f} | {s['rmse']:.2f} | {s['coverage']:.3f} | {rel} |")
    print("\nAbsRel by focus side (known: the stack records near/far focus; unknown: focus inside the scene):")
    print(f"| arm | side known ({sum(side_known)} scenes) | side unknown ({len(rows) - sum(side_known)} scenes) |")
    print("|---|---|---|")
    by_side = {}
    for name, ms in per_arm.items():
        known = [m["abs_rel"] for m, k in zip(ms, side_known) if k]
        unknown = [m["abs_rel"] for m, k in zip(ms, side_known) if not k]
        by_side[name] = {"known": float(np.nanmean(known)), "unknown": float(np.nanmean(unknown))}
        print(f"| {name} | {by_side[name]['known']:.3f} | {by_side[name]['unknown']:.3f} |")
    if real:
        print(f"\nreal RGB-D example {args.real[0]} (stack rendered from its depth):")
        print("| arm | AbsRel | δ1 | RMSE (m) |")
        print("|---|---|---|---|")
        for name, m in real.items():
            print(f"| {name} | {m['abs_rel']:.3f} | {m['delta1']:.3f} | {m['rmse']:.2f} |")
    if args.json:
        out = {
            "n_scenes": len(rows),
            "arms": summary,
            "abs_rel_by_focus_side": by_side,
            "real": {k: {m: float(v[m]) for m in ("abs_rel", "delta1", "rmse")} for k, v in real.items()},
        }
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
