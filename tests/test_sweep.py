"""The Depth-from-Bokeh Sweep estimator (bokehdepth.sweep and helpers) against derivations and renders."""

from __future__ import annotations

import numpy as np
import pytest
from helpers_sweep import plane_stack, texture

from bokehdepth.errors import InputError
from bokehdepth.io import Stack
from bokehdepth.sweep import (
    SweepConfig,
    depth_from_offset,
    regress_offset,
    sweep_stack,
)
from bokehdepth.sweep_blur import disc_kernel, measure_blur, radius_grid, reblur
from bokehdepth.sweep_fill import normalized_fill

INNER = (slice(8, -8), slice(8, -8))  # away from the image border


# ------------------------------------------------------------------------------------------------ regression
def test_regression_exact_on_a_line():
    K = np.array([10.0, 20.0, 35.0])
    delta = np.array([[0.1, 0.25], [0.0, 0.6]])
    r = K[:, None, None] * delta[None]
    est, resid = regress_offset(K, r)
    np.testing.assert_allclose(est, delta, atol=1e-12)
    np.testing.assert_allclose(resid, 0.0, atol=1e-9)


def test_regression_unbiased_over_noise_seeds():
    """r_i = K_i·δ + ε_i, ε ~ N(0, σ²): mean of δ̂ over many seeds is δ (within 4 standard errors) and its
    variance matches σ²/ΣK² (the least-squares formula)."""
    rng = np.random.default_rng(7)
    K = np.array([8.0, 16.0, 24.0, 32.0])
    delta, sigma, trials = 0.3, 0.5, 20000
    r = K[:, None] * delta + rng.normal(0.0, sigma, (K.size, trials))
    est, _ = regress_offset(K, r)
    sd = sigma / np.sqrt((K**2).sum())
    assert abs(est.mean() - delta) < 4 * sd / np.sqrt(trials)
    assert est.std() == pytest.approx(sd, rel=0.05)


def test_regression_error_shrinks_with_frames():
    rng = np.random.default_rng(3)
    errs = []
    for n in (2, 4, 8, 16):
        K = np.linspace(5.0, 40.0, n)
        r = K[:, None] * 0.2 + rng.normal(0.0, 0.5, (n, 5000))
        est, _ = regress_offset(K, r)
        errs.append(np.sqrt(np.mean((est - 0.2) ** 2)))
    assert all(b < a for a, b in zip(errs, errs[1:]))


def test_regression_weights_drop_measurements():
    K = np.array([10.0, 20.0, 30.0])
    r = np.array([1.0, 2.0, 99.0])  # the last one is an outlier we drop
    est, _ = regress_offset(K, r, np.array([1.0, 1.0, 0.0]))
    assert est == pytest.approx(0.1)
    with pytest.raises(InputError):
        regress_offset(np.array([-1.0, 2.0]), np.zeros(2))


# ------------------------------------------------------------------------------------------------ blur bank
def test_disc_kernel_is_the_renderer_kernel():
    from bokehdepth.render.kernels import edge_weight

    edge_weight = edge_weight.py_func  # the same code, without compiling it

    for radius in (0.0, 0.3, 0.7, 2.0, 5.5):
        k = disc_kernel(radius)
        half = k.shape[0] // 2
        ref = np.array(
            [
                [edge_weight(radius, float(np.hypot(x, y))) for x in range(-half, half + 1)]
                for y in range(-half, half + 1)
            ]
        )
        np.testing.assert_allclose(k, ref / ref.sum(), atol=1e-12)
    assert disc_kernel(0.4).shape == (1, 1)  # r <= 0.5: identity


def test_reblur_matches_renderer_on_a_plane():
    from bokehdepth.render.api import render

    img = texture(48, 56, seed=2)
    disp = np.full((48, 56), 0.25, np.float32)
    rendered = render(img, disp, 20.0, 0.5, gamma=2.2)  # radius 20·0.25 = 5 px
    ours = np.clip(reblur(img**2.2, 5.0), 0, None) ** (1 / 2.2)
    np.testing.assert_allclose(ours, rendered, atol=1e-4)


def test_measure_blur_subpixel():
    img = texture(64, 64, seed=4) ** 2.2
    truth = [2.3, 4.1, 6.9]
    meas = measure_blur(img, [reblur(img, r) for r in truth], max_radius=10)
    for m, r in enumerate(truth):
        assert np.median(meas.radius[m][INNER]) == pytest.approx(r, abs=0.15)
    assert meas.valid.all()
    assert radius_grid(2.0).tolist() == [0.0, 0.5, 1.0, 1.5, 2.0]


