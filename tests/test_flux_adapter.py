"""The shared FLUX bokeh adapter: processor maths against independent computations on a tiny transformer."""

from __future__ import annotations

import inspect

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import random_adapter, tiny_transformer, torch_single_thread  # noqa: E402,F401

from bokehdepth.errors import InputError  # noqa: E402
from bokehdepth.models.flux_adapter import (  # noqa: E402
    BokehAttnProcessor,
    FluxAdapterConfig,
    FluxBokehAdapter,
    LoRALinear,
    grounded_swap,
)

B, S, T = 2, 16, 8


def _inputs(seed: int = 1) -> dict:
    g = torch.Generator().manual_seed(seed)
    img_ids = torch.zeros(S, 3)
    img_ids[:, 1], img_ids[:, 2] = torch.arange(S) // 4, torch.arange(S) % 4
    return dict(
        hidden_states=torch.randn(B, S, 64, generator=g),
        encoder_hidden_states=torch.randn(B, T, 32, generator=g),
        pooled_projections=torch.randn(B, 32, generator=g),
        timestep=torch.tensor([0.5, 0.7]),
        img_ids=img_ids,
        txt_ids=torch.zeros(T, 3),
        guidance=torch.tensor([3.0, 3.0]),
        return_dict=False,
    )


def _zero_ups(adapter: FluxBokehAdapter, names: tuple[str, ...] = ("to_q_adp", "to_k_adp", "to_k_dof", "to_v_dof")):
    with torch.no_grad():
        for proc in adapter.adapter_modules:
            for name in names:
                if hasattr(proc, name):
                    getattr(proc, name).up.weight.zero_()


@pytest.fixture(scope="module")
def transformer():
    return tiny_transformer().eval()


def test_processor_signature_names_the_adapter_kwargs():
    # diffusers drops joint_attention_kwargs that are not named parameters of the processor's __call__
    params = inspect.signature(BokehAttnProcessor(32, 8, 2).__call__).parameters
    assert {"bokeh_embeds", "perform_swap", "batch_swap_ids"} <= set(params)


def test_published_parameter_count():
    from bokehdepth.models.flux_adapter import lora_param_count
    from bokehdepth.models.kontext_adapter import kontext_adapter_config

    assert lora_param_count(kontext_adapter_config(), 57) == 145_736_576  # keys/README.md


def test_lora_init_is_zero_map_and_scale():
    lora = LoRALinear(12, 20, rank=4, alpha=8.0)
    assert torch.count_nonzero(lora.up.weight) == 0 and torch.count_nonzero(lora.down.weight) > 0
    assert torch.equal(lora(torch.randn(3, 12)), torch.zeros(3, 20))
    with torch.no_grad():
        lora.up.weight.normal_()
    x = torch.randn(3, 12)
    assert torch.allclose(lora(x), 2.0 * x @ lora.down.weight.T @ lora.up.weight.T, atol=1e-5)


def test_zero_up_weights_reproduce_stock_output_exactly(transformer):
    inp = _inputs()
    with torch.no_grad():
        stock = transformer(**inp)[0]
        adapter = random_adapter(transformer, "dof")
        _zero_ups(adapter)
        with adapter.installed(transformer):
            kwargs = adapter.attention_kwargs(adapter.embed([0.2, 0.9]))
            adapted = transformer(**inp, joint_attention_kwargs=kwargs)[0]
    assert torch.equal(adapted, stock)


def test_install_remove_restores_stock(transformer):
    inp = _inputs(2)
    stock_procs = dict(transformer.attn_processors)
    stock_keys = list(transformer.state_dict())
    with torch.no_grad():
        stock = transformer(**inp)[0]
        adapter = random_adapter(transformer, "bokeh", seed=5)
        adapter.install(transformer)
        # as in the reference, processors become submodules: 8 LoRA tensors per attention module
        assert len(transformer.state_dict()) == len(stock_keys) + 8 * 2
        changed = transformer(**inp, joint_attention_kwargs=adapter.attention_kwargs(adapter.embed([0.1, 0.5])))[0]
        with pytest.raises(InputError):
            adapter.install(transformer)
        adapter.remove(transformer)
        restored = transformer(**inp)[0]
    assert not torch.allclose(changed, stock)
    assert torch.equal(restored, stock)
    assert list(transformer.state_dict()) == stock_keys
    assert all(transformer.attn_processors[k] is v for k, v in stock_procs.items())


def test_level_changes_output(transformer):
    inp = _inputs(3)
    adapter = random_adapter(transformer, "dof", seed=7)
    with torch.no_grad(), adapter.installed(transformer):
        a = transformer(**inp, joint_attention_kwargs=adapter.attention_kwargs(adapter.embed([0.1, 0.5])))[0]
        b = transformer(**inp, joint_attention_kwargs=adapter.attention_kwargs(adapter.embed([0.9, 0.5])))[0]
    assert (a[0] - b[0]).abs().max() > 1e-4  # sample 0's level changed
    assert torch.equal(a[1], b[1])  # sample 1's did not: the bokeh token is per sample


