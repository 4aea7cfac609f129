"""UniDepthV2 pixel decoder (``pixel_decoder.*``): camera head, ray-conditioned depth head, outputs.

Data flow (h×w = patch grid, H×W = network input, C = ``hidden_dim``):

- ``input_adapter``: per stage, Linear(D→C) on the patch tokens; ``camera_token_adapter``: the same on the
  stage's CLS token → 4 camera tokens.
- ``camera_layer``: MLP → two self-attention blocks (learned per-token query offsets ``latents_pos``) →
  ``out_pinhole`` → (fx, fy, cx, cy) = (exp·0.7·diag, exp·0.7·diag, sigmoid·W, sigmoid·H) px.
- rays: from the predicted camera, or from a given camera (which replaces the prediction, as the reference
  does for its default camera); unit vectors through pixel centres.
- ``depth_layer``: rays resized to h×w (bilinear, antialias) → (polar, azimuth) → 2^k-frequency sine features;
  each stage's tokens cross-attend to them (``prompt_camera``); a ConvTranspose/residual-conv pyramid
  upsamples ×8; ``to_depth_*`` / ``to_confidence_*`` give log-depth and log-confidence at H×W.
- radius = exp(clip(log-depth, −8, 8) + 2) (metres along the ray), depth = ray_z·radius,
  confidence = exp(clip(log-conf, −8, 8)).

``level_embeds`` and the sine position grid of the reference decoder do not reach any output; the former is
kept (it is in the checkpoint), the latter has no weights and is not computed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .unidepth_encoder import LayerScale
from .unidepth_geometry import rays_from_intrinsics

__all__ = ["DecoderConfig", "UniDepthDecoder", "ray_embedding"]


@dataclass
class DecoderConfig:
    """Decoder hyper-parameters (published: 512, 8 heads, ×4, (2, 2, 2), 64, 3, layer-scale 1).

    Attributes:
        input_dim: encoder token width D.
        num_stages: number of tapped encoder stages (4).
        hidden_dim: decoder width C.
        num_heads: attention heads in the camera and prompt blocks.
        expansion: MLP hidden width / C.
        depths: residual conv units per upsampling step.
        out_dim: minimum channel count of the last upsampling step.
        kernel_size: residual conv kernel, px.
        layer_scale: initial layer-scale of the camera blocks and residual units.
    """

    input_dim: int = 1024
    num_stages: int = 4
    hidden_dim: int = 512
    num_heads: int = 8
    expansion: int = 4
    depths: tuple[int, ...] = (2, 2, 2)
    out_dim: int = 64
    kernel_size: int = 3
    layer_scale: float = 1.0


class MLP(nn.Module):
    """``norm`` → ``proj1`` → GELU → ``proj2``."""

    def __init__(self, dim: int, expansion: int = 4, output_dim: int | None = None):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.proj1 = nn.Linear(dim, int(dim * expansion))
        self.proj2 = nn.Linear(int(dim * expansion), output_dim or dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj2(F.gelu(self.proj1(self.norm(x))))


class AttentionBlock(nn.Module):
    """Attention (self or cross) + MLP, no biases on q/kv/out, optional layer-scale.

    ``q = q(norm_attnx(x)) + pos_embed`` (per head), ``k, v = kv(norm_attnctx(context))``; SDPA with the default
    1/sqrt(head_dim) scale.
    """

    def __init__(self, dim: int, num_heads: int, expansion: int, layer_scale: float):
        super().__init__()
        self.num_heads = num_heads
        self.mlp = MLP(dim, expansion)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.q = nn.Linear(dim, dim, bias=False)
        self.norm_attnx = nn.LayerNorm(dim)
        self.norm_attnctx = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, dim, bias=False)
        self.ls1 = LayerScale(dim, layer_scale) if layer_scale > 0 else nn.Identity()
        self.ls2 = LayerScale(dim, layer_scale) if layer_scale > 0 else nn.Identity()

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        b, n, d = t.shape
        return t.view(b, n, self.num_heads, d // self.num_heads).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, pos_embed: torch.Tensor | None = None
    ) -> torch.Tensor:
        context = x if context is None else context
        b, n, d = x.shape
        k, v = self.kv(self.norm_attnctx(context)).chunk(2, dim=-1)
        q = self.q(self.norm_attnx(x))
        if pos_embed is not None:
            q = q + pos_embed
        attn = F.scaled_dot_product_attention(self._heads(q), self._heads(k), self._heads(v))
        x = x + self.ls1(self.out(attn.transpose(1, 2).reshape(b, n, d)))
        return x + self.ls2(self.mlp(x))


class AttentionLayer(nn.Module):
    """A list of cross-attention blocks without layer-scale (``layers.N``)."""

    def __init__(self, num_blocks: int, dim: int, num_heads: int, expansion: int):
        super().__init__()
        self.layers = nn.ModuleList(AttentionBlock(dim, num_heads, expansion, -1.0) for _ in range(num_blocks))

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x, context=context)
        return x


class ListAdapter(nn.Module):
    """One Linear per stage (``input_adapters.i``)."""

    def __init__(self, input_dims: Sequence[int], hidden_dim: int):
        super().__init__()
        self.input_adapters = nn.ModuleList(nn.Linear(d, hidden_dim) for d in input_dims)

    def forward(self, xs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [layer(x) for layer, x in zip(self.input_adapters, xs)]


class ResidualConvUnit(nn.Module):
    """``x + gamma·conv2(lrelu(conv1(lrelu(x))))`` (3×3, zero padding)."""

    def __init__(self, dim: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale)))
        self.conv1 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)
        self.conv2 = nn.Conv2d(dim, dim, kernel_size, padding=(kernel_size - 1) // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x))))
        return self.gamma * out + x


class ResUpsampleBil(nn.Module):
    """Residual units, then ``up``: 1×1 conv to ``output_dim`` and ×2 bilinear upsampling."""

    def __init__(self, dim: int, output_dim: int, num_layers: int, kernel_size: int, layer_scale: float):
        super().__init__()
        self.convs = nn.ModuleList(ResidualConvUnit(dim, kernel_size, layer_scale) for _ in range(num_layers))
        self.up = nn.Sequential(
            nn.Conv2d(dim, output_dim, kernel_size=1),
            nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = conv(x)
        return self.up(x)


class CameraHead(nn.Module):
    """Pinhole intrinsics from the four stage CLS tokens."""

    def __init__(self, dim: int, num_heads: int, expansion: int, layer_scale: float, num_tokens: int = 4):
        super().__init__()
        self.aggregate1 = AttentionBlock(dim, num_heads, expansion, layer_scale)
        self.aggregate2 = AttentionBlock(dim, num_heads, expansion, layer_scale)
        self.latents_pos = nn.Parameter(torch.randn(1, num_tokens, dim))
        self.project = MLP(dim, 1, dim)
        self.out_pinhole = MLP(dim, 1, 1)

    def forward(self, tokens: torch.Tensor, height: int, width: int) -> torch.Tensor:
        """tokens [B, 4, C] → intrinsics [B, 3, 3] in network-input pixels (H×W = height×width)."""
        pos = self.latents_pos.expand(tokens.shape[0], -1, -1)
        x = self.project(tokens)
        x = self.aggregate2(self.aggregate1(x, pos_embed=pos), pos_embed=pos)
        p = self.out_pinhole(x).squeeze(-1)  # [B, 4], fp16 under autocast
        diag = math.hypot(height, width)
        # the scale factors take p's dtype and the sigmoids run in it, as the reference does under autocast
        scale = torch.tensor([0.7 * diag, 0.7 * diag, width, height], device=p.device, dtype=p.dtype).float()
        unit = torch.stack(
            [
                torch.exp(p[:, 0].float()),
                torch.exp(p[:, 1].float()),
                torch.sigmoid(p[:, 2]).float(),
                torch.sigmoid(p[:, 3]).float(),
            ],
            dim=1,
        )
        fx, fy, cx, cy = (unit * scale).unbind(1)
        K = torch.zeros(p.shape[0], 3, 3, device=p.device, dtype=torch.float32)
        K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2], K[:, 2, 2] = fx, fy, cx, cy, 1.0
        return K


def ray_embedding(rays: torch.Tensor, grid_hw: tuple[int, int], dim: int) -> torch.Tensor:
    """Sine features of the ray directions on the token grid.

    Args:
        rays: [B, 3, H, W] unit rays at the network input size.
        grid_hw: (h, w) token grid.
        dim: feature width C (even).

    Returns:
        [B, h·w, C]: rays resized to h×w (bilinear, antialias), renormalised, turned into (polar, azimuth)
        angles in radians, each expanded with C/2 frequencies ``2^linspace(0, log2(max(h, w)//2))·π`` (sine).
    """
    h, w = grid_hw
    r = rays.float()
    if r.shape[-2:] != (h, w):
        r = F.interpolate(r, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    r = r / r.norm(dim=1, keepdim=True).clamp(min=1e-4)
    x, y, z = r.unbind(1)
    polar = torch.acos(z)
    x_safe = x.abs().clamp(min=1e-3) * torch.where(x >= 0, 1.0, -1.0)
    azimuth = torch.atan2(y, x_safe)
    angles = torch.stack([polar, azimuth], dim=-1).flatten(1, 2)  # [B, h·w, 2]
    max_freq = max(h, w) // 2
    bands = dim // 2
    scales = 2.0 ** torch.linspace(0.0, math.log2(max_freq), bands, device=r.device, dtype=r.dtype)
    return torch.sin(angles[..., None] * scales * math.pi).flatten(-2)


class DepthHead(nn.Module):
    """Ray-conditioned upsampling pyramid → log-depth and log-confidence at the network input size."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        c = cfg.hidden_dim
        self.hidden_dim = c
        self.ups = nn.ModuleList()
        self.depth_mlp = nn.ModuleList()
        self.process_features = nn.ModuleList()
        self.prompt_camera = nn.ModuleList(
            AttentionLayer(1, c, cfg.num_heads, cfg.expansion) for _ in range(cfg.num_stages)
        )
        self.to_latents = nn.Linear(c, c)
        n_steps = len(cfg.depths)
        for i, depth in enumerate(cfg.depths):
            current = min(c, 2 * c // 2**i)
            nxt = 2 * c // 2 ** (i + 1)
            out = max(nxt, cfg.out_dim)
            k = max(1, 2 * i)
            self.process_features.append(nn.ConvTranspose2d(c, current, kernel_size=k, stride=k))
            self.ups.append(ResUpsampleBil(current, out, depth, cfg.kernel_size, cfg.layer_scale))
            last = i == n_steps - 1
            self.depth_mlp.append(nn.Sequential(nn.LayerNorm(nxt), nn.Linear(nxt, out)) if last else nn.Identity())
        self.confidence_mlp = nn.Sequential(nn.LayerNorm(nxt), nn.Linear(nxt, out))
        self.to_depth_lr = nn.Conv2d(out, out // 2, 3, padding=1, padding_mode="reflect")
        self.to_confidence_lr = nn.Conv2d(out, out // 2, 3, padding=1, padding_mode="reflect")
        self.to_depth_hr = nn.Sequential(
            nn.Conv2d(out // 2, 32, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(), nn.Conv2d(32, 1, 1)
        )
        self.to_confidence_hr = nn.Sequential(
            nn.Conv2d(out // 2, 32, 3, padding=1, padding_mode="reflect"), nn.LeakyReLU(), nn.Conv2d(32, 1, 1)
        )

    @staticmethod
    def _project(x: torch.Tensor, mlp: nn.Module, lr: nn.Module, hr: nn.Module, size: tuple[int, int]) -> torch.Tensor:
        x = mlp(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = F.interpolate(lr(x), size=size, mode="bilinear", align_corners=True)
        return hr(x)

    def forward(self, features: Sequence[torch.Tensor], rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """features: per stage [B, h, w, C]; rays [B, 3, H, W] → (log-depth, log-confidence), each [B, 1, H, W]."""
        b, h, w, c = features[0].shape
        emb = ray_embedding(rays, (h, w), self.hidden_dim)  # float32, as the reference (autocast casts in kv)
        cond = [prompt(f.reshape(b, h * w, c), emb) for prompt, f in zip(self.prompt_camera, features)]
        grids = [t.transpose(1, 2).reshape(b, c, h, w) for t in cond]
        latents = self.to_latents(cond[0]).transpose(1, 2).reshape(b, c, h, w)
        for i, up in enumerate(self.ups):
            latents = up(latents + self.process_features[i](grids[i + 1]))
        size = tuple(rays.shape[-2:])
        logdepth = self._project(latents, self.depth_mlp[-1], self.to_depth_lr, self.to_depth_hr, size)
        logconf = self._project(latents, self.confidence_mlp, self.to_confidence_lr, self.to_confidence_hr, size)
        return logdepth, logconf


class UniDepthDecoder(nn.Module):
    """``pixel_decoder``: adapters, camera head, depth head."""

    def __init__(self, cfg: DecoderConfig):
        super().__init__()
        self.cfg = cfg
        c = cfg.hidden_dim
        # unused by the outputs (kept because the checkpoint stores it); orthonormal rows as published
        self.level_embeds = nn.Parameter(torch.zeros(1, 1, cfg.num_stages, c), requires_grad=False)
        if not self.level_embeds.is_meta:
            nn.init.orthogonal_(self.level_embeds.data.view(cfg.num_stages, c))
        dims = [cfg.input_dim] * cfg.num_stages
        self.input_adapter = ListAdapter(dims, c)
        self.camera_token_adapter = ListAdapter(dims, c)
        self.camera_layer = CameraHead(c, cfg.num_heads, cfg.expansion, cfg.layer_scale, cfg.num_stages)
        self.depth_layer = DepthHead(cfg)

    def forward(
        self,
        features: Sequence[torch.Tensor],
        cls_tokens: Sequence[torch.Tensor],
        image_hw: tuple[int, int],
        intrinsics: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Decode encoder outputs.

        Args:
            features: per stage [B, h, w, D] patch tokens.
            cls_tokens: per stage [B, 1, D].
            image_hw: (H, W) of the network input, px.
            intrinsics: [B, 3, 3] camera in network-input pixels whose rays replace the predicted ones, or None.

        Returns:
            ``depth`` [B, 1, H, W] m (z), ``radius`` [B, 1, H, W] m (along the ray), ``confidence`` [B, 1, H, W],
            ``intrinsics`` [B, 3, 3] predicted by the camera head, ``rays`` [B, 3, H, W] used for depth.
        """
        H, W = image_hw
        feats = self.input_adapter(features)
        cam_tokens = torch.cat(self.camera_token_adapter(cls_tokens), dim=1)
        K_pred = self.camera_layer(cam_tokens, H, W)
        K_used = K_pred if intrinsics is None else intrinsics.to(K_pred.device, torch.float32)
        rays = rays_from_intrinsics(K_used, H, W)
        logdepth, logconf = self.depth_layer(feats, rays)
        # clip and +2 in the head's dtype (fp16 under autocast, like the reference), exp in float32
        radius = torch.exp((logdepth.clamp(-8.0, 8.0) + 2.0).float())
        return {
            "depth": rays[:, 2:3] * radius,
            "radius": radius,
            "confidence": torch.exp(logconf.clamp(-8.0, 8.0).float()),
            "intrinsics": K_pred,
            "rays": rays,
        }
