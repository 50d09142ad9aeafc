"""Inversion: find the ARF correction theta that makes telescope 1 agree with telescope 0.

Inputs are the trained emulator (``emulator.pt``) and an observations table (T0 +- s0,
T1 +- s1 per source). Nothing is re-simulated: every temperature comes from the emulator.

Likelihood (DESIGN.md section 2), with the latent true temperature of each source
marginalised numerically::

    L_i(theta) = int dT p(T) N(T0_i | T, s0_i) N(T1_i | T1_emu(theta, T), s1_i^2 + s_emu_i^2)

``p(T)`` is flat on the emulator's T_true range; ``s_emu_i = s_emu * T1_i`` (the emulator's
relative error times the observed T1, so the normalisation does not depend on theta).
Asymmetric errors enter as a split normal: the lower error applies when the model lies below
the observed value. The integral is a trapezoid sum on per-source nodes spanning
T0 - 8 s0_lo .. T0 + 8 s0_hi (clipped to the emulator's range, with Gregory's fourth-order end
corrections there), T0 itself a node, spaced by at most 0.7 times the narrowest width
involved; for smooth integrands that have decayed at both ends the trapezoid rule is
spectrally accurate (~1e-13 for Gaussians at this spacing). With asymmetric telescope-1
errors the T1 term has a kink where T1_emu crosses T1_i, which moves with theta; the rule is
second order there (about 1e-3 in log L_i, far below the likelihood's statistical resolution).
The emulator is evaluated once per theta on a fixed log-spaced T grid and carried to the
nodes by a cubic spline in log T of log(T1 / T_true): the spline is linear in the grid
values, so it is one precomputed matrix and the cost per theta does not grow with the number
of sources.

Point-estimate objectives use what the corrected telescope 1 would report for source i:
``T1'_i(theta) = T1'_emu(theta, T*_i)`` where ``T*_i`` solves ``T1_emu(theta, T*_i) = T1_i``
(the true temperature that reproduces the observed biased T1 under theta; Newton in log T
from a grid guess, with the implicit-function gradient). Then

* ``seed_loss``: ``sum_i (T0_i - T1'_i)^2`` (keV^2), the seed's loss;
* ``gaussian_kl``: ``sum_i KL(N(T0_i, s0_i^2) || N(T1'_i, s1'_i^2))`` (nats), the trusted
  posterior against the corrected one;
* ``wasserstein``: ``sum_i W2^2`` between the same Gaussians (keV^2);

where ``s1'_i`` is telescope 1's error (with s_emu) carried through dT1'/dT1 at ``T*_i``.
The objective chosen in ``[inversion] objective`` is what the multi-start minimises; the
posterior is always the likelihood's (flat prior on the emulator's theta bounds).

Multi-start: ``n_starts`` Sobol or Latin-hypercube points in the theta bounds, each minimised
by L-BFGS-B (bounds respected) on torch gradients, in unit coordinates. Under ``mpiexec`` the
starts are dealt round-robin over ranks, rank 0 gathers them and merges those that converged
to the same point (max |delta theta| / range below ``merge_tol``; ranges in log for the
parameters whose grid is geometric, as the emulator's inputs).

Posterior (rank 0): the best distinct optima are polished into local maxima of the
posterior, each gets a Laplace approximation, and emcee's walkers start from those Gaussians,
shared in proportion to the modes' Laplace masses (the posterior can be multimodal: a dip at
low energy and a bump at high energy bias temperatures alike). Differential-evolution moves,
with a gamma = 1 share that carries walkers between modes, sample it in the unit coordinates
with the Jacobian that keeps the prior flat in theta. Rank 0 writes ``result.json``,
``posterior.npz`` and ``corrected.arf`` (target ARF x m(E; theta_best)) in the workdir.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xrmodifier_hpc import __version__
from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import replacing, write_text
from xrmodifier_hpc.io.observations import Observations, read_observations
from xrmodifier_hpc.runtime.environment import detect

log = logging.getLogger("xrmodifier.invert")

OBJECTIVES = ("likelihood", "seed_loss", "gaussian_kl", "wasserstein")
#: quadrature interval half-width in units of T0's error
QUAD_SIGMAS = 8.0
#: node spacing as a fraction of the narrowest Gaussian width involved
QUAD_SPACING = 0.7
QUAD_MIN_NODES = 16
QUAD_MAX_NODES = 512
#: chains shorter than this many autocorrelation times get a warning
MIN_TAU_MULTIPLE = 50
#: at most this many of the best distinct optima seed the posterior's modes
MAX_MODES = 8
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# settings
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InversionSettings:
    """Everything the inversion needs from ``[inversion]``, with s_emu resolved to a number.

    ``s_emu``: emulator error as a fraction of T1. ``merge_tol``: two optima are the same
    when no parameter differs by more than this fraction of its range. ``n_tgrid``: points of
    the log-T grid the emulator is evaluated on per theta.
    """

    objective: str = "likelihood"
    n_starts: int = 64
    start_design: str = "sobol"
    seed: int = 7
    s_emu: float = 0.0
    s_emu_source: str = "config"
    merge_tol: float = 0.02
    walkers: int = 32
    steps: int = 3000
    burn: int = 1000
    thin: int = 1
    n_tgrid: int = 24
    maxiter: int = 1000

    @classmethod
    def from_config(cls, cfg: Config, metrics: dict | None = None) -> InversionSettings:
        inv = cfg.inversion
        if isinstance(inv.s_emu, str):
            s_emu, source = resolve_auto_s_emu(metrics, str(cfg.emulator_path)), "auto"
        else:
            s_emu, source = float(inv.s_emu), "config"
        return cls(
            objective=inv.objective,
            n_starts=inv.n_starts,
            start_design=inv.start_design,
            seed=inv.seed,
            s_emu=s_emu,
            s_emu_source=source,
            walkers=inv.mcmc.walkers,
            steps=inv.mcmc.steps,
            burn=inv.mcmc.burn,
            thin=inv.mcmc.thin,
            merge_tol=inv.merge_tol,
            n_tgrid=inv.n_tgrid,
        )


def resolve_auto_s_emu(metrics: dict | None, where: str) -> float:
    """The emulator's off-grid RMS relative error of T1 (``s_emu = "auto"``)."""
    try:
        value = float(metrics["offgrid"]["emulator"]["t_fit_orig"])  # type: ignore[index]
    except (KeyError, TypeError, ValueError):
        raise UserError(
            's_emu = "auto" needs the emulator\'s off-grid error (metrics offgrid.emulator.'
            "t_fit_orig), which this emulator does not have; set [inversion] s_emu to a "
            "number (fraction of T1), e.g. 0.003",
            where,
        ) from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"the emulator's off-grid error is {value}; set [inversion] s_emu", where)
    return value