def test_torch_path_matches_numpy_path():
    pytest.importorskip("torch")
    from bokehdepth.sweep_torch import measure_blur_torch

    img = texture(40, 48, seed=6) ** 2.2
    frames = [reblur(img, r) for r in (1.8, 4.3)]
    a = measure_blur(img, frames, max_radius=6, window=9)
    b = measure_blur_torch(img, frames, max_radius=6, window=9, device="cpu")
    np.testing.assert_allclose(a.radius, b.radius, atol=1e-3)
    assert (a.valid == b.valid).all()
    stack = plane_stack(4.0, size=(48, 48), focus_side="near")
    np.testing.assert_allclose(sweep_stack(stack, device="cpu").depth, sweep_stack(stack).depth, rtol=1e-3, atol=1e-3)


def tracker_costs() -> np.ndarray:
    """(R = 6, 9) cost curves: minimum at the first / last candidate, ties (first kept), a plateau, a V,
    a constant, equal ends, and +inf / repeated values."""
    curves = [
        [1.0, 2.0, 3.0, 4.0, 5.0, 6.0],  # minimum at k = 0
        [6.0, 5.0, 4.0, 3.0, 2.0, 1.0],  # minimum at k = R − 1
        [3.0, 1.0, 1.0, 2.0, 4.0, 5.0],  # tie at k = 1, 2: the first is kept
        [1.0, 1.0, 2.0, 3.0, 3.0, 3.0],  # tie at k = 0, 1
        [5.0, 4.0, 2.0, 3.0, 2.0, 6.0],  # two separated equal minima
        [2.0, 2.0, 2.0, 2.0, 2.0, 2.0],  # constant
        [1.0, 3.0, 4.0, 4.0, 3.0, 1.0],  # equal ends
        [4.0, 3.0, 2.0, 1.0, 2.0, 3.0],  # a V
        [9.0, 9.0, 9.0, 9.0, 8.0, 8.0],  # tie at the last two
    ]
    return np.asarray(curves, dtype=np.float32).T.reshape(6, 3, 3)


def test_tracker_paths_agree_exactly_with_the_specification():
    """The numba kernel (numpy path), the array-API step in numpy and in torch (torch path) all give the same
    state, bit for bit, and that state is the brute-force one: first arg-min, its neighbours (the minimum's
    own cost where a neighbour is missing), the total."""
    from bokehdepth.sweep_blur import _MinTracker, tracker_init, tracker_step

    cost = tracker_costs()
    R = cost.shape[0]
    numba_t = _MinTracker(cost.shape[1:])
    state = tracker_init(cost.shape[1:])
    for k in range(R):
        numba_t.push(k, cost[k].copy())
        state = tracker_step(k, cost[k].copy(), state, np.where)
    for name in ("best", "k", "left", "right", "total", "prev"):
        np.testing.assert_array_equal(getattr(numba_t, name), state[name], err_msg=name)
        assert getattr(numba_t, name).dtype == state[name].dtype, name
    kk = np.argmin(cost, axis=0)
    take = lambda idx: np.take_along_axis(cost, idx[None], 0)[0]  # noqa: E731
    np.testing.assert_array_equal(state["k"], kk)
    np.testing.assert_array_equal(state["best"], cost.min(axis=0))
    np.testing.assert_array_equal(state["left"], take(np.maximum(kk - 1, 0)))
    np.testing.assert_array_equal(state["right"], take(np.minimum(kk + 1, R - 1)))
    np.testing.assert_array_equal(state["total"], cost.astype(np.float64).sum(axis=0))
    radii = np.arange(R) * 0.5
    from_state = _MinTracker.from_state(state, R).result(radii)
    for a, b in zip(numba_t.result(radii), from_state):
        np.testing.assert_array_equal(a, b)
    assert from_state[1].tolist() == [[True, False, True], [True, True, True], [True, True, True]]  # ties: first
    torch = pytest.importorskip("torch")
    tstate = {key: torch.as_tensor(val) for key, val in tracker_init(cost.shape[1:]).items()}
    for k in range(R):
        tstate = tracker_step(k, torch.as_tensor(cost[k]), tstate, torch.where)
    for name in state:
        assert tstate[name].numpy().dtype == state[name].dtype, name
        np.testing.assert_array_equal(tstate[name].numpy(), state[name], err_msg=name)


