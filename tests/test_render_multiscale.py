"""The multi-resolution CPU path: slab scales, exactness where it does not apply, and ≥ 40 dB from the
exact direct scatter where it does."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_render import blocky_defocus, psnr

from bokehdepth.render import cpu, layers, reference
from bokehdepth.render.api import render


def _display(lin: np.ndarray, gamma: float = 2.2) -> np.ndarray:
    return np.clip(np.maximum(lin, 0.0) ** (1.0 / gamma), 0.0, 1.0)


def test_slab_scales_are_powers_of_two_growing_with_radius():
    d = np.linspace(-40.0, 40.0, 81)[None, :]
    split = layers.assign_layers(d, occlusion=True, max_layers=32)
    scales = cpu.slab_scales(split, base_radius=6.0, max_scale=8)
    spacing = split.centres[0] - split.centres[1]
    r_top = np.abs(split.centres) + spacing
    assert np.all(np.isin(scales, [1, 2, 4, 8]))
    assert np.all(scales[r_top <= 6.0] == 1)  # small blur: full resolution
    fits = r_top / scales <= 6.0 + 1e-6
    assert np.all(fits | (scales == 8))  # each slab's radius fits the base radius at its scale (or the cap)
    coarse = scales > 1
    assert np.all(r_top[coarse] / (scales[coarse] // 2) > 6.0)  # and the scale is the smallest that does
    order = np.argsort(np.abs(split.centres), kind="stable")
    assert np.all(np.diff(scales[order]) >= 0)
    one = layers.assign_layers(d, occlusion=False)
    assert cpu.slab_scales(one).tolist() == [1]


def test_groups_are_contiguous_runs():
    assert cpu._groups(np.array([4, 4, 2, 1, 1, 2, 4])) == [(0, 2, 4), (2, 1, 2), (3, 2, 1), (5, 1, 2), (6, 1, 4)]


def test_slab_edges_anti_alias_only_slabs_whose_radii_are_all_large():
    d = np.linspace(-20.0, 20.0, 41)[None, :]
    split = layers.assign_layers(d, occlusion=True, max_layers=32)
    spacing = split.centres[0] - split.centres[1]
    edges = cpu.slab_edges(split, aa_radius=1.5)
    assert np.array_equal(edges, (np.abs(split.centres) - spacing >= 1.5).astype(np.int64))
    assert edges[np.argmin(np.abs(split.centres))] == 0 and edges[0] == 1  # focus slab soft, far ones not
    assert cpu.slab_edges(layers.assign_layers(d, occlusion=False)).tolist() == [0]


def test_multiscale_is_exact_where_every_radius_is_small(rng):
    """Radii ≤ 2 px: one full-resolution group of soft-edged slabs, bit-identical to the full-resolution path."""
    lin = rng.random((40, 44, 3))
    d = blocky_defocus(rng, 40, 44, 2.0)
    split = layers.assign_layers(d)
    assert not cpu.slab_edges(split).any()
    a, cov_a = cpu.render_linear(lin, np.abs(d), split, multiscale=True, base_radius=6.0)
    b, cov_b = cpu.render_linear(lin, np.abs(d), split, multiscale=False)
    assert np.array_equal(a, b) and np.array_equal(cov_a, cov_b)


def test_anti_aliased_slabs_at_full_resolution_stay_close_to_exact(rng):
    """Radii ≤ 5 px (no coarse slab), the outer slabs with the anti-aliased edge: ≥ 45 dB from the oracle."""
    h, w = 48, 52
    lin = rng.random((h, w, 3)) ** 2.2
    d = blocky_defocus(rng, h, w, 5.0)
    split = layers.assign_layers(d)
    assert cpu.slab_scales(split).max() == 1 and cpu.slab_edges(split).any()
    exact, _ = reference.render_linear(lin, np.abs(d), split)
    fast, _ = cpu.render_linear(lin, np.abs(d), split, multiscale=True)
    assert 45.0 <= psnr(_display(fast), _display(exact)) < 90.0


@pytest.mark.parametrize("seed", [0, 1])
def test_multiscale_within_40db_of_exact(seed):
    """Random texture, blocky depth (sharp depth edges), radii up to 24 px: the coarse slabs (scales 2 and 4)
    stay ≥ 40 dB (display values, γ = 2.2) from the exact O(N·r²) oracle; the full-resolution path stays at
    rounding level on the same scene."""
    rng = np.random.default_rng(seed)
    h, w = 72, 76
    lin = rng.random((h, w, 3)) ** 2.2
    d = blocky_defocus(rng, h, w, 24.0, block=12)
    split = layers.assign_layers(d)
    assert cpu.slab_scales(split, base_radius=6.0).max() >= 4  # the multi-resolution path is exercised
    exact, cov_e = reference.render_linear(lin, np.abs(d), split)
    fast, cov_f = cpu.render_linear(lin, np.abs(d), split, multiscale=True, base_radius=6.0)
    full, _ = cpu.render_linear(lin, np.abs(d), split, multiscale=False)
    db = psnr(_display(fast), _display(exact))
    assert 40.0 <= db < 90.0  # approximate, but within the tolerance
    assert psnr(_display(full), _display(exact)) > 90.0
    assert np.abs(cov_f - cov_e).mean() < 0.01  # coverage (1 − T) differs only near depth edges and borders


def test_multiscale_keeps_a_constant_image_constant(rng):
    """Bilinear upsampling is linear, so premultiplied colour and transmittance stay consistent."""
    d = blocky_defocus(rng, 48, 40, 30.0)
    colour = np.array([0.2, 0.55, 0.9], dtype=np.float32)
    image = np.broadcast_to(colour, (48, 40, 3)).copy()
    out = render(image, d / 30.0 + 1.0, 30.0, 1.0, backend="cpu", multiscale=True)
    assert np.abs(out - colour).max() < 1e-5


def test_render_multiscale_switch(rng):
    image = rng.random((48, 52, 3)).astype(np.float32)
    disp = rng.uniform(0.2, 1.5, (48, 52)).astype(np.float32)
    fast = render(image, disp, 30.0, 0.8, backend="cpu")  # default: multiscale on
    full = render(image, disp, 30.0, 0.8, backend="cpu", multiscale=False)
    exact = render(image, disp, 30.0, 0.8, backend="exact")
    assert psnr(full, exact) > 80.0
    assert 40.0 <= psnr(fast, exact) < psnr(full, exact)
