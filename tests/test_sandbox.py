"""What ``check`` does with code the course did not write (course_utils.harness.sandbox): it runs it on copies of
the inputs (strides kept), refuses code that modifies an input or returns it, and stops code that runs too long,
with SIGALRM or, where there is none (Windows, a thread), a worker thread."""
import pytest
import torch
from conftest import fails_with

from course_utils import check
from solutions import ch00_start_here


def test_mutating_an_input_is_caught():
    def mse(p, t):
        p -= t
        return (p ** 2).mean()

    fails_with(mse, "modified its input `prediction` in place")


def test_mutating_a_tensor_inside_a_list_argument_is_caught():
    def clip_in_place(grads, max_norm):
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        for g in grads:
            g.mul_(torch.clamp(max_norm / (total + 1e-6), max=1.0))
        return grads, total

    fails_with(clip_in_place, "modified its input `grads` in place", exercise="1.6")


def test_returning_the_callers_tensors_is_refused():
    def clip(grads, max_norm):  # no copy when nothing needs clipping: the contract asks for new tensors
        total = torch.sqrt(sum((g ** 2).sum() for g in grads))
        if total <= max_norm:
            return grads, total
        return [g * (max_norm / (total + 1e-6)) for g in grads], total

    fails_with(clip, "shares memory with its input `grads`", "clone", exercise="1.6")


def test_strided_cases_keep_their_strides():
    from course_utils.harness.sandbox import _clone

    x = torch.randn(10, 40)[::2]
    copy = _clone(x)
    assert copy.stride() == x.stride() and torch.equal(copy, x) and copy.data_ptr() != x.data_ptr()


def _endless_mse(p, t):
    while True:
        pass


def test_hanging_code_is_stopped(monkeypatch):
    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    fails_with(_endless_mse, "still running after", "Stopped it")


@pytest.fixture
def no_sigalrm(monkeypatch):
    """The time limit as on Windows (or off the main thread): no SIGALRM, a worker thread instead."""
    from course_utils.harness import sandbox

    monkeypatch.setattr(sandbox, "_signal_timer_usable", lambda: False)


def test_without_sigalrm_a_hanging_python_loop_is_stopped(monkeypatch, no_sigalrm):
    import threading
    import time

    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    start = time.perf_counter()
    fails_with(_endless_mse, "still running after", "Stopped it")
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
    fails_with(mse, "still running after", "could not be stopped", "Restart Kernel")
    assert time.perf_counter() - start < 2.5


def test_without_sigalrm_answers_and_errors_behave_as_before(no_sigalrm):
    assert check("0.1", lambda p, t: ((p - t) ** 2).mean(), display=False).passed
    fails_with(lambda p, t: p.nonexistent(), "raised AttributeError")
    fails_with(lambda p, t: exit(), "SystemExit")


def test_check_off_the_main_thread_still_has_a_time_limit(monkeypatch):
    import threading

    ex = ch00_start_here.EXERCISES[0]
    monkeypatch.setattr(ex, "timeout_s", 0.5)

    results = []
    thread = threading.Thread(target=lambda: results.append(check("0.1", _endless_mse, display=False)))
    thread.start()
    thread.join(10)
    assert not thread.is_alive() and results[0].status == "failed" and "Stopped it" in results[0].message
