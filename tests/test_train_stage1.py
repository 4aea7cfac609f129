"""``bokehdepth train stage1 --model compact``: two steps on a tiny config on CPU, resume, the loss, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from bokehdepth.cli import main
from bokehdepth.models.compact_generator import CompactGeneratorConfig, load_compact_generator, read_generator_metadata
from bokehdepth.train.stage1 import _load_checkpoint, stage1_loss

TINY_MODEL = json.dumps({"base_channels": 4, "channel_mult": [1, 2], "k_embed_dim": 8, "radii_px": [0, 4, 12]})


@pytest.fixture(scope="module")
def tiny_manifest(tmp_path_factory):
    """Two 48×48 two-plane scenes (a textured subject at 1 m in front of a textured wall at 6 m) written in
    the dataset layout of docs/internals.md, by hand (no scene generator needed)."""
    from bokehdepth.data.manifest import write_manifest
    from bokehdepth.io import Stack, write_depth, write_image, write_stack

    root = tmp_path_factory.mktemp("s1data")
    rng = np.random.default_rng(0)
    records = []
    for i in range(2):
        sid = f"{i:06d}"
        d = root / sid
        d.mkdir()
        img = rng.random((48, 48, 3)).astype(np.float32)
        depth = np.full((48, 48), 6.0, np.float32)
        mask = np.zeros((48, 48), bool)
        mask[12:36, 10 + i : 30 + i] = True
        depth[mask] = 1.0
        write_image(d / "image.png", img)
        write_depth(d / "depth.npy", depth)
        write_image(d / "mask.png", mask.astype(np.float32))
        write_stack(Stack(frames=[img], K=[0.0], K_convention="normalized", source="render"), d / "stack")
        records.append(
            {
                "id": sid,
                "image": f"{sid}/image.png",
                "depth": f"{sid}/depth.npy",
                "mask": f"{sid}/mask.png",
                "stack": f"{sid}/stack",
                "K": [0.0],
                "K_convention": "normalized",
                "disp_focus": 1.0,
                "intrinsics": {"fx": 40.0, "fy": 40.0, "cx": 24.0, "cy": 24.0},
                "split": "train",
                "size": [48, 48],
            }
        )
    return write_manifest(root / "manifest.jsonl", records)


def _train(out, manifest, steps, *extra):
    return main(
        [
            "train", "stage1", "--model", "compact", "--data", str(manifest), "--out", str(out),
            "--steps", str(steps), "--batch-size", "2", "--crop", "32", "--bank-size", "48", "--bank-epochs", "1",
            "--log-every", "1", "--checkpoint-every", "1", "--warmup", "1", "--model-config", TINY_MODEL,
            "--no-progress", *extra,
        ]
    )  # fmt: skip


def test_logged_lr_is_the_lr_each_step_trained_with(tmp_path, tiny_manifest):
    """Warm-up 1 then cosine over 3 steps: step k (1-based) trains with lr·factor(k − 1), and the log says so
    (reading the scheduler after its step would log the next step's lr)."""
    import math

    from bokehdepth.train.stage1 import CompactTrainConfig

    out = tmp_path / "run"
    assert _train(out, tiny_manifest, 3) == 0
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    base = CompactTrainConfig(data="", out="").lr
    cosine = [0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * t)) for t in (0.0, 0.0, 0.5)]  # steps 0, 1, 2
    cosine[0] = 1.0  # step 0 is the warm-up step: (0 + 1) / 1
    assert [r["lr"] for r in log] == pytest.approx([base * f for f in cosine])


