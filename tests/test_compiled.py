"""Compiled tier: every Triton kernel of the course, compiled by Triton's compiler for NVIDIA targets (sm_80,
sm_89, sm_90) on this CPU, with the launches its launchers really make:

- the benchmark's kernels at its GPU sizes and dtypes (``course_utils.harness.bench``: row kernels at GPU_SHAPES in
  float32, float16 and bfloat16, forward and backward; AdamW at the same element counts; attention at
  ATTENTION_GPU in float16 with 64 x 64 blocks), walked through their launchers without running the kernels;
- every Triton exercise's reference and each of its mistakes on the exercise's own cases, run in the
  interpreter, as ``check`` runs them;
- the launches the notebooks made when their outputs were last stored (``python -m course_utils execute`` records
  them in course_utils/data_files/kernel_launches/, one file per notebook).

Fails on a compile error, a register spill or shared memory beyond a target's limit, and writes the table to
test-artifacts/compiled_kernels.md. Needs Triton (not a GPU).
"""
from __future__ import annotations

import importlib
import pkgutil

import pytest

pytest.importorskip("triton")

import torch  # noqa: E402
from conftest import REPO_ROOT, requires_triton  # noqa: E402

import course_utils  # noqa: E402, F401  (interpreter switch before triton)

pytestmark = pytest.mark.kernel

ARTIFACT = REPO_ROOT / "test-artifacts" / "compiled_kernels.md"


@pytest.fixture(scope="module")
def reports():
    from course_utils.harness.bench import benchmark_launches
    from course_utils.harness.compiled import compile_launches, notebook_launches, table
    from course_utils.harness.exercises import exercise_launches

    launches = benchmark_launches()
    for more in (exercise_launches(), notebook_launches()):
        launches += [launch for launch in more if launch not in launches]
    found = compile_launches(launches)
    ARTIFACT.parent.mkdir(exist_ok=True)
    ARTIFACT.write_text("# The course's Triton kernels, compiled for NVIDIA targets\n\n"
                        f"{len(launches)} launches x {len(found) // max(len(launches), 1)} targets "
                        "(tests/test_compiled.py)\n\n" + table(found) + "\n")
    return found


def _course_kernels() -> dict[str, object]:
    """Every ``@triton.jit`` function defined in course_utils.kernels and in solutions, by module:qualname."""
    from course_utils.kernels.common import is_triton_kernel

    found = {}
    for package in ("course_utils.kernels", "solutions"):
        pkg = importlib.import_module(package)
        for info in pkgutil.iter_modules(pkg.__path__):
            module = importlib.import_module(f"{package}.{info.name}")
            for name, obj in vars(module).items():
                if is_triton_kernel(obj) and getattr(obj, "fn", obj).__module__ == module.__name__:
                    found[f"{module.__name__}:{name}"] = obj
    return found


def test_every_kernel_of_the_course_is_compiled(reports):
    """Each kernel is compiled as launched, or is a device function that a compiled kernel calls."""
    import inspect

    compiled = {r.launch.kernel for r in reports}
    compiled_sources = "\n".join(inspect.getsource(_course_kernels()[k].fn) for k in compiled
                                 if k in _course_kernels())
    missing = [key for key in _course_kernels()
               if key not in compiled and f"{key.split(':')[1]}(" not in compiled_sources]
    assert not missing, f"kernels never compiled: {missing}"
    assert {r.target.name for r in reports} == {"sm_80", "sm_89", "sm_90"}
    assert {"fp32", "fp16", "bf16"} <= {r.launch.dtype for r in reports}


_DTYPES = ("fp32", "fp16", "bf16")
# What this tier found and is not fixed yet: the one-block RMSNorm and LayerNorm kernels hold a whole row
# in one program, and at the benchmark's 16384- and 32768-column rows 16 warps keep 32-64 values of each tensor in
# every thread: ptxas spills (16 to 2456 bytes a thread). The fix is a loop over the row in blocks, as the softmax
# kernel does. FlashAttention's forward with head_dim 128 in 64 x 64 tiles spills 16 bytes on sm_89 alone, in float16
# and bfloat16.
# Each entry is (kernel, constexprs, dtype); only spills are tolerated here, on any target.
KNOWN_SPILLS = {
    ("_rmsnorm_fwd_kernel", "BLOCK=32768", "fp32"),
    *(("_rmsnorm_bwd_kernel", f"BLOCK={block}", dtype) for block in (16384, 32768) for dtype in _DTYPES),
    *(("_layernorm_fwd_kernel", "BLOCK=32768", dtype) for dtype in _DTYPES),
    *(("_layernorm_bwd_kernel", f"BLOCK={block}", dtype) for block in (16384, 32768) for dtype in _DTYPES),
    *(("_flash_fwd_kernel", "CAUSAL=True, COUNT=False, BLOCK_M=64, BLOCK_N=64, BLOCK_D=128, PRECISION=tf32", dtype)
      for dtype in ("fp16", "bf16")),
}


