"""The learner's progress file: which exercises passed, when, after how many attempts.

A git-ignored JSON file at the repository root (``COURSE_PROGRESS=/path/file.json`` points it
elsewhere). Writes are atomic (temporary file + ``os.replace``), so a reader never sees half a file;
a file that cannot be read is set aside as ``<name>.corrupt-<time>`` with a warning and progress starts
afresh. Every read-modify-write (record, reset, setting a corrupt file aside) holds an exclusive lock on
``<name>.lock`` (``filelock``: ``fcntl`` on Linux and macOS, ``msvcrt`` on Windows), so two notebooks
checking at once lose nothing. The operating system releases the lock when its process dies, so a killed
kernel leaves no stale lock; a lock held longer than ``LOCK_TIMEOUT_S`` ends in :class:`ProgressLocked`.

Format: ``{"version": 1, "exercises": {"1.1": {"status": "passed", "attempts": 3, "updated": "...",
"source": "def ..."}}}`` where status is one of ``passed``, ``failed``, ``todo`` (stub not implemented
yet) and ``source`` is the code that passed (so a later notebook can use it: ``exercises.from_progress``).
The file therefore holds runnable code: treat a progress file from someone else like a script.

:func:`progress_table` shows the records per chapter (``python -m course_utils progress``).
"""
from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import tempfile
import threading
import warnings
from pathlib import Path

import filelock

from course_utils.harness import REPO_ROOT

FORMAT_VERSION = 1
LOCK_TIMEOUT_S = 10.0  # a record takes milliseconds: a lock held this long is another process stuck
STATUS_SYMBOL = {"passed": "✅", "failed": "❌", "todo": "⏳", None: "·"}


def progress_path() -> Path:
    return Path(os.environ.get("COURSE_PROGRESS") or REPO_ROOT / ".course_progress.json")


class ProgressLocked(OSError):
    """The progress file's lock was held by another process for longer than ``LOCK_TIMEOUT_S``."""


_locks: dict[str, filelock.FileLock] = {}  # one lock object per file: re-entrant within this process
_locks_guard = threading.Lock()


@contextlib.contextmanager
def locked():
    """Hold the progress file's exclusive lock (re-entrant) for a read-modify-write."""
    path = progress_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_path = str(path.with_name(path.name + ".lock"))
    with _locks_guard:
        lock = _locks.setdefault(lock_path, filelock.FileLock(lock_path))
    try:
        lock.acquire(timeout=LOCK_TIMEOUT_S)
    except filelock.Timeout:
        raise ProgressLocked(f"the progress file {path} has been locked by another process for over "
                             f"{LOCK_TIMEOUT_S:.0f} s (another notebook or terminal busy with it?); "
                             "nothing was saved, try again") from None
    try:
        yield
    finally:
        lock.release()


def _empty() -> dict:
    return {"version": FORMAT_VERSION, "exercises": {}}


def _valid_entry(entry) -> bool:
    return (isinstance(entry, dict) and entry.get("status") in ("passed", "failed", "todo", None)
            and isinstance(entry.get("attempts", 0), int) and isinstance(entry.get("source", ""), str)
            and isinstance(entry.get("hints", 0), int))


def _valid(data) -> bool:
    return (isinstance(data, dict) and data.get("version") == FORMAT_VERSION
            and isinstance(data.get("exercises"), dict)
            and all(_valid_entry(v) for v in data["exercises"].values()))


def load() -> dict:
    """The progress data; a missing file is empty progress, a corrupt one is set aside."""
    data, problem = _read()
    if problem is None:
        return data
    with locked():  # setting the file aside is a write: look again under the lock, another process may have fixed it
        data, problem = _read()
        if problem is None:
            return data
        return _set_aside(problem)


def _read() -> tuple[dict | None, str | None]:
    """(data, None), or (None, what is wrong with the file)."""
    path = progress_path()
    if not path.exists():
        return _empty(), None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if _valid(data):
            return data, None
        return None, "it is not a progress file of this course"
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"it could not be read ({exc.__class__.__name__})"


