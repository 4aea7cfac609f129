"""Depth Anything V2 (ViT-S/B/L, metric or relative head) + DSFA, built on transformers' Depth Anything classes.

The published DAv2-DSFA (``DepthAnythingV2/depth_anything_v2/dpt_dsfa.py``, reference/bokehdepth.md §4):
the DINOv2 backbone runs on the reference and on every stack frame; the features tapped for the DPT head
(blocks 2, 5, 8, 11 for S/B and 4, 11, 17, 23 for L, 0-based, after the final LayerNorm) of fusion layers
(2, 3) are refined post-hoc by one :class:`~bokehdepth.models.dsfa.DividedSpaceFocusBlock` each (refined tokens
do not feed later ViT blocks); only the reference's tokens (CLS passed through) reach the stock DPT head.
Metric head: ``sigmoid · max_depth`` (80 m).

Key layouts (mapped both ways by :func:`to_published_state_dict` / :func:`from_published_state_dict`):
published / original DAv2 ``pretrained.*`` (fused ``attn.qkv``), ``encoder_fusion.layers.{2,3}.block.*``,
``depth_head.*``; transformers ``backbone.*`` (``q_proj/k_proj/v_proj/o_proj``; older hub files
``attention.attention.query`` …), ``neck.*``, ``head.*``. Only the ViT-L DSFA checkpoint is released
(``DAV2_dsfa_release.pth``, fogradio/BokehDepth); S and B load checkpoints you train or upstream DAv2 weights.
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..errors import CheckpointError, InputError
from .dsfa import DividedSpaceFocusBlock, DSFAConfig, fuse_frame_features

__all__ = [
    "DAV2_VARIANTS",
    "DepthAnythingDSFA",
    "build_model",
    "from_published_state_dict",
    "load_base_weights",
    "load_predictor",
    "published_keys",
    "to_published_state_dict",
    "unwrap_checkpoint",
]

DAV2_VARIANTS = {
    # name: (hidden, layers, heads, out_indices (hidden_states index, 1-based blocks), neck, fusion)
    "s": (384, 12, 6, [3, 6, 9, 12], [48, 96, 192, 384], 64),
    "b": (768, 12, 12, [3, 6, 9, 12], [96, 192, 384, 768], 128),
    "l": (1024, 24, 16, [5, 12, 18, 24], [256, 512, 1024, 1024], 256),
}
FUSION_LAYERS = (2, 3)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _variant(name: str) -> str:
    v = name.rsplit("-", 1)[-1] if name.startswith("dav2") else name
    if v not in DAV2_VARIANTS:
        raise InputError(f"backend '{name}' is not a Depth Anything V2 variant; use dav2-dsfa-s, -b or -l")
    return v


def make_config(variant: str, kind: Literal["metric", "relative"] = "metric", max_depth: float = 80.0, **overrides):
    """transformers ``DepthAnythingConfig`` of the real DAv2 S/B/L (``overrides`` go to the backbone config,
    e.g. ``num_hidden_layers`` for tiny test models)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    hidden, layers, heads, out_idx, neck, fusion = DAV2_VARIANTS[_variant(variant)]
    init_range = overrides.pop("initializer_range", 0.02)
    neck = overrides.pop("neck_hidden_sizes", neck)
    fusion = overrides.pop("fusion_hidden_size", fusion)
    bb = dict(
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        mlp_ratio=4,
        patch_size=14,
        image_size=518,
        out_indices=out_idx,
        apply_layernorm=True,
        reshape_hidden_states=False,
        layerscale_value=1.0,
        initializer_range=init_range,
    )
    bb.update(overrides)
    return DepthAnythingConfig(
        backbone_config=Dinov2Config(**bb),
        patch_size=14,
        reassemble_hidden_size=bb["hidden_size"],
        reassemble_factors=[4, 2, 1, 0.5],
        neck_hidden_sizes=neck,
        fusion_hidden_size=fusion,
        head_hidden_size=32,
        depth_estimation_type=kind,
        max_depth=int(max_depth) if float(max_depth).is_integer() else max_depth,  # the config field is typed int
        initializer_range=init_range,
    )


