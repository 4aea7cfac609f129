"""UniDepthV2-L + DSFA (BokehDepth Stage-2), own implementation that loads ``UDv2_dsfa_release.pth`` strictly.

- :class:`UniDepthConfig` (``full()`` = the published inference config
  ``config_v2_vitl14_DSFA_inference.json``; ``tiny()`` for tests) and :class:`UniDepthV2DSFA`, an
  ``nn.Module`` whose ``state_dict()`` equals ``shared/reference/keys/udv2_dsfa_vitl14.tsv`` in names,
  shapes and order.
- :func:`published_keys` / :func:`unwrap_checkpoint`: the registry hooks (``bokehdepth weights keys|check``).
- :func:`load_model` / :func:`load_predictor`: strict loading (plain UniDepthV2 weights load too, with
  identity DSFA blocks) and the ``udv2-dsfa`` depth backend with the reference pre/post-processing.

Pieces: ``unidepth_encoder`` (DINOv2 ViT-L/14 + DSFA), ``unidepth_decoder`` (camera + depth heads),
``unidepth_geometry`` (padding, resizing, cameras, rays), ``unidepth_predictor`` (images/stacks → depth).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..errors import CheckpointError, InputError
from .dsfa import DividedSpaceFocusBlock, DSFAConfig
from .unidepth_decoder import DecoderConfig, UniDepthDecoder
from .unidepth_encoder import UniDepthEncoder, ViTConfig

if TYPE_CHECKING:
    from .unidepth_predictor import UniDepthPredictor

__all__ = [
    "PRESETS",
    "UniDepthConfig",
    "UniDepthV2DSFA",
    "load_model",
    "load_predictor",
    "published_keys",
    "unwrap_checkpoint",
    "unwrap_state_dict",
]


@dataclass
class UniDepthConfig:
    """UniDepthV2 + DSFA configuration (defaults = the published inference config).

    Attributes:
        vit: DINOv2 backbone (ViT-L/14, taps after blocks 6, 12, 18, 24).
        decoder: pixel decoder (hidden 512, 8 heads).
        fusion_layers: stages (0-based) whose last tap gets a DSFA block.
        fusion_num_heads: DSFA heads (8).
        fusion_layerscale: DSFA gate init (0.1, published; ignored with ``identity_init``).
        alibi_scale: DSFA focus bias per unit of K (1.0).
        use_sdpa: the published double-scaled spatial attention (True).
        identity_init: DSFA blocks start as exact identities (for plain UniDepthV2 weights).
        ratio_bounds: allowed W/H before zero padding.
        pixel_bounds: allowed H·W of the network input, px².
        focal_ratio: default camera fx = fy = focal_ratio·W (px).
    """

    vit: ViTConfig = field(default_factory=ViTConfig)
    decoder: DecoderConfig = field(default_factory=DecoderConfig)
    fusion_layers: tuple[int, ...] = (0, 1, 2, 3)
    fusion_num_heads: int = 8
    fusion_layerscale: float = 0.1
    alibi_scale: float = 1.0
    use_sdpa: bool = True
    identity_init: bool = False
    ratio_bounds: tuple[float, float] = (0.5, 2.5)
    pixel_bounds: tuple[float, float] = (2e5, 6e5)
    focal_ratio: float = 0.7

    @classmethod
    def full(cls) -> UniDepthConfig:
        """The published UniDepthV2-L + DSFA inference configuration."""
        return cls()

    @classmethod
    def tiny(cls) -> UniDepthConfig:
        """Same classes at toy width for CPU tests: ViT width 32 (4 blocks, 2 heads), decoder width 32,
        network inputs of 2 000–6 000 px² (e.g. 56×84)."""
        return cls(
            vit=ViTConfig(embed_dim=32, depth=4, num_heads=2, pos_grid=4, output_idx=(1, 2, 3, 4)),
            decoder=DecoderConfig(input_dim=32, hidden_dim=32, num_heads=2, depths=(1, 1, 1), out_dim=8),
            fusion_num_heads=2,
            pixel_bounds=(2000.0, 6000.0),
        )

    def dsfa(self) -> DSFAConfig:
        """The DSFA block configuration (UDv2 layout: ``focus_film`` is a plain Linear)."""
        return DSFAConfig(
            dim=self.vit.embed_dim,
            num_heads=self.fusion_num_heads,
            layerscale_init=self.fusion_layerscale,
            alibi_scale=self.alibi_scale,
            identity_init=self.identity_init,
            film_sequential=False,
            spatial_sdpa=self.use_sdpa,
        )


PRESETS: dict[str, UniDepthConfig] = {"udv2-dsfa": UniDepthConfig.full()}


class UniDepthV2DSFA(nn.Module):
    """UniDepthV2 with DSFA blocks: ``pixel_encoder`` (ViT + ``fusion_blocks``) and ``pixel_decoder``."""

    def __init__(self, cfg: UniDepthConfig | None = None):
        super().__init__()
        self.cfg = cfg or UniDepthConfig()
        if len(self.cfg.vit.output_idx) != self.cfg.decoder.num_stages:
            raise ValueError("UniDepthConfig: one decoder stage per tapped ViT block is required")
        self.pixel_encoder = UniDepthEncoder(self.cfg.vit, self.cfg.fusion_layers, self.cfg.dsfa())
        self.pixel_decoder = UniDepthDecoder(self.cfg.decoder)

    def forward(
        self,
        image: torch.Tensor,
        stack: torch.Tensor | None = None,
        k_stack: torch.Tensor | None = None,
        intrinsics: torch.Tensor | None = None,
        single_frame: bool = False,
    ) -> dict[str, torch.Tensor]:
        """Metric depth of the reference image, refined by its bokeh stack.

        Args:
            image: [B, 3, H, W] ImageNet-normalised reference, H and W multiples of the patch size (14).
            stack: [B, N, 3, H, W] normalised stack frames *without* the reference, or None.
            k_stack: [B, N] raw K of those frames in the normalised convention (px at 512 px per unit of
                normalised disparity); the reference gets K = 0 inside the model. None means K = 0.
            intrinsics: [B, 3, 3] camera in network-input pixels; its rays replace the predicted rays.
            single_frame: bypass the DSFA blocks (the ablation).

        Returns:
            dict with ``depth`` [B, 1, H, W] (m), ``radius``, ``confidence``, ``intrinsics`` (predicted,
            [B, 3, 3] px) and ``rays`` ([B, 3, H, W] unit vectors used for depth).
        """
        feats, cls = self.pixel_encoder(image, stack, k_stack, single_frame=single_frame)
        return self.pixel_decoder(feats, cls, tuple(image.shape[-2:]), intrinsics)


def _build(cfg: UniDepthConfig, device: str | torch.device = "cpu") -> UniDepthV2DSFA:
    with torch.device(device):
        return UniDepthV2DSFA(cfg)


def _preset(name: str) -> UniDepthConfig:
    if name not in PRESETS:
        raise InputError(f"backend '{name}' is not a UniDepth preset; use one of: {', '.join(PRESETS)}")
    return PRESETS[name]


def published_keys(name: str = "udv2-dsfa") -> dict[str, tuple[int, ...]]:
    """Key → shape of the full model, in ``state_dict()`` order, built on the meta device."""
    model = _build(_preset(name), "meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def _strip_module(sd: Mapping) -> dict[str, torch.Tensor]:
    return {str(k).replace("module.", ""): v for k, v in sd.items() if isinstance(v, torch.Tensor)}


def _add_backbone_prefix(sd: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Upstream UniDepthV2 names (``pixel_encoder.<vit key>``) → ``pixel_encoder.backbone.<vit key>``."""
    out = {}
    for k, v in sd.items():
        if k.startswith("pixel_encoder.") and not k.startswith(
            ("pixel_encoder.backbone.", "pixel_encoder.fusion_blocks.")
        ):
            k = "pixel_encoder.backbone." + k[len("pixel_encoder.") :]
        out[k] = v
    return out


