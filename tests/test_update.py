"""`python -m course_utils update` with real git repositories in temporary folders: an upstream course that moves on,
and a learner's clone with work in it."""
import json
import os
import subprocess

import nbformat
import pytest

from course_utils.harness.update import CARRIED_HEADING, UpdateRefused, merge_notebook, update

GIT_ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@example.org"}


def git(repo, *args):
    return subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True, text=True,
                          env=GIT_ENV).stdout


def cell(kind, source, cid, **metadata):
    made = (nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell)(source, metadata=metadata)
    made["id"] = cid
    return made


def exercise(source, cid, exercise_id):
    return cell("code", source, cid, tags=["exercise"], exercise=exercise_id)


STUB_31 = 'def rms_norm(x):\n    """Contract."""\n    raise NotImplementedError'
STUB_32 = 'def layer_norm(x):\n    """Contract."""\n    raise NotImplementedError'
ANSWER_31 = 'def rms_norm(x):\n    """Contract."""\n    return x / x.pow(2).mean(-1, keepdim=True).sqrt()'


def chapter3(prose="RMSNorm divides by the RMS.", stub_32=STUB_32):
    return nbformat.v4.new_notebook(cells=[
        cell("markdown", "# 3. Normalization", "title"),
        cell("code", "from course_utils import setup; setup()", "setup"),
        cell("markdown", prose, "prose"),
        exercise(STUB_31, "ex31", "3.1"),
        cell("code", 'check("3.1", rms_norm)', "check31"),
        cell("markdown", "A cell the learner deletes.", "doomed"),
        exercise(stub_32, "ex32", "3.2"),
        cell("code", 'check("3.2", layer_norm)', "check32"),
        cell("markdown", "## Summary", "summary"),
    ])


def write(path, nb):
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, str(path))


