"""Numbers printed so that a notebook's stored outputs are the same on every machine.

A float32 rounding error's size depends on the order of the arithmetic, and that order differs between
CPUs (vector width, thread count, ``ATEN_CPU_CAPABILITY``): a stored "max |difference| = 3.6e-07" fails
on the next learner's machine. A verdict against a stated tolerance ("matches torch within 1e-5") does not,
and it still fails loudly when an implementation is wrong. The error's digits belong in tests.
"""
from __future__ import annotations

from typing import Any

import torch


def max_abs_difference(mine: Any, theirs: Any) -> float:
    """Largest ``|mine - theirs|`` over tensors, numbers, or (nested) lists/tuples of them, pairwise."""
    if isinstance(mine, (list, tuple)):
        if not isinstance(theirs, (list, tuple)) or len(mine) != len(theirs):
            raise ValueError("max_abs_difference: the two sides have different structures")
        return max((max_abs_difference(a, b) for a, b in zip(mine, theirs)), default=0.0)
    a = torch.as_tensor(mine).detach().double().cpu()
    b = torch.as_tensor(theirs).detach().double().cpu()
    if a.shape != b.shape:
        raise ValueError(f"max_abs_difference: shapes {tuple(a.shape)} and {tuple(b.shape)} differ")
    if a.numel() == 0:
        return 0.0
    same = (a == b) | (a.isnan() & b.isnan())  # equal infinities (masked logits) and NaN in both agree
    return float(torch.where(same, torch.zeros_like(a), (a - b).abs()).nan_to_num(float("inf")).max())


def format_tolerance(tol: float) -> str:
    """``1e-05`` -> ``"1e-5"``, ``2.5e-05`` -> ``"2.5e-5"``: the short form used in stored verdicts."""
    mantissa, exponent = f"{tol:.6e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def agreement(mine: Any, theirs: Any, tol: float, name: str = "the reference") -> str:
    """``"matches <name> within <tol>"``, or the measured difference when it is larger than ``tol``."""
    err = max_abs_difference(mine, theirs)
    if err <= tol:
        return f"matches {name} within {format_tolerance(tol)}"
    return f"DIFFERS from {name}: max |difference| {err:.1e} > {format_tolerance(tol)}"


def bounded(value: float, floor: float) -> str:
    """``value`` as ``"< floor"`` when it is below ``floor`` (rounding noise), else to two significant digits."""
    value = float(value)
    return f"< {format_tolerance(floor)}" if abs(value) < floor else f"{value:.2g}"


def fixed(value: float, decimals: int) -> str:
    """``value`` to ``decimals`` places with no ``-0.00``: a slope of -0.001 and one of +0.001 print alike."""
    return f"{round(value, decimals) + 0.0:.{decimals}f}"
