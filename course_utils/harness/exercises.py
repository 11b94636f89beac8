"""Exercises: the registry, ``check`` and ``use``.

An exercise is a function the learner writes in a notebook cell tagged ``exercise``. ``check(id, fn)``
runs it on the exercise's cases and compares with the reference answer in ``solutions`` using
per-dtype tolerances. Every exercise also lists realistic wrong answers (:class:`Mistake`); when the
learner's output on a failing case equals a mistake's output, the mistake's hint is shown.

Learner mode never raises out of ``check``: a crash, a hang, a wrong shape, a NaN or an input
modified in place all become a message. With ``COURSE_STRICT=1`` anything but a pass raises
:class:`ExerciseNotPassed` (the tests use that).
"""
from __future__ import annotations

import ast
import contextlib
import ctypes
import functools
import importlib
import inspect
import math
import os
import signal
import textwrap
import threading
import traceback
import types
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy
import torch

from course_utils.harness import PACKAGE_DIR, REPO_ROOT, progress
from course_utils.harness.errors import ContractError, ExerciseNotPassed, ExerciseTimeout

# torch.testing.assert_close's defaults (rtol, atol) per dtype.
DEFAULT_TOLERANCES = {
    torch.float64: (1e-7, 1e-7),
    torch.float32: (1.3e-6, 1e-5),
    torch.float16: (1e-3, 1e-5),
    torch.bfloat16: (1.6e-2, 1e-5),
}


@dataclass(frozen=True)
class Case:
    """One input to an exercise: a name the learner sees when it fails, and the arguments.

    ``raises``: the contract says the answer must raise this exception type on these arguments.
    ``tolerances``: dtype -> (rtol, atol) for this case only (a regime where two correct answers differ
    by more than the exercise's tolerance, e.g. float32 rows of mean 1000).
    """
    name: str
    args: tuple
    kwargs: dict = field(default_factory=dict)
    raises: type[BaseException] | None = None
    tolerances: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Mistake:
    """A realistic wrong answer. ``fn`` has the reference's signature; ``hint`` says what to fix."""
    name: str
    fn: Callable
    hint: str


@dataclass(frozen=True)
class KernelReference:
    """A Triton exercise's answer that is a production kernel of ``course_utils.kernels``, named, not
    imported: importing ``solutions`` must not import Triton or a kernel module (a machine without
    Triton loses only the Triton cells). :meth:`Exercise.answer` imports it on first use."""
    module: str  # e.g. "course_utils.kernels.adamw"
    name: str  # e.g. "adamw_kernel"


@functools.lru_cache(maxsize=None)  # one object per kernel: check() compares answers by identity
def _resolve_kernel(module: str, name: str) -> Callable:
    from course_utils.runtime import triton_status

    status = triton_status()
    if status.available:
        return getattr(importlib.import_module(module), name)

    def unavailable(*_args, **_kwargs):
        raise RuntimeError(f"{name} is a Triton kernel and {status.reason}")

    unavailable.__name__ = unavailable.__qualname__ = name
    unavailable.triton_unavailable = status.reason
    return unavailable


@dataclass
class Exercise:
    id: str  # "1.3": chapter.number
    title: str  # one line, shown in the progress table
    reference: Callable | KernelReference  # the answer, from solutions (may be a Triton kernel); see answer()
    cases: Callable[[], list[Case]]  # builds fresh, seeded inputs
    mistakes: tuple[Mistake, ...] = ()
    # How a candidate runs on a case: call(candidate, *args, **kwargs). A Triton exercise passes
    # a launcher here because the candidate is a kernel, not a function of tensors.
    call: Callable[..., Any] | None = None
    tolerances: dict = field(default_factory=dict)  # dtype -> (rtol, atol), overriding the defaults
    needs_triton: bool | None = None  # None: derived from the reference (a Triton kernel, or a KernelReference)
    timeout_s: float | None = None  # None: 30 s, or 120 s for a Triton exercise (its interpreter is slow)
    output_names: tuple[str, ...] = ()  # names of the outputs of a tuple-returning answer, for messages
    hints: tuple[str, ...] = ()  # progressive hints for hint(id): the first a nudge, the last close to the answer
    chapter: str = ""  # filled in by the registry: the chapter title

    def __post_init__(self):
        if self.needs_triton is None:
            kind = type(self.reference).__name__
            self.needs_triton = (isinstance(self.reference, KernelReference)
                                 or kind in ("JITFunction", "InterpretedFunction")
                                 or hasattr(self.reference, "triton_unavailable"))  # the stand-in without Triton
        if self.timeout_s is None:
            self.timeout_s = 120.0 if self.needs_triton else 30.0

    def answer(self) -> Callable:
        """The reference answer itself (a :class:`KernelReference` imported now; where Triton cannot run,
        a stand-in that says so when called)."""
        if isinstance(self.reference, KernelReference):
            return _resolve_kernel(self.reference.module, self.reference.name)
        return self.reference

    def run(self, candidate: Callable, case: Case) -> Any:
        """Run a known answer (reference or mistake) on fresh copies of the case's tensors, quietly:
        a mistake's overflow warnings are expected and not the learner's business."""
        with warnings.catch_warnings(), numpy.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)
            return (self.call or _plain_call)(candidate, *_clone(case.args), **_clone(case.kwargs))


