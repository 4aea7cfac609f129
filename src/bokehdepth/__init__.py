"""bokehdepth: calibrated bokeh rendering, bokeh stacks and metric depth from bokeh.

The physics (``lens``, ``render``, ``sweep``) is pure functions; the models sit on top as backends.
"""

from __future__ import annotations

__version__ = "0.1.0"

from . import render  # noqa: E402  (callable package: bokehdepth.render(image, disp, K, disp_focus, ...))
from .errors import BokehDepthError, CheckpointError, InputError, MissingWeightsError, OutputError
from .io import Stack, read_image, read_stack, write_stack
from .lens import LensSettings, k_from_camera
from .render import render_stack

__all__ = [
    "BokehDepthError",
    "CheckpointError",
    "InputError",
    "LensSettings",
    "MissingWeightsError",
    "OutputError",
    "Stack",
    "__version__",
    "k_from_camera",
    "read_image",
    "read_stack",
    "render",
    "render_stack",
    "write_stack",
]
