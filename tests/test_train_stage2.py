"""``bokehdepth train stage2``: both presets run two steps on CPU, checkpoints resume exactly, bad inputs and
corrupt checkpoints are one-line errors, SILog matches its formula."""

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


TINY_DAV2 = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    out_indices=[1, 2, 3, 4],
    neck_hidden_sizes=[8, 16, 32, 32],
    fusion_hidden_size=16,
    dsfa_heads=2,
    initializer_range=0.1,
)
"""A tiny DAv2-DSFA config (``--config``) for CPU tests."""


def test_dav2_preset_two_steps_tiny(manifest, tmp_path):
    tiny = dict(TINY_DAV2)
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


# ---------------------------------------------------------------------------------------------- robustness
def _train(manifest, out, *extra):
    args = ["train", "stage2", "--data", str(manifest), "-o", str(out), "--size", "32", "--config", TINY_COMPACT]
    return main([*args, *[str(x) for x in extra]])


def _train_killed_in_step(n, monkeypatch, manifest, out, *extra):
    """``_train`` with the process interrupted (KeyboardInterrupt) when the ``n``-th compact step begins."""
    from bokehdepth.train import stage2

    real_step, calls = stage2.compact_step, []

    def crash(m, b, single, **kw):
        calls.append(single)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real_step(m, b, single, **kw)

    with monkeypatch.context() as mp:
        mp.setattr(stage2, "compact_step", crash)
        return _train(manifest, out, *extra)


def _log(out):
    return [json.loads(x) for x in (out / "loss.jsonl").read_text().splitlines()]


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.split("\r")[-1]  # after tqdm's cleared progress lines
    assert err.startswith("error:") and err.count("\n") == 1, err
    return err


def test_interrupted_and_resumed_run_equals_the_uninterrupted_one(manifest, tmp_path, monkeypatch):
    """6 steps in one go vs. a run killed during step 6 (last/ saved at step 4, step 5 already logged) and
    resumed: same losses, same lr, one log line per step, same final weights. Batch 1 over 5 training scenes puts
    the checkpoint mid-epoch (skipped batches) and step 6 in the next epoch; stack dropout draws its RNG."""
    from safetensors.torch import load_file

    cfg = json.dumps({**json.loads(TINY_COMPACT), "cost_bins": 4})
    common = ["--config", cfg, "--batch-size", 1, "--save-every", 2, "--stack-dropout", 0.5, "--steps", 6]
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _train(manifest, full, *common) == 0
    assert _train_killed_in_step(6, monkeypatch, manifest, cut, *common) == 130
    assert [r["step"] for r in _log(cut)] == [1, 2, 3, 4, 5]
    state = json.loads((cut / "last" / "state.json").read_text())
    assert (state["step"], state["epoch"], state["batch_in_epoch"]) == (4, 0, 4)
    assert _train(manifest, cut, *common, "--resume") == 0
    a, b = _log(full), _log(cut)
    assert [r["step"] for r in b] == [1, 2, 3, 4, 5, 6]
    for ra, rb in zip(a, b):
        assert rb["loss"] == pytest.approx(ra["loss"], abs=1e-5), (ra, rb)
        assert rb["lr"] == pytest.approx(ra["lr"], rel=1e-9), (ra, rb)
    assert b[-1]["time"] >= b[3]["time"]  # training time goes on from the checkpoint's
    wa, wb = load_file(str(full / "compact_depth.safetensors")), load_file(str(cut / "compact_depth.safetensors"))
    assert wa.keys() == wb.keys()
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5


def test_fresh_run_starts_the_log_over(manifest, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "loss.jsonl").write_text('{"step": 7, "loss": 1.0}\n{"step": 1, "loss": 9.0}\n')
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2) == 0
    assert [r["step"] for r in _log(out)] == [1, 2] and all(r["loss"] != 9.0 for r in _log(out))


def test_resume_without_checkpoint_warns_and_starts_at_zero(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2, "--resume") == 0
    err = capsys.readouterr().err
    assert f"warning: --resume: no checkpoint in {out / 'last'}; starting from step 0\n" in err
    assert [r["step"] for r in _log(out)] == [1, 2]


@pytest.mark.parametrize(
    "name, damage",
    [
        ("state.json", lambda p: p.write_text('{"step": 2, ')),
        ("model.safetensors", lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])),
        ("optimizer.pt", lambda p: p.write_bytes(b"not a checkpoint")),
        ("rng.safetensors", lambda p: p.unlink()),
    ],
)
def test_corrupt_checkpoint_is_a_one_line_error(manifest, tmp_path, capsys, name, damage):
    out = tmp_path / "run"
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2) == 0
    damage(out / "last" / name)
    log = (out / "loss.jsonl").read_text()
    capsys.readouterr()
    assert _train(manifest, out, "--steps", 3, "--batch-size", 2, "--resume") == 2
    err = _one_error_line(capsys)
    assert str(out / "last" / name) in err and f"delete {out / 'last'}" in err
    assert (out / "loss.jsonl").read_text() == log  # nothing touched


