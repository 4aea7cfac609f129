"""The Gradio page (``bokehdepth app``): one image → bokeh stack → metric depth, then probe and refocus.

Tabs:

- **Image → stack → depth**: upload an image or pick the shipped example, choose the Stage-1 / Stage-2
  backends and the K values, press *Run*. Shows the stack as a gallery, the metric depth colour map with a
  colour bar (metres), a depth probe (click the depth map: the value in metres at that pixel) and refocus
  (click the picture: :func:`bokehdepth.render.api.render` driven by the predicted depth, focus at the click).
  Every run is a normal run folder (``docs/run.md``) under the app's output root.
- **Sweep (real photos)**: upload a bracket of real photos (EXIF, or the lens fields); the Depth-from-Bokeh
  Sweep (``bokehdepth sweep --photos``, run in-process) gives depth and its per-pixel regression plot.

Everything runs locally and offline (analytics off, system fonts, nothing fetched). The pure helpers below
(colour bar figure, probe, refocus) carry the logic; the Gradio wiring in :func:`build_app` is thin.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BokehDepthError, InputError

__all__ = [
    "AppSession",
    "build_app",
    "depth_figure",
    "example_image",
    "figure_to_pixel",
    "launch",
    "probe_depth",
    "refocus_image",
    "sweep_photos",
    "view_scale",
]

DEPTH_VIEW_MIN_HEIGHT = 360
"""Smallest height (px) of the depth view; smaller depth maps are enlarged (nearest) so the colour bar reads."""
COLORBAR_WIDTH = 110
"""Smallest width (px) of the colour bar strip drawn right of the depth map."""
GAP = 8
"""White gap (px) between the depth map and its colour bar."""
REFOCUS_K = 15.0
"""Default refocus blur strength (normalized K)."""


def example_image() -> Path | None:
    """``examples/motorcycle.png`` of a source checkout, or None when it is not there."""
    path = Path(__file__).resolve().parents[2] / "examples" / "motorcycle.png"
    return path if path.is_file() else None


# ----------------------------------------------------------------------------------------------------------
# pure helpers
# ----------------------------------------------------------------------------------------------------------
def _colorbar_strip(height: int, lo: float, hi: float) -> np.ndarray:
    """A vertical colour bar (matplotlib, magma_r, labelled in metres) as float32 RGB (height, width, 3);
    width and font grow with the height so the labels stay readable when the page shrinks the picture."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    from .viz import DEPTH_COLORMAP

    dpi = 100
    font = max(8.0, height / 28.0)  # points at 100 dpi ≈ 1.4 px each
    width = max(COLORBAR_WIDTH, int(round(font * 9)))
    fig = Figure(figsize=(width / dpi, height / dpi), dpi=dpi, facecolor="white")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.06, 0.04, 0.16, 0.92))
    bar = ColorbarBase(ax, cmap=colormaps[DEPTH_COLORMAP], norm=Normalize(lo, hi), orientation="vertical")
    bar.set_label("depth (m)", fontsize=font)
    ax.tick_params(labelsize=font * 0.9)
    ax.invert_yaxis()  # near (bright) at the top, like the magma_r map: small depth up
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba(), dtype=np.float32) / 255.0
    strip = rgba[:height, :, :3]
    if strip.shape[0] < height:  # figure size rounding: pad with white
        strip = np.concatenate([strip, np.ones((height - strip.shape[0], strip.shape[1], 3), np.float32)], axis=0)
    return np.ascontiguousarray(strip)


