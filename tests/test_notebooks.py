"""Notebooks: structure, solved mode, and the widget functions behind their sliders.

Learner mode (stored text outputs reproduce) is nbval's job: ``pytest`` collects notebooks/ with
``--nbval`` (see pyproject.toml). Solved mode is here: every exercise cell replaced by its reference
answer, run with ``COURSE_STRICT=1`` so any check that does not pass fails the test.
"""
import json
import re

import matplotlib
import nbformat
import pytest
from conftest import NOTEBOOKS

from course_utils.chapters import chapter_of
from course_utils.harness.notebook_runner import execute, exercise_cells
from course_utils.harness.registry import exercise_ids, stub_source

pytestmark = pytest.mark.notebook
NOTEBOOK_IDS = [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_structure(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "python3"
    first = "".join(nb["cells"][0]["source"])
    assert re.match(r"# \d+\. .+ \(.+\)", first), "title: '# N. English title (Korean title)'"
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert "setup()" in "".join(code[0]["source"])
    for cell in code:
        src = "".join(cell["source"])
        assert cell["execution_count"] is not None, f"cell without stored run: {src[:60]!r}"
        assert not any(o["output_type"] == "error" for o in cell["outputs"]), src[:60]
        assert not re.search(r"matplotlib\.use\(", src), "matplotlib.use blanks plots under sliders"
        if "slider_plot(" in src:
            assert "nbval-ignore-output" in cell["metadata"].get("tags", []), "widget cells ignore output"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_exercise_cells_are_the_stubs_and_are_checked(path):
    nb = nbformat.read(path, as_version=4)
    sources = [c.source for c in nb.cells if c.cell_type == "code"]
    expected = chapter_of(path).notebook_order(exercise_ids())
    found = [c.metadata["exercise"] for c in exercise_cells(nb)]
    assert found == expected, "every exercise of the chapter appears once, in order (chapters.py: placed_before)"
    for cell in exercise_cells(nb):
        assert cell.source.strip() == stub_source(cell.metadata["exercise"]).strip()
        assert any(f'check("{cell.metadata["exercise"]}",' in s for s in sources)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_solved_mode_runs_clean(path):
    nb, seconds = execute(path, solved_mode=True)
    outputs = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    # strict mode already made any failing check raise; here: every exercise passed and was used
    for cell in exercise_cells(nb):
        assert f"✅ {cell.metadata['exercise']} " in outputs, outputs
        assert f"→ {cell.metadata['exercise']}: using your" in outputs, outputs
    assert seconds < 120, f"{path.name} took {seconds:.0f} s in solved mode"


# ---------------------------------------------------------------- the functions behind the sliders

@pytest.fixture
def agg_backend():
    previous = matplotlib.get_backend()
    matplotlib.use("agg")  # tests only: no display here
    yield
    import matplotlib.pyplot as plt

    plt.close("all")
    matplotlib.use(previous)


def test_figure_functions_draw(agg_backend):
    from course_utils import gradflow, optim, rope, stability

    for fig in [gradflow.figure_jacobian_products(8, 0.5), gradflow.figure_layer_stats(4, "gpt", 0.02),
                gradflow.figure_spike(10.0, 1.0), stability.figure_softmax_under_shift(50.0, "float16"),
                gradflow.figure_swiglu_scale(gradflow.swiglu_scale_sweep([1, 10])),
                optim.figure_decay_comparison(1e-2, 0.1, steps=50), rope.figure_scaling(4.0)]:
        assert fig.axes and all(ax.has_data() for ax in fig.axes)


def _answer_lines(exercise_id: str) -> list[str]:
    """The reference's body (after its docstring), one whitespace-free string per substantial line."""
    import ast

    from course_utils.harness.exercises import solution_source

    source = solution_source(exercise_id)
    func = next(n for n in ast.parse(source).body if isinstance(n, (ast.FunctionDef, ast.ClassDef)))
    first = func.body[1] if isinstance(func.body[0], ast.Expr) and len(func.body) > 1 else func.body[0]
    return [re.sub(r"\s+", "", line) for line in source.splitlines()[first.lineno - 1:] if len(line.strip()) > 12]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_no_answer_is_shown_before_its_exercise(path):
    """No stored output before an exercise cell (a kernel shown with show_source, a print) holds half or
    more of the reference answer's lines."""
    nb = nbformat.read(path, as_version=4)
    shown: set[str] = set()
    for index, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        if "exercise" in cell.metadata.get("tags", []):
            answer = _answer_lines(cell.metadata["exercise"])
            seen = [line for line in answer if line in shown]
            assert len(seen) < len(answer) / 2, (f"cell {index} asks for {cell.metadata['exercise']}, but earlier "
                                                 f"outputs show {len(seen)} of its {len(answer)} lines")
        for output in cell.get("outputs", []):
            text = "".join(output.get("data", {}).get("text/plain", "")) + "".join(output.get("text", ""))
            shown.update(re.sub(r"\s+", "", line) for line in text.splitlines())


def test_series_styles_are_colour_blind_safe_and_differ_without_colour():
    """One palette (Okabe-Ito) for every series, and series drawn together differ in line style, not only in colour.
    The groups are the sets of keys that share a figure."""
    from course_utils.plotting import OKABE_ITO, SERIES, series

    assert all(colour in OKABE_ITO for colour, _, _ in SERIES.values())
    groups = [("no residual, no norm", "no residual", "post", "pre", "reference"),
              ("naive", "safe", "online", "reference"),
              ("pre", "online", "post"), ("none", "pi", "ntk", "yarn", "llama3")]
    for group in groups:
        linestyles = [str(SERIES[key][1]) for key in group]
        assert len(set(linestyles)) == len(group), group
    assert series("pre")["color"] == OKABE_ITO["blue"] and series("post")["linestyle"] == "--"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_every_slider_has_a_static_figure_beside_it(path):
    """A viewer that does not run widgets (GitHub) still sees each slider's evidence: one of the two code
    cells before a slider cell, or the one after it, stores an image or an HTML view."""
    code = [c for c in nbformat.read(path, as_version=4).cells if c.cell_type == "code"]
    for k, cell in enumerate(code):
        if "slider_plot(" in cell.source or "slider_html(" in cell.source:
            near = code[max(0, k - 2):k] + code[k + 1:k + 2]
            assert any(mime in output.get("data", {}) for c in near for output in c.get("outputs", [])
                       for mime in ("image/png", "text/html")), f"no static figure beside: {cell.source[:80]!r}"


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


def _shows_without_widgets(cell) -> bool:
    """A code cell with an output that a static viewer renders: printed text, or an image, HTML or value that
    is not a widget's placeholder (``interactive(...)`` beside its widget view)."""
    return any(o.output_type == "stream" or (o.output_type in ("display_data", "execute_result")
                                             and WIDGET_VIEW not in o.get("data", {}))
               for o in cell.get("outputs", []))


def _unbacked_fact_checks(cells) -> list[str]:
    """Fact-check callouts whose neighbouring code (the run of code cells just before the callout and the run
    just after it) stores no static output: their evidence would live in widget state alone."""
    unbacked = []
    for i, cell in enumerate(cells):
        if cell.cell_type != "markdown" or "Fact check" not in cell.source or "🔎" not in cell.source:
            continue
        near = []
        for step in (-1, 1):
            j = i + step
            while 0 <= j < len(cells) and cells[j].cell_type == "code":
                near.append(cells[j])
                j += step
        if not any(_shows_without_widgets(c) for c in near):
            unbacked.append(cell.source[:80])
    return unbacked


def test_a_fact_check_beside_only_a_widget_is_unbacked():
    widget_only = nbformat.v4.new_code_cell("slider_plot(...)", outputs=[nbformat.v4.new_output(
        "display_data", data={"text/plain": "interactive(...)", WIDGET_VIEW: {"model_id": "x"}})])
    printed = nbformat.v4.new_code_cell("print(1)", outputs=[nbformat.v4.new_output("stream", text="1\n")])
    callout = nbformat.v4.new_markdown_cell("> **🔎 Fact check: a claim.** Confirmed.")
    heading = nbformat.v4.new_markdown_cell("## Next")
    assert _unbacked_fact_checks([widget_only, callout, heading, printed]) == [callout.source]
    assert _unbacked_fact_checks([widget_only, printed, callout, heading]) == []


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NOTEBOOK_IDS)
def test_every_fact_check_is_backed_by_a_static_output(path):
    """No fact-check rests on widget state alone; a reader on GitHub sees its evidence."""
    cells = nbformat.read(path, as_version=4).cells
    assert not _unbacked_fact_checks(cells)
