import os
import subprocess
import sys

import pytest
import torch
from conftest import requires_triton

from course_utils import runtime
from course_utils.runtime import import_triton, triton_status


@requires_triton
def test_interpreter_is_on_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: kernels compile")
    assert os.environ.get("TRITON_INTERPRET") == "1"
    assert triton_status().mode == "interpreter"


@requires_triton
def test_interpreter_is_switched_on_before_triton_is_imported():
    code = ("import sys, os; import course_utils; "
            "assert 'triton' not in sys.modules or os.environ.get('TRITON_INTERPRET') == '1'; "
            "import triton; print(os.environ.get('TRITON_INTERPRET'))")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ("None" if torch.cuda.is_available() else "1")


def test_a_users_choice_of_triton_interpret_is_respected():
    code = "import os, course_utils; print(os.environ['TRITON_INTERPRET'])"
    env = {**os.environ, "TRITON_INTERPRET": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_without_triton_the_shim_keeps_cells_running(monkeypatch):
    monkeypatch.setattr(runtime, "triton_status",
                        lambda: runtime.TritonStatus(False, "unavailable", None, "no Triton on this platform"))
    triton, tl = import_triton()

    @triton.jit
    def kernel(x_ptr, BLOCK: tl.constexpr):
        pass

    assert kernel.triton_unavailable == "no Triton on this platform"
    assert triton.cdiv(10, 4) == 3 and triton.next_power_of_2(33) == 64


def test_check_skips_a_triton_exercise_where_triton_cannot_run(monkeypatch, progress_file):
    from course_utils import check

    monkeypatch.setattr(runtime, "triton_status",
                        lambda: runtime.TritonStatus(False, "unavailable", None, "no Triton on this platform"))
    result = check("1.4", lambda *a: None, display=False)
    assert result.status == "skipped" and "no Triton on this platform" in result.message


def test_seed_everything_repeats_random_draws():
    runtime.seed_everything(3)
    a = torch.randn(5)
    runtime.seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_setup_prints_the_environment(capsys):
    runtime.setup(seed=1)
    out = capsys.readouterr().out
    assert "torch" in out and "triton" in out and "seed    1" in out


def test_doctor_is_all_ok_here():
    out = subprocess.run([sys.executable, "-m", "course_utils", "doctor"], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "FAIL" not in out.stdout and "all OK" in out.stdout


def test_doctor_exits_non_zero_on_a_fail(monkeypatch, capsys):
    from course_utils.harness import cli

    monkeypatch.setattr(cli, "_doctor_checks", lambda: iter([(True, "a", "fine"), (False, "b", "broken")]))
    assert cli.doctor() == 1
    assert "FAIL  b" in capsys.readouterr().out


def test_doctor_notes_versions_that_differ_from_the_constraints(tmp_path, monkeypatch, capsys):
    """A learner whose torch differs from the pinned one is told why a stored digit may differ."""
    from importlib.metadata import version

    from course_utils.harness import cli

    pins = tmp_path / "constraints-cpu.txt"
    pins.write_text(f"# comment\ntorch==0.0.1\npytest=={version('pytest')}\nnot-a-package-xyz==1.0\n")
    assert cli.version_mismatches(pins) == [("torch", "0.0.1", version("torch"))]
    assert cli.version_mismatches(tmp_path / "missing.txt") == []
    monkeypatch.setattr(cli, "CONSTRAINTS", pins)
    monkeypatch.setattr(cli, "_doctor_checks", lambda: iter([(True, "a", "fine")]))
    assert cli.doctor() == 0
    assert "NOTE  torch" in capsys.readouterr().out


@pytest.mark.parametrize("installed, warned", [("7.3.0", True), ("7.0.1", True), ("7.4.0", False), ("6.31.0", False),
                                               ("7.10.0", False)])
def test_doctor_warns_about_a_kernel_known_to_stall(monkeypatch, capsys, installed, warned):
    """ipykernel 7.0-7.3 can leave a request unread; doctor says so, and how to fix it."""
    import importlib.metadata

    from course_utils.harness import cli

    real = importlib.metadata.version
    monkeypatch.setattr(importlib.metadata, "version", lambda name: installed if name == "ipykernel" else real(name))
    assert bool(cli.kernel_stack_warnings()) is warned
    monkeypatch.setattr(cli, "_doctor_checks", lambda: iter([(True, "a", "fine")]))
    assert cli.doctor() == 0, "a warning is not a failure"
    out = capsys.readouterr().out
    assert ("WARN  kernel" in out and "ipykernel>=7.4" in out) is warned
