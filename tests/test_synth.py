"""Synthetic scenes, textures, stacks and the dataset writer."""

from __future__ import annotations

import hashlib
import json
import math
import shutil

import numpy as np
import pytest
from helpers_synth import TINY_KS, TINY_SIZE, make_tiny_dataset, tree_bytes

from bokehdepth.cli import main
from bokehdepth.errors import InputError
from bokehdepth.io import read_image, read_stack
from bokehdepth.synth import (
    DEPTH_RANGE,
    choose_focus,
    default_Ks,
    make_scene,
    normalize_disp,
    published_focus,
    scene_seed,
)
from bokehdepth.synth.textures import TEXTURE_KINDS, linear_to_srgb, srgb_to_linear, texture


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("synth") / "ds"
    return make_tiny_dataset(folder, n=3)


# ---------------------------------------------------------------------------------------------- textures
def test_srgb_transfer_known_values_and_round_trip():
    # sRGB 0.5 → linear ((0.5 + 0.055) / 1.055) ** 2.4 = 0.21404; the linear segment below 0.04045
    assert srgb_to_linear(np.array([0.5]))[0] == pytest.approx(((0.5 + 0.055) / 1.055) ** 2.4, rel=1e-6)
    assert srgb_to_linear(np.array([0.02]))[0] == pytest.approx(0.02 / 12.92, rel=1e-6)
    x = np.linspace(0, 1, 101, dtype=np.float32)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(x)), x, atol=1e-5)


@pytest.mark.parametrize("kind", sorted(TEXTURE_KINDS))
def test_texture_kinds_shape_range_determinism(kind):
    a = texture(kind, np.random.default_rng(3), 40, 56)
    b = texture(kind, np.random.default_rng(3), 40, 56)
    assert a.shape == (40, 56, 3) and a.dtype == np.float32
    assert a.min() >= 0.0 and a.max() <= 1.0
    np.testing.assert_array_equal(a, b)


def test_flat_texture_is_nearly_textureless():
    t = texture("flat", np.random.default_rng(0), 64, 64)
    assert t.std(axis=(0, 1)).max() < 0.05 * max(t.mean(), 1e-3) + 0.01


# ---------------------------------------------------------------------------------------------- scenes
def test_make_scene_deterministic_and_physical():
    a, b, c = make_scene(11, 48), make_scene(11, 48), make_scene(12, 48)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.depth, b.depth)
    assert a.intrinsics == b.intrinsics
    assert not np.array_equal(a.depth, c.depth)
    for s in (a, c):
        assert s.image.shape == (48, 48, 3) and s.depth.shape == (48, 48)
        assert s.image.dtype == np.float32 and s.depth.dtype == np.float32
        assert 0.0 <= s.image.min() and s.image.max() <= 1.0
        assert np.isfinite(s.depth).all()
        assert DEPTH_RANGE[0] - 1e-5 <= s.depth.min() and s.depth.max() <= DEPTH_RANGE[1] + 1e-5
        # horizontal FOV drawn in [40°, 90°]: fx = W / (2 tan(FOV/2))
        fov = 2 * math.degrees(math.atan(48 / (2 * s.intrinsics["fx"])))
        assert 40.0 - 1e-6 <= fov <= 90.0 + 1e-6
        assert s.intrinsics["fx"] == s.intrinsics["fy"]
        assert s.subject_mask.any()
        assert s.disp_focus == pytest.approx(float(np.median(1.0 / s.depth[s.subject_mask])), rel=1e-5)


# sha256 (first 16 hex) of make_scene(seed, 32): depth rounded to 0.1 mm, then the image as 8-bit. Recorded
# when the default scenes were checked bit for bit against a dataset written before --depth-range existed
# (data/synthK14, 2026-11-23). A change here changes every dataset: bump synth.dataset.FORMAT_VERSION.
DEFAULT_SCENE_DIGESTS = ["c773901b21b448c2", "78f52494ff5a099a", "a8f81cc6d2670837", "aec8e42cd3b4083e"]