def test_step_must_leave_three_candidates():
    assert radius_grid(24.0, 12.0).tolist() == [0.0, 12.0, 24.0]
    for step in (30.0, 13.0, 0.0, -1.0, float("nan")):
        with pytest.raises(InputError, match="--step"):
            radius_grid(24.0, step)
    st = plane_stack(4.0, size=(32, 32))
    with pytest.raises(InputError, match="--step"):
        sweep_stack(st, step=30.0)
    from bokehdepth.sweep_focus import sweep_focus_bracket

    with pytest.raises(InputError, match="--step"):  # not an IndexError
        sweep_focus_bracket(Stack(frames=st.frames[:3], K=[10.0, 20.0, 30.0], reference=0), [0.5, 0.4, 0.3], step=30.0)


def test_blend_fill_nan_handling():
    from bokehdepth.sweep import _blend_fill

    h, w = 8, 16
    guide = np.full((h, w, 3), 0.5, np.float32)
    raw = np.full((h, w), 2.0)
    raw[:, w // 2 :] = 4.0
    conf = np.zeros((h, w))
    conf[:, :4] = 1.0  # confident on the left only
    raw[0, 0] = np.nan  # no own estimate: the fill
    out = _blend_fill(raw, conf, guide, SweepConfig(keep_confidence=0.5))
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out[:, 1:4], 2.0, atol=1e-6)  # confident: own value
    assert out[0, 0] == pytest.approx(2.0, abs=1e-3)
    np.testing.assert_allclose(out[:, -2:], 2.0, atol=1e-2)  # unconfident: the propagated value
    # no confident pixel anywhere: each keeps its own value; NaN only where there is none
    out = _blend_fill(raw, np.zeros((h, w)), guide, SweepConfig())
    assert np.isnan(out[0, 0]) and np.isfinite(out).sum() == h * w - 1
    np.testing.assert_array_equal(out[np.isfinite(out)], raw[np.isfinite(raw)].astype(np.float32))


def test_measure_blur_flags_clipped_radius():
    img = texture(64, 64, seed=5) ** 2.2
    meas = measure_blur(img, [reblur(img, 9.0)], max_radius=4)
    assert not meas.valid[0][INNER].any()


# ------------------------------------------------------------------------------------------------ planes
@pytest.mark.parametrize(("depth", "side"), [(4.0, "near"), (1.25, "far")])
def test_plane_depth_both_sides(depth, side):
    """Focus at 2 m; a plane behind it (focus_side near) or in front of it (far) → depth within 2 %."""
    stack = plane_stack(depth, focus_side=side)
    res = sweep_stack(stack)
    assert res.focus_side == side and res.ambiguous is None
    est = res.depth[INNER]
    assert np.nanmedian(np.abs(est - depth) / depth) < 0.02
    assert np.isfinite(est).all()
    assert np.nanmedian(res.disp_offset[INNER]) == pytest.approx(abs(1 / depth - 0.5), rel=0.02)