def depth_figure(depth: np.ndarray, min_height: int = DEPTH_VIEW_MIN_HEIGHT) -> tuple[np.ndarray, float]:
    """The metric depth colour map (``viz.depth_to_color``: magma_r, 5–95 % range) with a colour bar.

    Args:
        depth: float (H, W) metres, NaN invalid.
        min_height: the map is enlarged by an integer factor (nearest) until it is at least this tall.
    Returns:
        (figure float32 (H·s, W·s + gap + bar, 3) in [0, 1], scale s): a click at figure pixel (x, y) with
        x < W·s is depth pixel (x // s, y // s) (see :func:`figure_to_pixel`).
    """
    from .viz import depth_range, depth_to_color

    depth = np.asarray(depth, dtype=np.float32)
    h, w = depth.shape
    scale = view_scale(h, min_height)
    color = depth_to_color(depth)
    if scale > 1:
        color = np.repeat(np.repeat(color, scale, axis=0), scale, axis=1)
    lo, hi = depth_range(depth)
    bar = _colorbar_strip(h * scale, lo, hi)
    gap = np.ones((h * scale, GAP, 3), np.float32)
    return np.concatenate([color, gap, bar], axis=1), float(scale)


def view_scale(height: int, min_height: int = DEPTH_VIEW_MIN_HEIGHT) -> int:
    """Integer enlargement of a depth map ``height`` px tall in :func:`depth_figure`."""
    return max(1, int(np.ceil(min_height / max(height, 1))))


