"""Stage-2 on photo-like aperture brackets: how much does a real bracket help the compact model?

Fresh synthetic scenes (seeds outside the training sets) are photographed as an aperture bracket would be:
one focus distance, one frame per f-number, K from the thin-lens model (``lens.k_from_camera``), the
sharpest frame (largest f-number, still slightly blurred) as the reference, optional Gaussian sensor noise,
and 8-bit quantisation as in a PNG/JPEG. The bracket goes through the same :class:`bokehdepth.io.Stack` that
``bokehdepth depth --photos`` builds (``source="photos"``, ``K_convention="metric"``). Arms: the compact model
with the bracket, and the same weights on the reference photo alone (``single_frame``). AbsRel and δ1 (no
alignment) per focus placement: ``near`` (the nearest surface in focus, recorded), ``far`` (the farthest,
recorded) and ``subject`` (focus inside the scene, side unknown). ``--shift PX``: a hand-held bracket, every
photo but the reference moved by PX px in a random direction; ``--register MOTION`` adds the same brackets
aligned by :mod:`bokehdepth.register` (each against the already aligned photo nearest in K, as ``--photos``
does).

    OMP_NUM_THREADS=1 nice venv/bin/python bench/stage2_photos.py --depth-range 0.5 5 --scenes 10
"""

from __future__ import annotations

import argparse
import json
from dataclasses import replace

import numpy as np
from tqdm import tqdm


def shifted(frame: np.ndarray, px: float, rng: np.random.Generator) -> np.ndarray:
    """``frame`` (H, W, C) moved by ``px`` px in a random direction (bilinear, mirrored borders)."""
    import cv2

    a = rng.uniform(0, 2 * np.pi)
    m = np.array([[1, 0, px * np.cos(a)], [0, 1, px * np.sin(a)]], np.float32)
    h, w = frame.shape[:2]
    return cv2.warpAffine(
        frame.astype(np.float32), m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=10, help="scenes per focus placement")
    ap.add_argument("--first-seed", type=int, default=20000, help="scene seeds start here (training: < 10000)")
    ap.add_argument("--size", type=int, default=128, help="image side, px")
    ap.add_argument("--depth-range", nargs=2, type=float, default=(0.5, 5.0), metavar=("NEAR", "FAR"))
    ap.add_argument("--focal-mm", type=float, default=105.0)
    ap.add_argument("--sensor-mm", type=float, default=36.0)
    ap.add_argument("--f-numbers", nargs="+", type=float, default=(8.0, 4.0, 2.0, 1.4))
    ap.add_argument("--noise", nargs="+", type=float, default=(0.0, 0.004), help="sensor noise σ (0–1 scale)")
    ap.add_argument("--float", action="store_true", help="also run without 8-bit quantisation")
    ap.add_argument(
        "--shift",
        nargs="+",
        type=float,
        default=(0.0,),
        help="misregistration: each frame but the reference moved by this many px in a random direction",
    )
    ap.add_argument(
        "--register",
        default="none",
        help="also run the moved brackets aligned by bokehdepth.register with this motion (e.g. translation)",
    )
    ap.add_argument("--weights", default=None, help="compact weights (default: embedded)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.io import Stack
    from bokehdepth.lens import k_from_camera
    from bokehdepth.pipelines.depth import load_depth_predictor
    from bokehdepth.register import register_to_reference
    from bokehdepth.synth.scenes import make_scene
    from bokehdepth.synth.stacks import choose_focus, render_scene_stack

    pred = load_depth_predictor("compact", args.weights, "cpu")
    variants = [(sigma, True, 0.0) for sigma in args.noise] + ([(0.0, False, 0.0)] if args.float else [])
    variants += [(args.noise[-1], True, px) for px in args.shift if px]
    modes = ("near", "far", "subject")
    rows: dict[str, dict[str, list[float]]] = {}
    for seed in tqdm(range(args.first_seed, args.first_seed + args.scenes), desc="scenes"):
        scene = make_scene(seed, args.size, depth_range=tuple(args.depth_range))
        for mode in modes:
            rng = np.random.default_rng(seed)
            disp_focus, side, _ = choose_focus(scene.depth, rng, scene.disp_focus, mode=mode)
            focus_m = 1.0 / disp_focus
            Ks = [float(k_from_camera(args.focal_mm, n, focus_m, args.sensor_mm, args.size)) for n in args.f_numbers]
            clean = render_scene_stack(scene.image, scene.depth, Ks, disp_focus).frames[1:]
            for sigma, quantise, px in variants:
                frames = [f + rng.normal(0.0, sigma, f.shape) if sigma else f for f in clean]
                ref = int(np.argmin(Ks))
                frames = [f if i == ref or not px else shifted(f, px, rng) for i, f in enumerate(frames)]
                frames = [np.clip(f, 0.0, 1.0) for f in frames]
                frames = [(np.round(f * 255) / 255 if quantise else f).astype(np.float32) for f in frames]
                stack = Stack(
                    frames=frames,
                    K=Ks,
                    disp_focus=disp_focus,
                    reference=int(np.argmin(Ks)),
                    focus_side=side,
                    source="photos",
                )
                name = f"σ {sigma:g}, {'8-bit' if quantise else 'float'}" + (f", moved {px:g} px" if px else "")
                arms = [("bracket", False, stack), ("single-frame", True, stack)]
                if px and args.register != "none":
                    aligned, _ = register_to_reference(frames, ref, args.register, key=Ks)  # as --photos does
                    arms.insert(1, (f"bracket, aligned ({args.register})", False, replace(stack, frames=aligned)))
                for arm, single, st in arms:
                    depth = pred.predict(None, st, single_frame=single).depth
                    m = compute_metrics(depth, scene.depth)
                    acc = rows.setdefault(f"{name} | {arm}", {})
                    for key in (mode, "all"):
                        acc.setdefault(f"{key} AbsRel", []).append(m["abs_rel"])
                        acc.setdefault(f"{key} δ1", []).append(m["delta1"])
    lo, hi = args.depth_range
    print(
        f"{args.scenes} scenes × 3 focus placements, {args.size} px, {lo:g}–{hi:g} m, {args.focal_mm:g} mm on "
        f"{args.sensor_mm:g} mm, f/{', f/'.join(f'{n:g}' for n in args.f_numbers)} "
        f"(K {', '.join(f'{k:.1f}' for k in Ks)} px·m at the last focus)"
    )
    cols = [f"{k} AbsRel" for k in ("all", *modes)] + ["all δ1"]
    print("| input | arm | " + " | ".join(cols) + " |")
    print("|---|---" * 1 + "|---" * len(cols) + "|")
    table = {}
    for key, acc in rows.items():
        name, arm = key.split(" | ")
        means = {c: float(np.mean(acc[c])) for c in cols}
        table[key] = means
        print(f"| {name} | {arm} | " + " | ".join(f"{means[c]:.3f}" for c in cols) + " |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"args": vars(args), "table": table}, fh, indent=2)


if __name__ == "__main__":
    main()