# --------------------------------------------------------------------------------------------
# the emulator on a temperature grid
# --------------------------------------------------------------------------------------------


class EmulatorView:
    """The emulator with its bounds, in float64, evaluated per theta on a fixed log-T grid.

    ``module(theta (n, d), t_true (n,))`` -> (n, 2) [T1, T1'] keV, as ``emulator.load`` gives.
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
        # parameters whose grid axis is geometric (the emulator's log inputs) get unit
        # coordinates in log: curved degeneracies (e.g. sigma x A) straighten, samplers mix
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
        return len(self.param_names)

    @property
    def n_tgrid(self) -> int:
        return self.log_t_grid.size

    def to_theta(self, u: torch.Tensor) -> torch.Tensor:
        """Unit-cube coordinates -> theta (same shape): linear over each parameter's bounds,
        in log for parameters on a geometric grid."""
        x = self._a_t + u * self._w_t
        # exp only where taken, so linear axes with large values cannot overflow (nor their
        # gradients turn NaN)
        return torch.where(self._log_t, torch.exp(torch.where(self._log_t, x, 0.0)), x)

    def to_unit(self, theta: np.ndarray) -> np.ndarray:
        """theta -> unit-cube coordinates (the inverse of :meth:`to_theta`)."""
        theta = np.asarray(theta, dtype=np.float64)
        x = np.where(self.log_axes, np.log(np.where(self.log_axes, theta, 1.0)), theta)
        return (x - self._a) / (self._b - self._a)

    def theta_of(self, u: np.ndarray) -> np.ndarray:
        """:meth:`to_theta` for numpy arrays."""
        return self.to_theta(torch.as_tensor(np.asarray(u, dtype=np.float64))).numpy()

    def log_jacobian(self, u: torch.Tensor) -> torch.Tensor:
        """log |d theta / d u| up to a constant (..., d) -> (...): what keeps the prior flat in
        theta when sampling in unit coordinates."""
        x = self._a_t + u * self._w_t
        return torch.where(self._log_t, x, torch.zeros_like(x)).sum(dim=-1)

    def __call__(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
        return self.module(theta, t_true)

    def log_ratio_grid(self, theta: torch.Tensor) -> torch.Tensor:
        """log(T1_emu / T_true) on the T grid: theta (B, d) -> (B, G)."""
        b, g = theta.shape[0], self.n_tgrid
        th = theta.repeat_interleave(g, dim=0)
        t = self._t_grid.repeat(b)
        t1 = self.module(th, t)[:, 0].reshape(b, g)
        return torch.log(t1 / self._t_grid)


def spline_matrix(x_grid: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Matrix ``W`` (len(x), len(x_grid)) with ``W @ y = CubicSpline(x_grid, y)(x)`` for any y.

    A cubic spline is linear in its data, so interpolating the identity gives the weights.
    """
    from scipy.interpolate import CubicSpline

    return CubicSpline(x_grid, np.eye(x_grid.size), axis=0)(np.asarray(x, dtype=np.float64))


# --------------------------------------------------------------------------------------------
# likelihood
# --------------------------------------------------------------------------------------------


def split_normal_logpdf(
    x: torch.Tensor, model: torch.Tensor, err_lo: torch.Tensor, err_hi: torch.Tensor
) -> torch.Tensor:
    """log density of observing ``x`` with errors [-err_lo, +err_hi] given ``model``.

    Split normal: width ``err_lo`` where the model lies below ``x``, ``err_hi`` above;
    normalised by 2 / (sqrt(2 pi) (err_lo + err_hi)). Equal errors give the Gaussian.
    """
    sigma = torch.where(model < x, err_lo, err_hi)
    z = (x - model) / sigma
    return -0.5 * z * z - torch.log(0.5 * (err_lo + err_hi)) - _LOG_SQRT_2PI


@dataclass
class Quadrature:
    """Per-source trapezoid nodes in T_true (keV) and the theta-independent log terms."""

    t_nodes: np.ndarray  # (n, K) keV
    log_base: np.ndarray  # (n, K): log weight + log prior + log N(T0 | T)
    spline: np.ndarray  # (n * K, G): grid values of log(T1/T) -> values at the nodes

    @property
    def n_nodes(self) -> int:
        return self.t_nodes.shape[1]


def _panel_weights(x: np.ndarray) -> np.ndarray:
    """Quadrature weights for the increasing nodes ``x`` (m,): trapezoid, plus Gregory's
    fourth-order end corrections where an end panel has at least three equal intervals."""
    m = x.size
    w = np.zeros(m)
    if m < 2:
        return w
    dx = np.diff(x)
    w[:-1] += 0.5 * dx
    w[1:] += 0.5 * dx
    if m >= 7:
        corr = np.array([-1 / 8, 1 / 6, -1 / 24])
        w[:3] += corr * dx[0]
        w[-3:] += corr[::-1] * dx[-1]
    return w


