"""The embedded backend: fakeit + two C-stat fits per spectrum, vectorised over many spectra.

How a batch is computed (see backends/base.py for the contract):

- The response is restricted once to the noticed channels and to the energy rows that reach
  them (:class:`BandResponse`: dense blocks of 64 rows, each over only the channels it
  reaches). Source photon fluxes are computed per temperature, one row at a time, and cached.
- "Templates" are expected counts at norm 1, ``s_j(T) = exposure * fold(flux(T), area)_j``.
  Those of the original response on the fit-temperature grid are computed once.
- The modifier is written as ``m(E) = 1 + sum_j a_j b_j(E; key)``
  (:meth:`Modifier.linear_form`: for the Gaussian family key = (mu, sigma), a = [A]; a family
  that is not linear in any parameter has key = theta, a = [1], b = m - 1). Folds are linear
  in the area, so ``s'(T) = s(T) + sum_j a_j delta_j(T)`` with ``delta_j`` the fold of
  ``flux * area * b_j``: the basis folds are computed once per key (float64), over only the
  energy rows where ``b_j`` is not negligible, and shared by every amplitude (every A of one
  (mu, sigma)).
- The modified fit needs ``ln s'_j(T)`` on the fit grid: ``ln s' = ln s + ln(1 + z)`` with
  ``z = sum_j a_j delta_j / s``, the ratios ``delta_j / s`` held in float32. ``ln(1 + z)``
  is one compiled pass (physics.log1p: a series within 2e-9 of log1p), from float64 folds
  wherever ``s`` is not safely positive (negative RMF elements) or ``1 + z < 1/2``. Against
  an all-float64 computation the float32 ratios move T1' by < 1e-5 (relative),
  the delta-C = 1 interval ends by < 1e-4 of the interval, C(T) by < 3e-4 (``grid.h5`` stores
  C in float32; the conformance tests allow 0.5); T1 and the fakeit spectra are unchanged.
  The profile's one data-model term is then ``sum_j d_j ln s_j + sum_j d_j ln(1 + z_j)``: the
  first half is shared with the original fit.
- fakeit: expected counts through the modified response at T_true (the original fold plus
  ``a_j`` times the basis folds at T_true, float64, cached per key and T_true), Poisson draws
  (physics.poisson: exact, compiled) from the uniforms of the point's own generator
  (``grid.point_rng``, seeded here without building a SeedSequence per point:
  :class:`_PointStreams`), or the expectation itself in asimov mode.
- Each spectrum is fitted twice (original and modified templates): the norm-profiled C-stat
  on the grid is one matrix product (fitstat), then the minimum and the delta-C = 1 interval
  come from the local-polynomial interpolant of the profile in ln T (fitstat).

Bitwise determinism: BLAS results for a row depend on the matrix shape and on the row's
position in it. Every product whose rows are per-point data is therefore done in blocks of a
fixed shape, with each point at a fixed position (its index modulo the block size), and every
per-key fold of a temperature row at a position fixed by that temperature, so a point's results
do not depend on which other points share its batch.

Cost (``benchmarks/bench_backend.py`` counts it): per grid point, the Poisson draws (one per
noticed channel: ~16 ns each with physics.poisson on EPIC-pn's 1305 channels, numpy's
sampler took 40-80 ns), the two profile products (2 x channels x fit temperatures
multiply-adds), the per-key basis folds shared by the points of one (mu, sigma), one
ln(1 + z) per channel and fit temperature per theta shared by its T_true points, and the fit
refinement (compiled, ~1 us per spectrum).
"""

from __future__ import annotations

import dataclasses
import logging
import struct
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc import __version__
from xrmodifier_hpc.backends.base import (
    STATUS_AT_GRID_BOUND,
    STATUS_ERROR_AT_BOUND,
    STATUS_FAILED,
    STATUS_NOT_CONVERGED,
    STATUS_TOO_FEW_COUNTS,
    Backend,
    PointResults,
    SimulationSettings,
)
from xrmodifier_hpc.config.grid import point_rng
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.physics.fitstat import (
    STENCIL,
    FitResult,
    LocalPolyGrid,
    cstat_from_cross,
    cstat_profile,
    data_terms,
    fit_profiles,
)
from xrmodifier_hpc.physics.log1p import log1p_combination
from xrmodifier_hpc.physics.modifiers import Modifier
from xrmodifier_hpc.physics.poisson import poisson_rows, poisson_rows_pcg64
from xrmodifier_hpc.physics.spectra import Model, ModelError

log = logging.getLogger(__name__)

#: rows per fixed-shape block of the per-point products (see the module docstring): per-key
#: temperature folds and the per-theta profiles of points off the grid's T_true axis use
#: BLOCK_ROWS (on the axis: one row per axis temperature), the profiles of a whole batch
#: against the original templates WIDE_BLOCK_ROWS (a larger product is faster)
BLOCK_ROWS = 16
WIDE_BLOCK_ROWS = 64
#: response rows per block of :class:`BandResponse`
FOLD_BLOCK_ROWS = 64
#: area changes below this fraction of the peak area are ignored when folding modified areas
AREA_CHANGE_TOL = 1e-14
#: cached per-temperature fluxes/folds, per-theta and per-key terms (memory stays bounded)
T_CACHE_SIZE = 1024
THETA_CACHE_SIZE = 8
KEY_CACHE_SIZE = 4
#: template floor: a channel the model cannot reach gets this instead of 0 (finite logs)
TEMPLATE_FLOOR = 1e-300
#: the float32 ratio tables serve s'/s = 1 + z above this; below, float64 folds
MIN_RATIO = 0.5
#: templates below this, or |delta / s| above RATIO_MAX, always take the float64 path
REGULAR_MIN = 1e-290
RATIO_MAX = 1e6
#: the basis folds on the fit grid are float32 (rows scaled to a peak of 1): templates below
#: this fraction of their row's peak take the float64 path (float32's normal range is 1e-38)
FLOAT32_REACH = 1e-25
#: m(E) = 1 + sum_j a_j b_j below this somewhere: the family's own evaluation decides whether
#: the modified ARF is negative (far above the rounding of the sum, ~1e-16)
SIGN_CHECK_MARGIN = 1e-9
#: loading the compiled kernels took longer than this: numba compiled them (said once)
KERNELS_SAID_AFTER_S = 2.0
#: channels per float64 product of the exact path (bounds the memory)
EXACT_CHUNK = 256