def _scene_digest(s) -> str:
    data = np.round(s.depth.astype(np.float64), 4).tobytes() + np.round(s.image * 255).astype(np.uint8).tobytes()
    return hashlib.sha256(data).hexdigest()[:16]


def test_default_scenes_are_pinned():
    assert [_scene_digest(make_scene(seed, 32)) for seed in range(4)] == DEFAULT_SCENE_DIGESTS


def test_make_scene_depth_range_scales_the_world():
    # a 0.5–5 m world (rooms, table tops): the same draws as the default world, the background scaled by 5/20
    from bokehdepth.synth.scenes import check_depth_range

    walls = 0
    for seed in range(8):
        near, wide = make_scene(seed, 48, depth_range=(0.5, 5.0)), make_scene(seed, 48)
        assert 0.5 - 1e-5 <= near.depth.min() and near.depth.max() <= 5.0 + 1e-5
        bg_near, bg_wide = near.layers[0], wide.layers[0]
        assert bg_near["kind"] == bg_wide["kind"]  # same random draws
        if bg_near["kind"] == "wall":  # the wall's anchor depth is drawn in [far/4, far] and scales with far
            walls += 1
            assert 1.25 <= bg_near["depth_m"] <= 5.0
            assert bg_near["depth_m"] == pytest.approx(bg_wide["depth_m"] * 5.0 / 20.0, rel=1e-9)
            wall = near.labels == 0
            # not a flat 5 m background produced by clipping: most wall pixels lie strictly inside the range
            assert (near.depth[wall] < 5.0 - 1e-4).mean() > 0.5
        else:
            assert bg_near["depth_m"] == 5.0 and bg_wide["depth_m"] == 20.0
    assert walls >= 3
    for bad in [(0.0, 5.0), (1.0, 3.0), (float("nan"), 5.0), (2.0, float("inf")), (1e-30, 1.0), (1.0, 1e9)]:
        with pytest.raises(ValueError, match="depth range"):
            check_depth_range(bad)


def test_make_scene_rectangular_size():
    s = make_scene(5, (24, 40))
    assert s.image.shape == (24, 40, 3) and s.depth.shape == (24, 40)


def test_scenes_have_occlusions_and_several_depths():
    # over a handful of scenes, depth maps hold several distinct surfaces and depth edges
    n_edges = 0
    for seed in range(6):
        d = make_scene(seed, 64).depth
        n_edges += int((np.abs(np.diff(np.log(d), axis=1)) > 0.2).sum())
        assert len(np.unique(np.round(np.log(d), 2))) > 5
    assert n_edges > 50


def test_plane_depth_matches_ray_plane_intersection():
    from bokehdepth.synth.scenes import _Camera, _plane_depth

    cam = _Camera(50.0, 50.0, 15.5, 11.5, 24, 32)
    # fronto-parallel plane at 3 m: depth 3 everywhere
    np.testing.assert_allclose(_plane_depth(cam, np.array([0.0, 0.0, -1.0]), np.array([0.0, 0.0, 3.0])), 3.0)
    # slanted plane: the back-projected points satisfy n·(P − P0) = 0
    n = np.array([0.3, -0.2, -0.9])
    n /= np.linalg.norm(n)
    p0 = np.array([0.1, 0.2, 4.0])
    z = _plane_depth(cam, n, p0)
    pts = np.stack([cam.xn * z, cam.yn * z, z], -1)
    np.testing.assert_allclose((pts - p0) @ n, 0.0, atol=1e-9)


# ---------------------------------------------------------------------------------------------- stacks
def test_default_Ks_scale_with_width():
    assert default_Ks(256) == [1.5, 3.0, 6.0]
    assert default_Ks(512) == [3.0, 6.0, 12.0]
    assert default_Ks(256, "normalized") == [10.0, 20.0, 30.0]


