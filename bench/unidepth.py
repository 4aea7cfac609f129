"""Cost of UniDepthV2-L + DSFA (the ``udv2-dsfa`` backend) for one image at the reference resolution.

Random weights at the real shape (464 M parameters, published config), one 512×512 image (→ 518×518 network
input, 37×37 tokens) with the reference pipeline's default stack (K = 10, 20, 30: 3 generated frames), through
the same predictor as ``bokehdepth depth --backend udv2-dsfa`` (preprocessing, camera, postprocessing included).

Two runs in the same process: the baseline ``single_frame=True`` (DSFA bypassed, only the reference is encoded)
then the full model (reference + 3 frames through the backbone, 4 DSFA blocks, decoder); the report gives both
wall times, their ratio, a per-part breakdown of the full run (backbone on 4 frames as one batch, DSFA blocks,
decoder) and peak memory (CPU: peak RSS of the process after each run, weights included; CUDA: peak allocated).
On CUDA the default is the reference's fp16 autocast; one warm-up run precedes the timed runs there.

    nice -n 10 venv/bin/python bench/unidepth.py                  # CPU, one run each
    venv/bin/python bench/unidepth.py --device cuda --repeats 5   # GPU
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import time
from collections import defaultdict
from datetime import date

import numpy as np
import torch


def build_predictor(device: str, dtype: torch.dtype | None):
    from bokehdepth.models.unidepth import UniDepthConfig, UniDepthV2DSFA
    from bokehdepth.models.unidepth_predictor import UniDepthPredictor

    torch.manual_seed(0)
    with torch.device(device):
        model = UniDepthV2DSFA(UniDepthConfig.full()).eval().requires_grad_(False)
    return UniDepthPredictor(model, device=device, dtype=dtype, info={"weights": "random"})


def make_inputs(size: int, ks: list[float]):
    from bokehdepth.io import Stack

    rng = np.random.default_rng(0)
    image = rng.random((size, size, 3), dtype=np.float32)
    frames = [image] + [np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32) for _ in ks]
    return image, Stack(frames, [0.0, *ks], K_convention="normalized", source="generated")


class PartTimer:
    """Wall time of the backbone, the DSFA blocks and the decoder via forward pre/post hooks."""

    def __init__(self, model, device: str):
        self.device = device
        self.totals: dict[str, float] = defaultdict(float)
        self._start: dict[str, float] = {}
        parts = {"backbone": model.pixel_encoder.backbone, "decoder": model.pixel_decoder}
        parts.update({f"dsfa.{k}": m for k, m in model.pixel_encoder.fusion_blocks.items()})
        for name, mod in parts.items():
            mod.register_forward_pre_hook(lambda m, a, n=name: self._begin(n))
            mod.register_forward_hook(lambda m, a, o, n=name: self._end(n))

    def _sync(self):
        if self.device == "cuda":
            torch.cuda.synchronize()

    def _begin(self, name):
        self._sync()
        self._start[name] = time.perf_counter()

    def _end(self, name):
        self._sync()
        self.totals[name] += time.perf_counter() - self._start.pop(name)

    def reset(self):
        self.totals.clear()

    def summary(self) -> dict[str, float]:
        dsfa = sum(v for k, v in self.totals.items() if k.startswith("dsfa."))
        return {"backbone_s": self.totals["backbone"], "dsfa_s": dsfa, "decoder_s": self.totals["decoder"]}


def peak_memory_gib(device: str) -> float:
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB → GiB (Linux)


def timed(fn, device: str, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device == "cuda":
            torch.cuda.synchronize()
        out.append(time.perf_counter() - t)
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--size", type=int, default=512, help="square input side, px (512: the reference's working size)")
    ap.add_argument("--K", type=float, nargs="+", default=[10.0, 20.0, 30.0], help="stack K (normalised)")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per variant (median reported)")
    ap.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "float16", "bfloat16"),
        help="autocast dtype (auto: fp16 on CUDA as the reference, fp32 on CPU)",
    )
    ap.add_argument("--json", help="also write the result here")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device visible")
    dtype = None if args.dtype == "auto" else getattr(torch, args.dtype)

    t0 = time.perf_counter()
    pred = build_predictor(args.device, dtype)
    build_s = time.perf_counter() - t0
    image, stack = make_inputs(args.size, args.K)
    timer = PartTimer(pred.model, args.device)
    result = {
        "date": date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"cpu ({torch.get_num_threads()} threads)",
        "torch": torch.__version__,
        "dtype": args.dtype,
        "input": [args.size, args.size],
        "network_input": list(pred.geometry(args.size, args.size).network_hw),
        "K": args.K,
        "params": sum(p.numel() for p in pred.model.parameters()),
        "build_s": build_s,
        "peak_after_build_gib": peak_memory_gib(args.device),
    }
    if args.device == "cuda":
        pred.predict(image, stack)  # warm-up (kernels, autotuning)
        torch.cuda.reset_peak_memory_stats()

    base = timed(lambda: pred.predict(image, stack, single_frame=True), args.device, args.repeats)
    result["single_frame_s"] = statistics.median(base)
    result["peak_single_frame_gib"] = peak_memory_gib(args.device)
    timer.reset()
    full = timed(lambda: pred.predict(image, stack), args.device, args.repeats)
    result["dsfa_s"] = statistics.median(full)  # the full model: reference + stack, DSFA on
    result["peak_dsfa_gib"] = peak_memory_gib(args.device)
    result["ratio_dsfa_over_single_frame"] = result["dsfa_s"] / result["single_frame_s"]
    parts = {k: v / args.repeats for k, v in timer.summary().items()}
    result["full_run_parts"] = parts
    result["dsfa_blocks_over_backbone"] = parts["dsfa_s"] / parts["backbone_s"]
    print(json.dumps(result, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