def _source_nodes(
    t0: float, lo: float, hi: float, h: float, t_lo: float, t_hi: float
) -> np.ndarray:
    """Nodes for one source: T0 +- QUAD_SIGMAS errors, spacing at most ``h``, inside
    [t_lo, t_hi]; T0 is a node and the spacing is uniform (see ``build_quadrature``)."""
    a, b = t0 - QUAD_SIGMAS * lo, t0 + QUAD_SIGMAS * hi
    room_lo, room_hi = t0 - t_lo, t_hi - t0
    cut_lo, cut_hi = a < t_lo, b > t_hi
    if room_lo < 4 * lo or room_hi < 4 * hi:
        # the range cuts where the integrand still has weight: the end correction needs a
        # spacing well below the integrand's width to be accurate there
        h = h / 3
    if not (cut_lo or cut_hi):
        return t0 + h * np.arange(-math.ceil((t0 - a) / h), math.ceil((b - t0) / h) + 1)
    if cut_lo != cut_hi:
        room = room_lo if cut_lo else room_hi
        if room >= h:
            # shrink the spacing so that the range's edge is a node and T0 still is one
            step = room / math.ceil(room / h)
            j_lo = round(room_lo / step) if cut_lo else math.ceil((t0 - a) / step)
            j_hi = round(room_hi / step) if cut_hi else math.ceil((b - t0) / step)
            return np.clip(t0 + step * np.arange(-j_lo, j_hi + 1), t_lo, t_hi)
    # T0 within one spacing of an edge, or both sides cut: uniform between the ends
    a, b = max(a, t_lo), min(b, t_hi)
    return np.linspace(a, b, max(math.ceil((b - a) / h) + 1, 8))


def build_quadrature(obs: Observations, view: EmulatorView, s_emu: float) -> Quadrature:
    """Nodes over T0 - QUAD_SIGMAS s0_lo .. T0 + QUAD_SIGMAS s0_hi inside the emulator's T
    range (see the module docstring), padded with zero-weight nodes to a common count.

    T0 is a node and the spacing is uniform: T0's split normal has a kink there, and with a
    node on it the h^2 error terms of the trapezoid on both sides cancel (the first
    derivative is continuous). Where the emulator's range cuts a side, the spacing shrinks
    so that the edge is a node too, and Gregory's end correction keeps that end fourth order.
    """
    s_e = s_emu * obs.t1
    s1 = np.minimum(np.hypot(obs.t1_err_lo, s_e), np.hypot(obs.t1_err_hi, s_e))
    h = QUAD_SPACING * np.minimum.reduce([obs.t0_err_lo, obs.t0_err_hi, s1])
    nodes = [
        _source_nodes(obs.t0[i], obs.t0_err_lo[i], obs.t0_err_hi[i], h[i], view.t_lo, view.t_hi)
        for i in range(obs.n)
    ]
    k = max(x.size for x in nodes)
    if k > QUAD_MAX_NODES:
        log.warning(
            "telescope 1 errors are much smaller than telescope 0's: the T_true quadrature "
            "would need %d nodes, capped at %d; the likelihood may be coarse",
            k,
            QUAD_MAX_NODES,
        )
        nodes = [
            x if x.size <= QUAD_MAX_NODES else np.linspace(x[0], x[-1], QUAD_MAX_NODES)
            for x in nodes
        ]
        k = QUAD_MAX_NODES
    k = max(k, QUAD_MIN_NODES)
    t_nodes = np.repeat(obs.t0[:, None], k, axis=1)
    w = np.zeros((obs.n, k))
    for i, x in enumerate(nodes):
        t_nodes[i, : x.size] = x
        w[i, : x.size] = _panel_weights(x)
    log_prior = -math.log(view.t_hi - view.t_lo)
    log_t0 = split_normal_logpdf(
        torch.tensor(obs.t0)[:, None],
        torch.tensor(t_nodes),
        torch.tensor(obs.t0_err_lo)[:, None],
        torch.tensor(obs.t0_err_hi)[:, None],
    ).numpy()
    with np.errstate(divide="ignore"):
        # padding nodes get log-weight -inf and drop out of the sum
        log_base = np.log(w) + log_prior + log_t0
    spline = spline_matrix(view.log_t_grid, np.log(t_nodes).ravel())
    return Quadrature(t_nodes=t_nodes, log_base=log_base, spline=spline)


class Likelihood:
    """log L(theta) = sum_i log L_i(theta) (module docstring), vectorised over theta batches."""

    def __init__(self, view: EmulatorView, obs: Observations, s_emu: float) -> None:
        self.view = view
        self.obs = obs
        self.s_emu = float(s_emu)
        self.quad = build_quadrature(obs, view, s_emu)
        f64 = torch.float64
        self._t_nodes = torch.tensor(self.quad.t_nodes, dtype=f64)
        self._log_base = torch.tensor(self.quad.log_base, dtype=f64)
        self._spline_t = torch.tensor(self.quad.spline.T.copy(), dtype=f64)  # (G, n*K)
        s_e = self.s_emu * obs.t1
        self._t1 = torch.tensor(obs.t1, dtype=f64)[:, None]
        self._s1_lo = torch.tensor(np.hypot(obs.t1_err_lo, s_e), dtype=f64)[:, None]
        self._s1_hi = torch.tensor(np.hypot(obs.t1_err_hi, s_e), dtype=f64)[:, None]

    def t1_at_nodes(self, theta: torch.Tensor) -> torch.Tensor:
        """Emulated T1 (keV) at every quadrature node: theta (B, d) -> (B, n, K)."""
        r = self.view.log_ratio_grid(theta) @ self._spline_t
        return self._t_nodes * torch.exp(r.reshape(theta.shape[0], *self._t_nodes.shape))

    def per_source(self, theta: torch.Tensor) -> torch.Tensor:
        """log L_i: theta (B, d) -> (B, n)."""
        t1 = self.t1_at_nodes(theta)
        log_t1 = split_normal_logpdf(self._t1, t1, self._s1_lo, self._s1_hi)
        return torch.logsumexp(self._log_base + log_t1, dim=-1)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood: theta (B, d) -> (B,)."""
        return self.per_source(theta).sum(dim=-1)


# --------------------------------------------------------------------------------------------
# point estimates: the corrected telescope-1 temperatures
# --------------------------------------------------------------------------------------------


def solve_t_star(
    view: EmulatorView, theta: torch.Tensor, t1: torch.Tensor, newton_steps: int = 4
) -> tuple[torch.Tensor, torch.Tensor]:
    """T* (n,) keV with T1_emu(theta, T*) = t1 (n,), differentiable in theta; and a mask of
    the sources whose t1 lies outside what the emulator gives in its T range (T* clamped).

    Newton in log T from a monotone grid guess; the last step is taken with gradients so
    that dT*/dtheta = -(dT1/dtheta) / (dT1/dT) (the implicit-function derivative).
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
    """T1'_i(theta) (n,) keV: the emulated T1' at the T* that reproduces the observed T1_i.

    Returns (T1', T*, clamped mask).
    """
    t_star, clamped = solve_t_star(view, theta, t1)
    t1p = view(theta.expand(t1.shape[0], -1), t_star)[:, 1]
    return t1p, t_star, clamped


