"""``bokehdepth train stage1|stage2|t2i``: thin front for the training modules in ``bokehdepth.train``.

Each training module defines ``add_arguments(parser)`` and ``run(args) -> int``.
"""

from __future__ import annotations

import argparse
import importlib

_TRAINERS = {
    "stage1": "train the Stage-1 stack generator (compact on CPU, or the Kontext bokeh adapter)",
    "stage2": "train a Stage-2 depth model with DSFA (compact on CPU, or DAv2/UDv2 + DSFA)",
    "t2i": "train the Bokeh Diffusion adapter (text-to-image with a bokeh level)",
}


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train models (accelerate: one CPU, one GPU or many)")
    tsub = p.add_subparsers(dest="trainer", metavar="TRAINER", parser_class=type(p))
    tsub.required = True
    for name, help_text in _TRAINERS.items():
        try:
            module = importlib.import_module(f"bokehdepth.train.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"bokehdepth.train.{name}":
                continue
            raise
        tp = tsub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(tp)
        tp.set_defaults(func=module.run)