class _FusionLayer(nn.Module):
    """Holds one DSFA block as ``.block`` (published name ``encoder_fusion.layers.<i>.block``)."""

    def __init__(self, block: DividedSpaceFocusBlock):
        super().__init__()
        self.block = block


class _EncoderFusion(nn.Module):
    def __init__(self, dim: int, layers, identity_init: bool, num_heads: int = 8):
        super().__init__()
        cfg = DSFAConfig(dim, num_heads=num_heads, identity_init=identity_init, film_sequential=True)
        self.layers = nn.ModuleDict({str(i): _FusionLayer(DividedSpaceFocusBlock(cfg)) for i in layers})


class DepthAnythingDSFA(nn.Module):
    """DAv2 + DSFA: ``model`` is transformers' ``DepthAnythingForDepthEstimation``; ``encoder_fusion`` holds
    the DSFA blocks of the published fusion layers (taps 2 and 3)."""

    def __init__(self, config, fusion_layers=FUSION_LAYERS, identity_init: bool = False, dsfa_heads: int = 8):
        super().__init__()
        from transformers import DepthAnythingForDepthEstimation

        self.model = DepthAnythingForDepthEstimation(config)
        self.encoder_fusion = _EncoderFusion(
            config.backbone_config.hidden_size, fusion_layers, identity_init, dsfa_heads
        )

    def set_dsfa_identity(self) -> None:
        """Zero every DSFA gate and FiLM layer: the blocks become exact identities (for plain-DAv2 weights)."""
        with torch.no_grad():
            for layer in self.encoder_fusion.layers.values():
                blk = layer.block
                for g in (blk.gamma_space_attn, blk.gamma_space_ffn, blk.gamma_focus_attn, blk.gamma_focus_ffn):
                    g.zero_()
                blk.focus_film[0].weight.zero_()
                blk.focus_film[0].bias.zero_()

    def forward(
        self,
        ref: torch.Tensor,
        stack: torch.Tensor | None = None,
        k_stack: torch.Tensor | None = None,
        single_frame: bool = False,
    ) -> torch.Tensor:
        """Depth (metric head: metres; relative head: relative disparity) [B, H, W].

        Args:
            ref: [B, 3, H, W] ImageNet-normalised reference, H and W multiples of 14.
            stack: [B, N, 3, H, W] normalised stack frames (without the reference), or None.
            k_stack: [B, N] or [B, N, 1] raw K in the model's (normalised) convention, or None (K = 0).
            single_frame: bypass DSFA and run the reference alone (the ablation).
        """
        b, _, h, w = ref.shape
        if single_frame or stack is None or stack.shape[1] == 0:
            pixels, nf = ref, 1
        else:
            pixels, nf = torch.cat([ref.unsqueeze(1), stack], 1).flatten(0, 1), stack.shape[1] + 1
        feats = self.model.backbone.forward_with_filtered_kwargs(pixels).feature_maps
        blocks = {int(i): layer.block for i, layer in self.encoder_fusion.layers.items()}
        feats = fuse_frame_features(list(feats), blocks, nf, k_stack, num_prefix_tokens=1, single_frame=nf == 1)
        ph, pw = h // 14, w // 14
        return self.model.head(self.model.neck(feats, ph, pw), ph, pw)


def build_model(
    name: str,
    kind: Literal["metric", "relative"] = "metric",
    max_depth: float = 80.0,
    identity_init: bool = False,
    **overrides,
) -> DepthAnythingDSFA:
    """DAv2-DSFA for ``dav2-dsfa-s|b|l`` (random weights; DSFA with the published init unless
    ``identity_init``). ``overrides`` change the backbone config (tiny test models)."""
    dsfa_heads = overrides.pop("dsfa_heads", 8)
    return DepthAnythingDSFA(
        make_config(name, kind, max_depth, **overrides), identity_init=identity_init, dsfa_heads=dsfa_heads
    )


