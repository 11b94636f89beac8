"""Hostile, safe buffers for running a learner's Triton kernel in an exercise check.

A kernel with a missing or wrong mask reads and writes memory next to its tensors. In an ordinary
allocation that memory holds other data (a wrong answer can pass) or nothing at all (an unmasked store
corrupts the heap and kills the notebook kernel). So the exercise launchers hand a kernel views into
larger buffers instead:

* every row gets extra columns, and the whole buffer a margin before and after, of at least one block;
  a stray load or store stays inside the allocation;
* around an **input** the extra elements hold a *guard* value chosen to spoil any result that reads it
  (NaN, or a value that would win a max), so a missing load mask changes the output;
* around an **output** they hold a finite *sentinel*; afterwards :func:`check_untouched` names any write
  outside the tensor and :func:`check_written` any element the kernel never wrote.
"""
from __future__ import annotations

import contextlib
import math
import threading
from dataclasses import dataclass

import torch

SENTINEL = -31337.0  # fill of output buffers: finite (a NaN written over it is seen) and no plausible result

GUARD_NOTE = ("(The course surrounds your kernel's inputs with NaN or values that would win: NaN or an "
              "impossible value in the output usually means a load without a mask, or a mask that lets "
              "lanes at or beyond the end through.)")


@dataclass
class Guarded:
    """A tensor inside a larger, filled allocation. ``view`` is what the kernel gets."""
    flat: torch.Tensor  # the whole allocation, 1-D
    view: torch.Tensor  # the tensor's shape; rows ``row_stride`` elements apart (2-D), or contiguous (1-D)
    inside: torch.Tensor  # bool, like ``flat``: True where ``view`` lies
    fill: float  # what every element outside ``view`` held before the launch
    margin: int  # elements before the first and after the last row
    row_stride: int  # elements from one row to the next (2-D), 1 for a vector


