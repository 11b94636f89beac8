import json
import os
import subprocess
import sys

import pytest

from course_utils import progress


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
    assert [p.name for p in progress_file.parent.iterdir()] == ["progress.json"]


def test_reset_one_and_all(progress_file):
    progress.record("0.1", "passed")
    progress.record("1.1", "failed")
    progress.reset("0.1")
    assert progress.status_of("0.1") is None and progress.status_of("1.1") == "failed"
    progress.reset()
    assert progress.load()["exercises"] == {}


def test_table_lists_every_exercise_by_chapter(progress_file):
    from course_utils.exercises import exercise_ids

    progress.record("1.2", "passed")
    table = progress.table()
    assert "1. Backpropagation (역전파)  (1/6 passed)" in table
    for ex_id in exercise_ids():
        assert f" {ex_id} " in table
    assert "✅ 1.2" in table and "· 1.1" in table


def test_cli_progress_and_reset(progress_file):
    progress.record("1.1", "passed")
    env = {**os.environ, "COURSE_PROGRESS": str(progress_file)}
    out = subprocess.run([sys.executable, "-m", "course_utils", "progress", "--reset", "1.1"],
                         capture_output=True, text=True, env=env, check=True).stdout
    assert "reset 1.1" in out and "✅ 1.1" not in out