def unwrap_state_dict(raw: object, key_order: Sequence[str]) -> dict[str, torch.Tensor]:
    """The reference loader's view of a checkpoint object, as one flat state dict.

    ``raw.get("model", raw.get("state_dict", raw))``; every ``"module."`` substring removed; non-tensors
    dropped; upstream ``pixel_encoder.<vit>`` keys moved under ``.backbone.``; then the EMA overlay: if
    ``raw["ema"]`` (or ``raw["ema_state_dict"]``) holds ``shadow_params`` (or ``average_params``), a dict
    replaces weights by name (names outside ``key_order`` ignored), a list is matched positionally with
    ``key_order`` if the lengths are equal (else ignored, as the reference does).
    """
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"checkpoint holds a {type(raw).__name__}, expected a state dict or a dict with 'model'")
    sd = raw.get("model", raw.get("state_dict", raw))
    if not isinstance(sd, Mapping):
        raise CheckpointError(f"checkpoint 'model' entry is a {type(sd).__name__}, expected a state dict")
    state = _add_backbone_prefix(_strip_module(sd))
    ema = raw.get("ema")
    if not isinstance(ema, Mapping) or not ema:
        ema = raw.get("ema_state_dict")
    if isinstance(ema, Mapping):
        shadow = ema.get("shadow_params")
        if not isinstance(shadow, (Mapping, list, tuple)) or not shadow:
            shadow = ema.get("average_params")
        wanted = set(key_order)
        if isinstance(shadow, Mapping):
            state.update({k: v for k, v in _add_backbone_prefix(_strip_module(shadow)).items() if k in wanted})
        elif isinstance(shadow, (list, tuple)) and len(shadow) == len(key_order):
            state.update({k: v for k, v in zip(key_order, shadow) if isinstance(v, torch.Tensor)})
    return state


