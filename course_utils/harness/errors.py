"""The exercise machinery's exception types, in a module that imports nothing: the guarded launchers, the
solutions' call adapters and the checker all raise or catch them without importing each other."""


class ExerciseNotPassed(AssertionError):
    """Raised by ``check`` in strict mode (``COURSE_STRICT=1``) when an exercise does not pass."""


class ContractError(Exception):
    """Raised by an exercise's ``call`` adapter when the learner's result breaks the stated contract
    (wrong shape, a parameter missing from the groups, ...): shown as is, not as a crash."""


class ExerciseTimeout(BaseException):
    """Raised inside learner code that runs past its time limit (BaseException: a bare
    ``except Exception`` in learner code must not swallow it)."""

    abandoned = False  # True when the code could not be stopped and runs on in a background thread