@dataclass
class CheckResult:
    exercise_id: str
    status: str  # "passed", "failed", "todo" (not implemented yet) or "skipped" (cannot run here)
    message: str
    case: str | None = None  # name of the first failing case
    mistake: str | None = None  # name of the known mistake the output matched

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __repr__(self) -> str:
        return f"<CheckResult {self.exercise_id}: {self.status}>"


# ---------------------------------------------------------------------------------------- registry

@functools.cache
def registry() -> types.MappingProxyType:
    """Every exercise in course order (id -> :class:`Exercise`), from the modules listed in ``solutions.CHAPTERS``;
    built on the first call, read-only."""
    import solutions

    exercises: dict[str, Exercise] = {}
    for module_name in solutions.CHAPTERS:
        module = importlib.import_module(f"solutions.{module_name}")
        for ex in module.EXERCISES:
            ex.chapter = module.CHAPTER
            exercises[ex.id] = ex
    return types.MappingProxyType(exercises)


def exercise_ids() -> list[str]:
    """Every exercise id in course order: ``["0.1", "1.1", ...]``."""
    return list(registry())


def reference(exercise_id: str) -> Callable:
    """The reference answer for ``exercise_id``."""
    return _get(exercise_id).answer()


def _get(exercise_id: str) -> Exercise:
    exercises = registry()
    if exercise_id not in exercises:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(exercises)}")
    return exercises[exercise_id]


def _python_function(obj: Callable) -> Callable:
    """The plain Python function behind a Triton ``JITFunction`` (or the object itself)."""
    return getattr(obj, "fn", obj)


def solution_source(exercise_id: str) -> str:
    """Source of the reference answer, as a learner would type it into the exercise cell."""
    return textwrap.dedent(inspect.getsource(_python_function(reference(exercise_id)))).rstrip() + "\n"


def stub_source(exercise_id: str) -> str:
    """The exercise cell as it is handed out: the reference's signature and docstring, no body."""
    source = solution_source(exercise_id)
    func = next(n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    doc = func.body[0]
    if not (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)):
        raise ValueError(f"reference for {exercise_id} has no docstring to hand out")
    lines = source.splitlines()[: doc.end_lineno]
    return "\n".join(lines + ["    # YOUR CODE HERE", "    raise NotImplementedError"]) + "\n"


def progress_table() -> str:
    """A text table per chapter: one line per exercise with its status and attempts."""
    records = progress.load()["exercises"]
    lines, chapter = [], None
    for ex in registry().values():
        if ex.chapter != chapter:
            chapter = ex.chapter
            done = sum(records.get(e.id, {}).get("status") == "passed"
                       for e in registry().values() if e.chapter == chapter)
            total = sum(e.chapter == chapter for e in registry().values())
            lines.append(f"{chapter}  ({done}/{total} passed)")
        rec = records.get(ex.id, {})
        hints = f", hints: {rec['hints']}/{len(ex.hints)}" if rec.get("hints") else ""
        lines.append(f"  {progress.STATUS_SYMBOL.get(rec.get('status'), '?')} {ex.id:<5} {ex.title:<44} "
                     f"attempts: {rec.get('attempts', 0)}{hints}")
    lines.append(f"(progress file: {progress.progress_path()})")
    return "\n".join(lines)


def hint(exercise_id: str, *, display: bool = True) -> str:
    """Show the next hint of an exercise: the first call the first hint, the next call the second, ...; the last one
    is close to the answer. Hints taken are recorded in the progress file (the progress table shows them)."""
    ex = _get(exercise_id)
    if not ex.hints:
        text = f"💡 {ex.id} {ex.title}: this exercise has no hints; its docstring is the whole contract."
    else:
        n = progress.take_hint(ex.id, len(ex.hints))
        if n:
            text = f"💡 {ex.id} hint {n} of {len(ex.hints)}: {ex.hints[n - 1]}"
        else:
            text = (f"💡 {ex.id}: all {len(ex.hints)} hints shown already:\n"
                    + "\n".join(f"  {i}. {h}" for i, h in enumerate(ex.hints, 1)))
    if display:
        print(text)
    return text


# ------------------------------------------------------------------------------------------- check

def strict_mode() -> bool:
    return os.environ.get("COURSE_STRICT", "") not in ("", "0")


_passed_candidates: dict[str, Any] = {}  # exercise id -> the candidate object that last passed


