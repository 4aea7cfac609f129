"""Defocus cost volume: its minimum sits at the plane's true |Δ| for stacks made by the renderer itself, the
kernels are the renderer's disc, and a frame equal to the reference costs nothing at Δ = 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bokehdepth.models.defocus_volume import candidate_offsets, defocus_cost_volume, disc_kernel_spectra
from bokehdepth.render import render
from bokehdepth.render.kernels import disc_sum, edge_weight


def _texture(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.random((n // 4, n // 4, 3))
    return np.kron(img, np.ones((4, 4, 1)))  # 4-px blocks: texture at every scale the blurs test


@pytest.mark.parametrize("delta", [0.2, 0.5, 1.1])
def test_minimum_at_the_true_offset_of_a_plane(delta):
    n, Ks, df = 96, [3.0, 6.0, 12.0], 0.6
    img = _texture(n)
    disp = np.full((n, n), df + delta, np.float32)
    frames = [render(img, disp, K, df) for K in Ks]
    to_t = lambda a: torch.from_numpy(np.asarray(a, np.float32)).permute(2, 0, 1)  # noqa: E731
    ref = to_t(img)[None]
    stack = torch.stack([to_t(f) for f in frames])[None]
    offs = torch.linspace(0.0, 1.5, 61)  # step 0.025 1/m
    cost = defocus_cost_volume(ref, stack, torch.tensor([Ks]), offs)[0]
    inner = cost[:, 30:-30, 30:-30].mean((1, 2))  # away from the reflect-padded borders
    assert offs[inner.argmin()].item() == pytest.approx(delta, abs=0.026)


def test_identity_frames_cost_nothing_at_zero():
    ref = torch.rand(1, 1, 40, 40)
    cost = defocus_cost_volume(
        ref, ref[:, None].repeat(1, 2, 1, 1, 1), torch.tensor([[2.0, 5.0]]), torch.tensor([0.0, 0.5])
    )
    assert cost[0, 0].abs().max().item() < 1e-5 and cost[0, 1].mean().item() > 1e-3


def test_kernels_are_the_renderers_disc():
    r, size = 3.3, (32, 32)
    k = torch.fft.irfft2(disc_kernel_spectra(torch.tensor([r], dtype=torch.float64), size), s=size)[0]
    expect = np.zeros(size)
    for y in range(-5, 6):
        for x in range(-5, 6):
            expect[y % 32, x % 32] = edge_weight(r, float(np.hypot(x, y)))
    np.testing.assert_allclose(k.numpy(), expect / disc_sum(r), atol=1e-12)


def test_candidates_are_quadratic_from_zero():
    offs = candidate_offsets(5, 2.0)
    np.testing.assert_allclose(offs.numpy(), [0.0, 0.125, 0.5, 1.125, 2.0], atol=1e-7)
