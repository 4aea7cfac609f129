"""Benchmark of the renderer backends: exact direct scatter vs numba CPU (multi-resolution default, and the
full-resolution path) vs torch (CPU, or CUDA).

    nice venv/bin/python bench/render.py                       # all sizes, r_max 8/16/32, writes a table
    nice venv/bin/python bench/render.py --sizes 512 --rmax 8  # quick
    venv/bin/python bench/render.py --device cuda              # adds the torch-CUDA column (needs a GPU)
    nice venv/bin/python bench/render.py --phases --sizes 1024 --rmax 32 --threads 1  # where the cpu time goes

Scene (deterministic): a textured image and a signed-defocus field mixing a smooth random surface with
sharp-edged foreground blobs, scaled so blur radii span 0 … r_max px (mean ≈ r_max/2); K = 2·r_max px·m,
disp_focus = 1 m⁻¹, disp ∈ [0.5, 1.5] m⁻¹. Every configuration runs in a fresh subprocess (after a small
warm-up render that loads numba's cache) so that its peak RSS above the post-import baseline is its own.

Columns: ``exact`` (O(N·r²) oracle), ``cpu`` (numba, ``multiscale=True``: the default), ``cpu-full`` (numba,
``multiscale=False``: the exact kernel at full resolution), ``torch-cpu`` (and ``torch-cuda`` with a GPU).
``cpu`` is also compared with ``cpu-full`` on the *whole* frame (cpu-full agrees with exact to > 140 dB, so
this measures the multi-resolution error on the full image, not just on a crop).

Timings are wall-clock and process CPU time (the machine is shared: CPU-s / threads is the figure that
estimates dedicated cores). Where the exact O(N·r²) baseline (or torch on CPU) would take minutes, it is
measured on a centred crop and extrapolated by pixel count (marked "crop"); the PSNR of each fast backend
against the exact one is computed on that same crop.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time

import numpy as np

SIZES = {"512": (512, 512), "1024": (1024, 1024), "4k": (2160, 3840)}


def make_scene(h: int, w: int, r_max: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(image (H, W, 3) float32, disp (H, W) float32 1/m, K px·m, disp_focus 1/m); radii span 0 … r_max."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    field = np.zeros((h, w))
    for _ in range(6):  # smooth random surface
        fx, fy, ph = rng.uniform(0.5, 4.0), rng.uniform(0.5, 4.0), rng.uniform(0, 2 * np.pi)
        field += np.sin(2 * np.pi * (fx * xx / w + fy * yy / h) + ph)
    field = field / np.abs(field).max()
    for _ in range(8):  # sharp-edged blobs at random defocus (depth edges)
        cx, cy, rad = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.15) * min(h, w)
        field[(xx - cx) ** 2 + (yy - cy) ** 2 < rad**2] = rng.uniform(-1, 1)
    img = 0.5 + 0.25 * np.sin(xx[..., None] / rng.uniform(3, 9, 3) + yy[..., None] / rng.uniform(3, 9, 3))
    img += 0.25 * rng.random((h, w, 3))
    K = 2.0 * r_max
    disp = 1.0 + field / 2.0
    return np.clip(img, 0, 1).astype(np.float32), disp.astype(np.float32), K, 1.0


def _crop(h: int, w: int, max_pixels: int) -> tuple[slice, slice]:
    if h * w <= max_pixels:
        return slice(0, h), slice(0, w)
    s = math.sqrt(max_pixels / (h * w))
    ch, cw = max(int(h * s), 64), max(int(w * s), 64)
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    return slice(y0, y0 + ch), slice(x0, x0 + cw)


def _rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(spec: dict) -> dict:
    """Run one configuration (in its own process) and return timings, peak memory and output files.

    After the timed run(s), the same backend renders the exact baseline's centred crop once more (untimed,
    after the peak-memory reading) so that the PSNR against exact compares identical inputs.
    """
    import numba

    from bokehdepth.render.api import render

    numba.set_num_threads(min(spec["threads"], numba.config.NUMBA_NUM_THREADS))
    backend, device = spec["backend"], spec["device"]
    opts = {"occlusion": spec["occlusion"], "backend": backend}
    if backend == "cpu":
        opts["multiscale"] = spec["multiscale"]
    if backend == "torch":
        import torch

        torch.set_num_threads(spec["threads"])

    def prepare(img, dsp):
        if device == "cuda":
            return torch.from_numpy(img).cuda(), torch.from_numpy(dsp).cuda()
        return img, dsp

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    h, w = SIZES[spec["size"]]
    full_image, full_disp, K, focus = make_scene(h, w, spec["rmax"])
    ys, xs = _crop(h, w, spec["max_pixels"])
    image, disp = prepare(np.ascontiguousarray(full_image[ys, xs]), np.ascontiguousarray(full_disp[ys, xs]))
    # warm-up on a small scene with the same radius range, so that every kernel (coarse slabs included) is
    # loaded from numba's cache before the timed run
    warm_image, warm_disp, _, _ = make_scene(96, 96, spec["rmax"], seed=1)
    render(*prepare(warm_image, warm_disp), K, focus, **opts)
    base = _rss_mb()
    best_wall, best_cpu = math.inf, math.inf
    for _ in range(spec["repeats"]):
        sync()
        t0, c0 = time.perf_counter(), time.process_time()
        out = render(image, disp, K, focus, **opts)
        sync()
        best_wall = min(best_wall, time.perf_counter() - t0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    peak = _rss_mb() - base
    if spec.get("out_full"):
        np.save(spec["out_full"], out)
    if spec["psnr_pixels"] != spec["max_pixels"]:
        ys, xs = _crop(h, w, spec["psnr_pixels"])
        small = prepare(np.ascontiguousarray(full_image[ys, xs]), np.ascontiguousarray(full_disp[ys, xs]))
        out = render(*small, K, focus, **opts)
    np.save(spec["out"], out)
    return {
        "wall_s": best_wall,
        "cpu_s": best_cpu,
        "peak_mb": peak,
        "pixels": int(image.shape[0] * image.shape[1]),
    }


def thread_probe(n: int = 20_000_000) -> dict:
    """Wall seconds of a trivially parallel numba loop (sqrt-sum over ``n`` doubles) with 1 and 2 threads: tells
    whether this machine's two CPUs add throughput right now (SMT siblings or a shared quota do not)."""
    import numba
    from numba import njit, prange

    @njit(parallel=True)
    def work(a):
        s = 0.0
        for i in prange(a.shape[0]):
            s += math.sqrt(a[i])
        return s

    a = np.random.default_rng(0).random(n)
    work(a)
    out = {}
    for t in (1, 2):
        numba.set_num_threads(min(t, numba.config.NUMBA_NUM_THREADS))
        best = math.inf
        for _ in range(3):
            t0 = time.perf_counter()
            work(a)
            best = min(best, time.perf_counter() - t0)
        out[f"{t}_threads_s"] = best
    return out


