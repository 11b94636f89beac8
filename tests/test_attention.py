"""Attention in pieces (course_utils.attention, and the ring's processes in course_utils.distributed): merging
partial attention, tiled attention, and ring attention simulated and across processes, against SDPA."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention import attention_with_lse, merge_partial_attention, ring_attention_simulated
from course_utils.distributed import ring_inputs, run_workers


@pytest.mark.parametrize("parts", [1, 2, 5])
def test_merging_parts_gives_full_attention(parts):
    torch.manual_seed(2)
    q, k, v = torch.randn(2, 7, 8), torch.randn(2, 20, 8), torch.randn(2, 20, 8)
    o = torch.zeros(2, 7, 8)
    lse = torch.full((2, 7), float("-inf"))
    for ks, vs in zip(k.chunk(parts, dim=1), v.chunk(parts, dim=1)):
        o, lse = merge_partial_attention(o, lse, *attention_with_lse(q, ks, vs))
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lse, torch.logsumexp(q @ k.transpose(1, 2) / math.sqrt(8), -1))


@pytest.mark.parametrize("block", [1, 8, 16, 64])
def test_tiled_attention_matches_sdpa(block):
    from course_utils.attention import tiled_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 37, 16, generator=g) for _ in range(3))
    torch.testing.assert_close(tiled_attention(q, k, v, block), F.scaled_dot_product_attention(q, k, v))
    big = q * 100  # scores in the thousands: the running max keeps exp finite
    torch.testing.assert_close(tiled_attention(big, k, v, block), F.scaled_dot_product_attention(big, k, v),
                               atol=1e-4, rtol=1e-4)  # float32 scores of ~1e3 carry ~1e-4 absolute rounding


@pytest.mark.parametrize("world_size", [1, 3, 4])
def test_ring_attention_simulated_matches_sdpa(world_size):
    q, k, v = ring_inputs(2, 2, 24, 8, seed=3)
    o, _ = ring_attention_simulated(q, k, v, world_size)
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v, is_causal=True), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("world_size,causal", [(3, True), (2, False)])
def test_ring_attention_across_processes(world_size, causal):
    batch, heads, seq, dim = 1, 2, 48, 8
    ranks = run_workers("ring_attention", world_size, batch=batch, heads=heads, seq=seq, head_dim=dim,
                        causal=causal, seed=4, timeout_s=120)
    q, k, v = ring_inputs(batch, heads, seq, dim, seed=4)
    out = torch.cat([r["o"] for r in ranks], dim=2)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), rtol=1e-5, atol=1e-6)
    block_bytes = 2 * batch * heads * (seq // world_size) * dim * 4  # one K and one V block, float32
    assert all(r["bytes_sent"] == (world_size - 1) * block_bytes for r in ranks)
    expected_blocks = [rank + 1 for rank in range(world_size)] if causal else [world_size] * world_size
    assert [r["blocks_computed"] for r in ranks] == expected_blocks


def test_ring_attention_refuses_a_length_that_does_not_split():
    from course_utils.distributed import DistributedError

    with pytest.raises(DistributedError, match="divisible by world_size"):
        run_workers("ring_attention", 3, seq=50, timeout_s=60)