def test_two_steps_on_cpu_write_weights_log_and_a_resumable_checkpoint(tmp_path, tiny_manifest):
    out = tmp_path / "run"
    assert _train(out, tiny_manifest, 2) == 0
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2]
    assert all(np.isfinite(r["loss"]) and r["loss"] > 0 and r["lr"] > 0 for r in log)
    weights = out / "compact_generator.safetensors"
    meta = read_generator_metadata(weights)
    assert CompactGeneratorConfig.from_json(meta["config"]) == CompactGeneratorConfig(**json.loads(TINY_MODEL))
    assert int(meta["trained_steps"]) == 2
    model = load_compact_generator(weights)
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32), 10.0).shape == (1, 3, 32, 32)

    # resume: continues at step 3 with the saved weights and optimiser state
    ck = out / "checkpoint.safetensors"
    m1 = load_compact_generator(weights).train()
    opt1 = torch.optim.AdamW(m1.parameters())
    assert _load_checkpoint(ck, m1, opt1) == 2
    assert all(int(s["step"]) == 2 for s in opt1.state_dict()["state"].values())
    assert _train(out, tiny_manifest, 3, "--resume") == 0
    log = [json.loads(line) for line in (out / "loss_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    assert int(read_generator_metadata(weights)["trained_steps"]) == 3


def test_stage1_loss_is_zero_on_the_target_and_sees_blur():
    x = torch.rand(2, 3, 16, 16)
    loss, parts = stage1_loss(x, x)
    assert float(loss) == 0.0 and parts["grad"] == 0.0
    blurred = torch.nn.functional.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False)
    _, p = stage1_loss(blurred, x, grad_weight=1.0)
    gx = (x[..., 1:] - x[..., :-1]) - (blurred[..., 1:] - blurred[..., :-1])
    gy = (x[..., 1:, :] - x[..., :-1, :]) - (blurred[..., 1:, :] - blurred[..., :-1, :])
    assert p["grad"] == pytest.approx(0.5 * float(gx.abs().mean() + gy.abs().mean()), rel=1e-5)


@pytest.mark.parametrize(
    "extra, needle",
    [
        (["--model-config", "{not json"], "--model-config"),
        (["--model-config", '{"no_such_field": 1}'], "--model-config"),
        (["--crop", "30"], "--crop"),
    ],
)
def test_bad_training_settings_fail_with_exit_2(tmp_path, capsys, tiny_manifest, extra, needle):
    argv = ["train", "stage1", "--data", str(tiny_manifest), "--out", str(tmp_path / "o"), "--steps", "1"]
    assert main(argv + ["--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and needle in err


def test_missing_manifest_is_an_input_error(tmp_path, capsys):
    code = main(["train", "stage1", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o")])
    assert code == 2 and capsys.readouterr().err.startswith("error:")


def test_kontext_adapter_model_dispatches_with_its_own_defaults(tmp_path, capsys, monkeypatch):
    import bokehdepth.train.stage1_adapter as adapter_mod
    from bokehdepth.train.flux_common import FluxTrainConfig, config_from_namespace

    seen = {}

    def fake_train(args):
        seen["cfg"] = config_from_namespace(args)
        return {"step": 0, "weights": str(tmp_path / "bokeh_lora.bin")}

    monkeypatch.setattr(adapter_mod, "train_kontext_adapter", fake_train)
    argv = ["train", "stage1", "--model", "kontext-adapter", "--data", "d.jsonl", "--out", str(tmp_path / "o")]
    assert main(argv + ["--rank", "4", "--steps", "3"]) == 0
    cfg, defaults = seen["cfg"], FluxTrainConfig(data="", out="")
    assert cfg.rank == 4 and cfg.steps == 3
    # the compact generator's defaults must not leak into the adapter's run
    assert (cfg.lr, cfg.batch_size, cfg.warmup) == (defaults.lr, defaults.batch_size, defaults.warmup)
    assert "bokeh_lora.bin" in capsys.readouterr().out


@pytest.mark.parametrize(
    "model, flag",
    [("kontext-adapter", ["--crop", "32"]), ("compact", ["--rank", "4"]), ("compact", ["--base", "x"])],
)
def test_flags_of_the_other_model_are_refused(tmp_path, capsys, model, flag):
    argv = ["train", "stage1", "--model", model, "--data", "d.jsonl", "--out", str(tmp_path / "o"), *flag]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {flag[0]}") and model in err
    assert not (tmp_path / "o").exists()
