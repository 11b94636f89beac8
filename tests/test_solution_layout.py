"""Each exercise is one block of its chapter's solutions module, and the blocks are in id order.

A block holds the exercise's pieces (its reference answer, case builders, call adapter, mistake functions and
whatever module-level helpers only they use, Triton variant kernels included) and ends with the
``EX_N_M = Exercise(...)`` that ties them together with the hints. The module ends with
``EXERCISES = [EX_N_1, EX_N_2, ...]``. So a hint sits just below the code it is about, and a renumbering that leaves
a block behind fails here.

The pieces are found from the ``Exercise`` objects themselves: its reference, cases, call, tolerances, output names
and mistake functions where they are module-level names of the chapter (by identity), then, recursively, the
module-level names their code loads, the functions in their closures, and the function a closure was made by.
Lambdas written in the ``Exercise(...)`` are located by their first line.
"""
from __future__ import annotations

import ast
import dataclasses
import dis
import functools
import importlib
import pkgutil
import re
import sys
import textwrap
import types

import pytest

import solutions

# Module-level names that several exercises use: they sit at the top of the module, before the first block, and
# are the only pieces allowed outside a block. Each entry says which exercises share it (checked below).
SHARED = {
    "ch02_initialization": {
        "_sample_statistics": "the call adapter of 2.1 and 2.2 (both summarise a random weight's sample)",
        "SAMPLE_STATISTICS": "the output names of 2.1 and 2.2",
        "STAT_TOLERANCE": "the tolerance of 2.1 and 2.2 (sampling noise)",
    },
    "ch03_normalization": {"_norm_cases": "the cases of 3.1 (LayerNorm, with a bias) and 3.2 (RMSNorm)"},
    "ch04_loss_functions": {"_ce_cases": "the cases of 4.1 and, with a label-smoothing eps, 4.2"},
    "ch06_token_prediction": {
        "NEG": "the -inf that the filters of 6.1, 6.2 and 6.3 write",
        "_log": "logits from exact probabilities, for the cases of 6.2 and 6.3",
        "_settle_near_threshold": "the call adapter of 6.2 (top-p) and 6.3 (min-p)",
    },
}

EX_NAME = re.compile(r"EX_(\d+)_(\d+)$")
CHAPTERS = sorted(info.name for info in pkgutil.iter_modules(solutions.__path__) if re.match(r"ch\d\d_", info.name))


@dataclasses.dataclass
class Piece:
    name: str  # a module-level name, or the qualname of a lambda
    line: int  # where it starts (a decorated function: its first decorator)


def _top_level_lines(tree: ast.Module) -> dict[str, int]:
    """Module-level names bound by ``def`` or assignment (not by import), with the line their statement starts."""
    lines = {}
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            lines[node.name] = min([node.lineno] + [d.lineno for d in node.decorator_list])
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for name in ast.walk(target):
                    if isinstance(name, ast.Name):
                        lines[name.id] = node.lineno
    return lines


def _globals_loaded(code: types.CodeType):
    """The global names a code object loads, nested code objects (lambdas, inner functions) included."""
    for instruction in dis.get_instructions(code):
        if instruction.opname in ("LOAD_GLOBAL", "LOAD_NAME"):
            yield instruction.argval
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _globals_loaded(const)


def exercise_pieces(module: types.ModuleType, tree: ast.Module, exercise) -> list[Piece]:
    """The module-level names and lambdas of ``module`` that ``exercise`` consists of (see the module docstring).
    Shared names (SHARED) are listed but not followed."""
    lines = _top_level_lines(tree)
    ignored = {"CHAPTER", "__all__", "EXERCISES"}
    own = {name: value for name, value in vars(module).items()
           if name in lines and name not in ignored and not EX_NAME.match(name)
           and not isinstance(value, types.ModuleType)}  # `triton, tl = import_triton()`
    by_identity = {id(value): name for name, value in own.items()}
    shared = SHARED.get(module.__name__.split(".")[-1], {})
    pieces: dict[str, Piece] = {}

    def visit(obj):
        name = by_identity.get(id(obj))
        if name is not None:
            if name in pieces:
                return
            pieces[name] = Piece(name, lines[name])
            if name in shared:
                return
        if isinstance(obj, functools.partial):
            for part in (obj.func, *obj.args, *obj.keywords.values()):
                visit(part)
            return
        fn = getattr(obj, "fn", obj)  # a Triton kernel wraps its Python function
        if not isinstance(fn, types.FunctionType) or fn.__module__ != module.__name__:
            return
        outer = fn.__qualname__.split(".<locals>.")[0]
        if outer != fn.__qualname__:  # a closure: the function that made it is the piece, its code is that one's
            if outer in own:
                visit(own[outer])
        else:
            if name is None:  # a lambda in the Exercise(...) itself
                key = f"{fn.__qualname__} at line {fn.__code__.co_firstlineno}"
                if key in pieces:
                    return
                pieces[key] = Piece(key, fn.__code__.co_firstlineno)
            for global_name in _globals_loaded(fn.__code__):
                if global_name in own:
                    visit(own[global_name])
        for cell in fn.__closure__ or ():
            visit(cell.cell_contents)

    for root in (exercise.reference, exercise.cases, exercise.call, exercise.tolerances, exercise.output_names,
                 *(mistake.fn for mistake in exercise.mistakes)):
        visit(root)
    return list(pieces.values())


