"""The render cache behind every slider (course_utils.widgets): a position shown once is shown again without
recomputing, a float that came back one bit off still finds it, and the cache stays bounded."""
from course_utils.widgets import _kept


def test_kept_results_are_reused_and_keyed_by_value():
    calls = []

    def compute(lr, mode):
        calls.append((lr, mode))
        return f"{mode} {lr}"

    kept = _kept(compute, size=2)
    assert kept(lr=0.1, mode="a") == "a 0.1"
    assert kept(lr=0.1 + 0.05 - 0.05, mode="a") == "a 0.1"  # 0.10000000000000002: the same position
    assert kept(mode="a", lr=0.1) == "a 0.1" and len(calls) == 1
    assert kept(lr=0.1, mode="b") == "b 0.1" and len(calls) == 2  # a different control value recomputes
    assert kept(lr=0.11, mode="a") == "a 0.11" and len(calls) == 3


def test_kept_drops_the_oldest_beyond_its_size():
    calls = []
    kept = _kept(lambda n: calls.append(n) or n, size=2)
    for n in (1, 2, 1, 3):  # 1 is used again before 3 arrives, so 2 is the one dropped
        kept(n=n)
    assert calls == [1, 2, 3]
    kept(n=1)
    kept(n=2)
    assert calls == [1, 2, 3, 2]


# ------------------------------------------------------------------------------------ prefetch

def test_likely_positions_neighbours_first_then_the_range_coarse_to_fine():
    from course_utils.widgets import choice, int_slider, likely_positions, log_slider

    controls = {"n": int_slider("n", 5, 0, 10), "m": choice("m", ["a", "b"])}
    found = likely_positions(controls, {"n": 5, "m": "a"})
    # one move away (a slider step, a toggle's other option), then two slider steps
    assert found[:5] == [{"n": 6, "m": "a"}, {"n": 4, "m": "a"}, {"n": 5, "m": "b"}, {"n": 7, "m": "a"},
                         {"n": 3, "m": "a"}]
    assert found[5:8] == [{"n": 0, "m": "a"}, {"n": 10, "m": "a"}, {"n": 2, "m": "a"}]  # ends, then bisection
    assert {"n": 5, "m": "a"} not in found, "the current position is not listed"
    assert len(found) == 11 and len({tuple(sorted(p.items())) for p in found}) == 11, "every other position once"
    # a log slider's neighbours are one exponent step away, as the browser's arrow key moves it
    lr = likely_positions({"lr": log_slider("lr", 1e-3, 1e-4, 1e-1)}, {"lr": 1e-3})
    assert abs(lr[0]["lr"] - 10 ** -2.95) < 1e-12 and abs(lr[1]["lr"] - 10 ** -3.05) < 1e-12


def test_a_prefetch_step_fills_the_cache_and_leaves_random_state_alone():
    import random

    import numpy as np
    import torch

    from course_utils.widgets import _kept, _Prefetcher, int_slider

    calls = []

    def render(n):
        calls.append(n)
        torch.rand(3), np.random.rand(), random.random()  # a render that draws random numbers
        return str(n)

    kept = _kept(render)
    prefetcher = _Prefetcher(kept, {"n": int_slider("n", 2, 0, 4)})
    kept(n=2)
    prefetcher.restart({"n": 2})
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    expected = torch.rand(1).item(), np.random.rand(), random.random()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    assert prefetcher.step() and calls == [2, 3]
    assert (torch.rand(1).item(), np.random.rand(), random.random()) == expected
    while prefetcher.step():
        pass
    assert sorted(calls) == [0, 1, 2, 3, 4], "every position computed once"
    assert kept(n=4) == "4" and len(calls) == 5, "a prefetched position is a kept one"


def test_a_failing_position_does_not_stop_the_prefetch():
    from course_utils.widgets import _kept, _Prefetcher, int_slider

    def render(n):
        if n == 3:
            raise ValueError("no plot at 3")
        return str(n)

    kept = _kept(render)
    prefetcher = _Prefetcher(kept, {"n": int_slider("n", 2, 0, 4)})
    prefetcher.restart({"n": 2})
    while prefetcher.step():
        pass
    assert kept.has(n=1) and kept.has(n=4) and not kept.has(n=3)