# ------------------------------------------------------------------------------------------------------------
# key mapping
# ------------------------------------------------------------------------------------------------------------
def _key_pairs(model: DepthAnythingDSFA) -> list[tuple[str, list[str]]]:
    """(published key, [our keys]) in published order; several of ours are concatenated on dim 0 (qkv)."""
    cfg = model.model.config
    n_layers = cfg.backbone_config.num_hidden_layers
    bb, pairs = "model.backbone.", []
    emb = bb + "embeddings."
    pairs += [
        ("pretrained.cls_token", [emb + "cls_token"]),
        ("pretrained.pos_embed", [emb + "position_embeddings"]),
        ("pretrained.mask_token", [emb + "mask_token"]),
        ("pretrained.patch_embed.proj.weight", [emb + "patch_embeddings.projection.weight"]),
        ("pretrained.patch_embed.proj.bias", [emb + "patch_embeddings.projection.bias"]),
    ]
    for i in range(n_layers):
        p, o = f"pretrained.blocks.{i}.", f"{bb}encoder.layer.{i}."
        for wb in ("weight", "bias"):
            pairs.append((p + f"norm1.{wb}", [o + f"norm1.{wb}"]))
        for wb in ("weight", "bias"):
            pairs.append((p + f"attn.qkv.{wb}", [o + f"attention.{q}_proj.{wb}" for q in "qkv"]))
        for wb in ("weight", "bias"):
            pairs.append((p + f"attn.proj.{wb}", [o + f"attention.o_proj.{wb}"]))
        pairs.append((p + "ls1.gamma", [o + "layer_scale1.lambda1"]))
        for part in ("norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"):
            pairs.append((p + part, [o + part]))
        pairs.append((p + "ls2.gamma", [o + "layer_scale2.lambda1"]))
    pairs += [("pretrained.norm.weight", [bb + "layernorm.weight"]), ("pretrained.norm.bias", [bb + "layernorm.bias"])]
    for i, layer in model.encoder_fusion.layers.items():
        for k in layer.block.state_dict():
            pairs.append((f"encoder_fusion.layers.{i}.block.{k}", [f"encoder_fusion.layers.{i}.block.{k}"]))
    neck, head = "model.neck.", "model.head."
    for i in range(4):
        for wb in ("weight", "bias"):
            pairs.append((f"depth_head.projects.{i}.{wb}", [f"{neck}reassemble_stage.layers.{i}.projection.{wb}"]))
    for i in (0, 1, 3):
        for wb in ("weight", "bias"):
            pairs.append((f"depth_head.resize_layers.{i}.{wb}", [f"{neck}reassemble_stage.layers.{i}.resize.{wb}"]))
    for i in range(4):
        pairs.append((f"depth_head.scratch.layer{i + 1}_rn.weight", [f"{neck}convs.{i}.weight"]))
    for j in range(1, 5):
        p, o = f"depth_head.scratch.refinenet{j}.", f"{neck}fusion_stage.layers.{4 - j}."
        for wb in ("weight", "bias"):
            pairs.append((p + f"out_conv.{wb}", [o + f"projection.{wb}"]))
        for u in (1, 2):
            for c in (1, 2):
                for wb in ("weight", "bias"):
                    pairs.append((p + f"resConfUnit{u}.conv{c}.{wb}", [o + f"residual_layer{u}.convolution{c}.{wb}"]))
    for pub, ours in (("output_conv1", "conv1"), ("output_conv2.0", "conv2"), ("output_conv2.2", "conv3")):
        for wb in ("weight", "bias"):
            pairs.append((f"depth_head.scratch.{pub}.{wb}", [f"{head}{ours}.{wb}"]))
    return pairs


def to_published_state_dict(model: DepthAnythingDSFA) -> dict[str, torch.Tensor]:
    """Our state dict in the published DAv2-DSFA layout and order (qkv fused)."""
    ours = model.state_dict()
    out = OrderedDict()
    for pub, names in _key_pairs(model):
        out[pub] = ours[names[0]] if len(names) == 1 else torch.cat([ours[n] for n in names], 0)
    return out


