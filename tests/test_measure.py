"""The measurements several chapters take: a power law's exponent, autograd's saved memory, the CPU timer."""
import torch
import torch.nn.functional as F

from course_utils import measure


def test_loglog_slope_recovers_a_power_law():
    xs = [1, 2, 4, 8]
    assert abs(measure.loglog_slope(xs, [3 * x ** -0.5 for x in xs]) + 0.5) < 1e-9
    assert abs(measure.loglog_slope(xs, [x ** 2 for x in xs]) - 2) < 1e-9


def test_saved_for_backward_bytes_counts_the_log_softmax():
    z, y = torch.randn(16, 100).requires_grad_(), torch.randint(0, 100, (16,))
    assert measure.saved_for_backward_bytes(lambda z, y: F.cross_entropy(z, y), z * 1.0, y) >= 16 * 100 * 4
    assert measure.saved_for_backward_bytes(lambda z, y: (z * 2).sum(), z * 1.0, y) == 0


def test_median_seconds_times_only_the_calls_after_the_warm_up(monkeypatch):
    """A fake clock that each call of ``fn`` moves on by its duration: the warm-up calls (100 s each) are not
    timed, and the median ignores one slow call."""
    now, durations, calls = [0.0], iter([100.0, 100.0, 2.0, 3.0, 50.0, 1.0, 4.0]), []
    monkeypatch.setattr(measure, "perf_counter", lambda: now[0])

    def fn(*args):
        calls.append(args)
        now[0] += next(durations)

    assert measure.median_seconds(fn, "x", 1, reps=5, warmup=2) == 3.0
    assert calls == [("x", 1)] * 7
