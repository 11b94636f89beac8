"""The Korean edition, generated from the English notebooks so that it cannot drift.

    python -m course_utils translate            # rebuild notebooks/ko/ from notebooks/ + translations/ko/
    python -m course_utils translate --check    # list stale or missing translations; exit 1 if any
    python -m course_utils translate --init     # add a block (the English text, to translate) for every missing cell

One source of truth: a Korean notebook is the English notebook with every markdown cell replaced by its
translation. Translations live in ``translations/ko/NN_slug.md``, one block per markdown cell::

    <!-- cell 3f2a9c1e en 1a2b3c4d5e -->
    한국어 마크다운 …

keyed by the English cell's id and a hash of its English source. When the English text of a cell changes, its
hash no longer matches and the check lists the cell as stale until a translator updates the block (and its hash).
Code cells are copied unchanged, except that the setup cell selects Korean for the course's fixed phrases
(``setup(lang="ko")``). Outputs are recorded by executing the Korean notebook (``python -m course_utils execute
notebooks/ko/NN_slug.ipynb``), because ``check`` and ``hint`` then print Korean.

The fixed hints of the exercises (progressive hints and the listed mistakes' hints) are translated the same way in
``translations/ko/hints.md``, keyed ``3.1/hint2`` or ``3.1/<mistake name>``; ``hint`` and ``check`` show the Korean
one only while it was translated from the current English.

``translations/ko/glossary.tsv`` lists the course's terms (English, Korean): a cell whose English uses a term must
use its Korean rendering, so a term reads the same in every chapter.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import re
import sys
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from course_utils.harness import REPO_ROOT

LANGS = ("ko",)
MARKER = re.compile(r"^<!-- cell (?P<id>\S.*?) en (?P<hash>[0-9a-f]{10}) -->[ \t]*$", re.MULTILINE)
SETUP_CALL = "setup()"


def english_hash(source: str) -> str:
    """The first 10 hex digits of the SHA-1 of a cell's English source (what a translation block is keyed by)."""
    return hashlib.sha1(source.encode("utf-8")).hexdigest()[:10]


def translations_dir(lang: str = "ko") -> Path:
    return REPO_ROOT / "translations" / lang


def edition_dir(lang: str = "ko") -> Path:
    return REPO_ROOT / "notebooks" / lang


