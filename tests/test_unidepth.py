"""UniDepthV2-DSFA at a tiny config on CPU: forward, DSFA placement, camera handling, the predictor."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers_unidepth import one_thread, tiny_inputs, tiny_model

from bokehdepth.errors import InputError
from bokehdepth.io import Stack
from bokehdepth.models.unidepth_geometry import rays_from_intrinsics
from bokehdepth.models.unidepth_predictor import UniDepthPredictor

_single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


def _run(model, *args, **kw):
    with torch.no_grad():
        return model(*args, **kw)


def test_forward_shapes_and_ranges(model):
    image, stack, k = tiny_inputs(batch=2)
    out = _run(model, image, stack, k)
    assert out["depth"].shape == (2, 1, 56, 84)
    assert out["confidence"].shape == (2, 1, 56, 84)
    assert out["rays"].shape == (2, 3, 56, 84)
    assert out["intrinsics"].shape == (2, 3, 3)
    for v in out.values():
        assert torch.isfinite(v).all()
    # depth = ray_z · exp(clip(logdepth) + 2): within the clip range, along unit rays
    assert (out["radius"] >= np.exp(-6) - 1e-6).all() and (out["radius"] <= np.exp(10) + 1e-3).all()
    torch.testing.assert_close(out["depth"], out["rays"][:, 2:3] * out["radius"])
    torch.testing.assert_close(out["rays"].norm(dim=1), torch.ones(2, 56, 84))


def test_stack_changes_depth_and_single_frame_bypasses(model):
    image, stack, k = tiny_inputs()
    plain = _run(model, image)
    fused = _run(model, image, stack, k)
    bypass = _run(model, image, stack, k, single_frame=True)
    assert (fused["depth"] - plain["depth"]).abs().max() > 1e-4
    torch.testing.assert_close(bypass["depth"], plain["depth"], rtol=0, atol=0)
    # the reference CLS tokens pass through DSFA unchanged, so the camera head sees the same tokens
    torch.testing.assert_close(fused["intrinsics"], plain["intrinsics"], rtol=1e-5, atol=1e-4)


def test_k_matters_and_frame_order_does_not(model):
    image, stack, k = tiny_inputs()
    base = _run(model, image, stack, k)["depth"]
    other_k = _run(model, image, stack, k * 0.5)["depth"]
    assert (base - other_k).abs().max() > 1e-4
    perm = torch.tensor([2, 0, 1])
    permuted = _run(model, image, stack[:, perm], k[:, perm])["depth"]
    torch.testing.assert_close(permuted, base, rtol=1e-4, atol=1e-4)


def test_dsfa_is_post_hoc_per_stage():
    """With DSFA only at the last stage, the first three stages' features equal the image-only ones:
    refined tokens never flow into later ViT blocks, and earlier taps are untouched."""
    model = tiny_model(fusion_layers=(3,))
    image, stack, k = tiny_inputs()
    with torch.no_grad():
        f_plain, c_plain = model.pixel_encoder(image)
        f_fused, c_fused = model.pixel_encoder(image, stack, k)
    for i in range(3):
        torch.testing.assert_close(f_fused[i], f_plain[i], rtol=1e-5, atol=1e-5)
    assert (f_fused[3] - f_plain[3]).abs().max() > 1e-4
    for a, b in zip(c_fused, c_plain):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_identity_dsfa_equals_plain_model():
    model = tiny_model(identity_init=True)
    image, stack, k = tiny_inputs()
    torch.testing.assert_close(_run(model, image, stack, k)["depth"], _run(model, image)["depth"], rtol=1e-5, atol=1e-5)


def test_given_camera_replaces_predicted_rays(model):
    image, _, _ = tiny_inputs()
    K = torch.tensor([[[40.0, 0.0, 42.0], [0.0, 40.0, 28.0], [0.0, 0.0, 1.0]]])
    out = _run(model, image, intrinsics=K)
    torch.testing.assert_close(out["rays"], rays_from_intrinsics(K, 56, 84))
    pred = _run(model, image)
    torch.testing.assert_close(pred["rays"], rays_from_intrinsics(pred["intrinsics"], 56, 84))
    torch.testing.assert_close(out["intrinsics"], pred["intrinsics"])  # the head's prediction is still reported
    # a narrower camera (longer focal) changes the rays, hence the ray conditioning and the depth
    narrow = _run(model, image, intrinsics=K * torch.tensor([[[3.0], [3.0], [1.0]]]).expand(1, 3, 3) / 1.0)
    assert (narrow["depth"] - out["depth"]).abs().max() > 1e-5


# -- predictor -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def predictor(model):
    return UniDepthPredictor(model)


def _image(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random((h, w, 3), dtype=np.float32)


def _stack(image: np.ndarray, Ks, convention: str) -> Stack:
    rng = np.random.default_rng(5)
    frames = [image] + [np.clip(image + rng.normal(0, 0.1, image.shape), 0, 1).astype(np.float32) for _ in Ks]
    return Stack(frames=frames, K=[0.0, *Ks], reference=0, K_convention=convention, source="generated")


def test_predict_output_size_and_info(predictor):
    image = _image(30, 50)
    stack = _stack(image, [10.0, 20.0, 30.0], "normalized")
    res = predictor.predict(image, stack)
    assert res.depth.shape == (30, 50) and res.depth.dtype == np.float32
    assert res.confidence.shape == (30, 50)
    assert np.isfinite(res.depth).all() and (res.depth > 0).all()
    assert res.info["backend"] == "udv2-dsfa"
    assert res.info["K_model"] == [10.0, 20.0, 30.0]  # normalised K passed raw, reference frame excluded
    h, w = res.info["network_size"]
    assert h % 14 == 0 and w % 14 == 0 and 2000 <= h * w <= 6000 + 14 * (h + w)
    np.testing.assert_allclose(res.info["camera"], [[35.0, 0, 25.0], [0, 35.0, 15.0], [0, 0, 1]])


def test_predict_single_frame_ignores_stack(predictor):
    image = _image(30, 50)
    stack = _stack(image, [10.0, 20.0], "normalized")
    alone = predictor.predict(image, None).depth
    np.testing.assert_array_equal(predictor.predict(image, stack, single_frame=True).depth, alone)
    assert np.abs(predictor.predict(image, stack).depth - alone).max() > 1e-5


def test_predict_matches_manual_pipeline(predictor, model):
    """predict() = pad + resize + normalise → model (default camera) → resize back + crop, by hand."""
    image = _image(20, 100, seed=3)  # W/H = 5: padded to 40x100
    res = predictor.predict(image, None)
    geom = predictor.geometry(20, 100)
    assert geom.paddings == (0, 0, 10, 10)
    x = torch.from_numpy(image).permute(2, 0, 1)[None]
    x = torch.nn.functional.pad(x, (0, 0, 10, 10))
    x = torch.nn.functional.interpolate(x, size=geom.network_hw, mode="bilinear", align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1
    )
    f = geom.factor
    K = torch.tensor([[[70.0 * f, 0, 50.0 * f], [0, 70.0 * f, 20.0 * f], [0, 0, 1]]])
    with torch.no_grad():
        d = model(x, intrinsics=K)["depth"]
    d = torch.nn.functional.interpolate(d, size=(40, 100), mode="bilinear", align_corners=False)[0, 0, 10:30]
    np.testing.assert_allclose(res.depth, d.numpy(), rtol=1e-4)


def test_predict_metric_stack_converts_K(predictor):
    image = _image(30, 50)
    stack = _stack(image, [0.5, 1.0], "metric")
    res = predictor.predict(image, stack)
    span = res.info["disparity_span"]
    expected = np.array([0.5, 1.0]) * (span["disp_max"] - span["disp_min"]) * 512 / 50
    np.testing.assert_allclose(res.info["K_model"], expected, rtol=1e-5)
    # the span comes from the single-frame pass of the same model
    d0 = predictor.predict(image, None).depth
    lo, hi = np.percentile(1.0 / d0, [1, 99])
    np.testing.assert_allclose([span["disp_min"], span["disp_max"]], [lo, hi], rtol=1e-4)


def test_predict_user_intrinsics(predictor):
    image = _image(30, 50)
    K = np.array([[80.0, 0, 20.0], [0, 80.0, 14.0], [0, 0, 1]], np.float32)
    res = predictor.predict(image, None, intrinsics=K)
    assert res.info["camera_source"] == "user"
    assert np.abs(res.depth - predictor.predict(image, None).depth).max() > 1e-6
    with pytest.raises(InputError, match="intrinsics"):
        predictor.predict(image, None, intrinsics=np.eye(2))


def test_predict_stack_size_mismatch_is_input_error(predictor):
    image = _image(30, 50)
    with pytest.raises(InputError, match="--stack"):
        predictor.predict(image, _stack(_image(20, 20), [10.0], "normalized"))


def test_predict_autocast_bfloat16_close_to_float32(model):
    image = _image(30, 50)
    fp32 = UniDepthPredictor(model).predict(image, None).depth
    bf16 = UniDepthPredictor(model, dtype=torch.bfloat16).predict(image, None).depth
    assert np.isfinite(bf16).all()
    assert np.median(np.abs(bf16 - fp32) / fp32) < 0.05
