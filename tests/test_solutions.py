"""The reference answers against independent references: PyTorch's own functions and autograd."""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.stability import naive_softmax, online_softmax, safe_softmax, softmax_under_shift
from solutions.ch00_start_here import mean_squared_error
from solutions.ch01_backpropagation import clip_grad_norm, online_softmax_update, residual_input_grad, swiglu_grads


def test_mse_matches_torch():
    p, t = torch.randn(3, 5), torch.randn(3, 5)
    torch.testing.assert_close(mean_squared_error(p, t), F.mse_loss(p, t))


def test_residual_input_grad_matches_autograd_through_x_plus_f():
    torch.manual_seed(0)
    d = 6
    layer = torch.nn.Sequential(torch.nn.Linear(d, d), torch.nn.Tanh())
    x = torch.randn(d, requires_grad=True)
    out = x + layer(x)
    g = torch.randn(d)
    (autograd_grad,) = torch.autograd.grad(out, x, g)
    jacobian = torch.autograd.functional.jacobian(layer, x.detach())  # [i, j] = dF_i/dx_j
    torch.testing.assert_close(residual_input_grad(g[None], jacobian)[0], autograd_grad)


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


@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_swiglu_grads_match_autograd(scale):
    gate = (scale * torch.randn(3, 7, dtype=torch.float64)).requires_grad_()
    up = (scale * torch.randn(3, 7, dtype=torch.float64)).requires_grad_()
    grad_h = torch.randn(3, 7, dtype=torch.float64)
    (F.silu(gate) * up).backward(grad_h)
    grad_gate, grad_up = swiglu_grads(gate.detach(), up.detach(), grad_h)
    torch.testing.assert_close(grad_gate, gate.grad)
    torch.testing.assert_close(grad_up, up.grad)


@pytest.mark.parametrize("max_norm", [0.1, 1.0, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    grads = [torch.randn(3, 4), torch.randn(5), 10 * torch.randn(2, 2, 2)]
    params = [torch.nn.Parameter(torch.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = g.clone()
    torch_norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    clipped, norm = clip_grad_norm(grads, max_norm)
    torch.testing.assert_close(norm, torch_norm)
    for p, c in zip(params, clipped):
        torch.testing.assert_close(c, p.grad)


def test_softmax_under_shift_breaks_where_exp_overflows():
    ok = softmax_under_shift(88.0, torch.float32)
    broken = softmax_under_shift(89.0, torch.float32)
    assert not ok["naive"].isnan().any() and broken["naive"].isnan().any()
    assert not broken["safe"].isnan().any()
    torch.testing.assert_close(broken["safe"], broken["reference"], rtol=1e-5, atol=1e-6)
    assert softmax_under_shift(11.5, torch.float16)["naive"].isnan().any()
    assert not softmax_under_shift(10.5, torch.float16)["naive"].isnan().any()
