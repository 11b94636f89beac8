"""Execute course notebooks with nbclient: in learner mode (to refresh stored outputs) or in
solved mode (every exercise cell replaced by its reference answer, ``COURSE_STRICT=1``).

Used by ``python -m course_utils execute`` and by the solved-mode tests.
"""
from __future__ import annotations

import contextlib
import os
import re
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


def _is_exercise_cell(cell) -> bool:
    return "exercise" in cell.get("metadata", {}).get("tags", [])


def exercise_cells(nb) -> list:
    """The cells tagged ``exercise``, each with ``metadata.exercise`` set to its id."""
    return [c for c in nb.cells if _is_exercise_cell(c)]


def chapter_exercises(path: Path) -> list:
    """The registry's exercises of a notebook's chapter (``03_normalization.ipynb``: the ids ``3.*``), in order;
    KeyError for a notebook that is no chapter's (``course_utils.chapters``)."""
    from course_utils.chapters import chapter_of
    from course_utils.harness.registry import registry

    chapter = chapter_of(path)
    return [ex for ex in registry().values() if chapter_of(ex.id) == chapter]


def _new_exercise_cells(ex) -> list:
    """A heading, the stub and its check cell, for an exercise the notebook has no cell for yet."""
    from course_utils.harness.registry import stub_source

    stub = stub_source(ex.id).rstrip("\n")
    name = next(line.split()[1].split("(")[0].rstrip(":") for line in stub.splitlines()
                if line.startswith(("def ", "class ")))
    stub_cell = nbformat.v4.new_code_cell(stub, metadata={"exercise": ex.id, "tags": ["exercise"]})
    return [nbformat.v4.new_markdown_cell(f"**Exercise {ex.id}.** {ex.title[:1].upper()}{ex.title[1:]}."),
            stub_cell, nbformat.v4.new_code_cell(f'check("{ex.id}", {name})\n{name} = use("{ex.id}", {name})')]


def _order(exercise_id: str) -> list[int]:
    return [int(n) for n in exercise_id.split(".")]


def _insertion_point(nb, tagged: dict[str, int], exercise_id: str) -> int:
    """Where a new exercise's cells go: after the check cell of the exercise before it (the first cell, up to the
    next exercise, that starts with its ``check(...)``; else right after its stub); failing that, before the
    markdown cell that introduces the exercise after it; failing that, before the closing "## Summary" or "## Next"
    heading, or at the end."""
    earlier = [i for e, i in tagged.items() if _order(e) < _order(exercise_id)]
    later = [i for e, i in tagged.items() if _order(e) > _order(exercise_id)]
    if earlier:
        stub = max(earlier)
        previous = nb.cells[stub].metadata["exercise"]
        end = min([i for i in tagged.values() if i > stub], default=len(nb.cells))
        checks = [i for i in range(stub + 1, end) if nb.cells[i].source.lstrip().startswith(f'check("{previous}"')]
        return (checks[0] if checks else stub) + 1
    if later:
        at = min(later)
        return at - 1 if at > 0 and nb.cells[at - 1].cell_type == "markdown" else at
    closing = [i for i, c in enumerate(nb.cells)
               if c.cell_type == "markdown" and c.source.startswith(("## Summary", "## Next"))]
    return closing[-1] if closing else len(nb.cells)


def sync_stubs(path: Path) -> list[str]:
    """Make the notebook's exercise cells the stubs of its chapter's exercises (``stub_source``: the reference's
    signature and docstring): rewrite a tagged cell whose text differs, and add the cells of an exercise that has
    none yet (heading, stub, check cell) where :func:`_insertion_point` says. Returns the ids whose cells changed
    or were added (the notebook is written only then)."""
    from course_utils.harness.registry import stub_source

    nb = nbformat.read(path, as_version=4)
    changed = []
    for cell in exercise_cells(nb):
        stub = stub_source(cell.metadata["exercise"]).rstrip("\n")
        if cell.source != stub:
            cell.source = stub
            changed.append(cell.metadata["exercise"])
    for ex in chapter_exercises(path):
        tagged = {c.metadata["exercise"]: i for i, c in enumerate(nb.cells) if _is_exercise_cell(c)}
        if ex.id not in tagged:
            at = _insertion_point(nb, tagged, ex.id)
            nb.cells[at:at] = _new_exercise_cells(ex)
            changed.append(ex.id)
    if changed:
        nbformat.write(nb, path)
    return changed


