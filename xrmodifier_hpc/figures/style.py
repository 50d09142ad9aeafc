"""What every figure shares: one colour per meaning, figures outside pyplot, round log ticks."""

from __future__ import annotations

import math
from typing import Any

#: resolution of the written PNGs (dots per inch)
DPI = 150

# one colour per meaning across every figure (Okabe & Ito 2008, "Color Universal Design":
# colour-blind safe)
C_ORIG = "#D55E00"  # telescope 1 with the original ARF (T1)
C_CORR = "#0072B2"  # telescope 1 with the corrected ARF (T1')
C_TRUE = "#000000"  # truth
C_INTERP = "#999999"  # grid interpolation
C_BAND = "#56B4E9"


def new_figure(width: float, height: float) -> Any:
    """Make a figure on the Agg canvas, outside pyplot (no global state, no display).

    Parameters
    ----------
    width, height : float
        Size in inches.

    Returns
    -------
    matplotlib.figure.Figure
        With the constrained layout engine.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def log_ticks(lo: float, hi: float, max_ticks: int = 7) -> list[float]:
    """Round tick values for a log axis.

    1-2-5 per decade over wide ranges, finer steps over narrower ones, and linear round steps
    (like 2.1, 2.2, 2.3) when the range is less than a factor of 3.

    Parameters
    ----------
    lo, hi : float
        The axis range (> 0).
    max_ticks : int
        At most this many ticks.

    Returns
    -------
    list of float
        Increasing values inside [lo, hi].
    """
    ratio = hi / lo
    if ratio < 3:
        from matplotlib.ticker import MaxNLocator

        values = MaxNLocator(nbins=min(max_ticks, 5) - 1).tick_values(lo, hi)
        return [float(f"{v:.6g}") for v in values if lo <= v <= hi]
    if ratio > 30:
        mantissas = (1.0, 2.0, 5.0)
    elif ratio > 4:
        mantissas = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        mantissas = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    ticks = [
        float(f"{m * 10.0**e:.6g}")
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in mantissas
    ]
    ticks = [t for t in ticks if lo <= t <= hi]
    while len(ticks) > max_ticks:
        ticks = ticks[::2]
    return ticks


def plain_log_axis(ax: Any, which: str = "x", max_ticks: int = 7) -> None:
    """Label a log axis with plain numbers at round values (not 2x10^0).

    Call it after the axis limits are final.

    Parameters
    ----------
    ax : matplotlib.axes.Axes
        The axes.
    which : str
        ``"x"`` or ``"y"``.
    max_ticks : int
        At most this many labelled ticks (:func:`log_ticks`).
    """
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi, max_ticks)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def theta_text(theta: dict[str, float]) -> str:
    """``"mu = 1.6, sigma = 0.35, A = 0.15"`` (three significant digits).

    Parameters
    ----------
    theta : dict of str to float
        Values by parameter name.

    Returns
    -------
    str
    """
    return ", ".join(f"{k} = {v:.3g}" for k, v in theta.items())


def legend_line(color: str, ls: str, label: str, marker: str | None = None) -> Any:
    """Make a legend handle that is not drawn on any axes.

    Parameters
    ----------
    color, ls, label : str
        Line colour, line style and legend text.
    marker : str, optional
        Marker symbol.

    Returns
    -------
    matplotlib.lines.Line2D
    """
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, ls=ls, marker=marker, ms=10, label=label)
