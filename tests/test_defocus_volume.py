"""Defocus cost volume: its minimum sits at the plane's true |Δ| for stacks made by the renderer itself, the
kernels are the renderer's disc, and a frame equal to the reference costs nothing at Δ = 0."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bokehdepth.models.defocus_volume import (
    candidate_offsets,
    defocus_cost_volume,
    disc_kernel_spectra,
    fft_disc_blur,
    mirror_pad,
)
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


def test_stack_gamma_is_the_forward_model():
    """A plane rendered with gamma 1.0: blurring in the matching linear light puts the minimum at the true
    |Δ| with ~zero residual; the default 2.2 re-blurs in the wrong light and misses it. A batch may mix
    gammas (one per sample)."""
    n, Ks, df, delta = 64, [3.0, 6.0, 12.0], 0.6, 0.8
    img = _texture(n)
    disp = np.full((n, n), df + delta, np.float32)
    to_t = lambda a: torch.from_numpy(np.asarray(a, np.float32)).permute(2, 0, 1)  # noqa: E731
    stacks = [torch.stack([to_t(render(img, disp, K, df, gamma=g)) for K in Ks]) for g in (1.0, 2.2)]
    ref, stack = to_t(img)[None].repeat(2, 1, 1, 1), torch.stack(stacks)
    offs = torch.linspace(0.0, 1.5, 61)  # step 0.025 1/m; the truth is offs[32]
    K = torch.tensor([Ks, Ks])

    def inner(cost):
        return cost[..., 16:-16, 16:-16].mean((-2, -1))  # away from the padded borders

    right = inner(defocus_cost_volume(ref, stack, K, offs, gamma=torch.tensor([1.0, 2.2])))
    assert offs[right.argmin(1)].tolist() == pytest.approx([delta, delta], abs=1e-6)
    assert right[0, 32].item() < 1e-5
    wrong = inner(defocus_cost_volume(ref[:1], stack[:1], K[:1], offs, gamma=2.2))[0]
    assert abs(offs[wrong.argmin()].item() - delta) >= 0.05 and wrong.min().item() > 100 * right[0, 32].item()
    with pytest.raises(ValueError, match="gamma"):
        defocus_cost_volume(ref, stack, K, offs, gamma=torch.tensor([1.0, 0.0]))


def test_discs_wider_than_the_frame_keep_a_constant_frame_constant():
    """Radii up to 40 px on a 32×32 frame (beyond single-reflect range): no zero extension or FFT wrap-around
    may leak in (the capped pad used to give a spurious cost of 7e-3 at 40 px)."""
    ref = torch.full((1, 1, 32, 32), 0.6)
    blurred = fft_disc_blur(ref, torch.tensor([[0.0, 5.0, 20.0, 31.0, 32.0, 40.0]]))
    torch.testing.assert_close(blurred, torch.full_like(blurred, 0.6), atol=1e-6, rtol=0)
    offs = candidate_offsets(16, 1.95)
    cost = defocus_cost_volume(ref, ref[:, None].repeat(1, 2, 1, 1, 1), torch.tensor([[10.0, 40 / 1.95]]), offs)
    assert cost.abs().max().item() < 1e-6


def test_mirror_pad_is_reflect_repeated():
    x = torch.rand(2, 3, 5, 7, dtype=torch.float64)
    torch.testing.assert_close(mirror_pad(x, 4), F.pad(x, (4,) * 4, mode="reflect"))
    expect = np.pad(x.numpy(), ((0, 0), (0, 0), (13, 13), (13, 13)), mode="reflect")  # numpy repeats the reflection
    np.testing.assert_array_equal(mirror_pad(x, 13).numpy(), expect)
    assert mirror_pad(torch.ones(1, 1, 1, 3), 2).shape == (1, 1, 5, 7)


@pytest.mark.parametrize("edge", ["logistic", "clip"])
def test_fft_disc_blur_is_the_direct_convolution_of_the_mirrored_image(edge):
    """Shared blur of the cost volume (renderer's logistic edge) and the generator (clip edge): equal to a direct
    convolution with the normalised kernel, including discs wider than the image; shared radii (memoised
    spectra) and per-sample radii agree."""
    x = torch.rand(2, 1, 12, 9, dtype=torch.float64)
    radii = [1.5, 4.0, 14.0]
    shared = fft_disc_blur(x, radii, edge=edge)
    per_sample = fft_disc_blur(x, torch.tensor([radii, radii], dtype=torch.float64), edge=edge)
    torch.testing.assert_close(shared, per_sample)
    for j, r in enumerate(radii):
        pad = int(np.ceil(r)) + 1
        k = torch.fft.irfft2(disc_kernel_spectra(torch.tensor(r, dtype=torch.float64), (64, 64), edge), s=(64, 64))
        k = torch.roll(k, (pad, pad), (0, 1))[: 2 * pad + 1, : 2 * pad + 1]
        direct = F.conv2d(mirror_pad(x, pad), k.flip(0, 1)[None, None])
        torch.testing.assert_close(shared[:, j], direct)
