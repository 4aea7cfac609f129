"""``bokehdepth calibrate``: K of a textbook camera, the radius table, EXIF input and bad input (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_sweep import make_exif
from PIL import Image

from bokehdepth.cli import main

TEXTBOOK = ["--focal-mm", "50", "--f-number", "2", "--focus-m", "2", "--sensor-mm", "36", "--width-px", "6000"]


def run_json(capsys, argv):
    rc = main(["calibrate", *argv, "--json"])
    out = capsys.readouterr().out
    assert rc == 0
    return json.loads(out)


def test_textbook_camera_K(capsys):
    rep = run_json(capsys, TEXTBOOK)
    # worked by hand: f²·s1/(2N(s1−f)) = 0.0025·2/(4·1.95) m²; ×1000·6000/36 px/m → 12500/117 px·m
    assert rep["K"] == pytest.approx(12500 / 117, rel=1e-9)
    assert rep["disp_focus"] == pytest.approx(0.5)
    assert rep["settings"]["f_number"] == 2


def test_radius_table_follows_thin_lens(capsys):
    rep = run_json(capsys, TEXTBOOK)
    K = 12500 / 117
    by_depth = {row["depth_m"]: row for row in rep["table"]}
    assert by_depth[2.0]["radius_px"] == 0.0
    assert by_depth[1.0]["radius_px"] == pytest.approx(K * 0.5)  # |1 − 0.5|
    assert by_depth[4.0]["radius_px"] == pytest.approx(K * 0.25)
    assert by_depth[None]["radius_px"] == pytest.approx(K / 2.0)  # infinity: K/s1
    # K halves when the f-number doubles
    ks = {row["f_number"]: row["K"] for row in rep["fstops"]}
    assert ks[4.0] == pytest.approx(ks[2.0] / 2)


def test_text_output(capsys):
    assert main(["calibrate", *TEXTBOOK]) == 0
    out = capsys.readouterr().out
    assert "K = 106.8376 px·m" in out and "radius (px)" in out


def test_photo_exif_and_override(tmp_path, capsys):
    exif = make_exif(fnumber=2, focal=50, subject=2, f35=50)
    path = tmp_path / "cam.jpg"
    Image.fromarray(np.zeros((400, 600, 3), np.uint8)).save(path, exif=exif)
    rep = run_json(capsys, [str(path), "--width-px", "6000"])
    assert rep["K"] == pytest.approx(12500 / 117, rel=1e-3)
    rep = run_json(capsys, [str(path), "--width-px", "6000", "--f-number", "4"])
    assert rep["K"] == pytest.approx(12500 / 234, rel=1e-3)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (
            ["--focal-mm", "50", "--f-number", "0", "--focus-m", "2", "--sensor-mm", "36", "--width-px", "6000"],
            "--f-number",
        ),
        (
            ["--focal-mm", "50", "--f-number", "-2", "--focus-m", "2", "--sensor-mm", "36", "--width-px", "6000"],
            "--f-number",
        ),
        (
            ["--focal-mm", "50", "--f-number", "2", "--focus-m", "0.04", "--sensor-mm", "36", "--width-px", "6000"],
            "--focus-m",
        ),
        (["--focal-mm", "50", "--f-number", "2", "--focus-m", "2", "--width-px", "6000"], "--sensor-mm"),
    ],
)
def test_bad_settings_exit_2(capsys, argv, needle):
    assert main(["calibrate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and err.count("\n") == 1


def test_photo_without_exif_exit_2(tmp_path, capsys):
    path = tmp_path / "plain.jpg"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(path)
    assert main(["calibrate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "plain.jpg" in err and "FocalLength" in err and "--focal-mm" in err


def test_missing_photo_exit_2(tmp_path, capsys):
    assert main(["calibrate", str(tmp_path / "none.jpg")]) == 2
    assert capsys.readouterr().err.startswith("error:")
