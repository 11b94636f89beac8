"""A batch of realistic attempts (tests/attempts/) through the checker, as a learner would submit them.

Wrong attempts (slips other than the exercises' listed mistakes) must be rejected, and where the rejection's
message was rated helpful (tests/attempts/RATINGS.md) it must still contain the words that make it so: a
diagnosis that regresses fails here. Correct attempts, written differently from the reference, must pass.
"""
import importlib
import re
from collections import Counter
from pathlib import Path

import pytest
from attempts import CHAPTERS
from conftest import TRITON, runs_exercise

from course_utils import check
from course_utils.harness.exercises import registry

ATTEMPTS = [attempt for chapter in CHAPTERS for attempt in importlib.import_module(f"attempts.{chapter}").ATTEMPTS]
RATINGS = Path(__file__).parent / "attempts" / "RATINGS.md"
RATING_WORDS = ("helpful", "generic", "misleading")


def _name(fn) -> str:
    return getattr(fn, "fn", fn).__name__  # a Triton kernel's Python function has the name


def _params():
    return [runs_exercise(registry()[ex_id], ex_id, fn, wrong, words, id=f"{ex_id}-{_name(fn)}")
            for ex_id, fn, wrong, words in ATTEMPTS]


@pytest.mark.parametrize("exercise_id,fn,what_is_wrong,words", _params())
def test_attempt(exercise_id, fn, what_is_wrong, words):
    result = check(exercise_id, fn, display=False)
    if registry()[exercise_id].needs_triton and not TRITON:
        assert result.status == "skipped", result.message
        return
    if what_is_wrong is None:
        assert result.passed, f"a correct answer was rejected:\n{result.message}"
        return
    assert result.status == "failed", f"{exercise_id} accepted a wrong answer ({what_is_wrong})"
    missing = [w for w in words if w not in result.message]
    assert not missing, f"the message lost {missing} (rated helpful in RATINGS.md):\n{result.message}"


# exercises added while the batch was being written, their contracts still moving: attempts to come (none now)
AWAITING_ATTEMPTS: set[str] = set()


def test_the_batch_covers_every_exercise():
    """At least two wrong attempts per exercise (exactly two for a Triton one: the interpreter is slow), a correct
    one for at least ten exercises, a docstring naming the slip on each, and no name used twice."""
    wrong = Counter(ex_id for ex_id, _, what, _ in ATTEMPTS if what is not None)
    assert set(AWAITING_ATTEMPTS) <= set(registry()) and not set(AWAITING_ATTEMPTS) & set(wrong)
    for ex in registry().values():
        assert wrong[ex.id] >= 2 or ex.id in AWAITING_ATTEMPTS, f"{ex.id} has {wrong[ex.id]} wrong attempts"
        assert not ex.needs_triton or wrong[ex.id] == 2, ex.id
    assert len({ex_id for ex_id, _, what, _ in ATTEMPTS if what is None}) >= 10
    assert all((getattr(fn, "fn", fn).__doc__ or "").strip() for _, fn, _, _ in ATTEMPTS)
    names = Counter(_name(fn) for _, fn, _, _ in ATTEMPTS)
    assert [n for n, c in names.items() if c > 1] == []


def test_ratings_rate_every_wrong_attempt():
    """RATINGS.md has one row per wrong attempt with a rating before and after; a message rated helpful after has
    the words that this file checks (so that its helpfulness is tested, not only claimed)."""
    rows = {}
    for line in RATINGS.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 5 and re.fullmatch(r"\d\.\d", cells[0]):
            rows[(cells[0], cells[1].strip("`"))] = (cells[3], cells[4])
    attempts = {(ex_id, _name(fn)): words for ex_id, fn, what, words in ATTEMPTS
                if what is not None}
    assert set(rows) == set(attempts)
    for key, (before, after) in rows.items():
        assert before in RATING_WORDS and after in RATING_WORDS, (key, before, after)
        assert (after == "helpful") == bool(attempts[key]), (key, after, attempts[key])
