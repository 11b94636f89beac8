"""The exercise mechanism: public API, messages for broken learner code, strict mode, use()."""
import pytest
import torch

from course_utils import check, use
from course_utils.harness.exercises import (
    ExerciseNotPassed,
    describe_mismatch,
    exercise_ids,
    reference,
    solution_source,
    stub_source,
)
from solutions import ch00_start_here, ch01_backpropagation


def test_ids_in_course_order():
    """Chapters in order, each one's exercises numbered 1, 2, ... without a gap, and each in its chapter's module."""
    from course_utils.harness.exercises import registry

    ids = [tuple(map(int, i.split("."))) for i in exercise_ids()]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    chapters = sorted({c for c, _ in ids})
    assert chapters == list(range(chapters[-1] + 1)), "every chapter from 0 has exercises"
    for chapter in chapters:
        assert [n for c, n in ids if c == chapter] == list(range(1, sum(c == chapter for c, _ in ids) + 1))
    for ex in registry().values():
        assert ex.chapter.startswith(f"{ex.id.split('.')[0]}. "), (ex.id, ex.chapter)


def test_triton_exercises_are_known_by_their_reference():
    """needs_triton comes from the reference (a kernel, or a KernelReference), and with it the 120 s limit."""
    from course_utils.harness.exercises import registry

    triton_ids = [ex.id for ex in registry().values() if ex.needs_triton]
    assert triton_ids == ["1.4", "3.3", "4.5", "5.5", "6.6", "7.5"]
    assert {ex.timeout_s for ex in registry().values()} == {30.0, 120.0}
    assert all((ex.timeout_s == 120.0) == ex.needs_triton for ex in registry().values())


def test_readme_counts_the_exercises_of_each_chapter():
    import re

    from conftest import REPO_ROOT

    counts = {}
    for chapter in exercise_ids():
        counts[chapter.split(".")[0]] = counts.get(chapter.split(".")[0], 0) + 1
    readme = (REPO_ROOT / "README.md").read_text()
    stated = {m[0]: int(m[1]) for m in re.findall(r"^\| (\d) \| `\d\d_.*ready \((\d+) exercises?\) \|$", readme, re.M)}
    assert stated == {c: n for c, n in counts.items() if c != "0"}, "README's chapter table"


def test_reference_is_the_solution():
    assert reference("0.1") is ch00_start_here.mean_squared_error
    assert reference("1.2") is ch01_backpropagation.safe_softmax


def test_stub_is_signature_docstring_and_raise():
    stub = stub_source("0.1")
    assert stub.startswith("def mean_squared_error(prediction, target):")
    assert stub.rstrip().endswith("raise NotImplementedError")
    assert "** 2).mean()" not in stub  # the answer is not handed out
    namespace = {}
    exec(stub, namespace)
    assert check("0.1", namespace["mean_squared_error"], display=False).status == "todo"


def test_solution_source_runs_as_a_notebook_cell_would():
    namespace = {"torch": torch}
    exec(solution_source("0.1"), namespace)
    assert check("0.1", namespace["mean_squared_error"], display=False).passed


def _fails_with(fn, *fragments, exercise="0.1"):
    result = check(exercise, fn, display=False)
    assert result.status == "failed", result.message
    for fragment in fragments:
        assert fragment in result.message, result.message
    return result


def test_learner_code_that_raises(progress_file):
    def mse(p, t):
        return p.nonexistent()

    result = _fails_with(mse, "raised AttributeError", "line", "p.nonexistent()")
    assert result.case == "vectors of 5"


def test_returns_none():
    _fails_with(lambda p, t: None, "expected a torch.Tensor, got NoneType", "forget to `return`")


def test_wrong_shape():
    _fails_with(lambda p, t: ((p - t) ** 2).mean(dim=0, keepdim=True), "expected shape ()")


def test_wrong_dtype():
    _fails_with(lambda p, t: ((p - t) ** 2).mean().double(), "expected dtype torch.float32")


def test_nan_output():
    _fails_with(lambda p, t: ((p - t) ** 2).mean() * float("nan"), "NaN")


def test_mutating_an_input_is_caught():
    def mse(p, t):
        p -= t
        return (p ** 2).mean()

    _fails_with(mse, "modified its input `prediction` in place")


