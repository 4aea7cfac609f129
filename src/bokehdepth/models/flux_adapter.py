"""Shared pieces of the two FLUX bokeh adapters (BokehDepth Stage-1 on Kontext, Bokeh Diffusion on FLUX.1-dev).

Both published adapters have the same structure and differ only in two module names
(``to_k_dof``/``to_v_dof`` in BokehDepth, ``to_k_bokeh``/``to_v_bokeh`` in Bokeh Diffusion):

- ``embedding_layer``: ``Linear(1→64) → ReLU → Linear(64→768)`` maps a scalar blur level (already divided by
  30, or −1 for the unconditional label) to one 768-d "bokeh token" per sample.
- one attention processor per FLUX attention module (19 double blocks, then 38 single blocks), installed with
  diffusers' own ``FluxTransformer2DModel.set_attn_processor`` (never by monkey-patching). Each adapted
  processor holds four :class:`LoRALinear` maps: ``to_k_<cond>``/``to_v_<cond>`` (768→3072) project the bokeh
  token, ``to_q_adp``/``to_k_adp`` (3072→3072) adapt the projected queries/keys.

Processor maths (shared/reference/bokeh-diffusion.md §5, bokehdepth.md §3), per attention module:

1. ``Q, K, V = to_q/to_k/to_v(x)``; ``Q += lora_scale·to_q_adp(Q)``, ``K += lora_scale·to_k_adp(K)`` on the
   projected (B, S, 3072) vectors, before the head split and the RMSNorm. Double blocks adapt the image stream
   only; single blocks see the joined text+image sequence, so every token is adapted.
2. heads, ``norm_q``/``norm_k``; double blocks prepend the text stream ``[text, image]``; RoPE.
3. optional grounded swap (:func:`grounded_swap`).
4. ``out = SDPA(Q, K, V)`` plus the bokeh branch ``bokeh_scale·SDPA(Q, to_k_<cond>(e), to_v_<cond>(e))``, added
   to every token before ``to_out`` (double blocks) or returned to the single block.

The adapter's dims follow the transformer it is attached to (``attn_dim = heads·head_dim``), so the same code
runs the real 3072-wide FLUX and the tiny test configs.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError, InputError, MissingWeightsError

__all__ = [
    "FLUX_DEV_DIMS",
    "FluxAdapterConfig",
    "FluxBokehAdapter",
    "BokehAttnProcessor",
    "LoRALinear",
    "MissingBaseModelError",
    "block_names",
    "build_meta_transformer",
    "grounded_swap",
    "make_level_embedding",
    "transformer_attn_dim",
]

#: ``FluxTransformer2DModel`` arguments of FLUX.1-dev and FLUX.1-Kontext-dev (same transformer shape).
FLUX_DEV_DIMS: dict[str, Any] = dict(
    patch_size=1,
    in_channels=64,
    num_layers=19,
    num_single_layers=38,
    attention_head_dim=128,
    num_attention_heads=24,
    joint_attention_dim=4096,
    pooled_projection_dim=768,
    guidance_embeds=True,
    axes_dims_rope=(16, 56, 56),
)


class MissingBaseModelError(MissingWeightsError):
    """The local FLUX base-model folder (a whole Hugging Face repository) is missing or incomplete."""

    def __init__(self, path: str | os.PathLike | None, repo: str, flag: str = "--base"):
        self.path, self.repo, self.filename = str(path), repo, "model_index.json"
        local = f"weights/{repo.split('/')[-1]}"
        where = f"{path}: base model folder not found or has no model_index.json" if path else f"{flag} not given"
        # Bypass MissingWeightsError's single-file message: the base is a whole (gated) repository.
        CheckpointError.__init__(
            self,
            f"{where}; the base model is the Hugging Face repository {repo} (gated: accept its licence on the Hub "
            f"first); on a connected machine run: hf download {repo} --local-dir {local}  (then pass {flag} {local})",
        )


def check_base_folder(base: str | os.PathLike | None, repo: str, flag: str = "--base") -> Path:
    """Return ``base`` as a Path if it is a diffusers pipeline folder (has ``model_index.json``), else raise
    :class:`MissingBaseModelError` naming the repository and the fetch command."""
    if base is None or not (Path(base) / "model_index.json").is_file():
        raise MissingBaseModelError(base, repo, flag)
    return Path(base)


# ----------------------------------------------------------------------------------------------------------
# layers
# ----------------------------------------------------------------------------------------------------------
class LoRALinear(nn.Module):
    """Low-rank linear map ``y = scale·up(down(x))`` with ``scale = alpha/rank`` (1 if ``alpha`` is None).

    Init as published: ``down ~ N(0, std = 1/rank)``, ``up = 0`` (the map starts at exactly zero). The input is
    cast to the weight dtype and the output back to the input dtype, so a bf16 transformer can run fp32 LoRA.

    Shapes: (..., in_features) → (..., out_features).
    """

    def __init__(self, in_features: int, out_features: int, rank: int, alpha: float | None = None):
        super().__init__()
        self.down = nn.Linear(in_features, rank, bias=False)
        self.up = nn.Linear(rank, out_features, bias=False)
        self.scale = 1.0 if alpha is None else float(alpha) / rank
        nn.init.normal_(self.down.weight, std=1.0 / rank)
        nn.init.zeros_(self.up.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        y = self.up(self.down(x.to(self.down.weight.dtype)))
        if self.scale != 1.0:
            y = y * self.scale
        return y.to(dtype)


def make_level_embedding(input_dim: int = 1, hidden_dim: int = 64, context_dim: int = 768) -> nn.Sequential:
    """The published level/K embedding MLP ``Linear(1→64) → ReLU → Linear(64→768)`` (keys ``0.*`` and ``2.*``).

    Input (B, 1): the level divided by 30 (or −1 for the unconditional label); output (B, context_dim).
    """
    return nn.Sequential(nn.Linear(input_dim, hidden_dim), nn.ReLU(), nn.Linear(hidden_dim, context_dim))


def grounded_swap(
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    batch_swap_ids: Sequence[int],
    swap_keys: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Grounded self-attention substitution (bokeh-diffusion.md §6.3), tensors (B, S, heads, head_dim).

    ``Q ← Q[ids]`` and, if ``swap_keys``, ``K ← cat_seq(K, K[ids])``, ``V ← cat_seq(V, V)``. With the published
    ``ids = [1, 1]`` on a (target, pivot) batch, the target attends with the pivot's queries over its own and the
    pivot's keys while reading only its own values; the pivot's result equals plain attention (its keys and values
    are duplicated, which leaves softmax attention unchanged).
    """
    ids = torch.as_tensor(list(batch_swap_ids), device=query.device, dtype=torch.long)
    if ids.numel() != query.shape[0]:
        raise InputError(f"batch_swap_ids: needs one index per sample ({query.shape[0]}), got {list(batch_swap_ids)}")
    query = query[ids]
    if swap_keys:
        key = torch.cat([key, key[ids]], dim=1)
        value = torch.cat([value, value], dim=1)
    return query, key, value


