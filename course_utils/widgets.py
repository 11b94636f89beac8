"""Sliders bound to plain functions, and ``show_source`` for showing a kernel instead of copying it.

A widget cell only binds controls to a drawing function; the numbers come from a plain function
in course_utils that has its own unit test.
"""
from __future__ import annotations

import inspect
import textwrap
from typing import Callable

import ipywidgets as w
import matplotlib.pyplot as plt
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


def slider_plot(draw: Callable[..., None], **controls: w.Widget) -> w.interactive:
    """Redraw ``draw(**values)`` (which makes one matplotlib figure) whenever a control moves.

    Returns the ``interactive`` widget (already displayed); its ``.children`` are the controls.
    """
    def update(**values):
        draw(**values)
        plt.show()

    widget = w.interactive(update, **controls)
    display(widget)
    return widget


def slider_html(render: Callable[..., str], **controls: w.Widget) -> w.interactive:
    """Like :func:`slider_plot` for a view drawn as HTML (``render(**values)`` returns a string).

    No image to encode and send: on the course CPU a redraw costs the computation plus a few ms,
    where a matplotlib figure costs 60 ms or more.
    """
    def update(**values):
        display(HTML(render(**values)))

    widget = w.interactive(update, **controls)
    display(widget)
    return widget


def show_source(obj: Callable) -> None:
    """Show the source of a function, class or Triton kernel, highlighted, without copying it."""
    source = textwrap.dedent(inspect.getsource(getattr(obj, "fn", obj)))
    try:
        get_ipython  # noqa: F821  (defined inside IPython only)
        display(Code(source, language="python"))
    except NameError:
        print(source)