def seed_loss(t0: torch.Tensor, t1_corrected: torch.Tensor) -> torch.Tensor:
    """The seed's loss sum_i (T0_i - T1'_i)^2 (keV^2)."""
    return ((t0 - t1_corrected) ** 2).sum()


def gaussian_kl(
    t0: torch.Tensor, s0: torch.Tensor, t1p: torch.Tensor, s1p: torch.Tensor
) -> torch.Tensor:
    """sum_i KL(N(t0, s0^2) || N(t1p, s1p^2)) (nats)."""
    return (torch.log(s1p / s0) + (s0**2 + (t0 - t1p) ** 2) / (2 * s1p**2) - 0.5).sum()


def wasserstein2(
    t0: torch.Tensor, s0: torch.Tensor, t1p: torch.Tensor, s1p: torch.Tensor
) -> torch.Tensor:
    """sum_i W2^2 between N(t0, s0^2) and N(t1p, s1p^2) (keV^2)."""
    return ((t0 - t1p) ** 2 + (s0 - s1p) ** 2).sum()


class Objectives:
    """Every objective of theta for one data set; ``value(name, theta (d,))`` -> scalar tensor
    to MINIMISE (the likelihood enters as -log L)."""

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
        """T1'_i and its 1-sigma error s1'_i = s1_i * dT1'/dT1 at T*_i (keV)."""
        t1p, t_star, _ = corrected_t1(self.view, theta, self.t1)
        n = t_star.shape[0]
        h = 1e-3
        th = theta.expand(n, -1)
        up = self.view(th, t_star * (1 + h))
        down = self.view(th, t_star * (1 - h))
        ratio = (up[:, 1] - down[:, 1]) / (up[:, 0] - down[:, 0])
        return t1p, self.s1 * ratio.abs()

    def value(self, name: str, theta: torch.Tensor) -> torch.Tensor:
        if name == "likelihood":
            return -self.likelihood(theta[None, :])[0]
        if name == "seed_loss":
            t1p, _, _ = corrected_t1(self.view, theta, self.t1)
            return seed_loss(self.t0, t1p)
        t1p, s1p = self.corrected_with_error(theta)
        if name == "gaussian_kl":
            return gaussian_kl(self.t0, self.s0, t1p, s1p)
        if name == "wasserstein":
            return wasserstein2(self.t0, self.s0, t1p, s1p)
        raise ValueError(f"unknown objective {name!r}; known: {', '.join(OBJECTIVES)}")

    def unit_function(self, name: str) -> Callable[[np.ndarray], tuple[float, np.ndarray]]:
        """f(u) -> (value, gradient) in unit coordinates, for scipy's L-BFGS-B."""

        def fun(u: np.ndarray) -> tuple[float, np.ndarray]:
            ut = torch.tensor(u, dtype=torch.float64, requires_grad=True)
            val = self.value(name, self.view.to_theta(ut))
            (grad,) = torch.autograd.grad(val, ut)
            v = float(val.detach())
            if not math.isfinite(v):
                return 1e300, np.zeros_like(u)
            return v, grad.numpy().astype(np.float64)

        return fun


# --------------------------------------------------------------------------------------------
# multi-start optimisation
# --------------------------------------------------------------------------------------------


def start_points(n: int, d: int, design: str, seed: int) -> np.ndarray:
    """``n`` starting points in the unit cube (n, d): scrambled Sobol or Latin hypercube."""
    from scipy.stats import qmc

    if design == "sobol":
        sampler = qmc.Sobol(d, scramble=True, rng=seed)
        with warnings.catch_warnings():
            # balance is best for powers of 2, but any n is a valid low-discrepancy design
            warnings.simplefilter("ignore", UserWarning)
            return sampler.random(n)
    if design == "lhs":
        return qmc.LatinHypercube(d, rng=seed).random(n)
    raise ValueError(f"unknown start design {design!r}")


def optimise_from(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]], u0: np.ndarray, maxiter: int
) -> dict[str, Any]:
    """Minimise ``fun`` from ``u0`` with L-BFGS-B inside the unit cube."""
    from scipy.optimize import minimize

    res = minimize(
        fun,
        u0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * u0.size,
        options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8},
    )
    return {
        "u": np.clip(res.x, 0.0, 1.0),
        "fun": float(res.fun),
        "success": bool(res.success),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "message": str(res.message),
    }


def run_starts(
    objectives: Objectives,
    name: str,
    starts: np.ndarray,
    indices: list[int],
    maxiter: int,
    progress: Callable[[int, int], None] | None = None,
) -> list[dict[str, Any]]:
    """Optimise the starts ``indices`` (rows of ``starts``); one result dict per start."""
    fun = objectives.unit_function(name)
    out = []
    for done, i in enumerate(indices, start=1):
        res = optimise_from(fun, np.asarray(starts[i], dtype=np.float64), maxiter)
        res["start"] = int(i)
        res["u0"] = np.asarray(starts[i], dtype=np.float64)
        out.append(res)
        if progress is not None:
            progress(done, len(indices))
    return out


