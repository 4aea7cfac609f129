"""Where the compact depth model's error comes from: the blur measurement, the side of focus, or the blend.

On held-out synthetic scenes (manifest splits, never trained on) with metric stacks and a known focus plane,
AbsRel of:

- ``cost-volume argmin, true side``: the classical depth-from-defocus answer with no learning — the candidate
  |Δ| whose re-blurred reference best explains the frames (:mod:`bokehdepth.models.defocus_volume`, the
  model's own features), signed with the ground-truth side of focus: what the blur alone says;
- ``model defocus, true side``: the network's |Δ| signed with the ground-truth side (its blur reading);
- ``model defocus, its side``: the same signed by the stack's ``focus_side`` where recorded, else the side head;
- ``model (shipped output)``: the defocus depth blended with the monocular branch (what ``bokehdepth depth``
  returns; an unrecorded side picked by expected relative error, ``side_rule="relative"``);
- ``model, side by MAP``: the same with the more probable side (``side_rule="map"``);
- ``model monocular branch``: ``exp(log_depth)`` alone.

Columns split scenes by whether the stack records its focus side, and pixels by the blur radius their true
offset makes in the strongest frame (``K_max·|Δ|`` px at the working width), on textured pixels only (the
reference's gradient magnitude > 0.02), so the table shows the physics: below ~1 px the blur barely changes
(the renderer's disc is the identity up to 0.5 px), above ~10 px the frames have lost the texture that
encodes the radius.

    nice venv/bin/python bench/stage2_error_budget.py --data DATA/manifest.jsonl [--weights W] [--max-scenes N]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch


def from_offset(offset, sign, disp_focus, cfg):
    """Depth (m) from an unsigned offset (1/m) with the given side, clamped to the model's disparity range."""
    return 1 / (disp_focus + sign * offset).clamp(cfg.min_disp, cfg.max_disp)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="synth manifest.jsonl (metric stacks)")
    ap.add_argument("--splits", default="val,test")
    ap.add_argument("--weights", default=None, help="compact weights (default: embedded)")
    ap.add_argument("--max-scenes", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from bokehdepth.models.compact_depth import load_compact_depth
    from bokehdepth.train.stage2 import collate, compact_k_input, load_manifest_scenes

    model = load_compact_depth(args.weights).eval()
    cfg = model.cfg
    scenes = load_manifest_scenes(args.data, args.splits.split(","), cfg.image_size, 3, cfg.patch_size, args.max_scenes)
    scenes = [s for s in scenes if s["convention"] == "metric" and np.isfinite(s["disp_focus"])]
    sums: dict[str, dict[str, list[float]]] = {}
    for i in range(0, len(scenes), 16):
        b = collate(scenes[i : i + 16])
        k_in = compact_k_input(b, cfg)
        with torch.no_grad():
            cost = (
                model.cost_volume(b.ref, b.stack, k_in, gamma=b.gamma) if cfg.cost_bins else None
            )  # once, also fed to the model
            out = model(b.ref, b.stack, k_in, disp_focus=b.disp_focus, focus_sign=b.focus_sign, cost=cost)
        gt = b.depth
        valid = gt > 0
        df = b.disp_focus.view(-1, 1, 1)
        delta = 1 / gt.clamp(min=1e-3) - df
        true_sign = torch.where(delta < 0, -1.0, 1.0)

        est = {
            "model (shipped output)": model.depth_from_outputs(out, b.disp_focus, b.focus_sign),
            "model, side by MAP": model.depth_from_outputs(out, b.disp_focus, b.focus_sign, side_rule="map"),
            "model defocus, its side": 1 / model.defocus_disparity(out, b.disp_focus, b.focus_sign),
            "model defocus, true side": from_offset(out["offset"], true_sign, df, cfg),
            "model monocular branch": out["log_depth"].clamp(max=np.log(cfg.max_depth)).exp(),
        }
        if cost is not None:
            est["cost-volume argmin, true side"] = from_offset(model.cost_offsets[cost.argmin(1)], true_sign, df, cfg)
        grey = b.ref.mean(1)
        grad = torch.zeros_like(grey)
        grad[:, :, :-1] += (grey[:, :, 1:] - grey[:, :, :-1]).abs()
        grad[:, :-1, :] += (grey[:, 1:, :] - grey[:, :-1, :]).abs()
        textured = valid & (grad > 0.02)
        radius = delta.abs() * k_in.amax(1).view(-1, 1, 1) * cfg.k_unit
        bands = {
            "r < 1 px": radius < 1,
            "1–4 px": (radius >= 1) & (radius < 4),
            "4–10 px": (radius >= 4) & (radius < 10),
        }
        bands["≥ 10 px"] = radius >= 10
        for name, d in est.items():
            rel = (d - gt).abs() / gt.clamp(min=1e-3)
            acc = sums.setdefault(name, {})
            for j in range(len(b.K)):
                side = "known" if b.focus_sign[j] != 0 else "unknown"
                acc.setdefault(f"all ({side} side)", []).append(float(rel[j][valid[j]].mean()))
                ratio = torch.maximum(d[j] / gt[j].clamp(min=1e-3), gt[j] / d[j].clamp(min=1e-3))
                acc.setdefault("δ1 (all scenes)", []).append(float((ratio[valid[j]] < 1.25).float().mean()))
                for band, m in bands.items():
                    sel = textured[j] & m[j]
                    if sel.sum() > 20:
                        acc.setdefault(f"textured, {band}", []).append(float(rel[j][sel].mean()))
    cols = ["all (known side)", "all (unknown side)", "textured, r < 1 px", "textured, 1–4 px"]
    cols += ["textured, 4–10 px", "textured, ≥ 10 px", "δ1 (all scenes)"]
    print(f"{len(scenes)} held-out scenes ({args.splits}) of {args.data}; weights {args.weights or 'embedded'}")
    print("AbsRel (mean over scenes; bands: pixels by their true blur radius in the strongest frame); last column δ1")
    print("| estimator | " + " | ".join(cols) + " |")
    print("|---" * (len(cols) + 1) + "|")
    table = {}
    for name, acc in sums.items():
        table[name] = {c: float(np.mean(acc[c])) if acc.get(c) else float("nan") for c in cols}
        print(f"| {name} | " + " | ".join(f"{table[name][c]:.3f}" for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