def test_choose_focus_near_far():
    depth = np.array([[1.0, 2.0], [4.0, 8.0]], np.float32)
    rng = np.random.default_rng(0)
    assert choose_focus(depth, rng, mode="near")[:2] == (1.0, "near")
    assert choose_focus(depth, rng, mode="far")[:2] == (0.125, "far")
    d, side, mode = choose_focus(depth, rng, subject_disp=0.3, mode="subject")
    assert (d, side, mode) == (0.3, None, "subject")
    d, side, _ = choose_focus(depth, rng, mode="uniform")
    assert 0.125 <= d <= 1.0 and side is None


def test_normalize_disp_by_hand():
    depth = np.array([[1.0, 2.0], [4.0, np.nan]], np.float32)
    dn, dmin, dmax = normalize_disp(depth)
    assert (dmin, dmax) == (0.25, 1.0)
    # (1/z − 0.25) / 0.75: 1 → 1, 2 → 1/3, 4 → 0; the invalid pixel takes the median (1/3)
    np.testing.assert_allclose(dn, [[1.0, 1 / 3], [0.0, 1 / 3]], atol=1e-6)


def test_published_focus_by_hand():
    # foreground = 4 mask pixels at 1, 1.25, 2, 2.5 m (all ≤ the 96th percentile except the farthest)
    depth = np.full((2, 4), 10.0, np.float32)
    depth[0] = [1.0, 1.25, 2.0, 2.5]
    mask = np.zeros((2, 4), bool)
    mask[0] = True
    dn, dmin, dmax = normalize_disp(depth)
    focus, flat = published_focus(dn, depth, mask, flatten=True)
    fg = dn[0, :3]  # 2.5 m is above the 96th percentile of the mask's depth
    expected = float(np.median(fg[fg > np.median(fg)]))
    assert focus == pytest.approx(expected, rel=1e-6)
    assert np.allclose(flat[0, :3], focus) and flat[0, 3] == dn[0, 3]
    assert np.array_equal(flat[1], dn[1])


# ---------------------------------------------------------------------------------------------- dataset
def test_dataset_files_and_manifest(tiny):
    root = tiny.parent
    lines = tiny.read_text().splitlines()
    assert len(lines) == 3
    rec = json.loads(lines[0])
    for key in (
        "id",
        "image",
        "depth",
        "stack",
        "K",
        "K_convention",
        "disp_focus",
        "focus_side",
        "intrinsics",
        "split",
        "seed",
        "size",
    ):
        assert key in rec
    assert rec["K"] == [0.0, *TINY_KS] and rec["K_convention"] == "metric"
    assert rec["size"] == [TINY_SIZE, TINY_SIZE]
    stack = read_stack(root / rec["stack"])
    assert stack.K == rec["K"] and stack.disp_focus == pytest.approx(rec["disp_focus"])
    assert stack.focus_side == rec["focus_side"]
    depth = np.load(root / rec["depth"])
    assert depth.dtype == np.float32 and depth.shape == (TINY_SIZE, TINY_SIZE)
    # the record's seed reproduces the scene
    scene = make_scene(rec["seed"], TINY_SIZE)
    np.testing.assert_array_equal(scene.depth, depth)
    np.testing.assert_allclose(read_image(root / rec["image"]), scene.image, atol=0.5 / 255 + 1e-6)
    assert rec["seed"] == scene_seed(7, 0)


def test_stack_equals_direct_render_call(tiny):
    from bokehdepth.render import render_stack

    root = tiny.parent
    for line in tiny.read_text().splitlines():
        rec = json.loads(line)
        scene = make_scene(rec["seed"], TINY_SIZE)
        direct = render_stack(
            scene.image, 1.0 / scene.depth, list(TINY_KS), disp_focus=rec["disp_focus"], backend="cpu"
        )
        stack = read_stack(root / rec["stack"])
        assert len(stack) == len(direct) == 3
        for got, want in zip(stack.frames, direct.frames):
            np.testing.assert_allclose(got, np.round(np.clip(want, 0, 1) * 255) / 255, atol=1e-6)
        if rec["focus_side"] == "near":
            assert rec["disp_focus"] == pytest.approx(float((1.0 / scene.depth).max()), rel=1e-6)


