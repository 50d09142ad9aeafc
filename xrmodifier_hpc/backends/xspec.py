"""The PyXspec backend: the ``native`` contract computed by a real XSPEC (in the container).

It accepts any XSPEC model expression, and also gives XSPEC's model evaluation for
``xrmodifier tabulate``.

``make_backend`` imports this module only when ``backend = "xspec"`` is chosen. The module
itself imports anywhere (its helpers are plain functions); PyXspec is imported when the first
:class:`XspecBackend` (or :func:`validate_model`, :class:`XspecTabulator`) is built, because
XSPEC reads ``$HOME/.xspec`` and ``$PFILES`` once, at start-up, and those must already point
at this process's own scratch folder by then. Where PyXspec is missing the constructor raises
ImportError, which ``make_backend`` turns into a one-line error saying to run inside the
container.

One XSPEC per process: XSPEC is a process-wide singleton (one ``AllData``, one
``AllModels``), so every MPI rank is its own process with its own scratch folder (HOME,
PFILES, the modified ARFs), and every point starts from ``AllData.clear()`` /
``AllModels.clear()`` so no state leaks from one point to the next. The PyXspec calls follow
the PyXspec reference (heasarc.gsfc.nasa.gov/xanadu/xspec/python/html) and its source
(``xspec/xset.py``, ``fit.py``, ``model.py``): ``Xset``, ``Fit``, ``AllData.fakeit``,
``FakeitSettings``, ``Spectrum.response.arf``, ``Fit.error``, ``Fit.steppar``,
``Model.values``, ``AllModels.setEnergies``.

Nothing of XSPEC's reaches the terminal. XSPEC prints through C++ streams straight to file
descriptors 1 and 2, whatever Python's ``sys.stdout`` is, so while XSPEC works both
descriptors point at the rank's log (``WORKDIR/logs/xspec-rankN.log``); chatter is 0 on the
console and in XSPEC's own log. Start-up messages are avoided at the source: XSPEC creates
``$HOME/.xspec`` and ``$HOME/.xspec/cache`` and prints "Creating a $HOME/.xspec directory for
you" when they are missing (XSPEC's ``GlobalData``), so the scratch HOME holds both before
import. At exit XSPEC moves ``~/.xspec/cache/xautosav_<pid>.xcm`` into place (``mv -f``,
XSGlobal::cleanUp, run from ``Py_AtExit`` after every Python exit handler), so the scratch
HOME stays until the process ends; autosave itself is turned off (``autosave off``: the file
stays empty and XSPEC removes it instead), which also spares a save file being rewritten
after every command.

Per point and realisation r: ``Xset.seed`` is set from the point's own random stream
(:func:`realisation_seeds`), so a point's spectra do not depend on batching or rank layout.
The spectrum is faked through the MODIFIED response, the band is re-applied (fakeit resets
the noticed channels), fitted with the modified ARF (T1', ``t_fit_mod``), then the ARF is
swapped back to the original and the same counts are fitted again (T1, ``t_fit_orig``).

Each fit (:meth:`XspecBackend._fit`) first scans C(T) on the fit grid with ``steppar``
(norm refitted at every T: the stored profile), starts XSPEC's fit from the best node of that
scan, so a gradient fit cannot stall in a local minimum far from the global one (XSPEC's
bremss changes Gaunt-factor regime near kT = 13.6 keV, and Levenberg-Marquardt stops there),
then runs ``Fit.error``; when the error search finds a lower statistic ("new best fit found")
the fit is redone from there until the search runs clean (``STATUS_REFITTED``). Only a fit
that still ends above the scan's best node, or whose error search still fails, is flagged
``not_converged``.
"""

from __future__ import annotations

import ctypes
import importlib
import importlib.util
import logging
import os
import re
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
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
    STATUS_REFITTED,
    STATUS_TOO_FEW_COUNTS,
    Backend,
    PointResults,
    SimulationSettings,
)
from xrmodifier_hpc.config.grid import point_rng
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.artefacts import Workdir
from xrmodifier_hpc.io.ogip import write_modified_arf
from xrmodifier_hpc.runtime.environment import detect, process_scratch_dir

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
#: fits redone after ``Fit.error`` reports "new minimum found" before giving up (each redo
#: starts from the lower minimum the search found)
ERROR_RETRIES = 5
#: a fit that ends this much (C-stat) above the best node of its own C(T) scan has not
#: reached the global minimum
SCAN_TOLERANCE = 1e-3
#: energy bins of the check that the model gives photons in the band (``validate_model``)
CHECK_BINS = 200

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


def pyxspec_available() -> bool:
    """Tell whether ``import xspec`` can work here (PyXspec on the path: inside the container).

    Returns
    -------
    bool
        True when the ``xspec`` module is found (it is not imported).
    """
    return importlib.util.find_spec("xspec") is not None


def realisation_seeds(seed: int, index: int, n_real: int, stream: int) -> np.ndarray:
    """Return the ``Xset.seed`` values for the ``n_real`` realisations of grid point ``index``.

    Drawn from the point's own stream (:func:`grid.point_rng`), so they depend only on
    ``(seed, stream, index)``: the same point gets the same spectra on any rank, in any batch.

    Parameters
    ----------
    seed : int
        The global seed (``[simulation] seed``).
    index : int
        The point's stream index.
    n_real : int
        Number of realisations.
    stream : int
        The random stream (``grid.GRID_STREAM``, ``MOCK_STREAM``, ``OFFGRID_STREAM``).

    Returns
    -------
    numpy.ndarray
        Seeds, shape ``(n_real,)``, int64, in ``[1, SEED_MAX)`` (XSPEC takes a C int).
    """
    return point_rng(seed, index, stream).integers(1, SEED_MAX, size=n_real, dtype=np.int64)


