"""What every notebook imports: ``from course_utils import setup, check, use``.

Importing this package first switches Triton to its CPU interpreter when there is no CUDA GPU.
That must happen before ``triton`` is imported anywhere, so it is the first thing done here.
"""
from course_utils import runtime as _runtime

_runtime.enable_triton_interpreter_if_no_gpu()
_runtime.record_launches_if_asked()

from course_utils.exercises import check, use  # noqa: E402
from course_utils.runtime import setup  # noqa: E402

__all__ = ["setup", "check", "use"]
