"""Figure 3: emulated against simulated temperatures at the emulator's off-grid check points."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.figures.style import C_CORR, C_INTERP, new_figure, plain_log_axis


@dataclass
class ParityFigureData:
    """Figure 3's numbers at the usable off-grid points.

    Attributes
    ----------
    t_true : ndarray, shape (n,)
        True temperatures (keV).
    truth, emulator, interpolator : ndarray, shape (n, 2)
        Simulated (asimov), emulated and grid-interpolated [T1, T1'] (keV).
    rms : dict
        RMS relative errors, ``{"emulator"|"interpolator": {"t_fit_orig"|"t_fit_mod":
        fraction}}``.
    """

    t_true: np.ndarray
    truth: np.ndarray
    emulator: np.ndarray
    interpolator: np.ndarray
    rms: dict[str, dict[str, float]]

    @property
    def residual_emulator(self) -> np.ndarray:
        """Emulated / simulated - 1, shape (n, 2)."""
        return self.emulator / self.truth - 1.0

    @property
    def residual_interpolator(self) -> np.ndarray:
        """Interpolated / simulated - 1, shape (n, 2)."""
        return self.interpolator / self.truth - 1.0


def figure_data_parity(offgrid: dict[str, np.ndarray] | None) -> ParityFigureData | None:
    """Collect the emulator's stored off-grid check, usable points only.

    Parameters
    ----------
    offgrid : dict of str to ndarray, or None
        ``emulator.load(...).offgrid``: ``t_true`` (n,), ``truth``, ``emulator``,
        ``interpolator`` (n, 2) keV and ``usable`` (n,) bool.

    Returns
    -------
    ParityFigureData or None
        None when the emulator has no usable off-grid point (``offgrid_points = 0``).
    """
    if offgrid is None or len(offgrid.get("t_true", ())) == 0:
        return None
    ok = np.asarray(offgrid["usable"], dtype=bool)
    truth = np.asarray(offgrid["truth"], dtype=float)[ok]
    emu = np.asarray(offgrid["emulator"], dtype=float)[ok]
    interp = np.asarray(offgrid["interpolator"], dtype=float)[ok]
    if truth.shape[0] == 0:
        return None
    rms = {
        who: {
            name: float(np.sqrt(np.mean((pred[:, k] / truth[:, k] - 1.0) ** 2)))
            for k, name in enumerate(("t_fit_orig", "t_fit_mod"))
        }
        for who, pred in (("emulator", emu), ("interpolator", interp))
    }
    return ParityFigureData(
        t_true=np.asarray(offgrid["t_true"], dtype=float)[ok],
        truth=truth,
        emulator=emu,
        interpolator=interp,
        rms=rms,
    )


def plot_parity(data: ParityFigureData) -> Any:
    """Draw figure 3: emulated against simulated T1 and T1' (top), residuals (bottom).

    The residuals against T_true, for the emulator and grid interpolation, share one range.

    Parameters
    ----------
    data : ParityFigureData
        From :func:`figure_data_parity`.

    Returns
    -------
    matplotlib.figure.Figure
        10 x 8 inches, not yet saved.
    """
    fig = new_figure(10.0, 8.0)
    axes = fig.subplots(2, 2)
    labels = (r"$T_1$ (original ARF)", r"$T_1'$ (modified ARF)")
    short = (r"$T_1$", r"$T_1'$")
    for k, name in enumerate(("t_fit_orig", "t_fit_mod")):
        ax = axes[0, k]
        lo, hi = data.truth[:, k].min() / 1.05, data.truth[:, k].max() * 1.05
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, ls="--", zorder=0, label="1:1")
        ax.scatter(
            data.truth[:, k],
            data.emulator[:, k],
            s=7,
            color=C_CORR,
            alpha=0.7,
            lw=0,
            label="emulator",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"simulated (asimov) {short[k]} [keV]")
        ax.set_ylabel(f"emulated {short[k]} [keV]")
        ax.set_title(
            f"{labels[k]}: {data.truth.shape[0]} off-grid points, "
            f"RMS {100 * data.rms['emulator'][name]:.2f}%",
            fontsize=10,
        )
        ax.legend(loc="upper left", fontsize=8, markerscale=2)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        plain_log_axis(ax, "x")
        plain_log_axis(ax, "y")

        ax_r = axes[1, k]
        ax_r.scatter(
            data.t_true,
            100 * data.residual_interpolator[:, k],
            s=7,
            color=C_INTERP,
            alpha=0.7,
            lw=0,
            label=f"grid interpolation (RMS {100 * data.rms['interpolator'][name]:.2f}%)",
        )
        ax_r.scatter(
            data.t_true,
            100 * data.residual_emulator[:, k],
            s=7,
            color=C_CORR,
            alpha=0.8,
            lw=0,
            label=f"emulator (RMS {100 * data.rms['emulator'][name]:.2f}%)",
        )
        ax_r.axhline(0.0, color="0.3", lw=1.0, ls="--")
        ax_r.set_xscale("log")
        ax_r.set_xlabel(r"$T_\mathrm{true}$ [keV]")
        ax_r.set_ylabel(f"{short[k]}: predicted / simulated $-$ 1 [%]")
        ax_r.legend(loc="lower left", fontsize=8, markerscale=2)
        ax_r.grid(alpha=0.3, which="both", lw=0.5)
        plain_log_axis(ax_r, "x")
    # one y range for both residual panels, so the two outputs compare at a glance
    ylim = max(abs(v) for ax in axes[1] for v in ax.get_ylim())
    for ax in axes[1]:
        ax.set_ylim(-ylim, ylim)
    return fig
