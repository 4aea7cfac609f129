"""``bokehdepth depth --backend udv2-dsfa`` end to end, with the preset swapped for the tiny config."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_unidepth import one_thread, save_checkpoint, tiny_model

from bokehdepth.cli import main
from bokehdepth.io import Stack, write_image, write_stack
from bokehdepth.models import unidepth

_single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture
def scene(tmp_path, monkeypatch):
    """A tiny udv2-dsfa preset, its checkpoint, an image (40x60) and a normalised stack folder."""
    monkeypatch.setitem(unidepth.PRESETS, "udv2-dsfa", unidepth.UniDepthConfig.tiny())
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    weights = tmp_path / "weights"
    weights.mkdir()
    save_checkpoint(weights / "UDv2_dsfa_release.pth", {"model": tiny_model(seed=7).state_dict()})
    rng = np.random.default_rng(0)
    image = rng.random((40, 60, 3)).astype(np.float32)
    write_image(tmp_path / "img.png", image)
    frames = [image] + [np.clip(image + rng.normal(0, 0.05, image.shape), 0, 1).astype(np.float32) for _ in range(2)]
    write_stack(Stack(frames, [0.0, 10.0, 30.0], K_convention="normalized", source="generated"), tmp_path / "stack")
    return tmp_path


def _depth(tmp, out, *extra) -> int:
    args = ["depth", str(tmp / "img.png"), "--stack", str(tmp / "stack"), "--backend", "udv2-dsfa"]
    return main([*args, "--weights", str(tmp / "weights"), "-o", str(tmp / out), *extra])


def test_depth_cli_udv2(scene):
    assert _depth(scene, "out") == 0
    depth = np.load(scene / "out" / "depth.npy")
    assert depth.shape == (40, 60) and depth.dtype == np.float32 and np.isfinite(depth).all()
    info = json.loads((scene / "out" / "depth_info.json").read_text())
    assert info["backend"] == "udv2-dsfa" and info["K_model"] == [10.0, 30.0] and info["dsfa"] == "trained"
    assert (scene / "out" / "depth_color.png").is_file()
    assert _depth(scene, "single", "--single-frame") == 0
    single = np.load(scene / "single" / "depth.npy")
    assert np.abs(single - depth).max() > 1e-6


def test_depth_cli_missing_weights(scene, capsys):
    (scene / "weights" / "UDv2_dsfa_release.pth").unlink()
    assert _depth(scene, "out") == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "UDv2_dsfa_release.pth" in err and "fogradio/BokehDepth" in err
    assert not (scene / "out").exists()
