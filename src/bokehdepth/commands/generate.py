"""``bokehdepth generate``: Bokeh Diffusion text-to-image at bokeh levels 0–30 on FLUX.1-dev.

Needs the released adapter folder (``--weights``: ``config.json`` + ``model.safetensors`` from
atfortes/BokehDiffusion) and a local FLUX.1-dev folder (``--base``). Writes ``<label>-bokeh<T>.jpg`` per level
(the reference names), ``contact_sheet.png`` and ``generation.json`` into ``-o DIR``; nothing when it fails.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="text-to-image at chosen bokeh levels (Bokeh Diffusion on FLUX.1-dev)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--prompt", required=True, help="text prompt")
    p.add_argument(
        "--bokeh-target",
        "--bokeh_target",
        "--bokeh_targets",
        dest="bokeh_target",
        nargs="+",
        required=True,
        metavar="L",
        help="bokeh level(s) 0–30 (≈ blur radius in px at 512 px for a full near-to-far disparity offset); one image each",
    )
    p.add_argument(
        "--bokeh-pivot",
        "--bokeh_pivot",
        dest="bokeh_pivot",
        type=float,
        default=None,
        metavar="L",
        help="pivot level for grounded generation (10–20 recommended); needs --num-grounding-steps > 0",
    )
    p.add_argument(
        "--num-grounding-steps",
        "--num_grounding_steps",
        dest="num_grounding_steps",
        type=int,
        default=0,
        metavar="N",
        help="steps that share the pivot's attention layout (18–24 of 30 recommended; 0 = off)",
    )
    p.add_argument("--seed", type=int, default=65578, help="seed of the CPU generator (default 65578, as published)")
    p.add_argument("--steps", "--num_inference_steps", dest="steps", type=int, default=30, help="denoising steps (30)")
    p.add_argument(
        "--guidance", "--guidance_scale", dest="guidance", type=float, default=3.0, help="distilled guidance (3.0)"
    )
    p.add_argument(
        "--true-cfg",
        "--true_cfg",
        dest="true_cfg",
        type=float,
        default=1.0,
        help="real classifier-free guidance scale, on when > 1 (null level −1, negative prompt 'bad quality, low resolution')",
    )
    p.add_argument("--height", type=int, default=512, help="output height in px, multiple of 16 (512)")
    p.add_argument("--width", type=int, default=512, help="output width in px, multiple of 16 (512)")
    p.add_argument(
        "--weights", default=None, help="adapter folder: config.json + model.safetensors (atfortes/BokehDiffusion)"
    )
    p.add_argument(
        "--base", default=None, help="local FLUX.1-dev folder in diffusers layout (black-forest-labs/FLUX.1-dev)"
    )
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … (default cpu)")
    p.add_argument(
        "--dtype", default="auto", choices=["auto", "bf16", "fp16", "fp32"], help="auto: bf16 on CUDA, fp32 on CPU"
    )
    p.add_argument("--cpu-offload", action="store_true", help="enable_model_cpu_offload (GPUs with < 40 GB)")
    p.add_argument("--vae-tiling", action="store_true", help="tile the VAE decode (less memory at large sizes)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    p.add_argument("-o", "--output", "--results_dir", dest="output", required=True, help="output folder")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..errors import InputError
    from ..io import parse_floats
    from ..models.bokeh_diffusion import level_to_input
    from ..pipelines.text2image import BokehText2Image, GenerationSettings, write_results

    targets = parse_floats(args.bokeh_target, "--bokeh-target")
    for level in targets + ([args.bokeh_pivot] if args.bokeh_pivot is not None else []):
        level_to_input(level)
    if args.num_grounding_steps > 0 and args.bokeh_pivot is None:
        raise InputError("--num-grounding-steps > 0 needs --bokeh-pivot (the level whose layout is shared)")
    if args.num_grounding_steps < 0:
        raise InputError(f"--num-grounding-steps: must be >= 0, got {args.num_grounding_steps}")
    settings = GenerationSettings(
        steps=args.steps, guidance=args.guidance, true_cfg=args.true_cfg, height=args.height, width=args.width
    )
    settings.check()
    t0 = time.perf_counter()
    model = BokehText2Image(
        weights=args.weights,
        base=args.base,
        device=args.device,
        dtype=args.dtype,
        cpu_offload=args.cpu_offload,
        vae_tiling=args.vae_tiling,
    )
    images = model.generate_levels(
        args.prompt,
        targets,
        pivot=args.bokeh_pivot,
        num_grounding_steps=args.num_grounding_steps,
        seed=args.seed,
        settings=settings,
        progress=not args.no_progress,
    )
    info = {
        "pivot": args.bokeh_pivot,
        "num_grounding_steps": args.num_grounding_steps,
        "seed": args.seed,
        "steps": args.steps,
        "guidance": args.guidance,
        "true_cfg": args.true_cfg,
        "height": args.height,
        "width": args.width,
        "seconds": round(time.perf_counter() - t0, 3),
        **model.info,
    }
    for path in write_results(args.output, args.prompt, targets, images, info):
        print(path)
    return 0