def test_an_idle_kernel_prefetches_a_sliders_positions_and_a_busy_one_does_not(monkeypatch):
    """In a real kernel: after a slider cell, nothing is computed while cells keep running; once the kernel has been
    idle, the neighbours are computed, and after a longer idle (PREFETCH_FAR_IDLE_S) the rest of the range."""
    import asyncio

    from jupyter_client.manager import AsyncKernelManager

    monkeypatch.delenv("COURSE_PREFETCH", raising=False)  # on by default (course_utils.widgets.PREFETCH_ENV)

    async def run():
        km = AsyncKernelManager(kernel_name="python3")
        await km.start_kernel()
        kc = km.client()
        kc.start_channels()
        try:
            await kc.wait_for_ready(timeout=60)

            async def execute(code):
                msg_id = kc.execute(code)
                text = ""
                while True:
                    msg = await kc.iopub_channel.get_msg(timeout=60)
                    if msg["parent_header"].get("msg_id") != msg_id:
                        continue
                    if msg["msg_type"] == "stream":
                        text += msg["content"]["text"]
                    if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
                        return text

            await execute("from course_utils.widgets import int_slider, slider_html\ncalls = []\n"
                          "w = slider_html(lambda n: calls.append(n) or f'<b>{n}</b>', n=int_slider('n', 5, 0, 10))")
            busy = await execute("import time; time.sleep(1.5); print(sorted(calls))")
            await asyncio.sleep(2)
            near = await execute("print(sorted(calls))")
            await asyncio.sleep(6)
            idle = await execute("print(sorted(calls))")
            return busy, near, idle
        finally:
            kc.stop_channels()
            await km.shutdown_kernel(now=True)

    busy, near, idle = asyncio.run(run())
    assert busy.strip() == "[5]", "nothing prefetched while a cell runs"
    assert near.strip() == "[3, 4, 5, 6, 7]", "after a short pause, the positions one and two steps away"
    assert idle.strip() == str(list(range(11))), "every position prefetched once the kernel was idle longer"


def test_a_position_the_browser_rounds_finds_its_prefetched_render():
    """noUiSlider rounds a slider's position to 7 decimals; a log slider sends base ** position, which then differs
    from Python's grid value in the 8th digit. Snapping keys both as the same grid point."""
    import math

    from course_utils.widgets import _kept, _snapper, log_slider

    controls = {"gain": log_slider("gain", 1.0, 0.25, 4.0)}
    calls = []
    kept = _kept(lambda gain: calls.append(gain) or gain, snap=_snapper(controls))
    exponent = math.log10(0.25) + 13 * 0.05
    kept(gain=10 ** exponent)  # Python's grid point (prefetched)
    browser = 10 ** float(f"{exponent:.7f}")  # what the browser sends for the same position
    assert browser != 10 ** exponent and kept.has(gain=browser)
    kept(gain=browser)
    assert len(calls) == 1
    kept(gain=1.0)  # the slider's start, off the grid, is its own position
    assert len(calls) == 2


def test_prefetch_can_be_switched_off(monkeypatch):
    """COURSE_PREFETCH=0: showing a position schedules nothing."""
    from course_utils import widgets

    monkeypatch.setenv("COURSE_PREFETCH", "0")
    monkeypatch.setattr(widgets, "get_ipython", lambda: object())  # as if in a kernel
    idle = widgets._Idle()
    idle.add(widgets._Prefetcher(widgets._kept(lambda n: n), {"n": widgets.int_slider("n", 1, 0, 3)}))
    assert idle.prefetchers == [] and idle.handle is None


def test_a_kept_position_is_shown_while_another_thread_renders():
    """JupyterLab sends slider moves to a kernel subshell, a thread beside the main one where the prefetch renders:
    a kept position must come back at once, a new one wait for the render in progress (pyplot is not thread-safe)."""
    import threading
    import time

    from course_utils import widgets

    order = []
    kept = widgets._kept(lambda n: order.append(n) or n)
    kept(n=1)
    rendering = threading.Event()

    def prefetch_step():
        with widgets._RENDER_LOCK:  # a render in progress on the main thread
            rendering.set()
            time.sleep(0.5)
            order.append("render done")

    thread = threading.Thread(target=prefetch_step)
    thread.start()
    rendering.wait()
    start = time.perf_counter()
    assert kept(n=1) == 1 and time.perf_counter() - start < 0.2, "a kept position waits for nothing"
    assert kept(n=2) == 2, "a new position is computed..."
    assert order == [1, "render done", 2], "...after the render in progress, not beside it"
    thread.join()


def test_after_a_slider_move_the_next_step_the_same_way_is_prefetched_first():
    """A learner exploring a slider tends to go on: after a move right the position one step further right comes
    first, after a move left one step further left; a move of another kind leaves the usual order."""
    from course_utils import widgets

    controls = {"a": widgets.int_slider("a", 2, 0, 9), "b": widgets.int_slider("b", 5, 0, 9),
                "c": widgets.choice("c", ["x", "y"])}
    prefetcher = widgets._Prefetcher(widgets._kept(lambda **v: v), controls)
    prefetcher.restart({"a": 2, "b": 5, "c": "x"})
    assert prefetcher.queue[0] == {"a": 3, "b": 5, "c": "x"}, "no move yet: the usual order"
    prefetcher.restart({"a": 2, "b": 6, "c": "x"})  # b moved right
    assert prefetcher.queue[0] == {"a": 2, "b": 7, "c": "x"}
    prefetcher.restart({"a": 2, "b": 5, "c": "x"})  # b moved left
    assert prefetcher.queue[0] == {"a": 2, "b": 4, "c": "x"}
    prefetcher.restart({"a": 2, "b": 5, "c": "y"})  # a toggle: the usual order
    assert prefetcher.queue == widgets._likely(controls, {"a": 2, "b": 5, "c": "y"})[0]
