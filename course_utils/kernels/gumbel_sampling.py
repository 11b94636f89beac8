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

from course_utils.kernels.common import as_rows

MAX_BLOCK = 4096


@triton.jit
def _sample_kernel(logits_ptr, out_ptr, row_stride, n_cols, inv_temperature, log_min_p, seed,
                   BLOCK: tl.constexpr):
    """One draw per row (one program per row) from softmax(z / T), restricted to min-p, by the Gumbel-max trick.

    argmax_j (z_j / T + g_j) with g_j = -log(-log u_j), u_j uniform (``tl.rand``: [0, 1); u = 0 gives g = -inf,
    a token not drawn), is a sample from softmax(z / T).
    Pass 1: the row max M of z / T; pass 2: the argmax over tokens with z_j / T >= M + log(min_p) (probability
    at least min_p times the top one). Both passes stream the row in chunks of BLOCK, so any V works.
    logits_ptr: (rows, V) with row_stride; out_ptr: (rows,) int64; inv_temperature: 1 / T; log_min_p: log(min_p)
    (-inf for none); seed: u_j = tl.rand(seed, row * V + j).
    """
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
