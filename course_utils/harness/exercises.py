"""Exercises: ``check``, ``use``, ``from_progress`` and ``hint``, and the one import name for the whole checker.

An exercise is a function the learner writes in a notebook cell tagged ``exercise``. ``check(id, fn)``
runs it on the exercise's cases and compares with the reference answer in ``solutions`` using
per-dtype tolerances. Every exercise also lists realistic wrong answers (:class:`Mistake`); when the
learner's output on a failing case equals a mistake's output, the mistake's hint is shown.

Learner mode never raises out of ``check``: a crash, a hang, a wrong shape, a NaN or an input
modified in place all become a message. With ``COURSE_STRICT=1`` anything but a pass raises
:class:`ExerciseNotPassed` (the tests use that).

The checker's other parts live beside this module and are re-exported here, so that
``from course_utils.harness.exercises import Exercise, Case, Mistake, registry, describe_mismatch, ...`` works:
``spec`` (the data model), ``registry`` (the exercises, references and stubs), ``compare`` (how an output differs,
in words), ``sandbox`` (copies of the inputs, mutation and aliasing checks, the time limit), ``errors`` (the
exception types) and ``progress.progress_table``.
"""
from __future__ import annotations

import ast
import contextlib
import inspect
import math
import os
import textwrap
import traceback
from typing import Any, Callable

import torch

from course_utils.harness import PACKAGE_DIR, REPO_ROOT, progress
from course_utils.harness.compare import DEFAULT_TOLERANCES, describe_mismatch
from course_utils.harness.errors import ContractError, ExerciseNotPassed, ExerciseTimeout
from course_utils.harness.phrases import language, say
from course_utils.harness.progress import progress_table
from course_utils.harness.registry import (
    _get,
    _python_function,
    exercise_ids,
    reference,
    registry,
    solution_source,
    stub_source,
)
from course_utils.harness.sandbox import _changed_argument, _clone, _returned_input, _run_with_time_limit
from course_utils.harness.spec import Case, CheckResult, Exercise, KernelReference, Mistake, _plain_call

__all__ = [
    # the data model (spec) and the exception types (errors)
    "Case", "Mistake", "KernelReference", "Exercise", "CheckResult",
    "ContractError", "ExerciseNotPassed", "ExerciseTimeout",
    # the registry
    "registry", "exercise_ids", "reference", "solution_source", "stub_source",
    # the check
    "check", "use", "from_progress", "hint", "strict_mode", "checking_references", "exercise_launches",
    "COMPILE_TARGET",
    # how an output differs (compare), and the progress table (progress)
    "describe_mismatch", "DEFAULT_TOLERANCES", "progress_table",
]


def _hint(ex: Exercise, key: str, english: str) -> str:
    """A fixed hint in the learner's language (``COURSE_LANG``), translated from this very English text."""
    if language() == "en":
        return english
    from course_utils.harness.translate import translated_hint

    return translated_hint(f"{ex.id}/{key}", english, language())


def hint(exercise_id: str, *, display: bool = True) -> str:
    """Show the next hint of an exercise: the first call the first hint, the next call the second, ...; the last one
    is close to the answer. Hints taken are recorded in the progress file (the progress table shows them)."""
    ex = _get(exercise_id)
    if not ex.hints:
        text = say("hint.none", id=ex.id, title=ex.title)
    else:
        n = progress.take_hint(ex.id, len(ex.hints))
        if n:
            text = say("hint.next", id=ex.id, n=n, total=len(ex.hints), hint=_hint(ex, f"hint{n}", ex.hints[n - 1]))
        else:
            text = (say("hint.all", id=ex.id, total=len(ex.hints)) + "\n"
                    + "\n".join(f"  {i}. {_hint(ex, f'hint{i}', h)}" for i, h in enumerate(ex.hints, 1)))
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
        print(say("use.reference", id=exercise_id, name=_name(candidate)))
        return candidate
    if _passed_candidates.get(exercise_id) is not candidate:
        if not _check(exercise_id, candidate).passed:
            ref = reference(exercise_id)
            print(say("use.not_passed", id=exercise_id, name=_name(ref)))
            return ref
        _passed_candidates[exercise_id] = candidate
    print(say("use.yours", id=exercise_id, name=_name(candidate)))
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
    why = say("use.none_recorded")
    if source and not _is_triton(ref):
        candidate, why = _load_function(exercise_id, source, _name(ref))
        if candidate is not None:
            result = _check(exercise_id, candidate)
            if result.passed:
                print(say("use.earlier", id=exercise_id, name=_name(candidate)))
                return candidate
            why = say("use.failed_again") + "\n" + result.message
    print(say("use.fallback", id=exercise_id, name=_name(ref), why=why))
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
            text += "\n   " + say("check.hint", hint=_hint(ex, mistake.name, mistake.hint))
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
        return CheckResult(ex.id, "todo", say("check.todo", label=label))
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
            return CheckResult(ex.id, "todo", say("check.todo", label=label))
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
    return CheckResult(ex.id, "passed", say("check.passed", label=label, n=len(cases)))


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
