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
from typing import ClassVar

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
    """Names of the bits set in a status code (empty list: converged)."""
    return [name for bit, name in STATUS_NAMES.items() if code & bit]


@dataclass(frozen=True)
class SimulationSettings:
    """What a backend needs from the config, flattened. Units: s, keV."""

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

    @classmethod
    def from_config(cls, cfg: Config, role: str = "target", **overrides) -> SimulationSettings:
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
        return self.t_fit_orig.shape[0]

    def check_shapes(self, n: int, n_real: int, n_tgrid: int | None) -> None:
        """Raise AssertionError when the arrays do not have the documented shapes."""
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
        """Build the backend for instrument ``role`` of ``cfg`` (``overrides`` replace
        simulation settings). The default builds ``cls(instrument, model, modifier,
        settings)`` with the native model of ``[source] model`` (table files read)."""
        from xrmodifier_hpc.io.ogip import Instrument
        from xrmodifier_hpc.io.tables import load_model
        from xrmodifier_hpc.physics.modifiers import get_modifier

        inst_cfg = getattr(cfg.instruments, role)
        instrument = Instrument.load(inst_cfg.arf, inst_cfg.rmf)
        model = load_model(cfg.source.model, base=cfg.path.parent)
        modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
        settings = SimulationSettings.from_config(cfg, role, **overrides)
        return cls(instrument, model, modifier, settings)

    @abstractmethod
    def version(self) -> str:
        """Version string recorded in artefacts' provenance."""

    @abstractmethod
    def run(
        self,
        theta: np.ndarray,
        t_true: np.ndarray,
        index: np.ndarray,
        norm: np.ndarray | None = None,
    ) -> PointResults:
        """Simulate and fit a batch: ``theta`` (n, d), ``t_true`` (n,) keV, ``index`` (n,) the
        points' stream indices; ``norm`` (n,) overrides the settings' counts/norm."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release scratch files or external processes."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
