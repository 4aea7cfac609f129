"""Evaluate depth predictions: folders of ``<name>.npy`` pairs, or a predictor run over a synthetic manifest
or an RGB-D folder. Metrics are computed per image (``eval.metrics.compute_metrics``) and averaged over
images; optional pictures: per-image error maps, an error histogram and a pred-vs-gt scatter.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InputError
from .metrics import METRIC_NAMES, average_metrics, compute_metrics, valid_mask

__all__ = [
    "EvalResult",
    "EvalSample",
    "evaluate_folders",
    "evaluate_predictor",
    "evaluate_samples",
    "format_table",
    "iter_dataset",
]

_POINTS_PER_IMAGE = 4000


class DepthPredictor(Protocol):
    """Anything with ``.predict(image, stack) -> DepthResult`` (``depth`` (H, W) metres)."""

    def predict(self, image: np.ndarray, stack: Any) -> Any: ...


@dataclass
class EvalSample:
    """One image to score: prediction and ground truth (H, W) in metres, optional mask and RGB for pictures."""

    name: str
    pred: np.ndarray
    gt: np.ndarray
    mask: np.ndarray | None = None
    image: np.ndarray | None = None


@dataclass
class EvalResult:
    """Scores of one dataset: ``per_image`` {name: metrics}, ``mean`` (averaged over images, + n_images)."""

    name: str
    per_image: dict[str, dict[str, float]]
    mean: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``bokehdepth eval --json``: the mean metrics at the top level, then details."""
        return {**self.mean, "dataset": self.name, "settings": self.settings, "per_image": self.per_image}


def evaluate_samples(
    samples: Iterable[EvalSample],
    name: str = "dataset",
    *,
    align: str = "none",
    min_depth: float | None = 1e-3,
    max_depth: float | None = None,
    space: str = "depth",
    plots_dir: str | os.PathLike | None = None,
    error_maps: int = 0,
    progress: bool = False,
) -> EvalResult:
    """Score samples one by one; with ``plots_dir`` write ``error_histogram.png``, ``pred_vs_gt.png`` and the
    first ``error_maps`` per-image pictures ``errors/<name>.png`` there."""
    from tqdm.auto import tqdm

    from .metrics import align_prediction

    per_image: dict[str, dict[str, float]] = {}
    rel, pts_p, pts_g = [], [], []
    rng = np.random.default_rng(0)
    for k, s in enumerate(tqdm(samples, desc=f"eval {name}", unit="img", disable=not progress)):
        m = compute_metrics(s.pred, s.gt, s.mask, align=align, min_depth=min_depth, max_depth=max_depth, space=space)  # type: ignore[arg-type]
        per_image[s.name] = m
        if plots_dir is None:
            continue
        valid = valid_mask(s.gt, s.mask, min_depth, max_depth)
        pred = align_prediction(s.pred, s.gt, valid, align, space)  # type: ignore[arg-type]
        pred = np.clip(pred, min_depth or 0.0, max_depth or np.inf)
        ok = valid & np.isfinite(pred) & (pred > 0)
        idx = np.flatnonzero(ok)
        if idx.size > _POINTS_PER_IMAGE:
            idx = rng.choice(idx, _POINTS_PER_IMAGE, replace=False)
        p, g = pred.ravel()[idx], s.gt.ravel()[idx].astype(np.float64)
        rel.append((p - g) / g)
        pts_p.append(p)
        pts_g.append(g)
        if k < error_maps:
            from .plots import write_error_map

            write_error_map(Path(plots_dir) / "errors" / f"{s.name}.png", np.where(ok, pred, np.nan), s.gt, ok, s.image)
    if not per_image:
        raise InputError(f"{name}: no images to evaluate; check the folder")
    result = EvalResult(
        name,
        per_image,
        average_metrics(per_image.values()),
        {"align": align, "min_depth": min_depth, "max_depth": max_depth, "align_space": space},
    )
    if plots_dir is not None and rel:
        from .plots import error_histogram, pred_vs_gt_scatter

        error_histogram(np.concatenate(rel), Path(plots_dir) / "error_histogram.png", title=name)
        pred_vs_gt_scatter(np.concatenate(pts_p), np.concatenate(pts_g), Path(plots_dir) / "pred_vs_gt.png", title=name)
    return result


def _npy_names(folder: Path, flag: str) -> dict[str, Path]:
    if not folder.exists():
        raise InputError(f"{flag} {folder}: folder not found; check the path")
    if not folder.is_dir():
        raise InputError(f"{flag} {folder}: expected a folder of <name>.npy depth maps, got a file")
    return {p.stem: p for p in sorted(folder.glob("*.npy"))}


def _folder_samples(pred_dir: Path, gt_dir: Path) -> Iterator[EvalSample]:
    from ..io import read_depth

    gts = _npy_names(gt_dir, "--gt")
    preds = _npy_names(pred_dir, "--pred")
    if not gts:
        raise InputError(f"--gt {gt_dir}: no <name>.npy depth maps in this folder")
    missing = [n for n in gts if n not in preds]
    if missing:
        raise InputError(f"{pred_dir / (missing[0] + '.npy')}: prediction missing for ground truth {missing[0]}.npy")
    for n, gp in gts.items():
        gt = read_depth(gp)
        pred = read_depth(preds[n])
        if pred.shape != gt.shape:
            raise InputError(
                f"{preds[n]}: prediction is {pred.shape[1]}x{pred.shape[0]} but {gp.name} is "
                f"{gt.shape[1]}x{gt.shape[0]}; predict at the ground-truth size"
            )
        yield EvalSample(n, pred, gt)


