"""C-stat kernels for many spectra at once, written once against the array API (numpy, torch).

Statistic: XSPEC's ``cstat`` without background (Cash 1979 as modified by Castor),

    C = 2 sum_j [ m_j - d_j + d_j (ln d_j - ln m_j) ]      (the bracket is m_j where d_j = 0)

for counts ``d_j`` and model counts ``m_j = N s_j(T)`` over the noticed channels. The norm N is
profiled exactly (N = D / S(T), with D = sum d_j and S = sum s_j), which leaves

    C(T) = 2 [ sum_j d_j ln d_j - D ln D + D ln S(T) - sum_j d_j ln s_j(T) ].

Every spectrum's profile on a fixed temperature grid is therefore one matrix product of the
counts with the log-templates. Between grid nodes the profile is interpolated by the quintic
through the six nearest nodes in x = ln T, the same as interpolating each ln s_j(T) and ln S(T)
(the interpolation is linear in the node values); its minimum and its delta-C = 1 crossings are
then found on that smooth curve, to machine precision.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace as _compat_namespace

#: bisection steps (minimum, delta-C = 1 crossings): brackets shrink by 2^-36
_BISECT_STEPS = 36
#: safeguarded Newton steps that replace the bisection; a spectrum whose last step exceeds
#: _NEWTON_TOL of its bracket is bisected instead (so the result is never less precise)
_NEWTON_STEPS = 5
_NEWTON_STEPS_CROSSING = 8
_NEWTON_TOL = 1e-12
#: level of the 1-sigma interval for one interesting parameter
DELTA_C_1SIGMA = 1.0


def xlogx(x: Any, xp: Any = None) -> Any:
    """Compute x ln x elementwise, with 0 ln 0 = 0.

    Parameters
    ----------
    x : array
        Non-negative values (counts), any shape (numpy or torch).
    xp : namespace, optional
        Its array namespace (default: found from ``x``).

    Returns
    -------
    array
        x ln x, same shape and namespace (0 where x <= 0).
    """
    xp = xp or array_namespace(x)
    safe = xp.where(x > 0, x, xp.ones_like(x))
    return xp.where(x > 0, x * xp.log(safe), xp.zeros_like(x))


def array_namespace(*arrays: Any) -> Any:
    """Return the array-API namespace of ``arrays``.

    Parameters
    ----------
    *arrays : array
        numpy arrays or torch tensors.

    Returns
    -------
    namespace
        numpy itself for numpy arrays (numpy >= 2 is an array-API namespace, without the
        compatibility layer's per-call overhead), else array_api_compat's (torch).
    """
    if all(isinstance(a, np.ndarray) for a in arrays):
        return np
    return _compat_namespace(*arrays)


#: integer counts below this use a table of k ln k in :func:`data_terms` (same values)
_XLOGX_TABLE_SIZE = 1 << 15
_xlogx_table: np.ndarray | None = None


def _xlogx_integers(counts: np.ndarray, known_integers: bool = False) -> np.ndarray | None:
    """Look up k ln k of integer-valued ``counts`` in a table.

    The values :func:`xlogx` gives, bit for bit, at a fraction of the cost of a logarithm;
    None when the counts are not all integers in [0, 2^15). ``known_integers`` skips the
    integer check (Poisson draws).
    """
    global _xlogx_table
    if counts.size == 0:
        return None
    as_int = counts.astype(np.int64)
    if as_int.max() >= _XLOGX_TABLE_SIZE:
        return None
    if not known_integers and (as_int.min() < 0 or not np.array_equal(as_int, counts)):
        return None
    if _xlogx_table is None:
        _xlogx_table = xlogx(np.arange(_XLOGX_TABLE_SIZE, dtype=np.float64))
    return _xlogx_table[as_int]


def data_terms(counts: Any, integers: bool = False) -> tuple[Any, Any]:
    """Compute the data-only terms of the profiled C-stat of spectra ``counts``.

    Parameters
    ----------
    counts : array
        (..., n_chan) counts per noticed channel (numpy or torch).
    integers : bool
        The caller guarantees non-negative integer values (Poisson draws): skips a check.

    Returns
    -------
    total : array
        (...,) D = sum_j d_j.
    const : array
        (...,) sum_j d_j ln d_j - D ln D (0 ln 0 = 0).
    """
    xp = array_namespace(counts)
    total = xp.sum(counts, axis=-1)
    dlogd = _xlogx_integers(counts, integers) if isinstance(counts, np.ndarray) else None
    if dlogd is None:
        dlogd = xlogx(counts, xp)
    return total, xp.sum(dlogd, axis=-1) - xlogx(total, xp)


def cstat_profile(
    counts: Any, log_templates: Any, log_totals: Any, terms: tuple[Any, Any] | None = None
) -> Any:
    """Compute the norm-profiled C-stat of spectra on a temperature grid.

    One matrix product of the counts with the log-templates (see the module docstring).

    Parameters
    ----------
    counts : array
        (n, n_chan) counts per noticed channel.
    log_templates : array
        (n_T, n_chan) ln s_j(T_k), s the expected counts at norm 1 (> 0).
    log_totals : array
        (n_T,) ln S(T_k), S = sum_j s_j(T_k).
    terms : tuple of arrays, optional
        The spectra's :func:`data_terms` (D (n,), const (n,)) when already known.

    Returns
    -------
    array
        (n, n_T) C(T_k), the norm profiled at each T_k.
    """
    xp = array_namespace(counts, log_templates)
    terms = data_terms(counts) if terms is None else terms
    cross = counts @ xp.permute_dims(log_templates, (1, 0))
    return cstat_from_cross(cross, log_totals, terms)


def cstat_from_cross(cross: Any, log_totals: Any, terms: tuple[Any, Any]) -> Any:
    """Compute the profiled C(T_k) from its one data-model term (see the module docstring).

    Parameters
    ----------
    cross : array
        (n, n_T) sum_j d_j ln s_j(T_k) of n spectra.
    log_totals : array
        (n_T,) ln S(T_k), S = sum_j s_j.
    terms : tuple of arrays
        The spectra's :func:`data_terms` (D (n,), const (n,)).

    Returns
    -------
    array
        (n, n_T) C = 2 [const + D ln S(T) - cross].
    """
    total, const = terms
    return 2.0 * (const[:, None] + total[:, None] * log_totals[None, :] - cross)


def cstat_at_norm(counts: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Compute XSPEC's cstat (no background) of counts against model counts.

    C = 2 sum_j [m_j - d_j + d_j ln(d_j / m_j)] (Cash 1979; XSPEC manual, "Statistics in
    XSPEC"), the last term 0 where d_j = 0.

    Parameters
    ----------
    counts : numpy.ndarray
        (..., n_chan) counts d.
    model : numpy.ndarray
        (..., n_chan) model counts m (> 0 where d > 0).

    Returns
    -------
    numpy.ndarray
        (...,) C.
    """
    with np.errstate(divide="ignore", invalid="ignore"):
        log_term = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1) / model), 0)
    return 2.0 * np.sum(model - counts + log_term, axis=-1)