README_COUNT = re.compile(r"^(\| (\d+) \| `\d\d_.*ready \()(\d+) exercises?(\) \|)$", re.M)
CONCEPT_MAP = re.compile(r"^\| Ch \| Concept \|.*\n(?:\|.*\n)*", re.M)  # the README's "Where each concept lives"


def concept_map() -> str:
    """The README's table "Where each concept lives", one row per topic of ``course_utils.chapters``, with the
    topic's exercise ids from the registry (up to three listed, more as a range: ``3.1–3.5``)."""
    from course_utils.chapters import CHAPTERS
    from course_utils.harness.registry import exercise_ids

    def cell(names) -> str:
        return ", ".join(f"`{n}`" for n in names)

    def span(ids) -> str:
        return ", ".join(ids) if len(ids) <= 3 else f"{ids[0]}–{ids[-1]}"

    lines = ["| Ch | Concept | Module | Kernel | Exercises | Tests |", "|---|---|---|---|---|---|"]
    for chapter in CHAPTERS:
        for topic, ids in chapter.topic_exercises(exercise_ids()):
            row = [str(chapter.number), topic.concept, cell(topic.modules), cell(topic.kernels), span(ids),
                   cell(topic.tests)]
            lines.append("|" + "|".join(f" {c} " if c else " " for c in row) + "|")
    return "".join(line + "\n" for line in lines)


def sync_readme(readme: Path) -> bool:
    """Rewrite, from ``course_utils.chapters`` and the registry, the "(N exercises)" of the README's chapter table
    and the whole table "Where each concept lives"; True if the README changed."""
    from course_utils.chapters import chapter_of
    from course_utils.harness.registry import exercise_ids

    counts: dict[int, int] = {}
    for exercise_id in exercise_ids():
        number = chapter_of(exercise_id).number
        counts[number] = counts.get(number, 0) + 1
    text = readme.read_text()

    def stated(m: re.Match) -> str:
        n = counts.get(int(m[2]), 0)
        return f"{m[1]}{n} exercise{'' if n == 1 else 's'}{m[4]}"

    new = README_COUNT.sub(stated, text)
    if not CONCEPT_MAP.search(new):
        raise ValueError(f"{readme}: no table headed '| Ch | Concept |' to rewrite")
    new = CONCEPT_MAP.sub(lambda m: concept_map(), new, count=1)
    if new != text:
        readme.write_text(new)
    return new != text


def solved(nb):
    """A copy of ``nb`` whose exercise cells hold the reference answers' source."""
    from course_utils.harness.registry import solution_source

    nb = nbformat.from_dict(nb)
    for cell in exercise_cells(nb):
        cell.source = solution_source(cell.metadata["exercise"]).rstrip("\n")
    return nb


SHELL_POLL_SLICE_S = 1.0
STALL_S = float(os.environ.get("COURSE_STALL_S", "10"))  # an idle kernel that has not started a cell by then dropped it
_STALLS: list[str] = []  # what the last execute() found, for last_stalls()


def last_stalls() -> list[str]:
    """The dropped requests the last :func:`execute` detected and recovered from (one sentence each)."""
    return list(_STALLS)


