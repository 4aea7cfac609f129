"""Stage-1 Kontext backend end to end on a tiny random-weight FLUX.1-Kontext pipeline (CPU, offline)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import load_tiny_pipeline, random_adapter, tiny_pipeline_dir, torch_single_thread  # noqa: E402,F401

from bokehdepth.errors import InputError, MissingWeightsError  # noqa: E402
from bokehdepth.pipelines.color_transfer import color_transfer_lab  # noqa: E402
from bokehdepth.pipelines.kontext_stack import KontextStackGenerator, working_size  # noqa: E402

FAST = dict(size=(32, 48), steps=2, max_sequence_length=16)


@pytest.fixture(scope="module")
def generator():
    pipe = load_tiny_pipeline("kontext")
    adapter = random_adapter(pipe.transformer, "dof", seed=2, std=0.3)
    return KontextStackGenerator.from_pipeline(pipe, adapter, **FAST)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    return rng.random((40, 60, 3)).astype(np.float32)


def test_stack_shape_and_metadata(generator, image):
    stack = generator.generate(image, [10, 10, 30], seed=42)
    assert len(stack) == 4 and stack.size == image.shape[:2]
    assert stack.K == [0.0, 10.0, 10.0, 30.0] and stack.reference == 0
    assert stack.K_convention == "normalized" and stack.source == "generated"
    assert np.array_equal(stack.frames[0], image)
    assert all(f.dtype == np.float32 and f.shape == image.shape for f in stack.frames)
    # one batched call with identically seeded generators: equal K → identical frames (shared noise)
    assert np.array_equal(stack.frames[1], stack.frames[2])
    assert np.abs(stack.frames[1] - stack.frames[3]).max() > 1 / 255  # K changes the frame
    meta = stack.metadata()
    assert meta["generator"]["working_size"] == [32, 48] and meta["generator"]["guidance"] == 7.0


def test_same_seed_reproduces_and_seed_matters(generator, image):
    a = generator.generate(image, [20], seed=1).frames[1]
    b = generator.generate(image, [20], seed=1).frames[1]
    c = generator.generate(image, [20], seed=2).frames[1]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_prompt_template_and_defaults(generator):
    assert generator.prompts([12.345])[0].startswith("Set dof_cond = 12.35 (stronger background defocus)")
    fresh = KontextStackGenerator.from_pipeline(generator.pipe, generator.adapter)
    s = fresh.settings
    assert (s.size, s.steps, s.guidance, s.color_transfer) == ((512, 512), 50, 7.0, True)


def test_bad_K_is_rejected(generator, image):
    for Ks in ([], [0.0], [float("nan")]):
        with pytest.raises(InputError, match="--K"):
            generator.generate(image, Ks)


def test_working_size_floors_to_16():
    assert working_size(600, 800, (512, 512)) == (512, 512)
    assert working_size(600, 800, (500, 530)) == (496, 528)
    h, w = working_size(600, 800, None)
    assert h % 16 == 0 and w % 16 == 0 and abs(w / h - 4 / 3) < 0.05
    with pytest.raises(InputError):
        working_size(10, 10, (8, 8))


def test_colour_transfer_matches_mean_and_std():
    import cv2

    rng = np.random.default_rng(3)
    src = rng.random((24, 24, 3)).astype(np.float32) * 0.5 + 0.3
    tgt = rng.random((24, 24, 3)).astype(np.float32) * 0.3
    lab = lambda x: cv2.cvtColor(np.round(x * 255).astype(np.uint8), cv2.COLOR_RGB2LAB).reshape(-1, 3).astype(float)  # noqa: E731
    out = color_transfer_lab(src, tgt, adjust_std=True)
    assert np.allclose(lab(out).mean(0), lab(src).mean(0), atol=2.0)
    assert np.allclose(lab(out).std(0), lab(src).std(0), atol=2.0)
    mean_only = color_transfer_lab(src, tgt, adjust_std=False)
    assert np.allclose(lab(mean_only).mean(0), lab(src).mean(0), atol=2.0)
    assert np.allclose(lab(mean_only).std(0), lab(tgt).std(0), atol=2.0)


def test_loads_from_local_folders(tmp_path, image):
    base = tiny_pipeline_dir("kontext")
    pipe = load_tiny_pipeline("kontext")
    adapter = random_adapter(pipe.transformer, "dof", seed=4)
    torch.save(adapter.state_dict(), tmp_path / "bokeh_lora.bin")
    gen = KontextStackGenerator(
        weights=tmp_path, base=base, dtype="fp32", steps=1, size=(32, 32), max_sequence_length=8
    )
    stack = gen.generate(image, [5, 25])
    assert len(stack) == 3 and stack.size == image.shape[:2]
    assert gen.info["weights"].endswith("bokeh_lora.bin")


def test_missing_weights_and_base_name_repo(tmp_path):
    with pytest.raises(MissingWeightsError, match="fogradio/BokehDepth"):
        KontextStackGenerator(weights=tmp_path, base=tmp_path)
    (tmp_path / "bokeh_lora.bin").write_bytes(b"")
    with pytest.raises(MissingWeightsError) as err:
        KontextStackGenerator(weights=tmp_path, base=tmp_path / "nope")
    assert "black-forest-labs/FLUX.1-Kontext-dev" in str(err.value) and "hf download" in str(err.value)


def test_stack_cli_kontext_backend_end_to_end(tmp_path, image, capsys):
    from bokehdepth.cli import main
    from bokehdepth.io import read_stack, write_image

    pipe = load_tiny_pipeline("kontext")
    torch.save(random_adapter(pipe.transformer, "dof", seed=5).state_dict(), tmp_path / "bokeh_lora.bin")
    write_image(tmp_path / "in.png", image)
    out = tmp_path / "stack"
    args = ["stack", str(tmp_path / "in.png"), "--K", "8", "24", "--backend", "kontext", "--weights", str(tmp_path)]
    args += ["--base", str(tiny_pipeline_dir("kontext")), "--steps", "1", "--dtype", "fp32", "--no-progress"]
    assert main(args + ["-o", str(out)]) == 0, capsys.readouterr().err
    stack = read_stack(out)
    assert stack.K == [0.0, 8.0, 24.0] and stack.size == image.shape[:2]
    assert stack.K_convention == "normalized" and stack.source == "generated"