def from_published_state_dict(model: DepthAnythingDSFA, sd: dict) -> dict[str, torch.Tensor]:
    """Map a published-layout state dict to our names (splits qkv); unknown keys are kept so a strict load names
    them; keys absent stay absent."""
    out, known = {}, set()
    for pub, names in _key_pairs(model):
        known.add(pub)
        if pub not in sd:
            continue
        t = sd[pub]
        if len(names) == 1:
            out[names[0]] = t
        elif t.shape[0] % len(names):
            out[pub] = t  # mis-shaped: leave it under its published name, the strict load reports it
        else:
            out.update(zip(names, t.chunk(len(names), 0)))
    out.update({k: v for k, v in sd.items() if k not in known})
    return out


_HF_OLD = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)


def from_transformers_state_dict(sd: dict) -> dict:
    """transformers-format DAv2 weights (``backbone.*``, ``neck.*``, ``head.*``; old or new attention names) →
    our keys (``model.`` prefix)."""
    out = {}
    for k, v in sd.items():
        for old, new in _HF_OLD:
            k = k.replace(old, new)
        out["model." + k] = v
    return out


def published_keys(name: str) -> dict[str, tuple[int, ...]]:
    """Key → shape of ``dav2-dsfa-s|b|l`` exactly as the published checkpoint stores it (built on meta)."""
    with torch.device("meta"):
        model = build_model(name)
    return OrderedDict((k, tuple(v.shape)) for k, v in to_published_state_dict(model).items())


