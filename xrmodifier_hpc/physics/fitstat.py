"""C-stat kernels for many spectra at once, written once against the array API (numpy, torch).

The refinement of many profiles (:func:`fit_profiles`) is also compiled for numpy arrays: the
same steps one spectrum at a time (numba), ~0.5-1.3 us per spectrum instead of ~5 us of array
passes over a batch; torch arrays take the array passes.

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

from xrmodifier_hpc.physics.compiled import compiled

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


@compiled(error_model="numpy")
def _integer_sums(counts, table, total, dlogd):  # pragma: no cover - compiled
    # per row of counts (m, n): total[r] = sum of the counts, dlogd[r] = sum of table[count];
    # returns -1, or the flat index of the first value that is not an integer in
    # [0, table.size) (NaN included: nothing more is written then)
    m, n = counts.shape
    size = table.size
    for r in range(m):
        t = 0.0
        s = 0.0
        for c in range(n):
            x = counts[r, c]
            if not (x >= 0.0 and x < size):
                return r * n + c
            k = int(x)
            if k != x:
                return r * n + c
            t += x
            s += table[k]
        total[r] = t
        dlogd[r] = s
    return -1


def _integer_terms(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """(D, sum_j d_j ln d_j) of integer-valued ``counts`` from a table of k ln k.

    One compiled pass instead of a logarithm per value; None when a value is not an
    integer in [0, 2^15) (the caller then takes logarithms).
    """
    global _xlogx_table
    if _xlogx_table is None:
        _xlogx_table = xlogx(np.arange(_XLOGX_TABLE_SIZE, dtype=np.float64))
    shape = counts.shape[:-1]
    rows = np.ascontiguousarray(counts, dtype=np.float64).reshape(-1, counts.shape[-1])
    total, dlogd = np.empty(rows.shape[0]), np.empty(rows.shape[0])
    if _integer_sums(rows, _xlogx_table, total, dlogd) >= 0:
        return None
    return total.reshape(shape), dlogd.reshape(shape)


def data_terms(counts: Any) -> tuple[Any, Any]:
    """Compute the data-only terms of the profiled C-stat of spectra ``counts``.

    Parameters
    ----------
    counts : array
        (..., n_chan) counts per noticed channel (numpy or torch); integer-valued numpy
        counts below 2^15 take a table of k ln k (the same values, one compiled pass).

    Returns
    -------
    total : array
        (...,) D = sum_j d_j.
    const : array
        (...,) sum_j d_j ln d_j - D ln D (0 ln 0 = 0).
    """
    xp = array_namespace(counts)
    if isinstance(counts, np.ndarray) and counts.ndim >= 1 and counts.shape[-1] > 0:
        terms = _integer_terms(counts)
        if terms is not None:
            total, dlogd = terms
            return total, dlogd - xlogx(total, xp)
    total = xp.sum(counts, axis=-1)
    return total, xp.sum(xlogx(counts, xp), axis=-1) - xlogx(total, xp)


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

    def take(self, which: Any, xp: Any) -> _Poly:
        """Keep the polynomials ``which`` (an index array) alone, in that order."""
        out = object.__new__(_Poly)
        out.rows = [xp.take(r, which, axis=0) for r in self.rows]
        out.d1_rows = [xp.take(r, which, axis=0) for r in self.d1_rows]
        out.d2_rows = [xp.take(r, which, axis=0) for r in self.d2_rows]
        return out

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
    if bool(xp.any(slow)):  # the few spectra Newton left unconverged, alone
        which = xp.nonzero(slow)[0]
        slow_p = p.take(which, xp)
        lo, hi = xp.take(scan_lo, which, axis=0), xp.take(scan_hi, which, axis=0)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            up = slow_p.d1(mid) >= 0
            hi = xp.where(up, mid, hi)
            lo = xp.where(up, lo, mid)
        t = xp.asarray(t, copy=True)
        t[which] = 0.5 * (lo + hi)
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

    numpy curves take a compiled loop over the spectra (:func:`_fit_rows`, the same steps
    one spectrum at a time: ~0.5 us per spectrum instead of ~6 us of array passes over a
    batch); other namespaces (torch) the array passes of :func:`_fit_profiles_arrays`.

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
    if xp is np and isinstance(grid.x, np.ndarray) and curves.ndim == 2:
        return _fit_profiles_compiled(curves, grid, level)
    return _fit_profiles_arrays(curves, grid, level)


def _fit_profiles_arrays(curves: Any, grid: _DeviceGrid, level: float) -> FitResult:
    """:func:`fit_profiles` as passes over the whole batch, in any array namespace."""
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
    if bool(xp.any(slow)):  # the few spectra Newton left unconverged, alone
        which = xp.nonzero(slow)[0]
        slow_p = p.take(which, xp)
        x0_slow, target_slow = xp.take(x0, which, axis=0), xp.take(target, which, axis=0)
        lo, hi = xp.take(a, which, axis=0), xp.take(b, which, axis=0)
        for _ in range(_BISECT_STEPS):
            mid = 0.5 * (lo + hi)
            v = slow_p.value(mid - x0_slow)
            past = (v >= target_slow) if rising else (v < target_slow)
            hi = xp.where(past, mid, hi)
            lo = xp.where(past, lo, mid)
        x = xp.asarray(x, copy=True)
        x[which] = 0.5 * (lo + hi)
    return x


# --------------------------------------------------------------------------------------------
# the same fit, compiled: one spectrum at a time (numpy)
# --------------------------------------------------------------------------------------------


@compiled(error_model="numpy")
def _horner(c, t):  # pragma: no cover - compiled
    # sum_p c[p] t^p, highest power first (as _Poly._horner)
    out = c[c.size - 1]
    for q in range(c.size - 2, -1, -1):
        out = c[q] + t * out
    return out


@compiled(error_model="numpy")
def _local_poly(curve, start, coef, i, p, d1, d2):  # pragma: no cover - compiled
    # interval i's power coefficients p (m,), and those of its first two derivatives
    m = p.size
    for a in range(m):
        acc = 0.0
        for q in range(m):
            acc += coef[i, a, q] * curve[start[i] + q]
        p[a] = acc
    for a in range(1, m):
        d1[a - 1] = a * p[a]
    for a in range(2, m):
        d2[a - 2] = a * (a - 1) * p[a]


@compiled(error_model="numpy")
def _safe_ratio(num, den):  # pragma: no cover - compiled
    return num / den if den != 0 else 0.0


@compiled(error_model="numpy")
def _minimum_in(p, d1, d2, h, scan, newton_steps, bisect_steps, tol):  # pragma: no cover
    # _interval_minimum for one polynomial: (t, value, interior)
    found = False
    lo, hi = 0.0, h
    prev = _horner(d1, h * scan[0])
    for j in range(scan.size - 1):
        nxt = _horner(d1, h * scan[j + 1])
        if prev < 0 and nxt >= 0:
            found = True
            lo, hi = h * scan[j], h * scan[j + 1]
            break
        prev = nxt
    scan_lo, scan_hi = lo, hi
    t = 0.5 * (lo + hi)
    step = h
    for _ in range(newton_steps):
        g = _horner(d1, t)
        if g >= 0:
            hi = t
        else:
            lo = t
        curv = _horner(d2, t)
        new = t - _safe_ratio(g, curv)
        if not ((curv > 0 and new > lo and new < hi) or new == t):
            new = 0.5 * (lo + hi)
        step, t = new - t, new
    if found and not (abs(step) <= tol * h):
        lo, hi = scan_lo, scan_hi
        for _ in range(bisect_steps):
            mid = 0.5 * (lo + hi)
            if _horner(d1, mid) >= 0:
                hi = mid
            else:
                lo = mid
        t = 0.5 * (lo + hi)
    if not found:
        t = 0.0
    v = _horner(p, t)
    v0, vh = _horner(p, 0.0), _horner(p, h)
    interior = found and v <= v0 and v <= vh
    if not interior:
        return 0.0, v0, False
    return t, v, True


@compiled(error_model="numpy")
def _crossing(p, d1, x0, a, b, target, rising, need, newton_steps, bisect_steps, tol):
    # _bisect for one polynomial (compiled: no coverage)
    lo, hi = a, b
    x = 0.5 * (lo + hi)
    step = b - a
    for _ in range(newton_steps):
        v = _horner(p, x - x0) - target
        past = (v >= 0) if rising else (v < 0)
        if past:
            hi = x
        else:
            lo = x
        new = x - _safe_ratio(v, _horner(d1, x - x0))
        if not ((new > lo and new < hi) or new == x):
            new = 0.5 * (lo + hi)
        step, x = new - x, new
    if need and not (abs(step) <= tol * (b - a)):
        lo, hi = a, b
        for _ in range(bisect_steps):
            mid = 0.5 * (lo + hi)
            v = _horner(p, mid - x0)
            past = (v >= target) if rising else (v < target)
            if past:
                hi = mid
            else:
                lo = mid
        x = 0.5 * (lo + hi)
    return x


@compiled(error_model="numpy")
def _fit_rows(curves, x, start, coef, level, scan, steps, tol, out, flags):  # pragma: no cover
    # one spectrum at a time, the steps of _fit_profiles_arrays; out (n, 4): x, value, x_lo,
    # x_hi; flags (n, 5): at_bound, lo_open, hi_open, finite, convex
    n, n_nodes = curves.shape
    last = n_nodes - 1
    m = coef.shape[2]
    newton, newton_crossing, bisect = steps[0], steps[1], steps[2]
    p = np.empty(m)
    d1 = np.empty(m - 1)
    d2 = np.empty(max(m - 2, 1))
    safe = np.empty(n_nodes)
    for r in range(n):
        finite = True
        for j in range(n_nodes):
            if not np.isfinite(curves[r, j]):
                finite = False
        k = 0
        for j in range(n_nodes):
            safe[j] = curves[r, j] if finite else 0.0
            if safe[j] < safe[k]:
                k = j
        best_x, best_v = x[k], safe[k]
        inside = False
        for side in range(2):
            if side == 0:
                interval, exists = min(max(k - 1, 0), last - 1), k > 0
            else:
                interval, exists = min(max(k, 0), last - 1), k < last
            _local_poly(safe, start, coef, interval, p, d1, d2[: m - 2])
            h = x[interval + 1] - x[interval]
            t, v, interior = _minimum_in(p, d1, d2[: m - 2], h, scan, newton, bisect, tol)
            if exists and interior and v < best_v:
                best_x, best_v = x[interval] + t, v
                inside = True
        at_bound = (k == 0 or k == last) and not inside
        target = best_v + level
        kb = np.searchsorted(x, best_x, side="right") - 1
        kb = min(max(kb, 0), last - 1)
        _local_poly(safe, start, coef, kb, p, d1, d2[: m - 2])
        t_best = best_x - x[kb]
        eps = 1e-4 * (x[kb + 1] - x[kb])
        convex = (_horner(d1, t_best + eps) - _horner(d1, t_best - eps)) > 0
        # the last node at or below kb, and the first above it, that reach the level
        j_lo, j_hi, lo_open = 0, -1, True
        for j in range(n_nodes):
            if safe[j] >= target:
                if j <= kb:
                    j_lo, lo_open = j, False
                elif j_hi < 0:
                    j_hi = j
        hi_open = j_hi < 0
        if hi_open:
            j_hi = last
        _local_poly(safe, start, coef, j_lo, p, d1, d2[: m - 2])
        x_lo = _crossing(
            p,
            d1,
            x[j_lo],
            x[j_lo],
            min(x[j_lo + 1], best_x),
            target,
            False,
            not lo_open,
            newton_crossing,
            bisect,
            tol,
        )
        i_hi = min(max(j_hi - 1, 0), last - 1)
        _local_poly(safe, start, coef, i_hi, p, d1, d2[: m - 2])
        x_hi = _crossing(
            p,
            d1,
            x[i_hi],
            max(x[i_hi], best_x),
            x[j_hi],
            target,
            True,
            not hi_open,
            newton_crossing,
            bisect,
            tol,
        )
        out[r, 0], out[r, 1] = best_x, best_v
        out[r, 2] = x[0] if lo_open else x_lo
        out[r, 3] = x[last] if hi_open else x_hi
        flags[r, 0], flags[r, 1], flags[r, 2] = at_bound, lo_open, hi_open
        flags[r, 3], flags[r, 4] = finite, convex


_SCAN_FRACTIONS = np.array([j / _SCAN for j in range(_SCAN + 1)])


def _fit_profiles_compiled(curves: np.ndarray, grid: _DeviceGrid, level: float) -> FitResult:
    """:func:`fit_profiles` of numpy curves, compiled (see :func:`_fit_rows`)."""
    curves = np.ascontiguousarray(curves, dtype=np.float64)
    n = curves.shape[0]
    out = np.empty((n, 4))
    flags = np.zeros((n, 5), dtype=np.bool_)
    steps = np.array([_NEWTON_STEPS, _NEWTON_STEPS_CROSSING, _BISECT_STEPS], dtype=np.int64)
    _fit_rows(
        curves,
        np.ascontiguousarray(grid.x, dtype=np.float64),
        np.ascontiguousarray(grid.start, dtype=np.int64),
        np.ascontiguousarray(grid.coef, dtype=np.float64),
        float(level),
        _SCAN_FRACTIONS,
        steps,
        _NEWTON_TOL,
        out,
        flags,
    )
    return FitResult(
        out[:, 0].copy(),
        out[:, 1].copy(),
        out[:, 2].copy(),
        out[:, 3].copy(),
        flags[:, 0].copy(),
        flags[:, 1].copy(),
        flags[:, 2].copy(),
        flags[:, 3].copy(),
        flags[:, 4].copy(),
    )
