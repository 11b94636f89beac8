"""No Triton, full course: where ``import triton`` fails (macOS and Windows have no Triton on PyPI).

``tests/no_triton/sitecustomize.py`` makes every ``triton`` import raise ``ModuleNotFoundError``; with
that folder first on ``PYTHONPATH``, each notebook runs top to bottom in a real kernel, and the unit
tests of the exercise machinery run in a subprocess. Nothing may import Triton or a kernel module.
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import NOTEBOOKS, REPO_ROOT

from course_utils.harness.notebook_runner import execute

BLOCKER = Path(__file__).resolve().parent / "no_triton"
NO_TRITON_ENV = {"PYTHONPATH": os.pathsep.join([str(BLOCKER), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
# what the kernel reports at the end of a run: any module of triton or of course_utils.kernels it imported
IMPORTED_KERNELS = ("import sys\nprint('imported:', sorted(m for m in sys.modules "
                    "if m.split('.')[0] == 'triton' or m.startswith('course_utils.kernels')))")


def _run(code: str) -> subprocess.CompletedProcess:
    env = {**os.environ, **NO_TRITON_ENV}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=600)


def test_the_blocker_blocks():
    out = _run("import triton")
    assert out.returncode != 0 and "ModuleNotFoundError" in out.stderr, out.stderr


def test_registry_check_and_use_import_nothing_of_triton():
    out = _run(
        "import course_utils, solutions, sys\n"
        "from course_utils import check, use\n"
        "from course_utils.exercises import exercise_ids, reference\n"
        "from course_utils.harness import launchers\n"
        "from course_utils.harness.registry import registry\n"
        "from course_utils.runtime import triton_status\n"
        "assert triton_status().mode == 'unavailable'\n"
        "import importlib\n"
        "from course_utils.chapters import CHAPTERS\n"
        "every = [ex.id for c in CHAPTERS for ex in importlib.import_module(c.solutions_module).EXERCISES]\n"
        "assert exercise_ids() == every and len(every) >= 47, every\n"
        "r = check('1.2', lambda x: x, display=False)\n"
        "assert r.status == 'failed', r.message\n"
        "triton_ids = [ex.id for ex in registry().values() if ex.needs_triton]\n"
        "launched = [ex.id for ex in registry().values() if getattr(ex.call, '__module__', '') == launchers.__name__]\n"
        "assert triton_ids and triton_ids == launched, triton_ids\n"
        "for ex in registry().values():\n"
        "    if ex.needs_triton:\n"
        "        r = check(ex.id, ex.mistakes[0].fn, display=False)\n"
        "        assert r.status == 'skipped' and 'Triton is not installed' in r.message, r.message\n"
        "        assert use(ex.id, ex.mistakes[0].fn) is reference(ex.id)\n"
        "from solutions.ch05_optimization import adamw_kernel\n"
        "assert adamw_kernel is reference('5.5') and adamw_kernel.triton_unavailable\n"
        + IMPORTED_KERNELS)
    assert out.returncode == 0, out.stderr
    assert "imported: []" in out.stdout, out.stdout


def test_doctor_reports_the_missing_triton_and_passes():
    out = subprocess.run([sys.executable, "-m", "course_utils", "doctor"], env={**os.environ, **NO_TRITON_ENV},
                         capture_output=True, text=True, cwd=REPO_ROOT, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "OK    triton      not available - Triton is not installed" in out.stdout, out.stdout


def test_unit_tests_of_the_machinery_pass_without_triton():
    """The registry, check/use, every checker (non-Triton ones exactly as before), progress and doctor."""
    files = ["tests/test_registry.py", "tests/test_checker.py", "tests/test_sandbox.py", "tests/test_compare.py",
             "tests/test_exercise_catalogue.py", "tests/test_progress.py", "tests/test_runtime.py"]
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files],
                         env={**os.environ, **NO_TRITON_ENV}, capture_output=True, text=True, cwd=REPO_ROOT,
                         timeout=900)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
    assert " passed" in out.stdout and " failed" not in out.stdout


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs_clean_without_triton(path):
    nb, seconds = execute(path, env=NO_TRITON_ENV, extra_cells=[IMPORTED_KERNELS])
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "\n".join(o.get("text", "") for o in outputs)
    assert "imported: []" in text, text[-2000:]
    assert "Traceback" not in text
    if "TRITON" in "".join(c.source for c in nb.cells):  # a chapter with Triton cells says why they are skipped
        assert "Triton is not available here: Triton is not installed" in text or "⏭" in text
    assert seconds < 120, f"{path.name} took {seconds:.0f} s without Triton"
