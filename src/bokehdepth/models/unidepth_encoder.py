"""UniDepthV2-DSFA pixel encoder: a DINOv2 ViT (own implementation, published key names) + DSFA blocks.

The ViT follows the layout of the DINOv2 backbone inside UniDepth (``pixel_encoder.backbone.*``): CLS token,
a learned position table for a 37×37 grid (interpolated bicubically to other grids), blocks with layer-scale,
and a final LayerNorm applied to every tapped block output (``use_norm``). ``register_tokens`` and
``mask_token`` exist in the published checkpoint but are unused at inference (no registers, no masking).

DSFA (``pixel_encoder.fusion_blocks.{i}``) is applied *post hoc* to the tap at the last block of stage ``i``
(``output_idx`` [6, 12, 18, 24]): the backbone runs on the reference and every stack frame, then each block
refines the reference patch tokens from the frames' tokens at that tap. Refined tokens do not feed later ViT
blocks; the reference CLS token passes through unchanged (it feeds the camera head).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .dsfa import DividedSpaceFocusBlock, DSFAConfig, fuse_frame_features

__all__ = ["DinoV2Backbone", "UniDepthEncoder", "ViTConfig"]


@dataclass
class ViTConfig:
    """DINOv2 ViT hyper-parameters.

    Attributes:
        embed_dim: token width D (1024 for ViT-L).
        depth: number of blocks (24 for ViT-L).
        num_heads: attention heads (16 for ViT-L).
        patch_size: patch side, px (14).
        pos_grid: side of the learned position table, in patches (37 → 1 + 37² = 1370 rows).
        mlp_ratio: MLP hidden width / D.
        output_idx: 1-based block indices whose (normed) outputs are tapped, one per stage.
    """

    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    patch_size: int = 14
    pos_grid: int = 37
    mlp_ratio: float = 4.0
    output_idx: tuple[int, ...] = (6, 12, 18, 24)


class PatchEmbed(nn.Module):
    """Non-overlapping patches → tokens: ``proj`` Conv2d(3→D, k = s = patch)."""

    def __init__(self, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # [B, h·w, D]


class LayerScale(nn.Module):
    """Per-channel gate ``gamma``."""

    def __init__(self, dim: int, init: float = 1.0):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class ViTAttention(nn.Module):
    """Multi-head self-attention: fused ``qkv`` (bias) → SDPA → ``proj``."""

    def __init__(self, dim: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class ViTMlp(nn.Module):
    """``fc1`` → GELU → ``fc2``."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class ViTBlock(nn.Module):
    """Pre-LN transformer block with layer-scale (LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = ViTAttention(dim, num_heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = ViTMlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Backbone(nn.Module):
    """DINOv2 ViT with the key names of UniDepth's backbone (``cls_token``, ``pos_embed``, ``register_tokens``,
    ``mask_token``, ``patch_embed.proj``, ``blocks.N.*``, ``norm``)."""

    def __init__(self, cfg: ViTConfig):
        super().__init__()
        d = cfg.embed_dim
        self.cfg = cfg
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + cfg.pos_grid**2, d))
        self.register_tokens = nn.Parameter(torch.zeros(1, 1, d))  # unused (no registers)
        self.mask_token = nn.Parameter(torch.zeros(1, d))  # unused at inference
        self.patch_embed = PatchEmbed(d, cfg.patch_size)
        self.blocks = nn.ModuleList(ViTBlock(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(d)  # eps 1e-5, as published
        if not self.pos_embed.is_meta:
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
            nn.init.normal_(self.cls_token, std=1e-6)

    def position_table(self, h: int, w: int) -> torch.Tensor:
        """Position embedding [1, 1 + h·w, D] for an h×w patch grid (bicubic, no antialias, in float32)."""
        table = self.pos_embed
        m = self.cfg.pos_grid
        if h == m and w == m:
            return table
        cls_pos, grid = table[:, :1].float(), table[:, 1:].float()
        grid = grid.reshape(1, m, m, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=False, antialias=False)
        grid = grid.permute(0, 2, 3, 1).reshape(1, h * w, -1)
        return torch.cat([cls_pos, grid], dim=1).to(table.dtype)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Run the ViT on normalised images [B, 3, H, W] (H, W multiples of the patch size).

        Returns:
            One tensor [B, 1 + h·w, D] per ``output_idx`` entry: the block output after the final LayerNorm,
            CLS token first.
        """
        p = self.cfg.patch_size
        h, w = x.shape[-2] // p, x.shape[-1] // p
        tokens = self.patch_embed(x)
        tokens = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), tokens], dim=1)
        tokens = tokens + self.position_table(h, w)
        taps, wanted = [], set(self.cfg.output_idx)
        for i, block in enumerate(self.blocks[: max(self.cfg.output_idx)], start=1):
            tokens = block(tokens)
            if i in wanted:
                taps.append(self.norm(tokens))
        return taps


class UniDepthEncoder(nn.Module):
    """``pixel_encoder``: the backbone plus one DSFA block per fused stage (``fusion_blocks.{stage}``)."""

    def __init__(self, vit: ViTConfig, fusion_layers: Sequence[int], dsfa: DSFAConfig):
        super().__init__()
        self.backbone = DinoV2Backbone(vit)
        self.fusion_blocks = nn.ModuleDict({str(i): DividedSpaceFocusBlock(dsfa) for i in sorted(set(fusion_layers))})

    def forward(
        self,
        image: torch.Tensor,
        stack: torch.Tensor | None = None,
        k_stack: torch.Tensor | None = None,
        single_frame: bool = False,
    ) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Encode the reference, refined by its stack.

        Args:
            image: [B, 3, H, W] normalised reference image.
            stack: [B, N, 3, H, W] normalised stack frames (reference excluded), or None.
            k_stack: [B, N] raw K of the stack frames in the model's (normalised) convention, or None (K = 0).
            single_frame: bypass DSFA (the ablation); the stack is not encoded at all.

        Returns:
            ``(features, cls_tokens)``: per stage, patch tokens [B, h, w, D] and the CLS token [B, 1, D].
        """
        b = image.shape[0]
        p = self.backbone.cfg.patch_size
        h, w = image.shape[-2] // p, image.shape[-1] // p
        use_stack = stack is not None and stack.shape[1] > 0 and not single_frame and len(self.fusion_blocks) > 0
        if use_stack:
            n = stack.shape[1]
            if stack.shape[0] != b or stack.shape[2:] != image.shape[1:]:
                raise ValueError(f"stack {tuple(stack.shape)} does not match image {tuple(image.shape)}")
            frames = torch.cat([image.unsqueeze(1), stack.to(image.dtype)], dim=1).reshape(
                b * (n + 1), *image.shape[1:]
            )
            taps = self.backbone(frames)
            blocks = {int(k): blk for k, blk in self.fusion_blocks.items()}
            taps = fuse_frame_features(taps, blocks, n + 1, k_stack, num_prefix_tokens=1)
        else:
            taps = self.backbone(image)
        feats = [t[:, 1:].reshape(b, h, w, -1) for t in taps]
        cls = [t[:, :1] for t in taps]
        return feats, cls
