"""Joint bilateral upsampling: constants stay constant, an edge the guide shares stays sharp (bilinear blurs
it), gradients reach the low-resolution maps, and the compact model's ``upsample`` setting uses it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from bokehdepth.errors import InputError
from bokehdepth.models.guided_upsample import joint_bilateral_upsample


def test_constant_stays_constant_whatever_the_guide():
    torch.manual_seed(0)
    guide = torch.rand(2, 3, 32, 48)
    low = torch.full((2, 4, 8, 12), 3.25)
    out = joint_bilateral_upsample(low, guide, 4)
    assert out.shape == (2, 4, 32, 48)
    assert torch.allclose(out, torch.full_like(out, 3.25), atol=1e-5)


def test_an_edge_the_guide_shares_stays_sharp():
    """Low-res depth steps from 1 m to 10 m (log) at column 4 of 8 = pixel 16 of 32, where the guide steps from
    dark to bright. A pixel's samples across the edge differ from it by 0.8 in the guide: weight
    exp(−0.64·3 / (2·0.1²)) ≈ 1e-42 against 1, so every pixel keeps its own side's value; bilinear mixes the
    two over the 4 px nearest the edge."""
    low = torch.zeros(1, 1, 8, 8)
    low[..., 4:] = math.log(10.0)
    guide = torch.full((1, 3, 32, 32), 0.1)
    guide[..., 16:] = 0.9
    out = joint_bilateral_upsample(low, guide, 4, sigma_range=0.1)
    want = F.interpolate(low, scale_factor=4, mode="nearest")
    assert torch.allclose(out, want, atol=1e-6)
    bilinear = F.interpolate(low, scale_factor=4, mode="bilinear", align_corners=False)
    rel = ((bilinear.exp() - want.exp()).abs() / want.exp()).amax().item()
    assert rel > 1.0  # the near pixel beside the edge is read more than twice as far


def test_flat_guide_gives_a_smooth_interpolation_between_samples():
    low = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 1, 8, 8).contiguous()
    out = joint_bilateral_upsample(low, torch.zeros(1, 3, 32, 32), 4)
    row = out[0, 0, 16]
    assert bool((row[1:] >= row[:-1] - 1e-6).all())  # monotone, no overshoot
    centres = row[torch.arange(8) * 4 + 2]  # pixel 4j + 2 sits 0.125 sample right of sample j's centre
    assert torch.allclose(centres[2:-2], torch.arange(2.0, 6.0) + 0.125, atol=0.05)


def test_gradients_reach_the_low_resolution_maps():
    low = torch.randn(1, 2, 4, 4, requires_grad=True)
    joint_bilateral_upsample(low, torch.rand(1, 3, 16, 16), 4).sum().backward()
    assert low.grad is not None and bool((low.grad > 0).all())  # every sample gets some weight
    assert low.grad.sum().item() == pytest.approx(2 * 16 * 16, rel=1e-4)  # weights sum to 1 per pixel


def test_guide_of_the_wrong_size_is_refused():
    with pytest.raises(ValueError, match="guide 30x32 is not low 8x8 times scale 4"):
        joint_bilateral_upsample(torch.zeros(1, 1, 8, 8), torch.zeros(1, 3, 30, 32), 4)


def test_compact_model_upsample_setting():
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel

    tiny = dict(image_size=32, patch_size=8, dim=32, depth=2, num_heads=2, taps=(0, 1), dsfa_taps=(1,), head_dim=16)
    torch.manual_seed(0)
    model = CompactDepthModel(CompactDepthConfig(**tiny)).eval()
    ref = torch.rand(1, 3, 32, 32)
    stack = torch.rand(1, 2, 3, 32, 32)
    k = torch.tensor([[1.0, 2.0]])
    with torch.no_grad():
        plain = model(ref, stack, k)
        model.cfg.upsample = "joint_bilateral"
        guided = model(ref, stack, k)
        model.cfg.upsample_sigma = 1e6  # the range term vanishes: spatial weights only
        spatial = model(ref, stack, k)
        flat = model(torch.full_like(ref, 0.5), stack, k)
    assert guided["log_depth"].shape == plain["log_depth"].shape == (1, 32, 32)
    assert not torch.allclose(guided["log_depth"], plain["log_depth"], atol=1e-4)
    assert not torch.allclose(guided["log_depth"], spatial["log_depth"], atol=1e-4)
    assert flat["log_depth"].isfinite().all()
    with pytest.raises(InputError, match="upsample: 'nearest' is not one of bilinear, joint_bilateral"):
        CompactDepthConfig(**tiny, upsample="nearest")
    with pytest.raises(InputError, match="upsample_sigma: 0.0 must be > 0"):
        CompactDepthConfig(**tiny, upsample_sigma=0.0)


def test_set_inference_options_keeps_tensors_and_training_metadata(tmp_path):
    from safetensors import safe_open

    from bokehdepth.models.compact_depth import (
        CompactDepthConfig,
        CompactDepthModel,
        load_compact_depth,
        save_compact_depth,
        set_inference_options,
    )

    cfg = CompactDepthConfig(image_size=32, patch_size=8, dim=32, depth=2, num_heads=2, taps=(0, 1), dsfa_taps=(1,))
    src, dst = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    save_compact_depth(CompactDepthModel(cfg), src, {"train_args": {"seed": 4}})
    new = set_inference_options(src, dst, upsample="joint_bilateral", upsample_sigma=0.2)
    assert (new.upsample, new.upsample_sigma, new.dim) == ("joint_bilateral", 0.2, 32)
    a, b = load_compact_depth(src), load_compact_depth(dst)
    assert (a.cfg.upsample, b.cfg.upsample, b.cfg.upsample_sigma) == ("bilinear", "joint_bilateral", 0.2)
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    with safe_open(str(dst), "pt") as f:
        assert f.metadata()["train_args"] == '{"seed": 4}'
    with pytest.raises(ValueError, match=r"\['dim'\] are not inference options"):
        set_inference_options(src, dst, dim=64)
    with pytest.raises(InputError, match="upsample: 'cubic' is not one of"):
        set_inference_options(src, dst, upsample="cubic")
