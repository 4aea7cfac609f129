"""Tiny offline FLUX.1 / FLUX.1-Kontext pipelines for tests (shared/reference/environment.md §3).

Random weights of the real diffusers classes at widths of 16–32, tokenizers built from an in-memory vocabulary,
saved with ``save_pretrained`` into a folder and reloaded with ``local_files_only=True``: the same code path a
user's local FLUX folder takes. Nothing is downloaded.
"""

from __future__ import annotations

import os
import string
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: transformer width of the tiny config: heads·head_dim
TINY_ATTN_DIM = 32


def _tokenizers():
    from transformers import CLIPTokenizer, T5TokenizerFast

    symbols = list(string.ascii_lowercase + string.digits + string.punctuation)
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for s in symbols:
        vocab.setdefault(s, len(vocab))
        vocab.setdefault(s + "</w>", len(vocab))
    clip_tok = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    pieces = [("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0)] + [(s, -1.0) for s in symbols + ["▁"]]
    t5_tok = T5TokenizerFast(vocab=pieces, extra_ids=0, model_max_length=512)
    return clip_tok, t5_tok


def tiny_transformer(seed: int = 0):
    """A random 1 double + 1 single block ``FluxTransformer2DModel`` (2 heads × 16)."""
    import torch
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(seed)
    return FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        guidance_embeds=True,
        axes_dims_rope=(4, 6, 6),
    )


def tiny_components(seed: int = 0) -> dict:
    """All components of a tiny FLUX pipeline (random weights, deterministic from ``seed``)."""
    import torch
    from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tok, t5_tok = _tokenizers()
    torch.manual_seed(seed)
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(clip_tok),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            projection_dim=32,
            hidden_act="quick_gelu",
            bos_token_id=0,
            eos_token_id=1,
            pad_token_id=1,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=len(t5_tok),
            d_model=32,
            d_kv=8,
            d_ff=64,
            num_layers=2,
            num_heads=4,
            relative_attention_num_buckets=8,
            feed_forward_proj="gated-gelu",
            pad_token_id=0,
            eos_token_id=1,
            decoder_start_token_id=0,
            is_encoder_decoder=False,
            use_cache=False,
        )
    )
    vae = AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=1,
        latent_channels=16,
        norm_num_groups=4,
        sample_size=128,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.1159,
        scaling_factor=0.3611,
    )
    scheduler = FlowMatchEulerDiscreteScheduler(
        shift=3.0,
        use_dynamic_shifting=True,
        base_shift=0.5,
        max_shift=1.15,
        base_image_seq_len=256,
        max_image_seq_len=4096,
    )
    return dict(
        scheduler=scheduler,
        vae=vae,
        text_encoder=clip,
        tokenizer=clip_tok,
        text_encoder_2=t5,
        tokenizer_2=t5_tok,
        transformer=tiny_transformer(seed),
    )


def tiny_pipeline(kind: str = "flux", seed: int = 0):
    """``FluxPipeline`` (kind "flux") or ``FluxKontextPipeline`` (kind "kontext") with tiny random weights."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    cls = FluxKontextPipeline if kind == "kontext" else FluxPipeline
    components = tiny_components(seed)
    for module in components.values():  # as from_pretrained leaves them: eval mode (T5 has dropout)
        if hasattr(module, "eval"):
            module.eval()
    return cls(**components)


def save_tiny_pipeline(folder: str | os.PathLike, kind: str = "flux", seed: int = 0) -> Path:
    """Write a tiny pipeline with ``save_pretrained`` (a local "base model folder"); returns the folder."""
    folder = Path(folder)
    tiny_pipeline(kind, seed).save_pretrained(folder)
    return folder


def random_adapter(transformer, cond_name: str, seed: int = 0, rank: int = 4, context_dim: int = 24, std: float = 0.2):
    """A FluxBokehAdapter fitted to ``transformer`` with every weight random (the ``up`` maps non-zero)."""
    import torch

    from bokehdepth.models.flux_adapter import FluxAdapterConfig, FluxBokehAdapter, transformer_attn_dim

    cfg = FluxAdapterConfig(
        cond_name=cond_name,
        attn_dim=transformer_attn_dim(transformer),
        context_dim=context_dim,
        hidden_dim=8,
        rank=rank,
        alpha=float(rank) if cond_name == "dof" else None,
    )
    adapter = FluxBokehAdapter.for_transformer(transformer, cfg)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in adapter.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * std)
    return adapter


KEYS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "keys"


def reference_keys(filename: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key, shape) rows of a reference tsv (skips the test when shared/reference/keys is absent)."""
    import json

    import pytest

    path = KEYS_DIR / filename
    if not path.is_file():
        pytest.skip(f"reference key list {path} is absent (shared/ is not beside the repo)")
    rows = []
    for line in path.read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _dtype = line.split("\t")
        rows.append((key, tuple(json.loads(shape))))
    return rows


_DIRS: dict[tuple[str, int], Path] = {}


def tiny_pipeline_dir(kind: str = "flux", seed: int = 0) -> Path:
    """A tiny pipeline saved once per test process into a temporary folder (removed at exit)."""
    import atexit
    import shutil
    import tempfile

    key = (kind, seed)
    if key not in _DIRS:
        root = Path(tempfile.mkdtemp(prefix=f"tiny-{kind}-"))
        atexit.register(shutil.rmtree, root, True)
        _DIRS[key] = save_tiny_pipeline(root / "base", kind, seed)
    return _DIRS[key]


def load_tiny_pipeline(kind: str = "flux", seed: int = 0):
    """The saved tiny pipeline reloaded with ``from_pretrained(local_files_only=True)``."""
    from diffusers import FluxKontextPipeline, FluxPipeline

    cls = FluxKontextPipeline if kind == "kontext" else FluxPipeline
    return cls.from_pretrained(str(tiny_pipeline_dir(kind, seed)), local_files_only=True)


def _single_thread():
    import pytest
    import torch

    @pytest.fixture(autouse=True)
    def torch_single_thread():
        """Run each test with one torch thread (restored after): the tiny models' ops are microseconds long and
        intra-op threads only spin against each other on a loaded 2-core machine (25× slower measured)."""
        n = torch.get_num_threads()
        torch.set_num_threads(1)
        yield
        torch.set_num_threads(n)

    return torch_single_thread


torch_single_thread = _single_thread()


def tiny_dataset() -> Path:
    """A 3-scene 32-px synthetic dataset (``bokehdepth.synth``), made once per test process; its manifest path."""
    import atexit
    import shutil
    import tempfile

    if ("dataset", 0) not in _DIRS:
        from bokehdepth.synth import generate_dataset

        root = Path(tempfile.mkdtemp(prefix="tiny-ds-"))
        atexit.register(shutil.rmtree, root, True)
        _DIRS[("dataset", 0)] = generate_dataset(
            root / "ds", 3, size=32, seed=0, progress=False, val_fraction=0.0, test_fraction=0.0
        )
    return _DIRS[("dataset", 0)]
