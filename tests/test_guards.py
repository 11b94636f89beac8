"""Guarded buffers for learners' Triton kernels (course_utils.harness.guards): layout, and the messages that name a
write outside a tensor or an element never written."""
import math

import pytest
import torch
from conftest import requires_triton

from course_utils.harness.exercises import ContractError
from course_utils.harness.guards import SENTINEL, check_untouched, check_written, guarded


def test_an_input_sits_inside_its_guard_with_padded_rows():
    x = torch.arange(12.0).view(3, 4)
    g = guarded(x, float("nan"), margin=5, row_pad=3)
    assert torch.equal(g.view, x) and g.view.stride() == (7, 1)
    assert g.flat.numel() == 5 + 3 * 7 + 5
    assert int(torch.isnan(g.flat).sum()) == g.flat.numel() - 12 and int(g.inside.sum()) == 12


def test_a_store_past_a_row_is_named():
    g = guarded((3, 4), SENTINEL, margin=8, row_pad=2)
    g.view.fill_(1.0)
    check_untouched(g, "y", "fix")
    g.flat[8 + 1 * 6 + 4] = 0.5  # row 1, column 4: one past the end of the row
    with pytest.raises(ContractError, match=r"row 1, column 4 of y, which has 4 columns\). fix"):
        check_untouched(g, "y", "fix")


@pytest.mark.parametrize("index,where", [(0, "8 elements before the start"), (-1, "8 elements past the end")])
def test_a_store_outside_the_buffer_is_named(index, where):
    g = guarded((5,), SENTINEL, margin=8)
    g.view.fill_(2.0)
    g.flat[index] = float("nan")  # a NaN over the sentinel counts as a write too
    with pytest.raises(ContractError, match=where):
        check_untouched(g, "loss", "fix")


def test_an_element_never_written_is_named():
    g = guarded((2, 3), SENTINEL, margin=4)
    g.view[0].fill_(1.0)
    with pytest.raises(ContractError, match=r"left 3 of 6 elements of o unwritten \(first at index \[1, 0\]\)"):
        check_written(g, "o", "fix")


def test_a_nan_guard_counts_only_non_nan_changes():
    g = guarded(torch.ones(4), math.nan, margin=3)
    g.flat[0] = math.nan
    check_untouched(g, "x", "fix")
    g.flat[0] = 0.0
    with pytest.raises(ContractError):
        check_untouched(g, "x", "fix")


@requires_triton
def test_the_interpreter_names_a_load_outside_every_tensor():
    import os

    from course_utils.harness.guards import watch_accesses
    from course_utils.runtime import import_triton

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("access watching needs Triton's interpreter")
    triton, tl = import_triton()

    @triton.jit
    def copy(x_ptr, y_ptr, n, BLOCK: tl.constexpr, MASK_LOAD: tl.constexpr):
        offs = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + offs, mask=offs < n) if MASK_LOAD else tl.load(x_ptr + offs)
        tl.store(y_ptr + offs, x, mask=offs < n)

    x = guarded(torch.arange(5.0), float("nan"), margin=8)
    y = guarded((5,), SENTINEL, margin=8)
    with watch_accesses(loads={"x": x}, stores={"y": y}) as log:
        copy[(1,)](x.view, y.view, 5, BLOCK=8, MASK_LOAD=True)
    log.check()
    assert torch.equal(y.view, torch.arange(5.0))
    with watch_accesses(loads={"x": x}, stores={"y": y}) as log:
        copy[(1,)](x.view, y.view, 5, BLOCK=8, MASK_LOAD=False)
    with pytest.raises(ContractError, match=r"loaded 3 value\(s\) from outside .* 1 elements past the end of x"):
        log.check()


def test_an_address_in_a_guarded_buffer_is_named_after_its_tensor_wherever_others_lie():
    """CI once failed because of this: a read 100 elements before the logits was named after whichever other
    tensor the allocator had put closer, so the same kernel gave two different messages in two runs."""
    from course_utils.harness.guards import AccessLog, _Region

    logits = _Region("logits", base=10_000, rows=6, cols=100, row_stride=131, itemsize=4, allocation=(9_500, 14_000))
    target = _Region("target", base=9_400, rows=1, cols=6, row_stride=6, itemsize=8)  # ends 52 bytes before its buffer
    stray = logits.base - 100 * 4  # row[-100] of row 0: in the logits' margin, 160 bytes from target
    assert target.distance(stray) < logits.base - stray  # closer to target by plain distance...
    log = AccessLog([logits, target], [])
    import numpy as np
    log._record("load", log.loads, np.array([stray]), np.array([True]))
    assert log.first["load"] == "100 elements before the start of logits"  # ...but named after its own tensor


