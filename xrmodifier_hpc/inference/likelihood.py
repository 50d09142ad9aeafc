"""The likelihood of theta with each source's true temperature marginalised numerically.

DESIGN.md section 2::

    L_i(theta) = int dT p(T) N(T0_i | T, s0_i) N(T1_i | T1_emu(theta, T), s1_i^2 + s_emu_i^2)

``p(T)`` is flat on the emulator's T_true range; ``s_emu_i = s_emu * T1_i`` (the emulator's
relative error times the observed T1, so the normalisation does not depend on theta).
Asymmetric errors enter as a split normal: the lower error applies when the model lies below
the observed value.

The integral is a trapezoid sum on per-source nodes spanning T0 - 8 s0_lo .. T0 + 8 s0_hi
(clipped to the emulator's range, with Gregory's fourth-order end corrections there), T0
itself a node, spaced by at most 0.7 times the narrowest width involved. For smooth integrands
that have decayed at both ends the trapezoid rule is spectrally accurate (~1e-13 for
Gaussians at this spacing; Trefethen & Weideman 2014, SIAM Review 56, 385). With asymmetric
telescope-1 errors the T1 term has a kink where T1_emu crosses T1_i, which moves with theta;
the rule is second order there (about 1e-3 in log L_i, far below the likelihood's statistical
resolution). The emulator reaches the nodes through :class:`~.view.EmulatorView`'s T grid and
one spline matrix.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch

from xrmodifier_hpc.inference.view import EmulatorView, spline_matrix
from xrmodifier_hpc.io.observations import Observations

log = logging.getLogger("xrmodifier.invert")

#: quadrature interval half-width in units of T0's error
QUAD_SIGMAS = 8.0
#: node spacing as a fraction of the narrowest Gaussian width involved
QUAD_SPACING = 0.7
QUAD_MIN_NODES = 16
QUAD_MAX_NODES = 512
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def split_normal_logpdf(
    x: torch.Tensor, model: torch.Tensor, err_lo: torch.Tensor, err_hi: torch.Tensor
) -> torch.Tensor:
    """Log density of observing ``x`` with errors [-err_lo, +err_hi] given ``model``.

    The split normal (two-piece normal; Wallis 2014, Statistical Science 29, 106): width
    ``err_lo`` where the model lies below ``x``, ``err_hi`` above, normalised by
    2 / (sqrt(2 pi) (err_lo + err_hi)). Equal errors give the Gaussian.

    Parameters
    ----------
    x : Tensor
        Observed value (keV); broadcasts with the others.
    model : Tensor
        Model value (keV).
    err_lo, err_hi : Tensor
        Lower and upper 1-sigma distances (keV, > 0).

    Returns
    -------
    Tensor
        log density (log keV^-1), the broadcast shape of the inputs.
    """
    sigma = torch.where(model < x, err_lo, err_hi)
    z = (x - model) / sigma
    return -0.5 * z * z - torch.log(0.5 * (err_lo + err_hi)) - _LOG_SQRT_2PI


@dataclass
class Quadrature:
    """Per-source trapezoid nodes in T_true and the theta-independent log terms.

    Attributes
    ----------
    t_nodes : ndarray, shape (n, K)
        Nodes (keV); padding nodes repeat T0 and carry zero weight.
    log_base : ndarray, shape (n, K)
        log weight + log prior + log N(T0 | T) at each node (-inf for padding).
    spline : ndarray, shape (n * K, G)
        Grid values of log(T1 / T) to values at the nodes (:func:`~.view.spline_matrix`).
    """

    t_nodes: np.ndarray
    log_base: np.ndarray
    spline: np.ndarray

    @property
    def n_nodes(self) -> int:
        """Nodes per source (K)."""
        return self.t_nodes.shape[1]


def _panel_weights(x: np.ndarray) -> np.ndarray:
    """Quadrature weights for the increasing nodes ``x`` (m,).

    Trapezoid, plus Gregory's fourth-order end corrections where an end panel has at least
    three equal intervals.
    """
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
    """Nodes for one source: T0 +- QUAD_SIGMAS errors, spacing at most ``h``.

    Inside [t_lo, t_hi]; T0 is a node and the spacing is uniform (see ``build_quadrature``).
    """
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
    """Build the per-source quadrature of the latent T_true (see the module docstring).

    Nodes span T0 - QUAD_SIGMAS s0_lo .. T0 + QUAD_SIGMAS s0_hi inside the emulator's T
    range, padded with zero-weight nodes to a common count. T0 is a node and the spacing is
    uniform: T0's split normal has a kink there, and with a node on it the h^2 error terms of
    the trapezoid on both sides cancel (the first derivative is continuous). Where the
    emulator's range cuts a side, the spacing shrinks so that the edge is a node too, and
    Gregory's end correction keeps that end fourth order.

    Parameters
    ----------
    obs : Observations
        The n sources (keV).
    view : EmulatorView
        The emulator (its T_true range and T grid).
    s_emu : float
        Emulator error as a fraction of T1.

    Returns
    -------
    Quadrature
        Nodes (n, K), base log terms (n, K) and the spline matrix (n K, G).
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
    """log L(theta) = sum_i log L_i(theta) (module docstring), vectorised over theta batches.

    Parameters
    ----------
    view : EmulatorView
        The emulator.
    obs : Observations
        The n sources (keV).
    s_emu : float
        Emulator error as a fraction of T1, added in quadrature to telescope 1's errors.
    """

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
        """Emulated T1 at every quadrature node.

        Parameters
        ----------
        theta : Tensor, shape (B, d)
            Parameter units.

        Returns
        -------
        Tensor, shape (B, n, K)
            T1 (keV).
        """
        r = self.view.log_ratio_grid(theta) @ self._spline_t
        return self._t_nodes * torch.exp(r.reshape(theta.shape[0], *self._t_nodes.shape))

    def per_source(self, theta: torch.Tensor) -> torch.Tensor:
        """Log L_i per source.

        Parameters
        ----------
        theta : Tensor, shape (B, d)
            Parameter units.

        Returns
        -------
        Tensor, shape (B, n)
            Natural log (nats); differentiable in theta.
        """
        t1 = self.t1_at_nodes(theta)
        log_t1 = split_normal_logpdf(self._t1, t1, self._s1_lo, self._s1_hi)
        return torch.logsumexp(self._log_base + log_t1, dim=-1)

    def __call__(self, theta: torch.Tensor) -> torch.Tensor:
        """Total log-likelihood: theta (B, d) -> (B,) nats."""
        return self.per_source(theta).sum(dim=-1)