def merge_optima(results: list[dict[str, Any]], tol: float) -> list[dict[str, Any]]:
    """Group starts whose optima differ by less than ``tol`` in every unit coordinate (the
    fraction of each parameter's range, in log for geometric-grid parameters); best first.

    Each group keeps the best member's point and objective, and lists its starts.
    """
    order = sorted(results, key=lambda r: (r["fun"], r["start"]))
    groups: list[dict[str, Any]] = []
    for r in order:
        for g in groups:
            if np.max(np.abs(g["u"] - r["u"])) < tol:
                g["starts"].append(r["start"])
                g["success"] = g["success"] or r["success"]
                break
        else:
            groups.append(
                {"u": r["u"], "fun": r["fun"], "starts": [r["start"]], "success": r["success"]}
            )
    for g in groups:
        g["starts"].sort()
    return groups


# --------------------------------------------------------------------------------------------
# posterior
# --------------------------------------------------------------------------------------------


@dataclass
class Posterior:
    """emcee chains in theta units: ``chain`` (steps, walkers, d), ``log_prob`` (steps,
    walkers); ``tau`` (d,) integrated autocorrelation times (steps) after burn-in."""

    chain: np.ndarray
    log_prob: np.ndarray
    burn: int
    thin: int
    acceptance: float
    tau: np.ndarray
    warnings: list[str] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)

    def flat(self) -> np.ndarray:
        return self.chain[self.burn :: self.thin].reshape(-1, self.chain.shape[-1])


@dataclass
class Mode:
    """A local maximum of the posterior in unit coordinates, with its Laplace approximation:
    ``cov`` (d, d) the inverse Hessian of -log p there (None when not positive definite) and
    ``log_mass`` = log p + log sqrt(det(2 pi cov)), the mode's approximate probability mass."""

    u: np.ndarray
    log_post: float
    cov: np.ndarray | None
    log_mass: float
    walkers: int = 0


def log_posterior_fn(lik: Likelihood) -> Callable[[torch.Tensor], torch.Tensor]:
    """log posterior in unit coordinates up to a constant: log L + log |d theta / d u| (flat
    prior in theta inside the bounds). (B, d) -> (B,)."""
    view = lik.view

    def log_post(u: torch.Tensor) -> torch.Tensor:
        return lik(view.to_theta(u)) + view.log_jacobian(u)

    return log_post


def laplace_mode(lik: Likelihood, u: np.ndarray) -> Mode:
    """The Laplace approximation of the posterior at ``u`` (a local optimum)."""
    log_post = log_posterior_fn(lik)
    u0 = torch.tensor(u, dtype=torch.float64)
    with torch.no_grad():
        lp = float(log_post(u0[None, :])[0])
    cov = None
    try:
        hess = -torch.autograd.functional.hessian(lambda x: log_post(x[None, :])[0], u0).numpy()
        hess = 0.5 * (hess + hess.T)
        evals, evecs = np.linalg.eigh(hess)
        if np.all(np.isfinite(evals)) and evals.min() > 0:
            cov = (evecs / evals) @ evecs.T
    except RuntimeError:
        cov = None
    if cov is None:
        # a flat or degenerate direction: the mode's extent is unknown, count it as the cube
        log_mass = lp
    else:
        log_mass = lp + 0.5 * float(np.linalg.slogdet(2 * np.pi * cov)[1])
        log_mass = min(log_mass, lp)  # no mode holds more than the whole unit cube's worth
    return Mode(u=np.asarray(u, dtype=np.float64), log_post=lp, cov=cov, log_mass=log_mass)


def allocate_walkers(
    modes: list[Mode], walkers: int, max_delta: float = 20.0, min_walkers: int = 2
) -> list[Mode]:
    """Share ``walkers`` among the modes within ``max_delta`` of the best log posterior.

    Each gets ``min_walkers`` (while there are enough), so that the gamma = 1 move can carry
    walkers between every pair of modes and correct the weights; the rest go in proportion
    to the Laplace masses (largest remainder), which are rough for ridges and modes at the
    bounds.
    """
    best = max(m.log_post for m in modes)
    live = sorted((m for m in modes if m.log_post > best - max_delta), key=lambda m: -m.log_mass)
    floor = min_walkers if min_walkers * len(live) <= walkers // 2 else 0
    log_w = np.array([m.log_mass for m in live])
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    rest = walkers - floor * len(live)
    share = w * rest
    counts = np.floor(share).astype(int)
    for j in np.argsort(-(share - counts), kind="stable")[: rest - counts.sum()]:
        counts[j] += 1
    for m, c in zip(live, counts):
        m.walkers = int(c) + floor
    return [m for m in live if m.walkers > 0]


def start_walkers(modes: list[Mode], rng: np.random.Generator) -> np.ndarray:
    """Walker positions (sum of walkers, d): around each mode from its Laplace approximation
    N(u, cov) (a small ball when cov is unknown), redrawn until strictly inside the unit cube
    (the prior's support)."""
    rows = []
    for m in modes:
        d = m.u.size
        cov = m.cov if m.cov is not None else np.eye(d) * 1e-6
        chol = np.linalg.cholesky(cov + np.eye(d) * 1e-14)
        for _ in range(m.walkers):
            for _ in range(100):
                p = m.u + chol @ rng.standard_normal(d)
                if np.all((p > 0) & (p < 1)):
                    break
            else:
                p = np.clip(m.u + 1e-4 * rng.standard_normal(d), 1e-6, 1 - 1e-6)
            rows.append(p)
    return np.array(rows)


def likelihood_optima(
    objectives: Objectives,
    objective: str,
    groups: list[dict[str, Any]],
    tol: float,
    maxiter: int,
) -> list[np.ndarray]:
    """Where the posterior's walkers start: the multi-start's distinct optima (best first, at
    most MAX_MODES) when it maximised the likelihood, else the likelihood maxima that L-BFGS-B
    reaches from them (merged as in :func:`merge_optima`).

    Kept as found rather than polished on the posterior: the prior's Jacobian tilts ridges
    (e.g. along sigma x A), and polishing would slide distinct maxima, such as a dip at low
    energy and a bump at high energy, into one, leaving a mode without walkers.
    """
    candidates = [g["u"] for g in groups[:MAX_MODES]]
    if objective == "likelihood":
        return candidates
    fun = objectives.unit_function("likelihood")
    found = [dict(optimise_from(fun, u, maxiter), start=i) for i, u in enumerate(candidates)]
    return [g["u"] for g in merge_optima(found, tol)]