def figure_to_pixel(x: float, y: float, scale: float, shape: tuple[int, int]) -> tuple[int, int] | None:
    """Depth pixel (x, y) under figure pixel (x, y), or None when the click is on the colour bar/outside."""
    h, w = shape
    px, py = int(x // scale), int(y // scale)
    if 0 <= px < w and 0 <= py < h:
        return px, py
    return None


def probe_depth(depth: np.ndarray, x: int, y: int) -> float:
    """Depth in metres at pixel (x, y) (column, row); NaN where invalid.

    Raises:
        InputError: the pixel is outside the map.
    """
    h, w = depth.shape
    if not (0 <= x < w and 0 <= y < h):
        raise InputError(f"probe: pixel ({x}, {y}) is outside the {w}x{h} depth map")
    return float(depth[y, x])


def _disp_norm(depth: np.ndarray) -> np.ndarray:
    """Per-image min–max normalised disparity in [0, 1] of a metric depth map (invalid → median)."""
    valid = np.isfinite(depth) & (depth > 0)
    if not valid.any():
        return np.full(depth.shape, 0.5, np.float32)
    disp = np.where(valid, 1.0 / np.where(valid, depth, 1.0), np.nan)
    lo, hi = np.nanmin(disp), np.nanmax(disp)
    norm = (disp - lo) / max(hi - lo, 1e-12)
    return np.where(valid, norm, np.nanmedian(norm)).astype(np.float32)


def refocus_image(image: np.ndarray, depth: np.ndarray, x: int, y: int, K: float, gamma: float = 2.2) -> np.ndarray:
    """Refocus ``image`` at pixel (x, y) with the classical renderer driven by the predicted depth.

    Args:
        image: float32 (H, W, 3) in [0, 1].
        depth: float (H, W) metres (NaN invalid).
        x, y: focus pixel (column, row).
        K: blur strength in the normalised convention of the stack (px at 512-px width per unit of per-image
            normalised disparity, 0–30), as ``docs/internals.md`` maps it onto the renderer:
            ``disp = disp_norm``, ``K_render = K · W / 512``.
    Returns:
        float32 (H, W, 3) in [0, 1].
    """
    from .render.api import render

    w = image.shape[1]
    return render(image, _disp_norm(depth), float(K) * w / 512.0, focus_xy=(int(x), int(y)), gamma=gamma)


def parse_k_text(text: str) -> list[float]:
    """ "10 20 30" or "10, 20, 30" → [10.0, 20.0, 30.0] (raises InputError naming the field)."""
    from .io import parse_floats

    values = parse_floats(text or "", "K values")
    if not values:
        raise InputError("K values: give at least one, e.g. 10 20 30")
    return values


# ----------------------------------------------------------------------------------------------------------
# session: models loaded once, runs written under one output root
# ----------------------------------------------------------------------------------------------------------
class AppSession:
    """What the page's callbacks share: the output root and the loaded pipelines (keyed by backends).

    Args:
        output_root: where run folders go (default: a new temporary folder).
        device: torch device for the models.
        weights: default folder of released checkpoints (the page's *weights folder* field overrides it).
        loader: builds a pipeline from a :class:`~bokehdepth.pipelines.bokehdepth.RunConfig` (tests pass fakes).
    """

    def __init__(
        self,
        output_root: str | os.PathLike | None = None,
        device: str = "cpu",
        weights: str | None = None,
        loader: Callable[[Any], Any] | None = None,
    ):
        self.output_root = Path(output_root) if output_root else Path(tempfile.mkdtemp(prefix="bokehdepth_app_"))
        self.device = device
        self.weights = weights
        self._loader = loader
        self._pipelines: dict[tuple, Any] = {}

    def pipeline(self, stage1: str, stage2: str, Ks: Sequence[float], seed: int, weights: str | None):
        """A loaded pipeline for these backends (reused across runs; K and seed are set per run)."""
        from dataclasses import replace

        from .pipelines.bokehdepth import BokehDepthPipeline, RunConfig

        weights = weights or self.weights
        config = RunConfig(
            Ks=tuple(Ks), stage1=stage1, stage2=stage2, weights=weights, seed=int(seed), device=self.device
        )
        config = config.check()
        key = (stage1, stage2, weights, self.device)
        if key not in self._pipelines:
            self._pipelines[key] = (self._loader or BokehDepthPipeline.load)(config)
        pipe = self._pipelines[key]
        pipe.config = replace(pipe.config, Ks=config.Ks, seed=config.seed)
        return pipe

    def run(self, image_path: str, stage1: str, stage2: str, k_text: str, seed: int, weights: str | None) -> Path:
        """One image → a run folder under :attr:`output_root`; returns it."""
        from .pipelines.bokehdepth import new_run_dir

        if not image_path:
            raise InputError("image: upload an image or pick the example first")
        Ks = parse_k_text(k_text)
        pipe = self.pipeline(stage1, stage2, Ks, seed, weights)
        return pipe.run_image(image_path, new_run_dir(self.output_root), extra_args={"app": True})

    def open_run(self, run_dir: str | None) -> tuple[np.ndarray, np.ndarray]:
        """(ref image, depth) of a run folder made by this session (other paths are refused)."""
        from .io import read_image

        if not run_dir:
            raise InputError("no result yet: run an image first")
        path = Path(run_dir).resolve()
        root = self.output_root.resolve()
        if root not in path.parents or not (path / "depth.npy").is_file():
            raise InputError(f"{run_dir}: not a run folder of this app session; run an image first")
        return read_image(path / "ref.png"), np.load(path / "depth.npy")


# ----------------------------------------------------------------------------------------------------------
# the page
# ----------------------------------------------------------------------------------------------------------
def _message(exc: BaseException) -> str:
    if isinstance(exc, BokehDepthError):
        hint = " (on this page: the lens fields of the sweep tab)" if "; pass --" in str(exc) else ""
        return f"**error:** {exc}{hint}"
    return f"**error:** {type(exc).__name__}: {exc}"


def _gallery(run_dir: Path) -> list[tuple[np.ndarray, str]]:
    import json

    from .io import read_image

    index = json.loads((run_dir / "defocus_stack" / "stack_index.json").read_text())
    items = [(read_image(run_dir / "ref.png"), "K = 0 (sharp input)")]
    for i in index["ids"]:
        items.append((read_image(run_dir / "defocus_stack" / f"{i}.png"), f"K = {index['k_values'][i]:g}"))
    return items


def _summary_text(run_dir: Path) -> str:
    import json

    s = json.loads((run_dir / "pipeline_summary.json").read_text())
    d, t = s["depth_stats_m"], s["timings_s"]
    rng = "no valid depth" if d["min"] is None else f"{d['min']:.2f}–{d['max']:.2f} m (median {d['median']:.2f} m)"
    return (
        f"**done** in {t.get('stage1_s', 0) + t.get('stage2_s', 0):.1f} s "
        f"(Stage-1 {s['backends']['stage1']}: {t.get('stage1_s', 0):.1f} s, Stage-2 {s['backends']['stage2']}: "
        f"{t.get('stage2_s', 0):.1f} s) · depth {rng} · run folder `{run_dir}`"
    )


def sweep_photos(
    paths: Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    focus_side: str | None = None,
    focal_mm: str = "",
    f_numbers: str = "",
    focus_m: str = "",
    sensor_mm: str = "",
    max_width: int = 768,
) -> tuple[np.ndarray, np.ndarray, str]:
    """A real photo bracket → the ``bokehdepth sweep --photos`` outputs in ``out_dir``.

    Runs the sweep verb itself (same code path as the CLI). The lens fields are optional strings that
    override / supply EXIF (mm; f-numbers and focus distances one for all photos or one per photo).

    Returns:
        (sweep plot float32 RGB, depth figure with colour bar, message).
    Raises:
        InputError: fewer than two photos, a bad number, missing EXIF (naming the tag and the field).
    """
    from .cli import build_parser
    from .io import parse_floats, read_image

    paths = [str(p) for p in paths]
    if len(paths) < 2:
        raise InputError("photos: upload at least two photos of one scene, same focus, different f-numbers")
    argv = ["sweep", "--photos", *paths, "-o", str(out_dir), "--max-width", str(int(max_width))]
    if focus_side:
        argv += ["--focus-side", focus_side]
    for flag, text, name in (
        ("--focal-mm", focal_mm, "focal length (mm)"),
        ("--f-number", f_numbers, "f-numbers"),
        ("--focus-m", focus_m, "focus distance (m)"),
        ("--sensor-mm", sensor_mm, "sensor width (mm)"),
    ):
        values = parse_floats(text or "", name)
        if values:
            argv += [flag, *(f"{v:g}" for v in (values if flag in ("--f-number", "--focus-m") else values[:1]))]
    args = build_parser().parse_args(argv)
    args.func(args)
    out_dir = Path(out_dir)
    plot = read_image(out_dir / "sweep_plot.png")
    depth_path = out_dir / "depth.npy"
    depth = np.load(depth_path if depth_path.is_file() else out_dir / "disp_offset.npy")
    fig, _ = depth_figure(depth)
    valid = float(np.isfinite(depth).mean())
    return plot, fig, f"**done**: {len(paths)} photos · {100 * valid:.0f} % of pixels with depth · folder `{out_dir}`"


def build_app(session: AppSession | None = None, preload: str | os.PathLike | None = None):
    """The Gradio Blocks of the page (not launched). API names: ``/run``, ``/probe``, ``/refocus``,
    ``/sweep``, so the page can be driven by ``gradio_client`` as well as by clicks.

    Args:
        session: output root, device and loaded models (default: a new :class:`AppSession`).
        preload: an image run once when the page is built (default settings, refocused at its centre), so
            the page opens with results in place: for demos and the docs screenshot.
    """
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    from .pipelines.bokehdepth import DEFAULT_K, STAGE1_BACKENDS, STAGE2_BACKENDS

    session = session or AppSession()
    example = example_image()

    def do_run(image_path, stage1, stage2, k_text, seed, weights):
        try:
            run_dir = session.run(image_path, stage1, stage2, k_text, int(seed), (weights or "").strip() or None)
            ref, depth = session.open_run(str(run_dir))
            fig, _ = depth_figure(depth)
            h, w = depth.shape
            return _gallery(run_dir), fig, ref, str(run_dir), w // 2, h // 2, _summary_text(run_dir)
        except Exception as exc:  # shown on the page, never a stack trace
            return [], None, None, "", 0, 0, _message(exc)

    def do_probe(run_dir, x, y):
        try:
            _, depth = session.open_run(run_dir)
            value = probe_depth(depth, int(x), int(y))
            shown = "invalid (no depth)" if not np.isfinite(value) else f"{value:.3f} m"
            return f"depth at ({int(x)}, {int(y)}): **{shown}**"
        except Exception as exc:
            return _message(exc)

    def do_refocus(run_dir, x, y, K):
        try:
            ref, depth = session.open_run(run_dir)
            return refocus_image(ref, depth, int(x), int(y), float(K)), do_probe(run_dir, x, y)
        except Exception as exc:
            return None, _message(exc)

    def on_depth_click(run_dir, evt: gr.SelectData):
        try:
            _, depth = session.open_run(run_dir)
            pix = figure_to_pixel(evt.index[0], evt.index[1], view_scale(depth.shape[0]), depth.shape)
            if pix is None:
                return gr.update(), gr.update()
            return pix
        except Exception:
            return gr.update(), gr.update()

    def on_image_click(evt: gr.SelectData):
        return int(evt.index[0]), int(evt.index[1])

    # this module uses postponed annotations; gradio finds the event-data parameter by its real type
    on_depth_click.__annotations__["evt"] = gr.SelectData
    on_image_click.__annotations__["evt"] = gr.SelectData

    def do_sweep(files, focus_side, focal_mm, f_numbers, focus_m, sensor_mm):
        from .pipelines.bokehdepth import new_run_dir

        try:
            paths = [f if isinstance(f, str) else getattr(f, "name", str(f)) for f in (files or [])]
            out = new_run_dir(session.output_root, prefix="sweep")
            side = None if focus_side == "unknown" else focus_side
            return sweep_photos(paths, out, side, focal_mm, f_numbers, focus_m, sensor_mm)
        except Exception as exc:
            return None, None, _message(exc)

    init: dict[str, Any] = {
        "gallery": None,
        "depth": None,
        "refocused": None,
        "run_dir": "",
        "x": 0,
        "y": 0,
        "status": "",
        "probe": "",
    }
    if preload is not None:  # run once now, so the page opens with the results in place (no event round trip)
        keys = ("gallery", "depth", "refocused", "run_dir", "x", "y", "status")
        k_default = " ".join(f"{k:g}" for k in DEFAULT_K)
        init.update(zip(keys, do_run(str(preload), "compact", "compact", k_default, 42, session.weights or "")))
        if init["run_dir"]:
            init["refocused"], init["probe"] = do_refocus(init["run_dir"], init["x"], init["y"], REFOCUS_K)

    with gr.Blocks(title="bokehdepth", analytics_enabled=False) as demo:
        gr.Markdown(
            "## bokehdepth: bokeh stack and metric depth from one image\n"
            "Upload a photo (or pick the example), choose the backends and blur strengths K, press **Run**. "
            "Click the depth map to read the depth in metres; click the picture on the right to refocus there."
        )
        with gr.Tab("Image → stack → depth"):
            with gr.Row():
                with gr.Column(scale=1):
                    image = gr.Image(
                        None if preload is None else str(preload),
                        type="filepath",
                        label="input image",
                        sources=["upload", "clipboard"],
                    )
                    if example is not None:
                        gr.Examples([[str(example)]], inputs=[image], label="example (real photo)")
                    with gr.Row():
                        stage1 = gr.Dropdown(list(STAGE1_BACKENDS), value="compact", label="Stage-1 (stack)")
                        stage2 = gr.Dropdown(list(STAGE2_BACKENDS), value="compact", label="Stage-2 (depth)")
                    k_text = gr.Textbox(
                        " ".join(f"{k:g}" for k in DEFAULT_K), label="K values (normalized, 1–30, one frame each)"
                    )
                    with gr.Row():
                        seed = gr.Number(42, precision=0, label="seed")
                        weights = gr.Textbox(
                            session.weights or "", label="weights folder (released checkpoints; empty = embedded)"
                        )
                    run_btn = gr.Button("Run", variant="primary")
                    status = gr.Markdown(init["status"])
                with gr.Column(scale=2):
                    gallery = gr.Gallery(init["gallery"], label="bokeh stack", columns=4, height=220, format="png")
                    with gr.Row():
                        depth_view = gr.Image(
                            init["depth"], label="metric depth (click to probe)", format="png", interactive=False
                        )
                        refocused = gr.Image(
                            init["refocused"], label="refocus (click to set focus)", format="png", interactive=False
                        )
                    with gr.Row():
                        px = gr.Number(init["x"], precision=0, label="x (px)")
                        py = gr.Number(init["y"], precision=0, label="y (px)")
                        strength = gr.Slider(0, 30, value=REFOCUS_K, step=0.5, label="refocus blur K (normalized)")
                        refocus_btn = gr.Button("Refocus")
                    probe = gr.Markdown(init["probe"])
                    run_dir = gr.Textbox(init["run_dir"], label="run folder", interactive=False)
        with gr.Tab("Sweep (real photos)"):
            gr.Markdown(
                "Upload an aperture bracket of one scene (same focus, different f-numbers, EXIF kept). The "
                "Depth-from-Bokeh Sweep regresses each pixel's blur against K; no learned weights."
            )
            with gr.Row():
                with gr.Column():
                    photos = gr.File(file_count="multiple", file_types=["image"], label="photos")
                    side = gr.Radio(
                        ["unknown", "near", "far"], value="unknown", label="the focus plane is the nearest/farthest"
                    )
                    with gr.Accordion("lens (only where EXIF lacks it)", open=False):
                        with gr.Row():
                            focal = gr.Textbox(label="focal length (mm)")
                            sensor = gr.Textbox(label="sensor width (mm)")
                        with gr.Row():
                            fnums = gr.Textbox(label="f-numbers (one per photo)")
                            focus = gr.Textbox(label="focus distance (m)")
                    sweep_btn = gr.Button("Sweep", variant="primary")
                    sweep_status = gr.Markdown()
                sweep_plot = gr.Image(label="sweep plot", format="png", interactive=False)
                sweep_depth = gr.Image(label="depth", format="png", interactive=False)

        run_btn.click(
            do_run,
            [image, stage1, stage2, k_text, seed, weights],
            [gallery, depth_view, refocused, run_dir, px, py, status],
            api_name="run",
        )
        py.submit(do_probe, [run_dir, px, py], [probe], api_name="probe")
        refocus_btn.click(do_refocus, [run_dir, px, py, strength], [refocused, probe], api_name="refocus")
        depth_view.select(on_depth_click, [run_dir], [px, py], api_name=False).then(
            do_probe, [run_dir, px, py], [probe], api_name=False
        )
        refocused.select(on_image_click, None, [px, py], api_name=False).then(
            do_refocus, [run_dir, px, py, strength], [refocused, probe], api_name=False
        )
        sweep_btn.click(
            do_sweep,
            [photos, side, focal, fnums, focus, sensor],
            [sweep_plot, sweep_depth, sweep_status],
            api_name="sweep",
        )
    return demo


def launch(
    host: str = "127.0.0.1",
    port: int | None = None,
    session: AppSession | None = None,
    block: bool = True,
    preload: str | os.PathLike | None = None,
):
    """Build and launch the page locally (no share link, no analytics); returns the Blocks."""
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    import gradio as gr

    session = session or AppSession()
    demo = build_app(session, preload=preload)
    example = example_image()
    allowed = [str(session.output_root)] + ([str(example.parent)] if example else [])
    if preload is not None:
        allowed.append(str(Path(preload).resolve().parent))
    theme = gr.themes.Default(
        font=["ui-sans-serif", "system-ui", "sans-serif"], font_mono=["ui-monospace", "monospace"]
    )
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=host,
        server_port=port,
        share=False,
        inbrowser=False,
        prevent_thread_lock=not block,
        show_error=True,  # gradio's own failures (an undecodable upload) reach the page as a message
        quiet=not block,
        allowed_paths=allowed,
        theme=theme,
        ssr_mode=False,
    )
    return demo