class _LRU(OrderedDict):
    """A small least-recently-used cache; ``evicted(value)`` is called for each value dropped."""

    def __init__(self, size: int, evicted: Callable[[Any], None] | None = None) -> None:
        super().__init__()
        self.size = size
        self.evicted = evicted

    def get_or(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.size:
            _, dropped = self.popitem(last=False)
            if self.evicted is not None:
                self.evicted(dropped)
        return value


def _resolve_engine(engine: str, device: str) -> tuple[Any, Any]:
    """(namespace, torch device or None) for ``engine`` numpy|torch and device auto|cpu|cuda."""
    if engine == "numpy":
        import array_api_compat.numpy as xp

        return xp, None
    if engine != "torch":
        raise UserError(f"unknown engine {engine!r}: use 'numpy' or 'torch'")
    try:
        import array_api_compat.torch as xp
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a dependency
        raise UserError(f"engine 'torch' needs PyTorch ({exc})") from None
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' requested but torch sees no CUDA device; use 'auto'")
    return xp, torch.device(device)


class BandResponse:
    """A response restricted to the noticed channels, stored as blocks of energy rows.

    Each block of ``block_rows`` rows keeps only the contiguous range of channels its rows
    reach, so a fold costs about the number of non-zero elements, not rows x channels (the
    EPIC-pn matrix over 0.5-7 keV is 26% non-zero, ACIS 59%), while each block is still one
    dense BLAS product.

    Parameters
    ----------
    dense : numpy.ndarray
        (K, n_chan) the redistribution matrix on the noticed channels (rows: energy bins).
    block_rows : int
        Rows per block.
    """

    def __init__(self, dense: np.ndarray, block_rows: int = FOLD_BLOCK_ROWS) -> None:
        dense = np.asarray(dense, dtype=np.float64)
        self.n_rows, self.n_channels = dense.shape
        self.nonzero = int(np.count_nonzero(dense))
        self._blocks: list[tuple[int, int, int, int, np.ndarray]] = []
        self._blocks32: list[tuple[int, int, int, int, np.ndarray]] = []
        reach = dense != 0
        for r0 in range(0, self.n_rows, block_rows):
            r1 = min(r0 + block_rows, self.n_rows)
            cols = np.flatnonzero(reach[r0:r1].any(axis=0))
            if cols.size:
                c0, c1 = int(cols[0]), int(cols[-1]) + 1
                sub = np.ascontiguousarray(dense[r0:r1, c0:c1])
                self._blocks.append((r0, r1, c0, c1, sub))
                self._blocks32.append((r0, r1, c0, c1, sub.astype(np.float32)))

    def _parts(
        self, lo: int, hi: int, single: bool = False
    ) -> Iterator[tuple[int, int, int, int, np.ndarray]]:
        for r0, r1, c0, c1, sub in self._blocks32 if single else self._blocks:
            a, b = max(r0, lo), min(r1, hi)
            if a < b:
                yield a, b, c0, c1, sub[a - r0 : b - r0]

    def reach(self, rows: slice) -> slice:
        """Give the channels that the energy rows ``rows`` can reach.

        Parameters
        ----------
        rows : slice
            Contiguous energy rows.

        Returns
        -------
        slice
            The channel range (of the noticed channels) the blocks holding those rows span;
            empty when ``rows`` is.
        """
        parts = [(c0, c1) for _, _, c0, c1, _ in self._parts(rows.start, rows.stop)]
        if not parts:
            return slice(0, 0)
        return slice(min(p[0] for p in parts), max(p[1] for p in parts))

    def multiply_adds(self, rows: slice | None = None) -> int:
        """Count the multiply-adds of folding one row over some energy rows.

        Parameters
        ----------
        rows : slice, optional
            The contiguous energy rows folded (default: all K).

        Returns
        -------
        int
            Multiply-adds per folded row: the sum over the blocks of (rows in ``rows``) x
            (channels the block reaches).
        """
        lo, hi = (0, self.n_rows) if rows is None else (rows.start, rows.stop)
        return sum((b - a) * (c1 - c0) for a, b, c0, c1, _ in self._parts(lo, hi))

    def fold(self, x: np.ndarray, rows: slice | None = None, single: bool = False) -> np.ndarray:
        """Fold rows of per-energy values through the matrix.

        Parameters
        ----------
        x : numpy.ndarray
            (m, n) values per energy row (counts per bin) on the rows ``rows`` (n = the
            length of ``rows``).
        rows : slice, optional
            The contiguous energy rows ``x`` covers (default: all K).
        single : bool
            Fold in float32 (relative error ~1e-7, twice as fast).

        Returns
        -------
        numpy.ndarray
            (m, n_chan) expected counts per noticed channel (float32 when ``single``). For a
            fixed ``x`` shape and ``rows`` the arithmetic is always the same (bitwise
            reproducible).
        """
        lo, hi = (0, self.n_rows) if rows is None else (rows.start, rows.stop)
        dtype = np.float32 if single else np.float64
        x = np.asarray(x, dtype=dtype)
        out = np.zeros((x.shape[0], self.n_channels), dtype=dtype)
        for a, b, c0, c1, sub in self._parts(lo, hi, single):
            out[:, c0:c1] += x[:, a - lo : b - lo] @ sub
        return out


@dataclass(frozen=True)
class Fits:
    """Fits of m spectra (numpy arrays).

    Attributes
    ----------
    t_fit : numpy.ndarray
        (m,) best-fit temperature, keV.
    err : numpy.ndarray
        (m, 2) distances from the best fit down to the lower and up to the upper end of the
        delta-C = 1 interval, keV.
    cstat : numpy.ndarray
        (m,) C at the best fit.
    curves : numpy.ndarray
        (m, n_T) the profile C(T) on the fit grid.
    status : numpy.ndarray
        (m,) uint8 status bits (backends.base.STATUS_*).
    """

    t_fit: np.ndarray
    err: np.ndarray
    cstat: np.ndarray
    curves: np.ndarray
    status: np.ndarray


class SpectrumFitter:
    """C-stat fits of spectra through one instrument and model, kT and norm free.

    Spectra passed to the methods hold the counts of the selected channels only (``mask``).

    Parameters
    ----------
    instrument : Instrument
        ARF and RMF.
    model : Model
        The source model.
    params : mapping of str to float
        Values of the model's frozen parameters (every parameter but the temperature).
    band : tuple of float
        (low, high) keV: channels selected as XSPEC's ``ignore **-lo hi-**``.
    exposure : float
        s.
    tgrid : numpy.ndarray
        (n_T,) keV, increasing: the grid of the exact profile.
    temperature_param : str
        The model parameter on the temperature axis.
    engine, device : str
        ``numpy`` or ``torch`` (``auto``, ``cpu``, ``cuda``) for the profile products and fits.
    min_counts : float
        Spectra with fewer noticed counts are flagged ``too_few_counts``, not fitted.
    usable : numpy.ndarray, optional
        (n_chan,) bool: channels that may be noticed (XSPEC leaves out bad QUALITY).

    Attributes
    ----------
    mask : numpy.ndarray
        (n_channels,) bool, the noticed channels of the instrument.
    channels : numpy.ndarray
        Their indices (n_chan,).
    rows : numpy.ndarray
        (K,) the instrument's energy rows that reach a noticed channel.
    area : numpy.ndarray
        (K,) the ARF on those rows, cm^2.
    band_response : BandResponse
        The matrix on (rows, channels).
    grid_flux : numpy.ndarray
        (n_T, K) exposure x photon flux per energy row at norm 1 on ``tgrid``.
    templates : numpy.ndarray
        (n_T, n_chan) expected counts at norm 1 on ``tgrid`` through the original response.
    log_templates, log_totals
        Engine arrays: ln of the templates (floored at 1e-300) and of their sums.
    xgrid : LocalPolyGrid
        The interpolant's tables on ln(tgrid).

    Raises
    ------
    ModelError
        Missing frozen parameters, a grid outside the model's range, non-finite model values.
    UserError
        No usable channel, or no energy bin reaching the band.
    """

    def __init__(
        self,
        instrument: Instrument,
        model: Model,
        params: Mapping[str, float],
        band: tuple[float, float],
        exposure: float,
        tgrid: np.ndarray,
        temperature_param: str = "kT",
        engine: str = "numpy",
        device: str = "auto",
        min_counts: float = 0.0,
        usable: np.ndarray | None = None,
    ) -> None:
        self.instrument = instrument
        self.model = model
        self.params = dict(params)
        self.temperature_param = temperature_param
        self.exposure = float(exposure)
        self.min_counts = float(min_counts)
        self.tgrid = np.asarray(tgrid, dtype=np.float64)
        if temperature_param not in model.param_names:
            raise ModelError(f"model {model.expression!r} has no parameter {temperature_param!r}")
        frozen = [p for p in model.param_names if p != temperature_param]
        missing = [p for p in frozen if p not in self.params]
        if missing:
            raise ModelError(f"give values for the frozen parameter(s) {', '.join(missing)}")
        model.check_params({k: v for k, v in self.params.items() if k in frozen})
        t_lo, t_hi = model.param_range(temperature_param)
        if self.tgrid.min() < t_lo or self.tgrid.max() > t_hi:
            raise ModelError(
                f"the fit-temperature grid spans {self.tgrid.min():g}-{self.tgrid.max():g} keV "
                f"but {model.expression!r} allows {temperature_param} in {t_lo:g}-{t_hi:g}: "
                "restrict the grid (simulation.fit_tgrid)"
            )
        if self.tgrid.size < STENCIL or np.any(np.diff(self.tgrid) <= 0) or self.tgrid.min() <= 0:
            raise ModelError(
                f"the fit-temperature grid needs at least {STENCIL} increasing values > 0 keV"
            )

        self.mask = instrument.band_mask(*band)
        if usable is not None:
            self.mask &= np.asarray(usable, dtype=bool)
            if not self.mask.any():
                raise UserError("no usable channel (QUALITY) in the band")
        self.channels = np.flatnonzero(self.mask)
        dense = instrument.matrix[:, self.channels].toarray()
        self.rows = np.flatnonzero(np.any(dense != 0, axis=1))
        if self.rows.size == 0:
            raise UserError(
                f"no energy bin of the response reaches the band {band[0]:g}-{band[1]:g} keV",
                str(instrument.rmf_path) if instrument.rmf_path else None,
            )
        self._response = np.ascontiguousarray(dense[self.rows])  # (K, n_chan)
        self.band_response = BandResponse(self._response)
        self.area = np.asarray(instrument.area, dtype=np.float64)[self.rows]
        self.xgrid = LocalPolyGrid.build(np.log(self.tgrid))

        # the model on the rows that reach the band only (each bin's flux depends on its own
        # edges), its parts that do not depend on the temperature computed once
        self._flux_at = model.flux_function(
            instrument.energ_lo[self.rows],
            instrument.energ_hi[self.rows],
            self.params,
            temperature_param,
        )
        self._flux_cache = _LRU(T_CACHE_SIZE)
        self._fold_cache = _LRU(T_CACHE_SIZE)
        self._total_cache = _LRU(T_CACHE_SIZE)
        self.grid_flux = np.stack([self.flux(t) for t in self.tgrid])  # (n_T, K)
        if not np.all(np.isfinite(self.grid_flux)):
            raise ModelError("the model gave non-finite values")
        self.templates = (self.grid_flux * self.area) @ self._response
        self.xp, self.device = _resolve_engine(engine, device)
        self._dev_xgrid = self.xgrid.to(self.xp, self.to_engine(np.zeros(1)))
        self.log_templates, self.log_totals = self.log_templates_of(self.templates)

    # ---- engine arrays ---------------------------------------------------------------------

    def to_engine(self, a: np.ndarray) -> Any:
        """Convert a numpy array to an engine array.

        Parameters
        ----------
        a : numpy.ndarray
            Any shape and dtype.

        Returns
        -------
        array
            C-contiguous numpy, or a torch tensor on the fitter's device; same shape and dtype.
        """
        if self.device is None:
            return np.ascontiguousarray(a)
        return self.xp.asarray(np.ascontiguousarray(a), device=self.device)

    def to_numpy(self, a: Any) -> np.ndarray:
        """Convert an engine array to numpy.

        Parameters
        ----------
        a : array
            numpy array or torch tensor (any device).

        Returns
        -------
        numpy.ndarray
            The same values, shape and dtype, on the host.
        """
        if self.device is None:
            return np.asarray(a)
        return a.detach().cpu().numpy()

    def log_templates_of(self, templates: np.ndarray) -> tuple[Any, Any]:
        """Take the logarithms of templates for the profile products.

        Parameters
        ----------
        templates : numpy.ndarray
            (n_T, n_chan) expected counts at norm 1; each floored at 1e-300 first (a channel
            the model cannot reach).

        Returns
        -------
        tuple
            Engine arrays ln s (n_T, n_chan) and ln S (n_T,), S the sum over channels.
        """
        safe = np.maximum(templates, TEMPLATE_FLOOR)
        return self.to_engine(np.log(safe)), self.to_engine(np.log(safe.sum(axis=1)))

    # ---- folds -----------------------------------------------------------------------------

    def flux(self, t: float) -> np.ndarray:
        """Exposure x photon flux per noticed energy row at norm 1.

        Parameters
        ----------
        t : float
            Temperature, keV.

        Returns
        -------
        numpy.ndarray
            (K,) s x photons cm^-2 per energy bin; computed one temperature at a time (so the
            bits never depend on a batch) and cached.
        """
        t = float(t)

        def make() -> np.ndarray:
            return self.exposure * self._flux_at(t)

        return self._flux_cache.get_or(t, make)

    def fold_original(self, t: float) -> np.ndarray:
        """Fold the model at one temperature through the original response.

        Parameters
        ----------
        t : float
            Temperature, keV.

        Returns
        -------
        numpy.ndarray
            (n_chan,) expected counts per noticed channel at norm 1 (exposure x photon flux
            cm^-2 folded through ARF cm^2 and RMF), cached per temperature.
        """
        t = float(t)
        return self._fold_cache.get_or(
            t, lambda: self.band_response.fold((self.flux(t) * self.area)[None, :])[0]
        )

    def total_original(self, t: float) -> float:
        """Sum :meth:`fold_original` over the noticed channels.

        Parameters
        ----------
        t : float
            Temperature, keV.

        Returns
        -------
        float
            Expected noticed counts at norm 1 through the original response (cached).
        """
        t = float(t)
        return self._total_cache.get_or(t, lambda: float(self.fold_original(t).sum()))

    # ---- fitting ---------------------------------------------------------------------------

    def profiles(
        self,
        counts: Any,
        log_templates: Any = None,
        log_totals: Any = None,
        terms: tuple[Any, Any] | None = None,
    ) -> Any:
        """Compute the norm-profiled C-stat of spectra on the fit-temperature grid.

        Parameters
        ----------
        counts : array
            (m, n_chan) engine array of counts in the noticed channels.
        log_templates : array, optional
            (n_T, n_chan) engine array ln s_j(T_k) (default: the original response's).
        log_totals : array, optional
            (n_T,) engine array ln S(T_k), S = sum_j s_j (default: the original response's).
        terms : tuple of arrays, optional
            The spectra's :func:`~xrmodifier_hpc.physics.fitstat.data_terms` when known.

        Returns
        -------
        array
            (m, n_T) engine array of C(T_k) (fitstat's module docstring gives the formula).
        """
        lt = self.log_templates if log_templates is None else log_templates
        lS = self.log_totals if log_totals is None else log_totals
        return cstat_profile(counts, lt, lS, terms)

    def finish(self, curves: Any, totals: np.ndarray) -> Fits:
        """Refine and bracket the minimum of each profile; flag as base.STATUS_* says.

        Parameters
        ----------
        curves : array
            (m, n_T) engine array of C on the grid.
        totals : numpy.ndarray
            (m,) noticed counts of the spectra (for ``min_counts``).

        Returns
        -------
        Fits
        """
        res: FitResult = fit_profiles(curves, self._dev_xgrid)
        npy = self.to_numpy
        x, x_lo, x_hi = npy(res.x), npy(res.x_lo), npy(res.x_hi)
        cstat = npy(res.value)
        status = np.zeros(x.shape, dtype=np.uint8)
        status[npy(res.at_bound)] |= STATUS_AT_GRID_BOUND
        status[npy(res.lo_open) | npy(res.hi_open)] |= STATUS_ERROR_AT_BOUND
        t_fit = np.exp(x)
        err = np.stack([t_fit - np.exp(x_lo), np.exp(x_hi) - t_fit], axis=-1)
        # the interpolant's minimum is found to machine precision; a profile that is not
        # convex there (flat or broken) has no trustworthy minimum
        convex = npy(res.convex)
        status[~convex & (status & STATUS_AT_GRID_BOUND == 0)] |= STATUS_NOT_CONVERGED
        failed = ~npy(res.finite)
        few = (totals < self.min_counts) | (totals <= 0)
        status[failed] |= STATUS_FAILED
        status[few] = STATUS_TOO_FEW_COUNTS | (status[few] & STATUS_FAILED)
        bad = failed | few
        t_fit[bad] = np.nan
        err[bad] = np.nan
        cstat[bad] = np.nan
        curves_np = np.asarray(npy(curves), dtype=np.float64)
        if bad.any():  # NaN where not fitted, on a copy (the caller's array stays as it was)
            curves_np = curves_np.copy()
            curves_np[bad] = np.nan
        return Fits(t_fit, err, cstat, curves_np, status)

    def fit(self, counts: np.ndarray) -> Fits:
        """Fit spectra with the original response, kT and norm free.

        Parameters
        ----------
        counts : numpy.ndarray
            (m, n_chan) or (n_chan,) counts in the noticed channels.

        Returns
        -------
        Fits
            Best fits, delta-C = 1 intervals, C at the minimum, profiles and status of the m
            spectra.
        """
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        curves = self.profiles(self.to_engine(counts))
        return self.finish(curves, counts.sum(axis=1))

    def exact_profile(self, counts: np.ndarray, temps: np.ndarray) -> np.ndarray:
        """Compute the profiled C-stat at arbitrary temperatures from exact folds.

        Parameters
        ----------
        counts : numpy.ndarray
            (m, n_chan) or (n_chan,) counts in the noticed channels.
        temps : numpy.ndarray
            (n,) temperatures, keV (each folded through the original response, not
            interpolated; the norm is profiled at each).

        Returns
        -------
        numpy.ndarray
            (m, n) C(T).
        """
        counts = np.asarray(counts, dtype=np.float64)
        templ = np.stack([self.fold_original(t) for t in np.atleast_1d(temps)])
        templ = np.maximum(templ, TEMPLATE_FLOOR)
        curves = cstat_profile(np.atleast_2d(counts), np.log(templ), np.log(templ.sum(axis=1)))
        return np.asarray(curves)

    def best_norm(self, counts: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Compute the profiled norm of spectra at given temperatures.

        Parameters
        ----------
        counts : numpy.ndarray
            (m, n_chan) counts in the noticed channels.
        t : numpy.ndarray
            (m,) temperatures, keV (NaN gives NaN).

        Returns
        -------
        numpy.ndarray
            (m,) the norm D / S(T) that minimises C at T: D the spectrum's counts, S the
            expected noticed counts at norm 1 (model units, e.g. XSPEC's bremss norm).
        """
        counts = np.atleast_2d(counts)
        out = np.full(counts.shape[0], np.nan)
        for i, ti in enumerate(np.atleast_1d(t)):
            if np.isfinite(ti):
                out[i] = counts[i].sum() / self.fold_original(ti).sum()
        return out


# --------------------------------------------------------------------------------------------
# per-point random streams
# --------------------------------------------------------------------------------------------

# numpy's SeedSequence (O'Neill's seed_seq) and PCG64 seeding constants
_INIT_A, _MULT_A = 0x43B0D7E5, 0x931E8875
_INIT_B, _MULT_B = 0x8B51F9DD, 0x58F38DED
_MIX_L, _MIX_R = 0xCA01F9DD, 0x4973F715
_M32 = (1 << 32) - 1
_PCG_MULT_WORDS = (np.uint64(2549297995355413924), np.uint64(4865540595714422341))
_LOW32, _SHIFT32 = np.uint64(_M32), np.uint64(32)


def _mul64(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Multiply uint64 arrays into 128-bit products: (high, low) words (32-bit halves)."""
    a0, a1 = a & _LOW32, a >> _SHIFT32
    b0, b1 = b & _LOW32, b >> _SHIFT32
    p01, p10 = a0 * b1, a1 * b0
    mid = ((a0 * b0) >> _SHIFT32) + (p10 & _LOW32) + (p01 & _LOW32)
    high = a1 * b1 + (p10 >> _SHIFT32) + (p01 >> _SHIFT32) + (mid >> _SHIFT32)
    return high, a * b


def _mul128(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.uint64, np.uint64]
) -> tuple[np.ndarray, np.ndarray]:
    """Multiply 128-bit numbers mod 2^128, each as (high, low) uint64 words."""
    high, low = _mul64(a[1], np.full_like(a[1], b[1]))
    return high + a[1] * b[0] + a[0] * b[1], low


def _add128(
    a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Add 128-bit numbers mod 2^128, each as (high, low) uint64 words."""
    low = a[1] + b[1]
    return a[0] + b[0] + (low < a[1]).astype(np.uint64), low


def _hash_constants(start: int, mult: int, n: int) -> list[int]:
    out = [start]
    for _ in range(n):
        out.append((out[-1] * mult) & _M32)
    return out


class _PointStreams:
    """The generators of :func:`grid.point_rng` (seed, k, stream), built faster.

    ``point_rng`` builds a SeedSequence and a PCG64 per point (~25 us, a tenth of a point's
    budget). This class computes the same PCG64 states for a batch of indices at once (numpy's
    seed mixing, vectorised over the batch) and sets them on one reusable generator. It checks
    itself against ``point_rng`` when built and falls back to it if numpy's seeding ever
    differs, or for values that do not fit one 32-bit word.
    """

    def __init__(self, seed: int, stream: int) -> None:
        self.seed, self.stream = int(seed), int(stream)
        self._bitgen = np.random.PCG64(0)
        self._gen = np.random.Generator(self._bitgen)
        self._hash_a = _hash_constants(_INIT_A, _MULT_A, 16)
        self._hash_b = _hash_constants(_INIT_B, _MULT_B, 8)
        self.fast = 0 <= self.seed <= _M32 and 0 <= self.stream <= _M32
        if self.fast:
            probe = np.array([0, 1, 7, 123456789, _M32], dtype=np.int64)
            ours = self._states(probe)
            for k, (state, inc) in zip(probe, ours):
                ref = point_rng(self.seed, int(k), self.stream).bit_generator.state["state"]
                if ref != {"state": state, "inc": inc}:
                    log.debug("fast point streams disagree with point_rng: using point_rng")
                    self.fast = False
                    break

    def _words(self, index: np.ndarray) -> np.ndarray:
        """PCG64 state and increment of SeedSequence([seed, stream, k]) for each k in ``index``.

        (n, 4) uint64 [state >> 64, state mod 2^64, inc >> 64, inc mod 2^64]: numpy's seed
        mixing and PCG64's seeding (state = (inc + seed) x multiplier + inc, mod 2^128),
        vectorised over the batch in 64-bit halves.
        """
        u32 = np.uint32
        ha = self._hash_a
        calls = iter(range(16))

        def hashmix(v: np.ndarray) -> np.ndarray:
            k = next(calls)
            v = (v ^ u32(ha[k])) * u32(ha[k + 1])
            return v ^ (v >> u32(16))

        def mix(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            r = u32(_MIX_L) * x - u32(_MIX_R) * y
            return r ^ (r >> u32(16))

        n = index.size
        entropy = [
            np.full(n, self.seed, dtype=np.uint32),
            np.full(n, self.stream, dtype=np.uint32),
            index.astype(np.uint32),
        ]
        pool = [hashmix(e) for e in entropy] + [hashmix(np.zeros(n, dtype=np.uint32))]
        for src in range(4):
            for dst in range(4):
                if src != dst:
                    pool[dst] = mix(pool[dst], hashmix(pool[src]))
        hb = self._hash_b
        words = []
        for i in range(8):
            v = (pool[i % 4] ^ u32(hb[i])) * u32(hb[i + 1])
            words.append((v ^ (v >> u32(16))).astype(np.uint64))
        seed_hi, seed_lo, inc_hi, inc_lo = (
            words[2 * i] | (words[2 * i + 1] << np.uint64(32)) for i in range(4)
        )
        one, shift = np.uint64(1), np.uint64(63)
        inc_hi, inc_lo = (inc_hi << one) | (inc_lo >> shift), (inc_lo << one) | one
        state = _add128((inc_hi, inc_lo), (seed_hi, seed_lo))
        state = _add128(_mul128(state, _PCG_MULT_WORDS), (inc_hi, inc_lo))
        return np.stack([state[0], state[1], inc_hi, inc_lo], axis=1)

    def _states(self, index: np.ndarray) -> list[tuple[int, int]]:
        """PCG64 (state, inc) of SeedSequence([seed, stream, k]) for each k in ``index``."""
        return [
            ((s_hi << 64) | s_lo, (i_hi << 64) | i_lo)
            for s_hi, s_lo, i_hi, i_lo in self._words(index).tolist()
        ]

    def _computable(self, index: np.ndarray) -> bool:
        """Tell whether every point of ``index`` gets its state here (else point_rng)."""
        return self.fast and not (index.size and (index.min() < 0 or index.max() > _M32))

    def states(self, index: np.ndarray) -> list[tuple[int, int] | None]:
        """Compute the PCG64 (state, inc) of each point of ``index`` (None: use point_rng)."""
        index = np.asarray(index, dtype=np.int64)
        return self._states(index) if self._computable(index) else [None] * index.size

    def words(self, index: np.ndarray) -> np.ndarray | None:
        """Give the PCG64 states of the points ``index`` as words for the compiled sampler.

        Returns (n, 4) uint64 [state >> 64, state mod 2^64, inc >> 64, inc mod 2^64], or
        None when the points take point_rng itself (see :meth:`states`).
        """
        index = np.asarray(index, dtype=np.int64)
        return self._words(index) if self._computable(index) else None

    def generator(self, k: int, state: tuple[int, int] | None) -> np.random.Generator:
        """Return the generator of point ``k`` from its :meth:`states` entry.

        The fast path returns the SAME object, re-seeded: use it before asking for the next.
        """
        if state is None:
            return point_rng(self.seed, int(k), self.stream)
        self._bitgen.state = {
            "bit_generator": "PCG64",
            "state": {"state": state[0], "inc": state[1]},
            "has_uint32": 0,
            "uinteger": 0,
        }
        return self._gen

    def generators(self, index: np.ndarray) -> Iterator[np.random.Generator]:
        """Yield one generator per point of ``index``, in order.

        Each draws exactly what ``point_rng(seed, k, stream)`` draws (see :meth:`generator`).
        """
        index = np.asarray(index, dtype=np.int64)
        for k, state in zip(index.tolist(), self.states(index), strict=True):
            yield self.generator(k, state)


# --------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------


@dataclass
class _KeyTerms:
    """Per-key quantities (one (mu, sigma) of the Gaussian family).

    The energy-row span where a basis function is not negligible, ``weights`` = area x basis
    on it (J, span) cm^2, the split of the basis folds on the fit grid (delta, (J, n_T,
    n_chan)) into the float32 path (``ratio`` = delta / s, float32, zero elsewhere) and the
    float64 one (``irregular``, delta folded exactly there), and the folds at T_true
    (``folds``: T -> (J, n_chan)).
    """

    span: slice
    weights: np.ndarray
    chan: slice
    ratio: np.ndarray
    ratio_range: tuple[np.ndarray, np.ndarray]  # (J,) least and greatest ``ratio``
    totals_base: np.ndarray  # (n_T,) sum of the (floored) templates off ``irregular``
    delta_totals_base: np.ndarray  # (J, n_T) sum of ``delta`` off ``irregular``
    irregular: np.ndarray  # flat indices into (n_T, n_chan)
    irregular_rows: np.ndarray  # their T index
    irregular_cols: np.ndarray  # their channel, counted from ``chan.start``
    irregular_templates: np.ndarray  # s there
    irregular_delta: np.ndarray  # (J, n_irregular) delta there
    irregular_logs: np.ndarray  # ln max(s, floor) there
    folds: _LRU
    basis: np.ndarray  # (J, n_E) b_j at every energy of the ARF (for the sign check of m)
    wide: np.ndarray | None  # J = 1: flat indices of ``ratio`` where |ratio| >= 1/2
    axis_folds: np.ndarray | None = None  # (n_axis, J, n_chan) the folds at the grid's T_true


@dataclass
class _ThetaTerms:
    """Per-theta quantities.

    Amplitudes (J,), ln(s'/s) on the channels ``key.chan`` (engine, (n_T, n_chan_key)) and
    ln S' (engine, (n_T,)).
    """

    key: _KeyTerms
    amplitudes: np.ndarray
    log_ratio: Any
    log_totals: Any
    buffer: np.ndarray  # the flat float64 buffer ``log_ratio`` is a view of (numpy engine)


class NativeBackend(Backend):
    """fakeit + C-stat fits in numpy (or torch), vectorised over a batch of grid points.

    Parameters
    ----------
    instrument : Instrument
        The target instrument (its ARF is modified).
    model : Model
        The source model.
    modifier : Modifier
        The ARF modifier family.
    settings : SimulationSettings
        Exposure, band, realisations, seed, fit grid, counts/norm, mode, engine.
    fitter : SpectrumFitter, optional
        The fitter of another native backend of the same instrument, model and fit settings
        (:meth:`derive`), shared with it; by default one is built.
    """

    name = "native"
    #: the settings :meth:`derive` may change: the fitter does not depend on them
    DERIVABLE = frozenset({"mode", "realisations", "seed", "stream", "curves", "counts", "norm"})

    def __init__(
        self,
        instrument: Instrument,
        model: Model,
        modifier: Modifier,
        settings: SimulationSettings,
        fitter: SpectrumFitter | None = None,
    ) -> None:
        self.instrument = instrument
        self.model = model
        self.modifier = modifier
        self.settings = settings
        params = {
            k: v for k, v in settings.source_params.items() if k != settings.temperature_param
        }
        if fitter is None:
            fitter = SpectrumFitter(
                instrument,
                model,
                params,
                tuple(settings.band),
                settings.exposure,
                settings.fit_tgrid,
                temperature_param=settings.temperature_param,
                engine=settings.engine,
                device=settings.device,
                min_counts=settings.min_counts,
            )
        self.fitter = fitter
        f = self.fitter
        self._safe_templates = np.maximum(f.templates, TEMPLATE_FLOOR)
        self._log_safe_templates = np.log(self._safe_templates)
        #: the response's row sums over the noticed channels: a fold's total is a dot product
        self._row_sums = f._response.sum(axis=1)
        #: template elements the float32 path may take (see ``_make_key``): 1/s there, 0 at
        #: the others, whose (T index, channel) are listed
        s = f.templates
        float32_ok = (s > REGULAR_MIN) & (s > FLOAT32_REACH * s.max(axis=1)[:, None])
        with np.errstate(divide="ignore"):
            self._inv_templates32 = np.where(float32_ok, 1.0 / s, 0.0).astype(np.float32)
        self._irregular_t, self._irregular_c = np.nonzero(~float32_ok)
        #: the response by channel (n_chan, K), for the exact path's channel gathers
        self._response_t = np.ascontiguousarray(f._response.T)
        #: flat float64 buffers of n_T x n_chan for the thetas' ln(s'/s) tables, handed back by
        #: the theta cache as it drops a theta: memory touched once (on a virtual machine a
        #: fresh page costs ~3 us on first touch, more than the arithmetic of a table)
        buffers: list[np.ndarray] = []  # (no reference back to the backend: no cycle)
        self._log_ratio_buffers = buffers
        self._theta_cache = _LRU(THETA_CACHE_SIZE, lambda tt: buffers.append(tt.buffer))
        self._key_cache = _LRU(KEY_CACHE_SIZE)
        self._streams = _PointStreams(settings.seed, settings.stream)
        #: work done so far, for the benchmarks' cost model: multiply-adds of the basis folds
        #: on the fit grid (``fold_grid``) and at T_true (``fold_true``) and of the profile
        #: products (``profile``), float32 logarithms (``log_ratio``), Poisson draws
        self.work: Counter[str] = Counter()
        self.t_range = model.param_range(settings.temperature_param)
        #: the grid's true temperatures (keV), folded together per key (see ``_folds``)
        axis = () if settings.t_true_axis is None else np.unique(settings.t_true_axis).tolist()
        #: temperature -> its position on the axis
        self._t_axis = {t: a for a, t in enumerate(axis)} if len(axis) <= T_CACHE_SIZE // 2 else {}
        self._axis_original_folds: np.ndarray | None = None
        #: float64 scratch of ``_log_ratio`` (z, n_T x n_chan_key values), reused between thetas
        self._scratch: np.ndarray | None = None
        self._load_kernels()

    def _load_kernels(self) -> None:
        """Compile (or load from numba's cache) the kernels a batch calls, on tiny inputs.

        With the argument types of :meth:`run`, so the first batch compiles nothing: the
        first time ever that is ~10 s, which ``simulate``'s first progress line had counted
        as computing (a new user saw "ETA 14m00s" for an 18 s run).
        """
        f = self.fitter
        start = time.perf_counter()
        poisson_rows_pcg64(np.ones((1, 1)), np.ones((1, 4), dtype=np.uint64))
        two = np.full((1, 1, 1), 2.0, dtype=np.float32)  # z = 2: the series and log1p both
        log1p_combination(two, np.ones(1), np.empty((1, 1)), None, (two[0, 0], two[0, 0]))
        data_terms(np.zeros((1, 1, 2)))
        if isinstance(f._dev_xgrid.x, np.ndarray):  # the numpy engine's compiled fit
            fit_profiles(np.zeros((1, f.tgrid.size)), f._dev_xgrid)
        seconds = time.perf_counter() - start
        if seconds > KERNELS_SAID_AFTER_S:
            log.info("numba compiled the kernels in %.1f s (once: cached for later runs)", seconds)

    def version(self) -> str:
        """Give the version string recorded in artefacts' provenance.

        Returns
        -------
        str
            ``native <package version> (engine <numpy|torch>)``.
        """
        return f"native {__version__} (engine {self.settings.engine})"

    def derive(self, **overrides: Any) -> NativeBackend | None:
        """Make a backend with some settings replaced that shares this one's fitter.

        The response restricted to the band, the source fluxes and the templates on the fit
        grid are computed once for both (``simulate``'s off-grid check points reuse the
        grid's: ``mode="asimov"``, their own ``stream``).

        Parameters
        ----------
        **overrides
            New values of settings in :attr:`DERIVABLE` (mode, realisations, seed, stream,
            curves, counts, norm).

        Returns
        -------
        NativeBackend or None
            The new backend; None when a setting the fitter depends on would change (build a
            new backend then).
        """
        if not set(overrides) <= self.DERIVABLE:
            return None
        settings = dataclasses.replace(self.settings, **overrides)
        return NativeBackend(self.instrument, self.model, self.modifier, settings, self.fitter)

    # ---- per key and per theta -------------------------------------------------------------

    def _key(self, key: tuple[float, ...]) -> _KeyTerms:
        return self._key_cache.get_or(key, lambda: self._make_key(key))

    def _make_key(self, key: tuple[float, ...]) -> _KeyTerms:
        f = self.fitter
        full_basis = self.modifier.linear_basis(self.instrument.e_mid, key)  # (J, n_E)
        basis = full_basis[:, f.rows]  # (J, K)
        w = basis * f.area
        n_j = w.shape[0]
        moved = np.flatnonzero(
            np.any(np.abs(w) > AREA_CHANGE_TOL * max(f.area.max(), 1e-300), axis=0)
        )
        span = slice(int(moved[0]), int(moved[-1]) + 1) if moved.size else slice(0, 0)
        weights = np.ascontiguousarray(w[:, span])
        n_t, n_chan = f.templates.shape
        # the basis folds in float32, each row scaled to a peak of 1 (so float32's range
        # never matters); their sums over the channels exactly, in float64, from the
        # matrix's row sums
        chan = f.band_response.reach(span)
        delta32 = np.zeros((n_j, n_t, chan.stop - chan.start), dtype=np.float32)
        scale = np.ones((n_j, n_t), dtype=np.float32)
        delta_totals = np.zeros((n_j, n_t))
        if moved.size:
            for j in range(n_j):
                x = f.grid_flux[:, span] * weights[j]
                peak = np.abs(x).max(axis=1)
                peak[peak == 0] = 1.0
                scale[j] = peak
                folded = f.band_response.fold(x / peak[:, None], span, single=True)
                delta32[j] = folded[:, chan]
                delta_totals[j] = x @ self._row_sums[span]
            self.work["fold_grid"] += n_j * n_t * f.band_response.multiply_adds(span)
        # ratio = delta / s in float32 where float32 keeps ~7 digits of the fold relative to
        # its row's peak; templates far below their row's peak or not safely positive
        # (``_float32_ok``, 0 in ``_inv_templates32``) take the exact float64 path
        with np.errstate(over="ignore", invalid="ignore"):
            ratio = delta32 * self._inv_templates32[:, chan]
            ratio *= scale[:, :, None]
        lo, hi = ratio.min(axis=(1, 2)), ratio.max(axis=(1, 2))
        if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
            raise ModelError("non-finite templates for the modified response")
        if not np.all(np.isfinite(delta_totals)):
            raise ModelError("non-finite templates for the modified response")
        # the float64 elements: the static ones the basis reaches, and (rare) any ratio
        # beyond RATIO_MAX
        t_idx, c_idx = self._irregular_t, self._irregular_c
        inside = (c_idx >= chan.start) & (c_idx < chan.stop)
        t_idx, c_idx = t_idx[inside], c_idx[inside]
        reached = np.zeros(t_idx.size, dtype=bool)
        for j in range(n_j):
            reached |= delta32[j][t_idx, c_idx - chan.start] != 0
        t_idx, c_idx = t_idx[reached], c_idx[reached]
        if np.any(np.maximum(-lo, hi) > RATIO_MAX):
            huge = np.zeros(ratio.shape[1:], dtype=bool)
            for j in range(n_j):
                huge |= np.abs(ratio[j]) > RATIO_MAX
            ht, hc = np.nonzero(huge)
            t_idx, c_idx = np.concatenate([t_idx, ht]), np.concatenate([c_idx, hc + chan.start])
            order = np.unique(t_idx * n_chan + c_idx, return_index=True)[1]
            t_idx, c_idx = t_idx[order], c_idx[order]
            ratio[:, t_idx, c_idx - chan.start] = 0.0
            lo, hi = ratio.min(axis=(1, 2)), ratio.max(axis=(1, 2))
        rows, cols = t_idx, c_idx - chan.start
        flat = rows * n_chan + c_idx
        safe_irr = self._safe_templates.ravel()[flat]
        delta_irr = self._exact_delta(span, weights, rows, c_idx)
        return _KeyTerms(
            span=span,
            weights=weights,
            chan=chan,
            ratio=ratio,
            ratio_range=(lo, hi),
            totals_base=self._safe_templates.sum(axis=1)
            - np.bincount(rows, weights=safe_irr, minlength=n_t),
            delta_totals_base=delta_totals
            - np.stack([np.bincount(rows, weights=d, minlength=n_t) for d in delta_irr]),
            irregular=flat,
            irregular_rows=rows,
            irregular_cols=cols,
            irregular_templates=f.templates.ravel()[flat],
            irregular_delta=delta_irr,
            irregular_logs=self._log_safe_templates.ravel()[flat],
            folds=_LRU(T_CACHE_SIZE),
            basis=full_basis,
            # with one basis function and |A| <= 1, only these elements can take 1 + z
            # outside the ln(1 + z) series' range or below MIN_RATIO (few: a theta then
            # looks at them alone, not at the whole table)
            wide=np.flatnonzero(np.abs(ratio[0]) >= 0.5) if n_j == 1 else None,
        )

    def _exact_delta(
        self, span: slice, weights: np.ndarray, t_index: np.ndarray, channel: np.ndarray
    ) -> np.ndarray:
        """Fold the basis functions at single (fit temperature, channel) elements, in float64.

        Returns (J, n): element i is sum_e flux_e(T[t_index[i]]) weights[j, e] R[e, channel[i]]
        over the energy rows ``span``.
        """
        f = self.fitter
        n_j = weights.shape[0]
        out = np.zeros((n_j, t_index.size))
        if span.stop == span.start or t_index.size == 0:
            return out
        # the elements gather in a few channels and temperatures (EPIC-pn's negative RMF
        # elements: 190 channels at the 17 lowest fit temperatures): fold those temperatures
        # onto those channels, in float64, then pick
        temps, t_at = np.unique(t_index, return_inverse=True)
        columns, where = np.unique(channel, return_inverse=True)
        flux = f.grid_flux[temps][:, span]  # (t, span)
        for a in range(0, columns.size, EXACT_CHUNK):
            cols = self._response_t[columns[a : a + EXACT_CHUNK], span]  # (c, span)
            pick = np.flatnonzero((where >= a) & (where < a + EXACT_CHUNK))
            for j in range(n_j):
                folded = (flux * weights[j]) @ cols.T  # (t, c)
                out[j, pick] = folded[t_at[pick], where[pick] - a]
        return out

    def _theta(self, theta: np.ndarray) -> _ThetaTerms:
        return self._theta_cache.get_or(theta.tobytes(), lambda: self._make_theta(theta))

    def _make_theta(self, theta: np.ndarray) -> _ThetaTerms:
        f = self.fitter
        key, amps = self.modifier.linear_form(theta)
        kt = self._key(key)
        # a theta whose modified ARF would be negative anywhere is refused (by
        # ``Modifier.apply``, called wherever m = 1 + sum_j a_j b_j comes near 0: evaluating
        # the family at every energy per theta cost more than this sum)
        if float((1.0 + amps @ kt.basis).min(initial=np.inf)) < SIGN_CHECK_MARGIN:
            self.modifier.apply(self.instrument.e_mid, self.instrument.area, theta[None, :])
        size = f.templates.size
        buffer = self._log_ratio_buffers.pop() if self._log_ratio_buffers else np.empty(size)
        log_ratio, log_totals = self._log_ratio(kt, amps, buffer)
        return _ThetaTerms(kt, amps, f.to_engine(log_ratio), f.to_engine(log_totals), buffer)

    def _log_ratio(
        self, kt: _KeyTerms, amps: np.ndarray, buffer: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """(ln s'/s on the key's channels (n_T, n_chan_key), ln S' (n_T,)), float64.

        ``ln(1 + z)`` from the float32 ratio tables (:func:`physics.log1p.log1p_combination`,
        within 2e-9) where s'/s = 1 + z > MIN_RATIO, from float64 folds elsewhere. The table
        is written into the start of ``buffer`` (flat, at least n_T x n_chan_key).
        """
        f = self.fitter
        n_t, n_chan = f.templates.shape
        ratio = kt.ratio
        log_ratio = buffer[: ratio.shape[1] * ratio.shape[2]].reshape(ratio.shape[1:])
        totals = kt.totals_base + amps @ kt.delta_totals_base
        low = np.zeros(0, dtype=np.int64)
        if ratio.size:
            # z = sum_j a_j ratio_j (J > 1) in a scratch array kept between thetas: a fresh
            # one of this size costs more in page faults than the arithmetic (measured 4x on
            # a virtual machine)
            if self._scratch is None or self._scratch.size < log_ratio.size:
                self._scratch = np.empty(log_ratio.size)
            z = self._scratch[: log_ratio.size]
            log1p_combination(ratio, amps, log_ratio, z, kt.ratio_range, kt.wide)
            self.work["log_ratio"] += log_ratio.size
            # the lowest 1 + z can reach, from the key's extremes of each ratio
            lowest = 1.0 + sum(min(a * lo, a * hi) for a, lo, hi in zip(amps, *kt.ratio_range))
            if lowest <= MIN_RATIO:
                if kt.wide is not None and abs(amps[0]) <= 1.0:
                    # z = a_1 ratio_1 (as the kernel takes it) <= MIN_RATIO - 1 = -1/2 needs
                    # |ratio_1| >= 1/2: only those elements
                    zw = ratio.reshape(-1)[kt.wide].astype(np.float64) * amps[0]
                    at = kt.wide[zw <= MIN_RATIO - 1.0]
                else:
                    if amps.size == 1:  # z was not formed
                        np.multiply(ratio.reshape(-1), amps[0], out=z)
                    at = np.flatnonzero(z <= MIN_RATIO - 1.0)
                low = (at // log_ratio.shape[1]) * n_chan + at % log_ratio.shape[1] + kt.chan.start
        if kt.irregular.size:
            mod = kt.irregular_templates + amps @ kt.irregular_delta
            safe = np.maximum(mod, TEMPLATE_FLOOR)
            log_ratio[kt.irregular_rows, kt.irregular_cols] = np.log(safe) - kt.irregular_logs
            totals = totals + np.bincount(kt.irregular_rows, weights=safe, minlength=n_t)
        if low.size:
            s = f.templates.ravel()[low]
            rows, channels = low // n_chan, low % n_chan
            mod = s + amps @ self._exact_delta(kt.span, kt.weights, rows, channels)
            safe = np.maximum(mod, TEMPLATE_FLOOR)
            log_ratio[rows, channels - kt.chan.start] = (
                np.log(safe) - self._log_safe_templates.ravel()[low]
            )
            # these were counted unclamped in ``totals``: swap in their floored values
            totals = totals + np.bincount(rows, weights=safe - mod, minlength=n_t)
        return log_ratio, np.log(totals)

    def _folds(self, kt: _KeyTerms, temps: np.ndarray) -> None:
        """Fill ``kt.folds`` for the temperatures ``temps`` (keV): the basis folds at T.

        A temperature on the grid's true-temperature axis (``settings.t_true_axis``) brings
        the whole axis, folded in one product of a fixed shape with each temperature at its
        axis position. Any other row (T, j) goes into a fixed-shape block of BLOCK_ROWS at a
        slot fixed by (T, j). Either way (see the module docstring) its bits never depend on
        which temperatures share its batch.
        """
        f = self.fitter
        listed = temps.tolist()
        if kt.axis_folds is not None and all(t in self._t_axis for t in listed):
            return  # the whole axis is folded for this key
        missing = [t for t in dict.fromkeys(listed) if t not in kt.folds]
        if not missing:
            return
        n_j = kt.weights.shape[0]
        n_chan = f.templates.shape[1]
        if kt.span.stop == kt.span.start:
            for t in missing:
                kt.folds.get_or(t, lambda: np.zeros((n_j, n_chan)))
            return
        if self._t_axis and any(t in self._t_axis for t in missing):
            # the grid's true temperatures: all of them in one product of a fixed shape, each
            # at its position on the axis, so a point's folds never depend on its batch
            axis = list(self._t_axis)
            block = np.zeros((len(axis) * n_j, kt.weights.shape[1]))
            for a, t in enumerate(axis):
                flux = f.flux(t)[kt.span]
                for j in range(n_j):
                    np.multiply(flux, kt.weights[j], out=block[a * n_j + j])
            folded = f.band_response.fold(block, kt.span)
            self.work["fold_true"] += block.shape[0] * f.band_response.multiply_adds(kt.span)
            kt.axis_folds = folded.reshape(len(axis), n_j, -1)
            for a, t in enumerate(axis):
                kt.folds.get_or(t, lambda a=a: kt.axis_folds[a])
            missing = [t for t in missing if t not in self._t_axis]
            if not missing:
                return
        rows = [(t, j) for t in missing for j in range(n_j)]
        slots = np.array([zlib.crc32(struct.pack("<dq", t, j)) % BLOCK_ROWS for t, j in rows])
        block_of = _occurrence(slots)
        result: dict[float, np.ndarray] = {t: np.zeros((n_j, n_chan)) for t in missing}
        for b in range(int(block_of.max()) + 1):
            members = np.flatnonzero(block_of == b)
            block = np.zeros((BLOCK_ROWS, kt.weights.shape[1]))
            for i in members:
                t, j = rows[i]
                np.multiply(f.flux(t)[kt.span], kt.weights[j], out=block[slots[i]])
            folded = f.band_response.fold(block, kt.span)
            self.work["fold_true"] += BLOCK_ROWS * f.band_response.multiply_adds(kt.span)
            for i in members:
                t, j = rows[i]
                result[t][j] = folded[slots[i]]
        for t in missing:
            kt.folds.get_or(t, lambda t=t: result[t])

    def _axis_original(self) -> np.ndarray:
        """Fold the model at the grid's true temperatures (original response), once.

        Returns (n_axis, n_chan) float64, the rows of :meth:`SpectrumFitter.fold_original`.
        """
        if self._axis_original_folds is None:
            f = self.fitter
            self._axis_original_folds = np.stack([f.fold_original(t) for t in self._t_axis])
        return self._axis_original_folds

    def _expected(self, tt: _ThetaTerms, temps: np.ndarray) -> np.ndarray:
        """Fold the model at ``temps`` through the modified response: (m, n_chan), numpy."""
        f = self.fitter
        self._folds(tt.key, temps)
        ts = temps.tolist()
        if tt.key.axis_folds is not None and all(t in self._t_axis for t in ts):
            # the grid's temperatures: gathered from the per-key table of the whole axis (a
            # run of the axis, as a theta's points on the grid mostly are, without a gather)
            at = np.array([self._t_axis[t] for t in ts], dtype=np.int64)
            first = int(at[0])
            if np.array_equal(at, np.arange(first, first + at.size)):
                picked: slice | np.ndarray = slice(first, first + at.size)
                out = self._axis_original()[picked].copy()
            else:
                picked = at
                out = self._axis_original()[picked]
            folds = tt.key.axis_folds[picked]  # (m, J, n_chan)
            scratch = np.empty_like(out)
            for j, a in enumerate(tt.amplitudes.tolist()):
                out += np.multiply(folds[:, j], a, out=scratch)
            return out
        out = np.stack([f.fold_original(t) for t in ts])
        folds = np.stack([tt.key.folds[t] for t in ts])  # (m, J, n_chan)
        for j, a in enumerate(tt.amplitudes.tolist()):
            out += a * folds[:, j]
        return out

    # ---- run -------------------------------------------------------------------------------

    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
        """Simulate and fit a batch of grid points (see :meth:`Backend.run`).

        Parameters
        ----------
        theta : numpy.ndarray
            (n, d) modifier parameters (Gaussian family: mu keV, sigma keV, A).
        t_true : numpy.ndarray
            (n,) true temperatures, keV.
        index : numpy.ndarray
            (n,) int: point ``index[i]`` draws from ``grid.point_rng(seed, index[i], stream)``
            (the same draws whatever the batch).
        norm : numpy.ndarray, optional
            (n,) model normalisations overriding the settings' counts/norm.

        Returns
        -------
        PointResults
            Fits of n points x realisations: ``t_fit_orig``/``t_fit_mod`` keV, their
            delta-C = 1 errors keV, status bits, norms, noticed counts, curves (optional).

        Raises
        ------
        ValueError
            ``theta``, ``t_true`` and ``index`` of inconsistent shapes.
        ModifierError
            ``theta`` outside the modifier family's domain (or a negative modified ARF).
        ModelError
            Non-finite modified templates.
        """
        s = self.settings
        f = self.fitter
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        t_true = np.atleast_1d(np.asarray(t_true, dtype=np.float64))
        index = np.atleast_1d(np.asarray(index, dtype=np.int64))
        n = t_true.size
        if theta.shape != (n, self.modifier.n_params) or index.shape != (n,):
            raise ValueError(
                f"theta {theta.shape}, t_true {t_true.shape}, index {index.shape} disagree "
                f"(expected ({n}, {self.modifier.n_params}), ({n},), ({n},))"
            )
        if n:
            self.modifier.check_theta(theta)
        n_real, n_t, n_chan = s.realisations, f.tgrid.size, f.channels.size

        ok = np.isfinite(t_true) & (t_true >= self.t_range[0]) & (t_true <= self.t_range[1])
        norms = np.full(n, np.nan)
        if norm is not None:
            norms[:] = np.broadcast_to(np.asarray(norm, dtype=np.float64), (n,))
        temps, at = np.unique(t_true[ok], return_inverse=True)
        totals_t = np.full(temps.size, np.nan)
        for u, t in enumerate(temps.tolist()):
            try:
                totals_t[u] = f.total_original(t)
            except ModelError as exc:
                for i in np.flatnonzero(ok)[at.ravel() == u]:
                    log.warning("point %d: %s", index[i], exc.message)
        total = np.full(n, np.nan)
        total[ok] = totals_t[at.ravel()]
        ok &= np.isfinite(total)
        if norm is None:
            with np.errstate(divide="ignore"):
                norms[ok] = s.counts / total[ok] if s.counts is not None else s.norm
        ok &= np.isfinite(norms) & (norms >= 0)

        # fakeit, one theta at a time (a batch of grid points shares few thetas)
        data = np.zeros((n, n_real, n_chan))
        # each point's PCG64 state, as words for the compiled sampler; the generators
        # themselves only where those cannot be had (a seed beyond 32 bits)
        words = self._streams.words(index) if s.mode != "asimov" else None
        states = self._streams.states(index) if s.mode != "asimov" and words is None else None
        groups, inverse = _unique_rows(theta)
        # the true temperatures of each key's points, folded together when the key is first
        # met (thetas that share a key, e.g. off-grid points of one (mu, sigma) with their
        # own T_true, then share the fixed-shape blocks of ``_folds``)
        key_of = [self.modifier.linear_form(groups[g])[0] for g in range(groups.shape[0])]
        key_temps: dict[tuple[float, ...], list[float]] = {}
        for g, t in zip(inverse[ok].tolist(), t_true[ok].tolist()):
            key_temps.setdefault(key_of[g], []).append(t)
        # each theta's term of the modified profiles, sum_j d_j ln(s'_j / s_j), is taken as
        # soon as its spectra are drawn: its ln(s'/s) table is then no longer needed (the
        # theta cache recycles it), however many thetas the batch holds
        extra = np.zeros((n, n_real, n_t))
        per_theta: list[tuple[np.ndarray, Any]] = []
        for g in range(groups.shape[0]):
            members = np.flatnonzero((inverse == g) & ok)
            if members.size == 0:
                continue
            tt = self._theta(groups[g])
            self._folds(tt.key, np.array(key_temps[key_of[g]]))
            mu = self._expected(tt, t_true[members])
            mu *= norms[members, None]
            np.maximum(mu, 0.0, out=mu)  # negative RMF elements can leave a channel below 0
            if s.mode == "asimov":
                data[members] = mu[:, None, :]
            else:
                points = members.tolist()

                def uniforms(r: int, out: np.ndarray, points: list[int] = points) -> None:
                    p = points[r]
                    self._streams.generator(index[p], states[p]).random(out=out)

                lam = mu if n_real == 1 else np.repeat(mu, n_real, axis=0)
                lam = lam.reshape(members.size, n_real * n_chan)
                if words is not None:  # the same draws, the stream generated in compiled code
                    counts = poisson_rows_pcg64(lam, words[members])
                else:
                    counts = poisson_rows(lam, uniforms)
                data[members] = counts.reshape(-1, n_real, n_chan)
                self.work["poisson"] += members.size * n_real * n_chan
            # a point on the grid's T_true axis sits at its temperature's axis position (a
            # theta's points then share one product), any other at its index modulo the block
            on_axis = np.array([t in self._t_axis for t in t_true[members].tolist()], bool)
            grid_points, others = members[on_axis], members[~on_axis]
            axis_slots = np.array([self._t_axis[t] for t in t_true[grid_points].tolist()], int)
            narrow = max(1, BLOCK_ROWS // n_real)
            for group, slots, per_block in (
                (grid_points, axis_slots, len(self._t_axis)),
                (others, index[others] % narrow, narrow),
            ):
                self._blocked_cross(data, group, slots, per_block, tt.log_ratio, tt.key.chan, extra)
            per_theta.append((members, tt.log_totals))

        totals, const = data_terms(data)
        live = np.flatnonzero(ok)
        cross = np.zeros((n, n_real, n_t))
        wide = max(1, WIDE_BLOCK_ROWS // n_real)
        self._blocked_cross(
            data, live, index[live] % wide, wide, f.log_templates, slice(None), cross
        )
        # both fits' curves in one array: the original's, then the modified ones
        curves_both = np.full((2, n, n_real, n_t), np.nan)
        curves_orig, curves_mod = curves_both[0], curves_both[1]
        log_totals = f.to_numpy(f.log_totals)
        if live.size:
            curves_orig[live] = cstat_from_cross(
                cross[live].reshape(-1, n_t),
                log_totals,
                (totals[live].ravel(), const[live].ravel()),
            ).reshape(-1, n_real, n_t)
        for members, theta_log_totals in per_theta:
            curves_mod[members] = cstat_from_cross(
                (cross[members] + extra[members]).reshape(-1, n_t),
                f.to_numpy(theta_log_totals),
                (totals[members].ravel(), const[members].ravel()),
            ).reshape(-1, n_real, n_t)

        m = n * n_real
        both = f.finish(
            f.to_engine(curves_both.reshape(2 * m, n_t)),
            np.concatenate([totals.ravel(), totals.ravel()]),
        )
        status = np.stack([both.status[:m], both.status[m:]], axis=-1).reshape(n, n_real, 2)
        status[~ok] = STATUS_FAILED
        totals[~ok] = np.nan
        out = PointResults(
            t_fit_orig=both.t_fit[:m].reshape(n, n_real),
            t_fit_mod=both.t_fit[m:].reshape(n, n_real),
            err_orig=both.err[:m].reshape(n, n_real, 2),
            err_mod=both.err[m:].reshape(n, n_real, 2),
            status=status,
            norm=np.where(ok, norms, np.nan),
            counts=totals,
            curve_orig=both.curves[:m].reshape(n, n_real, n_t) if s.curves else None,
            curve_mod=both.curves[m:].reshape(n, n_real, n_t) if s.curves else None,
        )
        for name in ("t_fit_orig", "t_fit_mod", "err_orig", "err_mod"):
            getattr(out, name)[~ok] = np.nan
        return out

    def _blocked_cross(
        self,
        data: np.ndarray,
        members: np.ndarray,
        slots: np.ndarray,
        per_block: int,
        log_values: Any,
        chan: slice,
        out: np.ndarray,
    ) -> None:
        """Write sum_j d_j v_j(T) of the points ``members`` into ``out`` (n, n_real, n_T).

        ``log_values`` (n_T, channels ``chan``) is an engine array. Spectra go through
        fixed-shape blocks of ``per_block`` points (x n_real spectra), point ``members[i]``
        at block row ``slots[i]`` (a position that depends on the point alone; points that
        share a slot go to further blocks), so its bits never depend on the batch.
        """
        if members.size == 0:
            return
        f = self.fitter
        xp = f.xp
        n_real = data.shape[1]
        n_t = out.shape[2]
        sub = data[:, :, chan]
        width = sub.shape[2]
        values_t = xp.permute_dims(log_values, (1, 0))
        rows = per_block * n_real
        if np.bincount(slots, minlength=per_block).max() <= 1:  # one block (the usual case)
            blocks = [np.arange(members.size)]
        else:
            block_of = _occurrence(slots)
            blocks = [np.flatnonzero(block_of == b) for b in range(int(block_of.max()) + 1)]
        direct = xp is np and out.flags.c_contiguous
        for sel in blocks:
            first = int(members[sel[0]])
            run = (
                sel.size == per_block
                and np.array_equal(members[sel], np.arange(first, first + per_block))
                and np.array_equal(slots[sel], np.arange(per_block))
            )
            self.work["profile"] += rows * width * n_t
            if run and direct:
                # the block is a run of the batch in slot order: the same rows, no copy, and
                # its product written in place
                target = out[first : first + per_block].reshape(rows, n_t)
                np.matmul(sub[first : first + per_block].reshape(rows, width), values_t, out=target)
                continue
            if run:
                block = sub[first : first + per_block]
            else:
                block = np.zeros((per_block, n_real, width))
                block[slots[sel]] = sub[members[sel]]
            product = f.to_engine(block.reshape(rows, width)) @ values_t
            cross = f.to_numpy(product).reshape(per_block, n_real, n_t)
            out[members[sel]] = cross[slots[sel]]


def _unique_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``np.unique(rows, axis=0, return_inverse=True)`` of (n, d) rows that come in runs.

    A batch of grid points holds a few thetas, each in a run of points: the distinct rows
    are found among the first of each run (sorting every row cost ~1 us per point).
    Returns the distinct rows (m, d), in np.unique's order, and each row's position in them
    (n,).
    """
    n = rows.shape[0]
    if n == 0:
        return rows[:0].copy(), np.zeros(0, dtype=np.int64)
    new_run = np.ones(n, dtype=bool)
    if n > 1:
        # a row differs from the one before where any value does (NaN: always, as np.unique)
        np.any(rows[1:] != rows[:-1], axis=1, out=new_run[1:])
    starts = np.flatnonzero(new_run)
    groups, run_group = np.unique(rows[starts], axis=0, return_inverse=True)
    return groups, run_group.ravel()[np.cumsum(new_run) - 1]


def _occurrence(slots: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries share its slot (0, 1, 2, ...)."""
    slots = np.asarray(slots)
    out = np.zeros(slots.size, dtype=np.int64)
    if slots.size < 2:
        return out
    order = np.argsort(slots, kind="stable")  # equal slots keep their order
    ordered = slots[order]
    new_run = np.empty(slots.size, dtype=bool)
    new_run[0] = True
    np.not_equal(ordered[1:], ordered[:-1], out=new_run[1:])
    starts = np.flatnonzero(new_run)
    out[order] = np.arange(slots.size) - starts[np.cumsum(new_run) - 1]
    return out
