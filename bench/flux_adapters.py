"""Cost of the FLUX bokeh adapters (BokehDepth Kontext adapter / Bokeh Diffusion; same processors).

CPU (default): a reduced-depth FLUX transformer at the real widths (``--double``/``--single`` blocks of 24 heads ×
128 = 3072, T5 width 4096, random weights) runs one denoising step (one transformer forward) with the stock
diffusers processor and with the adapter installed (rank 128, 768-d bokeh token), alternately, ``--repeats``
times each; the report is the adapter/stock time ratio of the medians (same run, same machine) and the
adapter's parameter count per block. Sequence lengths are those of a Kontext call at ``--size`` (text + target +
reference tokens) or of FLUX.1-dev (``--model dev``: text + target).

GPU (``--device cuda``): the full 19 + 38-block transformer in bf16 with random weights, per-step time and peak
memory at 512² and 1024², stock vs adapter. Needs a CUDA machine with ≥ 40 GB.

    nice -n 10 venv/bin/python bench/flux_adapters.py                       # CPU ratio
    venv/bin/python bench/flux_adapters.py --device cuda --sizes 512 1024   # GPU timings and memory
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import torch


def build_transformer(double: int, single: int, device: str, dtype: torch.dtype):
    from diffusers import FluxTransformer2DModel

    from bokehdepth.models.flux_adapter import FLUX_DEV_DIMS

    torch.manual_seed(0)
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            tr = FluxTransformer2DModel(**{**FLUX_DEV_DIMS, "num_layers": double, "num_single_layers": single})
    finally:
        torch.set_default_dtype(old)
    return tr.eval().requires_grad_(False)


def build_adapter(tr, dtype: torch.dtype):
    from bokehdepth.models.flux_adapter import FluxAdapterConfig, FluxBokehAdapter

    adapter = FluxBokehAdapter.for_transformer(tr, FluxAdapterConfig(cond_name="dof", alpha=128.0))
    with torch.no_grad():  # non-zero ups so every branch does real work
        for name, p in adapter.named_parameters():
            if name.endswith("up.weight"):
                p.normal_(std=1e-3)
    return adapter.to(next(tr.parameters()).device, dtype)


def inputs(size: int, text_len: int, model: str, device: str, dtype: torch.dtype) -> dict:
    n = (size // 16) ** 2
    img_len = 2 * n if model == "kontext" else n
    h = size // 16
    ids = torch.zeros(n, 3)
    ids[:, 1], ids[:, 2] = torch.arange(n) // h, torch.arange(n) % h
    if model == "kontext":
        ref = ids.clone()
        ref[:, 0] = 1
        ids = torch.cat([ids, ref])
    g = torch.Generator().manual_seed(0)
    return dict(
        hidden_states=torch.randn(1, img_len, 64, generator=g).to(device, dtype),
        encoder_hidden_states=torch.randn(1, text_len, 4096, generator=g).to(device, dtype),
        pooled_projections=torch.randn(1, 768, generator=g).to(device, dtype),
        timestep=torch.tensor([0.5], device=device, dtype=dtype),
        img_ids=ids.to(device, dtype),
        txt_ids=torch.zeros(text_len, 3, device=device, dtype=dtype),
        guidance=torch.tensor([7.0], device=device, dtype=torch.float32),
        return_dict=False,
    )


def timed(fn, device: str) -> float:
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def measure(tr, adapter, inp: dict, repeats: int, device: str) -> dict:
    kwargs = adapter.attention_kwargs(adapter.embed([10.0 / 30.0]).to(inp["hidden_states"].dtype))
    stock_t, adapter_t, peaks = [], [], {}
    with torch.no_grad():
        tr(**inp)  # warm-up
        for _ in range(repeats):
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            stock_t.append(timed(lambda: tr(**inp), device))
            if device.startswith("cuda"):
                peaks["stock_GiB"] = torch.cuda.max_memory_allocated() / 2**30
            with adapter.installed(tr):
                if device.startswith("cuda"):
                    torch.cuda.reset_peak_memory_stats()
                adapter_t.append(timed(lambda: tr(**inp, joint_attention_kwargs=kwargs), device))
                if device.startswith("cuda"):
                    peaks["adapter_GiB"] = torch.cuda.max_memory_allocated() / 2**30
    s, a = statistics.median(stock_t), statistics.median(adapter_t)
    return {"stock_s": s, "adapter_s": a, "ratio": a / s, "stock_all": stock_t, "adapter_all": adapter_t, **peaks}


def analytic_overhead(tr, adapter) -> float:
    """Extra multiply-adds per image token of the adapter's Q/K LoRA over the blocks' own linear layers.

    Per image token a double block runs its image-stream layers (``to_q/k/v``, ``to_out``, ``ff``; the text
    stream's ``add_*``/``ff_context`` serve the text tokens), a single block all its layers; AdaLN modulation
    (``norm*``) acts once per sample, as do the bokeh branch (one key) and the 1-token ``to_k/to_v`` projections.
    """
    block_macs = 0
    for kind, blocks in (("double", tr.transformer_blocks), ("single", tr.single_transformer_blocks)):
        for block in blocks:
            for name, mod in block.named_modules():
                if not isinstance(mod, torch.nn.Linear) or name.startswith("norm"):
                    continue
                if kind == "double" and ("add_" in name or "context" in name):
                    continue
                block_macs += mod.weight.numel()
    lora_macs = 0
    for proc in adapter.adapter_modules:
        for name in ("to_q_adp", "to_k_adp"):
            if hasattr(proc, name):
                lora_macs += sum(p.numel() for p in getattr(proc, name).parameters())
    return lora_macs / block_macs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu")
    p.add_argument("--model", choices=["kontext", "dev"], default="kontext")
    p.add_argument("--sizes", type=int, nargs="+", default=None, help="px (CPU default 256; GPU 512 1024)")
    p.add_argument("--text-len", type=int, default=None, help="T5 tokens (CPU default 128; GPU 512)")
    p.add_argument("--double", type=int, default=None, help="double blocks (CPU default 1; GPU 19)")
    p.add_argument("--single", type=int, default=None, help="single blocks (CPU default 1; GPU 38)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--json", default=None, help="write the results here")
    a = p.parse_args()
    gpu = a.device.startswith("cuda")
    if gpu and not torch.cuda.is_available():
        print("not measured: no CUDA device available")
        return
    if a.threads:
        torch.set_num_threads(a.threads)
    sizes = a.sizes or ([512, 1024] if gpu else [256])
    text_len = a.text_len or (512 if gpu else 128)
    double = a.double if a.double is not None else (19 if gpu else 1)
    single = a.single if a.single is not None else (38 if gpu else 1)
    dtype = torch.bfloat16 if gpu else torch.float32
    tr = build_transformer(double, single, a.device, dtype)
    adapter = build_adapter(tr, dtype)
    per_block = sum(p.numel() for p in adapter.adapter_modules[0].parameters())
    results_mac = analytic_overhead(tr, adapter)
    block_params = sum(p.numel() for p in tr.transformer_blocks[0].parameters()) if double else 0
    results = {
        "device": torch.cuda.get_device_name() if gpu else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "model": a.model,
        "blocks": [double, single],
        "text_len": text_len,
        "dtype": str(dtype),
        "adapter_params_per_block": per_block,
        "double_block_params": block_params,
        "analytic_mac_overhead": results_mac,
        "runs": {},
    }
    for size in sizes:
        inp = inputs(size, text_len, a.model, a.device, dtype)
        r = measure(tr, adapter, inp, a.repeats, a.device)
        r["tokens"] = text_len + inp["hidden_states"].shape[1]
        results["runs"][str(size)] = r
        mem = f", peak {r['stock_GiB']:.1f} / {r['adapter_GiB']:.1f} GiB" if gpu else ""
        print(
            f"{a.model} {size}² ({r['tokens']} tokens, {double}+{single} blocks): stock {r['stock_s']:.3f} s, "
            f"adapter {r['adapter_s']:.3f} s per step, ratio {r['ratio']:.3f}{mem}"
        )
    print(f"adapter parameters per block: {per_block:,} (double block: {block_params:,})")
    print(f"analytic per-token linear-layer MAC overhead of the adapter: {100 * results_mac:.2f} %")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
