"""Sliders bound to plain functions, and ``show_source`` for showing a kernel instead of copying it.

A widget cell only binds controls to a drawing function; the numbers come from a plain function
in course_utils that has its own unit test.
"""
from __future__ import annotations

import inspect
import textwrap
from collections import OrderedDict
from typing import Callable

import ipywidgets as w
import matplotlib.pyplot as plt
from IPython import get_ipython
from IPython.display import HTML, Code, display


def int_slider(description: str, value: int, low: int, high: int, step: int = 1) -> w.IntSlider:
    return w.IntSlider(value=value, min=low, max=high, step=step, description=description,
                       continuous_update=False, style={"description_width": "initial"})


def float_slider(description: str, value: float, low: float, high: float, step: float) -> w.FloatSlider:
    return w.FloatSlider(value=value, min=low, max=high, step=step, description=description,
                         continuous_update=False, style={"description_width": "initial"})


def log_slider(description: str, value: float, low: float, high: float) -> w.FloatLogSlider:
    """A slider over ``[low, high]`` on a log10 scale (for init scales, learning rates, logits)."""
    import math

    return w.FloatLogSlider(value=value, base=10, min=math.log10(low), max=math.log10(high), step=0.05,
                            description=description, continuous_update=False,
                            style={"description_width": "initial"})


def choice(description: str, options: list, value=None) -> w.ToggleButtons:
    return w.ToggleButtons(options=options, value=value if value is not None else options[0],
                           description=description, style={"description_width": "initial"})


RENDER_CACHE_SIZE = 64  # renders kept per widget; a stored plot is 20-70 KB


def _kept(compute: Callable[..., object], size: int = RENDER_CACHE_SIZE) -> Callable[..., object]:
    """``compute(**values)`` with its last ``size`` results kept, keyed by the values.

    Floats are keyed to 10 significant digits: a slider moved one step and back can return a float that
    differs from the first in its last bit (0.1 + 0.05 - 0.05), and should still find its result.
    """
    kept: OrderedDict = OrderedDict()

    def call(**values):
        key = tuple(sorted((name, float(f"{v:.10g}") if isinstance(v, float) else v) for name, v in values.items()))
        if key in kept:
            kept.move_to_end(key)
        else:
            kept[key] = compute(**values)
            if len(kept) > size:
                kept.popitem(last=False)
        return kept[key]

    return call


def slider_plot(draw: Callable[..., None], **controls: w.Widget) -> w.interactive:
    """Redraw ``draw(**values)`` (which makes one matplotlib figure) whenever a control moves.

    Returns the ``interactive`` widget (already displayed); its ``.children`` are the controls.
    ``draw`` must be a function of the control values only: each position's image is kept (the last
    ``RENDER_CACHE_SIZE``), so moving back to a position shows it again without recomputing or
    re-rendering (rendering a course figure to PNG costs 50-110 ms on a laptop CPU). Re-running the cell
    starts an empty cache.
    """
    def rendered(**values) -> tuple[dict, dict]:
        draw(**values)
        figure = plt.gcf()
        try:  # the mime bundle exactly as the inline backend would send it
            return get_ipython().display_formatter.format(figure)
        finally:
            plt.close(figure)

    kept_render = _kept(rendered)

    def update(**values):
        if get_ipython() is None:  # not in IPython: nothing to cache for
            draw(**values)
            plt.show()
            return
        data, metadata = kept_render(**values)
        display(data, metadata=metadata, raw=True)

    widget = w.interactive(update, **controls)
    display(widget)
    return widget


def slider_html(render: Callable[..., str], **controls: w.Widget) -> w.interactive:
    """Like :func:`slider_plot` for a view drawn as HTML (``render(**values)`` returns a string).

    No image to encode and send: on the course CPU a redraw costs the computation plus a few ms,
    where a matplotlib figure costs 60 ms or more. Positions already shown are kept, as in
    :func:`slider_plot`.
    """
    kept_render = _kept(render)

    def update(**values):
        display(HTML(kept_render(**values)))

    widget = w.interactive(update, **controls)
    display(widget)
    return widget


def show_source(obj: Callable) -> None:
    """Show the source of a function, class or Triton kernel, highlighted, without copying it."""
    source = textwrap.dedent(inspect.getsource(getattr(obj, "fn", obj)))
    if get_ipython() is not None:
        display(Code(source, language="python"))
    else:
        print(source)
