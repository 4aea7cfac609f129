"""``bokehdepth generate`` in-process: weight errors (exit 2, nothing written) and a tiny end-to-end run."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import load_tiny_pipeline, random_adapter, tiny_pipeline_dir, torch_single_thread  # noqa: E402,F401

from bokehdepth.cli import main  # noqa: E402
from bokehdepth.io import read_image  # noqa: E402
from bokehdepth.models.bokeh_diffusion import save_bokeh_diffusion_adapter  # noqa: E402

FAST = ["--steps", "2", "--height", "32", "--width", "32", "--no-progress"]


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory):
    pipe = load_tiny_pipeline("flux")
    folder = tmp_path_factory.mktemp("bd") / "adapter"
    return save_bokeh_diffusion_adapter(random_adapter(pipe.transformer, "bokeh", seed=2, std=0.5), folder)


def _run(capsys, args):
    code = main(["generate", *args])
    return code, capsys.readouterr()


def test_missing_adapter_weights(tmp_path, capsys):
    out = tmp_path / "out"
    code, cap = _run(capsys, ["--prompt", "a cat", "--bokeh-target", "10", "--weights", str(tmp_path), "-o", str(out)])
    assert code == 2 and cap.err.startswith("error:")
    assert "config.json" in cap.err and "atfortes/BokehDiffusion" in cap.err and "hf download" in cap.err
    assert not out.exists()


def test_missing_base(adapter_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["--prompt", "a cat", "--bokeh-target", "10", "--weights", str(adapter_dir), "-o", str(out)]
    code, cap = _run(capsys, args + ["--base", str(tmp_path / "nope")])
    assert code == 2 and cap.err.startswith("error:")
    assert "black-forest-labs/FLUX.1-dev" in cap.err and "hf download" in cap.err and "--base" in cap.err
    code, cap = _run(capsys, args)  # no --base at all
    assert code == 2 and "--base" in cap.err
    assert not out.exists()


@pytest.mark.parametrize(
    "bad, flag",
    [
        (["--bokeh-target", "10", "--num-grounding-steps", "3"], "--bokeh-pivot"),
        (["--bokeh-target", "40"], "0–30"),
        (["--bokeh-target", "ten"], "--bokeh-target"),
        (["--bokeh-target", "10", "--height", "40"], "--height"),
    ],
)
def test_bad_flags(tmp_path, capsys, bad, flag):
    out = tmp_path / "out"
    code, cap = _run(capsys, ["--prompt", "a cat", *bad, "-o", str(out)])
    assert code == 2 and cap.err.startswith("error:") and flag in cap.err
    assert not out.exists()


def test_end_to_end_with_reference_spellings(adapter_dir, tmp_path, capsys):
    out = tmp_path / "out"
    args = [
        "--prompt",
        "A red Car!",
        "--bokeh_targets",
        "0",
        "30",
        "--bokeh_pivot",
        "15",
        "--num_grounding_steps",
        "1",
        "--base",
        str(tiny_pipeline_dir("flux")),
        "--weights",
        str(adapter_dir),
        "-o",
        str(out),
        *FAST,
    ]
    code, cap = _run(capsys, args)
    assert code == 0, cap.err
    names = sorted(p.name for p in out.iterdir())
    assert names == ["a_red_car-bokeh0.jpg", "a_red_car-bokeh30.jpg", "contact_sheet.png", "generation.json"]
    img0, img30 = read_image(out / "a_red_car-bokeh0.jpg"), read_image(out / "a_red_car-bokeh30.jpg")
    assert img0.shape == (32, 32, 3) and np.abs(img0 - img30).max() > 1 / 255
    meta = json.loads((out / "generation.json").read_text())
    assert meta["targets"] == [0.0, 30.0] and meta["pivot"] == 15.0 and meta["num_grounding_steps"] == 1
