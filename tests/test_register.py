"""Bracket alignment (``bokehdepth.register``): known shifts and rotations of renderer-blurred photos come back,
unmoved photos are left untouched, exposure differences do not matter, an untrusted estimate warns and leaves
the photo as shot, and ``depth``/``sweep --photos`` align hand-held brackets and record it."""

from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pytest
from helpers_sweep import save_photo, texture

from bokehdepth import register as reg
from bokehdepth.cli import main
from bokehdepth.render.api import render

CORNERS = np.array([[0, 0, 1], [127, 0, 1], [0, 95, 1], [127, 95, 1]], float)


def _bracket(Ks=(1.0, 8.0, 16.0)) -> list[np.ndarray]:
    """A textured scene photographed at each K, focused at 1 m: the left half at the focus plane (sharp in every
    photo, as the focused subject of a real bracket), the right half behind it (Δ = 0.5 1/m: r = K/2 px)."""
    img = texture(96, 128, seed=3, cell=3)
    disp = np.full((96, 128), 0.5, np.float32)
    disp[:, :64] = 1.0
    return [render(img, disp, K, 1.0, gamma=2.2) for K in Ks]


def _moved(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """``frame`` seen by a camera whose map from reference to photo pixels is ``matrix``."""
    return cv2.warpAffine(frame, matrix, (128, 96), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)


def _corner_error(found: np.ndarray, true: np.ndarray) -> float:
    return float(np.abs(CORNERS @ found.T - CORNERS @ true.T).max())


def test_shifts_of_blurred_photos_come_back():
    frames = _bracket()
    truth = [np.array([[1, 0, 2.6], [0, 1, -1.3]]), np.array([[1, 0, -3.4], [0, 1, 0.7]])]
    photos = [frames[0]] + [_moved(f, t) for f, t in zip(frames[1:], truth)]
    aligned, found = reg.register_to_reference(photos, 0, "translation", key=[1.0, 8.0, 16.0])
    assert found[0].method == "identity" and aligned[0] is photos[0]
    for al, true in zip(found[1:], truth):
        assert al.trusted and al.applied and al.displacement_px == pytest.approx(np.hypot(*true[:, 2]), abs=0.3)
        assert _corner_error(al.matrix, true) < 0.3
    # the aligned photo sits on the reference's grid: it matches the unmoved frame far better than as shot
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(aligned[1] - frames[1])[inner].mean() < 0.25 * np.abs(photos[1] - frames[1])[inner].mean()


def test_euclidean_follows_a_rotation_translation_does_not():
    frames = _bracket((1.0, 8.0))
    true = cv2.getRotationMatrix2D((64, 48), 0.6, 1.0)  # corners move by up to 0.84 px from the rotation
    true[:, 2] += (1.5, -2.0)
    photos = [frames[0], _moved(frames[1], true)]
    euclid = reg.estimate_alignment(photos[0], photos[1], "euclidean")
    shift = reg.estimate_alignment(photos[0], photos[1], "translation")
    assert euclid.method == "ecc" and _corner_error(euclid.matrix, true) < 0.3
    assert _corner_error(shift.matrix, true) > 0.5 and np.allclose(shift.matrix[:, :2], np.eye(2))


def test_unmoved_photos_are_left_as_shot_and_exposure_does_not_matter():
    frames = _bracket()
    aligned, found = reg.register_to_reference(frames, 0, "euclidean")
    assert all(not al.applied and al.displacement_px < reg.MIN_DISPLACEMENT_PX for al in found)
    assert all(a is f for a, f in zip(aligned, frames))  # not resampled
    true = np.array([[1, 0, -2.2], [0, 1, 1.8]])
    darker = np.clip(0.6 * _moved(frames[1], true) + 0.1, 0, 1)  # another exposure
    assert _corner_error(reg.estimate_alignment(frames[0], darker, "translation").matrix, true) < 0.3


def test_untrusted_estimate_warns_and_leaves_the_photo(monkeypatch):
    frames = _bracket((1.0, 8.0))
    photos = [frames[0], _moved(frames[1], np.array([[1, 0, 3.0], [0, 1, 0.0]]))]
    monkeypatch.setattr(reg, "MAX_DISPLACEMENT", 0.01)  # 1.28 px: the 3-px shift is "too far"
    with pytest.warns(UserWarning, match=r"^b\.jpg: not aligned to the reference \(the translation estimate moves"):
        aligned, found = reg.register_to_reference(photos, 0, "translation", names=["a.jpg", "b.jpg"])
    assert not found[1].trusted and aligned[1] is photos[1] and np.array_equal(found[1].matrix, np.eye(2, 3))


def test_bad_arguments():
    frames = _bracket((1.0, 8.0))
    with pytest.raises(ValueError, match=r"key must give one number per frame \(2\), got 3"):
        reg.register_to_reference(frames, 0, key=[1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="motion must be one of"):
        reg.estimate_alignment(frames[0], frames[1], "homography")
    with pytest.raises(ValueError, match="sizes differ"):
        reg.estimate_alignment(frames[0], frames[1][:-1], "translation")


def _photos(tmp_path, shift):
    """A metric aperture bracket focused at 2 m (EXIF: 50 mm, f/8, f/2, f/1.4 on a small sensor) of a textured
    scene whose left half is at the focus distance and right half 4 m away; the f/2 photo moved by ``shift`` px,
    the f/1.4 one by the shift with x and y swapped."""
    from bokehdepth.lens import k_from_camera

    img = texture(96, 128, seed=5, cell=3)
    disp = np.full((96, 128), 0.25, np.float32)
    disp[:, :64] = 0.5
    paths = []
    for n, (dx, dy) in zip((8.0, 2.0, 1.4), ((0, 0), shift, (shift[1], shift[0]))):
        frame = render(img, disp, float(k_from_camera(50, n, 2.0, 7.2, 128)), 0.5, gamma=2.2)
        frame = _moved(frame, np.array([[1, 0, dx], [0, 1, dy]], float))
        paths.append(save_photo(tmp_path / f"f{n}.png", frame, fnumber=n, f35=250))
    return [str(p) for p in paths]


def test_photo_commands_align_hand_held_brackets_and_record_it(tmp_path, capsys):
    photos = _photos(tmp_path, (2.5, -1.5))
    out = tmp_path / "depth"
    assert main(["depth", "--photos", *photos, "-o", str(out)]) == 0
    rec = json.loads((out / "depth_info.json").read_text())["registration"]
    assert [r["applied"] for r in rec] == [False, True, True] and rec[0]["method"] == "identity"
    assert [r["displacement_px"] for r in rec[1:]] == pytest.approx([np.hypot(2.5, 1.5)] * 2, abs=0.4)
    assert rec[1]["matrix"][0][2] == pytest.approx(2.5, abs=0.3) and rec[2]["matrix"][1][2] == pytest.approx(
        2.5, abs=0.3
    )
    assert main(["depth", "--photos", *photos, "--register", "none", "-o", str(tmp_path / "as_shot")]) == 0
    assert json.loads((tmp_path / "as_shot" / "depth_info.json").read_text())["registration"] == []
    # the sweep reads the far half's 4 m only once the photos are aligned
    errors = {}
    for motion in ("translation", "none"):
        o = tmp_path / f"sweep_{motion}"
        argv = ["sweep", "--photos", *photos, "--focus-side", "near", "--register", motion, "-o", str(o)]
        assert main(argv) == 0
        errors[motion] = float(np.nanmedian(np.abs(np.load(o / "depth.npy")[12:-12, 76:-12] - 4.0)) / 4.0)
        assert len(json.loads((o / "sweep.json").read_text())["registration"]) == (3 if motion != "none" else 0)
    assert errors["translation"] < 0.1 < errors["none"], errors
    assert "warning" not in capsys.readouterr().err


def test_register_with_a_stack_folder_is_ignored_with_a_warning(tmp_path, capsys):
    from helpers_sweep import plane_stack

    from bokehdepth.io import write_stack

    stack = plane_stack(3.0)
    write_stack(stack, tmp_path / "stack")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["sweep", str(tmp_path / "stack"), "--register", "euclidean", "-o", str(tmp_path / "o")]) == 0
    assert "warning: --register ignored: it applies to --photos only" in capsys.readouterr().err


def test_a_frame_that_cannot_be_aligned_is_skipped_as_a_chain_link():
    frames = _bracket((1.0, 8.0))
    blank = np.full_like(frames[0], 0.5)  # nothing to align on
    true = np.array([[1, 0, 2.0], [0, 1, -1.0]])
    photos = [frames[0], blank, _moved(frames[1], true)]
    with pytest.warns(UserWarning, match=r"^frame 1: not aligned to the reference \(no reliable match"):
        aligned, found = reg.register_to_reference(photos, 0, "translation", key=[1.0, 4.0, 8.0])
    assert not found[1].trusted and aligned[1] is blank
    assert found[2].trusted and _corner_error(found[2].matrix, true) < 0.3  # compared with the reference


def test_large_non_square_rotated_photo_comes_back_through_the_coarse_level():
    """420×300 px (above the 256-px coarse level, unequal axis scales): the coarse estimate is scaled back to
    the photo's pixels; euclidean recovers a 0.4° turn, translation is off by what the turn moves the corners."""
    h, w = 300, 420
    img = texture(h, w, seed=3, cell=3)
    disp = np.full((h, w), 0.5, np.float32)
    disp[:, : w // 2] = 1.0
    ref, far = (render(img, disp, K, 1.0, gamma=2.2) for K in (1.0, 8.0))
    true = cv2.getRotationMatrix2D((w / 2, h / 2), 0.4, 1.0)
    true[:, 2] += (3.0, -2.0)
    photo = cv2.warpAffine(far, true, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    corners = np.array([[0, 0, 1], [w - 1, 0, 1], [0, h - 1, 1], [w - 1, h - 1, 1]], float)

    def err(m):
        return float(np.hypot(*(corners @ m.T - corners @ true.T).T).max())

    assert err(reg.estimate_alignment(ref, photo, "euclidean").matrix) < 0.3
    turn = float(np.hypot(*(corners @ cv2.getRotationMatrix2D((w / 2, h / 2), 0.4, 1.0).T - corners[:, :2]).T).max())
    assert err(reg.estimate_alignment(ref, photo, "translation").matrix) == pytest.approx(turn, abs=0.5)


def test_each_photo_is_compared_with_the_aligned_one_nearest_in_key(monkeypatch):
    """A focus bracket (key: focus disparity 2, 1.4, 1, 0.67, 0.33 1/m; the reference the middle one) is aligned
    outwards from the reference, each photo against the already aligned photo nearest in focus."""
    frames = [np.full((8, 8, 3), i / 10, np.float32) for i in range(5)]
    seen = []

    def fake(reference, photo, motion):
        seen.append(
            (
                next(j for j, f in enumerate(frames) if f is reference),
                next(j for j, f in enumerate(frames) if f is photo),
            )
        )
        return reg.Alignment(np.eye(2, 3), motion, 0.0, True, False, "ecc")

    monkeypatch.setattr(reg, "estimate_alignment", fake)
    reg.register_to_reference(frames, 2, "translation", key=[2.0, 1.4, 1.0, 0.67, 0.33])
    assert seen == [(2, 3), (2, 1), (3, 4), (1, 0)]
    seen.clear()
    reg.register_to_reference(frames, 2, "translation")  # no key: every photo against the reference
    assert sorted(seen) == [(2, 0), (2, 1), (2, 3), (2, 4)]


def test_single_channel_and_non_finite_photos():
    frames = _bracket((1.0, 8.0))
    grey = [f.mean(2, keepdims=True) for f in frames]
    true = np.array([[1, 0, 1.5], [0, 1, 1.0]])
    moved = _moved(grey[1], true)[..., None]
    al = reg.estimate_alignment(grey[0], moved, "translation")
    assert _corner_error(al.matrix, true) < 0.3 and reg.apply_alignment(moved, al).shape == (96, 128, 1)
    bad = frames[1].copy()
    bad[10, 10] = np.nan
    al = reg.estimate_alignment(frames[0], bad, "translation")
    assert (al.trusted, al.method, al.displacement_px) == (False, "none", 0.0)
    assert json.loads(json.dumps(al.to_dict(), allow_nan=False))["trusted"] is False


def test_register_with_single_frame_depth_is_ignored_with_a_warning(tmp_path, capsys):
    photos = _photos(tmp_path, (2.5, -1.5))
    argv = ["depth", "--photos", *photos, "--single-frame", "--register", "euclidean", "-o", str(tmp_path / "o")]
    assert main(argv) == 0
    assert "warning: --register ignored: --single-frame uses the reference photo alone" in capsys.readouterr().err
    info = json.loads((tmp_path / "o" / "depth_info.json").read_text())
    assert info["ignored_flags"] == ["--register"] and info["registration"] == []