def test_two_planes():
    h, w = 64, 96
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, w // 2 :] = 2.5
    res = sweep_stack(plane_stack(depth, Ks=(10, 20, 30, 40), size=(h, w)), focus_side="near")
    left, right = res.depth[8:-8, 8 : w // 2 - 10], res.depth[8:-8, w // 2 + 10 : -8]
    assert np.median(np.abs(left - 4.0) / 4.0) < 0.03
    assert np.median(np.abs(right - 2.5) / 2.5) < 0.03


def test_error_shrinks_as_frames_are_added():
    """Consistency on noisy renders: RMS error of δ̂ falls from 1 to 3 to 8 blurred frames."""
    errs = []
    for Ks in ((30.0,), (10.0, 20.0, 30.0), (5, 10, 15, 20, 25, 30, 35, 40)):
        e = [
            np.nanmean(
                (sweep_stack(plane_stack(4.0, Ks=Ks, noise=0.01, seed=s), fill=False).raw_offset[INNER] - 0.25) ** 2
            )
            for s in range(2)
        ]
        errs.append(np.sqrt(np.mean(e)))
    assert errs[1] < errs[0] and errs[2] < errs[1]


def test_confidence_low_on_flat_region_and_fill():
    h, w = 64, 96
    img = texture(h, w, seed=1)
    img[:, w // 2 :] = 0.5  # textureless right half
    res = sweep_stack(plane_stack(4.0, size=(h, w), image=img), focus_side="near")
    flat = res.confidence[8:-8, w // 2 + 12 : -8]
    tex = res.confidence[8:-8, 8 : w // 2 - 12]
    assert np.median(flat) < 0.2 < 0.7 < np.median(tex)
    # the flat half is filled from the textured half (same plane): depth close to the truth
    assert np.nanmedian(np.abs(res.depth[8:-8, w // 2 + 12 : -8] - 4.0)) / 4.0 < 0.05


def test_normalized_fill_stops_at_edges():
    h, w = 32, 64
    guide = np.zeros((h, w, 3), np.float32)
    guide[:, w // 2 :] = 1.0
    values = np.where(np.arange(w)[None, :] < w // 2, 1.0, 5.0) * np.ones((h, 1))
    conf = np.zeros((h, w))
    conf[:, 2] = 1.0  # one confident column on the left, one on the right
    conf[:, -3] = 1.0
    filled, _ = normalized_fill(values, conf, guide, sigma_s=40.0, sigma_r=0.1)
    assert np.abs(filled[:, : w // 2 - 1] - 1.0).max() < 0.05
    assert np.abs(filled[:, w // 2 + 1 :] - 5.0).max() < 0.05


# ------------------------------------------------------------------------------------------------ ambiguity
def test_ambiguity_without_focus_side():
    """Without a focus side both solutions are returned; depth is NaN exactly where they differ."""
    h, w = 64, 96
    depth = np.full((h, w), 4.0, np.float32)
    depth[:, w // 2 :] = 2.0  # in focus
    res = sweep_stack(plane_stack(depth, size=(h, w)))
    assert res.focus_side is None
    blurred = (slice(8, -8), slice(8, w // 2 - 10))
    sharp = (slice(8, -8), slice(w // 2 + 10, -8))
    assert res.ambiguous[blurred].all() and np.isnan(res.depth[blurred]).all()
    assert not res.ambiguous[sharp].any()
    assert np.median(np.abs(res.depth[sharp] - 2.0)) < 0.06
    # the two solutions: 1/(0.5 ± 0.25) = 4 m behind, 4/3 m in front
    assert np.median(res.depth_far[blurred]) == pytest.approx(4.0, rel=0.02)
    assert np.median(res.depth_near[blurred]) == pytest.approx(4 / 3, rel=0.02)


def test_depth_from_offset_signs():
    off = np.array([0.0, 0.25, 0.6])
    np.testing.assert_allclose(depth_from_offset(off, 0.5, "far"), 1 / (0.5 + off), rtol=1e-6)
    near = depth_from_offset(off, 0.5, "near")
    np.testing.assert_allclose(near[:2], [2.0, 4.0], rtol=1e-6)
    assert np.isnan(near[2])  # beyond infinity
    with pytest.raises(InputError, match="focus-side"):
        depth_from_offset(off, 0.5, "middle")


# ------------------------------------------------------------------------------------------------ conventions
def test_normalized_stack_offset_and_disp_range():
    """A normalized stack (K in px at 512 width per unit normalised disparity) gives the normalised offset;
    with --disp-range it gives metric depth. ``disp_focus`` is in 1/m (the stack.json contract), also here."""
    w = 64
    metric = plane_stack(4.0, Ks=(10.0, 20.0, 30.0), size=(64, w))  # focus 0.5 1/m, plane 0.25 1/m
    dmin, dmax = 0.2, 1.0  # span 0.8 1/m → K_n = K·0.8·512/W
    stack = Stack(frames=metric.frames, K=[k * 0.8 * 512 / w for k in metric.K], K_convention="normalized")
    res = sweep_stack(stack)
    assert res.depth is None and res.offset_units == "normalized"
    assert np.median(res.disp_offset[INNER]) == pytest.approx(0.25 / 0.8, rel=0.02)
    with pytest.raises(InputError, match="--focus-m"):  # a range but no focus at all
        sweep_stack(stack, disp_range=(dmin, dmax))
    res = sweep_stack(stack, disp_range=(dmin, dmax), focus_m=2.0, focus_side="near")
    assert np.median(res.depth[INNER]) == pytest.approx(4.0, rel=0.02)
    # the metric focus (1/m), as the contract stores it: read as 1/m, not as a normalised value
    stack.disp_focus = 0.5
    res = sweep_stack(stack, disp_range=(dmin, dmax), focus_side="near")
    assert res.disp_focus == pytest.approx(0.5) and res.offset_units == "1/m"
    assert np.median(res.depth[INNER]) == pytest.approx(4.0, rel=0.02)
    # the normalised focus, when recorded, wins (it follows the range); here both agree
    stack.extra = {"disp_focus_norm": (0.5 - dmin) / (dmax - dmin)}
    res = sweep_stack(stack, disp_range=(dmin, dmax), focus_side="near")
    assert res.disp_focus == pytest.approx(0.5)
    assert np.median(res.depth[INNER]) == pytest.approx(4.0, rel=0.02)
    # ... and a recorded range is the default --disp-range; offset_only keeps the normalised offset
    stack.extra |= {"disp_min": dmin, "disp_max": dmax}
    res = sweep_stack(stack, focus_side="near")
    assert np.median(res.depth[INNER]) == pytest.approx(4.0, rel=0.02)
    assert res.info["disp_range"] == {
        "min": dmin,
        "max": dmax,
        "source": "stack.json disp_min/disp_max",
        "units": "1/m",
    }
    assert sweep_stack(stack, offset_only=True).depth is None
    for bad in ("x", "0.5", True, float("nan")):  # only JSON numbers are numbers
        stack.extra["disp_max"] = bad
        with pytest.raises(InputError, match="S/stack.json: field 'disp_max'"):
            sweep_stack(stack, where="S/stack.json")
    with pytest.raises(InputError, match="--disp-range"):
        sweep_stack(stack, disp_range=(1.0, 0.5))


def two_plane_scene(h: int = 64, w: int = 128, far: float = 4.0, near: float = 2.0):
    """A textured scene: the left half a plane at ``far`` m, the right half one at ``near`` m."""
    depth = np.full((h, w), far, np.float32)
    depth[:, w // 2 :] = near
    return texture(h, w, seed=11), depth


def test_synth_normalized_stack_recovers_metric_depth():
    """A normalized stack made exactly as synth makes it (``render_scene_stack(..., K_convention="normalized")``:
    ``disp_focus`` the metric focus in 1/m, ``extra`` = disp_focus_norm, disp_min, disp_max) gives the true
    metric depth with no flags (the recorded range), with ``--disp-range`` equal to that range, and, for
    another ``--disp-range``, the depth that range implies (normalised dn ↦ dmin + dn·(dmax − dmin))."""
    from bokehdepth.synth.stacks import render_scene_stack

    h, w = 64, 128
    img, depth = two_plane_scene(h, w)
    stack = render_scene_stack(img, depth, [24.0, 48.0, 72.0], K_convention="normalized")  # 6, 12, 18 px at dn 0
    assert stack.K_convention == "normalized" and stack.focus_side == "near"
    assert stack.extra["disp_min"] == pytest.approx(0.25) and stack.extra["disp_max"] == pytest.approx(0.5)
    assert stack.extra["disp_focus_norm"] == pytest.approx(1.0) and stack.disp_focus == pytest.approx(0.5)
    left, right = (slice(8, -8), slice(8, w // 2 - 12)), (slice(8, -8), slice(w // 2 + 12, -8))
    for res in (sweep_stack(stack), sweep_stack(stack, disp_range=(0.25, 0.5))):
        assert res.offset_units == "1/m" and res.disp_focus == pytest.approx(0.5)
        assert np.median(np.abs(res.depth[left] - 4.0)) / 4.0 < 0.03
        assert np.median(np.abs(res.depth[right] - 2.0)) / 2.0 < 0.03
    # another range: dn = 0 → 1/0.1 = 10 m, dn = 1 (the focus) → 1/0.6 m
    res = sweep_stack(stack, disp_range=(0.1, 0.6))
    assert res.disp_focus == pytest.approx(0.6)
    assert np.median(np.abs(res.depth[left] - 10.0)) / 10.0 < 0.05
    assert np.median(np.abs(res.depth[right] - 1 / 0.6)) / (1 / 0.6) < 0.03


def test_blurred_reference_aperture_bracket():
    """A photo-like bracket: the sharpest frame already has K = 8; K_eff = sqrt(K² − K_ref²) is regressed."""
    st = plane_stack(4.0, Ks=(8.0, 20.0, 30.0, 40.0))
    stack = Stack(frames=st.frames[1:], K=st.K[1:], disp_focus=0.5, reference=0, focus_side="near")
    res = sweep_stack(stack)
    assert np.median(np.abs(res.depth[INNER] - 4.0)) / 4.0 < 0.04


def test_focus_bracket_device_matches_numpy():
    """--device for focus brackets: the torch path (here on CPU) keeps the same cost volumes and gives the
    same depth as the numpy path."""
    pytest.importorskip("torch")
    from bokehdepth.render.api import render
    from bokehdepth.sweep_focus import sweep_focus_bracket
    from bokehdepth.sweep_torch import measure_blur_torch

    img = texture(40, 40, seed=3)
    dfs = np.array([1 / 1.5, 1 / 2.5, 1 / 4.0])
    K = [30.0, 30.0, 30.0]
    disp = np.full((40, 40), 1 / 3.0, np.float32)
    frames = [render(img, disp, k, df, gamma=2.2) for k, df in zip(K, dfs)]
    lin = [f**2.2 for f in frames]
    a = measure_blur(lin[1], [lin[0], lin[2]], max_radius=12, window=9, keep_cost=True)
    b = measure_blur_torch(lin[1], [lin[0], lin[2]], max_radius=12, window=9, keep_cost=True, device="cpu")
    np.testing.assert_allclose(a.cost, b.cost, rtol=1e-4, atol=1e-7)
    stack = Stack(frames=frames, K=K, disp_focus=dfs[1], reference=1)
    ref = sweep_focus_bracket(stack, dfs, max_radius=12, window=9)
    res = sweep_focus_bracket(stack, dfs, max_radius=12, window=9, device="cpu")
    assert res.info["device"] == "cpu"
    np.testing.assert_allclose(res.depth, ref.depth, rtol=1e-3)
    assert np.median(np.abs(res.depth[INNER] - 3.0)) / 3.0 < 0.03


def test_flags_that_do_not_apply_warn():
    st = plane_stack(4.0, size=(32, 32), focus_side="near")
    with pytest.warns(UserWarning, match="metric"):
        res = sweep_stack(st, disp_range=(0.1, 1.0))
    assert res.offset_units == "1/m" and res.disp_focus == 0.5
    with pytest.warns(UserWarning, match="focus_side"):
        from bokehdepth.sweep_focus import sweep_focus_bracket

        sweep_focus_bracket(
            Stack(frames=st.frames[:3], K=[1.0, 20.0, 30.0]), [0.5, 0.4, 0.3], max_radius=4, focus_side="near"
        )


def test_focus_bracket_plane():
    from bokehdepth.render.api import render
    from bokehdepth.sweep_focus import sweep_focus_bracket

    img = texture(64, 64, seed=3)
    dfs = np.array([1 / 1.5, 1 / 2.5, 1 / 4.0])
    K = [30.0, 30.0, 30.0]
    disp = np.full((64, 64), 1 / 3.0, np.float32)
    frames = [render(img, disp, k, df, gamma=2.2) for k, df in zip(K, dfs)]
    res = sweep_focus_bracket(Stack(frames=frames, K=K, disp_focus=dfs[1], reference=1), dfs)
    assert np.median(np.abs(res.depth[INNER] - 3.0)) / 3.0 < 0.03


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs():
    st = plane_stack(4.0)
    with pytest.raises(InputError, match="2 frames"):
        sweep_stack(Stack(frames=st.frames[:1], K=[0.0], disp_focus=0.5))
    with pytest.raises(InputError, match="disp_focus"):
        sweep_stack(Stack(frames=st.frames, K=st.K, disp_focus=None))
    with pytest.raises(InputError, match="--window"):
        sweep_stack(st, window=4)
    with pytest.raises(InputError, match="blurrier"):
        sweep_stack(Stack(frames=st.frames[:2], K=[5.0, 5.0], disp_focus=0.5))
    with pytest.raises(InputError, match="--max-radius"):
        sweep_stack(st, SweepConfig(max_radius=0))
    # stack errors name the stack as the caller says (the CLI: the stack.json path)
    with pytest.raises(InputError, match=r"^S/stack\.json: .*disp_focus"):
        sweep_stack(Stack(frames=st.frames, K=st.K, disp_focus=None), where="S/stack.json")
    with pytest.raises(InputError, match=r"^S/stack\.json: .*blurrier"):
        sweep_stack(Stack(frames=st.frames[:2], K=[5.0, 5.0], disp_focus=0.5), where="S/stack.json")