def _endless_mse(p, t):
    while True:
        pass


def test_hanging_code_is_stopped(monkeypatch):
    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    _fails_with(_endless_mse, "still running after", "Stopped it")


@pytest.fixture
def no_sigalrm(monkeypatch):
    """The time limit as on Windows (or off the main thread): no SIGALRM, a worker thread instead."""
    from course_utils.harness import exercises

    monkeypatch.setattr(exercises, "_signal_timer_usable", lambda: False)


def test_without_sigalrm_a_hanging_python_loop_is_stopped(monkeypatch, no_sigalrm):
    import threading
    import time

    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    start = time.perf_counter()
    _fails_with(_endless_mse, "still running after", "Stopped it")
    assert time.perf_counter() - start < 5
    assert not [t for t in threading.enumerate() if t.name == "course-exercise"], "the runaway thread is gone"


def test_without_sigalrm_code_stuck_in_c_is_abandoned_with_a_message(monkeypatch, no_sigalrm):
    import time

    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.3)

    def mse(p, t):
        time.sleep(3)  # one C call: an asynchronous exception waits for it to return
        return ((p - t) ** 2).mean()

    start = time.perf_counter()
    _fails_with(mse, "still running after", "could not be stopped", "Restart Kernel")
    assert time.perf_counter() - start < 2.5


def test_without_sigalrm_answers_and_errors_behave_as_before(no_sigalrm):
    assert check("0.1", lambda p, t: ((p - t) ** 2).mean(), display=False).passed
    _fails_with(lambda p, t: p.nonexistent(), "raised AttributeError")
    _fails_with(lambda p, t: exit(), "SystemExit")


def test_check_off_the_main_thread_still_has_a_time_limit(monkeypatch):
    import threading

    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    results = []
    thread = threading.Thread(target=lambda: results.append(check("0.1", _endless_mse, display=False)))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and results[0].status == "failed" and "Stopped it" in results[0].message


def test_not_a_function():
    _fails_with(torch.zeros(3), "expected your function")
    _fails_with(None, "expected your function")


def test_unknown_exercise_id_is_a_message_not_a_crash():
    result = check("9.9", lambda: None, display=False)
    assert not result.passed and "no exercise '9.9'" in result.message


def test_failure_names_case_error_and_hint(capsys):
    check("0.1", lambda p, t: ((p - t) ** 2).sum())
    out = capsys.readouterr().out
    assert out.startswith("❌ 0.1 mean squared error")
    assert "case 'vectors of 5'" in out and "expected" in out
    assert "Hint: You summed the squared errors" in out


def test_pass_is_displayed_and_recorded(capsys, progress_file):
    from course_utils.harness import progress

    check("0.1", lambda prediction, target: ((prediction - target) ** 2).mean())  # a learner's answer
    assert "✅ 0.1 mean squared error: passed all 4 cases." in capsys.readouterr().out
    assert progress.status_of("0.1") == "passed"


def test_strict_mode_raises_on_anything_but_a_pass(strict):
    with pytest.raises(ExerciseNotPassed, match="sum"):
        check("0.1", lambda p, t: ((p - t) ** 2).sum(), display=False)

    def stub(p, t):
        raise NotImplementedError

    with pytest.raises(ExerciseNotPassed, match="not implemented"):
        check("0.1", stub, display=False)
    assert check("0.1", lambda prediction, target: ((prediction - target) ** 2).mean(), display=False).passed


def test_use_returns_a_passing_candidate_else_the_reference(capsys):
    def mine(prediction, target):
        return ((prediction - target) ** 2).mean()

    assert use("0.1", mine) is mine
    assert "using your `mine`" in capsys.readouterr().out

    def wrong(prediction, target):
        return ((prediction - target) ** 2).sum()

    assert use("0.1", wrong) is reference("0.1")
    assert "using the reference `mean_squared_error`" in capsys.readouterr().out


def test_use_does_not_trust_a_stale_pass():
    def mine(prediction, target):
        return ((prediction - target) ** 2).mean()

    check("0.1", mine, display=False)

    def other(prediction, target):
        return (prediction - target).abs().mean()

    assert use("0.1", other) is reference("0.1")