def sample_posterior(
    lik: Likelihood,
    optima: list[np.ndarray],
    walkers: int,
    steps: int,
    burn: int,
    thin: int,
    seed: int,
    progress: Callable[[int, int], None] | None = None,
) -> Posterior:
    """emcee on log L with a flat prior on the emulator's theta bounds (vectorised over
    walkers, in unit coordinates), started from the Laplace approximations of the posterior
    at ``optima`` (unit coordinates), walkers shared in proportion to the modes' masses.

    Moves: differential evolution, its gamma = 1 variant (which carries a walker from one
    mode to another: it corrects the Laplace estimate of the modes' weights) and the snooker
    move.
    """
    import emcee

    view = lik.view
    rng = np.random.default_rng([seed, 1])
    modes = allocate_walkers([laplace_mode(lik, u) for u in optima], walkers)
    p0 = start_walkers(modes, rng)
    log_post = log_posterior_fn(lik)

    def log_prob(u: np.ndarray) -> np.ndarray:
        inside = np.all((u >= 0.0) & (u <= 1.0), axis=1)
        out = np.full(u.shape[0], -np.inf)
        if inside.any():
            with torch.no_grad():
                out[inside] = log_post(torch.tensor(u[inside], dtype=torch.float64)).numpy()
        out[~np.isfinite(out)] = -np.inf
        return out

    moves = [
        (emcee.moves.DEMove(), 0.7),
        (emcee.moves.DEMove(gamma0=1.0), 0.1),
        (emcee.moves.DESnookerMove(), 0.2),
    ]
    sampler = emcee.EnsembleSampler(walkers, view.d, log_prob, moves=moves, vectorize=True)
    state = emcee.State(p0, random_state=np.random.RandomState(seed % 2**32).get_state())
    for k, _ in enumerate(sampler.sample(state, iterations=steps), start=1):
        if progress is not None:
            progress(k, steps)
    chain_u = sampler.get_chain()
    chain = view.theta_of(chain_u)
    kept = chain_u[burn:]
    notes: list[str] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        tau = np.asarray(emcee.autocorr.integrated_time(kept, tol=0, quiet=True), dtype=float)
    if np.any(~np.isfinite(tau)) or kept.shape[0] < MIN_TAU_MULTIPLE * np.nanmax(tau):
        notes.append(
            f"chains are short: {kept.shape[0]} steps after burn-in is less than "
            f"{MIN_TAU_MULTIPLE} autocorrelation times (max tau = {np.nanmax(tau):.1f}); "
            "increase [inversion.mcmc] steps"
        )
    if len(modes) > 1:
        log.info(
            "posterior: %d modes; walkers started %s",
            len(modes),
            ", ".join(f"{m.walkers} at {np.round(view.theta_of(m.u), 4).tolist()}" for m in modes),
        )
    return Posterior(
        chain=chain,
        log_prob=sampler.get_log_prob(),
        burn=burn,
        thin=thin,
        acceptance=float(np.mean(sampler.acceptance_fraction)),
        tau=tau,
        warnings=notes,
        modes=modes,
    )


def summarise(samples: np.ndarray, names: tuple[str, ...]) -> dict[str, dict[str, float]]:
    """Per parameter: median, 16/84 and 2.5/97.5 percentiles, mean and standard deviation."""
    q = np.percentile(samples, [2.5, 16.0, 50.0, 84.0, 97.5], axis=0)
    return {
        name: {
            "median": float(q[2, j]),
            "p16": float(q[1, j]),
            "p84": float(q[3, j]),
            "p2.5": float(q[0, j]),
            "p97.5": float(q[4, j]),
            "mean": float(samples[:, j].mean()),
            "std": float(samples[:, j].std(ddof=1)) if samples.shape[0] > 1 else 0.0,
        }
        for j, name in enumerate(names)
    }


# --------------------------------------------------------------------------------------------
# driver
# --------------------------------------------------------------------------------------------


class _Progress:
    """Log lines every ``every`` seconds (and at the end) for long loops."""

    def __init__(self, what: str, every: float = 5.0) -> None:
        self.what = what
        self.every = every
        self.t0 = time.perf_counter()
        self.last = self.t0

    def __call__(self, done: int, total: int) -> None:
        now = time.perf_counter()
        if done < total and now - self.last < self.every:
            return
        self.last = now
        rate = done / max(now - self.t0, 1e-9)
        eta = (total - done) / rate if rate > 0 else float("inf")
        log.info("%s: %d/%d (%.1f/s, ETA %.0f s)", self.what, done, total, rate, eta)


def _mpi_comm() -> Any:
    env = detect()
    if env.size <= 1:
        return None
    from mpi4py import MPI

    return MPI.COMM_WORLD


def load_emulator(cfg: Config) -> torch.nn.Module:
    """The trained emulator of ``cfg`` (float64, CPU), or a UserError saying how to make it."""
    path = cfg.emulator_path
    if not path.is_file():
        raise UserError(
            "emulator not found: run `xrmodifier simulate CONFIG` then `xrmodifier train CONFIG`",
            str(path),
        )
    from xrmodifier_hpc.emulator import load

    return load(path, dtype=torch.float64, device="cpu")


def _check_family(cfg: Config, view: EmulatorView) -> None:
    from xrmodifier_hpc.physics.modifiers import get_modifier

    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    if tuple(family.param_names) != view.param_names:
        raise UserError(
            f"the emulator's parameters {view.param_names} are not those of the configured "
            f"modifier family {family.name!r} {tuple(family.param_names)}; retrain it",
            str(cfg.emulator_path),
        )