# ----------------------------------------------------------------------------------------------------------
# the attention processor
# ----------------------------------------------------------------------------------------------------------
class BokehAttnProcessor(nn.Module):
    """diffusers attention processor for ``FluxAttention`` with the bokeh adapter (see the module docstring).

    Args:
        attn_dim: projected width ``heads·head_dim`` (3072 in FLUX).
        context_dim: width of the bokeh token (768).
        rank: LoRA rank (128 published).
        alpha: LoRA alpha (``None`` = scale 1; BokehDepth uses alpha = rank = 128, also scale 1).
        cond_name: ``"dof"`` (BokehDepth) or ``"bokeh"`` (Bokeh Diffusion); names ``to_k_<cond>``/``to_v_<cond>``.
        unfreeze_q, unfreeze_k: add ``to_q_adp`` / ``to_k_adp`` (both on in the releases). ``unfreeze_k`` also
            selects the grounded swap of keys and values, as published.
        adapted: False makes a parameter-free processor that computes stock FLUX attention (blocks not listed
            in the adapter's ``blocks``).

    ``__call__`` takes diffusers' four arguments plus the adapter's ``joint_attention_kwargs`` (they must be named
    parameters, or diffusers drops them): ``bokeh_embeds`` (B, 1, context_dim) or None (no bokeh branch),
    ``perform_swap`` (bool) and ``batch_swap_ids`` (list of B ints).
    """

    _attention_backend = None
    _parallel_config = None

    def __init__(
        self,
        attn_dim: int,
        context_dim: int,
        rank: int,
        alpha: float | None = None,
        cond_name: str = "bokeh",
        unfreeze_q: bool = True,
        unfreeze_k: bool = True,
        adapted: bool = True,
    ):
        super().__init__()
        self.cond_name = cond_name
        self.adapted = adapted
        self.swap_keys = unfreeze_k
        self.lora_scale = 1.0
        self.bokeh_scale = 1.0
        if adapted:  # registration order = published state_dict order
            self.add_module(f"to_k_{cond_name}", LoRALinear(context_dim, attn_dim, rank, alpha))
            self.add_module(f"to_v_{cond_name}", LoRALinear(context_dim, attn_dim, rank, alpha))
            if unfreeze_q:
                self.to_q_adp = LoRALinear(attn_dim, attn_dim, rank, alpha)
            if unfreeze_k:
                self.to_k_adp = LoRALinear(attn_dim, attn_dim, rank, alpha)

    @property
    def to_k_cond(self) -> LoRALinear | None:
        return getattr(self, f"to_k_{self.cond_name}", None)

    @property
    def to_v_cond(self) -> LoRALinear | None:
        return getattr(self, f"to_v_{self.cond_name}", None)

    def __call__(  # noqa: D102 (documented on the class)
        self,
        attn: nn.Module,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        image_rotary_emb: tuple[torch.Tensor, torch.Tensor] | None = None,
        bokeh_embeds: torch.Tensor | None = None,
        perform_swap: bool = False,
        batch_swap_ids: Sequence[int] | None = None,
    ):
        from diffusers.models.attention_dispatch import dispatch_attention_fn
        from diffusers.models.embeddings import apply_rotary_emb

        if getattr(attn, "fused_projections", False):
            raise InputError("bokeh adapter: unfuse the transformer's QKV projections first (unfuse_qkv_projections)")
        query, key, value = attn.to_q(hidden_states), attn.to_k(hidden_states), attn.to_v(hidden_states)
        if self.adapted:
            if hasattr(self, "to_q_adp"):
                query = query + self.lora_scale * self.to_q_adp(query)
            if hasattr(self, "to_k_adp"):
                key = key + self.lora_scale * self.to_k_adp(key)

        query = attn.norm_q(query.unflatten(-1, (-1, attn.head_dim)))
        key = attn.norm_k(key.unflatten(-1, (-1, attn.head_dim)))
        value = value.unflatten(-1, (-1, attn.head_dim))

        if attn.added_kv_proj_dim is not None:  # double block: text stream first
            enc_q = attn.norm_added_q(attn.add_q_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
            enc_k = attn.norm_added_k(attn.add_k_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim)))
            enc_v = attn.add_v_proj(encoder_hidden_states).unflatten(-1, (-1, attn.head_dim))
            query = torch.cat([enc_q, query], dim=1)
            key = torch.cat([enc_k, key], dim=1)
            value = torch.cat([enc_v, value], dim=1)

        if image_rotary_emb is not None:
            query = apply_rotary_emb(query, image_rotary_emb, sequence_dim=1)
            key = apply_rotary_emb(key, image_rotary_emb, sequence_dim=1)

        if perform_swap:
            if batch_swap_ids is None:
                raise InputError("perform_swap needs batch_swap_ids (e.g. [1, 1] for a (target, pivot) batch)")
            if attention_mask is not None:
                raise InputError("grounded attention does not support an attention mask")
            query, key, value = grounded_swap(query, key, value, batch_swap_ids, swap_keys=self.swap_keys)

        out = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        out = out.flatten(2, 3).to(query.dtype)

        if self.adapted and bokeh_embeds is not None:
            out = out + self.bokeh_scale * self._bokeh_branch(query, bokeh_embeds, dispatch_attention_fn)

        if encoder_hidden_states is not None:
            n_text = encoder_hidden_states.shape[1]
            enc_out, out = out.split_with_sizes([n_text, out.shape[1] - n_text], dim=1)
            out = attn.to_out[1](attn.to_out[0](out.contiguous()))
            return out, attn.to_add_out(enc_out.contiguous())
        return out

    def _bokeh_branch(self, query: torch.Tensor, bokeh_embeds: torch.Tensor, attention_fn) -> torch.Tensor:
        """``SDPA(Q, to_k_<cond>(e), to_v_<cond>(e))`` merged to (B, S, attn_dim); ``e`` (B, T, context_dim)."""
        e = bokeh_embeds.to(device=query.device)
        if e.ndim == 2:
            e = e[:, None]
        if e.shape[0] != query.shape[0]:
            raise InputError(f"bokeh_embeds: batch {e.shape[0]} does not match the latents' batch {query.shape[0]}")
        head_dim = query.shape[-1]
        k_b = self.to_k_cond(e).to(query.dtype).unflatten(-1, (-1, head_dim))
        v_b = self.to_v_cond(e).to(query.dtype).unflatten(-1, (-1, head_dim))
        out_b = attention_fn(query, k_b, v_b, backend=self._attention_backend, parallel_config=self._parallel_config)
        return out_b.flatten(2, 3).to(query.dtype)


