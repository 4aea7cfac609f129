"""UniDepthV2 geometry: padding/resizing maths, cameras, rays ↔ intrinsics, against independent derivations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bokehdepth.models.unidepth_geometry import (
    compute_paddings,
    compute_resize,
    default_intrinsics,
    intrinsics_from_rays,
    intrinsics_to_input,
    intrinsics_to_network,
    plan_geometry,
    rays_from_intrinsics,
    resize_back,
)


@pytest.mark.parametrize(
    ("hw", "network"),
    [((240, 320), (392, 518)), ((512, 512), (518, 518)), ((480, 640), (490, 644)), ((1000, 1000), (784, 784))],
)
def test_network_size(hw, network):
    geom = plan_geometry(*hw)
    assert geom.network_hw == network
    h, w = hw
    # independent: factor = sqrt(clip(H·W, 2e5, 6e5) / (H·W)); each side floor(side·f) rounded up to 14
    f = math.sqrt(min(6e5, max(2e5, h * w)) / (h * w))
    assert geom.factor == pytest.approx(f)
    for side, net in zip(hw, network):
        assert net % 14 == 0 and net - 14 < math.floor(side * f) <= net


def test_no_padding_inside_ratio_bounds():
    for hw in [(240, 320), (200, 100), (100, 250)]:
        pads, padded = compute_paddings(*hw)
        assert pads == (0, 0, 0, 0) and padded == hw


def test_padding_wide_and_tall():
    # 100x300 (W/H = 3 > 2.5): pad rows until H = W/2.5 = 120, split evenly
    pads, padded = compute_paddings(100, 300)
    assert padded == (120, 300) and pads == (0, 0, 10, 10)
    # 300x100 (W/H = 1/3 < 0.5): pad columns until W = 0.5·H = 150
    pads, padded = compute_paddings(300, 100)
    assert padded == (300, 150) and pads == (25, 25, 0, 0)
    # odd split: the extra pixel goes to the end (bottom / right)
    pads, padded = compute_paddings(101, 300)
    assert padded == (120, 300) and pads == (0, 0, 9, 10)
    for h, w in [(37, 500), (500, 37), (10, 26)]:
        (l, r, t, b), (ph, pw) = compute_paddings(h, w)
        assert ph == h + t + b and pw == w + l + r
        assert 0.5 - 1.0 / ph <= pw / ph <= 2.5 + 1.0 / ph


def test_resize_keeps_pixel_budget():
    for h, w in [(50, 70), (600, 900), (777, 1001)]:
        f, (nh, nw) = compute_resize(h, w)
        assert 2e5 <= h * w * f * f <= 6e5 + 1e-6
        assert nh * nw >= 0.99 * h * w * f * f


def test_default_camera():
    K = default_intrinsics(240, 320).numpy()
    np.testing.assert_allclose(K, [[224.0, 0, 160], [0, 224.0, 120], [0, 0, 1]])
    # 0.7·W focal ⇒ horizontal FOV 2·atan(1/1.4) ≈ 71°
    assert math.degrees(2 * math.atan(160 / K[0, 0])) == pytest.approx(71.08, abs=0.01)


def test_intrinsics_to_network_and_back():
    geom = plan_geometry(100, 300)  # padded to 120x300, resized
    K = default_intrinsics(100, 300)
    Kn = intrinsics_to_network(K, geom)
    f = geom.factor
    # independent: principal point moves by the padding, then everything scales by the unrounded factor
    np.testing.assert_allclose(Kn[0, 0], 0.7 * 300 * f, rtol=1e-6)
    np.testing.assert_allclose(Kn[0, 2], (150 + 0) * f, rtol=1e-6)
    np.testing.assert_allclose(Kn[1, 2], (50 + 10) * f, rtol=1e-6)
    np.testing.assert_allclose(intrinsics_to_input(Kn, geom), K, rtol=1e-6, atol=1e-5)


def test_rays_match_inverse_projection():
    K = torch.tensor([[[50.0, 0, 17.3], [0, 60.0, 9.1], [0, 0, 1]]])
    rays = rays_from_intrinsics(K, 11, 13)[0].numpy()
    Kinv = np.linalg.inv(K[0].numpy().astype(np.float64))
    for y in range(11):
        for x in range(13):
            d = Kinv @ np.array([x + 0.5, y + 0.5, 1.0])
            np.testing.assert_allclose(rays[:, y, x], d / np.linalg.norm(d), atol=1e-6)


def test_rays_symmetry_and_unit_length():
    K = default_intrinsics(24, 32)[None]
    rays = rays_from_intrinsics(K, 24, 32)[0]
    torch.testing.assert_close(rays.norm(dim=0), torch.ones(24, 32))
    # centred camera: mirror columns flip x, mirror rows flip y
    torch.testing.assert_close(rays[0], -rays[0].flip(-1))
    torch.testing.assert_close(rays[1], -rays[1].flip(-2))
    assert (rays[2] > 0).all()


def test_intrinsics_round_trip_through_rays():
    K = torch.tensor([[[300.0, 0, 200.0], [0, 280.0, 130.0], [0, 0, 1]], [[90.0, 0, 30.0], [0, 95.0, 25.0], [0, 0, 1]]])
    back = intrinsics_from_rays(rays_from_intrinsics(K, 56, 70))
    torch.testing.assert_close(back, K, rtol=1e-4, atol=1e-3)


def test_resize_back_shape_and_constant():
    geom = plan_geometry(100, 300)
    x = torch.full((1, 1, *geom.network_hw), 3.5)
    out = resize_back(x, geom)
    assert out.shape[-2:] == (100, 300)
    torch.testing.assert_close(out, torch.full_like(out, 3.5))


def test_resize_back_crops_the_padding():
    geom = plan_geometry(20, 100, pixel_bounds=(2000, 6000))  # padded 40x100
    assert geom.paddings == (0, 0, 10, 10)
    # a map that is 1 inside the image and 0 in the padding comes back as ~1 away from the border rows
    ph, pw = geom.padded_hw
    m = torch.zeros(1, 1, ph, pw)
    m[..., 10:30, :] = 1.0
    net = torch.nn.functional.interpolate(m, size=geom.network_hw, mode="bilinear", align_corners=False)
    back = resize_back(net, geom)[0, 0]
    assert back.shape == (20, 100)
    assert back[3:-3].min() > 0.99
