"""Loading a diffusers FLUX pipeline from a local folder with a bokeh adapter installed (Kontext and FLUX.1-dev)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["load_adapted_pipeline", "resolve_dtype"]


def resolve_dtype(dtype: Any, device: str):
    """torch dtype from ``"auto"``/None (bf16 on CUDA, fp32 on CPU), ``"bf16"``, ``"fp16"``, ``"fp32"`` or a
    torch dtype."""
    import torch

    if dtype in (None, "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else torch.float32
    table = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
    return table.get(dtype, dtype)


def load_adapted_pipeline(
    pipeline_cls: type,
    base_dir: Path,
    load_adapter: Callable[..., Any],
    weights: Any,
    *,
    dtype: Any = None,
    device: str = "cpu",
    cpu_offload: bool = False,
    vae_tiling: bool = False,
) -> tuple[Any, Any]:
    """Load ``pipeline_cls`` from the local diffusers folder ``base_dir`` (never from a hub), load the adapter
    with ``load_adapter(weights, transformer, install=False)``, cast it to the pipeline dtype, install its
    attention processors, then place the pipeline (``device``, or model CPU offload) and optionally tile the VAE.

    Returns:
        (pipeline, adapter).
    """
    torch_dtype = resolve_dtype(dtype, device)
    pipe = pipeline_cls.from_pretrained(str(base_dir), torch_dtype=torch_dtype, local_files_only=True)
    adapter = load_adapter(weights, pipe.transformer, install=False)
    adapter.to(dtype=torch_dtype)
    adapter.install(pipe.transformer)
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if vae_tiling:
        pipe.vae.enable_tiling()
    return pipe, adapter
