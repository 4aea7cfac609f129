"""`bokehdepth render` end to end on tiny inputs, and its bad-input handling (error: line, exit 2, no output)."""

from __future__ import annotations

import numpy as np
import pytest

from bokehdepth.cli import main
from bokehdepth.io import read_image, read_stack, write_image
from bokehdepth.render.api import render


@pytest.fixture
def scene(tmp_path, rng):
    image = (np.round(rng.random((20, 24, 3)) * 255) / 255).astype(np.float32)
    depth = np.where(np.arange(24)[None, :] < 12, 1.0, 4.0) * np.ones((20, 1), dtype=np.float32)
    write_image(tmp_path / "img.png", image)
    np.save(tmp_path / "depth.npy", depth.astype(np.float32))
    return tmp_path, image, depth


def test_one_K_writes_an_image(scene):
    tmp, image, depth = scene
    out = tmp / "bokeh.png"
    rc = main(
        [
            "render",
            str(tmp / "img.png"),
            "--depth",
            str(tmp / "depth.npy"),
            "--K",
            "8",
            "--focus-m",
            "1",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    got = read_image(out)
    expected = render(image, 1.0 / depth, 8.0, focus_m=1.0)
    assert np.abs(got - expected).max() <= 0.5 / 255 + 1e-6
    assert np.array_equal(got[:, :6], image[:, :6])  # the focused near half stays sharp


def test_full_resolution_flag_selects_the_full_resolution_path(tmp_path, rng):
    image = (np.round(rng.random((32, 32, 3)) * 255) / 255).astype(np.float32)
    depth = np.where(np.arange(32)[None, :] < 16, 1.0, 4.0) * np.ones((32, 1), dtype=np.float32)
    write_image(tmp_path / "img.png", image)
    np.save(tmp_path / "depth.npy", depth)
    argv = ["render", str(tmp_path / "img.png"), "--depth", str(tmp_path / "depth.npy"), "--K", "20", "--focus-m", "1"]
    full = render(image, 1.0 / depth, 20.0, focus_m=1.0, multiscale=False)  # far half: 15 px blur
    fast = render(image, 1.0 / depth, 20.0, focus_m=1.0)
    assert np.abs(full - fast).max() > 2 / 255  # the two paths differ here, so the flag is observable
    for extra, expected in ((["--full-resolution"], full), ([], fast)):
        out = tmp_path / f"out{len(extra)}.png"
        assert main([*argv, *extra, "-o", str(out)]) == 0
        assert np.abs(read_image(out) - expected).max() <= 0.5 / 255 + 1e-6


def test_several_K_write_a_stack_folder(scene):
    tmp, image, depth = scene
    np.save(tmp / "disp.npy", (1.0 / depth).astype(np.float32))
    out = tmp / "stack"
    rc = main(
        [
            "render",
            str(tmp / "img.png"),
            "--disp",
            str(tmp / "disp.npy"),
            "--K",
            "4",
            "12",
            "--focus-xy",
            "3,5",
            "--gamma",
            "1.8",
            "--no-occlusion",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    stack = read_stack(out)
    assert stack.K == [0.0, 4.0, 12.0] and stack.reference == 0 and stack.disp_focus == pytest.approx(1.0)
    assert stack.gamma == pytest.approx(1.8) and stack.K_convention == "metric"
    assert np.abs(stack.frames[0] - image).max() <= 0.5 / 255 + 1e-6
    expected = render(image, 1.0 / depth, 12.0, 1.0, gamma=1.8, occlusion=False)
    assert np.abs(stack.frames[2] - expected).max() <= 0.5 / 255 + 1e-6


def test_camera_settings_instead_of_K(scene):
    tmp, image, depth = scene
    out = tmp / "stack"
    rc = main(
        [
            "render",
            str(tmp / "img.png"),
            "--depth",
            str(tmp / "depth.npy"),
            "--focal-mm",
            "50",
            "--f-number",
            "2",
            "8",
            "--sensor-mm",
            "36",
            "--focus-m",
            "2",
            "-o",
            str(out),
        ]
    )
    assert rc == 0
    stack = read_stack(out)
    k2 = 0.05**2 * 2 / (2 * 2 * (2 - 0.05)) * 1000 * 24 / 36  # thin lens, 24 px wide
    assert stack.K[1] == pytest.approx(k2) and stack.K[2] == pytest.approx(k2 / 4)
    assert stack.lens[0]["f_number"] == 2.0


def _bad(tmp, image, depth, name, extra):
    if name == "nan":
        bad = depth.copy()
        bad[3, 4] = np.nan
        np.save(tmp / "bad.npy", bad)
        args = ["--depth", str(tmp / "bad.npy"), "--K", "5", "--focus-m", "1"]
    elif name == "size":
        np.save(tmp / "bad.npy", depth[:10])
        args = ["--depth", str(tmp / "bad.npy"), "--K", "5", "--focus-m", "1"]
    elif name == "negK":
        args = ["--depth", str(tmp / "depth.npy"), "--K", "-3", "--focus-m", "1"]
    elif name == "zero_depth":
        np.save(tmp / "bad.npy", np.zeros_like(depth))
        args = ["--depth", str(tmp / "bad.npy"), "--K", "5", "--focus-m", "1"]
    elif name == "focus_outside":
        args = ["--depth", str(tmp / "depth.npy"), "--K", "5", "--focus-xy", "100,3"]
    elif name == "png_no_scale":
        import cv2

        cv2.imwrite(str(tmp / "d16.png"), (depth * 1000).astype(np.uint16))
        args = ["--depth", str(tmp / "d16.png"), "--K", "5", "--focus-m", "1"]
    else:  # missing image
        return ["render", str(tmp / "nope.png"), "--depth", str(tmp / "depth.npy"), "--K", "5", "--focus-m", "1"]
    return ["render", str(tmp / "img.png"), *args, *extra]


@pytest.mark.parametrize(
    "name, flag",
    [
        ("nan", "NaN"),
        ("size", "resize"),
        ("negK", "--K"),
        ("zero_depth", "> 0"),
        ("focus_outside", "--focus-xy"),
        ("png_no_scale", "--depth-scale"),
        ("missing", "not found"),
    ],
)
@pytest.mark.parametrize("several", [False, True])
def test_bad_inputs_exit_2_and_write_nothing(scene, capsys, name, flag, several):
    tmp, image, depth = scene
    out = tmp / ("outstack" if several else "out.png")
    argv = _bad(tmp, image, depth, name, [])
    if several:
        i = argv.index("--K")
        argv[i + 1 : i + 2] = [argv[i + 1], "7"]
    rc = main([*argv, "-o", str(out)])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and flag in err[0]
    assert not out.exists()
    assert not [p for p in tmp.iterdir() if p.name.startswith(".out")]  # no temporary leftovers


def test_usage_errors(scene, capsys):
    tmp, _, _ = scene
    with pytest.raises(SystemExit) as exc:  # no focus given
        main(["render", str(tmp / "img.png"), "--depth", str(tmp / "depth.npy"), "--K", "5", "-o", str(tmp / "o.png")])
    assert exc.value.code == 2
    assert capsys.readouterr().err.startswith("error:")
    rc = main(
        [
            "render",
            str(tmp / "img.png"),
            "--depth",
            str(tmp / "depth.npy"),
            "--K",
            "5",
            "9",
            "--focus-m",
            "1",
            "-o",
            str(tmp / "o.png"),
        ]
    )  # several K but an image path
    assert rc == 2 and "stack folder" in capsys.readouterr().err
    assert not (tmp / "o.png").exists()


def test_register_is_cheap():
    """Building the CLI parser must not import numba or torch (the renderer loads them when it runs)."""
    import subprocess
    import sys

    code = (
        "import sys; from bokehdepth.cli import build_parser; build_parser(); "
        "import bokehdepth.commands.render; "
        "print(int('numba' in sys.modules), int('bokehdepth.render.cpu' in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[1] == "0"  # the renderer backends are not imported by the verb's registration
