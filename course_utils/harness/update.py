"""Bring a learner's checkout to the latest course without losing a line they wrote: ``python -m course_utils update``
(``make update``).

A plain ``git pull`` aborts as soon as a notebook the course changed has been run or edited, and the usual ways
round it (stash, checkout, delete) lose the learner's answers or bury them in a notebook-JSON conflict. Here:

1. refuse, changing nothing, unless the checkout is a clone of the course with no commits of its own and the course
   can be fetched;
2. back up every notebook (and other tracked file) the learner changed, whole, under ``.course-backups/<time>/``
   (git-ignored);
3. put those files back to the course's version and fast-forward to the new course;
4. carry the learner's work into each new notebook, matched by stable cell ids and exercise ids, never by position:
   every exercise cell's code (where the course changed the stub meanwhile, a note above it shows the old and the new
   stub); every cell the learner added, after the course cell it followed (or, if that cell is gone, under "Your
   cells from the previous version" at the end); a course cell the learner edited, as their version next to the new
   one where the course changed it too. A tracked non-notebook file the learner edited is restored if the course did
   not change it, else left at the course's version (theirs is in the backup).
5. re-install only when the dependencies changed (``pyproject.toml``, ``constraints-cpu.txt``).

The progress file, the virtual environment and everything else git ignores are never touched.
"""
from __future__ import annotations

import argparse
import datetime
import json
import shutil
import subprocess
import sys
from pathlib import Path

from course_utils.harness import REPO_ROOT

BACKUPS = ".course-backups"
CARRIED_HEADING = "## Your cells from the previous version"
DEPENDENCY_FILES = ("pyproject.toml", "constraints-cpu.txt")


class UpdateRefused(RuntimeError):
    """The update cannot go ahead; the message says why and what to do. Nothing was changed."""


def _git(repo: Path, *args: str, check: bool = True) -> str:
    done = subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True)
    if check and done.returncode != 0:
        raise UpdateRefused(f"`git {' '.join(args)}` failed: {(done.stderr or done.stdout).strip()}")
    return done.stdout


def _changed_files(repo: Path) -> tuple[list[str], list[str]]:
    """(tracked files the learner changed, untracked files), paths relative to ``repo``."""
    changed, untracked = [], []
    for line in _git(repo, "status", "--porcelain", "--untracked-files=all").splitlines():
        status, path = line[:2], line[3:].strip().strip('"')
        if " -> " in path:  # a rename staged by the learner: the new name is what they have
            path = path.split(" -> ")[1]
        (untracked if status == "??" else changed).append(path)
    return changed, untracked


# ------------------------------------------------------------------------------------------ notebooks

def _cells(nb: dict) -> list[dict]:
    return nb.get("cells", [])


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else source


def _exercise(cell: dict) -> str | None:
    return cell.get("metadata", {}).get("exercise")


def _markdown(text: str) -> dict:
    import nbformat

    return nbformat.v4.new_markdown_cell(text)


def _fresh(cell: dict) -> dict:
    """A learner's cell to carry: its source and metadata, no outputs (those stay in the backup)."""
    import nbformat

    if cell.get("cell_type") == "code":
        new = nbformat.v4.new_code_cell(_source(cell), metadata=dict(cell.get("metadata", {})))
    elif cell.get("cell_type") == "markdown":
        new = nbformat.v4.new_markdown_cell(_source(cell), metadata=dict(cell.get("metadata", {})))
    else:
        new = nbformat.v4.new_raw_cell(_source(cell), metadata=dict(cell.get("metadata", {})))
    if cell.get("id"):
        new["id"] = cell["id"]
    return new


