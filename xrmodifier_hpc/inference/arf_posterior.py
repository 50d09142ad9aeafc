"""The ARF multiplier m(E) over the posterior: pointwise bands and ensembles of draws.

The corrected ARF that users take home is the original ARF times a statistic of m(E; theta)
over the posterior of theta, taken pointwise in energy: at each energy the median (and the
16th and 84th percentiles) of m(E; theta_k) over the posterior draws theta_k. Where the data
constrain only a combination of the parameters (a dip's area, not its depth and width), the
likelihood maximum wanders along the degenerate ridge and often ends on a grid bound, while the
pointwise posterior median of m(E) stays close to the true multiplier: it is the curve the data
support. The pointwise median is in general not m(E; theta) for any one theta.

An *ensemble* is N posterior draws of the whole curve m(E; theta_k) (rows), the form in which
calibration uncertainty is propagated by drawing one effective area per fit or per MCMC step
(Drake et al. 2006, SPIE 6270, 62701I; Lee et al. 2011, ApJ 731, 126, as pyBLoCXS does).

Everything here is pure: arrays in, arrays out. Shapes: ``samples`` (n_samples, d) in theta
units (the posterior's flat chain), energies (n_E,) keV, multipliers (n_draws, n_E).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xrmodifier_hpc.physics.modifiers import Modifier

#: the pointwise statistics a corrected ARF can hold, and their percentiles
STATISTICS: dict[str, float] = {"median": 50.0, "p16": 16.0, "p84": 84.0}
#: default number of posterior draws whose curves set the pointwise percentiles
MAX_BAND_DRAWS = 4000
#: default size of an ensemble (rows of corrected_ensemble.fits)
ENSEMBLE_DRAWS = 100


def select_draws(samples: np.ndarray, n: int | None, seed: int = 0) -> np.ndarray:
    """``n`` posterior draws picked at random, without replacement, from ``samples``.

    Parameters
    ----------
    samples : ndarray, shape (n_samples, d)
        Posterior samples of theta (the flat chain after burn-in and thinning).
    n : int or None
        How many to keep; None, or ``n >= n_samples``, keeps them all (in their order).
    seed : int
        Seed of the choice (the same seed picks the same draws).

    Returns
    -------
    ndarray, shape (min(n, n_samples), d)
        The chosen draws, in the order of the chain.

    Raises
    ------
    ValueError
        When ``samples`` is not a non-empty 2-D array or ``n < 1``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim != 2 or samples.shape[0] == 0:
        raise ValueError(f"samples must be a non-empty (n, d) array, got shape {samples.shape}")
    if n is None or n >= samples.shape[0]:
        return samples
    if n < 1:
        raise ValueError(f"the number of draws must be at least 1, got {n}")
    rng = np.random.default_rng([int(seed), 12])
    keep = np.sort(rng.choice(samples.shape[0], size=int(n), replace=False))
    return samples[keep]


def multiplier_draws(family: Modifier, energy: np.ndarray, thetas: np.ndarray) -> np.ndarray:
    """m(E; theta_k) for every draw: the curves of an ensemble.

    Parameters
    ----------
    family : Modifier
        The modifier family the posterior is over (``physics.modifiers``).
    energy : ndarray, shape (n_E,)
        Energies (keV) at which to evaluate m, e.g. an ARF's bin centres.
    thetas : ndarray, shape (n_draws, d)
        Parameter draws, ordered as ``family.param_names``.

    Returns
    -------
    ndarray, shape (n_draws, n_E)
        Dimensionless multipliers.
    """
    return np.atleast_2d(family.evaluate(np.asarray(energy, np.float64), np.atleast_2d(thetas)))


