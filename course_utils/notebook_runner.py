"""Execute course notebooks with nbclient: in learner mode (to refresh stored outputs) or in
solved mode (every exercise cell replaced by its reference answer, ``COURSE_STRICT=1``).

Used by ``python -m course_utils execute`` and by the solved-mode tests.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
import time
from pathlib import Path

import nbformat


@contextlib.contextmanager
def _environment(**values: str):
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def exercise_cells(nb) -> list:
    """The cells tagged ``exercise``, each with ``metadata.exercise`` set to its id."""
    return [c for c in nb.cells if "exercise" in c.get("metadata", {}).get("tags", [])]


def sync_stubs(path: Path) -> list[str]:
    """Rewrite the notebook's exercise cells from ``stub_source`` (the reference's signature and docstring);
    returns the ids whose cell changed (the notebook is written only then)."""
    from course_utils.exercises import stub_source

    nb = nbformat.read(path, as_version=4)
    changed = []
    for cell in exercise_cells(nb):
        stub = stub_source(cell.metadata["exercise"]).rstrip("\n")
        if cell.source != stub:
            cell.source = stub
            changed.append(cell.metadata["exercise"])
    if changed:
        nbformat.write(nb, path)
    return changed


def solved(nb):
    """A copy of ``nb`` whose exercise cells hold the reference answers' source."""
    from course_utils.exercises import solution_source

    nb = nbformat.from_dict(nb)
    for cell in exercise_cells(nb):
        cell.source = solution_source(cell.metadata["exercise"]).rstrip("\n")
    return nb


def execute(path: Path, *, solved_mode: bool = False, write: bool = False, timeout: int = 600,
            env: dict[str, str] | None = None, extra_cells: list[str] = ()):
    """Run every cell of the notebook at ``path``; returns ``(notebook, seconds)``.

    Progress goes to a throwaway file, so stored outputs never depend on a learner's progress.
    ``env`` adds environment variables for the kernel (e.g. a ``PYTHONPATH`` that blocks Triton);
    ``extra_cells`` are code cells appended to the run (never written back).
    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    from nbclient import NotebookClient

    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if solved_mode:
        nb = solved(nb)
    if extra_cells:
        if write:
            raise ValueError("extra_cells are for test runs: they are never written to the notebook")
        nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    with tempfile.TemporaryDirectory() as tmp, _environment(
            COURSE_PROGRESS=str(Path(tmp) / "progress.json"), COURSE_STRICT="1" if solved_mode else "0",
            PYTHONHASHSEED="0", **(env or {})):
        client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    if write:
        for cell in nb.cells:  # run timestamps would make every re-run a diff of every cell
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(nb, path)
    return nb, seconds
