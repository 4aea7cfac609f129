"""Images, depth maps and stack folders: round trips, the reference layout, validation and atomic writes."""

from __future__ import annotations

import errno
import fnmatch
import json
import os
import re
import stat
import tempfile
from pathlib import Path

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


def test_atomic_file_has_normal_or_the_replaced_files_permissions(tmp_path):
    """A writer that makes owner-only files (safetensors does) still yields a file with the usual permissions,
    and a rewrite keeps the permissions the user gave the earlier file."""
    import torch
    from safetensors.torch import save_file

    target = tmp_path / "w.safetensors"
    mask = os.umask(0o022)
    try:
        with io.atomic_file(target) as tmp:
            save_file({"a": torch.zeros(1)}, str(tmp))
        assert target.stat().st_mode & 0o777 == 0o644
        target.chmod(0o640)
        with io.atomic_file(target) as tmp:
            save_file({"a": torch.ones(1)}, str(tmp))
    finally:
        os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o640


def test_atomic_file_through_a_symlink_keeps_the_link_and_the_targets_mode(tmp_path):
    real = tmp_path / "data" / "w.bin"
    real.parent.mkdir()
    real.write_bytes(b"old")
    real.chmod(0o640)
    link = tmp_path / "w.bin"
    link.symlink_to(real)
    with io.atomic_file(link) as tmp:
        tmp.write_bytes(b"new")
        tmp.chmod(0o600)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_bytes() == b"new" and real.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["w.bin"] and sorted(os.listdir(tmp_path)) == [
        "data",
        "w.bin",
    ]


def test_atomic_file_never_copies_setuid_and_survives_a_refused_chmod(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    target.write_bytes(b"old")
    target.chmod(0o4755)
    with io.atomic_file(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.stat().st_mode & 0o7777 == 0o755

    def refuse(*args, **kwargs):  # FAT / some network mounts refuse permission changes
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(io.os, "chmod", refuse)
    with io.atomic_file(tmp_path / "g.bin") as tmp:
        tmp.write_bytes(b"g")
    assert (tmp_path / "g.bin").read_bytes() == b"g"


def test_atomic_file_onto_a_folder_is_an_output_error(tmp_path):
    (tmp_path / "d").mkdir()
    with pytest.raises(OutputError, match="d"):
        with io.atomic_file(tmp_path / "d") as tmp:
            tmp.write_bytes(b"x")
    assert sorted(os.listdir(tmp_path)) == ["d"] and not os.listdir(tmp_path / "d")


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
    frames = ["frame_000.png", "frame_001.png", "frame_002.png"]
    for name in ("notes.txt", *frames):
        (out / name).write_text("old")
    (out / "stack.json").write_text(json.dumps({"frames": frames, "K": [0, 1, 2]}))
    with io.atomic_dir(out, owned=io.stack_outputs(out)) as tmp:
        (tmp / "frame_000.png").write_text("new")
        (tmp / "stack.json").write_text("new")
    assert sorted(p.name for p in out.iterdir()) == ["frame_000.png", "notes.txt", "stack.json"]
    assert (out / "notes.txt").read_text() == "old" and (out / "stack.json").read_text() == "new"


def test_stack_outputs_owns_only_the_listed_frames(tmp_path):
    assert io.stack_outputs(tmp_path / "missing") == ("stack.json",)
    (tmp_path / "stack.json").write_text("{not json")
    assert io.stack_outputs(tmp_path) == ("stack.json",)
    (tmp_path / "stack.json").write_text(json.dumps({"frames": "frame_000.png"}))
    assert io.stack_outputs(tmp_path) == ("stack.json",)
    frames = ["frame_000.png", "a[1].png", "../ref.png", "sub/x.png", "notes.json", 3, "frame_000.png"]
    (tmp_path / "stack.json").write_text(json.dumps({"frames": frames}))
    owned = io.stack_outputs(tmp_path)
    assert owned == ("stack.json", "frame_000.png", "a[[]1].png")  # plain image names only, glob-escaped
    assert not any(fnmatch.fnmatchcase("frame_999.png", pat) for pat in owned)


def test_stack_rewrite_keeps_user_files_that_look_like_outputs(tmp_path, rng):
    out = tmp_path / "s"
    io.write_stack(io.Stack(frames=[_img(rng)] * 4, K=[0, 1, 2, 3]), out)
    (out / "frame_999.png").write_text("user")
    (out / "notes.json").write_text("user")
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 5]), out)
    names = ["frame_000.png", "frame_001.png", "frame_999.png", "notes.json", "stack.json"]
    assert sorted(p.name for p in out.iterdir()) == names  # frames 2 and 3 of the first stack are gone
    assert (out / "frame_999.png").read_text() == "user" and (out / "notes.json").read_text() == "user"
    assert io.read_stack(out).K == [0.0, 5.0]