def check(exercise_id: str, candidate: Any, *, display: bool = True, record: bool = True,
          strict: bool | None = None) -> CheckResult:
    """Run ``candidate`` on every case of ``exercise_id`` and compare with the reference.

    Shows ✅ / ❌ (with the failing case, the error and a hint) / ⏳ (not implemented yet).
    Records the result in the progress file. Raises only in strict mode (``COURSE_STRICT=1``, or
    ``strict=True``); ``strict=False`` is for cells that show a failure on purpose.
    """
    if exercise_id in registry() and candidate is reference(exercise_id) and not _reference_allowed:
        ex = _get(exercise_id)
        result = CheckResult(exercise_id, "reference",
                             f"↩ {ex.id} {ex.title}: this is the course's reference answer (use() put it in place "
                             "because yours had not passed), not your code: nothing recorded. Run your exercise "
                             "cell again, then this cell.")
        if display:
            print(result.message)
        return result
    result = _check(exercise_id, candidate)
    if result.passed:
        _passed_candidates[exercise_id] = candidate
    else:
        _passed_candidates.pop(exercise_id, None)
    if record and result.status in ("passed", "failed", "todo"):
        try:
            progress.record(exercise_id, result.status, _source_or_none(candidate) if result.passed else None)
        except OSError as exc:
            result.message += f"\n(could not save progress: {exc})"
    if display:
        print(result.message)
    if (strict_mode() if strict is None else strict) and not result.passed:
        raise ExerciseNotPassed(result.message)
    return result


_reference_allowed = False  # tests switch this on to check the references themselves


@contextlib.contextmanager
def checking_references():
    """Within this block ``check`` accepts the reference answers themselves (for the course's tests)."""
    global _reference_allowed
    _reference_allowed = True
    try:
        yield
    finally:
        _reference_allowed = False


def use(exercise_id: str, candidate: Any) -> Any:
    """The learner's ``candidate`` if it passes ``exercise_id``, else the reference, said aloud."""
    if candidate is reference(exercise_id):
        print(f"→ {exercise_id}: using the reference `{_name(candidate)}` from solutions")
        return candidate
    if _passed_candidates.get(exercise_id) is not candidate:
        if not _check(exercise_id, candidate).passed:
            ref = reference(exercise_id)
            print(f"→ {exercise_id}: using the reference `{_name(ref)}` from solutions "
                  "(yours has not passed yet)")
            return ref
        _passed_candidates[exercise_id] = candidate
    print(f"→ {exercise_id}: using your `{_name(candidate)}`")
    return candidate


def from_progress(exercise_id: str) -> Any:
    """The learner's passing code for ``exercise_id`` from an earlier notebook (kept in the progress
    file), re-checked here; else the reference. Said aloud either way.

    The progress file holds runnable code: only a source that is exactly one function definition with
    the reference's name is run (under the exercise's time limit). Triton kernels need their source
    file and are not reloaded: they get the reference.
    """
    ref = reference(exercise_id)
    source = progress.passed_source(exercise_id)
    why = "no passing version of yours recorded"
    if source and not _is_triton(ref):
        candidate, why = _load_function(exercise_id, source, _name(ref))
        if candidate is not None:
            result = _check(exercise_id, candidate)
            if result.passed:
                print(f"→ {exercise_id}: using your `{_name(candidate)}` (passed earlier, re-checked now)")
                return candidate
            why = "yours from the progress file did not pass again:\n" + result.message
    print(f"→ {exercise_id}: using the reference `{_name(ref)}` from solutions ({why})")
    return ref


def _load_function(exercise_id: str, source: str, name: str) -> tuple[Any, str]:
    """(the function defined by ``source``, "") or (None, why not)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return None, "the recorded source does not parse"
    if len(tree.body) != 1 or not isinstance(tree.body[0], ast.FunctionDef) or tree.body[0].name != name \
            or tree.body[0].decorator_list:
        return None, f"the recorded source is not a single function `{name}`"
    namespace = _exercise_namespace()
    try:
        code = compile(tree, f"<your {exercise_id} from the progress file>", "exec")
        _run_with_time_limit(_get(exercise_id).timeout_s, lambda: exec(code, namespace))
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # SystemExit, a timeout, anything: fall back to the reference
        return None, f"the recorded source failed to load ({type(exc).__name__})"
    return namespace[name], ""


def _source_or_none(candidate: Any) -> str | None:
    try:
        return textwrap.dedent(inspect.getsource(_python_function(candidate)))
    except (OSError, TypeError):
        return None


def _is_triton(obj: Any) -> bool:
    return _python_function(obj) is not obj


def _exercise_namespace() -> dict:
    """What a notebook's exercise cells can count on having imported."""
    import torch.nn.functional as F

    from course_utils.runtime import import_triton

    triton, tl = import_triton()
    return {"math": math, "torch": torch, "nn": torch.nn, "F": F, "triton": triton, "tl": tl,
            "__name__": "course_exercise"}


def _name(obj: Any) -> str:
    return getattr(_python_function(obj), "__name__", type(obj).__name__)


