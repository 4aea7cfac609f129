"""``bokehdepth stack`` end to end with the embedded compact generator, the Python API, the K policy and the
error convention (bad inputs → ``error:`` + exit 2 + nothing written)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bokehdepth.cli import main
from bokehdepth.errors import InputError, MissingWeightsError
from bokehdepth.io import read_image, read_stack, write_image
from bokehdepth.pipelines.stack import check_Ks, generate_stack, load_stack_generator, working_size

STACK_JSON_KEYS = {"frames", "K", "disp_focus", "reference", "gamma", "lens", "source", "K_convention"}


@pytest.fixture(autouse=True)
def _no_env_defaults(monkeypatch):
    for var in ("K_VALUES", "SEED", "ADAPTER_CKPT", "BOKEHDEPTH_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def tiny_image(tmp_path):
    """An 8-bit PNG (so that frame 0 must come back bit-exact) with edges and texture."""
    rng = np.random.default_rng(3)
    img = np.zeros((40, 56, 3), np.float32)
    img[:, :28] = rng.random((40, 28, 3))
    img[:, 28:] = np.linspace(0, 1, 28)[None, :, None]
    img = np.round(img * 255) / 255
    path = tmp_path / "in.png"
    write_image(path, img)
    return path, img


def _run(capsys, argv):
    code = main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_stack_cli_end_to_end_writes_the_stack_folder_contract(tmp_path, capsys, tiny_image):
    path, img = tiny_image
    out = tmp_path / "stack"
    code, stdout, err = _run(capsys, ["stack", str(path), "--K", "10", "20", "30", "-o", str(out), "--no-progress"])
    assert code == 0, err
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "contact_sheet.png",
        "frame_000.png",
        "frame_001.png",
        "frame_002.png",
        "frame_003.png",
        "stack.json",
    ]
    meta = json.loads((out / "stack.json").read_text())
    assert STACK_JSON_KEYS <= set(meta)
    assert meta["frames"] == [f"frame_{i:03d}.png" for i in range(4)]
    assert meta["K"] == [0.0, 10.0, 20.0, 30.0]
    assert meta["K_convention"] == "normalized" and meta["source"] == "generated" and meta["reference"] == 0
    assert meta["backend"] == "compact" and meta["seed"] == 42
    stack = read_stack(out)
    assert len(stack) == 4 and stack.size == img.shape[:2]
    assert np.array_equal(stack.frames[0], img)  # frame 0 is the sharp input, untouched
    for frame in stack.frames[1:]:
        assert frame.shape == img.shape and np.isfinite(frame).all()
    sheet = read_image(out / "contact_sheet.png")
    assert sheet.shape[1] == 4 * 256  # one 256-px tile per frame
    assert "4 frames" in stdout


def test_default_K_list_is_10_20_30(tmp_path, capsys, tiny_image):
    out = tmp_path / "s"
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "-o", str(out), "--no-progress"])
    assert code == 0, err
    assert read_stack(out).K == [0.0, 10.0, 20.0, 30.0]


def test_K_VALUES_environment_default_takes_commas_and_errors_name_it(tmp_path, capsys, tiny_image, monkeypatch):
    monkeypatch.setenv("K_VALUES", "5,12")
    out = tmp_path / "s"
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "-o", str(out), "--no-progress"])
    assert code == 0, err
    assert read_stack(out).K == [0.0, 5.0, 12.0]
    monkeypatch.setenv("K_VALUES", "5;12")
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "-o", str(tmp_path / "t"), "--no-progress"])
    assert code == 2 and err.startswith("error: K_VALUES:") and "--K" not in err
    assert not (tmp_path / "t").exists()


def test_rerun_with_fewer_K_leaves_no_frame_of_the_first_run(tmp_path, capsys, tiny_image):
    out = tmp_path / "s"
    for Ks in (["5", "10", "20", "30"], ["8"]):
        code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--K", *Ks, "-o", str(out), "--no-progress"])
        assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "contact_sheet.png",
        "frame_000.png",
        "frame_001.png",
        "stack.json",
    ]
    assert read_stack(out).K == [0.0, 8.0]


def test_rerun_keeps_user_files_that_look_like_outputs(tmp_path, capsys, tiny_image):
    out = tmp_path / "s"
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--K", "5", "10", "20", "-o", str(out), "--no-progress"])
    assert code == 0, err
    (out / "frame_999.png").write_text("user")
    (out / "notes.json").write_text("user")
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--K", "8", "-o", str(out), "--no-progress"])
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "contact_sheet.png",
        "frame_000.png",
        "frame_001.png",
        "frame_999.png",
        "notes.json",
        "stack.json",
    ]  # frames 2 and 3 of the first run are gone, the user's files are not
    assert (out / "frame_999.png").read_text() == "user" and (out / "notes.json").read_text() == "user"
    assert read_stack(out).K == [0.0, 8.0]


def test_output_into_the_working_folder(tmp_path, capsys, tiny_image, monkeypatch):
    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("user")
    monkeypatch.chdir(out)
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--K", "8", "-o", ".", "--no-progress"])
    assert code == 0, err
    names = ["contact_sheet.png", "frame_000.png", "frame_001.png", "notes.txt", "stack.json"]
    assert sorted(p.name for p in out.iterdir()) == names  # no temporary folder left inside
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.png", "s"]  # nor beside
    assert read_stack(out).K == [0.0, 8.0]


def test_K_outside_the_published_range_is_clamped_with_a_warning(tmp_path, capsys, tiny_image):
    out = tmp_path / "s"
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--K", "0.5", "45", "-o", str(out), "--no-progress"])
    assert code == 0, err
    assert err.count("warning:") == 2 and "clamped to 30" in err and "clamped to 1" in err
    meta = json.loads((out / "stack.json").read_text())
    assert meta["K"] == [0.0, 1.0, 30.0] and meta["K_requested"] == [0.0, 0.5, 45.0]


@pytest.mark.parametrize(
    "case",
    [
        "missing_image",
        "corrupt_image",
        "negative_K",
        "zero_K",
        "nan_K",
        "text_K",
        "output_under_a_file",
        "output_is_file",
    ],
)
def test_bad_inputs_fail_with_one_error_line_exit_2_and_nothing_written(tmp_path, capsys, tiny_image, case):
    image = str(tiny_image[0])
    out = tmp_path / "out"
    K = ["10"]
    if case == "missing_image":
        image = str(tmp_path / "nope.png")
    elif case == "corrupt_image":
        bad = tmp_path / "bad.png"
        bad.write_bytes(b"\x89PNG\r\n\x1a\n garbage")
        image = str(bad)
    elif case == "negative_K":
        K = ["10", "-5"]
    elif case == "zero_K":
        K = ["0"]
    elif case == "nan_K":
        K = ["nan"]
    elif case == "text_K":
        K = ["ten"]
    elif case == "output_under_a_file":
        blocker = tmp_path / "file.txt"
        blocker.write_text("x")
        out = blocker / "stack"
    elif case == "output_is_file":
        out = tmp_path / "file.txt"
        out.write_text("x")
    before = sorted(p.name for p in tmp_path.iterdir())
    code, stdout, err = _run(capsys, ["stack", image, "--K", *K, "-o", str(out), "--no-progress"])
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), err
    flag_or_file = {"missing_image": "nope.png", "corrupt_image": "bad.png", "output_under_a_file": "file.txt"}
    assert flag_or_file.get(case, "--K" if "K" in case else "file.txt") in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temp folder left


def test_missing_kontext_weights_name_the_file_the_repo_and_the_fetch_command(tmp_path, capsys, tiny_image):
    out = tmp_path / "s"
    for extra in ([], ["--weights", str(tmp_path / "w")]):
        code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--backend", "kontext", *extra, "-o", str(out)])
        assert code == 2
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1
        for needle in ("bokeh_lora.bin", "fogradio/BokehDepth", "hf download fogradio/BokehDepth bokeh_lora.bin"):
            assert needle in err
        assert not out.exists()
    with pytest.raises(MissingWeightsError):
        load_stack_generator("kontext", weights=tmp_path / "absent")


def test_compact_only_flags_are_checked(tmp_path, capsys, tiny_image):
    code, _, err = _run(capsys, ["stack", str(tiny_image[0]), "--base", str(tmp_path), "-o", str(tmp_path / "s")])
    assert code == 2 and err.startswith("error: --base")


def test_python_api_keeps_odd_input_sizes_and_is_deterministic():
    rng = np.random.default_rng(0)
    img = rng.random((37, 53, 3)).astype(np.float32)
    a = generate_stack(img, [5, 25])
    b = generate_stack(img, [5, 25], seed=7)
    assert a.size == (37, 53) and a.K == [0.0, 5.0, 25.0] and a.K_convention == "normalized"
    assert a.source == "generated" and a.reference == 0
    assert np.array_equal(a.frames[0], img)
    for fa, fb in zip(a.frames, b.frames):
        assert np.array_equal(fa, fb)  # the compact network is deterministic; the seed is only recorded
    assert b.extra["seed"] == 7


def test_working_size_keeps_aspect_and_multiples():
    assert working_size(1024, 768, 512, 16) == (688, 512)
    assert working_size(300, 210, 512, 16) == (304, 208)  # smaller than 512: own size, rounded
    assert working_size(10, 12, 512, 16) == (16, 16)


def test_check_Ks_policy():
    assert check_Ks([1, 10, 30]) == ([1.0, 10.0, 30.0], [])
    clamped, notes = check_Ks([0.2, 31])
    assert clamped == [1.0, 30.0] and len(notes) == 2
    for bad in ([], [0.0], [-1.0], [float("inf")]):
        with pytest.raises(InputError, match="--K"):
            check_Ks(bad)


def test_unknown_backend_is_an_input_error():
    with pytest.raises(InputError, match="compact or kontext"):
        load_stack_generator("dalle")
