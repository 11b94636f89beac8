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

import math
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
    from course_utils.exercises import ContractError

    changed = _changed(buf)
    count = int(changed.sum())
    if not count:
        return
    first = int(changed.nonzero()[0, 0])
    body = buf.view.shape[0] * buf.row_stride if buf.view.dim() == 2 else buf.view.shape[0]
    if first < buf.margin:
        where = f"{buf.margin - first} elements before the start of {name}"
    elif first >= buf.margin + body:
        where = f"{first - buf.margin - body + 1} elements past the end of {name}"
    else:
        row, col = divmod(first - buf.margin, buf.row_stride)
        where = f"row {row}, column {col} of {name}, which has {buf.view.shape[1]} columns"
    raise ContractError(f"your kernel wrote {count} value(s) outside {name} (first: {where}). {fix}")


def check_written(buf: Guarded, name: str, fix: str) -> None:
    """Raise ContractError when some element of ``name`` still holds the sentinel: it was never written."""
    from course_utils.exercises import ContractError

    unwritten = buf.view == buf.fill
    if bool(unwritten.any()):
        idx = unwritten.nonzero()[0].tolist()
        raise ContractError(f"your kernel left {int(unwritten.sum())} of {unwritten.numel()} elements of {name} "
                            f"unwritten (first at index {idx}). {fix}")