def unwrap_checkpoint(name: str, raw: object) -> dict[str, torch.Tensor]:
    """Registry hook: the flat published-layout state dict inside a loaded ``UDv2_dsfa_release.pth``."""
    return unwrap_state_dict(raw, list(published_keys(name)))


def _fusion_key(key: str) -> bool:
    return key.startswith("pixel_encoder.fusion_blocks.")


def load_model(
    weights: str | os.PathLike | None,
    cfg: UniDepthConfig | None = None,
    device: str | torch.device = "cpu",
) -> tuple[UniDepthV2DSFA, dict]:
    """Build the model and load a checkpoint strictly.

    Args:
        weights: the ``.pth``/``.safetensors`` file or a folder holding ``UDv2_dsfa_release.pth`` (else
            ``$BOKEHDEPTH_WEIGHTS``); missing → :class:`MissingWeightsError`.
        cfg: model configuration (default: the published one).

    Returns:
        ``(model in eval mode, info)``; info has ``weights`` (path), ``dsfa`` (``"trained"`` or ``"identity"``
        for plain UniDepthV2 weights, whose DSFA blocks are then exact identities).

    Raises:
        CheckpointError: naming the missing / unexpected / mis-shaped keys.
    """
    from .checkpoints import compare_keys, load_state_dict_file, load_strict, resolve_weights
    from .registry import get_backend

    cfg = cfg or UniDepthConfig.full()
    path = resolve_weights(weights, get_backend("udv2-dsfa").published)
    raw = load_state_dict_file(path)
    model = _build(cfg, "meta")  # no random init: every tensor comes from the checkpoint
    try:
        state = unwrap_state_dict(raw, list(model.state_dict()))
    except CheckpointError as exc:
        raise CheckpointError(f"{path}: {exc}; pass UDv2_dsfa_release.pth or a UniDepthV2 checkpoint") from exc
    del raw
    report = compare_keys(state, {k: tuple(v.shape) for k, v in model.state_dict().items()})
    dsfa = "trained"
    if report.missing and all(_fusion_key(k) for k in report.missing) and not any(_fusion_key(k) for k in state):
        # plain UniDepthV2 weights: every DSFA key absent → identity blocks (zero gates and FiLM)
        cfg = replace(cfg, identity_init=True)
        block = DividedSpaceFocusBlock(cfg.dsfa()).state_dict()
        for i in sorted(set(cfg.fusion_layers)):
            state.update({f"pixel_encoder.fusion_blocks.{i}.{k}": v for k, v in block.items()})
        model = _build(cfg, "meta")
        dsfa = "identity"
    model = model.to_empty(device=device)
    load_strict(model, state, path)
    return model.eval(), {"weights": str(path), "dsfa": dsfa}


def load_predictor(
    backend: str = "udv2-dsfa",
    weights: str | os.PathLike | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    cfg: UniDepthConfig | None = None,
) -> UniDepthPredictor:
    """The ``udv2-dsfa`` depth backend: strict load + the reference pre/post-processing.

    Args:
        backend: preset name (``"udv2-dsfa"``), as ``pipelines.depth.load_depth_predictor`` passes it.
        weights: checkpoint file or folder (see :func:`load_model`).
        device: torch device.
        dtype: autocast dtype; None = float16 autocast on CUDA (as the reference), float32 on CPU.
        cfg: model configuration (default: the preset's).
    """
    from .unidepth_predictor import UniDepthPredictor

    model, info = load_model(weights, cfg or _preset(backend), device)
    return UniDepthPredictor(model, device=device, dtype=dtype, info=info)