def test_sensor_noise_is_per_scene_gaussian_on_every_frame(tiny, tmp_path):
    """``noise``: each scene draws σ ≤ the maximum; every frame (reference and image.png included) is the
    noise-free dataset's frame plus independent Gaussian noise of that σ (up to 8-bit storage), and the scenes,
    splits and focus planes are those of the noise-free dataset."""
    noisy = make_tiny_dataset(tmp_path / "noisy", n=3, noise=0.02)
    assert json.loads((noisy.parent / "dataset.json").read_text())["noise"] == 0.02
    for clean_line, noisy_line in zip(tiny.read_text().splitlines(), noisy.read_text().splitlines()):
        clean_rec, rec = json.loads(clean_line), json.loads(noisy_line)
        sigma = rec.pop("noise_sigma")
        assert "noise_sigma" not in clean_rec and 0.0 <= sigma <= 0.02
        assert rec == clean_rec
        clean, stack = read_stack(tiny.parent / rec["stack"]), read_stack(noisy.parent / rec["stack"])
        assert stack.extra["noise_sigma"] == sigma
        residuals = [got - want for got, want in zip(stack.frames, clean.frames)]
        inside = [r[(w > 0.1) & (w < 0.9)] for r, w in zip(residuals, clean.frames)]  # away from clipping
        for r in inside:  # σ of the noise, quantised twice (each adds 1/255²/12 of variance)
            assert np.sqrt(max(r.var() - 2 / 12 / 255**2, 0.0)) == pytest.approx(sigma, rel=0.15, abs=1e-3)
        assert abs(np.corrcoef(inside[0][:200], inside[1][:200])[0, 1]) < 0.3  # independent per frame
        np.testing.assert_array_equal(read_image(noisy.parent / rec["image"]), stack.frames[0])


def test_byte_identical_and_worker_independent(tiny, tmp_path):
    again = make_tiny_dataset(tmp_path / "again", n=3, workers=2)
    assert tree_bytes(tiny.parent) == tree_bytes(again.parent)


def test_resume_skips_finished_scenes(tmp_path):
    m = make_tiny_dataset(tmp_path / "ds", n=2)
    before = tree_bytes(m.parent)
    keep = m.parent / "000000" / "image.png"
    mtime = keep.stat().st_mtime_ns
    shutil.rmtree(m.parent / "000001")
    m.unlink()
    make_tiny_dataset(tmp_path / "ds", n=2)
    assert tree_bytes(m.parent) == before
    assert keep.stat().st_mtime_ns == mtime


def test_rerun_with_other_arguments_is_refused(tmp_path):
    make_tiny_dataset(tmp_path / "ds", n=1)
    with pytest.raises(InputError, match="dataset.json"):
        make_tiny_dataset(tmp_path / "ds", n=1, seed=8)


