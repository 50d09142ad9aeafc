"""The embedded backend: fakeit + two C-stat fits per spectrum, vectorised over many spectra.

How a batch is computed (see backends/base.py for the contract):

- The response is restricted once to the noticed channels (a dense (n_E, n_chan) block, rows
  that reach no noticed channel dropped). Source photon fluxes are computed per temperature,
  one row at a time, and cached.
- "Templates" are expected counts at norm 1, ``s_j(T) = exposure * fold(flux(T), area)_j``.
  Those of the original response on the fit-temperature grid are computed once; those of the
  modified response once per theta (grid points come with T_true fastest, so a batch shares
  theta), as the original ones plus the fold through the area change, over only the energies
  where the modifier differs from 1.
- fakeit: expected counts through the modified response at T_true, Poisson draws from the
  point's own generator (``grid.point_rng``), or the expectation itself in asimov mode.
- Each spectrum is fitted twice (original and modified templates): the norm-profiled C-stat
  on the grid is one matrix product (fitstat), then the minimum and the delta-C = 1 interval
  come from the local-polynomial interpolant of the profile in ln T (fitstat).

Bitwise determinism: BLAS results for a row depend on the matrix shape and on the row's
position in it. Every product whose rows are per-point data is therefore done in blocks of a
fixed shape, with each point at a fixed position (its index modulo the block size), so a
point's results do not depend on which other points share its batch.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping
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
    cstat_profile,
    data_terms,
    fit_profiles,
)
from xrmodifier_hpc.physics.modifiers import Modifier
from xrmodifier_hpc.physics.spectra import Model, ModelError

log = logging.getLogger(__name__)

#: rows per fixed-shape block of the per-point products (see the module docstring)
BLOCK_ROWS = 16
#: area changes below this fraction of the peak area are ignored when folding modified areas
AREA_CHANGE_TOL = 1e-14
#: cached per-temperature fluxes/folds and per-theta templates (memory stays bounded)
T_CACHE_SIZE = 1024
THETA_CACHE_SIZE = 8
#: template floor: a channel the model cannot reach gets this instead of 0 (finite logs)
TEMPLATE_FLOOR = 1e-300


class _LRU(OrderedDict):
    """A small least-recently-used cache."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def get_or(self, key: Hashable, make: Callable[[], Any]) -> Any:
        if key in self:
            self.move_to_end(key)
            return self[key]
        value = make()
        self[key] = value
        if len(self) > self.size:
            self.popitem(last=False)
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


@dataclass(frozen=True)
class Fits:
    """Fits of m spectra (numpy): best-fit temperature (keV), the distances to the ends of the
    delta-C = 1 interval (keV), C at the best fit, the profile on the grid, status bits."""

    t_fit: np.ndarray
    err: np.ndarray
    cstat: np.ndarray
    curves: np.ndarray
    status: np.ndarray


