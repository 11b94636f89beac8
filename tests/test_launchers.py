"""The guarded launchers that run a learner's Triton kernel for a Triton exercise (course_utils.harness.launchers):
a store outside the output is a message, not a crash. (Each launcher also runs every Triton exercise's answer and
mistakes in tests/test_exercise_catalogue.py.)"""
import pytest
import torch
from conftest import requires_triton

pytestmark = [requires_triton, pytest.mark.kernel]


def test_attention_exercise_launcher_reports_an_unmasked_store():
    from course_utils.harness.exercises import ContractError
    from course_utils.harness.launchers import launch_attention_kernel
    from course_utils.runtime import import_triton

    triton, tl = import_triton()

    @triton.jit
    def mean_of_v_without_store_mask(q_ptr, k_ptr, v_ptr, o_ptr, n_ctx, scale, BLOCK_M: tl.constexpr,
                                     BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr):
        offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, HEAD_DIM)
        tl.store(o_ptr + offs_m[:, None] * HEAD_DIM + offs_d[None, :], tl.zeros([BLOCK_M, HEAD_DIM], tl.float32))

    q = torch.randn(5, 16)
    with pytest.raises(ContractError, match="outside its output"):
        launch_attention_kernel(mean_of_v_without_store_mask, q, q, q)