def test_every_launch_compiles_without_spills_within_shared_memory(reports):
    assert all(r.error or (r.registers and r.shared_bytes is not None) for r in reports)
    problems, known = [], set()
    for r in reports:
        row = r.row()
        key = (row["kernel"], row["constexprs"], row["dtype"])
        if key in KNOWN_SPILLS and all(p.startswith("spills registers") for p in r.problems()):
            known.add(key)
        elif r.problems():
            problems.append(f"{r.launch.describe()} on {r.target.name}: {'; '.join(r.problems())}")
    assert not problems, "\n".join(problems)
    assert known == KNOWN_SPILLS, f"no longer spill (remove them from KNOWN_SPILLS): {KNOWN_SPILLS - known}"


def test_row_kernels_load_in_128_bit_vectors_at_benchmark_sizes(reports):
    """Rows of 4096 float32 columns: strides and pointers divisible by 16, so every global load of the
    softmax forward is ld.global.v4 (4 x 32 bits), none scalar."""
    forward = [r for r in reports if r.launch.name == "_softmax_fwd_kernel" and r.launch.dtype == "fp32"
               and ("BLOCK", 4096) in r.launch.constexprs]
    assert forward
    for r in forward:
        assert set(r.global_loads) == {"ld.global.v4.b32"}, r.global_loads


# --------------------------------------------------------------- the tier fails when it should

def test_the_tier_reports_what_would_not_run_on_a_gpu():
    """Three kernels that run in the interpreter: one the compiler rejects (Python `if` on a tensor's
    values), one that spills (a 16384-element row block for one warp), FlashAttention's forward in float32 with
    128 x 128 blocks (more shared memory than any target allows); and one that is fine."""
    from course_utils.harness.compiled import TARGETS, Launch, compile_launches

    def launch(kernel, signature, constexprs, aligned=(), warps=4, source=None):
        return Launch(kernel, tuple(signature), tuple(constexprs), tuple(aligned), warps, 3, source)

    data_dependent_if = launch("__main__:branchy", [("x_ptr", "*fp32"), ("y_ptr", "*fp32")], [("BLOCK", 64)], source=(
        "@triton.jit\ndef branchy(x_ptr, y_ptr, BLOCK: tl.constexpr):\n"
        "    x = tl.load(x_ptr + tl.arange(0, BLOCK))\n"
        "    if x > 0:\n"
        "        x = -x\n"
        "    tl.store(y_ptr + tl.arange(0, BLOCK), x)\n"))
    spilling = launch("course_utils.kernels.softmax:_softmax_fwd_kernel",
                      [("x_ptr", "*fp32"), ("y_ptr", "*fp32"), ("x_row_stride", "i32"), ("y_row_stride", "i32"),
                       ("n_cols", "i32")], [("BLOCK", 16384)], aligned=("x_ptr", "y_ptr"), warps=1)
    flash = [("q_ptr", "*fp32"), ("k_ptr", "*fp32"), ("v_ptr", "*fp32"), ("o_ptr", "*fp32"), ("lse_ptr", "*fp32"),
             ("count_ptr", "*i64"), ("n_ctx", "i32"), ("head_dim", "i32"), ("scale", "fp32")]
    big_tiles = launch("course_utils.kernels.flash_attention:_flash_fwd_kernel", flash,
                       [("CAUSAL", False), ("COUNT", False), ("BLOCK_M", 128), ("BLOCK_N", 128), ("BLOCK_D", 128),
                        ("PRECISION", "ieee")], aligned=("q_ptr", "k_ptr", "v_ptr", "o_ptr"), warps=8)
    fine = launch("course_utils.kernels.softmax:_softmax_fwd_kernel", spilling.signature, [("BLOCK", 1024)])
    found = compile_launches([data_dependent_if, big_tiles, fine])
    found += compile_launches([spilling], targets=TARGETS[-1:])  # ptxas takes 6 s on it: one target
    problems = {name: ["; ".join(r.problems()) for r in found if r.launch == case]
                for name, case in [("if", data_dependent_if), ("spill", spilling), ("tiles", big_tiles),
                                   ("fine", fine)]}
    # the compiler's message, and the kernel line it points at
    assert len(problems["if"]) == 3 and all("ambiguous, at `if x > 0:`" in p for p in problems["if"]), problems["if"]
    assert len(problems["spill"]) == 1 and "spills registers" in problems["spill"][0], problems["spill"]
    assert len(problems["tiles"]) == 3 and all("393216 bytes of shared memory" in p for p in problems["tiles"])
    assert problems["fine"] == ["", "", ""]