def unwrap_checkpoint(name: str, raw: object) -> dict:
    """As ``infer_dsfa.py::load_state``: ``ckpt.get("model", ckpt)``, leading ``module.`` stripped, non-tensors
    dropped."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{name}: checkpoint is a {type(raw).__name__}, expected a state dict")
    sd = raw.get("model", raw)
    if not isinstance(sd, dict):
        raise CheckpointError(f"{name}: checkpoint['model'] is a {type(sd).__name__}, expected a state dict")
    return OrderedDict((k.removeprefix("module."), v) for k, v in sd.items() if isinstance(v, torch.Tensor))


def load_weights(model: DepthAnythingDSFA, sd: dict, source) -> str:
    """Load a flat state dict strictly, recognising the layout. Returns the layout name:
    ``"published-dsfa"``, ``"dav2-original"`` (no DSFA keys → DSFA identity), ``"transformers"`` (idem)."""
    from .checkpoints import load_strict

    if any(k.startswith("model.backbone.") for k in sd):
        layout, ours = "ours", dict(sd)
    elif any(k.startswith("backbone.") for k in sd):
        layout, ours = "transformers", from_transformers_state_dict(sd)
    else:
        from .checkpoints import compare_keys

        layout = "published-dsfa" if any(k.startswith("encoder_fusion.") for k in sd) else "dav2-original"
        expected = {
            k: tuple(v.shape)
            for k, v in to_published_state_dict(model).items()
            if layout == "published-dsfa" or not k.startswith("encoder_fusion.")
        }
        report = compare_keys(sd, expected)
        if not report.ok:  # report in the checkpoint's own (published) names
            raise CheckpointError(f"{source}: checkpoint does not match the model strictly: {report.summary()}")
        ours = from_published_state_dict(model, sd)
    if layout in ("transformers", "dav2-original") and not any(k.startswith("encoder_fusion.") for k in ours):
        model.set_dsfa_identity()
        ours.update({k: v for k, v in model.state_dict().items() if k.startswith("encoder_fusion.")})
    load_strict(model, ours, source)
    return layout


def load_base_weights(model: DepthAnythingDSFA, path) -> str:
    """Load a DAv2(-DSFA) checkpoint file (``.pth`` or ``.safetensors``, any supported layout) strictly."""
    from .checkpoints import load_state_dict_file

    raw = load_state_dict_file(path)
    return load_weights(model, unwrap_checkpoint(str(path), raw), path)


# ------------------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------------------
def dav2_input_size(h: int, w: int, short: int = 518, multiple: int = 14) -> tuple[int, int]:
    """DAv2 ``Resize(lower_bound, keep aspect, ensure_multiple_of=14)``: short side ≥ 518, multiples of 14
    (240×320 → 518×686)."""
    s = short / min(h, w)

    def fit(x: float) -> int:
        y = int(round(x / multiple) * multiple)
        return y if y >= short else int(math.ceil(x / multiple) * multiple)

    return fit(h * s), fit(w * s)


def preprocess(images: np.ndarray, size: tuple[int, int]) -> torch.Tensor:
    """(F, H, W, 3) float [0, 1] RGB → [F, 3, h, w] ImageNet-normalised, cubic resize (as ``infer_dsfa.py``)."""
    import cv2

    out = []
    for im in images:
        r = cv2.resize(np.asarray(im, np.float64), (size[1], size[0]), interpolation=cv2.INTER_CUBIC)
        out.append((r - np.array(IMAGENET_MEAN)) / np.array(IMAGENET_STD))
    return torch.from_numpy(np.stack(out).astype(np.float32)).permute(0, 3, 1, 2)


class DAv2Predictor:
    """``.predict(image, stack, single_frame)`` with the published DAv2 inference preprocessing."""

    def __init__(self, name: str, model: DepthAnythingDSFA, weights: str, device: str = "cpu"):
        self.name, self.model, self.weights, self.device = name, model.to(device).eval(), weights, device

    @torch.no_grad()
    def _run(self, ref: torch.Tensor, stack: torch.Tensor | None, k: torch.Tensor | None, single: bool, hw):
        d = self.model(ref, stack, k, single_frame=single)
        return F.interpolate(d[:, None], size=hw, mode="bilinear", align_corners=True)[0, 0]

    def predict(self, image, stack, single_frame: bool = False):
        from ..lens import metric_to_normalized_K
        from ..pipelines.depth import DepthResult, split_stack

        t0 = time.perf_counter()
        inp = split_stack(image, stack)
        h, w = inp.image.shape[:2]
        size = dav2_input_size(h, w)
        ref = preprocess(inp.image[None], size).to(self.device)
        frames = preprocess(inp.frames, size)[None].to(self.device) if len(inp.frames) else None
        info = {
            "backend": self.name,
            "weights": self.weights,
            "single_frame": bool(single_frame),
            "input_size": list(size),
        }
        single = single_frame or frames is None
        K = inp.K
        if not single and inp.convention == "metric":
            # the released model expects normalised K; the scene's inverse-depth span is estimated from a
            # single-frame pass (2nd–98th percentile of 1/depth)
            d0 = self._run(ref, None, None, True, (h, w)).float().cpu().numpy()
            disp = 1.0 / np.clip(d0[np.isfinite(d0) & (d0 > 0)], 1e-3, None)
            lo, hi = np.percentile(disp, [2, 98]) if disp.size else (0.0, 1.0)
            span = max(float(hi - lo), 1e-3)
            K = metric_to_normalized_K(K, 0.0, span, w)
            info["K_conversion"] = {"disp_span_estimate": span, "K_normalized": [float(k) for k in K]}
        k = torch.tensor(K, dtype=torch.float32, device=self.device).view(1, -1, 1)
        depth = self._run(ref, frames, k, single, (h, w)).float().cpu().numpy().astype(np.float32)
        depth[~(np.isfinite(depth) & (depth > 0))] = np.nan
        info["seconds"] = time.perf_counter() - t0
        return DepthResult(depth, None, info)


def load_predictor(name: str, weights=None, device: str = "cpu") -> DAv2Predictor:
    """Predictor for ``dav2-dsfa-s|b|l`` from a local checkpoint (file or folder; ``$BOKEHDEPTH_WEIGHTS``).

    Accepts the published DAv2-DSFA layout, the original DAv2 release (DSFA starts as identity) and
    transformers-format weights, loaded strictly. Missing file → MissingWeightsError (only ViT-L is released).
    """
    from ..errors import MissingWeightsError
    from .checkpoints import load_state_dict_file, resolve_weights
    from .registry import get_backend

    backend = get_backend(name)
    try:
        path = resolve_weights(weights, backend.published)
    except MissingWeightsError as exc:
        if name != "dav2-dsfa-l":
            exc.args = (exc.args[0] + f"; note: only ViT-L is released, so for {name} pass a checkpoint you trained",)
        raise
    model = build_model(name)
    raw = load_state_dict_file(path)
    load_weights(model, unwrap_checkpoint(str(path), raw), path)
    return DAv2Predictor(name, model, str(path), device)
