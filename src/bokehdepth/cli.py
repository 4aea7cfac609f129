"""The ``bokehdepth`` command. Each verb lives in ``bokehdepth.commands.<verb>`` and exposes
``register(subparsers)``; heavy imports happen inside the verb's run function, so startup stays fast."""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from .errors import BokehDepthError

__all__ = ["build_parser", "main"]

VERBS = (
    "calibrate",
    "render",
    "sweep",
    "synth",
    "stack",
    "depth",
    "run",
    "generate",
    "train",
    "eval",
    "weights",
    "app",
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error convention: one ``error:`` line on stderr, exit code 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {self.prog}: {message}; see '{self.prog} --help'\n")
        raise SystemExit(2)


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="bokehdepth",
        description="Calibrated bokeh rendering, bokeh stacks and metric depth from bokeh.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"bokehdepth {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=ArgumentParser)
    sub.required = True
    for verb in VERBS:
        try:
            module = importlib.import_module(f"bokehdepth.commands.{verb}")
        except ModuleNotFoundError as exc:  # a verb not built yet is simply absent
            if exc.name == f"bokehdepth.commands.{verb}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (0 success, 2 bad input)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():  # restores showwarning on the way out
            warnings.showwarning = _one_line_warning(warnings.showwarning)
            return int(args.func(args) or 0)
    except BokehDepthError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return 2
    except KeyboardInterrupt:
        sys.stderr.write("error: interrupted\n")
        return 130


def _one_line_warning(fallback):
    """A ``warnings.showwarning`` that prints the package's own UserWarnings as one ``warning:`` line
    (the project's convention) and leaves every other warning to ``fallback``."""
    package = Path(__file__).resolve().parent

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, UserWarning) and package in Path(filename).resolve().parents:
            (file or sys.stderr).write(f"warning: {message}\n")
        else:
            fallback(message, category, filename, lineno, file, line)

    return show


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