def layout_problems(module: types.ModuleType) -> list[str]:
    """What is out of place in a chapter module; empty when every exercise is one block, in id order."""
    source = _source(module)
    tree = ast.parse(source)
    problems = []
    assigned = [node for node in tree.body if isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)]
    ex_nodes = {node.targets[0].id: node for node in assigned if EX_NAME.match(node.targets[0].id)}
    order = list(ex_nodes)
    by_id = sorted(order, key=lambda n: tuple(int(x) for x in EX_NAME.match(n).groups()))
    if order != by_id:
        problems.append(f"the EX_ assignments are not in id order: {order}")
    last = tree.body[-1] if tree.body else None
    listed = None
    if (isinstance(last, ast.Assign) and [getattr(t, "id", None) for t in last.targets] == ["EXERCISES"]
            and isinstance(last.value, ast.List) and all(isinstance(e, ast.Name) for e in last.value.elts)):
        listed = [e.id for e in last.value.elts]
        if last.lineno != last.end_lineno:
            problems.append("EXERCISES = [...] is not one line")
    else:
        problems.append("the module does not end with EXERCISES = [EX_N_1, EX_N_2, ...], a list of names")
    if listed is not None and listed != by_id:
        problems.append(f"EXERCISES lists {listed}, not the EX_ assignments in id order {by_id}")

    previous_end = 0
    for exercise in sorted(module.EXERCISES, key=lambda ex: tuple(int(x) for x in ex.id.split("."))):
        name = "EX_" + exercise.id.replace(".", "_")
        node = ex_nodes.get(name)
        if node is None or getattr(module, name, None) is not exercise:
            problems.append(f"{exercise.id}: no `{name} = Exercise(...)` holding it")
            continue
        for piece in exercise_pieces(module, tree, exercise):
            if piece.name in SHARED.get(module.__name__.split(".")[-1], {}):
                continue
            if not previous_end < piece.line <= node.end_lineno:
                problems.append(f"{exercise.id}: {piece.name} (line {piece.line}) lies outside its block, "
                                f"lines {previous_end + 1}-{node.end_lineno}")
        previous_end = node.end_lineno
    return problems


def _source(module: types.ModuleType) -> str:
    with open(module.__file__, encoding="utf-8") as f:
        return f.read()


def _chapter(name: str) -> types.ModuleType:
    return importlib.import_module(f"solutions.{name}")


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_each_exercise_is_one_block_in_id_order(chapter):
    problems = layout_problems(_chapter(chapter))
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_shared_helpers_are_shared_and_above_the_first_block(chapter):
    """An exemption is only for a name that two or more exercises reach, and it lies above every block."""
    module = _chapter(chapter)
    tree = ast.parse(_source(module))
    reached = {ex.id: {p.name: p.line for p in exercise_pieces(module, tree, ex)} for ex in module.EXERCISES}
    first_piece = min(line for pieces in reached.values() for name, line in pieces.items()
                      if name not in SHARED.get(chapter, {}))
    for name in SHARED.get(chapter, {}):
        users = [ex_id for ex_id, pieces in reached.items() if name in pieces]
        assert len(users) >= 2, f"{name} is exempt as shared, but only {users} use it: move it into that block"
        line = _top_level_lines(tree)[name]
        assert line < first_piece, f"{name} (line {line}) is shared: put it above the first block (line {first_piece})"


def test_the_check_finds_pieces_out_of_place(tmp_path, monkeypatch):
    """A chapter with 9.2's block before 9.1's, listed in that order, and a mistake of 9.1 below its Exercise."""
    (tmp_path / "layout_sample.py").write_text(textwrap.dedent('''
        from course_utils.harness.exercises import Case, Exercise, Mistake


        def _helper(x):
            return x


        def second(x):
            return x


        EX_9_2 = Exercise(id="9.2", title="second", reference=second, cases=lambda: [Case("one", (1,))])


        def first(x):
            return _helper(x)


        EX_9_1 = Exercise(id="9.1", title="first", reference=first, cases=lambda: [Case("one", (1,))],
                          mistakes=(Mistake("late", lambda x: _late(x), "hint"),))


        def _late(x):
            return -x


        EXERCISES = [EX_9_2, EX_9_1]
        '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("layout_sample")
    try:
        problems = layout_problems(module)
    finally:
        sys.modules.pop("layout_sample", None)
    assert problems[0].startswith("the EX_ assignments are not in id order")
    assert problems[1].startswith("EXERCISES lists ['EX_9_2', 'EX_9_1'], not the EX_ assignments in id order")
    assert any(p.startswith("9.1: _late (line 24) lies outside its block") for p in problems), problems
    assert any(p.startswith("9.2: second (line 9) lies outside its block") for p in problems), problems