# --------------------------------------------------------------------------------------------
# local polynomial interpolation on the grid (in x = ln T)
# --------------------------------------------------------------------------------------------

#: nodes per local interpolating polynomial (6: quintic, error ~h^6)
STENCIL = 6
#: sub-intervals scanned for a sign change of the derivative inside one grid interval
_SCAN = 8


@dataclass(frozen=True)
class LocalPolyGrid:
    """Piecewise polynomials through ``STENCIL`` neighbouring nodes of a grid ``x`` (ln T).

    Interval i is [x_i, x_{i+1}]; its polynomial passes through the nodes ``start[i] ...
    start[i] + STENCIL - 1`` (centred on the interval where the grid allows) and reads
    sum_p (coef[i, p, :] @ values) t^p in t = x - x_i. Being linear in the node values,
    interpolating a profile C(T) this way equals interpolating every ln s_j(T) and ln S(T).
    """

    x: np.ndarray
    start: np.ndarray
    coef: np.ndarray  # (n_int, STENCIL powers, STENCIL node weights)

    @classmethod
    def build(cls, x: np.ndarray, stencil: int = STENCIL) -> LocalPolyGrid:
        """Build the interpolation tables for a grid.

        Parameters
        ----------
        x : numpy.ndarray
            (n_nodes,) increasing nodes, ln(T / keV).
        stencil : int
            Nodes per local polynomial (degree ``stencil - 1``).

        Returns
        -------
        LocalPolyGrid
            Stencil starts (n_nodes - 1,) and power coefficients (n_nodes - 1, stencil,
            stencil) of the Lagrange basis of each interval.

        Raises
        ------
        ValueError
            Fewer than ``stencil`` nodes, or nodes not increasing.
        """
        x = np.asarray(x, dtype=np.float64)
        n = x.size
        if n < stencil or np.any(np.diff(x) <= 0):
            raise ValueError(f"need at least {stencil} increasing nodes")
        half = stencil // 2 - 1
        start = np.clip(np.arange(n - 1) - half, 0, n - stencil)
        coef = np.empty((n - 1, stencil, stencil))
        for i, s0 in enumerate(start):
            nodes = x[s0 : s0 + stencil] - x[i]
            # column q of inv(V) holds the power coefficients of the q-th Lagrange basis
            coef[i] = np.linalg.inv(np.vander(nodes, stencil, increasing=True))
        return cls(x, start, coef)

    @property
    def stencil(self) -> int:
        """Nodes per local polynomial."""
        return self.coef.shape[-1]

    def to(self, xp: Any, like: Any) -> _DeviceGrid:
        """Copy the tables to arrays of another namespace and device.

        Parameters
        ----------
        xp : namespace
            The target array namespace (numpy or array_api_compat's torch).
        like : array
            An array on the target device.

        Returns
        -------
        _DeviceGrid
            ``x`` (float64), ``start`` (int64) and ``coef`` (float64) in ``xp`` on that device.
        """
        device = getattr(like, "device", None)
        kwargs = {"device": device} if device is not None and xp.__name__.endswith("torch") else {}
        return _DeviceGrid(
            x=xp.asarray(self.x, dtype=xp.float64, **kwargs),
            start=xp.asarray(self.start, dtype=xp.int64, **kwargs),
            coef=xp.asarray(self.coef, dtype=xp.float64, **kwargs),
        )

    def interpolate(self, values: np.ndarray, x_new: np.ndarray) -> np.ndarray:
        """Interpolate values given on the nodes.

        Parameters
        ----------
        values : numpy.ndarray
            (..., n_nodes) values on the nodes (e.g. C or ln s_j on the fit grid).
        x_new : numpy.ndarray
            (m,) abscissae, ln(T / keV); outside the grid the end polynomials extrapolate.

        Returns
        -------
        numpy.ndarray
            (..., m) the local polynomial interpolant at ``x_new``.
        """
        values = np.asarray(values, dtype=np.float64)
        x_new = np.asarray(x_new, dtype=np.float64)
        i = np.clip(np.searchsorted(self.x, x_new, side="right") - 1, 0, self.x.size - 2)
        t = x_new - self.x[i]
        idx = self.start[i][:, None] + np.arange(self.stencil)[None, :]
        poly = np.einsum("mpq,...mq->...mp", self.coef[i], values[..., idx])
        return np.sum(poly * t[:, None] ** np.arange(self.stencil), axis=-1)


