"""The Gradio page: pure helpers (colour bar figure, click mapping, probe, refocus) and the whole page driven
through gradio's Python client against a server on 127.0.0.1 (Stage-1/2 are the fakes of helpers_run.py, so
the page logic is what is tested; ~15 s, most of it importing gradio)."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from helpers_run import make_corrupt, make_image, use_fakes

from bokehdepth.app import AppSession, depth_figure, figure_to_pixel, probe_depth, refocus_image, view_scale
from bokehdepth.errors import InputError
from bokehdepth.io import read_image


def test_depth_figure_has_map_and_colorbar():
    depth = np.linspace(1.0, 9.0, 30 * 20, dtype=np.float32).reshape(30, 20)
    fig, scale = depth_figure(depth, min_height=90)
    assert scale == 3 == view_scale(30, 90)
    assert fig.shape[0] == 90 and fig.shape[1] > 60 + 40  # map (60 px wide) + gap + bar
    from bokehdepth.viz import depth_to_color

    np.testing.assert_allclose(fig[::3, :60:3], depth_to_color(depth), atol=1e-6)  # the map, enlarged
    bar = fig[:, 60:]
    assert bar.std() > 0.05  # something is drawn there (colours and labels)
    # click mapping: figure pixel → depth pixel, the bar is not a pixel
    assert figure_to_pixel(7, 29, scale, depth.shape) == (2, 9)
    assert figure_to_pixel(65, 10, scale, depth.shape) is None
    assert probe_depth(depth, 2, 9) == pytest.approx(depth[9, 2])
    with pytest.raises(InputError):
        probe_depth(depth, 20, 0)


def test_refocus_keeps_focused_plane_sharp():
    """Two-plane scene: focusing on a plane leaves it unchanged (r = 0 there) and blurs the other."""
    rng = np.random.default_rng(0)
    img = rng.random((32, 48, 3)).astype(np.float32)
    depth = np.full((32, 48), 4.0, np.float32)
    depth[:, 24:] = 1.0
    near = refocus_image(img, depth, 36, 16, K=20)
    far = refocus_image(img, depth, 5, 16, K=20)
    np.testing.assert_allclose(near[:, 30:], img[:, 30:], atol=2e-3)  # in focus, away from the edge
    np.testing.assert_allclose(far[:, :18], img[:, :18], atol=2e-3)
    assert np.abs(near[:, :18] - img[:, :18]).mean() > 0.05  # the other plane is blurred
    assert np.abs(far[:, 30:] - img[:, 30:]).mean() > 0.05


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_app_with_gradio_client(tmp_path, monkeypatch):
    pytest.importorskip("gradio")
    from gradio_client import Client, handle_file

    from bokehdepth.app import launch

    use_fakes(monkeypatch)
    monkeypatch.delenv("BOKEHDEPTH_WEIGHTS", raising=False)
    session = AppSession(tmp_path / "runs")
    port = _free_port()
    demo = launch("127.0.0.1", port, session, block=False)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        img = make_image(tmp_path / "in.png", 24, 40)
        gallery, depth_view, refocused, run_dir, x, y, status = client.predict(
            handle_file(str(img)), "compact", "compact", "10 20", 42, "", api_name="/run"
        )
        assert status.startswith("**done**"), status
        assert [g["caption"] for g in gallery] == ["K = 0 (sharp input)", "K = 10", "K = 20"]
        depth = np.load(f"{run_dir}/depth.npy")
        assert depth.shape == (24, 40) and (x, y) == (20, 12)
        assert read_image(depth_view).shape[0] == 24 * view_scale(24)
        # probe: the value in metres at the pixel
        text = client.predict(run_dir, 5, 7, api_name="/probe")
        assert f"{depth[7, 5]:.3f} m" in text
        # refocus at a clicked point: the renderer driven by the predicted depth
        out_path, text = client.predict(run_dir, 30, 4, 12, api_name="/refocus")
        expected = refocus_image(read_image(f"{run_dir}/ref.png"), depth, 30, 4, 12)
        np.testing.assert_allclose(read_image(out_path), expected, atol=1.5 / 255)
        assert f"({30}, {4})" in text
        # missing released weights: a clear message naming the file, no run folder
        empty = tmp_path / "weights"
        empty.mkdir()
        n_runs = len(list(session.output_root.iterdir()))
        *_, status = client.predict(handle_file(str(img)), "kontext", "compact", "10", 42, str(empty), api_name="/run")
        assert status.startswith("**error:**") and "bokeh_lora.bin" in status and "fogradio/BokehDepth" in status
        assert len(list(session.output_root.iterdir())) == n_runs
        # bad K and a probe outside the image: messages, not crashes
        *_, status = client.predict(handle_file(str(img)), "compact", "compact", "ten", 42, "", api_name="/run")
        assert status.startswith("**error:**") and "K values" in status
        assert "outside" in client.predict(run_dir, 400, 2, api_name="/probe")
        # a path that is not a run of this session is refused
        assert "not a run folder" in client.predict(str(tmp_path), 1, 1, api_name="/probe")
        # a corrupt upload: gradio's image decoder refuses it before our callback, and says why
        bad = make_corrupt(tmp_path / "bad.png")
        with pytest.raises(Exception, match="cannot identify image file"):
            client.predict(handle_file(str(bad)), "compact", "compact", "10", 42, "", api_name="/run")
        assert len(list(session.output_root.glob("run_*"))) == n_runs
        # sweep tab: a real-photo-style aperture bracket (two planes, 2 m in focus and 4 m) rendered with K
        # from the thin-lens model; the lens fields stand in for EXIF
        paths = _aperture_bracket(tmp_path / "bracket")
        plot, depth_fig, status = client.predict(
            [handle_file(str(p)) for p in paths], "near", "200", "16 4 2", "2", "36", api_name="/sweep"
        )
        assert status.startswith("**done**"), status
        assert read_image(plot).shape[0] > 100 and read_image(depth_fig).shape[0] >= 48
        out = sorted(session.output_root.glob("sweep_*"))[-1]
        swept = np.load(out / "depth.npy")
        assert np.nanmedian(swept[:, :30]) == pytest.approx(2.0, rel=0.1)
        assert np.nanmedian(swept[:, 42:]) == pytest.approx(4.0, rel=0.1)
        *_, status = client.predict([handle_file(str(p)) for p in paths], "near", "", "", "", "", api_name="/sweep")
        assert status.startswith("**error:**") and "FocalLength" in status  # no EXIF: names the missing tag
    finally:
        demo.close()


def _aperture_bracket(folder):
    """Three 72×48 photos at f/16, f/4, f/2 (200 mm, 36 mm sensor, focus 2 m) of two textured planes."""
    from bokehdepth.io import write_image
    from bokehdepth.lens import k_from_camera
    from bokehdepth.render.api import render

    folder.mkdir()
    rng = np.random.default_rng(0)
    img = rng.random((48, 72, 3)).astype(np.float32)
    depth = np.full((48, 72), 2.0, np.float32)
    depth[:, 36:] = 4.0
    paths = []
    for n in (16, 4, 2):
        path = folder / f"f{n}.png"
        write_image(path, render(img, 1 / depth, k_from_camera(200, n, 2.0, 36, 72), disp_focus=0.5))
        paths.append(path)
    return paths


def test_app_command_bad_flags(tmp_path, capsys):
    from bokehdepth.cli import main

    assert main(["app", "--port", "70000"]) == 2
    assert capsys.readouterr().err.startswith("error: --port")
    assert main(["app", "--preload", str(tmp_path / "nope.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nope.png" in err
