"""The posterior of theta: Laplace approximations at its modes, then emcee.

The posterior is the likelihood's with a flat prior on the emulator's theta bounds. The best
distinct optima of the multi-start are taken as its modes (or, when the multi-start minimised
another objective, the likelihood maxima L-BFGS-B reaches from them); each gets a Laplace
approximation, and emcee's walkers (Foreman-Mackey et al. 2013, PASP 125, 306) start from
those Gaussians, shared in proportion to the modes' Laplace masses (the posterior can be
multimodal: a dip at low energy and a bump at high energy bias temperatures alike).
Differential-evolution moves (ter Braak 2006; ter Braak & Vrugt 2008), with a gamma = 1 share
that carries walkers between modes, sample it in the unit coordinates with the Jacobian that
keeps the prior flat in theta.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from xrmodifier_hpc.inference.likelihood import Likelihood
from xrmodifier_hpc.inference.objectives import Objectives
from xrmodifier_hpc.inference.optimise import merge_optima, optimise_from
from xrmodifier_hpc.io.result import ParamSummary

log = logging.getLogger("xrmodifier.invert")

#: chains shorter than this many autocorrelation times get a warning (emcee's documentation
#: recommends about 50)
MIN_TAU_MULTIPLE = 50
#: at most this many of the best distinct optima seed the posterior's modes
MAX_MODES = 8


@dataclass
class Mode:
    """A local maximum of the posterior in unit coordinates, with its Laplace approximation.

    Attributes
    ----------
    u : ndarray, shape (d,)
        The mode (unit coordinates).
    log_post : float
        log posterior there (up to a constant).
    cov : ndarray, shape (d, d), or None
        Inverse Hessian of -log p there; None when not positive definite.
    log_mass : float
        log p + log sqrt(det(2 pi cov)): the mode's approximate probability mass.
    walkers : int
        Walkers started around it (set by :func:`allocate_walkers`).
    """

    u: np.ndarray
    log_post: float
    cov: np.ndarray | None
    log_mass: float
    walkers: int = 0


@dataclass
class Posterior:
    """emcee chains in theta units.

    Attributes
    ----------
    chain : ndarray, shape (steps, walkers, d)
        Every step (burn-in included), parameter units.
    log_prob : ndarray, shape (steps, walkers)
        log posterior in unit coordinates (up to a constant).
    burn, thin : int
        Steps discarded, and the thinning of the kept ones.
    acceptance : float
        Mean acceptance fraction.
    tau : ndarray, shape (d,)
        Integrated autocorrelation times after burn-in (steps).
    warnings : list of str
        Notes for the user (short chains).
    modes : list of Mode
        The modes the walkers started from.
    """

    chain: np.ndarray
    log_prob: np.ndarray
    burn: int
    thin: int
    acceptance: float
    tau: np.ndarray
    warnings: list[str] = field(default_factory=list)
    modes: list[Mode] = field(default_factory=list)

    def flat(self) -> np.ndarray:
        """Return the samples after burn-in and thinning, flattened over steps and walkers.

        Returns
        -------
        ndarray, shape (n_samples, d)
        """
        return self.chain[self.burn :: self.thin].reshape(-1, self.chain.shape[-1])


#: a mode with less than this share of the Laplace mass gets no walkers (allocate_walkers)
MIN_MODE_WEIGHT = 1e-3
#: a walker whose median log posterior after burn-in lies this far below the ensemble's
#: median walker is stuck (in a region of negligible mass) and left out (stuck_walkers)
STUCK_DELTA = 15.0

#: precision (1 / variance) of the flat prior on a unit axis: walkers start from the Laplace
#: approximation times a Gaussian of the prior's variance (:func:`start_walkers`)
PRIOR_PRECISION = 12.0


def log_posterior_fn(lik: Likelihood) -> Callable[[torch.Tensor], torch.Tensor]:
    """Log posterior in unit coordinates up to a constant.

    Parameters
    ----------
    lik : Likelihood
        The likelihood.

    Returns
    -------
    callable
        ``f(u (B, d)) -> (B,)``: log L + log |d theta / d u| (flat prior in theta inside the
        bounds).
    """
    view = lik.view

    def log_post(u: torch.Tensor) -> torch.Tensor:
        return lik(view.to_theta(u)) + view.log_jacobian(u)

    return log_post


def laplace_mode(lik: Likelihood, u: np.ndarray) -> Mode:
    """Approximate the posterior at ``u`` (a local optimum) by a Gaussian (Laplace).

    Parameters
    ----------
    lik : Likelihood
        The likelihood.
    u : ndarray, shape (d,)
        The optimum, unit coordinates.

    Returns
    -------
    Mode
        With ``cov`` the inverse Hessian (torch autograd) when positive definite; a flat or
        degenerate direction leaves ``cov`` None and counts the mode as the whole cube.
    """
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
        log_mass = lp
    else:
        log_mass = lp + 0.5 * float(np.linalg.slogdet(2 * np.pi * cov)[1])
        log_mass = min(log_mass, lp)  # no mode holds more than the whole unit cube's worth
    return Mode(u=np.asarray(u, dtype=np.float64), log_post=lp, cov=cov, log_mass=log_mass)


def allocate_walkers(
    modes: list[Mode],
    walkers: int,
    max_delta: float = 20.0,
    min_walkers: int = 2,
    min_weight: float = MIN_MODE_WEIGHT,
) -> list[Mode]:
    """Share ``walkers`` among the modes within ``max_delta`` of the best log posterior.

    Modes holding less than ``min_weight`` of the Laplace mass get none: a walker started
    there has nowhere to go (a differential-evolution move needs two walkers in its mode to
    jump out of it) and would stay, putting a negligible mode into the samples. Each other
    mode gets ``min_walkers`` (while there are enough), so that the gamma = 1 move can carry
    walkers between every pair of modes and correct the weights; the rest go in proportion
    to the Laplace masses (largest remainder), which are rough for ridges and modes at the
    bounds.

    Parameters
    ----------
    modes : list of Mode
        Candidates (their ``walkers`` are set).
    walkers : int
        Total walkers.
    max_delta : float
        Modes more than this below the best log posterior get none.
    min_walkers : int
        The floor per live mode.
    min_weight : float
        Least share of the total Laplace mass a mode needs to get walkers.

    Returns
    -------
    list of Mode
        The modes with walkers, largest mass first.
    """
    best = max(m.log_post for m in modes)
    live = sorted((m for m in modes if m.log_post > best - max_delta), key=lambda m: -m.log_mass)
    log_w = np.array([m.log_mass for m in live])
    w = np.exp(log_w - log_w.max())
    w /= w.sum()
    for m, wj in zip(live, w):
        if wj < min_weight:
            m.walkers = 0
            log.info(
                "posterior: no walkers for the optimum at unit %s (%.1e of the Laplace mass)",
                np.round(m.u, 4).tolist(),
                wj,
            )
    live, w = [m for m, wj in zip(live, w) if wj >= min_weight], w[w >= min_weight]
    w /= w.sum()
    floor = min_walkers if min_walkers * len(live) <= walkers // 2 else 0
    rest = walkers - floor * len(live)
    share = w * rest
    counts = np.floor(share).astype(int)
    for j in np.argsort(-(share - counts), kind="stable")[: rest - counts.sum()]:
        counts[j] += 1
    for m, c in zip(live, counts):
        m.walkers = int(c) + floor
    return [m for m in live if m.walkers > 0]


def stuck_walkers(log_prob: np.ndarray, burn: int, delta: float = STUCK_DELTA) -> np.ndarray:
    """Find the walkers that stayed where the posterior is negligible.

    A walker alone in a far-below mode cannot leave it under the differential-evolution
    moves, and its samples would widen every interval (a walker at a grid-bound optimum
    e^-18 below the best one made up 3% of a demo's samples).

    Parameters
    ----------
    log_prob : ndarray, shape (steps, walkers)
        log posterior of every step.
    burn : int
        Steps discarded as burn-in.
    delta : float
        How far below the median walker's median log posterior (after burn-in) a walker's
        own median must lie to be stuck.

    Returns
    -------
    ndarray, shape (walkers,)
        bool, True for a stuck walker (never all of them).
    """
    kept = log_prob[burn:] if log_prob.shape[0] > burn else log_prob
    typical = np.median(kept, axis=0)
    finite = np.isfinite(typical)
    if not finite.any():
        return np.zeros(log_prob.shape[1], dtype=bool)
    stuck = ~finite | (typical < np.median(typical[finite]) - delta)
    return stuck if not stuck.all() else np.zeros_like(stuck)


def start_walkers(modes: list[Mode], rng: np.random.Generator) -> np.ndarray:
    """Walker positions around each mode, strictly inside the unit cube.

    Parameters
    ----------
    modes : list of Mode
        With their ``walkers``.
    rng : numpy.random.Generator
        Random stream.

    Returns
    -------
    ndarray, shape (sum of walkers, d)
        Drawn from each mode's N(u, C) with ``C = (cov^-1 + PRIOR_PRECISION I)^-1``: the
        Laplace approximation times a Gaussian of the flat prior's variance (1/12 per unit
        axis), redrawn until inside the prior's support. Along a direction the data do not
        constrain (cov huge or unknown: e.g. mu and sigma of a dip whose amplitude is near
        zero) the walkers start spread over the prior, not in a small ball from which the
        ensemble needs many autocorrelation times to expand: started in a ball, the burn-in
        did not undo it and the intervals came out too narrow (benchmarks/bench_coverage.py).
    """
    rows = []
    for m in modes:
        d = m.u.size
        precision = PRIOR_PRECISION * np.eye(d)
        if m.cov is not None:
            precision = precision + np.linalg.inv(m.cov)
        cov = np.linalg.inv(precision)
        chol = np.linalg.cholesky(0.5 * (cov + cov.T) + np.eye(d) * 1e-14)
        for _ in range(m.walkers):
            for _ in range(1000):
                p = m.u + chol @ rng.standard_normal(d)
                if np.all((p > 0) & (p < 1)):
                    break
            else:
                p = np.clip(m.u + chol @ rng.standard_normal(d), 1e-6, 1 - 1e-6)
            rows.append(p)
    return np.array(rows)


def likelihood_optima(
    objectives: Objectives,
    objective: str,
    groups: list[dict],
    tol: float,
    maxiter: int,
) -> list[np.ndarray]:
    """Where the posterior's walkers start.

    The multi-start's distinct optima (best first, at most MAX_MODES) when it maximised the
    likelihood, else the likelihood maxima that L-BFGS-B reaches from them (merged as in
    :func:`~.optimise.merge_optima`). Kept as found rather than polished on the posterior:
    the prior's Jacobian tilts ridges (e.g. along sigma x A), and polishing would slide
    distinct maxima, such as a dip at low energy and a bump at high energy, into one, leaving
    a mode without walkers.

    Parameters
    ----------
    objectives : Objectives
        The data set.
    objective : str
        The multi-start's objective.
    groups : list of dict
        Merged optima, best first.
    tol : float
        Merge tolerance (unit coordinates).
    maxiter : int
        L-BFGS-B iteration limit.

    Returns
    -------
    list of ndarray, shape (d,)
        Unit coordinates.
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
    progress: Callable[[int], None] | None = None,
) -> Posterior:
    """Sample the posterior with emcee, started from Laplace approximations at ``optima``.

    log L with a flat prior on the emulator's theta bounds, vectorised over walkers, in unit
    coordinates; walkers shared among the modes in proportion to their masses. Moves:
    differential evolution (70%), its gamma = 1 variant (10%; it carries a walker from one
    mode to another and so corrects the Laplace estimate of the modes' weights) and the
    snooker move (20%).

    Parameters
    ----------
    lik : Likelihood
        The likelihood.
    optima : list of ndarray, shape (d,)
        Modes, unit coordinates.
    walkers, steps, burn, thin : int
        emcee settings (walkers >= 2 d).
    seed : int
        Random seed (start positions and emcee's stream).
    progress : callable, optional
        Called with 1 after each step.

    Returns
    -------
    Posterior
        The chains in theta units, with a warning when they are shorter than
        MIN_TAU_MULTIPLE autocorrelation times.
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
    for _ in sampler.sample(state, iterations=steps):
        if progress is not None:
            progress(1)
    chain_u = sampler.get_chain()
    log_prob_all = sampler.get_log_prob()
    notes: list[str] = []
    stuck = stuck_walkers(log_prob_all, burn)
    if stuck.any():
        notes.append(
            f"{int(stuck.sum())} of {walkers} walkers stayed where the posterior is negligible "
            f"(median log posterior more than {STUCK_DELTA:g} below the others'): left out "
            "of the samples"
        )
        chain_u, log_prob_all = chain_u[:, ~stuck], log_prob_all[:, ~stuck]
    chain = view.theta_of(chain_u)
    kept = chain_u[burn:]
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
        log_prob=log_prob_all,
        burn=burn,
        thin=thin,
        acceptance=float(np.mean(sampler.acceptance_fraction)),
        tau=tau,
        warnings=notes,
        modes=modes,
    )


def summarise(samples: np.ndarray, names: tuple[str, ...]) -> dict[str, ParamSummary]:
    """Per parameter: median, 16/84 and 2.5/97.5 percentiles, mean and standard deviation.

    Parameters
    ----------
    samples : ndarray, shape (n, d)
        Flat posterior samples (parameter units).
    names : tuple of str
        The d parameter names.

    Returns
    -------
    dict of str to ParamSummary
    """
    return {name: ParamSummary.of(samples[:, j]) for j, name in enumerate(names)}
