"""One plotting style for the whole course: sizes, colour-blind-safe colours and line styles per variant, log scales."""
from __future__ import annotations

import matplotlib.pyplot as plt
import matplotlib.ticker as ticker

# Okabe & Ito's colour-blind-safe palette ("Color Universal Design", 2008), plus a grey.
OKABE_ITO = {"black": "#000000", "orange": "#E69F00", "sky blue": "#56B4E9", "bluish green": "#009E73",
             "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "reddish purple": "#CC79A7",
             "grey": "#999999"}

# One (colour, line style, marker) per variant the course compares, used in every chapter: series that share a
# plot differ in line style and marker too, so no reader depends on telling colours apart.
SERIES = {
    "no residual, no norm": ("reddish purple", (0, (3, 1, 1, 1, 1, 1)), "v"),
    "no residual": ("grey", "-.", "^"),
    "post": ("vermillion", "--", "s"),  # Post-LN
    "pre": ("blue", "-", "o"),  # Pre-LN
    "naive": ("vermillion", "--", "s"),
    "safe": ("blue", "-", "o"),
    "online": ("bluish green", "-.", "^"),
    "reference": ("black", ":", ""),
    # RoPE scalings (chapter 7)
    "none": ("black", "-", ""),
    "pi": ("vermillion", "--", ""),
    "ntk": ("orange", "-.", ""),
    "yarn": ("bluish green", ":", ""),
    "llama3": ("blue", (0, (5, 1, 1, 1, 1, 1)), ""),
}
COLORS = {key: OKABE_ITO[colour] for key, (colour, _, _) in SERIES.items()}

# Text colours for HTML views: JupyterLab's theme variables, so that text is readable in its light and dark themes,
# with fallbacks (for viewers without them) that pass WCAG AA (4.5:1) on white. A view that sets a background
# sets its text colour too.
MUTED_TEXT = "var(--jp-content-font-color2, #595959)"


def series(key: str, *, markevery=None) -> dict:
    """``ax.plot`` keyword arguments for a variant of SERIES: its colour, line style and (small) marker.
    ``markevery`` thins the markers of long curves (every n-th point)."""
    colour, linestyle, marker = SERIES[key]
    style = {"color": OKABE_ITO[colour], "linestyle": linestyle}
    if marker:
        style.update(marker=marker, markersize=3, markevery=markevery)
    return style


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
    """``plt.subplots`` with the course's sizes; returns ``(fig, axes)`` (axes a list when ncols > 1).

    Side-by-side panels get a fixed gap wide enough for the right panel's axis label; the notebook's
    inline backend crops the figure to what is drawn. A layout engine ("constrained") would do the
    same job with extra drawing passes: about 60 ms more per slider redraw on the course CPU.
    """
    fig, axes = plt.subplots(1, ncols, figsize=(width, height), **kwargs)
    if ncols > 1:
        fig.subplots_adjust(wspace=0.3)
    return fig, axes


def _short_number(value: float, _position=None) -> str:
    return f"{value:.0e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e4) else f"{value:g}"


def log_scale(ax, axis: str = "y") -> None:
    """Log scale on ``axis`` ("x", "y" or "xy") with a few plain-text ticks.

    Matplotlib's default log ticks are typeset as mathtext with many minor ticks, which made a
    slider redraw 3-4x slower (about 250 ms against 60 ms per figure, measured on the course CPU).
    """
    import math

    for name in axis:
        target = ax.xaxis if name == "x" else ax.yaxis
        (ax.set_xscale if name == "x" else ax.set_yscale)("log")
        low, high = ax.get_xlim() if name == "x" else ax.get_ylim()
        decades = math.log10(high / low) if low > 0 and high > low else 10.0
        # ticks at 1 and 3 per decade on short ranges, every decade (or fewer) on long ones
        subs = (1.0, 3.0) if decades <= 4 else (1.0,)
        target.set_major_locator(ticker.LogLocator(subs=subs, numticks=8))
        target.set_minor_locator(ticker.NullLocator())
        target.set_major_formatter(ticker.FuncFormatter(_short_number))
