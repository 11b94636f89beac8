"""``course_utils.exercises``, the exercise machinery's public name (``from course_utils.exercises import
exercise_ids, reference``): this module is :mod:`course_utils.harness.exercises` itself, not a copy, so the
registry, ``check`` and anything patched on either name are one."""
import sys

from course_utils.harness import exercises as _exercises

sys.modules[__name__] = _exercises
