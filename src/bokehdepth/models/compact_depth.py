"""The embedded default Stage-2 model: a small ViT + DSFA metric depth network that runs fast on a CPU.

Design (docs/stage2.md has the rationale and the training command):

- **Frames.** The sharp reference (frame 0, K = 0) and the N stack frames are resized to the working size
  (short side ``cfg.image_size``, both sides multiples of the patch size). Each frame enters the ViT as 9
  channels: its RGB, its difference to the reference and the absolute difference (zero for the reference);
  the patch embedding's average of ``|frame − ref|`` is a direct local blur-energy measurement.
- **Backbone.** ``cfg.depth`` pre-LN ViT blocks (fixed 2-D sin-cos positions, any resolution), run on all
  F = N + 1 frames as one batch; the tokens after the blocks in ``cfg.taps`` are tapped.
- **DSFA.** The published :class:`~bokehdepth.models.dsfa.DividedSpaceFocusBlock` is applied post-hoc to the
  taps in ``cfg.dsfa_taps`` (the reference's tokens attend over the stack, conditioned on K); only the
  reference's tokens reach the head. ``single_frame=True`` bypasses DSFA and runs the reference alone.
- **K input.** DSFA sees ``K_in = K_work / cfg.k_unit`` where ``K_work`` is the blur in px per 1/m of
  inverse-depth offset at the working width (metric K rescaled by working width / frame width). A
  normalised stack (K in px at 512 px per unit of normalised disparity) is fed as if its disparity span were
  1 1/m: ``K_work = K_n · W_work / 512``.
- **Head.** A light DPT-style head (1×1 projections of the taps, fused, ×2 upsampling convs with a skip at
  1/``out_stride`` resolution) predicts four maps, upsampled to the working size bilinearly or, with
  ``cfg.upsample="joint_bilateral"`` (the shipped weights), edge-aware, guided by the reference:
  ``offset`` |Δ| ≥ 0 (1/m), the *unsigned* inverse-depth distance to the focus plane, which is what the blur measures (radius ``K_i·|Δ|``
  px); ``side`` (logit, > 0: nearer than the focus plane); ``confidence`` (logit, trust in the defocus
  estimate against the monocular one) and ``log_depth`` (log m). The skip sees the reference RGB, its
  gradient magnitude and the per-pixel mean / max over frames of ``|frame − ref|`` (zero single-frame), so
  blur is measured at 1/``out_stride`` resolution, not only per 16-px patch.
- **Cost volume.** With ``cfg.cost_bins`` = J > 0 (the shipped weights use 16), :meth:`~CompactDepthModel.cost_volume`
  re-blurs the grey reference with the renderer's disc of radius ``K_i·δ_j`` for J candidate offsets
  ``δ_j`` (:func:`~.defocus_volume.candidate_offsets`, 0 … ``max_disp − min_disp``), in linear light of the
  stack's ``gamma``, and scores each candidate against the stack (:mod:`.defocus_volume`).
  :meth:`~CompactDepthModel.cost_features` turns it into J + 2 more skip channels: ``cost / mean − 1`` per
  candidate, the soft-argmin |Δ| (fraction of the candidate range) and the log mean cost (how much evidence
  there is); zeros single-frame. The volume is a fixed function of the inputs, so the trainer
  (:mod:`bokehdepth.train.stage2`) caches it per scene and passes it as ``cost=``.
- **Focus conditioning.** The head gets ``[disp_focus, known, near, far]`` (1/m and flags) as a learnt bias,
  so the side and monocular branches know where the focus plane is (without it, the sign of Δ is
  unidentifiable and an L1 loss on the signed offset collapses to Δ ≈ 0, i.e. "everything in focus").
- **Metric depth from defocus.** When the stack is metric and ``disp_focus`` (1/m) is known:
  ``disp = disp_focus ± |Δ|`` with the sign from the stack's ``focus_side`` when known (``"near"``: every
  point is behind the focus plane, −; ``"far"``: +), else from the ``side`` head; clamped to
  ``[min_disp, max_disp]`` (the training range), then blended in log depth with the monocular branch by
  ``sigmoid(confidence)``. Otherwise (normalised stack, unknown focus, ``single_frame``)
  ``depth = exp(log_depth)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .defocus_volume import candidate_offsets, defocus_cost_volume
from .dsfa import DividedSpaceFocusBlock, DSFAConfig, fuse_frame_features
from .guided_upsample import joint_bilateral_upsample

__all__ = [
    "CompactDepthConfig",
    "CompactDepthModel",
    "SIDE_RULES",
    "UPSAMPLING",
    "DEFAULT_WEIGHTS",
    "load_compact_depth",
    "save_compact_depth",
    "set_inference_options",
    "prepare_k",
    "SIDE_SIGN",
    "focus_sign_of",
    "focus_features",
]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "compact_depth.safetensors"
NORMALIZED_K_WIDTH = 512.0
UPSAMPLING = ("bilinear", "joint_bilateral")


@dataclass
class CompactDepthConfig:
    """Configuration of the compact depth model.

    Attributes:
        image_size: working short side in pixels (rounded to a multiple of ``patch_size``).
        patch_size: ViT patch size in pixels.
        dim: token width.
        depth: number of ViT blocks.
        num_heads: attention heads (ViT and DSFA).
        mlp_ratio: MLP width / token width.
        taps: 0-based ViT block indices whose outputs feed the head.
        dsfa_taps: indices into ``taps`` that get a DSFA block.
        head_dim: channel width of the DPT-style head.
        out_stride: the head predicts at 1/out_stride of the working size, then upsamples bilinearly.
        k_unit: K_work (px per 1/m at the working width) that maps to 1.0 at the DSFA K input.
        min_disp: lower clamp of the defocus disparity in 1/m (depth ≤ 1/min_disp m).
        max_disp: upper clamp of the defocus disparity in 1/m (depth ≥ 1/max_disp m).
        max_depth: upper clamp of the monocular depth in metres.
        blur_gain: gain on the frame − reference differences fed to the network (they are small).
        identity_init: DSFA blocks start as exact identities (see DSFAConfig).
        cost_bins: candidate offsets of the defocus cost volume fed to the head's skip
            (:mod:`.defocus_volume`; 0 = no cost volume, the first embedded model's layout).
        cost_window: box window (px at the working size) of the cost volume.
        upsample: how the head's maps reach the working size from 1/out_stride: ``"bilinear"`` (as trained) or
            ``"joint_bilateral"`` (edge-aware, guided by the reference: :mod:`.guided_upsample`; the shipped
            weights use it, chosen on the validation splits, docs/stage2.md §5).
        upsample_sigma: range σ of the joint bilateral upsampling (distance between reference RGB values in
            [0, 1]).
    """

    image_size: int = 128
    patch_size: int = 16
    dim: int = 96
    depth: int = 4
    num_heads: int = 4
    mlp_ratio: float = 3.0
    taps: tuple[int, ...] = (1, 2, 3)
    dsfa_taps: tuple[int, ...] = (0, 1, 2)
    head_dim: int = 48
    out_stride: int = 4
    k_unit: float = 1.0
    min_disp: float = 0.05
    max_disp: float = 2.0
    max_depth: float = 80.0
    blur_gain: float = 4.0
    identity_init: bool = False
    cost_bins: int = 0
    cost_window: int = 7
    upsample: str = "bilinear"
    upsample_sigma: float = 0.1
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        # JSON gives lists: convert here so that CompactDepthConfig(**json.loads(text)) works everywhere
        self.taps = tuple(int(i) for i in self.taps)
        self.dsfa_taps = tuple(int(i) for i in self.dsfa_taps)
        if self.cost_bins < 0 or self.cost_bins == 1:
            raise InputError(
                f"--config cost_bins: {self.cost_bins} is not a cost-volume size; use 0 (no cost volume) or ≥ 2 "
                "candidate offsets, e.g. 16"
            )
        if self.upsample not in UPSAMPLING:
            raise InputError(f"--config upsample: {self.upsample!r} is not one of {', '.join(UPSAMPLING)}")
        if not self.upsample_sigma > 0:
            raise InputError(f"--config upsample_sigma: {self.upsample_sigma} must be > 0, e.g. 0.1")
        ratio = self.patch_size / self.out_stride if self.out_stride > 0 else 0.0
        if not (ratio >= 2 and ratio == int(ratio) and int(ratio) & (int(ratio) - 1) == 0):
            raise InputError(
                f"--config out_stride: patch_size / out_stride = {self.patch_size} / {self.out_stride} must be a "
                f"power of two ≥ 2 (the head upsamples by ×2 steps); e.g. out_stride {max(1, self.patch_size // 4)}"
            )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CompactDepthConfig:
        return cls(**json.loads(text))


def _sincos_2d(h: int, w: int, dim: int, device, dtype) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding, [h·w, dim]."""
    quarter = dim // 4
    omega = 1.0 / (10000 ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter))
    ys, xs = torch.meshgrid(
        torch.arange(h, device=device, dtype=torch.float32),
        torch.arange(w, device=device, dtype=torch.float32),
        indexing="ij",
    )
    parts = []
    for coord in (ys.reshape(-1), xs.reshape(-1)):
        ang = coord[:, None] * omega[None]
        parts += [ang.sin(), ang.cos()]
    emb = torch.cat(parts, dim=1)
    if emb.shape[1] < dim:
        emb = F.pad(emb, (0, dim - emb.shape[1]))
    return emb.to(dtype)