def test_describe_mismatch_on_nested_and_numbers():
    assert describe_mismatch((torch.ones(2), 1.0), (torch.ones(2), 1.0)) is None
    assert "output[1]" in describe_mismatch((torch.ones(2), 1.0), (torch.ones(2), 2.0))
    assert "expected 2 values" in describe_mismatch((1.0, 2.0), (1.0,))
    assert describe_mismatch(3.0, torch.tensor(3.0)) is None
    assert "worst at index [1, 0]" in describe_mismatch(torch.zeros(2, 2), torch.tensor([[0.0, 0.0], [5.0, 0.0]]))
    inf = float("inf")
    assert describe_mismatch(torch.tensor([inf, -inf]), torch.tensor([inf, -inf])) is None
    assert describe_mismatch(torch.tensor([inf]), torch.tensor([-inf])) is not None


def test_mutating_a_tensor_inside_a_list_argument_is_caught():
    def clip_in_place(grads, max_norm):
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        for g in grads:
            g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return grads, total

    _fails_with(clip_in_place, "modified its input `grads` in place", exercise="1.6")


def test_contract_errors_from_the_checker_are_not_blamed_on_the_learner():
    result = _fails_with(lambda fan_out, fan_in, gain=1.0: torch.zeros(fan_in, fan_out), "expected shape",
                         exercise="2.1")
    assert "your code raised" not in result.message


def test_hint_needs_the_mistake_to_agree_on_every_case_seen():
    import math

    def gain_inside_the_root(fan_out, fan_in, gain=1.0):  # right at gain 1, wrong otherwise
        bound = math.sqrt(gain * 6 / (fan_in + fan_out))
        return torch.empty(fan_out, fan_in).uniform_(-bound, bound)

    result = _fails_with(gain_inside_the_root, "case '512 <- 128 with gain 5/3 (tanh)'", exercise="2.1")
    assert result.mistake != "fan_in only"  # a listed mistake that disagrees on earlier cases is not named


def test_logsumexp_softmax_is_accepted():
    assert check("1.2", lambda x: torch.exp(x - torch.logsumexp(x, -1, keepdim=True)), display=False).passed


# ------------------------------------------------------------- fair checks: contract, cases, messages

def test_returning_the_callers_tensors_is_refused():
    def clip(grads, max_norm):  # no copy when nothing needs clipping: the contract asks for new tensors
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        if total <= max_norm:
            return grads, total
        return [g * (max_norm / (total + 1e-6)) for g in grads], total

    _fails_with(clip, "shares memory with its input `grads`", "clone", exercise="1.6")


def test_float64_weights_are_refused_with_the_contracts_dtype():
    import math

    def xavier(fan_out, fan_in, gain=1.0):
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(-bound, bound)

    _fails_with(xavier, "expected a float32 weight", exercise="2.1")


def test_statistics_are_named_in_messages():
    import math

    def xavier(fan_out, fan_in, gain=1.0):  # right variance, normal instead of uniform, and gain squared
        return torch.randn(fan_out, fan_in) * gain ** 2 * math.sqrt(2 / (fan_in + fan_out))

    result = check("2.1", xavier, display=False)
    assert result.status == "failed" and "of your weights" in result.message, result.message


def test_a_case_that_must_raise():
    def soft(logits, temperature):  # no ValueError for T < 0, and otherwise right
        if temperature == 0:
            return reference("8.3")(logits, 0.0)
        return torch.softmax(logits / temperature, dim=-1)

    result = _fails_with(soft, "must raise ValueError", exercise="8.3")
    assert result.mistake == "negative T accepted"


