"""How precisely ``bokehdepth.register`` aligns the photos of a hand-held aperture bracket.

Fresh synthetic scenes (seeds ≥ 20000, never trained on) rendered as an aperture bracket (105 mm on 36 mm,
f/8 reference, then f/4, f/2, f/1.4; focus on the nearest surface, the farthest or the subject, in turn);
every photo but the reference is moved by a known random motion: a shift of up to ``--shift`` px (fraction of
the width × 256) in x and y, and optionally a rotation of up to ``--rotate`` degrees about the centre. Each
motion model estimates it back, each photo against the reference directly or against the already aligned
photo nearest in K (as ``--photos`` does); the error is the largest distance between the true and the
estimated map over the four image corners (px at the working width).

    OMP_NUM_THREADS=1 nice venv/bin/python bench/register.py --sizes 256 512 --scenes 8
"""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np


def corner_error(a: np.ndarray, b: np.ndarray, corners: np.ndarray) -> float:
    """Largest distance (px) between where two 2×3 maps send the image corners."""
    return float(np.hypot(*(corners @ a.T - corners @ b.T).T).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", type=int, default=(256, 512), help="image widths, px")
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--shift", type=float, default=6.0, help="largest shift per axis, px at 256 px (scaled)")
    ap.add_argument("--rotate", nargs="+", type=float, default=(0.0, 0.5), help="largest rotations, degrees")
    ap.add_argument("--motions", nargs="+", default=("translation", "euclidean", "affine"))
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    import cv2

    from bokehdepth.lens import k_from_camera
    from bokehdepth.register import register_to_reference
    from bokehdepth.synth.scenes import make_scene
    from bokehdepth.synth.stacks import choose_focus, render_scene_stack

    rows: dict[str, list[float]] = {}
    for size in args.sizes:
        corners = np.array([[0, 0, 1], [size - 1, 0, 1], [0, size - 1, 1], [size - 1, size - 1, 1]], float)
        for seed in range(20000, 20000 + args.scenes):
            scene = make_scene(seed, size, depth_range=(0.5, 20.0))
            rng = np.random.default_rng(seed)
            mode = ("subject", "near", "far")[seed % 3]
            disp_focus, _, _ = choose_focus(scene.depth, rng, scene.disp_focus, mode=mode)
            Ks = [float(k_from_camera(105.0, n, 1 / disp_focus, 36.0, size)) for n in (8.0, 4.0, 2.0, 1.4)]
            frames = render_scene_stack(scene.image, scene.depth, Ks, disp_focus).frames[1:]
            for rot in args.rotate:
                moved, truth = [frames[0]], [np.array([[1.0, 0, 0], [0, 1.0, 0]])]
                for frame in frames[1:]:
                    angle = rng.uniform(-rot, rot)
                    true = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
                    true[:, 2] += rng.uniform(-args.shift, args.shift, 2) * size / 256
                    flags = {"flags": cv2.INTER_LINEAR, "borderMode": cv2.BORDER_REFLECT_101}
                    moved.append(cv2.warpAffine(frame, true, (size, size), **flags))
                    truth.append(true)
                key = f"{size} px, rotation ≤ {rot:g}°"
                for true in truth[1:]:
                    rows.setdefault(f"{key} | none", []).append(corner_error(true, np.eye(2, 3), corners))
                for motion in args.motions:
                    for chain, near in (("direct", None), ("against the nearest in K", Ks)):
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            _, found = register_to_reference(moved, 0, motion, key=near)
                        for al, true in zip(found[1:], truth[1:]):
                            rows.setdefault(f"{key} | {motion}, {chain}", []).append(
                                corner_error(true, al.matrix, corners)
                            )
    print(f"{args.scenes} scenes × 3 photos moved by ≤ {args.shift:g} px per axis (at 256 px, scaled); corner error px")
    print("| bracket | motion | median | 90th percentile | max |")
    print("|---|---|---|---|---|")
    table = {}
    for key, errs in rows.items():
        bracket, motion = key.split(" | ")
        table[key] = {"median": float(np.median(errs)), "p90": float(np.percentile(errs, 90)), "max": float(max(errs))}
        t = table[key]
        print(f"| {bracket} | {motion} | {t['median']:.2f} | {t['p90']:.2f} | {t['max']:.2f} |")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(table, fh, indent=2)


if __name__ == "__main__":
    main()
