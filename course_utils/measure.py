"""Measurements that several chapters take: the exponent of a power law, the memory autograd keeps for a backward
pass, and the time of a call on a CPU. Nothing here belongs to one chapter; ``harness/bench.py`` times its CPU runs
with :func:`median_seconds` too.

Used by chapters 1, 2, 3 and 7.
"""
from __future__ import annotations

import statistics
from time import perf_counter

import torch


def loglog_slope(xs: list[float], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(x): the exponent p in y ∝ x^p."""
    lx, ly = torch.log(torch.tensor(xs, dtype=torch.float64)), torch.log(torch.tensor(ys, dtype=torch.float64))
    lx, ly = lx - lx.mean(), ly - ly.mean()
    return float((lx * ly).sum() / (lx * lx).sum())


def saved_for_backward_bytes(loss_fn, logits: torch.Tensor, *args) -> int:
    """Bytes of tensors autograd saves for the backward pass of ``loss_fn(logits, *args)``, not counting
    memory that already belongs to ``logits`` (so a gradient written over the logits counts as 0)."""
    storages = {}

    def pack(t):
        ptr = t.untyped_storage().data_ptr()
        storages[ptr] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        loss_fn(logits, *args)
    storages.pop(logits.untyped_storage().data_ptr(), None)
    return sum(storages.values())


def median_seconds(fn, *args, reps: int = 20, warmup: int = 3) -> float:
    """Median wall-clock seconds of ``fn(*args)`` over ``reps`` timed calls, after ``warmup`` untimed ones (the
    first calls allocate memory and fill caches). The median ignores the few calls that another process slowed.

    It times the call until it returns: on a CPU that is the work. A CUDA call returns before its kernels finish,
    so GPU work needs CUDA events or ``triton.testing.do_bench`` (``harness.bench.measure`` uses them)."""
    for _ in range(warmup):
        fn(*args)
    times = []
    for _ in range(reps):
        start = perf_counter()
        fn(*args)
        times.append(perf_counter() - start)
    return statistics.median(times)
