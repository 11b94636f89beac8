"""Sliders bound to plain functions, and ``show_source`` for showing a kernel instead of copying it.

A widget cell only binds controls to a drawing function; the numbers come from a plain function
in course_utils that has its own unit test.
"""
from __future__ import annotations

import inspect
import textwrap
import threading
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
# ... and this long before the positions further than two steps away: a learner moving step by step meets no far
# render in progress, one who pauses to read gets the rest of the range
PREFETCH_FAR_IDLE_S = 5.0
# between two steps: time for a request that arrived during a step to reach its handler (which marks activity).
# Not a poll of the kernel's socket: a ZeroMQ socket signals readiness once, and a poll outside its stream can take
# that signal, leaving the request unread with the kernel idle.
PREFETCH_GAP_S = 0.02
# "0" switches slider prefetching off ("1", the default, leaves it on).
PREFETCH_ENV = "COURSE_PREFETCH"
# One render at a time, whichever thread asks: JupyterLab 4.4+ can send widget messages to a kernel *subshell* (the
# course's lab switches that off, course_utils.harness.lab; another frontend may not), and then a slider move is
# handled on another thread than the cells and the prefetch, while pyplot's current figure is global.
_RENDER_LOCK = threading.RLock()
PREFETCH_LIMIT = RENDER_CACHE_SIZE // 2  # positions prefetched around each position a learner settles on


def _key(values: dict) -> tuple:
    """Floats are keyed to 10 significant digits: a slider moved one step and back can return a float that differs
    from the first in its last bit (0.1 + 0.05 - 0.05), and should still find its result."""
    return tuple(sorted((name, float(f"{v:.10g}") if isinstance(v, float) else v) for name, v in values.items()))


def _kept(compute: Callable[..., object], size: int = RENDER_CACHE_SIZE,
          snap: Callable[[dict], dict] = lambda values: values) -> Callable[..., object]:
    """``compute(**values)`` with its last ``size`` results kept, keyed by the values (see :func:`_key`) after
    ``snap`` (:func:`_snapper`: a value within rounding of a control's grid point is keyed as that point).

    Safe from several threads: a kept result is returned at once, even while another thread computes (a slider move
    handled on a kernel subshell while the main thread prefetches); computing takes :data:`_RENDER_LOCK`.
    ``call.has(**values)`` says whether a position is kept, without computing it."""
    kept: OrderedDict = OrderedDict()
    lock = threading.Lock()

    def call(**values):
        key = _key(snap(values))
        with lock:
            if key in kept:
                kept.move_to_end(key)
                return kept[key]
        with _RENDER_LOCK:
            with lock:  # computed by another thread while this one waited for the render lock
                if key in kept:
                    return kept[key]
            result = compute(**values)
        with lock:
            kept[key] = result
            if len(kept) > size:
                kept.popitem(last=False)
        return result

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
    near, far = _likely(controls, values)
    return near + far


def _likely(controls: dict[str, w.Widget], values: dict) -> tuple[list[dict], list[dict]]:
    """:func:`likely_positions` in two parts: those one or two moves away, and the rest of the range."""
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
    parts, seen = ([], []), {_key(values)}
    for part, moves in zip(parts, (rings[0] + rings[1], far)):
        for name, value in moves:
            position = {**values, name: value}
            if _key(position) not in seen:
                seen.add(_key(position))
                part.append(position)
    return parts


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _onward(last: dict | None, values: dict, near: list[dict]) -> int | None:
    """The index in ``near`` of the first position that moves on from ``last`` to ``values``: the same single slider,
    the same direction. None when the last change was not one numeric control, or no such position is listed."""
    if last is None or last.keys() != values.keys():
        return None
    moved = [name for name in values if _key({name: values[name]}) != _key({name: last[name]})]
    if len(moved) != 1:
        return None
    name = moved[0]
    before, now = last[name], values[name]
    if not (_is_number(before) and _is_number(now)):
        return None
    for i, position in enumerate(near):
        step = position[name]
        if (_is_number(step) and (step - now) * (now - before) > 0
                and all(position[other] == values[other] for other in values if other != name)):
            return i
    return None


