"""The torch backend (run here on CPU) against the exact direct scatter and through the API."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import torch
from helpers_render import analytic_kernel, blocky_defocus, compare_impls
from scipy.signal import fftconvolve

from bokehdepth.render import cuda, reference
from bokehdepth.render.api import render


@contextlib.contextmanager
def _one_thread():
    """torch's CPU thread pool thrashes on a loaded 2-core machine; these small tensors need one thread."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(old)


@pytest.mark.parametrize("occlusion", [True, False])
def test_torch_matches_exact(occlusion):
    rng = np.random.default_rng(7)
    lin = rng.random((40, 44, 3))
    d = blocky_defocus(rng, 40, 44, 9.0)
    with _one_thread():
        max_abs, db = compare_impls(reference, cuda, lin, d, occlusion)
    assert max_abs < 1e-5 and db > 80.0


def test_torch_plane_is_a_convolution(rng):
    h, w = 40, 40
    image = rng.random((h, w, 3)).astype(np.float32)
    with _one_thread():
        out = render(image, np.full((h, w), 1.0, np.float32), 10.0, 0.45, gamma=1.0, backend="torch")
    kern = analytic_kernel(5.5)
    n = kern.shape[0] // 2
    expected = fftconvolve(image[..., 1].astype(np.float64), kern, mode="same")
    assert np.abs(out[n:-n, n:-n, 1] - expected[n:-n, n:-n]).max() < 2e-6


def test_torch_tensor_input_and_chunking(rng, monkeypatch):
    """Tensors are accepted (auto → cpu backend for CPU tensors); tiny chunks give the same result."""
    image = rng.random((24, 24, 3)).astype(np.float32)
    disp = rng.uniform(0.2, 1.2, (24, 24)).astype(np.float32)
    with _one_thread():
        ref = render(image, disp, 9.0, 0.7, backend="torch")
        monkeypatch.setattr(cuda, "_CHUNK", 64)
        chunked = render(torch.from_numpy(image), torch.from_numpy(disp), 9.0, 0.7, backend="torch")
    assert np.abs(ref - chunked).max() < 1e-6
    auto = render(torch.from_numpy(image), disp, 9.0, 0.7, multiscale=False)  # the cpu path with the exact kernel
    assert np.abs(ref - auto).max() < 1e-5


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_matches_cpu(rng):  # pragma: no cover - needs a GPU
    image = rng.random((64, 64, 3)).astype(np.float32)
    disp = rng.uniform(0.2, 1.2, (64, 64)).astype(np.float32)
    a = render(torch.from_numpy(image).cuda(), torch.from_numpy(disp).cuda(), 12.0, 0.7)
    b = render(image, disp, 12.0, 0.7, backend="cpu")
    assert np.abs(a - b).max() < 1e-5
