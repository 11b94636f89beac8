"""The production Triton kernels (course_utils.kernels: softmax, SwiGLU, RMSNorm, LayerNorm, cross-entropy, AdamW,
FlashAttention), forward and backward, against eager PyTorch. (The Gumbel sampler's and the normal initialiser's
kernels are tested with their chapters' statistics, in test_sampling.py and test_initialization.py.)

On CPU they run in Triton's interpreter in float32 (and float16 where the interpreter supports it);
on a GPU the same tests run compiled, plus bfloat16.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from course_utils.attention import attention_with_lse
from course_utils.runtime import device, triton_status

pytestmark = [pytest.mark.skipif(not triton_status().available, reason=triton_status().reason), pytest.mark.kernel]

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
    from course_utils.harness.launchers import launch_row_kernel
    from solutions.ch01_backpropagation import softmax_row_kernel

    for shape in [(5, 123), (1, 1), (8, 256)]:
        x = 10 * torch.randn(shape, device=DEVICE)
        torch.testing.assert_close(launch_row_kernel(softmax_row_kernel, x), torch.softmax(x, -1).cpu())


def test_launcher_refuses_a_plain_function():
    from course_utils.harness.launchers import launch_row_kernel

    with pytest.raises(TypeError, match="@triton.jit"):
        launch_row_kernel(lambda *a, **k: None, torch.randn(2, 3, device=DEVICE))


# ------------------------------------------------------------------------- RMSNorm and LayerNorm

NORM_SHAPES = [(1, 1), (5, 123), (37, 781), (2, 3, 17), (4, 4096)]


def _norm_case(shape, dtype, with_bias):
    torch.manual_seed(2)
    n = shape[-1]
    x = (3 * torch.randn(shape, device=DEVICE) + 1).to(dtype)
    params = [torch.randn(n, device=DEVICE, dtype=dtype) for _ in range(2 if with_bias else 1)]
    return x, params, torch.randn(shape, device=DEVICE, dtype=dtype)


def _compare_fwd_bwd(ours, theirs, x, params, dy, tol):
    """Kernel in x's dtype against PyTorch in float64 on the same values: in half precision PyTorch's
    own eager backward rounds differently (dweight sums rows in float16 on the CPU), so the exact
    answer, not another rounding of it, is the reference."""
    mine = [t.clone().requires_grad_() for t in (x, *params)]
    ref = [t.double().requires_grad_() for t in (x, *params)]
    out, out_ref = ours(*mine), theirs(*ref)
    torch.testing.assert_close(out, out_ref.to(out.dtype), **tol)
    out.backward(dy)
    out_ref.backward(dy.double())
    for name, a, r in zip(["x", "weight", "bias"], mine, ref):
        # dweight/dbias are sums over rows: allow for float32 summation order at least
        torch.testing.assert_close(a.grad, r.grad.to(a.dtype), **(tol or dict(rtol=1e-4, atol=1e-4)), msg=name)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_rmsnorm_forward_backward(shape, dtype):
    from course_utils.kernels.rmsnorm import rmsnorm_triton

    x, params, dy = _norm_case(shape, dtype, with_bias=False)
    n = shape[-1]
    _compare_fwd_bwd(rmsnorm_triton, lambda x, w: F.rms_norm(x, (n,), w, 1e-6), x, params, dy, TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", NORM_SHAPES, ids=str)
def test_layernorm_forward_backward(shape, dtype):
    from course_utils.kernels.layernorm import layernorm_triton

    x, params, dy = _norm_case(shape, dtype, with_bias=True)
    n = shape[-1]
    _compare_fwd_bwd(layernorm_triton, lambda x, w, b: F.layer_norm(x, (n,), w, b, 1e-5), x, params, dy, TOL[dtype])


def test_norm_kernels_non_contiguous_constant_rows_and_errors():
    from course_utils.kernels.layernorm import layernorm_triton
    from course_utils.kernels.rmsnorm import rmsnorm_triton

    base = torch.randn(40, 33, device=DEVICE)
    x = base.t()  # (33, 40), not contiguous along rows
    w, b = torch.randn(40, device=DEVICE), torch.randn(40, device=DEVICE)
    torch.testing.assert_close(rmsnorm_triton(x, w), F.rms_norm(x, (40,), w, 1e-6))
    torch.testing.assert_close(layernorm_triton(x, w, b), F.layer_norm(x, (40,), w, b, 1e-5))
    constant = torch.full((3, 40), 2.5, device=DEVICE)  # variance 0: only eps keeps it finite
    torch.testing.assert_close(layernorm_triton(constant, w, b), F.layer_norm(constant, (40,), w, b, 1e-5))
    assert rmsnorm_triton(torch.empty(0, 40, device=DEVICE), w).shape == (0, 40)
    with pytest.raises(ValueError, match="weight must have shape"):
        rmsnorm_triton(x, torch.randn(39, device=DEVICE))
    with pytest.raises(ValueError, match="bias must have shape"):
        layernorm_triton(x, w, torch.randn(41, device=DEVICE))


def test_rmsnorm_exercise_kernel_matches_torch():
    from course_utils.harness.launchers import launch_rmsnorm_fwd
    from solutions.ch03_normalization import rmsnorm_fwd_kernel

    for shape in [(5, 123), (1, 1), (8, 256)]:
        x, w = torch.randn(shape, device=DEVICE), torch.randn(shape[-1], device=DEVICE)
        y, rstd = launch_rmsnorm_fwd(rmsnorm_fwd_kernel, x, w, 1e-6)
        torch.testing.assert_close(y, F.rms_norm(x, (shape[-1],), w, 1e-6).cpu())
        torch.testing.assert_close(rstd, torch.rsqrt(x.pow(2).mean(-1) + 1e-6).cpu())


def test_softmax_zero_dim_and_empty_rows():
    from course_utils.kernels.softmax import softmax_triton

    torch.testing.assert_close(softmax_triton(torch.tensor(3.0, device=DEVICE)),
                               torch.softmax(torch.tensor(3.0, device=DEVICE), -1))
    assert softmax_triton(torch.empty(2, 3, 0, device=DEVICE)).shape == (2, 3, 0)


# ------------------------------------------------------------------------------ fused cross-entropy

@pytest.mark.parametrize("eps", [0.0, 0.1], ids=["plain", "smoothed"])
@pytest.mark.parametrize("shape", [(1, 1), (5, 123), (37, 781), (3, 5000), (4, 10000)], ids=str)
def test_cross_entropy_loss_and_gradient(shape, eps):
    from course_utils.kernels.cross_entropy import cross_entropy_triton

    torch.manual_seed(3)
    n, v = shape
    z = 3 * torch.randn(shape, device=DEVICE)
    y = torch.randint(0, v, (n,), device=DEVICE)
    if n > 2:
        y[1] = -100
    a, b = z.clone().requires_grad_(), z.clone().requires_grad_()
    loss, loss_ref = cross_entropy_triton(a, y, label_smoothing=eps), F.cross_entropy(b, y, label_smoothing=eps)
    torch.testing.assert_close(loss, loss_ref)
    (2 * loss).backward()  # an upstream gradient other than 1
    (2 * loss_ref).backward()
    torch.testing.assert_close(a.grad, b.grad)


def test_cross_entropy_extreme_logits_ignored_rows_and_in_place():
    from course_utils.kernels.cross_entropy import cross_entropy_triton

    z = torch.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 0.0], [-math.inf, 1.0, 2.0]], device=DEVICE)
    y = torch.tensor([2, -100, 1], device=DEVICE)
    torch.testing.assert_close(cross_entropy_triton(z, y), F.cross_entropy(z, y))
    assert cross_entropy_triton(z, torch.full((3,), -100, device=DEVICE)).isnan()
    first_block_masked = torch.randn(2, 5000, device=DEVICE)
    first_block_masked[:, :4096] = -math.inf  # the whole first chunk of the vocabulary is -inf
    y2 = torch.tensor([4500, 4999], device=DEVICE)
    torch.testing.assert_close(cross_entropy_triton(first_block_masked, y2), F.cross_entropy(first_block_masked, y2))
    w = torch.randn(8, 16, device=DEVICE, requires_grad=True)
    h = torch.randn(4, 8, device=DEVICE)
    target = torch.tensor([1, 5, -100, 15], device=DEVICE)
    loss = cross_entropy_triton(h @ w, target, inplace_grad=True)
    # the loss too: the target's logit is read before the gradient overwrites the logits
    torch.testing.assert_close(loss, F.cross_entropy(h @ w, target))
    loss.backward()
    w_ref = w.detach().clone().requires_grad_()
    F.cross_entropy(h @ w_ref, target).backward()
    torch.testing.assert_close(w.grad, w_ref.grad)
    with pytest.raises(ValueError, match="target values must be in"):
        cross_entropy_triton(z, torch.tensor([0, 3, 1], device=DEVICE))


def test_cross_entropy_row_kernel_answer_matches_torch():
    from course_utils.harness.launchers import launch_ce_row_kernel
    from solutions.ch04_loss_functions import cross_entropy_row_kernel

    z, y = 5 * torch.randn(6, 123, device=DEVICE), torch.tensor([0, 5, -100, 122, 7, -100], device=DEVICE)
    expected = F.cross_entropy(z, y, reduction="none").cpu()
    torch.testing.assert_close(launch_ce_row_kernel(cross_entropy_row_kernel, z, y), expected)


@pytest.mark.parametrize("offset", [1e3, 1e5])
def test_cross_entropy_large_near_tied_logits_do_not_cancel(offset):
    from course_utils.kernels.cross_entropy import cross_entropy_triton

    torch.manual_seed(4)
    z = offset + torch.randn(8, 50, device=DEVICE)  # large and close together: log d is not negligible
    y = torch.randint(0, 50, (8,), device=DEVICE)
    for eps in (0.0, 0.1):
        a, b = z.clone().requires_grad_(), z.double().requires_grad_()
        loss, loss_ref = cross_entropy_triton(a, y, label_smoothing=eps), F.cross_entropy(b, y, label_smoothing=eps)
        loss.backward()
        loss_ref.backward()
        torch.testing.assert_close(loss, loss_ref.float())  # against float64: exact up to float32 rounding
        torch.testing.assert_close(a.grad, b.grad.float())


@pytest.mark.parametrize("shapes", [[(1,), (5,), (1023,)], [(1025,), (37, 29), (2049,)]], ids=["small", "multi-block"])
def test_triton_adamw_matches_torch_over_many_steps(shapes):
    from course_utils.kernels.adamw import TritonAdamW

    torch.manual_seed(0)
    ours = [torch.randn(s, device=DEVICE).requires_grad_() for s in shapes]
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    hyper = dict(lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    opt, ref = TritonAdamW(ours, **hyper), torch.optim.AdamW(theirs, **hyper)
    for step in range(30):
        for a, b in zip(ours, theirs):
            g = torch.randn_like(a) * (0.0 if step == 3 else 1.0)  # one all-zero gradient step
            a.grad, b.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    for a, b in zip(ours, theirs):
        # the kernel computes beta*m + (1-beta)*g where torch uses lerp: 1-ulp differences per step
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(opt.state[a]["exp_avg_sq"], ref.state[b]["exp_avg_sq"], rtol=1e-5, atol=1e-9)


def test_triton_adamw_launcher_rejects_bad_input_and_skips_empty():
    from course_utils.kernels.adamw import adamw_step_

    p = torch.zeros(4, device=DEVICE)
    with pytest.raises(ValueError, match="float32"):
        adamw_step_(p, p.half(), p.clone(), p.clone(), 1, lr=0.1)
    with pytest.raises(ValueError, match="contiguous"):
        adamw_step_(torch.zeros(4, 4, device=DEVICE).t(),
                    *(torch.zeros(4, 4, device=DEVICE) for _ in range(3)), 1, lr=0.1)
    with pytest.raises(ValueError, match="step counts from 1"):
        adamw_step_(p, p.clone(), p.clone(), p.clone(), 0, lr=0.1)
    with pytest.raises(TypeError, match="triton.jit"):
        adamw_step_(p, p.clone(), p.clone(), p.clone(), 1, lr=0.1, kernel=lambda *a: None)
    empty = torch.zeros(0, device=DEVICE)
    adamw_step_(empty, empty.clone(), empty.clone(), empty.clone(), 1, lr=0.1)  # nothing to launch


# ------------------------------------------------------------------------------ FlashAttention

@pytest.mark.parametrize("shape", [(1, 1, 1, 16), (1, 2, 37, 24), (2, 1, 50, 16), (1, 2, 130, 64)], ids=str)
@pytest.mark.parametrize("causal", [False, True])
def test_flash_forward_and_backward_match_sdpa(shape, causal):
    from course_utils.kernels.flash_attention import flash_attention_forward, flash_attention_triton
    from course_utils.runtime import device

    torch.manual_seed(0)
    q, k, v = (torch.randn(shape, device=device()) for _ in range(3))
    o, lse, _ = flash_attention_forward(q, k, v, causal=causal)
    torch.testing.assert_close(o, F.scaled_dot_product_attention(q, k, v, is_causal=causal), rtol=1e-5, atol=2e-6)
    _, ref_lse = attention_with_lse(q, k, v, causal=causal)
    torch.testing.assert_close(lse, ref_lse, rtol=1e-5, atol=1e-5)
    leaves = [t.clone().requires_grad_() for t in (q, k, v)]
    refs = [t.clone().requires_grad_() for t in (q, k, v)]
    grad = torch.randn_like(q)
    flash_attention_triton(*leaves, causal=causal).backward(grad)
    F.scaled_dot_product_attention(*refs, is_causal=causal).backward(grad)
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-4, atol=1e-5)  # recomputed P vs SDPA's own backward


def test_flash_forward_half_precision_and_huge_scores():
    from course_utils.kernels.flash_attention import flash_attention_forward

    torch.manual_seed(1)
    q, k, v = (torch.randn(1, 2, 33, 16) for _ in range(3))
    o, _, _ = flash_attention_forward(q.half(), k.half(), v.half(), causal=True)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), is_causal=True)
    torch.testing.assert_close(o.double().cpu(), ref, rtol=2e-3, atol=2e-3)  # float16 inputs and output
    o, _, _ = flash_attention_forward(100 * q, k, v)  # scores in the hundreds: the running max keeps exp finite
    assert torch.isfinite(o).all()
    torch.testing.assert_close(o.cpu(), F.scaled_dot_product_attention(100 * q, k, v), rtol=1e-4, atol=1e-4)


def test_flash_byte_counter_matches_the_tiling():
    from course_utils.kernels.flash_attention import flash_attention_forward

    B, H, N, D, block = 1, 2, 128, 32, 32
    q = k = v = torch.randn(B, H, N, D)
    blocks = N // block
    qo = B * H * N * (D * 4 + D * 4 + 4)  # read Q, write O and the LSE
    _, _, full = flash_attention_forward(q, k, v, causal=False, block_m=block, block_n=block, count_bytes=True)
    assert full == qo + B * H * blocks * N * 2 * D * 4  # every query block reads all of K and V
    _, _, causal = flash_attention_forward(q, k, v, causal=True, block_m=block, block_n=block, count_bytes=True)
    assert causal == qo + B * H * sum(i + 1 for i in range(blocks)) * block * 2 * D * 4


def test_flash_backward_bytes_follow_from_its_loops():
    """dK/dV kernel: K, V read and dK, dV written once per key block; each key block streams Q, dO and the two
    row statistics of every query block it sees (all of them, or the causal ones from its own block on). dQ kernel:
    Q, dO, the statistics read and dQ written once, K and V streamed. Plus delta = rowsum(dO * O) in PyTorch."""
    from course_utils.kernels.flash_attention import flash_attention_backward, flash_attention_forward

    B, H, N, D, block = 1, 2, 96, 16, 32
    torch.manual_seed(0)
    q, k, v, do = (torch.randn(B, H, N, D) for _ in range(4))
    blocks, elt = N // block, 4
    for causal in (False, True):
        o, lse, _ = flash_attention_forward(q, k, v, causal=causal, block_m=block, block_n=block)
        *_, moved = flash_attention_backward(q, k, v, o, lse, do, causal=causal, scale=D ** -0.5, block_m=block,
                                             block_n=block, count_bytes=True)
        seen = sum(blocks - i for i in range(blocks)) if causal else blocks * blocks  # (key block, query block) pairs
        dkdv = B * H * (N * 4 * D * elt + seen * block * (2 * D * elt + 8))
        dq = B * H * (N * (3 * D * elt + 8) + seen * block * 2 * D * elt)
        delta = B * H * N * (2 * D * elt + 4)
        assert moved == dkdv + dq + delta, causal


def test_flash_backward_in_float16():
    """float16 inputs and gradients against float64 SDPA. (bfloat16 is compiled by the compiled tier; Triton 3.9's
    interpreter computes tl.dot on bfloat16 wrongly, forward included, so it cannot be checked numerically here.)"""
    from course_utils.kernels.flash_attention import flash_attention_triton

    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 33, 16) for _ in range(3))
    grad = torch.randn(1, 2, 33, 16)
    leaves = [t.half().requires_grad_() for t in (q, k, v)]
    refs = [t.double().requires_grad_() for t in (q, k, v)]
    flash_attention_triton(*leaves, causal=True).backward(grad.half())
    F.scaled_dot_product_attention(*refs, is_causal=True).backward(grad.double())
    for a, b in zip(leaves, refs):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=2e-2, atol=2e-2)


def test_flash_forward_rejects_mismatched_shapes():
    from course_utils.kernels.flash_attention import flash_attention_forward

    with pytest.raises(ValueError, match="one \\(B, H, N, D\\) shape"):
        flash_attention_forward(torch.randn(1, 1, 4, 16), torch.randn(1, 1, 5, 16), torch.randn(1, 1, 5, 16))
