"""EXIF reading and LensSettings from a photo (bokehdepth.exif), against JPEGs written here with known tags."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers_sweep import make_exif
from PIL import Image

from bokehdepth.errors import InputError
from bokehdepth.exif import lens_settings_from_photo, read_exif
from bokehdepth.lens import k_from_camera


def write_photo(path, *, width=60, height=40, orientation=None, fnumber=None, focal=None, subject=None, f35=None):
    """Write a JPEG with exactly the given EXIF tags (rationals for FNumber, FocalLength, SubjectDistance)."""
    exif = make_exif(orientation=orientation, fnumber=fnumber, focal=focal, subject=subject, f35=f35)
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8)).save(path, exif=exif)
    return path


def test_read_exif_known_tags(tmp_path):
    p = write_photo(tmp_path / "a.jpg", fnumber=2.8, focal=35.0, subject=1.5, f35=52)
    info = read_exif(p)
    assert info["f_number"] == pytest.approx(2.8)
    assert info["focal_mm"] == pytest.approx(35.0)
    assert info["focus_m"] == pytest.approx(1.5)
    assert info["focal_35mm"] == 52
    assert (info["width_px"], info["height_px"], info["orientation"]) == (60, 40, 1)


def test_orientation_swaps_width(tmp_path):
    p = write_photo(tmp_path / "r.jpg", width=60, height=40, orientation=6)
    info = read_exif(p)
    assert (info["width_px"], info["height_px"], info["orientation"]) == (40, 60, 6)
    assert info["f_number"] is None and info["focus_m"] is None


def test_lens_settings_from_tags_matches_thin_lens(tmp_path):
    # 50 mm lens with a 35 mm-equivalent of 50 mm on a 3:2 frame → 36 mm sensor (renderer.md §1.5).
    p = write_photo(tmp_path / "t.jpg", width=60, height=40, fnumber=2, focal=50, subject=2, f35=50)
    s = lens_settings_from_photo(p)
    assert s.sensor_mm == pytest.approx(36.0, abs=0.01)
    assert s.width_px == 60
    assert s.K == pytest.approx(k_from_camera(50, 2, 2, 36.0, 60), rel=1e-3)
    # overrides win over tags
    s2 = lens_settings_from_photo(p, f_number=4, width_px=6000, sensor_mm=36)
    assert s2.K == pytest.approx(106.8376 / 2, rel=1e-4)


def test_zero_subject_distance_is_unknown(tmp_path):
    p = write_photo(tmp_path / "z.jpg", fnumber=2, focal=50, subject=0.0, f35=50)
    assert read_exif(p)["focus_m"] is None


@pytest.mark.parametrize(
    ("missing", "flag"),
    [
        ("FNumber", "--f-number"),
        ("FocalLength", "--focal-mm"),
        ("SubjectDistance", "--focus-m"),
        ("FocalLengthIn35mmFilm", "--sensor-mm"),
    ],
)
def test_missing_tag_names_tag_and_flag(tmp_path, missing, flag):
    tags = {"fnumber": 2, "focal": 50, "subject": 2, "f35": 50}
    key = {"FNumber": "fnumber", "FocalLength": "focal", "SubjectDistance": "subject", "FocalLengthIn35mmFilm": "f35"}
    tags[key[missing]] = None
    p = write_photo(tmp_path / "m.jpg", **tags)
    with pytest.raises(InputError) as info:
        lens_settings_from_photo(p)
    msg = str(info.value)
    assert "m.jpg" in msg and missing in msg and flag in msg


def test_not_an_image(tmp_path):
    p = tmp_path / "x.jpg"
    p.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="x.jpg"):
        read_exif(p)
    with pytest.raises(InputError, match="not found"):
        read_exif(tmp_path / "nope.jpg")


def test_focus_inside_focal_length_rejected(tmp_path):
    p = write_photo(tmp_path / "f.jpg", fnumber=2, focal=50, subject=0.04, f35=50)
    with pytest.raises(InputError, match="focal length"):
        lens_settings_from_photo(p)
    assert math.isfinite(read_exif(p)["focus_m"])