@dataclass(frozen=True)
class _DeviceGrid:
    x: Any
    start: Any
    coef: Any


def _poly(grid: _DeviceGrid, curves: Any, interval: Any, xp: Any) -> _Poly:
    """Each spectrum's polynomial on ``interval`` (n,): power coefficients in t = x - x_i."""
    m = grid.coef.shape[-1]
    idx = (
        xp.take(grid.start, interval, axis=0)[:, None]
        + xp.arange(m, dtype=interval.dtype, device=_device(interval))[None, :]
    )
    local = xp.take_along_axis(curves, idx, axis=1)  # (n, m)
    weights = xp.take(grid.coef, interval, axis=0)  # (n, m, m)
    # a stack of small matrix products (7x faster than a broadcast product and a sum)
    return _Poly(xp.matmul(weights, local[:, :, None])[:, :, 0], xp)


def _device(a: Any) -> Any:
    return getattr(a, "device", None)


class _Poly:
    """Polynomials as contiguous coefficient rows, with their first two derivatives.

    n polynomials of degree m - 1 (coefficients (n, m), powers ascending).
    """

    def __init__(self, p: Any, xp: Any) -> None:
        m = p.shape[1]
        self.rows = [xp.asarray(p[:, k], copy=True) for k in range(m)]
        self.d1_rows = [k * self.rows[k] for k in range(1, m)]
        self.d2_rows = [k * (k - 1) * self.rows[k] for k in range(2, m)]

    @staticmethod
    def _horner(rows: list[Any], t: Any) -> Any:
        if t.ndim == 2:
            rows = [r[:, None] for r in rows]
        out = rows[-1]
        for r in reversed(rows[:-1]):
            out = r + t * out
        return out

    def value(self, t: Any) -> Any:
        """p(t) for t (n,) or (n, k)."""
        return self._horner(self.rows, t)

    def d1(self, t: Any) -> Any:
        """p'(t)."""
        return self._horner(self.d1_rows, t)

    def d2(self, t: Any) -> Any:
        """p''(t)."""
        return self._horner(self.d2_rows, t)


