"""Figure 5: profile C-statistic curves C(T) of a few grid points, from grid.h5."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.figures.style import (
    C_CORR,
    C_ORIG,
    C_TRUE,
    legend_line,
    new_figure,
    plain_log_axis,
)
from xrmodifier_hpc.physics.fitstat import LocalPolyGrid

#: points of the drawn interpolant per fit-grid node (figure 5)
PROFILE_FINE_PER_NODE = 20
#: profile-curve examples drawn in figure 5
N_PROFILE_EXAMPLES = 4
#: figure 5 shows this many fit-grid temperatures either side of each curve's minimum
PROFILE_HALF_WINDOW = 3


@dataclass
class ProfileFigureData:
    """Figure 5's numbers for k example grid points.

    Attributes
    ----------
    tgrid : ndarray, shape (n_T,)
        The fit-temperature grid (keV).
    index : ndarray of int, shape (k,)
        The grid points.
    delta_orig, delta_mod : ndarray, shape (k, n_T)
        The stored C(T) of realisation 0 (original and modified ARF) minus the interpolant's
        minimum, i.e. C at the best fit.
    t_fine : ndarray, shape (n_fine,)
        Where the interpolant is drawn (keV).
    fine_orig, fine_mod : ndarray, shape (k, n_fine)
        The interpolant the fit refines on (local polynomials in ln T,
        ``physics.fitstat.LocalPolyGrid``) minus the same minimum.
    t_fit_orig, t_fit_mod, t_true : ndarray, shape (k,)
        Best fits and true temperatures (keV).
    theta : ndarray, shape (k, d)
        The points' theta.
    param_names : tuple of str
        The d parameters.
    """

    tgrid: np.ndarray
    index: np.ndarray
    delta_orig: np.ndarray
    delta_mod: np.ndarray
    t_fine: np.ndarray
    fine_orig: np.ndarray
    fine_mod: np.ndarray
    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    t_true: np.ndarray
    theta: np.ndarray
    param_names: tuple[str, ...]


def nearest_grid_theta(grid: Any, theta: np.ndarray) -> np.ndarray:
    """Per parameter, the index of the grid axis value nearest to ``theta``.

    Parameters
    ----------
    grid : io.store.GridData
        The grid (its ``param_names`` and ``axes``).
    theta : ndarray, shape (d,)
        Parameter units.

    Returns
    -------
    ndarray of int, shape (d,)
        Nearest in log for geometric axes, as the emulator sees them.
    """
    out = []
    for name, value in zip(grid.param_names, np.asarray(theta, dtype=float)):
        axis = np.asarray(grid.axes[name], dtype=float)
        geometric = (
            axis.size > 2
            and axis[0] > 0
            and np.allclose(np.diff(np.log(axis)), np.log(axis[1] / axis[0]))
        )
        if geometric and value > 0:
            out.append(int(np.argmin(np.abs(np.log(axis) - math.log(value)))))
        else:
            out.append(int(np.argmin(np.abs(axis - value))))
    return np.array(out, dtype=np.int64)


def pick_profile_examples(
    grid: Any, theta: np.ndarray | None = None, n: int = N_PROFILE_EXAMPLES
) -> np.ndarray:
    """Grid points for figure 5.

    ``n`` T_true values spread over the T_true axis, at the grid theta nearest to ``theta``
    (the inversion's theta_best: the fits the found correction changes). Without ``theta``,
    or where that point is unusable (a flagged fit, non-finite curves), the usable point at
    that T_true where the correction moves the best fit most.

    Parameters
    ----------
    grid : io.store.GridData
        The grid with its curves.
    theta : ndarray, shape (d,), optional
        theta_best (parameter units).
    n : int
        Examples wanted.

    Returns
    -------
    ndarray of int, shape (<= n,)
        Grid point indices.
    """
    shape = grid.shape  # points are C-ordered, T_true fastest (store.GridData.shape)
    n_t = shape[-1]
    t_index = np.arange(grid.n_points) % n_t
    t1 = grid.t_fit_orig[:, 0].astype(float)
    t1p = grid.t_fit_mod[:, 0].astype(float)
    usable = (
        grid.done
        & np.all(grid.status[:, 0, :] == 0, axis=1)
        & np.isfinite(t1)
        & np.isfinite(t1p)
        & np.all(np.isfinite(grid.curve_orig[:, 0, :]), axis=1)
        & np.all(np.isfinite(grid.curve_mod[:, 0, :]), axis=1)
    )
    shift = np.where(usable, np.abs(np.log(np.where(usable, t1 / t1p, 1.0))), -np.inf)
    base = None if theta is None else nearest_grid_theta(grid, theta)
    picks = []
    for j in np.unique(np.round(np.linspace(0, n_t - 1, min(n, n_t))).astype(int)):
        if base is not None:
            k = int(np.ravel_multi_index((*base, j), shape))
            if usable[k]:
                picks.append(k)
                continue
        cand = np.flatnonzero((t_index == j) & usable)
        if cand.size:
            picks.append(int(cand[np.argmax(shift[cand])]))
    return np.array(picks, dtype=np.int64)


def figure_data_profiles(
    grid: Any, theta: np.ndarray | None = None, n: int = N_PROFILE_EXAMPLES
) -> ProfileFigureData | None:
    """C(T) curves of a few grid points (see :func:`pick_profile_examples`).

    Parameters
    ----------
    grid : io.store.GridData
        ``store.load_grid(..., curves=True)``.
    theta : ndarray, shape (d,), optional
        theta_best (parameter units).
    n : int
        Examples wanted.

    Returns
    -------
    ProfileFigureData or None
        None when the grid holds no curves or no usable point.
    """
    if grid.curve_orig is None or grid.curve_mod is None:
        return None
    idx = pick_profile_examples(grid, theta, n)
    if idx.size == 0:
        return None
    c_orig = grid.curve_orig[idx, 0, :].astype(float)
    c_mod = grid.curve_mod[idx, 0, :].astype(float)
    tgrid = np.asarray(grid.fit_tgrid, dtype=float)
    interpolant = LocalPolyGrid.build(np.log(tgrid))
    t_fine = np.geomspace(tgrid[0], tgrid[-1], PROFILE_FINE_PER_NODE * tgrid.size)
    fine_orig = interpolant.interpolate(c_orig, np.log(t_fine))
    fine_mod = interpolant.interpolate(c_mod, np.log(t_fine))
    min_orig = fine_orig.min(axis=1, keepdims=True)
    min_mod = fine_mod.min(axis=1, keepdims=True)
    return ProfileFigureData(
        tgrid=tgrid,
        index=idx,
        delta_orig=c_orig - min_orig,
        delta_mod=c_mod - min_mod,
        t_fine=t_fine,
        fine_orig=fine_orig - min_orig,
        fine_mod=fine_mod - min_mod,
        t_fit_orig=grid.t_fit_orig[idx, 0].astype(float),
        t_fit_mod=grid.t_fit_mod[idx, 0].astype(float),
        t_true=grid.t_true[idx].astype(float),
        theta=grid.theta[idx].astype(float),
        param_names=tuple(grid.param_names),
    )


def profile_window(
    data: ProfileFigureData, i: int, half: int = PROFILE_HALF_WINDOW
) -> tuple[tuple[float, float], float]:
    """Temperature range and delta-C top for example ``i`` of figure 5.

    ``half`` fit-grid points either side of both curves' minima, and T_true. The fit grid is
    often coarse next to a bright spectrum's curve width, so a fixed delta-C window could hold
    only two or three points; this keeps the curves' shape in view.

    Parameters
    ----------
    data : ProfileFigureData
        The curves.
    i : int
        The example.
    half : int
        Fit-grid points shown either side.

    Returns
    -------
    (lo, hi) : (float, float)
        Temperature range (keV).
    top : float
        Upper delta-C limit (>= 3).
    """
    n = data.tgrid.size
    mins = [int(np.argmin(data.delta_orig[i])), int(np.argmin(data.delta_mod[i]))]
    a, b = max(min(mins) - half, 0), min(max(mins) + half, n - 1)
    lo = min(data.tgrid[a], data.t_true[i]) / 1.02
    hi = max(data.tgrid[b], data.t_true[i]) * 1.02
    shown = (data.tgrid >= lo) & (data.tgrid <= hi)
    values = np.concatenate([data.delta_orig[i][shown], data.delta_mod[i][shown]])
    top = max(float(np.nanmax(values)) * 1.05, 3.0)
    return (float(lo), float(hi)), top


def plot_profiles(data: ProfileFigureData) -> Any:
    """Draw figure 5: C(T) - C_min of both fits per example.

    With the fit grid's nodes, the interpolant, T_true, the best fits and delta-C = 1.

    Parameters
    ----------
    data : ProfileFigureData
        From :func:`figure_data_profiles`.

    Returns
    -------
    matplotlib.figure.Figure
        Two columns of 5.2 x 3.6 inch panels, not yet saved.
    """
    k = data.index.size
    cols = 2 if k > 1 else 1
    rows = math.ceil(k / cols)
    fig = new_figure(5.2 * cols, 3.6 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i in range(k):
        ax = axes[i]
        for fine, nodes, colour in (
            (data.fine_orig[i], data.delta_orig[i], C_ORIG),
            (data.fine_mod[i], data.delta_mod[i], C_CORR),
        ):
            ax.plot(data.t_fine, fine, color=colour, lw=1.3)
            ax.plot(data.tgrid, nodes, color=colour, lw=0, marker="o", ms=3)
        ax.axvline(data.t_true[i], color=C_TRUE, lw=1.2, ls=":")
        ax.axvline(data.t_fit_orig[i], color=C_ORIG, lw=0.9, ls="--")
        ax.axvline(data.t_fit_mod[i], color=C_CORR, lw=0.9, ls="--")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="-.")
        (lo, hi), top = profile_window(data, i)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.03 * top, top)
        theta = ", ".join(f"{n} = {v:.3g}" for n, v in zip(data.param_names, data.theta[i]))
        ax.set_title(
            f"grid point {data.index[i]}: {theta}\n"
            f"$T_\\mathrm{{true}}$ = {data.t_true[i]:.3g}, $T_1$ = {data.t_fit_orig[i]:.3g}, "
            f"$T_1'$ = {data.t_fit_mod[i]:.3g} keV",
            fontsize=9,
        )
        ax.set_xlabel("fitted temperature T [keV]")
        ax.set_ylabel(r"$C(T) - C_\mathrm{min}$")
        ax.grid(alpha=0.3, which="both", lw=0.5)
        plain_log_axis(ax, "x", max_ticks=6)
    for ax in axes[k:]:
        ax.set_visible(False)
    handles = [
        legend_line(C_ORIG, "-", "fitted with the original ARF", marker="o"),
        legend_line(C_CORR, "-", "fitted with the modified ARF", marker="o"),
        legend_line(C_TRUE, ":", r"$T_\mathrm{true}$"),
        legend_line("0.3", "--", r"best fits $T_1$, $T_1'$"),
        legend_line("0.5", "-.", r"$\Delta C = 1$"),
    ]
    for h in handles[:2]:
        h.set_markersize(4)
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Profile C-statistic of one simulated spectrum per grid point, minus C at the best fit\n"
        "dots: the fit-temperature grid; lines: the interpolant the fit refines on",
        fontsize=10,
    )
    return fig
