"""What Triton's compiler makes of a kernel for NVIDIA GPUs, on a machine without a GPU.

The interpreter that runs the course's kernels on a CPU accepts code the compiler rejects and hides
registers, spills and shared memory. Triton's compiler itself needs no GPU, so this module closes the gap
in two halves:

``recording_launches()``
    in the process that runs kernels (interpreted): every ``kernel[grid](*args, **kwargs)`` is recorded as
    the JIT would specialise it on a GPU -- each argument's type (``*fp16``, ``i32``), whether it is
    divisible by 16 (pointers: 16-byte aligned; integers: a multiple of 16), which integers equal 1 (folded
    to constants), the constexprs, ``num_warps`` and ``num_stages``. A :class:`Launch`.
``compile_launches(launches, targets)``
    in a fresh Python process with ``TRITON_INTERPRET=0`` (an interpreted run patches ``triton.language``
    and the compiler cannot run after it in the same process): ``triton.compile`` for each target, then the
    cubin's registers and stack frame (``cuobjdump --dump-resource-usage``) and its spills (stores to local memory,
    ``STL``, counted in the machine code), Triton's shared
    memory, and the PTX's global loads and stores by width. A :class:`CompileReport`.

The limits are the CUDA Programming Guide's (compute capabilities table): at most 255 registers a thread,
and shared memory a block may opt in to: 163 KiB on sm_80 (A100), 99 KiB on sm_86/sm_89 (RTX 30xx/40xx,
L4, L40), 227 KiB on sm_90 (H100, H200).
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.util
import inspect
import json
import os
import re
import subprocess
import sys
import tempfile
import textwrap
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from course_utils.harness import PACKAGE_DIR
from course_utils.runtime import COMPILE_ONLY_ENV, triton_interpreting, triton_status


@dataclass(frozen=True)
class Target:
    name: str  # "sm_90"
    capability: int  # 90
    max_shared_bytes: int  # per block, with the opt-in
    cards: str


TARGETS = (Target("sm_80", 80, 163 * 1024, "A100"),
           Target("sm_89", 89, 99 * 1024, "RTX 40xx, L4, L40"),
           Target("sm_90", 90, 227 * 1024, "H100, H200"))
MAX_REGISTERS = 255


@dataclass(frozen=True)
class Launch:
    """One kernel launch as the compiler sees it. ``kernel`` is ``module:qualname``; ``source`` is the
    kernel's own code when its module cannot be imported (a kernel written in a notebook cell)."""
    kernel: str
    signature: tuple[tuple[str, str], ...]  # (argument, type) of the runtime arguments, in order
    constexprs: tuple[tuple[str, object], ...]  # (argument, value), constexpr parameters and integers equal to 1
    aligned: tuple[str, ...]  # arguments the JIT marks divisible by 16
    num_warps: int = 4
    num_stages: int = 3
    source: str | None = None

    @property
    def dtype(self) -> str:
        """The element type of the first pointer argument (``fp16`` for ``*fp16``), or ``-``."""
        return next((ty[1:] for _, ty in self.signature if ty.startswith("*")), "-")

    @property
    def name(self) -> str:
        return self.kernel.split(":")[-1]

    def describe(self) -> str:
        constants = ", ".join(f"{k}={v}" for k, v in self.constexprs)
        return f"{self.name}[{constants}] {self.dtype} warps={self.num_warps}"

    def to_json(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Launch:
        return cls(kernel=data["kernel"], signature=tuple(map(tuple, data["signature"])),
                   constexprs=tuple(map(tuple, data["constexprs"])), aligned=tuple(data["aligned"]),
                   num_warps=data["num_warps"], num_stages=data["num_stages"], source=data.get("source"))


def _constant(value):
    """A constexpr value as JSON can carry it (a Triton dtype by its name)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


NOTEBOOK_LAUNCHES = PACKAGE_DIR / "data_files" / "kernel_launches"  # one JSON per notebook


def notebook_launches(notebook: str = "*") -> list[Launch]:
    """The launches the notebooks (or the one whose file stem is ``notebook``) made when their outputs were last
    stored (``python -m course_utils execute``)."""
    found: list[Launch] = []
    for path in sorted(NOTEBOOK_LAUNCHES.glob(f"{notebook}.json")):
        for data in json.loads(path.read_text()):
            launch = Launch.from_json(data)
            if launch not in found:
                found.append(launch)
    return found


def source_with_helpers(fn) -> str:
    """The code of a kernel that lives in no importable module (a notebook cell), with what it refers to from
    its module: helper functions (``@triton.jit`` or not: the compiler must see what the interpreter ran) and
    plain constants. ``triton``, ``tl`` and ``math`` are imported by whoever loads it."""
    parts, seen = [], set()

    def add(function) -> None:
        function = getattr(function, "fn", function)
        if function in seen:
            return
        seen.add(function)
        for name in function.__code__.co_names:
            value = function.__globals__.get(name)
            if isinstance(value, (bool, int, float)) and name not in ("math", "tl", "triton"):
                parts.append(f"{name} = {value!r}")
            elif callable(value) and getattr(getattr(value, "fn", value), "__module__", None) == function.__module__:
                add(value)
        parts.append(textwrap.dedent(inspect.getsource(function)))

    add(fn)
    return "\n\n".join(parts) + "\n"


def _compiler_can_import(module: str) -> bool:
    """Can the compiler's process (a fresh Python, started from the repository) import ``module``? The course's own
    packages and installed ones, yes; a notebook cell (``__main__``) or a learner's own ``.py`` file next to the
    notebook (importable here only because the notebook's folder is on this process's path), no: their source
    travels with the launch instead."""
    if module == "__main__":
        return False
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return False
    origin = Path(spec.origin).resolve()
    course = [PACKAGE_DIR.resolve(), (PACKAGE_DIR.parent / "solutions").resolve()]
    return any(origin.is_relative_to(root) for root in course) or "site-packages" in origin.parts


def launch_of(fn, args: tuple, kwargs: dict) -> Launch:
    """The :class:`Launch` that ``kernel[grid](*args, **kwargs)`` of the Python function ``fn`` makes."""
    from triton.backends.nvidia.compiler import CUDABackend
    from triton.runtime.jit import _normalize_ty, native_specialize_impl

    kwargs = dict(kwargs)
    options = {k: kwargs.pop(k) for k in ("num_warps", "num_stages", "num_ctas", "maxnreg") if k in kwargs}
    bound = inspect.signature(fn).bind(*args, **kwargs)
    bound.apply_defaults()
    annotations = {name: _normalize_ty(ty) for name, ty in inspect.get_annotations(fn).items()}
    signature, constexprs, aligned = [], [], []
    for name, value in bound.arguments.items():
        if annotations.get(name) == "constexpr":
            constexprs.append((name, _constant(value)))
            continue
        ty, spec = native_specialize_impl(CUDABackend, value, False, True, True)
        if ty == "constexpr":  # an integer equal to 1, or None: the JIT folds it into the code
            constexprs.append((name, _constant(value)))
            continue
        signature.append((name, ty))
        if spec == "D":
            aligned.append(name)
    module = fn.__module__
    source = None
    if not _compiler_can_import(module):
        source = source_with_helpers(fn)
    return Launch(f"{module}:{fn.__qualname__}", tuple(signature), tuple(constexprs), tuple(aligned),
                  options.get("num_warps", 4), options.get("num_stages", 3), source)


@contextlib.contextmanager
def recording_launches(execute: bool = True):
    """Record every Triton launch inside the block (interpreted, or compiled on a GPU) into the yielded list, each
    distinct :class:`Launch` once. ``execute=False`` records without running the kernel: outputs stay whatever
    their buffers held, which is enough to walk a launcher through sizes too big to interpret."""
    from triton.runtime.interpreter import InterpretedFunction
    from triton.runtime.jit import JITFunction

    launches: list[Launch] = []
    originals = {cls: cls.run for cls in (InterpretedFunction, JITFunction)}  # interpreted, or compiled on a GPU

    def recorder(original):
        def run(self, *args, grid, warmup, **kwargs):
            if not warmup:
                try:
                    launch = launch_of(self.fn, args, kwargs)
                except (OSError, TypeError, ValueError):  # no source to be had, or arguments the JIT would refuse:
                    launch = None  # the launch itself reports the latter; recording never breaks a kernel
                if launch is not None and launch not in launches:
                    launches.append(launch)
            return original(self, *args, grid=grid, warmup=warmup, **kwargs) if execute else None
        return run

    for cls, original in originals.items():
        cls.run = recorder(original)
    try:
        yield launches
    finally:
        for cls, original in originals.items():
            cls.run = original


RECORD_LAUNCHES_ENV = "COURSE_RECORD_LAUNCHES"
_RECORDING = None


def record_launches_if_asked() -> None:
    """With ``COURSE_RECORD_LAUNCHES=path`` (set by ``python -m course_utils execute`` for the notebook's kernel),
    record every interpreted Triton launch of this process and write them to ``path`` as JSON at exit: the
    compiled tier (tests/test_compiled.py) compiles the launches the notebooks really make."""
    path = os.environ.get(RECORD_LAUNCHES_ENV)
    if not path or not triton_interpreting() or not triton_status().available:
        return
    import atexit

    global _RECORDING
    _RECORDING = recording_launches()  # held for the life of the process (collected, it would stop recording)
    launches = _RECORDING.__enter__()
    atexit.register(lambda: Path(path).write_text(
        "[\n" + ",\n".join(json.dumps(launch.to_json()) for launch in launches) + "\n]\n"))


def compile_calls(run, targets: tuple[Target, ...] = TARGETS) -> list[CompileReport]:
    """Walk ``run()`` through its launchers without running a kernel (see :func:`recording_launches`) and compile
    every launch it makes for ``targets``."""
    with recording_launches(execute=False) as launches:
        run()
    return compile_launches(launches, targets)


# ---------------------------------------------------------------------------------------- compiling

@dataclass
class CompileReport:
    """What one launch compiled to for one target; ``error`` is set (and the figures are None) when it
    did not compile."""
    launch: Launch
    target: Target
    error: str | None = None
    registers: int | None = None
    stack_bytes: int | None = None  # a thread's stack frame, where ptxas puts spilled registers
    spill_stores: int | None = None  # STL instructions in the machine code: stores of spilled registers
    shared_bytes: int | None = None
    global_loads: dict = field(default_factory=dict)  # PTX instruction (ld.global.v4.b32) -> count
    global_stores: dict = field(default_factory=dict)

    @property
    def spilled_bytes(self) -> int | None:
        """The stack frame's bytes when the code stores spilled registers to it, else 0 (None: no compile)."""
        return None if self.error else (self.stack_bytes if self.spill_stores else 0)

    def problems(self) -> list[str]:
        """Why this kernel would not run well (or at all) on the target; empty when it is fine."""
        if self.error:
            return [f"does not compile: {self.error}"]
        found = []
        if self.spill_stores:
            found.append(f"spills registers: {self.spill_stores} local stores, a {self.stack_bytes}-byte stack frame "
                         "per thread")
        if self.shared_bytes > self.target.max_shared_bytes:
            found.append(f"needs {self.shared_bytes} bytes of shared memory, more than {self.target.name}'s "
                         f"{self.target.max_shared_bytes} ({self.target.cards})")
        if self.registers > MAX_REGISTERS:
            found.append(f"{self.registers} registers a thread, more than {MAX_REGISTERS}")
        return found

    def row(self) -> dict:
        return {"kernel": self.launch.name, "constexprs": ", ".join(f"{k}={v}" for k, v in self.launch.constexprs),
                "dtype": self.launch.dtype, "warps": self.launch.num_warps, "target": self.target.name,
                "registers": self.registers, "spill bytes": self.spilled_bytes, "shared bytes": self.shared_bytes,
                "global loads": _summary(self.global_loads), "problems": "; ".join(self.problems()) or "-"}


def _summary(counts: dict) -> str:
    return ", ".join(f"{n}x {op}" for op, n in sorted(counts.items())) or "-"


def compile_launches(launches: list[Launch], targets: tuple[Target, ...] = TARGETS,
                     timeout_s: float = 600) -> list[CompileReport]:
    """Compile every launch for every target in a fresh process (see the module docstring)."""
    payload = json.dumps({"launches": [launch.to_json() for launch in launches],
                          "targets": [t.name for t in targets]})
    env = {**{k: v for k, v in os.environ.items() if k != RECORD_LAUNCHES_ENV}, "TRITON_INTERPRET": "0",
           "TRITON_DEFAULT_FP_FUSION": "1", COMPILE_ONLY_ENV: "1",
           "PYTHONPATH": os.pathsep.join(p for p in sys.path if p and Path(p).is_dir())}
    done = subprocess.run([sys.executable, "-m", "course_utils.harness.compiled"], input=payload,
                          capture_output=True, text=True, env=env, timeout=timeout_s)
    if done.returncode != 0:
        raise RuntimeError(f"the compiler process failed:\n{done.stderr[-3000:]}")
    by_name = {t.name: t for t in targets}
    reports = []
    for item in json.loads(done.stdout.splitlines()[-1]):
        launch = Launch.from_json(item.pop("launch"))
        reports.append(CompileReport(launch=launch, target=by_name[item.pop("target")], **item))
    return reports


def table(reports: list[CompileReport]) -> str:
    """The reports as a markdown table, one row per (launch, target)."""
    rows = [r.row() for r in reports]
    if not rows:
        return "(no launches)"
    headers = list(rows[0])
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join("-" if row[h] is None else str(row[h]) for h in headers) + " |" for row in rows]
    return "\n".join(lines)


def rmsnorm_kernel_compiled(kernel, settings, target: str = "sm_90") -> list[dict]:
    """What Triton's compiler makes, for ``target``, of an RMSNorm forward kernel with exercise 3.3's signature,
    launched on contiguous float32 rows of each ``(n_cols, BLOCK, num_warps)`` of ``settings``: registers a thread,
    spilled bytes, shared memory (the scratch of the row reduction), the PTX's global loads, the columns each thread
    holds (BLOCK / (32 x warps)) and the float32 elements it loads per column (x and the weight: 2 when every element
    is loaded once). One dict per setting; ValueError if the kernel does not compile. Chapter 3 calls it through
    ``normalization.rmsnorm_kernel_compiled`` with its settings."""
    import torch

    launches = []
    for n_cols, block, warps in settings:
        x, w = torch.empty(4, n_cols), torch.empty(n_cols)
        y, rstd = torch.empty_like(x), torch.empty(4)
        args = (x, w, y, rstd, x.stride(0), y.stride(0), n_cols, 1e-6)
        launches.append(launch_of(getattr(kernel, "fn", kernel), args, {"BLOCK": block, "num_warps": warps}))
    reports = compile_launches(launches, tuple(t for t in TARGETS if t.name == target))
    rows = []
    for (n_cols, block, warps), report in zip(settings, reports):
        if report.error:
            raise ValueError(f"the kernel does not compile for {target}: {report.error}")
        per_thread = block // (32 * warps)
        rows.append({"n_cols": n_cols, "BLOCK": block, "warps": warps, "row stride % 16": n_cols % 16,
                     "columns a thread": per_thread, "registers": report.registers,
                     "spilled bytes": report.spilled_bytes, "shared bytes": report.shared_bytes,
                     "global loads": _summary(report.global_loads),
                     "loads per column": elements_moved(report.global_loads, 32) / per_thread})
    return rows


# ------------------------------------------------------------ the compiler process (TRITON_INTERPRET=0)

def _kernel(launch: Launch, scratch: Path):
    """The ``@triton.jit`` function of a launch: imported, or (a notebook's kernel) loaded from its source
    as a module of its own, with ``triton``, ``tl`` and ``math`` imported for it."""
    if launch.source is None:
        module, qualname = launch.kernel.split(":")
        obj = importlib.import_module(module)
        for part in qualname.split("."):
            obj = getattr(obj, part)
        return obj
    path = scratch / f"learner_kernel_{abs(hash(launch.source))}.py"
    path.write_text("import math\nimport triton\nimport triton.language as tl\n\n" + launch.source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, launch.name)


def _compile_error(exc: BaseException) -> str:
    """The compiler's message, with the kernel line it points at (Triton prints the line above a caret)."""
    lines = [line for line in str(exc).splitlines() if line.strip()]
    if not lines:
        return type(exc).__name__
    message = lines[-1].strip()
    caret = next((i for i, line in enumerate(lines) if line.strip() == "^"), None)
    if caret:
        return f"{message}, at `{lines[caret - 1].strip()}`"
    return message[:500]


def _resources(cubin: bytes, scratch: Path) -> tuple[int, int, int]:
    """(registers, stack bytes, local stores) of the cubin's kernel: the first two as cuobjdump's resource usage
    reports them, the last counted in its machine code (SASS ``STL``, a store to thread-local memory: what a register
    spill is; a stack frame alone can be the ABI's)."""
    from triton import knobs

    path = scratch / "kernel.cubin"
    path.write_bytes(cubin)
    tool = knobs.nvidia.cuobjdump.path
    out = subprocess.run([tool, "--dump-resource-usage", str(path)], capture_output=True, text=True, check=True).stdout
    sass = subprocess.run([tool, "--dump-sass", str(path)], capture_output=True, text=True, check=True).stdout
    registers = int(re.search(r"REG:(\d+)", out).group(1))
    stack = int(re.search(r"STACK:(\d+)", out).group(1))
    return registers, stack, len(re.findall(r"\bSTL(?:\.\w+)*\b", sass))


def global_memory_ops(ptx: str) -> tuple[Counter, Counter]:
    """(loads, stores): the PTX's global memory instructions by form (``ld.global.v4.b32``), counted."""
    loads = Counter(re.findall(r"\b(ld\.global[\w.:]*)", ptx))
    stores = Counter(re.findall(r"\b(st\.global[\w.:]*)", ptx))
    return loads, stores


def elements_moved(instructions: dict, element_bits: int) -> int:
    """Elements of ``element_bits`` that one thread moves with these instructions, each run once
    (``{"ld.global.v4.b32": 2}`` moves 8 float32 or 16 float16). Counts the code as written: an instruction in a
    loop counts once."""
    total = 0
    for form, count in instructions.items():
        vector = re.search(r"\.v(\d)\b", form)
        width = re.search(r"\.[bfsu](\d+)$", form)
        total += count * (int(vector.group(1)) if vector else 1) * (int(width.group(1)) if width else 32)
    return total // element_bits


def _compile_one(launch: Launch, target: Target, scratch: Path) -> dict:
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    result = {"launch": launch.to_json(), "target": target.name}
    try:
        fn = _kernel(launch, scratch)
        types = dict(launch.signature)
        constants = dict(launch.constexprs)
        signature = {name: types.get(name, "constexpr") for name in fn.arg_names}
        attrs = {(fn.arg_names.index(name),): [["tt.divisibility", 16]] for name in launch.aligned}
        source = ASTSource(fn=fn, signature=signature, constexprs=constants, attrs=attrs)
        compiled = triton.compile(source, target=GPUTarget("cuda", target.capability, 32),
                                  options={"num_warps": launch.num_warps, "num_stages": launch.num_stages})
    except Exception as exc:  # a compile error is a finding, reported per launch
        result["error"] = _compile_error(exc)
        return result
    result["registers"], result["stack_bytes"], result["spill_stores"] = _resources(compiled.asm["cubin"], scratch)
    result["shared_bytes"] = compiled.metadata.shared
    loads, stores = global_memory_ops(compiled.asm["ptx"])
    result["global_loads"], result["global_stores"] = dict(loads), dict(stores)
    return result


def _main() -> int:
    request = json.loads(sys.stdin.read())
    by_name = {t.name: t for t in TARGETS}
    results = []
    with tempfile.TemporaryDirectory(prefix="course-compile-") as scratch:
        for data in request["launches"]:
            launch = Launch.from_json(data)
            for name in request["targets"]:
                with contextlib.redirect_stdout(sys.stderr):  # the compiler's own prints stay off our answer
                    results.append(_compile_one(launch, by_name[name], Path(scratch)))
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
