"""The repository's shape: the import graph, the linter, and the one command that writes exercise cells."""
import ast
import shutil
import subprocess
import sys

import nbformat
import pytest
from conftest import NOTEBOOKS, REPO_ROOT

from course_utils.harness.exercises import stub_source
from course_utils.harness.notebook_runner import _insertion_point, exercise_cells, sync_readme, sync_stubs


def _import_graph() -> dict[str, set[str]]:
    """Every course_utils module -> the course_utils modules it imports, at import time or inside a function."""
    modules = {}
    for path in sorted((REPO_ROOT / "course_utils").rglob("*.py")):
        name = ".".join(path.relative_to(REPO_ROOT).with_suffix("").parts).removesuffix(".__init__")
        modules[name] = path
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                continue
            # the package itself (course_utils, imported first for its interpreter switch) is not a dependency
            graph[name] |= {t for t in targets if t in modules and t not in (name, "course_utils")}
    return graph


def test_kernels_do_not_import_the_machinery():
    graph = _import_graph()
    upward = {m: sorted(t for t in targets if t.startswith("course_utils.harness"))
              for m, targets in graph.items() if m.startswith("course_utils.kernels")}
    assert not any(upward.values()), upward
    # the machinery lives in harness/: the checker and its parts, progress, the learners' launchers, the exception types
    assert {"course_utils.harness.exercises", "course_utils.harness.spec", "course_utils.harness.registry",
            "course_utils.harness.compare", "course_utils.harness.sandbox", "course_utils.harness.progress",
            "course_utils.harness.launchers", "course_utils.harness.errors"} <= set(graph)
    assert not any(m.startswith("course_utils.kernels.") and "launch_" in path.read_text()
                   for m, path in [(m, REPO_ROOT / (m.replace(".", "/") + ".py")) for m in graph
                                   if m.startswith("course_utils.kernels.")])
    assert graph["course_utils.harness.errors"] == set()


def test_no_import_circle():
    graph = _import_graph()
    state = {}

    def visit(module, path):
        state[module] = "open"
        for target in sorted(graph[module]):
            if state.get(target) == "open":
                pytest.fail("import circle: " + " -> ".join(path[path.index(target):] + [target]))
            if target not in state:
                visit(target, path + [target])
        state[module] = "done"

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])


def test_ruff_finds_nothing():
    ruff = shutil.which("ruff", path=str(REPO_ROOT / ".venv" / "bin")) or shutil.which("ruff")
    assert ruff is not None, "ruff is a test dependency: `pip install -e .[dev]` installs it"
    out = subprocess.run([ruff, "check", "--no-cache", "."], cwd=REPO_ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:]


def _notebook(name: str):
    return next(p for p in NOTEBOOKS if p.name.startswith(name))


@pytest.mark.parametrize("missing, after", [("3.2", 'check("3.1"'), ("3.1", None), ("3.5", 'check("3.4"')])
def test_sync_stubs_writes_a_missing_exercise(tmp_path, missing, after):
    """An exercise with no cell yet gets a heading, its stub and a check cell, in course order."""
    path = tmp_path / _notebook("03").name
    nb = nbformat.read(_notebook("03"), as_version=4)
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("exercise") == missing)
    del nb.cells[at:at + 2]  # the stub and its check cell
    nbformat.write(nb, path)
    assert sync_stubs(path) == [missing]
    nb = nbformat.read(path, as_version=4)
    ids = [c.metadata["exercise"] for c in exercise_cells(nb)]
    assert ids == sorted(ids, key=lambda e: [int(n) for n in e.split(".")]) and missing in ids
    at = next(i for i, c in enumerate(nb.cells) if c.metadata.get("exercise") == missing)
    assert nb.cells[at].source == stub_source(missing).rstrip("\n")
    assert nb.cells[at - 1].cell_type == "markdown" and f"Exercise {missing}" in nb.cells[at - 1].source
    assert nb.cells[at + 1].source.startswith(f'check("{missing}", ')
    if after:
        assert nb.cells[at - 2].source.startswith(after)
    else:  # the chapter's first: before the markdown that introduces the next exercise
        assert nb.cells[at + 2].cell_type == "markdown" and nb.cells[at + 3].metadata.get("exercise") == "3.2"
    assert sync_stubs(path) == []  # written once


def test_insertion_point_finds_a_check_cell_that_is_not_next_to_its_stub():
    md, code = nbformat.v4.new_markdown_cell, nbformat.v4.new_code_cell
    stub = code("def f():\n    raise NotImplementedError", metadata={"exercise": "1.1", "tags": ["exercise"]})
    nb = nbformat.v4.new_notebook(cells=[md("# 1."), stub, md("Run the check:"), code('check("1.1", f)'),
                                         md("## 1.2 More"), md("## Summary")])
    assert _insertion_point(nb, {"1.1": 1}, "1.2") == 4  # after 0.1's layout: stub, explanation, check
    assert _insertion_point(nb, {"1.1": 1}, "1.0") == 0  # before the introduction of the exercise after it
    assert _insertion_point(nb, {}, "1.1") == 5  # no exercise yet: before the summary
    nb.cells.pop()
    assert _insertion_point(nb, {}, "1.1") == len(nb.cells)  # no summary: at the end


def test_sync_stubs_rewrites_a_changed_stub(tmp_path):
    path = tmp_path / _notebook("01").name
    nb = nbformat.read(_notebook("01"), as_version=4)
    exercise_cells(nb)[0].source = "def old(x):\n    pass"
    nbformat.write(nb, path)
    assert sync_stubs(path) == ["1.1"]
    assert exercise_cells(nbformat.read(path, as_version=4))[0].source == stub_source("1.1").rstrip("\n")


def test_the_stored_notebooks_and_readme_are_in_sync(tmp_path):
    for path in NOTEBOOKS:
        copy = tmp_path / path.name
        shutil.copy(path, copy)
        assert sync_stubs(copy) == [], path.name
    readme = tmp_path / "README.md"
    shutil.copy(REPO_ROOT / "README.md", readme)
    assert not sync_readme(readme)
    for stale, right in [("ready (4 exercises)", "ready (5 exercises)"), ("| 3.1–3.5 |", "| 3.1–3.6 |")]:
        assert right in readme.read_text()
        readme.write_text(readme.read_text().replace(right, stale, 1))
        assert sync_readme(readme) and readme.read_text() == (REPO_ROOT / "README.md").read_text(), stale


def test_the_command_line_entry_point():
    out = subprocess.run([sys.executable, "-m", "course_utils", "--help"], capture_output=True, text=True,
                         cwd=REPO_ROOT)
    assert out.returncode == 0 and "sync-stubs" in out.stdout
