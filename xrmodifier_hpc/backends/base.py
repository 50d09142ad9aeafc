"""The backend interface: simulate-and-fit a batch of grid points.

A backend is built for one instrument (the response whose ARF the modifier multiplies), one
source model and one modifier family. ``run`` takes a batch of points ``(theta, T_true,
index)``; for each it simulates ``realisations`` spectra through the MODIFIED response
(fakeit, Poisson or asimov) and fits each twice, with the ORIGINAL response (-> T1,
``t_fit_orig``) and with the MODIFIED one (-> T1', ``t_fit_mod``). Realisation r of point k
draws from ``grid.point_rng(seed, k, stream)``, so results never depend on batching.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from xrmodifier_hpc.config import Config, SimulationConfig
from xrmodifier_hpc.config.grid import GRID_STREAM

# fit status bits (0 = converged, interval inside the fit grid)
STATUS_OK = 0
STATUS_AT_GRID_BOUND = 1  #: best fit at the edge of the fit-temperature grid
STATUS_TOO_FEW_COUNTS = 2  #: fewer noticed counts than ``min_counts``: not fitted, values NaN
STATUS_ERROR_AT_BOUND = 4  #: the delta-C = 1 interval runs past the fit-temperature grid
STATUS_NOT_CONVERGED = 8  #: the continuous refinement did not reach its tolerance
STATUS_FAILED = 16  #: non-finite model or statistic; values NaN
#: informational: the error search found a lower statistic than the fit ("new best fit found"
#: in XSPEC), and the fit was redone from there until the search ran clean
STATUS_REFITTED = 32

STATUS_NAMES = {
    STATUS_AT_GRID_BOUND: "at_grid_bound",
    STATUS_TOO_FEW_COUNTS: "too_few_counts",
    STATUS_ERROR_AT_BOUND: "error_at_bound",
    STATUS_NOT_CONVERGED: "not_converged",
    STATUS_FAILED: "failed",
    STATUS_REFITTED: "refitted",
}
#: statuses whose best-fit temperature should not be used (emulator training leaves them out)
STATUS_UNUSABLE = STATUS_AT_GRID_BOUND | STATUS_TOO_FEW_COUNTS | STATUS_FAILED


def describe_status(code: int) -> list[str]:
    """Return the names of the bits set in a status code (empty list: converged).

    Parameters
    ----------
    code : int
        A fit status: an OR of the ``STATUS_*`` bits (0 is ``STATUS_OK``).

    Returns
    -------
    list of str
        The names in ``STATUS_NAMES`` of the bits set in ``code``, in bit order.
    """
    return [name for bit, name in STATUS_NAMES.items() if code & bit]


@dataclass(frozen=True)
class SimulationSettings:
    """What a backend needs from the config, flattened. Units: s, keV.

    Attributes
    ----------
    exposure : float
        Exposure time of the simulated spectra (s).
    band : tuple of float
        ``(low, high)`` energies (keV) of the noticed band.
    realisations : int
        Spectra simulated per grid point (``n_real``).
    seed : int
        Global seed; each point draws from ``grid.point_rng(seed, index, stream)``.
    fit_tgrid : numpy.ndarray
        Fit-temperature grid, shape ``(n_tgrid,)`` (keV): the fit range and the nodes of the
        stored C(T) curves.
    counts : float or None
        Expected counts in ``band`` through the original response, setting the normalisation
        per true temperature; None when ``norm`` is given.
    norm : float or None
        Fixed model normalisation (model units); None when ``counts`` is given.
    mode : str
        ``"poisson"`` (Poisson counts) or ``"asimov"`` (expected counts, no noise).
    curves : bool
        Whether the C(T) curves are returned.
    min_counts : float
        Fewer noticed counts than this: not fitted, status ``STATUS_TOO_FEW_COUNTS``.
    engine : str
        Native array engine, ``"numpy"`` or ``"torch"``.
    device : str
        Torch device, ``"auto"``, ``"cpu"`` or ``"cuda"``.
    source_params : dict of str to float
        Source-model parameters held fixed, by name.
    temperature_param : str
        Name of the model's temperature parameter (``kT``).
    abund, xsect : str
        XSPEC's abundance and photoelectric cross-section tables.
    stream : int
        Random stream of the points (``GRID_STREAM`` for the grid).
    t_true_axis : numpy.ndarray or None
        The grid's true temperatures, shape ``(n_t_true,)`` (keV), when known: a backend may
        prepare them together (the native backend folds them per modifier key in one
        product). Any temperature can still be simulated.
    """

    exposure: float
    band: tuple[float, float]
    realisations: int
    seed: int
    fit_tgrid: np.ndarray
    counts: float | None = None
    norm: float | None = None
    mode: str = "poisson"
    curves: bool = True
    min_counts: float = 50.0
    engine: str = "numpy"
    device: str = "auto"
    source_params: dict[str, float] = dataclasses.field(default_factory=dict)
    temperature_param: str = "kT"
    abund: str = "angr"
    xsect: str = "vern"
    stream: int = GRID_STREAM
    t_true_axis: np.ndarray | None = None

    @classmethod
    def from_config(cls, cfg: Config, role: str = "target", **overrides) -> SimulationSettings:
        """Build the settings from ``[simulation]``, ``[source]`` and instrument ``role``.

        Parameters
        ----------
        cfg : Config
            The loaded config.
        role : str
            ``"target"`` or ``"reference"``: whose exposure (s) is used.
        **overrides
            Fields that replace the config's values (e.g. ``seed``, ``stream``, ``curves``).

        Returns
        -------
        SimulationSettings
            The flattened settings.
        """
        sim: SimulationConfig = cfg.simulation
        inst = getattr(cfg.instruments, role)
        values = dict(
            exposure=inst.exposure,
            band=tuple(sim.band),
            realisations=sim.realisations,
            seed=sim.seed,
            fit_tgrid=sim.fit_tgrid.array,
            counts=sim.counts,
            norm=sim.norm,
            mode=sim.mode,
            curves=sim.curves,
            min_counts=sim.min_counts,
            engine=sim.engine,
            device=sim.device,
            source_params=dict(cfg.source.params),
            temperature_param=cfg.source.temperature,
            abund=sim.abund,
            xsect=sim.xsect,
            t_true_axis=cfg.temperatures.t_true.array,
        )
        values.update(overrides)
        return cls(**values)


@dataclass
class PointResults:
    """Results for n points x n_real realisations (DESIGN.md section 5).

    Temperatures in keV. ``err_*[..., 0]`` and ``[..., 1]`` are the distances from the best
    fit down to the lower and up to the upper end of the delta-C = 1 interval. ``status`` is
    (n, n_real, 2): the original fit's bits, then the modified fit's. Curves are C(T) on the
    fit-temperature grid, or None when not requested. ``norm`` (n,) is the model
    normalisation each point was simulated with; ``counts`` (n, n_real) the noticed counts.

    Attributes
    ----------
    t_fit_orig, t_fit_mod : numpy.ndarray
        Best-fit temperatures T1 (original response) and T1' (modified response), shape
        ``(n, n_real)`` (keV); NaN where not fitted.
    err_orig, err_mod : numpy.ndarray
        Distances (keV) down and up to the ends of the delta-C = 1 interval, shape
        ``(n, n_real, 2)``.
    status : numpy.ndarray
        Status bits (``STATUS_*``), shape ``(n, n_real, 2)``, uint8: original fit, then
        modified fit.
    norm : numpy.ndarray
        Model normalisation each point was simulated with, shape ``(n,)``.
    counts : numpy.ndarray
        Noticed counts in the band, shape ``(n, n_real)`` (counts).
    curve_orig, curve_mod : numpy.ndarray or None
        C(T) on the fit-temperature grid, shape ``(n, n_real, n_tgrid)``; None when curves
        were not requested.
    """

    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    err_orig: np.ndarray
    err_mod: np.ndarray
    status: np.ndarray
    norm: np.ndarray
    counts: np.ndarray
    curve_orig: np.ndarray | None = None
    curve_mod: np.ndarray | None = None

    @property
    def n_points(self) -> int:
        """Number of points ``n``."""
        return self.t_fit_orig.shape[0]

    def check_shapes(self, n: int, n_real: int, n_tgrid: int | None) -> None:
        """Raise AssertionError when the arrays do not have the documented shapes.

        Parameters
        ----------
        n : int
            Number of points.
        n_real : int
            Realisations per point.
        n_tgrid : int or None
            Nodes of the fit-temperature grid; None skips the curves.

        Raises
        ------
        AssertionError
            An array's shape differs; the message names the array.
        """
        for name in ("t_fit_orig", "t_fit_mod"):
            assert getattr(self, name).shape == (n, n_real), name
        for name in ("err_orig", "err_mod"):
            assert getattr(self, name).shape == (n, n_real, 2), name
        assert self.status.shape == (n, n_real, 2), "status"
        assert self.norm.shape == (n,), "norm"
        assert self.counts.shape == (n, n_real), "counts"
        if n_tgrid is not None:
            for name in ("curve_orig", "curve_mod"):
                assert getattr(self, name).shape == (n, n_real, n_tgrid), name


class Backend(ABC):
    """Simulate-and-fit engine. Subclasses: ``native`` (numpy/torch) and ``xspec`` (PyXspec)."""

    name: ClassVar[str]
    #: what the backend needs that may not import everywhere, and where it does
    requires: ClassVar[str] = "nothing beyond this package"
    where_available: ClassVar[str] = "install it"

    @classmethod
    def from_config(cls, cfg: Config, role: str = "target", **overrides) -> Backend:
        """Build the backend for instrument ``role`` of ``cfg``.

        ``overrides`` replace simulation settings. The default builds ``cls(instrument, model,
        modifier, settings)`` with the native model of ``[source] model`` (table files read).

        Parameters
        ----------
        cfg : Config
            The loaded config.
        role : str
            ``"target"`` or ``"reference"``: the instrument whose response is used.
        **overrides
            Simulation settings replacing the config's (see :class:`SimulationSettings`).

        Returns
        -------
        Backend
            A backend of this class, ready to :meth:`run`.
        """
        from xrmodifier_hpc.io.ogip import Instrument
        from xrmodifier_hpc.io.tables import load_model
        from xrmodifier_hpc.physics.modifiers import get_modifier

        inst_cfg = getattr(cfg.instruments, role)
        instrument = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
        model = load_model(cfg.source.model, base=cfg.path.parent)
        modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
        settings = SimulationSettings.from_config(cfg, role, **overrides)
        return cls(instrument, model, modifier, settings)

    @abstractmethod
    def version(self) -> str:
        """Return the version string recorded in artefacts' provenance.

        Returns
        -------
        str
            The backend's name and version (and its engine's, where it has one).
        """

    @abstractmethod
    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
        """Simulate and fit a batch of grid points.

        Parameters
        ----------
        theta : numpy.ndarray
            Modifier parameters, shape ``(n, d)``.
        t_true : numpy.ndarray
            True temperatures, shape ``(n,)`` (keV).
        index : numpy.ndarray
            The points' stream indices, shape ``(n,)``, int: point ``index[i]`` draws from
            ``grid.point_rng(seed, index[i], stream)``.
        norm : numpy.ndarray, optional
            Model normalisations, shape ``(n,)``, overriding the settings' counts/norm.

        Returns
        -------
        PointResults
            Fits of ``n`` points x ``realisations``.
        """

    def derive(self, **overrides: Any) -> Backend | None:
        """Make a backend with some simulation settings replaced, sharing what it can.

        Parameters
        ----------
        **overrides
            Fields of :class:`SimulationSettings` to replace.

        Returns
        -------
        Backend or None
            None here (build a new one with ``make_backend``); a backend whose set-up does
            not depend on those settings returns one sharing it (the native backend shares
            its fitter). Close it as any backend; closing it leaves this one usable.
        """
        return None

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release scratch files or external processes."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