def _set_aside(problem: str) -> dict:
    path = progress_path()
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    aside = path.with_name(f"{path.name}.corrupt-{stamp}")
    try:
        os.replace(path, aside)
        where = f"moved it to {aside}"
    except OSError:
        where = "could not move it aside"
    warnings.warn(f"Progress file {path}: {problem}; {where} and started afresh.", stacklevel=3)
    return _empty()


def save(data: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous file intact. Callers that read first hold
    :func:`locked` around both; a lone save takes the lock itself."""
    with locked():
        _write(data)


def _write(data: dict) -> None:
    path = progress_path()
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=1, sort_keys=True, ensure_ascii=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def record(exercise_id: str, status: str, source: str | None = None) -> None:
    """Record one check: ``status`` is ``passed``, ``failed`` or ``todo``. A pass is never lost;
    ``source`` (the passing code, when known) is kept with it."""
    if status not in ("passed", "failed", "todo"):
        raise ValueError(f"unknown status {status!r}")
    with locked():
        data = load()
        entry = data["exercises"].setdefault(exercise_id, {"status": None, "attempts": 0})
        if status != "todo":
            entry["attempts"] = int(entry.get("attempts", 0)) + 1
        if entry.get("status") != "passed" or status == "passed":
            entry["status"] = status
        if status == "passed" and source:
            entry["source"] = source
        entry["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        _write(data)


def take_hint(exercise_id: str, available: int) -> int:
    """Record that the next of ``available`` hints of ``exercise_id`` was shown; returns its number (1-based), or 0 when
    every hint has been shown already (nothing recorded then)."""
    with locked():
        data = load()
        entry = data["exercises"].setdefault(exercise_id, {"status": None, "attempts": 0})
        taken = int(entry.get("hints", 0))
        if taken >= available:
            return 0
        entry["hints"] = taken + 1
        entry["updated"] = _dt.datetime.now().isoformat(timespec="seconds")
        _write(data)
        return taken + 1


def hints_taken(exercise_id: str) -> int:
    return int(load()["exercises"].get(exercise_id, {}).get("hints", 0))


def reset(exercise_id: str | None = None) -> None:
    """Forget one exercise's record, or every record when ``exercise_id`` is None."""
    with locked():
        data = load()
        if exercise_id is None:
            data["exercises"].clear()
        else:
            data["exercises"].pop(exercise_id, None)
        _write(data)


def status_of(exercise_id: str) -> str | None:
    return load()["exercises"].get(exercise_id, {}).get("status")


def passed_source(exercise_id: str) -> str | None:
    """The source of the learner's code that passed ``exercise_id``, if it was recorded."""
    entry = load()["exercises"].get(exercise_id, {})
    source = entry.get("source")
    return source if entry.get("status") == "passed" and isinstance(source, str) else None


def progress_table() -> str:
    """A text table per chapter (``course_utils.chapters``): one line per exercise with its status and attempts."""
    from course_utils.chapters import chapter_of
    from course_utils.harness.phrases import say
    from course_utils.harness.registry import registry

    data = load()
    records = data["exercises"]
    lines, chapter = [], None
    for ex in registry().values():
        if chapter_of(ex.id) != chapter:
            chapter = chapter_of(ex.id)
            own = [e for e in registry().values() if chapter_of(e.id) == chapter]
            done = sum(records.get(e.id, {}).get("status") == "passed" for e in own)
            lines.append(say("table.chapter", heading=chapter.heading, done=done, total=len(own)))
        rec = records.get(ex.id, {})
        hints = say("table.hints", taken=rec["hints"], total=len(ex.hints)) if rec.get("hints") else ""
        lines.append(f"  {STATUS_SYMBOL.get(rec.get('status'), '?')} {ex.id:<5} {ex.title:<44} "
                     + say("table.row", attempts=rec.get("attempts", 0)) + hints)
    predictions = data.get("predictions")
    if isinstance(predictions, dict) and predictions:
        made = [p for p in predictions.values() if isinstance(p, dict) and "answer" in p]
        compared = [p for p in made if p.get("revealed")]
        lines.append(say("table.predictions", made=len(made), revealed=len(compared),
                         right=sum(bool(p.get("right")) for p in compared)))
    lines.append(say("table.file", path=progress_path()))
    return "\n".join(lines)
