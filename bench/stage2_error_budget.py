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
- ``model monocular branch``: ``exp(log_depth)`` alone;
- ``blur-only floor (oracle)``: what a perfect reader of the blur could at best return. Where the strongest
  frame blurs a pixel by more than 0.5 px it gets the true depth (exact radius, true side); inside the band
  ``K_max·|Δ| ≤ 0.5`` px the renderer leaves the pixel's own light where it is in every frame (its disc is
  the identity), so every depth of the band renders that pixel alike and it gets one depth per scene: the
  one that minimises the scene's AbsRel over its in-band pixels (the 1/depth-weighted median of their true
  depths, an oracle). Only cues other than the blur (the image, the shapes of neighbouring surfaces) can beat
  it;
- ``ground truth at the output stride``: the true log depth averaged over ``out_stride``² blocks and upsampled
  bilinearly as the model's head does: what predicting at 1/``out_stride`` resolution alone costs at depth
  edges;
- ``cost-volume argmin, 128 candidates, true side``: the no-learning row with 8× finer candidates (same
  quadratic spacing), to tell the candidates' spacing from the blur measurement itself.

Columns split scenes by whether the stack records its focus side, and pixels by the blur radius their true
offset makes in the strongest frame (``K_max·|Δ|`` px at the working width), on textured pixels only (the
reference's gradient magnitude > 0.02), so the table shows the physics: below ~1 px the blur barely changes
(the renderer's disc is the identity up to 0.5 px), above ~10 px the frames have lost the texture that
encodes the radius. A second table splits textured pixels by their conditioning ``z/K_max`` (m per px·m):
the relative depth error one pixel of blur-radius error makes, since ``δz/z = z·δr/K`` for
``z = 1/(disp_focus ± r/K)``.

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


def weighted_median(values: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The value ``c`` that minimises ``sum(weights·|values − c|)`` (1-D tensors, weights > 0)."""
    order = torch.argsort(values)
    cum = torch.cumsum(weights[order], 0)
    return values[order][torch.searchsorted(cum, cum[-1] / 2).clamp(max=len(values) - 1)]


def blur_only_floor(gt: torch.Tensor, valid: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """[B, H, W] depth (m) of the blur-only floor: ``gt`` where the strongest frame's blur radius exceeds 0.5 px,
    else, per scene, the 1/depth-weighted median of the in-band true depths (the constant with the least AbsRel
    over them)."""
    out = gt.clone()
    band = valid & (radius <= 0.5)
    for j in range(gt.shape[0]):
        z = gt[j][band[j]]
        if z.numel():
            out[j][band[j]] = weighted_median(z, 1 / z)
    return out


def at_stride(gt: torch.Tensor, valid: torch.Tensor, stride: int) -> torch.Tensor:
    """[B, H, W] true depth (m) seen through a head at 1/``stride`` resolution: log depth averaged over the valid
    pixels of each ``stride``² block, upsampled bilinearly (``align_corners=False``)."""
    import torch.nn.functional as F

    w = valid[:, None].float()
    lg = torch.log(gt.clamp(min=1e-3))[:, None] * w
    num, den = F.avg_pool2d(lg, stride), F.avg_pool2d(w, stride)
    low = torch.where(den > 0, num / den.clamp(min=1e-6), num.new_zeros(()))
    return F.interpolate(low, scale_factor=stride, mode="bilinear", align_corners=False)[:, 0].exp()


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
    from bokehdepth.models.defocus_volume import candidate_offsets, defocus_cost_volume
    from bokehdepth.train.stage2 import collate, compact_k_input, load_manifest_scenes

    model = load_compact_depth(args.weights).eval()
    cfg = model.cfg
    scenes = load_manifest_scenes(args.data, args.splits.split(","), cfg.image_size, 3, cfg.patch_size, args.max_scenes)
    scenes = [s for s in scenes if s["convention"] == "metric" and np.isfinite(s["disp_focus"])]
    sums: dict[str, dict[str, list[float]]] = {}
    in_band: list[float] = []
    texture: list[tuple[float, float]] = []  # per scene: textured fraction, median gradient (grey levels)
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
            fine = candidate_offsets(128, float(model.cost_offsets.max()))
            grey3, frames = b.ref.mean(1, keepdim=True), b.stack.mean(2, keepdim=True)
            fine_cost = defocus_cost_volume(grey3, frames, k_in * cfg.k_unit, fine, b.gamma, cfg.cost_window)
            est["cost-volume argmin, 128 candidates, true side"] = from_offset(
                fine[fine_cost.argmin(1)], true_sign, df, cfg
            )
        grey = b.ref.mean(1)
        grad = torch.zeros_like(grey)
        grad[:, :, :-1] += (grey[:, :, 1:] - grey[:, :, :-1]).abs()
        grad[:, :-1, :] += (grey[:, 1:, :] - grey[:, :-1, :]).abs()
        textured = valid & (grad > 0.02)
        texture.extend(
            (float(textured[j].sum() / valid[j].sum().clamp(min=1)), float(grad[j][valid[j]].median() * 255))
            for j in range(len(b.K))
        )
        radius = delta.abs() * k_in.amax(1).view(-1, 1, 1) * cfg.k_unit
        est["blur-only floor (oracle)"] = blur_only_floor(gt, valid, radius)
        est["ground truth at the output stride"] = at_stride(gt, valid, cfg.out_stride)
        cond = gt / (k_in.amax(1).view(-1, 1, 1) * cfg.k_unit)  # relative depth error per px of radius error
        in_band.extend(float(((radius <= 0.5) & valid)[j].sum() / valid[j].sum().clamp(min=1)) for j in range(len(b.K)))
        bands = {
            "r < 1 px": radius < 1,
            "1–4 px": (radius >= 1) & (radius < 4),
            "4–10 px": (radius >= 4) & (radius < 10),
        }
        bands["≥ 10 px"] = radius >= 10
        bands |= {
            "z/K < 0.1": cond < 0.1,
            "z/K 0.1–0.3": (cond >= 0.1) & (cond < 0.3),
            "z/K 0.3–1": (cond >= 0.3) & (cond < 1),
            "z/K ≥ 1": cond >= 1,
        }
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
    cond_cols = ["textured, z/K < 0.1", "textured, z/K 0.1–0.3", "textured, z/K 0.3–1", "textured, z/K ≥ 1"]
    print(f"{len(scenes)} held-out scenes ({args.splits}) of {args.data}; weights {args.weights or 'embedded'}")
    print(f"in-focus band (K_max·|Δ| ≤ 0.5 px): {100 * np.mean(in_band):.1f} % of valid pixels (mean over scenes)")
    frac, med = np.mean(texture, axis=0)
    print(f"textured (gradient > 0.02): {100 * frac:.1f} % of valid pixels; median gradient {med:.2f} grey levels")
    table = {
        name: {c: float(np.mean(acc[c])) if acc.get(c) else float("nan") for c in cols + cond_cols}
        for name, acc in sums.items()
    }
    for title, columns in (
        (
            "AbsRel (mean over scenes; bands: pixels by their true blur radius in the strongest frame); last column δ1",
            cols,
        ),
        ("AbsRel on textured pixels by conditioning z/K_max (relative depth error per px of radius error)", cond_cols),
    ):
        print(title)
        print("| estimator | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for name in table:
            print(f"| {name} | " + " | ".join(f"{table[name][c]:.3f}" for c in columns) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