def _safe_div(num: Any, den: Any, xp: Any) -> Any:
    ok = den != 0
    return xp.where(ok, num / xp.where(ok, den, xp.ones_like(den)), xp.zeros_like(num))


def _interval_minimum(p: _Poly, h: Any, xp: Any) -> tuple[Any, Any, Any]:
    """Minimum over t in [0, h] of polynomials p: (t_min, value, interior).

    The first sign change of p' from - to + on a scan of the interval brackets the minimum,
    which is then found by Newton's method on p' kept inside the bracket (a bisection step
    wherever Newton would leave it), to machine precision; spectra that have not converged
    after ``_NEWTON_STEPS`` are bisected to 2^-36 of the interval instead. ``interior`` marks
    minima strictly inside the interval (else the lower end value is returned).
    """
    zero = xp.zeros_like(h)
    fractions = xp.asarray([j / _SCAN for j in range(_SCAN + 1)], dtype=h.dtype, device=_device(h))
    scan_t = h[:, None] * fractions[None, :]  # (n, _SCAN + 1)
    d = p.d1(scan_t)
    change = (d[:, :-1] < 0) & (d[:, 1:] >= 0)
    found = xp.any(change, axis=1)
    first = xp.argmax(xp.astype(change, xp.int8), axis=1)[:, None]
    lo = xp.where(found, xp.take_along_axis(scan_t, first, axis=1)[:, 0], zero)
    hi = xp.where(found, xp.take_along_axis(scan_t, first + 1, axis=1)[:, 0], h)
    scan_lo, scan_hi = lo, hi
    t = 0.5 * (lo + hi)
    step = h
    for _ in range(_NEWTON_STEPS):
        d1 = p.d1(t)
        up = d1 >= 0
        hi = xp.where(up, t, hi)
        lo = xp.where(up, lo, t)
        d2 = p.d2(t)
        new = t - _safe_div(d1, d2, xp)
        # a zero step (converged exactly on the root) stays where it is
        inside = ((d2 > 0) & (new > lo) & (new < hi)) | (new == t)
        new = xp.where(inside, new, 0.5 * (lo + hi))
        step, t = new - t, new
    slow = found & ~(xp.abs(step) <= _NEWTON_TOL * h)
    if bool(xp.any(slow)):
        lo, hi = scan_lo, scan_hi
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            up = p.d1(mid) >= 0
            hi = xp.where(up, mid, hi)
            lo = xp.where(up, lo, mid)
        t = xp.where(slow, 0.5 * (lo + hi), t)
    t = xp.where(found, t, zero)
    v = p.value(t)
    v0, vh = p.value(zero), p.value(h)
    interior = found & (v <= v0) & (v <= vh)
    t = xp.where(interior, t, zero)
    return t, xp.where(interior, v, v0), interior


