"""Triton kernels, forward and backward, against eager PyTorch.

On CPU they run in Triton's interpreter in float32 (and float16 where the interpreter supports it);
on a GPU the same tests run compiled, plus bfloat16.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.runtime import device, triton_status

pytestmark = pytest.mark.skipif(not triton_status().available, reason=triton_status().reason)

DEVICE = device()
DTYPES = [torch.float32, torch.float16] + ([torch.bfloat16] if DEVICE.type == "cuda" else [])
# Kernels accumulate in fp32 and round once; torch's half-precision eager ops round differently.
TOL = {torch.float32: {}, torch.float16: dict(rtol=2e-3, atol=2e-3), torch.bfloat16: dict(rtol=2e-2, atol=2e-2)}
SHAPES = [(1, 1), (5, 123), (37, 781), (3, 5000), (2, 3, 17)]


def _pair(x: torch.Tensor):
    return x.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_softmax_forward_backward(shape, dtype):
    from course_utils.kernels.softmax import softmax_triton

    torch.manual_seed(0)
    x, x_ref = _pair(3 * torch.randn(shape, device=DEVICE, dtype=dtype))
    dy = torch.randn(shape, device=DEVICE, dtype=dtype)
    y, y_ref = softmax_triton(x), torch.softmax(x_ref, dim=-1)
    torch.testing.assert_close(y, y_ref, **TOL[dtype])
    y.backward(dy)
    y_ref.backward(dy)
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL[dtype])


def test_softmax_non_contiguous_and_edge_values():
    from course_utils.kernels.softmax import softmax_triton

    base = torch.randn(40, 33, device=DEVICE)
    x = base.t()  # (33, 40), column stride 33: not contiguous along rows
    torch.testing.assert_close(softmax_triton(x), torch.softmax(x, -1))
    sliced = base[::3, 1:30]  # row stride 99, unit column stride: no copy needed
    torch.testing.assert_close(softmax_triton(sliced), torch.softmax(sliced, -1))
    edge = torch.tensor([[1e4, 0.0, -1e4], [-math.inf, 1.0, -math.inf], [-1e30, -1e30, -1e30]], device=DEVICE)
    torch.testing.assert_close(softmax_triton(edge), torch.softmax(edge, -1))
    empty = torch.empty(0, 7, device=DEVICE)
    assert softmax_triton(empty).shape == (0, 7)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(1,), (5, 123), (37, 781), (2, 3, 1025)], ids=str)
def test_swiglu_forward_backward(shape, dtype):
    from course_utils.kernels.swiglu import swiglu_triton

    torch.manual_seed(1)
    gate, gate_ref = _pair(2 * torch.randn(shape, device=DEVICE, dtype=dtype))
    up, up_ref = _pair(torch.randn(shape, device=DEVICE, dtype=dtype))
    dh = torch.randn(shape, device=DEVICE, dtype=dtype)
    h, h_ref = swiglu_triton(gate, up), F.silu(gate_ref) * up_ref
    torch.testing.assert_close(h, h_ref, **TOL[dtype])
    h.backward(dh)
    h_ref.backward(dh)
    torch.testing.assert_close(gate.grad, gate_ref.grad, **TOL[dtype])
    torch.testing.assert_close(up.grad, up_ref.grad, **TOL[dtype])


def test_swiglu_non_contiguous_and_large_values():
    from course_utils.kernels.swiglu import swiglu_triton

    g, u = torch.randn(2, 16, 24, device=DEVICE), torch.randn(2, 24, 16, device=DEVICE).transpose(1, 2)
    g[0, 0, :3] = torch.tensor([-100.0, 100.0, 0.0])  # sigmoid saturates both ways
    gate, gate_ref = _pair(g)
    up, up_ref = _pair(u)
    swiglu_triton(gate, up).sum().backward()
    (F.silu(gate_ref) * up_ref).sum().backward()
    torch.testing.assert_close(gate.grad, gate_ref.grad)
    torch.testing.assert_close(up.grad, up_ref.grad)


def test_swiglu_shape_mismatch_is_a_clear_error():
    from course_utils.kernels.swiglu import swiglu_triton

    with pytest.raises(ValueError, match="gate and up must match"):
        swiglu_triton(torch.randn(3, 4, device=DEVICE), torch.randn(4, 3, device=DEVICE))


def test_row_kernel_exercise_answer_matches_torch():
    from course_utils.kernels.softmax import launch_row_kernel
    from solutions.ch01_backpropagation import softmax_row_kernel

    for shape in [(5, 123), (1, 1), (8, 256)]:
        x = 10 * torch.randn(shape, device=DEVICE)
        torch.testing.assert_close(launch_row_kernel(softmax_row_kernel, x), torch.softmax(x, -1))


def test_launcher_refuses_a_plain_function():
    from course_utils.kernels.softmax import launch_row_kernel

    with pytest.raises(TypeError, match="@triton.jit"):
        launch_row_kernel(lambda *a, **k: None, torch.randn(2, 3, device=DEVICE))
