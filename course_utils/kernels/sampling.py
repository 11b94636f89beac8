"""Fused sampling: temperature, min-p filtering and a draw, one program per row, no softmax.

Gumbel-max trick: if g_i are independent Gumbel(0, 1) samples, argmax_i (z_i / T + g_i) is a draw
from softmax(z / T). A Gumbel sample is -log(-log u) for u uniform in (0, 1), and ``tl.rand(seed,
offset)`` gives u as a pure function of (seed, offset) (Philox, counter-based): no generator state,
the same draw whatever the grid: with offset = row * V + column, a row is re-drawn from (seed, row, V).

min-p in logits: p_i >= min_p * p_max  <=>  z_i / T >= max_j z_j / T + ln(min_p). So the kernel needs
the row max (pass 1) and one more pass with the noise (pass 2); the vocabulary is read in chunks of
BLOCK, so any vocabulary size works. Traffic: the logits are read twice, one int64 written per row.
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from course_utils.kernels.common import as_rows, require_triton_kernel

MAX_BLOCK = 4096


@triton.jit
def _sample_kernel(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, log_min_p, seed,
                   BLOCK: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    start = logits_ptr + row * row_stride
    cols = tl.arange(0, BLOCK)
    # pass 1: the row max of z / T (for the min-p threshold)
    row_max = -float("inf")
    for off in range(0, n_cols, BLOCK):
        z = tl.load(start + off + cols, mask=off + cols < n_cols, other=-float("inf")).to(tl.float32)
        row_max = tl.maximum(row_max, tl.max(z * inv_temperature, axis=0))
    threshold = row_max + log_min_p
    # pass 2: argmax of z / T + Gumbel noise over the tokens that pass min-p
    best_value = -float("inf")
    best_index = 0
    for off in range(0, n_cols, BLOCK):
        idx = off + cols
        valid = idx < n_cols
        z = tl.load(start + idx, mask=valid, other=-float("inf")).to(tl.float32) * inv_temperature
        u = tl.rand(seed, row * n_cols + idx)
        gumbel = -tl.log(-tl.log(u))
        score = tl.where(valid & (z >= threshold), z + gumbel, -float("inf"))
        chunk_best = tl.max(score, axis=0)
        chunk_index = tl.argmax(score, axis=0) + off
        better = chunk_best > best_value
        best_index = tl.where(better, chunk_index, best_index)
        best_value = tl.where(better, chunk_best, best_value)
    tl.store(out_ptr + row, best_index)


def sample_triton(logits: torch.Tensor, *, temperature: float = 1.0, min_p: float = 0.0, seed: int = 0) -> torch.Tensor:
    """One draw per row of logits (..., V) from softmax(logits / T) restricted to min-p; returns (...,) int64.

    temperature 0 is greedy (argmax, on the host). The result is a function of (logits, T, min_p, seed).
    """
    from course_utils.runtime import device

    if temperature < 0 or not 0.0 <= min_p <= 1.0:
        raise ValueError(f"need temperature >= 0 and 0 <= min_p <= 1, got {temperature}, {min_p}")
    if logits.shape[-1] == 0:
        raise ValueError("cannot sample from an empty vocabulary")
    if torch.isnan(logits).any() or not torch.isfinite(logits).any(dim=-1).all():
        raise ValueError("every row needs at least one finite logit and no NaN")
    if temperature == 0:
        return logits.argmax(dim=-1)
    rows = as_rows(logits.to(device()))
    out = torch.empty(rows.shape[0], dtype=torch.int64, device=rows.device)
    block = min(triton.next_power_of_2(rows.shape[1]), MAX_BLOCK)
    if rows.shape[0]:
        _sample_kernel[(rows.shape[0],)](rows, out, rows.stride(0), rows.shape[1], 1.0 / temperature,
                                         math.log(min_p) if min_p > 0 else -math.inf, seed, BLOCK=block)
    return out.view(logits.shape[:-1])


def launch_gumbel_kernel(kernel, logits: torch.Tensor, temperature: float, seed: int) -> torch.Tensor:
    """Launch a learner's one-block kernel with :func:`solutions.ch06_token_prediction.gumbel_max_kernel`'s
    signature on logits (rows, V); returns (rows,) int64 on the CPU.

    The rows lie in a guarded buffer (:mod:`course_utils.guards`) whose padding holds +inf, a value that
    wins every argmax: a lane at or beyond V that is not excluded is drawn, and reported as a token that
    does not exist.
    """
    from course_utils.exercises import ContractError
    from course_utils.guards import check_untouched, check_written, guarded, watch_accesses
    from course_utils.runtime import device

    require_triton_kernel(kernel)
    if logits.dim() != 2 or logits.shape[1] > MAX_BLOCK:
        raise ValueError(f"expected logits (rows, V) with V <= {MAX_BLOCK}, got {tuple(logits.shape)}")
    n_rows, n_cols = logits.shape
    block = triton.next_power_of_2(n_cols)
    margin = block + 16
    zg = guarded(logits.float(), float("inf"), margin=margin, row_pad=block - n_cols + 3, device=device())
    og = guarded((n_rows,), -1, margin=margin, dtype=torch.int64, device=device())
    with watch_accesses(loads={"logits": zg}, stores={"out": og}) as accesses:
        kernel[(n_rows,)](zg.view, og.view, zg.view.stride(0), n_cols, 1.0 / temperature, seed, BLOCK=block)
    accesses.check()
    check_untouched(og, "out", "Store one token id per row: tl.store(out_ptr + row, ...).")
    check_written(og, "out", "Every row stores the argmax of its scores.")
    ids = og.view.cpu().clone()
    bad = ((ids < 0) | (ids >= n_cols)).nonzero()
    if len(bad):
        row = int(bad[0, 0])
        raise ContractError(f"row {row} drew token id {int(ids[row])}, but the vocabulary has {n_cols} tokens (ids 0 "
                            f"to {n_cols - 1}): a lane at or beyond n_cols won the argmax.")
    return ids
