"""The course's machinery, apart from its content: the exercise checker (``exercises``: check, use, from_progress,
hint, and every public name of the parts beside it: the data model ``spec``, the ``registry``, the mismatch wording
``compare``, the ``sandbox`` that copies inputs and stops runaway code, the exception types in ``errors``), the
learner's progress file and its table (``progress``), the guarded launchers that run a learner's Triton kernel
(``launchers``, ``guards``), the compiled tier (``compiled``), the notebook runner, the lab launcher, the benchmark
and the command line (``cli``; ``python -m course_utils``).

Nothing in ``course_utils.kernels`` or in a chapter's content module imports from here at import time; the
learner's entry points (``setup, check, use, from_progress``) are re-exported by ``course_utils``.
"""
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parents[1]  # course_utils/
REPO_ROOT = PACKAGE_DIR.parent  # the checkout: notebooks/, solutions/, constraints-cpu.txt
