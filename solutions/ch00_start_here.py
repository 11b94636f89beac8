"""Notebook 00: one toy exercise that shows how ``check`` works."""
import torch

from course_utils.harness.exercises import Case, Exercise, Mistake

CHAPTER = "0. Start here"


# ----------------------------------------------------------------------------- 0.1 mean squared error

def mean_squared_error(prediction, target):
    """Mean of the squared differences between two tensors of the same shape.

    prediction, target: float tensors of the same shape (any number of dimensions, at least one
    element). Returns a 0-d tensor: mean((prediction - target) ** 2). Inputs are not modified.
    """
    return ((prediction - target) ** 2).mean()


def _cases():
    g = torch.Generator().manual_seed(0)
    return [
        Case("vectors of 5", (torch.randn(5, generator=g), torch.randn(5, generator=g))),
        Case("matrix 3x4", (torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g))),
        Case("single element", (torch.tensor([2.0]), torch.tensor([-1.0]))),
        Case("equal inputs", (torch.ones(2, 3), torch.ones(2, 3))),
    ]


EX_0_1 = Exercise(
    id="0.1", title="mean squared error", reference=mean_squared_error, cases=_cases,
    mistakes=(
        Mistake("sum instead of mean", lambda p, t: ((p - t) ** 2).sum(),
                "You summed the squared errors; divide by the number of elements (use .mean())."),
        Mistake("no square", lambda p, t: (p - t).abs().mean(),
                "That is the mean *absolute* error; square the differences instead."),
        Mistake("square of the mean", lambda p, t: (p - t).mean() ** 2,
                "You squared the mean difference; square each difference first, then average."),
    ),
)


EXERCISES = [EX_0_1]