def guarded(t: torch.Tensor | tuple[int, ...], fill: float, *, margin: int, row_pad: int = 0,
            dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> Guarded:
    """A 1-D or 2-D tensor (or an empty one of ``shape``, holding ``fill``) in a buffer filled with ``fill``.

    ``row_pad``: extra columns per row (2-D only); ``margin``: extra elements before and after.
    """
    source = t if isinstance(t, torch.Tensor) else None
    shape = tuple(source.shape) if source is not None else tuple(t)
    if len(shape) not in (1, 2):
        raise ValueError(f"guarded buffers are 1-D or 2-D, got shape {shape}")
    dtype = dtype or (source.dtype if source is not None else torch.float32)
    device = device if device is not None else (source.device if source is not None else "cpu")
    rows, cols = (1, shape[0]) if len(shape) == 1 else shape
    stride = cols + (row_pad if len(shape) == 2 else 0)
    total = margin + rows * stride + margin
    flat = torch.full((total,), fill, dtype=dtype, device=device)
    inside = torch.zeros(total, dtype=torch.bool, device=device)

    def place(buf: torch.Tensor) -> torch.Tensor:
        body = buf[margin:margin + rows * stride]
        return body if len(shape) == 1 else body.view(rows, stride)[:, :cols]

    view = place(flat)
    place(inside).fill_(True)
    if source is not None:
        view.copy_(source.detach())
    return Guarded(flat, view, inside, fill, margin, stride)


def _changed(buf: Guarded) -> torch.Tensor:
    """Bool, like ``buf.flat``: outside the view and no longer holding the fill."""
    flat = buf.flat
    if flat.is_floating_point() and math.isnan(buf.fill):
        differs = ~torch.isnan(flat)
    else:
        differs = flat != buf.fill  # NaN != fill counts as a change
    return differs & ~buf.inside


def check_untouched(buf: Guarded, name: str, fix: str) -> None:
    """Raise ContractError naming the first element outside ``name`` that the kernel changed."""
    from course_utils.harness.errors import ContractError

    changed = _changed(buf)
    count = int(changed.sum())
    if not count:
        return
    first = int(changed.nonzero()[0, 0])
    rows, cols = (1, buf.view.shape[0]) if buf.view.dim() == 1 else buf.view.shape
    where = _Region(name, buf.margin, rows, cols, buf.row_stride, 1).describe(first)
    raise ContractError(f"your kernel wrote {count} value(s) outside {name} (first: {where}). {fix}")


def check_written(buf: Guarded, name: str, fix: str) -> None:
    """Raise ContractError when some element of ``name`` still holds the sentinel: it was never written."""
    from course_utils.harness.errors import ContractError

    unwritten = buf.view == buf.fill
    if bool(unwritten.any()):
        idx = unwritten.nonzero()[0].tolist()
        raise ContractError(f"your kernel left {int(unwritten.sum())} of {unwritten.numel()} elements of {name} "
                            f"unwritten (first at index {idx}). {fix}")


# ------------------------------------------------------------------ every access, in the interpreter

@dataclass
class _Region:
    name: str
    base: int  # address of element [0, 0]
    rows: int
    cols: int
    row_stride: int  # in elements
    itemsize: int
    allocation: tuple[int, int] | None = None  # [start, end) bytes of the guarded buffer around it, if any

    def contains(self, addresses):
        """numpy bool array: which addresses are elements of this tensor (not its padding)."""
        import numpy as np

        offset = addresses.astype(np.int64) - self.base
        element, rest = np.divmod(offset, self.itemsize)
        row, col = np.divmod(element, self.row_stride)
        return (rest == 0) & (element >= 0) & (row < self.rows) & (col < self.cols)

    def contains_if_rows_apart(self, addresses, stride: int):
        """numpy bool array: which addresses would be elements of this tensor if its rows were ``stride`` elements
        apart: ``cols`` is how a kernel that ignores the row stride addresses it, another tensor's row stride how a
        kernel that uses that tensor's stride for this one does."""
        import numpy as np

        offset = addresses.astype(np.int64) - self.base
        element, rest = np.divmod(offset, self.itemsize)
        row, col = np.divmod(element, stride)
        return (rest == 0) & (element >= 0) & (row < self.rows) & (col < self.cols)

    def past_a_row_or_the_end(self, address: int) -> bool:
        """Is ``address`` in a row's padding (a column at or past ``cols``) or past the last row: where a lane goes
        that a mask should have stopped?"""
        element = (address - self.base) // self.itemsize
        if element < 0:
            return False
        row, col = divmod(element, self.row_stride)
        return row >= self.rows or col >= self.cols

    def distance(self, address: int) -> int:
        """Bytes from ``address`` to this tensor's span (0 inside it, padding included, and anywhere in the guarded
        buffer around it: that address belongs to this tensor whatever lies near it, so the message naming it does
        not depend on where the allocator put the other tensors)."""
        if self.allocation is not None and self.allocation[0] <= address < self.allocation[1]:
            return 0
        end = self.base + ((self.rows - 1) * self.row_stride + self.cols) * self.itemsize
        return max(self.base - address, address - end + self.itemsize, 0)

    def describe(self, address: int) -> str:
        element = (address - self.base) // self.itemsize
        if element < 0:
            return f"{-element} elements before the start of {self.name}"
        row, col = divmod(element, self.row_stride)
        if row >= self.rows:
            return f"{element - (self.rows - 1) * self.row_stride - self.cols + 1} elements past the end of {self.name}"
        return f"row {row}, column {col} of {self.name}, which has {self.cols} columns"


def _region(name: str, t: "Guarded | torch.Tensor") -> _Region:
    view = t.view if isinstance(t, Guarded) else t
    rows, cols = (1, view.shape[0]) if view.dim() == 1 else view.shape
    stride = view.stride(0) if view.dim() == 2 else cols
    if view.dim() == 1 and view.stride(0) != 1:
        raise ValueError(f"{name}: a watched vector must be contiguous")
    allocation = None
    if isinstance(t, Guarded):
        start = t.flat.data_ptr()
        allocation = (start, start + t.flat.numel() * t.flat.element_size())
    return _Region(name, view.data_ptr(), rows, cols, stride, view.element_size(), allocation)


class AccessLog:
    """What a kernel loaded or stored outside the tensors it was given (filled by :func:`watch_accesses`)."""

    def __init__(self, loads: list[_Region], stores: list[_Region]):
        self.loads, self.stores = loads, stores
        self.outside = {"load": 0, "store": 0}
        # element accesses inside each named tensor: counts[name]["load" or "store"]
        self.counts = {r.name: {"load": 0, "store": 0} for r in loads + stores}
        self.first: dict[str, str] = {}
        self.first_at: dict[str, tuple[_Region, int]] = {}  # the first outside address of a kind, its nearest tensor
        # (kind, tensor name) -> {stride: whether every access of that kind near that tensor would lie inside it if
        # its rows were that many elements apart}, for strides it does not have: its number of columns (the sign of a
        # kernel that ignores the row stride) and the other tensors' row strides (of one that uses another's)
        self.fits: dict[tuple[str, str], dict[int, bool]] = {}

    def _record(self, kind: str, regions: list[_Region], addresses, mask) -> None:
        import numpy as np

        active = np.asarray(addresses)[np.asarray(mask, dtype=bool)]
        if active.size == 0:
            return
        near = min(self.loads + self.stores, key=lambda r: r.distance(int(active.reshape(-1)[0])))
        fits = self.fits.setdefault((kind, near.name), {})
        for stride in self._other_strides(near):
            fits[stride] = fits.get(stride, True) and bool(near.contains_if_rows_apart(active, stride).all())
        inside = np.zeros(active.shape, dtype=bool)
        for region in regions:
            in_region = region.contains(active)
            self.counts[region.name][kind] += int(in_region.sum())
            inside |= in_region
        if inside.all():
            return
        bad = active[~inside]
        self.outside[kind] += int(bad.size)
        if kind not in self.first:
            address = int(bad.reshape(-1)[0])
            nearest = min(self.loads + self.stores, key=lambda r: r.distance(address))
            self.first[kind] = nearest.describe(address)
            self.first_at[kind] = (nearest, address)

    def _other_strides(self, region: _Region) -> list[int]:
        """Row strides ``region`` does not have that a kernel could have used for it: its number of columns first,
        then the row strides of the other tensors (only for a tensor of several rows)."""
        if region.rows < 2:
            return []
        others = [r.row_stride for r in self.loads + self.stores if r.rows > 1]
        return [s for s in dict.fromkeys([region.cols, *others]) if s != region.row_stride]

    def _advice(self, kind: str) -> str:
        """What the first outside access of ``kind`` shows, in one sentence: only what the addresses prove."""
        region, address = self.first_at[kind]
        fits = self.fits.get((kind, region.name), {})
        if fits.get(region.cols, False):
            return (f"Every {kind} your kernel made there would be inside {region.name} if its rows were {region.cols} "
                    f"elements apart, but they are {region.row_stride} apart here: compute a row's start from the "
                    "row stride your kernel is given (e.g. `row * stride`), not from the number of columns.")
        stride = next((s for s, ok in fits.items() if ok), None)
        if stride is not None:
            owners = " and ".join(dict.fromkeys(r.name for r in self.loads + self.stores
                                                if r.row_stride == stride and r.rows > 1))
            return (f"Every {kind} your kernel made there would be inside {region.name} if its rows were {stride} "
                    f"elements apart, the row stride of {owners}, but {region.name}'s rows are {region.row_stride} "
                    f"apart here: use {region.name}'s own row stride for {region.name}.")
        if region.past_a_row_or_the_end(address):
            if kind == "load":
                return ("The address lies past the last column of a row or past the last row: every lane of a load "
                        "must be masked to addresses inside its tensor (mask=..., other=...); a value loaded there "
                        "is garbage, and on a GPU the address may not exist.")
            return "The address lies past the last column of a row or past the last row: mask every store to the " \
                   "output's own elements."
        return ("The address is not one a missing mask explains (it is before the tensor, or between tensors): check "
                "how your kernel computes it (the program id, the offsets, the strides).")

    def check(self) -> None:
        """Raise ContractError for the first kind of access that went outside."""
        from course_utils.harness.errors import ContractError

        if self.outside["load"]:
            raise ContractError(
                f"your kernel loaded {self.outside['load']} value(s) from outside the tensors it was given (first: "
                f"{self.first['load']}). {self._advice('load')}")
        if self.outside["store"]:
            names = ", ".join(r.name for r in self.stores)
            raise ContractError(
                f"your kernel stored {self.outside['store']} value(s) outside its output(s) {names} (first: "
                f"{self.first['store']}). {self._advice('store')}")


_watching: list[tuple[threading.Thread, AccessLog]] = []  # the open watches, innermost last


def _install_watch() -> None:
    """Wrap the interpreter's masked load and store once; each call records into the watches of its thread."""
    from triton.runtime.interpreter import InterpreterBuilder
    from triton.runtime.interpreter import interpreter_builder as builder

    if "create_masked_load" in vars(builder):
        return

    def checked_load(ptrs, mask, other, cache_policy, is_volatile):
        for thread, log in list(_watching):
            if thread is threading.current_thread():
                log._record("load", log.loads, ptrs.data, mask.data)
        return InterpreterBuilder.create_masked_load(builder, ptrs, mask, other, cache_policy, is_volatile)

    def checked_store(ptrs, value, mask, cache_policy):
        for thread, log in list(_watching):
            if thread is threading.current_thread():
                log._record("store", log.stores, ptrs.data, mask.data)
        return InterpreterBuilder.create_masked_store(builder, ptrs, value, mask, cache_policy)

    builder.create_masked_load, builder.create_masked_store = checked_load, checked_store


@contextlib.contextmanager
def watch_accesses(loads: dict[str, "Guarded | torch.Tensor"], stores: dict[str, "Guarded | torch.Tensor"]):
    """Within the block, record every load and store of Triton's interpreter, made by this thread, whose
    address is not an element of one of ``loads`` (outputs may be read too) or ``stores``. Yields an
    :class:`AccessLog`: its ``counts`` are the element loads and stores inside each tensor, its ``check()``
    (call it after the launch) raises for any access outside them.

    Only where the interpreter reads these tensors' own memory (CPU tensors): with compiled Triton (a GPU),
    or the interpreter on GPU tensors (it copies them to the host), nothing is recorded, and the guards
    around the buffers are what keep stray accesses inside the allocation.
    """
    from course_utils.runtime import triton_interpreting

    store_regions = [_region(n, t) for n, t in stores.items()]
    load_regions = [_region(n, t) for n, t in loads.items()] + store_regions
    log = AccessLog(load_regions, store_regions)
    tensors = [t.view if isinstance(t, Guarded) else t for t in [*loads.values(), *stores.values()]]
    if not triton_interpreting() or any(t.device.type != "cpu" for t in tensors):
        yield log
        return
    _install_watch()
    entry = (threading.current_thread(), log)
    _watching.append(entry)
    try:
        yield log
    finally:
        _watching.remove(entry)
