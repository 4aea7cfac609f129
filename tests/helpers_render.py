"""Shared fixtures for the renderer tests: small scenes, an independent kernel, and the backend comparison."""

from __future__ import annotations

import math

import numpy as np

from bokehdepth.render import layers


def analytic_kernel(r: float) -> np.ndarray:
    """The normalised soft disc of radius ``r`` px, built here from its formula (not from the package):
    weight ``clip((σ(8(r − δ)) − σ(−4)) / (σ(8) − σ(−4)), 0, 1)``, divided by its sum."""
    n = int(math.floor(r + 0.5))
    yy, xx = np.mgrid[-n : n + 1, -n : n + 1]
    delta = np.sqrt(xx**2 + yy**2)

    def sig(z):
        return 1.0 / (1.0 + np.exp(-z))

    k = np.clip((sig(8.0 * (r - delta)) - sig(-4.0)) / (sig(8.0) - sig(-4.0)), 0.0, 1.0)
    return k / k.sum()


def blocky_defocus(rng: np.random.Generator, h: int, w: int, r_max: float, block: int = 8) -> np.ndarray:
    """Signed defocus px: random piecewise-constant blocks (depth edges) plus a smooth ramp and noise."""
    nb_y, nb_x = -(-h // block), -(-w // block)
    blocks = np.kron(rng.uniform(-1, 1, (nb_y, nb_x)), np.ones((block, block)))[:h, :w]
    ramp = np.linspace(-0.3, 0.3, w)[None, :]
    d = r_max * np.clip(0.8 * blocks + ramp + 0.05 * rng.standard_normal((h, w)), -1, 1)
    return d


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def compare_impls(reference, fast, lin, d, occlusion: bool) -> tuple[float, float]:
    """Run two backends' ``render_linear`` on the same linear image and signed defocus; return
    (max abs difference, PSNR dB) of the linear outputs."""
    split = layers.assign_layers(d, occlusion=occlusion)
    a, cov_a = reference.render_linear(lin, np.abs(d), split)
    b, cov_b = fast.render_linear(lin, np.abs(d), split)
    assert a.shape == b.shape == lin.shape
    assert np.allclose(cov_a, cov_b, atol=1e-5)
    return float(np.abs(a - b).max()), psnr(a, b)