@dataclass(frozen=True)
class MultiplierBand:
    """Pointwise posterior statistics of m(E) on one energy grid.

    Attributes
    ----------
    energy : ndarray, shape (n_E,)
        Energies (keV) where m was evaluated.
    median, p16, p84, p2_5, p97_5 : ndarray, shape (n_E,)
        Pointwise percentiles of m(E; theta) over the posterior draws (dimensionless).
    n_draws : int
        Number of posterior draws the percentiles come from.
    """

    energy: np.ndarray
    median: np.ndarray
    p16: np.ndarray
    p84: np.ndarray
    p2_5: np.ndarray
    p97_5: np.ndarray
    n_draws: int

    def statistic(self, name: str) -> np.ndarray:
        """Return the curve of statistic ``name``.

        Parameters
        ----------
        name : str
            A key of :data:`STATISTICS` (``median``, ``p16``, ``p84``).

        Returns
        -------
        ndarray, shape (n_E,)
            The pointwise percentile of m(E).

        Raises
        ------
        ValueError
            For an unknown statistic.
        """
        if name not in STATISTICS:
            raise ValueError(f"unknown statistic {name!r}; known: {', '.join(STATISTICS)}")
        return getattr(self, name)

    @property
    def width(self) -> np.ndarray:
        """The 16-84% width of the band, p84 - p16, shape (n_E,)."""
        return self.p84 - self.p16


def pointwise_band(
    family: Modifier,
    energy: np.ndarray,
    samples: np.ndarray,
    max_draws: int | None = MAX_BAND_DRAWS,
    seed: int = 0,
) -> MultiplierBand:
    """Pointwise median, 16/84 and 2.5/97.5 percentiles of m(E) over the posterior.

    Parameters
    ----------
    family : Modifier
        The modifier family.
    energy : ndarray, shape (n_E,)
        Energies (keV), e.g. an ARF's bin centres.
    samples : ndarray, shape (n_samples, d)
        Posterior samples of theta.
    max_draws : int or None
        At most this many samples (picked by :func:`select_draws`) set the percentiles; the
        chain's samples are autocorrelated, so a few thousand carry all its information and
        bound the memory (max_draws x n_E doubles). None uses every sample.
    seed : int
        Seed of the choice of draws.

    Returns
    -------
    MultiplierBand
        The pointwise statistics on ``energy``.
    """
    energy = np.asarray(energy, dtype=np.float64)
    thetas = select_draws(samples, max_draws, seed)
    curves = multiplier_draws(family, energy, thetas)
    q = np.percentile(curves, [50.0, 16.0, 84.0, 2.5, 97.5], axis=0)
    return MultiplierBand(
        energy=energy,
        median=q[0],
        p16=q[1],
        p84=q[2],
        p2_5=q[3],
        p97_5=q[4],
        n_draws=int(thetas.shape[0]),
    )


@dataclass(frozen=True)
class Ensemble:
    """N posterior draws of m(E): one curve per draw, and the theta it came from.

    Attributes
    ----------
    energy : ndarray, shape (n_E,)
        Energies (keV).
    thetas : ndarray, shape (n_draws, d)
        The posterior draws of theta.
    multipliers : ndarray, shape (n_draws, n_E)
        m(E; theta_k) for each draw (dimensionless).
    """

    energy: np.ndarray
    thetas: np.ndarray
    multipliers: np.ndarray

    @property
    def n_draws(self) -> int:
        """Number of draws (rows)."""
        return int(self.thetas.shape[0])


def ensemble(
    family: Modifier,
    energy: np.ndarray,
    samples: np.ndarray,
    n_draws: int = ENSEMBLE_DRAWS,
    seed: int = 0,
) -> Ensemble:
    """``n_draws`` posterior draws of the curve m(E; theta), for propagating its uncertainty.

    Parameters
    ----------
    family : Modifier
        The modifier family.
    energy : ndarray, shape (n_E,)
        Energies (keV).
    samples : ndarray, shape (n_samples, d)
        Posterior samples of theta.
    n_draws : int
        Number of curves; the chain must hold at least this many samples.
    seed : int
        Seed of the choice of draws (the same seed gives the same ensemble on any grid).

    Returns
    -------
    Ensemble
        Draws and their curves, in chain order.

    Raises
    ------
    ValueError
        When ``n_draws < 1`` or the chain holds fewer samples than ``n_draws``.
    """
    samples = np.asarray(samples, dtype=np.float64)
    if n_draws < 1:
        raise ValueError(f"an ensemble needs at least one draw, got {n_draws}")
    if samples.ndim != 2 or samples.shape[0] < n_draws:
        raise ValueError(
            f"the posterior holds {samples.shape[0] if samples.ndim == 2 else 0} samples, "
            f"fewer than the {n_draws} draws asked for"
        )
    thetas = select_draws(samples, n_draws, seed)
    energy = np.asarray(energy, dtype=np.float64)
    return Ensemble(energy, thetas, multiplier_draws(family, energy, thetas))