def invert(
    config: Config | str | Path,
    observations: str | Path,
    module: torch.nn.Module | None = None,
    comm: Any = "auto",
) -> dict[str, Any] | None:
    """Run the whole inversion; rank 0 writes the artefacts and returns result.json's content
    (other ranks return None). ``module`` replaces the config's emulator (tests)."""
    # the tensors here are small (tens to a few thousand rows): intra-op threads cost more in
    # synchronisation than they gain, badly so on a loaded machine; ranks give parallelism
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _invert(config, observations, module, comm)
    finally:
        torch.set_num_threads(threads)


def _invert(
    config: Config | str | Path,
    observations: str | Path,
    module: torch.nn.Module | None,
    comm: Any,
) -> dict[str, Any] | None:
    t_start = time.perf_counter()
    cfg = config if isinstance(config, Config) else load_config(config)
    comm = _mpi_comm() if comm == "auto" else comm
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm is not None else (0, 1)
    if module is None:
        module = load_emulator(cfg)
    metrics = getattr(module, "metrics", None)
    settings = InversionSettings.from_config(cfg, metrics)
    view = EmulatorView(module, settings.n_tgrid)
    _check_family(cfg, view)
    if settings.walkers < 2 * view.d:
        raise UserError(
            f"the ensemble sampler needs at least 2 walkers per parameter ({2 * view.d} for "
            f"{view.d} parameters), got {settings.walkers}",
            f"{cfg.path} [inversion.mcmc.walkers]",
        )
    obs = read_observations(
        observations, t_range=(view.t_lo, view.t_hi), error_level=cfg.inversion.error_level
    )
    if obs.n < view.d:
        log.warning("only %d sources for %d parameters: theta is not identifiable", obs.n, view.d)
    objectives = Objectives(view, obs, settings.s_emu)
    if rank == 0:
        log.info(
            "inverting %d sources (%s) with objective %s, s_emu = %.3g%s, %d starts on %d rank(s)",
            obs.n,
            obs.path,
            settings.objective,
            settings.s_emu,
            " (auto)" if settings.s_emu_source == "auto" else "",
            settings.n_starts,
            size,
        )

    # multi-start: identical start design on every rank, starts dealt round-robin
    starts = start_points(settings.n_starts, view.d, settings.start_design, settings.seed)
    mine = list(range(rank, settings.n_starts, size))
    t_ms = time.perf_counter()
    try:
        local = (
            "ok",
            run_starts(
                objectives,
                settings.objective,
                starts,
                mine,
                settings.maxiter,
                _Progress(f"multi-start (rank {rank})" if size > 1 else "multi-start"),
            ),
        )
    except Exception as exc:  # noqa: BLE001 - reported by rank 0 after the gather
        local = ("error", f"{exc.__class__.__name__}: {exc}")
    gathered = comm.gather(local, root=0) if comm is not None else [local]
    if rank != 0:
        return None
    failed = [f"rank {r}: {msg}" for r, (status, msg) in enumerate(gathered) if status != "ok"]
    if failed:
        raise RuntimeError("multi-start failed on " + "; ".join(failed))
    results = sorted((r for _, part in gathered for r in part), key=lambda r: r["start"])
    t_multistart = time.perf_counter() - t_ms
    groups = merge_optima(results, settings.merge_tol)
    log.info(
        "multi-start: %d starts -> %d distinct optima in %.1f s",
        len(results),
        len(groups),
        t_multistart,
    )

    # the posterior is the likelihood's: its modes, from the distinct optima found
    t_post = time.perf_counter()
    modes_u = likelihood_optima(
        objectives, settings.objective, groups, settings.merge_tol, settings.maxiter
    )
    posterior = sample_posterior(
        objectives.likelihood,
        modes_u,
        settings.walkers,
        settings.steps,
        settings.burn,
        settings.thin,
        settings.seed,
        _Progress("posterior sampling"),
    )
    t_posterior = time.perf_counter() - t_post
    for note in posterior.warnings:
        log.warning("%s", note)

    result = _assemble(
        cfg, obs, observations, view, objectives, settings, results, groups, posterior, size
    )
    result["timing"] = {
        "multistart_s": t_multistart,
        "posterior_s": t_posterior,
        "total_s": time.perf_counter() - t_start,
    }
    _write_outputs(cfg, view, result, posterior)
    return result


def _theta_dict(names: tuple[str, ...], theta: np.ndarray) -> dict[str, float]:
    return {n: float(v) for n, v in zip(names, theta)}