def evaluate_folders(pred_dir: str | os.PathLike, gt_dir: str | os.PathLike, **kwargs: Any) -> EvalResult:
    """Score ``pred_dir/<name>.npy`` against ``gt_dir/<name>.npy`` (metres) for every ground-truth file.

    Keyword arguments go to :func:`evaluate_samples`.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    _npy_names(pred_dir, "--pred")
    return evaluate_samples(_folder_samples(pred_dir, gt_dir), name=gt_dir.name or str(gt_dir), **kwargs)


def iter_dataset(
    data: str | os.PathLike, split: str | None = None, limit: int | None = None, **rgbd_kwargs: Any
) -> tuple[str, Iterator[tuple[str, np.ndarray, Any, np.ndarray, np.ndarray | None]]]:
    """Open a synthetic dataset (folder with ``manifest.jsonl``) or an RGB-D folder.

    Returns ``(kind, iterator)`` with items ``(name, image (H, W, 3), stack or None, gt depth (H, W) m,
    eval mask or None)``.
    """
    from ..data.manifest import MANIFEST_NAME

    data = Path(data)
    if not data.exists():
        raise InputError(f"--data {data}: folder not found; check the path")
    if (data / MANIFEST_NAME).exists() or data.suffix == ".jsonl":
        from ..data.datasets import load_depth_for
        from ..data.manifest import read_manifest
        from ..io import read_image, read_stack

        records = read_manifest(data, split=split)[:limit]

        def synth() -> Iterator[tuple[str, np.ndarray, Any, np.ndarray, np.ndarray | None]]:
            for rec in records:
                image = read_image(rec["image"])
                yield rec["id"], image, read_stack(rec["stack"]), load_depth_for(rec["depth"], image.shape[:2]), None

        return "synth", synth()
    from ..data.rgbd import RGBDFolder

    folder = RGBDFolder(data, **rgbd_kwargs)

    def rgbd() -> Iterator[tuple[str, np.ndarray, Any, np.ndarray, np.ndarray | None]]:
        for i in range(len(folder) if limit is None else min(limit, len(folder))):
            s = folder.load(i)
            yield s["name"], s["image"], None, s["depth"], s["eval_mask"]

    return folder.layout, rgbd()


def evaluate_predictor(
    predictor: DepthPredictor,
    data: str | os.PathLike,
    *,
    split: str | None = None,
    limit: int | None = None,
    save_pred: str | os.PathLike | None = None,
    rgbd_kwargs: dict[str, Any] | None = None,
    **kwargs: Any,
) -> EvalResult:
    """Run ``predictor.predict(image, stack)`` over a dataset and score it.

    Args:
        predictor: object with ``.predict(image, stack) -> DepthResult``.
        data: synthetic dataset folder / manifest, or an RGB-D folder (see ``bokehdepth.data.rgbd``).
        split: manifest split to use (None: all).
        limit: score only the first ``limit`` samples.
        save_pred: folder to save each prediction as ``<name>.npy`` (float32 metres).
        rgbd_kwargs: options for :class:`~bokehdepth.data.rgbd.RGBDFolder` (layout, crop, depth_scale …).
        kwargs: go to :func:`evaluate_samples` (align, min_depth, max_depth, plots_dir, error_maps …). For an
            RGB-D folder without ``max_depth``, the layout's cap is used (NYUv2 10 m, KITTI 80 m), so the
            prediction is clipped to it as the usual protocols do.
    """
    kind, items = iter_dataset(data, split=split, limit=limit, **(rgbd_kwargs or {}))
    if kind != "synth" and kwargs.get("max_depth") is None:
        # the RGB-D layout's protocol cap (NYUv2 10 m, KITTI 80 m) also clips the prediction
        from ..data.rgbd import LAYOUT_DEFAULTS

        kwargs["max_depth"] = LAYOUT_DEFAULTS[kind]["max_depth"]

    def samples() -> Iterator[EvalSample]:
        for name, image, stack, gt, mask in items:
            depth = np.asarray(predictor.predict(image, stack).depth, dtype=np.float32)
            if depth.shape != gt.shape:
                raise InputError(f"{name}: predictor returned {depth.shape}, ground truth is {gt.shape}")
            if save_pred is not None:
                from ..io import write_depth

                write_depth(Path(save_pred) / f"{name}.npy", depth)
            yield EvalSample(name, depth, gt, mask, image)

    res = evaluate_samples(samples(), name=f"{Path(data).name} ({kind})", **kwargs)
    return res


def format_table(results: Sequence[EvalResult]) -> str:
    """A markdown table: one row per dataset, the metrics of :data:`METRIC_NAMES` and the image count."""
    head = "| dataset | " + " | ".join(METRIC_NAMES) + " | images |"
    rule = "|---|" + "---:|" * (len(METRIC_NAMES) + 1)
    rows = [
        f"| {r.name} | " + " | ".join(f"{r.mean[k]:.4f}" for k in METRIC_NAMES) + f" | {r.mean['n_images']} |"
        for r in results
    ]
    return "\n".join([head, rule, *rows])