def test_depth_range_is_part_of_the_dataset_config(tmp_path):
    m = make_tiny_dataset(tmp_path / "near", n=2, depth_range=(0.5, 5.0))
    cfg_path = m.parent / "dataset.json"
    assert json.loads(cfg_path.read_text())["depth_range"] == [0.5, 5.0]
    for line in m.read_text().splitlines():
        rec = json.loads(line)
        assert rec["scene_depth_range"] == [0.5, 5.0]
        assert read_stack(m.parent / rec["stack"]).extra["scene_depth_range"] == [0.5, 5.0]
        # the record alone reproduces the scene: seed, size and the configured range
        scene = make_scene(rec["seed"], rec["size"][0], depth_range=tuple(rec["scene_depth_range"]))
        np.testing.assert_array_equal(scene.depth, np.load(m.parent / rec["depth"]))
        assert rec["depth_minmax"] == [float(scene.depth.min()), float(scene.depth.max())]
    with pytest.raises(InputError, match="dataset.json"):
        make_tiny_dataset(tmp_path / "near", n=2)  # another range: refused
    # a folder made before the field existed was made with the default range and still resumes
    wide = make_tiny_dataset(tmp_path / "wide", n=1)
    cfg = json.loads((wide.parent / "dataset.json").read_text())
    del cfg["depth_range"]
    (wide.parent / "dataset.json").write_text(json.dumps(cfg))
    assert make_tiny_dataset(tmp_path / "wide", n=2) == wide
    with pytest.raises(InputError, match="dataset.json"):
        make_tiny_dataset(tmp_path / "wide", n=2, depth_range=(0.5, 5.0))


def test_blur_larger_than_the_image_is_refused(tmp_path):
    # K 14 px·m at 32 px with a 1 cm near plane: radius 14 × (100 − 0.0…) ≈ 1400 px > 32 px
    with pytest.raises(InputError, match="--depth-range/--K.*raise NEAR or lower --K"):
        make_tiny_dataset(tmp_path / "ds", n=1, depth_range=(0.01, 1.0), Ks=(14.0,))
    assert not (tmp_path / "ds").exists()


def test_scene_seeds_never_repeat():
    from bokehdepth.synth.dataset import _draw_seed, scene_seeds

    # find a collision of the plain 32-bit draws among a few thousand seeds (about 0.1 % per seed at n = 4000)
    n = 4000
    for master in range(400):
        plain = [_draw_seed(master, i, 0) for i in range(n)]
        if len(set(plain)) < n:
            break
    else:
        pytest.fail("no collision found; widen the search")
    seeds = scene_seeds(master, n)
    assert len(set(seeds)) == n  # every scene distinct
    changed = [i for i in range(n) if seeds[i] != plain[i]]
    assert changed and all(plain[i] in plain[:i] for i in changed)  # only the repeats were redrawn
    assert scene_seeds(master, changed[0]) == seeds[: changed[0]]  # a prefix does not depend on n
    assert scene_seed(master, changed[0]) == seeds[changed[0]]


def test_dataset_json_records_backend_and_version(tmp_path):
    m = make_tiny_dataset(tmp_path / "ds", n=1)
    cfg = json.loads((m.parent / "dataset.json").read_text())
    assert cfg["backend"] == "cpu" and cfg["bokehdepth_version"]


def test_normalized_convention_records(tmp_path):
    m = make_tiny_dataset(tmp_path / "ds", n=1, K_convention="normalized", Ks=(10.0, 30.0))
    rec = json.loads(m.read_text().splitlines()[0])
    assert rec["K_convention"] == "normalized" and rec["K"] == [0.0, 10.0, 30.0]
    stack = read_stack(m.parent / rec["stack"])
    assert stack.K_convention == "normalized"
    dmin, dmax = stack.extra["disp_min"], stack.extra["disp_max"]
    # disp_focus (1/m) is the metric equivalent of the normalised focus
    assert stack.disp_focus == pytest.approx(dmin + stack.extra["disp_focus_norm"] * (dmax - dmin))


