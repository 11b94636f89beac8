import json
import os
import subprocess
import sys
import time

import pytest

from course_utils.chapters import chapter
from course_utils.harness import progress
from course_utils.harness.progress import progress_table


def test_missing_file_is_empty_progress(progress_file):
    assert progress.load() == {"version": 1, "exercises": {}}


def test_record_counts_attempts_and_keeps_a_pass(progress_file):
    progress.record("1.1", "failed")
    progress.record("1.1", "passed")
    progress.record("1.1", "failed")  # a later failure does not lose the pass
    progress.record("1.1", "todo")  # running a stub is not an attempt
    entry = json.loads(progress_file.read_text())["exercises"]["1.1"]
    assert entry["status"] == "passed" and entry["attempts"] == 3


def test_unknown_status_is_refused(progress_file):
    with pytest.raises(ValueError):
        progress.record("1.1", "great")


@pytest.mark.parametrize("content", ["{not json", '{"version": 99, "exercises": {}}', "[1, 2]", "\xff\xfe"])
def test_corrupt_file_is_set_aside_with_a_warning(progress_file, content):
    progress_file.write_bytes(content.encode("latin-1"))
    with pytest.warns(UserWarning, match="started afresh"):
        data = progress.load()
    assert data["exercises"] == {}
    assert not progress_file.exists()
    assert len(list(progress_file.parent.glob("progress.json.corrupt-*"))) == 1
    progress.record("0.1", "passed")  # and recording works again
    assert progress.status_of("0.1") == "passed"


