"""The compact Stage-1 generator: blur pyramid maths, the tiny network, weights I/O and the embedded weights'
behaviour (blur grows with K)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bokehdepth.errors import CheckpointError
from bokehdepth.models.compact_generator import (
    DEFAULT_WEIGHTS,
    CompactGenerator,
    CompactGeneratorConfig,
    blend_pyramid,
    blur_pyramid,
    disc_kernel,
    load_compact_generator,
    read_generator_metadata,
    save_compact_generator,
)

TINY = CompactGeneratorConfig(base_channels=8, channel_mult=(1, 2), k_embed_dim=16, radii_px=(0.0, 2.0, 5.0))


def _textured(h: int = 96, w: int = 128) -> np.ndarray:
    """A real photograph (scikit-image's astronaut) resized to (h, w), float32 in [0, 1]."""
    import cv2
    from skimage import data

    img = data.astronaut().astype(np.float32) / 255.0
    return cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA)


def _grad_energy(img: np.ndarray) -> float:
    """Mean squared finite-difference gradient (a sharpness measure: blur lowers it)."""
    gx = np.diff(img, axis=1)
    gy = np.diff(img, axis=0)
    return float((gx**2).mean() + (gy**2).mean())


def test_disc_kernel_sums_to_one_and_has_the_disc_area():
    k = disc_kernel(6.0, 17, dtype=torch.float64)
    assert torch.isclose(k.sum(), torch.tensor(1.0, dtype=torch.float64))
    # unnormalised area of the anti-aliased disc ≈ π r²
    raw = disc_kernel(6.0, 17, dtype=torch.float64) / k.max()
    assert abs(float(raw.sum()) - np.pi * 36) / (np.pi * 36) < 0.03
    assert disc_kernel(0.0, 5)[2, 2] == 1.0  # radius 0 → a delta


def test_blur_pyramid_equals_direct_convolution_with_reflect_padding():
    x = torch.rand(2, 3, 40, 52, dtype=torch.float32)
    radii = [0.0, 1.5, 4.0]
    pyr = blur_pyramid(x, radii)
    assert pyr.shape == (2, 3, 3, 40, 52)
    assert torch.equal(pyr[:, 0], x)
    pad = 5  # ceil(max radius) + 1
    for i, r in enumerate(radii[1:], start=1):
        k = disc_kernel(r, 2 * pad + 1)
        ref = F.conv2d(F.pad(x, (pad,) * 4, mode="reflect"), k[None, None].repeat(3, 1, 1, 1), groups=3)
        assert torch.allclose(pyr[:, i], ref, atol=1e-5)


def test_blend_pyramid_interpolates_between_levels_and_is_differentiable():
    pyr = torch.rand(1, 3, 3, 6, 6)
    radii = [0.0, 2.0, 5.0]
    for r, expect in ((2.0, pyr[:, 1]), (3.5, 0.5 * (pyr[:, 1] + pyr[:, 2])), (9.0, pyr[:, 2]), (0.0, pyr[:, 0])):
        out = blend_pyramid(pyr, torch.full((1, 1, 6, 6), r), radii)
        assert torch.allclose(out, expect, atol=1e-6)
    radius = torch.full((1, 1, 6, 6), 1.0, requires_grad=True)
    blend_pyramid(pyr, radius, radii).sum().backward()
    expected = (pyr[:, 1] - pyr[:, 0]).sum(dim=1, keepdim=True) / 2.0  # d/dr of the linear blend
    assert torch.allclose(radius.grad, expected, atol=1e-6)


def test_tiny_generator_forward_backward():
    torch.manual_seed(0)
    model = CompactGenerator(TINY)
    x = torch.rand(2, 3, 32, 48)
    out = model(x, torch.tensor([3.0, 25.0]))
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert out.min() >= 0 and out.max() <= 1
    (out - x).abs().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(float(p.grad.abs().sum()) for p in model.parameters()) > 0


