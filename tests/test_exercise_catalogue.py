"""The exercise catalogue (solutions/): every exercise accepts its reference answer and rejects each realistic
mistake with that mistake's hint. A Triton exercise's tests are marked ``kernel``: they launch its kernels."""
import pytest
from conftest import TRITON, runs_exercise

from course_utils import check
from course_utils.harness.exercises import checking_references, registry

EXERCISES = list(registry().values())
RUNS = [runs_exercise(ex, ex, id=ex.id) for ex in EXERCISES]
MISTAKES = [runs_exercise(ex, ex, m, id=f"{ex.id}-{m.name}") for ex in EXERCISES for m in ex.mistakes]


@pytest.mark.parametrize("ex", RUNS)
def test_reference_passes(ex):
    with checking_references():
        result = check(ex.id, ex.answer(), display=False)
    if ex.needs_triton and not TRITON:  # the no-Triton tier runs this file too
        assert result.status == "skipped" and "Triton" in result.message, result.message
        return
    assert result.passed, result.message


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_every_exercise_has_mistakes_and_cases(ex):
    assert len(ex.mistakes) >= 2, "an exercise needs realistic wrong answers to reject"
    assert len(ex.cases()) >= 4


@pytest.mark.parametrize("ex,mistake", MISTAKES)
def test_mistake_is_rejected_with_its_hint(ex, mistake):
    result = check(ex.id, mistake.fn, display=False)
    if ex.needs_triton and not TRITON:
        assert result.status == "skipped", result.message
        return
    assert result.status == "failed", f"{ex.id} accepted the mistake '{mistake.name}'"
    assert result.mistake == mistake.name, result.message
    assert mistake.hint in result.message


# (exercise id, parameter) pairs that the contract fixes for every case, each with its reason; none today.
FIXED_BY_CONTRACT: dict[tuple[str, str], str] = {}


@pytest.mark.parametrize("ex", EXERCISES, ids=[e.id for e in EXERCISES])
def test_every_scalar_parameter_takes_two_values_across_the_cases(ex):
    """A parameter that never changes can be hard-coded by a learner and pass (7.1 once ignored inv_freq)."""
    import inspect

    fn = ex.call if ex.call is not None else ex.answer()
    params = list(inspect.signature(getattr(fn, "fn", fn)).parameters.values())
    if ex.call is not None:
        params = params[1:]  # the candidate itself
    values = {p.name: set() for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    for case in ex.cases():
        bound = dict(zip(values, case.args)) | case.kwargs
        for name, param in ((p.name, p) for p in params if p.name in values):
            value = bound.get(name, param.default)
            if isinstance(value, (bool, int, float, str)) or value is None:
                values[name].add(value)
    for name, seen in values.items():
        if seen and len(seen) < 2 and (ex.id, name) not in FIXED_BY_CONTRACT:
            raise AssertionError(f"{ex.id}: every case passes {name} = {seen.pop()!r}; vary it")
