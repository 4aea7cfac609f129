"""``bokehdepth depth IMAGE --stack STACK_DIR -o OUT_DIR``: Stage-2 metric depth from an image and its stack."""

from __future__ import annotations

import argparse
import os

BACKENDS = ("compact", "dav2-dsfa-s", "dav2-dsfa-b", "dav2-dsfa-l", "udv2-dsfa")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "depth",
        help="metric depth from an image and its bokeh stack (Stage-2)",
        description="Metric depth from an image and its bokeh stack. Writes OUT_DIR/depth.npy (float32 metres, "
        "input size, NaN invalid) and OUT_DIR/depth_color.png.",
    )
    p.add_argument("image", help="the sharp input image (the stack's reference)")
    p.add_argument("--stack", required=True, help="stack folder (frame_*.png + stack.json, or a defocus_stack/)")
    p.add_argument("--backend", choices=BACKENDS, default="compact", help="depth model (default: compact)")
    p.add_argument(
        "--weights",
        default=os.environ.get("WEIGHTS_PATH"),
        help="weights file or folder (default: embedded for compact; $BOKEHDEPTH_WEIGHTS / $WEIGHTS_PATH otherwise)",
    )
    p.add_argument("--single-frame", action="store_true", help="bypass the DSFA blocks (reference image only)")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="device (default: cpu)")
    p.add_argument("-o", "--output", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_dir, read_image, read_stack, write_depth_outputs, write_json
    from ..pipelines.depth import load_depth_predictor, split_stack

    image = read_image(args.image)
    stack = read_stack(args.stack)
    split_stack(image, stack)  # size check before any model is loaded
    predictor = load_depth_predictor(args.backend, args.weights, args.device)
    result = predictor.predict(image, stack, single_frame=args.single_frame)
    with atomic_dir(args.output, owned=("depth.npy", "depth_color.png", "depth_info.json")) as tmp:
        write_depth_outputs(tmp, result.depth)
        write_json(tmp / "depth_info.json", {"image": str(args.image), "stack": str(args.stack), **result.info})
    print(f"wrote {args.output}/depth.npy and depth_color.png ({args.backend})")
    return 0
