"""UniDepthV2-DSFA checkpoints: published keys (meta device) = the reference list, the reference loader's
nesting/``module.``/EMA rules, strict-load errors, plain UniDepthV2 weights, and the ``weights`` CLI."""

from __future__ import annotations

import pytest
import torch
from helpers_unidepth import one_thread, reference_rows, save_checkpoint, tiny_inputs, tiny_model

from bokehdepth.cli import main
from bokehdepth.errors import CheckpointError, MissingWeightsError
from bokehdepth.models.checkpoints import compare_keys, load_strict
from bokehdepth.models.unidepth import (
    UniDepthConfig,
    load_model,
    load_predictor,
    published_keys,
    unwrap_checkpoint,
    unwrap_state_dict,
)

_single_thread = pytest.fixture(scope="module", autouse=True)(one_thread)


@pytest.fixture(scope="module")
def full_keys() -> dict[str, tuple[int, ...]]:
    return published_keys("udv2-dsfa")


def test_published_keys_equal_reference_list(full_keys):
    rows = reference_rows()
    assert len(rows) == 656
    assert list(full_keys.items()) == rows  # names, shapes and order
    assert sum(torch.Size(s).numel() for s in full_keys.values()) == 464_068_739


def test_cli_weights_keys_prints_reference_list(capsys):
    rows = reference_rows()
    assert main(["weights", "keys", "udv2-dsfa"]) == 0
    out = capsys.readouterr().out.splitlines()
    tsv_cols = [f"{k}\t{list(s)}" for k, s in rows]
    assert out == tsv_cols