def prior_band(
    family: Modifier,
    energy: np.ndarray,
    theta_lo: np.ndarray,
    theta_hi: np.ndarray,
    n_draws: int = 2000,
    seed: int = 0,
) -> MultiplierBand:
    """Compute the same pointwise statistics of m(E) under the prior (theta flat in its box).

    What the posterior band is compared with to say where the data constrain m(E).

    Parameters
    ----------
    family : Modifier
        The modifier family.
    energy : ndarray, shape (n_E,)
        Energies (keV).
    theta_lo, theta_hi : ndarray, shape (d,)
        The prior's bounds (the emulator's grid bounds), in theta units.
    n_draws : int
        Prior draws.
    seed : int
        Seed of the draws.

    Returns
    -------
    MultiplierBand
        Prior percentiles of m(E).
    """
    lo = np.asarray(theta_lo, dtype=np.float64)
    hi = np.asarray(theta_hi, dtype=np.float64)
    rng = np.random.default_rng([int(seed), 13])
    thetas = lo + rng.random((int(n_draws), lo.size)) * (hi - lo)
    return pointwise_band(family, energy, thetas, max_draws=None)


def nearest_theta(
    family: Modifier,
    energy: np.ndarray,
    curve: np.ndarray,
    theta_lo: np.ndarray,
    theta_hi: np.ndarray,
    starts: np.ndarray,
    weights: np.ndarray | None = None,
) -> tuple[np.ndarray, float]:
    """Find the theta whose m(E; theta) is closest to ``curve`` (e.g. the pointwise median).

    The emulator takes theta, not a curve: to evaluate what the written (median) corrected
    ARF implies for the temperatures (the seed loss "after"), the curve is projected onto the
    family by weighted least squares, ``min_theta sum_E w(E) (m(E; theta) - curve(E))^2``
    inside the prior's bounds (scipy's trust-region reflective ``least_squares``), from each
    of ``starts`` (e.g. posterior draws); the best is kept.

    Parameters
    ----------
    family : Modifier
        The modifier family.
    energy : ndarray, shape (n_E,)
        Energies (keV).
    curve : ndarray, shape (n_E,)
        The multiplier to reproduce.
    theta_lo, theta_hi : ndarray, shape (d,)
        Bounds of theta.
    starts : ndarray, shape (k, d)
        Starting points inside the bounds.
    weights : ndarray, shape (n_E,), optional
        Non-negative weights, e.g. the ARF's area over the fitted band (zero outside it);
        default uniform.

    Returns
    -------
    theta : ndarray, shape (d,)
        The closest member of the family.
    max_abs : float
        ``max |m(E; theta) - curve(E)|`` where the weight is positive: how well the family
        reproduces the curve (0 when the curve is a member).
    """
    from scipy.optimize import least_squares

    energy = np.asarray(energy, dtype=np.float64)
    curve = np.asarray(curve, dtype=np.float64)
    w = np.ones_like(energy) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = np.sqrt(np.clip(w, 0.0, None))
    lo = np.asarray(theta_lo, dtype=np.float64)
    hi = np.asarray(theta_hi, dtype=np.float64)

    def residual(theta: np.ndarray) -> np.ndarray:
        return sw * (family.evaluate(energy, theta) - curve)

    best, best_cost = np.clip(np.atleast_2d(starts)[0], lo, hi), np.inf
    for start in np.atleast_2d(starts):
        x0 = np.clip(np.asarray(start, dtype=np.float64), lo, hi)
        res = least_squares(residual, x0, bounds=(lo, hi), method="trf")
        if res.cost < best_cost:
            best, best_cost = res.x, res.cost
    used = sw > 0
    max_abs = float(np.max(np.abs(family.evaluate(energy, best) - curve)[used]))
    return best, max_abs
