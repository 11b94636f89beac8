"""The answers that live in solutions/ itself (chapters 0 and 1; the other chapters' answers live in their concept
modules and are tested there), against independent references: PyTorch's own functions and autograd."""
import pytest
import torch
import torch.nn.functional as F

from solutions.ch00_start_here import mean_squared_error
from solutions.ch01_backpropagation import clip_grad_norm, residual_input_grad, swiglu_grads


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