def test_crash_while_saving_keeps_the_previous_checkpoint(manifest, tmp_path, monkeypatch, capsys):
    import torch

    from bokehdepth.train import stage2

    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_full_on_second_save(obj, f, *a, **kw):
        saves.append(f)
        if len(saves) == 2:
            raise OSError(28, "No space left on device")
        return real_save(obj, f, *a, **kw)

    monkeypatch.setattr(torch, "save", disk_full_on_second_save)
    assert _train(manifest, out, "--steps", 3, "--batch-size", 2, "--save-every", 1) == 2
    monkeypatch.undo()
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 1
    assert sorted(p.name for p in (out / "last").iterdir()) == sorted(
        ["model.safetensors", "optimizer.pt", "rng.safetensors", "state.json"]
    )
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []  # no temp folder left
    # a crash between the two renames of a save (last/ moved away, the new one complete): resume recovers it
    stage2._recover_last(out)
    (out / "last").rename(out / ".last.new")
    # and a save killed (SIGKILL) while writing its temporary folder: the half-written folder is removed
    (out / ".last.new.tmp-k1ll3d").mkdir()
    (out / ".last.new.tmp-k1ll3d" / "model.safetensors").write_bytes(b"half")
    capsys.readouterr()
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2, "--resume") == 0
    assert "warning" not in capsys.readouterr().err  # resumed, not started over
    assert [p.name for p in out.iterdir() if p.name.startswith(".")] == []
    assert [r["step"] for r in _log(out)] == [1, 2]
    assert json.loads((out / "last" / "state.json").read_text())["step"] == 2


@pytest.mark.parametrize(
    "config, expected",
    [
        ('{"dim": 32,', "not valid JSON"),
        ("[1, 2]", "JSON object"),
        ('{"dim": 32, "bogus_field": 1}', "bogus_field"),
        ('{"cost_bins": 1}', "cost_bins"),
        ('{"dim": 30, "num_heads": 4}', "invalid compact model config"),
    ],
)
def test_bad_config_is_a_one_line_error(manifest, tmp_path, capsys, config, expected):
    out = tmp_path / "run"
    args = ["train", "stage2", "--data", str(manifest), "-o", str(out), "--steps", "1", "--config", config]
    assert main(args) == 2
    err = _one_error_line(capsys)
    assert err.startswith("error: --config") and expected in err, err
    assert not out.exists()


def test_init_with_config_is_refused(manifest, tmp_path, capsys):
    from bokehdepth.models.compact_depth import DEFAULT_WEIGHTS

    out = tmp_path / "run"
    assert _train(manifest, out, "--steps", 1, "--init", DEFAULT_WEIGHTS) == 2
    err = _one_error_line(capsys)
    assert "--config" in err and "--init" in err
    assert not out.exists()


def test_short_stack_scene_names_scene_and_manifest(tmp_path, capsys):
    from bokehdepth.data import write_manifest
    from bokehdepth.io import Stack, read_stack, write_stack

    path = write_dataset(tmp_path / "ds", 3, size=32)
    rows = [json.loads(x) for x in path.read_text().splitlines()]
    full = read_stack(tmp_path / "ds" / "000001" / "stack")
    write_stack(
        Stack(frames=full.frames[:2], K=full.K[:2], disp_focus=full.disp_focus, focus_side="near"),
        tmp_path / "ds" / "000001" / "short",
    )
    rows[1].update(stack="000001/short", K=full.K[:2])
    write_manifest(path, rows)
    assert _train(path, tmp_path / "run", "--steps", 1, "--batch-size", 2) == 2
    err = _one_error_line(capsys)
    assert str(path) in err and "scene 000001" in err and "--max-frames 1" in err
    # the fix the message names works
    assert _train(path, tmp_path / "run", "--steps", 1, "--batch-size", 2, "--max-frames", 1) == 0