def english_notebooks() -> list[Path]:
    return sorted((REPO_ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@dataclass
class Block:
    cell_id: str
    en_hash: str
    text: str


def parse_blocks(text: str) -> dict[str, Block]:
    """The blocks of one translation file, by cell id (a duplicated id is an error)."""
    blocks: dict[str, Block] = {}
    marks = list(MARKER.finditer(text))
    for mark, following in zip(marks, marks[1:] + [None]):
        body = text[mark.end():following.start() if following else len(text)].strip("\n")
        if mark["id"] in blocks:
            raise ValueError(f"cell {mark['id']} is translated twice")
        blocks[mark["id"]] = Block(mark["id"], mark["hash"], body.rstrip())
    return blocks


def format_blocks(blocks: list[Block]) -> str:
    return "\n\n".join(f"<!-- cell {b.cell_id} en {b.en_hash} -->\n{b.text.strip()}" for b in blocks) + "\n"


def translation_file(notebook: Path, lang: str = "ko") -> Path:
    return translations_dir(lang) / (notebook.stem + ".md")


@dataclass
class Report:
    """What stands between the translation files and an edition in step with the English."""
    missing: list[tuple[str, str]] = field(default_factory=list)      # (notebook, cell id)
    stale: list[tuple[str, str]] = field(default_factory=list)
    untranslated: list[tuple[str, str]] = field(default_factory=list)  # a block still holding the English text
    orphans: list[tuple[str, str]] = field(default_factory=list)       # a block whose English cell is gone
    glossary: list[tuple[str, str, str, str]] = field(default_factory=list)  # (notebook, cell, english, korean)
    out_of_date: list[str] = field(default_factory=list)               # an edition notebook to rebuild

    def problems(self) -> list[str]:
        lines = [f"{nb}: cell {cid} has no translation" for nb, cid in self.missing]
        lines += [f"{nb}: cell {cid} changed in English since it was translated" for nb, cid in self.stale]
        lines += [f"{nb}: cell {cid} is still the English text" for nb, cid in self.untranslated]
        lines += [f"{nb}: block {cid} belongs to no English cell (delete it)" for nb, cid in self.orphans]
        lines += [f"{nb}: cell {cid} uses '{en}' but not its Korean rendering '{ko}' (glossary)"
                  for nb, cid, en, ko in self.glossary]
        lines += [f"{path}: not in step with its sources (run `python -m course_utils translate`)"
                  for path in self.out_of_date]
        return lines


def glossary(lang: str = "ko") -> list[tuple[str, str]]:
    """(English term, Korean rendering) pairs from the glossary file; ``#`` starts a comment line."""
    path = translations_dir(lang) / "glossary.tsv"
    if not path.exists():
        return []
    pairs = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            english, korean = (part.strip() for part in line.split("\t")[:2])
            if english != "english":
                pairs.append((english, korean))
    return pairs


def _term_pattern(english: str) -> re.Pattern:
    return re.compile(r"(?<![\w-])" + re.escape(english) + r"(?![\w-])", re.IGNORECASE)


def _strip_code(markdown: str) -> str:
    """Markdown without code spans, code blocks and LaTeX: a glossary term there is code or maths, not prose."""
    markdown = re.sub(r"```.*?```", " ", markdown, flags=re.DOTALL)
    markdown = re.sub(r"\$\$.*?\$\$", " ", markdown, flags=re.DOTALL)
    markdown = re.sub(r"`[^`]*`|\$[^$]*\$", " ", markdown)
    return re.sub(r"\]\([^)]*\)", "]", markdown)


def _own_prose(markdown: str) -> str:
    """The English the course itself writes: without code and maths, quotations ("...", “...”) and italic titles,
    which the Korean edition renders as the note's own Korean or leaves as the title they are."""
    prose = _strip_code(markdown)
    prose = re.sub(r'"[^"\n]*"|“[^”]*”', " ", prose)
    return re.sub(r"(?<![*\w])\*(?!\*)[^*\n]+?(?<!\*)\*(?![*\w])|(?<!\w)_[^_\n]+_(?!\w)", " ", prose)


def _judge(report: Report, where: str, key: str, block: Block | None, english: str) -> bool:
    """Record ``block`` (the translation of ``english``) in ``report`` if it is missing, stale or still the English
    text; True when there is a block to use."""
    if block is None:
        report.missing.append((where, key))
        return False
    if block.en_hash != english_hash(english):
        report.stale.append((where, key))
    if block.text.strip() == english.strip() and re.search(r"[A-Za-z]{3}", _strip_code(english)):
        report.untranslated.append((where, key))
    return True


def edition(notebook: Path, lang: str = "ko") -> tuple[object, Report]:
    """The Korean notebook generated from ``notebook`` (an nbformat node) and what is missing for it."""
    import nbformat

    report = Report()
    nb = nbformat.read(notebook, as_version=4)
    tfile = translation_file(notebook, lang)
    blocks = parse_blocks(tfile.read_text(encoding="utf-8")) if tfile.exists() else {}
    terms = [(en, ko, _term_pattern(en)) for en, ko in glossary(lang)]
    out = copy.deepcopy(nb)
    seen = set()
    for cell in out.cells:
        if cell.cell_type == "markdown":
            seen.add(cell.id)
            block = blocks.get(cell.id)
            if not _judge(report, notebook.name, cell.id, block, cell.source):
                continue
            english_prose = _own_prose(cell.source)
            for en, ko, pattern in terms:
                if pattern.search(english_prose) and ko not in block.text:
                    report.glossary.append((notebook.name, cell.id, en, ko))
            cell.source = block.text.strip()
        elif cell.cell_type == "code" and cell.source.rstrip().endswith(SETUP_CALL) and "import" in cell.source:
            cell.source = cell.source.rstrip()[: -len(SETUP_CALL)] + f'setup(lang="{lang}")'
    report.orphans += [(notebook.name, cid) for cid in blocks if cid not in seen]
    out.metadata["language"] = lang
    return out, report


HINTS_FILE = "hints.md"


def hint_texts() -> dict[str, str]:
    """Every fixed hint of the course by key: ``3.1/hint2`` (the exercise's second progressive hint) and
    ``3.1/_ln_unbiased`` (the hint of the listed mistake ``_ln_unbiased``), in course order."""
    from course_utils.harness.registry import registry

    texts = {}
    for ex in registry().values():
        for n, text in enumerate(ex.hints, 1):
            texts[f"{ex.id}/hint{n}"] = text
        for mistake in ex.mistakes:
            texts[f"{ex.id}/{mistake.name}"] = mistake.hint
    return texts


@cache
def _hint_blocks(lang: str) -> dict[str, Block]:
    path = translations_dir(lang) / HINTS_FILE
    return parse_blocks(path.read_text(encoding="utf-8")) if path.exists() else {}


def translated_hint(key: str, english: str, lang: str) -> str:
    """The ``lang`` rendering of the hint ``key`` when it is translated from this very English text, else the English
    (a stale or missing translation never shows a hint that no longer matches the exercise)."""
    block = _hint_blocks(lang).get(key)
    return block.text if block is not None and block.en_hash == english_hash(english) else english


def _check_hints(lang: str, report: Report) -> None:
    path = translations_dir(lang) / HINTS_FILE
    blocks = parse_blocks(path.read_text(encoding="utf-8")) if path.exists() else {}
    texts = hint_texts()
    for key, english in texts.items():
        _judge(report, HINTS_FILE, key, blocks.get(key), english)
    report.orphans += [(HINTS_FILE, key) for key in blocks if key not in texts]


def _sources(nb) -> list[tuple[str, str, str]]:
    return [(c.id, c.cell_type, c.source) for c in nb.cells]


def check(lang: str = "ko") -> Report:
    """Everything stale, missing or inconsistent, for every chapter, without writing anything."""
    import nbformat

    total = Report()
    for notebook in english_notebooks():
        generated, report = edition(notebook, lang)
        target = edition_dir(lang) / notebook.name
        if not target.exists() or _sources(nbformat.read(target, as_version=4)) != _sources(generated):
            report.out_of_date.append(str(target.relative_to(REPO_ROOT)))
        for name in ("missing", "stale", "untranslated", "orphans", "glossary", "out_of_date"):
            getattr(total, name).extend(getattr(report, name))
    _check_hints(lang, total)
    return total


def build(lang: str = "ko") -> list[Path]:
    """Write the edition's notebooks whose cell sources changed (outputs of unchanged code cells are kept, those of a
    changed code cell are cleared until the notebook is executed). Returns the notebooks written."""
    import nbformat

    written = []
    edition_dir(lang).mkdir(parents=True, exist_ok=True)
    for notebook in english_notebooks():
        generated, _ = edition(notebook, lang)
        target = edition_dir(lang) / notebook.name
        old = nbformat.read(target, as_version=4) if target.exists() else None
        if old is not None and _sources(old) == _sources(generated):
            continue
        previous = {c.id: c for c in old.cells} if old is not None else {}
        for cell in generated.cells:
            if cell.cell_type != "code":
                continue
            before = previous.get(cell.id)
            if before is not None and before.source == cell.source:
                cell.outputs, cell.execution_count = before.outputs, before.execution_count
            elif before is not None or cell.source.endswith(f'setup(lang="{lang}")'):
                cell.outputs, cell.execution_count = [], None
        nbformat.write(generated, target)
        written.append(target)
    return written


def init(lang: str = "ko") -> list[Path]:
    """Append a block holding the English text for every markdown cell without one (a translator replaces it)."""
    import nbformat

    touched = []
    translations_dir(lang).mkdir(parents=True, exist_ok=True)
    for notebook in english_notebooks():
        tfile = translation_file(notebook, lang)
        blocks = parse_blocks(tfile.read_text(encoding="utf-8")) if tfile.exists() else {}
        nb = nbformat.read(notebook, as_version=4)
        ordered = []
        for cell in nb.cells:
            if cell.cell_type == "markdown":
                ordered.append(blocks.pop(cell.id, None) or Block(cell.id, english_hash(cell.source), cell.source))
        ordered += blocks.values()
        text = format_blocks(ordered)
        if not tfile.exists() or tfile.read_text(encoding="utf-8") != text:
            tfile.write_text(text, encoding="utf-8")
            touched.append(tfile)
    hfile = translations_dir(lang) / HINTS_FILE
    blocks = parse_blocks(hfile.read_text(encoding="utf-8")) if hfile.exists() else {}
    ordered = [blocks.pop(key, None) or Block(key, english_hash(text), text) for key, text in hint_texts().items()]
    text = format_blocks(ordered + list(blocks.values()))
    if not hfile.exists() or hfile.read_text(encoding="utf-8") != text:
        hfile.write_text(text, encoding="utf-8")
        touched.append(hfile)
    return touched


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils translate", description=__doc__.split("\n")[0])
    parser.add_argument("--lang", default="ko", choices=LANGS)
    action = parser.add_mutually_exclusive_group()
    action.add_argument("--check", action="store_true", help="list what is stale or missing; exit 1 if anything is")
    action.add_argument("--init", action="store_true", help="add an English block for every untranslated cell")
    args = parser.parse_args(argv)
    if args.init:
        for path in init(args.lang):
            print(f"wrote {path.relative_to(REPO_ROOT)}")
        return 0
    if not args.check:
        for path in build(args.lang):
            print(f"wrote {path.relative_to(REPO_ROOT)} (execute it to record its outputs)")
    problems = check(args.lang).problems()
    for line in problems:
        print(line)
    print(f"{len(problems)} problem(s)" if problems else f"the {args.lang} edition is in step with the English")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
