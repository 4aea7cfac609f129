"""BokehDepth Stage-1 Kontext adapter: published key list, strict loading of bokeh_lora.bin, weights CLI."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")

from helpers_flux import random_adapter, reference_keys, tiny_transformer, torch_single_thread  # noqa: E402,F401

from bokehdepth.cli import main  # noqa: E402
from bokehdepth.errors import CheckpointError, MissingWeightsError  # noqa: E402
from bokehdepth.models.kontext_adapter import (  # noqa: E402
    k_to_input,
    load_kontext_adapter,
    published_keys,
    unwrap_checkpoint,
)

TSV = "flux_kontext_bokeh_adapter.tsv"


def test_published_keys_equal_reference_list():
    expected = reference_keys(TSV)
    got = list(published_keys("kontext-adapter").items())
    assert len(got) == len(expected) == 460
    for (k, s), (ek, es) in zip(got, expected):
        assert (k, s) == (ek, es)
    assert sum(int(torch.tensor(s).prod()) for _, s in got) == 145_736_576


def test_weights_keys_cli_prints_reference(capsys):
    expected = reference_keys(TSV)
    assert main(["weights", "keys", "kontext-adapter"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines == [f"{k}\t{list(s)}" for k, s in expected]


def test_k_to_input_clamps_and_scales():
    assert torch.allclose(k_to_input([0.2, 1.0, 15.0, 30.0, 45.0]), torch.tensor([1, 1, 15, 30, 30]) / 30.0)


@pytest.fixture()
def saved(tmp_path):
    tr = tiny_transformer()
    adapter = random_adapter(tr, "dof", seed=3)
    state = {k: v.clone() for k, v in adapter.state_dict().items()}
    return tr, state, tmp_path


@pytest.mark.parametrize("layout", ["flat", "numeric", "safetensors"])
def test_strict_load_round_trips_exactly(saved, layout):
    tr, state, tmp = saved
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp / "bokeh_lora.safetensors"
        save_file(state, str(path))
    else:
        path = tmp / "bokeh_lora.bin"
        out = dict(state)
        if layout == "numeric":  # bare processor keys '<i>.*', which the reference loader also accepts
            out = {k.removeprefix("adapter_modules."): v for k, v in state.items()}
        torch.save(out, path)
    fresh = tiny_transformer(seed=9)
    adapter = load_kontext_adapter(tmp if layout == "flat" else path, fresh)
    assert adapter.is_installed
    loaded = adapter.state_dict()
    assert list(loaded) == list(state)
    assert all(torch.equal(loaded[k], state[k]) for k in state)


def test_module_prefix_fails_loudly(saved):
    tr, state, tmp = saved
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp / "bokeh_lora.bin")
    with pytest.raises(CheckpointError, match="module."):
        load_kontext_adapter(tmp, tiny_transformer())


@pytest.mark.parametrize("fault", ["missing", "unexpected", "shape"])
def test_strict_load_names_the_offending_key(saved, fault):
    tr, state, tmp = saved
    key = "adapter_modules.1.to_v_dof.up.weight"
    if fault == "missing":
        del state[key]
    elif fault == "unexpected":
        state["adapter_modules.1.to_x_dof.up.weight"] = state[key]
        key = "adapter_modules.1.to_x_dof.up.weight"
    else:
        state[key] = torch.zeros(5, 5)
    torch.save(state, tmp / "bokeh_lora.bin")
    with pytest.raises(CheckpointError, match=key.replace(".", r"\.")):
        load_kontext_adapter(tmp, tiny_transformer())


def test_missing_file_names_repo_and_fetch_command(tmp_path):
    with pytest.raises(MissingWeightsError) as err:
        load_kontext_adapter(tmp_path, tiny_transformer())
    msg = str(err.value)
    assert "bokeh_lora.bin" in msg and "fogradio/BokehDepth" in msg and "hf download" in msg


def test_unwrap_rejects_nested_objects():
    with pytest.raises(CheckpointError):
        unwrap_checkpoint("kontext-adapter", {"model": {"a": torch.zeros(1)}})


def test_weights_check_cli(tmp_path, capsys):
    expected = reference_keys(TSV)
    # full-size shapes without 583 MB on disk: every tensor a stride-0 view of one stored element
    one = torch.zeros(1)
    torch.save({k: one.expand(*s) for k, s in expected}, tmp_path / "bokeh_lora.bin")
    assert main(["weights", "check", "kontext-adapter", str(tmp_path / "bokeh_lora.bin")]) == 0
    assert capsys.readouterr().out.strip().endswith("460 keys match kontext-adapter")
    bad = {k: one.expand(*s) for k, s in expected[1:]}
    torch.save(bad, tmp_path / "bad.bin")
    assert main(["weights", "check", "kontext-adapter", str(tmp_path / "bad.bin")]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and expected[0][0] in captured.err
