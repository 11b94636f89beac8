"""Test-wide set-up: a throwaway progress file and learner mode, before any kernel starts.

nbval and nbclient start notebook kernels as subprocesses that inherit this environment, so the
variables are set at import time, not in a fixture.
"""
import os
import tempfile
from pathlib import Path

import pytest

_progress_dir = tempfile.mkdtemp(prefix="course-progress-")
os.environ["COURSE_PROGRESS"] = str(Path(_progress_dir) / "progress.json")
os.environ.pop("COURSE_STRICT", None)  # learner mode unless a test asks for strict mode
os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")

import course_utils  # noqa: E402,F401  (switches on the Triton interpreter before triton is imported)
from course_utils.runtime import triton_status  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
TRITON = triton_status().available
# for tests that need Triton itself; tests/test_no_triton.py runs the rest where `import triton` fails
requires_triton = pytest.mark.skipif(not TRITON, reason="Triton cannot run here")


@pytest.fixture(autouse=True)
def progress_file(tmp_path, monkeypatch):
    """A fresh, empty progress file for every test in tests/ (and the kernels it starts).

    The file set at import time above is then left to nbval's learner-mode runs of notebooks/, which
    record only "todo" for the stubs: so chapter 8's ``from_progress`` cells find no earlier passes
    and print what the stored outputs show, whatever the solved-mode and checker tests recorded.
    """
    path = tmp_path / "progress.json"
    monkeypatch.setenv("COURSE_PROGRESS", str(path))
    return path


@pytest.fixture
def strict(monkeypatch):
    monkeypatch.setenv("COURSE_STRICT", "1")