def _check(exercise_id: str, candidate: Any) -> CheckResult:
    try:
        ex = _get(exercise_id)
    except KeyError as exc:
        return CheckResult(exercise_id, "failed", f"❌ {exc.args[0]}")
    label = f"{ex.id} {ex.title}"

    def failed(message: str, case: Case | None = None, mistake: Mistake | None = None) -> CheckResult:
        text = f"❌ {label}\n   " + message.replace("\n", "\n   ")
        if mistake is not None:
            text += f"\n   Hint: {mistake.hint}"
        return CheckResult(ex.id, "failed", text, case.name if case else None,
                           mistake.name if mistake else None)

    if candidate is None or not callable(candidate):
        return failed(f"expected your function (or kernel), got {type(candidate).__name__}. "
                      "Pass the function itself: check(\"{0}\", my_function), without calling it."
                      .format(ex.id))
    if ex.needs_triton or hasattr(candidate, "triton_unavailable"):
        from course_utils.runtime import triton_status

        status = triton_status()
        if not status.available:
            return CheckResult(ex.id, "skipped", f"⏭ {label}: skipped, {status.reason}")
    if _is_unimplemented_stub(candidate):  # a compiled Triton stub cannot even raise, so look first
        return CheckResult(ex.id, "todo", _TODO.format(label=label))
    try:
        cases = ex.cases()
    except Exception as exc:  # a broken case builder is the course's bug, said as such
        return failed(f"the course could not build the test cases ({exc!r}); please report this")

    with _recording_candidate_launches(ex) as launches:
        result = _check_cases(ex, candidate, cases, label, failed)
    if result.passed and launches:
        result = _with_compile_verdict(result, candidate, launches)
    return result


def exercise_launches() -> list:
    """The Triton launches of every Triton exercise's reference and mistakes on the exercise's cases, run in the
    interpreter as :func:`check` runs them (a mistake may fail its case: that is its point; its launches are
    recorded all the same)."""
    from course_utils.harness.compiled import recording_launches

    with recording_launches() as launches:
        for ex in registry().values():
            if not ex.needs_triton:
                continue
            for case in ex.cases():
                for fn in (ex.answer(), *(m.fn for m in ex.mistakes)):
                    try:
                        ex.run(fn, case)
                    except Exception:  # noqa: BLE001  (a mistake caught by the launcher's guards)
                        pass
    return launches


COMPILE_TARGET = "sm_90"  # the learner's kernel is compiled for this target after it passes (H100/H200)


@contextlib.contextmanager
def _recording_candidate_launches(ex: Exercise):
    """Launches made while a Triton exercise is checked in the interpreter (an empty list otherwise, or where
    Triton's compiler is absent or switched off with ``COURSE_COMPILE_CHECK=0``)."""
    from course_utils.runtime import triton_interpreting

    if not ex.needs_triton or not triton_interpreting() or os.environ.get("COURSE_COMPILE_CHECK") == "0":
        yield []
        return
    from course_utils.harness.compiled import recording_launches

    with recording_launches() as launches:
        yield launches


def _with_compile_verdict(result: CheckResult, candidate: Any, launches: list) -> CheckResult:
    """After a Triton kernel passed in the interpreter: compile the learner's own launches for a GPU. Code that
    the compiler rejects (or that would spill or overflow shared memory) is said with the compiler's line; it
    stays a pass for the numbers with a warning, and is a failure in strict mode."""
    from course_utils.harness.compiled import TARGETS, compile_launches

    fn = getattr(candidate, "fn", candidate)
    own = [launch for launch in launches if launch.kernel == f"{fn.__module__}:{fn.__qualname__}"][:3]
    if not own:  # its launches could not be recorded: the source of the kernel could not be read
        result.message += (f"\n   (not compiled for {COMPILE_TARGET}: the source of your kernel could not be read, "
                           "so the compiler cannot see it; the pass in the interpreter stands)")
        return result
    target = next(t for t in TARGETS if t.name == COMPILE_TARGET)
    try:
        reports = compile_launches(own, (target,), timeout_s=120)
    except Exception as exc:  # noqa: BLE001  (the compiler could not be run: say so, keep the pass)
        result.message += f"\n   (could not compile it for {target.name} here: {type(exc).__name__})"
        return result
    problems = list(dict.fromkeys(p for r in reports for p in r.problems()))
    if not problems:
        r = reports[0]
        result.message += (f"\n   Compiled for {target.name} ({target.cards}): {r.registers} registers a thread, "
                           "no spills, "
                           f"{r.shared_bytes} bytes of shared memory; global loads: "
                           + (", ".join(f"{n}x {op}" for op, n in sorted(r.global_loads.items())) or "none") + ".")
        return result
    warning = (f"⚠ It works in the interpreter, but for a GPU ({target.name}) Triton's compiler says: "
               + " | ".join(problems))
    if strict_mode():
        return CheckResult(result.exercise_id, "failed", result.message.replace("✅", "❌", 1) + "\n   " + warning)
    result.message += "\n   " + warning + "\n   (a pass for the numbers; fix it before you run it on a GPU)"
    return result


