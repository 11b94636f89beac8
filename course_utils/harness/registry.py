"""The registry: every exercise of the course, from each chapter's solutions module (``course_utils.chapters``
names them), with its reference answer and the stub a learner is handed."""
from __future__ import annotations

import ast
import functools
import importlib
import inspect
import textwrap
import types
from typing import Callable

from course_utils.chapters import CHAPTERS
from course_utils.harness.spec import Exercise


@functools.cache
def registry() -> types.MappingProxyType:
    """Every exercise in course order (id -> :class:`Exercise`), from the solutions module of each chapter of
    ``course_utils.chapters.CHAPTERS``, its ``chapter`` set to the chapter's heading; built on the first call,
    read-only."""
    exercises: dict[str, Exercise] = {}
    for chapter in CHAPTERS:
        module = importlib.import_module(chapter.solutions_module)
        for ex in module.EXERCISES:
            ex.chapter = chapter.heading
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

