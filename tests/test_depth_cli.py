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


# ------------------------------------------------------------------------------------------------ photos
F_NUMBERS = (8.0, 4.0, 2.0, 1.4)


def _photo_bracket(tmp_path, seed, focus_mode="near", f_numbers=F_NUMBERS, focus_m=None):
    """An aperture bracket of 'photos' (8-bit JPEG-quality PNGs with EXIF: 105 mm, the f-numbers, the focus
    distance) of a synthetic 0.5–5 m scene at 128 px, each rendered at the K the thin-lens model gives on a
    36 mm sensor. Returns (paths, true depth, focus_side, K per photo)."""
    from helpers_sweep import save_photo

    from bokehdepth.lens import k_from_camera
    from bokehdepth.synth.scenes import make_scene as synth_scene
    from bokehdepth.synth.stacks import choose_focus, render_scene_stack

    scene = synth_scene(seed, 128, depth_range=(0.5, 5.0))
    df, side, _ = choose_focus(scene.depth, np.random.default_rng(seed), scene.disp_focus, mode=focus_mode)
    focus = [round(1.0 / df, 2)] * len(f_numbers) if focus_m is None else list(focus_m)
    Ks = [float(k_from_camera(105, n, s, 36.0, 128)) for n, s in zip(f_numbers, focus)]
    tmp_path.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (n, s, k) in enumerate(zip(f_numbers, focus, Ks)):
        frame = render_scene_stack(scene.image, scene.depth, [k], 1.0 / s).frames[1]
        paths.append(save_photo(tmp_path / f"IMG_{i}.png", frame, fnumber=n, focal=105, subject=s, f35=105))
    return paths, scene.depth, side, Ks


def test_depth_from_an_aperture_bracket_of_photos(tmp_path):
    """Real-photo route: K comes from each photo's EXIF (checked against the thin-lens model), the sharpest
    photo is the reference, depth comes back at the photos' size, and the bracket's defocus makes the depth
    much closer to the truth than the same model on the reference photo alone."""
    from bokehdepth.eval.metrics import compute_metrics
    from bokehdepth.io import read_image

    errs = {"stack": [], "single": []}
    for seed, mode in [(seed, mode) for seed in (20000, 20001) for mode in ("near", "far", "subject")]:
        paths, depth, side, Ks = _photo_bracket(tmp_path / f"{seed}{mode}", seed, mode)
        for arm, extra in (("stack", []), ("single", ["--single-frame"])):
            out = tmp_path / f"{seed}{mode}_{arm}"
            argv = ["depth", "--photos", *map(str, paths), "--sensor-mm", "36", *extra]
            argv += ["--focus-side", side] if side else []
            assert main([*argv, "-o", str(out)]) == 0
            pred = np.load(out / "depth.npy")
            assert pred.dtype == np.float32 and pred.shape == read_image(paths[0]).shape[:2]
            errs[arm].append(compute_metrics(pred, depth)["abs_rel"])
        info = json.loads((tmp_path / f"{seed}{mode}_stack" / "depth_info.json").read_text())
        assert info["K"] == pytest.approx(Ks, rel=1e-6) and info["K_convention"] == "metric"
        assert info["image"] == str(paths[0]) and info["stack"] is None  # f/8: the sharpest photo
        assert [lens["f_number"] for lens in info["lens"]] == list(F_NUMBERS)
        assert info["disp_focus"] == pytest.approx(1.0 / info["lens"][0]["focus_m"])
        assert info["focus_side"] == side
        assert info["side_rule"] == ("recorded focus_side" if side else "relative")
    assert np.mean(errs["stack"]) < 0.7 * np.mean(errs["single"]), errs


