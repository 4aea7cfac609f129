"""``bokehdepth run`` with the real embedded compact Stage-1 and Stage-2 models on a tiny non-square image.

Skipped (with the reason) only while the embedded weights are not in the package yet."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers_run import make_image

from bokehdepth.cli import main
from bokehdepth.io import read_image, read_stack

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "bokehdepth" / "weights"
EMBEDDED = [WEIGHTS / "compact_generator.safetensors", WEIGHTS / "compact_depth.safetensors"]

pytestmark = pytest.mark.skipif(
    not all(p.is_file() for p in EMBEDDED), reason="embedded compact weights not in src/bokehdepth/weights yet"
)


def test_run_embedded_defaults_end_to_end(tmp_path, capsys):
    from bokehdepth.models.checkpoints import file_sha256
    from bokehdepth.pipelines.depth import load_depth_predictor

    img = make_image(tmp_path / "in.png", h=40, w=60, seed=3)
    out = tmp_path / "out"
    assert main(["run", str(img), "--output-root", str(out), "--device", "cpu"]) == 0
    run = Path(capsys.readouterr().out.strip())
    assert run.parent == out and run.name.startswith("run_")
    depth = np.load(run / "depth.npy")
    assert depth.dtype == np.float32 and depth.shape == (40, 60)
    assert np.isfinite(depth).mean() > 0.99 and np.nanmin(depth) > 0
    for i in range(3):
        assert read_image(run / "defocus_stack" / f"{i}.png").shape == (40, 60, 3)
    summary = json.loads((run / "pipeline_summary.json").read_text())
    assert summary["stage1"]["k_values"] == [10.0, 20.0, 30.0]
    # the weight hashes are those of the embedded files
    assert summary["weights"]["stage1"]["sha256"] == file_sha256(EMBEDDED[0])
    assert summary["weights"]["stage2"]["sha256"] == file_sha256(EMBEDDED[1])
    assert summary["versions"]["torch"] and summary["timings_s"]["stage2_s"] > 0
    # Stage-2 rerun from the written files (reference-layout stack reader) gives the same depth
    stack_dir = run / "defocus_stack"
    (stack_dir / "stack.json").unlink()
    again = load_depth_predictor("compact").predict(read_image(run / "ref.png"), read_stack(stack_dir)).depth
    np.testing.assert_allclose(depth, again, rtol=1e-5, atol=1e-6)
