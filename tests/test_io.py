"""Images, depth maps and stack folders: round trips, the reference layout, validation and atomic writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from bokehdepth import io
from bokehdepth.errors import InputError, OutputError


def _img(rng, h=12, w=17):
    return rng.random((h, w, 3), dtype=np.float32)


@pytest.mark.parametrize(
    "suffix, bits, tol",
    [
        (".png", 8, 0.5 / 255),
        (".png", 16, 0.5 / 65535),
        (".tif", 8, 0.5 / 255),
        (".tif", 16, 0.5 / 65535),
        (".webp", 8, None),
        (".jpg", 8, None),
    ],
)
def test_image_round_trip(tmp_path, rng, suffix, bits, tol):
    img = _img(rng)
    path = tmp_path / f"a{suffix}"
    if suffix == ".webp":
        io.write_image(path, img, quality=100)
    else:
        io.write_image(path, img, bits=bits)
    back = io.read_image(path)
    assert back.shape == img.shape and back.dtype == np.float32
    if tol is None:  # lossy: only the mean level survives
        assert abs(back.mean() - img.mean()) < 0.03
    else:
        np.testing.assert_allclose(back, img, atol=tol + 1e-7)


def test_grey_and_alpha(tmp_path, rng):
    grey = (rng.random((5, 6)) * 255).astype(np.uint8)
    Image.fromarray(grey, "L").save(tmp_path / "g.png")
    out = io.read_image(tmp_path / "g.png")
    assert out.shape == (5, 6, 3)
    np.testing.assert_allclose(out[..., 0], grey / 255.0, atol=1e-7)
    np.testing.assert_array_equal(out[..., 0], out[..., 2])
    rgba = (rng.random((5, 6, 4)) * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    out = io.read_image(tmp_path / "a.png")
    np.testing.assert_allclose(out, rgba[..., :3] / 255.0, atol=1e-7)


def test_grey_16bit(tmp_path):
    import cv2

    grey = np.arange(20, dtype=np.uint16).reshape(4, 5) * 3000
    cv2.imwrite(str(tmp_path / "g16.png"), grey)
    out = io.read_image(tmp_path / "g16.png")
    np.testing.assert_allclose(out[..., 1], grey / 65535.0, atol=1e-6)


def test_exif_orientation_applied(tmp_path):
    arr = np.zeros((4, 10, 3), np.uint8)
    arr[:, :5] = 255  # left half white
    im = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    im.save(tmp_path / "o.jpg", exif=exif, quality=100)
    out = io.read_image(tmp_path / "o.jpg")
    assert out.shape == (10, 4, 3)
    assert out[:5].mean() > 0.9 and out[5:].mean() < 0.1  # the white half ends up on top


def test_bad_images(tmp_path, rng):
    with pytest.raises(InputError, match="not found"):
        io.read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"this is not an image")
    with pytest.raises(InputError, match="junk.png"):
        io.read_image(tmp_path / "junk.png")
    io.write_image(tmp_path / "full.jpg", _img(rng, 64, 64))
    data = (tmp_path / "full.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="trunc.jpg.*(corrupt|truncated)"):
        io.read_image(tmp_path / "trunc.jpg")
    with pytest.raises(InputError, match="folder"):
        io.read_image(tmp_path)


@pytest.mark.parametrize("suffix", [".npy", ".pfm", ".png"])
def test_depth_round_trip(tmp_path, rng, suffix):
    depth = rng.uniform(0.5, 20.0, (7, 9)).astype(np.float32)
    depth[1, 2] = np.nan
    path = tmp_path / f"d{suffix}"
    io.write_depth(path, depth, scale=1000.0)
    back = io.read_depth(path, scale=1000.0 if suffix == ".png" else None)
    assert back.shape == depth.shape
    assert np.isnan(back[1, 2])
    tol = 0.5e-3 if suffix == ".png" else 0.0
    np.testing.assert_allclose(back[np.isfinite(depth)], depth[np.isfinite(depth)], atol=tol + 1e-7)


def test_depth_png_needs_scale(tmp_path):
    io.write_depth(tmp_path / "d.png", np.ones((3, 3), np.float32))
    with pytest.raises(InputError, match="scale"):
        io.read_depth(tmp_path / "d.png")


def test_validate_depth():
    good = np.full((4, 4), 2.0, np.float32)
    io.validate_depth(good, "d.npy", shape=(4, 4, 3))
    for bad, msg in [
        (np.where(np.eye(4) > 0, np.nan, 2.0), "NaN"),
        (np.full((4, 4), -1.0), "> 0"),
        (np.zeros((4, 4)), "> 0"),
        (np.full((4, 4), np.inf), "NaN or inf"),
    ]:
        with pytest.raises(InputError, match=msg):
            io.validate_depth(bad, "d.npy")
    with pytest.raises(InputError, match="resize"):
        io.validate_depth(good, "d.npy", shape=(5, 4))
    with pytest.raises(InputError, match=">= 0"):
        io.validate_depth(-good, "disp.npy", kind="disp")
    io.validate_depth(np.zeros((4, 4)), "disp.npy", kind="disp")  # disparity 0 = infinity is fine


def test_stack_round_trip(tmp_path, rng):
    frames = [_img(rng) for _ in range(3)]
    st = io.Stack(
        frames=frames,
        K=[0, 5.5, 11],
        disp_focus=0.4,
        gamma=2.2,
        focus_side="near",
        lens={"focal_mm": 50},
        extra={"note": "x"},
    )
    io.write_stack(st, tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "stack.json").read_text())
    assert meta["frames"] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert meta["K"] == [0.0, 5.5, 11.0] and meta["disp_focus"] == 0.4 and meta["reference"] == 0
    assert meta["focus_side"] == "near" and meta["source"] == "render" and meta["K_convention"] == "metric"
    back = io.read_stack(tmp_path / "s")
    assert back.K == st.K and back.disp_focus == 0.4 and back.extra == {"note": "x"}
    np.testing.assert_allclose(back.array(), np.stack(frames), atol=0.5 / 255 + 1e-7)
    io.write_stack(st, tmp_path / "s16", bits=16)
    np.testing.assert_allclose(io.read_stack(tmp_path / "s16").array(), np.stack(frames), atol=1e-4)


def test_stack_k_convention_defaults_to_metric(tmp_path, rng):
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 3]), tmp_path / "s")
    meta = json.loads((tmp_path / "s" / "stack.json").read_text())
    del meta["K_convention"]
    (tmp_path / "s" / "stack.json").write_text(json.dumps(meta))
    assert io.read_stack(tmp_path / "s").K_convention == "metric"


def test_reference_layout_stack(tmp_path, rng):
    run = tmp_path / "run_20260101_000000"
    ds = run / "defocus_stack"
    ds.mkdir(parents=True)
    ref = _img(rng)
    io.write_image(run / "ref.png", ref)
    for i in range(3):
        io.write_image(ds / f"{i}.png", _img(rng))
    (ds / "stack_index.json").write_text(
        json.dumps(
            {
                "ids": ["0", "1", "2"],
                "k_values": {"0": 10.0, "1": 20.0, "2": 30.0},
                "ref_image": str(run / "ref.png"),
                "size": [17, 12],
            }
        )
    )
    for path in (ds, run):
        st = io.read_stack(path)
        assert st.K == [0.0, 10.0, 20.0, 30.0] and st.reference == 0
        assert st.K_convention == "normalized" and st.source == "generated"
        np.testing.assert_allclose(st.frames[0], ref, atol=0.5 / 255 + 1e-7)


def test_stack_validation(tmp_path, rng):
    with pytest.raises(InputError, match="2 frames but 3 K"):
        io.Stack(frames=[_img(rng)] * 2, K=[0, 1, 2])
    with pytest.raises(InputError, match="sizes must match"):
        io.Stack(frames=[_img(rng), _img(rng, 5, 5)], K=[0, 1])
    with pytest.raises(InputError, match=">= 0"):
        io.Stack(frames=[_img(rng)] * 2, K=[0, -1])
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 3]), tmp_path / "s")
    (tmp_path / "s" / "frame_001.png").unlink()
    with pytest.raises(InputError, match="frame_001.png"):
        io.read_stack(tmp_path / "s")
    with pytest.raises(InputError, match="no stack.json"):
        io.read_stack(tmp_path)


def test_atomic_failure_leaves_nothing(tmp_path):
    target = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with io.atomic_dir(target) as tmp:
            (tmp / "a.txt").write_text("partial")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(RuntimeError):
        with io.atomic_file(tmp_path / "f.npy") as tmp:
            tmp.write_bytes(b"x")
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_has_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        with io.atomic_dir(tmp_path / "new") as tmp:
            (tmp / "a.txt").write_text("x")
    finally:
        os.umask(mask)
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o755


def test_atomic_dir_merges_into_existing(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("k")
    (tmp_path / "out" / "depth.npy").write_text("old")
    with io.atomic_dir(tmp_path / "out") as tmp:
        (tmp / "depth.npy").write_text("new")
    assert (tmp_path / "out" / "keep.txt").read_text() == "k"
    assert (tmp_path / "out" / "depth.npy").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_rerun_replaces_the_whole_earlier_output(tmp_path):
    out = tmp_path / "out"
    with io.atomic_dir(out, owned=("depth*.npy", "ambiguous.npy")) as tmp:
        for name in ("depth.npy", "depth_near.npy", "ambiguous.npy"):
            (tmp / name).write_text("run 1")
    inode = out.stat().st_ino
    with io.atomic_dir(out, owned=("depth*.npy", "ambiguous.npy")) as tmp:
        (tmp / "depth.npy").write_text("run 2")
    assert sorted(p.name for p in out.iterdir()) == ["depth.npy"]  # the optional outputs of run 1 are gone
    assert (out / "depth.npy").read_text() == "run 2"
    assert out.stat().st_ino != inode  # swapped in whole, not entry by entry
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]  # no backup or temp folder left


def test_atomic_dir_keeps_foreign_files_and_drops_stale_outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    for name in ("notes.txt", "frame_000.png", "frame_001.png", "frame_002.png", "stack.json"):
        (out / name).write_text("old")
    with io.atomic_dir(out, owned=io.STACK_OUTPUTS) as tmp:
        (tmp / "frame_000.png").write_text("new")
        (tmp / "stack.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["frame_000.png", "notes.txt", "stack.json"]
    assert (out / "notes.txt").read_text() == "old" and (out / "stack.json").read_text() == "new"


def test_atomic_dir_failed_rerun_keeps_the_earlier_output(tmp_path):
    out = tmp_path / "out"
    with io.atomic_dir(out, owned=("*.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 1")
    with pytest.raises(RuntimeError):
        with io.atomic_dir(out, owned=("*.npy",)) as tmp:
            (tmp / "b.npy").write_text("run 2")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["a.npy"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_stack_rewritten_with_fewer_frames_leaves_no_stale_frame(tmp_path, rng):
    io.write_stack(io.Stack(frames=[_img(rng)] * 4, K=[0, 1, 2, 3]), tmp_path / "s")
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 5]), tmp_path / "s")
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == ["frame_000.png", "frame_001.png", "stack.json"]
    assert io.read_stack(tmp_path / "s").K == [0.0, 5.0]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("K", [0, "x"]),
        ("K", [0, None]),
        ("K", "0 3"),
        ("frames", ["frame_000.png", 3]),
        ("disp_focus", "abc"),
        ("disp_focus", [0.4]),
        ("reference", "a"),
        ("reference", 0.5),
        ("gamma", {"g": 2.2}),
        ("K_convention", 1),
    ],
)
def test_bad_stack_json_field_is_one_line_error(tmp_path, rng, field, value):
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 3], disp_focus=0.4), tmp_path / "s")
    meta_path = tmp_path / "s" / "stack.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(InputError) as err:
        io.read_stack(tmp_path / "s")
    msg = str(err.value)
    assert str(meta_path) in msg and "\n" not in msg
    assert f"'{field}'" in msg or "equal length" in msg


def test_bad_reference_stack_index_is_one_line_error(tmp_path, rng):
    ds = tmp_path / "defocus_stack"
    ds.mkdir()
    io.write_image(tmp_path / "ref.png", _img(rng))
    io.write_image(ds / "0.png", _img(rng))
    for index in ({"ids": "0", "k_values": {"0": 10}}, {"ids": ["0"], "k_values": {"0": "ten"}}):
        (ds / "stack_index.json").write_text(json.dumps(index))
        with pytest.raises(InputError, match="stack_index.json"):
            io.read_stack(ds)


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_unwritable_output_nonroot(tmp_path, rng):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    with pytest.raises(OutputError, match="not writable"):
        io.write_image(ro / "x.png", _img(rng))


def test_unwritable_output(tmp_path, rng):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputError, match="file"):
        io.write_image(blocker / "sub" / "x.png", _img(rng))


def test_disk_full_is_one_line_error(tmp_path, monkeypatch, rng):
    import errno

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(io.os, "replace", full)
    with pytest.raises(OutputError, match="disk full"):
        io.write_image(tmp_path / "x.png", _img(rng))
    assert list(tmp_path.iterdir()) == []


def test_parse_floats():
    assert io.parse_floats("10 20,30", "K_VALUES") == [10.0, 20.0, 30.0]
    with pytest.raises(InputError, match="K_VALUES"):
        io.parse_floats(["a"], "K_VALUES")