def phases(size: str, r_max: float, threads: int = 1, repeats: int = 2) -> list[tuple[str, float]]:
    """CPU seconds of one ``render(..., backend="cpu")`` call (multiscale, best of ``repeats`` after a
    warm-up), split into the phases of ``cpu.render_linear`` (timed on separate calls with the same inputs,
    best of ``repeats`` per phase) and the rest of ``render()`` (input checks, gamma encode/decode, defocus,
    slab split)."""
    import numba

    from bokehdepth.render import cpu, pixel_kernels
    from bokehdepth.render.api import DEFAULT_GAMMA, render
    from bokehdepth.render.layers import assign_layers

    numba.set_num_threads(min(threads, numba.config.NUMBA_NUM_THREADS))
    h, w = SIZES[size]
    image, disp, K, focus = make_scene(h, w, r_max)
    warm_image, warm_disp, _, _ = make_scene(96, 96, r_max, seed=1)
    render(warm_image, warm_disp, K, focus, backend="cpu")
    total = math.inf
    for _ in range(repeats):
        c0 = time.process_time()
        render(image, disp, K, focus, backend="cpu")
        total = min(total, time.process_time() - c0)
    lin, d, radius = np.empty(image.shape, np.float32), np.empty(disp.shape), np.empty(disp.shape)
    pixel_kernels.encode(image, DEFAULT_GAMMA, True, lin)
    pixel_kernels.defocus(disp, K, focus, d, radius)
    split = assign_layers(d)
    out: dict[str, float] = {}
    for _ in range(repeats):
        run: dict[str, float] = {}
        cpu.render_linear(lin, radius, split, multiscale=True, phases=run)
        out = {k: min(v, out.get(k, math.inf)) for k, v in run.items()}
    out["rest of render()"] = total - sum(out.values())
    return list(out.items())