def test_a_focus_bracket_is_refused_with_the_sweep_named(tmp_path, capsys):
    paths, *_ = _photo_bracket(tmp_path, 20002, f_numbers=(2.0, 2.0), focus_m=(1.0, 3.0))
    out = tmp_path / "out"
    assert main(["depth", "--photos", *map(str, paths), "--sensor-mm", "36", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --photos: a focus bracket (focus 1-3 m)") and "bokehdepth sweep --photos" in err
    assert err.count("\n") == 1 and not out.exists()


def test_one_photo_is_not_a_bracket(tmp_path, capsys):
    paths, *_ = _photo_bracket(tmp_path, 20003, f_numbers=(2.0,))
    out = tmp_path / "out"
    assert main(["depth", "--photos", str(paths[0]), "--sensor-mm", "36", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err == "error: --photos: a bracket needs at least 2 photos of the same scene, got 1\n"
    assert not out.exists()


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["img.png", "--photos", "a.png", "b.png"], "not both"),
        (["--stack", "stack", "--photos", "a.png", "b.png"], "not both"),
        (["img.png"], "--stack STACK_DIR missing"),
        (["--stack", "stack"], "IMAGE missing"),
    ],
)
def test_image_stack_and_photos_combinations(scene, capsys, argv, needle):
    out = scene / "out"
    assert main(["depth", *argv, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: depth:") and needle in err and not out.exists()


def test_photo_flags_with_a_stack_warn_and_focus_side_overrides(scene, capsys):
    out = scene / "out"
    argv = ["depth", str(scene / "img.png"), "--stack", str(scene / "stack"), "--focal-mm", "50"]
    assert main([*argv, "--focus-m", "2", "--focus-side", "far", "-o", str(out)]) == 0
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "warning: --focal-mm ignored: it applies to --photos only; a stack folder carries its K and focus in "
        "stack.json",
        "warning: --focus-m ignored: it applies to --photos only; a stack folder carries its K and focus in stack.json",
    ]
    info = json.loads((out / "depth_info.json").read_text())
    assert info["focus_side"] == "far" and info["ignored_flags"] == ["--focal-mm", "--focus-m"]


def _noise_photo(path, h, w, seed, **tags):
    from helpers_sweep import save_photo

    img = np.random.default_rng(seed).uniform(0.2, 0.8, (h, w, 3))
    return save_photo(path, img, **{"focal": 50, "subject": 2.0, "f35": 50, **tags})


def test_photos_in_any_order_and_of_other_sizes_give_depth_at_the_reference_photos_size(tmp_path):
    """The sharpest photo (f/8, given last, twice the others' size) is the reference: depth.npy has its size,
    ``image`` names it, and ``K`` lists each photo's K in the order given (at the 64-px working width)."""
    from bokehdepth.lens import k_from_camera

    wide = _noise_photo(tmp_path / "f2.png", 48, 64, 0, fnumber=2.0)
    mid = _noise_photo(tmp_path / "f4.png", 48, 64, 1, fnumber=4.0)
    sharp = _noise_photo(tmp_path / "f8.png", 96, 128, 2, fnumber=8.0)
    out = tmp_path / "out"
    assert main(["depth", "--photos", str(wide), str(mid), str(sharp), "-o", str(out)]) == 0
    assert np.load(out / "depth.npy").shape == (96, 128)
    info = json.loads((out / "depth_info.json").read_text())
    assert info["image"] == str(sharp) and info["photos"] == [str(wide), str(mid), str(sharp)]
    sensor = 43.2666 / np.hypot(1.0, 0.75)  # 50 mm, 35 mm-equivalent 50 mm, 4:3 frame: the full-frame diagonal
    want = [float(k_from_camera(50, n, 2.0, sensor, 64)) for n in (2.0, 4.0, 8.0)]
    assert info["K"] == pytest.approx(want, rel=1e-3)
    assert info["photo_working_size"] == [48, 64] and info["photo_size"] == [96, 128]


def test_released_backend_without_weights_fails_before_reading_the_photos(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    ok = _noise_photo(tmp_path / "ok.png", 24, 32, 0, fnumber=8.0)
    for backend, published in (("dav2-dsfa-s", "DAV2_dsfa_release.pth"), ("udv2-dsfa", "UDv2_dsfa_release.pth")):
        argv = ["depth", "--photos", str(ok), str(tmp_path / "broken.jpg"), "--backend", backend]
        assert main([*argv, "--weights", str(tmp_path / "w"), "-o", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and err.count("\n") == 1 and published in err and "hf download" in err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("case, needle", [("max-width", "error: --max-width:"), ("folder", "is a folder")])
def test_bad_photo_arguments_name_the_flag_or_file(tmp_path, capsys, case, needle):
    a = _noise_photo(tmp_path / "a.png", 24, 32, 0, fnumber=8.0)
    b = _noise_photo(tmp_path / "b.png", 24, 32, 1, fnumber=2.0)
    extra = {"max-width": [str(b), "--max-width", "-3"], "folder": [str(tmp_path)]}[case]
    out = tmp_path / "out"
    assert main(["depth", "--photos", str(a), *extra, "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err and err.count("\n") == 1 and not out.exists()


def test_sensor_width_from_exif_and_flags_for_real_camera_cases(tmp_path):
    """--focal-mm corrects the focal length, not the crop factor (FocalLengthIn35mmFilm / FocalLength from the
    EXIF: a 1.5x APS-C body is 24 mm wide whatever lens is on it), and --sensor-mm (the spec width, the long
    side) is turned with a portrait photo's EXIF Orientation."""
    # APS-C body reporting 50 mm (75 mm equivalent), real lens 85 mm: sensor 24 mm on a 3:2 frame
    a = _noise_photo(tmp_path / "a.png", 32, 48, 0, fnumber=8.0, focal=50, f35=75)
    b = _noise_photo(tmp_path / "b.png", 32, 48, 1, fnumber=2.0, focal=50, f35=75)
    out = tmp_path / "out"
    assert main(["depth", "--photos", str(a), str(b), "--focal-mm", "85", "-o", str(out)]) == 0
    lens = json.loads((out / "depth_info.json").read_text())["lens"]
    assert [s["sensor_mm"] for s in lens] == pytest.approx([24.0, 24.0], abs=0.05)
    # full-frame 36x24 mm body held upright: stored 48x32 landscape with Orientation 6, upright 32x48
    p = _noise_photo(tmp_path / "p.png", 32, 48, 2, fnumber=8.0, orientation=6)
    q = _noise_photo(tmp_path / "q.png", 32, 48, 3, fnumber=2.0, orientation=6)
    out = tmp_path / "portrait"
    assert main(["depth", "--photos", str(p), str(q), "--sensor-mm", "36", "-o", str(out)]) == 0
    info = json.loads((out / "depth_info.json").read_text())
    assert np.load(out / "depth.npy").shape == (48, 32) and info["photo_size"] == [48, 32]
    assert [s["sensor_mm"] for s in info["lens"]] == pytest.approx([24.0, 24.0], abs=1e-6)


def test_alike_f_numbers_name_the_fix_and_single_frame_still_runs(tmp_path, capsys):
    a = _noise_photo(tmp_path / "a.png", 24, 32, 0, fnumber=2.0)
    b = _noise_photo(tmp_path / "b.png", 24, 32, 1, fnumber=2.1)  # K 5 % apart
    argv = ["depth", "--photos", str(a), str(b)]
    assert main([*argv, "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --photos:") and "wider range of f-numbers" in err and "--single-frame" in err
    assert main([*argv, "--single-frame", "-o", str(tmp_path / "single")]) == 0
    assert np.load(tmp_path / "single" / "depth.npy").shape == (24, 32)


def test_a_truncated_photo_is_a_one_line_error_naming_it(tmp_path, capsys):
    paths, *_ = _photo_bracket(tmp_path, 20004, f_numbers=(8.0, 2.0))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    assert main(["depth", "--photos", *map(str, paths), "--sensor-mm", "36", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {paths[1]}: ") and "truncated" in err and err.count("\n") == 1
    assert not out.exists()
