"""Device choice, Triton availability and mode, seeding, and the environment summary.

Triton facts this module relies on (Triton's documentation of its interpreter): without a GPU,
``TRITON_INTERPRET=1`` runs kernels on CPU tensors, and it must be set before ``triton`` is imported. PyPI has no
Triton for macOS or
Windows; there :func:`import_triton` returns stand-ins so notebooks still run top to bottom.
"""
from __future__ import annotations

import importlib.util
import os
import platform
import random
import sys
import types
from dataclasses import dataclass


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def enable_triton_interpreter_if_no_gpu() -> None:
    """Set ``TRITON_INTERPRET=1`` when CUDA is absent, unless the user already chose a value."""
    if "TRITON_INTERPRET" in os.environ:
        return
    if not _cuda_available():
        os.environ["TRITON_INTERPRET"] = "1"


THREADS_ENV = "COURSE_THREADS"  # PyTorch's intra-op threads here: a number, or "auto" for PyTorch's own choice
DEFAULT_THREADS = 1


def thread_setting() -> int | None:
    """The intra-op thread count the course asks for: ``COURSE_THREADS`` (a positive number, or ``auto`` for PyTorch's
    default of one thread per core), else 1.

    One thread, because the course's tensors are tiny: on a quiet 2-core machine a second thread buys nothing, and
    when another program keeps a core busy every parallel region waits for a descheduled thread, which made
    notebook 05 16x slower (``python -m course_utils.harness.bench --notebooks`` measures it)."""
    value = os.environ.get(THREADS_ENV, "").strip().lower()
    if value == "auto":
        return None
    if not value:
        return DEFAULT_THREADS
    try:
        threads = int(value)
        if threads < 1:
            raise ValueError
    except ValueError:
        import warnings

        warnings.warn(f"{THREADS_ENV}={value!r} is neither a positive number nor 'auto'; using "
                      f"{DEFAULT_THREADS} thread", stacklevel=2)
        return DEFAULT_THREADS
    return threads


def apply_thread_setting() -> None:
    """Set PyTorch's intra-op threads to :func:`thread_setting` in this process (every process that imports
    course_utils: notebook kernels, worker processes, tests)."""
    import torch

    threads = thread_setting()
    if threads is not None and torch.get_num_threads() != threads:
        torch.set_num_threads(threads)


COMPILE_ONLY_ENV = "COURSE_TRITON_COMPILE_ONLY"  # set by course_utils.harness.compiled in its compiler process


def triton_interpreting() -> bool:
    """Is Triton's interpreter on? Read as Triton reads ``TRITON_INTERPRET`` (1, true, on, yes)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


@dataclass(frozen=True)
class TritonStatus:
    available: bool  # can Triton kernels run here at all?
    mode: str  # "compiled" (GPU), "interpreter" (CPU, numpy) or "unavailable"
    version: str | None
    reason: str  # one sentence a learner can act on


def triton_status() -> TritonStatus:
    """Whether Triton kernels can run here, and how."""
    try:
        found = importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # a finder that refuses triton, or a half-removed install
        found = False
    if not found:
        why = (
            "Triton is not installed (PyPI has Triton wheels for Linux only); "
            "Triton cells are skipped and the PyTorch path carries on."
        )
        return TritonStatus(False, "unavailable", None, why)
    try:
        import triton
    except Exception as exc:  # installed but broken: report it, do not crash the notebook
        return TritonStatus(False, "unavailable", None,
                            f"Triton is installed but does not import ({type(exc).__name__}: {exc}); "
                            "Triton cells are skipped and the PyTorch path carries on.")

    if os.environ.get(COMPILE_ONLY_ENV) == "1":  # course_utils.harness.compiled's compiler process
        return TritonStatus(True, "compile-only", triton.__version__,
                            "kernels are compiled for NVIDIA targets here; none of them runs")
    if triton_interpreting():
        return TritonStatus(True, "interpreter", triton.__version__,
                            "no CUDA GPU: kernels run in Triton's interpreter on the CPU (correct, slow)")
    if _cuda_available():
        return TritonStatus(True, "compiled", triton.__version__, "kernels are compiled for the GPU")
    return TritonStatus(False, "unavailable", triton.__version__,
                        "no GPU and TRITON_INTERPRET is not 1: restart the kernel and import course_utils "
                        "before triton, or set TRITON_INTERPRET=1")


def import_triton() -> tuple[types.ModuleType, types.ModuleType]:
    """Return ``(triton, triton.language)``, or stand-ins where Triton cannot run.

    The stand-in ``triton.jit`` returns the function unchanged and marks it, so a notebook cell that
    defines a kernel still runs; :func:`course_utils.check` then reports that Triton is unavailable.
    """
    status = triton_status()
    if status.available:
        import triton
        import triton.language as tl

        return triton, tl
    shim = types.ModuleType("triton_unavailable")

    def jit(fn=None, **_kwargs):
        def mark(f):
            f.triton_unavailable = status.reason
            return f

        return mark(fn) if fn is not None else mark

    shim.jit = jit
    shim.cdiv = lambda a, b: (a + b - 1) // b
    shim.next_power_of_2 = lambda n: 1 << (max(int(n), 1) - 1).bit_length()
    language = types.ModuleType("triton_unavailable.language")
    language.constexpr = object
    shim.language = language
    return shim, language


def device() -> "torch.device":  # noqa: F821
    """``cuda`` when a GPU is present, else ``cpu``."""
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) so text outputs repeat run after run."""
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def environment_lines() -> list[str]:
    """The environment summary as lines: Python, torch, device, Triton mode."""
    import torch

    status = triton_status()
    dev = device()
    gpu = f" ({torch.cuda.get_device_name(0)})" if dev.type == "cuda" else ""
    return [
        f"python  {sys.version.split()[0]} on {platform.system()} {platform.machine()}",
        f"torch   {torch.__version__}, device {dev.type}{gpu}, {torch.get_num_threads()} CPU thread(s) "
        f"({THREADS_ENV}={os.environ.get(THREADS_ENV, DEFAULT_THREADS)})",
        f"triton  {status.version or '-'}: {status.mode} - {status.reason}",
    ]


LANG_ENV = "COURSE_LANG"  # "ko": check, hint, predict and the progress table speak Korean (the Korean edition sets it)


def setup(seed: int = 0, lang: str | None = None) -> None:
    """Seed everything, apply the course's plot style and print the environment summary. ``lang="ko"`` (the Korean
    notebooks' setup cell) makes the course's fixed phrases Korean for this kernel."""
    from course_utils.plotting import use_course_style

    if lang is not None:
        os.environ[LANG_ENV] = lang

    seed_everything(seed)
    use_course_style()
    for line in environment_lines():
        print(line)
    print(f"seed    {seed} (torch, numpy, random)")
