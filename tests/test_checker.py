"""The check (course_utils.harness.exercises): check, use and from_progress, their messages for broken learner code,
the hint of a known mistake, strict mode, and passed code kept in the progress file and reused."""
import math

import pytest
import torch
from conftest import fails_with

from course_utils import check, use
from course_utils.harness import progress
from course_utils.harness.exercises import ExerciseNotPassed, from_progress, reference


def test_learner_code_that_raises(progress_file):
    def mse(p, t):
        return p.nonexistent()

    result = fails_with(mse, "raised AttributeError", "line", "p.nonexistent()")
    assert result.case == "vectors of 5"


def test_not_a_function():
    fails_with(torch.zeros(3), "expected your function")
    fails_with(None, "expected your function")


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


def test_contract_errors_from_the_checker_are_not_blamed_on_the_learner():
    result = fails_with(lambda fan_out, fan_in, gain=1.0: torch.zeros(fan_in, fan_out), "expected shape",
                        exercise="2.1")
    assert "your code raised" not in result.message


def test_hint_needs_the_mistake_to_agree_on_every_case_seen():
    def gain_inside_the_root(fan_out, fan_in, gain=1.0):  # right at gain 1, wrong otherwise
        bound = math.sqrt(gain * 6 / (fan_in + fan_out))
        return torch.empty(fan_out, fan_in).uniform_(-bound, bound)

    result = fails_with(gain_inside_the_root, "case '512 -> 128 (fan_out, fan_in) = (128, 512), gain 5/3 (tanh)'",
                        exercise="2.1")
    assert result.mistake != "fan_in only"  # a listed mistake that disagrees on earlier cases is not named


def test_logsumexp_softmax_is_accepted():
    assert check("1.2", lambda x: torch.exp(x - torch.logsumexp(x, -1, keepdim=True)), display=False).passed


# ------------------------------------------------------------- fair checks: contract, cases, messages

def test_float64_weights_are_refused_with_the_contracts_dtype():
    def xavier(fan_out, fan_in, gain=1.0):
        bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
        return torch.empty(fan_out, fan_in, dtype=torch.float64).uniform_(-bound, bound)

    fails_with(xavier, "expected a float32 weight", exercise="2.1")


def test_statistics_are_named_in_messages():
    def xavier(fan_out, fan_in, gain=1.0):  # right variance, normal instead of uniform, and gain squared
        return torch.randn(fan_out, fan_in) * gain ** 2 * math.sqrt(2 / (fan_in + fan_out))

    result = check("2.1", xavier, display=False)
    assert result.status == "failed" and "of your weights" in result.message, result.message


def test_a_case_that_must_raise():
    def soft(logits, temperature):  # no ValueError for T < 0, and otherwise right
        if temperature == 0:
            return reference("8.3")(logits, 0.0)
        return torch.softmax(logits / temperature, dim=-1)

    result = fails_with(soft, "must raise ValueError", exercise="8.3")
    assert result.mistake == "negative T accepted"


def test_correct_answers_written_differently_are_accepted():
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

    fails_with(schedule, "A convention, not a bug", exercise="8.1")


def test_a_learner_who_raises_correctly_still_gets_the_hint_for_another_mistake():
    def soft(logits, temperature):  # raises for T < 0 as asked, but divides without the max
        if temperature < 0:
            raise ValueError("T < 0")
        e = torch.exp(logits / temperature)
        return e / e.sum(dim=-1, keepdim=True)

    assert fails_with(soft, "", exercise="8.3").mistake == "exp without the max"


# ------------------------------------------------------------- passed code, kept and reused

def test_from_progress_reloads_passed_code_and_falls_back(progress_file, capsys):
    source = (
        "def clip_grad_norm(grads, max_norm):\n"
        "    total = torch.sqrt(sum((g.float() ** 2).sum() for g in grads)) if grads else torch.tensor(0.0)\n"
        "    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)\n"
        "    return [g * scale.to(g.dtype) for g in grads], total\n")
    progress.record("1.6", "passed", source)
    fn = from_progress("1.6")
    assert fn is not reference("1.6") and "using your `clip_grad_norm`" in capsys.readouterr().out
    progress.record("5.1", "passed", "def adamw_update(*args):\n    return None\n")  # no longer passes
    assert from_progress("5.1") is reference("5.1")
    assert "did not pass again" in capsys.readouterr().out
    progress.record("5.3", "passed", "this is not python")
    assert from_progress("5.3") is reference("5.3")
    assert from_progress("5.5") is reference("5.5")  # a Triton kernel: not reloaded


def test_check_records_the_passing_source_and_refuses_the_reference(progress_file):
    def remaining_after_decay(lrs, weight_decay):
        return math.prod(1 - lr * weight_decay for lr in lrs)

    assert check("8.2", remaining_after_decay, display=False).passed
    assert "math.prod" in progress.passed_source("8.2")
    progress.reset()
    result = check("8.2", reference("8.2"), display=False)  # what use() leaves after a failed attempt
    assert result.status == "reference" and "not your code" in result.message
    assert progress.passed_source("8.2") is None and progress.status_of("8.2") is None


def test_every_non_triton_answer_survives_the_round_trip_through_the_progress_file(progress_file, capsys):
    from course_utils.harness.registry import exercise_ids, registry, solution_source

    for exercise_id in exercise_ids():
        if registry()[exercise_id].needs_triton:  # a kernel is not reloaded (and without Triton it is a stand-in)
            continue
        progress.record(exercise_id, "passed", solution_source(exercise_id))
        loaded = from_progress(exercise_id)
        assert loaded is not reference(exercise_id), (exercise_id, capsys.readouterr().out[-800:])


def test_from_progress_runs_only_a_single_function_definition(progress_file, tmp_path):
    marker = tmp_path / "ran"
    progress.record("1.6", "passed", f"open({str(marker)!r}, 'w').close()\ndef clip_grad_norm(grads, max_norm):\n"
                                     "    return grads, torch.tensor(0.0)\n")
    assert from_progress("1.6") is reference("1.6") and not marker.exists()
    progress.record("1.6", "passed", "def clip_grad_norm(grads, max_norm):\n    raise SystemExit\n")
    assert from_progress("1.6") is reference("1.6")  # raises inside check: not a pass, no exit
