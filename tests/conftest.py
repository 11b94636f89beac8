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
from course_utils.chapters import CHAPTERS  # noqa: E402
from course_utils.runtime import triton_status  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = [REPO_ROOT / chapter.notebook for chapter in CHAPTERS]  # tests/test_chapters.py: all of notebooks/
TRITON = triton_status().available
# for tests that need Triton itself; tests/test_no_triton.py runs the rest where `import triton` fails
requires_triton = pytest.mark.skipif(not TRITON, reason="Triton cannot run here")


def runs_exercise(ex, *values, id: str):
    """``pytest.param(*values, id=id)`` for a test that runs exercise ``ex``'s answer or mistakes: marked ``kernel``
    when ``ex`` is a Triton exercise, whose answer and mistakes are kernels."""
    return pytest.param(*values, marks=[pytest.mark.kernel] if ex.needs_triton else [], id=id)


def fails_with(fn, *fragments, exercise="0.1"):
    """``check(exercise, fn)``, asserted to fail with every one of ``fragments`` in its message; the result."""
    from course_utils import check

    result = check(exercise, fn, display=False)
    assert result.status == "failed", result.message
    for fragment in fragments:
        assert fragment in result.message, result.message
    return result


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


# ------------------------------------------------------------------------------------ learner-mode times

LEARNER_SECONDS: dict[str, float] = {}  # notebook name -> seconds its learner-mode (nbval) cells took in this run


@pytest.hookimpl(tryfirst=True)  # before `-m` selects: the markers set here count
def pytest_collection_modifyitems(session, config, items):
    """Mark the tiers that cannot mark themselves: nbval's cells (notebooks/*.ipynb) ``notebook``, and
    tests/test_browser.py ``browser``. Then the browser tier last: it then knows how long each notebook takes on this
    machine (its Run All limit is a multiple of that), and the nbval kernels it would otherwise compete with are
    gone."""
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
        elif item.path.name == "test_browser.py":
            item.add_marker(pytest.mark.browser)
    items.sort(key=lambda item: "test_browser.py" in item.nodeid)


def pytest_runtest_logreport(report):
    """Add up each notebook's nbval cell times (setup, call and teardown) into LEARNER_SECONDS."""
    path = report.nodeid.split("::")[0]
    if path.endswith(".ipynb"):
        name = Path(path).name
        LEARNER_SECONDS[name] = LEARNER_SECONDS.get(name, 0.0) + report.duration