@pytest.fixture
def course(tmp_path):
    """(upstream, learner): a course repository with two notebooks and a learner's clone of it."""
    upstream = tmp_path / "course"
    upstream.mkdir()
    git(upstream, "init", "-q", "-b", "main")
    write(upstream / "notebooks" / "03_normalization.ipynb", chapter3())
    write(upstream / "notebooks" / "05_optimization.ipynb", nbformat.v4.new_notebook(cells=[
        cell("markdown", "# 5. Optimization", "t5"), exercise("def adamw():\n    raise NotImplementedError", "ex51",
                                                                  "5.1")]))
    (upstream / "README.md").write_text("the course\n")
    (upstream / "NOTES.md").write_text("course notes\n")
    (upstream / ".gitignore").write_text(".course_progress.json\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "course v1")
    learner = tmp_path / "learner"
    git(tmp_path, "clone", "-q", str(upstream), str(learner))
    return upstream, learner


def learner_works(learner):
    """Exercise 3.1 answered, a note added after the prose, a cell deleted, the notebook run (outputs), 5.1 started,
    README and NOTES edited, a progress file written."""
    path = learner / "notebooks" / "03_normalization.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    nb.cells = [c for c in nb.cells if c["id"] != "doomed"]
    for c in nb.cells:
        if c["id"] == "ex31":
            c["source"] = ANSWER_31
        if c.cell_type == "code":
            c["execution_count"] = 7
            c["outputs"] = [nbformat.v4.new_output("stream", text="ran\n")]
    at = [c["id"] for c in nb.cells].index("prose") + 1
    nb.cells.insert(at, cell("markdown", "My note: RMS, not std.", "mynote"))
    nb.cells.append(cell("code", "my_experiment = 1", "myexp"))
    nbformat.write(nb, str(path))
    path5 = learner / "notebooks" / "05_optimization.ipynb"
    nb5 = nbformat.read(str(path5), as_version=4)
    nb5.cells[1]["source"] = "def adamw():\n    return 'mine'"
    nbformat.write(nb5, str(path5))
    (learner / "README.md").write_text("the course\nmy line\n")
    (learner / "NOTES.md").write_text("course notes\nmy notes\n")
    (learner / ".course_progress.json").write_text('{"3.1": "passed"}')


def course_moves_on(upstream):
    """A prose fix and a changed 3.2 stub in 03, chapter 5 renamed, NOTES changed, a new notebook, a new dependency."""
    new_stub = STUB_32.replace("Contract", "New contract")
    write(upstream / "notebooks" / "03_normalization.ipynb",
          chapter3(prose="RMSNorm divides by the root mean square.", stub_32=new_stub))
    git(upstream, "mv", "notebooks/05_optimization.ipynb", "notebooks/05_optimisation.ipynb")
    (upstream / "NOTES.md").write_text("course notes, fixed\n")
    write(upstream / "notebooks" / "09_new.ipynb", nbformat.v4.new_notebook(cells=[cell("markdown", "# 9", "t9")]))
    (upstream / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    git(upstream, "add", "-A")
    git(upstream, "commit", "-qm", "course v2")


def test_update_keeps_every_line_the_learner_wrote(course):
    upstream, learner = course
    learner_works(learner)
    course_moves_on(upstream)
    said = []
    assert update(learner, install=False, out=said.append) == 0
    log = "\n".join(said)

    assert git(learner, "rev-parse", "HEAD") == git(upstream, "rev-parse", "HEAD"), "at the new course"
    nb = nbformat.read(str(learner / "notebooks" / "03_normalization.ipynb"), as_version=4)
    ids = [c["id"] for c in nb.cells]
    by_id = {c["id"]: c for c in nb.cells}
    assert by_id["prose"]["source"] == "RMSNorm divides by the root mean square.", "the course's fix arrived"
    assert by_id["ex31"]["source"] == ANSWER_31, "the answer carried into the exercise cell"
    assert ids.index("mynote") == ids.index("prose") + 1, "an added cell stays after the cell it followed"
    assert by_id["myexp"]["source"] == "my_experiment = 1"
    assert "doomed" in ids, "a course cell the learner deleted comes back with the new course"
    assert by_id["ex32"]["source"] == STUB_32.replace("Contract", "New contract"), "an untouched stub is the new one"
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs stay in the backup"

    renamed = nbformat.read(str(learner / "notebooks" / "05_optimisation.ipynb"), as_version=4)
    assert renamed.cells[1]["source"] == "def adamw():\n    return 'mine'", "carried into the renamed notebook"
    assert not (learner / "notebooks" / "05_optimization.ipynb").exists()
    assert (learner / "notebooks" / "09_new.ipynb").exists()

    assert (learner / "README.md").read_text() == "the course\nmy line\n", "an edit the course did not touch is kept"
    assert (learner / "NOTES.md").read_text() == "course notes, fixed\n", "the course's version where both changed"
    assert (learner / ".course_progress.json").read_text() == '{"3.1": "passed"}', "ignored files untouched"
    backups = list((learner / ".course-backups").iterdir())
    assert len(backups) == 1
    saved = nbformat.read(str(backups[0] / "notebooks" / "03_normalization.ipynb"), as_version=4)
    assert any(c.get("outputs") for c in saved.cells if c.cell_type == "code"), "the whole notebook, outputs too"
    assert (backups[0] / "NOTES.md").read_text() == "course notes\nmy notes\n"
    assert "exercise 3.1: your code" in log and "Backups of everything you had changed" in log
    assert "The dependencies changed" in log
    status = sorted(line[3:] for line in git(learner, "status", "--porcelain").splitlines())
    assert status == ["README.md", "notebooks/03_normalization.ipynb", "notebooks/05_optimisation.ipynb"], status


def test_a_stub_the_course_changed_is_shown_next_to_the_learners_code(course):
    upstream, learner = course
    path = learner / "notebooks" / "03_normalization.ipynb"
    nb = nbformat.read(str(path), as_version=4)
    mine = 'def layer_norm(x):\n    """Contract."""\n    return x'
    next(c for c in nb.cells if c["id"] == "ex32")["source"] = mine
    nbformat.write(nb, str(path))
    course_moves_on(upstream)
    update(learner, install=False, out=lambda _: None)
    cells = nbformat.read(str(path), as_version=4).cells
    at = [c["id"] for c in cells].index("ex32")
    assert cells[at]["source"] == mine, "the learner's code is kept"
    note = cells[at - 1]["source"]
    assert cells[at - 1].cell_type == "markdown" and "stub of exercise 3.2 changed" in note
    assert STUB_32 in note and STUB_32.replace("Contract", "New contract") in note, "old and new stub shown"


def test_cells_whose_anchor_is_gone_go_under_a_heading():
    old = chapter3()
    mine = chapter3()
    at = [c["id"] for c in mine.cells].index("doomed") + 1
    mine.cells.insert(at, cell("markdown", "after the doomed cell", "orphan"))
    new = chapter3()
    new.cells = [c for c in new.cells if c["id"] != "doomed"]
    merged, carried = merge_notebook(old, mine, new)
    sources = [c["source"] for c in merged["cells"]]
    assert sources[-2:] == [CARRIED_HEADING, "after the doomed cell"] and len(carried) == 1


def test_an_edited_course_cell_the_course_also_changed_is_kept_beside_it():
    old, mine, new = chapter3(), chapter3(), chapter3(prose="new prose")
    next(c for c in mine.cells if c["id"] == "prose")["source"] = "my rewording"
    merged, _ = merge_notebook(old, mine, new)
    sources = [c["source"] for c in merged["cells"]]
    at = sources.index("new prose")
    assert sources[at + 1].endswith("my rewording") and "Your version of the cell above" in sources[at + 1]
    mine2 = chapter3()
    next(c for c in mine2.cells if c["id"] == "setup")["source"] = "setup(seed=3)"
    merged2, _ = merge_notebook(chapter3(), mine2, chapter3())
    assert next(c for c in merged2["cells"] if c["id"] == "setup")["source"] == "setup(seed=3)", "kept in place"


def test_local_commits_are_refused_and_nothing_changes(course):
    upstream, learner = course
    learner_works(learner)
    git(learner, "commit", "-qam", "my work")
    course_moves_on(upstream)
    before = git(learner, "rev-parse", "HEAD")
    with pytest.raises(UpdateRefused, match="commit\\(s\\) of its own"):
        update(learner, install=False, out=lambda _: None)
    assert git(learner, "rev-parse", "HEAD") == before and not (learner / ".course-backups").exists()


def test_no_network_is_refused_and_nothing_changes(course):
    _, learner = course
    learner_works(learner)
    git(learner, "remote", "set-url", "origin", str(learner.parent / "gone"))
    status = git(learner, "status", "--porcelain")
    with pytest.raises(UpdateRefused, match="cannot fetch the course"):
        update(learner, install=False, out=lambda _: None)
    assert git(learner, "status", "--porcelain") == status


def test_not_a_clone_is_refused(tmp_path):
    with pytest.raises(UpdateRefused, match="not a git checkout"):
        update(tmp_path, install=False, out=lambda _: None)
    git(tmp_path, "init", "-q")
    with pytest.raises(UpdateRefused, match="no remote called 'origin'"):
        update(tmp_path, install=False, out=lambda _: None)


def test_up_to_date_says_so(course):
    _, learner = course
    said = []
    update(learner, install=False, out=said.append)
    assert said == ["The course is up to date: nothing to do."]


def test_the_command_line_refuses_with_a_message_and_exit_code(tmp_path, capsys):
    from course_utils.harness.update import main

    assert main(["--repo", str(tmp_path), "--no-install"]) == 2
    assert "update refused, nothing changed" in capsys.readouterr().err


def test_notebooks_keep_stable_cell_ids():
    """Matching by cell id needs ids (nbformat 4.5): every course notebook's cells have unique ones."""
    from conftest import NOTEBOOKS

    for path in NOTEBOOKS:
        nb = json.loads(path.read_text())
        ids = [c.get("id") for c in nb["cells"]]
        assert all(ids) and len(set(ids)) == len(ids), path.name
