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


SHELL_POLL_SLICE_S = 1.0


def _poll_in_slices(channel) -> None:
    """Make ``channel.get_msg`` (an async jupyter_client channel) wait in slices of SHELL_POLL_SLICE_S seconds.

    nbclient's stand-in for Output widgets (the slider cells' plots) sends on the shell socket while another task
    waits on that socket for the cell's reply; zmq signals readiness on an edge, and the send can consume the edge of
    the reply that arrives meanwhile, so the wait sleeps on until the cell's timeout (ten minutes) although the reply
    is there. Every slice ends with a real poll of the socket, which finds it within a second."""
    from queue import Empty

    wait = channel.get_msg

    async def get_msg(timeout: float | None = None):
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            slice_s = SHELL_POLL_SLICE_S if remaining is None else min(SHELL_POLL_SLICE_S, remaining)
            try:
                return await wait(timeout=slice_s)
            except Empty:
                if remaining is not None and remaining <= SHELL_POLL_SLICE_S:
                    raise

    channel.get_msg = get_msg


def _notebook_client(nb, **kwargs):
    """An nbclient NotebookClient whose shell channel is polled in slices (:func:`_poll_in_slices`)."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            _poll_in_slices(kc.shell_channel)
            return kc

    return Client(nb, **kwargs)


def execute(path: Path, *, solved_mode: bool = False, write: bool = False, timeout: int = 600,
            env: dict[str, str] | None = None, extra_cells: list[str] = ()):
    """Run every cell of the notebook at ``path``; returns ``(notebook, seconds)``.

    Progress goes to a throwaway file, so stored outputs never depend on a learner's progress.
    ``env`` adds environment variables for the kernel (e.g. a ``PYTHONPATH`` that blocks Triton);
    ``extra_cells`` are code cells appended to the run (never written back).
    Raises ``nbclient.exceptions.CellExecutionError`` on the first failing cell.
    """
    path = Path(path)
    nb = nbformat.read(path, as_version=4)
    if solved_mode:
        nb = solved(nb)
    if extra_cells:
        if write:
            raise ValueError("extra_cells are for test runs: they are never written to the notebook")
        nb.cells.extend(nbformat.v4.new_code_cell(source) for source in extra_cells)
    record = {}
    if write:  # the launches the stored run makes, for the compiled tier (course_utils.kernels.compiled)
        from course_utils.kernels.compiled import NOTEBOOK_LAUNCHES
        from course_utils.runtime import RECORD_LAUNCHES_ENV

        NOTEBOOK_LAUNCHES.mkdir(parents=True, exist_ok=True)
        record = {RECORD_LAUNCHES_ENV: str(NOTEBOOK_LAUNCHES / f"{path.stem}.json")}
    with tempfile.TemporaryDirectory() as tmp, _environment(
            COURSE_PROGRESS=str(Path(tmp) / "progress.json"), COURSE_STRICT="1" if solved_mode else "0",
            PYTHONHASHSEED="0", **record, **(env or {})):
        client = _notebook_client(nb, timeout=timeout, kernel_name="python3",
                                  resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    if write:
        for cell in nb.cells:  # run timestamps would make every re-run a diff of every cell
            cell.get("metadata", {}).pop("execution", None)
        nbformat.write(nb, path)
    return nb, seconds
