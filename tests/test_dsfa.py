"""DSFA block: published key layout, maths against an independent naive implementation, identity init,
frame-order behaviour, gradients."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from bokehdepth.models.dsfa import DividedSpaceFocusBlock, DSFAConfig, fuse_frame_features

KEYS_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference" / "keys"


def _read_tsv(name: str) -> list[tuple[str, tuple[int, ...]]]:
    if not KEYS_DIR.is_dir():
        pytest.skip(f"reference key lists not found at {KEYS_DIR}")
    rows = []
    for line in (KEYS_DIR / name).read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        key, shape, _ = line.split("\t")
        rows.append((key, tuple(json.loads(shape))))
    return rows


@pytest.mark.parametrize(
    ("tsv", "prefix", "dim", "sequential"),
    [
        ("dav2_dsfa_vits.tsv", "encoder_fusion.layers.2.block.", 384, True),
        ("dav2_dsfa_vitb.tsv", "encoder_fusion.layers.3.block.", 768, True),
        ("dav2_dsfa_vitl.tsv", "encoder_fusion.layers.2.block.", 1024, True),
        ("udv2_dsfa_vitl14.tsv", "pixel_encoder.fusion_blocks.1.", 1024, False),
    ],
)
def test_block_keys_match_reference(tsv, prefix, dim, sequential):
    expected = [(k[len(prefix) :], s) for k, s in _read_tsv(tsv) if k.startswith(prefix)]
    assert len(expected) == 34
    with torch.device("meta"):
        block = DividedSpaceFocusBlock(DSFAConfig(dim, film_sequential=sequential))
    got = [(k, tuple(v.shape)) for k, v in block.state_dict().items()]
    assert got == expected


def _naive_block(block: DividedSpaceFocusBlock, ref, stack, k_stack) -> torch.Tensor:
    """Direct transcription of reference §4 with explicit softmax, every query, then frame 0."""
    cfg = block.cfg
    b, p, d = ref.shape
    x = torch.cat([ref[:, None], stack], 1)
    nf = x.shape[1]
    k = torch.cat([torch.zeros(b, 1), k_stack.reshape(b, -1)], 1)
    kt = block.k_embed(k[..., None])
    film = block.focus_film(kt)
    scale, shift = film[..., :d], film[..., d:]

    def msa(attn, t, bias, logit_scale):
        q, kk, v = attn.qkv(t).split(d, -1)
        h = attn.num_heads
        hd = d // h
        q, kk, v = (z.reshape(t.shape[0], t.shape[1], h, hd).permute(0, 2, 1, 3) for z in (q, kk, v))
        logits = q @ kk.transpose(-1, -2) * logit_scale
        if bias is not None:
            logits = logits + bias
        out = logits.softmax(-1) @ v
        return attn.out_proj(out.permute(0, 2, 1, 3).reshape(t.shape[0], t.shape[1], d))

    hd = d // cfg.num_heads
    seq = torch.cat([kt[:, :, None], x], 2).reshape(b * nf, p + 1, d)
    sp_scale = 1.0 / hd if cfg.spatial_sdpa else 1.0 / math.sqrt(hd)
    seq = seq + block.gamma_space_attn * msa(block.space_attn, block.ln_space_attn(seq), None, sp_scale)
    seq = seq + block.gamma_space_ffn * block.space_ffn.fc2(F.gelu(block.space_ffn.fc1(block.ln_space_ffn(seq))))
    x = seq[:, 1:].reshape(b, nf, p, d)
    x = x * (1 + torch.tanh(scale[:, :, None])) + shift[:, :, None]
    xf = x.permute(0, 2, 1, 3).reshape(b * p, nf, d)
    bias = -cfg.alibi_scale * (k[:, :, None] - k[:, None, :]).abs()  # [B, F, F]
    bias = bias[:, None].expand(b, p, nf, nf).reshape(b * p, 1, nf, nf)
    xf = xf + block.gamma_focus_attn * msa(block.focus_attn, block.ln_focus_attn(xf), bias, 1.0 / math.sqrt(hd))
    xf = xf + block.gamma_focus_ffn * block.focus_ffn.fc2(F.gelu(block.focus_ffn.fc1(block.ln_focus_ffn(xf))))
    return xf.reshape(b, p, nf, d)[:, :, 0]


def _randomise(block: DividedSpaceFocusBlock, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in block.parameters():
            prm.copy_(torch.randn(prm.shape, generator=g) * 0.3)


@pytest.mark.parametrize("spatial_sdpa", [True, False])
def test_block_matches_naive_transcription(spatial_sdpa):
    torch.manual_seed(0)
    block = DividedSpaceFocusBlock(DSFAConfig(32, num_heads=4, alibi_scale=0.1, spatial_sdpa=spatial_sdpa))
    _randomise(block)
    ref, stack = torch.randn(2, 5, 32), torch.randn(2, 3, 5, 32)
    k = torch.tensor([[10.0, 20.0, 30.0], [3.0, 7.0, 1.0]])
    out = block(ref, stack, k)
    assert out.shape == (2, 5, 32)
    torch.testing.assert_close(out, _naive_block(block, ref, stack, k), atol=1e-5, rtol=1e-5)
    # [B, N, 1] K and a plain list are the same input
    torch.testing.assert_close(block(ref, stack, k[..., None]), out)


def test_scale_quirk_changes_the_spatial_branch():
    block = DividedSpaceFocusBlock(DSFAConfig(32, num_heads=4))
    _randomise(block, 1)
    ref, stack, k = torch.randn(1, 4, 32), torch.randn(1, 2, 4, 32), torch.tensor([[5.0, 9.0]])
    a = block(ref, stack, k)
    block.cfg.spatial_sdpa = False
    assert not torch.allclose(a, block(ref, stack, k), atol=1e-4)


def test_published_init_values():
    block = DividedSpaceFocusBlock(DSFAConfig(64))
    for name in ("gamma_space_attn", "gamma_space_ffn", "gamma_focus_attn", "gamma_focus_ffn"):
        assert torch.all(getattr(block, name) == 0.1)
    assert block.focus_film.weight.abs().sum() > 0  # default Linear init, not zero
    ref = torch.randn(1, 6, 64)
    assert not torch.allclose(block(ref, torch.randn(1, 2, 6, 64), torch.tensor([[10.0, 20.0]])), ref)


def test_identity_init_is_exact_identity():
    block = DividedSpaceFocusBlock(DSFAConfig(48, num_heads=4, identity_init=True, film_sequential=True))
    ref = torch.randn(2, 7, 48)
    out = block(ref, torch.randn(2, 3, 7, 48), torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]))
    assert torch.equal(out, ref)


def test_permuting_stack_frames_with_their_K_leaves_reference_unchanged():
    block = DividedSpaceFocusBlock(DSFAConfig(32, num_heads=4, alibi_scale=0.05))
    _randomise(block, 2)
    ref, stack = torch.randn(1, 6, 32), torch.randn(1, 4, 6, 32)
    k = torch.tensor([[2.0, 11.0, 17.0, 29.0]])
    perm = torch.tensor([2, 0, 3, 1])
    torch.testing.assert_close(block(ref, stack, k), block(ref, stack[:, perm], k[:, perm]), atol=1e-5, rtol=1e-5)
    # but K is bound to its frame: permuting frames alone changes the output
    assert not torch.allclose(block(ref, stack, k), block(ref, stack[:, perm], k), atol=1e-4)


def test_none_K_means_zero():
    block = DividedSpaceFocusBlock(DSFAConfig(32, num_heads=4))
    ref, stack = torch.randn(1, 3, 32), torch.randn(1, 2, 3, 32)
    torch.testing.assert_close(block(ref, stack, None), block(ref, stack, torch.zeros(1, 2)))


def test_backward_reaches_every_parameter():
    block = DividedSpaceFocusBlock(DSFAConfig(32, num_heads=4))
    block(torch.randn(2, 4, 32), torch.randn(2, 2, 4, 32), torch.tensor([[1.0, 3.0], [2.0, 8.0]])).sum().backward()
    for name, prm in block.named_parameters():
        assert prm.grad is not None and prm.grad.abs().sum() > 0, name


def test_fuse_frame_features_passes_cls_and_untapped_layers():
    block = DividedSpaceFocusBlock(DSFAConfig(16, num_heads=2))
    b, nf, t, d = 2, 3, 5, 16
    feats = [torch.randn(b * nf, t, d) for _ in range(3)]
    k = torch.tensor([[10.0, 20.0], [5.0, 6.0]])
    out = fuse_frame_features(feats, {2: block}, nf, k)
    ref = [f.reshape(b, nf, t, d)[:, 0] for f in feats]
    torch.testing.assert_close(out[0], ref[0])
    torch.testing.assert_close(out[2][:, :1], ref[2][:, :1])  # CLS passes through
    expected = block(ref[2][:, 1:], feats[2].reshape(b, nf, t, d)[:, 1:, 1:], k)
    torch.testing.assert_close(out[2][:, 1:], expected)
    bypass = fuse_frame_features(feats, {2: block}, nf, k, single_frame=True)
    torch.testing.assert_close(bypass[2], ref[2])


@pytest.mark.parametrize("bias_shape", [None, (6, 1, 1, 4), (6, 2, 1, 4)])
def test_first_query_attention_is_the_same_function(bias_shape):
    # the focus branch's regrouped attention (keys/values never projected) against the plain one
    from bokehdepth.models.dsfa import DSFAAttention

    torch.manual_seed(1)
    attn = DSFAAttention(16, 2)
    with torch.no_grad():
        attn.qkv.bias.normal_()  # nonzero key bias: it must cancel in the softmax
    x = torch.randn(6, 4, 16, requires_grad=True)
    bias = None if bias_shape is None else -torch.rand(bias_shape) * 3
    fast = attn.forward_first_query(x, bias)
    slow = attn(x, bias=bias, num_queries=1)
    torch.testing.assert_close(fast, slow, atol=1e-6, rtol=1e-5)
    (g_fast,) = torch.autograd.grad(fast.square().sum(), x)
    (g_slow,) = torch.autograd.grad(slow.square().sum(), x)
    torch.testing.assert_close(g_fast, g_slow, atol=1e-5, rtol=1e-4)
