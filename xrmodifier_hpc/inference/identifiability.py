"""What the data constrain, and what they do not: an identifiability report of the posterior.

Temperatures constrain an ARF correction only through integrals of it over the source spectra,
so parts of theta can be degenerate (for a Gaussian dip, the depth A and width sigma trade off
at fixed area ~ A sigma). The report says so in numbers and in plain lines:

* parameters whose best optimum lies on a grid bound (the likelihood maximum slid along a
  ridge to the edge of the prior: a poor point estimate);
* the posterior correlation matrix;
* the eigen-directions of the posterior covariance in normalised units ``u = (theta - lo) /
  (hi - lo)`` (the prior's range), each with the ratio of its posterior width to the prior's
  width along it (flat prior on the box: variance 1/12 along any unit direction). A ratio
  near 1 is a direction the data do not constrain; ``ratio << 1`` one they pin down;
* for strongly correlated pairs, the combination the data do constrain: a product
  ``p * q^k`` (the minor axis of the pair's covariance in log |p|, log |q|, when both keep
  one sign over the posterior), else a linear combination ``p + c q``;
* the integral of ``m(E) - 1`` over the fitted band (keV), family-independent: the area of
  the correction, usually its best-constrained property;
* the energy range where the data constrain m(E): the posterior's pointwise 16-84% band is
  narrower than ``NARROW`` times the prior's (where the prior's band is at least
  ``PRIOR_FLOOR`` of its widest: elsewhere the family, not the data, fixes m).

Everything here is pure (arrays in, a JSON-ready record out).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from xrmodifier_hpc.inference.arf_posterior import MultiplierBand

#: |correlation| at or above which a pair of parameters is called degenerate
DEGENERATE_CORRELATION = 0.7
#: a parameter keeps "one sign" when at least this fraction of the draws share it
ONE_SIGN_FRACTION = 0.99
#: m(E) is "constrained" where the posterior's 16-84% band is narrower than this times the prior's
NARROW = 0.5
#: ... and where the prior's band is at least this fraction of its widest (elsewhere the family
#: fixes m, not the data)
PRIOR_FLOOR = 0.1
#: a unit-coordinate distance below which theta_best counts as on a bound
BOUND_TOL = 1e-3
#: posterior/prior width ratio above which a direction is "poorly constrained"
POOR_RATIO = 0.5
#: exponents of a product combination are rounded to this step when that is close enough
EXPONENT_STEP = 0.5


@dataclass(frozen=True)
class Direction:
    """One eigen-direction of the posterior covariance in normalised units.

    Attributes
    ----------
    weights : dict of str to float
        The unit eigenvector, by parameter (normalised coordinates; sign fixed so that the
        largest weight is positive).
    posterior_width : float
        Posterior standard deviation along it (normalised units: fractions of the ranges).
    ratio : float
        ``posterior_width`` over the prior's width along it (1/sqrt(12)).
    """

    weights: dict[str, float]
    posterior_width: float
    ratio: float

    def label(self, digits: int = 2) -> str:
        """Write the direction as text, e.g. ``"0.71 sigma - 0.70 A"``.

        Terms come in parameter order; weights below 0.1 are left out.

        Parameters
        ----------
        digits : int
            Decimals of the weights.

        Returns
        -------
        str
            The weighted sum of parameter names.
        """
        biggest = max(abs(w) for w in self.weights.values())
        parts = []
        for name, w in self.weights.items():  # parameter order
            if abs(w) < 0.1 and abs(w) < biggest:
                continue
            sign = "-" if w < 0 else "+"
            parts.append(f"{sign} {abs(w):.{digits}f} {name}")
        text = " ".join(parts)
        return text[2:] if text.startswith("+ ") else "-" + text[2:]


@dataclass(frozen=True)
class Degeneracy:
    """A strongly correlated pair and the combination of it the data constrain.

    Attributes
    ----------
    params : tuple of str
        The pair ``(p, q)``.
    correlation : float
        Their posterior correlation.
    kind : str
        ``"product"`` (``p * q^exponent``; ``|q|`` for a fractional exponent) or ``"linear"``
        (``p + coefficient * q``).
    exponent : float
        The exponent of ``|q|`` (product) or the coefficient of ``q`` (linear).
    label : str
        The combination as text, e.g. ``"A*sigma"``.
    median, p16, p84 : float
        Posterior median and 16/84 percentiles of the combination.
    relative_width : float
        The combination's 16-84% half-width over its |median| (product) or over its prior
        half-width (linear); for comparison with the parameters' own.
    """

    params: tuple[str, str]
    correlation: float
    kind: str
    exponent: float
    label: str
    median: float
    p16: float
    p84: float
    relative_width: float

    @property
    def half_width(self) -> float:
        """Half the 16-84% interval of the combination."""
        return 0.5 * (self.p84 - self.p16)


@dataclass(frozen=True)
class ConstrainedRange:
    """Where the data constrain m(E) (keV), and the band-width ratio there.

    Attributes
    ----------
    low, high : float
        Ends (keV) of the widest contiguous energy range where the posterior's 16-84% band is
        narrower than ``NARROW`` times the prior's.
    intervals : list of (float, float)
        Every such range (keV), widest first.
    min_ratio : float
        The smallest posterior/prior band-width ratio found (where the data bite hardest).
    energy_of_min : float
        Where that is (keV).
    """

    low: float
    high: float
    intervals: list[tuple[float, float]]
    min_ratio: float
    energy_of_min: float


@dataclass(frozen=True)
class Identifiability:
    """The identifiability report (see the module docstring); :meth:`to_dict` for JSON.

    Attributes
    ----------
    param_names : tuple of str
        Parameter order of every matrix and vector.
    at_bound : dict of str to str
        Parameters of theta_best on a grid bound: name -> ``"lower"`` or ``"upper"``.
    correlation : ndarray, shape (d, d)
        Posterior correlation matrix.
    directions : list of Direction
        Eigen-directions, least constrained first.
    degeneracies : list of Degeneracy
        Strongly correlated pairs, most correlated first.
    area : tuple of float or None
        Posterior (median, p16, p84) of the integral of m(E) - 1 over ``area_band`` (keV).
    area_band : tuple of float or None
        The band of that integral (keV).
    constrained : ConstrainedRange or None
        Where the data constrain m(E); None when nowhere or not computed.
    lines : list of str
        The plain-language summary.
    """

    param_names: tuple[str, ...]
    at_bound: dict[str, str]
    correlation: np.ndarray
    directions: list[Direction]
    degeneracies: list[Degeneracy]
    area: tuple[float, float, float] | None = None
    area_band: tuple[float, float] | None = None
    constrained: ConstrainedRange | None = None
    lines: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict (result.json's ``identifiability``).

        Returns
        -------
        dict
            Keys as :class:`~xrmodifier_hpc.io.result.IdentifiabilityReport` reads them.
        """
        c = self.constrained
        return {
            "param_names": list(self.param_names),
            "at_bound": dict(self.at_bound),
            "correlation": [[float(x) for x in row] for row in self.correlation],
            "directions": [
                {
                    "weights": {k: float(v) for k, v in d.weights.items()},
                    "posterior_width": float(d.posterior_width),
                    "posterior_over_prior": float(d.ratio),
                }
                for d in self.directions
            ],
            "degeneracies": [
                {
                    "params": list(g.params),
                    "correlation": float(g.correlation),
                    "kind": g.kind,
                    "exponent": float(g.exponent),
                    "combination": g.label,
                    "median": float(g.median),
                    "p16": float(g.p16),
                    "p84": float(g.p84),
                    "relative_width": float(g.relative_width),
                }
                for g in self.degeneracies
            ],
            "area_keV": None
            if self.area is None
            else {"median": self.area[0], "p16": self.area[1], "p84": self.area[2]},
            "area_band_keV": None if self.area_band is None else list(self.area_band),
            "constrained_energy_keV": None
            if c is None
            else {
                "low": c.low,
                "high": c.high,
                "intervals": [list(iv) for iv in c.intervals],
                "min_ratio": c.min_ratio,
                "energy_of_min": c.energy_of_min,
                "criterion": f"posterior 16-84% band < {NARROW:g} x prior's",
            },
            "lines": list(self.lines),
        }


