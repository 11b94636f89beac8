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
PREFETCH_IDLE_S = 0.5  # the kernel must have been idle this long (no cell, no slider move) before a prefetch step
# "1" switches slider prefetching on. Off by default: in JupyterLab (browser tier, notebook 01's second widget) a
# slider moved after a prefetch did not redraw within 60 s, which the kernel-level tests do not reproduce; until
# that is understood a learner gets the plain behaviour (compute on the move, kept renders on a revisit).
PREFETCH_ENV = "COURSE_PREFETCH"
PREFETCH_LIMIT = RENDER_CACHE_SIZE // 2  # positions prefetched around each position a learner settles on


def _key(values: dict) -> tuple:
    """Floats are keyed to 10 significant digits: a slider moved one step and back can return a float that differs
    from the first in its last bit (0.1 + 0.05 - 0.05), and should still find its result."""
    return tuple(sorted((name, float(f"{v:.10g}") if isinstance(v, float) else v) for name, v in values.items()))


def _kept(compute: Callable[..., object], size: int = RENDER_CACHE_SIZE,
          snap: Callable[[dict], dict] = lambda values: values) -> Callable[..., object]:
    """``compute(**values)`` with its last ``size`` results kept, keyed by the values (see :func:`_key`) after
    ``snap`` (:func:`_snapper`: a value within rounding of a control's grid point is keyed as that point).

    ``call.has(**values)`` says whether a position is kept, without computing it."""
    kept: OrderedDict = OrderedDict()

    def call(**values):
        key = _key(snap(values))
        if key in kept:
            kept.move_to_end(key)
        else:
            kept[key] = compute(**values)
            if len(kept) > size:
                kept.popitem(last=False)
        return kept[key]

    call.has = lambda **values: _key(snap(values)) in kept
    return call


