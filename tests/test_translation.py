"""The Korean edition is generated from the English notebooks and cannot silently fall behind them."""
import shutil

import nbformat
import pytest

from course_utils.harness import translate


def test_the_korean_edition_is_in_step_with_the_english():
    """Every English markdown cell has a current Korean translation that uses the glossary's terms, and
    notebooks/ko/ is what `python -m course_utils translate` generates (run it, then execute what it wrote)."""
    problems = translate.check("ko").problems()
    assert not problems, "\n".join(problems[:40]) + f"\n({len(problems)} in all)"


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    """A copy of the English notebooks and the Korean sources, so the test may change them."""
    from course_utils.harness import REPO_ROOT

    for part in ("notebooks", "translations"):
        shutil.copytree(REPO_ROOT / part, tmp_path / part, ignore=shutil.ignore_patterns(".ipynb_checkpoints"))
    monkeypatch.setattr(translate, "REPO_ROOT", tmp_path)
    return tmp_path


def _first_markdown(path):
    nb = nbformat.read(path, as_version=4)
    return nb, next(c for c in nb.cells if c.cell_type == "markdown")


def test_a_changed_english_cell_is_reported_stale_until_its_translation_is_updated(scratch):
    english = scratch / "notebooks" / "03_normalization.ipynb"
    nb, cell = _first_markdown(english)
    before = {(nb_, cid) for nb_, cid in translate.check("ko").stale}
    cell.source += "\n\nA sentence added in English."
    nbformat.write(nb, english)
    report = translate.check("ko")
    assert ("03_normalization.ipynb", cell.id) in set(report.stale) - before
    tfile = translate.translation_file(english)
    blocks = translate.parse_blocks(tfile.read_text(encoding="utf-8"))
    blocks[cell.id].en_hash = translate.english_hash(cell.source)
    tfile.write_text(translate.format_blocks(list(blocks.values())), encoding="utf-8")
    assert ("03_normalization.ipynb", cell.id) not in translate.check("ko").stale


def test_a_new_english_cell_is_missing_and_init_adds_its_block(scratch):
    english = scratch / "notebooks" / "05_optimization.ipynb"
    nb = nbformat.read(english, as_version=4)
    new = nbformat.v4.new_markdown_cell("A new paragraph about the learning rate.")
    nb.cells.insert(1, new)
    nbformat.write(nb, english)
    assert ("05_optimization.ipynb", new.id) in translate.check("ko").missing
    translate.init("ko")
    report = translate.check("ko")
    assert ("05_optimization.ipynb", new.id) not in report.missing
    assert ("05_optimization.ipynb", new.id) in report.untranslated, "init's block holds English until translated"


def test_the_generated_notebook_has_the_english_code_and_selects_korean(scratch):
    english = scratch / "notebooks" / "02_initialization.ipynb"
    generated, _ = translate.edition(english, "ko")
    original = nbformat.read(english, as_version=4)
    assert [c.id for c in generated.cells] == [c.id for c in original.cells]
    code = [(a.source, b.source) for a, b in zip(original.cells, generated.cells) if a.cell_type == "code"]
    assert code[0][1].endswith('setup(lang="ko")')
    assert all(en == ko for en, ko in code[1:]), "only the setup call differs"


def test_glossary_terms_are_checked_outside_code_only():
    prose = translate._strip_code("The `warmup` flag and $\\text{warmup}$ are code; the warmup itself is prose.")
    assert len(translate._term_pattern("warmup").findall(prose)) == 1


def test_a_block_marker_cannot_be_used_twice():
    text = "<!-- cell abc en 0123456789 -->\n하나\n\n<!-- cell abc en 0123456789 -->\n둘\n"
    with pytest.raises(ValueError, match="translated twice"):
        translate.parse_blocks(text)


def test_readme_ko_counts_the_exercises_of_each_chapter():
    import re

    from course_utils.chapters import CHAPTERS
    from course_utils.harness import REPO_ROOT
    from course_utils.harness.registry import exercise_ids

    text = (REPO_ROOT / "README.ko.md").read_text(encoding="utf-8")
    for chapter in CHAPTERS[1:]:
        count = sum(i.startswith(chapter.exercise_prefix) for i in exercise_ids())
        row = re.search(rf"^\| {chapter.number} \| `ko/{chapter.notebook.name}` \|.*$", text, re.M)
        assert row and f"(연습 문제 {count}개)" in row[0], (chapter.number, count)
