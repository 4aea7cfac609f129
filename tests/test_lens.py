"""Thin-lens model against values worked by hand (shared/reference/renderer.md §1)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from bokehdepth import lens
from bokehdepth.errors import InputError

CAM = dict(focal_mm=50.0, f_number=2.0, focus_m=2.0, sensor_mm=36.0, width_px=6000.0)


def test_textbook_K():
    # f²·s1/(2N(s1−f)) = 0.0025·2/(4·1.95) m²; ×1000·6000/36 px/m  → 12500/117
    assert lens.k_from_camera(**CAM) == pytest.approx(12500 / 117, rel=1e-12)
    assert lens.LensSettings(**CAM).K == pytest.approx(106.8376, abs=1e-4)


def test_coc_values():
    # CoC diameter at infinity: f²/(N(s1−f)) = 0.0025/(2·1.95) m = 0.641 mm
    d_inf = lens.coc_diameter_mm(1e12, 50, 2, 2)
    assert d_inf == pytest.approx(0.0025 / 3.9 * 1000, rel=1e-6)
    r = lens.coc_radius_px(np.array([1e12, 1.0, 4.0, 2.0]), 50, 2, 2, 36, 6000)
    K = 12500 / 117
    np.testing.assert_allclose(r, [K / 2, K / 2, K / 4, 0.0], rtol=1e-6, atol=1e-9)


def test_blur_radius_matches_coc():
    depth = np.array([0.7, 1.3, 3.0, 50.0])
    r1 = lens.blur_radius(1 / depth, lens.k_from_camera(**CAM), 1 / CAM["focus_m"])
    r2 = lens.coc_radius_px(depth, 50, 2, 2, 36, 6000)
    np.testing.assert_allclose(r1, r2, rtol=1e-12)


def test_f_number_round_trip():
    N = lens.f_number_for_K(30.0, 50, 2, 36, 6000)
    assert N == pytest.approx(7.12, abs=0.01)
    assert lens.k_from_camera(50, N, 2, 36, 6000) == pytest.approx(30.0, rel=1e-12)
    for K in (1.0, 17.5, 250.0):
        N = lens.f_number_for_K(K, 85, 3.0, 23.5, 4000)
        assert lens.k_from_camera(85, N, 3.0, 23.5, 4000) == pytest.approx(K, rel=1e-12)


def test_K_for_blur_and_depth_from_blur():
    K = lens.K_for_blur(20.0, depth_m=1.0, focus_m=2.0)
    assert K == pytest.approx(40.0)  # |1/1 − 1/2| = 0.5 → 20/0.5
    near, far = lens.depth_from_blur(np.array([20.0]), K, 2.0)
    assert near[0] == pytest.approx(1.0)
    assert np.isinf(far[0])  # 1/2 − 0.5 = 0: at infinity exactly → no finite far solution
    near, far = lens.depth_from_blur(np.array([10.0]), 40.0, 2.0)
    assert (near[0], far[0]) == (pytest.approx(1 / 0.75), pytest.approx(4.0))


def test_sensor_width_from_35mm():
    assert lens.sensor_width_from_35mm(50, 50, 6000, 4000) == pytest.approx(36.0, abs=0.01)
    assert lens.sensor_width_from_35mm(6.86, 24, 4032, 3024) == pytest.approx(9.89, abs=0.01)


def test_metric_normalized_round_trip():
    # 2.11–5.02 m span → K_n = 0.275·K_metric at the same width (renderer.md §1.6)
    dmin, dmax = 1 / 5.02, 1 / 2.11
    kn = lens.metric_to_normalized_K(100.0, dmin, dmax, width_px=512)
    assert kn == pytest.approx(100.0 * (dmax - dmin))
    assert kn / 100.0 == pytest.approx(0.275, abs=0.001)
    assert lens.normalized_to_metric_K(kn, dmin, dmax, 512) == pytest.approx(100.0)
    # width scaling: K defined at 1024 px → at 512 px it halves
    assert lens.metric_to_normalized_K(100.0, 0.0, 1.0, width_px=1024) == pytest.approx(50.0)
    assert lens.scale_K_for_resize(100.0, 1024, 512) == pytest.approx(50.0)


def test_radius_invariant_under_normalization(rng):
    depth = rng.uniform(0.5, 20, size=100)
    disp = 1 / depth
    dmin, dmax = disp.min(), disp.max()
    dn = (disp - dmin) / (dmax - dmin)
    K = 37.0
    kn = lens.metric_to_normalized_K(K, dmin, dmax, 512)
    np.testing.assert_allclose(lens.blur_radius(disp, K, disp[3]), lens.blur_radius(dn, kn, dn[3]), rtol=1e-9)


def test_torch_inputs():
    disp = torch.tensor([0.1, 0.5, 2.0], dtype=torch.float64)
    r = lens.blur_radius(disp, 10.0, 0.5)
    assert isinstance(r, torch.Tensor)
    assert torch.allclose(r, torch.tensor([4.0, 0.0, 15.0], dtype=torch.float64))


def test_focus_disp_from_pixel_is_robust():
    depth = np.full((9, 9), 2.0, dtype=np.float32)
    depth[4, 4] = 100.0  # one outlier
    depth[0, 0] = np.nan
    assert lens.focus_disp_from_pixel(depth, 4, 4) == pytest.approx(0.5)
    with pytest.raises(InputError, match="--focus-xy"):
        lens.focus_disp_from_pixel(depth, 20, 0)


@pytest.mark.parametrize(
    "kw, flag",
    [
        (dict(f_number=0.0), "--f-number"),
        (dict(f_number=-1.0), "--f-number"),
        (dict(focal_mm=0.0), "--focal-mm"),
        (dict(focus_m=0.04), "--focus-m"),  # closer than the 50 mm focal length
        (dict(sensor_mm=-3.0), "--sensor-mm"),
        (dict(width_px=0), "--width-px"),
    ],
)
def test_bad_camera_settings(kw, flag):
    with pytest.raises(InputError, match=flag):
        lens.k_from_camera(**{**CAM, **kw})


def test_lens_settings_radius_and_resize():
    s = lens.LensSettings(**CAM)
    assert s.radius_px(1.0) == pytest.approx(s.K / 2)
    half = s.resized(3000)
    assert half.K == pytest.approx(s.K / 2)
    assert math.isclose(s.disp_focus, 0.5)
