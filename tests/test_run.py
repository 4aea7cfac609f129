"""``bokehdepth run``: output layout and JSON fields, env-var defaults, folder mode (corrupt image, rerun,
sharding), missing weights. The Stage-1/Stage-2 backends are small fakes with the real interfaces
(helpers_run.py); ``test_run_real_backends.py`` runs the embedded models."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_run import FakePredictor, make_corrupt, make_image, use_fakes

from bokehdepth.cli import main
from bokehdepth.commands.run import run_names, shard
from bokehdepth.io import read_image, read_stack
from bokehdepth.pipelines.bokehdepth import new_run_dir

STACK_INDEX_FIELDS = {
    "ids",
    "k_values",
    "ref_image",
    "source_rgb",
    "size",
    "source_size",
    "original_size",
    "guidance_scale",
    "num_inference_steps",
    "prompt_template",
    "method",
}
MANIFEST_FIELDS = {"dataset", "timestamp", "ref", "stack", "k", "stack_index", "size", "source_size"}
STAGE2_FIELDS = {
    "ref_image",
    "stack_index",
    "k_values",
    "config",
    "weights",
    "resolution_level",
    "depth_path",
    "depth_color",
}


def _only_run_dir(root: Path) -> Path:
    dirs = [p for p in root.iterdir()]
    assert len(dirs) == 1, dirs
    return dirs[0]


def _files(run: Path) -> set[str]:
    return {str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()}


def test_run_layout_and_fields(tmp_path, monkeypatch, capsys):
    use_fakes(monkeypatch)
    img = make_image(tmp_path / "in.png", h=40, w=56)  # non-square on purpose
    out = tmp_path / "out"
    assert main(["run", str(img), "--output-root", str(out), "--K", "10", "20", "30"]) == 0
    run = _only_run_dir(out)
    assert capsys.readouterr().out.strip() == str(run)
    assert run.name.startswith("run_") and len(run.name) == len("run_YYYYMMDD_HHMMSS")
    assert _files(run) == {
        "ref.png",
        "defocus_stack/0.png",
        "defocus_stack/1.png",
        "defocus_stack/2.png",
        "defocus_stack/stack_index.json",
        "defocus_stack/stack.json",
        "manifest.jsonl",
        "depth.npy",
        "depth_color.png",
        "confidence.npy",
        "stage2_summary.json",
        "pipeline_summary.json",
    }
    # depth at the input's size and aspect, float32 metres
    depth = np.load(run / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (40, 56)
    assert read_image(run / "depth_color.png").shape == (40, 56, 3)
    assert read_image(run / "ref.png").shape == (40, 56, 3)
    np.testing.assert_allclose(read_image(run / "ref.png"), read_image(img), atol=1 / 255)

    index = json.loads((run / "defocus_stack" / "stack_index.json").read_text())
    assert set(index) == STACK_INDEX_FIELDS
    assert index["ids"] == ["0", "1", "2"]
    assert index["k_values"] == {"0": 10.0, "1": 20.0, "2": 30.0}
    assert index["ref_image"] == index["source_rgb"] == str(run / "ref.png")
    assert index["size"] == index["source_size"] == index["original_size"] == [56, 40]  # [w, h]
    assert index["guidance_scale"] is None and index["prompt_template"] is None  # compact: no such value

    manifest = [json.loads(line) for line in (run / "manifest.jsonl").read_text().splitlines()]
    assert len(manifest) == 1 and set(manifest[0]) == MANIFEST_FIELDS
    assert manifest[0]["dataset"] == "bokehdepth" and manifest[0]["k"] == [10.0, 20.0, 30.0]
    assert manifest[0]["stack"] == [str(run / "defocus_stack" / f"{i}.png") for i in range(3)]

    s2 = json.loads((run / "stage2_summary.json").read_text())
    assert STAGE2_FIELDS <= set(s2) and s2["depth_path"] == str(run / "depth.npy")

    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["ref_image"] == str(img)
    assert set(summary["stage1"]) >= {"adapter", "pretrained_model", "k_values", "stack_dir"}
    assert set(summary["stage2"]) >= {"config", "weights", "depth_path", "depth_color"}
    assert summary["stage1"]["stack_dir"] == str(run / "defocus_stack")
    args = summary["arguments"]
    for key in ("Ks", "stage1", "stage2", "weights", "stage1_weights", "stage2_weights", "config", "base", "seed"):
        assert key in args
    assert args["Ks"] == [10.0, 20.0, 30.0] and args["seed"] == 42 and args["output_root"] == str(out)
    assert summary["backends"] == {"stage1": "compact", "stage2": "compact"}
    assert set(summary["weights"]) == {"stage1", "stage2"}
    assert summary["versions"]["numpy"] == np.__version__
    for key in ("stage1_s", "stage2_s", "read_s", "write_s", "total_s"):
        assert summary["timings_s"][key] >= 0
    assert summary["size"] == [56, 40]


def test_run_outputs_reload_and_reproduce(tmp_path, monkeypatch):
    """Both stack readers open the run's defocus_stack, and Stage-2 on the written files gives depth.npy."""
    use_fakes(monkeypatch)
    img = make_image(tmp_path / "in.png", h=36, w=24)
    out = tmp_path / "out"
    assert main(["run", str(img), "--output-root", str(out), "--K", "8", "16"]) == 0
    run = _only_run_dir(out)
    ours = read_stack(run / "defocus_stack")  # stack.json: frame 0 = ../ref.png
    assert ours.K == [0.0, 8.0, 16.0] and ours.reference == 0 and ours.K_convention == "normalized"
    (run / "defocus_stack" / "stack.json").unlink()
    theirs = read_stack(run / "defocus_stack")  # the reference's stack_index.json
    assert theirs.K == ours.K
    for a, b in zip(ours.frames, theirs.frames):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ours.frames[0], read_image(run / "ref.png"))
    again = FakePredictor().predict(read_image(run / "ref.png"), theirs).depth
    np.testing.assert_allclose(np.load(run / "depth.npy"), again, rtol=1e-6)


