"""Figure 1: the target and corrected ARFs, and the multiplier m(E) with its posterior band."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.figures.inputs import Artefacts
from xrmodifier_hpc.figures.style import (
    C_BAND,
    C_CORR,
    C_ORIG,
    C_TRUE,
    new_figure,
    plain_log_axis,
    theta_text,
)
from xrmodifier_hpc.io.result import InversionResult

#: posterior samples evaluated for the m(E) band: evenly spaced through the flat chain, so
#: the band's percentiles are stable to ~1% of their spread and cost stays bounded
MAX_BAND_SAMPLES = 4000

#: posterior percentiles of the band (the 68% interval and the median)
BAND_PERCENTILES = (16.0, 50.0, 84.0)


def result_family(result: InversionResult) -> Any:
    """Build the modifier family of an inversion result.

    Parameters
    ----------
    result : InversionResult
        The result (its ``modifier``).

    Returns
    -------
    physics.modifiers family
        ``get_modifier(family, options)``.
    """
    from xrmodifier_hpc.physics.modifiers import get_modifier

    return get_modifier(result.modifier.family, result.modifier.options)


def band_subset(samples: np.ndarray, limit: int = MAX_BAND_SAMPLES) -> np.ndarray:
    """At most ``limit`` rows of ``samples``, evenly spaced through the flat chain.

    Parameters
    ----------
    samples : ndarray, shape (n, d)
        Flat posterior samples.
    limit : int
        The most rows to keep.

    Returns
    -------
    ndarray, shape (min(n, limit), d)
        All of them when there are fewer.
    """
    n = samples.shape[0]
    if n <= limit:
        return samples
    return samples[np.linspace(0, n - 1, limit).round().astype(np.int64)]


@dataclass
class ArfFigureData:
    """Figure 1's numbers.

    Attributes
    ----------
    energy : ndarray, shape (n_E,)
        ARF bin centres (keV).
    area_target, area_corrected : ndarray, shape (n_E,)
        The target ARF and ``corrected.arf`` as written (cm^2).
    m_best : ndarray, shape (n_E,)
        m(E; theta_best) (dimensionless).
    m_band : ndarray, shape (3, n_E)
        The 16th, 50th and 84th posterior percentiles of m(E) over ``n_band_samples``
        posterior samples.
    n_band_samples : int
        Samples the band was computed from (:func:`band_subset`).
    m_true : ndarray, shape (n_E,), or None
        m(E; theta_true); None without a mock truth.
    fit_band : (float, float)
        The fitted band (keV).
    theta_best, theta_true : dict of str to float
        For the legend (theta_true None without a mock truth).
    """

    energy: np.ndarray
    area_target: np.ndarray
    area_corrected: np.ndarray
    m_best: np.ndarray
    m_band: np.ndarray
    n_band_samples: int
    m_true: np.ndarray | None
    fit_band: tuple[float, float]
    theta_best: dict[str, float]
    theta_true: dict[str, float] | None


def figure_data_arf(art: Artefacts) -> ArfFigureData:
    """Compute the ARFs as written, m(E; theta_best) and its posterior band.

    Parameters
    ----------
    art : Artefacts
        The run's artefacts.

    Returns
    -------
    ArfFigureData

    Raises
    ------
    UserError
        When corrected.arf is not on the target ARF's energy grid.
    """
    target, corrected = art.target_arf, art.corrected_arf
    if corrected.specresp.shape != target.specresp.shape:
        raise UserError(
            "corrected.arf is not on the target ARF's energy grid: rerun "
            "`xrmodifier invert CONFIG`",
            str(art.corrected_arf_path),
        )
    family = result_family(art.result)
    energy = 0.5 * (target.energ_lo + target.energ_hi)
    subset = band_subset(art.samples)
    m_samples = family.evaluate(energy, subset)
    theta_true = art.theta_true
    return ArfFigureData(
        energy=energy,
        area_target=np.asarray(target.specresp, dtype=float),
        area_corrected=np.asarray(corrected.specresp, dtype=float),
        m_best=family.evaluate(energy, art.theta_best),
        m_band=np.percentile(m_samples, BAND_PERCENTILES, axis=0),
        n_band_samples=int(subset.shape[0]),
        m_true=None if theta_true is None else family.evaluate(energy, theta_true),
        fit_band=(float(art.fit_band[0]), float(art.fit_band[1])),
        theta_best=dict(art.result.theta_best),
        theta_true=None if art.truth is None else dict(art.truth.theta_true),
    )


def plot_arf(data: ArfFigureData) -> Any:
    """Draw figure 1: effective areas (top), m(E) and its posterior band (bottom).

    The fitted band is shaded.

    Parameters
    ----------
    data : ArfFigureData
        From :func:`figure_data_arf`.

    Returns
    -------
    matplotlib.figure.Figure
        7.5 x 6.5 inches, not yet saved.
    """
    fig = new_figure(7.5, 6.5)
    ax_a, ax_m = fig.subplots(2, 1, sharex=True, height_ratios=(1.2, 1.0))
    for ax in (ax_a, ax_m):
        ax.axvspan(data.fit_band[0], data.fit_band[1], color="0.94", zorder=0, lw=0)
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    # corrected solid underneath, original dashed on top: both stay visible where they agree
    ax_a.plot(
        data.energy,
        data.area_corrected,
        color=C_CORR,
        lw=1.8,
        label=r"corrected: ARF $\times$ $m(E;\theta_\mathrm{best})$",
    )
    ax_a.plot(
        data.energy,
        data.area_target,
        color=C_ORIG,
        lw=1.3,
        ls=(0, (4, 2)),
        label="target ARF (original)",
    )
    ax_a.set_ylabel(r"effective area [cm$^2$]")
    ax_a.set_title("Telescope 1: original and corrected effective area")
    ax_a.legend(loc="upper right", fontsize=9)
    ax_a.set_ylim(bottom=0)
    ax_a.text(
        data.fit_band[0] * 1.04,
        0.96,
        f"fitted band {data.fit_band[0]:g}-{data.fit_band[1]:g} keV",
        ha="left",
        va="top",
        fontsize=8,
        color="0.4",
        transform=ax_a.get_xaxis_transform(),
    )

    lo, med, hi = data.m_band
    ax_m.fill_between(
        data.energy,
        lo,
        hi,
        color=C_BAND,
        alpha=0.45,
        lw=0,
        label=f"posterior 16-84% ({data.n_band_samples} samples)",
    )
    ax_m.plot(data.energy, med, color=C_CORR, lw=1.0, ls="--", label="posterior median")
    ax_m.plot(
        data.energy,
        data.m_best,
        color=C_CORR,
        lw=1.8,
        label=r"$\theta_\mathrm{best}$: " + theta_text(data.theta_best),
    )
    if data.m_true is not None and data.theta_true is not None:
        ax_m.plot(
            data.energy,
            data.m_true,
            color=C_TRUE,
            lw=1.3,
            ls=":",
            label=r"$\theta_\mathrm{true}$: " + theta_text(data.theta_true),
        )
    ax_m.axhline(1.0, color="0.4", lw=0.8)
    ax_m.set_xlabel("energy [keV]")
    ax_m.set_ylabel(r"multiplier $m(E)$")
    ax_m.set_xlim(data.energy[0], data.energy[-1])
    ax_m.legend(loc="best", fontsize=8)
    plain_log_axis(ax_m, "x")
    return fig
