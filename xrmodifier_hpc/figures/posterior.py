"""Figure 4: corner plot of the theta posterior, theta_best and theta_true marked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.figures.inputs import Artefacts
from xrmodifier_hpc.figures.style import C_CORR, C_ORIG, C_TRUE, legend_line, new_figure

#: figure 4's axes leave out this fraction of the samples at each end (per parameter)
CORNER_TAIL = 0.005


@dataclass
class CornerFigureData:
    """Figure 4's numbers.

    Attributes
    ----------
    samples : ndarray, shape (n, d)
        Flat posterior samples (parameter units).
    labels : tuple of str
        Axis labels with units.
    truths : ndarray, shape (d,), or None
        theta_true; None without a mock truth.
    theta_best : ndarray, shape (d,)
        The best multi-start optimum.
    """

    samples: np.ndarray
    labels: tuple[str, ...]
    truths: np.ndarray | None
    theta_best: np.ndarray


def figure_data_corner(art: Artefacts) -> CornerFigureData:
    """Every flat posterior sample, labelled with units; theta_true when known.

    Parameters
    ----------
    art : Artefacts
        The run's artefacts.

    Returns
    -------
    CornerFigureData
    """
    units = art.result.param_units or ("",) * len(art.param_names)
    labels = tuple(f"{n} [{u}]" if u else n for n, u in zip(art.param_names, units))
    return CornerFigureData(
        samples=art.samples, labels=labels, truths=art.theta_true, theta_best=art.theta_best
    )


def corner_ranges(
    data: CornerFigureData, pad: float = 0.03, tail: float = CORNER_TAIL
) -> list[tuple[float, float]]:
    """Axis ranges for figure 4.

    From the ``tail`` to the ``1 - tail`` quantile of the samples (a few walkers left in a
    minor mode would otherwise squeeze the bulk of the posterior into a corner), widened to
    include theta_best and theta_true, padded by ``pad`` of the width (so a point on a prior
    bound is not clipped onto the frame).

    Parameters
    ----------
    data : CornerFigureData
        The samples and marked points.
    pad : float
        Padding as a fraction of each range's width.
    tail : float
        Fraction of the samples left out at each end.

    Returns
    -------
    list of (float, float)
        One (low, high) per parameter (parameter units).
    """
    lo, hi = np.quantile(data.samples, [tail, 1.0 - tail], axis=0)
    for point in (data.theta_best, data.truths):
        if point is not None:
            lo = np.minimum(lo, np.asarray(point, dtype=float))
            hi = np.maximum(hi, np.asarray(point, dtype=float))
    width = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0) * 1e-3)
    return [(float(a - pad * w), float(b + pad * w)) for a, b, w in zip(lo, hi, width)]


def plot_corner(data: CornerFigureData) -> Any:
    """Draw figure 4 with ``corner.corner`` (Foreman-Mackey 2016, JOSS 1, 24).

    39% and 86% contours, 16/50/84% quantiles, theta_true lines and theta_best stars.

    Parameters
    ----------
    data : CornerFigureData
        From :func:`figure_data_corner`.

    Returns
    -------
    matplotlib.figure.Figure
        2.6 d + 0.8 inches square, not yet saved.
    """
    import corner

    d = data.samples.shape[1]
    fig = new_figure(2.6 * d + 0.8, 2.6 * d + 0.8)
    fig.set_layout_engine(None)  # corner places its axes itself
    corner.corner(
        data.samples,
        fig=fig,
        labels=list(data.labels),
        range=corner_ranges(data),
        truths=None if data.truths is None else list(data.truths),
        truth_color=C_TRUE,
        quantiles=[0.16, 0.5, 0.84],
        show_titles=True,
        title_fmt=".3g",
        title_kwargs={"fontsize": 10},
        label_kwargs={"fontsize": 11},
        color=C_CORR,
        plot_datapoints=False,
        fill_contours=True,
        levels=(1 - np.exp(-0.5), 1 - np.exp(-2.0)),
        smooth=1.0,
        bins=30,
    )
    axes = np.array(fig.axes).reshape(d, d)
    for i in range(d):
        for j in range(i):
            axes[i, j].plot(
                data.theta_best[j],
                data.theta_best[i],
                marker="*",
                ms=12,
                color=C_ORIG,
                mec="white",
                mew=0.6,
                ls="none",
                zorder=5,
            )
    handles = [
        legend_line(C_CORR, "-", "posterior: 39% and 86% contours, 16/50/84% (dashed)"),
        legend_line(
            C_ORIG, "none", r"$\theta_\mathrm{best}$ (best multi-start optimum)", marker="*"
        ),
    ]
    if data.truths is not None:
        handles.append(legend_line(C_TRUE, "-", r"$\theta_\mathrm{true}$ (mock truth)"))
    fig.legend(handles=handles, loc="upper right", fontsize=10, frameon=False)
    return fig