class _Prefetcher:
    """Fills one widget's kept renders with the positions :func:`likely_positions` lists, one per step."""

    def __init__(self, kept: Callable[..., object], controls: dict[str, w.Widget]):
        self.kept, self.controls = kept, controls
        self.queue: list[dict] = []
        self.far: list[dict] = []
        self.touched = 0.0
        self.last: dict | None = None

    def restart(self, values: dict) -> None:
        """The learner is at ``values`` now: prefetch around it (what was queued before is dropped). After a slider
        move, the next step the same way on the same slider comes first: a learner exploring a slider tends to go on."""
        import time

        near, far = _likely(self.controls, values)
        onward = _onward(self.last, values, near)
        if onward is not None:
            near.insert(0, near.pop(onward))
        self.queue, self.far = near[:PREFETCH_LIMIT], far[:max(PREFETCH_LIMIT - len(near), 0)]
        self.last = dict(values)
        self.touched = time.monotonic()

    def step(self, far: bool = True) -> bool:
        """Compute the next position not kept yet (the near ones first; the far ones only if ``far``); False when
        there is none. Random-number state is restored afterwards, so a prefetch never changes what the learner's
        next cell prints (the render lock keeps a subshell's render from drawing while the state is borrowed)."""
        import random

        import numpy as np
        import torch

        while True:
            queue = self.queue or (self.far if far else [])  # restart() may swap in new lists from another thread
            if not queue:
                return False
            position = queue.pop(0)
            if self.kept.has(**position):
                continue
            with _RENDER_LOCK:
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


class _Idle:
    """Runs prefetch steps on the event loop of the kernel's main thread (where cells run) while the kernel is idle:
    no cell running and no request for :data:`PREFETCH_IDLE_S`. One position per step, and between steps the loop
    handles whatever request arrived, so a learner waits at most for the one step in progress. Where the frontend
    sends widget messages to a subshell (JupyterLab 4.4+), a move runs on that subshell's thread: a kept position is
    shown at once, even during a step; a new one waits for the step's render (:data:`_RENDER_LOCK`)."""

    def __init__(self):
        self.prefetchers: list[_Prefetcher] = []
        self.running_cell = False
        self.last_activity = 0.0
        self.handle = None
        self.hooked = False
        self.loop = None  # the main thread's event loop, where the steps run

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
        if shell is None or os.environ.get(PREFETCH_ENV, "1") == "0":
            return
        if not self.hooked:
            if threading.current_thread() is not threading.main_thread():
                return  # first seen outside a cell (no loop of the main thread to run on)
            import asyncio

            try:
                self.loop = asyncio.get_event_loop()
            except RuntimeError:
                return
            shell.events.register("pre_run_cell", self._pre)
            shell.events.register("post_run_cell", self._post)
            self._hook_requests(shell)
            self.hooked = True
        self.prefetchers = [p for p in self.prefetchers if p is not prefetcher] + [prefetcher]
        self.schedule(PREFETCH_IDLE_S)

    def _hook_requests(self, shell) -> None:
        """Note every request the kernel dispatches (a slider move, a cell, a completion) as activity, as soon as it
        is dispatched: without it a request waits behind every prefetch step that runs before its handler does."""
        kernel = getattr(shell, "kernel", None)
        dispatch = getattr(kernel, "dispatch_shell", None)
        if dispatch is None or getattr(dispatch, "_course_activity", False):
            return

        async def dispatch_shell(*args, **kwargs):
            self.activity()
            return await dispatch(*args, **kwargs)

        dispatch_shell._course_activity = True
        kernel.dispatch_shell = dispatch_shell

    def schedule(self, delay: float) -> None:
        """A tick on the main thread's loop after ``delay`` s, unless one is pending (safe from any thread)."""
        if self.loop is None or self.loop.is_closed():
            return
        if threading.current_thread() is threading.main_thread():
            self._schedule_here(delay)
        else:
            self.loop.call_soon_threadsafe(self._schedule_here, delay)

    def _schedule_here(self, delay: float) -> None:
        """Keep the earlier of the pending tick and this one (a move must not wait for a tick set for the far
        positions)."""
        when = self.loop.time() + delay
        if self.handle is not None:
            if self.handle.when() <= when:
                return
            self.handle.cancel()
        self.handle = self.loop.call_at(when, self.tick)

    def tick(self) -> None:
        import time

        self.handle = None
        waited = time.monotonic() - self.last_activity
        if self.running_cell or waited < PREFETCH_IDLE_S:
            self.schedule(PREFETCH_IDLE_S - waited if not self.running_cell else PREFETCH_IDLE_S)
            return
        far = waited >= PREFETCH_FAR_IDLE_S
        for prefetcher in sorted(self.prefetchers, key=lambda p: -p.touched):  # the widget touched last first
            if prefetcher.step(far=far):
                self.schedule(PREFETCH_GAP_S)
                return
        if not far and any(p.far for p in self.prefetchers):
            self.schedule(PREFETCH_FAR_IDLE_S - waited)


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
    re-rendering (rendering a course figure to PNG costs 50-110 ms on a laptop CPU). The positions a learner is
    likely to visit next are rendered ahead while the kernel is idle (:func:`likely_positions`, :class:`_Idle`;
    ``COURSE_PREFETCH=0`` switches that off). Re-running the cell starts an empty cache.
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
    where a matplotlib figure costs 60 ms or more. Positions already shown are kept, and likely next ones prefetched
    while the kernel is idle, as in :func:`slider_plot`.
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