def _run(spec: dict) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(spec)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if res.returncode != 0:
        raise RuntimeError(f"worker failed: {res.stderr[-2000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    p.add_argument("--rmax", nargs="+", type=float, default=[8.0, 16.0, 32.0])
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="cuda adds a torch-CUDA column")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for numba and torch")
    p.add_argument("--exact-pixels", type=int, default=128 * 128, help="crop the exact baseline to this many px")
    p.add_argument("--torch-pixels", type=int, default=128 * 128, help="crop torch-CPU to this many px")
    p.add_argument("--plain", action="store_true", help="occlusion off (plain scatter-and-normalise)")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--no-full", action="store_true", help="skip the full-resolution cpu column (cpu-full)")
    p.add_argument("--no-torch", action="store_true", help="skip the torch-CPU column")
    p.add_argument("--json", default=None, help="also write all results to this JSON file")
    p.add_argument(
        "--phases",
        action="store_true",
        help="only print per-phase CPU time of one render() call (cpu backend, multiscale)",
    )
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.phases:
        for size in args.sizes:
            for rmax in args.rmax:
                parts = phases(size, rmax, args.threads)
                total = sum(v for _, v in parts)  # = the whole render() call
                print(
                    f"{size} r_max {rmax:g} ({args.threads} thread(s)): {total:.3f} CPU-s = "
                    + ", ".join(f"{k} {v:.3f}" for k, v in parts)
                )
        return 0
    if args.worker:
        spec = json.loads(args.worker)
        print(json.dumps(thread_probe() if spec.get("probe") else worker(spec)))
        return 0

    from tqdm import tqdm

    tmp = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"bench_render_{os.getpid()}")
    os.makedirs(tmp, exist_ok=True)
    columns = [("exact", "cpu", args.exact_pixels), ("cpu", "cpu", 1 << 40)]
    if not args.no_full:
        columns.append(("cpu-full", "cpu", 1 << 40))
    if not args.no_torch:
        columns.append(("torch", "cpu", args.torch_pixels))
    cuda_note = None
    if args.device == "cuda":
        import torch

        if torch.cuda.is_available():
            columns.append(("torch", "cuda", 1 << 40))
        else:
            cuda_note = "CUDA: not measured: no GPU lent (torch.cuda.is_available() is False)"
    jobs = [(s, r) for s in args.sizes for r in args.rmax]
    rows = []
    load_start = os.getloadavg()
    for size, rmax in tqdm(jobs, desc="bench render", unit="config"):
        results = {}
        for backend, device, max_px in columns:
            spec = {
                "size": size,
                "rmax": rmax,
                "backend": "cpu" if backend == "cpu-full" else backend,
                "multiscale": backend == "cpu",
                "device": device,
                "occlusion": not args.plain,
                "threads": args.threads,
                "repeats": args.repeats,
                "max_pixels": max_px,
                "psnr_pixels": args.exact_pixels,
                "out": os.path.join(tmp, f"{size}_{rmax}_{backend}_{device}.npy"),
                "out_full": os.path.join(tmp, f"{size}_{rmax}_{backend}_frame.npy")
                if backend.startswith("cpu")
                else "",
            }
            results[(backend, device)] = res = _run(spec)
            res["out"], res["out_full"] = spec["out"], spec["out_full"]
        ex_img = np.load(results[("exact", "cpu")]["out"])
        h, w = SIZES[size]
        full = h * w
        line = {"size": f"{w}x{h}", "rmax": rmax, "occlusion": not args.plain}
        for (backend, device), res in results.items():
            key = f"{backend}-{device}" if backend == "torch" else backend
            scale = full / res["pixels"]
            line[f"{key}_wall_s"] = res["wall_s"] * scale
            line[f"{key}_cpu_s"] = res["cpu_s"] * scale
            line[f"{key}_peak_mb"] = res["peak_mb"]
            line[f"{key}_crop"] = res["pixels"] < full
            if backend != "exact":
                line[f"{key}_psnr_db"] = _psnr(np.load(res["out"]), ex_img)
        if ("cpu-full", "cpu") in results:
            frames = [np.load(results[(b, "cpu")]["out_full"]) for b in ("cpu", "cpu-full")]
            line["cpu_vs_full_psnr_db"] = _psnr(*frames)
        for res in results.values():  # whole frames are large: keep /tmp clean
            for path in (res["out"], res["out_full"]):
                if path and os.path.exists(path):
                    os.remove(path)
        rows.append(line)
    load = (load_start, os.getloadavg())
    probe = _run({"probe": True})
    _print_table(rows, columns, args, cuda_note, load)
    print(
        f"thread probe (parallel numba sqrt-sum, 2e7 doubles): 1 thread {probe['1_threads_s']:.3f} s, "
        f"2 threads {probe['2_threads_s']:.3f} s wall"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {"rows": rows, "note": cuda_note, "machine": platform.platform(), "load": load, "probe": probe},
                f,
                indent=2,
            )
    return 0