def test_correct_answers_written_differently_are_accepted():
    import math

    import torch.nn.functional as F

    def min_p_probabilities(logits, min_p):  # in probability space, float64: differs from the reference by rounding
        probs = torch.softmax(logits.double(), dim=-1)
        keep = probs >= min_p * probs.max(dim=-1, keepdim=True).values
        return logits.masked_fill(~keep, float("-inf"))

    def min_p_exp(logits, min_p):
        keep = torch.exp(logits.double() - logits.double().max(dim=-1, keepdim=True).values) >= min_p
        return logits.masked_fill(~keep, float("-inf"))

    def top_p_float32(logits, p):  # float32 sums, but p >= 1 kept whole
        if p >= 1:
            return logits.clone()
        probs = torch.softmax(logits.float(), dim=-1)
        sorted_probs, order = torch.sort(probs, dim=-1, descending=True, stable=True)
        keep_sorted = (torch.cumsum(sorted_probs, dim=-1) - sorted_probs) < p
        keep_sorted[..., 0] = True
        return logits.masked_fill(~torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted), float("-inf"))

    def layer_norm_builtin(x, weight, bias, eps=1e-5):
        return F.layer_norm(x, (x.shape[-1],), weight, bias, eps)

    def layer_norm_var(x, weight, bias, eps=1e-5):
        return ((x - x.mean(-1, keepdim=True)) * torch.rsqrt(x.var(-1, unbiased=False, keepdim=True) + eps)
                * weight + bias)

    for exercise, fn in [("6.3", min_p_probabilities), ("6.3", min_p_exp), ("6.2", top_p_float32),
                         ("3.1", layer_norm_builtin), ("3.1", layer_norm_var)]:
        result = check(exercise, fn, display=False)
        assert result.passed, (fn.__name__, result.message)
    assert math.isclose(reference("8.1")(0, 1.0, 10, 100), 0.1)  # the contract's convention: (step + 1) / warmup


def test_the_warmup_convention_is_called_a_convention():
    def schedule(step, max_lr, warmup_steps, total_steps, min_lr=0.0):
        import math

        if step < warmup_steps:
            return max_lr * step / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr + (max_lr - min_lr) * 0.5 * (1 + math.cos(math.pi * progress))

    _fails_with(schedule, "A convention, not a bug", exercise="8.1")


@pytest.mark.parametrize("transform,phrase", [
    (lambda y: 2 * y, "times the answer"),
    (lambda y: -y, "sign flipped"),
    (lambda y: y + 0.5, "constant offset"),
    (lambda y: torch.roll(y, 1, dims=-1), "shifted by one position"),
])
def test_a_wrong_answer_of_a_simple_shape_is_described(transform, phrase):
    from solutions.ch03_normalization import rms_norm

    _fails_with(lambda x, w, eps=1e-6: transform(rms_norm(x, w, eps)), phrase, exercise="3.2")


def test_wrong_rows_are_pointed_at():
    from solutions.ch01_backpropagation import safe_softmax

    def softmax(x):  # wrong in the first row only
        y = safe_softmax(x)
        y[..., 0, :] = 1.0 / x.shape[-1]
        return y

    _fails_with(softmax, "rows are wrong", exercise="1.2")


def test_strided_cases_keep_their_strides():
    from course_utils.harness.exercises import _clone

    x = torch.randn(10, 40)[::2]
    copy = _clone(x)
    assert copy.stride() == x.stride() and torch.equal(copy, x) and copy.data_ptr() != x.data_ptr()


def test_a_learner_who_raises_correctly_still_gets_the_hint_for_another_mistake():
    def soft(logits, temperature):  # raises for T < 0 as asked, but divides without the max
        if temperature < 0:
            raise ValueError("T < 0")
        e = torch.exp(logits / temperature)
        return e / e.sum(dim=-1, keepdim=True)

    assert _fails_with(soft, "", exercise="8.3").mistake == "exp without the max"


@pytest.mark.parametrize("transform,phrase,not_phrase", [
    (lambda y: torch.zeros_like(y), "all zeros", "times the answer"),
    (lambda y: torch.cat([y[..., :-1], y[..., -1:] + 1], dim=-1), "Only the last column", "shifted"),
])
def test_diagnoses_say_only_what_holds(transform, phrase, not_phrase):
    from solutions.ch03_normalization import rms_norm

    result = _fails_with(lambda x, w, eps=1e-6: transform(rms_norm(x, w, eps)), phrase, exercise="3.2")
    assert not_phrase not in result.message


def test_no_precision_diagnosis_for_a_wrong_eps():
    from solutions.ch03_normalization import rms_norm

    result = _fails_with(lambda x, w, eps=1e-6: rms_norm(x, w, 10 * eps), exercise="3.2")
    assert "lower precision" not in result.message


def test_a_wrong_row_of_a_constant_answer_is_not_called_a_shift():
    exp = torch.tensor([[1.0, 2.0, 3.0]] * 4)
    got = exp.clone()
    got[3] = 0.0
    message = describe_mismatch(exp, got)
    assert "shifted" not in message and "Only 1 of 4 rows" in message