class StallWatch:
    """Detects an execute request the kernel never picked up, and recovers from it.

    ipykernel issue #1554: a request that reaches the kernel's shell socket while the kernel is sending a reply on it
    can stay unread, the kernel idle, until something else wakes the socket. A cell whose request has produced no
    IOPub message at all (not even the kernel's "busy") after :data:`STALL_S` seconds is such a request: the watch
    says so, wakes the socket with a ``kernel_info_request`` (the dropped request is then read and runs), and if the
    cell has still not started after another :data:`STALL_S`, sends the request once more."""

    def __init__(self, kc, log):
        self.kc, self.log = kc, log
        self.pending = None  # the execute_request last sent, its time, and what was done about it
        self.seen: set[str] = set()
        self.cell_index = None
        self.events: list[str] = []
        send, get_iopub = kc.shell_channel.send, kc.iopub_channel.get_msg
        self._send = send

        def sending(msg):
            if msg["header"]["msg_type"] == "execute_request":
                self.pending = {"msg": msg, "at": time.monotonic(), "woken": False, "resent": False}
            return send(msg)

        async def iopub(*args, **kwargs):
            msg = await get_iopub(*args, **kwargs)
            self.seen.add(msg.get("parent_header", {}).get("msg_id"))
            return msg

        kc.shell_channel.send, kc.iopub_channel.get_msg = sending, iopub

    def check(self) -> None:
        """Called each time a shell-channel slice passes without a message."""
        pending = self.pending
        if pending is None or pending["msg"]["header"]["msg_id"] in self.seen:
            return
        waited = time.monotonic() - pending["at"]
        if waited < STALL_S or pending["resent"]:
            return
        where = f"cell {self.cell_index}" if self.cell_index is not None else "a cell"
        if not pending["woken"]:
            event = (f"{where}: the kernel is idle and has not started the request after {waited:.0f} s (a dropped "
                     "request, ipykernel #1554); woke it with a kernel_info_request")
            self.kc.kernel_info()
            pending["woken"] = True
        else:
            event = f"{where}: still not started after the wake-up; sent the request again"
            self._send(pending["msg"])
            pending["resent"] = True
        pending["at"] = time.monotonic()
        self.events.append(event)
        _STALLS.append(event)
        self.log.warning(event)


def _poll_in_slices(channel, on_empty=None) -> None:
    """Make ``channel.get_msg`` (an async jupyter_client channel) wait in slices of SHELL_POLL_SLICE_S seconds,
    calling ``on_empty()`` after each slice that found nothing.

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
                if on_empty is not None:
                    on_empty()

    channel.get_msg = get_msg


def _notebook_client(nb, **kwargs):
    """An nbclient NotebookClient whose shell channel is polled in slices (:func:`_poll_in_slices`) and whose dropped
    requests are detected and recovered (:class:`StallWatch`)."""
    from nbclient import NotebookClient

    class Client(NotebookClient):
        async def async_start_new_kernel_client(self):
            kc = await super().async_start_new_kernel_client()
            self.stall_watch = StallWatch(kc, self.log)
            _poll_in_slices(kc.shell_channel, self.stall_watch.check)
            return kc

        async def async_execute_cell(self, cell, cell_index, *args, **kwargs):
            if getattr(self, "stall_watch", None) is not None:
                self.stall_watch.cell_index = cell_index
            return await super().async_execute_cell(cell, cell_index, *args, **kwargs)

    return Client(nb, **kwargs)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def tidy(nb) -> None:
    """What a stored notebook keeps of a run, so that re-recording a notebook whose code did not change leaves a small
    diff: no widget state (random model ids, 50-190 KB per notebook) and no widget views (they show nothing without
    that state; every slider has a static figure beside it), consecutive stream outputs merged (tqdm's redraws), no
    run timestamps."""
    nb.metadata.pop("widgets", None)
    for cell in nb.cells:
        cell.get("metadata", {}).pop("execution", None)
        if cell.cell_type != "code":
            continue
        kept = []
        for output in cell.get("outputs", []):
            if WIDGET_VIEW in output.get("data", {}):
                continue
            if (kept and output.output_type == "stream" and kept[-1].output_type == "stream"
                    and kept[-1].name == output.name):
                kept[-1].text += output.text
                continue
            kept.append(output)
        cell.outputs = kept


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
    if write:  # the launches the stored run makes, for the compiled tier (course_utils.harness.compiled)
        from course_utils.harness.compiled import NOTEBOOK_LAUNCHES, RECORD_LAUNCHES_ENV

        NOTEBOOK_LAUNCHES.mkdir(parents=True, exist_ok=True)
        record = {RECORD_LAUNCHES_ENV: str(NOTEBOOK_LAUNCHES / f"{path.stem}.json")}
    with tempfile.TemporaryDirectory() as tmp, _environment(
            COURSE_PROGRESS=str(Path(tmp) / "progress.json"), COURSE_STRICT="1" if solved_mode else "0",
            PYTHONHASHSEED="0", **record, **(env or {})):
        _STALLS.clear()
        client = _notebook_client(nb, timeout=timeout, kernel_name="python3",
                                  resources={"metadata": {"path": str(path.parent)}})
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    if write:
        tidy(nb)
        nbformat.write(nb, path)
    return nb, seconds