def test_env_var_defaults_and_flag_override(tmp_path, monkeypatch):
    use_fakes(monkeypatch)
    img = make_image(tmp_path / "in.png")
    monkeypatch.setenv("REF_IMAGE", str(img))
    monkeypatch.setenv("K_VALUES", "5.0 15.0")
    monkeypatch.setenv("OUTPUT_ROOT", str(tmp_path / "envroot"))
    monkeypatch.setenv("SEED", "7")
    assert main(["run"]) == 0
    run = _only_run_dir(tmp_path / "envroot")
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["arguments"]["Ks"] == [5.0, 15.0] and summary["seed"] == 7
    assert summary["stage1_info"]["seed"] == 7  # reached the generator
    assert sorted(p.name for p in (run / "defocus_stack").glob("*.png")) == ["0.png", "1.png"]
    # flags win over the environment
    assert main(["run", "--K", "12", "--output-root", str(tmp_path / "flagroot")]) == 0
    summary = json.loads((_only_run_dir(tmp_path / "flagroot") / "pipeline_summary.json").read_text())
    assert summary["arguments"]["Ks"] == [12.0]


def test_env_weights_path_and_config(tmp_path, monkeypatch, capsys):
    """WEIGHTS_PATH / CONFIG_PATH are the defaults of --stage2-weights / --config: a missing file is named."""
    use_fakes(monkeypatch)
    img = make_image(tmp_path / "in.png")
    monkeypatch.setenv("WEIGHTS_PATH", str(tmp_path / "nope.pth"))
    assert main(["run", str(img), "--output-root", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.pth" in err and "--stage2-weights" in err
    monkeypatch.delenv("WEIGHTS_PATH")
    cfg = tmp_path / "config_v2_vitl14_DSFA_inference.json"
    cfg.write_text("{}")
    monkeypatch.setenv("CONFIG_PATH", str(cfg))
    assert main(["run", str(img), "--output-root", str(tmp_path / "o")]) == 0
    run = _only_run_dir(tmp_path / "o")
    assert json.loads((run / "stage2_summary.json").read_text())["config"] == str(cfg)
    assert json.loads((run / "pipeline_summary.json").read_text())["stage2"]["config"] == str(cfg)


@pytest.mark.parametrize(
    "backend_flags, filename",
    [(["--stage1", "kontext"], "bokeh_lora.bin"), (["--stage2", "udv2-dsfa"], "UDv2_dsfa_release.pth")],
)
def test_missing_released_weights(tmp_path, monkeypatch, capsys, backend_flags, filename):
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    img = make_image(tmp_path / "in.png")
    empty = tmp_path / "weights"
    empty.mkdir()
    out = tmp_path / "out"
    code = main(["run", str(img), "--output-root", str(out), "--weights", str(empty), *backend_flags])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error:") and len(err.strip().splitlines()) == 1
    assert str(empty / filename) in err and "fogradio/BokehDepth" in err  # names the file and where it is published
    assert not out.exists()  # no run folder left behind


def test_bad_inputs(tmp_path, monkeypatch, capsys):
    use_fakes(monkeypatch)
    out = tmp_path / "out"
    bad = make_corrupt(tmp_path / "bad.png")
    assert main(["run", str(bad), "--output-root", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bad.png" in err
    img = make_image(tmp_path / "in.png")
    assert main(["run", str(img), "--output-root", str(out), "--K", "10", "-3"]) == 2
    assert "--K" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "missing.png"), "--output-root", str(out)]) == 2
    assert "missing.png" in capsys.readouterr().err
    monkeypatch.delenv("REF_IMAGE", raising=False)
    assert main(["run", "--output-root", str(out)]) == 2
    assert "REF_IMAGE" in capsys.readouterr().err
    assert not out.exists()


def test_folder_with_corrupt_image_and_rerun(tmp_path, monkeypatch, capsys):
    gen = use_fakes(monkeypatch)
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(folder / "a.png", 32, 48, seed=1)
    make_corrupt(folder / "b.png")
    make_image(folder / "c.jpg", 48, 32, seed=2)
    (folder / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    assert main(["run", str(folder), "--output-root", str(out), "--K", "10", "20"]) == 2
    err = capsys.readouterr().err
    assert "b.png" in err and err.strip().splitlines()[-1].startswith("error: 1 of 3 images failed: b.png")
    assert sorted(p.name for p in out.iterdir()) == ["a", "c"]  # nothing for b, no temp folders
    assert np.load(out / "a" / "depth.npy").shape == (32, 48)
    assert np.load(out / "c" / "depth.npy").shape == (48, 32)
    assert gen.calls == 2
    # rerun: the finished ones are skipped, the bad one is tried again
    assert main(["run", str(folder), "--output-root", str(out), "--K", "10", "20"]) == 2
    assert gen.calls == 2
    (folder / "b.png").unlink()
    assert main(["run", str(folder), "--output-root", str(out)]) == 0
    assert "all 2 images already finished" in capsys.readouterr().err
    assert gen.calls == 2
    # a removed result is redone, --overwrite redoes everything
    import shutil

    shutil.rmtree(out / "a")
    assert main(["run", str(folder), "--output-root", str(out)]) == 0
    assert gen.calls == 3 and (out / "a" / "pipeline_summary.json").is_file()
    assert main(["run", str(folder), "--output-root", str(out), "--overwrite"]) == 0
    assert gen.calls == 5


def test_overwrite_keeps_user_files_in_the_run_folder(tmp_path, monkeypatch, capsys):
    use_fakes(monkeypatch)
    folder = tmp_path / "photos"
    folder.mkdir()
    make_image(folder / "a.png", 16, 24, seed=1)
    out = tmp_path / "out"
    assert main(["run", str(folder), "--output-root", str(out), "--K", "10", "20", "30"]) == 0
    run = out / "a"
    assert sorted(p.name for p in (run / "defocus_stack").iterdir())[:3] == ["0.png", "1.png", "2.png"]
    (run / "notes.json").write_text("user")
    (run / "frame_999.png").write_text("user")
    (run / "extra.npy").write_text("user")
    assert main(["run", str(folder), "--output-root", str(out), "--K", "10", "--overwrite"]) == 0
    assert sorted(p.name for p in (run / "defocus_stack").iterdir()) == ["0.png", "stack.json", "stack_index.json"]
    for name in ("notes.json", "frame_999.png", "extra.npy"):
        assert (run / name).read_text() == "user"
    assert json.loads((run / "stage2_summary.json").read_text())["k_values"] == [10.0]
    assert sorted(p.name for p in out.iterdir()) == ["a"]


def test_run_outputs_are_exact_names():
    from bokehdepth.pipelines.bokehdepth import RUN_OUTPUTS, SUMMARY_NAME

    assert SUMMARY_NAME in RUN_OUTPUTS and "confidence.npy" in RUN_OUTPUTS
    assert not any(ch in name for name in RUN_OUTPUTS for ch in "*?[")


def test_shard_split():
    items = list(range(11))
    for count in (1, 2, 3, 4):
        parts = [shard(items, i, count) for i in range(count)]
        assert sorted(x for p in parts for x in p) == items  # covers everything, once
        assert max(map(len, parts)) - min(map(len, parts)) <= 1  # balanced
    assert shard(items, 1, 3) == [1, 4, 7, 10]
    with pytest.raises(ValueError):
        shard(items, 3, 3)


def test_folder_runs_only_this_process_share(tmp_path, monkeypatch):
    """With accelerate's process index 1 of 2, the odd-numbered images (sorted by name) are this process's."""
    from bokehdepth.commands import run as run_cmd

    use_fakes(monkeypatch)
    monkeypatch.setattr(run_cmd, "_process_slot", lambda device=None: (1, 2, "cpu"))
    folder = tmp_path / "photos"
    folder.mkdir()
    for i, name in enumerate(["p0.png", "p1.png", "p2.png", "p3.png", "p4.png"]):
        make_image(folder / name, 16, 24, seed=i)
    out = tmp_path / "out"
    assert main(["run", str(folder), "--output-root", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p1", "p3"]


def test_process_slot_single_process_on_cpu():
    from bokehdepth.commands.run import _process_slot

    index, count, device = _process_slot()
    assert (index, count) == (0, 1) and device.startswith(("cpu", "cuda", "mps"))


def test_run_names_and_run_dir(tmp_path):
    names = run_names([Path("x/a.png"), Path("x/a.jpg"), Path("x/b.png")])
    assert names == {Path("x/a.png"): "a_png", Path("x/a.jpg"): "a_jpg", Path("x/b.png"): "b"}
    from datetime import datetime

    t = datetime(2026, 11, 23, 18, 5, 9)
    first = new_run_dir(tmp_path, t)
    assert first == tmp_path / "run_20261123_180509"
    first.mkdir()
    assert new_run_dir(tmp_path, t) == tmp_path / "run_20261123_180509_1"
