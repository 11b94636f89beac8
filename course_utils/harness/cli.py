"""The command line, ``python -m course_utils COMMAND``: doctor (what works here), progress, stub, sync-stubs,
execute, lab, compile, gpu-check (``--help`` lists them)."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import subprocess
import sys
from pathlib import Path

import course_utils  # noqa: F401  (interpreter switch first)
from course_utils.harness import REPO_ROOT


def _doctor_checks():
    """Yield (ok, name, detail) for everything a learner needs."""
    from course_utils.runtime import environment_lines, triton_status

    try:
        import torch

        x = torch.randn(4, 4, requires_grad=True)
        (x @ x).sum().backward()
        yield True, "torch", f"{torch.__version__}, autograd works"
    except Exception as exc:  # the doctor reports, it does not crash
        yield False, "torch", repr(exc)
        return
    status = triton_status()
    if status.available:
        try:
            from course_utils.kernels.softmax import softmax_triton

            x = torch.randn(3, 37)
            torch.testing.assert_close(softmax_triton(x), torch.softmax(x, -1))
            yield True, "triton", f"{status.version}, {status.mode}: a softmax kernel ran and matched torch"
        except Exception as exc:
            yield False, "triton", f"{status.mode}: a test kernel failed: {exc!r}"
    else:
        # No Triton (macOS/Windows) is a supported setup: the notebooks skip Triton cells.
        yield True, "triton", f"not available - {status.reason}"
    for module, what in [("ipywidgets", "sliders"), ("matplotlib", "plots"), ("jupyterlab", "JupyterLab"),
                         ("ipykernel", "the notebook kernel"), ("tqdm", "progress bars")]:
        if importlib.util.find_spec(module) is None:
            yield False, module, f"not installed ({what} need it): run `make lab` or `pip install -e .`"
        else:
            mod = importlib.import_module(module)
            yield True, module, f"{getattr(mod, '__version__', '?')} ({what})"
    try:
        from course_utils.harness.exercises import exercise_ids

        ids = exercise_ids()
        yield True, "exercises", f"{len(ids)} registered ({ids[0]} ... {ids[-1]})"
    except Exception as exc:
        yield False, "exercises", f"the solutions package failed to load: {exc!r}"
    try:
        from course_utils.harness import progress

        progress.load()
        yield True, "progress", f"file {progress.progress_path()} readable"
    except Exception as exc:
        yield False, "progress", repr(exc)
    for line in environment_lines():
        print("       " + line)


CONSTRAINTS = REPO_ROOT / "constraints-cpu.txt"


def version_mismatches(constraints: Path = CONSTRAINTS) -> list[tuple[str, str, str]]:
    """(package, pinned, installed) for every ``name==version`` line of ``constraints`` whose package is installed at
    another version (local tags such as ``+cpu`` ignored). [] without the file (an installed wheel has none)."""
    from importlib.metadata import PackageNotFoundError, version

    if not constraints.is_file():
        return []
    mismatches = []
    for line in constraints.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" not in line:
            continue
        name, pinned = (part.strip() for part in line.split("==", 1))
        try:
            installed = version(name)
        except PackageNotFoundError:
            continue  # a missing package is reported by the checks that need it
        if installed.split("+", 1)[0] != pinned:
            mismatches.append((name, pinned, installed))
    return mismatches


STALLING_KERNELS = ("7.0", "7.1", "7.2", "7.3")  # ipykernel releases that send shell replies raw (ipykernel #1554)


def kernel_stack_warnings() -> list[str]:
    """Why the installed notebook kernel may leave a request unread (a cell that never starts, kernel idle), if it
    is one known to: ipykernel 7.0 to 7.3 send the shell reply raw on the socket the requests arrive on, which can
    swallow the wake-up of a request arriving meanwhile (ipykernel issue #1554; fixed in 7.4 by pull request #1529,
    which sends it through the socket's stream)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        installed = version("ipykernel")
    except PackageNotFoundError:
        return []
    if installed.startswith(tuple(f"{v}." for v in STALLING_KERNELS)) or installed in STALLING_KERNELS:
        return [f"ipykernel {installed} can leave a cell's request unread, the kernel idle and the cell at [*] for "
                "ever (ipykernel #1554): pip install 'ipykernel>=7.4' (the course pins it in constraints-cpu.txt)"]
    return []


def doctor() -> int:
    failures = 0
    for ok, name, detail in _doctor_checks():
        print(f"{'OK  ' if ok else 'FAIL'}  {name:<11} {detail}")
        failures += not ok
    for name, pinned, installed in version_mismatches(CONSTRAINTS):
        print(f"NOTE  {name:<11} {installed} installed; the stored outputs were recorded with {pinned} "
              f"({CONSTRAINTS.name}): a printed digit may differ, a check will not")
    for warning in kernel_stack_warnings():
        print(f"WARN  {'kernel':<11} {warning}")
    print("all OK" if not failures else f"{failures} FAIL line(s): see above")
    return 1 if failures else 0


def compile_report(what: str, targets: list[str] | None) -> int:
    """Print the compiled-kernel table for a notebook's recorded launches, or for every known launch of one
    kernel (the notebooks', the benchmark's and the exercises'): registers, spills, shared memory, global loads."""
    from course_utils.runtime import triton_status

    status = triton_status()
    if not status.available:
        print(f"cannot compile here: {status.reason}", file=sys.stderr)
        return 2
    from course_utils.harness.compiled import NOTEBOOK_LAUNCHES, TARGETS, compile_launches, notebook_launches, table

    if what.endswith(".ipynb"):
        if not (NOTEBOOK_LAUNCHES / f"{Path(what).stem}.json").exists():
            print(f"no recorded launches for {what}: run `python -m course_utils execute {what}` first",
                  file=sys.stderr)
            return 2
        launches = notebook_launches(Path(what).stem)
    else:
        from course_utils.harness.bench import benchmark_launches
        from course_utils.harness.exercises import exercise_launches

        known = notebook_launches() + benchmark_launches() + exercise_launches()
        launches = list(dict.fromkeys(launch for launch in known if what in (launch.name, launch.kernel)))
        if not launches:
            print(f"no known launch of a kernel named {what!r}", file=sys.stderr)
            return 2
    chosen = tuple(t for t in TARGETS if not targets or t.name in targets)
    print(table(compile_launches(launches, chosen)))
    return 0


GPU_TESTS = ["-m", "kernel", "tests"]  # pytest's selection: every test marked `kernel` (launches or compiles a kernel)


def gpu_check(report: Path) -> int:
    """The GPU runbook (``make gpu-check``): the kernel tests compiled for this GPU and the benchmark (timed with
    ``triton.testing.do_bench``), written to one markdown report. Refuses clearly without an NVIDIA GPU."""
    import torch

    from course_utils.runtime import triton_status

    status = triton_status()
    if not torch.cuda.is_available() or status.mode != "compiled":
        print(f"gpu-check needs an NVIDIA GPU with Triton compiling for it; here: {status.reason}. "
              "Without one, the compiled tier of `make test` (tests/test_compiled.py) is the check.", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(0)
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *GPU_TESTS],
                           cwd=REPO_ROOT, capture_output=True, text=True)
    csv_path = report.with_suffix(".csv")
    bench = subprocess.run([sys.executable, "-m", "course_utils.harness.bench", "--csv", str(csv_path)], cwd=REPO_ROOT,
                           capture_output=True, text=True)
    summary = (tests.stdout.strip().splitlines() or ["(no output)"])[-1]
    report.write_text(
        f"# GPU check: {name}\n\ntorch {torch.__version__}, Triton {status.version}, CUDA {torch.version.cuda}\n\n"
        f"## Kernel tests, compiled (`pytest {' '.join(GPU_TESTS)}`)\n\n{summary}\n\n"
        + (f"```\n{tests.stdout[-6000:]}\n```\n\n" if tests.returncode else "")
        + "## Benchmark (`python -m course_utils.harness.bench`; fractions of this GPU's measured copy bandwidth, "
          "attention as a fraction of the data sheet's dense 16-bit peak)\n\n"
        + f"```\n{bench.stdout.strip()}\n{bench.stderr.strip()[-3000:] if bench.returncode else ''}\n```\n")
    print(f"{summary}\nbenchmark: {'ok' if bench.returncode == 0 else 'FAILED'}; report written to {report}")
    return 0 if tests.returncode == 0 and bench.returncode == 0 else 1


