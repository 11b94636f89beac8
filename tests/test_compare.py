"""How a wrong output is described (course_utils.harness.compare.describe_mismatch): the difference in one sentence,
and a simple pattern (zeros, sign, shift, factor, offset, a few rows, the last column) only where it holds."""
import pytest
import torch
from conftest import fails_with

from course_utils.harness.compare import describe_mismatch


def test_returns_none():
    fails_with(lambda p, t: None, "expected a torch.Tensor, got NoneType", "forget to `return`")


def test_wrong_shape():
    fails_with(lambda p, t: ((p - t) ** 2).mean(dim=0, keepdim=True), "expected shape ()")


def test_wrong_dtype():
    fails_with(lambda p, t: ((p - t) ** 2).mean().double(), "expected dtype torch.float32")


def test_nan_output():
    fails_with(lambda p, t: ((p - t) ** 2).mean() * float("nan"), "NaN")


def test_describe_mismatch_on_nested_and_numbers():
    assert describe_mismatch((torch.ones(2), 1.0), (torch.ones(2), 1.0)) is None
    assert "output[1]" in describe_mismatch((torch.ones(2), 1.0), (torch.ones(2), 2.0))
    assert "expected 2 values" in describe_mismatch((1.0, 2.0), (1.0,))
    assert describe_mismatch(3.0, torch.tensor(3.0)) is None
    assert "worst at index [1, 0]" in describe_mismatch(torch.zeros(2, 2), torch.tensor([[0.0, 0.0], [5.0, 0.0]]))
    inf = float("inf")
    assert describe_mismatch(torch.tensor([inf, -inf]), torch.tensor([inf, -inf])) is None
    assert describe_mismatch(torch.tensor([inf]), torch.tensor([-inf])) is not None


@pytest.mark.parametrize("transform,phrase", [
    (lambda y: 2 * y, "times the answer"),
    (lambda y: -y, "sign flipped"),
    (lambda y: y + 0.5, "constant offset"),
    (lambda y: torch.roll(y, 1, dims=-1), "shifted by one position"),
])
def test_a_wrong_answer_of_a_simple_shape_is_described(transform, phrase):
    from solutions.ch03_normalization import rms_norm

    fails_with(lambda x, w, eps=1e-6: transform(rms_norm(x, w, eps)), phrase, exercise="3.2")


def test_wrong_rows_are_pointed_at():
    from solutions.ch01_backpropagation import safe_softmax

    def softmax(x):  # wrong in the first row only
        y = safe_softmax(x)
        y[..., 0, :] = 1.0 / x.shape[-1]
        return y

    fails_with(softmax, "rows are wrong", exercise="1.2")


@pytest.mark.parametrize("transform,phrase,not_phrase", [
    (lambda y: torch.zeros_like(y), "all zeros", "times the answer"),
    (lambda y: torch.cat([y[..., :-1], y[..., -1:] + 1], dim=-1), "Only the last column", "shifted"),
])
def test_diagnoses_say_only_what_holds(transform, phrase, not_phrase):
    from solutions.ch03_normalization import rms_norm

    result = fails_with(lambda x, w, eps=1e-6: transform(rms_norm(x, w, eps)), phrase, exercise="3.2")
    assert not_phrase not in result.message


def test_no_precision_diagnosis_for_a_wrong_eps():
    from solutions.ch03_normalization import rms_norm

    result = fails_with(lambda x, w, eps=1e-6: rms_norm(x, w, 10 * eps), exercise="3.2")
    assert "lower precision" not in result.message


def test_a_wrong_row_of_a_constant_answer_is_not_called_a_shift():
    exp = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    got = exp.clone()
    got[3] = 0.0
    message = describe_mismatch(exp, got)
    assert "shifted" not in message and "Only 1 of 4 rows" in message


# ------------------------------------------------------------- diagnoses named in tests/attempts/RATINGS.md

F64 = {torch.float64: (1e-7, 1e-7)}
ROWS = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.5]], dtype=torch.float64)


@pytest.mark.parametrize("expected,got,phrase", [
    (4.0, 5.0, "5/4 times the answer"),
    (4.0, 2.0, "square root of the answer"),
    (3.0, 9.0, "square of the answer"),
    (2.0, 2.0 * 2 ** 0.5, "√2 times the answer"),
    (4.0, -4.0, "sign flipped"),
    (2.0, float("inf"), "infinite"),
])
def test_a_wrong_number_is_related_to_the_answer_where_the_relation_is_simple(expected, got, phrase):
    assert phrase in describe_mismatch(torch.tensor(expected, dtype=torch.float64),
                                       torch.tensor(got, dtype=torch.float64), F64)
    assert phrase in describe_mismatch(expected, got)  # a Python number too