def test_normalized_K_follows_the_crop_and_metric_K_the_resize():
    import numpy as np

    from bokehdepth.io import Stack
    from bokehdepth.train.stage2 import prepare_scene

    rng = np.random.default_rng(0)
    img = rng.random((64, 128, 3)).astype(np.float32)  # resized ×0.5 to 32×64, then cropped to 32×32
    depth = np.full((64, 128), 2.0, np.float32)
    frames = [img, img.copy()]
    for conv, expected in (("normalized", 20.0), ("metric", 5.0)):
        stack = Stack(frames=frames, K=[0.0, 10.0], disp_focus=0.5, K_convention=conv)
        sc = prepare_scene(img, stack, depth, size=32, max_frames=3)
        assert sc["ref"].shape == (3, 32, 32)
        assert sc["K"].tolist() == pytest.approx([expected]), conv


def test_stack_gamma_reaches_the_cost_volume_and_the_forward(manifest):
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel
    from bokehdepth.train.stage2 import cache_cost_volumes, collate, compact_k_input, compact_step, load_manifest_scenes

    model = CompactDepthModel(CompactDepthConfig(**{**json.loads(TINY_COMPACT), "cost_bins": 4}))
    scenes = load_manifest_scenes(manifest, None, 32, 3, 8)[:2]
    assert [s["gamma"] for s in scenes] == [2.2, 2.2]  # stack.json's gamma
    scenes[1]["gamma"] = 1.0
    cache_cost_volumes(model, scenes)
    b = collate(scenes)
    k_in = compact_k_input(b, model.cfg)
    with torch.no_grad():
        want = [
            model.cost_volume(b.ref[i : i + 1], b.stack[i : i + 1], k_in[i : i + 1], gamma=g)[0]
            for i, g in enumerate((2.2, 1.0))
        ]
        default = model.cost_volume(b.ref[1:], b.stack[1:], k_in[1:])[0]
    for s, w in zip(scenes, want):
        assert torch.allclose(torch.from_numpy(s["cost"]).float(), w, rtol=1e-2, atol=1e-4)
    assert not torch.allclose(torch.from_numpy(scenes[1]["cost"]).float(), default, rtol=1e-2, atol=1e-4)
    seen = []
    model.register_forward_pre_hook(lambda m, a, kw: seen.append(kw["gamma"]), with_kwargs=True)
    compact_step(model, collate(scenes), False)
    assert seen[0].tolist() == pytest.approx([2.2, 1.0])


def test_compact_step_runs_the_forward_through_the_wrapper():
    """DDP syncs gradients in its forward: the step must call the prepared (wrapped) model, not the inner one."""
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel
    from bokehdepth.train.stage2 import compact_step

    model = CompactDepthModel(CompactDepthConfig(**json.loads(TINY_COMPACT)))
    wrapped = torch.nn.DataParallel(model)  # no GPU: a pass-through wrapper that accelerate's unwrap knows
    calls = []
    wrapped.register_forward_pre_hook(lambda m, a: calls.append(1))
    b = _tiny_batch()
    loss, depth = compact_step(wrapped, b, False)
    assert calls == [1] and depth.shape == (1, 32, 32) and torch.isfinite(loss)


def test_compact_losses_mask_follows_the_model_max_depth():
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel
    from bokehdepth.train.stage2 import compact_losses

    model = CompactDepthModel(CompactDepthConfig(**{**json.loads(TINY_COMPACT), "max_depth": 5.0}))
    gt = torch.tensor([[[2.0, 10.0]]])  # the 10 m pixel is beyond the model's range: not a valid target
    out = {k: torch.zeros(1, 1, 2) for k in ("side", "confidence", "log_depth", "offset")}
    nan = torch.tensor([float("nan")])
    loss = compact_losses(model, out, nan, torch.zeros(1), gt)[0]
    assert loss.item() == pytest.approx(math.log(2.0), rel=1e-5)
    assert compact_losses(model, out, nan, torch.zeros(1), gt, max_depth=80.0)[0].item() == pytest.approx(
        (math.log(2.0) + math.log(10.0)) / 2, rel=1e-5
    )


def _tiny_batch():
    from bokehdepth.train.stage2 import Stage2Batch

    g = torch.Generator().manual_seed(0)
    return Stage2Batch(
        ref=torch.rand(1, 3, 32, 32, generator=g),
        stack=torch.rand(1, 2, 3, 32, 32, generator=g),
        K=torch.tensor([[2.0, 4.0]]),
        disp_focus=torch.tensor([1.0]),
        disp_span=torch.tensor([0.5]),
        depth=torch.full((1, 32, 32), 1.5),
        metric=torch.tensor([True]),
        focus_sign=torch.tensor([-1.0]),
        gamma=torch.tensor([2.2]),
    )


# ------------------------------------------------------------------------------------------------ review fixes


