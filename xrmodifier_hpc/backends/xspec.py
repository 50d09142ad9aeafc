"""The PyXspec backend: the ``native`` contract, computed by a real XSPEC (inside the container).

``make_backend`` imports this module only when ``backend = "xspec"`` is chosen. The module
itself imports anywhere (its helpers are plain functions); PyXspec is imported when the first
:class:`XspecBackend` is built, because XSPEC reads ``$HOME/.xspec`` and ``$PFILES`` once, at
start-up, and those must already point at this process's own scratch folder by then. Where
PyXspec is missing the constructor raises ImportError, which ``make_backend`` turns into a
one-line error saying to run inside the container.

One XSPEC per process: XSPEC is a process-wide singleton (one ``AllData``, one ``AllModels``),
so every MPI rank is its own process with its own scratch folder (HOME, PFILES, the modified
ARFs), and every point starts from ``AllData.clear()`` / ``AllModels.clear()`` so no state
leaks from one point to the next. The PyXspec calls follow the PyXspec reference
(heasarc.gsfc.nasa.gov/xanadu/xspec/python/html): ``Xset``, ``Fit``, ``AllData.fakeit``,
``FakeitSettings``, ``Spectrum.response.arf``, ``Fit.error``, ``Fit.steppar``.

Per point and realisation r: ``Xset.seed`` is set from the point's own random stream
(:func:`realisation_seeds`), so a point's spectra do not depend on batching or rank layout.
The spectrum is faked through the MODIFIED response, the band is re-applied (fakeit resets
the noticed channels), fitted with the modified ARF (T1', ``t_fit_mod``), then the ARF is
swapped back to the original and the same counts are fitted again (T1, ``t_fit_orig``).
"""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from xrmodifier_hpc.backends.base import (
    STATUS_AT_GRID_BOUND,
    STATUS_ERROR_AT_BOUND,
    STATUS_FAILED,
    STATUS_NOT_CONVERGED,
    STATUS_OK,
    STATUS_TOO_FEW_COUNTS,
    Backend,
    PointResults,
    SimulationSettings,
)
from xrmodifier_hpc.config.grid import point_rng
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.ogip import write_modified_arf
from xrmodifier_hpc.runtime.environment import process_scratch_dir

if TYPE_CHECKING:
    from xrmodifier_hpc.config import Config
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.physics.modifiers import Modifier
    from xrmodifier_hpc.physics.spectra import Model

log = logging.getLogger(__name__)

#: ``Xset.seed`` takes a C int: derived seeds lie in [1, 2**31 - 1)
SEED_MAX = 2**31 - 1
#: the hard limits of the temperature parameter sit this far (relative) outside the fit grid,
#: because XSPEC never lets a parameter reach its hard limit and steppar must visit the ends
LIMIT_MARGIN = 1e-3
#: ``Fit.error`` retries after XSPEC reports "new minimum found" (it aborts the search then)
ERROR_RETRIES = 3

# Positions in the 9-letter status string of ``Parameter.error`` (XSPEC manual, ``tclout
# error``): new minimum found, non-monotonicity detected, minimization may have run into
# problem, hit hard lower limit, hit hard upper limit, parameter was frozen, search failed in
# -ve direction, search failed in +ve direction, reduced chi-squared too high.
ERR_NEW_MINIMUM = 0
ERR_NON_MONOTONIC = 1
ERR_MINIMIZATION = 2
ERR_HARD_LOWER = 3
ERR_HARD_UPPER = 4
ERR_SEARCH_LOWER = 6
ERR_SEARCH_UPPER = 7


# --------------------------------------------------------------------------------------------
# plain helpers (no XSPEC needed)
# --------------------------------------------------------------------------------------------


def realisation_seeds(seed: int, index: int, n_real: int, stream: int) -> np.ndarray:
    """``Xset.seed`` values for the ``n_real`` realisations of grid point ``index``.

    Drawn from the point's own stream (:func:`grid.point_rng`), so they depend only on
    ``(seed, stream, index)``: the same point gets the same spectra on any rank, in any batch.
    """
    return point_rng(seed, index, stream).integers(1, SEED_MAX, size=n_real, dtype=np.int64)