def merge_notebook(old: dict, mine: dict, new: dict) -> tuple[dict, list[str]]:
    """The new course notebook ``new`` with the learner's work from ``mine`` (their copy of the old course notebook
    ``old``) carried in; returns (notebook, what was carried, one line each)."""
    carried: list[str] = []
    old_by_id = {c.get("id"): c for c in _cells(old) if c.get("id")}
    old_stub = {_exercise(c): _source(c) for c in _cells(old) if _exercise(c)}
    new_cells = [dict(c) for c in _cells(new)]
    new_ids = {c.get("id") for c in new_cells}
    new_exercise = {_exercise(c): i for i, c in enumerate(new_cells) if _exercise(c)}
    inserts: dict[str, list[dict]] = {}  # new cell id -> learner cells to put after it
    leftovers: list[dict] = []
    anchor = None  # the id of the last course cell (present in old) seen so far in the learner's notebook
    for cell in _cells(mine):
        cid, exercise, text = cell.get("id"), _exercise(cell), _source(cell)
        if exercise is not None:
            if text == old_stub.get(exercise, text) and exercise in new_exercise:
                anchor = new_cells[new_exercise[exercise]].get("id")
                continue  # untouched stub: the new course's stub stands
            if exercise in new_exercise:
                i = new_exercise[exercise]
                course_stub = _source(new_cells[i])
                if exercise in old_stub and old_stub[exercise] != course_stub:  # the note goes above the cell
                    new_cells[i] = {**new_cells[i], "_note": (old_stub[exercise], course_stub)}
                    carried.append(f"exercise {exercise}: your code (the course changed its stub: see the note above "
                                   "the cell)")
                else:
                    carried.append(f"exercise {exercise}: your code")
                new_cells[i] = {**new_cells[i], "source": text, "outputs": [], "execution_count": None}
                anchor = new_cells[i].get("id")
                continue
            leftovers.append(_fresh(cell))
            carried.append(f"exercise {exercise} (no longer in the course): your code, at the end")
            continue
        if cid in old_by_id:  # a course cell
            if text != _source(old_by_id[cid]):  # ... that the learner edited
                course_cell = next((c for c in new_cells if c.get("id") == cid), None)
                if course_cell is not None and _source(course_cell) == _source(old_by_id[cid]):
                    course_cell["source"] = text  # the course kept it: keep the learner's version in place
                    carried.append(f"your edit of course cell {cid}")
                else:
                    mine_copy = _fresh(cell)
                    mine_copy.pop("id", None)
                    if mine_copy.get("cell_type") == "code":
                        mine_copy["source"] = "# your version of the cell above, from before the course update\n" + text
                    else:
                        mine_copy["source"] = "*Your version of the cell above, from before the course update:*\n\n" \
                                              + text
                    (inserts.setdefault(cid, []) if cid in new_ids else leftovers).append(mine_copy)
                    carried.append(f"your edit of course cell {cid}, next to the course's new version")
            anchor = cid
            continue
        # a cell the learner added
        target = anchor if anchor in new_ids else None
        (inserts.setdefault(target, []) if target else leftovers).append(_fresh(cell))
        where = "" if target else ", at the end (the cell it followed is gone)"
        carried.append(f"your cell {cid or '(no id)'}{where}")
    merged = []
    for cell in new_cells:
        note = cell.pop("_note", None)
        if note:
            merged.append(_markdown(
                f"**Course update:** the stub of exercise {_exercise(cell)} changed since you started. Your code is "
                "kept in the cell below; compare it with the new contract.\n\nThe stub you started from:\n\n"
                f"```python\n{note[0]}\n```\n\nThe new stub:\n\n```python\n{note[1]}\n```"))
        merged.append(cell)
        merged.extend(inserts.get(cell.get("id"), []))
    if leftovers:
        merged.append(_markdown(CARRIED_HEADING))
        merged.extend(leftovers)
    return {**new, "cells": merged}, carried


# ------------------------------------------------------------------------------------------ the command