def test_past_the_end_counts_from_the_last_element():
    g = guarded((2, 3), SENTINEL, margin=8, row_pad=2)
    g.view.fill_(1.0)
    g.flat[8 + 1 * 5 + 3 + 2] = 0.0  # 3 elements past the last one (row 1 ends at column 2)
    with pytest.raises(ContractError, match="3 elements past the end of y"):
        check_untouched(g, "y", "fix")


def test_verdicts_treat_equal_infinities_as_equal():
    from course_utils.report import agreement, format_tolerance

    masked = torch.tensor([1.0, float("-inf"), 2.0])
    assert agreement(masked, masked.clone(), 1e-6, "itself") == "matches itself within 1e-6"
    assert format_tolerance(2.5e-5) == "2.5e-5" and format_tolerance(1e-5) == "1e-5"


@requires_triton
def test_an_outside_access_says_stride_or_mask_as_the_addresses_show():
    """A kernel that takes the number of columns for the row stride is told about the stride, not about masks; one
    that takes another tensor's row stride is told whose; one without a column mask is told about the mask."""
    import os

    from course_utils.harness.guards import watch_accesses
    from course_utils.runtime import import_triton

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("access watching needs Triton's interpreter")
    triton, tl = import_triton()

    @triton.jit
    def rows_copy(x_ptr, y_ptr, n_cols, x_stride, y_stride, BLOCK: tl.constexpr, USE_STRIDE: tl.constexpr,
                  MASK: tl.constexpr):
        row = tl.program_id(0)
        offs = tl.arange(0, BLOCK)
        mask = offs < n_cols if MASK else offs < BLOCK
        start = row * x_stride if USE_STRIDE else row * n_cols
        x = tl.load(x_ptr + start + offs, mask=mask, other=0.0)
        tl.store(y_ptr + row * y_stride + offs, x, mask=offs < n_cols)

    x = guarded(torch.arange(15.0).view(3, 5), float("nan"), margin=8, row_pad=3)
    y = guarded((3, 5), SENTINEL, margin=8, row_pad=1)

    def run(use_stride, mask, y_stride=y.view.stride(0)):
        with watch_accesses(loads={"x": x}, stores={"y": y}) as log:
            rows_copy[(3,)](x.view, y.view, 5, x.view.stride(0), y_stride, BLOCK=8, USE_STRIDE=use_stride,
                            MASK=mask)
        return log

    run(True, True).check()
    with pytest.raises(ContractError, match=r"if its rows were 5 elements apart, but they are 8 apart") as stride:
        run(False, True).check()
    assert "mask" not in str(stride.value).split("(first:")[1].split(")")[1]
    with pytest.raises(ContractError, match=r"if its rows were 8 elements apart, the row stride of x, but y's rows are "
                                            r"6 apart here: use y's own row stride for y"):
        run(True, True, y_stride=x.view.stride(0)).check()
    with pytest.raises(ContractError, match=r"past the last column of a row or past the last row: every lane of a "
                                            r"load must be masked"):
        run(True, False).check()


@requires_triton
def test_a_nan_from_the_kernels_own_arithmetic_is_not_blamed_on_a_mask(monkeypatch):
    """In the interpreter every load is watched, so a NaN in the output came from the kernel's arithmetic (here exp
    overflowing to inf, then inf / inf), not from the NaN guards: the note says so."""
    import os

    from course_utils import check
    from course_utils.harness.guards import GUARD_NOTE
    from course_utils.runtime import import_triton

    if os.environ.get("TRITON_INTERPRET") != "1":
        pytest.skip("the access watch needs Triton's interpreter")
    triton, tl = import_triton()

    @triton.jit
    def softmax_without_max(x_ptr, y_ptr, x_row_stride, y_row_stride, n_cols, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        x = tl.load(x_ptr + row * x_row_stride + cols, mask=cols < n_cols, other=-float("inf"))
        e = tl.exp(x)
        tl.store(y_ptr + row * y_row_stride + cols, e / tl.sum(e, axis=0), mask=cols < n_cols)

    monkeypatch.setenv("COURSE_COMPILE_CHECK", "0")
    result = check("1.4", softmax_without_max)
    assert not result.passed and "huge logits" in result.message and "NaN" in result.message
    assert "comes from its own arithmetic" in result.message and GUARD_NOTE not in result.message
