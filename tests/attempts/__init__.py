"""A batch of realistic wrong (and some correct) answers to every exercise, one module per chapter.

Each module defines ``ATTEMPTS``: a list of ``(exercise_id, fn, what_is_wrong, expected_words)``. ``fn`` is an
attempt as a learner would write it (its docstring names the slip); ``what_is_wrong`` is None for a correct answer
written differently from the reference (the checker must accept it); ``expected_words`` are fragments that the
checker's message must contain where the message was rated helpful (empty where it was not): a regression in a
diagnosis then fails ``tests/test_attempts.py``. RATINGS.md rates each rejected attempt's message.
"""
CHAPTERS = ["ch00", "ch01", "ch02", "ch03", "ch04", "ch05", "ch06", "ch07", "ch08"]