def _check_cases(ex: Exercise, candidate: Any, cases: list[Case], label: str, failed: Callable) -> CheckResult:
    """Run the candidate on every case (see :func:`check`); the first failing case decides."""
    seen: list[tuple[Case, Any]] = []  # (case, the learner's output) for the cases passed so far
    names = _parameter_names(ex.answer())
    for case in cases:
        tolerances = {**ex.tolerances, **case.tolerances}
        expected = None
        try:
            if case.raises is None:
                expected = ex.run(ex.answer(), case)
            elif not _raises(ex, ex.answer(), case):
                return failed(f"the reference answer does not raise {case.raises.__name__} on case '{case.name}'; "
                              "please report this")
        except Exception as exc:
            return failed(f"the reference answer failed on case '{case.name}' ({exc!r}); please report this")
        args_before = _clone((case.args, case.kwargs))
        try:
            # the case's own tensors, not copies: afterwards they show whether the code mutated them
            got = _run_with_time_limit(ex.timeout_s,
                                       lambda: (ex.call or _plain_call)(candidate, *case.args, **case.kwargs))
        except NotImplementedError:
            return CheckResult(ex.id, "todo", _TODO.format(label=label))
        except ExerciseTimeout as timeout:
            if timeout.abandoned:
                return failed(f"case '{case.name}': still running after {ex.timeout_s:.0f} s (an endless loop?). "
                              "It could not be stopped and goes on in the background: if the notebook slows down, "
                              "Kernel > Restart Kernel, then run from the top.", case)
            return failed(f"case '{case.name}': still running after {ex.timeout_s:.0f} s "
                          "(an endless loop?). Stopped it.", case)
        except ContractError as exc:
            return failed(f"case '{case.name}': {exc}", case,
                          _matching_mistake(ex, seen, case, exc, candidate, _after(cases, case)))
        except SystemExit:
            return failed(f"case '{case.name}': your code raised SystemExit (exit() or sys.exit()): return a value "
                          "instead.", case)
        except Exception as exc:
            if case.raises is not None and isinstance(exc, case.raises):
                seen.append((case, exc))
                continue
            return failed(f"case '{case.name}': your code raised {type(exc).__name__}: {exc}"
                          f"{_where(exc)}", case,
                          _matching_mistake(ex, seen, case, exc, candidate, _after(cases, case)))
        if case.raises is not None:
            return failed(f"case '{case.name}': the contract says your code must raise {case.raises.__name__} here; "
                          f"it returned {type(got).__name__} instead.", case,
                          _matching_mistake(ex, seen, case, got, candidate, _after(cases, case)))
        changed = _changed_argument(args_before, (case.args, case.kwargs), names)
        if changed:
            return failed(f"case '{case.name}': your code modified its input {changed} in place "
                          "(e.g. `x -= ...` or `x.exp_()`); compute on a new tensor instead.", case)
        aliased = _returned_input(got, case, names)
        if aliased:
            return failed(f"case '{case.name}': what your code returned shares memory with its input {aliased} (it is "
                          "that tensor, or a view of it). The contract asks for new tensors: a caller that changes "
                          "one would change the other (return `t.clone()` where nothing needs to change).", case)
        mismatch = describe_mismatch(expected, got, tolerances, names=ex.output_names)
        if mismatch and ex.needs_triton and "NaN" in mismatch:
            mismatch += "\n" + _nan_note()
        if mismatch:
            return failed(f"case '{case.name}': {mismatch}", case,
                          _matching_mistake(ex, seen, case, got, candidate, _after(cases, case)))
        seen.append((case, got))
    return CheckResult(ex.id, "passed", f"✅ {label}: passed all {len(cases)} cases.")


def _nan_note() -> str:
    """Where a Triton kernel's NaN can come from, as far as the evidence goes. In the interpreter on the CPU every load
    is watched (guards.watch_accesses), so a NaN that got through came from the kernel's own arithmetic, not from the
    NaN guards around the inputs; elsewhere (a GPU) the guards are the likelier source."""
    from course_utils.harness.guards import GUARD_NOTE
    from course_utils.runtime import device, triton_interpreting

    if triton_interpreting() and device().type == "cpu":
        return ("(Every load of your kernel stayed inside its inputs - the course watched them - so this NaN comes "
                "from its own arithmetic: an exp that overflowed to inf, then inf - inf, inf / inf or 0 * inf. "
                "Subtract the row's max before exp, and check what a masked lane's `other=` value turns into.)")
    return GUARD_NOTE


def _after(cases: list[Case], case: Case) -> list[Case]:
    return cases[cases.index(case) + 1:]


_TODO = ("⏳ {label}: not implemented yet - replace `raise NotImplementedError` with your code "
         "and run this cell again.")


