"""``bokehdepth stack IMAGE --K K … [--backend compact|kontext] [--weights PATH] [--base DIR] [--seed S]
[--device D] -o STACK_DIR``.

Stage-1: a bokeh stack from one sharp image, with no depth map. Writes the stack folder (``frame_000.png`` =
the sharp input with K = 0, then one frame per K, ``stack.json`` with ``"K_convention": "normalized"`` and
``"source": "generated"``) plus ``contact_sheet.png`` inside STACK_DIR, all at once (nothing is left behind on
failure). K is the published normalised K (px at 512-px width per unit of normalised disparity): each must
be > 0, and values outside [1, 30] are clamped with a warning (docs/stage1.md).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..errors import InputError, OutputError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "stack",
        help="one sharp image + K list -> bokeh stack (Stage-1, no depth needed)",
        description="Generate a bokeh stack from one sharp image (Stage-1). K is the published normalised K: "
        "blur radius in px at 512-px width per unit of per-image normalised disparity, range 1-30.",
    )
    p.add_argument("image", help="sharp input image (PNG, JPEG, TIFF, WebP, BMP)")
    p.add_argument(
        "--K",
        dest="K",
        nargs="+",
        default=None,
        metavar="K",
        help="normalised K per frame (default: $K_VALUES or 10 20 30); each > 0, clamped to [1, 30] with a warning",
    )
    p.add_argument(
        "--backend",
        choices=("compact", "kontext"),
        default="compact",
        help="compact: embedded CPU generator (default); kontext: FLUX.1-Kontext-dev + bokeh_lora.bin (GPU)",
    )
    p.add_argument(
        "--weights",
        default=None,
        help="compact: generator .safetensors (default: embedded); kontext: bokeh_lora.bin or its folder "
        "(default: $ADAPTER_CKPT, then $BOKEHDEPTH_WEIGHTS)",
    )
    p.add_argument("--base", default=None, help="kontext: local FLUX.1-Kontext-dev folder (diffusers layout)")
    p.add_argument("--seed", type=int, default=None, help="random seed (default: $SEED or 42; kontext only)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default: cpu)")
    p.add_argument(
        "--working-size",
        type=int,
        default=None,
        help="compact: short side (px) the network runs at; smaller inputs run at their size (default 512)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="compact: torch CPU threads while generating (default 1, fastest on a CPU shared with other jobs)",
    )
    k = p.add_argument_group("kontext backend (defaults: the published run_inference.sh)")
    k.add_argument("--dtype", choices=("auto", "bf16", "fp16", "fp32"), default=None, help="auto: bf16 on CUDA")
    k.add_argument("--steps", type=int, default=None, help="denoising steps (50)")
    k.add_argument("--guidance", type=float, default=None, help="FLUX distilled guidance (7.0)")
    k.add_argument("--cpu-offload", action="store_true", help="model CPU offload for smaller GPUs")
    k.add_argument("--vae-tiling", action="store_true", help="tiled VAE decoding (less memory)")
    k.add_argument("--no-color-transfer", action="store_true", help="skip the LAB colour transfer ref -> frame")
    p.add_argument("--bits", type=int, choices=(8, 16), default=8, help="PNG bit depth of the frames (default 8)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-o", "--output", required=True, metavar="STACK_DIR", help="output stack folder")
    p.set_defaults(func=run)


def _check_output(path: Path) -> None:
    """Fail before any work if ``path`` cannot become a folder we write into."""
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a folder; choose another -o STACK_DIR")
    parent = path if path.exists() else path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output location is not writable; choose a folder you can write to with -o")


_KONTEXT_ONLY = {
    "base": "--base",
    "dtype": "--dtype",
    "steps": "--steps",
    "guidance": "--guidance",
    "cpu_offload": "--cpu-offload",
    "vae_tiling": "--vae-tiling",
    "no_color_transfer": "--no-color-transfer",
}


def _backend_options(args: argparse.Namespace) -> dict:
    """Keyword arguments of the chosen backend; a flag of the other backend is an error naming it."""
    given = {k: getattr(args, k) for k in _KONTEXT_ONLY if getattr(args, k) not in (None, False)}
    if args.backend == "compact":
        if given:
            flag = _KONTEXT_ONLY[next(iter(given))]
            raise InputError(f"{flag}: only used by --backend kontext; drop it for the compact backend")
        if args.threads is not None and args.threads < 1:
            raise InputError(f"--threads: must be >= 1, got {args.threads}")
        return {"short_side": args.working_size or 512, "threads": args.threads or 1}
    for dest, flag in (("working_size", "--working-size"), ("threads", "--threads")):
        if getattr(args, dest) is not None:
            raise InputError(f"{flag}: only used by --backend compact; drop it for kontext")
    kw = {k: v for k, v in given.items() if k != "no_color_transfer"}
    if args.no_color_transfer:
        kw["color_transfer"] = False
    return kw


def _env_seed() -> int:
    value = os.environ.get("SEED", "").strip() or "42"
    try:
        return int(value)
    except ValueError:
        raise InputError(f"SEED: environment variable must be an integer, got {value!r}; or pass --seed") from None


def run(args: argparse.Namespace) -> int:
    from ..io import atomic_dir, read_image, stack_outputs, write_image, write_stack
    from ..pipelines.stack import check_Ks, load_stack_generator, requested_Ks
    from ..viz import contact_sheet

    out = Path(args.output)
    Ks_requested = requested_Ks(args.K)
    Ks, notes = check_Ks(Ks_requested, "--K")
    for note in notes:
        sys.stderr.write(f"warning: {note}\n")
    seed = args.seed if args.seed is not None else _env_seed()
    _check_output(out)
    image = read_image(args.image)

    kw = _backend_options(args)
    weights = args.weights
    if args.backend == "kontext":
        weights = weights or os.environ.get("ADAPTER_CKPT") or None
    generator = load_stack_generator(args.backend, weights=weights, device=args.device, **kw)
    stack = generator.generate(image, Ks, seed=seed, progress=not args.no_progress)
    if Ks != Ks_requested:
        stack.extra["K_requested"] = [0.0, *Ks_requested]
    stack.extra.setdefault("input", str(Path(args.image)))

    labels = ["K=0 (sharp)"] + [f"K={k:g}" for k in stack.K[1:]]
    sheet = contact_sheet(stack.frames, labels)
    with atomic_dir(out, owned=(*stack_outputs(out), "contact_sheet.png")) as tmp:
        write_stack(stack, tmp, bits=args.bits)
        write_image(tmp / "contact_sheet.png", sheet)
    sys.stdout.write(f"wrote {len(stack)} frames (K = {', '.join(f'{k:g}' for k in stack.K)}) to {out}\n")
    return 0
