"""``bokehdepth depth``: outputs, --single-frame, bad inputs and missing weights through the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_stage2 import make_scene

from bokehdepth.cli import main
from bokehdepth.io import Stack, write_image, write_stack


@pytest.fixture
def scene(tmp_path):
    img, depth, stack = make_scene(0, size=40)
    write_image(tmp_path / "img.png", img)
    write_stack(stack, tmp_path / "stack")
    return tmp_path


def test_depth_cli_writes_contract_outputs(scene, capsys):
    out = scene / "out"
    assert main(["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "-o", str(out)]) == 0
    depth = np.load(out / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (40, 40)
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert (out / "depth_color.png").is_file()
    info = json.loads((out / "depth_info.json").read_text())
    assert info["backend"] == "compact" and info["n_frames"] == 3 and info["depth_from"] == "disp_focus + offset"
    assert info["focus_side"] == "near" and info["side_rule"] == "recorded focus_side"


def test_unrecorded_focus_side_uses_the_relative_rule(scene):
    from bokehdepth.io import read_stack
    from bokehdepth.pipelines.depth import load_depth_predictor

    stack = read_stack(scene / "stack")
    stack.focus_side = None
    img = stack.frames[0]
    res = load_depth_predictor("compact", None, "cpu").predict(img, stack)
    assert res.info["side_rule"] == "relative" and res.info["focus_side"] is None
    single = load_depth_predictor("compact", None, "cpu").predict(img, stack, single_frame=True)
    assert single.info["side_rule"] is None  # monocular branch: no side to pick


def test_single_frame_differs_from_stack(scene):
    a, b = scene / "a", scene / "b"
    assert main(["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "-o", str(a)]) == 0
    args = ["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "--single-frame", "-o", str(b)]
    assert main(args) == 0
    assert json.loads((b / "depth_info.json").read_text())["single_frame"] is True
    assert not np.allclose(np.load(a / "depth.npy"), np.load(b / "depth.npy"))


def test_size_mismatch_is_an_error(scene, capsys):
    write_image(scene / "small.png", np.zeros((20, 24, 3), np.float32))
    out = scene / "out"
    assert main(["depth", str(scene / "small.png"), "--stack", str(scene / "stack"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "--stack" in err and "24x20" in err
    assert not out.exists()


def test_missing_stack_is_an_error(scene, capsys):
    assert main(["depth", str(scene / "img.png"), "--stack", str(scene / "nope"), "-o", str(scene / "o")]) == 2
    assert capsys.readouterr().err.startswith("error:")


@pytest.mark.parametrize("backend", ["dav2-dsfa-l", "dav2-dsfa-s"])
def test_missing_released_weights_names_file_repo_and_command(scene, capsys, monkeypatch, backend):
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    out = scene / "out"
    args = ["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "--backend", backend]
    assert main([*args, "--weights", str(scene / "w"), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert "DAV2_dsfa_release.pth" in err and "fogradio/BokehDepth" in err and "hf download" in err
    assert ("only ViT-L is released" in err) == (backend != "dav2-dsfa-l")
    assert not out.exists()


def test_udv2_backend_dispatches_lazily_and_reports_missing_weights(scene, capsys, monkeypatch):
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    args = ["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "--backend", "udv2-dsfa"]
    assert main([*args, "--weights", str(scene / "w"), "-o", str(scene / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "UDv2_dsfa_release.pth" in err and "fogradio/BokehDepth" in err


def test_bad_compact_weights_file(scene, capsys):
    bad = scene / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    args = ["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "--weights", str(bad)]
    assert main([*args, "-o", str(scene / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.safetensors" in err


def test_normalized_stack_uses_log_depth_branch(scene):
    from bokehdepth.pipelines.depth import load_depth_predictor

    img, _, stack = make_scene(1, size=40)
    norm = Stack(frames=stack.frames, K=[0, 10, 20, 30], K_convention="normalized", source="generated")
    res = load_depth_predictor("compact").predict(img, norm)
    assert res.info["depth_from"] == "log_depth" and res.depth.shape == (40, 40)
    assert np.isfinite(res.depth).all()


def test_compact_predictor_passes_the_stacks_gamma(scene, monkeypatch):
    from bokehdepth.io import read_stack
    from bokehdepth.pipelines.depth import load_depth_predictor

    stack = read_stack(scene / "stack")
    stack.gamma = 1.0
    pred = load_depth_predictor("compact", None, "cpu")
    seen = []
    real = pred.model.cost_volume
    monkeypatch.setattr(pred.model, "cost_volume", lambda *a, **kw: seen.append(kw.get("gamma")) or real(*a, **kw))
    res = pred.predict(stack.frames[0], stack)
    assert seen == [1.0] and res.info["stack_gamma"] == 1.0