def test_save_is_atomic_and_leaves_no_temporary_files(progress_file, monkeypatch):
    progress.record("0.1", "passed")
    before = progress_file.read_text()

    def broken_dump(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(progress.json, "dump", broken_dump)
    with pytest.raises(OSError):
        progress.record("1.1", "failed")
    assert progress_file.read_text() == before
    assert sorted(p.name for p in progress_file.parent.iterdir()) == ["progress.json", "progress.json.lock"]


def test_reset_one_and_all(progress_file):
    progress.record("0.1", "passed")
    progress.record("1.1", "failed")
    progress.reset("0.1")
    assert progress.status_of("0.1") is None and progress.status_of("1.1") == "failed"
    progress.reset()
    assert progress.load()["exercises"] == {}


def test_table_lists_every_exercise_by_chapter(progress_file):
    from course_utils.harness.exercises import exercise_ids

    progress.record("1.2", "passed")
    table = progress_table()
    assert f"{chapter(1).heading}  (1/6 passed)" in table
    for ex_id in exercise_ids():
        assert f" {ex_id} " in table
    assert "✅ 1.2" in table and "· 1.1" in table


def test_cli_progress_and_reset(progress_file):
    progress.record("1.1", "passed")
    env = {**os.environ, "COURSE_PROGRESS": str(progress_file)}
    out = subprocess.run([sys.executable, "-m", "course_utils", "progress", "--reset", "1.1"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "reset 1.1" in out and "✅ 1.1" not in out


# ------------------------------------------------------------------ several notebooks at once (the lock)

# A worker process: loads progress.py by path (no torch import, so workers start together), waits for
# the go file, then records or resets. argv: module path, progress file, go file, ready file, tag, count, action.
_WORKER = r"""
import importlib.util, os, sys, time
module_path, progress_file, go, ready, tag, count, action = sys.argv[1:]
os.environ["COURSE_PROGRESS"] = progress_file
spec = importlib.util.spec_from_file_location("progress_under_test", module_path)
progress = importlib.util.module_from_spec(spec)
spec.loader.exec_module(progress)
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.001)
for i in range(int(count)):
    if action == "record":
        passed = i % 2 == 0
        progress.record(f"{tag}.{i}", "passed" if passed else "failed", f"def f_{tag}_{i}(): pass" if passed else None)
    else:
        progress.reset(None if i % 10 == 0 else f"{tag}.{i}")
"""


def run_concurrently(progress_file, jobs, module_path=None):
    """Start one worker per (tag, count, action) in ``jobs``, release them together, wait for all."""
    module_path = module_path or progress.__file__
    go = progress_file.parent / "go"
    procs, readies = [], []
    for tag, count, action in jobs:
        ready = progress_file.parent / f"ready-{tag}"
        readies.append(ready)
        procs.append(subprocess.Popen([sys.executable, "-c", _WORKER, str(module_path), str(progress_file), str(go),
                                       str(ready), tag, str(count), action], stderr=subprocess.PIPE, text=True))
    deadline = time.monotonic() + 60
    while not all(r.exists() for r in readies) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    errors = [p.communicate(timeout=120)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), errors


def test_concurrent_records_lose_nothing(progress_file):
    tags, count = ["a", "b", "c", "d"], 150
    run_concurrently(progress_file, [(tag, count, "record") for tag in tags])
    entries = json.loads(progress_file.read_text())["exercises"]
    assert len(entries) == len(tags) * count, f"{len(tags) * count - len(entries)} records lost"
    for tag in tags:
        for i in range(count):
            entry = entries[f"{tag}.{i}"]
            assert entry["attempts"] == 1
            if i % 2 == 0:
                assert entry["status"] == "passed" and entry["source"] == f"def f_{tag}_{i}(): pass"
            else:
                assert entry["status"] == "failed" and "source" not in entry
    assert not list(progress_file.parent.glob("*.corrupt-*")) and not list(progress_file.parent.glob("*.tmp"))


def test_a_reset_racing_with_records_leaves_a_consistent_file(progress_file):
    run_concurrently(progress_file, [("a", 200, "record"), ("a", 100, "reset"), ("b", 200, "record")])
    data = json.loads(progress_file.read_text())  # whole, valid JSON
    assert progress._valid(data)
    assert not list(progress_file.parent.glob("*.corrupt-*"))
    # every 10th reset clears everything: the "b" records made after the last one all survive, so what is
    # left of "b" is an unbroken run up to its last id (a lost update would leave a hole)
    b_ids = sorted(int(k.split(".")[1]) for k in data["exercises"] if k.startswith("b."))
    if b_ids:
        assert b_ids == list(range(b_ids[0], 200)), b_ids


def test_a_lock_held_too_long_gives_a_message_not_a_hang(progress_file, monkeypatch):
    from course_utils import check

    holder = subprocess.Popen([sys.executable, "-c", (
        "import filelock, sys, time\n"
        "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
        "print('held', flush=True); time.sleep(30)"), str(progress_file) + ".lock"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(progress, "LOCK_TIMEOUT_S", 0.5)
        start = time.monotonic()
        with pytest.raises(progress.ProgressLocked, match="locked by another process"):
            progress.record("0.1", "failed")
        assert time.monotonic() - start < 5
        result = check("0.1", lambda p, t: ((p - t) ** 2).mean(), display=False)  # the check itself still works
        assert result.passed and "could not save progress" in result.message and "locked" in result.message
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_process_leaves_no_stale_lock(progress_file, monkeypatch):
    holder = subprocess.Popen([sys.executable, "-c", (
        "import filelock, sys, time\n"
        "lock = filelock.FileLock(sys.argv[1]); lock.acquire()\n"
        "print('held', flush=True); time.sleep(60)"), str(progress_file) + ".lock"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()  # like a kernel killed mid-record: no chance to release
    holder.wait()
    monkeypatch.setattr(progress, "LOCK_TIMEOUT_S", 2.0)
    progress.record("0.1", "passed")
    assert progress.status_of("0.1") == "passed"


def test_a_progress_file_with_bad_fields_is_set_aside(progress_file):
    import json
    import warnings

    progress_file.write_text(json.dumps({"version": 1, "exercises": {"1.1": {"status": "passed", "attempts": None}}}))
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert progress.load()["exercises"] == {}
    progress.record("1.1", "failed")  # works on the fresh file
