"""Figure 2: telescope 1 against telescope 0 per source, before and after the correction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.figures.style import C_CORR, C_ORIG, new_figure, plain_log_axis
from xrmodifier_hpc.io.result import InversionResult


@dataclass
class TemperatureFigureData:
    """Figure 2's numbers, per source (keV).

    Attributes
    ----------
    names : tuple of str
        Source names.
    t0, t1, t1_corr : ndarray, shape (n,)
        T0, T1 (original ARF) and T1' (at theta_best).
    t0_err, t1_err, t1_corr_err : ndarray, shape (2, n)
        Their errors as [down, up] distances.
    seed_loss_before, seed_loss_after : float
        sum_i (T0_i - T1_i)^2 and sum_i (T0_i - T1'_i)^2 (keV^2).
    """

    names: tuple[str, ...]
    t0: np.ndarray
    t0_err: np.ndarray
    t1: np.ndarray
    t1_err: np.ndarray
    t1_corr: np.ndarray
    t1_corr_err: np.ndarray
    seed_loss_before: float
    seed_loss_after: float


def figure_data_temperatures(result: InversionResult) -> TemperatureFigureData:
    """Observed (T0, T1) and corrected T1' per source.

    Parameters
    ----------
    result : InversionResult
        The result; its ``sources`` carry the observations file's values.

    Returns
    -------
    TemperatureFigureData
    """
    src = result.sources

    def col(key: str) -> np.ndarray:
        return np.array([float(getattr(s, key)) for s in src], dtype=float)

    def err(prefix: str) -> np.ndarray:
        return np.vstack([col(f"{prefix}_err_lo"), col(f"{prefix}_err_hi")])

    return TemperatureFigureData(
        names=tuple(s.name for s in src),
        t0=col("t0"),
        t0_err=err("t0"),
        t1=col("t1"),
        t1_err=err("t1"),
        t1_corr=col("t1_corrected"),
        t1_corr_err=err("t1_corrected"),
        seed_loss_before=float(result.seed_loss.before),
        seed_loss_after=float(result.seed_loss.after),
    )


def plot_temperatures(data: TemperatureFigureData) -> Any:
    """Draw figure 2: T1 and T1' against T0 (log-log, 1:1 line) and T1/T0 - 1 below.

    Parameters
    ----------
    data : TemperatureFigureData
        From :func:`figure_data_temperatures`.

    Returns
    -------
    matplotlib.figure.Figure
        7 x 7.5 inches, not yet saved.
    """
    fig = new_figure(7.0, 7.5)
    ax, ax_r = fig.subplots(2, 1, sharex=True, height_ratios=(1.5, 1.0))
    lo = 0.95 * min(data.t0.min(), data.t1.min(), data.t1_corr.min())
    hi = 1.05 * max(data.t0.max(), data.t1.max(), data.t1_corr.max())
    common = dict(fmt="o", ms=3.5, capsize=0, elinewidth=0.8, alpha=0.9)
    ax.errorbar(
        data.t0,
        data.t1,
        xerr=data.t0_err,
        yerr=data.t1_err,
        color=C_ORIG,
        label=r"before: $T_1$ (original ARF)",
        **common,
    )
    ax.errorbar(
        data.t0,
        data.t1_corr,
        xerr=data.t0_err,
        yerr=data.t1_corr_err,
        color=C_CORR,
        label=r"after: $T_1'$ (corrected ARF)",
        **common,
    )
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, ls="--", label="1:1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("telescope 1 temperature [keV]")
    ax.set_title(
        f"{data.t0.size} sources; seed loss " + r"$\sum_i (T_{0,i} - T_{1,i}')^2$: "
        f"{data.seed_loss_before:.4g} " + r"$\to$" + f" {data.seed_loss_after:.4g} keV$^2$",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    plain_log_axis(ax, "y")

    # fractional difference from T0, where the correction is visible at every temperature;
    # a small horizontal offset keeps the two sets of error bars apart
    for t, err, color, shift in (
        (data.t1, data.t1_err, C_ORIG, 0.99),
        (data.t1_corr, data.t1_corr_err, C_CORR, 1.01),
    ):
        ax_r.errorbar(data.t0 * shift, t / data.t0 - 1.0, yerr=err / data.t0, color=color, **common)
    ax_r.axhline(0.0, color="0.3", lw=1.0, ls="--")
    ax_r.set_xlabel(r"telescope 0 temperature $T_0$ [keV]")
    ax_r.set_ylabel(r"$T_1 / T_0 - 1$  and  $T_1' / T_0 - 1$")
    ax_r.grid(alpha=0.3, which="both", lw=0.5)
    plain_log_axis(ax_r, "x")
    return fig
