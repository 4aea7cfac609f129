"""CLI conventions shared by every verb: `error:` lines, exit code 2, safe checkpoint loading."""

from __future__ import annotations

import pytest
import torch

import bokehdepth
from bokehdepth.cli import VERBS, main


def test_public_api():
    expected = {
        "BokehDepthError",
        "CheckpointError",
        "InputError",
        "LensSettings",
        "MissingWeightsError",
        "OutputError",
        "Stack",
        "__version__",
        "k_from_camera",
        "read_image",
        "read_stack",
        "render",
        "render_stack",
        "write_stack",
    }
    assert set(bokehdepth.__all__) == expected
    for name in expected:
        assert hasattr(bokehdepth, name), name
    assert callable(bokehdepth.render) and callable(bokehdepth.render_stack)


def test_usage_error_is_one_error_line(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["no-such-verb"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:")


def test_help_lists_verbs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "weights" in out and "train" in out
    assert set(VERBS) >= {"render", "sweep", "run", "depth", "stack", "calibrate"}


def test_unknown_backend(capsys):
    assert main(["weights", "keys", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "udv2-dsfa" in err


def test_corrupt_checkpoint(tmp_path, capsys):
    bad = tmp_path / "bokeh_lora.bin"
    bad.write_bytes(b"\x00not a checkpoint")
    assert main(["weights", "check", "kontext-adapter", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "bokeh_lora.bin" in err and "corrupt" in err


class Evil:
    """An arbitrary class: unpickling it would run code from outside the checkpoint."""


def test_pickled_objects_are_refused(tmp_path, capsys):
    path = tmp_path / "evil.pth"
    torch.save({"model": Evil()}, path)  # not a tensor checkpoint
    assert main(["weights", "check", "udv2-dsfa", str(path)]) == 2
    assert "unsafe" in capsys.readouterr().err


def test_missing_weights_error_names_repo_and_command():
    from bokehdepth.errors import MissingWeightsError
    from bokehdepth.models.checkpoints import PublishedFile, resolve_weights

    with pytest.raises(MissingWeightsError) as exc:
        resolve_weights("/nonexistent/dir", PublishedFile("UDv2_dsfa_release.pth", "fogradio/BokehDepth"))
    msg = str(exc.value)
    assert "UDv2_dsfa_release.pth" in msg and "fogradio/BokehDepth" in msg and "hf download" in msg
    assert "\n" not in msg