def update(repo: Path = REPO_ROOT, *, remote: str = "origin", install: bool = True, out=print) -> int:
    """Run the update on ``repo`` (see the module docstring). Returns 0; raises :class:`UpdateRefused`."""
    repo = Path(repo)
    if _git(repo, "rev-parse", "--is-inside-work-tree", check=False).strip() != "true":
        raise UpdateRefused(f"{repo} is not a git checkout. Clone the course with `git clone` to be able to update it.")
    if remote not in _git(repo, "remote").split():
        raise UpdateRefused(f"this checkout has no remote called {remote!r}: it is not a clone of the course. Clone "
                            "the course again and copy your notebooks into it.")
    branch = _git(repo, "rev-parse", "--abbrev-ref", "HEAD").strip()
    if branch == "HEAD":
        raise UpdateRefused("this checkout is not on a branch (a detached HEAD): `git checkout main` first.")
    fetched = subprocess.run(["git", "-C", str(repo), "fetch", remote], capture_output=True, text=True)
    if fetched.returncode != 0:
        raise UpdateRefused(f"cannot fetch the course from {remote!r} (no network?): "
                            f"{fetched.stderr.strip().splitlines()[-1] if fetched.stderr.strip() else ''}. "
                            "Nothing was changed; try again when you are online.")
    upstream = f"{remote}/{branch}"
    if not _git(repo, "rev-parse", "--verify", "--quiet", upstream, check=False).strip():
        raise UpdateRefused(f"the course has no branch {branch!r} on {remote!r}: `git checkout main` first.")
    own = _git(repo, "rev-list", f"{upstream}..HEAD").split()
    if own:
        raise UpdateRefused(f"this checkout has {len(own)} commit(s) of its own that the course does not have, so it "
                            "cannot simply move to the new course. Keep your work on a branch (`git branch my-work`), "
                            f"then `git reset --hard {upstream}` and copy your notebooks back, or merge yourself.")
    old_head, new_head = _git(repo, "rev-parse", "HEAD").strip(), _git(repo, "rev-parse", upstream).strip()
    if old_head == new_head:
        out("The course is up to date: nothing to do.")
        return 0
    changed, untracked = _changed_files(repo)
    coming = set(_git(repo, "diff", "--name-only", old_head, new_head).split())
    renames = {}
    for line in _git(repo, "diff", "-M", "--name-status", old_head, new_head).splitlines():
        parts = line.split("\t")
        if parts[0].startswith("R"):
            renames[parts[1]] = parts[2]
    in_the_way = [p for p in untracked if p in coming]  # a file the course adds where the learner has one

    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    backup = repo / BACKUPS / stamp
    keep_ignored(repo)
    saved = {}
    for path in changed + in_the_way:
        source = repo / path
        if source.is_file():
            target = backup / path
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
            saved[path] = target
    old_notebooks = {p: json.loads(_git(repo, "show", f"{old_head}:{p}")) for p in changed
                     if p.endswith(".ipynb") and (repo / p).is_file() and _tracked_at(repo, old_head, p)}
    mine = {p: json.loads((repo / p).read_text()) for p in old_notebooks}
    if changed:
        _git(repo, "checkout", "HEAD", "--", *[p for p in changed if _tracked_at(repo, old_head, p)])
    for path in in_the_way:
        (repo / path).unlink()
    _git(repo, "merge", "--ff-only", upstream)
    out(f"Updated the course from {old_head[:8]} to {new_head[:8]}.")

    for path, old in old_notebooks.items():
        new_path = renames.get(path, path)
        if not (repo / new_path).is_file():  # the course removed it: the learner's notebook comes back as it was
            (repo / path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(saved[path], repo / path)
            out(f"  {path}: the course removed this notebook; yours is back in place (untracked now).")
            continue
        new = json.loads((repo / new_path).read_text())
        merged, carried = merge_notebook(old, mine[path], new)
        if carried:
            (repo / new_path).write_text(json.dumps(merged, indent=1, ensure_ascii=False) + "\n")
        moved = f" (renamed by the course to {new_path})" if new_path != path else ""
        out(f"  {path}{moved}: carried {', '.join(carried) if carried else 'nothing (only outputs had changed)'}")
    for path in changed:
        if path.endswith(".ipynb") or path not in saved:
            continue
        if path in coming:
            out(f"  {path}: the course changed it too; the course's version is in place, yours is in {saved[path]}")
        else:
            shutil.copy2(saved[path], repo / path)
            out(f"  {path}: your edit kept (the course did not change it)")
    for path in in_the_way:
        out(f"  {path}: the course now has a file here; yours is in {saved[path]}")
    if saved:
        out(f"Backups of everything you had changed: {backup}")
    if any(f in coming for f in DEPENDENCY_FILES):
        command = [sys.executable, "-m", "pip", "install", "--quiet", "-c", "constraints-cpu.txt", "-e", ".[dev]"]
        if install:
            out("The dependencies changed: re-installing (" + " ".join(command[2:]) + ").")
            subprocess.run(command, cwd=repo, check=False)
        else:
            out("The dependencies changed: run `make setup` (or " + " ".join(["python"] + command[1:]) + ").")
    return 0


def _tracked_at(repo: Path, commit: str, path: str) -> bool:
    return bool(_git(repo, "ls-tree", "--name-only", commit, "--", path, check=False).strip())


def keep_ignored(repo: Path) -> None:
    """Make sure the backups folder is ignored by git in this checkout (without touching a tracked file)."""
    exclude = repo / ".git" / "info" / "exclude"
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.exists() else []
    if f"{BACKUPS}/" not in lines:
        exclude.write_text("\n".join(lines + [f"{BACKUPS}/"]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils update", description=__doc__.split("\n")[0])
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="the course checkout (default: this one)")
    parser.add_argument("--no-install", action="store_true", help="do not re-install when the dependencies change")
    args = parser.parse_args(argv)
    try:
        return update(args.repo, install=not args.no_install)
    except UpdateRefused as exc:
        print(f"update refused, nothing changed: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