# ----------------------------------------------------------------------------------------------------------
# the adapter module
# ----------------------------------------------------------------------------------------------------------
@dataclass
class FluxAdapterConfig:
    """Shape and behaviour of a FLUX bokeh adapter.

    Attributes:
        cond_name: ``"dof"`` (BokehDepth ``bokeh_lora.bin``) or ``"bokeh"`` (Bokeh Diffusion).
        attn_dim: attention width heads·head_dim (3072 for FLUX; must equal the transformer's).
        context_dim: bokeh-token width (768).
        hidden_dim: hidden width of the level embedding MLP (64).
        input_dim: level input width (1: one scalar per sample).
        rank: LoRA rank (128).
        alpha: LoRA alpha; None means scale 1 (Bokeh Diffusion), BokehDepth uses alpha = rank.
        unfreeze_q, unfreeze_k: add the query / key LoRA (both on in the releases).
        blocks: names of the adapted blocks (``transformer_blocks.3``, ``single_transformer_blocks.0`` …);
            None = all, as released.
    """

    cond_name: str = "bokeh"
    attn_dim: int = 3072
    context_dim: int = 768
    hidden_dim: int = 64
    input_dim: int = 1
    rank: int = 128
    alpha: float | None = None
    unfreeze_q: bool = True
    unfreeze_k: bool = True
    blocks: list[str] | None = field(default=None)


