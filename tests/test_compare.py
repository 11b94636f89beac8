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