def test_logged_lr_is_the_lr_the_step_trained_with(manifest, tmp_path):
    """Step s (1-based) trains with base·cos-schedule(s − 1): step 1 at the full lr (warm-up of one step for
    --steps < 40), not the lr the scheduler set for the next step."""
    out = tmp_path / "run"
    assert _train(manifest, out, "--steps", 3, "--batch-size", 2, "--lr", 1e-3) == 0
    lrs = [r["lr"] for r in _log(out)]
    want = [1e-3 * 0.5 * (1 + math.cos(math.pi * s / 3)) for s in range(3)]  # 1e-3, 7.5e-4, 2.5e-4
    assert lrs == pytest.approx(want, rel=1e-9)


def test_dav2_ddp_allows_the_parameters_its_forward_never_uses(manifest, tmp_path, monkeypatch):
    """DAv2's mask_token and the first fusion layer's residual unit get no gradient: under DDP (several GPUs,
    the published setup) the trainer must build the accelerator with find_unused_parameters, or the second
    step fails ("Expected to have finished reduction in the prior iteration")."""
    import accelerate

    from bokehdepth.models.depth_anything import build_model
    from bokehdepth.train.stage2 import collate, dav2_step, load_manifest_scenes

    model = build_model("dav2-dsfa-s", **TINY_DAV2)
    dav2_step(model, collate(load_manifest_scenes(manifest, None, 28, 3, 14)[:2]), False)[0].backward()
    assert "model.backbone.embeddings.mask_token" in [n for n, p in model.named_parameters() if p.grad is None]

    class Stop(Exception):
        pass

    seen = []

    def record(*a, **kw):
        seen.append(kw.get("kwargs_handlers") or [])
        raise Stop

    monkeypatch.setattr(accelerate, "Accelerator", record)
    args = ["train", "stage2", "--model", "dav2-dsfa-s", "--data", str(manifest), "-o", str(tmp_path / "o")]
    with pytest.raises(Stop):
        main([*args, "--config", json.dumps(TINY_DAV2), "--size", "28", "--steps", "1"])
    assert any(getattr(h, "find_unused_parameters", False) for h in seen[0])


def test_dav2_init_from_plain_dav2_keeps_the_published_dsfa_init(manifest, tmp_path):
    """--init with a plain DAv2 checkpoint (published recipe: depth_anything_v2_metric_vkitti_vitl.pth) starts
    the DSFA blocks at their published init (gates 0.1), not at the inference-time identity (gates 0)."""
    from safetensors.torch import load_file, save_file

    from bokehdepth.models.depth_anything import build_model, to_published_state_dict

    plain = {
        k: v.contiguous()
        for k, v in to_published_state_dict(build_model("dav2-dsfa-s", **TINY_DAV2)).items()
        if not k.startswith("encoder_fusion.")
    }
    init = tmp_path / "dav2_plain.safetensors"
    save_file(plain, str(init))
    out = tmp_path / "dav2"
    args = ["train", "stage2", "--model", "dav2-dsfa-s", "--data", str(manifest), "-o", str(out), "--steps", "1"]
    args += ["--batch-size", "2", "--size", "28", "--config", json.dumps(TINY_DAV2), "--init", str(init)]
    assert main(args) == 0
    sd = load_file(str(out / "dav2-dsfa-s.safetensors"))
    gates = [v for k, v in sd.items() if k.startswith("encoder_fusion.") and ".gamma_" in k]
    assert len(gates) == 8 and all((g - 0.1).abs().max().item() < 1e-3 for g in gates)
    assert (sd["pretrained.cls_token"] - plain["pretrained.cls_token"]).abs().max().item() < 1e-3  # init loaded


@pytest.mark.parametrize(
    "extra, flag",
    [
        (["--save-every", "0"], "--save-every"),
        (["--batch-size", "0"], "--batch-size"),
        (["--steps", "0"], "--steps"),
        (["--stack-dropout", "1.5"], "--stack-dropout"),
        (["--max-minutes", "0"], "--max-minutes"),
        (["--mixed-precision", "fp16", "--cpu"], "--mixed-precision"),  # no autocast on CPU: would train fp32
        (["--freeze-backbone"], "--freeze-backbone"),  # the compact model has no such switch
    ],
)
def test_bad_training_flags_are_one_line_errors(manifest, tmp_path, capsys, extra, flag):
    out = tmp_path / "run"
    args = ["train", "stage2", "--data", str(manifest), "-o", str(out), "--config", TINY_COMPACT, "--size", "32"]
    assert main([*args, "--steps", "2", *extra]) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: {flag}"), err
    assert not out.exists()