def _assemble(
    cfg: Config,
    obs: Observations,
    observations: str | Path,
    view: EmulatorView,
    objectives: Objectives,
    settings: InversionSettings,
    results: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    posterior: Posterior,
    size: int,
) -> dict[str, Any]:
    names = view.param_names
    lik = objectives.likelihood
    theta_of = view.theta_of

    optima = []
    for g in groups:
        th = theta_of(g["u"])
        with torch.no_grad():
            ll = float(lik(torch.tensor(th)[None, :])[0])
        at_bound = [n for n, u in zip(names, g["u"]) if u <= 1e-6 or u >= 1 - 1e-6]
        optima.append(
            {
                "theta": _theta_dict(names, th),
                "objective": g["fun"],
                "log_likelihood": ll,
                "n_starts": len(g["starts"]),
                "starts": g["starts"],
                "converged": g["success"],
                "at_bound": at_bound,
            }
        )
    theta_best = theta_of(groups[0]["u"])
    tb = torch.tensor(theta_best)
    with torch.no_grad():
        t1p, t_star, clamped = corrected_t1(view, tb, objectives.t1)
        lo_t1, _, _ = corrected_t1(
            view, tb, torch.tensor(np.maximum(obs.t1 - obs.t1_err_lo, 1e-3 * obs.t1))
        )
        hi_t1, _, _ = corrected_t1(view, tb, torch.tensor(obs.t1 + obs.t1_err_hi))
    t1p, t_star, lo_t1, hi_t1 = (x.numpy() for x in (t1p, t_star, lo_t1, hi_t1))
    before = float(np.sum((obs.t0 - obs.t1) ** 2))
    after = float(np.sum((obs.t0 - t1p) ** 2))
    sources = obs.to_rows()
    for k, row in enumerate(sources):
        row.update(
            t1_corrected=float(t1p[k]),
            t1_corrected_err_lo=float(max(t1p[k] - lo_t1[k], 0.0)),
            t1_corrected_err_hi=float(max(hi_t1[k] - t1p[k], 0.0)),
            t_true_implied=float(t_star[k]),
            clamped=bool(clamped[k]),
        )
    if clamped.any():
        log.warning(
            "%d source(s) have T1 outside what the emulator gives at theta_best", int(clamped.sum())
        )
    samples = posterior.flat()
    from xrmodifier_hpc.physics.modifiers import get_modifier

    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    return {
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": str(cfg.path),
        "observations": str(Path(observations).resolve()),
        "emulator": str(cfg.emulator_path),
        "modifier": {"family": family.name, "options": family.options()},
        "param_names": list(names),
        "param_units": list(getattr(family, "param_units", ("",) * len(names))),
        "bounds": {n: [float(a), float(b)] for n, a, b in zip(names, view.theta_lo, view.theta_hi)},
        "t_true_range": [view.t_lo, view.t_hi],
        "objective": settings.objective,
        "posterior_objective": "likelihood",
        "s_emu": {"fraction": settings.s_emu, "source": settings.s_emu_source},
        "n_sources": obs.n,
        "n_starts": settings.n_starts,
        "start_design": settings.start_design,
        "seed": settings.seed,
        "merge_tol": settings.merge_tol,
        "ranks": size,
        "theta_best": _theta_dict(names, theta_best),
        "objective_best": groups[0]["fun"],
        "optima": optima,
        "starts": [
            {
                "start": r["start"],
                "theta0": _theta_dict(names, theta_of(r["u0"])),
                "theta": _theta_dict(names, theta_of(r["u"])),
                "objective": r["fun"],
                "converged": r["success"],
                "iterations": r["nit"],
            }
            for r in results
        ],
        "posterior": {
            "samples_file": "posterior.npz",
            "walkers": settings.walkers,
            "steps": settings.steps,
            "burn": settings.burn,
            "thin": settings.thin,
            "n_samples": int(samples.shape[0]),
            "acceptance_fraction": posterior.acceptance,
            "autocorr_time": _theta_dict(names, posterior.tau),
            "chains_too_short": bool(posterior.warnings),
            "summary": summarise(samples, names),
            "modes": [
                {
                    "theta": _theta_dict(names, view.theta_of(m.u)),
                    "log_posterior": m.log_post,
                    "log_mass_laplace": m.log_mass,
                    "walkers": m.walkers,
                }
                for m in posterior.modes
            ],
        },
        "seed_loss": {
            "before": before,
            "after": after,
            "ratio": before / after if after > 0 else float("inf"),
            "note": "before: theta = identity, where T1' = T1 (the uncorrected ARF); "
            "after: T1' emulated at theta_best",
        },
        "sources": sources,
        "corrected_arf": str(cfg.workdir / "corrected.arf"),
        "warnings": list(posterior.warnings),
    }


def _write_outputs(
    cfg: Config, view: EmulatorView, result: dict[str, Any], posterior: Posterior
) -> None:
    from xrmodifier_hpc.io.ogip import Instrument, write_modified_arf
    from xrmodifier_hpc.physics.modifiers import get_modifier

    workdir = cfg.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    names = view.param_names
    theta_best = np.array([result["theta_best"][n] for n in names])
    _save_npz(
        workdir / "posterior.npz",
        chain=posterior.chain,
        log_prob=posterior.log_prob,
        param_names=np.array(names),
        burn=posterior.burn,
        thin=posterior.thin,
        tau=posterior.tau,
        acceptance=posterior.acceptance,
    )
    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    tcfg = cfg.instruments.target
    target = Instrument.load(tcfg.arf, tcfg.rmf, tcfg.allow_double_area)
    multiplier = family.evaluate(target.e_mid, theta_best)
    write_modified_arf(
        workdir / "corrected.arf",
        target,
        family.name,
        names,
        theta_best,
        multiplier,
        extra={
            "XRMOBJ": (result["objective"], "inversion objective"),
            "XRMOBS": (Path(result["observations"]).name, "observations file"),
            "XRMNSRC": (result["n_sources"], "number of sources inverted"),
        },
    )
    write_text(cfg.result_path, json.dumps(result, indent=2, allow_nan=True) + "\n")


def _save_npz(path: Path, **arrays: Any) -> None:
    """``np.savez`` into a temporary file beside ``path``, renamed into place."""
    with replacing(path, suffix=".npz") as tmp:
        np.savez(tmp, **arrays)


def format_summary(result: dict[str, Any]) -> str:
    """A short human-readable table of the result (printed by the CLI)."""
    lines = [
        f"objective {result['objective']}, {result['n_sources']} sources, "
        f"{len(result['optima'])} distinct optima from {result['n_starts']} starts"
    ]
    lines.append(f"{'param':>8} {'best':>10} {'median':>10} {'p16':>10} {'p84':>10} {'tau':>7}")
    summ = result["posterior"]["summary"]
    for n in result["param_names"]:
        s = summ[n]
        lines.append(
            f"{n:>8} {result['theta_best'][n]:10.4g} {s['median']:10.4g} "
            f"{s['p16']:10.4g} {s['p84']:10.4g} "
            f"{result['posterior']['autocorr_time'][n]:7.1f}"
        )
    sl = result["seed_loss"]
    lines.append(
        f"seed loss sum (T0 - T1')^2: before {sl['before']:.4g} keV^2, "
        f"after {sl['after']:.4g} keV^2 (x{sl['ratio']:.3g} smaller)"
    )
    for w in result["warnings"]:
        lines.append(f"warning: {w}")
    return "\n".join(lines)
