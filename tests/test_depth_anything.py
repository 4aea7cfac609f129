"""Depth Anything V2 + DSFA on transformers: published key layout, key mapping round trips, strict loads,
identity DSFA, post-hoc fusion semantics, preprocessing sizes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from bokehdepth.errors import CheckpointError  # noqa: E402
from bokehdepth.models import depth_anything as da  # noqa: E402

KEYS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "keys"
TINY = dict(
    hidden_size=32,
    num_hidden_layers=4,
    num_attention_heads=2,
    out_indices=[1, 2, 3, 4],
    initializer_range=0.1,
    neck_hidden_sizes=[8, 16, 32, 32],
    fusion_hidden_size=16,
    dsfa_heads=2,
)


def tiny(**kw) -> da.DepthAnythingDSFA:
    torch.manual_seed(kw.pop("seed", 0))
    return da.build_model("dav2-dsfa-s", max_depth=20, **{**TINY, **kw}).eval()


def _read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    if not KEYS_DIR.is_dir():
        pytest.skip(f"reference key lists not found at {KEYS_DIR}")
    rows = [ln.split("\t") for ln in (KEYS_DIR / name).read_text().splitlines() if ln and not ln.startswith("#")]
    return [(r[0], tuple(json.loads(r[1]))) for r in rows]


@pytest.mark.parametrize("variant", ["s", "b", "l"])
def test_published_keys_equal_reference(variant):
    expected = _read_tsv(f"dav2_dsfa_vit{variant}.tsv")
    assert list(da.published_keys(f"dav2-dsfa-{variant}").items()) == expected


def test_weights_keys_cli_prints_reference(capsys):
    from bokehdepth.cli import main

    expected = _read_tsv("dav2_dsfa_vits.tsv")
    assert main(["weights", "keys", "dav2-dsfa-s"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{k}\t{list(s)}" for k, s in expected]


def _inputs(b=2, n=3, h=56, w=70):
    g = torch.Generator().manual_seed(1)
    return (
        torch.randn(b, 3, h, w, generator=g),
        torch.randn(b, n, 3, h, w, generator=g),
        torch.rand(b, n, generator=g) * 30,
    )


def test_forward_backward_tiny():
    m = tiny().train()
    ref, st, k = _inputs()
    out = m(ref, st, k)
    assert out.shape == (2, 56, 70)
    out.mean().backward()
    for name, p in m.encoder_fusion.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_identity_dsfa_leaves_base_model_unchanged():
    m = tiny(identity_init=True)
    ref, st, k = _inputs()
    with torch.no_grad():
        base = m.model(pixel_values=ref).predicted_depth
        fused = m(ref, st, k)
    assert base.std() > 0  # a non-degenerate random model
    torch.testing.assert_close(fused, base)


def test_published_init_uses_the_stack_and_single_frame_bypasses_it():
    m = tiny()
    ref, st, k = _inputs()
    with torch.no_grad():
        base = m.model(pixel_values=ref).predicted_depth
        fused = m(ref, st, k)
        single = m(ref, st, k, single_frame=True)
    torch.testing.assert_close(single, base)
    assert not torch.allclose(fused, base)


def test_frame_permutation_with_K_leaves_output_unchanged():
    m = tiny()
    ref, st, k = _inputs(b=1, n=3)
    perm = torch.tensor([2, 0, 1])
    with torch.no_grad():
        torch.testing.assert_close(m(ref, st, k), m(ref, st[:, perm], k[:, perm]), atol=1e-4, rtol=1e-4)


def test_refined_tokens_do_not_feed_later_blocks():
    """Post-hoc fusion: DSFA on tap 2 must not change tap 3 (only the head sees both)."""
    m = tiny()
    ref, st, k = _inputs(b=1, n=2)
    seen = []
    orig = m.model.neck.forward
    m.model.neck.forward = lambda feats, ph, pw: (seen.append([f.clone() for f in feats]), orig(feats, ph, pw))[1]
    with torch.no_grad():
        m(ref, st, k)
        del m.encoder_fusion.layers["2"]
        m(ref, st, k)
    torch.testing.assert_close(seen[0][3], seen[1][3])
    assert not torch.allclose(seen[0][2], seen[1][2])


def test_published_round_trip_and_strict_load():
    m = tiny()
    pub = da.to_published_state_dict(m)
    assert next(iter(pub)) == "pretrained.cls_token"
    m2 = tiny(seed=5)
    assert da.load_weights(m2, pub, "ckpt.pth") == "published-dsfa"
    for (k1, v1), (k2, v2) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2), k1
    bad = dict(pub)
    del bad["encoder_fusion.layers.2.block.gamma_space_attn"]
    bad["depth_head.extra.weight"] = torch.zeros(1)
    bad["pretrained.blocks.0.attn.qkv.weight"] = torch.zeros(3, 3)
    with pytest.raises(CheckpointError) as exc:
        da.load_weights(tiny(), bad, "bad.pth")
    msg = str(exc.value)
    assert "bad.pth" in msg and "gamma_space_attn" in msg and "depth_head.extra.weight" in msg
    assert "qkv" in msg


def test_original_dav2_release_loads_with_identity_dsfa():
    base = tiny()
    pub = {k: v for k, v in da.to_published_state_dict(base).items() if not k.startswith("encoder_fusion.")}
    m = tiny(seed=3)
    assert da.load_weights(m, pub, "depth_anything_v2_vits.pth") == "dav2-original"
    ref, st, k = _inputs()
    with torch.no_grad():
        torch.testing.assert_close(m(ref, st, k), base.model(pixel_values=ref).predicted_depth)


def test_transformers_format_loads_old_and_new_attention_names():
    base = tiny()
    hf = {k: v for k, v in base.model.state_dict().items()}
    old = {}
    for k, v in hf.items():
        k = k.replace(".attention.q_proj.", ".attention.attention.query.").replace(
            ".attention.o_proj.", ".attention.output.dense."
        )
        old[k] = v
    for sd in (hf, old):
        m = tiny(seed=4)
        assert da.load_weights(m, dict(sd), "model.safetensors") == "transformers"
        for k, v in base.model.state_dict().items():
            assert torch.equal(m.model.state_dict()[k], v), k


def test_unwrap_checkpoint_as_reference_loader():
    t = torch.zeros(2)
    raw = {"model": {"module.pretrained.cls_token": t, "depth_head.x.module.y": t, "note": "text"}, "epoch": 3}
    sd = da.unwrap_checkpoint("dav2-dsfa-l", raw)
    assert list(sd) == ["pretrained.cls_token", "depth_head.x.module.y"]
    assert list(da.unwrap_checkpoint("dav2-dsfa-l", {"a": t})) == ["a"]


def test_dav2_input_size_matches_reference_example():
    assert da.dav2_input_size(240, 320) == (518, 686)
    assert da.dav2_input_size(512, 512) == (518, 518)
    x = da.preprocess(np.full((1, 20, 30, 3), 0.5, np.float32), (28, 42))
    assert x.shape == (1, 3, 28, 42)
    torch.testing.assert_close(x[0, :, 0, 0], (0.5 - torch.tensor(da.IMAGENET_MEAN)) / torch.tensor(da.IMAGENET_STD))


def test_weights_check_cli_reports_keys(tmp_path, capsys):
    from safetensors.torch import save_file

    from bokehdepth.cli import main

    shapes = da.published_keys("dav2-dsfa-s")
    sd = {k: torch.zeros(s) for k, s in list(shapes.items())[:3]}
    path = tmp_path / "partial.safetensors"
    save_file(sd, str(path))
    assert main(["weights", "check", "dav2-dsfa-s", str(path)]) == 2
    captured = capsys.readouterr()
    assert "missing\tpretrained.patch_embed.proj.weight" in captured.out
    assert captured.err.startswith("error:") and "partial.safetensors" in captured.err


def test_predictor_preprocessing_and_metric_K_conversion():
    from bokehdepth.io import Stack

    model = tiny()
    pred = da.DAv2Predictor("dav2-dsfa-s", model, "w.pth")
    rng = np.random.default_rng(0)
    frames = [rng.random((24, 32, 3)).astype(np.float32) for _ in range(3)]
    metric = Stack(frames=frames, K=[0.0, 2.0, 4.0], disp_focus=0.5)
    res = pred.predict(None, metric)
    assert res.depth.shape == (24, 32) and res.depth.dtype == np.float32
    assert res.info["input_size"] == [518, 686]
    conv = res.info["K_conversion"]
    span = conv["disp_span_estimate"]
    np.testing.assert_allclose(conv["K_normalized"], [2.0 * span * 512 / 32, 4.0 * span * 512 / 32], rtol=1e-6)
    norm = Stack(frames=frames, K=[0.0, 10.0, 20.0], K_convention="normalized")
    res_n = pred.predict(None, norm)
    assert "K_conversion" not in res_n.info
    single = pred.predict(None, norm, single_frame=True).depth
    assert not np.allclose(single, res_n.depth)