def _expanded_checkpoint(keys: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    """A full-layout state dict whose tensors share one element (tiny on disk, exact shapes)."""
    one = torch.zeros(1)
    return {k: one.expand(*s) if s else one.reshape(()) for k, s in keys.items()}


def test_cli_weights_check_full_layout(tmp_path, capsys, full_keys):
    good = save_checkpoint(
        tmp_path / "good.pth", {"model": {"module." + k: v for k, v in _expanded_checkpoint(full_keys).items()}}
    )
    assert main(["weights", "check", "udv2-dsfa", str(good)]) == 0
    assert "ok\t656 keys match udv2-dsfa" in capsys.readouterr().out
    sd = _expanded_checkpoint(full_keys)
    del sd["pixel_encoder.fusion_blocks.2.focus_film.weight"]
    sd["pixel_decoder.extra.weight"] = torch.zeros(1)
    sd["pixel_decoder.depth_layer.to_latents.bias"] = torch.zeros(3)
    bad = save_checkpoint(tmp_path / "bad.pth", sd)
    assert main(["weights", "check", "udv2-dsfa", str(bad)]) == 2
    cap = capsys.readouterr()
    assert "missing\tpixel_encoder.fusion_blocks.2.focus_film.weight" in cap.out
    assert "unexpected\tpixel_decoder.extra.weight" in cap.out
    assert "mis-shaped\tpixel_decoder.depth_layer.to_latents.bias\texpected [512]\tfound [3]" in cap.out
    assert cap.err.startswith("error:") and "bad.pth" in cap.err


def test_unwrap_checkpoint_list_ema_uses_published_order(full_keys):
    shadow = list(_expanded_checkpoint(full_keys).values())
    shadow = [t + 1.0 if i == 5 else t for i, t in enumerate(shadow)]  # mark one entry
    state = unwrap_checkpoint("udv2-dsfa", {"model": {}, "ema": {"shadow_params": shadow, "decay": 0.999}})
    assert list(state) == list(full_keys)
    assert compare_keys(state, full_keys).ok
    assert float(state[list(full_keys)[5]].flatten()[0]) == 1.0


def test_upstream_layout_moves_under_backbone(full_keys):
    up = {k.replace("pixel_encoder.backbone.", "pixel_encoder."): v for k, v in _expanded_checkpoint(full_keys).items()}
    state = unwrap_checkpoint("udv2-dsfa", up)
    assert compare_keys(state, full_keys).ok


# -- tiny model: loading semantics ------------------------------------------------------------------------


def _sd(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _equal_weights(model, sd) -> bool:
    return all(torch.equal(model.state_dict()[k], v) for k, v in sd.items())


def test_module_prefix_and_nesting_removed(tmp_path):
    src = tiny_model(seed=1)
    sd = _sd(src)
    order = list(sd)
    for raw in (sd, {"model": sd}, {"state_dict": sd}, {"model": {"module." + k: v for k, v in sd.items()}}):
        state = unwrap_state_dict(raw, order)
        assert list(state) == order and all(torch.equal(state[k], sd[k]) for k in order)
    path = save_checkpoint(tmp_path / "ck.pth", {"model": {"module." + k: v for k, v in sd.items()}, "step": 3})
    model, info = load_model(path, UniDepthConfig.tiny())
    assert info["dsfa"] == "trained" and _equal_weights(model, sd)
    image, stack, k = tiny_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(image, stack, k)["depth"], src(image, stack, k)["depth"])


def test_ema_overlay_list_and_dict(tmp_path):
    a, b = _sd(tiny_model(seed=1)), _sd(tiny_model(seed=2))
    cfg = UniDepthConfig.tiny()
    # list: positional against the model's key order (training saves model.parameters() order)
    path = save_checkpoint(tmp_path / "l.pth", {"model": a, "ema": {"shadow_params": list(b.values())}})
    assert _equal_weights(load_model(path, cfg)[0], b)
    # list of the wrong length: ignored, like the reference
    path = save_checkpoint(tmp_path / "s.pth", {"model": a, "ema": {"shadow_params": list(b.values())[:-1]}})
    assert _equal_weights(load_model(path, cfg)[0], a)
    # dict by name (with module. prefixes), under ema_state_dict / average_params, partial overlay
    part = {"module." + k: v for k, v in b.items() if k.startswith("pixel_decoder.")}
    path = save_checkpoint(tmp_path / "d.pth", {"model": a, "ema_state_dict": {"average_params": part}})
    model = load_model(path, cfg)[0]
    expect = {k: (b[k] if k.startswith("pixel_decoder.") else a[k]) for k in a}
    assert _equal_weights(model, expect)


def test_strict_errors_name_the_keys(tmp_path):
    sd = _sd(tiny_model(seed=1))
    cfg = UniDepthConfig.tiny()
    missing = dict(sd)
    del missing["pixel_decoder.camera_layer.latents_pos"]
    with pytest.raises(CheckpointError, match=r"1 missing: pixel_decoder\.camera_layer\.latents_pos"):
        load_model(save_checkpoint(tmp_path / "m.pth", missing), cfg)
    extra = dict(sd, **{"pixel_encoder.backbone.head.weight": torch.zeros(2)})
    with pytest.raises(CheckpointError, match=r"1 unexpected: pixel_encoder\.backbone\.head\.weight"):
        load_model(save_checkpoint(tmp_path / "u.pth", extra), cfg)
    shaped = dict(sd, **{"pixel_decoder.level_embeds": torch.zeros(1, 1, 4, 7)})
    with pytest.raises(
        CheckpointError, match=r"mis-shaped: pixel_decoder\.level_embeds expected \[1, 1, 4, 32\] found \[1, 1, 4, 7\]"
    ):
        load_model(save_checkpoint(tmp_path / "s.pth", shaped), cfg)
    # some DSFA keys present but not all: not "plain" weights, so strict fails
    partial = {k: v for k, v in sd.items() if not k.startswith("pixel_encoder.fusion_blocks.3.")}
    with pytest.raises(CheckpointError, match=r"missing: pixel_encoder\.fusion_blocks\.3\."):
        load_model(save_checkpoint(tmp_path / "p.pth", partial), cfg)
    with pytest.raises(CheckpointError, match="p.pth"):
        load_strict(tiny_model(), partial, tmp_path / "p.pth")


def test_plain_unidepth_weights_load_with_identity_dsfa(tmp_path):
    src = tiny_model(seed=3)
    plain = {
        k.replace("pixel_encoder.backbone.", "pixel_encoder."): v
        for k, v in _sd(src).items()
        if not k.startswith("pixel_encoder.fusion_blocks.")
    }
    model, info = load_model(save_checkpoint(tmp_path / "plain.pth", {"model": plain}), UniDepthConfig.tiny())
    assert info["dsfa"] == "identity"
    image, stack, k = tiny_inputs()
    with torch.no_grad():
        ref = src(image)["depth"]
        torch.testing.assert_close(model(image)["depth"], ref)
        torch.testing.assert_close(model(image, stack, k)["depth"], ref, rtol=1e-5, atol=1e-5)


def test_missing_weights_error(tmp_path, monkeypatch):
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    with pytest.raises(MissingWeightsError, match="UDv2_dsfa_release.pth.*fogradio/BokehDepth"):
        load_predictor("udv2-dsfa", tmp_path)
    with pytest.raises(MissingWeightsError):
        load_predictor("udv2-dsfa", None)


def test_corrupt_file_is_checkpoint_error(tmp_path):
    bad = tmp_path / "UDv2_dsfa_release.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="UDv2_dsfa_release.pth"):
        load_model(tmp_path, UniDepthConfig.tiny())


def test_load_predictor_tiny_end_to_end(tmp_path):
    sd = _sd(tiny_model(seed=4))
    path = save_checkpoint(tmp_path / "UDv2_dsfa_release.pth", {"model": sd})
    pred = load_predictor("udv2-dsfa", tmp_path, cfg=UniDepthConfig.tiny())
    import numpy as np

    res = pred.predict(np.full((28, 42, 3), 0.5, np.float32), None)
    assert res.depth.shape == (28, 42) and np.isfinite(res.depth).all()
    assert res.info["weights"] == str(path)


def test_not_a_state_dict_names_the_file(tmp_path):
    path = save_checkpoint(tmp_path / "list.pth", [torch.zeros(2)])
    with pytest.raises(CheckpointError, match=r"list\.pth: checkpoint holds a list"):
        load_model(path, UniDepthConfig.tiny())
