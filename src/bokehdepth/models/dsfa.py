"""Divided Space Focus Attention (DSFA): the BokehDepth Stage-2 block, exactly as published.

A DSFA block refines the patch tokens of the sharp reference image with the tokens of its bokeh stack
(shared/reference/bokehdepth.md §4). With ``F = N + 1`` frames (the reference as frame 0 with K = 0,
then the N stack frames):

1. ``k_tokens = k_embed(K)``: Linear(1→D/4) → ReLU → Linear(D/4→D), one token per frame.
2. ``(scale, shift) = focus_film(k_tokens).chunk(2)``: Linear(D→2D).
3. Spatial attention inside each frame on ``[k_token_f; patches_f]`` (pre-LN MSA + MLP, layer-scale gates),
   then the K token is dropped.
4. FiLM on the residual stream: ``x ← x·(1 + tanh(scale_f)) + shift_f``.
5. Focus attention across frames at each token with the ALiBi-style bias ``−α·|K_i − K_j|`` (raw K units),
   then an MLP, both gated.
6. Only the reference frame's tokens are returned.

The attention-scale quirk is reproduced: q is pre-multiplied by ``head_dim**-0.5``; the unbiased spatial branch
with ``spatial_sdpa=True`` lets SDPA scale again (logits use ``1/head_dim``), while the biased focus branch uses
``1/sqrt(head_dim)``. The published initialisation is *not* an identity (gates 0.1, default Linear init);
``identity_init=True`` zeroes the gates and the FiLM layer so an untrained block returns its input exactly.

Only the reference output is needed, so the focus branch computes queries (and its MLP) for frame 0 only: the
other frames act as keys/values. This is the same function as running every query and keeping frame 0
(attention rows and the MLP are per query), at a fraction of the cost.

Frame order: with the reference fixed as frame 0, the focus attention (softmax over frames with a bias that
depends only on ``|K_i − K_j|``) is permutation-invariant in the non-reference frames, so permuting the stack
frames together with their K leaves the reference output unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["DSFAConfig", "DSFAAttention", "DSFAMlp", "DividedSpaceFocusBlock", "fuse_frame_features", "k_to_tensor"]


@dataclass
class DSFAConfig:
    """Configuration of one DSFA block.

    Attributes:
        dim: token width D (384 ViT-S, 768 ViT-B, 1024 ViT-L).
        num_heads: attention heads in both branches (published: 8).
        mlp_ratio: hidden width of the MLPs as a multiple of D (published: 4).
        layerscale_init: initial value of the four layer-scale gates (published: 0.1).
        alibi_scale: α of the focus bias ``−α·|K_i − K_j|``, per unit of K (published: 1.0).
        identity_init: zero the gates and the FiLM layer so that an untrained block is an exact identity
            (for fine-tuning from plain Depth Anything / UniDepth weights). Not the published init.
        film_sequential: name the FiLM layer ``focus_film.0`` (a Sequential, DAv2 layout) instead of
            ``focus_film`` (a Linear, UDv2 layout).
        spatial_sdpa: reproduce the published double scaling (logits × 1/head_dim) in the unbiased spatial
            branch; False gives the textbook 1/sqrt(head_dim).
    """

    dim: int
    num_heads: int = 8
    mlp_ratio: float = 4.0
    layerscale_init: float = 0.1
    alibi_scale: float = 1.0
    identity_init: bool = False
    film_sequential: bool = False
    spatial_sdpa: bool = True


class DSFAAttention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` (D→3D, bias) and ``out_proj`` (D→D).

    ``q`` is pre-multiplied by ``head_dim**-0.5`` as in the published code; ``double_scale`` lets SDPA scale
    the logits once more (the published unbiased path).
    """

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"DSFA dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(
        self,
        x: torch.Tensor,
        bias: torch.Tensor | None = None,
        double_scale: bool = False,
        num_queries: int | None = None,
    ) -> torch.Tensor:
        """Attend ``x`` [B, L, D] to itself.

        Args:
            bias: additive logit bias broadcastable to [B, heads, Lq, L], or None.
            double_scale: apply SDPA's own 1/sqrt(head_dim) on top of the pre-scaled q (only without bias).
            num_queries: compute outputs for the first ``num_queries`` tokens only (default: all).

        Returns:
            [B, Lq, D] with ``Lq = num_queries or L``.
        """
        b, n, d = x.shape
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        if num_queries is not None:
            q = q[:, :num_queries]
        q = self._heads(q) * self.head_dim**-0.5
        k, v = self._heads(k), self._heads(v)
        scale = None if (double_scale and bias is None) else 1.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, scale=scale)
        return self.out_proj(out.transpose(1, 2).reshape(b, q.shape[2], d))

    def forward_first_query(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """The output of token 0 only, ``forward(x, bias, num_queries=1)``, in fewer operations.

        The same function regrouped: the logits ``q·(W_k x_j + b_k)`` are computed as ``(W_kᵀ q)·x_j`` (the
        ``q·b_k`` term is the same for every j, and softmax ignores it), and the values as
        ``W_v (Σ_j a_j x_j) + b_v`` (the weights a_j sum to 1). Keys and values of the L tokens are never
        projected, so the cost is three D×D products for token 0 instead of 3·L·D² (L = frames, D = width):
        the DSFA focus branch attends over a handful of frames at every image token.

        Args:
            x: [B, L, D] (already layer-normed).
            bias: additive logit bias, [B | 1, heads | 1, 1, L] or broadcastable to [B, heads, L], or None. The logits use the
                published pre-scaled q only (no second SDPA scale: the biased path).

        Returns:
            [B, 1, D].
        """
        b, n, d = x.shape
        h, e = self.num_heads, self.head_dim
        w_q, w_k, w_v = self.qkv.weight.chunk(3, dim=0)  # [D_out, D_in] each; head i owns rows i·e … i·e + e
        b_q, _, b_v = self.qkv.bias.chunk(3, dim=0)
        q = (F.linear(x[:, 0], w_q, b_q) * e**-0.5).view(b, h, e).transpose(0, 1)  # [H, B, e]
        q_in = torch.bmm(q, w_k.view(h, e, d)).transpose(0, 1)  # [B, H, D]: each head's query in input space
        logits = torch.bmm(q_in, x.transpose(1, 2))  # [B, H, L]
        if bias is not None:
            logits = logits + (bias.squeeze(-2) if bias.dim() == 4 else bias)
        mixed = torch.bmm(logits.softmax(dim=-1), x)  # [B, H, D]: Σ_j a_j x_j per head
        out = torch.bmm(mixed.transpose(0, 1), w_v.view(h, e, d).transpose(1, 2))  # [H, B, e]
        out = out.transpose(0, 1) + b_v.view(h, e)  # [B, H, e]
        return self.out_proj(out.reshape(b, 1, d))


class DSFAMlp(nn.Module):
    """``fc1`` (D→rD) → GELU → ``fc2`` (rD→D)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


def k_to_tensor(k_stack: torch.Tensor | Sequence[float] | None, batch: int, n: int, ref: torch.Tensor) -> torch.Tensor:
    """K per frame as float [B, F] with the reference (K = 0) prepended; ``None`` means K = 0 everywhere.

    ``k_stack`` may be [B, N], [B, N, 1], [N] or a list of N floats (raw K, in the model's convention).
    """
    if k_stack is None:
        k = ref.new_zeros(batch, n)
    else:
        k = torch.as_tensor(k_stack, dtype=ref.dtype, device=ref.device)
        if k.dim() == 1:
            k = k.unsqueeze(0).expand(batch, -1)
        k = k.reshape(batch, -1)
        if k.shape[1] != n:
            raise ValueError(f"DSFA: {n} stack frames but {k.shape[1]} K values")
    return torch.cat([k.new_zeros(batch, 1), k], dim=1)


class DividedSpaceFocusBlock(nn.Module):
    """The published DSFA block. State-dict keys (34, in order) match ``shared/reference/keys/``:
    ``gamma_{space_attn,space_ffn,focus_attn,focus_ffn}``, ``ln_space_attn``, ``space_attn.{qkv,out_proj}``,
    ``ln_space_ffn``, ``space_ffn.{fc1,fc2}``, the same four for ``focus``, ``k_embed.{0,2}``, ``focus_film[.0]``.
    """

    def __init__(self, cfg: DSFAConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.dim
        g = 0.0 if cfg.identity_init else cfg.layerscale_init
        self.gamma_space_attn = nn.Parameter(torch.full((d,), g))
        self.gamma_space_ffn = nn.Parameter(torch.full((d,), g))
        self.gamma_focus_attn = nn.Parameter(torch.full((d,), g))
        self.gamma_focus_ffn = nn.Parameter(torch.full((d,), g))
        hidden = int(d * cfg.mlp_ratio)
        self.ln_space_attn = nn.LayerNorm(d, eps=1e-5)
        self.space_attn = DSFAAttention(d, cfg.num_heads)
        self.ln_space_ffn = nn.LayerNorm(d, eps=1e-5)
        self.space_ffn = DSFAMlp(d, hidden)
        self.ln_focus_attn = nn.LayerNorm(d, eps=1e-5)
        self.focus_attn = DSFAAttention(d, cfg.num_heads)
        self.ln_focus_ffn = nn.LayerNorm(d, eps=1e-5)
        self.focus_ffn = DSFAMlp(d, hidden)
        self.k_embed = nn.Sequential(nn.Linear(1, d // 4), nn.ReLU(), nn.Linear(d // 4, d))
        film = nn.Linear(d, 2 * d)
        if cfg.identity_init:
            nn.init.zeros_(film.weight)
            nn.init.zeros_(film.bias)
        self.focus_film = nn.Sequential(film) if cfg.film_sequential else film

    def forward(
        self,
        ref_patches: torch.Tensor,
        stack_patches: torch.Tensor,
        k_stack: torch.Tensor | Sequence[float] | None = None,
    ) -> torch.Tensor:
        """Refine the reference tokens with the stack.

        Args:
            ref_patches: [B, P, D] patch tokens of the sharp reference (no CLS).
            stack_patches: [B, N, P, D] patch tokens of the N stack frames (N may be 0).
            k_stack: K of the stack frames, [B, N] or [B, N, 1] (raw, in the model's convention), or None (K = 0).

        Returns:
            [B, P, D] refined reference tokens.
        """
        b, p, d = ref_patches.shape
        n = stack_patches.shape[1]
        if stack_patches.shape[0] != b or stack_patches.shape[2:] != (p, d):
            raise ValueError(f"DSFA: stack tokens {tuple(stack_patches.shape)} do not match reference {(b, p, d)}")
        nf = n + 1
        x = torch.cat([ref_patches.unsqueeze(1), stack_patches], dim=1)  # [B, F, P, D]
        k = k_to_tensor(k_stack, b, n, ref_patches)  # [B, F]
        k_tokens = self.k_embed(k.unsqueeze(-1))  # [B, F, D]
        scale, shift = self.focus_film(k_tokens).chunk(2, dim=-1)

        # spatial attention inside each frame, with the frame's K token prepended
        seq = torch.cat([k_tokens.unsqueeze(2), x], dim=2).reshape(b * nf, p + 1, d)
        seq = seq + self.gamma_space_attn * self.space_attn(self.ln_space_attn(seq), double_scale=self.cfg.spatial_sdpa)
        seq = seq + self.gamma_space_ffn * self.space_ffn(self.ln_space_ffn(seq))
        x = seq[:, 1:].reshape(b, nf, p, d)

        # FiLM from the K embedding
        x = x * (1 + torch.tanh(scale).unsqueeze(2)) + shift.unsqueeze(2)

        # focus attention across frames at each token; only the reference row is needed
        xf = x.transpose(1, 2).reshape(b * p, nf, d)
        bias = -self.cfg.alibi_scale * (k[:, :1] - k).abs()  # [B, F]: row of frame 0
        bias = bias[:, None, None, None, :].expand(b, p, 1, 1, nf).reshape(b * p, 1, 1, nf)
        ref = xf[:, :1] + self.gamma_focus_attn * self.focus_attn.forward_first_query(self.ln_focus_attn(xf), bias)
        ref = ref + self.gamma_focus_ffn * self.focus_ffn(self.ln_focus_ffn(ref))
        return ref.reshape(b, p, d)


def fuse_frame_features(
    features: Sequence[torch.Tensor],
    blocks: Mapping[int, nn.Module],
    num_frames: int,
    k_stack: torch.Tensor | None,
    num_prefix_tokens: int = 1,
    single_frame: bool = False,
) -> list[torch.Tensor]:
    """Post-hoc DSFA on features tapped from a ViT that ran on the reference and every stack frame.

    Args:
        features: tapped token maps, each [B·F, T, D] with the F frames of a sample contiguous (frame 0 the
            reference) and ``num_prefix_tokens`` CLS/register tokens first.
        blocks: tap index → DSFA block; taps without a block pass the reference through unchanged.
        num_frames: F = N + 1.
        k_stack: [B, N] (or [B, N, 1]) raw K of the non-reference frames, or None.
        single_frame: bypass every block (the ablation): reference tokens only.

    Returns:
        One [B, T, D] tensor per tap: the reference's prefix tokens unchanged, then its (refined) patches.
    """
    out = []
    for i, feat in enumerate(features):
        bf, t, d = feat.shape
        feat = feat.reshape(bf // num_frames, num_frames, t, d)
        ref = feat[:, 0]
        block = blocks.get(i)
        if block is None or single_frame:
            out.append(ref)
            continue
        pre, patches = ref[:, :num_prefix_tokens], ref[:, num_prefix_tokens:]
        refined = block(patches, feat[:, 1:, num_prefix_tokens:], k_stack)
        out.append(torch.cat([pre, refined], dim=1))
    return out
