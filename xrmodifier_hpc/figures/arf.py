"""Figures 1 and 6: the corrected ARFs as written, and the ensemble of posterior draws.

Figure 1 draws the WRITTEN ``corrected.arf`` (the target ARF times the pointwise posterior
median of m(E)) with its 16-84% band (``corrected_p16.arf``, ``corrected_p84.arf``), and
m(E; theta_best) only as a thin diagnostic line. Figure 6 draws the rows of
``corrected_ensemble.fits``. Every curve is read back from the written files (m(E) is the
written ARF over the target's), so the figures show what users take home.
"""

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


def _ratio(area: np.ndarray, target: np.ndarray) -> np.ndarray:
    """m(E) = written area / target area where the target is positive (NaN elsewhere)."""
    area = np.asarray(area, dtype=float)
    target = np.asarray(target, dtype=float)
    positive = target > 0
    return np.divide(
        area, target, out=np.full(np.broadcast(area, target).shape, np.nan), where=positive
    )


@dataclass
class ArfFigureData:
    """Figure 1's numbers.

    Attributes
    ----------
    energy : ndarray, shape (n_E,)
        ARF bin centres (keV).
    area_target, area_corrected : ndarray, shape (n_E,)
        The target ARF and ``corrected.arf`` as written (cm^2).
    area_band : ndarray, shape (2, n_E)
        ``corrected_p16.arf`` and ``corrected_p84.arf`` as written (cm^2).
    m_best : ndarray, shape (n_E,)
        m(E; theta_best) (dimensionless), the likelihood maximum: a diagnostic.
    m_band : ndarray, shape (3, n_E)
        The written 16th, 50th and 84th pointwise posterior percentiles of m(E): each written
        ARF over the target's (NaN where the target's area is 0).
    n_band_samples : int
        Posterior draws behind the written percentiles.
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
    area_band: np.ndarray
    m_best: np.ndarray
    m_band: np.ndarray
    n_band_samples: int
    m_true: np.ndarray | None
    fit_band: tuple[float, float]
    theta_best: dict[str, float]
    theta_true: dict[str, float] | None


def figure_data_arf(art: Artefacts) -> ArfFigureData:
    """Read the written corrected ARFs (median, p16, p84) and m(E; theta_best).

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
        When a corrected ARF is missing or not on the target ARF's energy grid.
    """
    target, corrected = art.target_arf, art.corrected_arf
    written = (corrected, art.corrected_p16, art.corrected_p84)
    for arf, name in zip(written, ("corrected.arf", "corrected_p16.arf", "corrected_p84.arf")):
        if arf is None or arf.specresp.shape != target.specresp.shape:
            raise UserError(
                f"{name} is missing or not on the target ARF's energy grid: rerun "
                "`xrmodifier invert CONFIG`",
                str(art.corrected_arf_path.parent / name),
            )
    family = result_family(art.result)
    energy = 0.5 * (target.energ_lo + target.energ_hi)
    area_t = np.asarray(target.specresp, dtype=float)
    area_c = np.asarray(corrected.specresp, dtype=float)
    lo = np.asarray(art.corrected_p16.specresp, dtype=float)  # type: ignore[union-attr]
    hi = np.asarray(art.corrected_p84.specresp, dtype=float)  # type: ignore[union-attr]
    try:
        n_draws = art.result.corrected_file("median").n_draws
    except KeyError:
        n_draws = 0
    theta_true = art.theta_true
    return ArfFigureData(
        energy=energy,
        area_target=area_t,
        area_corrected=area_c,
        area_band=np.vstack([lo, hi]),
        m_best=family.evaluate(energy, art.theta_best),
        m_band=np.vstack([_ratio(lo, area_t), _ratio(area_c, area_t), _ratio(hi, area_t)]),
        n_band_samples=int(n_draws),
        m_true=None if theta_true is None else family.evaluate(energy, theta_true),
        fit_band=(float(art.fit_band[0]), float(art.fit_band[1])),
        theta_best=dict(art.result.theta_best),
        theta_true=None if art.truth is None else dict(art.truth.theta_true),
    )


def _area_limits(ax: Any, *areas: np.ndarray) -> None:
    """Start the area axis at 0 with headroom above the highest curve for the legend."""
    ax.set_ylim(0, 1.35 * max(float(np.nanmax(a)) for a in areas))


def _shade_band(ax: Any, fit_band: tuple[float, float]) -> None:
    ax.axvspan(fit_band[0], fit_band[1], color="0.94", zorder=0, lw=0)
    ax.set_xscale("log")
    ax.grid(alpha=0.3, which="both", lw=0.5)


def plot_arf(data: ArfFigureData) -> Any:
    """Draw figure 1: the written corrected ARF and its band (top), m(E) (bottom).

    The written median is the thick line; the 16-84% band is shaded; m(E; theta_best) is a
    thin grey diagnostic line. The fitted band is shaded.

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
        _shade_band(ax, data.fit_band)
    ax_a.fill_between(
        data.energy,
        data.area_band[0],
        data.area_band[1],
        color=C_BAND,
        alpha=0.45,
        lw=0,
        label="corrected_p16 / _p84.arf (16-84%)",
    )
    # corrected solid underneath, original dashed on top: both stay visible where they agree
    ax_a.plot(
        data.energy,
        data.area_corrected,
        color=C_CORR,
        lw=1.8,
        label=r"corrected.arf: ARF $\times$ posterior median $m(E)$",
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
    ax_a.set_title("Telescope 1: original and corrected effective area (as written)")
    ax_a.legend(loc="upper right", fontsize=9)
    _area_limits(ax_a, data.area_corrected, data.area_target)
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
        label=f"posterior 16-84% ({data.n_band_samples} draws)",
    )
    ax_m.plot(data.energy, med, color=C_CORR, lw=1.8, label="written: posterior median")
    ax_m.plot(
        data.energy,
        data.m_best,
        color="0.45",
        lw=0.7,
        label=r"$\theta_\mathrm{best}$ (diagnostic): " + theta_text(data.theta_best),
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


@dataclass
class EnsembleFigureData:
    """Figure 6's numbers: the rows of ``corrected_ensemble.fits``.

    Attributes
    ----------
    energy : ndarray, shape (n_E,)
        Bin centres (keV).
    area_target : ndarray, shape (n_E,)
        The target ARF (cm^2).
    area_draws : ndarray, shape (N, n_E)
        The ensemble's corrected ARFs (cm^2).
    m_draws : ndarray, shape (N, n_E)
        Their multipliers, draw over target (NaN where the target's area is 0).
    m_median : ndarray, shape (n_E,)
        The written ``corrected.arf`` over the target.
    m_true : ndarray, shape (n_E,), or None
        m(E; theta_true) without a mock truth None.
    fit_band : (float, float)
        The fitted band (keV).
    """

    energy: np.ndarray
    area_target: np.ndarray
    area_draws: np.ndarray
    m_draws: np.ndarray
    m_median: np.ndarray
    m_true: np.ndarray | None
    fit_band: tuple[float, float]


def figure_data_ensemble(art: Artefacts) -> EnsembleFigureData | None:
    """Read figure 6's numbers from the written ensemble.

    Parameters
    ----------
    art : Artefacts
        The run's artefacts.

    Returns
    -------
    EnsembleFigureData or None
        None when no ensemble was written.

    Raises
    ------
    UserError
        When the ensemble is not on the target ARF's energy grid.
    """
    if art.ensemble is None:
        return None
    e_lo, e_hi, draws, _ = art.ensemble
    target = art.target_arf
    if draws.shape[-1] != target.specresp.size:
        raise UserError(
            "corrected_ensemble.fits is not on the target ARF's energy grid: rerun "
            "`xrmodifier invert CONFIG`",
            str(art.corrected_arf_path.parent / "corrected_ensemble.fits"),
        )
    energy = 0.5 * (np.asarray(target.energ_lo) + np.asarray(target.energ_hi))
    area_t = np.asarray(target.specresp, dtype=float)
    family = result_family(art.result)
    theta_true = art.theta_true
    return EnsembleFigureData(
        energy=energy,
        area_target=area_t,
        area_draws=np.asarray(draws, dtype=float),
        m_draws=_ratio(draws, area_t[None, :]),
        m_median=_ratio(art.corrected_arf.specresp, area_t),
        m_true=None if theta_true is None else family.evaluate(energy, theta_true),
        fit_band=(float(art.fit_band[0]), float(art.fit_band[1])),
    )


def plot_ensemble(data: EnsembleFigureData) -> Any:
    """Draw figure 6: the ensemble's m(E) (top) and corrected ARFs (bottom).

    Parameters
    ----------
    data : EnsembleFigureData
        From :func:`figure_data_ensemble`.

    Returns
    -------
    matplotlib.figure.Figure
        7.5 x 6.5 inches, not yet saved.
    """
    fig = new_figure(7.5, 6.5)
    ax_m, ax_a = fig.subplots(2, 1, sharex=True, height_ratios=(1.0, 1.2))
    for ax in (ax_m, ax_a):
        _shade_band(ax, data.fit_band)
    n = data.m_draws.shape[0]
    alpha = float(np.clip(6.0 / max(n, 1), 0.04, 0.5))
    for k in range(n):
        ax_m.plot(data.energy, data.m_draws[k], color=C_BAND, lw=0.6, alpha=alpha)
        ax_a.plot(data.energy, data.area_draws[k], color=C_BAND, lw=0.6, alpha=alpha)
    ax_m.plot([], [], color=C_BAND, lw=0.8, label=f"{n} posterior draws (ensemble rows)")
    ax_m.plot(data.energy, data.m_median, color=C_CORR, lw=1.6, label="corrected.arf (median)")
    if data.m_true is not None:
        ax_m.plot(data.energy, data.m_true, color=C_TRUE, lw=1.2, ls=":", label="theta_true")
    ax_m.axhline(1.0, color="0.4", lw=0.8)
    ax_m.set_ylabel(r"multiplier $m(E)$")
    ax_m.set_title("corrected_ensemble.fits: posterior draws of the corrected ARF")
    ax_m.legend(loc="best", fontsize=8)
    ax_a.plot(
        data.energy,
        data.area_target,
        color=C_ORIG,
        lw=1.2,
        ls=(0, (4, 2)),
        label="target ARF (original)",
    )
    ax_a.set_ylabel(r"effective area [cm$^2$]")
    ax_a.set_xlabel("energy [keV]")
    _area_limits(ax_a, data.area_draws, data.area_target)
    ax_a.set_xlim(data.energy[0], data.energy[-1])
    ax_a.legend(loc="upper right", fontsize=9)
    plain_log_axis(ax_a, "x")
    return fig
