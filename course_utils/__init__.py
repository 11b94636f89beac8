"""What every notebook imports: ``from course_utils import setup, check, use``.

Importing this package first switches Triton to its CPU interpreter when there is no CUDA GPU.
That must happen before ``triton`` is imported anywhere, so it is the first thing done here.

Layout: ``runtime``, ``widgets``, ``plotting`` and ``report`` are what notebook cells import; one module per
concept (``gradflow``, ``stability``, ``initialization``, ``normalization``, ``losses``, ``optim``, ``sampling``,
``rope``, ``attention``, ``further``) plus the shared ``models``, ``data``, ``training``, ``charlm``,
``distributed`` and ``measure``; ``chapters`` is the table of chapters (notebook, solutions module, exercise ids,
modules, kernels, tests); ``kernels/`` holds the Triton kernels; ``harness/`` the machinery (exercises, progress,
notebook runner, lab, benchmark, command line). The docstring of each concept and shared module ends with the
chapters whose notebooks use a function, class or value defined in it ("Used by chapters 2 and 5.";
tests/test_used_by.py keeps these lines true).
"""
import os as _os

from course_utils import runtime as _runtime

_runtime.enable_triton_interpreter_if_no_gpu()
_runtime.apply_thread_setting()  # one intra-op thread unless COURSE_THREADS says otherwise

if _os.environ.get("COURSE_RECORD_LAUNCHES"):  # harness.compiled.RECORD_LAUNCHES_ENV, set by `execute` for its kernel
    from course_utils.harness.compiled import record_launches_if_asked

    record_launches_if_asked()

from course_utils.harness.exercises import check, exercise_ids, from_progress, hint, reference, stub_source, use  # noqa: E402
from course_utils.harness.predictions import predict, reveal  # noqa: E402
from course_utils.harness.progress import progress_table  # noqa: E402
from course_utils.runtime import setup  # noqa: E402

__all__ = ["setup", "check", "use", "hint", "predict", "reveal", "from_progress", "exercise_ids", "reference",
           "progress_table", "stub_source"]
