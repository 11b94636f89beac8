"""The render cache behind every slider (course_utils.widgets): a position shown once is shown again without
recomputing, a float that came back one bit off still finds it, and the cache stays bounded."""
from course_utils.widgets import _kept


def test_kept_results_are_reused_and_keyed_by_value():
    calls = []

    def compute(lr, mode):
        calls.append((lr, mode))
        return f"{mode} {lr}"

    kept = _kept(compute, size=2)
    assert kept(lr=0.1, mode="a") == "a 0.1"
    assert kept(lr=0.1 + 0.05 - 0.05, mode="a") == "a 0.1"  # 0.10000000000000002: the same position
    assert kept(mode="a", lr=0.1) == "a 0.1" and len(calls) == 1
    assert kept(lr=0.1, mode="b") == "b 0.1" and len(calls) == 2  # a different control value recomputes
    assert kept(lr=0.11, mode="a") == "a 0.11" and len(calls) == 3


def test_kept_drops_the_oldest_beyond_its_size():
    calls = []
    kept = _kept(lambda n: calls.append(n) or n, size=2)
    for n in (1, 2, 1, 3):  # 1 is used again before 3 arrives, so 2 is the one dropped
        kept(n=n)
    assert calls == [1, 2, 3]
    kept(n=1)
    kept(n=2)
    assert calls == [1, 2, 3, 2]
