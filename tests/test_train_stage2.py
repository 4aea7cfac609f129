"""``bokehdepth train stage2``: both presets run two steps on CPU, checkpoints resume, SILog matches its formula."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from helpers_stage2 import write_dataset

from bokehdepth.cli import main
from bokehdepth.train.stage2 import offset_loss, silog_loss

os.environ.setdefault("HF_HUB_OFFLINE", "1")

TINY_COMPACT = json.dumps(
    dict(image_size=32, patch_size=8, dim=32, depth=2, num_heads=2, taps=[0, 1], dsfa_taps=[1], head_dim=16)
)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("s2data"), 6, size=32)


def test_silog_formula():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])
    gt = torch.tensor([[[2.0, 2.0], [1.5, 0.0]]])  # last pixel invalid
    d = [math.log(2), 0.0, math.log(0.5)]
    m1, m2 = sum(d) / 3, sum(x * x for x in d) / 3
    assert silog_loss(pred, gt).item() == pytest.approx(math.sqrt(m2 - 0.5 * m1**2), rel=1e-5)
    assert silog_loss(gt.clamp(min=1e-2), gt).item() < 1e-3


def test_offset_loss_is_relative_inverse_depth_l1():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])  # disparities 1, 0.5, 0.25; last pixel invalid
    df = torch.tensor([0.5])
    exact = torch.tensor([[[0.5, 0.0], [-0.25, 9.0]]])
    assert offset_loss(exact, df, gt).item() == pytest.approx(0.0, abs=1e-7)
    off = exact + 0.1
    assert offset_loss(off, df, gt).item() == pytest.approx(0.1 / (1.75 / 3), rel=1e-5)


def test_offset_loss_unsigned_target():
    gt = torch.tensor([[[1.0, 2.0], [4.0, 0.0]]])  # disparities 1, 0.5, 0.25; last pixel invalid
    delta = 1 / gt.clamp(min=1e-3) - 0.5  # signed offsets 0.5, 0, -0.25 from a focus at 0.5 1/m
    zero = torch.zeros(1)
    assert offset_loss(delta.abs(), zero, gt, delta=delta).item() == pytest.approx(0.0, abs=1e-7)
    # the sign is not part of the target: -|Δ| is wrong by 2|Δ| where Δ ≠ 0
    assert offset_loss(-delta.abs(), zero, gt, delta=delta).item() == pytest.approx(1.5 / 3 / (1.75 / 3), rel=1e-5)


def test_compact_two_steps_resume_and_export(manifest, tmp_path):
    from bokehdepth.models.compact_depth import load_compact_depth

    out = tmp_path / "run"
    args = ["train", "stage2", "--data", str(manifest), "-o", str(out), "--batch-size", "2", "--save-every", "1"]
    args += ["--size", "32", "--config", TINY_COMPACT]
    assert main([*args, "--steps", "2"]) == 0
    log = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2] and all(math.isfinite(r["loss"]) for r in log)
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 2
    assert main([*args, "--steps", "3", "--resume"]) == 0
    log = [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    m = load_compact_depth(out / "compact_depth.safetensors")
    assert m.cfg.dim == 32


def test_compact_cost_volume_and_stack_dropout(manifest, tmp_path, monkeypatch):
    from bokehdepth.train import stage2

    seen = []
    real_step = stage2.compact_step
    monkeypatch.setattr(
        stage2,
        "compact_step",
        lambda m, b, single, **kw: seen.append((single, b.cost)) or real_step(m, b, single, **kw),
    )
    cfg = json.dumps({**json.loads(TINY_COMPACT), "cost_bins": 4})
    args = ["train", "stage2", "--data", str(manifest), "-o", str(tmp_path / "run"), "--batch-size", "2"]
    assert main([*args, "--size", "32", "--config", cfg, "--steps", "6", "--stack-dropout", "0.5"]) == 0
    singles = [s for s, _ in seen]
    assert len(seen) == 6 and any(singles) and not all(singles)  # seed-fixed mix of stack and single-frame steps
    assert all(c is not None and c.shape == (2, 4, 32, 32) for _, c in seen)  # the cached cost volumes


def test_dav2_preset_two_steps_tiny(manifest, tmp_path):
    tiny = dict(
        hidden_size=32,
        num_hidden_layers=4,
        num_attention_heads=2,
        out_indices=[1, 2, 3, 4],
        neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16,
        dsfa_heads=2,
        initializer_range=0.1,
    )
    out = tmp_path / "dav2"
    args = ["train", "stage2", "--model", "dav2-dsfa-s", "--data", str(manifest), "-o", str(out), "--steps", "2"]
    args += ["--batch-size", "2", "--size", "28", "--config", json.dumps(tiny), "--gradient-checkpointing"]
    assert main(args) == 0
    assert len((out / "loss.jsonl").read_text().splitlines()) == 2
    from safetensors.torch import load_file

    sd = load_file(str(out / "dav2-dsfa-s.safetensors"))
    from bokehdepth.models.depth_anything import build_model, to_published_state_dict

    assert set(sd) == set(to_published_state_dict(build_model("dav2-dsfa-s", **tiny)))  # published layout


def test_several_manifests_are_one_training_set(manifest, tmp_path):
    from bokehdepth.train.stage2 import load_manifest_scenes

    one = load_manifest_scenes(manifest, None, 32, 3, 8)
    both = load_manifest_scenes([manifest, manifest], None, 32, 3, 8)
    assert len(both) == 2 * len(one)
    assert len({s["id"] for s in both}) == len(both)  # ids stay unique (the cost cache is per scene)
    for a, b in zip(one, both[len(one) :]):
        assert b["id"] == f"1/{a['id']}"
        assert (a["depth"] == b["depth"]).all()
    assert len(load_manifest_scenes([manifest, manifest], None, 32, 3, 8, max_scenes=3)) == 3
    out = tmp_path / "two"
    args = ["train", "stage2", "--data", str(manifest), str(manifest), "-o", str(out), "--steps", "1"]
    assert main([*args, "--batch-size", "2", "--size", "32", "--config", TINY_COMPACT]) == 0
    assert len((out / "loss.jsonl").read_text().splitlines()) == 1


def test_missing_manifest_is_an_error(tmp_path, capsys):
    assert main(["train", "stage2", "--data", str(tmp_path / "none.jsonl"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "none.jsonl" in err


def test_log_disparity_term_is_the_defocus_log_error_with_the_true_side():
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel
    from bokehdepth.train.stage2 import compact_losses

    model = CompactDepthModel(CompactDepthConfig(**json.loads(TINY_COMPACT)))
    gt = torch.tensor([[[2.0, 0.8]]])  # disparities 0.5 (behind the focus plane) and 1.25 (in front)
    df = torch.tensor([1.0])
    out = {k: torch.zeros(1, 1, 2) for k in ("side", "confidence", "log_depth")}
    out["offset"] = torch.tensor([[[0.3, 0.25]]])  # true |Δ| = 0.5 and 0.25
    sign = torch.zeros(1)
    with_term = compact_losses(model, out, df, sign, gt, log_disp_weight=1.0)[0]
    without = compact_losses(model, out, df, sign, gt, log_disp_weight=0.0)[0]
    # pixel 1: disp 1 − 0.3 = 0.7 against 0.5; pixel 2 exact (1 + 0.25 = 1.25)
    assert (with_term - without).item() == pytest.approx(math.log(0.7 / 0.5) / 2, rel=1e-5)