@dataclass(frozen=True)
class ScratchLayout:
    """Scratch folder of this process's XSPEC.

    It holds ``home`` (HOME, holding the ``.xspec/cache`` XSPEC expects), ``pfiles`` (the user
    half of PFILES), ``inputs`` (links to the responses under names without blanks or
    brackets, which XSPEC's command parser would split or interpret) and one ``arf-N`` folder
    per backend for the modified ARFs.

    Attributes
    ----------
    root : Path
        The process's scratch folder (``runtime.environment.process_scratch_dir``).
    """

    root: Path

    @property
    def home(self) -> Path:
        """XSPEC's HOME (``root/home``)."""
        return self.root / "home"

    @property
    def xspec_cache(self) -> Path:
        """``$HOME/.xspec/cache``: XSPEC's autosave and undo files."""
        return self.home / ".xspec" / "cache"

    @property
    def pfiles(self) -> Path:
        """The user half of PFILES (``root/pfiles``)."""
        return self.root / "pfiles"

    @property
    def inputs(self) -> Path:
        """Links to the responses under plain names (``root/inputs``)."""
        return self.root / "inputs"

    def arf_dir(self, owner: int) -> Path:
        """Return the folder for the modified ARFs of one backend.

        Parameters
        ----------
        owner : int
            The backend's number within this process's XSPEC session.

        Returns
        -------
        Path
            ``root/arf-<owner>`` (not created here).
        """
        return self.root / f"arf-{owner}"

    def create(self) -> None:
        """Create the cache, pfiles and inputs folders (mode 0700); existing ones are kept."""
        for path in (self.xspec_cache, self.pfiles, self.inputs):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)

    def remove_work(self) -> None:
        """Remove what the backends put here (links, modified ARFs, parameter files).

        Keep ``home`` (a loaded XSPEC still uses ``~/.xspec/cache`` when the process exits)
        and the log.
        """
        for path in self.root.glob("*"):
            if path.is_dir() and path != self.home:
                shutil.rmtree(path, ignore_errors=True)

    def remove(self) -> None:
        """Remove the whole scratch folder (errors ignored)."""
        shutil.rmtree(self.root, ignore_errors=True)


