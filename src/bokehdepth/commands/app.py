"""``bokehdepth app [--port P] [--host 127.0.0.1]``: the local Gradio page (needs the ``app`` extra)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "app",
        help="start the Gradio page (upload, stack, depth, probe, refocus, sweep)",
        description="Start the local Gradio page: upload an image, get its bokeh stack and metric depth, probe "
        "depth and refocus by clicking, run the sweep on real photo brackets. Offline; needs the 'app' extra "
        "(pip install 'bokehdepth[app]').",
    )
    p.add_argument("--port", type=int, default=None, help="port (default: 7860 or the next free one)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1, this machine only)")
    p.add_argument("--output-root", metavar="DIR", help="where the page's run folders go (default: a temp folder)")
    p.add_argument("--weights", metavar="DIR", help="folder of released checkpoints (env BOKEHDEPTH_WEIGHTS)")
    p.add_argument("--device", default="cpu", help="torch device for the models (default cpu)")
    p.add_argument("--preload", metavar="IMAGE", help="run this image when the page opens (demos, screenshots)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError

    if args.port is not None and not 0 < args.port < 65536:
        raise InputError(f"--port: must be 1-65535, got {args.port}")
    try:
        import gradio  # noqa: F401
    except ModuleNotFoundError:
        raise InputError("app: gradio is not installed; run: pip install 'bokehdepth[app]'") from None
    from ..app import AppSession, launch
    from ..io import read_image

    if args.preload:
        read_image(args.preload)  # a bad file fails here, with the file named
    session = AppSession(args.output_root, device=args.device, weights=args.weights)
    launch(args.host, args.port, session, preload=args.preload)
    return 0
