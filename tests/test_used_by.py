"""The line that ends the docstring of every concept and shared module, "Used by chapters 1, 2 and 8." (d2l's
back-references): the chapters whose notebooks use a function, class or value defined in the module. A name is
counted for the module that defines it, however the notebook reaches it: ``further.TinyTransformer`` counts for
``models``, where it is defined, although ``further`` imports it too."""
import ast
import importlib
import inspect

import nbformat
import pytest
from conftest import REPO_ROOT

from course_utils.chapters import CHAPTERS

# not chapter code: what every notebook's set-up cell imports, the chapter table, the package's own files
INFRASTRUCTURE = {"__init__", "__main__", "runtime", "widgets", "plotting", "report", "triton_env", "chapters",
                  "exercises"}
MODULES = sorted(p.stem for p in (REPO_ROOT / "course_utils").glob("*.py") if p.stem not in INFRASTRUCTURE)
# Modules whose line their owners have still to add. Strict: once a line is there and right, its test fails
# until the module leaves this set.
LINE_STILL_MISSING: set[str] = set()


def _defined_in(obj, read_from: str) -> str:
    """The module a name a notebook uses belongs to: where a function or class is defined (a re-export counts for
    the module it comes from); for any other value (a dict, a config, a compiled kernel), the module it is read
    from."""
    if inspect.isfunction(obj) or inspect.isclass(obj):
        return obj.__module__
    return read_from


def _ours(name: str) -> bool:
    """Whether this file follows the module (or name) ``name``: course_utils and its modules, not ``kernels/`` or
    ``harness/`` (no concept module lives there, and a kernel module needs Triton)."""
    parts = name.split(".")
    return parts[0] == "course_utils" and (len(parts) == 1 or parts[1] not in ("kernels", "harness"))


def _attribute(module, name: str):
    """``module.name``, importing it when it is a submodule not imported yet; None when there is no such name (a
    notebook ahead of or behind its module: nbval reports that, and the name counts for ``module`` here)."""
    try:
        return getattr(module, name, None) or importlib.import_module(f"{module.__name__}.{name}")
    except ModuleNotFoundError:
        return None


def _uses(sources: list[str]) -> set[str]:
    """The modules (dotted names) whose functions, classes or values these cells use: names imported from a
    course_utils module, and attributes read from one (``norms.rms_norm``, ``course_utils.data.MarkovChain``)."""
    trees = [ast.parse("\n".join("" if line.lstrip().startswith(("%", "!")) else line
                                 for line in source.splitlines())) for source in sources]
    modules, used = {}, set()  # modules: the cells' names bound to a module
    for node in (n for tree in trees for n in ast.walk(tree)):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and _ours(node.module):
            source = importlib.import_module(node.module)
            for alias in (a for a in node.names if _ours(f"{node.module}.{a.name}")):
                obj = _attribute(source, alias.name)
                if inspect.ismodule(obj):
                    modules[alias.asname or alias.name] = obj
                else:
                    used.add(_defined_in(obj, node.module))
        elif isinstance(node, ast.Import):
            for alias in (a for a in node.names if _ours(a.name)):
                module = importlib.import_module(alias.name)
                if alias.asname:  # `import course_utils.data as d` binds the module
                    modules[alias.asname] = module
                else:  # `import course_utils.data` binds the package
                    modules["course_utils"] = importlib.import_module("course_utils")
    for node in (n for tree in trees for n in ast.walk(tree)):
        chain = []
        while isinstance(node, ast.Attribute):
            chain.insert(0, node.attr)
            node = node.value
        if not chain or not isinstance(node, ast.Name) or node.id not in modules:
            continue
        obj = modules[node.id]
        for attr in chain:  # down the course's modules to the first thing that is not one
            if not _ours(f"{obj.__name__}.{attr}"):
                break
            read_from, obj = obj.__name__, _attribute(obj, attr)
            if not inspect.ismodule(obj):
                used.add(_defined_in(obj, read_from))
                break
    return used


def used_by_line(chapters: list[int]) -> str:
    """``Used by chapters 1, 2 and 8.``, ``Used by chapter 3.``, or ``Used by no chapter.``"""
    if not chapters:
        return "Used by no chapter."
    if len(chapters) == 1:
        return f"Used by chapter {chapters[0]}."
    return f"Used by chapters {', '.join(map(str, chapters[:-1]))} and {chapters[-1]}."


@pytest.fixture(scope="module")
def users() -> dict[str, list[int]]:
    """Module name (``gradflow``) -> the chapters whose notebooks use it, in order."""
    found = {}
    for ch in CHAPTERS:
        cells = nbformat.read(REPO_ROOT / ch.notebook, as_version=4).cells
        for module in sorted(_uses([c.source for c in cells if c.cell_type == "code"])):
            if module.startswith("course_utils."):
                found.setdefault(module.removeprefix("course_utils."), []).append(ch.number)
    return found


@pytest.mark.parametrize("module", [
    pytest.param(m, marks=pytest.mark.xfail(strict=True, reason="its owner has still to add the line"))
    if m in LINE_STILL_MISSING else m for m in MODULES])
def test_the_docstring_ends_with_the_chapters_that_use_the_module(module, users):
    doc = importlib.import_module(f"course_utils.{module}").__doc__ or ""
    want = used_by_line(users.get(module, []))
    assert doc.rstrip().splitlines()[-1:] == [want], f"course_utils/{module}.py: its docstring should end with {want!r}"


def test_a_name_counts_for_the_module_that_defines_it():
    assert _uses(["from course_utils import further\nx = further.TinyTransformer"]) == {"course_utils.models"}
    assert _uses(["from course_utils.gradflow import ARCHITECTURES, depth_sweep"]) == {"course_utils.gradflow"}
    assert _uses(["import course_utils.normalization as norms", "norms.figure_pre_ln_scale().show()"]) == {
        "course_utils.normalization"}
    assert _uses(["import course_utils.data\n%time course_utils.data.MarkovChain(4)"]) == set()  # a magic is no code
    assert _uses(["import course_utils.data\ncourse_utils.data.MarkovChain(4)"]) == {"course_utils.data"}
    assert _uses(["from course_utils import optim", "optim.AdamW.step"]) == {"course_utils.optim"}
    assert _uses(["from course_utils.kernels import softmax\nimport course_utils.harness.guards as g\ng.x"]) == set()


def test_the_line_reads_as_english():
    assert used_by_line([]) == "Used by no chapter."
    assert used_by_line([3]) == "Used by chapter 3."
    assert used_by_line([1, 2, 8]) == "Used by chapters 1, 2 and 8."