class SpectrumFitter:
    """C-stat fits of spectra through one instrument and model, kT and norm free.

    ``tgrid`` (keV) is the grid of the exact profile; ``band`` (keV) selects the channels as
    XSPEC's ``ignore **-lo hi-**`` (and ``usable``, a per-channel mask, if given); ``exposure``
    in s; ``params`` the frozen parameters. Spectra passed to the methods hold the counts of
    the selected channels only (``mask``).
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
        self.response = np.ascontiguousarray(dense[self.rows])  # (K, n_chan)
        self.area = np.asarray(instrument.area, dtype=np.float64)[self.rows]
        self.xgrid = LocalPolyGrid.build(np.log(self.tgrid))

        self._flux_cache = _LRU(T_CACHE_SIZE)
        self._fold_cache = _LRU(T_CACHE_SIZE)
        grid_flux = self._flux_rows(self.tgrid)  # (n_T, K) counts per bin at norm 1
        self.grid_flux = grid_flux
        self.templates = self._checked(grid_flux * self.area) @ self.response
        self.xp, self.device = _resolve_engine(engine, device)
        self._dev_grid_flux = self._to(grid_flux)
        self._dev_response = self._to(self.response)
        self._dev_xgrid = self.xgrid.to(self.xp, self._to(np.zeros(1)))
        self.log_templates, self.log_totals = self._logs(self._to(self.templates))

    # ---- helpers ---------------------------------------------------------------------------

    def _to(self, a: np.ndarray) -> Any:
        if self.device is None:
            return np.ascontiguousarray(a)
        return self.xp.asarray(np.ascontiguousarray(a), device=self.device)

    def _np(self, a: Any) -> np.ndarray:
        if self.device is None:
            return np.asarray(a)
        return a.detach().cpu().numpy()

    def _logs(self, templates: Any) -> tuple[Any, Any]:
        xp = self.xp
        if self.device is None:
            safe = np.maximum(templates, TEMPLATE_FLOOR)
        else:
            safe = xp.clip(templates, min=TEMPLATE_FLOOR)
        return xp.log(safe), xp.log(xp.sum(safe, axis=1))

    @staticmethod
    def _checked(a: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(a)):
            raise ModelError("the model gave non-finite values")
        return a

    def _flux_rows(self, temps: np.ndarray) -> np.ndarray:
        """Exposure x photon flux per energy bin (rows noticed) at each of ``temps``."""
        return np.stack([self.flux(t) for t in np.atleast_1d(temps)])

    def flux(self, t: float) -> np.ndarray:
        """Exposure (s) x photons cm^-2 per energy bin at norm 1 for temperature ``t`` (keV).

        Computed one temperature at a time (so the bits never depend on a batch) and cached.
        """
        t = float(t)

        def make() -> np.ndarray:
            inst = self.instrument
            f = self.model.photon_flux(
                inst.energ_lo, inst.energ_hi, np.array([t]), self.params, self.temperature_param
            )[0]
            return self.exposure * f[self.rows]

        return self._flux_cache.get_or(t, make)

    def fold_original(self, t: float) -> np.ndarray:
        """Expected counts per noticed channel at norm 1 through the original response."""
        t = float(t)
        return self._fold_cache.get_or(
            t, lambda: ((self.flux(t) * self.area)[None, :] @ self.response)[0]
        )

    # ---- fitting ---------------------------------------------------------------------------

    def profiles(
        self,
        counts: Any,
        log_templates: Any = None,
        log_totals: Any = None,
        terms: tuple[Any, Any] | None = None,
    ) -> Any:
        """C on the grid (m, n_T) of spectra ``counts`` (m, n_chan) (engine arrays); the
        original response's templates unless others are given."""
        lt = self.log_templates if log_templates is None else log_templates
        lS = self.log_totals if log_totals is None else log_totals
        return cstat_profile(counts, lt, lS, terms)

    def finish(self, curves: Any, totals: np.ndarray) -> Fits:
        """Refine and bracket the minimum of each profile; flag as base.STATUS_* says."""
        res: FitResult = fit_profiles(curves, self._dev_xgrid)
        x, x_lo, x_hi = self._np(res.x), self._np(res.x_lo), self._np(res.x_hi)
        cstat = self._np(res.value)
        curves_np = self._np(curves)
        status = np.zeros(x.shape, dtype=np.uint8)
        status[self._np(res.at_bound)] |= STATUS_AT_GRID_BOUND
        status[self._np(res.lo_open) | self._np(res.hi_open)] |= STATUS_ERROR_AT_BOUND
        t_fit = np.exp(x)
        err = np.stack([t_fit - np.exp(x_lo), np.exp(x_hi) - t_fit], axis=-1)
        # the interpolant's minimum is found to machine precision; a profile that is not
        # convex there (flat or broken) has no trustworthy minimum
        convex = self._np(res.convex)
        status[~convex & (status & STATUS_AT_GRID_BOUND == 0)] |= STATUS_NOT_CONVERGED
        failed = ~self._np(res.finite)
        few = (totals < self.min_counts) | (totals <= 0)
        status[failed] |= STATUS_FAILED
        status[few] = STATUS_TOO_FEW_COUNTS | (status[few] & STATUS_FAILED)
        bad = failed | few
        t_fit[bad] = np.nan
        err[bad] = np.nan
        cstat[bad] = np.nan
        curves_np = curves_np.copy()
        curves_np[bad] = np.nan
        return Fits(t_fit, err, cstat, curves_np, status)

    def fit(self, counts: np.ndarray) -> Fits:
        """Fit spectra ``counts`` (m, n_chan noticed) with the original response."""
        counts = np.atleast_2d(np.asarray(counts, dtype=np.float64))
        curves = self.profiles(self._to(counts))
        return self.finish(curves, counts.sum(axis=1))

    def exact_profile(self, counts: np.ndarray, temps: np.ndarray) -> np.ndarray:
        """C at arbitrary temperatures (norm refitted at each), from exact folds (numpy)."""
        counts = np.asarray(counts, dtype=np.float64)
        templ = np.stack([self.fold_original(t) for t in np.atleast_1d(temps)])
        templ = np.maximum(templ, TEMPLATE_FLOOR)
        curves = cstat_profile(np.atleast_2d(counts), np.log(templ), np.log(templ.sum(axis=1)))
        return np.asarray(curves)

    def best_norm(self, counts: np.ndarray, t: np.ndarray) -> np.ndarray:
        """Profiled norm D / S(T) of spectra ``counts`` (m, n_chan) at temperatures ``t`` (m,)."""
        counts = np.atleast_2d(counts)
        out = np.full(counts.shape[0], np.nan)
        for i, ti in enumerate(np.atleast_1d(t)):
            if np.isfinite(ti):
                out[i] = counts[i].sum() / self.fold_original(ti).sum()
        return out


