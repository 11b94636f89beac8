"""Benchmarks of the course's Triton kernels against PyTorch eager and ``torch.compile``.

    python -m course_utils.harness.bench [--csv bench.csv] [--quick] [--no-compile]
    python -m course_utils.harness.bench --notebooks [--threads 1 auto]   (course_utils.harness.notebook_bench)

For each kernel, shape, dtype and pass (fwd, fwd+bwd) it prints the median time, the achieved
bandwidth and that bandwidth as a fraction of this device's measured copy bandwidth
(``y.copy_(x)`` on a large tensor). Every kernel here is memory-bound, so bandwidth is the figure
of merit; the byte formula of each row is printed with it. Bytes are the *minimum* traffic of the
operation (each input read once, each output written once), so the fraction says how close an
implementation comes to the memory system's limit.

Without a CUDA GPU the Triton kernels run in Triton's interpreter, whose timings say nothing about
kernel performance: the benchmark then says so and times the PyTorch paths only.
"""
from __future__ import annotations

import argparse
import csv
import math
import statistics
import sys
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

import course_utils  # noqa: F401  (interpreter switch before triton)
from course_utils.measure import median_seconds
from course_utils.runtime import device, triton_status


@dataclass(frozen=True)
class KernelBench:
    name: str
    make_inputs: Callable[[tuple, torch.dtype, torch.device], tuple]  # -> tensors needing grad
    eager: Callable[..., torch.Tensor]
    triton: Callable[[], Callable[..., torch.Tensor]]  # imported lazily: needs Triton
    bytes_formula: str  # shown next to the figures
    bytes: Callable[[tuple, torch.dtype, str], int]  # (shape, dtype, pass) -> minimum bytes moved


