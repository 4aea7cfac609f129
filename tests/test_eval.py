"""Metric-depth measures (worked by hand on tiny arrays), the eval runner and the ``eval`` verb."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from helpers_synth import make_tiny_dataset

from bokehdepth.cli import main
from bokehdepth.errors import InputError
from bokehdepth.eval import METRIC_NAMES, average_metrics, compute_metrics
from bokehdepth.eval.runner import EvalSample, evaluate_predictor, evaluate_samples, format_table

PRED = np.array([[1.0, 2.0], [3.0, 4.0]])
GT = np.array([[1.0, 1.0], [4.0, 4.0]])


def test_metrics_worked_by_hand():
    m = compute_metrics(PRED, GT)
    # differences 0, 1, −1, 0; gt 1, 1, 4, 4
    assert m["abs_rel"] == pytest.approx((0 + 1 / 1 + 1 / 4 + 0) / 4)  # 0.3125
    assert m["sq_rel"] == pytest.approx((0 + 1 / 1 + 1 / 4 + 0) / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(0.5))
    d = [0.0, math.log(2.0), math.log(0.75), 0.0]
    assert m["rmse_log"] == pytest.approx(math.sqrt(sum(x * x for x in d) / 4))
    mean = sum(d) / 4
    assert m["silog"] == pytest.approx(100 * math.sqrt(sum(x * x for x in d) / 4 - mean**2))
    assert m["log10"] == pytest.approx((math.log10(2) + math.log10(4 / 3)) / 4)
    # ratios max(p/g, g/p): 1, 2, 4/3, 1 → < 1.25: 2; < 1.5625: 3; < 1.953: 3
    assert (m["delta1"], m["delta2"], m["delta3"]) == (0.5, 0.75, 0.75)
    assert m["n_pixels"] == 4
    assert set(METRIC_NAMES) <= set(m)


def test_metrics_masks_invalid_gt_and_prediction():
    gt = np.array([[1.0, 0.0], [np.nan, 4.0], [2.0, 2.0]])
    pred = np.array([[2.0, 5.0], [5.0, 4.0], [np.nan, 2.0]])
    mask = np.array([[True, True], [True, True], [True, False]])
    m = compute_metrics(pred, gt, mask=mask)
    # valid: (0,0) p2 g1 and (1,1) p4 g4; gt 0 / NaN excluded, NaN prediction excluded, (2,1) masked out
    assert m["n_pixels"] == 2
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["delta1"] == pytest.approx(0.5)


def test_metrics_depth_range_and_clipping():
    gt = np.array([1.0, 5.0, 50.0])
    pred = np.array([1.0, 100.0, 50.0])
    m = compute_metrics(pred, gt, min_depth=0.5, max_depth=10.0)
    # gt 50 excluded; prediction 100 clipped to 10 → errors 0 and 5/5
    assert m["n_pixels"] == 2
    assert m["abs_rel"] == pytest.approx(0.5)
    assert m["rmse"] == pytest.approx(math.sqrt(25 / 2))


def test_median_alignment_removes_scale():
    gt = np.array([1.0, 2.0, 3.0, 7.0])
    m = compute_metrics(gt * 2.5, gt, align="median")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-12) and m["delta1"] == 1.0
    # median scale uses medians, not means: p = [1, 1, 1, 10] vs g = 1 → scale 1, one outlier remains
    m = compute_metrics(np.array([1.0, 1.0, 1.0, 10.0]), np.ones(4), align="median")
    assert m["abs_rel"] == pytest.approx(9 / 4)


def test_lstsq_alignment_depth_and_disparity():
    gt = np.array([1.0, 2.0, 4.0, 8.0])
    m = compute_metrics((gt - 1.0) / 3.0 + 0.5, gt, align="lstsq", min_depth=None)
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)
    pred = 1.0 / (2.0 / gt + 0.5)  # affine in disparity
    assert compute_metrics(pred, gt, align="lstsq")["abs_rel"] > 0.1
    m = compute_metrics(pred, gt, align="lstsq", space="disp")
    assert m["abs_rel"] == pytest.approx(0.0, abs=1e-9)


def test_average_is_over_images_not_pixels():
    a = compute_metrics(np.array([2.0]), np.array([1.0]))  # abs_rel 1
    b = compute_metrics(np.ones(9), np.ones(9))  # abs_rel 0
    avg = average_metrics([a, b])
    assert avg["abs_rel"] == pytest.approx(0.5) and avg["n_images"] == 2


def test_metrics_bad_inputs():
    with pytest.raises(InputError, match="prediction is"):
        compute_metrics(np.ones((2, 2)), np.ones((2, 3)))
    with pytest.raises(InputError, match="--align"):
        compute_metrics(np.ones(3), np.ones(3), align="mean")
    m = compute_metrics(np.ones(3), np.zeros(3))
    assert m["n_pixels"] == 0 and math.isnan(m["abs_rel"])


def test_runner_plots_and_table(tmp_path):
    rng = np.random.default_rng(0)
    samples = [EvalSample(f"s{i}", gt * 1.1, gt) for i, gt in enumerate(rng.uniform(1, 5, (3, 8, 8)))]
    res = evaluate_samples(samples, "toy", plots_dir=tmp_path, error_maps=2)
    assert res.mean["abs_rel"] == pytest.approx(0.1) and res.mean["n_images"] == 3
    for name in ("error_histogram.png", "pred_vs_gt.png", "errors/s0.png", "errors/s1.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert not (tmp_path / "errors" / "s2.png").exists()
    table = format_table([res])
    assert table.splitlines()[0].startswith("| dataset | abs_rel") and "| toy | 0.1000 |" in table


class _ScaledTruth:
    """A fake predictor: the ground truth of the sample × 1.2 (looked up by the sharp image)."""

    def __init__(self, manifest):
        from bokehdepth.data import read_manifest
        from bokehdepth.io import read_image

        self.table = [(read_image(r["image"]), np.load(r["depth"])) for r in read_manifest(manifest)]

    def predict(self, image, stack):
        assert stack is not None and stack.K[0] == 0.0
        depth = next(d for im, d in self.table if np.array_equal(im, image))

        class R:
            pass

        r = R()
        r.depth = depth * 1.2
        return r


def test_evaluate_predictor_over_synth_manifest(tmp_path):
    m = make_tiny_dataset(tmp_path / "ds", n=2)
    res = evaluate_predictor(_ScaledTruth(m), m.parent, save_pred=tmp_path / "pred")
    assert res.mean["n_images"] == 2
    assert res.mean["abs_rel"] == pytest.approx(0.2, rel=1e-5)
    assert res.mean["delta1"] == 1.0
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["000000.npy", "000001.npy"]
    aligned = evaluate_predictor(_ScaledTruth(m), m.parent, align="median")
    assert aligned.mean["abs_rel"] == pytest.approx(0.0, abs=1e-6)


# ---------------------------------------------------------------------------------------------- CLI
def _folders(tmp_path, n=3, shape=(6, 5)):
    rng = np.random.default_rng(1)
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir()
    gt.mkdir()
    pairs = []
    for i in range(n):
        g = rng.uniform(0.5, 9.0, shape).astype(np.float32)
        p = (g * rng.uniform(0.8, 1.2, shape)).astype(np.float32)
        np.save(gt / f"img{i}.npy", g)
        np.save(pred / f"img{i}.npy", p)
        pairs.append((p, g))
    return pred, gt, pairs


def test_cli_eval_folders_json(tmp_path, capsys):
    pred, gt, pairs = _folders(tmp_path)
    out = tmp_path / "metrics.json"
    rc = main(
        [
            "eval",
            "--pred",
            str(pred),
            "--gt",
            str(gt),
            "--json",
            str(out),
            "--max-depth",
            "8",
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0
    data = json.loads(out.read_text())
    want = average_metrics([compute_metrics(p, g, max_depth=8.0) for p, g in pairs])
    for key in (*METRIC_NAMES, "n_images"):
        assert data[key] == pytest.approx(want[key])
    assert data["n_images"] == 3
    assert (tmp_path / "plots" / "pred_vs_gt.png").exists()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("| dataset | abs_rel | sq_rel")
    assert lines[2].startswith(f"| gt | {want['abs_rel']:.4f} |")


def test_cli_eval_median_alignment(tmp_path, capsys):
    pred, gt, pairs = _folders(tmp_path, n=1)
    out = tmp_path / "m.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--align", "median", "--json", str(out)]) == 0
    want = compute_metrics(pairs[0][0], pairs[0][1], align="median")
    assert json.loads(out.read_text())["abs_rel"] == pytest.approx(want["abs_rel"])


def test_cli_eval_missing_prediction(tmp_path, capsys):
    pred, gt, _ = _folders(tmp_path)
    (pred / "img1.npy").unlink()
    out = tmp_path / "m.json"
    rc = main(["eval", "--pred", str(pred), "--gt", str(gt), "--json", str(out), "--plots", str(tmp_path / "pl")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "img1.npy" in err
    assert not out.exists() and not (tmp_path / "pl").exists()


def test_cli_eval_mismatched_sizes(tmp_path, capsys):
    pred, gt, _ = _folders(tmp_path)
    np.save(pred / "img2.npy", np.ones((3, 3), np.float32))
    rc = main(["eval", "--pred", str(pred), "--gt", str(gt)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "img2.npy" in err and "3x3" in err


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["--pred", "P"], "--pred/--gt"),
        ([], "--pred/--gt"),
        (["--data", "D"], "--backend"),
        (["--pred", "P", "--gt", "G", "--min-depth", "5", "--max-depth", "1"], "--max-depth"),
    ],
)
def test_cli_eval_bad_arguments(capsys, argv, flag):
    rc = main(["eval", *argv])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and flag in err


def test_cli_eval_missing_folder(tmp_path, capsys):
    rc = main(["eval", "--pred", str(tmp_path / "nope"), "--gt", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "nope" in err


def test_cli_eval_data_backend(tmp_path, capsys, monkeypatch):
    import bokehdepth.pipelines.depth as depth_pipeline

    m = make_tiny_dataset(tmp_path / "ds", n=2)
    seen = {}

    def fake_loader(backend, weights=None, device="cpu"):
        seen.update(backend=backend, weights=weights, device=device)
        return _ScaledTruth(m)

    monkeypatch.setattr(depth_pipeline, "load_depth_predictor", fake_loader)
    out = tmp_path / "m.json"
    rc = main(
        [
            "eval",
            "--data",
            str(m.parent),
            "--backend",
            "compact",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
            "--error-maps",
            "1",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    data = json.loads(out.read_text())
    assert seen == {"backend": "compact", "weights": None, "device": "cpu"}
    assert data["abs_rel"] == pytest.approx(0.2, rel=1e-5) and data["n_images"] == 2
    assert data["settings"]["backend"] == "compact"
    assert (tmp_path / "plots" / "errors" / "000000.png").exists()


def test_cli_eval_data_bad_folder(tmp_path, capsys, monkeypatch):
    import shutil

    import bokehdepth.pipelines.depth as depth_pipeline

    m = make_tiny_dataset(tmp_path / "ds", n=2)

    class Ones:
        def predict(self, image, stack):
            class R:
                depth = np.ones(image.shape[:2], np.float32)

            return R()

    monkeypatch.setattr(depth_pipeline, "load_depth_predictor", lambda *a, **k: Ones())
    shutil.rmtree(m.parent / "000001" / "stack")
    rc = main(["eval", "--data", str(m.parent), "--backend", "compact", "--json", str(tmp_path / "m.json")])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "000001/stack" in err
    assert not (tmp_path / "m.json").exists()
    # an RGB-D folder whose depth does not match its image
    rgbd = tmp_path / "flat"
    (rgbd / "rgb").mkdir(parents=True)
    (rgbd / "depth").mkdir()
    from bokehdepth.io import write_image

    write_image(rgbd / "rgb" / "a.png", np.zeros((8, 8, 3)))
    np.save(rgbd / "depth" / "a.npy", np.ones((4, 4), np.float32))
    rc = main(["eval", "--data", str(rgbd), "--backend", "compact"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:") and "depth/a.npy" in err


def test_cli_eval_several_datasets_one_row_each(tmp_path, capsys, monkeypatch):
    import shutil

    import bokehdepth.pipelines.depth as depth_pipeline

    m = make_tiny_dataset(tmp_path / "synthA", n=2)
    shutil.copytree(m.parent, tmp_path / "synthB")
    monkeypatch.setattr(depth_pipeline, "load_depth_predictor", lambda *a, **k: _ScaledTruth(m))
    out = tmp_path / "m.json"
    rc = main(
        [
            "eval",
            "--data",
            str(m.parent),
            str(tmp_path / "synthB"),
            "--backend",
            "compact",
            "--json",
            str(out),
            "--plots",
            str(tmp_path / "plots"),
        ]
    )
    assert rc == 0, capsys.readouterr().err
    rows = [r for r in capsys.readouterr().out.splitlines() if r.startswith("| synth")]
    assert len(rows) == 2
    data = json.loads(out.read_text())["datasets"]
    assert sorted(data) == ["synthA (synth)", "synthB (synth)"]
    assert all(v["abs_rel"] == pytest.approx(0.2, rel=1e-5) for v in data.values())
    assert (tmp_path / "plots" / "synthB" / "pred_vs_gt.png").exists()


def test_several_datasets_with_one_folder_name_keep_apart(tmp_path, capsys, monkeypatch):
    import shutil

    import bokehdepth.pipelines.depth as depth_pipeline
    from bokehdepth.commands.eval import dataset_subfolders

    assert dataset_subfolders(["a/test"]) == [""]
    assert dataset_subfolders(["nyu/test", "kitti/test", "x/val"]) == ["nyu_test", "kitti_test", "val"]
    assert dataset_subfolders(["a/test", "a/test"]) == ["a_test", "a_test_2"]
    m = make_tiny_dataset(tmp_path / "one" / "ds", n=2)
    shutil.copytree(m.parent, tmp_path / "two" / "ds")
    monkeypatch.setattr(depth_pipeline, "load_depth_predictor", lambda *a, **k: _ScaledTruth(m))
    argv = ["eval", "--data", str(m.parent), str(tmp_path / "two" / "ds"), "--backend", "compact"]
    rc = main([*argv, "--json", str(tmp_path / "m.json"), "--save-pred", str(tmp_path / "pred")])
    assert rc == 0, capsys.readouterr().err
    assert len(json.loads((tmp_path / "m.json").read_text())["datasets"]) == 2
    assert sorted(p.name for p in (tmp_path / "pred").iterdir()) == ["one_ds", "two_ds"]


def test_rgbd_protocol_cap_clips_prediction(tmp_path):
    import cv2

    from bokehdepth.io import write_image

    root = tmp_path / "nyu" / "kitchen"
    root.mkdir(parents=True)
    write_image(root / "rgb_00001.jpg", np.zeros((48, 64, 3)))
    assert cv2.imwrite(str(root / "sync_depth_00001.png"), np.full((48, 64), 5000, np.uint16))  # 5 m

    class Far:
        def predict(self, image, stack):
            assert stack is None

            class R:
                depth = np.full(image.shape[:2], 20.0, np.float32)

            return R()

    res = evaluate_predictor(Far(), tmp_path / "nyu")
    # NYUv2 protocol: prediction clipped to 10 m → |10 − 5| / 5 = 1 (not 3), inside the Eigen crop only
    assert res.mean["abs_rel"] == pytest.approx(1.0)
    assert res.per_image["kitchen_rgb_00001"]["n_pixels"] == (47 - 4) * (60 - 4)