@dataclass
class FitResult:
    """Per-spectrum fit (arrays of the caller's namespace).

    ``x``/``value`` at the refined minimum (x = ln T), the delta-C = 1 interval ends
    ``x_lo``/``x_hi`` and flags.
    """

    x: Any
    value: Any
    x_lo: Any
    x_hi: Any
    at_bound: Any
    lo_open: Any
    hi_open: Any
    finite: Any
    convex: Any


def fit_profiles(curves: Any, grid: _DeviceGrid, level: float = DELTA_C_1SIGMA) -> FitResult:
    """Refine each profile's minimum and find its ``level`` crossings on the interpolant.

    The grid minimum is refined over the two intervals beside it (safeguarded Newton on the
    interpolant's derivative). Crossings of C_min + level are bracketed by the nodes and
    found on the interpolant the same way. Where no node on one side reaches the level, that
    end of the interval is the grid's end and ``lo_open``/``hi_open`` is set. A grid-end node
    is ``at_bound`` unless the interpolant has a minimum inside the last interval.

    Parameters
    ----------
    curves : array
        (n, n_nodes) C on the grid nodes (numpy or torch); rows with a non-finite value are
        flagged (``finite`` False), not fitted.
    grid : _DeviceGrid
        :meth:`LocalPolyGrid.to` tables of the nodes x = ln(T / keV), same namespace/device.
    level : float
        Delta-C of the interval (1: one interesting parameter at 68.3%, Avni 1976).

    Returns
    -------
    FitResult
        Per spectrum (n,): ``x`` ln(T_best / keV) and ``value`` C there, the interval ends
        ``x_lo``/``x_hi`` (ln keV), and the flags ``at_bound``, ``lo_open``, ``hi_open``,
        ``finite``, ``convex`` (the interpolant curves upwards at the minimum).
    """
    xp = array_namespace(curves)
    n, n_nodes = curves.shape
    finite = xp.all(xp.isfinite(curves), axis=1)
    safe = xp.where(finite[:, None], curves, xp.zeros_like(curves))
    k = xp.argmin(safe, axis=1)
    last = n_nodes - 1
    x = grid.x
    h_all = x[1:] - x[:-1]

    # refine over the intervals left and right of the node minimum
    left = xp.clip(k - 1, 0, last - 1)
    right = xp.clip(k, 0, last - 1)
    best_x = xp.take(x, k, axis=0)
    best_v = xp.take_along_axis(safe, k[:, None], axis=1)[:, 0]
    edge = (k == 0) | (k == last)
    inside = xp.zeros_like(edge)
    for interval, exists in ((left, k > 0), (right, k < last)):
        p = _poly(grid, safe, interval, xp)
        h = xp.take(h_all, interval, axis=0)
        t, v, interior = _interval_minimum(p, h, xp)
        take = exists & interior & (v < best_v)
        best_x = xp.where(take, xp.take(x, interval, axis=0) + t, best_x)
        best_v = xp.where(take, v, best_v)
        inside = inside | take
    # a grid-end node is the best fit only when the interpolant falls towards the end
    at_bound = edge & ~inside

    target = best_v + level
    # small integer node ids: the (n, n_nodes) passes below move a quarter of the bytes
    small = xp.int16 if n_nodes < 2**15 else k.dtype
    node_ids = xp.arange(n_nodes, dtype=small, device=_device(k))[None, :]
    above = safe >= target[:, None]
    # the best fit lies in [x_{kb}, x_{kb+1}]
    kb = xp.clip(xp.searchsorted(x, best_x, side="right") - 1, 0, last - 1)
    kb = xp.astype(kb, k.dtype)
    kb_small = xp.astype(kb, small)[:, None]
    lo_cand = above & (node_ids <= kb_small)
    hi_cand = above & (node_ids > kb_small)
    p_best = _poly(grid, safe, kb, xp)
    t_best = best_x - xp.take(x, kb, axis=0)
    eps = 1e-4 * xp.take(h_all, kb, axis=0)
    convex = (p_best.d1(t_best + eps) - p_best.d1(t_best - eps)) > 0
    lo_open = ~xp.any(lo_cand, axis=1)
    hi_open = ~xp.any(hi_cand, axis=1)
    # the last node at or below kb, and the first above it, that reach the level
    j_lo = xp.astype(xp.max(xp.where(lo_cand, node_ids, xp.zeros_like(node_ids)), axis=1), k.dtype)
    j_hi = xp.astype(xp.argmax(xp.astype(hi_cand, xp.int8), axis=1), k.dtype)
    j_hi = xp.where(hi_open, xp.full_like(j_hi, last), j_hi)

    x_lo = _bisect(
        safe,
        grid,
        j_lo,
        xp.take(x, j_lo, axis=0),
        xp.minimum(xp.take(x, j_lo + 1, axis=0), best_x),
        target,
        xp,
        rising=False,
        need=~lo_open,
    )
    i_hi = xp.clip(j_hi - 1, 0, last - 1)
    x_hi = _bisect(
        safe,
        grid,
        i_hi,
        xp.maximum(xp.take(x, i_hi, axis=0), best_x),
        xp.take(x, j_hi, axis=0),
        target,
        xp,
        rising=True,
        need=~hi_open,
    )
    x_lo = xp.where(lo_open, xp.take(x, xp.zeros_like(k), axis=0), x_lo)
    x_hi = xp.where(hi_open, xp.take(x, xp.full_like(k, last), axis=0), x_hi)
    return FitResult(best_x, best_v, x_lo, x_hi, at_bound, lo_open, hi_open, finite, convex)


