"""The compact Stage-1 generator: a small K-conditioned U-Net that turns one sharp image into its bokeh
rendering for a blur strength K, with no depth map at any point.

Design (docs/stage1.md):

1. A U-Net with FiLM on an embedding of K runs on the image at ``net_scale`` of the working resolution and
   predicts, per pixel, a *normalised defocus* ``m ∈ [0, 1]`` (what the renderer would compute as
   ``|disp_norm − disp_norm_focus|``, learned from the image alone) and a small colour residual.
2. The blur radius in pixels at the working width ``W`` is ``r = K · (W / 512) · m`` (the published
   normalised convention: K in px at 512-px width per unit of per-image min–max normalised disparity).
3. A fixed, differentiable *blur pyramid* turns ``r`` into an image: the input is taken to linear light
   (``gamma``), convolved with anti-aliased discs of the radii in ``radii_px`` (FFT with mirror padding,
   :func:`~.defocus_volume.fft_disc_blur`), and each pixel blends the two pyramid levels around its own
   radius; back to display values, plus the residual.

The radius is linear in K by construction, so a larger K gives a blurrier frame whenever the network's
defocus map does not shrink with K (training makes it K-independent: the renderer's radius is K·|Δdisp|).

Shapes: images are torch tensors (B, 3, H, W) in [0, 1] (display values); K is (B,) in the normalised
convention. H and W must be multiples of :meth:`CompactGenerator.size_multiple`.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .defocus_volume import disc_edge_weight, fft_disc_blur

__all__ = [
    "CompactGenerator",
    "CompactGeneratorConfig",
    "DEFAULT_RADII_PX",
    "DEFAULT_WEIGHTS",
    "blend_pyramid",
    "blur_pyramid",
    "disc_kernel",
    "load_compact_generator",
    "read_generator_metadata",
    "resolve_generator_weights",
    "save_compact_generator",
]

NORMALIZED_K_WIDTH = 512
"""Width (px) at which the normalised K is defined (shared/reference/bokehdepth.md §2)."""

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "compact_generator.safetensors"
"""The embedded default weights (retrain command in docs/stage1.md)."""

DEFAULT_RADII_PX = (0.0, 1.0, 2.0, 3.5, 5.5, 8.0, 11.0, 15.0, 20.0, 25.0, 30.0)
"""Blur-pyramid disc radii in px at 512-px working width (scaled by W/512 at other widths)."""


@dataclass
class CompactGeneratorConfig:
    """Hyper-parameters of :class:`CompactGenerator` (stored as JSON in the weights' metadata)."""

    base_channels: int = 16
    """Channels of the first U-Net level."""
    channel_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Channel multiplier per U-Net level; the U-Net downsamples ``len(channel_mult) - 1`` times."""
    k_embed_dim: int = 64
    """Width of the K embedding that drives every FiLM layer."""
    net_scale: float = 0.25
    """The U-Net runs at this fraction of the working resolution; its maps are upsampled bilinearly."""
    k_min: float = 1.0
    """Lower clamp of K before the embedding (published inference clamps K to [1, 30])."""
    k_max: float = 30.0
    """Upper clamp of K before the embedding; the embedding input is clamp(K, k_min, k_max) / k_max."""
    gamma: float = 2.2
    """Linear-light exponent of the blur pyramid (the renderer's default)."""
    radii_px: tuple[float, ...] = DEFAULT_RADII_PX
    """Blur-pyramid disc radii in px at 512-px width; must start at 0 and increase."""
    residual: bool = True
    """Add a colour residual predicted by the U-Net (zero-initialised) to the blurred image."""
    multiscale_pyramid: bool = True
    """Compute discs wider than 4 px on a coarser grid (:func:`blur_pyramid`); False: exact full-resolution FFT."""

    def __post_init__(self) -> None:
        self.channel_mult = tuple(int(c) for c in self.channel_mult)
        self.radii_px = tuple(float(r) for r in self.radii_px)
        if (
            not self.radii_px
            or self.radii_px[0] != 0.0
            or any(b <= a for a, b in zip(self.radii_px, self.radii_px[1:]))
        ):
            raise ValueError(f"radii_px must start at 0 and increase, got {self.radii_px}")
        if not 0 < self.net_scale <= 1:
            raise ValueError(f"net_scale must be in (0, 1], got {self.net_scale}")

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> CompactGeneratorConfig:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown CompactGeneratorConfig fields: {sorted(unknown)}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------------------
# the fixed blur pyramid (pure functions)
# ----------------------------------------------------------------------------------------------------------
def disc_kernel(radius: float, size: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Anti-aliased disc of ``radius`` px in a (size, size) kernel, summing to 1 (radius 0 → a delta).

    The edge weight is ``clip(radius + 0.5 − distance, 0, 1)`` (the ``"clip"`` profile of
    :func:`~.defocus_volume.disc_edge_weight`), so the disc area is ≈ π·radius².
    """
    c = (size - 1) / 2.0
    ax = torch.arange(size, device=device, dtype=dtype) - c
    dist = torch.sqrt(ax[:, None] ** 2 + ax[None, :] ** 2)
    k = disc_edge_weight(radius, dist, "clip")
    return k / k.sum()


def level_scale(radius: float, multiscale: bool = True) -> int:
    """Downsampling factor at which a disc of ``radius`` px is computed: 1 up to 4 px, 2 up to 12 px, else 4
    (a wide disc blur is smooth, so computing it on a coarser grid and upsampling loses little)."""
    if not multiscale or radius <= 4.0:
        return 1
    return 2 if radius <= 12.0 else 4


def blur_pyramid(linear: torch.Tensor, radii: list[float], multiscale: bool = True) -> torch.Tensor:
    """The image blurred by a disc of each radius (px), stacked as pyramid levels.

    With ``multiscale`` (default), discs wider than 4 px are computed on a grid downsampled by
    :func:`level_scale` (area averaging) with the radius scaled alike, then upsampled bilinearly: about 4×
    less work at 512 px; ``multiscale=False`` is the exact FFT convolution at full resolution.

    Args:
        linear: (B, C, H, W) image in linear light.
        radii: increasing radii in px; a radius of 0 gives the input itself.

    Returns:
        (B, L, C, H, W), one level per radius.
    """
    b, c, h, w = linear.shape
    levels: list[torch.Tensor | None] = [linear[:, None] if r <= 0 else None for r in radii]
    groups: dict[int, list[int]] = {}
    for i, r in enumerate(radii):
        if r > 0:
            groups.setdefault(level_scale(float(r), multiscale), []).append(i)
    for scale, idx in groups.items():
        if scale == 1:
            blurred = fft_disc_blur(linear, [float(radii[i]) for i in idx], edge="clip")
        else:
            size = (max(1, math.ceil(h / scale)), max(1, math.ceil(w / scale)))
            small = F.interpolate(linear, size=size, mode="area")
            sh = fft_disc_blur(small, [radii[i] * size[1] / w for i in idx], edge="clip")  # (B, L', C, h', w')
            up = F.interpolate(sh.flatten(0, 1), size=(h, w), mode="bilinear", align_corners=False)
            blurred = up.view(b, len(idx), c, h, w)
        for j, i in enumerate(idx):
            levels[i] = blurred[:, j : j + 1]
    return torch.cat(levels, dim=1)  # type: ignore[arg-type]


def blend_pyramid(pyramid: torch.Tensor, radius: torch.Tensor, radii: list[float]) -> torch.Tensor:
    """Per pixel, linearly interpolate the pyramid between the two levels around ``radius``.

    Args:
        pyramid: (B, L, C, H, W) from :func:`blur_pyramid`.
        radius: (B, 1, H, W) blur radius in px; clamped to [0, radii[-1]].
        radii: the L increasing radii of the pyramid.

    Returns:
        (B, C, H, W). Differentiable in ``radius`` (hat-function weights that sum to 1).
    """
    if radii[0] != 0.0 and len(radii) != pyramid.shape[1]:
        raise ValueError("radii must start at 0 and match the pyramid's levels")
    levels = torch.as_tensor(radii, dtype=radius.dtype, device=radius.device)
    radius = radius.clamp(0.0, radii[-1])
    lo = (torch.bucketize(radius.detach(), levels, right=True) - 1).clamp(0, len(radii) - 2)  # (B,1,H,W)
    r_lo, r_hi = levels[lo], levels[lo + 1]
    frac = ((radius - r_lo) / (r_hi - r_lo)).clamp(0.0, 1.0)[:, :, None]  # (B,1,1,H,W)
    c = pyramid.shape[2]
    idx = lo[:, :, None].expand(-1, -1, c, -1, -1)
    below = torch.gather(pyramid, 1, idx)
    above = torch.gather(pyramid, 1, idx + 1)
    return (below + frac * (above - below))[:, 0]


# ----------------------------------------------------------------------------------------------------------
# the U-Net
# ----------------------------------------------------------------------------------------------------------
def _groups(ch: int) -> int:
    return math.gcd(ch, 8)


class FiLMResBlock(nn.Module):
    """GroupNorm → SiLU → conv3×3, FiLM (scale, shift) from the K embedding, → conv3×3, plus a skip."""

    def __init__(self, cin: int, cout: int, emb_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.film = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.film(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(F.silu(h))
        return self.skip(x) + h


class CompactGenerator(nn.Module):
    """Sharp image + normalised K → bokeh image, without depth (see the module docstring).

    ``forward(image (B,3,H,W) in [0,1], K (B,)) -> (B,3,H,W)``; ``predict_defocus`` exposes the maps.
    """

    def __init__(self, config: CompactGeneratorConfig | None = None):
        super().__init__()
        self.config = cfg = config or CompactGeneratorConfig()
        e = cfg.k_embed_dim
        self.k_embed = nn.Sequential(nn.Linear(1, e), nn.SiLU(), nn.Linear(e, e))
        chans = [cfg.base_channels * m for m in cfg.channel_mult]
        self.stem = nn.Conv2d(3, chans[0], 3, padding=1)
        self.down_blocks = nn.ModuleList()
        self.downsamples = nn.ModuleList()
        for i, ch in enumerate(chans):
            cin = chans[i - 1] if i > 0 else chans[0]
            self.down_blocks.append(FiLMResBlock(cin, ch, e))
            if i + 1 < len(chans):
                self.downsamples.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))
        self.mid = FiLMResBlock(chans[-1], chans[-1], e)
        self.context = nn.Linear(chans[-1], e)  # global image context joins the K embedding at the bottleneck
        self.up_blocks = nn.ModuleList()
        for i in range(len(chans) - 2, -1, -1):
            self.up_blocks.append(FiLMResBlock(chans[i + 1] + chans[i], chans[i], e))
        self.head_norm = nn.GroupNorm(_groups(chans[0]), chans[0])
        self.defocus_head = nn.Conv2d(chans[0], 1, 3, padding=1)
        self.residual_head = nn.Conv2d(chans[0], 3, 3, padding=1) if cfg.residual else None
        if self.residual_head is not None:
            nn.init.zeros_(self.residual_head.weight)
            nn.init.zeros_(self.residual_head.bias)

    @property
    def size_multiple(self) -> int:
        """Working H and W must be multiples of this (px)."""
        down = 2 ** (len(self.config.channel_mult) - 1)
        return int(round(down / self.config.net_scale))

    def embed_k(self, K: torch.Tensor) -> torch.Tensor:
        """(B,) normalised K → (B, k_embed_dim); the input is clamp(K, k_min, k_max) / k_max, as published."""
        cfg = self.config
        k = K.float().clamp(cfg.k_min, cfg.k_max) / cfg.k_max
        return self.k_embed(k[:, None])

    def predict_defocus(self, image: torch.Tensor, K: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Run the U-Net: (normalised defocus m (B,1,H,W) in [0,1], colour residual (B,3,H,W) or None),
        both at the input's resolution."""
        cfg = self.config
        h, w = image.shape[-2:]
        m = self.size_multiple
        if h % m or w % m:
            raise ValueError(f"image size {w}x{h} must be a multiple of {m} px; resize it first")
        x = image
        if cfg.net_scale != 1:
            x = F.interpolate(x, scale_factor=cfg.net_scale, mode="bilinear", align_corners=False, antialias=True)
        x = x * 2 - 1
        emb = self.embed_k(K.to(image.device))
        h_ = self.stem(x)
        skips = []
        for i, block in enumerate(self.down_blocks):
            h_ = block(h_, emb)
            if i < len(self.downsamples):
                skips.append(h_)
                h_ = self.downsamples[i](h_)
        emb_mid = emb + self.context(h_.mean(dim=(2, 3)))
        h_ = self.mid(h_, emb_mid)
        for block in self.up_blocks:
            skip = skips.pop()
            h_ = F.interpolate(h_, size=skip.shape[-2:], mode="nearest")
            h_ = block(torch.cat([h_, skip], dim=1), emb_mid)
        feat = F.silu(self.head_norm(h_))
        defocus = torch.sigmoid(self.defocus_head(feat))
        residual = self.residual_head(feat) if self.residual_head is not None else None
        if cfg.net_scale != 1:
            defocus = F.interpolate(defocus, size=(h, w), mode="bilinear", align_corners=False)
            if residual is not None:
                residual = F.interpolate(residual, size=(h, w), mode="bilinear", align_corners=False)
        return defocus, residual

    def radii_at(self, width: int) -> list[float]:
        """The pyramid radii in px at a working width of ``width`` px."""
        return [r * width / NORMALIZED_K_WIDTH for r in self.config.radii_px]

    def pyramid(self, image: torch.Tensor) -> torch.Tensor:
        """The linear-light blur pyramid of ``image`` (B,3,H,W): (B, L, 3, H, W); it does not depend on K."""
        cfg = self.config
        linear = image.clamp(0.0, 1.0) ** cfg.gamma
        return blur_pyramid(linear, self.radii_at(image.shape[-1]), multiscale=cfg.multiscale_pyramid)

    def compose(self, image: torch.Tensor, K: torch.Tensor, pyramid: torch.Tensor) -> torch.Tensor:
        """The bokeh frame for ``K`` (B,) from ``image`` (B,3,H,W) and its precomputed :meth:`pyramid`."""
        cfg = self.config
        w = image.shape[-1]
        defocus, residual = self.predict_defocus(image, K)
        radius = K.clamp(min=0.0)[:, None, None, None] * (w / NORMALIZED_K_WIDTH) * defocus
        out = blend_pyramid(pyramid, radius, self.radii_at(w))
        out = out.clamp(min=1e-6) ** (1.0 / cfg.gamma)
        if residual is not None:
            out = out + residual
        return out.clamp(0.0, 1.0)

    def forward(self, image: torch.Tensor, K: torch.Tensor | float) -> torch.Tensor:
        """Bokeh rendering of ``image`` (B,3,H,W, display values in [0,1]) at normalised ``K`` (B,) or scalar."""
        if image.ndim != 4 or image.shape[1] != 3:
            raise ValueError(f"image must be (B, 3, H, W), got {tuple(image.shape)}")
        K = torch.as_tensor(K, dtype=torch.float32, device=image.device).reshape(-1).expand(image.shape[0])
        return self.compose(image, K, self.pyramid(image))

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


# ----------------------------------------------------------------------------------------------------------
# embedded weights
# ----------------------------------------------------------------------------------------------------------
WEIGHTS_FORMAT = "bokehdepth-compact-generator-v1"


def save_compact_generator(model: CompactGenerator, path: str | Path, extra_meta: dict | None = None) -> None:
    """Save the weights as safetensors with the config JSON (and ``extra_meta``) in the metadata."""
    from safetensors.torch import save_file

    meta = {"config": model.config.to_json(), "format": WEIGHTS_FORMAT}
    for k, v in (extra_meta or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta)


_RETRAIN = "bokehdepth train stage1 --model compact"


def read_generator_metadata(path: str | Path) -> dict[str, str]:
    """The safetensors metadata of a compact generator file (``config``, ``format``, training info)."""
    from .checkpoints import read_safetensors_metadata

    return read_safetensors_metadata(path, _RETRAIN)


def resolve_generator_weights(weights: str | Path | None) -> Path:
    """The compact generator file: ``weights`` (a file, or a folder holding ``compact_generator.safetensors``),
    or the embedded default when None."""
    from .checkpoints import resolve_local_weights

    return resolve_local_weights(weights, DEFAULT_WEIGHTS, _RETRAIN)


def load_compact_generator(weights: str | Path | None = None, device: str = "cpu") -> CompactGenerator:
    """Build the generator from a safetensors file (config in its metadata) and load it strictly.

    ``weights`` None loads the embedded default ``bokehdepth/weights/compact_generator.safetensors``.
    """
    from ..errors import CheckpointError
    from .checkpoints import load_state_dict_file, load_strict

    path = resolve_generator_weights(weights)
    meta = read_generator_metadata(path)
    try:
        cfg = CompactGeneratorConfig.from_json(meta["config"])
    except (KeyError, ValueError, TypeError) as exc:
        raise CheckpointError(
            f"{path}: not a compact generator checkpoint (no valid config in its safetensors metadata: {exc}); "
            "pass a file written by 'bokehdepth train stage1 --model compact'"
        ) from exc
    model = CompactGenerator(cfg)
    load_strict(model, load_state_dict_file(path), path)
    return model.to(device).eval()
