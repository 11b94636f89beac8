"""How a wrong output differs from the right one, in one sentence: the mismatch described for the learner (shape,
dtype, NaN, the worst value, and a simple pattern where one holds: zeros, a sign, a transpose, a shift, swapped
halves, a square root, a factor (named when it is a small fraction or its root), a factor per row or per column, an
offset, lower precision, a few rows, the last column, infinities, a mask that kept or dropped other entries, one
value written for another). Of several outputs it names the first that differs, then which others are wrong or right,
and an output that is another one's answer. Pure functions of tensors and numbers; no exercise in sight."""
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
            swapped = expected.dim() >= 2 and got.dim() >= 2 and got.shape == expected.transpose(-1, -2).shape
            return (f"{what}expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
                    + (" (the last two dimensions swapped: a transpose?)" if swapped else ""))
        if got.dtype != expected.dtype:
            return f"{what}expected dtype {expected.dtype}, got {got.dtype}"
        got_c, exp_c = got.detach().cpu(), expected.detach().cpu()
        if exp_c.dtype == torch.bool or not exp_c.is_floating_point():
            if torch.equal(got_c, exp_c):
                return None
            wrong = got_c != exp_c
            bad = wrong.nonzero()[0].tolist()
            return (f"{what}{int(wrong.sum())} of {wrong.numel()} values differ; first at index {bad}: expected "
                    f"{exp_c[tuple(bad)].item()}, got {got_c[tuple(bad)].item()}{_exact_pattern(exp_c, got_c)}")
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
            return (f"{what}expected {exp_f.item():.6g}, got {got_f.item():.6g} {tol}"
                    f"{_scalar_relation(exp_f.item(), got_f.item(), rtol, atol)}")
        idx = [int(i) for i in torch.unravel_index(err.argmax(), exp_f.shape)]
        pattern = _infinity_pattern(exp_f, got_f, ok) or _error_pattern(exp_f, got_f, rtol, atol) or _where_wrong(ok)
        return (f"{what}{int((~ok).sum())} of {ok.numel()} values differ; worst at index {idx}: "
                f"expected {exp_f[tuple(idx)].item():.6g}, got {got_f[tuple(idx)].item():.6g} {tol}{pattern}")
    if isinstance(expected, dict):  # named values: the name says where it differs
        if not isinstance(got, dict):
            return f"{what}expected a dict, got {type(got).__name__}"
        if got.keys() != expected.keys():
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"{what}missing {missing}" + (f", unexpected {extra}" if extra else "")
        labels = [f"{where}[{key!r}]" if where else str(key) for key in expected]
        return _first_and_the_rest([expected[k] for k in expected], [got[k] for k in expected], labels, tolerances)
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what}expected a tuple of {len(expected)} values, got {type(got).__name__}"
        if not names and _short_numbers(expected) and _short_numbers(got):  # a few numbers: shown whole
            if len(got) == len(expected) and not any(
                    describe_mismatch(e, g, tolerances) for e, g in zip(expected, got)):
                return None
            return (f"{what}expected {len(expected)} values {_numbers(expected)}, "
                    f"got {len(got)} {_numbers(got)}")
        if len(got) != len(expected):
            return f"{what}expected {len(expected)} values, got {len(got)}"
        labels = [f"{where}[{i}]" if where else (names[i] if i < len(names) else f"output[{i}]")
                  for i in range(len(expected))]
        return _first_and_the_rest(list(expected), list(got), labels, tolerances, outputs=not where)
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{what}expected a number, got {type(got).__name__}"
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(got) and math.isnan(expected)):
            return None
        return f"{what}expected {expected:.6g}, got {got:.6g}{_scalar_relation(expected, got, 1e-5, 1e-7)}"
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
    along = _shifted(exp, got, close)
    if along:
        return f". Your output is the answer shifted by one position {along}: an off-by-one?"
    for dim in range(exp.dim()):
        n = exp.shape[dim]
        if n >= 4 and n % 2 == 0 and not close(exp, exp.roll(n // 2, dim)) and close(got, exp.roll(n // 2, dim)):
            return f". Your output is the answer with the two halves of dimension {dim} swapped."
    if bool((exp >= 0).all()) and not close(exp, exp.sqrt()):
        if close(got, exp.sqrt()):
            return ". Your output is the square root of the answer: a square root too many?"
        if close(got, exp * exp):
            return ". Your output is the square of the answer: a square root missing?"
    nonzero = exp.abs() > atol
    if bool(nonzero.sum() >= 2):
        ratio = got[nonzero] / exp[nonzero]
        r = float(ratio.median())
        if abs(r) > 1e-3 and abs(r - 1) > 10 * rtol and close(got, r * exp):
            simple = _simple_factor(r, rtol)
            simple = f" (= {simple})" if simple and not simple.isdigit() else ""
            return f". Every value is {r:.4g}{simple} times the answer: a missing or extra constant factor."
    grouped = _group_factors(exp, got, rtol, atol)
    if grouped:
        return grouped
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


def _first_and_the_rest(expected: list, got: list, labels: list[str], tolerances: dict, outputs: bool = True
                        ) -> str | None:
    """The first differing element's description; then, for several outputs (``outputs``), which of the others
    differ too (a number with its values) and, where the wrong one equals another expected output, that."""
    problems = [describe_mismatch(e, g, tolerances, label) for e, g, label in zip(expected, got, labels)]
    wrong = [i for i, p in enumerate(problems) if p]
    if not wrong:
        return None
    first = wrong[0]
    message = problems[first]
    if not outputs or len(expected) < 2:
        return message
    partner = None
    for j in range(len(expected)):
        if (j != first and _same_kind(expected[j], got[first]) and isinstance(got[first], torch.Tensor)
                and got[first].numel() > 1 and describe_mismatch(expected[j], expected[first], tolerances)
                and describe_mismatch(expected[j], got[first], tolerances) is None):
            sentence = f"Your {labels[first]} is the answer's {labels[j]}"
            if _same_kind(expected[first], got[j]) and describe_mismatch(expected[first], got[j], tolerances) is None:
                sentence += f", and your {labels[j]} the answer's {labels[first]}: the outputs in the wrong order?"
                partner = j
            message = _then(message, sentence)
            break
    others = [_briefly(expected[i], got[i], labels[i]) for i in wrong[1:] if i != partner]
    right = [labels[i] for i in range(len(expected)) if not problems[i]]
    if others:
        message = _then(message, "Also wrong: " + ", ".join(others[:4])
                        + (f" and {len(others) - 4} more" if len(others) > 4 else "") + ".")
    if right and len(right) <= 4:
        message = _then(message, f"Right: {', '.join(right)}.")
    return message


def _then(message: str, sentence: str) -> str:
    """``message`` followed by another sentence."""
    return message + (" " if message.endswith((".", "?")) else ". ") + sentence


def _same_kind(a: Any, b: Any) -> bool:
    """Two outputs that can be compared: tensors of one shape and dtype, or two numbers."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.shape == b.shape and a.dtype == b.dtype
    return _is_number(a) and _is_number(b)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _briefly(expected: Any, got: Any, label: str) -> str:
    """``label``, with both values where they are single numbers."""
    e = expected.item() if isinstance(expected, torch.Tensor) and expected.numel() == 1 else expected
    g = got.item() if isinstance(got, torch.Tensor) and got.numel() == 1 else got
    if _is_number(e) and _is_number(g):
        return f"{label} (expected {e:.4g}, got {g:.4g})"
    if isinstance(g, str):  # a named value, e.g. "name: setting": the string says more than its position
        return repr(g)
    return label


def _short_numbers(values: Any) -> bool:
    return isinstance(values, (list, tuple)) and len(values) <= 20 and all(map(_is_number, values))


def _numbers(values: Any) -> str:
    return "[" + ", ".join(f"{v:.6g}" if isinstance(v, float) else str(v) for v in values) + "]"


def _simple_factor(r: float, rel: float) -> str:
    """``r`` written as a small fraction p/q or its square root (p, q <= 12), when one is within ``rel``
    relative of it; else ""."""
    if not math.isfinite(r) or r <= 0:
        return ""
    for root in (False, True):
        target = r * r if root else r
        for q in range(1, 13):
            p = round(target * q)
            if 1 <= p <= 12 and p != q and math.gcd(p, q) == 1 and abs(p / q - target) <= 2 * rel * target:
                if root and math.isqrt(p) ** 2 == p and math.isqrt(q) ** 2 == q:
                    continue  # a rational root was found on the first pass
                fraction = str(p) if q == 1 else f"{p}/{q}"
                return f"√{fraction}" if root and q == 1 else (f"√({fraction})" if root else fraction)
    return ""


def _scalar_relation(expected: float, got: float, rtol: float, atol: float) -> str:
    """What a wrong single number is, relative to the answer, where that is something simple."""
    if not (math.isfinite(expected) and math.isfinite(got)):
        if math.isfinite(expected) and math.isinf(got):
            return ". Your value is infinite: an overflow (exp of a large number), a log of 0 or a division by 0?"
        return ""
    if abs(expected) <= atol or got == 0:  # an answer within the tolerance of 0: no ratio means anything
        return ""

    def close(a, b):
        return abs(a - b) <= atol + rtol * abs(b)

    if close(got, -expected):
        return ". Your value is the answer with its sign flipped."
    if rtol > 1e-3:  # a statistic of random numbers: only a rough ratio means anything
        return f" (about {got / expected:.2g} times the answer)"
    if expected > 0 and got > 0 and not close(expected, math.sqrt(expected)):
        if close(got, math.sqrt(expected)):
            return ". Your value is the square root of the answer: a square root too many?"
        if close(got, expected * expected):
            return ". Your value is the square of the answer: a square root missing?"
    factor = _simple_factor(got / expected, max(rtol, 1e-9) + atol / abs(expected))
    if factor:
        return f". Your value is {factor} times the answer: a missing or extra constant factor?"
    return ""


def _infinity_pattern(exp: torch.Tensor, got: torch.Tensor, ok: torch.Tensor) -> str:
    """Where every finite value matches and only which entries are -inf differs (a mask or a filter that decided
    differently), or where infinities appear that the answer does not have (``ok``: where they agree)."""
    differ = ~ok
    inf_mismatch = differ & (exp.isinf() | got.isinf())
    if not bool(inf_mismatch.any()):
        return ""
    plus_inf = inf_mismatch & ((exp == math.inf) | (got == math.inf))
    masked_only = not bool((differ & ~inf_mismatch).any()) and not bool(plus_inf.any())
    if not masked_only:
        new_inf = got.isinf() & exp.isfinite()
        if bool(new_inf.any()):
            idx = new_inf.nonzero()[0].tolist()
            return (f". {int(new_inf.sum())} of your values are infinite where the answer is finite (first at index "
                    f"{idx}): an overflow (exp of a large number), a log of 0 or a division by 0?")
        return ""
    parts = []
    for have, lacks, text in ((got, exp, "you set {n} to -inf where the answer keeps a value"),
                              (exp, got, "you keep {n} that the answer sets to -inf")):
        extra = have.isinf() & lacks.isfinite()
        if bool(extra.any()):
            parts.append(text.format(n=int(extra.sum())) + f" (first at index {extra.nonzero()[0].tolist()})")
    return ". Every finite value matches; only which entries are -inf differs: " + "; ".join(parts) + "."


def _shifted(exp: torch.Tensor, got: torch.Tensor, close) -> str:
    """'along dimension d' when ``got`` is ``exp`` shifted by one position along d (by ``close``); else ""."""
    for dim in range(exp.dim()):
        n = exp.shape[dim]
        if n > 2:
            ahead, behind = exp.narrow(dim, 1, n - 1), exp.narrow(dim, 0, n - 1)
            if close(ahead, behind):  # the answer barely changes along this dimension: a shift says nothing
                continue
            if close(got.narrow(dim, 0, n - 1), ahead) or close(got.narrow(dim, 1, n - 1), behind):
                return f"along dimension {dim}"
    return ""


def _exact_pattern(exp: torch.Tensor, got: torch.Tensor) -> str:
    """For integer or boolean outputs: a shift by one position, or one value written where the answer has another."""
    along = _shifted(exp, got, torch.equal)
    if along:
        return f". Your output is the answer shifted by one position {along}: an off-by-one?"
    wrong = got != exp
    pairs = {(e, g) for e, g in zip(exp[wrong].tolist(), got[wrong].tolist())}
    if len(pairs) == 1 and int(wrong.sum()) > 1:
        (e, g), = pairs
        return f". Everywhere they differ, the answer has {e} and you have {g}."
    return ""


def _group_factors(exp: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> str:
    """When each row (along the last dimension) or each column (the last index) of ``got`` is that of ``exp`` times a
    factor of its own: at least two groups wrong, none of them zeroed, and not one factor for all (a constant factor
    is said elsewhere). Float64 tensors of one shape."""
    if exp.dim() < 2:
        return ""
    e2, g2 = exp.flatten(0, -2), got.flatten(0, -2)  # (rows, columns)
    nonzero = e2.abs() > 0
    ratio = torch.where(nonzero, g2 / torch.where(nonzero, e2, torch.ones_like(e2)), torch.full_like(e2, math.nan))
    for axis, group, cause in ((1, "row (along the last dimension)", "whatever scales a whole row (a normaliser: a "
                                "sum, a max, a norm) is off?"),
                               (0, "column (the last index)", "a per-feature scale (a weight) missing, or applied "
                                "twice?")):
        n_groups, size = e2.shape[1 - axis], e2.shape[axis]
        if n_groups < 2 or size < 3:
            continue
        factors = ratio.nanmedian(dim=axis, keepdim=True).values
        if bool(factors.isnan().any()) or not bool(torch.isclose(g2, e2 * factors, rtol=rtol, atol=atol).all()):
            continue
        right = torch.isclose(factors, torch.ones_like(factors), rtol=rtol, atol=atol)
        wrong = factors[~right]
        if wrong.numel() < 2 or bool((wrong.abs() <= atol).any()) or bool(torch.isclose(
                wrong, wrong[:1].expand_as(wrong), rtol=rtol, atol=atol).all()):
            continue
        kind = group.split()[0]
        matching = f"; {int(right.sum())} of {n_groups} {kind}s match" if bool(right.any()) else ""
        return (f". Each {group} is the answer times a factor of its own (from {float(wrong.min()):.4g} to "
                f"{float(wrong.max()):.4g}{matching}): {cause}")
    return ""
