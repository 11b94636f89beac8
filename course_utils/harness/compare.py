"""How a wrong output differs from the right one, in one sentence: the mismatch described for the learner (shape,
dtype, NaN, the worst value, and a simple pattern where one holds: zeros, a sign, a transpose, a shift, a factor,
an offset, lower precision, a few rows, the last column). Pure functions of tensors; no exercise in sight."""
from __future__ import annotations

import math
from typing import Any

import torch

# torch.testing.assert_close's defaults (rtol, atol) per dtype.
DEFAULT_TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}



def describe_mismatch(expected: Any, got: Any, tolerances: dict | None = None, where: str = "",
                      names: tuple[str, ...] = ()) -> str | None:
    """None when ``got`` matches ``expected``; else one sentence saying how it differs. ``names``: what to
    call the elements of a tuple of outputs (default ``output[i]``)."""
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    what = f"{where}: " if where else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{what}expected a torch.Tensor, got {type(got).__name__}" + (
                " (did you forget to `return` it?)" if got is None else "")
        if got.shape != expected.shape:
            swapped = got.dim() >= 2 and got.shape == expected.transpose(-1, -2).shape
            return (f"{what}expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
                    + (" (the last two dimensions swapped: a transpose?)" if swapped else ""))
        if got.dtype != expected.dtype:
            return f"{what}expected dtype {expected.dtype}, got {got.dtype}"
        got_c, exp_c = got.detach().cpu(), expected.detach().cpu()
        if exp_c.dtype == torch.bool or not exp_c.is_floating_point():
            if torch.equal(got_c, exp_c):
                return None
            bad = (got_c != exp_c).nonzero()[0].tolist()
            return (f"{what}wrong value at index {bad}: expected {exp_c[tuple(bad)].item()}, "
                    f"got {got_c[tuple(bad)].item()}")
        rtol, atol = tolerances.get(exp_c.dtype, (1e-5, 1e-8))
        exp_f, got_f = exp_c.double(), got_c.double()
        new_nan = got_f.isnan() & ~exp_f.isnan()
        if new_nan.any():
            idx = new_nan.nonzero()[0].tolist()
            return (f"{what}NaN at index {idx} where the answer is {exp_f[tuple(idx)].item():.6g} "
                    f"({int(new_nan.sum())} NaN values in all){_where_wrong(~new_nan)}")
        ok = torch.isclose(got_f, exp_f, rtol=rtol, atol=atol, equal_nan=True)
        if bool(ok.all()):
            return None
        err = torch.where(ok, torch.zeros_like(got_f), (got_f - exp_f).abs().nan_to_num(math.inf))
        tol = f"(rtol={rtol:g}, atol={atol:g})"
        if exp_f.dim() == 0:
            return f"{what}expected {exp_f.item():.6g}, got {got_f.item():.6g} {tol}"
        idx = [int(i) for i in torch.unravel_index(err.argmax(), exp_f.shape)]
        return (f"{what}{int((~ok).sum())} of {ok.numel()} values differ; worst at index {idx}: "
                f"expected {exp_f[tuple(idx)].item():.6g}, got {got_f[tuple(idx)].item():.6g} {tol}"
                f"{_error_pattern(exp_f, got_f, rtol, atol) or _where_wrong(ok)}")
    if isinstance(expected, dict):  # named values: the name says where it differs
        if not isinstance(got, dict):
            return f"{what}expected a dict, got {type(got).__name__}"
        if got.keys() != expected.keys():
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"{what}missing {missing}" + (f", unexpected {extra}" if extra else "")
        for key, value in expected.items():
            problem = describe_mismatch(value, got[key], tolerances, f"{where}[{key!r}]" if where else str(key))
            if problem:
                return problem
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what}expected a tuple of {len(expected)} values, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{what}expected {len(expected)} values, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            label = f"{where}[{i}]" if where else (names[i] if i < len(names) else f"output[{i}]")
            problem = describe_mismatch(e, g, tolerances, label)
            if problem:
                return problem
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{what}expected a number, got {type(got).__name__}"
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(got) and math.isnan(expected)):
            return None
        return f"{what}expected {expected:.6g}, got {got:.6g}"
    if expected != got:
        return f"{what}expected {expected!r}, got {got!r}"
    return None