# --------------------------------------------------------------------------------------------
# the pieces
# --------------------------------------------------------------------------------------------


def params_at_bound(
    names: Sequence[str],
    theta: np.ndarray,
    theta_lo: np.ndarray,
    theta_hi: np.ndarray,
    tol: float = BOUND_TOL,
) -> dict[str, str]:
    """Parameters of ``theta`` that lie on a bound of the grid.

    Parameters
    ----------
    names : sequence of str
        Parameter names, shape (d,).
    theta : ndarray, shape (d,)
        The point (e.g. theta_best), theta units.
    theta_lo, theta_hi : ndarray, shape (d,)
        The grid's bounds.
    tol : float
        Distance to a bound, as a fraction of the range, that still counts as on it.

    Returns
    -------
    dict of str to str
        name -> ``"lower"`` or ``"upper"``, in parameter order.
    """
    u = _normalise(np.asarray(theta, np.float64)[None, :], theta_lo, theta_hi)[0]
    out: dict[str, str] = {}
    for name, x in zip(names, u):
        if x <= tol:
            out[str(name)] = "lower"
        elif x >= 1 - tol:
            out[str(name)] = "upper"
    return out


def correlation_matrix(samples: np.ndarray) -> np.ndarray:
    """Posterior correlation matrix of ``samples``.

    A parameter that does not vary over the samples gets zero correlations (and 1 on the
    diagonal) instead of NaN.

    Parameters
    ----------
    samples : ndarray, shape (n, d)
        Posterior samples.

    Returns
    -------
    ndarray, shape (d, d)
        The correlation matrix.
    """
    samples = np.asarray(samples, dtype=np.float64)
    cov = np.atleast_2d(np.cov(samples, rowvar=False))
    sd = np.sqrt(np.clip(np.diag(cov), 0.0, None))
    safe = np.where(sd > 0, sd, 1.0)
    corr = cov / np.outer(safe, safe)
    corr[sd == 0, :] = 0.0
    corr[:, sd == 0] = 0.0
    np.fill_diagonal(corr, 1.0)
    return np.clip(corr, -1.0, 1.0)