@dataclass
class _ThetaTemplates:
    """Per-theta quantities: the area change (cm^2) on the contiguous span of noticed-row
    energies where the modifier departs from 1 (or the whole modified area), and the
    modified response's log-templates on the fit grid (engine arrays)."""

    span: slice
    weights: np.ndarray  # area change on ``span``, or the whole modified area when ``full``
    full: bool
    log_templates: Any
    log_totals: Any


class NativeBackend(Backend):
    """fakeit + C-stat fits in numpy (or torch), vectorised over a batch of grid points."""

    name = "native"

    def __init__(
        self,
        instrument: Instrument,
        model: Model,
        modifier: Modifier,
        settings: SimulationSettings,
    ) -> None:
        self.instrument = instrument
        self.model = model
        self.modifier = modifier
        self.settings = settings
        params = {
            k: v for k, v in settings.source_params.items() if k != settings.temperature_param
        }
        self.fitter = SpectrumFitter(
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
        self._theta_cache = _LRU(THETA_CACHE_SIZE)
        self.t_range = model.param_range(settings.temperature_param)

    def version(self) -> str:
        return f"native {__version__} (engine {self.settings.engine})"

    # ---- per theta -------------------------------------------------------------------------

    def _theta(self, theta: np.ndarray) -> _ThetaTemplates:
        key = theta.tobytes()
        return self._theta_cache.get_or(key, lambda: self._make_theta(theta))

    def _make_theta(self, theta: np.ndarray) -> _ThetaTemplates:
        f = self.fitter
        inst = self.instrument
        modified = self.modifier.apply(inst.e_mid, inst.area, theta[None, :])[0][f.rows]
        change = modified - f.area
        moved = np.flatnonzero(np.abs(change) > AREA_CHANGE_TOL * max(f.area.max(), 1e-300))
        xp = f.xp
        # a contiguous span keeps the response rows a view (no copy); rows inside it where the
        # modifier is 1 add exact zeros
        span = slice(int(moved[0]), int(moved[-1]) + 1) if moved.size else slice(0, 0)
        full = (span.stop - span.start) > 0.7 * f.rows.size
        if full:
            weights = modified
            templ = (f._dev_grid_flux * f._to(modified)) @ f._dev_response
        else:
            weights = np.ascontiguousarray(change[span])
            templ = f._to(f.templates)
            if moved.size:
                sub = f._dev_grid_flux[:, span] * f._to(weights)
                templ = templ + sub @ f._dev_response[span]
        if not bool(xp.all(xp.isfinite(templ))):
            raise ModelError("non-finite templates for the modified response")
        log_t, log_s = f._logs(templ)
        return _ThetaTemplates(span, weights, full, log_t, log_s)

    def _expected(self, tt: _ThetaTemplates, temps: np.ndarray, index: np.ndarray) -> np.ndarray:
        """Expected counts at norm 1 through the modified response (m, n_chan), numpy.

        The folds of per-point rows go through fixed 16-row blocks, each point in row
        index % 16 (see the module docstring).
        """
        f = self.fitter
        m = temps.size
        if tt.full:
            out = np.zeros((m, f.channels.size))
            span = slice(None)
        else:
            out = np.stack([f.fold_original(t) for t in temps])
            span = tt.span
            if span.stop == span.start:
                return out
        resp = f.response[span]
        slots = index % BLOCK_ROWS
        block_of = _occurrence(slots)
        for b in range(int(block_of.max()) + 1):
            members = np.flatnonzero(block_of == b)
            block = np.zeros((BLOCK_ROWS, resp.shape[0]))
            for p in members:
                np.multiply(f.flux(temps[p])[span], tt.weights, out=block[slots[p]])
            out[members] += (block @ resp)[slots[members]]
        return out

    # ---- run -------------------------------------------------------------------------------

    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
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
        for i in np.flatnonzero(ok):
            try:
                total = f.fold_original(t_true[i]).sum()
            except ModelError as exc:
                log.warning("point %d: %s", index[i], exc.message)
                ok[i] = False
                continue
            if norm is None:
                norms[i] = s.counts / total if s.counts is not None else s.norm
        ok &= np.isfinite(norms) & (norms >= 0)

        data = np.zeros((n, n_real, n_chan))
        curves_orig = np.full((n, n_real, n_t), np.nan)
        curves_mod = np.full((n, n_real, n_t), np.nan)
        groups, inverse = np.unique(theta, axis=0, return_inverse=True)
        inverse = inverse.ravel()
        for g in range(groups.shape[0]):
            members = np.flatnonzero((inverse == g) & ok)
            if members.size == 0:
                continue
            tt = self._theta(groups[g])
            mu = self._expected(tt, t_true[members], index[members]) * norms[members, None]
            mu = np.maximum(mu, 0.0)  # negative RMF elements can leave a channel below zero
            for row, p in zip(mu, members):
                if s.mode == "asimov":
                    data[p] = row
                else:
                    rng = point_rng(s.seed, int(index[p]), s.stream)
                    data[p] = rng.poisson(row, size=(n_real, n_chan))
            totals, const = data_terms(data[members])
            self._blocked_profiles(data, const, totals, index, members, tt, curves_mod)

        totals, const = data_terms(data)
        self._blocked_profiles(data, const, totals, index, np.flatnonzero(ok), None, curves_orig)

        fit_o = f.finish(f._to(curves_orig.reshape(n * n_real, n_t)), totals.ravel())
        fit_m = f.finish(f._to(curves_mod.reshape(n * n_real, n_t)), totals.ravel())
        status = np.stack([fit_o.status, fit_m.status], axis=-1).reshape(n, n_real, 2)
        status[~ok] = STATUS_FAILED
        totals[~ok] = np.nan
        out = PointResults(
            t_fit_orig=fit_o.t_fit.reshape(n, n_real),
            t_fit_mod=fit_m.t_fit.reshape(n, n_real),
            err_orig=fit_o.err.reshape(n, n_real, 2),
            err_mod=fit_m.err.reshape(n, n_real, 2),
            status=status,
            norm=np.where(ok, norms, np.nan),
            counts=totals,
            curve_orig=fit_o.curves.reshape(n, n_real, n_t) if s.curves else None,
            curve_mod=fit_m.curves.reshape(n, n_real, n_t) if s.curves else None,
        )
        for name in ("t_fit_orig", "t_fit_mod", "err_orig", "err_mod"):
            getattr(out, name)[~ok] = np.nan
        return out

    def _blocked_profiles(
        self,
        data: np.ndarray,
        const: np.ndarray,
        totals: np.ndarray,
        index: np.ndarray,
        members: np.ndarray,
        tt: _ThetaTemplates | None,
        out: np.ndarray,
    ) -> None:
        """Write the profiles (n_real, n_T) of the points ``members`` into ``out``.

        ``const``/``totals`` are :func:`fitstat.data_terms` of ``data`` (all points) or of
        ``data[members]``. Spectra go through fixed-shape blocks, point p at block row
        index[p] % per_block.
        """
        if const.shape[0] != data.shape[0]:
            full_c, full_t = np.zeros(data.shape[:2]), np.zeros(data.shape[:2])
            full_c[members], full_t[members] = const, totals
            const, totals = full_c, full_t
        f = self.fitter
        n, n_real, n_chan = data.shape
        if members.size == 0:
            return
        n_t = f.tgrid.size
        per_block = max(1, BLOCK_ROWS // n_real)
        slots = index[members] % per_block
        block_of = _occurrence(slots)
        lt = None if tt is None else tt.log_templates
        lS = None if tt is None else tt.log_totals
        rows = per_block * n_real
        for b in range(int(block_of.max()) + 1):
            sel = np.flatnonzero(block_of == b)
            block = np.zeros((per_block, n_real, n_chan))
            block_const = np.zeros((per_block, n_real))
            block_total = np.zeros((per_block, n_real))
            block[slots[sel]] = data[members[sel]]
            block_const[slots[sel]] = const[members[sel]]
            block_total[slots[sel]] = totals[members[sel]]
            terms = (f._to(block_total.reshape(rows)), f._to(block_const.reshape(rows)))
            curves = f.profiles(f._to(block.reshape(rows, n_chan)), lt, lS, terms)
            curves = f._np(curves).reshape(per_block, n_real, n_t)
            out[members[sel]] = curves[slots[sel]]


def _occurrence(slots: np.ndarray) -> np.ndarray:
    """For each entry, how many earlier entries share its slot (0, 1, 2, ...)."""
    out = np.zeros(slots.size, dtype=np.int64)
    seen: dict[int, int] = {}
    for i, s in enumerate(slots.tolist()):
        out[i] = seen.get(s, 0)
        seen[s] = out[i] + 1
    return out