@pytest.mark.parametrize("expected,got,tolerances", [
    (4.07, 4.2, F64),  # 1.0319...: no small fraction
    (1e-9, 0.5, F64),  # an answer within atol of 0: a ratio would mean nothing
    (0.001, 1.7, {torch.float64: (0.03, 0.03)}),  # a statistic whose answer is noise around 0
])
def test_no_relation_is_claimed_where_none_holds(expected, got, tolerances):
    message = describe_mismatch(torch.tensor(expected, dtype=torch.float64), torch.tensor(got, dtype=torch.float64),
                                tolerances)
    assert "times the answer" not in message and "root" not in message


def test_a_statistic_gets_a_rough_ratio():
    message = describe_mismatch(torch.tensor(2.0, dtype=torch.float64), torch.tensor(2.83, dtype=torch.float64),
                                {torch.float64: (0.03, 0.03)})
    assert "about 1.4 times the answer" in message


def test_outputs_in_the_wrong_order_and_the_other_outputs_are_named():
    a, b, c = torch.arange(3.0), torch.arange(3.0) + 10, torch.ones(2)
    message = describe_mismatch((a, b, c), (b, a, c), names=("m", "d", "c"))
    assert "Your m is the answer's d, and your d the answer's m: the outputs in the wrong order?" in message
    assert "Also wrong" not in message and "Right: c." in message
    message = describe_mismatch((a, b, c), (a, b + 1, 2 * c), names=("m", "d", "c"))
    assert message.startswith("d: ") and "Also wrong: c." in message and "Right: m." in message
    # single numbers that happen to be equal say nothing about the order
    assert "is the answer's" not in describe_mismatch((1.0, 2.0), (2.0, 2.0))


def test_a_factor_per_row_or_per_column_is_named():
    per_row = ROWS * torch.tensor([[0.5], [2.0], [3.0]], dtype=torch.float64)
    assert "Each row (along the last dimension) is the answer times a factor of its own (from 0.5 to 3)" in (
        describe_mismatch(ROWS, per_row, F64))
    per_column = ROWS * torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    assert "Each column (the last index) is the answer times a factor of its own" in describe_mismatch(
        ROWS, per_column, F64)
    one_row = ROWS.clone()
    one_row[1] *= 2.0
    assert "factor of its own" not in describe_mismatch(ROWS, one_row, F64)  # one wrong row: said as such


def test_the_two_halves_swapped():
    exp = torch.arange(12.0, dtype=torch.float64).view(3, 4) ** 2
    assert "two halves of dimension 1 swapped" in describe_mismatch(exp, exp.roll(2, dims=1), F64)


def test_a_mask_that_decided_differently():
    inf = float("inf")
    exp = torch.tensor([1.0, 2.0, -inf, -inf])
    message = describe_mismatch(exp, torch.tensor([-inf, 2.0, 0.5, -inf]))
    assert message.endswith("Every finite value matches; only which entries are -inf differs: you set 1 to -inf "
                            "where the answer keeps a value (first at index [0]); you keep 1 that the answer sets to "
                            "-inf (first at index [2]).")
    assert "-inf differs" not in describe_mismatch(exp, torch.tensor([-inf, 3.0, -inf, -inf]))  # 2 -> 3 too
    assert "an overflow" in describe_mismatch(torch.tensor([1.0, 2.0]), torch.tensor([inf, 2.5]))


def test_integer_outputs_a_shift_and_one_value_for_another():
    labels = torch.tensor([-100, -100, 5, 6, 7, -100])
    message = describe_mismatch(labels, torch.cat([labels[1:], torch.tensor([-100])]))
    assert message.startswith("4 of 6 values differ") and "shifted by one position along dimension 0" in message
    message = describe_mismatch(labels, torch.where(labels == -100, 0, labels))
    assert "Everywhere they differ, the answer has -100 and you have 0." in message


def test_a_short_list_of_numbers_is_shown_whole():
    assert describe_mismatch([4], [3, 4]) == "expected 1 values [4], got 2 [3, 4]"
    assert describe_mismatch([1.0, 2.0], [1.0, 2.0]) is None


def test_a_shape_mismatch_against_a_vector_is_described_not_raised():
    import torch

    from course_utils.harness.compare import describe_mismatch

    message = describe_mismatch(torch.zeros(7), torch.zeros(5, 7))
    assert message == "expected shape (7,), got (5, 7)"
    assert describe_mismatch(torch.tensor(1.0), torch.zeros(2, 2)) == "expected shape (), got (2, 2)"