def block_names(transformer: nn.Module) -> list[str]:
    """Attention-processor owners of a Flux transformer in processor order: ``transformer_blocks.0`` …,
    then ``single_transformer_blocks.0`` … (the name before ``.attn.processor``)."""
    return [name.split(".attn")[0] for name in transformer.attn_processors]


def transformer_attn_dim(transformer: nn.Module) -> int:
    """heads·head_dim of a ``FluxTransformer2DModel`` (3072 for FLUX.1)."""
    cfg = transformer.config
    return int(cfg.num_attention_heads * cfg.attention_head_dim)


def build_meta_transformer(**overrides: Any) -> nn.Module:
    """A ``FluxTransformer2DModel`` with the real FLUX.1 dims on the meta device (no memory, nothing read)."""
    from diffusers import FluxTransformer2DModel

    with torch.device("meta"):
        return FluxTransformer2DModel(**{**FLUX_DEV_DIMS, **overrides})


class FluxBokehAdapter(nn.Module):
    """The adapter: ``embedding_layer`` + ``adapter_modules`` (one processor per attention module, in the
    transformer's processor order; state_dict keys as published).

    Use :meth:`for_transformer` to build one that fits a transformer, :meth:`install` / :meth:`remove` (or the
    :meth:`installed` context manager) to put its processors in / take them out, :meth:`embed` for the bokeh
    token, and :meth:`attention_kwargs` for the transformer's ``joint_attention_kwargs``.
    """

    def __init__(self, config: FluxAdapterConfig, processor_names: Sequence[str]):
        super().__init__()
        self.config = config
        self.processor_names = list(processor_names)
        blocks = None if config.blocks is None else set(config.blocks)
        owners = [n.split(".attn")[0] for n in self.processor_names]
        if blocks is not None and not blocks <= set(owners):
            unknown = sorted(blocks - set(owners))
            raise CheckpointError(f"adapter blocks {unknown[:3]} are not blocks of this transformer")
        self.embedding_layer = make_level_embedding(config.input_dim, config.hidden_dim, config.context_dim)
        self.adapter_modules = nn.ModuleList(
            BokehAttnProcessor(
                config.attn_dim,
                config.context_dim,
                config.rank,
                config.alpha,
                config.cond_name,
                config.unfreeze_q,
                config.unfreeze_k,
                adapted=blocks is None or owner in blocks,
            )
            for owner in owners
        )
        self._stock: dict[str, Any] | None = None

    @classmethod
    def for_transformer(cls, transformer: nn.Module, config: FluxAdapterConfig) -> FluxBokehAdapter:
        """Build an adapter for ``transformer`` (checks ``config.attn_dim`` against it)."""
        width = transformer_attn_dim(transformer)
        if config.attn_dim != width:
            raise CheckpointError(
                f"adapter attn_dim {config.attn_dim} does not match the transformer's width {width}; "
                "use the base model the adapter was trained for"
            )
        return cls(config, list(transformer.attn_processors))

    # -- embedding ------------------------------------------------------------------------------------------
    def embed(self, levels: torch.Tensor | Sequence[float]) -> torch.Tensor:
        """Bokeh tokens (B, 1, context_dim) from model-input levels (B,) or (B, 1) (already /30, or −1)."""
        w = self.embedding_layer[0].weight
        x = torch.as_tensor(levels, dtype=w.dtype, device=w.device).reshape(-1, self.config.input_dim)
        return self.embedding_layer(x)[:, None, :]

    @staticmethod
    def attention_kwargs(
        bokeh_embeds: torch.Tensor | None,
        perform_swap: bool = False,
        batch_swap_ids: Sequence[int] | None = None,
    ) -> dict[str, Any]:
        """``joint_attention_kwargs`` for the transformer / pipeline call."""
        return {"bokeh_embeds": bokeh_embeds, "perform_swap": perform_swap, "batch_swap_ids": batch_swap_ids}

    def set_scales(self, lora_scale: float = 1.0, bokeh_scale: float = 1.0) -> None:
        """Set ``lora_scale`` (Q/K LoRA) and ``bokeh_scale`` (bokeh branch) on every processor."""
        for proc in self.adapter_modules:
            proc.lora_scale, proc.bokeh_scale = float(lora_scale), float(bokeh_scale)

    # -- install / remove -----------------------------------------------------------------------------------
    @property
    def is_installed(self) -> bool:
        return self._stock is not None

    def install(self, transformer: nn.Module) -> None:
        """Replace every attention processor of ``transformer`` by this adapter's (``set_attn_processor``).

        The adapter moves to the transformer's device; the processors become submodules of the attention
        modules (as in the reference), so ``transformer.to()`` and CPU offload move them too.
        """
        names = list(transformer.attn_processors)
        if names != self.processor_names:
            raise CheckpointError(
                f"adapter was built for {len(self.processor_names)} attention modules, this transformer has "
                f"{len(names)}; build it with FluxBokehAdapter.for_transformer"
            )
        if self._stock is not None:
            raise InputError("adapter is already installed; call remove() first")
        param = next(transformer.parameters())
        if param.device.type != "meta":
            self.to(param.device)
        self._stock = dict(transformer.attn_processors)
        transformer.set_attn_processor(dict(zip(names, self.adapter_modules)))

    def remove(self, transformer: nn.Module) -> None:
        """Put back the processors that were there before :meth:`install`."""
        if self._stock is None:
            raise InputError("adapter is not installed")
        transformer.set_attn_processor(dict(self._stock))
        self._stock = None

    @contextmanager
    def installed(self, transformer: nn.Module) -> Iterator[FluxBokehAdapter]:
        """``with adapter.installed(transformer): ...`` installs and always removes."""
        self.install(transformer)
        try:
            yield self
        finally:
            self.remove(transformer)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def lora_param_count(config: FluxAdapterConfig, n_blocks: int) -> int:
    """Parameter count of an adapter with ``config`` on ``n_blocks`` adapted attention modules."""
    per = 2 * config.rank * (config.context_dim + config.attn_dim)
    per += (int(config.unfreeze_q) + int(config.unfreeze_k)) * 2 * config.rank * config.attn_dim
    emb = config.input_dim * config.hidden_dim + config.hidden_dim + config.hidden_dim * config.context_dim
    return n_blocks * per + emb + config.context_dim


