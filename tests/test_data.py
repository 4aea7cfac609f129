"""Manifest reader/writer, the Stage-1/Stage-2 datasets and RGB-D folders."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from helpers_synth import TINY_SIZE, make_tiny_dataset

from bokehdepth.data import RGBDFolder, Stage1Dataset, Stage2Dataset, read_manifest, write_manifest
from bokehdepth.data.rgbd import crop_mask
from bokehdepth.errors import InputError
from bokehdepth.io import read_image, read_stack, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_dataset(tmp_path_factory.mktemp("data") / "ds", n=3)


# ---------------------------------------------------------------------------------------------- manifest
def test_manifest_round_trip(tmp_path):
    (tmp_path / "a").mkdir()
    for name in ("image.png", "depth.npy"):
        (tmp_path / "a" / name).write_bytes(b"")
    (tmp_path / "a" / "stack").mkdir()
    rec = {
        "id": "a",
        "image": "a/image.png",
        "depth": "a/depth.npy",
        "stack": "a/stack",
        "K": [0.0, 2.5],
        "K_convention": "metric",
        "disp_focus": 0.5,
        "focus_side": None,
        "split": "val",
        "seed": 4,
        "size": [8, 9],
        "intrinsics": {"fx": 10.0, "fy": 10.0, "cx": 4.0, "cy": 3.5},
        "extra": [1, 2],
    }
    path = write_manifest(tmp_path / "manifest.jsonl", [rec])
    back = read_manifest(tmp_path)
    assert len(back) == 1
    for key, value in rec.items():
        if key in ("image", "depth", "stack"):
            assert back[0][key] == str((tmp_path / value).resolve())
        else:
            assert back[0][key] == value
    assert read_manifest(path, split="train") == []
    # the writer's bytes depend on the content only
    write_manifest(tmp_path / "again.jsonl", [dict(reversed(list(rec.items())))])
    assert (tmp_path / "again.jsonl").read_bytes() == path.read_bytes()


def test_manifest_bad_line_names_file_and_line(tiny, tmp_path):
    lines = tiny.read_text().splitlines()
    bad = tmp_path / "manifest.jsonl"
    bad.write_text(lines[0] + "\n{not json\n")
    with pytest.raises(InputError, match=r"manifest.jsonl:2"):
        read_manifest(bad, check_files=False)
    rec = json.loads(lines[0])
    del rec["K"]
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(InputError, match=r"manifest.jsonl:1.*K"):
        read_manifest(bad, check_files=False)


def test_manifest_missing_file_named(tiny, tmp_path):
    rec = read_manifest(tiny)[0]  # absolute paths
    rec["depth"] = str(tiny.parent / "nowhere" / "depth.npy")
    bad = tmp_path / "manifest.jsonl"
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(InputError, match=r"nowhere/depth.npy"):
        read_manifest(bad)
    with pytest.raises(InputError, match="manifest not found"):
        read_manifest(tmp_path / "empty")


# ---------------------------------------------------------------------------------------------- Stage-2
def test_stage2_sample_matches_files(tiny):
    ds = Stage2Dataset(tiny)
    assert len(ds) == 3
    s = ds[1]
    rec = read_manifest(tiny)[1]
    stack = read_stack(rec["stack"])
    assert s["stack"].shape == (3, 3, TINY_SIZE, TINY_SIZE)
    np.testing.assert_array_equal(s["stack"].numpy(), stack.array().transpose(0, 3, 1, 2))
    np.testing.assert_array_equal(s["image"].numpy(), read_image(rec["image"]).transpose(2, 0, 1))
    np.testing.assert_array_equal(s["depth"].numpy(), np.load(rec["depth"]))
    assert s["valid"].dtype == torch.bool and bool(s["valid"].all())
    assert s["K"].tolist() == pytest.approx(rec["K"])
    assert s["K_convention"] == "metric"
    assert float(s["disp_focus"]) == pytest.approx(rec["disp_focus"], rel=1e-6)
    intr = rec["intrinsics"]
    assert s["intrinsics"].tolist() == pytest.approx([intr["fx"], intr["fy"], intr["cx"], intr["cy"]], rel=1e-6)


def test_stage2_crop_resize_flip_are_consistent(tiny):
    base = Stage2Dataset(tiny)[0]
    aug = Stage2Dataset(tiny, crop=16, size=32, flip=True, seed=0)
    rng_ok, unique_windows = False, 0
    for epoch in range(6):
        aug.set_epoch(epoch)
        s = aug[0]
        assert s["stack"].shape == (3, 3, 32, 32)
        # K follows the resize (metric K scales with the width: 16 → 32 px doubles it)
        np.testing.assert_allclose(s["K"].numpy(), base["K"].numpy() * 2.0, rtol=1e-6)
        np.testing.assert_allclose(s["intrinsics"][:2].numpy(), base["intrinsics"][:2].numpy() * 2.0, rtol=1e-6)
        # the same window in every frame and in the depth: locate the crop through the depth map
        d0 = base["depth"].numpy()
        dd = s["depth"].numpy()[::2, ::2]
        found = []
        for flip in (False, True):
            cand = dd[:, ::-1] if flip else dd
            for y in range(17):
                for x in range(17):
                    if np.array_equal(d0[y : y + 16, x : x + 16], cand):
                        found.append((flip, y, x))
        assert found, "augmented depth is not a crop of the original"
        flip, y, x = found[0]
        rng_ok |= flip
        if len(found) == 1:  # the window is known: the principal point moves with it (pixel centres)
            cx0, cy0 = base["intrinsics"][2:].numpy()
            cx, cy = (cx0 - x + 0.5) * 2 - 0.5, (cy0 - y + 0.5) * 2 - 0.5
            cx = 32 - 1 - cx if flip else cx
            np.testing.assert_allclose(s["intrinsics"][2:].numpy(), [cx, cy], atol=1e-4)
            unique_windows += 1
        frames = s["stack"].numpy()[:, :, ::2, ::2]
        orig = base["stack"].numpy()[:, :, y : y + 16, x : x + 16]
        ref = orig[..., ::-1] if flip else orig
        # resized with INTER_LINEAR ×2 then subsampled: close to the source pixels
        assert np.abs(frames - ref).mean() < 0.05
    assert rng_ok, "no flip drawn in 6 epochs"
    assert unique_windows >= 3


def test_stage2_normalized_K_follows_the_crop_not_the_resize(tmp_path):
    # normalised K is px at 512-px width per unit of normalised disparity: a crop to half the width halves
    # the pixels the same blur spans at 512 px, so K doubles; a resize scales blur and width alike
    m = make_tiny_dataset(tmp_path / "ds", n=1, K_convention="normalized", Ks=(10.0, 30.0))
    base = Stage2Dataset(m)[0]
    np.testing.assert_allclose(base["K"].numpy(), [0.0, 10.0, 30.0], rtol=1e-6)
    for size in (16, 32):
        s = Stage2Dataset(m, crop=16, size=size)[0]
        np.testing.assert_allclose(s["K"].numpy(), [0.0, 20.0, 60.0], rtol=1e-6)


def test_stage2_mismatched_depth_names_file(tiny, tmp_path):
    import shutil

    root = tmp_path / "ds"
    shutil.copytree(tiny.parent, root)
    rec = read_manifest(root)[0]
    np.save(rec["depth"], np.ones((5, 7), np.float32))
    with pytest.raises(InputError, match=r"000000/depth.npy.*7x5"):
        Stage2Dataset(root)[0]


def test_stage2_frames_option(tiny):
    s = Stage2Dataset(tiny, frames=[0, 2])[0]
    assert s["stack"].shape[0] == 2 and s["K"][0] == 0
    with pytest.raises(InputError, match="frames"):
        Stage2Dataset(tiny, frames=[1, 2])


# ---------------------------------------------------------------------------------------------- Stage-1
def test_stage1_target_is_the_published_render(tiny):
    from bokehdepth.render import render
    from bokehdepth.synth import normalize_disp, published_focus

    ds = Stage1Dataset(tiny, size=TINY_SIZE, split=None, crop_scale=(1.0, 1.0), flip=False, K_range=(5.0, 25.0))
    s = ds[0]
    rec = ds.records[0]
    image = read_image(rec["image"])
    depth = np.load(rec["depth"])
    mask = read_image(rec["mask"])[..., 0] > 0.5
    K = float(s["K"])
    assert 5.0 <= K <= 25.0
    dn, _, _ = normalize_disp(depth)
    focus, dn_flat = published_focus(dn, depth, mask, flatten=True)
    want = render(image, dn_flat, K * TINY_SIZE / 512, disp_focus=focus, backend="cpu")
    np.testing.assert_allclose(s["target"].numpy(), want.transpose(2, 0, 1), atol=1e-5)
    np.testing.assert_array_equal(s["image"].numpy(), image.transpose(2, 0, 1))
    assert float(s["disp_focus_norm"]) == pytest.approx(focus)
    # another epoch draws another K; the same epoch the same one
    assert float(ds[0]["K"]) == K
    ds.set_epoch(1)
    assert float(ds[0]["K"]) != K


def test_stage1_batches_with_dataloader(tiny):
    from torch.utils.data import DataLoader

    ds = Stage1Dataset(tiny, size=16, split=None)
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["image"].shape == (2, 3, 16, 16) and batch["target"].shape == (2, 3, 16, 16)
    assert batch["K"].shape == (2,)


def test_stage1_empty_split(tiny, tmp_path):
    rec = read_manifest(tiny)[0]
    rec["split"] = "val"
    m = tmp_path / "manifest.jsonl"
    m.write_text(json.dumps(rec) + "\n")
    with pytest.raises(InputError, match="no samples"):
        Stage1Dataset(m, split="train")


# ---------------------------------------------------------------------------------------------- RGB-D
def _write_png16(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), arr.astype(np.uint16))


def test_rgbd_nyu_bts_layout_and_eigen_crop(tmp_path):
    rng = np.random.default_rng(0)
    root = tmp_path / "nyu"
    mm = rng.integers(500, 9000, (48, 64)).astype(np.uint16)
    mm[0, 0] = 0
    (root / "bathroom").mkdir(parents=True)
    write_image(root / "bathroom" / "rgb_00045.jpg", rng.uniform(0, 1, (48, 64, 3)))
    _write_png16(root / "bathroom" / "sync_depth_00045.png", mm)
    ds = RGBDFolder(root)
    assert ds.layout == "nyuv2" and len(ds) == 1 and ds.crop == "eigen"
    s = ds.load(0)
    assert s["name"] == "bathroom_rgb_00045"
    np.testing.assert_allclose(s["depth"][1:], mm[1:] / 1000.0, rtol=1e-6)
    assert np.isnan(s["depth"][0, 0]) and not s["valid"][0, 0]
    # Eigen crop 45:471, 41:601 of 480x640 scaled to 48x64 → rows 4:47 (round(4.5)=4), cols 4:60
    m = s["eval_mask"] | ~s["valid"]
    assert m[4:47, 4:60].all() and not s["eval_mask"][:4].any() and not s["eval_mask"][:, 60:].any()


def test_rgbd_kitti_layout_scale_and_garg(tmp_path):
    root = tmp_path / "kitti"
    val = (np.arange(20 * 30).reshape(20, 30) % 5000 + 256).astype(np.uint16)
    write_image(root / "image" / "2011_09_26_drive_0002_sync_image_0000000005_image_02.png", np.zeros((20, 30, 3)))
    _write_png16(
        root / "groundtruth_depth" / "2011_09_26_drive_0002_sync_groundtruth_depth_0000000005_image_02.png", val
    )
    ds = RGBDFolder(root)
    assert ds.layout == "kitti" and ds.crop == "garg" and ds.max_depth == 80.0
    s = ds.load(0)
    np.testing.assert_allclose(s["depth"], val / 256.0, rtol=1e-6)
    np.testing.assert_array_equal(s["eval_mask"], crop_mask((20, 30), "garg", "kitti"))
    g = crop_mask((375, 1242), "garg", "kitti")
    assert g.sum() == (int(0.99189189 * 375) - int(0.40810811 * 375)) * (
        int(0.96405229 * 1242) - int(0.03594771 * 1242)
    )


def test_rgbd_eth3d_raw_float(tmp_path):
    root = tmp_path / "eth3d" / "courtyard"
    depth = np.full((12, 18), 4.5, np.float32)
    depth[2, 3] = np.inf
    write_image(root / "images" / "dslr_images_undistorted" / "DSC_0001.JPG", np.zeros((12, 18, 3)))
    (root / "ground_truth_masked" / "dslr_images").mkdir(parents=True)
    depth.astype("<f4").tofile(root / "ground_truth_masked" / "dslr_images" / "DSC_0001.JPG")
    ds = RGBDFolder(tmp_path / "eth3d")
    assert ds.layout == "eth3d"
    s = ds.load(0)
    assert s["name"] == "courtyard_DSC_0001"
    assert np.isnan(s["depth"][2, 3]) and s["valid"].sum() == 12 * 18 - 1
    t = ds[0]
    assert t["image"].shape == (3, 12, 18) and t["depth"][2, 3] == 0


def test_rgbd_bad_folders_name_the_file(tmp_path):
    root = tmp_path / "flat"
    write_image(root / "rgb" / "a.png", np.zeros((8, 8, 3)))
    (root / "depth").mkdir()
    with pytest.raises(InputError, match=r"depth/a.npy"):
        RGBDFolder(root)
    np.save(root / "depth" / "a.npy", np.ones((8, 9), np.float32))
    ds = RGBDFolder(root)
    with pytest.raises(InputError, match=r"depth/a.npy.*9x8"):
        ds.load(0)
    junk = tmp_path / "junk"
    junk.mkdir()
    (junk / "notes.txt").write_text("x")
    with pytest.raises(InputError, match="not a recognised"):
        RGBDFolder(junk)