@dataclass(frozen=True)
class ScratchLayout:
    """This process's XSPEC scratch folder: ``home`` (HOME: XSPEC writes ``~/.xspec``),
    ``pfiles`` (the user half of PFILES), ``inputs`` (links to the responses under names
    without blanks or brackets, which XSPEC's command parser would split or interpret)
    and one ``arf-N`` folder per backend for the modified ARFs."""

    root: Path

    @property
    def home(self) -> Path:
        return self.root / "home"

    @property
    def pfiles(self) -> Path:
        return self.root / "pfiles"

    @property
    def inputs(self) -> Path:
        return self.root / "inputs"

    def arf_dir(self, owner: int) -> Path:
        return self.root / f"arf-{owner}"

    def create(self) -> None:
        for path in (self.home, self.pfiles, self.inputs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


def xspec_environment(layout: ScratchLayout, environ: Mapping[str, str]) -> dict[str, str]:
    """The variables XSPEC must see before it starts, for batch use in ``layout``.

    PFILES is "user;system" (HEASoft): the user half moves to the scratch folder so parallel
    processes never write the same parameter file; the system half is kept from an existing
    PFILES, else ``$HEADAS/syspfiles``. HEADASNOQUERY and HEADASPROMPT=/dev/null stop any
    tool from prompting or opening the terminal (HEASoft's batch-processing advice).
    """
    existing = environ.get("PFILES", "")
    system = existing.split(";", 1)[1] if ";" in existing else ""
    if not system and environ.get("HEADAS"):
        system = str(Path(environ["HEADAS"]) / "syspfiles")
    return {
        "HOME": str(layout.home),
        "PFILES": f"{layout.pfiles};{system}",
        "HEADASNOQUERY": "",
        "HEADASPROMPT": "/dev/null",
    }


_TABLE = re.compile(r"\b(atable|mtable|etable)\{([^}]*)\}")


def xspec_expression(expression: str, base: Path) -> str:
    """The model expression for XSPEC: table-model files (``atable{t.fits}``) made absolute
    against ``base`` (the config's folder), since XSPEC resolves them against its working
    directory."""

    def absolute(match: re.Match) -> str:
        path = Path(match.group(2).strip())
        if not path.is_absolute():
            path = base / path
        return f"{match.group(1)}{{{path.resolve()}}}"

    # the native ``bremss{xspec}`` names XSPEC's own bremss; the seam-smoothed variant exists
    # only natively (spectra.gaunt_factor)
    if re.search(r"\bbremss\{\s*smooth\s*\}", expression):
        raise UserError(
            "bremss{smooth} exists only in the native backend; XSPEC's bremss is bremss",
            "[source.model]",
        )
    expression = re.sub(r"\bbremss\{\s*xspec\s*\}", "bremss", expression)
    return _TABLE.sub(absolute, expression)


def band_ignore(band: tuple[float, float]) -> str:
    """The ``Spectrum.ignore`` argument keeping only ``band`` (keV). Numbers carry a decimal
    point, which is how XSPEC tells energies from channel numbers."""
    lo, hi = band
    return f"**-{float(lo):.6f} {float(hi):.6f}-**"


def steppar_command(tgrid: np.ndarray, par_index: int) -> str | None:
    """``Fit.steppar`` argument that visits exactly ``tgrid`` (keV), or None when the grid is
    neither log- nor linearly spaced (the profile is then computed point by point).

    ``N`` steps give ``N + 1`` trials; ``best`` restarts the other free parameters (the norm)
    from the best fit at every trial."""
    grid = np.asarray(tgrid, dtype=np.float64)
    if grid.size < 2:
        return None
    steps = grid.size - 1
    if np.allclose(np.diff(np.log(grid)), np.log(grid[-1] / grid[0]) / steps, rtol=1e-6):
        scale = "log"
    elif np.allclose(np.diff(grid), (grid[-1] - grid[0]) / steps, rtol=1e-6):
        scale = "nolog"
    else:
        return None
    return f"best {scale} {par_index} {float(grid[0])!r} {float(grid[-1])!r} {steps}"


def fit_status(best: float, bounds: tuple[float, float], flags: str) -> int:
    """Status bits (``base.STATUS_*``) of one fit from its best temperature, the fit-grid
    bounds (keV) and the status string of ``Parameter.error``."""
    status = STATUS_OK
    lo, hi = bounds
    if not np.isfinite(best):
        return STATUS_FAILED
    if best <= lo or best >= hi:
        status |= STATUS_AT_GRID_BOUND
    flags = flags.ljust(9, "F")
    if flags[ERR_HARD_LOWER] == "T" or flags[ERR_HARD_UPPER] == "T":
        status |= STATUS_ERROR_AT_BOUND
    if any(
        flags[i] == "T"
        for i in (
            ERR_NEW_MINIMUM,
            ERR_NON_MONOTONIC,
            ERR_MINIMIZATION,
            ERR_SEARCH_LOWER,
            ERR_SEARCH_UPPER,
        )
    ):
        status |= STATUS_NOT_CONVERGED
    return status


def interval_distances(best: float, low: float, high: float, flags: str) -> tuple[float, float]:
    """Distances (keV) from the best fit down to ``low`` and up to ``high``, the ends of the
    delta-C = 1 interval from ``Parameter.error``; NaN on a side whose search failed (XSPEC
    then reports no usable end)."""
    flags = flags.ljust(9, "F")
    down = best - low if flags[ERR_SEARCH_LOWER] != "T" and low > 0 else float("nan")
    up = high - best if flags[ERR_SEARCH_UPPER] != "T" and high > 0 else float("nan")
    return (down, up)


# --------------------------------------------------------------------------------------------
# the process's XSPEC
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    """The one XSPEC of this process: its module, scratch folder and how many backends use it."""

    xspec: Any
    layout: ScratchLayout
    saved_env: dict[str, str | None]
    users: int = 0
    next_owner: int = 0


_session: _Session | None = None


def _open_session() -> _Session:
    """Prepare this process's scratch folder and environment, then import PyXspec."""
    global _session
    if _session is not None:
        _session.layout.create()
        _session.users += 1
        return _session
    if importlib.util.find_spec("xspec") is None:
        raise ImportError("No module named 'xspec' (PyXspec, built with HEASoft)")
    if not os.environ.get("HEADAS"):
        raise UserError(
            "PyXspec is installed but HEADAS is not set: initialise HEASoft first "
            "(source $HEADAS/headas-init.sh; the container's environment does this)"
        )
    layout = ScratchLayout(process_scratch_dir("xspec"))
    layout.create()
    new_env = xspec_environment(layout, os.environ)
    saved = {name: os.environ.get(name) for name in new_env}
    os.environ.update(new_env)
    try:
        module = importlib.import_module("xspec")
    except BaseException:
        _restore_env(saved)
        layout.remove()
        raise
    _session = _Session(module, layout, saved, users=1)
    return _session


def _close_session(session: _Session) -> None:
    session.users -= 1
    if session.users <= 0:
        session.users = 0
        # XSPEC stays loaded (it cannot be unloaded); a later backend recreates the same folder
        session.layout.remove()
        _restore_env(session.saved_env)


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


# --------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------


@dataclass
class _FitResult:
    t_fit: float = float("nan")
    err: tuple[float, float] = (float("nan"), float("nan"))
    status: int = STATUS_FAILED
    curve: np.ndarray | None = None


@dataclass
class _ModelHandle:
    model: Any
    temperature: Any
    norm: Any
    frozen: dict[str, Any] = field(default_factory=dict)


class XspecBackend(Backend):
    """Simulate with ``fakeit`` and fit with C-stat in XSPEC, for one instrument.

    ``instrument``: the response whose ARF the modifier multiplies (its files are what XSPEC
    reads); ``model``: the parsed source model (XSPEC receives ``cfg.source.model``, the same
    expression); ``settings``: exposure (s), band (keV), realisations, seed, fit grid (keV).
    """

    name: ClassVar[str] = "xspec"

    def __init__(
        self,
        instrument: Instrument,
        model: Model | None,
        modifier: Modifier,
        settings: SimulationSettings,
        cfg: Config | None = None,
        role: str = "target",
        expression: str | None = None,
    ) -> None:
        if instrument.rmf_path is None:
            raise UserError("the XSPEC backend reads the response from files: no RMF path")
        self.instrument = instrument
        self.modifier = modifier
        self.settings = settings
        self.role = role
        expression = expression or (cfg.source.model if cfg is not None else None)
        if not expression:
            raise UserError("the XSPEC backend needs the source model expression")
        base = cfg.path.parent if cfg is not None else Path.cwd()
        self.expression = xspec_expression(expression, base)
        self._tgrid = np.asarray(settings.fit_tgrid, dtype=np.float64)
        self._bounds = (float(self._tgrid.min()), float(self._tgrid.max()))
        self._norm_cache: dict[float, float] = {}
        self._closed = False
        self._session = _open_session()
        try:
            self._xs = self._session.xspec
            self._owner = self._session.next_owner
            self._session.next_owner += 1
            self._arf_dir = self._session.layout.arf_dir(self._owner)
            self._arf_dir.mkdir(parents=True, exist_ok=True)
            self._rmf, self._arf = self._link_inputs()
            self._configure()
            self._new_model()  # checks the expression and parameter names once, up front
        except BaseException:
            self.close()
            raise

    # ---------------------------------------------------------------------------- set-up

    def _link_inputs(self) -> tuple[str, str | None]:
        """Links to the RMF and original ARF under plain names in the scratch folder."""
        inputs = self._session.layout.inputs
        names = {}
        for kind, path in (("rmf", self.instrument.rmf_path), ("arf", self.instrument.arf_path)):
            if path is None:
                names[kind] = None
                continue
            link = inputs / f"{self.role}-{self._owner}.{kind}"
            link.unlink(missing_ok=True)
            link.symlink_to(Path(path).resolve())
            names[kind] = str(link)
        return names["rmf"], names["arf"]

    def _configure(self) -> None:
        """Process-wide XSPEC settings, re-applied by every backend before it runs."""
        xs = self._xs
        xs.Xset.chatter = 0
        xs.Xset.logChatter = 0
        xs.Xset.allowPrompting = False
        xs.Xset.abund = self.settings.abund
        xs.Xset.xsect = self.settings.xsect
        xs.Fit.query = "yes"
        xs.Fit.statMethod = "cstat"
        apecroot = os.environ.get("XRM_APECROOT")
        if apecroot:
            # AtomDB files outside $HEADAS/../spectral/modelData (e.g. a bind mount): XSPEC's
            # APECROOT takes a version, a file root or a full path root
            xs.Xset.addModelString("APECROOT", apecroot)

    def _new_model(self) -> _ModelHandle:
        xs = self._xs
        xs.AllModels.clear()
        try:
            model = xs.Model(self.expression)
        except Exception as exc:
            raise UserError(
                f"XSPEC does not accept the model {self.expression!r}: {exc}", "[source.model]"
            ) from None
        params: dict[str, list[Any]] = {}
        for comp_name in model.componentNames:
            comp = getattr(model, comp_name)
            for par_name in comp.parameterNames:
                params.setdefault(par_name, []).append(getattr(comp, par_name))

        def one(name: str) -> Any:
            found = params.get(name, [])
            if len(found) != 1:
                what = "no" if not found else f"{len(found)} parameters named"
                raise UserError(
                    f"the XSPEC model {self.expression!r} has {what} {name!r}: the backend "
                    "needs exactly one (one additive component, one temperature)",
                    "[source.model]",
                )
            return found[0]

        handle = _ModelHandle(model, one(self.settings.temperature_param), one("norm"))
        for name, value in self.settings.source_params.items():
            par = one(name)
            par.values = float(value)
            par.frozen = True
            handle.frozen[name] = par
        lo, hi = self._bounds
        handle.temperature.values = self._temperature_spec(float(np.sqrt(lo * hi)))
        return handle

    def _temperature_spec(self, value: float, simulate: bool = False) -> list[float]:
        """XSPEC's six numbers for the temperature parameter (value, delta, hard and soft
        limits; keV). Fitting: the limits sit just outside the fit grid, so a best fit pinned
        there is "at bound". Simulating: widened to hold ``value`` too, since a true
        temperature may lie outside the fit grid (the fit then runs into the bound)."""
        lo, hi = self._bounds
        lo, hi = lo * (1 - LIMIT_MARGIN), hi * (1 + LIMIT_MARGIN)
        if simulate:
            lo, hi = min(lo, 0.5 * value), max(hi, 2.0 * value)
        return [value, 0.01 * value, lo, lo, hi, hi]

    # ---------------------------------------------------------------------------- public

    def version(self) -> str:
        pyxspec, xspec = self._xs.Xset.version
        return f"XSPEC {xspec} (PyXspec {pyxspec})"

    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        t_true = np.asarray(t_true, dtype=np.float64).reshape(-1)
        index = np.asarray(index, dtype=np.int64).reshape(-1)
        n, n_real, n_t = t_true.size, self.settings.realisations, self._tgrid.size
        if theta.shape[0] != n or index.size != n:
            raise ValueError("theta, t_true and index must describe the same number of points")
        if n:
            self.modifier.check_theta(theta)
        curves = self.settings.curves
        nan = np.nan
        out = PointResults(
            t_fit_orig=np.full((n, n_real), nan),
            t_fit_mod=np.full((n, n_real), nan),
            err_orig=np.full((n, n_real, 2), nan),
            err_mod=np.full((n, n_real, 2), nan),
            status=np.zeros((n, n_real, 2), dtype=np.uint8),
            norm=np.full(n, nan),
            counts=np.zeros((n, n_real)),
            curve_orig=np.full((n, n_real, n_t), nan) if curves else None,
            curve_mod=np.full((n, n_real, n_t), nan) if curves else None,
        )
        self._configure()
        for i in range(n):
            point_norm = float(norm[i]) if norm is not None else self._norm_for(t_true[i])
            out.norm[i] = point_norm
            self._run_point(theta[i], float(t_true[i]), int(index[i]), point_norm, out, i)
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        session = getattr(self, "_session", None)
        if session is None:
            return
        try:
            session.xspec.AllData.clear()
            session.xspec.AllModels.clear()
        except Exception:  # noqa: BLE001 - closing must not fail because XSPEC did
            log.debug("XSPEC clear failed while closing", exc_info=True)
        shutil.rmtree(getattr(self, "_arf_dir", session.layout.root / "-"), ignore_errors=True)
        _close_session(session)

    # ---------------------------------------------------------------------------- per point

    def _norm_for(self, t_true: float) -> float:
        """Model normalisation (XSPEC units) for one true temperature: ``settings.norm``, or
        the one giving ``settings.counts`` expected counts in the band through the ORIGINAL
        response (an asimov fakeit at norm 1, scaled)."""
        if self.settings.norm is not None:
            return float(self.settings.norm)
        key = float(t_true)
        if key not in self._norm_cache:
            xs = self._xs
            xs.AllData.clear()
            handle = self._new_model()
            handle.temperature.values = self._temperature_spec(key, simulate=True)
            handle.norm.values = 1.0
            fake = xs.FakeitSettings(
                response=self._rmf, arf=self._arf or "", exposure=self.settings.exposure
            )
            xs.AllData.fakeit(1, fake, applyStats=False, noWrite=True)
            spectrum = xs.AllData(1)
            spectrum.ignore(band_ignore(self.settings.band))
            unit_counts = float(np.sum(spectrum.values)) * float(spectrum.exposure)
            if not unit_counts > 0:
                raise UserError(
                    f"the model gives no counts in the band at kT = {key:g} keV: cannot set "
                    "the normalisation from simulation.counts",
                    "[simulation.counts]",
                )
            self._norm_cache[key] = float(self.settings.counts) / unit_counts
        return self._norm_cache[key]

    def _run_point(
        self, theta: np.ndarray, t_true: float, index: int, norm: float, out: PointResults, i: int
    ) -> None:
        xs = self._xs
        multiplier = self.modifier.evaluate(self.instrument.e_mid, theta)
        arf_path = self._arf_dir / f"point-{index}.arf"
        write_modified_arf(
            arf_path,
            self.instrument,
            self.modifier.name,
            self.modifier.param_names,
            theta,
            np.asarray(multiplier, dtype=np.float64).reshape(self.instrument.area.shape),
        )
        seeds = realisation_seeds(
            self.settings.seed, index, self.settings.realisations, self.settings.stream
        )
        try:
            for r, seed in enumerate(seeds):
                xs.AllData.clear()
                handle = self._new_model()
                handle.temperature.values = self._temperature_spec(t_true, simulate=True)
                handle.norm.values = norm
                xs.Xset.seed = int(seed)
                fake = xs.FakeitSettings(
                    response=self._rmf, arf=str(arf_path), exposure=self.settings.exposure
                )
                xs.AllData.fakeit(1, fake, applyStats=self.settings.mode == "poisson", noWrite=True)
                spectrum = xs.AllData(1)
                spectrum.ignore(band_ignore(self.settings.band))
                counts = float(np.sum(spectrum.values)) * float(spectrum.exposure)
                out.counts[i, r] = counts
                if counts < self.settings.min_counts:
                    out.status[i, r, :] = STATUS_TOO_FEW_COUNTS
                    continue
                mod = self._fit(handle, t_true, norm)
                # same counts, original effective area: what telescope 1's users report (T1)
                spectrum.response.arf = self._arf or ""
                spectrum.ignore(band_ignore(self.settings.band))
                orig = self._fit(handle, t_true, norm)
                for slot, res, t_out, e_out, c_out in (
                    (0, orig, out.t_fit_orig, out.err_orig, out.curve_orig),
                    (1, mod, out.t_fit_mod, out.err_mod, out.curve_mod),
                ):
                    t_out[i, r] = res.t_fit
                    e_out[i, r] = res.err
                    out.status[i, r, slot] = res.status
                    if c_out is not None and res.curve is not None:
                        c_out[i, r] = res.curve
        finally:
            xs.AllData.clear()
            arf_path.unlink(missing_ok=True)

    def _fit(self, handle: _ModelHandle, t_start: float, norm_start: float) -> _FitResult:
        """C-stat fit of kT and norm, the delta-C = 1 interval of kT, and the profile curve."""
        xs = self._xs
        kt = handle.temperature
        result = _FitResult()
        try:
            kt.frozen = False
            kt.values = self._temperature_spec(float(np.clip(t_start, *self._bounds)))
            handle.norm.values = norm_start
            xs.Fit.perform()
            flags = "F" * 9
            for _ in range(ERROR_RETRIES):
                xs.Fit.error(f"stopat 20 0.01 maximum 1e6 1.0 {kt.index}")
                low, high, flags = kt.error
                if flags[ERR_NEW_MINIMUM] != "T":
                    break
                xs.Fit.perform()  # XSPEC aborted the search at a better minimum: refit there
            best = float(kt.values[0])
            result.t_fit = best
            result.err = interval_distances(best, float(low), float(high), flags)
            result.status = fit_status(best, self._bounds, flags)
            if self.settings.curves:
                result.curve = self._profile(handle, best)
        except Exception as exc:  # noqa: BLE001 - an XSPEC failure is a status, not a crash
            log.debug("XSPEC fit failed: %s", exc)
            return _FitResult()
        return result

    def _profile(self, handle: _ModelHandle, best: float) -> np.ndarray:
        """C(T) on the fit grid with the norm refitted at every T (keV)."""
        xs = self._xs
        kt = handle.temperature
        command = steppar_command(self._tgrid, kt.index)
        if command is not None:
            xs.Fit.steppar(command)
            stepped = np.asarray(xs.Fit.stepparResults(str(kt.index)), dtype=np.float64)
            if stepped.shape == self._tgrid.shape and np.allclose(stepped, self._tgrid, rtol=1e-5):
                return np.asarray(xs.Fit.stepparResults("statistic"), dtype=np.float64)
        # irregular grid (or steppar visited other values): freeze kT at each grid value
        best_norm = float(handle.norm.values[0])
        curve = np.empty(self._tgrid.size)
        for j, t in enumerate(self._tgrid):
            kt.values = float(t)
            kt.frozen = True
            handle.norm.values = best_norm
            xs.Fit.perform()
            curve[j] = float(xs.Fit.statistic)
        kt.frozen = False
        kt.values = best
        handle.norm.values = best_norm
        return curve
