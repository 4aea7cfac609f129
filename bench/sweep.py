"""Benchmark of the Depth-from-Bokeh Sweep: accuracy on held-out synthetic scenes and runtime at 512².

Accuracy: procedural scenes (``bokehdepth.synth.make_scene``, seeds 90000+, never used for training),
focused on their nearest surface (``focus_side="near"``), rendered by the occlusion-aware renderer at
calibrated K; AbsRel of the sweep's depth on *textured* pixels (gradient energy of the sharp image above a
threshold), also split into pixels away from depth edges, for several frame counts and image-noise levels.

Runtime: one 512×512 stack (sharp reference + 4 blurred frames), the sweep end to end, against a baseline
measured in the same run: the same blur measurement with the obvious re-blur (``scipy.signal.fftconvolve``
of each channel and the normaliser per candidate radius, no shared forward transform).

    nice venv/bin/python bench/sweep.py --out docs/sweep_bench        # full run (minutes)
    nice venv/bin/python bench/sweep.py --quick                        # smoke run

Writes ``OUT/results.json`` and ``OUT/accuracy_<scenes>_focus_<side>.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np


def textured_mask(image: np.ndarray, thresh: float = 2e-4, window: int = 15) -> np.ndarray:
    from bokehdepth.sweep import texture_energy

    return texture_energy(image, window) > thresh


def away_from_edges(depth: np.ndarray, margin: int) -> np.ndarray:
    """Pixels at least ``margin`` px from a depth discontinuity (> 2 % relative jump between neighbours)."""
    import cv2

    d = np.log(depth)
    edge = np.zeros(depth.shape, bool)
    edge[:, 1:] |= np.abs(np.diff(d, axis=1)) > 0.02
    edge[1:, :] |= np.abs(np.diff(d, axis=0)) > 0.02
    k = np.ones((2 * margin + 1, 2 * margin + 1), np.uint8)
    return ~cv2.dilate(edge.astype(np.uint8), k).astype(bool)


def planes_scene(seed: int, size: int, depth_range=(1.0, 4.0)):
    """A layered scene: a background plane and three rectangles, fronto-parallel, photo textures
    (scikit-image photographs), depths uniform in ``depth_range`` m. Returns (sRGB image, depth)."""
    from bokehdepth.synth.textures import linear_to_srgb, photo_texture

    rng = np.random.default_rng(seed)
    lo, hi = depth_range
    depth = np.full((size, size), hi, np.float32)
    lin = photo_texture(rng, size, size)
    for z in sorted(rng.uniform(lo, hi * 0.9, 3), reverse=True):  # far to near: nearer ones paint over
        h, w = (int(rng.uniform(0.25, 0.5) * size) for _ in range(2))
        y, x = int(rng.integers(0, size - h)), int(rng.integers(0, size - w))
        lin[y : y + h, x : x + w] = photo_texture(rng, h, w)
        depth[y : y + h, x : x + w] = z
    return linear_to_srgb(lin), depth


def make_stack(
    seed: int,
    size: int,
    n_frames: int,
    noise: float,
    focus: str = "far",
    max_blur: float = 16.0,
    scenes: str = "synth",
):
    """A held-out scene rendered at n_frames calibrated K values (K_j = K_max·j/n), focused on its nearest
    (``focus="near"``) or farthest (``"far"``) surface; K_max is chosen so the surface at the other end of
    the disparity range blurs to ``max_blur`` px."""
    from types import SimpleNamespace

    from bokehdepth.render.api import render_stack
    from bokehdepth.synth import make_scene

    if scenes == "synth":
        scene = make_scene(seed, size)
    else:
        image, depth = planes_scene(seed, size)
        scene = SimpleNamespace(image=image, depth=depth)
    disp = (1.0 / scene.depth).astype(np.float32)
    disp_focus = float(disp.max() if focus == "near" else disp.min())
    k_max = max_blur / float(disp.max() - disp.min())
    Ks = [k_max * (j + 1) / n_frames for j in range(n_frames)]
    stack = render_stack(scene.image, disp, Ks, disp_focus=disp_focus, gamma=2.2)
    if noise > 0:
        rng = np.random.default_rng(seed + 7)
        stack.frames = [np.clip(f + rng.normal(0, noise, f.shape), 0, 1).astype(np.float32) for f in stack.frames]
    stack.frames = [np.round(f * 255) / 255 for f in stack.frames]  # 8-bit PNG quantisation
    stack.focus_side = focus
    return scene, stack


def absrel(pred: np.ndarray, gt: np.ndarray, mask: np.ndarray) -> float:
    """Mean |pred − gt|/gt over ``mask`` (NaN if empty)."""
    return float(np.mean(np.abs(pred[mask] - gt[mask]) / gt[mask])) if mask.any() else float("nan")


def accuracy(seeds, size, frame_counts, noises, window, focus, scenes):
    from tqdm.auto import tqdm

    from bokehdepth.sweep import sweep_stack

    rows = []
    jobs = [(n, s, sd) for n in frame_counts for s in noises for sd in seeds]
    for n, noise, seed in tqdm(jobs, desc=f"accuracy ({scenes}, focus {focus})"):
        scene, stack = make_stack(seed, size, n, noise, focus, scenes=scenes)
        res = sweep_stack(stack, window=window, max_radius=20.0)
        gt = scene.depth
        border = np.zeros(gt.shape, bool)
        border[8:-8, 8:-8] = True
        tex = textured_mask(scene.image, window=window) & border
        far = tex & away_from_edges(gt, window // 2 + 2)
        ok = np.isfinite(res.depth)

        rows.append(
            {
                "scenes": scenes,
                "focus": focus,
                "frames": n,
                "noise": noise,
                "seed": seed,
                "absrel_textured": absrel(res.depth, gt, tex & ok),
                "absrel_textured_away_from_edges": absrel(res.depth, gt, far & ok),
                "absrel_all": absrel(res.depth, gt, border & ok),
                "absrel_textured_depth_le_5m": absrel(res.depth, gt, tex & ok & (gt <= 5.0)),
                "disp_mae_textured": float(np.mean(np.abs(1 / res.depth[tex & ok] - 1 / gt[tex & ok]))),
                "textured_fraction": float(tex.mean()),
                "valid_fraction": float(ok[border].mean()),
            }
        )
    return rows


def baseline_measure(ref_lin, frames_lin, radii, window):
    """Blur measurement with per-radius, per-channel ``fftconvolve`` (the obvious implementation)."""
    from scipy.signal import fftconvolve

    from bokehdepth.sweep_blur import _MinTracker, box_mean, disc_kernel

    h, w, c = ref_lin.shape
    trackers = [_MinTracker((h, w)) for _ in frames_lin]
    ones = np.ones((h, w), np.float32)
    for k, r in enumerate(radii):
        ker = disc_kernel(float(r)).astype(np.float32)
        norm = np.maximum(fftconvolve(ones, ker, mode="same"), 1e-8)
        blurred = np.stack([fftconvolve(ref_lin[..., ch], ker, mode="same") / norm for ch in range(c)], -1)
        for m, f in enumerate(frames_lin):
            d = blurred - f
            trackers[m].push(k, box_mean((d * d).sum(-1), window))
    return [t.result(radii) for t in trackers]


def runtime(size: int, repeats: int, window: int, device: str):
    from bokehdepth.sweep import _linear, sweep_stack
    from bokehdepth.sweep_blur import measure_blur, radius_grid

    _, stack = make_stack(90000, size, 4, 0.0)
    ref = _linear(stack.frames[0], 2.2)
    frames = [_linear(f, 2.2) for f in stack.frames[1:]]
    radii = radius_grid(20.0, 0.5)
    out = {"size": size, "frames_blurred": 4, "radii": len(radii), "window": window, "device": device}
    sweep_device = "numpy" if device == "cpu" else device
    t_base, t_ours, t_total = [], [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        baseline_measure(ref, frames, radii, window)
        t_base.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        measure_blur(ref, frames, max_radius=20.0, window=window)
        t_ours.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sweep_stack(stack, window=window, max_radius=20.0, device=sweep_device)
        t_total.append(time.perf_counter() - t0)
    out |= {
        "baseline_measure_s": min(t_base),
        "measure_s": min(t_ours),
        "speedup_measure": min(t_base) / min(t_ours),
        "sweep_total_s": min(t_total),
    }
    return out


def example_figure(path: Path, size: int = 256, seed: int = 90003) -> None:
    """One planes scene: sharp reference, the most blurred frame, true depth, sweep depth, confidence, and
    the relative depth error, side by side (focus on the nearest surface, 4 blurred frames, noise 0.01)."""
    from bokehdepth.io import write_image
    from bokehdepth.sweep import sweep_stack
    from bokehdepth.viz import contact_sheet, depth_to_color

    scene, stack = make_stack(seed, size, 4, 0.01, "near", scenes="planes")
    res = sweep_stack(stack, window=15, max_radius=20.0)
    lo, hi = float(np.nanmin(scene.depth)), float(np.nanmax(scene.depth))
    err = np.clip(np.abs(res.depth - scene.depth) / scene.depth / 0.1, 0, 1)
    sheet = contact_sheet(
        [
            stack.frames[0],
            stack.frames[-1],
            depth_to_color(scene.depth, lo, hi),
            depth_to_color(res.depth, lo, hi),
            res.confidence,
            np.nan_to_num(err, nan=1.0),
        ],
        ["reference", f"K={stack.K[-1]:.0f}", "true depth", "sweep depth", "confidence", "|err|/depth (0-10%)"],
        cols=3,
    )
    write_image(path, sheet)


def plot(rows, path: Path, label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = sorted({r["frames"] for r in rows})
    noises = sorted({r["noise"] for r in rows})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for key, ax, title in (
        ("absrel_textured", axes[0], "textured pixels"),
        ("absrel_textured_away_from_edges", axes[1], "textured, away from depth edges"),
    ):
        for noise in noises:
            ys = [np.nanmean([r[key] for r in rows if r["frames"] == n and r["noise"] == noise]) for n in frames]
            ax.plot(frames, np.array(ys) * 100, "o-", label=f"noise σ = {noise:g}")
        ax.axhline(3.0, color="grey", ls="--", lw=1, label="goal 3 %")
        ax.set_xlabel("blurred frames in the stack")
        ax.set_ylabel("AbsRel (%)")
        ax.set_title(f"{title}\n{label}", fontsize=9)
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="docs/sweep_bench")
    p.add_argument("--scenes", type=int, default=6)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--frames", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.01, 0.03])
    p.add_argument("--window", type=int, default=15)
    p.add_argument("--runtime-size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--focus", nargs="+", choices=("near", "far"), default=["far", "near"])
    p.add_argument(
        "--scene-kinds",
        nargs="+",
        choices=("synth", "planes"),
        default=["planes", "synth"],
        dest="scene_kinds",
        help="synth: bokehdepth.synth.make_scene (0.5-20 m); planes: 1-4 m layers",
    )
    p.add_argument(
        "--device", choices=("cpu", "cuda"), default="cpu", help="cuda: time sweep_stack with the torch blur bank"
    )
    p.add_argument("--runtime-only", action="store_true", help="only the 512² runtime (printed, not saved)")
    p.add_argument("--figure-only", action="store_true", help="only write OUT/example.png")
    p.add_argument("--quick", action="store_true", help="2 scenes, 2 frame counts, 1 noise level, 256² runtime")
    args = p.parse_args()
    if args.quick:
        args.scenes, args.frames, args.noise, args.runtime_size, args.repeats = 2, [2, 4], [0.01], 256, 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if not args.runtime_only:
        example_figure(out / "example.png")
    if args.figure_only:
        return
    seeds = [90000 + i for i in range(args.scenes)]
    t0 = time.time()
    rt = runtime(args.runtime_size, args.repeats, args.window, args.device)
    print(json.dumps(rt, indent=2))
    if args.runtime_only:
        return
    rows, summary = [], {}
    for kind in args.scene_kinds:
        for focus in args.focus:
            frows = accuracy(seeds, args.size, args.frames, args.noise, args.window, focus, kind)
            rows += frows
            plot(frows, out / f"accuracy_{kind}_focus_{focus}.png", f"{kind} scenes, focus on the {focus} surface")
            for n in args.frames:
                for noise in args.noise:
                    sel = [r for r in frows if r["frames"] == n and r["noise"] == noise]
                    keys = [k for k in sel[0] if k.startswith(("absrel", "disp_mae", "valid"))]
                    summary[f"{kind},focus={focus},frames={n},noise={noise:g}"] = {
                        k: float(np.nanmean([r[k] for r in sel])) for k in keys
                    }
    result = {
        "machine": f"{platform.machine()} {platform.system()}, {__import__('os').cpu_count()} cores",
        "args": vars(args),
        "runtime": rt,
        "accuracy_summary": summary,
        "rows": rows,
        "seconds": time.time() - t0,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    for k, v in summary.items():
        print(k, {kk: round(vv, 4) for kk, vv in v.items()})


if __name__ == "__main__":
    main()