def _snapper(controls: dict[str, w.Widget]) -> Callable[[dict], dict]:
    """``values`` with each slider value that lies within rounding of its grid replaced by the grid point.

    The browser's slider (noUiSlider) rounds its position to 7 decimals, and a log slider sends base ** position:
    10 ** 0.04794 where Python's grid has 10 ** 0.0479400086720376, equal to 8 digits only. Without snapping, a
    position prefetched from Python's grid would never be found when the learner moves there."""
    import math

    grids = {name: _grid(c) for name, c in controls.items()
             if isinstance(c, (w.IntSlider, w.FloatSlider, w.FloatLogSlider))}

    def snap(values: dict) -> dict:
        snapped = dict(values)
        for name, grid in grids.items():
            value = values.get(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                continue
            control = controls[name]
            position = (math.log(value, control.base) if isinstance(control, w.FloatLogSlider) and value > 0
                        else value)
            k = round((position - control.min) / control.step)
            if 0 <= k < len(grid) and abs(control.min + k * control.step - position) <= 1e-4 * control.step:
                snapped[name] = grid[k]
        return snapped

    return snap


def _grid(control: w.Widget) -> list:
    """Every value a control can take: a slider's step grid, a toggle's options."""
    import math

    if isinstance(control, w.FloatLogSlider):
        n = int(round((control.max - control.min) / control.step))
        return [control.base ** (control.min + k * control.step) for k in range(n + 1)]
    if isinstance(control, (w.IntSlider, w.FloatSlider)):
        n = int(math.floor((control.max - control.min) / control.step + 1e-9))
        values = [control.min + k * control.step for k in range(n + 1)]
        return [int(v) for v in values] if isinstance(control, w.IntSlider) else values
    options = getattr(control, "_options_values", None)
    return list(options) if options is not None else []


def _coarse_to_fine(n: int) -> list[int]:
    """Indices 0..n-1 in the order a bisection visits them: the ends, the middle, the quarters, ..."""
    order, seen, step = [], set(), max(n - 1, 1)
    while step >= 1:
        for i in range(0, n, step):
            if i not in seen:
                seen.add(i)
                order.append(i)
        step //= 2
    return order + [i for i in range(n) if i not in seen]


def likely_positions(controls: dict[str, w.Widget], values: dict) -> list[dict]:
    """The positions a learner is likely to visit next from ``values``, most likely first: every position one move
    away (each slider's grid neighbours one step away, each toggle's other options), then each slider's neighbours
    two steps away, then each control's whole range, coarse to fine. One control moves at a time (the others keep
    their current values); ``values`` itself is not listed."""
    rings: list[list] = [[], []]
    far = []
    for name, control in controls.items():
        grid = _grid(control)
        if not grid:
            continue
        current = values[name]
        if isinstance(control, (w.IntSlider, w.FloatSlider, w.FloatLogSlider)):  # a grid sorted by value
            tolerance = 1e-9 * max(1.0, abs(current))
            below = [g for g in grid if g < current - tolerance]
            above = [g for g in grid if g > current + tolerance]
            for distance, ring in zip((1, 2), rings):  # the grid values one step away on each side, then two
                ring += [(name, g) for g in above[distance - 1:distance] + below[len(below) - distance:][:1]]
        else:
            rings[0] += [(name, g) for g in grid if g != current]
        far += [(name, grid[i]) for i in _coarse_to_fine(len(grid))]
    found, seen = [], {_key(values)}
    for name, value in rings[0] + rings[1] + far:
        position = {**values, name: value}
        if _key(position) not in seen:
            seen.add(_key(position))
            found.append(position)
    return found


class _Prefetcher:
    """Fills one widget's kept renders with the positions :func:`likely_positions` lists, one per step."""

    def __init__(self, kept: Callable[..., object], controls: dict[str, w.Widget]):
        self.kept, self.controls = kept, controls
        self.queue: list[dict] = []
        self.touched = 0.0

    def restart(self, values: dict) -> None:
        """The learner is at ``values`` now: prefetch around it (what was queued before is dropped)."""
        import time

        self.queue = likely_positions(self.controls, values)[:PREFETCH_LIMIT]
        self.touched = time.monotonic()

    def step(self) -> bool:
        """Compute the next position not kept yet; False when there is none. Random-number state is restored
        afterwards, so a prefetch never changes what the learner's next cell prints."""
        import random

        import numpy as np
        import torch

        while self.queue:
            position = self.queue.pop(0)
            if self.kept.has(**position):
                continue
            states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
            try:
                self.kept(**position)
            except Exception:  # the learner meets the error if they move there; a prefetch stays silent
                pass
            finally:
                random.setstate(states[0])
                np.random.set_state(states[1])
                torch.random.set_rng_state(states[2])
            return True
        return False


class _Idle:
    """Runs prefetch steps on the kernel's event loop while the kernel is idle: no cell running and no slider moved
    for :data:`PREFETCH_IDLE_S`. One position per step, and between steps the loop handles whatever request arrived
    (a slider move, a cell), so a learner waits at most for the one step in progress."""

    def __init__(self):
        self.prefetchers: list[_Prefetcher] = []
        self.running_cell = False
        self.last_activity = 0.0
        self.handle = None
        self.hooked = False

    def activity(self, *_args) -> None:
        import time

        self.last_activity = time.monotonic()

    def _pre(self, *_args) -> None:
        self.running_cell = True
        self.activity()

    def _post(self, *_args) -> None:
        self.running_cell = False
        self.activity()
        self.schedule(PREFETCH_IDLE_S)

    def add(self, prefetcher: _Prefetcher) -> None:
        import os

        shell = get_ipython()
        if shell is None or os.environ.get(PREFETCH_ENV, "0") != "1":
            return
        if not self.hooked:
            shell.events.register("pre_run_cell", self._pre)
            shell.events.register("post_run_cell", self._post)
            self.hooked = True
        self.prefetchers = [p for p in self.prefetchers if p is not prefetcher] + [prefetcher]
        self.schedule(PREFETCH_IDLE_S)

    def schedule(self, delay: float) -> None:
        import asyncio

        if self.handle is not None:
            return
        try:
            loop = asyncio.get_event_loop()
        except RuntimeError:
            return
        self.handle = loop.call_later(delay, self.tick)

    def tick(self) -> None:
        import time

        self.handle = None
        waited = time.monotonic() - self.last_activity
        if self.running_cell or waited < PREFETCH_IDLE_S:
            self.schedule(PREFETCH_IDLE_S - waited if not self.running_cell else PREFETCH_IDLE_S)
            return
        for prefetcher in sorted(self.prefetchers, key=lambda p: -p.touched):  # the widget touched last first
            if prefetcher.step():
                self.schedule(0.0)
                return


_IDLE = _Idle()


def _with_prefetch(kept: Callable[..., object], controls: dict[str, w.Widget]) -> Callable[[dict], None]:
    """A callback for each shown position: note the learner's activity and prefetch around the position."""
    prefetcher = _Prefetcher(kept, controls)

    def shown(values: dict) -> None:
        _IDLE.activity()
        prefetcher.restart(values)
        _IDLE.add(prefetcher)

    return shown


def slider_plot(draw: Callable[..., None], **controls: w.Widget) -> w.interactive:
    """Redraw ``draw(**values)`` (which makes one matplotlib figure) whenever a control moves.

    Returns the ``interactive`` widget (already displayed); its ``.children`` are the controls.
    ``draw`` must be a function of the control values only: each position's image is kept (the last
    ``RENDER_CACHE_SIZE``), so moving back to a position shows it again without recomputing or
    re-rendering (rendering a course figure to PNG costs 50-110 ms on a laptop CPU). With ``COURSE_PREFETCH=1`` the
    positions a learner is likely to visit next are rendered ahead while the kernel is idle (:func:`likely_positions`,
    :class:`_Idle`); it is off by default because in JupyterLab it did not make first visits faster (see
    ``PREFETCH_ENV``). Re-running the cell starts an empty cache.
    """
    def rendered(**values) -> tuple[dict, dict]:
        draw(**values)
        figure = plt.gcf()
        try:  # the mime bundle exactly as the inline backend would send it
            return get_ipython().display_formatter.format(figure)
        finally:
            plt.close(figure)

    kept_render = _kept(rendered, snap=_snapper(controls))
    shown = _with_prefetch(kept_render, controls)

    def update(**values):
        if get_ipython() is None:  # not in IPython: nothing to cache for
            draw(**values)
            plt.show()
            return
        data, metadata = kept_render(**values)
        display(data, metadata=metadata, raw=True)
        shown(values)

    widget = w.interactive(update, **controls)
    display(widget)
    return widget


def slider_html(render: Callable[..., str], **controls: w.Widget) -> w.interactive:
    """Like :func:`slider_plot` for a view drawn as HTML (``render(**values)`` returns a string).

    No image to encode and send: on the course CPU a redraw costs the computation plus a few ms,
    where a matplotlib figure costs 60 ms or more. Positions already shown are kept (and, with ``COURSE_PREFETCH=1``,
    likely next ones prefetched while the kernel is idle), as in :func:`slider_plot`.
    """
    kept_render = _kept(render, snap=_snapper(controls))
    shown = _with_prefetch(kept_render, controls)

    def update(**values):
        display(HTML(kept_render(**values)))
        shown(values)

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
