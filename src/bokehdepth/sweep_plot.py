"""The sweep's regression plot: measured blur radius against K for a few pixels, with the fitted lines
``r = K·δ̂`` through the origin (matplotlib, Agg backend, no display needed)."""

from __future__ import annotations

import os

import numpy as np

__all__ = ["pick_pixels", "plot_sweep"]


def pick_pixels(offset: np.ndarray, confidence: np.ndarray, n: int = 4) -> list[tuple[int, int]]:
    """Up to ``n`` (y, x) pixels spread over the range of ``offset`` (H, W): among pixels with confidence in the
    top half, the range of δ̂ is cut into ``n`` equal bins and each non-empty bin gives its most confident
    pixel."""
    ok = np.isfinite(offset) & (confidence > 0)
    if not ok.any():
        return []
    thr = np.quantile(confidence[ok], 0.5)
    cand = np.flatnonzero(ok & (confidence >= thr))
    vals = offset.ravel()[cand]
    conf = confidence.ravel()[cand]
    edges = np.linspace(vals.min(), vals.max(), n + 1)
    bins = np.clip(np.searchsorted(edges, vals, side="right") - 1, 0, n - 1)
    w = offset.shape[1]
    picks = []
    for b in range(n):
        sel = np.flatnonzero(bins == b)
        if sel.size:
            i = cand[sel[np.argmax(conf[sel])]]
            picks.append((int(i // w), int(i % w)))
    return picks


def plot_sweep(result, path: str | os.PathLike, n: int = 4) -> None:
    """Write ``path`` (PNG): measured radius (px) against effective K for ``n`` pixels of a
    :class:`bokehdepth.sweep.SweepResult` with their regression lines; hollow markers are frames dropped
    from the fit (blur beyond ``max_radius``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .io import atomic_file

    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=110)
    if result.info.get("bracket") == "focus":
        _plot_focus(ax, result, n)
    else:
        _plot_aperture(ax, result, n)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def _plot_focus(ax, result, n: int) -> None:
    """Focus bracket: blur radius of each frame (predicted from the best disparity) against the frame's
    focus disparity, with the V-shaped model ``r = K_i·|d̂ − disp_focus_i|``."""
    dfs = np.asarray(result.info["disp_focus_per_frame"], dtype=np.float64)
    K = np.asarray(result.info["K"], dtype=np.float64)
    xs = np.linspace(0.0, dfs.max() * 1.3, 100)
    for j, (y, x) in enumerate(pick_pixels(result.raw_offset, result.confidence, n)):
        d = float(1.0 / result.depth[y, x]) if np.isfinite(result.depth[y, x]) else np.nan
        r = K * np.abs(d - dfs)
        ax.plot(dfs, r, "o", color=f"C{j}", label=f"({x},{y}) {1 / d:.2f} m, conf {result.confidence[y, x]:.2f}")
        ax.plot(xs, K.mean() * np.abs(d - xs), "-", lw=1, color=f"C{j}")
    ax.set_xlabel("focus disparity of the frame (1/m)")
    ax.set_ylabel("blur radius (px)")
    ax.set_title("Focus-bracket sweep: r_i = K_i·|d − disp_focus_i|")
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")


def _plot_aperture(ax, result, n: int) -> None:
    K = np.asarray(result.K_eff, dtype=np.float64)
    kk = np.linspace(0.0, K.max() * 1.05, 50)
    unit = "1/m" if result.offset_units == "1/m" else "norm. disp"
    for j, (y, x) in enumerate(pick_pixels(result.raw_offset, result.confidence, n)):
        colour = f"C{j}"
        r = result.radius[:, y, x]
        v = result.valid[:, y, x]
        d = float(result.raw_offset[y, x])
        label = f"({x},{y}) δ̂={d:.3g} {unit}, conf {result.confidence[y, x]:.2f}"
        if result.depth is not None and np.isfinite(result.depth[y, x]):
            label += f", {result.depth[y, x]:.2f} m"
        ax.plot(K[v], r[v], "o", color=colour, label=label)
        ax.plot(K[~v], r[~v], "o", mfc="none", color=colour)
        ax.plot(kk, kk * d, "-", color=colour, lw=1)
    ax.set_xlabel("K (px·m)" if result.offset_units == "1/m" else "K (px per unit normalised disparity)")
    ax.set_ylabel("blur radius relative to reference (px)")
    ax.set_title("Depth-from-Bokeh Sweep: r = K·δ̂")
    ax.set_xlim(0, kk[-1])
    ax.set_ylim(bottom=0)
    ax.legend(fontsize=7, loc="upper left")
