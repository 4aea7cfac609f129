"""Classical occlusion-aware bokeh renderer.

``bokehdepth.render(image, disp, K, disp_focus, ...)`` is this package itself, called: the package module is
callable and forwards to :func:`bokehdepth.render.api.render`, so ``bokehdepth.render`` works as a function
and as a namespace (``bokehdepth.render.api``, ``.cpu``, ``.cuda``, ``.reference``). Backends are imported
lazily, so importing bokehdepth does not load numba.
"""

from __future__ import annotations

import sys
import types
from typing import Any

__all__ = ["render", "render_stack"]


def render(*args: Any, **kwargs: Any):
    """See :func:`bokehdepth.render.api.render`."""
    from .api import render as _render

    return _render(*args, **kwargs)


def render_stack(*args: Any, **kwargs: Any):
    """See :func:`bokehdepth.render.api.render_stack`."""
    from .api import render_stack as _render_stack

    return _render_stack(*args, **kwargs)


class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any):
        return render(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
