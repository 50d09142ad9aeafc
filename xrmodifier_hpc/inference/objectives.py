"""Objectives of theta for the multi-start: -log L, the seed's loss, Gaussian KL, Wasserstein.

Point-estimate objectives use what the corrected telescope 1 would report for source i:
``T1'_i(theta) = T1'_emu(theta, T*_i)`` where ``T*_i`` solves ``T1_emu(theta, T*_i) = T1_i``
(the true temperature that reproduces the observed biased T1 under theta; Newton in log T
from a grid guess, with the implicit-function gradient). Then

* ``seed_loss``: ``sum_i (T0_i - T1'_i)^2`` (keV^2), the seed's loss;
* ``gaussian_kl``: ``sum_i KL(N(T0_i, s0_i^2) || N(T1'_i, s1'_i^2))`` (nats), the trusted
  posterior against the corrected one;
* ``wasserstein``: ``sum_i W2^2`` between the same Gaussians (keV^2);

where ``s1'_i`` is telescope 1's error (with s_emu) carried through dT1'/dT1 at ``T*_i``.
``likelihood`` is -log L of :class:`~.likelihood.Likelihood`.

Each objective is a function ``f(objectives, theta (d,)) -> scalar tensor`` to MINIMISE,
registered by name in :data:`xrmodifier_hpc.registry.OBJECTIVES`; ``[inversion] objective``
picks one, and more can be added with ``OBJECTIVES.add(name, function)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from xrmodifier_hpc.inference.likelihood import Likelihood
from xrmodifier_hpc.inference.view import EmulatorView
from xrmodifier_hpc.io.observations import Observations
from xrmodifier_hpc.registry import OBJECTIVES

# --------------------------------------------------------------------------------------------
# the corrected telescope-1 temperatures
# --------------------------------------------------------------------------------------------


def solve_t_star(
    view: EmulatorView, theta: torch.Tensor, t1: torch.Tensor, newton_steps: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """Solve T1_emu(theta, T*) = t1 for the true temperatures T*, differentiably in theta.

    Newton in log T from a monotone grid guess; the last step is taken with gradients so
    that dT*/dtheta = -(dT1/dtheta) / (dT1/dT) (the implicit-function derivative).

    Parameters
    ----------
    view : EmulatorView
        The emulator.
    theta : Tensor, shape (d,)
        Parameter units.
    t1 : Tensor, shape (n,)
        Observed telescope-1 temperatures (keV).
    newton_steps : int
        Newton iterations before the differentiable one.

    Returns
    -------
    t_star : Tensor, shape (n,)
        keV, inside the emulator's T range.
    clamped : Tensor of bool, shape (n,)
        The sources whose t1 lies outside what the emulator gives in its T range (T* is
        then the range's end).
    """
    n = t1.shape[0]
    lo, hi = math.log(view.t_lo), math.log(view.t_hi)
    log_y = torch.log(t1.detach())
    with torch.no_grad():
        r = view.log_ratio_grid(theta.detach()[None, :])[0].numpy()
    log_f = np.maximum.accumulate(view.log_t_grid + r)
    x = torch.tensor(np.interp(log_y.numpy(), log_f, view.log_t_grid), dtype=torch.float64)
    th = theta.detach().expand(n, -1)

    def log_f_and_slope(x_: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.enable_grad():
            xr = x_.detach().requires_grad_(True)
            lf = torch.log(view(th, torch.exp(xr))[:, 0])
            (slope,) = torch.autograd.grad(lf.sum(), xr)
        return lf.detach(), slope.detach()

    for _ in range(newton_steps):
        lf, slope = log_f_and_slope(x)
        step = (lf - log_y) / torch.where(slope > 1e-3, slope, torch.full_like(slope, 1e-3))
        x = torch.clamp(x - step, lo, hi)
    lf, slope = log_f_and_slope(x)
    slope = torch.where(slope > 1e-3, slope, torch.full_like(slope, 1e-3))
    clamped = ((x <= lo) & (lf > log_y)) | ((x >= hi) & (lf < log_y))
    # the differentiable step: zero in value at convergence, carries d/dtheta
    lf_theta = torch.log(view(theta.expand(n, -1), torch.exp(x))[:, 0])
    x_star = torch.where(clamped, x, x - (lf_theta - log_y) / slope)
    return torch.exp(x_star), clamped


def corrected_t1(
    view: EmulatorView, theta: torch.Tensor, t1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """T1'_i(theta): the emulated T1' at the T* that reproduces the observed T1_i.

    Parameters
    ----------
    view : EmulatorView
        The emulator.
    theta : Tensor, shape (d,)
        Parameter units.
    t1 : Tensor, shape (n,)
        Observed telescope-1 temperatures (keV).

    Returns
    -------
    t1_corrected : Tensor, shape (n,)
        T1' (keV), differentiable in theta.
    t_star : Tensor, shape (n,)
        T* (keV).
    clamped : Tensor of bool, shape (n,)
        As in :func:`solve_t_star`.
    """
    t_star, clamped = solve_t_star(view, theta, t1)
    t1p = view(theta.expand(t1.shape[0], -1), t_star)[:, 1]
    return t1p, t_star, clamped


@dataclass(frozen=True)
class CorrectedSources:
    """Per source, what the corrected telescope 1 reports at one theta (keV).

    Attributes
    ----------
    t1_corrected : ndarray, shape (n,)
        T1'_i.
    err_lo, err_hi : ndarray, shape (n,)
        Distances to T1' at the ends of T1's 1-sigma interval (>= 0).
    t_star : ndarray, shape (n,)
        The implied true temperatures T*_i.
    clamped : ndarray of bool, shape (n,)
        Sources whose T1 the emulator cannot reach at theta.
    """

    t1_corrected: np.ndarray
    err_lo: np.ndarray
    err_hi: np.ndarray
    t_star: np.ndarray
    clamped: np.ndarray


def corrected_sources(view: EmulatorView, theta: np.ndarray, obs: Observations) -> CorrectedSources:
    """T1'_i at ``theta`` and its errors, carried by solving at the ends of T1's interval.

    Parameters
    ----------
    view : EmulatorView
        The emulator.
    theta : array_like, shape (d,)
        Parameter units.
    obs : Observations
        The n sources (keV).

    Returns
    -------
    CorrectedSources
    """
    tb = torch.as_tensor(np.asarray(theta, dtype=np.float64))
    with torch.no_grad():
        t1p, t_star, clamped = corrected_t1(view, tb, torch.tensor(obs.t1))
        lo_t1, _, _ = corrected_t1(
            view, tb, torch.tensor(np.maximum(obs.t1 - obs.t1_err_lo, 1e-3 * obs.t1))
        )
        hi_t1, _, _ = corrected_t1(view, tb, torch.tensor(obs.t1 + obs.t1_err_hi))
    t1p, lo_t1, hi_t1 = t1p.numpy(), lo_t1.numpy(), hi_t1.numpy()
    return CorrectedSources(
        t1_corrected=t1p,
        err_lo=np.maximum(t1p - lo_t1, 0.0),
        err_hi=np.maximum(hi_t1 - t1p, 0.0),
        t_star=t_star.numpy(),
        clamped=clamped.numpy().astype(bool),
    )


# --------------------------------------------------------------------------------------------
# divergences
# --------------------------------------------------------------------------------------------


def seed_loss(t0: torch.Tensor, t1_corrected: torch.Tensor) -> torch.Tensor:
    """Compute the seed's loss sum_i (T0_i - T1'_i)^2.

    Parameters
    ----------
    t0, t1_corrected : Tensor, shape (n,)
        keV.

    Returns
    -------
    Tensor, scalar
        keV^2.
    """
    return ((t0 - t1_corrected) ** 2).sum()


def gaussian_kl(
    t0: torch.Tensor, s0: torch.Tensor, t1p: torch.Tensor, s1p: torch.Tensor
) -> torch.Tensor:
    """sum_i KL(N(t0, s0^2) || N(t1p, s1p^2)).

    KL(p || q) = log(s1p / s0) + (s0^2 + (t0 - t1p)^2) / (2 s1p^2) - 1/2 for two normals
    (the divergence of Kullback & Leibler 1951, Ann. Math. Stat. 22, 79, in closed form).

    Parameters
    ----------
    t0, s0 : Tensor, shape (n,)
        Means and widths of the trusted posteriors (keV).
    t1p, s1p : Tensor, shape (n,)
        Means and widths of the corrected ones (keV).

    Returns
    -------
    Tensor, scalar
        nats.
    """
    return (torch.log(s1p / s0) + (s0**2 + (t0 - t1p) ** 2) / (2 * s1p**2) - 0.5).sum()


def wasserstein2(
    t0: torch.Tensor, s0: torch.Tensor, t1p: torch.Tensor, s1p: torch.Tensor
) -> torch.Tensor:
    """sum_i W2^2 between N(t0, s0^2) and N(t1p, s1p^2).

    For one-dimensional normals W2^2 = (t0 - t1p)^2 + (s0 - s1p)^2 (Dowson & Landau 1982,
    J. Multivariate Anal. 12, 450).

    Parameters
    ----------
    t0, s0, t1p, s1p : Tensor, shape (n,)
        As in :func:`gaussian_kl` (keV).

    Returns
    -------
    Tensor, scalar
        keV^2.
    """
    return ((t0 - t1p) ** 2 + (s0 - s1p) ** 2).sum()


# --------------------------------------------------------------------------------------------
# the objectives of one data set
# --------------------------------------------------------------------------------------------


class Objectives:
    """Every objective of theta for one data set.

    Parameters
    ----------
    view : EmulatorView
        The emulator.
    obs : Observations
        The n sources (keV).
    s_emu : float
        Emulator error as a fraction of T1.
    """

    def __init__(self, view: EmulatorView, obs: Observations, s_emu: float) -> None:
        self.view = view
        self.obs = obs
        self.s_emu = float(s_emu)
        self.likelihood = Likelihood(view, obs, s_emu)
        f64 = torch.float64
        self.t0 = torch.tensor(obs.t0, dtype=f64)
        self.s0 = torch.tensor(obs.t0_err, dtype=f64)
        self.t1 = torch.tensor(obs.t1, dtype=f64)
        self.s1 = torch.tensor(np.hypot(obs.t1_err, self.s_emu * obs.t1), dtype=f64)

    def corrected_with_error(self, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """T1'_i and its 1-sigma error s1'_i = s1_i |dT1'/dT1| at T*_i.

        Parameters
        ----------
        theta : Tensor, shape (d,)
            Parameter units.

        Returns
        -------
        t1_corrected, error : Tensor, shape (n,)
            keV; differentiable in theta (the slope by central differences in T, 0.1%).
        """
        t1p, t_star, _ = corrected_t1(self.view, theta, self.t1)
        n = t_star.shape[0]
        h = 1e-3
        th = theta.expand(n, -1)
        up = self.view(th, t_star * (1 + h))
        down = self.view(th, t_star * (1 - h))
        ratio = (up[:, 1] - down[:, 1]) / (up[:, 0] - down[:, 0])
        return t1p, self.s1 * ratio.abs()

    def value(self, name: str, theta: torch.Tensor) -> torch.Tensor:
        """Evaluate the objective ``name`` at ``theta`` (to minimise).

        Parameters
        ----------
        name : str
            A name in :data:`xrmodifier_hpc.registry.OBJECTIVES`.
        theta : Tensor, shape (d,)
            Parameter units.

        Returns
        -------
        Tensor, scalar
            Differentiable in theta.

        Raises
        ------
        UserError
            When ``name`` is not a registered objective.
        """
        return OBJECTIVES.get(name)(self, theta)

    def unit_function(self, name: str) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        """Wrap an objective in unit coordinates with its gradient, for scipy's L-BFGS-B.

        Parameters
        ----------
        name : str
            A registered objective.

        Returns
        -------
        callable
            ``f(u (d,)) -> (value, gradient (d,))``; a non-finite value is returned as 1e300
            with a zero gradient (the optimiser backs off).
        """
        objective = OBJECTIVES.get(name)

        def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
            ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
            val = objective(self, self.view.to_theta(ut))
            (grad,) = torch.autograd.grad(val, ut)
            v = float(val.detach())
            if not math.isfinite(v):
                return 1e300, np.zeros_like(u)
            return v, grad.numpy().astype(np.float64)

        return fun


# the registered objectives: f(objectives, theta (d,)) -> scalar tensor to minimise


def negative_log_likelihood(objectives: Objectives, theta: torch.Tensor) -> torch.Tensor:
    """``likelihood``: -log L(theta) (nats).

    Parameters
    ----------
    objectives : Objectives
        The data set.
    theta : Tensor, shape (d,)
        Parameter units.

    Returns
    -------
    Tensor, scalar
    """
    return -objectives.likelihood(theta[None, :])[0]


def seed_loss_objective(objectives: Objectives, theta: torch.Tensor) -> torch.Tensor:
    """``seed_loss``: sum_i (T0_i - T1'_i(theta))^2 (keV^2).

    Parameters
    ----------
    objectives : Objectives
        The data set.
    theta : Tensor, shape (d,)
        Parameter units.

    Returns
    -------
    Tensor, scalar
    """
    t1p, _, _ = corrected_t1(objectives.view, theta, objectives.t1)
    return seed_loss(objectives.t0, t1p)


def gaussian_kl_objective(objectives: Objectives, theta: torch.Tensor) -> torch.Tensor:
    """``gaussian_kl``: :func:`gaussian_kl` of the trusted and corrected Gaussians (nats).

    Parameters
    ----------
    objectives : Objectives
        The data set.
    theta : Tensor, shape (d,)
        Parameter units.

    Returns
    -------
    Tensor, scalar
    """
    t1p, s1p = objectives.corrected_with_error(theta)
    return gaussian_kl(objectives.t0, objectives.s0, t1p, s1p)


def wasserstein_objective(objectives: Objectives, theta: torch.Tensor) -> torch.Tensor:
    """``wasserstein``: :func:`wasserstein2` of the same Gaussians (keV^2).

    Parameters
    ----------
    objectives : Objectives
        The data set.
    theta : Tensor, shape (d,)
        Parameter units.

    Returns
    -------
    Tensor, scalar
    """
    t1p, s1p = objectives.corrected_with_error(theta)
    return wasserstein2(objectives.t0, objectives.s0, t1p, s1p)