def chapter_test_command(number: int) -> list[str]:
    """The pytest command for one chapter: its notebook and the Korean one (nbval, learner mode), its notebook tests
    (solved mode, structure), its exercises in the catalogue, its claims tests and its modules' test files; without
    the minutes-long re-runs of stored grids (marker ``rerun``: add ``-m ""`` to include them)."""
    from course_utils.chapters import chapter

    ch = chapter(number)
    paths = [ch.notebook, Path("notebooks") / "ko" / ch.notebook.name, Path("tests/test_notebooks.py"),
             Path("tests/test_exercise_catalogue.py"), Path(f"tests/test_claims_ch{number:02d}.py"), *ch.test_files]
    found = [str(p) for p in dict.fromkeys(paths) if (REPO_ROOT / p).exists()]
    return [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "not rerun", *found,
            "-k", f"{ch.notebook.stem[:2]} or [{ch.exercise_prefix} or not (test_notebooks or test_exercise_catalogue)"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_utils")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("doctor", help="check that torch, Triton, widgets and Jupyter work here")
    prog = sub.add_parser("progress", help="show your exercise progress per chapter")
    prog.add_argument("--reset", metavar="ID", help="forget one exercise's record ('all' for every one)")
    stub = sub.add_parser("stub", help="print an exercise's original cell, to start it over")
    stub.add_argument("id")
    run = sub.add_parser("execute", help="run notebooks top to bottom and store their outputs (maintainers)")
    run.add_argument("notebooks", nargs="+")
    run.add_argument("--solved", action="store_true", help="replace exercise cells by the answers; do not write")
    sync = sub.add_parser("sync-stubs", help="write notebooks' exercise cells (and the README's counts and concept "
                                            "map) from the solutions (maintainers)")
    sync.add_argument("notebooks", nargs="*", help="default: every chapter's notebook")
    comp = sub.add_parser("compile", help="what Triton's compiler makes of a notebook's kernels, or of one kernel, "
                                          "for NVIDIA targets (no GPU needed)")
    comp.add_argument("what", help="a notebook (02_initialization.ipynb) or a kernel (_softmax_fwd_kernel, or "
                                   "course_utils.kernels.softmax:_softmax_fwd_kernel)")
    comp.add_argument("--target", action="append", choices=["sm_80", "sm_89", "sm_90"],
                      help="compile for this target only (repeatable; default: all three)")
    gpu = sub.add_parser("gpu-check", help="on an NVIDIA GPU: the kernel tests compiled (float32, float16, bfloat16) "
                                           "and the benchmark, in one markdown report")
    gpu.add_argument("--report", default="gpu-report.md", help="where to write it (default gpu-report.md)")
    lab = sub.add_parser("lab", help="open JupyterLab on notebooks/ (127.0.0.1, token auth)")
    lab.add_argument("--port", type=int, default=8888)
    tch = sub.add_parser("test-chapter", help="one chapter's tests: its notebooks (nbval, English and Korean), solved "
                                             "mode, exercises, claims and modules' tests (maintainers)")
    tch.add_argument("number", type=int)
    tch.add_argument("pytest_args", nargs="*", help="passed on to pytest (after --)")
    tr = sub.add_parser("translate", help="rebuild the Korean notebooks from the English ones and the translations, "
                                          "or --check what is stale (maintainers)")
    tr.add_argument("--check", action="store_true", help="list stale or missing translations; exit 1 if any")
    tr.add_argument("--init", action="store_true", help="add an English block for every untranslated cell")
    upd = sub.add_parser("update", help="bring in the latest course, keeping every line you wrote in the notebooks")
    upd.add_argument("--no-install", action="store_true", help="do not re-install when the dependencies change")
    args = parser.parse_args(argv)
    if args.command == "test-chapter":
        return subprocess.run(chapter_test_command(args.number) + args.pytest_args, cwd=REPO_ROOT).returncode
    if args.command == "translate":
        from course_utils.harness.translate import main as translate_main

        return translate_main(["--check"] if args.check else ["--init"] if args.init else [])
    if args.command == "update":
        from course_utils.harness.update import main as update_main

        return update_main(["--no-install"] if args.no_install else [])
    if args.command == "lab":
        import os

        from course_utils.harness.lab import lab_command

        notebooks = REPO_ROOT / "notebooks"
        cmd = lab_command(str(notebooks), args.port)
        os.execv(cmd[0], cmd)
    if args.command == "execute":
        from course_utils.harness.notebook_runner import execute

        for path in args.notebooks:
            _, seconds = execute(path, solved_mode=args.solved, write=not args.solved)
            print(f"{path}: {seconds:.1f} s ({'solved, not written' if args.solved else 'outputs stored'})")
        return 0
    if args.command == "sync-stubs":
        from course_utils.chapters import CHAPTERS
        from course_utils.harness.notebook_runner import sync_readme, sync_stubs

        paths = args.notebooks or [REPO_ROOT / chapter.notebook for chapter in CHAPTERS]
        for path in paths:
            changed = sync_stubs(Path(path))
            print(f"{path}: " + (f"wrote {', '.join(changed)} (re-run it: execute)" if changed else "up to date"))
        if sync_readme(REPO_ROOT / "README.md"):
            print("README.md: exercise counts and the concept map updated")
        return 0
    if args.command == "doctor":
        return doctor()
    if args.command == "compile":
        return compile_report(args.what, args.target)
    if args.command == "gpu-check":
        return gpu_check(Path(args.report))
    if args.command == "stub":
        from course_utils.harness.exercises import stub_source

        try:
            print(stub_source(args.id), end="")
        except KeyError as exc:
            print(exc.args[0], file=sys.stderr)
            return 2
        return 0
    from course_utils.harness import progress
    from course_utils.harness.exercises import progress_table

    if args.reset:
        progress.reset(None if args.reset == "all" else args.reset)
        print(f"reset {args.reset}")
    print(progress_table())
    return 0