def test_K_zero_is_the_identity_without_residual():
    model = CompactGenerator(CompactGeneratorConfig(base_channels=8, channel_mult=(1, 2), residual=False)).eval()
    x = torch.rand(1, 3, 32, 32) * 0.9 + 0.05
    with torch.no_grad():
        out = model(x, 0.0)
    assert torch.allclose(out, x, atol=1e-5)


def test_size_not_a_multiple_is_refused():
    model = CompactGenerator(TINY)
    with pytest.raises(ValueError, match="multiple of"):
        model(torch.rand(1, 3, 30, 32), 5.0)


def test_save_load_round_trip_and_strict_errors(tmp_path):
    torch.manual_seed(1)
    model = CompactGenerator(TINY).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "g.safetensors"
    save_compact_generator(model, path, {"note": "test"})
    meta = read_generator_metadata(path)
    assert CompactGeneratorConfig.from_json(meta["config"]) == TINY and meta["note"] == "test"
    loaded = load_compact_generator(path)
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x, 12.0), loaded(x, 12.0))

    from safetensors.torch import load_file, save_file

    sd = load_file(str(path))
    sd.pop(next(iter(sd)))
    bad = tmp_path / "missing_key.safetensors"
    save_file(sd, str(bad), metadata=meta)
    with pytest.raises(CheckpointError, match="missing"):
        load_compact_generator(bad)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="junk.safetensors"):
        load_compact_generator(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_compact_generator(tmp_path / "absent.safetensors")


def test_embedded_weights_are_small_and_self_describing():
    assert DEFAULT_WEIGHTS.is_file()
    assert DEFAULT_WEIGHTS.stat().st_size <= 20 * 1024 * 1024
    meta = read_generator_metadata(DEFAULT_WEIGHTS)
    cfg = CompactGeneratorConfig.from_json(meta["config"])
    assert int(meta["trained_steps"]) > 0, "the embedded weights must be trained (see docs/stage1.md)"
    assert load_compact_generator().config == cfg


def test_embedded_blur_grows_monotonically_with_K_on_a_textured_image():
    model = load_compact_generator()
    img = _textured(96, 128)
    x = torch.from_numpy(img).permute(2, 0, 1)[None]
    energies = []
    with torch.inference_mode():
        pyramid = model.pyramid(x)
        for k in (1.0, 5.0, 10.0, 20.0, 30.0):
            out = model.compose(x, torch.tensor([k]), pyramid)[0].permute(1, 2, 0).numpy()
            energies.append(_grad_energy(out))
    sharp = _grad_energy(img)
    assert energies[0] <= sharp * 1.02
    assert all(b < a for a, b in zip(energies, energies[1:])), energies
    assert energies[-1] < 0.9 * sharp, (energies, sharp)


def test_compact_module_reexports_both_embedded_models():
    from bokehdepth.models import compact

    assert compact.CompactGenerator is CompactGenerator
    assert compact.GENERATOR_WEIGHTS == DEFAULT_WEIGHTS
    from bokehdepth.models.compact_depth import CompactDepthModel

    assert compact.CompactDepthModel is CompactDepthModel
    with pytest.raises(AttributeError):
        compact.no_such_name  # noqa: B018


def test_multiscale_pyramid_agrees_with_the_exact_fft_blur():
    from bokehdepth.models.compact_generator import DEFAULT_RADII_PX

    img = torch.from_numpy(_textured(256, 320)).permute(2, 0, 1)[None] ** 2.2
    radii = [r * 320 / 512 for r in DEFAULT_RADII_PX]  # up to 18.75 px: all three grid scales are used
    fast, exact = blur_pyramid(img, radii), blur_pyramid(img, radii, multiscale=False)
    assert fast.shape == exact.shape == (1, len(radii), 3, 256, 320)
    for i, r in enumerate(radii):
        mse = float(((fast[:, i] - exact[:, i]) ** 2).mean())
        assert 10 * np.log10(1.0 / max(mse, 1e-20)) > 40.0, (r, mse)
