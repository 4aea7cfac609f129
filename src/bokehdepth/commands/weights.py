"""``bokehdepth weights keys BACKEND`` and ``bokehdepth weights check BACKEND FILE``."""

from __future__ import annotations

import argparse
import sys

from ..errors import CheckpointError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("weights", help="list or check the key layout of released checkpoints")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", parser_class=type(p))
    wsub.required = True
    keys = wsub.add_parser("keys", help="print key<TAB>shape of the full-size model as its checkpoint stores it")
    keys.add_argument("backend", help="kontext-adapter, dav2-dsfa-s|b|l, udv2-dsfa or bokeh-diffusion")
    keys.set_defaults(func=run_keys)
    check = wsub.add_parser("check", help="load a checkpoint strictly and report missing/unexpected/mis-shaped keys")
    check.add_argument("backend")
    check.add_argument("file")
    check.set_defaults(func=run_check)


def run_keys(args: argparse.Namespace) -> int:
    from ..models.registry import get_backend

    for key, shape in get_backend(args.backend).published_keys().items():
        sys.stdout.write(f"{key}\t{list(shape)}\n")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from ..models.checkpoints import compare_keys, load_state_dict_file
    from ..models.registry import get_backend

    backend = get_backend(args.backend)
    raw = load_state_dict_file(args.file)
    state = backend.unwrap_checkpoint(raw)
    report = compare_keys(state, backend.published_keys())
    for line in report.lines():
        sys.stdout.write(line + "\n")
    if not report.ok:
        raise CheckpointError(f"{args.file}: does not load strictly as {args.backend}: {report.summary()}")
    sys.stdout.write(f"ok\t{len(state)} keys match {args.backend}\n")
    return 0