def shapes_of(module: nn.Module) -> dict[str, tuple[int, ...]]:
    """key → shape of a module's state dict, in order (works on the meta device)."""
    return {k: tuple(v.shape) for k, v in module.state_dict().items()}


def infer_lora_dims(state: dict, cond_name: str) -> dict[str, int]:
    """Read ``context_dim``, ``hidden_dim``, ``input_dim`` and ``rank`` from a published-layout state dict.

    Raises CheckpointError naming the key that is needed but absent.
    """
    need = ["embedding_layer.2.weight", "embedding_layer.0.weight", f"adapter_modules.0.to_k_{cond_name}.down.weight"]
    for key in need:
        if key not in state:
            raise CheckpointError(f"checkpoint lacks key '{key}'; is this the right adapter file?")
    context_dim, hidden_dim = (int(s) for s in state[need[0]].shape)
    input_dim = int(state[need[1]].shape[1])
    rank = int(state[need[2]].shape[0])
    if not rank > 0 or math.prod(state[need[0]].shape) == 0:
        raise CheckpointError("checkpoint has empty adapter tensors")
    return {"context_dim": context_dim, "hidden_dim": hidden_dim, "input_dim": input_dim, "rank": rank}


def published_adapter_shapes(config: FluxAdapterConfig) -> dict[str, tuple[int, ...]]:
    """key → shape, in ``state_dict()`` order, of an adapter with ``config`` attached to a FLUX.1 transformer
    with the real dims, all on the meta device (nothing allocated, nothing read)."""
    transformer = build_meta_transformer()
    with torch.device("meta"):
        adapter = FluxBokehAdapter.for_transformer(transformer, config)
    return shapes_of(adapter)
