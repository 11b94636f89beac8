"""The registry (course_utils.harness.registry): every exercise in course order, each in its chapter's solutions
module, its reference answer, and the stub and solution source a notebook cell gets."""
import importlib

import torch

from course_utils import check
from course_utils.chapters import chapter_of
from course_utils.harness import launchers
from course_utils.harness.registry import exercise_ids, reference, registry, solution_source, stub_source
from solutions import ch00_start_here, ch01_backpropagation


def test_ids_in_course_order():
    """Chapters in order, each one's exercises numbered 1, 2, ... without a gap, and each in its chapter's module."""
    ids = [tuple(map(int, i.split("."))) for i in exercise_ids()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    chapters = sorted({c for c, _ in ids})
    assert chapters == list(range(chapters[-1] + 1)), "every chapter from 0 has exercises"
    for chapter in chapters:
        assert [n for c, n in ids if c == chapter] == list(range(1, sum(c == chapter for c, _ in ids) + 1))
    for ex in registry().values():
        chapter = chapter_of(ex.id)
        assert ex in importlib.import_module(chapter.solutions_module).EXERCISES, ex.id
        assert ex.chapter == chapter.heading, (ex.id, ex.chapter)


def test_triton_exercises_are_known_by_their_reference():
    """needs_triton comes from the reference (a kernel, or a KernelReference), and with it the 120 s limit: the
    Triton exercises are exactly those whose candidate runs through a guarded launcher."""
    triton_ids = [ex.id for ex in registry().values() if ex.needs_triton]
    launched = [ex.id for ex in registry().values() if getattr(ex.call, "__module__", None) == launchers.__name__]
    assert triton_ids and triton_ids == launched
    assert {ex.timeout_s for ex in registry().values()} == {30.0, 120.0}
    assert all((ex.timeout_s == 120.0) == ex.needs_triton for ex in registry().values())


def test_reference_is_the_solution():
    assert reference("0.1") is ch00_start_here.mean_squared_error
    assert reference("1.2") is ch01_backpropagation.safe_softmax


def test_stub_is_signature_docstring_and_raise():
    stub = stub_source("0.1")
    assert stub.startswith("def mean_squared_error(prediction, target):")
    assert stub.rstrip().endswith("raise NotImplementedError")
    assert "** 2).mean()" not in stub  # the answer is not handed out
    namespace = {}
    exec(stub, namespace)
    assert check("0.1", namespace["mean_squared_error"], display=False).status == "todo"


def test_solution_source_runs_as_a_notebook_cell_would():
    namespace = {"torch": torch}
    exec(solution_source("0.1"), namespace)
    assert check("0.1", namespace["mean_squared_error"], display=False).passed
