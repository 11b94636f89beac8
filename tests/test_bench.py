import csv

import torch

from course_utils.harness import bench


def test_byte_formulas():
    softmax, swiglu = bench.KERNELS[:2]
    assert softmax.bytes((64, 256), torch.float32, "fwd") == 2 * 64 * 256 * 4
    assert softmax.bytes((64, 256), torch.float16, "fwd+bwd") == 5 * 64 * 256 * 2
    assert swiglu.bytes((10,), torch.float32, "fwd") == 3 * 10 * 4
    assert swiglu.bytes((10,), torch.float32, "fwd+bwd") == 8 * 10 * 4


def test_quick_run_on_cpu_times_pytorch_only_and_writes_csv(tmp_path, capsys):
    if torch.cuda.is_available():
        import pytest

        pytest.skip("on a GPU the benchmark also times the Triton kernels")
    path = tmp_path / "bench.csv"
    assert bench.main(["--quick", "--no-compile", "--csv", str(path)]) == 0
    out = capsys.readouterr().out
    assert "Timing the PyTorch paths only" in out
    assert "bytes = fwd: read x + write y = 2·N·b" in out
    rows = list(csv.DictReader(path.open()))
    kernel_rows = [r for r in rows if r["kernel"] not in ("adamw", "attention")]
    attention_rows = [r for r in rows if r["kernel"] == "attention"]
    assert {r["impl"] for r in attention_rows} == {"sdpa"} and all(float(r["tflops"]) > 0 for r in attention_rows)
    assert len(kernel_rows) == len(bench.KERNELS) * len(bench.QUICK_SHAPES) * 2  # fwd and fwd+bwd, eager only
    assert {r["impl"] for r in kernel_rows} == {"eager"}
    adamw_rows = [r for r in rows if r["kernel"] == "adamw"]
    assert {r["impl"] for r in adamw_rows} == {"single", "foreach"}  # no fused or Triton without a GPU
    assert all(int(r["bytes"]) == 28 * int(r["shape"]) for r in adamw_rows)
    assert "read p, g, m, v + write p, m, v" in out
    assert all(float(r["ms"]) > 0 and float(r["gb_per_s"]) > 0 for r in kernel_rows + adamw_rows)


def test_notebook_benchmark_times_a_notebook_quiet_and_busy(tmp_path):
    """bench --notebooks: one notebook, quiet and with a busy core; the kernel gets the COURSE_THREADS asked for."""
    import nbformat

    from course_utils.harness import notebook_bench

    path = tmp_path / "tiny.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import course_utils, torch\nassert torch.get_num_threads() == 1, torch.get_num_threads()")]), path)
    rows = notebook_bench.run([path], ["1"])
    assert len(rows) == 1 and rows[0]["notebook"] == "tiny.ipynb" and rows[0]["COURSE_THREADS"] == "1"
    assert float(rows[0]["quiet s"]) > 0 and float(rows[0]["busy s"]) > 0 and float(rows[0]["busy / quiet"]) > 0
    table = notebook_bench.markdown_table(rows)
    assert table.splitlines()[0].startswith("| notebook | COURSE_THREADS | quiet s | busy s |")


def test_thread_setting(monkeypatch):
    import warnings

    from course_utils import runtime

    monkeypatch.delenv("COURSE_THREADS", raising=False)
    assert runtime.thread_setting() == 1
    monkeypatch.setenv("COURSE_THREADS", "auto")
    assert runtime.thread_setting() is None
    monkeypatch.setenv("COURSE_THREADS", "3")
    assert runtime.thread_setting() == 3
    for bad in ("0", "-2", "many"):
        monkeypatch.setenv("COURSE_THREADS", bad)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert runtime.thread_setting() == 1
        assert "neither a positive number nor 'auto'" in str(caught[0].message)
