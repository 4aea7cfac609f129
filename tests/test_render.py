"""Renderer physics and the fast CPU path against derivations and against the exact direct scatter."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_render import analytic_kernel, blocky_defocus, compare_impls, psnr
from scipy.signal import fftconvolve

import bokehdepth
from bokehdepth.errors import InputError
from bokehdepth.render import cpu, kernels, layers, reference
from bokehdepth.render.api import render, render_stack


def _plane(h: int, w: int, disp: float) -> np.ndarray:
    return np.full((h, w), disp, dtype=np.float32)


# --------------------------------------------------------------------------------------------------------
# the kernel itself
# --------------------------------------------------------------------------------------------------------
def test_anti_aliased_disc_rows_sum_to_the_segment_length():
    """Each row of the anti-aliased disc sums to 2·√(r² − dy²) (its box-filtered segment), the normaliser is
    the sum over rows, r ≤ 0.5 is a single pixel, and the total grows continuously with r."""
    for r in (0.3, 0.9, 2.5, 7.3):
        total = 0.0
        for dy in range(-kernels.reach(r), kernels.reach(r) + 1):
            n, f = kernels.aa_row(r, abs(dy))
            row = 0.0 if n < 0 else (f if n == 0 else 2 * n - 1 + 2 * f)
            if dy != 0 and n >= 0:
                assert row == pytest.approx(2 * np.sqrt(max(r * r - dy * dy, 0.0)), abs=1e-12)
            total += row
        assert kernels.disc_sum_aa(r) == pytest.approx(total, rel=1e-12)
    assert kernels.aa_row(0.4, 0) == (0, 1.0) and kernels.disc_sum_aa(0.4) == 1.0
    for r in np.arange(0.5, 8.0, 0.5):  # rows appear (integer r) and end pixels move on (half-integer r)
        assert abs(kernels.disc_sum_aa(r + 1e-9) - kernels.disc_sum_aa(r - 1e-9)) < 1e-3
    assert kernels.disc_sum_aa(8.0) == pytest.approx(np.pi * 64, rel=0.03)  # rows sample the disc at their centres


def test_kernel_plateau_tail_and_half_radius():
    r = 7.3
    assert kernels.edge_weight(r, r - 1.0) == 1.0 and kernels.edge_weight(r, 0.0) == 1.0
    assert kernels.edge_weight(r, r + 0.5) == 0.0
    assert abs(kernels.edge_weight(r, r) - 0.5) < 0.01  # 50 % at δ = r (logistic edge)
    # in focus up to r = 0.5: only the centre pixel has weight
    for r in (0.0, 0.2, 0.5):
        assert kernels.edge_weight(r, 1.0) == 0.0
    # the O(r) span/ring sum equals the brute-force window sum, for many radii
    for r in np.linspace(0.0, 12.0, 97):
        n = kernels.reach(r)
        yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
        brute = sum(kernels.edge_weight(r, float(np.hypot(x, y))) for x, y in zip(xx.ravel(), yy.ravel()))
        assert kernels.disc_sum(r) == pytest.approx(brute, rel=1e-12)


def test_edge_table_matches_formula():
    table = kernels.edge_table()
    for r, delta in [(5.0, 4.2), (5.0, 5.3), (3.3, 3.0), (0.8, 1.0), (10.0, 10.49)]:
        assert kernels.edge_weight_tab(r, delta, table) == pytest.approx(kernels.edge_weight(r, delta), abs=1e-6)


# --------------------------------------------------------------------------------------------------------
# derivations
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpu", "exact"])
def test_plane_equals_convolution_with_analytic_disc(backend, rng):
    """A fronto-parallel textured plane = its convolution with the disc of radius K·|disp − disp_focus|."""
    h, w = 56, 60
    image = rng.random((h, w, 3)).astype(np.float32)
    K, disp, focus = 12.0, 0.9, 0.4  # r = 6 px
    out = render(image, _plane(h, w, disp), K, focus, gamma=1.0, backend=backend)
    kern = analytic_kernel(K * abs(disp - focus))
    n = kern.shape[0] // 2
    for c in range(3):
        expected = fftconvolve(image[..., c].astype(np.float64), kern, mode="same")
        assert np.abs(out[n:-n, n:-n, c] - expected[n:-n, n:-n]).max() < 2e-6


@pytest.mark.parametrize("occlusion", [True, False])
def test_in_focus_is_unchanged(occlusion, rng):
    image = rng.random((40, 48, 3)).astype(np.float32)
    disp = rng.uniform(0.1, 2.0, (40, 48)).astype(np.float32)
    # disp == disp_focus everywhere
    out = render(image, _plane(40, 48, 0.7), 30.0, 0.7, occlusion=occlusion)
    assert np.array_equal(out, image)
    # K = 0, any gamma
    for gamma in (1.0, 2.2, 4.0):
        assert np.array_equal(render(image, disp, 0.0, 0.5, gamma=gamma, occlusion=occlusion), image)
    # every blur radius below half a pixel: the tail cut makes each source an identity
    small = 0.5 + 0.45 * (disp - disp.min()) / (disp.max() - disp.min())
    out = render(image, small, 1.0, 0.5, gamma=2.2, occlusion=occlusion, backend="cpu")
    assert np.abs(out - image).max() < 2e-6


@pytest.mark.parametrize("backend", ["cpu", "exact"])
@pytest.mark.parametrize("occlusion", [True, False])
def test_constant_image_stays_constant(backend, occlusion, rng):
    d = blocky_defocus(rng, 40, 44, 9.0)
    colour = np.array([0.2, 0.55, 0.9], dtype=np.float32)
    image = np.broadcast_to(colour, (40, 44, 3)).copy()
    out = render(image, d / 10.0 + 1.0, 10.0, 1.0, gamma=2.2, occlusion=occlusion, backend=backend)
    assert np.abs(out - colour).max() < 1e-6


def test_energy_is_conserved_by_the_per_source_normaliser(rng):
    """Σ un-normalised accumulation = Σ input when the canvas is padded by the largest reach (float64)."""
    h, w, pad = 24, 28, 10
    lin = np.zeros((h + 2 * pad, w + 2 * pad, 3))
    lin[pad:-pad, pad:-pad] = rng.random((h, w, 3))
    radius = np.zeros((h + 2 * pad, w + 2 * pad))
    radius[pad:-pad, pad:-pad] = rng.uniform(0.0, 9.4, (h, w))
    weight = np.zeros_like(radius)
    weight[pad:-pad, pad:-pad] = 1.0
    acc = reference.scatter_layer(lin, radius, weight)
    assert acc[..., :3].sum(axis=(0, 1)) == pytest.approx(lin.sum(axis=(0, 1)), rel=1e-12)
    assert acc[..., 3].sum() == pytest.approx(h * w, rel=1e-12)


@pytest.mark.parametrize("backend", ["cpu", "exact"])
def test_dot_becomes_disc_of_calibrated_radius(backend):
    """A bright dot at depth z, focus s1: a disc whose 50 % radius is K·|1/z − 1/s1| ± 0.5 px."""
    h = w = 41
    K, z, s1 = 22.0, 2.0, 1.0  # r = 22·|0.5 − 1| = 11 px
    image = np.zeros((h, w, 3), dtype=np.float32)
    image[20, 20] = 1.0
    out = render(image, _plane(h, w, 1.0 / z), K, focus_m=s1, gamma=1.0, occlusion=False, backend=backend)
    profile = out[20, 20:, 0].astype(np.float64)
    half = profile[0] / 2.0
    i = int(np.argmax(profile < half))
    r50 = (i - 1) + (profile[i - 1] - half) / (profile[i - 1] - profile[i])
    assert abs(r50 - K * abs(1 / z - 1 / s1)) <= 0.5
    # the disc is round: the same 50 % radius along a column and along the diagonal
    col = out[20:, 20, 0]
    assert np.allclose(col, profile, atol=1e-7)
    assert out[20 + 7, 20 + 7, 0] > half > out[20 + 8, 20 + 8, 0]  # 7√2 = 9.9 < 11 < 8√2 = 11.3


def test_gamma_linearity(rng):
    """With γ = 1 the renderer is linear in the image (weights depend on depth only), occlusion included."""
    d = blocky_defocus(rng, 36, 40, 7.0)
    a = rng.random((36, 40, 3)).astype(np.float32) * 0.5
    b = rng.random((36, 40, 3)).astype(np.float32) * 0.5
    disp = d / 7.0 + 1.0
    for occ in (True, False):
        ra, rb, rab = (render(x, disp, 7.0, 1.0, gamma=1.0, occlusion=occ) for x in (a, b, a + b))
        assert np.abs(rab - (ra + rb)).max() < 2e-6
    # γ > 1 weights bright pixels more: a bright dot over grey makes a brighter disc than with γ = 1
    img = np.full((31, 31, 3), 0.2, dtype=np.float32)
    img[15, 15] = 1.0
    plane = _plane(31, 31, 1.5)
    g1 = render(img, plane, 10.0, 1.0, gamma=1.0)[15, 15 + 3, 0]
    g4 = render(img, plane, 10.0, 1.0, gamma=4.0)[15, 15 + 3, 0]
    assert g4 > g1 > 0.2


# --------------------------------------------------------------------------------------------------------
# fast == exact
# --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("occlusion", [True, False])
@pytest.mark.parametrize("seed", [0, 1])
def test_cpu_matches_exact(occlusion, seed):
    rng = np.random.default_rng(seed)
    h, w = 48 + 8 * seed, 52
    lin = rng.random((h, w, 3))
    d = blocky_defocus(rng, h, w, 10.0)
    max_abs, db = compare_impls(reference, cpu, lin, d, occlusion)
    assert max_abs < 1e-5 and db > 80.0


def test_cpu_matches_exact_through_api(rng):
    image = rng.random((40, 40, 3)).astype(np.float32)
    disp = rng.uniform(0.2, 1.5, (40, 40)).astype(np.float32)
    a = render(image, disp, 8.0, 0.8, backend="cpu", multiscale=False)  # full resolution: the exact kernel
    b = render(image, disp, 8.0, 0.8, backend="exact")
    assert psnr(a, b) > 60.0


# --------------------------------------------------------------------------------------------------------
# occlusion
# --------------------------------------------------------------------------------------------------------
def _edge_scene(fg_radius: float, bg_radius: float, size: int = 48):
    """Left half: foreground (black, nearer); right half: background (white, farther)."""
    h = w = size
    image = np.ones((h, w, 3), dtype=np.float32)
    image[:, : w // 2] = 0.0
    # signed defocus: the foreground is nearer than the background
    d = np.where(np.arange(w)[None, :] < w // 2, fg_radius, -bg_radius) * np.ones((h, 1))
    return image, d / 10.0 + 1.0, w // 2


@pytest.mark.parametrize("backend", ["cpu", "exact"])
def test_sharp_foreground_stays_sharp(backend):
    """Sharp subject over a blurred background: plain scatter bleeds the background onto the subject;
    slab compositing keeps it ≤ 1 %."""
    image, disp, edge = _edge_scene(0.0, 8.0)
    plain = render(image, disp, 10.0, 1.0, gamma=1.0, occlusion=False, backend=backend)
    occl = render(image, disp, 10.0, 1.0, gamma=1.0, occlusion=True, backend=backend)
    row = 24
    bleed_plain = plain[row, edge - 1, 0]
    assert bleed_plain > 0.2  # ~1/3 of the background colour in the first subject pixel
    assert plain[row, edge - 6, 0] > 0.01
    assert occl[row, :edge, :].max() <= 0.01  # the subject stays black: no halo
    # the background beside the subject is its own (renormalised) colour, not darkened by the hole
    assert occl[row, edge + 1 :, :].min() > 0.99


@pytest.mark.parametrize("backend", ["cpu", "exact"])
def test_blurred_foreground_partially_occludes(backend):
    """Blurred foreground over a sharp background: the foreground spills semi-transparently over the
    background (a ramp from ≈50 % at the silhouette to 0 at r px), and the background stays sharp beyond."""
    image, disp, edge = _edge_scene(8.0, 0.0)
    out = render(image, disp, 10.0, 1.0, gamma=1.0, occlusion=True, backend=backend)
    ramp = 1.0 - out[24, edge:, 0]  # foreground (black) fraction on the background side
    assert 0.3 < ramp[0] < 0.7
    assert np.all(np.diff(ramp[:10]) <= 1e-6)  # decreasing smoothly away from the silhouette
    assert ramp[2] > 0.05 and ramp[9:].max() < 1e-3
    # single RGB-D limitation: inside the silhouette there is no background to see, so it is pure foreground
    assert out[24, :edge, 0].max() < 1e-3


# --------------------------------------------------------------------------------------------------------
# API: focus, stacks, validation, highlight
# --------------------------------------------------------------------------------------------------------
def test_focus_specs_agree(rng):
    image = rng.random((32, 32, 3)).astype(np.float32)
    disp = np.full((32, 32), 0.25, dtype=np.float32)
    disp[:, 16:] = 0.5
    a = render(image, disp, 20.0, 0.5)
    b = render(image, disp, 20.0, focus_m=2.0)
    c = render(image, disp, 20.0, focus_xy=(24, 10))
    assert np.array_equal(a, b) and np.array_equal(a, c)
    assert np.array_equal(a[:, 20:], image[:, 20:])  # the focused half is untouched away from the edge
    assert callable(bokehdepth.render) and np.array_equal(bokehdepth.render(image, disp, 20.0, 0.5), a)


def test_render_stack_frames_and_metadata(rng):
    image = rng.random((24, 28, 3)).astype(np.float32)
    disp = rng.uniform(0.3, 1.0, (24, 28)).astype(np.float32)
    stack = render_stack(image, disp, [4.0, 9.0], focus_m=2.0)
    assert stack.K == [0.0, 4.0, 9.0] and stack.reference == 0 and stack.disp_focus == 0.5
    assert stack.K_convention == "metric" and stack.source == "render" and stack.gamma == 2.2
    assert np.array_equal(stack.frames[0], image)
    assert np.array_equal(stack.frames[2], render(image, disp, 9.0, 0.5))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"disp": "nan"}, "NaN"),
        ({"disp": "small"}, "resize"),
        ({"disp": "negative"}, ">= 0"),
        ({"K": -1.0}, "--K"),
        ({"K": float("inf")}, "--K"),
        ({"focus_m": 2.0}, "exactly one"),
        ({"gamma": 0.0}, "--gamma"),
        ({"backend": "gpu"}, "backend"),
        ({"image": "range"}, r"\[0, 1\]"),
        ({"image": "grey"}, "RGB"),
    ],
)
def test_bad_inputs_raise_one_line_input_errors(kwargs, match, rng):
    image = rng.random((16, 16, 3)).astype(np.float32)
    disp = rng.uniform(0.2, 1.0, (16, 16)).astype(np.float32)
    args = {"image": image, "disp": disp, "K": 5.0, "disp_focus": 0.5}
    special = {
        "nan": np.where(np.eye(16) > 0, np.nan, disp),
        "small": disp[:8],
        "negative": disp - 2.0,
        "range": image * 3.0,
        "grey": image[..., 0],
    }
    for key, value in kwargs.items():
        args[key] = special.get(value, value) if isinstance(value, str) and key != "backend" else value
    with pytest.raises(InputError, match=match) as exc:
        render(**args)
    assert "\n" not in str(exc.value)


def test_highlight_boosts_bright_out_of_focus_pixels():
    img = np.full((31, 31, 3), 0.1, dtype=np.float32)
    img[15, 15] = 1.0
    plane = _plane(31, 31, 1.5)
    base = render(img, plane, 10.0, 1.0)
    boosted = render(img, plane, 10.0, 1.0, highlight=True)
    assert boosted[15, 18, 0] > base[15, 18, 0] * 1.05
    assert np.allclose(boosted[2, 2], base[2, 2], atol=1e-6)  # dark pixels are not boosted


def test_layers_split_weights_and_order(rng):
    d = rng.uniform(-20, 20, (20, 20))
    split = layers.assign_layers(d, occlusion=True, step=1.0, max_layers=16)
    assert split.n_layers <= 16 and np.all(np.diff(split.centres) < 0)
    assert 0.0 in split.centres  # the focus plane is a slab centre
    assert np.allclose(split.alpha.sum(axis=2), 1.0)
    recon = (split.centres[split.index[..., 0]] * split.alpha[..., 0]) + np.where(
        split.index[..., 1] >= 0, split.centres[np.maximum(split.index[..., 1], 0)] * split.alpha[..., 1], 0.0
    )
    assert np.allclose(recon, d)  # linear split: the weighted centres give back each pixel's defocus