@pytest.mark.parametrize("block", ["double", "single"])
def test_single_bokeh_token_adds_to_v_projection(transformer, block):
    """softmax over one key is 1, so SDPA(Q, to_k(e), to_v(e)) = to_v(e) for every query (reference §5)."""
    attn = (
        transformer.transformer_blocks[0].attn if block == "double" else transformer.single_transformer_blocks[0].attn
    )
    adapter = random_adapter(transformer, "bokeh", seed=11)
    _zero_ups(adapter, ("to_q_adp", "to_k_adp"))
    index = 0 if block == "double" else 1
    proc = adapter.adapter_modules[index]
    g = torch.Generator().manual_seed(4)
    hidden = torch.randn(B, S + (0 if block == "double" else T), 32, generator=g)
    enc = torch.randn(B, T, 32, generator=g) if block == "double" else None
    rope = transformer.pos_embed(torch.randn(T + S, 3, generator=g))
    e = torch.randn(B, 1, 24, generator=g)
    with torch.no_grad():
        stock = attn.processor(attn, hidden, enc, None, rope)
        out = proc(attn, hidden, enc, None, rope, bokeh_embeds=e)
        # independent: v_b = e·down^T·up^T (rank 4), broadcast to every token
        v_b = e @ proc.to_v_bokeh.down.weight.T @ proc.to_v_bokeh.up.weight.T
    if block == "double":
        assert torch.allclose(out[0], stock[0] + v_b @ attn.to_out[0].weight.T, atol=1e-5)
        assert torch.allclose(out[1], stock[1] + v_b @ attn.to_add_out.weight.T, atol=1e-5)
    else:
        assert torch.allclose(out, stock + v_b, atol=1e-5)


def test_grounded_swap_matches_independent_attention(transformer):
    """Target row = Attn(Q_pivot, [K_t; K_p], [V_t; V_t]); pivot row = Attn(Q_p, K_p, V_p) (reference §6.3)."""
    g = torch.Generator().manual_seed(8)
    q, k, v = (torch.randn(2, 6, 2, 4, generator=g) for _ in range(3))
    qs, ks, vs = grounded_swap(q, k, v, [1, 1])
    out = torch.nn.functional.scaled_dot_product_attention(qs.transpose(1, 2), ks.transpose(1, 2), vs.transpose(1, 2))
    out = out.transpose(1, 2)

    def attn(qq, kk, vv):
        w = torch.softmax(torch.einsum("shd,thd->hst", qq, kk) / 2.0, dim=-1)  # head_dim 4 → scale 1/2
        return torch.einsum("hst,thd->shd", w, vv)

    assert torch.allclose(out[0], attn(q[1], torch.cat([k[0], k[1]]), torch.cat([v[0], v[0]])), atol=1e-5)
    assert torch.allclose(out[1], attn(q[1], k[1], v[1]), atol=1e-5)
    # without key grounding (unfreeze_k off) only the queries are swapped
    q2, k2, v2 = grounded_swap(q, k, v, [1, 1], swap_keys=False)
    assert torch.equal(q2[0], q[1]) and torch.equal(k2, k) and torch.equal(v2, v)
    with pytest.raises(InputError):
        grounded_swap(q, k, v, [1])


def test_grounded_pivot_is_independent_of_the_target(transformer):
    adapter = random_adapter(transformer, "bokeh", seed=13)
    inp = _inputs(4)
    other = dict(inp)
    other["hidden_states"] = inp["hidden_states"].clone()
    other["hidden_states"][0] = torch.randn(S, 64)  # a different target latent
    with torch.no_grad(), adapter.installed(transformer):
        ground = adapter.attention_kwargs(adapter.embed([0.0, 0.5]), True, [1, 1])
        a = transformer(**inp, joint_attention_kwargs=ground)[0]
        ground_b = adapter.attention_kwargs(adapter.embed([1.0, 0.5]), True, [1, 1])
        b = transformer(**other, joint_attention_kwargs=ground_b)[0]
        plain = transformer(**inp, joint_attention_kwargs=adapter.attention_kwargs(adapter.embed([0.0, 0.5])))[0]
    assert torch.allclose(a[1], b[1], atol=1e-6)  # pivot unchanged by the target's level and latent
    assert torch.allclose(a[1], plain[1], atol=1e-5)  # and equals an ordinary (ungrounded) pivot pass
    assert (a[0] - plain[0]).abs().max() > 1e-3  # the target is grounded


def test_adapter_rejects_foreign_transformer(transformer):
    from bokehdepth.errors import CheckpointError

    with pytest.raises(CheckpointError, match="width"):
        FluxBokehAdapter.for_transformer(transformer, FluxAdapterConfig(attn_dim=3072))
    with pytest.raises(CheckpointError, match="not blocks"):
        FluxBokehAdapter.for_transformer(transformer, FluxAdapterConfig(attn_dim=32, blocks=["transformer_blocks.7"]))


def test_block_subset_adapts_only_listed_blocks(transformer):
    cfg = FluxAdapterConfig(attn_dim=32, context_dim=8, rank=2, blocks=["single_transformer_blocks.0"])
    adapter = FluxBokehAdapter.for_transformer(transformer, cfg)
    keys = list(adapter.state_dict())
    assert not any(k.startswith("adapter_modules.0.") for k in keys)
    assert any(k.startswith("adapter_modules.1.to_v_bokeh") for k in keys)


def test_gradient_checkpointing_gives_equal_outputs_and_grads():
    tr = tiny_transformer(seed=2)
    tr.requires_grad_(False)
    adapter = random_adapter(tr, "bokeh", seed=17)
    inp = _inputs(6)
    results = []
    with adapter.installed(tr):
        for checkpointing in (False, True):
            if checkpointing:
                tr.enable_gradient_checkpointing()
            adapter.zero_grad(set_to_none=True)
            out = tr(**inp, joint_attention_kwargs=adapter.attention_kwargs(adapter.embed([0.3, 0.8])))[0]
            out.square().mean().backward()
            grads = [p.grad.clone() for p in adapter.parameters()]
            results.append((out.detach(), grads))
    (o1, g1), (o2, g2) = results
    assert torch.allclose(o1, o2, atol=1e-6)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(g1, g2))
    assert any(a.abs().sum() > 0 for a in g1)  # the adapter receives gradients through the transformer
