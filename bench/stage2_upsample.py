"""How the compact model's head reaches full resolution: bilinear against joint bilateral upsampling.

The same weights are run on each held-out split separately with ``cfg.upsample`` = ``bilinear`` and
``joint_bilateral`` at several range σ (``inf``: the spatial Gaussian weights alone, to tell edge-awareness
from smoothing). The setting the shipped weights use is chosen on the ``val`` splits only; ``test`` reports
it. AbsRel and δ1 (metric, no alignment; the blended output ``bokehdepth depth`` returns).

    OMP_NUM_THREADS=1 nice venv/bin/python bench/stage2_upsample.py --data DATA/manifest.jsonl [--weights W]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, nargs="+", help="synth manifest.jsonl (one or several)")
    ap.add_argument("--weights", default=None, help="compact weights (default: embedded)")
    ap.add_argument("--sigmas", nargs="+", type=float, default=(0.05, 0.1, 0.2, float("inf")))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.models.compact_depth import load_compact_depth
    from bokehdepth.train.stage2 import collate, compact_k_input, load_manifest_scenes

    model = load_compact_depth(args.weights).eval()
    cfg = model.cfg
    settings = [("bilinear", cfg.upsample_sigma)] + [("joint_bilateral", s) for s in args.sigmas]
    table: dict[str, dict[str, float]] = {}
    for data in args.data:
        for split in ("val", "test"):
            scenes = load_manifest_scenes(data, [split], cfg.image_size, 3, cfg.patch_size)
            acc: dict[str, list[tuple[float, float]]] = {}
            for i in range(0, len(scenes), 16):
                b = collate(scenes[i : i + 16])
                k_in = compact_k_input(b, cfg)
                with torch.no_grad():
                    cost = model.cost_volume(b.ref, b.stack, k_in, gamma=b.gamma) if cfg.cost_bins else None
                    for mode, sigma in settings:
                        cfg.upsample, cfg.upsample_sigma = mode, sigma
                        out = model(b.ref, b.stack, k_in, disp_focus=b.disp_focus, focus_sign=b.focus_sign, cost=cost)
                        depth = model.depth_from_outputs(out, b.disp_focus, b.focus_sign)
                        name = "bilinear" if mode == "bilinear" else f"joint bilateral, σ {sigma:g}"
                        for j in range(len(depth)):
                            m = compute_metrics(depth[j].numpy(), b.depth[j].numpy())
                            acc.setdefault(name, []).append((m["abs_rel"], m["delta1"]))
            for name, vals in acc.items():
                row = table.setdefault(name, {})
                row[f"{Path(data).parent.name} {split} AbsRel"] = float(np.mean([v[0] for v in vals]))
                row[f"{Path(data).parent.name} {split} δ1"] = float(np.mean([v[1] for v in vals]))
            print(f"{Path(data).parent.name} {split}: {len(scenes)} scenes", flush=True)
    cols = list(next(iter(table.values())))
    print(f"weights {args.weights or 'embedded'}; AbsRel / δ1 per held-out split (mean over scenes)")
    print("| upsampling | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    for name, row in table.items():
        print(f"| {name} | " + " | ".join(f"{row[c]:.3f}" for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
