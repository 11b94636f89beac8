"""Stable softmax (course_utils.stability): the safe and online versions against torch, the online update's
statistics, and where the naive version overflows."""
import math

import pytest
import torch

from course_utils.stability import (
    naive_softmax,
    online_softmax,
    online_softmax_update,
    safe_softmax,
    softmax_under_shift,
)


@pytest.mark.parametrize("shape", [(1, 1), (4, 10), (2, 3, 17), (5, 1000)])
def test_safe_and_online_softmax_match_torch(shape):
    x = 20 * torch.randn(shape)
    torch.testing.assert_close(safe_softmax(x), torch.softmax(x, -1))
    x2 = x.reshape(-1, shape[-1])
    for block in (1, 3, 64):
        torch.testing.assert_close(online_softmax(x2, block), torch.softmax(x2, -1))


def test_softmax_edge_values():
    x = torch.tensor([[1e4, -1e4, 0.0], [-math.inf, 2.0, -math.inf], [-1e4, -1e4 - 1, -1e4 - 2]])
    torch.testing.assert_close(safe_softmax(x), torch.softmax(x, -1))
    torch.testing.assert_close(online_softmax(x, 2), torch.softmax(x, -1))
    assert naive_softmax(x)[0].isnan().any() and naive_softmax(x)[2].isnan().all()


def test_online_update_from_nothing_equals_one_block_statistics():
    x = torch.randn(4, 9)
    m, d = online_softmax_update(torch.full((4,), -math.inf), torch.zeros(4), x)
    torch.testing.assert_close(m, x.amax(-1))
    torch.testing.assert_close(d, torch.exp(x - m[:, None]).sum(-1))
    torch.testing.assert_close(m + torch.log(d), torch.logsumexp(x, -1))


def test_online_update_keeps_all_masked_rows_finite():
    m, d = online_softmax_update(torch.full((2,), -math.inf), torch.zeros(2), torch.full((2, 3), -math.inf))
    assert torch.equal(d, torch.zeros(2)) and torch.isinf(m).all()


def test_softmax_under_shift_breaks_where_exp_overflows():
    ok = softmax_under_shift(88.0, torch.float32)
    broken = softmax_under_shift(89.0, torch.float32)
    assert not ok["naive"].isnan().any() and broken["naive"].isnan().any()
    assert not broken["safe"].isnan().any()
    torch.testing.assert_close(broken["safe"], broken["reference"], rtol=1e-5, atol=1e-6)
    assert softmax_under_shift(11.5, torch.float16)["naive"].isnan().any()
    assert not softmax_under_shift(10.5, torch.float16)["naive"].isnan().any()
