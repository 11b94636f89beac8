"""hint(id): progressive hints, one per call, recorded in the progress file and shown in the progress table."""
from course_utils import hint, progress_table
from course_utils.harness import progress
from course_utils.harness.exercises import registry


def test_hints_come_one_per_call_and_are_recorded(progress_file):
    hints = registry()["5.1"].hints
    assert len(hints) >= 2
    first = hint("5.1", display=False)
    assert first == f"💡 5.1 hint 1 of {len(hints)}: {hints[0]}"
    assert progress.hints_taken("5.1") == 1
    assert f"hints: 1/{len(hints)}" in progress_table()
    for n in range(2, len(hints) + 1):
        assert hint("5.1", display=False).startswith(f"💡 5.1 hint {n} of {len(hints)}")
    again = hint("5.1", display=False)
    assert again.startswith(f"💡 5.1: all {len(hints)} hints shown already") and hints[-1] in again
    assert progress.hints_taken("5.1") == len(hints), "showing them again records nothing"


def test_hints_survive_a_pass_and_do_not_count_as_attempts(progress_file):
    hint("2.1", display=False)
    progress.record("2.1", "passed", "def f(): pass")
    entry = progress.load()["exercises"]["2.1"]
    assert entry["hints"] == 1 and entry["attempts"] == 1 and entry["status"] == "passed"


def test_an_exercise_without_hints_says_so(progress_file):
    without = next(ex for ex in registry().values() if not ex.hints)
    assert "has no hints" in hint(without.id, display=False)


def test_the_last_hint_is_close_to_the_answer():
    """Every exercise that has hints ends with one that names the computation (a formula or the call)."""
    for ex in registry().values():
        if ex.hints:
            assert any(ch in ex.hints[-1] for ch in "=(") and len(ex.hints) >= 2, ex.id
