"""What an exercise is: its cases (:class:`Case`), its known wrong answers (:class:`Mistake`), a reference that is a
production kernel named but not imported (:class:`KernelReference`), the exercise itself (:class:`Exercise`) and the
verdict of one check (:class:`CheckResult`). The registry (``registry.py``) collects the exercises from
``solutions``; the check (``exercises.py``) runs them."""
from __future__ import annotations

import functools
import importlib
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy

from course_utils.harness.sandbox import _clone


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
    chapter: str = ""  # filled in by the registry: the chapter's heading (course_utils.chapters)

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


def _plain_call(fn: Callable, *args, **kwargs) -> Any:
    return fn(*args, **kwargs)

