"""How long each notebook takes in learner mode, on a quiet machine and with one core kept busy.

    python -m course_utils.harness.bench --notebooks [--threads 1 auto] [--only 05 08] [--csv notebooks.csv]

A learner's laptop is never idle (the browser, another kernel, a video call). For each notebook and each
thread setting (``COURSE_THREADS``: a number, or ``auto`` for PyTorch's default of one thread per core) it runs
the notebook top to bottom with the course's runner, once quiet and once while another process spins on one
core, and prints both times and their ratio, with the slowest cell of the busy run. A benchmark, not a test:
nothing here fails on a figure.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import subprocess
import sys
import time
from pathlib import Path

from course_utils.chapters import CHAPTERS
from course_utils.harness import REPO_ROOT

BUSY_LOOP = "while True: pass"


@contextlib.contextmanager
def busy_core(busy: bool):
    """One process spinning on a core for the duration (nothing when ``busy`` is false)."""
    if not busy:
        yield
        return
    spinner = subprocess.Popen([sys.executable, "-c", BUSY_LOOP])
    try:
        time.sleep(0.2)
        yield
    finally:
        spinner.kill()
        spinner.wait()


def cell_seconds(nb) -> list[tuple[int, float]]:
    """``(cell index, seconds)`` of every executed code cell, from nbclient's execution timestamps."""
    from datetime import datetime

    found = []
    for index, cell in enumerate(nb.cells):
        stamps = cell.get("metadata", {}).get("execution", {})
        start, end = stamps.get("iopub.execute_input"), stamps.get("shell.execute_reply")
        if start and end:
            seconds = (datetime.fromisoformat(end.replace("Z", "+00:00"))
                       - datetime.fromisoformat(start.replace("Z", "+00:00"))).total_seconds()
            found.append((index, seconds))
    return found


def time_notebook(path: Path, threads: str, busy: bool, cell_limit: int = 300) -> dict:
    """Run one notebook in learner mode; its wall time and slowest cell. A cell that runs past ``cell_limit`` seconds
    stops the run: its time is then reported as more than the time spent."""
    from nbclient.exceptions import CellTimeoutError

    from course_utils.harness.notebook_runner import execute

    start = time.perf_counter()
    with busy_core(busy):
        try:
            nb, seconds = execute(path, timeout=cell_limit, env={"COURSE_THREADS": threads})
        except CellTimeoutError:
            return {"seconds": None, "at least": time.perf_counter() - start, "slowest cell": "?",
                    "slowest cell s": float(cell_limit)}
    slowest = max(cell_seconds(nb), key=lambda c: c[1], default=(None, 0.0))
    return {"seconds": seconds, "slowest cell": slowest[0], "slowest cell s": slowest[1]}


def _shown(result: dict) -> str:
    return f"{result['seconds']:.1f}" if result["seconds"] is not None else f"> {result['at least']:.0f}"


def run(paths: list[Path], thread_settings: list[str], cell_limit: int = 300) -> list[dict]:
    rows = []
    for path in paths:
        for threads in thread_settings:
            quiet = time_notebook(path, threads, busy=False, cell_limit=cell_limit)
            loaded = time_notebook(path, threads, busy=True, cell_limit=cell_limit)
            both = quiet["seconds"] is not None and loaded["seconds"] is not None
            row = {"notebook": path.name, "COURSE_THREADS": threads, "quiet s": _shown(quiet),
                   "busy s": _shown(loaded),
                   "busy / quiet": f"{loaded['seconds'] / quiet['seconds']:.2f}" if both else "-",
                   "slowest busy cell": f"{loaded['slowest cell']} ({loaded['slowest cell s']:.1f} s)"}
            rows.append(row)
            print(" | ".join(f"{k}: {v}" for k, v in row.items()), flush=True)
    return rows


def markdown_table(rows: list[dict]) -> str:
    keys = list(rows[0])
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils.harness.bench --notebooks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--threads", nargs="+", default=["1"],
                        help="COURSE_THREADS settings to compare (default: 1, the course's; 'auto' is PyTorch's)")
    parser.add_argument("--only", nargs="+", default=[], help="notebook numbers or names (default: all)")
    parser.add_argument("--csv", default=None, help="also write the figures to this CSV file")
    parser.add_argument("--cell-limit", type=int, default=300, help="seconds a cell may run before the run stops")
    args = parser.parse_args(argv)
    paths = [REPO_ROOT / chapter.notebook for chapter in CHAPTERS]
    if args.only:
        paths = [p for p in paths if any(p.name.startswith(o) for o in args.only)]
    if not paths:
        parser.error(f"no notebook matches {args.only}")
    rows = run(paths, args.threads, args.cell_limit)
    print()
    print(markdown_table(rows))
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
