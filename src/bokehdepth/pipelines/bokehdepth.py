"""End-to-end BokehDepth: one sharp image → bokeh stack (Stage-1) → metric depth (Stage-2), written in the
reference pipeline's run layout.

Layout of one run folder (``reference/bokehdepth.md`` §1.2, plus our ``stack.json``; see ``docs/run.md``)::

    run_YYYYMMDD_HHMMSS/
      ref.png                        the sharp input, at its own size (8-bit)
      defocus_stack/<i>.png          the generated frame for K[i] (no sharp frame in here)
      defocus_stack/stack_index.json the reference's index (ids, k_values, ref_image, sizes, ...)
      defocus_stack/stack.json       our stack format: frames ["../ref.png", "0.png", ...], K [0, K0, ...]
      manifest.jsonl                 one line, the reference's fields
      depth.npy                      float32 (H, W) metres at the input size, NaN invalid
      depth_color.png                magma_r, 5-95 % range (``bokehdepth.viz.depth_to_color``)
      confidence.npy                 float32 (H, W), only if the Stage-2 backend returns one
      stage2_summary.json            the reference's fields
      pipeline_summary.json          the reference's fields + every argument, backends, weight hashes,
                                     package versions, per-stage timings (written last: the "done" marker)

The models are loaded once (:meth:`BokehDepthPipeline.load`) and reused for every image of a folder.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import InputError, OutputError
from ..io import Stack, atomic_dir, read_image, validate_image, write_depth_outputs, write_image
from .stack import DEFAULT_KS

__all__ = [
    "DEFAULT_K",
    "STAGE1_BACKENDS",
    "STAGE2_BACKENDS",
    "SUMMARY_NAME",
    "BokehDepthPipeline",
    "RunConfig",
    "RunResult",
    "is_finished",
    "new_run_dir",
    "resolve_stage_weights",
    "run_one",
]

DEFAULT_K: tuple[float, ...] = DEFAULT_KS
"""Default blur strengths (normalized K, px at 512-px width per unit of normalised disparity), as
``run_inference.sh``."""
K_MAX = 30.0
"""Largest K the generators were trained on (``reference/bokehdepth.md`` §2: K ~ U(1, 30)); the Stage-1
backends clamp larger values into the range with a warning and record ``K_requested``."""
STAGE1_BACKENDS = ("compact", "kontext")
STAGE2_BACKENDS = ("compact", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa")
# CLI backend name → registry name of its released checkpoint (compact ones are embedded in the package)
_RELEASED = {
    "kontext": "kontext-adapter",
    "dav2-dsfa-s": "dav2-dsfa-s",
    "dav2-dsfa-b": "dav2-dsfa-b",
    "dav2-dsfa-l": "dav2-dsfa-l",
    "udv2-dsfa": "udv2-dsfa",
}
_EMBEDDED = {"stage1": "compact_generator.safetensors", "stage2": "compact_depth.safetensors"}
SUMMARY_NAME = "pipeline_summary.json"
STACK_DIR = "defocus_stack"
RUN_OUTPUTS = (
    "ref.png",
    STACK_DIR,
    "manifest.jsonl",
    "depth.npy",
    "depth_color.png",
    "confidence.npy",
    "stage2_summary.json",
    SUMMARY_NAME,
)
"""Every entry a run writes in its folder (exact names, no globs); a rerun replaces all of them, including a
``confidence.npy`` the new Stage-2 backend does not return, and keeps any other file (see
:func:`io.atomic_dir`)."""
REFERENCE_METHOD = "bokeh_diffusion_i2i_pipeline"
COMPACT_METHOD = "bokehdepth_compact_generator"


class StackGenerator(Protocol):
    """Stage-1 interface (``pipelines.stack.load_stack_generator``)."""

    def generate(self, image: np.ndarray, Ks: list[float], seed: int = 42, progress: bool = False) -> Stack: ...


class DepthPredictor(Protocol):
    """Stage-2 interface (``pipelines.depth.load_depth_predictor``); returns a ``DepthResult``."""

    def predict(self, image: np.ndarray, stack: Stack | None, single_frame: bool = False) -> Any: ...


@dataclass
class RunConfig:
    """Everything that decides a run's result; recorded in ``pipeline_summary.json``.

    Attributes:
        Ks: blur strengths, normalized K (px at 512-px width per unit of normalised disparity), each > 0
            (published range 1-30, Stage-1 clamps into it); one generated frame per value. Env ``K_VALUES``.
        stage1: Stage-1 backend, ``compact`` (embedded, CPU) or ``kontext`` (FLUX.1-Kontext + bokeh adapter).
        stage2: Stage-2 backend, ``compact`` or ``dav2-dsfa-s|b|l`` or ``udv2-dsfa``.
        weights: folder holding released checkpoints (``bokeh_lora.bin``, ``UDv2_dsfa_release.pth``, ...);
            env ``BOKEHDEPTH_WEIGHTS``. Compact backends ignore it (their weights are embedded).
        stage1_weights: the Stage-1 weights file itself (env ``ADAPTER_CKPT``); overrides ``weights``.
        stage2_weights: the Stage-2 weights file itself (env ``WEIGHTS_PATH``); overrides ``weights``.
        config: the reference's UniDepth config JSON (env ``CONFIG_PATH``); checked to exist and recorded,
            the architecture itself is built in.
        base: local folder of the FLUX.1-Kontext-dev base model (kontext only; env ``PRETRAINED_MODEL``).
        seed: random seed of Stage-1 (env ``SEED``).
        device: torch device string (``cpu``, ``cuda``, ``cuda:1``).
    """

    Ks: tuple[float, ...] = DEFAULT_K
    stage1: str = "compact"
    stage2: str = "compact"
    weights: str | None = None
    stage1_weights: str | None = None
    stage2_weights: str | None = None
    config: str | None = None
    base: str | None = None
    seed: int = 42
    device: str = "cpu"

    def check(self) -> RunConfig:
        """Validate (raises :class:`InputError` naming the flag); returns self with K as floats."""
        if self.stage1 not in STAGE1_BACKENDS:
            raise InputError(f"--stage1: unknown backend '{self.stage1}'; choose one of {', '.join(STAGE1_BACKENDS)}")
        if self.stage2 not in STAGE2_BACKENDS:
            raise InputError(f"--stage2: unknown backend '{self.stage2}'; choose one of {', '.join(STAGE2_BACKENDS)}")
        Ks = tuple(float(k) for k in self.Ks)
        if not Ks:
            raise InputError("--K: give at least one blur strength, e.g. --K 10 20 30")
        bad = [k for k in Ks if not (np.isfinite(k) and k > 0.0)]
        if bad:
            raise InputError(
                f"--K: {bad} not allowed; K is normalized (px at 512-px width per unit of normalised "
                f"disparity), finite and > 0 (published range 1-{K_MAX:g}), e.g. --K 10 20 30"
            )
        for flag, value in (("--stage1-weights", self.stage1_weights), ("--stage2-weights", self.stage2_weights)):
            if value and not Path(value).is_file():
                raise InputError(f"{value}: {flag} file not found; check the path")
        if self.config and not Path(self.config).is_file():
            raise InputError(f"{self.config}: --config (CONFIG_PATH) file not found; check the path or unset it")
        return replace(self, Ks=Ks)


@dataclass
class RunResult:
    """One image through both stages.

    Attributes:
        image: the input as used, float32 (H, W, 3) in [0, 1], quantised to 8 bits like ``ref.png``.
        stack: the Stage-1 stack (frame 0 sharp, K = 0; normalized K), frames quantised to 8 bits.
        depth: float32 (H, W) metres at the input size, NaN invalid.
        confidence: float32 (H, W) or None.
        stage1_info: extra fields of the generated stack (backend details).
        stage2_info: ``DepthResult.info`` of the depth backend.
        timings: seconds per stage (``stage1_s``, ``stage2_s``).
    """

    image: np.ndarray
    stack: Stack
    depth: np.ndarray
    confidence: np.ndarray | None
    stage1_info: dict[str, Any]
    stage2_info: dict[str, Any]
    timings: dict[str, float] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------------------------
def resolve_stage_weights(backend: str, explicit: str | None, weights_dir: str | None) -> Path | None:
    """The weights file a stage will load, or None for the embedded compact default.

    Released backends look for their published file (``bokeh_lora.bin``, ``UDv2_dsfa_release.pth``,
    ``DAV2_dsfa_release.pth``) at ``explicit`` (a file), else in ``weights_dir`` / ``$BOKEHDEPTH_WEIGHTS``.

    Raises:
        MissingWeightsError: naming the file, the repository that publishes it and the fetch command.
    """
    if backend == "compact":
        return Path(explicit) if explicit else None
    from ..models.checkpoints import resolve_weights
    from ..models.registry import BACKENDS

    return resolve_weights(explicit or weights_dir, BACKENDS[_RELEASED[backend]].published)


def _embedded_weights(stage: str) -> Path | None:
    path = Path(__file__).resolve().parents[1] / "weights" / _EMBEDDED[stage]
    return path if path.is_file() else None


def _weights_record(path: Path | None, stage: str, model: object) -> dict[str, Any]:
    """{"path", "sha256", "embedded"} of the file a model was loaded from."""
    from ..models.checkpoints import file_sha256

    embedded = path is None
    if path is None:
        attr = getattr(model, "weights_path", None) or getattr(model, "weights", None)
        path = Path(attr) if isinstance(attr, (str, os.PathLike)) else _embedded_weights(stage)
    if path is None or not Path(path).is_file():
        return {"path": None if path is None else str(path), "sha256": None, "embedded": embedded}
    return {"path": str(path), "sha256": file_sha256(path), "embedded": embedded}


def _versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("bokehdepth", "numpy", "torch", "diffusers", "transformers", "accelerate", "safetensors"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    return out


# ----------------------------------------------------------------------------------------------------------
# backends (imported lazily; tests may pass their own objects)
# ----------------------------------------------------------------------------------------------------------
def _load_generator(backend: str, weights: Path | None, device: str, base: str | None) -> StackGenerator:
    from .stack import load_stack_generator

    kwargs: dict[str, Any] = {}
    if backend == "kontext" and base:
        kwargs["base"] = base
    return load_stack_generator(backend, weights=None if weights is None else str(weights), device=device, **kwargs)


def _load_predictor(backend: str, weights: Path | None, device: str) -> DepthPredictor:
    from .depth import load_depth_predictor

    return load_depth_predictor(backend, weights=None if weights is None else str(weights), device=device)


def _quantize8(image: np.ndarray) -> np.ndarray:
    """Round to the 8-bit values a PNG stores, so a rerun from the written files gives the same result."""
    return (np.round(np.clip(image, 0.0, 1.0) * 255.0) / 255.0).astype(np.float32)


def _jsonable(obj: Any) -> Any:
    """``obj`` with numpy scalars/arrays, paths and unknown objects turned into JSON values."""

    def default(o: Any) -> Any:
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist() if o.size <= 64 else f"array{list(o.shape)}"
        return str(o)

    return json.loads(json.dumps(obj, default=default))


# ----------------------------------------------------------------------------------------------------------
# run folders
# ----------------------------------------------------------------------------------------------------------
def new_run_dir(output_root: str | os.PathLike, now: datetime | None = None, prefix: str = "run") -> Path:
    """``output_root/run_YYYYMMDD_HHMMSS`` (local time, as the reference); ``_1``, ``_2``… if taken."""
    root = Path(output_root)
    stamp = (now or datetime.now()).strftime(f"{prefix}_%Y%m%d_%H%M%S")
    path, n = root / stamp, 0
    while path.exists():
        n += 1
        path = root / f"{stamp}_{n}"
    return path


def is_finished(run_dir: str | os.PathLike) -> bool:
    """True if ``run_dir`` holds a complete run: the folder appears in one rename with its
    ``pipeline_summary.json``, which is the marker."""
    return (Path(run_dir) / SUMMARY_NAME).is_file()


# ----------------------------------------------------------------------------------------------------------
# the pipeline
# ----------------------------------------------------------------------------------------------------------
class BokehDepthPipeline:
    """Stage-1 generator + Stage-2 predictor, loaded once; ``__call__`` runs one image, :meth:`run_image`
    runs one image file into a run folder.

    Build with :meth:`load` (resolves and hashes the weights, then loads both backends); tests may pass
    their own ``generator`` / ``predictor`` objects that follow the two interfaces.
    """

    def __init__(
        self,
        config: RunConfig,
        generator: StackGenerator,
        predictor: DepthPredictor,
        weights: dict[str, dict[str, Any]] | None = None,
        load_timings: dict[str, float] | None = None,
    ):
        self.config = config.check()
        self.generator = generator
        self.predictor = predictor
        self.weights = dict(weights or {})
        if "stage1" not in self.weights:
            self.weights["stage1"] = _weights_record(None, "stage1", generator)
        if "stage2" not in self.weights:
            self.weights["stage2"] = _weights_record(None, "stage2", predictor)
        self.load_timings = dict(load_timings or {})

    @classmethod
    def load(cls, config: RunConfig) -> BokehDepthPipeline:
        """Check the config, find every weights file (missing ones fail before anything loads), load both
        backends on ``config.device`` and hash their weight files."""
        config = config.check()
        w1 = resolve_stage_weights(config.stage1, config.stage1_weights, config.weights)
        w2 = resolve_stage_weights(config.stage2, config.stage2_weights, config.weights)
        t0 = time.perf_counter()
        generator = _load_generator(config.stage1, w1, config.device, config.base)
        t1 = time.perf_counter()
        predictor = _load_predictor(config.stage2, w2, config.device)
        t2 = time.perf_counter()
        weights = {
            "stage1": _weights_record(w1, "stage1", generator),
            "stage2": _weights_record(w2, "stage2", predictor),
        }
        timings = {"load_stage1_s": t1 - t0, "load_stage2_s": t2 - t1, "hash_weights_s": time.perf_counter() - t2}
        return cls(config, generator, predictor, weights, timings)

    def __call__(self, image: np.ndarray, progress: bool = False) -> RunResult:
        """Run both stages on one float32 (H, W, 3) image in [0, 1]; outputs at the image's size."""
        image = _quantize8(validate_image(image))
        h, w = image.shape[:2]
        t0 = time.perf_counter()
        stack = self.generator.generate(image, list(self.config.Ks), seed=self.config.seed, progress=progress)
        t1 = time.perf_counter()
        self._check_stack(stack, (h, w))
        frames = [image if i == stack.reference else _quantize8(f) for i, f in enumerate(stack.frames)]
        stack = replace(stack, frames=frames)
        t2 = time.perf_counter()
        result = self.predictor.predict(image, stack)
        t3 = time.perf_counter()
        depth = np.asarray(result.depth, dtype=np.float32)
        if depth.shape != (h, w):
            raise RuntimeError(f"Stage-2 backend {self.config.stage2} returned depth {depth.shape}, expected {(h, w)}")
        conf = getattr(result, "confidence", None)
        return RunResult(
            image=image,
            stack=stack,
            depth=depth,
            confidence=None if conf is None else np.asarray(conf, dtype=np.float32),
            stage1_info=dict(stack.extra),
            stage2_info=dict(getattr(result, "info", None) or {}),
            timings={"stage1_s": t1 - t0, "stage2_s": t3 - t2},
        )

    def _check_stack(self, stack: Stack, size: tuple[int, int]) -> None:
        expected = len(self.config.Ks) + 1
        if len(stack) != expected or tuple(stack.size) != size:
            raise RuntimeError(
                f"Stage-1 backend {self.config.stage1} returned {len(stack)} frames of {stack.size}, "
                f"expected {expected} of {size}"
            )

    def run_image(
        self,
        image_path: str | os.PathLike,
        run_dir: str | os.PathLike,
        extra_args: dict[str, Any] | None = None,
        progress: bool = False,
    ) -> Path:
        """Read ``image_path``, run it, write the run layout into ``run_dir`` atomically; return ``run_dir``.

        Raises:
            InputError: the image is unreadable (nothing is written).
            OutputError: the folder cannot be written (nothing half-written remains).
        """
        t0 = time.perf_counter()
        image = read_image(image_path)
        t1 = time.perf_counter()
        result = self(image, progress=progress)
        result.timings["read_s"] = t1 - t0
        return self.write_run(result, image_path, run_dir, extra_args)

    def write_run(
        self,
        result: RunResult,
        image_path: str | os.PathLike,
        run_dir: str | os.PathLike,
        extra_args: dict[str, Any] | None = None,
    ) -> Path:
        """Write ``result`` in the run layout into ``run_dir`` (one atomic rename). Paths recorded inside
        the JSON files are ``run_dir/...`` as given (relative stays relative, as the reference)."""
        run_dir = Path(run_dir)
        if run_dir.exists() and not run_dir.is_dir():
            raise OutputError(f"{run_dir}: exists and is not a folder; choose another --output-root")
        t0 = time.perf_counter()
        cfg = self.config
        h, w = result.depth.shape
        ref_path, stack_dir = run_dir / "ref.png", run_dir / STACK_DIR
        index_path = stack_dir / "stack_index.json"
        gen = [i for i in range(len(result.stack)) if i != result.stack.reference]
        Ks = [float(result.stack.K[i]) for i in gen]  # as generated (Stage-1 clamps K into its range)
        frame_names = [f"{j}.png" for j in range(len(gen))]
        info = result.stage1_info
        with atomic_dir(run_dir, owned=RUN_OUTPUTS) as tmp:
            write_image(tmp / "ref.png", result.image)
            (tmp / STACK_DIR).mkdir()
            for name, i in zip(frame_names, gen):
                write_image(tmp / STACK_DIR / name, result.stack.frames[i])
            stack_index = {
                "ids": [str(j) for j in range(len(gen))],
                "k_values": {str(j): k for j, k in enumerate(Ks)},
                "ref_image": str(ref_path),
                "source_rgb": str(ref_path),
                "size": [w, h],
                "source_size": [w, h],
                "original_size": [w, h],
                "guidance_scale": info.get("guidance_scale"),
                "num_inference_steps": info.get("num_inference_steps"),
                "prompt_template": info.get("prompt_template"),
                "method": REFERENCE_METHOD if cfg.stage1 == "kontext" else COMPACT_METHOD,
            }
            _dump(tmp / STACK_DIR / "stack_index.json", stack_index)
            own = replace(
                result.stack,
                frames=[result.stack.frames[result.stack.reference]] + [result.stack.frames[i] for i in gen],
                K=[float(result.stack.K[result.stack.reference])] + Ks,
                reference=0,
                names=["../ref.png"] + frame_names,
            )
            _dump(tmp / STACK_DIR / "stack.json", _jsonable(own.metadata()))
            manifest = {
                "dataset": "bokehdepth",
                "timestamp": datetime.now().strftime("%Y%m%d_%H%M%S"),
                "ref": str(ref_path),
                "stack": [str(stack_dir / n) for n in frame_names],
                "k": Ks,
                "stack_index": str(index_path),
                "size": [w, h],
                "source_size": [w, h],
            }
            (tmp / "manifest.jsonl").write_text(json.dumps(manifest, ensure_ascii=False) + "\n", encoding="utf-8")
            extra = {} if result.confidence is None else {"confidence": result.confidence}
            write_depth_outputs(tmp, result.depth, extra)
            depth_path, color_path = run_dir / "depth.npy", run_dir / "depth_color.png"
            w2 = self.weights["stage2"].get("path")
            _dump(
                tmp / "stage2_summary.json",
                {
                    "ref_image": str(ref_path),
                    "stack_index": str(index_path),
                    "k_values": Ks,
                    "config": cfg.config,
                    "weights": w2,
                    "resolution_level": None,
                    "depth_path": str(depth_path),
                    "depth_color": str(color_path),
                    "backend": cfg.stage2,
                },
            )
            per_image = {**result.timings, "write_s": time.perf_counter() - t0}
            # total_s: this image (read + stages + write); model loading is shared by a folder's images
            timings = {**self.load_timings, **per_image, "total_s": sum(per_image.values())}
            summary = {
                "ref_image": str(image_path),
                "stage1": {
                    "adapter": self.weights["stage1"].get("path"),
                    "pretrained_model": cfg.base,
                    "k_values": Ks,
                    "stack_dir": str(stack_dir),
                    "backend": cfg.stage1,
                },
                "stage2": {
                    "config": cfg.config,
                    "weights": w2,
                    "depth_path": str(depth_path),
                    "depth_color": str(color_path),
                    "backend": cfg.stage2,
                },
                "arguments": {"input": str(image_path), "run_dir": str(run_dir), **asdict(cfg), **(extra_args or {})},
                "backends": {"stage1": cfg.stage1, "stage2": cfg.stage2},
                "weights": self.weights,
                "versions": _versions(),
                "timings_s": {k: round(v, 4) for k, v in timings.items()},
                "device": cfg.device,
                "seed": cfg.seed,
                "size": [w, h],
                "K_convention": result.stack.K_convention,
                "created": datetime.now().astimezone().isoformat(timespec="seconds"),
                "stage1_info": info,
                "stage2_info": result.stage2_info,
                "depth_stats_m": _depth_stats(result.depth),
            }
            _dump(tmp / SUMMARY_NAME, _jsonable(summary))
        return run_dir


def _dump(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n", encoding="utf-8")


def _depth_stats(depth: np.ndarray) -> dict[str, float | None]:
    """min / median / max of finite positive depth (m) and the fraction of valid pixels."""
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return {"min": None, "median": None, "max": None, "valid_fraction": 0.0}
    v = depth[valid]
    return {
        "min": float(v.min()),
        "median": float(np.median(v)),
        "max": float(v.max()),
        "valid_fraction": float(valid.mean()),
    }


def run_one(
    image_path: str | os.PathLike,
    output_root: str | os.PathLike,
    config: RunConfig | None = None,
    pipeline: BokehDepthPipeline | None = None,
    loader: Callable[[RunConfig], BokehDepthPipeline] | None = None,
) -> Path:
    """Convenience: one image → a new ``output_root/run_YYYYMMDD_HHMMSS`` folder; returns its path."""
    if pipeline is None:
        pipeline = (loader or BokehDepthPipeline.load)(config or RunConfig())
    return pipeline.run_image(image_path, new_run_dir(output_root))