# --------------------------------------------------------------- the learner's kernel, compiled in check

from course_utils.runtime import import_triton  # noqa: E402

triton, tl = import_triton()


def row_softmax(x):  # a helper without @triton.jit: the interpreter runs it as Python, the compiler refuses it
    e = tl.exp(x - tl.max(x, axis=0))
    return e / tl.sum(e, axis=0)


@triton.jit
def _masked_row(x_ptr, x_row_stride, n_cols, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    return tl.load(x_ptr + tl.program_id(0) * x_row_stride + offsets, mask=offsets < n_cols, other=-float("inf"))


@triton.jit
def softmax_with_plain_helper(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    y = row_softmax(_masked_row(x_ptr, x_row_stride, n_cols, BLOCK))
    tl.store(y_ptr + tl.program_id(0) * y_row_stride + offsets, y, mask=offsets < n_cols)


@triton.jit
def softmax_with_break(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
    offsets = tl.arange(0, BLOCK)
    x = _masked_row(x_ptr, x_row_stride, n_cols, BLOCK)
    for _ in range(4):  # Python's break: the interpreter runs it, the compiler has no such statement
        break
    e = tl.exp(x - tl.max(x, axis=0))
    tl.store(y_ptr + tl.program_id(0) * y_row_stride + offsets, e / tl.sum(e, axis=0), mask=offsets < n_cols)


@pytest.mark.parametrize("kernel, said", [(softmax_with_plain_helper, "Unsupported function referenced"),
                                          (softmax_with_break, "unsupported AST node type: Break, at `break`")])
def test_check_says_when_a_passing_kernel_would_not_compile(kernel, said, monkeypatch):
    from course_utils.harness.exercises import check

    monkeypatch.setenv("COURSE_STRICT", "0")
    learner = check("1.4", kernel, display=False, record=False)
    assert learner.passed and "⚠ It works in the interpreter" in learner.message and said in learner.message, \
        learner.message
    monkeypatch.setenv("COURSE_STRICT", "1")
    strict = check("1.4", kernel, display=False, record=False, strict=False)
    assert strict.status == "failed" and said in strict.message


def test_check_shows_what_a_correct_kernel_compiles_to():
    from course_utils.harness.exercises import check, checking_references, reference

    with checking_references():
        result = check("1.4", reference("1.4"), display=False, record=False, strict=False)
    assert result.passed and "Compiled for sm_90" in result.message and "no spills" in result.message, result.message


def test_compile_command_prints_a_notebooks_kernels(capsys):
    from course_utils.harness.cli import main

    assert main(["compile", "02_initialization.ipynb", "--target", "sm_90"]) == 0
    out = capsys.readouterr().out
    assert "| _normal_init_kernel | BLOCK=1024 | fp32 | 4 | sm_90 |" in out
    assert main(["compile", "no_such.ipynb"]) == 2


def test_gpu_check_refuses_clearly_without_a_gpu(capsys, tmp_path):
    from course_utils.harness.cli import main

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: `make gpu-check` runs for real")
    assert main(["gpu-check", "--report", str(tmp_path / "report.md")]) == 2
    assert "needs an NVIDIA GPU" in capsys.readouterr().err and not (tmp_path / "report.md").exists()


@requires_triton
def test_a_passing_kernel_in_the_learners_own_module_is_compiled_not_misreported(tmp_path, monkeypatch):
    """A learner who keeps a kernel in a .py file next to the notebook (importable there only because the notebook's
    folder is on the path) gets the compiled verdict, not a false 'does not compile'."""
    import importlib
    import sys
    import textwrap

    from course_utils import check

    (tmp_path / "my_kernels.py").write_text(textwrap.dedent('''
        import triton
        import triton.language as tl


        @triton.jit
        def my_softmax(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
            row = tl.program_id(0)
            cols = tl.arange(0, BLOCK)
            x = tl.load(x_ptr + row * x_row_stride + cols, mask=cols < n_cols, other=-float("inf"))
            e = tl.exp(x - tl.max(x, axis=0))
            tl.store(y_ptr + row * y_row_stride + cols, e / tl.sum(e, axis=0), mask=cols < n_cols)
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delenv("COURSE_COMPILE_CHECK", raising=False)
    module = importlib.import_module("my_kernels")
    try:
        result = check("1.4", module.my_softmax, strict=True)
    finally:
        sys.modules.pop("my_kernels", None)
    assert result.passed, result.message
    assert "Compiled for sm_90" in result.message, result.message
