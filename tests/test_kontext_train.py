"""Training the Kontext bokeh adapter on a tiny offline Kontext pipeline (CPU, two steps, resume)."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import tiny_dataset, tiny_pipeline_dir, tiny_transformer, torch_single_thread  # noqa: E402,F401

from bokehdepth.errors import MissingWeightsError  # noqa: E402
from bokehdepth.models.kontext_adapter import load_kontext_adapter  # noqa: E402
from bokehdepth.train.flux_common import FluxTrainConfig, _load_checkpoint, lr_factor  # noqa: E402
from bokehdepth.train.stage1_adapter import train_kontext_adapter  # noqa: E402


def _cfg(out, **kw) -> FluxTrainConfig:
    base = dict(
        data=str(tiny_dataset()),
        out=str(out),
        base=str(tiny_pipeline_dir("kontext")),
        steps=2,
        batch_size=2,
        size=32,
        rank=4,
        context_dim=16,
        hidden_dim=8,
        max_sequence_length=8,
        split=None,
        log_every=1,
        warmup=1,
        lr=1e-3,
        progress=False,
    )
    return FluxTrainConfig(**{**base, **kw})


def test_train_two_steps_resume_and_export(tmp_path):
    out = tmp_path / "run"
    result = train_kontext_adapter(_cfg(out))
    assert result["step"] == 2 and torch.isfinite(torch.tensor(result["loss"]))
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    # the exported bokeh_lora.bin is the released layout: it loads strictly into a fitting transformer
    adapter = load_kontext_adapter(out, tiny_transformer(), install=False)
    trained = adapter.state_dict()
    assert any(k.endswith("up.weight") and torch.count_nonzero(v) for k, v in trained.items())  # ups left zero
    # the checkpoint restores the adapter exactly, then training continues from step 2
    clone = load_kontext_adapter(out, tiny_transformer(), install=False)
    opt = torch.optim.AdamW(clone.parameters())
    assert _load_checkpoint(out / "checkpoint.safetensors", clone, opt) == 2
    assert all(torch.equal(clone.state_dict()[k], v) for k, v in trained.items())
    assert len(opt.state_dict()["state"]) == len(list(clone.parameters()))
    again = train_kontext_adapter(_cfg(out, steps=3, resume=True))
    assert again["step"] == 3
    assert [json.loads(x)["step"] for x in (out / "loss_log.jsonl").read_text().splitlines()] == [1, 2, 3]


def test_namespace_entry_point_and_missing_base(tmp_path):
    import argparse

    ns = argparse.Namespace(data=str(tiny_dataset()), out=str(tmp_path / "o"), base=str(tmp_path / "none"), steps=1)
    with pytest.raises(MissingWeightsError, match="FLUX.1-Kontext-dev"):
        train_kontext_adapter(ns)


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 10, 100) == pytest.approx(0.1)
    assert lr_factor(9, 10, 100) == pytest.approx(1.0)
    assert lr_factor(55, 10, 100) == pytest.approx(0.5)
    assert lr_factor(100, 10, 100) == pytest.approx(0.0, abs=1e-12)


def test_bad_manifest_fails_before_writing(tmp_path):
    from bokehdepth.errors import InputError

    out = tmp_path / "o"
    with pytest.raises(InputError, match="manifest"):
        train_kontext_adapter(_cfg(out, data=str(tmp_path / "nothing")))
    assert not out.exists()
