"""``bokehdepth train t2i`` on a tiny offline FLUX pipeline: two CPU steps, then the trained adapter generates."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import tiny_dataset, tiny_pipeline_dir, torch_single_thread  # noqa: E402,F401

from bokehdepth.cli import main  # noqa: E402


def test_train_t2i_cli_then_generate(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["train", "t2i", "--data", str(tiny_dataset()), "--out", str(out), "--base", str(tiny_pipeline_dir("flux"))]
    args += ["--steps", "2", "--batch-size", "2", "--size", "32", "--rank", "4", "--context-dim", "16"]
    args += ["--hidden-dim", "8", "--max-sequence-length", "8", "--split", "all", "--log-every", "1", "--no-progress"]
    assert main(args) == 0, capsys.readouterr().err
    cfg = json.loads((out / "adapter" / "config.json").read_text())
    assert cfg["lora_rank"] == 4 and cfg["bokeh_context_dim"] == 16
    assert len((out / "loss_log.jsonl").read_text().splitlines()) == 2
    gen = ["generate", "--prompt", "a cat", "--bokeh-target", "12", "--steps", "1", "--height", "32", "--width", "32"]
    gen += ["--base", str(tiny_pipeline_dir("flux")), "--weights", str(out / "adapter"), "-o", str(tmp_path / "img")]
    assert main(gen + ["--no-progress"]) == 0, capsys.readouterr().err
    assert (tmp_path / "img" / "a_cat-bokeh12.jpg").is_file()


def test_train_t2i_missing_base(tmp_path, capsys):
    args = ["train", "t2i", "--data", str(tiny_dataset()), "--out", str(tmp_path / "o"), "--base", str(tmp_path)]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "black-forest-labs/FLUX.1-dev" in err