def _error_pattern(exp: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> str:
    """When a wrong answer is the right one transformed simply, say how (float64 tensors, one shape)."""
    finite = exp.isfinite() & got.isfinite()
    if not bool(finite.all()) or exp.numel() < 2:
        return ""

    def close(a, b):
        return bool(torch.isclose(a, b, rtol=rtol, atol=atol).all())

    if not bool(got.any()):
        return ". Your output is all zeros."
    if close(got, -exp):
        return ". Your output is the answer with its sign flipped."
    if exp.dim() >= 2 and exp.shape[-1] == exp.shape[-2] and close(got, exp.transpose(-1, -2)):
        return ". Your output is the answer transposed (last two dimensions swapped)."
    for dim in range(exp.dim()):
        n = exp.shape[dim]
        if n > 2:
            ahead, behind = exp.narrow(dim, 1, n - 1), exp.narrow(dim, 0, n - 1)
            if close(ahead, behind):  # the answer barely changes along this dimension: a shift says nothing
                continue
            if close(got.narrow(dim, 0, n - 1), ahead) or close(got.narrow(dim, 1, n - 1), behind):
                return f". Your output is the answer shifted by one position along dimension {dim}: an off-by-one?"
    nonzero = exp.abs() > atol
    if bool(nonzero.sum() >= 2):
        ratio = got[nonzero] / exp[nonzero]
        r = float(ratio.median())
        if abs(r) > 1e-3 and abs(r - 1) > 10 * rtol and close(got, r * exp):
            return f". Every value is {r:.4g} times the answer: a missing or extra constant factor."
    offset = float((got - exp).median())
    if abs(offset) > atol and close(got, exp + offset):
        return f". Every value is off by {offset:+.4g}: a constant offset."
    if int(nonzero.sum()) > 4:
        err, size = (got - exp).abs()[nonzero], exp.abs()[nonzero]
        rel = err / size
        grows = float(torch.corrcoef(torch.stack([err, size]))[0, 1]) > 0.7 if float(size.std()) > 0 else False
        # rounding errs both ways; a wrong formula (an eps, a scale) shifts every value the same way
        up = float(((got - exp)[nonzero] * exp[nonzero].sign() > 0).double().mean())
        if grows and 0.2 < up < 0.8 and float(rel.max()) < 1e-2 and float(rel.max()) < 30 * float(rel.median()):
            return (f". The error grows with the values (relative error at most {float(rel.max()):.1e}, about the "
                    "same everywhere): a step in lower precision (float16, bfloat16, TF32)?")
    return ""


def _where_wrong(ok: torch.Tensor) -> str:
    """Say when the wrong values sit in a few rows, or only in the last column (``ok``: bool)."""
    if ok.dim() < 2 or bool(ok.all()):
        return ""
    cols_bad = (~ok).flatten(0, -2).any(dim=0)
    if ok.shape[-1] > 2 and not bool(cols_bad[:-1].any()):
        return (". Only the last column is wrong: an off-by-one at the end of a row (a range or a mask that stops "
                "one short, or one too far)?")
    rows_bad = (~ok).flatten(0, -2).any(dim=-1)
    n_rows = rows_bad.numel()
    if 0 < int(rows_bad.sum()) < n_rows:
        bad = rows_bad.nonzero()[:, 0].tolist()
        shown = ", ".join(map(str, bad[:6])) + (", ..." if len(bad) > 6 else "")
        return (f". Only {len(bad)} of {n_rows} rows are wrong (rows {shown}, counting over all but the last "
                "dimension); the others match")
    return ""