# ---------------------------------------------------------------------------------------------- CLI
def test_cli_synth_writes_dataset_and_preview(tmp_path, capsys):
    out = tmp_path / "cli"
    rc = main(
        ["synth", "-o", str(out), "--scenes", "2", "--size", "32", "--K", "1", "2", "--seed", "3", "--no-progress"]
    )
    assert rc == 0
    assert (out / "manifest.jsonl").exists() and (out / "preview.png").exists()
    sheet = read_image(out / "preview.png")
    assert sheet.shape[0] > 32 and sheet.shape[1] >= 4 * 32
    assert "manifest" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--scenes", "0"], "--scenes"),
        (["--scenes", "1", "--size", "4"], "--size"),
        (["--scenes", "1", "--K", "-1"], "--K"),
        (["--scenes", "1", "--K", "abc"], "--K"),
        (["--scenes", "1", "--workers", "0"], "--workers"),
        (["--scenes", "1", "--depth-range", "5", "2"], "--depth-range"),
        (["--scenes", "1", "--depth-range", "0", "2"], "--depth-range"),
        (["--scenes", "1", "--depth-range", "x", "2"], "--depth-range"),
        (["--scenes", "1", "--noise", "-0.01"], "--noise"),
        (["--scenes", "1", "--noise", "0.5"], "--noise"),
        (["--scenes", "1", "--noise", "nan"], "--noise"),
    ],
)
def test_cli_synth_bad_arguments(tmp_path, capsys, argv, flag):
    out = tmp_path / "bad"
    rc = main(["synth", "-o", str(out), "--no-progress", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and flag in err
    assert not out.exists()


def test_cli_synth_output_is_a_file(tmp_path, capsys):
    target = tmp_path / "file.txt"
    target.write_text("x")
    rc = main(["synth", "-o", str(target), "--scenes", "1", "--size", "32", "--no-progress"])
    assert rc == 2 and capsys.readouterr().err.startswith("error:")


def test_rerun_with_more_scenes_extends(tmp_path):
    small = make_tiny_dataset(tmp_path / "a", n=1)
    grown = make_tiny_dataset(tmp_path / "a", n=2)
    full = make_tiny_dataset(tmp_path / "b", n=2)
    assert tree_bytes(grown.parent) == tree_bytes(full.parent)
    assert small == grown


def test_public_api():
    import bokehdepth.data
    import bokehdepth.eval
    import bokehdepth.synth

    assert {"make_scene", "generate_dataset", "Scene", "render_scene_stack", "published_focus"} <= set(
        bokehdepth.synth.__all__
    )
    assert set(bokehdepth.data.__all__) == {
        "RGBDFolder",
        "Stage1Dataset",
        "Stage2Dataset",
        "read_manifest",
        "write_manifest",
    }
    for name in bokehdepth.data.__all__:
        assert getattr(bokehdepth.data, name) is not None
    assert "compute_metrics" in bokehdepth.eval.__all__


def test_scene_layout_does_not_depend_on_resolution():
    a, b = make_scene(21, 32), make_scene(21, 64)
    assert a.layers == b.layers
    assert b.intrinsics["fx"] == pytest.approx(2 * a.intrinsics["fx"])
    # the same surfaces at both sizes: the 2x2-block median of the 64 px depth matches 32 px almost everywhere
    b_small = np.median(b.depth.reshape(32, 2, 32, 2).transpose(0, 2, 1, 3).reshape(32, 32, 4), axis=-1)
    assert np.mean(np.abs(np.log(b_small) - np.log(a.depth)) < 0.05) > 0.9


def test_cli_resume_by_other_version_warns_in_one_line(tmp_path, capsys):
    """Resuming a dataset made by another bokehdepth version works and says so in one ``warning:`` line;
    the folder keeps the version that made it."""
    out = tmp_path / "v"
    argv = ["synth", "-o", str(out), "--scenes", "1", "--size", "32", "--K", "1", "2", "--no-progress"]
    assert main(argv) == 0
    cfg_path = out / "dataset.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["bokehdepth_version"] = "0.0.1"
    cfg_path.write_text(json.dumps(cfg))
    capsys.readouterr()
    assert main([*argv[:4], "2", *argv[5:]]) == 0
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {cfg_path}: made by bokehdepth 0.0.1, resumed by ")
    assert err.count("\n") == 1
    assert json.loads(cfg_path.read_text())["bokehdepth_version"] == "0.0.1"
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 2