class _Block(nn.Module):
    """Pre-LN transformer block (MSA + MLP)."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, need_weights=False)[0]
        return x + self.mlp(self.norm2(x))


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GELU())


SIDE_SIGN = {"near": -1.0, "far": 1.0}
"""Sign of ``disp − disp_focus`` implied by a stack's ``focus_side`` ("near": focus on the nearest surface)."""


def focus_sign_of(side: str | None) -> float:
    """:data:`SIDE_SIGN` of a stack's ``focus_side``: −1.0 (``"near"``), +1.0 (``"far"``), 0.0 (unknown/None)."""
    return SIDE_SIGN.get(side or "", 0.0)


SIDE_RULES = ("relative", "map")
"""How :meth:`CompactDepthModel.defocus_disparity` picks the side of focus where the stack does not record it."""


def focus_features(disp_focus: torch.Tensor | None, focus_sign: torch.Tensor | None, batch: int, device, dtype):
    """[B, 4] focus conditioning ``[disp_focus (1/m, 0 if unknown), known, near, far]``.

    disp_focus: [B] 1/m, NaN where unknown (or None); focus_sign: [B] −1 (near), +1 (far), 0 unknown (or None).
    """
    feats = torch.zeros(batch, 4, device=device, dtype=dtype)
    if disp_focus is not None:
        df = disp_focus.to(device=device, dtype=dtype).view(-1)
        known = torch.isfinite(df)
        feats[:, 0] = torch.nan_to_num(df, nan=0.0)
        feats[:, 1] = known.to(dtype)
    if focus_sign is not None:
        sgn = focus_sign.to(device=device, dtype=dtype).view(-1)
        feats[:, 2] = (sgn < 0).to(dtype)
        feats[:, 3] = (sgn > 0).to(dtype)
    return feats


