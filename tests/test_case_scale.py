"""The rule every exercise case keeps: each output the case checks is large compared with its absolute
tolerance, so that an answer of all zeros fails every case it is meant to test. A case whose values sit below the
tolerance accepts anything there (5.4's clamp case once had values of 1e-9 against an atol of 1e-5, and the wrong
`mean + eps1` passed). An output that is exactly zero in the answer (a zero gradient) is exempt: zeros are right.

For each case, every floating-point output of the answer is replaced by zeros and the checker's own comparison
(describe_mismatch, with the case's tolerances) must notice. (Output by output would be too strict: some outputs
are statistics whose right value is about zero, such as the mean of an initialised matrix.)"""
import pytest
import torch
from conftest import TRITON, runs_exercise

from course_utils.harness.exercises import describe_mismatch, exercise_ids, registry


def _leaves(tree, path=()):
    """(path, tensor) of every floating-point tensor in nested tuples/lists/dicts."""
    if isinstance(tree, torch.Tensor):
        if tree.is_floating_point():
            yield path, tree
    elif isinstance(tree, (tuple, list)):
        for i, t in enumerate(tree):
            yield from _leaves(t, path + (i,))
    elif isinstance(tree, dict):
        for k, t in tree.items():
            yield from _leaves(t, path + (k,))


def _replaced(tree, path, value):
    if not path:
        return value
    head, rest = path[0], path[1:]
    if isinstance(tree, dict):
        return {k: (_replaced(v, rest, value) if k == head else v) for k, v in tree.items()}
    return type(tree)(_replaced(v, rest, value) if i == head else v for i, v in enumerate(tree))


@pytest.mark.slow
@pytest.mark.parametrize("exercise_id", [runs_exercise(registry()[i], i, id=i) for i in exercise_ids()])
def test_all_zeros_fails_every_case_where_the_answer_is_not_zero(exercise_id):
    ex = registry()[exercise_id]
    if ex.needs_triton and not TRITON:
        pytest.skip("Triton cannot run here")
    below = []
    for case in ex.cases():
        if case.raises is not None:
            continue
        expected = ex.run(ex.answer(), case)
        tolerances = {**ex.tolerances, **case.tolerances}
        leaves = list(_leaves(expected))
        finite = [leaf.detach()[leaf.detach().isfinite()] for _, leaf in leaves]
        if not any(bool((f != 0).any()) for f in finite):
            continue  # zeros (or only infinities) are the answer here: nothing to test
        zeros = expected
        for path, leaf in leaves:
            zeros = _replaced(zeros, path, torch.zeros_like(leaf))
        if describe_mismatch(expected, zeros, tolerances) is None:
            largest = max(f.abs().max().item() for f in finite if f.numel())
            below.append(f"case '{case.name}': largest |value| {largest:.3g} is within the tolerance of zero")
    assert not below, f"{exercise_id}: an all-zeros answer passes: " + "; ".join(below)