def test_atomic_dir_through_a_symlink_keeps_the_link(tmp_path):
    real = tmp_path / "real"
    with io.atomic_dir(real, owned=("a.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 1")
    link = tmp_path / "link"
    link.symlink_to(real, target_is_directory=True)
    with io.atomic_dir(link, owned=("a.npy",)) as tmp:  # a whole-folder swap of the target
        (tmp / "b.npy").write_text("run 2")
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert sorted(p.name for p in real.iterdir()) == ["b.npy"]
    (real / "keep.txt").write_text("user")
    with io.atomic_dir(link) as tmp:  # a merge into the target
        (tmp / "c.npy").write_text("run 3")
    assert link.is_symlink() and sorted(p.name for p in real.iterdir()) == ["b.npy", "c.npy", "keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link", "real"]


def test_atomic_dir_into_the_working_folder(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("user")
    (out / "a.npy").write_text("run 1")
    (out / "stale.npy").write_text("run 1")
    monkeypatch.chdir(out)
    with io.atomic_dir(".", owned=("a.npy", "stale.npy")) as tmp:
        assert tmp.parent == out  # made inside: "." cannot be renamed away
        (tmp / "a.npy").write_text("run 2")
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "notes.txt"]
    assert (out / "a.npy").read_text() == "run 2" and Path.cwd() == out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    (out / "notes.txt").unlink()
    with io.atomic_dir(".", owned=("a.npy",)) as tmp:  # only owned entries, still no swap of the cwd
        (tmp / "b.npy").write_text("run 3")
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"] and os.path.samefile(".", out)
    with pytest.raises(RuntimeError):
        with io.atomic_dir(".") as tmp:
            (tmp / "c.npy").write_text("partial")
            raise RuntimeError("boom")
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_atomic_dir_with_an_unwritable_parent(tmp_path):
    parent = tmp_path / "ro"
    out = parent / "out"
    out.mkdir(parents=True)
    (out / "notes.txt").write_text("user")
    (out / "a.npy").write_text("run 1")
    parent.chmod(0o555)
    try:
        with io.atomic_dir(out, owned=("a.npy",)) as tmp:
            assert tmp.parent == out
            (tmp / "b.npy").write_text("run 2")
        assert sorted(p.name for p in out.iterdir()) == ["b.npy", "notes.txt"]
        with pytest.raises(OutputError, match=re.escape(str(parent)) + ".*not writable"):
            with io.atomic_dir(parent / "new"):  # a new folder needs a writable parent
                pass
        out.chmod(0o555)
        with pytest.raises(OutputError, match=re.escape(str(out)) + ".*not writable"):
            with io.atomic_dir(out):
                pass
    finally:
        out.chmod(0o755)
        parent.chmod(0o755)
    assert sorted(p.name for p in out.iterdir()) == ["b.npy", "notes.txt"]
    assert sorted(p.name for p in parent.iterdir()) == ["out"]


def test_atomic_dir_goes_inside_when_the_parent_refuses_the_temp_folder(tmp_path, monkeypatch):
    """Even as root: the parent passes os.access but refuses mkdtemp (e.g. a root-squashed share)."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_text("run 1")
    real = tempfile.mkdtemp

    def mkdtemp(prefix=None, dir=None):
        if Path(dir) == tmp_path:
            raise PermissionError(errno.EACCES, "Permission denied", str(dir))
        return real(prefix=prefix, dir=dir)

    monkeypatch.setattr(io.tempfile, "mkdtemp", mkdtemp)
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        assert tmp.parent == out and tmp.name.startswith(".bokehdepth.tmp-")
        (tmp / "b.npy").write_text("run 2")
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"]
    with pytest.raises(OutputError, match=re.escape(str(tmp_path / "new"))):
        with io.atomic_dir(tmp_path / "new"):  # a new folder cannot be made inside itself
            pass
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs a non-root POSIX user")
def test_atomic_dir_does_not_swap_a_read_only_folder_away(tmp_path):
    out = tmp_path / "out"
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 1")
    out.chmod(0o555)
    try:
        with pytest.raises(OutputError, match=re.escape(str(out)) + ".*not writable"):
            with io.atomic_dir(out, owned=("a.npy",)) as tmp:
                (tmp / "a.npy").write_text("run 2")
    finally:
        out.chmod(0o755)
    assert (out / "a.npy").read_text() == "run 1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_atomic_dir_into_a_mount_point_merges_from_inside(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.npy").write_text("run 1")
    ismount = os.path.ismount
    monkeypatch.setattr(io.os.path, "ismount", lambda p: Path(p) == out or ismount(p))
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        assert tmp.parent == out
        (tmp / "b.npy").write_text("run 2")
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"]


def test_atomic_dir_swap_keeps_the_folder_mode(tmp_path):
    out = tmp_path / "out"
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 1")
    inode = out.stat().st_ino
    out.chmod(0o750 | stat.S_ISGID)
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 2")
    assert out.stat().st_ino != inode  # swapped whole
    assert out.stat().st_mode & 0o7777 == 0o750 | stat.S_ISGID
    assert (out / "a.npy").read_text() == "run 2"


def test_atomic_dir_swap_falls_back_without_renameat2(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        (tmp / "a.npy").write_text("run 1")
    calls = []
    real = io._exchange
    monkeypatch.setattr(io, "_exchange", lambda a, b: calls.append((a, b)) or real(a, b))
    with io.atomic_dir(out, owned=("a.npy",)) as tmp:
        (tmp / "b.npy").write_text("run 2")
    assert len(calls) == 1 and calls[0][1] == out  # the swap goes through the exchange first
    assert sorted(p.name for p in out.iterdir()) == ["b.npy"]
    monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    out.chmod(0o700)
    with io.atomic_dir(out, owned=("b.npy",)) as tmp:
        (tmp / "c.npy").write_text("run 3")
    assert sorted(p.name for p in out.iterdir()) == ["c.npy"] and out.stat().st_mode & 0o777 == 0o700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_exchange_swaps_two_folders_atomically(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_text("a")
    (b / "y").write_text("b")
    if not io._exchange(a, b):
        pytest.skip("renameat2(RENAME_EXCHANGE) not available here")
    assert [p.name for p in a.iterdir()] == ["y"] and [p.name for p in b.iterdir()] == ["x"]
    with pytest.raises(OSError):
        io._exchange(a, tmp_path / "missing")


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
        ("reference", True),
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
    assert f"'{field}'" in msg


@pytest.mark.parametrize(
    ("field", "value"), [("gamma", 0), ("gamma", -2.2), ("gamma", float("inf")), ("disp_focus", float("nan"))]
)
def test_out_of_range_stack_json_value_is_one_line_error(tmp_path, rng, field, value):
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 3], disp_focus=0.4), tmp_path / "s")
    meta_path = tmp_path / "s" / "stack.json"
    meta = json.loads(meta_path.read_text())
    meta[field] = value
    meta_path.write_text(json.dumps(meta))  # json writes NaN/Infinity tokens, which json.loads reads back
    with pytest.raises(InputError) as err:
        io.read_stack(tmp_path / "s")
    msg = str(err.value)
    assert str(meta_path) in msg and field in msg and "\n" not in msg


def test_bad_reference_stack_index_is_one_line_error(tmp_path, rng):
    ds = tmp_path / "defocus_stack"
    ds.mkdir()
    io.write_image(tmp_path / "ref.png", _img(rng))
    io.write_image(ds / "0.png", _img(rng))
    for index in ({"ids": "0", "k_values": {"0": 10}}, {"ids": ["0"], "k_values": {"0": "ten"}}):
        (ds / "stack_index.json").write_text(json.dumps(index))
        with pytest.raises(InputError, match="stack_index.json"):
            io.read_stack(ds)
    (ds / "stack_index.json").write_text(json.dumps({"ids": ["0"], "k_values": {"0": True}}))
    with pytest.raises(InputError, match=r"k_values\['0'\]"):
        io.read_stack(ds)


def test_reference_stack_index_accepts_numeric_string_k(tmp_path, rng):
    ds = tmp_path / "defocus_stack"
    ds.mkdir()
    io.write_image(tmp_path / "ref.png", _img(rng))
    io.write_image(ds / "0.png", _img(rng))
    (ds / "stack_index.json").write_text(json.dumps({"ids": ["0"], "k_values": {"0": "12.5"}}))
    assert io.read_stack(ds).K == [0.0, 12.5]


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


def test_stack_metadata_path_follows_read_stack(tmp_path, rng):
    assert io.stack_metadata_path(tmp_path) is None
    run = tmp_path / "run"
    (run / "defocus_stack").mkdir(parents=True)
    (run / "defocus_stack" / "stack_index.json").write_text("{}")
    assert io.stack_metadata_path(run) == run / "defocus_stack" / "stack_index.json"
    with pytest.raises(InputError, match=str(run / "defocus_stack" / "stack_index.json")):
        io.read_stack(run)
    io.write_stack(io.Stack(frames=[_img(rng)] * 2, K=[0, 3]), run)
    assert io.stack_metadata_path(run) == run / "stack.json"
