"""``bokehdepth sweep`` end to end: stack folders and photo brackets, outputs and bad input (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers_sweep import plane_stack, save_photo, texture
from PIL import Image

from bokehdepth.cli import main
from bokehdepth.io import Stack, write_stack


@pytest.fixture(scope="module")
def two_plane_stack(tmp_path_factory):
    h, w = 64, 96
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, w // 2 :] = 2.5
    path = tmp_path_factory.mktemp("stk") / "stack"
    write_stack(plane_stack(depth, Ks=(10, 20, 30), size=(h, w)), path)
    return path


def err_of(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_cli_round_trip_with_focus_side(two_plane_stack, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["sweep", str(two_plane_stack), "-o", str(out), "--focus-side", "near"]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"depth.npy", "disp_offset.npy", "confidence.npy", "depth_color.png", "sweep_plot.png"} <= names
    assert "ambiguous.npy" not in names
    depth = np.load(out / "depth.npy")
    assert depth.shape == (64, 96) and depth.dtype == np.float32
    assert np.median(depth[8:-8, 8:38]) == pytest.approx(4.0, rel=0.03)
    assert np.median(depth[8:-8, 58:-8]) == pytest.approx(2.5, rel=0.03)
    conf = np.load(out / "confidence.npy")
    assert conf.shape == (64, 96) and 0 <= conf.min() and conf.max() <= 1
    info = json.loads((out / "sweep.json").read_text())
    assert info["focus_side"] == "near" and info["offset_units"] == "1/m"
    assert Image.open(out / "sweep_plot.png").size[0] > 100


def test_cli_ambiguous_writes_both_solutions(two_plane_stack, tmp_path, capsys):
    out = tmp_path / "amb"
    assert main(["sweep", str(two_plane_stack), "-o", str(out), "--window", "11"]) == 0
    assert "ambiguous" in capsys.readouterr().out
    amb = np.load(out / "ambiguous.npy")
    assert amb.dtype == bool and amb[8:-8, 8:-8].all()
    assert np.isnan(np.load(out / "depth.npy")[amb]).all()
    far = np.load(out / "depth_far.npy")
    assert np.median(far[8:-8, 8:38]) == pytest.approx(4.0, rel=0.03)
    # a rerun into the same folder with the side resolved leaves none of the ambiguity maps behind
    assert main(["sweep", str(two_plane_stack), "-o", str(out), "--window", "11", "--focus-side", "near"]) == 0
    left = {p.name for p in out.iterdir()}
    assert "depth.npy" in left and not left & {"ambiguous.npy", "depth_near.npy", "depth_far.npy"}


def write_bad_stack(path, frames, meta):
    path.mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(np.round(f * 255).astype(np.uint8)).save(path / f"frame_{i:03d}.png")
    (path / "stack.json").write_text(json.dumps({"frames": [f"frame_{i:03d}.png" for i in range(len(frames))], **meta}))
    return path


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("one_frame", "2 frames"),
        ("mismatched", "sizes must match"),
        ("no_disp_focus", "disp_focus"),
        ("normalized", "--disp-range"),
        ("missing_K", "'K'"),
    ],
)
def test_cli_bad_stacks(tmp_path, capsys, case, needle):
    img = texture(32, 32)
    frames, meta = [img, img], {"K": [0, 10], "disp_focus": 0.5}
    if case == "one_frame":
        frames, meta = [img], {"K": [0], "disp_focus": 0.5}
    elif case == "mismatched":
        frames = [img, texture(32, 40)]
    elif case == "no_disp_focus":
        meta = {"K": [0, 10]}
    elif case == "normalized":
        meta = {"K": [0, 10], "K_convention": "normalized"}
    elif case == "missing_K":
        meta = {"disp_focus": 0.5}
    stack = write_bad_stack(tmp_path / "s", frames, meta)
    out = tmp_path / "out"
    assert main(["sweep", str(stack), "-o", str(out)]) == 2
    err = err_of(capsys)
    assert needle in err
    if case in ("one_frame", "no_disp_focus", "normalized"):  # raised by the sweep, named by the CLI
        assert err.startswith(f"error: {stack / 'stack.json'}: "), err
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp_path.iterdir())


def test_cli_normalized_offset_only(tmp_path, capsys):
    st = plane_stack(4.0)
    stack = Stack(frames=st.frames, K=[k * 512 / 64 for k in st.K], K_convention="normalized")
    path = write_stack(stack, tmp_path / "n")
    out = tmp_path / "o"
    assert main(["sweep", str(path), "-o", str(out), "--offset-only"]) == 0
    assert not (out / "depth.npy").exists()
    assert np.median(np.load(out / "disp_offset.npy")[8:-8, 8:-8]) == pytest.approx(0.25, rel=0.03)


def test_cli_synth_normalized_stack(tmp_path, capsys):
    """A normalized stack written as synth writes it: metric depth with no flags (the recorded disparity
    range and normalised focus), the same with --disp-range equal to that range, the offset with --offset-only,
    and --disp-range with --offset-only is an error."""
    from bokehdepth.synth.stacks import render_scene_stack

    h, w = 64, 128
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, w // 2 :] = 2.0
    stack = render_scene_stack(texture(h, w, seed=11), depth, [24.0, 48.0, 72.0], K_convention="normalized")
    path = write_stack(stack, tmp_path / "n")
    left, right = (slice(8, -8), slice(8, w // 2 - 12)), (slice(8, -8), slice(w // 2 + 12, -8))
    for i, extra in enumerate(([], ["--disp-range", "0.25", "0.5"])):
        out = tmp_path / f"o{i}"
        assert main(["sweep", str(path), "-o", str(out), *extra]) == 0
        d = np.load(out / "depth.npy")
        assert np.median(np.abs(d[left] - 4.0)) / 4.0 < 0.03 and np.median(np.abs(d[right] - 2.0)) / 2.0 < 0.03
        info = json.loads((out / "sweep.json").read_text())
        assert info["disp_focus"] == pytest.approx(0.5) and info["focus_side"] == "near"
        assert info["disp_range"]["source"] == ("--disp-range" if extra else "stack.json disp_min/disp_max")
    assert "warning" not in capsys.readouterr().err
    out = tmp_path / "off"
    assert main(["sweep", str(path), "-o", str(out), "--offset-only", "--focus-m", "2"]) == 0
    assert not (out / "depth.npy").exists()
    assert np.median(np.load(out / "disp_offset.npy")[left]) == pytest.approx(1.0, rel=0.03)  # dn 0 vs focus 1
    assert capsys.readouterr().err == "warning: --focus-m ignored: --offset-only writes no depth\n"
    assert main(["sweep", str(path), "-o", str(tmp_path / "x"), "--offset-only", "--disp-range", "0.1", "1"]) == 2
    assert "--offset-only" in err_of(capsys) and not (tmp_path / "x").exists()


def test_cli_flags_that_do_not_apply_warn(two_plane_stack, tmp_path, capsys):
    """Flags that do not apply to a metric stack are not silently ignored: one warning line each, exit 0,
    listed in sweep.json."""
    out = tmp_path / "o"
    argv = ["sweep", str(two_plane_stack), "-o", str(out), "--focus-side", "near", "--max-radius", "16"]
    assert main([*argv, "--disp-range", "0.1", "1", "--focal-mm", "50"]) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err)
    assert err[0].startswith("warning: --focal-mm ignored: it applies to --photos only")
    assert err[1].startswith("warning: --disp-range ignored: ") and "metric stack" in err[1]
    info = json.loads((out / "sweep.json").read_text())
    assert info["ignored_flags"] == ["--focal-mm", "--disp-range"] and info["disp_range"] is None
    assert np.median(np.load(out / "depth.npy")[8:-8, 8:38]) == pytest.approx(4.0, rel=0.03)
    assert main([*argv, "--offset-only"]) == 0
    assert capsys.readouterr().err.startswith("warning: --offset-only ignored: ")
    assert (out / "depth.npy").exists()


def test_cli_bad_flags(two_plane_stack, tmp_path, capsys):
    assert main(["sweep", str(two_plane_stack), "-o", str(tmp_path / "o"), "--window", "8"]) == 2
    assert "--window" in err_of(capsys)
    assert main(["sweep", str(two_plane_stack), "-o", str(tmp_path / "o"), "--step", "30"]) == 2
    assert "--step" in err_of(capsys)
    assert not (tmp_path / "o").exists()
    assert main(["sweep", "-o", str(tmp_path / "o")]) == 2
    assert "STACK_DIR" in err_of(capsys)
    assert main(["sweep", str(tmp_path / "nope"), "-o", str(tmp_path / "o")]) == 2
    assert "not found" in err_of(capsys)


# ------------------------------------------------------------------------------------------------ photos
def test_cli_photo_aperture_bracket(tmp_path, capsys):
    """Three 'photos' of a plane at 4 m focused at 2 m, f/8, f/2.8, f/1.4, rendered with K from the lens model
    (50 mm on a 3.6 mm-wide sensor, i.e. a 35 mm equivalent of 500 mm, 96 px wide), with EXIF; the sweep
    recovers 4 m."""
    from bokehdepth.lens import k_from_camera
    from bokehdepth.render.api import render

    h, w = 64, 96
    img = texture(h, w, seed=8)
    disp = np.full((h, w), 0.25, np.float32)
    paths = []
    for n in (8.0, 2.8, 1.4):
        K = float(k_from_camera(50, n, 2.0, 3.6, w))
        frame = render(img, disp, K, 0.5, gamma=2.2)
        paths.append(save_photo(tmp_path / f"f{n}.png", frame, fnumber=n, f35=500))
    out = tmp_path / "out"
    assert main(["sweep", "--photos", *map(str, paths), "-o", str(out), "--focus-side", "near"]) == 0
    depth = np.load(out / "depth.npy")
    assert np.median(np.abs(depth[8:-8, 8:-8] - 4.0)) / 4.0 < 0.05
    info = json.loads((out / "sweep.json").read_text())
    assert info["reference"] == 0 and len(info["lens"]) == 3


def test_cli_photo_outputs_at_photo_size(tmp_path):
    """Working at half width (--max-width) still returns depth at the photos' H x W (the depth-output contract),
    and K follows the working width, so the depth is still right."""
    from bokehdepth.lens import k_from_camera
    from bokehdepth.render.api import render

    h, w = 64, 96
    img = texture(h, w, seed=9)
    disp = np.full((h, w), 0.25, np.float32)
    paths = []
    for n in (8.0, 1.4):
        frame = render(img, disp, float(k_from_camera(50, n, 2.0, 3.6, w)), 0.5, gamma=2.2)
        paths.append(save_photo(tmp_path / f"f{n}.png", frame, fnumber=n, f35=500))
    out = tmp_path / "out"
    argv = ["sweep", "--photos", *map(str, paths), "-o", str(out), "--focus-side", "near", "--max-width", "48"]
    assert main(argv) == 0
    depth = np.load(out / "depth.npy")
    assert depth.shape == (h, w) and np.load(out / "confidence.npy").shape == (h, w)
    assert np.nanmedian(np.abs(depth[8:-8, 8:-8] - 4.0)) / 4.0 < 0.1
    info = json.loads((out / "sweep.json").read_text())
    assert info["size"] == [h, w] and info["working_size"] == [32, 48]


def test_cli_photos_without_exif(tmp_path, capsys):
    img = texture(32, 48)
    a = tmp_path / "a.jpg"
    b = tmp_path / "b.jpg"
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(a)
    Image.fromarray(np.round(img * 255).astype(np.uint8)).save(b)
    assert main(["sweep", "--photos", str(a), str(b), "-o", str(tmp_path / "o")]) == 2
    err = err_of(capsys)
    assert "a.jpg" in err and "FocalLength" in err and "--focal-mm" in err
    # supplying focal length and sensor leaves the f-number missing
    argv = ["sweep", "--photos", str(a), str(b), "-o", str(tmp_path / "o"), "--focal-mm", "50", "--sensor-mm", "36"]
    assert main(argv) == 2
    assert "FNumber" in err_of(capsys)
    assert main([*argv, "--f-number", "2", "4", "8"]) == 2
    assert "--f-number" in err_of(capsys)
    assert main(["sweep", "--photos", str(a), "-o", str(tmp_path / "o")]) == 2
    assert "at least 2" in err_of(capsys)
    assert not (tmp_path / "o").exists()


def test_cli_photo_focus_bracket(tmp_path, capsys):
    """Photos at one f-number focused at 1.5, 2.5 and 4 m (EXIF SubjectDistance) of a plane at 3 m: detected as a
    focus bracket (sign resolved by the search, no --focus-side needed) and the depth recovered."""
    from bokehdepth.lens import k_from_camera
    from bokehdepth.render.api import render

    h, w = 64, 96
    img = texture(h, w, seed=9)
    disp = np.full((h, w), 1 / 3.0, np.float32)
    paths = []
    for s in (1.5, 2.5, 4.0):
        K = float(k_from_camera(50, 1.4, s, 3.6, w))
        frame = render(img, disp, K, 1 / s, gamma=2.2)
        paths.append(save_photo(tmp_path / f"s{s}.png", frame, fnumber=1.4, subject=s, f35=500))
    out = tmp_path / "out"
    argv = ["sweep", "--photos", *map(str, paths), "-o", str(out), "--focus-side", "near", "--register", "none"]
    assert main(argv) == 0  # a tripod bracket (the plane is out of focus in every photo: nothing to align on)
    assert capsys.readouterr().err.startswith("warning: --focus-side ignored: this is a focus bracket")
    info = json.loads((out / "sweep.json").read_text())
    assert info["bracket"] == "focus" and info["reference"] == 1 and info["ignored_flags"] == ["--focus-side"]
    depth = np.load(out / "depth.npy")
    assert np.median(np.abs(depth[8:-8, 8:-8] - 3.0)) / 3.0 < 0.05
    assert not (out / "ambiguous.npy").exists()
