"""The emulator as the inversion sees it: float64, its bounds, unit coordinates, a fixed T grid.

The emulator is evaluated once per theta on a fixed log-spaced T_true grid and carried to any
other temperature by a cubic spline in log T of log(T1 / T_true): the spline is linear in the
grid values, so it is one precomputed matrix (:func:`spline_matrix`) and the cost per theta
does not grow with the number of sources.

Unit coordinates: every parameter is mapped linearly onto [0, 1] over its bounds, in log for
the parameters whose grid axis is geometric (the emulator's log inputs), so that curved
degeneracies (e.g. sigma x A) straighten and samplers mix.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from xrmodifier_hpc.errors import UserError


class EmulatorView:
    """The emulator with its bounds, in float64, evaluated per theta on a fixed log-T grid.

    Parameters
    ----------
    module : torch.nn.Module
        ``module(theta (n, d), t_true (n,)) -> (n, 2)`` [T1, T1'] keV, with attributes
        ``bounds`` ((d + 1, 2), T_true last, keV), ``param_names`` and optionally
        ``log_axes`` (d + 1 flags), as ``emulator.load`` gives.
    n_tgrid : int
        Points of the log-spaced T_true grid evaluated per theta.

    Raises
    ------
    UserError
        When the emulator's bounds are degenerate.
    """

    def __init__(self, module: torch.nn.Module, n_tgrid: int = 24) -> None:
        self.module = module
        bounds = np.asarray(module.bounds, dtype=np.float64)
        self.param_names: tuple[str, ...] = tuple(module.param_names)
        self.theta_lo = bounds[:-1, 0].copy()
        self.theta_hi = bounds[:-1, 1].copy()
        self.t_lo, self.t_hi = float(bounds[-1, 0]), float(bounds[-1, 1])
        if not np.all(self.theta_hi > self.theta_lo) or not 0 < self.t_lo < self.t_hi:
            raise UserError("the emulator's parameter bounds are degenerate")
        self.log_t_grid = np.linspace(math.log(self.t_lo), math.log(self.t_hi), n_tgrid)
        self._t_grid = torch.tensor(np.exp(self.log_t_grid), dtype=torch.float64)
        log_axes = getattr(module, "log_axes", None)
        log_axes = np.zeros(self.d, bool) if log_axes is None else np.asarray(log_axes[:-1], bool)
        self.log_axes = log_axes & (self.theta_lo > 0)
        a = np.where(
            self.log_axes, np.log(np.where(self.log_axes, self.theta_lo, 1.0)), self.theta_lo
        )
        b = np.where(
            self.log_axes, np.log(np.where(self.log_axes, self.theta_hi, 1.0)), self.theta_hi
        )
        self._a, self._b = a, b
        self._a_t = torch.tensor(a, dtype=torch.float64)
        self._w_t = torch.tensor(b - a, dtype=torch.float64)
        self._log_t = torch.tensor(self.log_axes)

    @property
    def d(self) -> int:
        """Number of modifier parameters."""
        return len(self.param_names)

    @property
    def n_tgrid(self) -> int:
        """Points of the log-T grid."""
        return self.log_t_grid.size

    def to_theta(self, u: torch.Tensor) -> torch.Tensor:
        """Unit-cube coordinates to theta.

        Parameters
        ----------
        u : Tensor, shape (..., d)
            Unit coordinates (0 and 1 are the bounds).

        Returns
        -------
        Tensor, shape (..., d)
            theta in parameter units: linear over each parameter's bounds, in log for
            parameters on a geometric grid. Differentiable.
        """
        x = self._a_t + u * self._w_t
        # exp only where taken, so linear axes with large values cannot overflow (nor their
        # gradients turn NaN)
        return torch.where(self._log_t, torch.exp(torch.where(self._log_t, x, 0.0)), x)

    def to_unit(self, theta: np.ndarray) -> np.ndarray:
        """Theta to unit-cube coordinates (the inverse of :meth:`to_theta`).

        Parameters
        ----------
        theta : array_like, shape (..., d)
            Parameter units.

        Returns
        -------
        ndarray, shape (..., d)
        """
        theta = np.asarray(theta, dtype=np.float64)
        x = np.where(self.log_axes, np.log(np.where(self.log_axes, theta, 1.0)), theta)
        return (x - self._a) / (self._b - self._a)

    def theta_of(self, u: np.ndarray) -> np.ndarray:
        """:meth:`to_theta` for numpy arrays.

        Parameters
        ----------
        u : array_like, shape (..., d)
            Unit coordinates.

        Returns
        -------
        ndarray, shape (..., d)
            theta in parameter units.
        """
        return self.to_theta(torch.as_tensor(np.asarray(u, dtype=np.float64))).numpy()

    def log_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """Log |d theta / d u| up to a constant: what keeps the prior flat in theta.

        Parameters
        ----------
        u : Tensor, shape (..., d)
            Unit coordinates.

        Returns
        -------
        Tensor, shape (...)
        """
        x = self._a_t + u * self._w_t
        return torch.where(self._log_t, x, torch.zeros_like(x)).sum(dim=-1)

    def __call__(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
        """Call the emulator: theta (n, d), t_true (n,) keV -> (n, 2) [T1, T1'] keV."""
        return self.module(theta, t_true)

    def log_ratio_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """log(T1_emu / T_true) on the T grid.

        Parameters
        ----------
        theta : Tensor, shape (B, d)
            A batch of theta (parameter units).

        Returns
        -------
        Tensor, shape (B, n_tgrid)
        """
        b, g = theta.shape[0], self.n_tgrid
        th = theta.repeat_interleave(g, dim=0)
        t = self._t_grid.repeat(b)
        t1 = self.module(th, t)[:, 0].reshape(b, g)
        return torch.log(t1 / self._t_grid)


def spline_matrix(x_grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Build the matrix of cubic-spline interpolation from ``x_grid`` to ``x``.

    A cubic spline is linear in its data, so interpolating the identity gives the weights.

    Parameters
    ----------
    x_grid : ndarray, shape (G,)
        Increasing knots.
    x : array_like, shape (m,)
        Where to interpolate.

    Returns
    -------
    ndarray, shape (m, G)
        ``W`` with ``W @ y = scipy.interpolate.CubicSpline(x_grid, y)(x)`` for any ``y``
        (not-a-knot end conditions).
    """
    from scipy.interpolate import CubicSpline

    return CubicSpline(x_grid, np.eye(x_grid.size), axis=0)(np.asarray(x, dtype=np.float64))