def _normalise(samples: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    lo = np.asarray(lo, dtype=np.float64)
    hi = np.asarray(hi, dtype=np.float64)
    return (np.asarray(samples, dtype=np.float64) - lo) / (hi - lo)


def principal_directions(
    names: Sequence[str], samples: np.ndarray, theta_lo: np.ndarray, theta_hi: np.ndarray
) -> list[Direction]:
    """Eigen-directions of the posterior covariance in normalised units, least constrained first.

    Parameters
    ----------
    names : sequence of str
        Parameter names (d,).
    samples : ndarray, shape (n, d)
        Posterior samples, theta units.
    theta_lo, theta_hi : ndarray, shape (d,)
        The prior's (grid's) bounds.

    Returns
    -------
    list of Direction
        One per eigenvalue, the largest posterior/prior width ratio first. The flat prior on
        the box has covariance I/12 in normalised units, so its width along any unit
        direction is 1/sqrt(12).
    """
    u = _normalise(samples, theta_lo, theta_hi)
    cov = np.atleast_2d(np.cov(u, rowvar=False))
    evals, evecs = np.linalg.eigh(0.5 * (cov + cov.T))
    prior_width = 1.0 / np.sqrt(12.0)
    out = []
    for j in np.argsort(-evals):
        v = evecs[:, j]
        v = v if v[np.argmax(np.abs(v))] > 0 else -v
        width = float(np.sqrt(max(evals[j], 0.0)))
        out.append(
            Direction(
                weights={str(n): float(w) for n, w in zip(names, v)},
                posterior_width=width,
                ratio=width / prior_width,
            )
        )
    return out


def _percentiles(x: np.ndarray) -> tuple[float, float, float]:
    q = np.percentile(x, [50.0, 16.0, 84.0])
    return float(q[0]), float(q[1]), float(q[2])


def _format_exponent(k: float) -> str:
    if abs(k - 1.0) < 1e-9:
        return ""
    if abs(k - round(k)) < 1e-9:
        return f"^{int(round(k))}"
    return f"^{k:g}"


def degenerate_pairs(
    names: Sequence[str],
    samples: np.ndarray,
    theta_lo: np.ndarray,
    theta_hi: np.ndarray,
    threshold: float = DEGENERATE_CORRELATION,
) -> list[Degeneracy]:
    """Pairs with |correlation| >= ``threshold`` and the combination of each the data constrain.

    For a pair ``(p, q)`` whose draws each keep one sign (``ONE_SIGN_FRACTION``), the
    constrained combination is the minor axis of their covariance in ``(log|p|, log|q|)``:
    ``log|p| + k log|q|``, i.e. the product ``p * q^k`` (``p * |q|^k`` for a fractional k;
    k rounded to a multiple of ``EXPONENT_STEP`` when that changes it by less than 0.15; for
    a Gaussian dip,
    ``A * sigma`` with k = 1 is its area over sqrt(2 pi)). Otherwise it is the minor axis
    in normalised units, written back in theta units as ``p + c q``.

    Parameters
    ----------
    names : sequence of str
        Parameter names (d,).
    samples : ndarray, shape (n, d)
        Posterior samples, theta units.
    theta_lo, theta_hi : ndarray, shape (d,)
        The grid's bounds (for the linear case's normalisation).
    threshold : float
        Smallest |correlation| called degenerate.

    Returns
    -------
    list of Degeneracy
        Most correlated pair first.
    """
    samples = np.asarray(samples, dtype=np.float64)
    lo = np.asarray(theta_lo, dtype=np.float64)
    hi = np.asarray(theta_hi, dtype=np.float64)
    corr = correlation_matrix(samples)
    d = samples.shape[1]
    found = []
    for i in range(d):
        for j in range(i + 1, d):
            if abs(corr[i, j]) >= threshold:
                found.append((abs(corr[i, j]), i, j))
    out = []
    for _, i, j in sorted(found, reverse=True):
        p, q = samples[:, i], samples[:, j]
        one_sign = all(max(np.mean(x > 0), np.mean(x < 0)) >= ONE_SIGN_FRACTION for x in (p, q))
        if one_sign:
            lp, lq = np.log(np.abs(p)), np.log(np.abs(q))
            cov = np.cov(np.vstack([lp, lq]))
            evals, evecs = np.linalg.eigh(cov)
            a, b = evecs[:, 0]  # minor axis: the best-constrained combination
            if abs(a) < 1e-12:
                continue
            k = float(b / a)
            rounded = EXPONENT_STEP * round(k / EXPONENT_STEP)
            if abs(rounded - k) < 0.15 and rounded != 0:
                k = float(rounded)
            if k == round(k):  # integer powers keep q's sign: A*sigma, not A*|sigma|
                combo = p * q ** int(round(k))
                label = f"{names[i]}*{names[j]}{_format_exponent(k)}"
            else:
                combo = p * np.abs(q) ** k
                label = f"{names[i]}*|{names[j]}|{_format_exponent(k)}"
            med, c16, c84 = _percentiles(combo)
            rel = 0.5 * (c84 - c16) / abs(med) if med != 0 else float("inf")
            out.append(
                Degeneracy(
                    (str(names[i]), str(names[j])),
                    float(corr[i, j]),
                    "product",
                    k,
                    label,
                    med,
                    c16,
                    c84,
                    float(rel),
                )
            )
        else:
            ui = (p - lo[i]) / (hi[i] - lo[i])
            uj = (q - lo[j]) / (hi[j] - lo[j])
            evals, evecs = np.linalg.eigh(np.cov(np.vstack([ui, uj])))
            a, b = evecs[:, 0]
            if abs(a) < 1e-12:
                continue
            # a ui + b uj, in theta units and scaled so that p's coefficient is 1
            c = float((b / (hi[j] - lo[j])) / (a / (hi[i] - lo[i])))
            combo = p + c * q
            med, c16, c84 = _percentiles(combo)
            prior_half = 0.5 * (abs(hi[i] - lo[i]) + abs(c) * abs(hi[j] - lo[j])) / np.sqrt(3.0)
            sign = "-" if c < 0 else "+"
            label = f"{names[i]} {sign} {abs(c):.3g}*{names[j]}"
            out.append(
                Degeneracy(
                    (str(names[i]), str(names[j])),
                    float(corr[i, j]),
                    "linear",
                    c,
                    label,
                    med,
                    c16,
                    c84,
                    float(0.5 * (c84 - c16) / prior_half),
                )
            )
    return out


def constrained_range(
    posterior: MultiplierBand, prior: MultiplierBand, narrow: float = NARROW
) -> ConstrainedRange | None:
    """Where the posterior's 16-84% band of m(E) is narrower than ``narrow`` times the prior's.

    Parameters
    ----------
    posterior, prior : MultiplierBand
        Pointwise bands on the same energy grid (keV).
    narrow : float
        The width ratio below which m(E) counts as constrained by the data.

    Returns
    -------
    ConstrainedRange or None
        The contiguous ranges (keV) where it holds (energies where the prior's band is
        narrower than ``PRIOR_FLOOR`` times its widest never count: there the family fixes m,
        not the data); None when it holds nowhere.

    Raises
    ------
    ValueError
        When the two bands are on different energy grids.
    """
    e = np.asarray(posterior.energy, dtype=np.float64)
    if prior.energy.shape != e.shape or not np.allclose(prior.energy, e):
        raise ValueError("the posterior and prior bands must share one energy grid")
    pw, qw = posterior.width, prior.width
    live = (qw > 0) & (qw >= PRIOR_FLOOR * float(qw.max(initial=0.0)))
    ratio = np.where(live, pw / np.where(live, qw, 1.0), np.inf)
    ok = live & (ratio < narrow)
    if not ok.any():
        return None
    edges = np.flatnonzero(np.diff(np.concatenate(([0], ok.view(np.int8), [0]))))
    runs = [(int(a), int(b) - 1) for a, b in zip(edges[::2], edges[1::2])]
    intervals = sorted(
        ((float(e[a]), float(e[b])) for a, b in runs), key=lambda iv: -(iv[1] - iv[0])
    )
    k = int(np.argmin(ratio))
    return ConstrainedRange(
        low=intervals[0][0],
        high=intervals[0][1],
        intervals=intervals,
        min_ratio=float(ratio[k]),
        energy_of_min=float(e[k]),
    )


def correction_area(
    energy_lo: np.ndarray, energy_hi: np.ndarray, curves: np.ndarray, band: tuple[float, float]
) -> tuple[float, float, float]:
    """Posterior (median, p16, p84) of the integral of m(E) - 1 over ``band`` (keV).

    Parameters
    ----------
    energy_lo, energy_hi : ndarray, shape (n_E,)
        Energy bin edges (keV) on which ``curves`` were evaluated (at the bin centres).
    curves : ndarray, shape (n_draws, n_E)
        Posterior draws of m(E).
    band : (float, float)
        Integration band (keV); bins are weighted by their overlap with it.

    Returns
    -------
    (float, float, float)
        Median, 16th and 84th percentiles (keV). For a Gaussian dip well inside the band the
        integral is ``sqrt(2 pi) A sigma``.
    """
    lo = np.asarray(energy_lo, dtype=np.float64)
    hi = np.asarray(energy_hi, dtype=np.float64)
    overlap = np.clip(np.minimum(hi, band[1]) - np.maximum(lo, band[0]), 0.0, None)
    integral = (np.atleast_2d(curves) - 1.0) @ overlap
    return _percentiles(integral)


# --------------------------------------------------------------------------------------------
# the report
# --------------------------------------------------------------------------------------------


def _fmt(x: float) -> str:
    return f"{x:.3g}"


def analyse(
    names: Sequence[str],
    samples: np.ndarray,
    theta_lo: np.ndarray,
    theta_hi: np.ndarray,
    theta_best: np.ndarray | None = None,
    posterior_band: MultiplierBand | None = None,
    prior: MultiplierBand | None = None,
    energy_edges: tuple[np.ndarray, np.ndarray] | None = None,
    curves: np.ndarray | None = None,
    band: tuple[float, float] | None = None,
) -> Identifiability:
    """Build the identifiability report of a posterior, with its plain-language lines.

    Parameters
    ----------
    names : sequence of str
        Parameter names (d,).
    samples : ndarray, shape (n, d)
        Posterior samples, theta units.
    theta_lo, theta_hi : ndarray, shape (d,)
        The grid's bounds (the prior's support).
    theta_best : ndarray, shape (d,), optional
        The multi-start's best optimum; checked against the bounds.
    posterior_band, prior : MultiplierBand, optional
        Pointwise bands of m(E) under the posterior and the prior (same grid): give both for
        the constrained energy range.
    energy_edges : (ndarray, ndarray), optional
        Bin edges (keV) of the grid of ``curves``, shape (n_E,) each.
    curves : ndarray, shape (n_draws, n_E), optional
        Posterior draws of m(E) on that grid; with ``energy_edges`` and ``band``, the
        integral of m - 1 over the band is reported.
    band : (float, float), optional
        The fitted band (keV).

    Returns
    -------
    Identifiability
        The report; ``lines`` holds the summary sentences.
    """
    names = tuple(str(n) for n in names)
    samples = np.atleast_2d(np.asarray(samples, dtype=np.float64))
    lo = np.asarray(theta_lo, dtype=np.float64)
    hi = np.asarray(theta_hi, dtype=np.float64)
    at_bound = (
        params_at_bound(names, np.asarray(theta_best), lo, hi) if theta_best is not None else {}
    )
    corr = correlation_matrix(samples)
    directions = principal_directions(names, samples, lo, hi)
    degeneracies = degenerate_pairs(names, samples, lo, hi)
    area = None
    if energy_edges is not None and curves is not None and band is not None:
        area = correction_area(energy_edges[0], energy_edges[1], curves, band)
    constrained = (
        constrained_range(posterior_band, prior)
        if posterior_band is not None and prior is not None
        else None
    )

    lines: list[str] = []
    if at_bound:
        where = ", ".join(
            f"{n} = {_fmt(float(theta_best[names.index(n)]))} ({side} bound)"  # type: ignore[index]
            for n, side in at_bound.items()
        )
        lines.append(
            f"the likelihood maximum lies on the grid's edge: {where}; it is a poor point "
            "estimate (kept as theta_best, a diagnostic), the corrected ARFs use the posterior"
        )
    for g in degeneracies:
        lines.append(
            f"{g.params[0]} and {g.params[1]} are degenerate (correlation {g.correlation:+.2f}); "
            f"the data constrain {g.label} = {_fmt(g.median)} "
            f"+{_fmt(g.p84 - g.median)} -{_fmt(g.median - g.p16)}"
        )
    poor = [d for d in directions if d.ratio >= POOR_RATIO]
    for d in poor:
        lines.append(
            f"poorly constrained: {d.label()} (normalised units), posterior width "
            f"{d.ratio:.2f} of the prior's"
        )
    best = directions[-1]
    lines.append(
        f"best constrained: {best.label()} (normalised units), posterior width "
        f"{best.ratio:.2g} of the prior's"
    )
    if area is not None and band is not None:
        lines.append(
            f"the correction's area, integral of m(E) - 1 over {band[0]:g}-{band[1]:g} keV, "
            f"is {_fmt(area[0])} +{_fmt(area[2] - area[0])} -{_fmt(area[0] - area[1])} keV"
        )
    if posterior_band is not None and prior is not None:
        if constrained is None:
            lines.append(
                "the data do not constrain m(E) anywhere better than the prior "
                f"(posterior 16-84% band never below {NARROW:g} x the prior's)"
            )
        else:
            more = (
                f" (also {', '.join(f'{a:.2f}-{b:.2f}' for a, b in constrained.intervals[1:])})"
                if len(constrained.intervals) > 1
                else ""
            )
            lines.append(
                f"the data constrain m(E) over {constrained.low:.2f}-{constrained.high:.2f} keV"
                f"{more} (posterior 16-84% band narrower than {NARROW:g} x the prior's; "
                f"tightest, {constrained.min_ratio:.2f} x, at {constrained.energy_of_min:.2f} keV)"
            )
    return Identifiability(
        param_names=names,
        at_bound=at_bound,
        correlation=corr,
        directions=directions,
        degeneracies=degeneracies,
        area=area,
        area_band=None if band is None else (float(band[0]), float(band[1])),
        constrained=constrained,
        lines=lines,
    )
