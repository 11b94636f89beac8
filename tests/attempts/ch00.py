"""Attempts at 0.1 (mean squared error)."""
import torch.nn.functional as F


def mse_per_column(prediction, target):
    """Slip: a reduction over dim=0 only (one mean per column), not over every element."""
    return ((prediction - target) ** 2).mean(dim=0)


def mse_root(prediction, target):
    """Slip: the root mean squared error (an extra sqrt)."""
    return ((prediction - target) ** 2).mean().sqrt()


def mse_in_place(prediction, target):
    """Slip: `prediction -= target` changes the caller's tensor."""
    prediction -= target
    return (prediction ** 2).mean()


def mse_n_minus_one(prediction, target):
    """Slip: divides by n - 1, as an unbiased variance does."""
    return ((prediction - target) ** 2).sum() / (prediction.numel() - 1)


def mse_functional(prediction, target):
    """Correct: PyTorch's own loss."""
    return F.mse_loss(prediction, target)


ATTEMPTS = [
    ("0.1", mse_per_column, "mean over dim 0 only", ("expected shape (), got (4,)",)),
    ("0.1", mse_root, "square root of the mean", ("square root of the answer",)),
    ("0.1", mse_in_place, "input modified in place", ("modified its input `prediction`",)),
    ("0.1", mse_n_minus_one, "divides by n - 1", ("5/4 times the answer",)),
    ("0.1", mse_functional, None, ()),
]