def _bisect(curves, grid, interval, a, b, target, xp, rising: bool, need: Any = None):
    """Crossing of ``target`` by the interpolant of ``interval`` between x = a and b.

    Newton's method kept inside the shrinking bracket (a bisection step wherever Newton would
    leave it), to machine precision; spectra not converged after ``_NEWTON_STEPS_CROSSING``
    are bisected to 2^-36 of the bracket instead (among those marked in ``need``: the others'
    results are not used).
    """
    p = _poly(grid, curves, interval, xp)
    x0 = xp.take(grid.x, interval, axis=0)
    lo, hi = a, b
    x = 0.5 * (lo + hi)
    step = b - a
    for _ in range(_NEWTON_STEPS_CROSSING):
        v = p.value(x - x0) - target
        past = (v >= 0) if rising else (v < 0)
        hi = xp.where(past, x, hi)
        lo = xp.where(past, lo, x)
        new = x - _safe_div(v, p.d1(x - x0), xp)
        inside = ((new > lo) & (new < hi)) | (new == x)
        new = xp.where(inside, new, 0.5 * (lo + hi))
        step, x = new - x, new
    slow = ~(xp.abs(step) <= _NEWTON_TOL * (b - a))
    if need is not None:
        slow = slow & need
    if bool(xp.any(slow)):
        lo, hi = a, b
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            v = p.value(mid - x0)
            past = (v >= target) if rising else (v < target)
            hi = xp.where(past, mid, hi)
            lo = xp.where(past, lo, mid)
        x = xp.where(slow, 0.5 * (lo + hi), x)
    return x
