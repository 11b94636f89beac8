"""The chapter table (course_utils.chapters) against what it names: notebooks, headings, solutions modules, concept
modules, kernels and test files; and the README's two chapter tables, which are written from it."""
import json

import pytest
from conftest import NOTEBOOKS, REPO_ROOT

from course_utils.chapters import CHAPTERS, chapter, chapter_of
from course_utils.harness.notebook_runner import CONCEPT_MAP, README_COUNT, concept_map
from course_utils.harness.registry import exercise_ids


def test_the_table_has_every_notebook_once_in_order():
    assert NOTEBOOKS == sorted((REPO_ROOT / "notebooks").glob("*.ipynb"))
    assert [c.number for c in CHAPTERS] == list(range(len(CHAPTERS)))


@pytest.mark.parametrize("ch", CHAPTERS, ids=lambda c: c.notebook.name)
def test_each_chapter_names_what_exists(ch):
    first = "".join(json.loads((REPO_ROOT / ch.notebook).read_text())["cells"][0]["source"]).splitlines()[0]
    assert first == f"# {ch.heading}"
    assert (REPO_ROOT / (ch.solutions_module.replace(".", "/") + ".py")).is_file()
    for module in ch.modules:
        assert (REPO_ROOT / "course_utils" / f"{module}.py").is_file(), module
    for kernel in ch.kernels:
        assert (REPO_ROOT / "course_utils" / "kernels" / f"{kernel}.py").is_file(), kernel
    for path in ch.test_files:
        assert (REPO_ROOT / path).is_file(), path
    if ch.topics:
        firsts = [t.first_exercise for t in ch.topics]
        assert firsts[0] == 1 and firsts == sorted(set(firsts)), "topics split the chapter's exercises in order"


def test_chapter_of_an_id_a_notebook_and_a_solutions_module():
    assert chapter_of("3.2") is chapter(3)
    assert chapter_of("notebooks/03_normalization.ipynb") is chapter(3)
    assert chapter_of(REPO_ROOT / "solutions" / "ch03_normalization.py") is chapter(3)
    assert chapter(3).exercise_prefix == "3." and chapter(3).solutions_module == "solutions.ch03_normalization"
    for unknown in ("3", "notebooks/03_normalisation.ipynb", "9.1"):
        with pytest.raises(KeyError):
            chapter_of(unknown)


def test_every_exercise_belongs_to_one_topic_of_its_chapter():
    for ch in CHAPTERS[1:]:
        own = [i for i in exercise_ids() if chapter_of(i) is ch]
        spread = [i for _, ids in ch.topic_exercises(exercise_ids()) for i in ids]
        assert spread == own, ch.number
    assert [ids for _, ids in chapter(1).topic_exercises(exercise_ids())] == [["1.1"], ["1.2", "1.3", "1.4"],
                                                                             ["1.5", "1.6"]]


def test_an_exercise_added_at_the_end_of_a_chapter_joins_its_last_row(monkeypatch):
    from course_utils.harness import registry

    monkeypatch.setattr(registry, "exercise_ids", lambda: exercise_ids() + ["3.6"])
    row = next(line for line in concept_map().splitlines() if line.startswith("| 3 |"))
    assert "| 3.1–3.6 |" in row


def test_the_readme_tables_are_in_step_with_the_chapters():
    """The map "Where each concept lives" is the one `sync-stubs` writes; each chapter's "(N exercises)" is its count
    in the registry (tests/test_layout.py also checks that `sync-stubs` changes nothing)."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert CONCEPT_MAP.search(readme)[0] == concept_map()
    counts = {ch.number: sum(chapter_of(i) is ch for i in exercise_ids()) for ch in CHAPTERS}
    stated = {int(m[2]): int(m[3]) for m in README_COUNT.finditer(readme)}
    assert stated == {n: k for n, k in counts.items() if n != 0}, "README's chapter table (chapter 0 states none)"


def test_the_table_is_pure_data():
    """course_utils.chapters imports only the standard library: any tool can read it without torch or the harness."""
    import ast

    tree = ast.parse((REPO_ROOT / "course_utils" / "chapters.py").read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert imported == {"__future__", "os", "re", "dataclasses", "pathlib"}