def _numel(shape: tuple) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def _elt(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def _softmax_triton():
    from course_utils.kernels.softmax import softmax_triton

    return softmax_triton


def _swiglu_triton():
    from course_utils.kernels.swiglu import swiglu_triton

    return swiglu_triton


def _rmsnorm_triton():
    from course_utils.kernels.rmsnorm import rmsnorm_triton

    return rmsnorm_triton


def _layernorm_triton():
    from course_utils.kernels.layernorm import layernorm_triton

    return layernorm_triton


def _cross_entropy_triton():
    from course_utils.kernels.cross_entropy import cross_entropy_triton

    return cross_entropy_triton


def _row_params(shape, dtype, dev, n):
    return tuple(torch.randn(shape[-1], dtype=dtype, device=dev) for _ in range(n))


def _norm_bench(name: str, n_params: int, eager: Callable, triton: Callable) -> KernelBench:
    """A row norm's benchmark entry: x and ``n_params`` weight vectors; the same traffic for RMSNorm and LayerNorm."""
    return KernelBench(
        name=name,
        make_inputs=lambda shape, dtype, dev: (torch.randn(shape, dtype=dtype, device=dev),
                                               *_row_params(shape, dtype, dev, n_params)),
        eager=eager,
        triton=triton,
        bytes_formula="fwd: read x + write y = 2·N·b; fwd+bwd: + read x, dy + write dx = 5·N·b "
                      "(weight vectors ignored)",
        bytes=lambda shape, dtype, p: (2 if p == "fwd" else 5) * _numel(shape) * _elt(dtype),
    )


KERNELS = [
    KernelBench(
        name="softmax",
        make_inputs=lambda shape, dtype, dev: (torch.randn(shape, dtype=dtype, device=dev),),
        eager=lambda x: torch.softmax(x, dim=-1),
        triton=_softmax_triton,
        bytes_formula="fwd: read x + write y = 2·N·b; fwd+bwd: + read y, dy + write dx = 5·N·b",
        bytes=lambda shape, dtype, p: (2 if p == "fwd" else 5) * _numel(shape) * _elt(dtype),
    ),
    KernelBench(
        name="swiglu",
        make_inputs=lambda shape, dtype, dev: (torch.randn(shape, dtype=dtype, device=dev),
                                               torch.randn(shape, dtype=dtype, device=dev)),
        eager=lambda gate, up: F.silu(gate) * up,
        triton=_swiglu_triton,
        bytes_formula="fwd: read gate, up + write h = 3·N·b; fwd+bwd: + read gate, up, dh + write 2 = 8·N·b",
        bytes=lambda shape, dtype, p: (3 if p == "fwd" else 8) * _numel(shape) * _elt(dtype),
    ),
    _norm_bench("rmsnorm", 1, lambda x, w: F.rms_norm(x, (x.shape[-1],), w, 1e-6), _rmsnorm_triton),
    _norm_bench("layernorm", 2, lambda x, w, b: F.layer_norm(x, (x.shape[-1],), w, b, 1e-5), _layernorm_triton),
    KernelBench(
        name="cross_entropy",
        make_inputs=lambda shape, dtype, dev: (torch.randn(shape, dtype=dtype, device=dev),),
        eager=lambda z: F.cross_entropy(z.float(), torch.arange(z.shape[0], device=z.device) % z.shape[1]),
        triton=lambda: (lambda z: _cross_entropy_triton()(z, torch.arange(z.shape[0], device=z.device) % z.shape[1])),
        bytes_formula="fwd: read logits = N·b; fwd+bwd: read logits + write their gradient = 2·N·b (the minimum; "
                      "the fused kernel does both in its forward)",
        bytes=lambda shape, dtype, p: (1 if p == "fwd" else 2) * _numel(shape) * _elt(dtype),
    ),
]

# (rows, columns): attention-score rows of a 4k context, a 32k vocabulary row, an MLP activation
GPU_SHAPES = [(4096, 4096), (8192, 32768), (16384, 11008)]
CPU_SHAPES = [(1024, 4096), (256, 32768)]  # 16 MiB and 32 MiB in float32: beyond most caches
QUICK_SHAPES = [(64, 256)]
ATTENTION_GPU = [(4, 16, 2048, 64), (2, 16, 8192, 64), (2, 8, 4096, 128)]  # (B, H, N, D)
ATTENTION_CPU = [(1, 4, 1024, 64)]
ATTENTION_QUICK = [(1, 2, 128, 32)]


def measure(fn: Callable[[], object], dev: torch.device, reps: int = 20, warmup: int = 3) -> float:
    """Median seconds of ``fn()``. On a GPU, ``triton.testing.do_bench`` (CUDA events, the L2 cache flushed before
    every run, so a kernel is not timed on data the previous run left in cache; CUDA events where Triton is
    missing); on a CPU, :func:`course_utils.measure.median_seconds`: ``reps`` timed calls after ``warmup`` ones."""
    if dev.type != "cuda":
        return median_seconds(fn, reps=reps, warmup=warmup)
    if triton_status().available:
        import triton.testing

        return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median") / 1e3
    for _ in range(warmup):  # a GPU without Triton (Windows): CUDA events, no cache flush
        fn()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def copy_bandwidth(dev: torch.device, n_bytes: int) -> float:
    """Measured bytes/s of ``y.copy_(x)`` (read + write, 2 × n_bytes moved)."""
    x = torch.empty(n_bytes // 4, dtype=torch.float32, device=dev).normal_()
    y = torch.empty_like(x)
    return 2 * x.numel() * 4 / measure(lambda: y.copy_(x), dev)


def _runner(op: Callable, inputs: tuple, pass_: str) -> Callable[[], object]:
    if pass_ == "fwd":
        return lambda: op(*inputs)
    leaves = [t.detach().clone().requires_grad_() for t in inputs]
    grad_out = torch.randn_like(op(*inputs))

    def fwd_bwd():
        for t in leaves:
            t.grad = None
        op(*leaves).backward(grad_out)

    return fwd_bwd


def run(shapes: list[tuple], dtypes: list[torch.dtype], *, use_compile: bool, reps: int) -> list[dict]:
    dev = device()
    gpu = dev.type == "cuda" and triton_status().mode == "compiled"
    peak = copy_bandwidth(dev, 256 * 2**20 if dev.type == "cuda" else 64 * 2**20)
    print(f"device: {torch.cuda.get_device_name(0) if dev.type == 'cuda' else 'CPU'}; "
          f"measured copy bandwidth {peak / 1e9:.1f} GB/s (y.copy_(x), float32)")
    if dev.type == "cpu":
        print("(on a CPU, inputs that fit in cache can beat the copy figure: more than 100% is possible)")
    if not gpu:
        print("No CUDA GPU: Triton kernels would run in Triton's interpreter, whose timings say nothing "
              "about kernel performance. Timing the PyTorch paths only.")
    rows = []
    for kb in KERNELS:
        print(f"\n{kb.name}: bytes = {kb.bytes_formula} (N elements, b bytes each)")
        impls = {"eager": kb.eager}
        if use_compile:
            impls["compile"] = torch.compile(kb.eager, dynamic=False)
        if gpu:
            impls["triton"] = kb.triton()
        for dtype in dtypes:
            for shape in shapes:
                inputs = kb.make_inputs(shape, dtype, dev)
                for pass_ in ("fwd", "fwd+bwd"):
                    n_bytes = kb.bytes(shape, dtype, pass_)
                    for impl, op in impls.items():
                        try:
                            seconds = measure(_runner(op, inputs, pass_), dev, reps=reps)
                        except Exception as exc:  # e.g. torch.compile without a working compiler
                            print(f"  {impl:<8} {str(shape):>15} {str(dtype)[6:]:<8} {pass_:<8} "
                                  f"n/a: {type(exc).__name__}: {str(exc).splitlines()[0][:80]}")
                            continue
                        row = dict(kernel=kb.name, impl=impl, shape="x".join(map(str, shape)),
                                   dtype=str(dtype)[6:], pass_=pass_, ms=seconds * 1e3,
                                   gb_per_s=n_bytes / seconds / 1e9, frac_of_copy=n_bytes / seconds / peak,
                                   bytes=n_bytes)
                        rows.append(row)
                        print(f"  {impl:<8} {row['shape']:>15} {row['dtype']:<8} {pass_:<8} "
                              f"{row['ms']:9.3f} ms {row['gb_per_s']:8.1f} GB/s "
                              f"{100 * row['frac_of_copy']:5.1f}% of copy")
    return rows


ADAMW_BYTES_FORMULA = "read p, g, m, v + write p, m, v = 7·N·4 bytes (float32)"


def run_adamw(sizes: list[int], *, reps: int) -> list[dict]:
    """Time one AdamW step on a flat float32 parameter of each size: torch's single-tensor, foreach and
    (on a GPU) fused implementations, and the fused Triton kernel (GPU only)."""
    dev = device()
    gpu = dev.type == "cuda" and triton_status().mode == "compiled"
    peak = copy_bandwidth(dev, 256 * 2**20 if dev.type == "cuda" else 64 * 2**20)
    print(f"\nadamw step: bytes = {ADAMW_BYTES_FORMULA}")
    impls = {"single": dict(foreach=False), "foreach": dict(foreach=True)}
    if dev.type == "cuda":
        impls["fused"] = dict(fused=True)
    if gpu:
        impls["triton"] = None
    rows = []
    for n in sizes:
        for impl, kwargs in impls.items():
            p = torch.nn.Parameter(torch.randn(n, device=dev))
            p.grad = torch.randn(n, device=dev)
            if kwargs is None:
                from course_utils.kernels.adamw import TritonAdamW

                opt = TritonAdamW([p], lr=1e-3)
            else:
                opt = torch.optim.AdamW([p], lr=1e-3, **kwargs)
            seconds = measure(opt.step, dev, reps=reps)
            n_bytes = 7 * n * 4
            row = dict(kernel="adamw", impl=impl, shape=str(n), dtype="float32", pass_="step", ms=seconds * 1e3,
                       gb_per_s=n_bytes / seconds / 1e9, frac_of_copy=n_bytes / seconds / peak, bytes=n_bytes)
            rows.append(row)
            print(f"  {impl:<8} {row['shape']:>15} {'float32':<8} {'step':<8} "
                  f"{row['ms']:9.3f} ms {row['gb_per_s']:8.1f} GB/s {100 * row['frac_of_copy']:5.1f}% of copy")
    return rows


# Dense fp16/bf16 tensor-core peaks (no sparsity) from the vendors' data sheets, for the attention figures.
PEAK_TFLOPS_16BIT = {"H200": 989.0, "H100": 989.0, "A100": 312.0}


def run_attention(shapes: list[tuple], *, reps: int) -> list[dict]:
    """Time causal attention forward (B, H, N, D): F.scaled_dot_product_attention and, on a GPU, the
    Triton kernel. FLOPs = 2 matmuls x 2 B H N^2 D, halved by the causal mask."""
    dev = device()
    gpu = dev.type == "cuda" and triton_status().mode == "compiled"
    dtype = torch.float16 if dev.type == "cuda" else torch.float32
    name = torch.cuda.get_device_name(0) if dev.type == "cuda" else "CPU"
    peak = next((v for k, v in PEAK_TFLOPS_16BIT.items() if k in name), None) if dev.type == "cuda" else None
    print(f"\nattention, causal, {str(dtype)[6:]}: FLOPs = 2 B H N^2 D forward (causal half of 4 B H N^2 D), "
          "x 3.5 forward and backward (the backward's five matmuls, by FlashAttention-2's convention)"
          + (f"; peak {peak:g} TFLOP/s ({name})" if peak else ""))
    impls = {"sdpa": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True)}
    if gpu:
        from course_utils.kernels.flash_attention import flash_attention_forward, flash_attention_triton

        impls["triton"] = lambda q, k, v: (flash_attention_triton(q, k, v, causal=True) if q.requires_grad else
                                           flash_attention_forward(q, k, v, causal=True, block_m=64, block_n=64)[0])
    rows = []
    for shape in shapes:
        B, H, N, D = shape
        q, k, v = (torch.randn(shape, dtype=dtype, device=dev) for _ in range(3))
        for pass_, factor in (("fwd", 1.0), ("fwd+bwd", 3.5)):
            flops = factor * 2 * B * H * N * N * D
            for impl, fn in impls.items():
                seconds = measure(_runner(fn, (q, k, v), pass_), dev, reps=reps)
                tflops = flops / seconds / 1e12
                row = dict(kernel="attention", impl=impl, shape="x".join(map(str, shape)), dtype=str(dtype)[6:],
                           pass_=pass_, ms=seconds * 1e3, tflops=tflops, frac_of_peak=(tflops / peak if peak else None))
                rows.append(row)
                print(f"  {impl:<8} {row['shape']:>15} {row['dtype']:<8} {pass_:<8} {row['ms']:9.3f} ms "
                      f"{tflops:8.2f} TFLOP/s" + (f" {100 * tflops / peak:5.1f}% of peak" if peak else ""))
    return rows


def benchmark_launches() -> list:
    """The Triton launches this benchmark makes on a GPU (row kernels at GPU_SHAPES in float32, float16 and
    bfloat16, forward and backward; AdamW at the same element counts; attention at ATTENTION_GPU in float16 with
    64 x 64 blocks, and forward and backward as flash_attention_triton launches them, in float16 and bfloat16),
    recorded from the launchers without running a kernel
    (:func:`course_utils.harness.compiled.recording_launches`). Tensors are ``torch.empty``: their pages are
    never touched, so gigabyte shapes cost nothing. Needs Triton's interpreter (no GPU)."""
    from course_utils.harness.compiled import recording_launches
    from course_utils.kernels.adamw import TritonAdamW
    from course_utils.kernels.flash_attention import flash_attention_forward, flash_attention_triton

    with recording_launches(execute=False) as launches:
        for kernel in KERNELS:
            op = kernel.triton()
            for shape in GPU_SHAPES:
                for dtype in (torch.float32, torch.float16, torch.bfloat16):
                    inputs = kernel.make_inputs((1, 2), dtype, torch.device("cpu"))  # only to count and shape them
                    leaves = [torch.empty(shape if t.dim() == 2 else shape[-1:], dtype=dtype, requires_grad=True)
                              for t in inputs]
                    out = op(*leaves)
                    out.backward(torch.empty_like(out))
        for shape in GPU_SHAPES:
            p = torch.nn.Parameter(torch.empty(math.prod(shape)))
            p.grad = torch.empty_like(p)
            TritonAdamW([p], lr=1e-3).step()
        for shape in ATTENTION_GPU:
            for dtype in (torch.float16, torch.bfloat16):  # the benchmark's float16, and bfloat16 as trained in
                q = torch.empty(shape, dtype=dtype)
                flash_attention_forward(q, q, q, causal=True, block_m=64, block_n=64)
                leaves = [torch.empty(shape, dtype=dtype, requires_grad=True) for _ in range(3)]
                out = flash_attention_triton(*leaves, causal=True)
                out.backward(torch.empty_like(out))
    return launches


def write_csv(rows: list[dict], path: str) -> None:
    with open(path, "w", newline="") as fh:
        fields = list(dict.fromkeys(key for row in rows for key in row)) or ["kernel"]
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "--notebooks" in argv:  # the notebooks' times, quiet and with a busy core: a sibling benchmark
        from course_utils.harness import notebook_bench

        return notebook_bench.main([a for a in argv if a != "--notebooks"])
    parser = argparse.ArgumentParser(prog="python -m course_utils.harness.bench", description=__doc__.split("\n")[0])
    parser.add_argument("--csv", default="bench.csv", help="where to write the figures (default bench.csv)")
    parser.add_argument("--quick", action="store_true", help="one small shape, few repetitions (smoke test)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile (slow to start on CPU)")
    args = parser.parse_args(argv)
    dev = device()
    if args.quick:
        shapes, reps = QUICK_SHAPES, 5
    else:
        shapes, reps = (GPU_SHAPES if dev.type == "cuda" else CPU_SHAPES), 20
    dtypes = [torch.float32] + ([torch.float16, torch.bfloat16] if dev.type == "cuda" and not args.quick else [])
    rows = run(shapes, dtypes, use_compile=not args.no_compile, reps=reps)
    rows += run_adamw([math.prod(shape) for shape in shapes], reps=reps)
    attention_shapes = ATTENTION_QUICK if args.quick else (ATTENTION_GPU if dev.type == "cuda" else ATTENTION_CPU)
    rows += run_attention(attention_shapes, reps=reps)
    write_csv(rows, args.csv)
    print(f"\n{len(rows)} rows written to {args.csv}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