class CompactDepthModel(nn.Module):
    """Small ViT + DSFA + light DPT-style head. See the module docstring for the design."""

    def __init__(self, cfg: CompactDepthConfig):
        super().__init__()
        self.cfg = cfg
        p, d = cfg.patch_size, cfg.dim
        self.patch_embed = nn.Conv2d(9, d, p, stride=p)
        self.blocks = nn.ModuleList(_Block(d, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.depth))
        self.tap_norm = nn.LayerNorm(d)
        self.dsfa = nn.ModuleDict(
            {
                str(i): DividedSpaceFocusBlock(DSFAConfig(d, cfg.num_heads, identity_init=cfg.identity_init))
                for i in cfg.dsfa_taps
            }
        )
        c = cfg.head_dim
        self.projects = nn.ModuleList(nn.Conv2d(d, c, 1) for _ in cfg.taps)
        self.focus_embed = nn.Linear(4, c)
        self.fuse = _conv(c, c)
        n_up = int(round(math.log2(p / cfg.out_stride)))
        self.ups = nn.ModuleList(_conv(c if i == 0 else c // 2, c // 2) for i in range(n_up))
        self.register_buffer(
            "cost_offsets", candidate_offsets(cfg.cost_bins, cfg.max_disp - cfg.min_disp), persistent=False
        )
        n_cost = cfg.cost_bins + 2 if cfg.cost_bins else 0
        self.skip = nn.Sequential(
            nn.Conv2d(6 + n_cost, c // 2, cfg.out_stride, stride=cfg.out_stride),
            nn.GELU(),
            nn.Conv2d(c // 2, c // 2, 3, padding=1),
        )
        self.refine = _conv(c // 2, c // 2)
        self.out = nn.Conv2d(c // 2, 4, 3, padding=1)
        self.gradient_checkpointing = False

    def forward(
        self,
        ref: torch.Tensor,
        stack: torch.Tensor | None,
        k_in: torch.Tensor | None,
        single_frame: bool = False,
        disp_focus: torch.Tensor | None = None,
        focus_sign: torch.Tensor | None = None,
        cost: torch.Tensor | None = None,
        gamma: float | torch.Tensor = 2.2,
    ) -> dict[str, torch.Tensor]:
        """Predict the defocus, side, confidence and log-depth maps.

        Args:
            ref: [B, 3, H, W] sharp reference in [0, 1], H and W multiples of the patch size.
            stack: [B, N, 3, H, W] stack frames (without the reference), or None.
            k_in: [B, N] DSFA K input (see :func:`prepare_k`).
            single_frame: bypass DSFA and ignore the stack and its focus (the reference alone).
            disp_focus: [B] focus disparity (1/m), NaN where unknown; None: unknown.
            focus_sign: [B] sign of ``disp − disp_focus`` known from the stack (−1 near, +1 far, 0 unknown).
            cost: [B, cost_bins, H, W] precomputed :meth:`cost_volume` (the trainer caches it); None: computed
                here when ``cfg.cost_bins`` > 0.
            gamma: the stack's encoding gamma (``Stack.gamma``), a number or [B]; used only to compute the cost
                volume (ignored with ``cost`` or ``cfg.cost_bins`` = 0).

        Returns:
            ``{"offset": |Δ| [B, H, W] 1/m, "side": [B, H, W] logit (nearer than focus),
            "confidence": [B, H, W] logit, "log_depth": [B, H, W] log metres}``.
        """
        b, _, h, w = ref.shape
        p = self.cfg.patch_size
        if h % p or w % p:
            raise ValueError(f"compact depth: input {h}x{w} is not a multiple of the patch size {p}")
        if single_frame or stack is None or stack.shape[1] == 0:
            frames = ref.unsqueeze(1)
            disp_focus = focus_sign = None
        else:
            frames = torch.cat([ref.unsqueeze(1), stack], dim=1)
        nf = frames.shape[1]
        diff = (frames - ref.unsqueeze(1)) * self.cfg.blur_gain
        x = torch.cat([frames, diff, diff.abs()], dim=2).flatten(0, 1)  # [B·F, 9, H, W]
        tok = self.patch_embed(x)
        gh, gw = tok.shape[-2:]
        tok = tok.flatten(2).transpose(1, 2) + _sincos_2d(gh, gw, self.cfg.dim, tok.device, tok.dtype)
        feats = []
        for i, blk in enumerate(self.blocks):
            if self.gradient_checkpointing and self.training:
                tok = torch.utils.checkpoint.checkpoint(blk, tok, use_reentrant=False)
            else:
                tok = blk(tok)
            if i in self.cfg.taps:
                feats.append(self.tap_norm(tok))
        blocks = {int(k): v for k, v in self.dsfa.items()}
        feats = fuse_frame_features(feats, blocks, nf, k_in, num_prefix_tokens=0, single_frame=nf == 1)
        fused = sum(proj(f.transpose(1, 2).reshape(b, self.cfg.dim, gh, gw)) for proj, f in zip(self.projects, feats))
        cond = self.focus_embed(focus_features(disp_focus, focus_sign, b, ref.device, ref.dtype))
        y = self.fuse(fused + cond[:, :, None, None])
        # per-pixel blur energy (mean / max over frames of |frame − ref|, RGB-averaged) and texture strength
        adiff = diff[:, 1:].abs().mean(2) if nf > 1 else ref.new_zeros(b, 1, h, w)
        gray = ref.mean(1, keepdim=True)
        grad = (gray[..., :, 1:] - gray[..., :, :-1]).abs()
        grad = F.pad(grad, (0, 1)) + F.pad((gray[..., 1:, :] - gray[..., :-1, :]).abs(), (0, 0, 0, 1))
        skip_in = [ref, grad * self.cfg.blur_gain, adiff.mean(1, True), adiff.amax(1, True)]
        if self.cfg.cost_bins:
            if nf == 1:
                skip_in.append(ref.new_zeros(b, self.cfg.cost_bins + 2, h, w))
            else:
                skip_in.append(
                    self.cost_features(self.cost_volume(ref, stack, k_in, gamma=gamma) if cost is None else cost)
                )
        skip = self.skip(torch.cat(skip_in, 1))
        for up in self.ups:
            y = up(F.interpolate(y, scale_factor=2, mode="bilinear", align_corners=False))
            if y.shape[-2:] == skip.shape[-2:]:
                y = self.refine(y + skip)
        low = self.out(y)
        if self.cfg.upsample == "joint_bilateral" and low.shape[-1] != w:
            out = joint_bilateral_upsample(low, ref, w // low.shape[-1], sigma_range=self.cfg.upsample_sigma)
        else:
            out = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
        return {
            "offset": F.softplus(out[:, 0]) * 0.25,
            "side": out[:, 1],
            "confidence": out[:, 2] + 2.0,
            "log_depth": out[:, 3] + 1.5,
        }

    def cost_volume(
        self, ref: torch.Tensor, stack: torch.Tensor, k_in: torch.Tensor, gamma: float | torch.Tensor = 2.2
    ) -> torch.Tensor:
        """[B, cost_bins, H, W] defocus cost of each candidate |Δ| (grey, see :mod:`.defocus_volume`).

        ``k_in`` [B, N] is the DSFA K input; the blur per unit offset at the working width is
        ``k_in · cfg.k_unit`` px per 1/m (per unit normalised disparity for a normalised stack). ``gamma`` is
        the stack's encoding gamma (``Stack.gamma``): a number, or a [B] tensor (one per sample); the
        re-blurring happens in linear light ``frame ** gamma``, as the renderer's.
        """
        grey = ref.mean(1, keepdim=True)
        k_px = k_in.reshape(k_in.shape[0], -1) * self.cfg.k_unit
        return defocus_cost_volume(
            grey, stack.mean(2, keepdim=True), k_px, self.cost_offsets, gamma=gamma, window=self.cfg.cost_window
        )

    def cost_features(self, cost: torch.Tensor) -> torch.Tensor:
        """Texture-invariant features of a cost volume: ``cost / mean − 1`` per candidate, the soft-argmin
        |Δ| (as a fraction of the candidate range) and the log mean cost (how much evidence there is)."""
        mean = cost.mean(1, keepdim=True)
        rel = cost / (mean + 1e-5)
        weights = torch.softmax(-4.0 * rel, dim=1)
        offs = self.cost_offsets.to(cost.dtype).view(1, -1, 1, 1)
        soft = (weights * offs).sum(1, keepdim=True) / offs.max()
        return torch.cat([rel - 1.0, soft, (torch.log(mean + 1e-5) + 7.0) / 3.0], 1)

    def defocus_disparity(
        self,
        outputs: dict[str, torch.Tensor],
        disp_focus: torch.Tensor,
        focus_sign: torch.Tensor | None = None,
        side_rule: str = "relative",
    ) -> torch.Tensor:
        """Defocus disparity [B, H, W] (1/m): ``disp_focus ± |Δ|`` clamped to ``[min_disp, max_disp]``.

        The sign comes from ``focus_sign`` where known, else from the side head's probability
        ``p = sigmoid(side)`` that the pixel is nearer than the focus plane. ``focus_sign`` is the sign of
        ``disp − disp_focus`` (−1, +1; 0 unknown): [B], one per stack (its ``focus_side``, see
        :func:`focus_sign_of`), or [B, H, W] per pixel (e.g. the trainer's true side ``sign(1/gt − disp_focus)``,
        so the ``disp_focus ± |Δ|`` clamp formula lives only here). Where it is 0 or None:

        - ``side_rule="relative"`` (default): the candidate with the lower expected *relative* depth error
          under ``p``. Choosing the far candidate when the pixel is near costs ``(d_far − d_near)/d_near``,
          the other mistake only ``(d_far − d_near)/d_far``, so the near one wins when
          ``p·disp_near ≥ (1 − p)·disp_far`` (a side-of-focus mistake can map a 2 m object to 10 m, never the
          reverse by as much);
        - ``side_rule="map"``: the more probable side (``p > 0.5``).
        """
        if side_rule not in SIDE_RULES:
            raise ValueError(f"side_rule must be one of {SIDE_RULES}, got {side_rule!r}")
        df = torch.nan_to_num(disp_focus.to(outputs["offset"].dtype)).view(-1, 1, 1)
        lo, hi = self.cfg.min_disp, self.cfg.max_disp
        disp_near = (df + outputs["offset"]).clamp(lo, hi)
        disp_far = (df - outputs["offset"]).clamp(lo, hi)
        if side_rule == "map":
            near = outputs["side"] > 0
        else:
            p = torch.sigmoid(outputs["side"])
            near = p * disp_near >= (1 - p) * disp_far
        if focus_sign is not None:
            fs = focus_sign.to(device=df.device, dtype=df.dtype)
            fs = fs.view(-1, 1, 1) if fs.ndim <= 1 else fs
            if fs.ndim != 3 or fs.shape[0] not in (1, near.shape[0]):
                raise ValueError(f"focus_sign must be [B] or [B, H, W], got {tuple(focus_sign.shape)}")
            fs = fs.expand_as(near)
            near = torch.where(fs != 0, fs > 0, near)
        return torch.where(near, disp_near, disp_far)

    def depth_from_outputs(
        self,
        outputs: dict[str, torch.Tensor],
        disp_focus: torch.Tensor | None,
        focus_sign: torch.Tensor | None = None,
        side_rule: str = "relative",
    ) -> torch.Tensor:
        """Metric depth [B, H, W] in metres.

        Where ``disp_focus`` [B] (1/m) is known (NaN entries mean unknown): the defocus depth
        ``1/(disp_focus ± |Δ|)`` (see :meth:`defocus_disparity` for ``focus_sign`` and ``side_rule``) blended in
        log depth with the monocular branch by ``sigmoid(confidence)``; elsewhere ``exp(log_depth)``.
        """
        log_mono = outputs["log_depth"].clamp(max=math.log(self.cfg.max_depth))
        if disp_focus is None:
            return log_mono.exp()
        df = disp_focus.to(log_mono.dtype).view(-1, 1, 1)
        known = torch.isfinite(df)
        log_def = -torch.log(self.defocus_disparity(outputs, disp_focus, focus_sign, side_rule))
        c = torch.sigmoid(outputs["confidence"])
        blended = c * log_def + (1 - c) * log_mono
        return torch.where(known, blended, log_mono).exp()


def prepare_k(K: torch.Tensor, convention: str, frame_width: float, work_width: float, k_unit: float) -> torch.Tensor:
    """DSFA K input from stack K values.

    Args:
        K: [..., N] K of the non-reference frames (px·m at ``frame_width`` for metric, px at 512 per unit of
            normalised disparity for normalized).
        convention: ``"metric"`` or ``"normalized"``.
        frame_width: width of the stack frames in pixels.
        work_width: working width of the model in pixels.
        k_unit: divisor (``CompactDepthConfig.k_unit``).
    """
    ref_w = frame_width if convention == "metric" else NORMALIZED_K_WIDTH
    return K * (work_width / ref_w) / k_unit


def save_compact_depth(model: CompactDepthModel, path: str | Path, extra_meta: dict | None = None) -> None:
    """Save weights as safetensors with the config JSON (and ``extra_meta``) in the metadata (atomically: a
    temporary file renamed onto ``path``)."""
    from safetensors.torch import save_file

    from ..io import atomic_file

    meta = {"config": model.cfg.to_json(), "format": "bokehdepth-compact-depth-v1"}
    for k, v in (extra_meta or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    with atomic_file(path) as tmp:
        save_file(state, str(tmp), metadata=meta)


INFERENCE_OPTIONS = ("upsample", "upsample_sigma")
"""Config fields that change how trained weights are applied, not which weights there are."""


def set_inference_options(src: str | Path, dst: str | Path, **options) -> CompactDepthConfig:
    """Copy a compact checkpoint with other :data:`INFERENCE_OPTIONS` in its config (the tensors and the rest
    of the metadata, e.g. the training arguments, unchanged); ``dst`` may be ``src``. Returns the new config.

    Used for the embedded weights (``upsample="joint_bilateral"``, chosen after training, docs/stage2.md §4).
    """
    from .checkpoints import read_safetensors_metadata

    unknown = sorted(set(options) - set(INFERENCE_OPTIONS))
    if unknown:
        raise ValueError(f"set_inference_options: {unknown} are not inference options {INFERENCE_OPTIONS}")
    model = load_compact_depth(src)  # a valid compact checkpoint (one-line errors otherwise)
    model.cfg = CompactDepthConfig(**{**asdict(model.cfg), **options})  # validated
    kept = {k: v for k, v in read_safetensors_metadata(src, "").items() if k not in ("config", "format")}
    save_compact_depth(model, dst, kept)
    return model.cfg


def load_compact_depth(path: str | Path | None = None, device: str = "cpu") -> CompactDepthModel:
    """Build the model from a safetensors file (config in its metadata) and load it strictly.

    ``path`` None loads the embedded default weights.
    """
    from ..errors import CheckpointError
    from .checkpoints import load_state_dict_file, load_strict, read_safetensors_metadata, resolve_local_weights

    retrain = "bokehdepth train stage2 --model compact"
    path = resolve_local_weights(path, DEFAULT_WEIGHTS, retrain)
    meta = read_safetensors_metadata(path, retrain)
    try:
        cfg = CompactDepthConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: not a compact depth checkpoint (no valid config in its safetensors metadata: {exc}); "
            f"pass a file written by '{retrain}'"
        ) from exc
    model = CompactDepthModel(cfg)
    load_strict(model, load_state_dict_file(path), path)
    return model.to(device).eval()
