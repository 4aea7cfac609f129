"""Bokeh Diffusion: published keys, strict config.json + model.safetensors loading, the text-to-image loop."""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import load_tiny_pipeline, random_adapter, reference_keys, tiny_transformer, torch_single_thread  # noqa: E402,F401

from bokehdepth.cli import main  # noqa: E402
from bokehdepth.errors import CheckpointError, InputError, MissingWeightsError  # noqa: E402
from bokehdepth.models.bokeh_diffusion import (  # noqa: E402
    load_bokeh_diffusion_adapter,
    published_keys,
    save_bokeh_diffusion_adapter,
)
from bokehdepth.pipelines.text2image import BokehText2Image, GenerationSettings, output_label, output_name  # noqa: E402

TSV = "bokeh_diffusion_adapter.tsv"
FAST = GenerationSettings(steps=3, height=32, width=32, max_sequence_length=8)


def test_published_keys_equal_reference_list():
    expected = reference_keys(TSV)
    got = list(published_keys("bokeh-diffusion").items())
    assert len(got) == 460
    for (k, s), (ek, es) in zip(got, expected):
        assert (k, s) == (ek, es)


def test_weights_keys_cli_prints_reference(capsys):
    expected = reference_keys(TSV)
    assert main(["weights", "keys", "bokeh-diffusion"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"{k}\t{list(s)}" for k, s in expected]


@pytest.fixture()
def folder(tmp_path):
    adapter = random_adapter(tiny_transformer(), "bokeh", seed=6)
    save_bokeh_diffusion_adapter(adapter, tmp_path / "bd")
    return adapter, tmp_path / "bd"


def test_save_load_round_trip(folder):
    adapter, path = folder
    cfg = json.loads((path / "config.json").read_text())
    assert cfg["blocks"] == ["transformer_blocks.0", "single_transformer_blocks.0"]
    assert cfg["lora_alpha"] is None and cfg["unfreeze_q"] and cfg["unfreeze_k"]
    loaded = load_bokeh_diffusion_adapter(path, tiny_transformer(seed=3))
    ref = adapter.state_dict()
    assert list(loaded.state_dict()) == list(ref)
    assert all(torch.equal(loaded.state_dict()[k], ref[k]) for k in ref)


def test_strict_load_failures(folder):
    from safetensors.torch import load_file, save_file

    adapter, path = folder
    state = load_file(str(path / "model.safetensors"))
    key = "adapter_modules.0.to_k_bokeh.down.weight"
    del state[key]
    save_file(state, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_bokeh_diffusion_adapter(path, tiny_transformer())
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**cfg, "lora_dropout": 0.1}))
    with pytest.raises(CheckpointError, match="lora_dropout"):
        load_bokeh_diffusion_adapter(path, tiny_transformer())
    (path / "config.json").write_text(json.dumps({**cfg, "attn_hidden_dim": 3072}))
    with pytest.raises(CheckpointError, match="3072"):
        load_bokeh_diffusion_adapter(path, tiny_transformer())


def test_missing_files_name_repo(tmp_path):
    with pytest.raises(MissingWeightsError, match="config.json.*atfortes/BokehDiffusion"):
        load_bokeh_diffusion_adapter(tmp_path, tiny_transformer())
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(MissingWeightsError, match="model.safetensors.*hf download atfortes/BokehDiffusion"):
        load_bokeh_diffusion_adapter(tmp_path, tiny_transformer())


def test_output_names_follow_reference():
    assert output_name("A cat, on a mat!", 12.4) == "a_cat_on_a_mat-bokeh12.jpg"
    assert output_name("x", 12.0) == output_name("x", 12.4)
    assert output_label("word " * 40) == ("word_" * 40)[:75]


def test_prompts_sharing_an_output_folder_keep_each_others_images(tmp_path):
    from bokehdepth.pipelines.text2image import result_outputs, write_results

    owned = result_outputs("A cat", [0, 10, 10.2])
    assert owned == ("a_cat-bokeh0.jpg", "a_cat-bokeh10.jpg", "contact_sheet.png", "generation.json")
    img = np.full((8, 8, 3), 0.5, np.float32)
    out = tmp_path / "out"
    write_results(out, "A cat", [0, 10], [img, img])
    write_results(out, "A dog", [5], [img])
    names = ["a_cat-bokeh0.jpg", "a_cat-bokeh10.jpg", "a_dog-bokeh5.jpg", "contact_sheet.png", "generation.json"]
    assert sorted(p.name for p in out.iterdir()) == names
    assert json.loads((out / "generation.json").read_text())["files"] == ["a_dog-bokeh5.jpg"]
    write_results(out, "A dog", [5], [img])  # a rerun of one prompt leaves the other's images alone
    assert sorted(p.name for p in out.iterdir()) == names
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


@pytest.fixture(scope="module")
def t2i():
    pipe = load_tiny_pipeline("flux")
    adapter = random_adapter(pipe.transformer, "bokeh", seed=1, std=0.5)
    return BokehText2Image.from_pipeline(pipe, adapter)


def test_level_changes_output_and_seed_reproduces(t2i):
    a = t2i.generate("a cat", 5, settings=FAST)
    b = t2i.generate("a cat", 25, settings=FAST)
    assert a.shape == (32, 32, 3) and a.dtype == np.float32
    assert np.abs(a - b).max() > 1 / 255
    assert np.array_equal(a, t2i.generate("a cat", 5, settings=FAST))


def test_unconditional_label_path(t2i, monkeypatch):
    seen = []
    original = t2i.adapter.embed
    monkeypatch.setattr(t2i.adapter, "embed", lambda levels: seen.append(list(map(float, levels))) or original(levels))
    cfg = GenerationSettings(**{**FAST.__dict__, "true_cfg": 3.0})
    a = t2i.generate("a cat", 15, settings=cfg)
    assert [-1.0] in seen  # the null label −1 feeds the negative branch
    assert np.abs(a - t2i.generate("a cat", 15, settings=FAST)).max() > 1 / 255


def test_grounding_zero_steps_equals_plain_and_rejects_missing_pivot(t2i):
    plain = t2i.generate("a cat", 20, settings=FAST)
    assert np.array_equal(plain, t2i.generate("a cat", 20, pivot=10, num_grounding_steps=0, settings=FAST))
    with pytest.raises(InputError, match="--bokeh-pivot"):
        t2i.generate("a cat", 20, num_grounding_steps=2, settings=FAST)
    with pytest.raises(InputError, match="0–30"):
        t2i.generate("a cat", 31, settings=FAST)


def test_grounded_pivot_is_shared_and_target_grounded(t2i):
    x, pivot_x = t2i.generate("a cat", 0, pivot=15, num_grounding_steps=2, settings=FAST, return_pivot=True)
    y, pivot_y = t2i.generate("a cat", 30, pivot=15, num_grounding_steps=2, settings=FAST, return_pivot=True)
    assert np.allclose(pivot_x, pivot_y, atol=1 / 255)  # the pivot does not depend on the target
    assert np.allclose(pivot_x, t2i.generate("a cat", 15, settings=FAST), atol=2 / 255)  # = a plain pivot image
    assert np.abs(x - t2i.generate("a cat", 0, settings=FAST)).max() > 1 / 255  # grounding changed the target
    assert np.abs(x - y).max() > 1 / 255
