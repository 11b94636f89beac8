"""``course_utils.exercises``: the exercise machinery's public names, re-exported from
:mod:`course_utils.harness.exercises` (``from course_utils.exercises import exercise_ids, reference``)."""
from course_utils.harness.exercises import check, exercise_ids, from_progress, hint, reference, stub_source, use

__all__ = ["exercise_ids", "reference", "check", "use", "from_progress", "hint", "stub_source"]
