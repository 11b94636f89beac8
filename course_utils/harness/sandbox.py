"""Running code the course did not write: fresh copies of a case's tensors (strides kept), the checks that code left
its inputs alone and returned new tensors, and a time limit that stops a runaway loop (SIGALRM, or a worker thread
where there is none)."""
from __future__ import annotations

import ctypes
import signal
import threading
from typing import Any, Callable

import torch

from course_utils.harness.errors import ExerciseTimeout


def _clone(tree: Any) -> Any:
    """A deep copy of tensors in nested tuples/lists/dicts, strides kept (a strided case must reach the
    reference and the mistakes strided too); other leaves are shared."""
    if isinstance(tree, torch.Tensor):
        if not tree.is_leaf:
            return tree.clone()
        return _strided_copy(tree.detach()).requires_grad_(tree.requires_grad)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_clone(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    return tree


def _strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in fresh memory with the same sizes and strides."""
    if t.is_contiguous() or t.numel() == 0 or 0 in t.stride():
        return t.clone()
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    out = torch.empty(extent, dtype=t.dtype, device=t.device).as_strided(t.shape, t.stride())
    out.copy_(t)
    return out


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


def _returned_input(got: Any, case: Any, names: list[str]) -> str | None:
    """The name of an argument of ``case`` (a :class:`~course_utils.harness.spec.Case`) whose memory an output
    tensor shares (the output is the input, or a view)."""
    def storage(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr() if t.numel() else 0

    outputs = {storage(t) for t in _tensors(got)} - {0}
    named = [(names[i] if i < len(names) else f"#{i + 1}", a) for i, a in enumerate(case.args)]
    for name, arg in named + list(case.kwargs.items()):
        if outputs & {storage(t) for t in _tensors(arg)}:
            return f"`{name}`"
    return None


def _changed_argument(before: Any, after: Any, names: list[str]) -> str | None:
    """The name of the first argument whose tensors (also inside lists, tuples and dicts) differ
    between two ``(args, kwargs)`` snapshots."""
    (args_b, kwargs_b), (args_a, kwargs_a) = before, after
    pairs = [(names[i] if i < len(names) else f"#{i + 1}", b, a) for i, (b, a) in enumerate(zip(args_b, args_a))]
    pairs += [(k, kwargs_b[k], kwargs_a[k]) for k in kwargs_b]
    for name, b, a in pairs:
        if not _same_tree(b, a):
            return f"`{name}`"
    return None


def _same_tree(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and _same_tensor(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same_tree, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    return True


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.detach().isnan(), b.detach().isnan()) and torch.equal(
        a.detach().nan_to_num(0.0) if a.is_floating_point() else a.detach(),
        b.detach().nan_to_num(0.0) if b.is_floating_point() else b.detach())


def _signal_timer_usable() -> bool:
    """SIGALRM stops runaway code most reliably, but Windows has none and only the main thread may use it."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _run_with_time_limit(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, or :class:`ExerciseTimeout` once it has run ``seconds``; ``fn``'s exceptions pass through.

    With SIGALRM (Unix, main thread) the alarm raises inside ``fn``. Without it, ``fn`` runs in a worker
    thread; past the limit the timeout is raised in that thread too (at its next Python bytecode, which
    stops a Python loop), and if it is stuck in C code it is left to finish in the background
    (``ExerciseTimeout.abandoned``): the learner gets the message either way, never a hang.
    """
    if _signal_timer_usable():
        def _raise(signum, frame):
            raise ExerciseTimeout()

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome: dict[str, Any] = {}
    grad_enabled = torch.is_grad_enabled()  # grad mode is per thread: carry the caller's over

    def worker():
        try:
            with torch.set_grad_enabled(grad_enabled):
                outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller, SystemExit and timeouts included
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="course-exercise", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(ExerciseTimeout))
        thread.join(1.0)
        timeout = ExerciseTimeout()
        timeout.abandoned = thread.is_alive()
        raise timeout
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
