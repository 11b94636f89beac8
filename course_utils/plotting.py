"""One plotting style for the whole course: sizes, colours per architecture, log-scale helpers."""
from __future__ import annotations

import matplotlib.pyplot as plt

# One colour per variant the course compares, used in every chapter.
COLORS = {
    "no residual": "#7f7f7f",
    "post": "#d95f02",  # Post-LN
    "pre": "#1b9e77",  # Pre-LN
    "naive": "#d62728",
    "safe": "#1f77b4",
    "online": "#2ca02c",
    "reference": "#000000",
}

STYLE = {
    "figure.figsize": (7.0, 3.6),
    "figure.dpi": 90,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "font.size": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
}


def use_course_style() -> None:
    """Apply the course style to matplotlib (``setup()`` calls this)."""
    plt.rcParams.update(STYLE)


def subplots(ncols: int = 1, *, width: float = 7.0, height: float = 3.6, **kwargs):
    """``plt.subplots`` with the course's sizes; returns ``(fig, axes)`` (axes a list when ncols > 1)."""
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), **kwargs)
    fig.set_layout_engine("constrained")
    return fig, axes