def _is_unimplemented_stub(candidate: Any) -> bool:
    """True when the candidate's body is only a docstring, comments and ``raise NotImplementedError``."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(_python_function(candidate))))
    except (OSError, TypeError, SyntaxError):
        return False
    func = tree.body[0] if tree.body else None
    if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return False
    body = [n for n in func.body if not (isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant))]
    if len(body) != 1 or not isinstance(body[0], ast.Raise) or body[0].exc is None:
        return False
    exc = body[0].exc.func if isinstance(body[0].exc, ast.Call) else body[0].exc
    return isinstance(exc, ast.Name) and exc.id == "NotImplementedError"


def _plain_call(fn: Callable, *args, **kwargs) -> Any:
    return fn(*args, **kwargs)


def _parameter_names(fn: Callable) -> list[str]:
    try:
        return list(inspect.signature(_python_function(fn)).parameters)
    except (TypeError, ValueError):
        return []


def _matching_mistake(ex: Exercise, seen: list[tuple[Case, Any]], failing: Case, got: Any, candidate: Any = None,
                      remaining: list[Case] = ()):
    """The first known mistake that reproduces the learner's behaviour on every case: the same outputs
    on the cases that passed, on the failing case the same output (or the same exception type, when
    ``got`` is an exception), and the same on the cases after it, which are run for this purpose only."""
    observed = list(seen) + [(failing, got)]
    if candidate is not None:
        for case in remaining:
            try:
                observed.append((case, _run_with_time_limit(ex.timeout_s, lambda: ex.run(candidate, case))))
            except (Exception, ExerciseTimeout) as exc:
                observed.append((case, exc))
    # a case that must raise, where the learner did raise, says nothing about the mistakes listed
    observed = [(case, out) for case, out in observed if not (case.raises and isinstance(out, case.raises))]
    for mistake in ex.mistakes:
        try:
            if all(_same_behaviour(ex, mistake.fn, case, out) for case, out in observed):
                return mistake
        except (Exception, ExerciseTimeout):
            continue
    return None


def _same_behaviour(ex: Exercise, fn: Callable, case: Case, out: Any) -> bool:
    """Does ``fn`` on ``case`` give ``out`` (within tolerance), or raise the same exception type?"""
    try:
        wrong = _run_with_time_limit(ex.timeout_s, lambda: ex.run(fn, case))
    except Exception as exc:
        same_type = isinstance(out, BaseException) and type(exc) is type(out)
        return same_type and (not isinstance(exc, ContractError) or str(exc) == str(out))
    return (not isinstance(out, BaseException)
            and describe_mismatch(wrong, out, {**ex.tolerances, **case.tolerances}) is None)


def _raises(ex: Exercise, fn: Callable, case: Case) -> bool:
    """Does ``fn`` raise ``case.raises`` on ``case``?"""
    try:
        _run_with_time_limit(ex.timeout_s, lambda: ex.run(fn, case))
    except case.raises:
        return True
    return False


def _where(exc: BaseException) -> str:
    """' (line N of your code: `...`)' for the deepest frame outside the course and libraries."""
    course_dirs = (str(PACKAGE_DIR), str(REPO_ROOT / "solutions"))
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if not f.filename.startswith(course_dirs) and "site-packages" not in f.filename
              and "/lib/python" not in f.filename]
    if not frames:
        return ""
    frame = frames[-1]
    return f"\n(line {frame.lineno} of your code: `{(frame.line or '').strip()}`)"


# ------------------------------------------------------------------------------------- comparisons

def describe_mismatch(expected: Any, got: Any, tolerances: dict | None = None, where: str = "",
                      names: tuple[str, ...] = ()) -> str | None:
    """None when ``got`` matches ``expected``; else one sentence saying how it differs. ``names``: what to
    call the elements of a tuple of outputs (default ``output[i]``)."""
    tolerances = {**DEFAULT_TOLERANCES, **(tolerances or {})}
    what = f"{where}: " if where else ""
    if isinstance(expected, torch.Tensor):
        if not isinstance(got, torch.Tensor):
            return f"{what}expected a torch.Tensor, got {type(got).__name__}" + (
                " (did you forget to `return` it?)" if got is None else "")
        if got.shape != expected.shape:
            swapped = got.dim() >= 2 and got.shape == expected.transpose(-1, -2).shape
            return (f"{what}expected shape {tuple(expected.shape)}, got {tuple(got.shape)}"
                    + (" (the last two dimensions swapped: a transpose?)" if swapped else ""))
        if got.dtype != expected.dtype:
            return f"{what}expected dtype {expected.dtype}, got {got.dtype}"
        got_c, exp_c = got.detach().cpu(), expected.detach().cpu()
        if exp_c.dtype == torch.bool or not exp_c.is_floating_point():
            if torch.equal(got_c, exp_c):
                return None
            bad = (got_c != exp_c).nonzero()[0].tolist()
            return (f"{what}wrong value at index {bad}: expected {exp_c[tuple(bad)].item()}, "
                    f"got {got_c[tuple(bad)].item()}")
        rtol, atol = tolerances.get(exp_c.dtype, (1e-5, 1e-8))
        exp_f, got_f = exp_c.double(), got_c.double()
        new_nan = got_f.isnan() & ~exp_f.isnan()
        if new_nan.any():
            idx = new_nan.nonzero()[0].tolist()
            return (f"{what}NaN at index {idx} where the answer is {exp_f[tuple(idx)].item():.6g} "
                    f"({int(new_nan.sum())} NaN values in all){_where_wrong(~new_nan)}")
        ok = torch.isclose(got_f, exp_f, rtol=rtol, atol=atol, equal_nan=True)
        if bool(ok.all()):
            return None
        err = torch.where(ok, torch.zeros_like(got_f), (got_f - exp_f).abs().nan_to_num(math.inf))
        tol = f"(rtol={rtol:g}, atol={atol:g})"
        if exp_f.dim() == 0:
            return f"{what}expected {exp_f.item():.6g}, got {got_f.item():.6g} {tol}"
        idx = [int(i) for i in torch.unravel_index(err.argmax(), exp_f.shape)]
        return (f"{what}{int((~ok).sum())} of {ok.numel()} values differ; worst at index {idx}: "
                f"expected {exp_f[tuple(idx)].item():.6g}, got {got_f[tuple(idx)].item():.6g} {tol}"
                f"{_error_pattern(exp_f, got_f, rtol, atol) or _where_wrong(ok)}")
    if isinstance(expected, dict):  # named values: the name says where it differs
        if not isinstance(got, dict):
            return f"{what}expected a dict, got {type(got).__name__}"
        if got.keys() != expected.keys():
            missing, extra = sorted(set(expected) - set(got)), sorted(set(got) - set(expected))
            return f"{what}missing {missing}" + (f", unexpected {extra}" if extra else "")
        for key, value in expected.items():
            problem = describe_mismatch(value, got[key], tolerances, f"{where}[{key!r}]" if where else str(key))
            if problem:
                return problem
        return None
    if isinstance(expected, (tuple, list)):
        if not isinstance(got, (tuple, list)):
            return f"{what}expected a tuple of {len(expected)} values, got {type(got).__name__}"
        if len(got) != len(expected):
            return f"{what}expected {len(expected)} values, got {len(got)}"
        for i, (e, g) in enumerate(zip(expected, got)):
            label = f"{where}[{i}]" if where else (names[i] if i < len(names) else f"output[{i}]")
            problem = describe_mismatch(e, g, tolerances, label)
            if problem:
                return problem
        return None
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = got.item()
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return f"{what}expected a number, got {type(got).__name__}"
        if math.isclose(got, expected, rel_tol=1e-5, abs_tol=1e-7) or (math.isnan(got) and math.isnan(expected)):
            return None
        return f"{what}expected {expected:.6g}, got {got:.6g}"
    if expected != got:
        return f"{what}expected {expected!r}, got {got!r}"
    return None


def _error_pattern(exp: torch.Tensor, got: torch.Tensor, rtol: float, atol: float) -> str:
    """When a wrong answer is the right one transformed simply, say how (float64 tensors, one shape)."""
    finite = exp.isfinite() & got.isfinite()
    if not bool(finite.all()) or exp.numel() < 2:
        return ""

    def close(a, b):
        return bool(torch.isclose(a, b, rtol=rtol, atol=atol).all())

    if not bool(got.any()):
        return ". Your output is all zeros."
    if close(got, -exp):
        return ". Your output is the answer with its sign flipped."
    if exp.dim() >= 2 and exp.shape[-1] == exp.shape[-2] and close(got, exp.transpose(-1, -2)):
        return ". Your output is the answer transposed (last two dimensions swapped)."
    for dim in range(exp.dim()):
        n = exp.shape[dim]
        if n > 2:
            ahead, behind = exp.narrow(dim, 1, n - 1), exp.narrow(dim, 0, n - 1)
            if close(ahead, behind):  # the answer barely changes along this dimension: a shift says nothing
                continue
            if close(got.narrow(dim, 0, n - 1), ahead) or close(got.narrow(dim, 1, n - 1), behind):
                return f". Your output is the answer shifted by one position along dimension {dim}: an off-by-one?"
    nonzero = exp.abs() > atol
    if bool(nonzero.sum() >= 2):
        ratio = got[nonzero] / exp[nonzero]
        r = float(ratio.median())
        if abs(r) > 1e-3 and abs(r - 1) > 10 * rtol and close(got, r * exp):
            return f". Every value is {r:.4g} times the answer: a missing or extra constant factor."
    offset = float((got - exp).median())
    if abs(offset) > atol and close(got, exp + offset):
        return f". Every value is off by {offset:+.4g}: a constant offset."
    if int(nonzero.sum()) > 4:
        err, size = (got - exp).abs()[nonzero], exp.abs()[nonzero]
        rel = err / size
        grows = float(torch.corrcoef(torch.stack([err, size]))[0, 1]) > 0.7 if float(size.std()) > 0 else False
        # rounding errs both ways; a wrong formula (an eps, a scale) shifts every value the same way
        up = float(((got - exp)[nonzero] * exp[nonzero].sign() > 0).double().mean())
        if grows and 0.2 < up < 0.8 and float(rel.max()) < 1e-2 and float(rel.max()) < 30 * float(rel.median()):
            return (f". The error grows with the values (relative error at most {float(rel.max()):.1e}, about the "
                    "same everywhere): a step in lower precision (float16, bfloat16, TF32)?")
    return ""


def _where_wrong(ok: torch.Tensor) -> str:
    """Say when the wrong values sit in a few rows, or only in the last column (``ok``: bool)."""
    if ok.dim() < 2 or bool(ok.all()):
        return ""
    cols_bad = (~ok).flatten(0, -2).any(dim=0)
    if ok.shape[-1] > 2 and not bool(cols_bad[:-1].any()):
        return (". Only the last column is wrong: an off-by-one at the end of a row (a range or a mask that stops "
                "one short, or one too far)?")
    rows_bad = (~ok).flatten(0, -2).any(dim=-1)
    n_rows = rows_bad.numel()
    if 0 < int(rows_bad.sum()) < n_rows:
        bad = rows_bad.nonzero()[:, 0].tolist()
        shown = ", ".join(map(str, bad[:6])) + (", ..." if len(bad) > 6 else "")
        return (f". Only {len(bad)} of {n_rows} rows are wrong (rows {shown}, counting over all but the last "
                "dimension); the others match")
    return ""


def _clone(tree: Any) -> Any:
    """A deep copy of tensors in nested tuples/lists/dicts, strides kept (a strided case must reach the
    reference and the mistakes strided too); other leaves are shared."""
    if isinstance(tree, torch.Tensor):
        if not tree.is_leaf:
            return tree.clone()
        return _strided_copy(tree.detach()).requires_grad_(tree.requires_grad)
    if isinstance(tree, (tuple, list)):
        return type(tree)(_clone(t) for t in tree)
    if isinstance(tree, dict):
        return {k: _clone(v) for k, v in tree.items()}
    return tree


def _strided_copy(t: torch.Tensor) -> torch.Tensor:
    """A copy of ``t`` in fresh memory with the same sizes and strides."""
    if t.is_contiguous() or t.numel() == 0 or 0 in t.stride():
        return t.clone()
    extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()))
    out = torch.empty(extent, dtype=t.dtype, device=t.device).as_strided(t.shape, t.stride())
    out.copy_(t)
    return out


def _tensors(tree: Any) -> list[torch.Tensor]:
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, (tuple, list)):
        return [t for item in tree for t in _tensors(item)]
    if isinstance(tree, dict):
        return [t for item in tree.values() for t in _tensors(item)]
    return []


def _returned_input(got: Any, case: Case, names: list[str]) -> str | None:
    """The name of an argument whose memory an output tensor shares (the output is the input, or a view)."""
    def storage(t: torch.Tensor) -> int:
        return t.untyped_storage().data_ptr() if t.numel() else 0

    outputs = {storage(t) for t in _tensors(got)} - {0}
    named = [(names[i] if i < len(names) else f"#{i + 1}", a) for i, a in enumerate(case.args)]
    for name, arg in named + list(case.kwargs.items()):
        if outputs & {storage(t) for t in _tensors(arg)}:
            return f"`{name}`"
    return None


def _changed_argument(before: Any, after: Any, names: list[str]) -> str | None:
    """The name of the first argument whose tensors (also inside lists, tuples and dicts) differ
    between two ``(args, kwargs)`` snapshots."""
    (args_b, kwargs_b), (args_a, kwargs_a) = before, after
    pairs = [(names[i] if i < len(names) else f"#{i + 1}", b, a) for i, (b, a) in enumerate(zip(args_b, args_a))]
    pairs += [(k, kwargs_b[k], kwargs_a[k]) for k in kwargs_b]
    for name, b, a in pairs:
        if not _same_tree(b, a):
            return f"`{name}`"
    return None


def _same_tree(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and _same_tensor(a, b)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(map(_same_tree, a, b))
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_tree(a[k], b[k]) for k in a)
    return True


def _same_tensor(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return torch.equal(a.detach().isnan(), b.detach().isnan()) and torch.equal(
        a.detach().nan_to_num(0.0) if a.is_floating_point() else a.detach(),
        b.detach().nan_to_num(0.0) if b.is_floating_point() else b.detach())


def _signal_timer_usable() -> bool:
    """SIGALRM stops runaway code most reliably, but Windows has none and only the main thread may use it."""
    return hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()


def _run_with_time_limit(seconds: float, fn: Callable[[], Any]) -> Any:
    """``fn()``, or :class:`ExerciseTimeout` once it has run ``seconds``; ``fn``'s exceptions pass through.

    With SIGALRM (Unix, main thread) the alarm raises inside ``fn``. Without it, ``fn`` runs in a worker
    thread; past the limit the timeout is raised in that thread too (at its next Python bytecode, which
    stops a Python loop), and if it is stuck in C code it is left to finish in the background
    (``ExerciseTimeout.abandoned``): the learner gets the message either way, never a hang.
    """
    if _signal_timer_usable():
        def _raise(signum, frame):
            raise ExerciseTimeout()

        previous = signal.signal(signal.SIGALRM, _raise)
        signal.setitimer(signal.ITIMER_REAL, seconds)
        try:
            return fn()
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
    outcome: dict[str, Any] = {}
    grad_enabled = torch.is_grad_enabled()  # grad mode is per thread: carry the caller's over

    def worker():
        try:
            with torch.set_grad_enabled(grad_enabled):
                outcome["value"] = fn()
        except BaseException as exc:  # handed to the caller, SystemExit and timeouts included
            outcome["error"] = exc

    thread = threading.Thread(target=worker, name="course-exercise", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread.ident), ctypes.py_object(ExerciseTimeout))
        thread.join(1.0)
        timeout = ExerciseTimeout()
        timeout.abandoned = thread.is_alive()
        raise timeout
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