def xspec_environment(layout: ScratchLayout, environ: Mapping[str, str]) -> dict[str, str]:
    """Return the variables XSPEC must see before it starts, for batch use in ``layout``.

    PFILES is "user;system" (HEASoft): the user half moves to the scratch folder so parallel
    processes never write the same parameter file; the system half is kept from an existing
    PFILES, else ``$HEADAS/syspfiles``. HEADASNOQUERY and HEADASPROMPT=/dev/null stop any
    tool from prompting or opening the terminal (HEASoft's batch-processing advice).

    Parameters
    ----------
    layout : ScratchLayout
        This process's scratch folder.
    environ : mapping of str to str
        The current environment (``os.environ``); only read.

    Returns
    -------
    dict of str to str
        ``HOME``, ``PFILES``, ``HEADASNOQUERY`` and ``HEADASPROMPT``, to set before import.
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
    """Return the model expression for XSPEC.

    Table-model files (``atable{t.fits}``) are made absolute against ``base`` (the config's
    folder), since XSPEC resolves them against its working directory; the native
    ``bremss{xspec}`` is XSPEC's ``bremss``.

    Parameters
    ----------
    expression : str
        The model expression of ``[source] model``.
    base : Path
        Folder that relative table files are resolved against.

    Returns
    -------
    str
        The expression with absolute table paths and ``bremss{xspec}`` as ``bremss``.

    Raises
    ------
    UserError
        The expression uses ``bremss{smooth}``, which exists only in the native backend
        (names ``[source.model]``).
    """

    def absolute(match: re.Match) -> str:
        path = Path(match.group(2).strip())
        if not path.is_absolute():
            path = base / path
        return f"{match.group(1)}{{{path.resolve()}}}"

    # the seam-smoothed variant exists only natively (spectra.gaunt_factor)
    if re.search(r"\bbremss\{\s*smooth\s*\}", expression):
        raise UserError(
            "bremss{smooth} exists only in the native backend; XSPEC's bremss is bremss",
            "[source.model]",
        )
    expression = re.sub(r"\bbremss\{\s*xspec\s*\}", "bremss", expression)
    return _TABLE.sub(absolute, expression)


def band_ignore(band: tuple[float, float]) -> str:
    """Return the ``Spectrum.ignore`` argument keeping only ``band`` (keV).

    Numbers carry a decimal point, which is how XSPEC tells energies from channel numbers.

    Parameters
    ----------
    band : tuple of float
        ``(low, high)`` energies (keV) to keep.

    Returns
    -------
    str
        ``"**-LOW HIGH-**"`` with six decimals.
    """
    lo, hi = band
    return f"**-{float(lo):.6f} {float(hi):.6f}-**"


def steppar_command(tgrid: np.ndarray, par_index: int) -> str | None:
    """Return the ``Fit.steppar`` argument that visits exactly ``tgrid`` (keV).

    None when the grid is neither log- nor linearly spaced (the profile is then computed point
    by point). ``N`` steps give ``N + 1`` trials; ``best`` restarts the other free parameters
    (the norm) from the best fit at every trial.

    Parameters
    ----------
    tgrid : numpy.ndarray
        Fit-temperature grid, shape ``(n_tgrid,)`` (keV), increasing.
    par_index : int
        XSPEC's index of the temperature parameter.

    Returns
    -------
    str or None
        ``"best log|nolog INDEX LOW HIGH STEPS"``, or None for fewer than two nodes or an
        irregular grid.
    """
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
    """Return the status bits (``base.STATUS_*``) of one fit.

    Parameters
    ----------
    best : float
        Best-fit temperature (keV); non-finite gives ``STATUS_FAILED``.
    bounds : tuple of float
        ``(low, high)`` ends of the fit-temperature grid (keV); a best fit on or beyond them
        is ``STATUS_AT_GRID_BOUND``.
    flags : str
        The 9-letter ``T``/``F`` status string of ``Parameter.error`` (padded with ``F``).

    Returns
    -------
    int
        OR of ``STATUS_AT_GRID_BOUND``, ``STATUS_ERROR_AT_BOUND`` (hard limit hit) and
        ``STATUS_NOT_CONVERGED`` (new minimum, non-monotonic, minimisation problem or failed
        search); ``STATUS_OK`` (0) when none applies.
    """
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
    """Return the distances (keV) from the best fit down to ``low`` and up to ``high``.

    ``low`` and ``high`` are the ends of the delta-C = 1 interval from ``Parameter.error``;
    NaN on a side whose search failed (XSPEC then reports no usable end).

    Parameters
    ----------
    best : float
        Best-fit temperature (keV).
    low, high : float
        Lower and upper ends of the interval (keV); a value <= 0 counts as no end.
    flags : str
        The 9-letter ``T``/``F`` status string of ``Parameter.error``.

    Returns
    -------
    tuple of float
        ``(best - low, high - best)`` (keV), NaN where unusable.
    """
    flags = flags.ljust(9, "F")
    down = best - low if flags[ERR_SEARCH_LOWER] != "T" and low > 0 else float("nan")
    up = high - best if flags[ERR_SEARCH_UPPER] != "T" and high > 0 else float("nan")
    return (down, up)


def best_node(curve: np.ndarray) -> int | None:
    """Return the index of the lowest finite value of a C(T) scan, or None when none is finite.

    Parameters
    ----------
    curve : numpy.ndarray
        C-statistic on the fit-temperature grid, shape ``(n_tgrid,)``.

    Returns
    -------
    int or None
        Index into ``curve`` of its finite minimum; None when no value is finite.
    """
    curve = np.asarray(curve, dtype=np.float64)
    finite = np.isfinite(curve)
    if not finite.any():
        return None
    return int(np.flatnonzero(finite)[np.argmin(curve[finite])])


def find_parameter(model: Any, name: str, expression: str) -> Any:
    """Return the one parameter of a PyXspec ``Model`` called ``name``.

    ``name`` is a bare name (``kT``) or ``component.name`` (``apec.kT``, for a name that
    several components share).

    Parameters
    ----------
    model : xspec.Model
        The PyXspec model.
    name : str
        Parameter name, bare or qualified by its component.
    expression : str
        The model expression (for messages).

    Returns
    -------
    xspec.Parameter
        The parameter.

    Raises
    ------
    UserError
        No such parameter, or several (the message lists the qualified names to choose
        from), naming ``[source.model]``.
    """
    comp_name, _, par_name = name.rpartition(".")
    found, known = [], []
    for comp in model.componentNames:
        component = getattr(model, comp)
        for par in component.parameterNames:
            known.append(f"{comp}.{par}")
            if par == par_name and (not comp_name or comp == comp_name):
                found.append(getattr(component, par))
    if len(found) == 1:
        return found[0]
    if not found:
        import difflib

        bare = sorted({k.split(".", 1)[1] for k in known})
        close = difflib.get_close_matches(par_name, bare, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise UserError(
            f"the XSPEC model {expression!r} has no parameter {name!r}{hint}; its parameters: "
            f"{', '.join(bare)}",
            "[source.model]",
        )
    choices = [k for k in known if k.endswith(f".{par_name}")]
    raise UserError(
        f"the XSPEC model {expression!r} has {len(found)} parameters named {name!r}: give one "
        f"of {', '.join(choices)}",
        "[source.model]",
    )


def xspec_log_path(workdir: Path | None, rank: int | None = None) -> Path | None:
    """Return where this rank's XSPEC output goes: ``WORKDIR/logs/xspec-rankN.log``.

    Parameters
    ----------
    workdir : Path or None
        The work folder; None: no log path (the log then lives in the scratch folder).
    rank : int, optional
        The MPI rank (default: detected from the environment).

    Returns
    -------
    Path or None
        The log file (not created here), or None without a work folder.
    """
    if workdir is None:
        return None
    rank = detect().rank if rank is None else rank
    return Workdir(Path(workdir)).logs / f"xspec-rank{rank}.log"


# --------------------------------------------------------------------------------------------
# XSPEC's output: file descriptors 1 and 2 point at the log while XSPEC works
# --------------------------------------------------------------------------------------------


def _flush_c_stdio() -> None:
    """Flush C's stdio buffers (XSPEC's C++ streams write through them)."""
    with suppress(OSError, AttributeError):  # no libc symbols: nothing to flush
        ctypes.CDLL(None).fflush(None)


class OutputCapture:
    """Point file descriptors 1 and 2 at ``log_fd`` while the block runs (re-entrant).

    Python's own ``sys.stdout``/``sys.stderr`` and C's stdio are flushed on both sides, so
    the product's lines before and after stay on the terminal and everything written in
    between (XSPEC's C++ streams, Fortran, ``mv``) lands in the log.

    Parameters
    ----------
    log_fd : int
        An open, writable file descriptor of the log (not closed here).
    """

    def __init__(self, log_fd: int) -> None:
        self.log_fd = log_fd
        self._depth = 0
        self._saved: tuple[int, int] | None = None

    def __enter__(self) -> OutputCapture:
        if self._depth == 0:
            self._flush()
            try:
                self._saved = (os.dup(1), os.dup(2))
                os.dup2(self.log_fd, 1)
                os.dup2(self.log_fd, 2)
            except OSError:  # pragma: no cover - closed standard descriptors
                self._saved = None
        self._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._depth -= 1
        if self._depth == 0 and self._saved is not None:
            self._flush()
            out, err = self._saved
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.close(out)
            os.close(err)
            self._saved = None

    @staticmethod
    def _flush() -> None:
        for stream in (sys.stdout, sys.stderr):
            with suppress(AttributeError, ValueError, OSError):
                stream.flush()
        _flush_c_stdio()


# --------------------------------------------------------------------------------------------
# the process's XSPEC
# --------------------------------------------------------------------------------------------


@dataclass
class _Session:
    """The one XSPEC of this process: its module, scratch folder, log and users."""

    xspec: Any
    layout: ScratchLayout
    saved_env: dict[str, str | None]
    log_path: Path
    capture: OutputCapture
    log_fd: int
    users: int = 0
    next_owner: int = 0


_session: _Session | None = None


def _open_log(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)


def _open_session(log_path: Path | None = None) -> _Session:
    """Prepare this process's scratch folder, environment and log, then import PyXspec.

    PyXspec's start-up output goes to the log.
    """
    global _session
    if _session is not None:
        _session.layout.create()
        if _session.users == 0:
            _session.saved_env = _apply_env(_session.layout)
        _session.users += 1
        return _session
    if not pyxspec_available():
        raise ImportError("No module named 'xspec' (PyXspec, built with HEASoft)")
    if not os.environ.get("HEADAS"):
        raise UserError(
            "PyXspec is installed but HEADAS is not set: initialise HEASoft first "
            "(source $HEADAS/headas-init.sh; the container's environment does this)"
        )
    layout = ScratchLayout(process_scratch_dir("xspec"))
    layout.create()
    log_path = log_path or layout.root / "xspec.log"
    log_fd = _open_log(log_path)
    capture = OutputCapture(log_fd)
    saved = _apply_env(layout)
    try:
        with capture:
            module = importlib.import_module("xspec")
            _quiet(module)
    except BaseException:
        _restore_env(saved)
        os.close(log_fd)
        layout.remove()
        raise
    _session = _Session(module, layout, saved, log_path, capture, log_fd, users=1)
    return _session


def _apply_env(layout: ScratchLayout) -> dict[str, str | None]:
    new_env = xspec_environment(layout, os.environ)
    saved = {name: os.environ.get(name) for name in new_env}
    os.environ.update(new_env)
    return saved


def _quiet(xs: Any) -> None:
    """Chatter 0 on the console and in XSPEC's log, no prompts, autosave off."""
    xs.Xset.chatter = 0
    xs.Xset.logChatter = 0
    xs.Xset.allowPrompting = False
    # PyXspec has no attribute for XSPEC's ``autosave`` command; its own setters send
    # commands through _pyXspec.doXspecCmd (xspec/xset.py), and so does this
    command = getattr(getattr(xs, "_pyXspec", None), "doXspecCmd", None)
    if command is not None:
        try:
            command(["autosave", "off"])
        except Exception:  # noqa: BLE001 - an XSPEC without the command keeps autosave
            log.debug("XSPEC refused 'autosave off'", exc_info=True)


def _close_session(session: _Session) -> None:
    session.users -= 1
    if session.users <= 0:
        session.users = 0
        # XSPEC stays loaded (it cannot be unloaded) and uses ~/.xspec/cache at exit; the
        # rest of the scratch folder goes, and a later backend recreates it
        session.layout.remove_work()
        _restore_env(session.saved_env)


def _restore_env(saved: Mapping[str, str | None]) -> None:
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextmanager
def _xspec_session(log_path: Path | None) -> Iterator[_Session]:
    session = _open_session(log_path)
    try:
        yield session
    finally:
        _close_session(session)


# --------------------------------------------------------------------------------------------
# models
# --------------------------------------------------------------------------------------------


@dataclass
class _ModelHandle:
    model: Any
    temperature: Any
    norm: Any
    frozen: dict[str, Any] = field(default_factory=dict)

    @property
    def parameter_names(self) -> list[str]:
        return [
            par
            for comp in self.model.componentNames
            for par in getattr(self.model, comp).parameterNames
        ]


def _build_model(xs: Any, expression: str, settings: SimulationSettings) -> _ModelHandle:
    """Clear ``AllModels``, then build XSPEC's model of ``expression``.

    The frozen parameters are set by XSPEC's names and the temperature and norm parameters
    are found.

    Raises
    ------
    UserError
        XSPEC refuses the expression, or a parameter name is unknown or ambiguous.
    """
    xs.AllModels.clear()
    try:
        model = xs.Model(expression)
    except Exception as exc:  # noqa: BLE001 - PyXspec raises plain Exceptions
        reason = " ".join(str(exc).split())
        raise UserError(
            f"XSPEC does not accept the model {expression!r}: {reason}", "[source.model]"
        ) from None
    handle = _ModelHandle(
        model,
        find_parameter(model, settings.temperature_param, expression),
        find_parameter(model, "norm", expression),
    )
    for name, value in settings.source_params.items():
        par = find_parameter(model, name, expression)
        try:
            par.values = float(value)
        except Exception as exc:  # noqa: BLE001
            reason = " ".join(str(exc).split())
            raise UserError(
                f"XSPEC does not take {name} = {value:g}: {reason}", f"[source.params.{name}]"
            ) from None
        par.frozen = True
        handle.frozen[name] = par
    return handle


def _band_photons(values: np.ndarray, edges: np.ndarray, band: tuple[float, float]) -> float:
    """Return the photons cm^-2 s^-1 in ``band`` (keV) from a model's values per bin of ``edges``.

    NaN when any value is not finite.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.size == 0 or not np.all(np.isfinite(values)):
        return float("nan")
    lo, hi = band
    inside = (edges[1:] > lo) & (edges[:-1] < hi)
    return float(values[inside].sum())


def _refuse_dark_model(expression: str, band: tuple[float, float], where: str) -> UserError:
    lo, hi = band
    return UserError(
        f"XSPEC's model {expression!r} gives no photons (zero or non-finite flux) in "
        f"{lo:g}-{hi:g} keV {where}: XSPEC returns zeros when a model's data files are "
        "missing (apec needs AtomDB: see the XSPEC log, and XRM_APECROOT in "
        "containers/README.md)",
        "[source.model]",
    )


def validate_model(cfg: Config) -> str:
    """Ask XSPEC whether ``[source]`` is a model it can compute.

    Checked: the expression, the temperature and frozen parameters by XSPEC's names, and
    photons in the band at the lowest and highest true temperature.

    Parameters
    ----------
    cfg : Config
        A config with ``backend = "xspec"``.

    Returns
    -------
    str
        One line: the XSPEC version, the expression and its parameters.

    Raises
    ------
    UserError
        One line naming the key: XSPEC refuses the expression or a value, a parameter name is
        unknown or ambiguous, or the model gives no photons in the band.
    ImportError
        PyXspec does not import here.
    """
    settings = SimulationSettings.from_config(cfg)
    expression = xspec_expression(cfg.source.model, cfg.path.parent)
    band = tuple(float(b) for b in settings.band)
    t_axis = cfg.temperatures.t_true.array
    with _xspec_session(xspec_log_path(cfg.workdir)) as session:
        xs = session.xspec
        with session.capture:
            _settings(xs, settings)
            xs.AllData.clear()
            xs.AllModels.setEnergies(f"{band[0]!r} {band[1]!r} {CHECK_BINS} log")
            try:
                handle = _build_model(xs, expression, settings)
                edges = np.asarray(handle.model.energies(0), dtype=np.float64)
                for t in (float(t_axis.min()), float(t_axis.max())):
                    try:
                        handle.temperature.values = float(t)
                    except Exception as exc:  # noqa: BLE001 - PyXspec raises plain Exceptions
                        reason = " ".join(str(exc).split())
                        raise UserError(
                            f"XSPEC does not take {settings.temperature_param} = {t:g}: {reason}",
                            "[temperatures.t_true]",
                        ) from None
                    handle.norm.values = 1.0
                    photons = _band_photons(handle.model.values(0), edges, band)
                    if not photons > 0:
                        raise _refuse_dark_model(
                            expression, band, f"at {settings.temperature_param} = {t:g} keV"
                        )
                names = handle.parameter_names
            finally:
                xs.AllModels.setEnergies("reset")
                xs.AllModels.clear()
            version = _version(xs)
    return (
        f"xspec: {version} accepts {cfg.source.model!r} (parameters {', '.join(names)}; "
        f"temperature {settings.temperature_param}; photons in {band[0]:g}-{band[1]:g} keV)"
    )


def _settings(xs: Any, settings: SimulationSettings) -> None:
    """Process-wide XSPEC settings, re-applied by every user before it runs."""
    _quiet(xs)
    xs.Xset.abund = settings.abund
    xs.Xset.xsect = settings.xsect
    xs.Fit.query = "yes"
    xs.Fit.statMethod = "cstat"
    apecroot = os.environ.get("XRM_APECROOT")
    if apecroot:
        # AtomDB files outside $HEADAS/../spectral/modelData (e.g. a bind mount): XSPEC's
        # APECROOT takes a version, a file root or a full path root
        xs.Xset.addModelString("APECROOT", apecroot)


def _version(xs: Any) -> str:
    pyxspec, xspec = xs.Xset.version
    return f"XSPEC {xspec} (PyXspec {pyxspec})"


# --------------------------------------------------------------------------------------------
# the backend
# --------------------------------------------------------------------------------------------


@dataclass
class _FitResult:
    t_fit: float = float("nan")
    err: tuple[float, float] = (float("nan"), float("nan"))
    status: int = STATUS_FAILED
    curve: np.ndarray | None = None


class XspecBackend(Backend):
    """Simulate with ``fakeit`` and fit with C-stat in XSPEC, for one instrument.

    Parameters
    ----------
    instrument : Instrument
        The response whose ARF the modifier multiplies (its files are what XSPEC reads).
    model : Model or None
        Unused (XSPEC parses ``expression`` itself); kept for the common constructor.
    modifier : Modifier
        The ARF modifier family.
    settings : SimulationSettings
        Exposure (s), band (keV), realisations, seed, fit grid (keV), temperature and frozen
        parameters by XSPEC's names, abundance and cross-section tables.
    cfg : Config, optional
        The config: its folder resolves table files, its work folder holds the XSPEC log.
    role : str
        ``"target"`` or ``"reference"`` (names the scratch links).
    expression : str, optional
        The XSPEC model expression (default ``cfg.source.model``): any expression XSPEC
        accepts, with exactly one ``norm`` and one temperature parameter.

    Raises
    ------
    ImportError
        PyXspec does not import (outside the container).
    UserError
        XSPEC refuses the model, a parameter name is unknown or ambiguous, or the model gives
        no photons in the band.
    """

    name: ClassVar[str] = "xspec"
    requires: ClassVar[str] = "PyXspec"
    where_available: ClassVar[str] = (
        "run inside the container (apptainer exec xrmodifier.sif xrmodifier ...)"
    )

    @classmethod
    def from_config(cls, cfg: Config, role: str = "target", **overrides) -> XspecBackend:
        """Build the backend for instrument ``role`` of ``cfg``.

        XSPEC parses ``[source] model`` itself, so no native model is built.

        Parameters
        ----------
        cfg : Config
            The loaded config.
        role : str
            ``"target"`` or ``"reference"``: the instrument whose response is used.
        **overrides
            Simulation settings replacing the config's (see ``SimulationSettings``).

        Returns
        -------
        XspecBackend
            The backend, with XSPEC loaded and the model checked.
        """
        from xrmodifier_hpc.io.ogip import Instrument
        from xrmodifier_hpc.physics.modifiers import get_modifier

        inst_cfg = getattr(cfg.instruments, role)
        instrument = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
        modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
        settings = SimulationSettings.from_config(cfg, role, **overrides)
        return cls(instrument, None, modifier, settings, cfg=cfg, role=role)

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
        self._session = _open_session(xspec_log_path(cfg.workdir if cfg is not None else None))
        try:
            self._xs = self._session.xspec
            self._owner = self._session.next_owner
            self._session.next_owner += 1
            self._arf_dir = self._session.layout.arf_dir(self._owner)
            self._arf_dir.mkdir(parents=True, exist_ok=True)
            self._rmf, self._arf = self._link_inputs()
            with self._session.capture:
                self._configure()
                # checks the expression and parameter names once, up front
                self._new_model()
        except BaseException:
            self.close()
            raise

    @property
    def log_path(self) -> Path:
        """Path of the XSPEC log of this process."""
        return self._session.log_path

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
        _settings(self._xs, self.settings)

    def _new_model(self) -> _ModelHandle:
        handle = _build_model(self._xs, self.expression, self.settings)
        lo, hi = self._bounds
        handle.temperature.values = self._temperature_spec(float(np.sqrt(lo * hi)))
        return handle

    def _temperature_spec(self, value: float, simulate: bool = False) -> list[float]:
        """Return XSPEC's six numbers for the temperature parameter.

        Value, delta, hard and soft limits (keV). Fitting: the limits sit just outside the fit
        grid, so a best fit pinned there is "at bound". Simulating: widened to hold ``value``
        too, since a true temperature may lie outside the fit grid (the fit then runs into the
        bound).
        """
        lo, hi = self._bounds
        lo, hi = lo * (1 - LIMIT_MARGIN), hi * (1 + LIMIT_MARGIN)
        if simulate:
            lo, hi = min(lo, 0.5 * value), max(hi, 2.0 * value)
        return [value, 0.01 * value, lo, lo, hi, hi]

    # ---------------------------------------------------------------------------- public

    def version(self) -> str:
        """Return XSPEC's and PyXspec's versions, recorded in artefacts' provenance.

        Returns
        -------
        str
            ``"XSPEC <version> (PyXspec <version>)"``.
        """
        with self._session.capture:
            return _version(self._xs)

    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
        """Simulate with ``fakeit`` and fit with XSPEC a batch of grid points.

        Parameters
        ----------
        theta : numpy.ndarray
            Modifier parameters, shape ``(n, d)``.
        t_true : numpy.ndarray
            True temperatures, shape ``(n,)`` (keV).
        index : numpy.ndarray
            The points' stream indices, shape ``(n,)``, int (seeds from
            :func:`realisation_seeds`).
        norm : numpy.ndarray, optional
            Model normalisations (XSPEC units), shape ``(n,)``, overriding the settings'
            counts/norm.

        Returns
        -------
        PointResults
            Fits of ``n`` points x ``realisations``; a failed XSPEC fit is a status, not an
            exception.

        Raises
        ------
        ValueError
            ``theta``, ``t_true`` and ``index`` describe different numbers of points.
        UserError
            ``theta`` lies outside the modifier family's domain (``ModifierError``), or the
            model gives no photons or counts in the band.
        """
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
        with self._session.capture:
            self._configure()
            for i in range(n):
                point_norm = float(norm[i]) if norm is not None else self._norm_for(t_true[i])
                out.norm[i] = point_norm
                self._run_point(theta[i], float(t_true[i]), int(index[i]), point_norm, out, i)
        return out

    def close(self) -> None:
        """Clear XSPEC's data and models, remove this backend's ARF folder, leave the session.

        Idempotent; XSPEC itself stays loaded (it cannot be unloaded).
        """
        if self._closed:
            return
        self._closed = True
        session = getattr(self, "_session", None)
        if session is None:
            return
        try:
            with session.capture:
                session.xspec.AllData.clear()
                session.xspec.AllModels.clear()
        except Exception:  # noqa: BLE001 - closing must not fail because XSPEC did
            log.debug("XSPEC clear failed while closing", exc_info=True)
        shutil.rmtree(getattr(self, "_arf_dir", session.layout.root / "-"), ignore_errors=True)
        _close_session(session)

    # ---------------------------------------------------------------------------- per point

    def _check_photons(self, handle: _ModelHandle, t: float) -> None:
        """Refuse a model without photons in the band at ``t`` (keV).

        Judged from XSPEC's model values on the loaded response's energies (spectrum 1).
        """
        model = handle.model
        edges = np.asarray(model.energies(1), dtype=np.float64)
        photons = _band_photons(model.values(1), edges, self.settings.band)
        if not photons > 0:
            raise _refuse_dark_model(
                self.expression,
                tuple(self.settings.band),
                f"at {self.settings.temperature_param} = {t:g} keV",
            )

    def _norm_for(self, t_true: float) -> float:
        """Return the model normalisation (XSPEC units) for one true temperature.

        ``settings.norm``, or the one giving ``settings.counts`` expected counts in the band
        through the ORIGINAL response (an asimov fakeit at norm 1, scaled).
        """
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
            self._check_photons(handle, key)
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
                if r == 0:
                    self._check_photons(handle, t_true)
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
        """Fit the temperature and norm with C-stat.

        The C(T) scan, XSPEC's fit from its best node, the delta-C = 1 interval (refitting
        while the search finds a new minimum).
        """
        xs = self._xs
        kt = handle.temperature
        result = _FitResult()
        try:
            kt.frozen = False
            kt.values = self._temperature_spec(float(np.clip(t_start, *self._bounds)))
            handle.norm.values = norm_start
            xs.Fit.perform()
            curve = self._profile(handle, float(kt.values[0]))
            node = best_node(curve)
            if node is not None:
                # the seam: start from the global minimum of the scan, the norm fitted there
                kt.values = self._temperature_spec(float(self._tgrid[node]))
                kt.frozen = True
                xs.Fit.perform()
                kt.frozen = False
                xs.Fit.perform()
            refits = 0
            while True:
                xs.Fit.error(f"stopat 20 0.01 maximum 1e6 1.0 {kt.index}")
                low, high, flags = kt.error
                if flags[ERR_NEW_MINIMUM] != "T" or refits >= ERROR_RETRIES:
                    break
                # XSPEC's error search found a lower statistic and moved there ("New best
                # fit found"): fit again from there and search again
                refits += 1
                xs.Fit.perform()
            best = float(kt.values[0])
            statistic = float(xs.Fit.statistic)
            result.t_fit = best
            result.err = interval_distances(best, float(low), float(high), flags)
            result.status = fit_status(best, self._bounds, flags)
            if refits:
                result.status |= STATUS_REFITTED
            if node is not None and statistic > float(curve[node]) + SCAN_TOLERANCE:
                result.status |= STATUS_NOT_CONVERGED
            if self.settings.curves:
                result.curve = curve
        except Exception as exc:  # noqa: BLE001 - an XSPEC failure is a status, not a crash
            log.debug("XSPEC fit failed: %s", exc)
            return _FitResult()
        return result

    def _profile(self, handle: _ModelHandle, best: float) -> np.ndarray:
        """Return C(T) on the fit grid with the norm refitted at every T (keV).

        The parameters are left at ``best`` and the norm that went with it.
        """
        xs = self._xs
        kt = handle.temperature
        best_norm = float(handle.norm.values[0])
        command = steppar_command(self._tgrid, kt.index)
        if command is not None:
            xs.Fit.steppar(command)
            stepped = np.asarray(xs.Fit.stepparResults(str(kt.index)), dtype=np.float64)
            if stepped.shape == self._tgrid.shape and np.allclose(stepped, self._tgrid, rtol=1e-5):
                curve = np.asarray(xs.Fit.stepparResults("statistic"), dtype=np.float64)
                kt.frozen = False
                kt.values = self._temperature_spec(best)
                handle.norm.values = best_norm
                return curve
        # irregular grid (or steppar visited other values): freeze kT at each grid value
        curve = np.empty(self._tgrid.size)
        for j, t in enumerate(self._tgrid):
            kt.values = float(t)
            kt.frozen = True
            handle.norm.values = best_norm
            xs.Fit.perform()
            curve[j] = float(xs.Fit.statistic)
        kt.frozen = False
        kt.values = self._temperature_spec(best)
        handle.norm.values = best_norm
        return curve


# --------------------------------------------------------------------------------------------
# tabulation (xrmodifier tabulate)
# --------------------------------------------------------------------------------------------


class XspecTabulator:
    """XSPEC's model values on a fixed energy grid, one parameter set at a time.

    For table models (``xrmodifier tabulate``). An expression with a ``norm`` parameter is
    additive: its values at norm 1 are photons cm^-2 s^-1 per bin (an ``atable``). One
    without is multiplicative: it is evaluated as ``(expression)*powerlaw`` with PhoIndex 0
    and norm 1, whose values are the factor times the bin width (keV), and divided by the
    width (an ``mtable``); XSPEC multiplies a bin's flux by a multiplicative component's value
    for that bin, so this is the factor XSPEC uses.

    Parameters
    ----------
    expression : str
        Any XSPEC model expression (table files relative to ``base``).
    energies : str
        XSPEC's ``energies`` specification of the grid, ``"LOW HIGH N log|lin"`` (keV).
    fixed : mapping of str to float
        Parameters held at a value (XSPEC's names, ``component.name`` where ambiguous); the
        rest keep XSPEC's defaults unless given to :meth:`spectrum`.
    abund, xsect : str
        XSPEC's abundance and photoelectric cross-section tables.
    log_path : Path, optional
        Where XSPEC's output goes (default: the scratch folder's ``xspec.log``).
    base : Path, optional
        Folder that relative table files are resolved against.

    Raises
    ------
    ImportError
        PyXspec does not import (outside the container).
    UserError
        XSPEC refuses the expression or a fixed value, or a parameter name is unknown or
        ambiguous.
    """

    def __init__(
        self,
        expression: str,
        energies: str,
        fixed: Mapping[str, float] | None = None,
        abund: str = "angr",
        xsect: str = "vern",
        log_path: Path | None = None,
        base: Path | None = None,
    ) -> None:
        self.expression = xspec_expression(expression, base or Path.cwd())
        self._closed = False
        self._session = _open_session(log_path)
        try:
            xs = self._xs = self._session.xspec
            with self._session.capture:
                _quiet(xs)
                xs.Xset.abund = abund
                xs.Xset.xsect = xsect
                apecroot = os.environ.get("XRM_APECROOT")
                if apecroot:
                    xs.Xset.addModelString("APECROOT", apecroot)
                self.abund, self.xsect = str(xs.Xset.abund), str(xs.Xset.xsect)
                xs.AllData.clear()
                xs.AllModels.clear()
                xs.AllModels.setEnergies(energies)
                self.model = self._create(self.expression)
                names = [
                    p
                    for c in self.model.componentNames
                    for p in getattr(self.model, c).parameterNames
                ]
                self.additive = "norm" in names
                if not self.additive:
                    inner = self.expression
                    wrapped = f"({inner})*powerlaw" if "+" in inner else f"{inner}*powerlaw"
                    self.model = self._create(wrapped)
                    power = getattr(self.model, self.model.componentNames[-1])
                    power.PhoIndex.values = 0.0
                    power.norm.values = 1.0
                else:
                    find_parameter(self.model, "norm", self.expression).values = 1.0
                self.edges = np.asarray(self.model.energies(0), dtype=np.float64)
                for name, value in (fixed or {}).items():
                    self.parameter(name).values = float(value)
                    self.parameter(name).frozen = True
                self.version = _version(xs)
        except BaseException:
            self.close()
            raise

    def _create(self, expression: str) -> Any:
        try:
            return self._xs.Model(expression)
        except Exception as exc:  # noqa: BLE001 - PyXspec raises plain Exceptions
            reason = " ".join(str(exc).split())
            raise UserError(f"XSPEC does not accept the model {expression!r}: {reason}") from None

    def parameter(self, name: str) -> Any:
        """Return the model's parameter ``name`` (XSPEC's name or ``component.name``).

        Parameters
        ----------
        name : str
            Parameter name, bare or qualified by its component.

        Returns
        -------
        xspec.Parameter
            The parameter.

        Raises
        ------
        UserError
            No such parameter, or several share the bare name.
        """
        return find_parameter(self.model, name, self.expression)

    def spectrum(self, values: Mapping[str, float]) -> np.ndarray:
        """Evaluate the model on :attr:`edges` with the parameters set to ``values``.

        Parameters
        ----------
        values : mapping of str to float
            Parameter values by XSPEC's names (``component.name`` where ambiguous); the others
            keep their current values.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_bins,)`` with ``n_bins = edges.size - 1``: photons cm^-2 s^-1 per bin
            at norm 1 (additive) or the factor per bin (multiplicative).

        Raises
        ------
        UserError
            XSPEC refuses a value, or the result has non-finite values.
        """
        with self._session.capture:
            for name, value in values.items():
                try:
                    self.parameter(name).values = float(value)
                except UserError:
                    raise
                except Exception as exc:  # noqa: BLE001
                    reason = " ".join(str(exc).split())
                    raise UserError(f"XSPEC does not take {name} = {value:g}: {reason}") from None
            out = np.asarray(self.model.values(0), dtype=np.float64)
        if not self.additive:
            out = out / np.diff(self.edges)
        if out.shape != (self.edges.size - 1,) or not np.all(np.isfinite(out)):
            raise UserError(
                f"XSPEC's model {self.expression!r} gave non-finite values at "
                + ", ".join(f"{k} = {v:g}" for k, v in values.items())
            )
        return out

    def close(self) -> None:
        """Release XSPEC's model and energies and the scratch folder's work files."""
        if self._closed:
            return
        self._closed = True
        session = getattr(self, "_session", None)
        if session is None:
            return
        try:
            with session.capture:
                session.xspec.AllModels.setEnergies("reset")
                session.xspec.AllModels.clear()
        except Exception:  # noqa: BLE001 - closing must not fail because XSPEC did
            log.debug("XSPEC reset failed while closing", exc_info=True)
        _close_session(session)

    def __enter__(self) -> XspecTabulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