def test_output_that_is_a_file_is_a_one_line_error(manifest, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("not a folder")
    assert _train(manifest, out, "--steps", 1, "--batch-size", 2) == 2
    err = _one_error_line(capsys)
    assert str(out) in err and "-o" in err
    assert out.read_text() == "not a folder"


# ------------------------------------------------------------------------------------ resume safety (review)
@pytest.fixture(scope="module")
def checkpointed(manifest, tmp_path_factory):
    """A finished 2-step run (batch 2, --lr 1e-3, --seed 3) whose OUT/last the tests below copy and resume."""
    out = tmp_path_factory.mktemp("ckpt") / "run"
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2, "--lr", 1e-3, "--seed", 3) == 0
    return out


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _tree(out):
    return {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_checkpoint_records_the_run_settings(checkpointed, manifest):
    import hashlib

    s = json.loads((checkpointed / "last" / "state.json").read_text())["settings"]
    assert (s["model"], s["batch_size"], s["seed"], s["size"], s["steps"]) == ("compact", 2, 3, 32, 2)
    assert s["config"] == json.loads(TINY_COMPACT) and s["model_config"]["dim"] == 32
    assert s["data"] == [{"path": str(manifest.resolve()), "sha256": hashlib.sha256(manifest.read_bytes()).hexdigest()}]
    assert (s["lr"], s["weight_decay"], s["stack_dropout"], s["single_frame"]) == (1e-3, 0.05, 0.0, False)
    assert (s["log_disp_weight"], s["mixed_precision"], s["num_processes"]) == (1.0, "no", 1)


@pytest.mark.parametrize(
    "extra, flag, ours, theirs, fix",
    [
        (["--batch-size", 1], "--batch-size", "1", "2", "pass --batch-size 2"),
        (["--batch-size", 2, "--seed", 4], "--seed", "4", "3", "pass --seed 3"),
        (["--batch-size", 2, "--stack-dropout", 0.5], "--stack-dropout", "0.5", "0.0", "pass --stack-dropout 0.0"),
        (["--batch-size", 2, "--single-frame"], "--single-frame", "on", "off", "leave out --single-frame"),
        (["--batch-size", 2, "--log-disp-weight", 0], "--log-disp-weight", "0.0", "1.0", "pass --log-disp-weight"),
        (["--batch-size", 2, "--max-frames", 2], "--max-frames", "2", "3", "pass --max-frames 3"),
        (["--batch-size", 2, "--lr", 5e-4], "--lr", "0.0005", "0.001", "pass --lr 0.001"),
        (["--batch-size", 2, "--weight-decay", 0], "--weight-decay", "0.0", "0.05", "pass --weight-decay 0.05"),
    ],
)
def test_resume_with_changed_settings_is_a_one_line_error(
    manifest, checkpointed, tmp_path, capsys, extra, flag, ours, theirs, fix
):
    out = _copy_run(checkpointed, tmp_path / "run")
    before = _tree(out)
    capsys.readouterr()
    assert _train(manifest, out, "--steps", 4, "--seed", 3, *extra, "--resume") == 2
    err = _one_error_line(capsys)
    state = out / "last" / "state.json"
    assert err.startswith(f"error: {flag} {ours} differs from the checkpoint's {theirs} ({state}"), err
    assert fix in err and "another -o" in err
    assert _tree(out) == before  # nothing written


def test_resume_with_other_size_config_or_data_is_refused(manifest, checkpointed, tmp_path, capsys):
    out = _copy_run(checkpointed, tmp_path / "run")
    before = _tree(out)
    base = ["--steps", 4, "--batch-size", 2, "--seed", 3, "--resume"]
    args = ["train", "stage2", "--data", str(manifest), "-o", str(out), *map(str, base)]
    capsys.readouterr()
    assert main([*args, "--config", TINY_COMPACT, "--size", "64"]) == 2
    assert _one_error_line(capsys).startswith("error: --size 64 differs from the checkpoint's 32")
    bigger = json.dumps({**json.loads(TINY_COMPACT), "dim": 64, "head_dim": 32})
    assert main([*args, "--size", "32", "--config", bigger]) == 2
    err = _one_error_line(capsys)
    assert err.startswith("error: --config '") and f"pass --config '{json.dumps(json.loads(TINY_COMPACT))}'" in err
    other = tmp_path / "other.jsonl"  # the same scenes, one fewer: another data set
    other.write_text("".join(manifest.read_text().splitlines(keepends=True)[1:]))
    assert _train(other, out, *base) == 2
    err = _one_error_line(capsys)
    assert err.startswith(f"error: --data {other.resolve()} differs from the checkpoint's {manifest.resolve()}")
    assert _tree(out) == before


def test_resume_accepts_more_steps_and_other_schedule_flags(manifest, checkpointed, tmp_path, capsys):
    """--steps, --max-minutes, --save-every may change; --lr/--weight-decay left out: the checkpoint's are used
    (restored with the optimizer) and recorded again."""
    out = _copy_run(checkpointed, tmp_path / "run")
    capsys.readouterr()
    extra = ["--steps", 3, "--batch-size", 2, "--seed", 3, "--save-every", 7, "--max-minutes", 60, "--resume"]
    assert _train(manifest, out, *extra) == 0
    assert "warning" not in capsys.readouterr().err
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    s = json.loads((out / "last" / "state.json").read_text())["settings"]
    assert (s["steps"], s["max_minutes"], s["lr"], s["weight_decay"]) == (3, 60.0, 1e-3, 0.05)


def test_checkpoint_without_settings_resumes_with_one_warning(manifest, checkpointed, tmp_path, capsys):
    out = _copy_run(checkpointed, tmp_path / "run")
    path = out / "last" / "state.json"
    state = json.loads(path.read_text())
    del state["settings"]  # as written before the settings were recorded
    path.write_text(json.dumps(state))
    capsys.readouterr()
    assert _train(manifest, out, "--steps", 3, "--batch-size", 2, "--seed", 3, "--resume") == 0
    warnings = [x for x in capsys.readouterr().err.replace("\r", "\n").splitlines() if "warning:" in x]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {path} records no run settings"), warnings
    assert [r["step"] for r in _log(out)] == [1, 2, 3]
    assert json.loads(path.read_text())["settings"]["lr"] == 1e-3  # the optimizer's, not the default 3e-4


def test_moved_manifest_with_the_same_bytes_resumes_with_a_warning(manifest, checkpointed, tmp_path, capsys):
    import shutil

    out = _copy_run(checkpointed, tmp_path / "run")
    moved = shutil.copytree(manifest.parent, tmp_path / "moved") / manifest.name  # the data set, moved whole
    capsys.readouterr()
    assert _train(moved, out, "--steps", 3, "--batch-size", 2, "--seed", 3, "--resume") == 0
    assert "warning: --data: the manifests moved since the checkpoint" in capsys.readouterr().err
    assert json.loads((out / "last" / "state.json").read_text())["settings"]["data"][0]["path"] == str(moved)


def test_fresh_run_into_a_checkpointed_output_is_refused_without_overwrite(manifest, checkpointed, tmp_path, capsys):
    out = _copy_run(checkpointed, tmp_path / "run")
    before = _tree(out)
    capsys.readouterr()
    assert _train(manifest, out, "--steps", 2, "--batch-size", 2) == 2
    err = _one_error_line(capsys)
    assert err == (
        f"error: {out} holds a checkpoint of an earlier run ({out / 'last'}); pass --resume to continue it, "
        "or --overwrite to start over\n"
    )
    assert _tree(out) == before
    assert _train(manifest, out, "--steps", 1, "--batch-size", 2, "--overwrite", "--resume") == 2
    assert _one_error_line(capsys).startswith("error: --overwrite")
    assert _tree(out) == before
    assert _train(manifest, out, "--steps", 1, "--batch-size", 2, "--overwrite") == 0  # starts over
    assert [r["step"] for r in _log(out)] == [1]
    assert json.loads((out / "last" / "state.json").read_text())["settings"]["seed"] == 0


def test_help_documents_overwrite(capsys):
    with pytest.raises(SystemExit):
        main(["train", "stage2", "--help"])
    assert "--overwrite" in capsys.readouterr().out


def test_grad_scaler_state_round_trips_through_json():
    from bokehdepth.errors import CheckpointError
    from bokehdepth.train.stage2 import _restore_scaler, _scaler_state

    w = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.SGD([w], lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10, growth_interval=3)
    for loss in ((w * float("inf")).sum(), w.sum(), w.sum()):  # one overflow (scale halved), two good steps
        opt.zero_grad()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
    state = json.loads(json.dumps(_scaler_state(scaler)))  # what state.json holds
    assert state == {
        "scale": 2.0**9,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 3,
        "_growth_tracker": 2,
    }
    fresh = torch.amp.GradScaler("cpu")
    _restore_scaler(fresh, state, "state.json", "fix")
    assert fresh.state_dict() == scaler.state_dict()
    assert _scaler_state(None) is None
    assert _scaler_state(torch.amp.GradScaler("cpu", enabled=False)) is None
    with pytest.raises(CheckpointError, match="state.json: grad_scaler state invalid"):
        _restore_scaler(fresh, {**state, "scale": "big"}, "state.json", "fix")


def test_grad_scaler_is_saved_and_restored_on_resume(manifest, tmp_path, monkeypatch):
    """With a GradScaler (fp16 on a GPU; here a CPU one whose scale doubles every step), a resumed run ends with
    the scaler state of the uninterrupted run."""
    import accelerate

    class ScaledAccelerator(accelerate.Accelerator):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.scaler = torch.amp.GradScaler("cpu", init_scale=4.0, growth_interval=1)

    monkeypatch.setattr(accelerate, "Accelerator", ScaledAccelerator)
    full, cut = tmp_path / "full", tmp_path / "cut"
    assert _train(manifest, full, "--steps", 4, "--batch-size", 2) == 0
    assert _train(manifest, cut, "--steps", 2, "--batch-size", 2) == 0
    assert json.loads((cut / "last" / "state.json").read_text())["grad_scaler"]["scale"] == 16.0
    assert _train(manifest, cut, "--steps", 4, "--batch-size", 2, "--resume") == 0
    a, b = (json.loads((o / "last" / "state.json").read_text())["grad_scaler"] for o in (full, cut))
    assert a == b and a["scale"] == 64.0  # a scaler started over at the resume would end at 16


# ------------------------------------------------------------------------------------------ random crops
def _columns_scene(width: int = 64, height: int = 32, convention: str = "metric"):
    """A scene whose reference, stack frame and depth all encode the column index (to check crops align)."""
    import numpy as np

    from bokehdepth.io import Stack

    col = np.broadcast_to(np.arange(width, dtype=np.float32), (height, width))
    img = np.stack([col / width, np.zeros_like(col), np.ones_like(col)], -1).astype(np.float32)
    stack = Stack(frames=[img, img.copy()], K=[0.0, 10.0], disp_focus=0.5, K_convention=convention)
    return img, stack, (col + 1.0).copy()


def test_random_crop_cuts_the_same_square_from_every_array():
    import numpy as np

    from bokehdepth.io import Stack
    from bokehdepth.train.stage2 import crop_scene, prepare_scene

    img, stack, depth = _columns_scene()
    whole = prepare_scene(img, stack, depth, size=32, max_frames=3, crop="random")
    assert whole["ref"].shape == (3, 32, 64) and whole["stack"].shape == (1, 3, 32, 64) and whole["crop"] == 32
    whole["cost"] = np.broadcast_to(np.arange(64, dtype=np.float16), (4, 32, 64)).copy()
    for v, left in ((0.0, 0), (0.5, 16), (0.999, 32)):  # 33 possible left edges
        sq = crop_scene(whole, 0.3, v)
        assert "crop" not in sq and sq["depth"].shape == (32, 32) and sq["cost"].shape == (4, 32, 32)
        cols = np.arange(left, left + 32)
        assert np.array_equal(sq["depth"][0], cols + 1.0), v
        assert np.array_equal(sq["cost"][2, 5], cols.astype(np.float16))
        for a in (sq["ref"][0], sq["stack"][0, 0]):
            assert np.abs(a[5] / 255 - cols / 64).max() < 1 / 255 + 1e-6
    assert whole["ref"].shape == (3, 32, 64)  # the prepared scene is not modified
    centre = prepare_scene(img, stack, depth, size=32, max_frames=3)
    assert np.array_equal(crop_scene(whole, 0.5, 0.5)["depth"], centre["depth"])
    assert crop_scene(centre, 0.0, 1.0) is centre  # centre-cropped scenes are left as they are
    for conv in ("metric", "normalized"):  # K as for the centre crop (the crop keeps the px scale)
        s = Stack(frames=stack.frames, K=stack.K, disp_focus=0.5, K_convention=conv)
        a = prepare_scene(img, s, depth, size=32, max_frames=3, crop="random")["K"]
        assert a.tolist() == prepare_scene(img, s, depth, size=32, max_frames=3)["K"].tolist()


def test_epoch_sampler_crops_do_not_change_the_order_or_the_flips():
    """Runs documented before --crop keep their data order: the crop positions are drawn after it."""
    from bokehdepth.train.stage2 import _EpochSampler

    sampler = _EpochSampler(7, seed=5)
    sampler.set_epoch(3)
    keys = list(sampler)
    g = torch.Generator().manual_seed((5 << 32) | 3)
    assert [k[0] for k in keys] == torch.randperm(7, generator=g).tolist()
    assert [k[1] for k in keys] == (torch.rand(7, generator=g) < 0.5).tolist()
    assert all(0 <= u < 1 and 0 <= v < 1 for _, _, u, v in keys)
    assert list(sampler) == keys  # from (seed, epoch) alone
    sampler.set_epoch(4)
    assert [k[2:] for k in sampler] != [k[2:] for k in keys]


def test_cached_cost_volume_of_a_whole_frame_matches_the_crops_own(tmp_path):
    """Cost volumes are cached over the whole resized frame and cut with it: inside the crop they equal the
    volume computed on the crop, for normalised K too (which refers to the crop's width)."""
    import numpy as np
    from helpers_stage2 import _box_blur

    from bokehdepth.io import Stack
    from bokehdepth.models.compact_depth import CompactDepthConfig, CompactDepthModel
    from bokehdepth.train.stage2 import cache_cost_volumes, collate, compact_k_input, crop_scene, prepare_scene

    model = CompactDepthModel(CompactDepthConfig(**{**json.loads(TINY_COMPACT), "cost_bins": 6}))
    rng = np.random.default_rng(1)
    img = rng.random((32, 64, 3)).astype(np.float32)
    depth = np.full((32, 64), 2.0, np.float32)
    for conv, K in (("metric", 2.0), ("normalized", 16.0)):  # both ≤ 4 px of blur at the largest candidate
        stack = Stack(frames=[img, _box_blur(img, 2)], K=[0.0, K], disp_focus=1.0, K_convention=conv)
        whole = prepare_scene(img, stack, depth, size=32, max_frames=3, crop="random")
        cache_cost_volumes(model, [whole])
        cut = crop_scene(whole, 0.0, 0.6)
        del cut["cost"]
        b = collate([cut])
        with torch.no_grad():
            own = model.cost_volume(b.ref, b.stack, compact_k_input(b, model.cfg), gamma=b.gamma)[0]
        cached = torch.from_numpy(crop_scene(whole, 0.0, 0.6)["cost"]).float()
        inner = (slice(None), slice(8, -8), slice(8, -8))  # farther from the borders than blur + window
        assert torch.allclose(cached[inner], own[inner], rtol=2e-2, atol=1e-4), conv


@pytest.fixture(scope="module")
def wide_manifest(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("s2wide"), 6, size=32, width=48)


def test_random_crop_run_resumes_exactly_and_is_recorded(wide_manifest, tmp_path, monkeypatch, capsys):
    """--crop random on 32×48 scenes: an interrupted and resumed run equals the uninterrupted one (the crops
    come from (seed, epoch)); it differs from the centre-crop run; --crop is checked on resume."""
    from safetensors.torch import load_file

    cfg = json.dumps({**json.loads(TINY_COMPACT), "cost_bins": 4})
    common = ["--config", cfg, "--batch-size", 1, "--save-every", 2, "--steps", 5, "--crop", "random"]
    full, cut, centre = tmp_path / "full", tmp_path / "cut", tmp_path / "centre"
    assert _train(wide_manifest, full, *common) == 0
    assert json.loads((full / "last" / "state.json").read_text())["settings"]["crop"] == "random"
    assert _train_killed_in_step(4, monkeypatch, wide_manifest, cut, *common) == 130
    capsys.readouterr()
    assert _train(wide_manifest, cut, *common[:-2], "--resume") == 2  # --crop left out: center, refused
    err = _one_error_line(capsys)
    assert err.startswith("error: --crop center differs from the checkpoint's random") and "pass --crop random" in err
    assert _train(wide_manifest, cut, *common, "--resume") == 0
    assert [r["loss"] for r in _log(cut)] == pytest.approx([r["loss"] for r in _log(full)], abs=1e-5)
    wa, wb = load_file(str(full / "compact_depth.safetensors")), load_file(str(cut / "compact_depth.safetensors"))
    assert max((wa[k] - wb[k]).abs().max().item() for k in wa) < 1e-5
    assert _train(wide_manifest, centre, *common[:-2]) == 0
    assert [r["loss"] for r in _log(centre)] != pytest.approx([r["loss"] for r in _log(full)], abs=1e-5)


def test_plain_index_gives_the_centre_square_for_any_free_space():
    from bokehdepth.io import Stack
    from bokehdepth.train.stage2 import _SceneSet, crop_scene, prepare_scene

    img, stack, depth = _columns_scene(width=41, height=30)  # 11 free columns: centre left edge 5
    stack = Stack(frames=stack.frames, K=stack.K, disp_focus=0.5)
    whole = prepare_scene(img, stack, depth, size=30, max_frames=3, crop="random")
    centre = prepare_scene(img, stack, depth, size=30, max_frames=3)
    assert centre["depth"][0, 0] == 6.0  # column 5 (depth = column + 1)
    for got in (_SceneSet([whole])[0]["depth"], crop_scene(whole)["depth"]):
        assert got.shape == (30, 30) and (got == centre["depth"]).all()