def _fmt_s(v: float, crop: bool) -> str:
    return f"{v:.3g}{'*' if crop else ''}"


def _print_table(rows, columns, args, cuda_note, load) -> None:
    keys = [f"{b}-{d}" if b == "torch" else b for b, d, _ in columns]
    fast = [k for k in keys if k != "exact"]
    head = "| size | r_max | " + " | ".join(f"{k} wall s (CPU s)" for k in keys)
    head += " | " + " | ".join(f"{k} speed-up vs exact (CPU s)" for k in fast if k.startswith("cpu"))
    head += " | " + " | ".join(f"{k} PSNR vs exact dB" for k in fast)
    if "cpu-full" in keys:
        head += " | cpu vs cpu-full PSNR dB (whole frame)"
    head += " | peak MB (" + "/".join(keys) + ") |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for r in rows:
        cells = [r["size"], f"{r['rmax']:g}"]
        for k in keys:
            cells.append(f"{_fmt_s(r[k + '_wall_s'], r[k + '_crop'])} ({_fmt_s(r[k + '_cpu_s'], r[k + '_crop'])})")
        cells += [f"{r['exact_cpu_s'] / r[k + '_cpu_s']:.1f}×" for k in fast if k.startswith("cpu")]
        cells += [f"{r[k + '_psnr_db']:.1f}" for k in fast]
        if "cpu-full" in keys:
            cells.append(f"{r['cpu_vs_full_psnr_db']:.1f}")
        cells.append("/".join(f"{r[k + '_peak_mb']:.0f}" for k in keys))
        print("| " + " | ".join(cells) + " |")
    print(
        f"\n`*` = measured on a centred crop ({args.exact_pixels} px for exact, {args.torch_pixels} px for torch-CPU) "
        "and extrapolated by pixel count."
    )
    print(f"occlusion: {'off (plain)' if args.plain else 'on (depth slabs)'}; threads: {args.threads}")
    print(
        "load average (1/5/15 min) at start: {:.1f}/{:.1f}/{:.1f}, at end: {:.1f}/{:.1f}/{:.1f}".format(
            *load[0], *load[1]
        )
    )
    if cuda_note:
        print(cuda_note)


if __name__ == "__main__":
    sys.exit(main())
