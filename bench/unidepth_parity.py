"""Numerical parity of the ``udv2-dsfa`` backend with the official BokehDepth UniDepth code.

Needs a local checkout of https://github.com/fogradio/BokehDepth (``--reference-repo``); nothing of it is copied
here, it is imported from that folder. Its import-time-only dependencies that are not installed here (timm,
torchvision, wandb) are replaced by tiny stand-ins in ``sys.modules``; none of them is used by the code paths
exercised (model construction and ``encode_decode``).

Both models get the same weights: the released ``UDv2_dsfa_release.pth`` if ``--weights`` is given (loaded by
our strict loader, then copied into the reference model), else the reference model's random initialisation with
every layer-scale gate randomised to U(0.05, 0.3) so that no branch is trivially small. One random image of
``--size H W`` plus a 3-frame stack (K = 10, 20, 30) goes through

- the reference: ``pipeline.py``'s Stage-2 steps (``get_paddings``/``get_resize_factor``, zero pad, bilinear
  resize, /255, ImageNet normalisation, default camera cropped + resized, ``encode_decode``, ``_postprocess``
  to the padded size), in float32 on CPU;
- ours: ``UniDepthPredictor`` (same steps, own code).

Prints the maximum relative difference of depth and confidence, and both predicted intrinsics. Reference run
on 2026-11-23 (2-core x86-64 CPU, random weights, 100×140 input → 378×532 network input): depth max rel. diff
2.8e-7, confidence 2.4e-7, predicted intrinsics equal to 3 decimals.

    nice -n 10 venv/bin/python bench/unidepth_parity.py --reference-repo ~/src/BokehDepth [--weights W.pth]
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _install_import_stand_ins() -> None:
    """Minimal modules so that the reference package imports without timm / torchvision / wandb."""

    def module(name: str, **attrs) -> types.ModuleType:
        mod = sys.modules.get(name) or types.ModuleType(name)
        mod.__dict__.update(attrs)
        sys.modules[name] = mod
        return mod

    class _Unused:
        def __init__(self, *args, **kwargs):
            raise RuntimeError("stand-in class: not available in this benchmark")

    def _normalize(x, mean, std):
        m = torch.tensor(mean, device=x.device).view(1, -1, 1, 1)
        s = torch.tensor(std, device=x.device).view(1, -1, 1, 1)
        return (x - m) / s

    for name, attrs in {
        "timm": {},
        "timm.models": {},
        "timm.models.layers": {"trunc_normal_": torch.nn.init.trunc_normal_, "DropPath": _Unused},
        "timm.layers": {"__getattr__": lambda attr: _Unused},  # any class name the reference imports
        "torchvision": {},
        "torchvision.transforms": {},
        "torchvision.transforms.v2": {},
        "torchvision.transforms.v2.functional": {"normalize": _normalize},
        "wandb": {"Image": _Unused, "log": lambda *a, **k: None},
    }.items():
        try:
            __import__(name)
        except ImportError:
            module(name, **attrs)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reference-repo", required=True, type=Path, help="checkout of fogradio/BokehDepth")
    ap.add_argument("--weights", help="UDv2_dsfa_release.pth (optional; random weights otherwise)")
    ap.add_argument("--size", type=int, nargs=2, default=[100, 140], metavar=("H", "W"))
    ap.add_argument("--K", type=float, nargs="+", default=[10.0, 20.0, 30.0])
    args = ap.parse_args(argv)

    # the official package is a namespace package named ``unidepth``: make it importable from the checkout, and
    # drop this script's folder from the path, where bench/unidepth.py would shadow it
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(args.reference_repo / "UniDepth")] + [p for p in sys.path if Path(p or ".").resolve() != here]
    _install_import_stand_ins()
    from unidepth.models.unidepthv2 import unidepthv2_DSFA as R  # the official code, from the user's checkout
    from unidepth.utils.camera import BatchCamera, Pinhole

    from bokehdepth.models.unidepth import UniDepthConfig, UniDepthV2DSFA, load_model, unwrap_state_dict
    from bokehdepth.models.unidepth_predictor import IMAGENET_MEAN, IMAGENET_STD, UniDepthPredictor

    torch.manual_seed(0)
    cfg = json.loads((args.reference_repo / "UniDepth/configs/config_v2_vitl14_DSFA_inference.json").read_text())
    R.UniDepthV2DSFA.build_losses = lambda self, config: None  # losses are not part of inference
    ref = R.UniDepthV2DSFA(cfg).eval()
    if args.weights:
        mine, _ = load_model(args.weights)
        ref.load_state_dict(mine.state_dict(), strict=True)
    else:
        with torch.no_grad():
            for name, p in ref.named_parameters():
                if "gamma" in name:
                    p.uniform_(0.05, 0.3)
        mine = UniDepthV2DSFA(UniDepthConfig.full())
        mine.load_state_dict(unwrap_state_dict({"model": ref.state_dict()}, list(mine.state_dict())), strict=True)
    mine.eval()

    H, W = args.size
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (H, W, 3)).astype(np.float32)
    frames = np.clip(img[None] + rng.normal(0, 20, (len(args.K), H, W, 3)), 0, 255).round().astype(np.float32)

    # reference: pipeline.py Stage-2 steps, with the official helpers
    bounds = cfg["data"]["augmentations"]["shape_constraints"]
    paddings, padded = R.get_paddings((H, W), bounds["ratio_bounds"])
    factor, net_hw = R.get_resize_factor(padded, [bounds["pixels_min"], bounds["pixels_max"]])
    mean, std = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)

    def prep(a: np.ndarray) -> torch.Tensor:
        t = F.pad(torch.from_numpy(a).permute(0, 3, 1, 2), paddings, value=0.0)
        return (F.interpolate(t, size=net_hw, mode="bilinear", align_corners=False) / 255.0 - mean) / std

    f = 0.7 * W
    cam = BatchCamera.from_camera(Pinhole(K=torch.tensor([[[f, 0, W / 2], [0, f, H / 2], [0, 0, 1.0]]])))
    cam = cam.crop(left=-paddings[0], top=-paddings[2], right=-paddings[1], bottom=-paddings[3]).resize(factor)
    inputs = {
        "image": prep(img[None]),
        "camera": cam,
        "defocus_stack": prep(frames)[None],
        "defocus_k": torch.tensor([args.K]),
    }
    with torch.inference_mode():
        _, out = ref.encode_decode(inputs, image_metas=[])
    d_ref = R._postprocess(out["depth"], padded, paddings)[0, 0].numpy()
    c_ref = R._postprocess(out["confidence"], padded, paddings)[0, 0].numpy()
    K_ref = R._postprocess_intrinsics(out["intrinsics"], [factor], [paddings])[0].numpy()

    # ours
    pred = UniDepthPredictor(mine)
    geom = pred.geometry(H, W)
    d, c, K = pred._forward(
        img / 255.0, frames / 255.0, np.asarray(args.K, np.float32), pred._check_intrinsics(None, H, W), geom, False
    )
    result = {
        "input": [H, W],
        "network_input": list(geom.network_hw),
        "depth_max_rel_diff": float(np.max(np.abs(d - d_ref) / np.abs(d_ref))),
        "confidence_max_rel_diff": float(np.max(np.abs(c - c_ref) / np.abs(c_ref))),
        "intrinsics_reference": np.round(K_ref, 3).tolist(),
        "intrinsics_ours": np.round(K, 3).tolist(),
    }
    print(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
