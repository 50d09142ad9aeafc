"""Typed, validated configuration: one TOML file drives every stage.

The schema is a tree of frozen dataclasses. ``load_config`` reads the TOML, checks every key
against the schema (unknown keys get the closest valid key suggested), coerces and checks
types, resolves paths relative to the config file's folder and runs the per-section checks.
Every problem raises :class:`ConfigError` naming the file and the key.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import math
import re
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.errors import ConfigError, UserError
from xrmodifier_hpc.registry import (
    ACTIVATIONS,
    BACKENDS,
    MODEL_PARSERS,
    MODIFIER_FAMILIES,
    OBJECTIVES,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

#: the sections whose content determines what ``grid.h5`` holds; resume compares only these
SIMULATION_SECTIONS = ("instruments", "source", "modifier", "temperatures", "simulation")


# --------------------------------------------------------------------------------------------
# grid axes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axis:
    """One grid axis: its values and how they were specified.

    TOML forms: ``{linspace = [start, stop, n]}``, ``{logspace = [start, stop, n]}`` (start and
    stop are the end values, not exponents), ``{values = [...]}``, a bare list, or a number.

    Attributes
    ----------
    values : tuple of float
        The axis values, distinct, finite and sorted ascending (in the parameter's unit: keV
        for temperatures, mu and sigma; dimensionless for amplitudes).
    kind : str
        The form it was written in: ``"linspace"``, ``"logspace"`` or ``"values"``.
    """

    values: tuple[float, ...]
    kind: str = "values"

    def __len__(self) -> int:
        return len(self.values)

    @property
    def array(self) -> np.ndarray:
        """The values as a float64 array of shape ``(len(self),)``."""
        return np.asarray(self.values, dtype=np.float64)

    @property
    def bounds(self) -> tuple[float, float]:
        """The smallest and largest value, ``(low, high)``."""
        return (min(self.values), max(self.values))


def parse_axis(raw: Any, key: str, file: str = "") -> Axis:
    """Turn one of the TOML axis forms into an :class:`Axis`.

    Parameters
    ----------
    raw : Any
        The TOML value: a number, a list of numbers, or a one-key table ``{linspace = [start,
        stop, n]}``, ``{logspace = [start, stop, n]}`` (end values, both > 0) or ``{values =
        [...]}``.
    key : str
        The dotted config key of the axis (e.g. ``modifier.grid.mu``), named in errors.
    file : str, optional
        The config file, named in errors ('' for none).

    Returns
    -------
    Axis
        The values sorted ascending, with the form they were written in.

    Raises
    ------
    ConfigError
        A value that is no axis form, an unknown form, non-numeric entries, an empty list, a
        ``[start, stop, n]`` of another length or with ``n`` not a positive integer, a
        logspace with a non-positive end, or values that are not finite or not distinct;
        ``where`` is ``FILE [key]``.
    """

    def at(suffix: str = "") -> str:
        return f"{file} [{key}{suffix}]" if file else f"{key}{suffix}"

    where = at()
    if isinstance(raw, bool):
        raise ConfigError("expected a number, a list or a {linspace|logspace|values} table", where)
    if isinstance(raw, (int, float)):
        return Axis((float(raw),), "values")
    if isinstance(raw, list):
        raw = {"values": raw}
    if not isinstance(raw, dict):
        raise ConfigError("expected a number, a list or a {linspace|logspace|values} table", where)
    if len(raw) != 1:
        raise ConfigError(
            f"give exactly one of linspace, logspace, values (got {sorted(raw)})", where
        )
    ((kind, spec),) = raw.items()
    if kind not in ("linspace", "logspace", "values"):
        hint = _suggest(kind, ["linspace", "logspace", "values"])
        raise ConfigError(f"unknown axis form {kind!r}{hint}", where)
    if not isinstance(spec, list) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in spec
    ):
        raise ConfigError(f"{kind} takes a list of numbers", at(f".{kind}"))
    if kind == "values":
        if not spec:
            raise ConfigError("the grid is empty: give at least one value", at(".values"))
        values = [float(v) for v in spec]
    else:
        if len(spec) != 3:
            raise ConfigError(f"{kind} takes [start, stop, n]", at(f".{kind}"))
        start, stop, n = spec
        if float(n) != int(n) or int(n) < 1:
            raise ConfigError(
                f"the number of points must be a positive integer (got {n})", at(f".{kind}")
            )
        n = int(n)
        if kind == "logspace":
            if start <= 0 or stop <= 0:
                raise ConfigError("logspace needs positive start and stop", at(f".{kind}"))
            values = list(np.geomspace(float(start), float(stop), n))
        else:
            values = list(np.linspace(float(start), float(stop), n))
    if not all(math.isfinite(v) for v in values):
        raise ConfigError("values must be finite", where)
    if len(set(values)) != len(values):
        raise ConfigError("values must be distinct", where)
    return Axis(tuple(sorted(values)), kind)


# --------------------------------------------------------------------------------------------
# schema
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InstrumentConfig:
    """One telescope: its ARF and RMF (paths relative to the config) and exposure (s).

    ``arf`` is optional, as in XSPEC: without it the matrix is used alone (right for an RSP
    whose matrix includes the area; a redistribution-only RMF then means 1 cm^2, reported by
    ``xrmodifier check``). ``allow_double_area`` accepts an ARF together with a matrix that
    already includes the area (the area is then applied twice).

    Attributes
    ----------
    rmf : Path
        The RMF (or RSP) file, resolved relative to the config's folder.
    arf : Path or None
        The ARF file, or None to use the matrix alone.
    exposure : float
        Exposure time in s, > 0.
    allow_double_area : bool
        Accept an ARF with a matrix that already includes the area.
    """

    rmf: Path
    arf: Path | None = None
    exposure: float = 50_000.0
    allow_double_area: bool = False

    def _check(self, at: Callable[[str], str]) -> None:
        if self.exposure <= 0:
            raise ConfigError("exposure must be positive (seconds)", at("exposure"))


@dataclass(frozen=True)
class InstrumentsConfig:
    """The two telescopes: the trusted reference and the target whose ARF is corrected.

    Attributes
    ----------
    reference : InstrumentConfig
        Telescope 0, Psi0 = (ARF0, RMF0), trusted.
    target : InstrumentConfig
        Telescope 1, Psi1 = (ARF1, RMF1), whose ARF is fixed.
    """

    reference: InstrumentConfig
    target: InstrumentConfig


@dataclass(frozen=True)
class SourceConfig:
    """Source model expression (e.g. ``wabs*bremss``) and its frozen parameters.

    ``temperature`` names the parameter on the temperature axis; the normalisation is free.

    Attributes
    ----------
    model : str
        The model expression: for the native backend a product of registered components
        (``wabs``, ``bremss``, ``atable{file}``, ``mtable{file}``); for ``xspec`` any XSPEC
        expression.
    params : dict of str to float
        Frozen parameter values by their (XSPEC) names, in the parameters' units (e.g. ``nH``
        in 1e22 cm^-2).
    temperature : str
        The parameter on the temperature axis (keV).
    """

    model: str = "wabs*bremss"
    params: dict[str, float] = field(default_factory=lambda: {"nH": 0.05})
    temperature: str = "kT"


@dataclass(frozen=True)
class ModifierConfig:
    """ARF modifier family, its options (e.g. ``n_components``, ``knots``) and its grid.

    Attributes
    ----------
    family : str
        A name in ``registry.MODIFIER_FAMILIES`` (``gaussian``, ``multi_gaussian``,
        ``spline``).
    options : dict of str to Any
        Keyword arguments of the family (``n_components = K``; ``knots`` in keV).
    grid : dict of str to Axis
        One axis per parameter of the family (mu, sigma in keV; A, d_k dimensionless).
    """

    family: str = "gaussian"
    options: dict[str, Any] = field(default_factory=dict)
    grid: dict[str, Axis] = field(default_factory=dict)


@dataclass(frozen=True)
class TemperaturesConfig:
    """True temperatures (keV) at which telescope 1 is simulated.

    Attributes
    ----------
    t_true : Axis
        The T_true axis in keV, all > 0 (default: 20 log-spaced from 1 to 10 keV).
    """

    t_true: Axis = Axis(tuple(np.geomspace(1.0, 10.0, 20)), "logspace")

    def _check(self, at: Callable[[str], str]) -> None:
        if self.t_true.bounds[0] <= 0:
            raise ConfigError("temperatures must be positive (keV)", at("t_true"))


@dataclass(frozen=True)
class SimulationConfig:
    """How each grid point is simulated and fitted.

    ``counts``: expected counts in ``band`` through the original target response (the
    normalisation is set per T_true to give it); or ``norm``: a fixed model normalisation.
    The counts default (50000) applies only when neither is written. ``fit_tgrid`` defaults
    to 0.2-50 keV, widened to cover ``temperatures.t_true`` (a factor 3 each side) and kept
    inside the model's temperature range; ``min_counts`` defaults to 50, or half of a
    smaller ``counts``.

    Attributes
    ----------
    backend : str
        A name in ``registry.BACKENDS`` (``native`` or ``xspec``).
    mode : str
        ``poisson`` (fakeit with noise) or ``asimov`` (expected counts).
    realisations : int
        Fakeit spectra per grid point, >= 1.
    seed : int
        Random seed, >= 0: point k always uses the stream (seed, k).
    counts : float or None
        Expected counts in ``band`` per spectrum through the original target response, > 0;
        None when ``norm`` is given.
    norm : float or None
        A fixed model normalisation instead of ``counts``, > 0.
    band : tuple of float
        The fitted band ``(low, high)`` in keV, 0 < low < high.
    fit_tgrid : Axis
        Temperatures (keV, >= 8 of them, > 0) of the exact C-stat profile and the stored
        curves C(T).
    curves : bool
        Store C(T) of both fits in ``grid.h5``.
    min_counts : float
        Spectra with fewer noticed counts are flagged ``too_few_counts`` and not fitted.
    chunk_size : int
        Grid points per write and per resume step, >= 1.
    engine : str
        Native backend kernels: ``numpy`` or ``torch``.
    device : str
        Torch engine device: ``auto``, ``cpu`` or ``cuda``.
    abund : str
        XSPEC abundance table (xspec backend).
    xsect : str
        XSPEC photoelectric cross-sections (xspec backend).
    """

    backend: str = "native"
    mode: str = "poisson"
    realisations: int = 4
    seed: int = 20261124
    counts: float | None = 50_000.0
    norm: float | None = None
    band: tuple[float, float] = (0.5, 7.0)
    fit_tgrid: Axis = Axis(tuple(np.geomspace(0.2, 50.0, 128)), "logspace")
    curves: bool = True
    min_counts: float = 50.0
    chunk_size: int = 256
    engine: str = "numpy"
    device: str = "auto"
    abund: str = "angr"
    xsect: str = "vern"

    def _check(self, at: Callable[[str], str]) -> None:
        _one_of(self.backend, BACKENDS.names(), at("backend"))
        _one_of(self.mode, ("poisson", "asimov"), at("mode"))
        _one_of(self.engine, ("numpy", "torch"), at("engine"))
        _one_of(self.device, ("auto", "cpu", "cuda"), at("device"))
        if self.realisations < 1:
            raise ConfigError("realisations must be at least 1", at("realisations"))
        if self.counts is not None and self.norm is not None:
            raise ConfigError(
                "give exactly one of counts and norm: both are written (counts sets the "
                "norm per T_true)",
                at("norm"),
            )
        if self.counts is None and self.norm is None:
            raise ConfigError("give counts or norm", at("counts"))
        for key in ("counts", "norm"):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive", at(key))
        lo, hi = self.band
        if not (0 < lo < hi):
            raise ConfigError("band must be [low, high] keV with 0 < low < high", at("band"))
        if self.fit_tgrid.bounds[0] <= 0 or len(self.fit_tgrid) < 8:
            raise ConfigError(
                "fit_tgrid needs at least 8 positive temperatures (keV)", at("fit_tgrid")
            )
        if self.chunk_size < 1:
            raise ConfigError("chunk_size must be at least 1", at("chunk_size"))
        if self.seed < 0:
            raise ConfigError("seed must be a non-negative integer", at("seed"))


@dataclass(frozen=True)
class EmulatorConfig:
    """MLP architecture and training settings.

    Attributes
    ----------
    hidden : tuple of int
        Hidden layer widths of the MLP, each >= 1.
    activation : str
        A name in ``registry.ACTIVATIONS`` (``gelu``, ``relu``, ``silu``, ``tanh``).
    epochs : int
        Maximum epochs, >= 1.
    batch_size : int
        Global batch size (split over DDP ranks), >= 1.
    learning_rate : float
        AdamW peak learning rate, > 0.
    weight_decay : float
        AdamW weight decay.
    val_fraction : float
        Held-out fraction of grid points, in (0, 0.5).
    patience : int
        Epochs without improvement before early stopping.
    seed : int
        Seed of the initialisation, the split and the batch order.
    checkpoint_every : int
        Epochs between checkpoints, >= 1.
    offgrid_points : int
        Asimov points off the grid for the accuracy check, >= 0.
    predict_scatter : bool
        Also learn the log-scatter of T1, T1' across realisations.
    scatter_hidden : tuple of int
        Layer widths of the separate log-scatter network, each >= 1.
    device : str
        ``auto`` (CUDA if present), ``cpu`` or ``cuda``.
    threads : int
        Torch CPU threads per training process, >= 0 (0: automatic).
    ema_epochs : float
        Horizon (epochs) of the weight average that is validated and kept, >= 0 (0: off).
    """

    hidden: tuple[int, ...] = (128, 128, 128)
    activation: str = "gelu"
    epochs: int = 300
    batch_size: int = 512
    learning_rate: float = 3e-3
    weight_decay: float = 1e-6
    val_fraction: float = 0.1
    patience: int = 40
    seed: int = 1
    checkpoint_every: int = 10
    offgrid_points: int = 500
    predict_scatter: bool = True
    scatter_hidden: tuple[int, ...] = (64, 64)  #: layers of the separate log-scatter network
    device: str = "auto"  #: auto (CUDA if present), cpu or cuda
    threads: int = 0  #: torch CPU threads per training process; 0: automatic (one)
    ema_epochs: float = 5.0  #: horizon (epochs) of the weight average validated and kept; 0: off

    def _check(self, at: Callable[[str], str]) -> None:
        _one_of(self.activation, ACTIVATIONS.names(), at("activation"))
        _one_of(self.device, ("auto", "cpu", "cuda"), at("device"))
        if not self.hidden or any(h < 1 for h in self.hidden):
            raise ConfigError("hidden must list positive layer widths", at("hidden"))
        if not self.scatter_hidden or any(h < 1 for h in self.scatter_hidden):
            raise ConfigError("scatter_hidden must list positive widths", at("scatter_hidden"))
        if self.threads < 0:
            raise ConfigError("threads must be >= 0 (0: automatic)", at("threads"))
        if self.ema_epochs < 0:
            raise ConfigError("ema_epochs must be >= 0 (0: no weight averaging)", at("ema_epochs"))
        for key in ("epochs", "batch_size", "checkpoint_every"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1", at(key))
        if not 0 < self.val_fraction < 0.5:
            raise ConfigError("val_fraction must be in (0, 0.5)", at("val_fraction"))
        if self.learning_rate <= 0:
            raise ConfigError("learning_rate must be positive", at("learning_rate"))
        if self.offgrid_points < 0:
            raise ConfigError("offgrid_points must be >= 0", at("offgrid_points"))


@dataclass(frozen=True)
class McmcConfig:
    """emcee ensemble settings for the theta posterior.

    Defaults follow what is written: ``burn`` is a third of a given ``steps``; ``steps`` at
    least three times a given ``burn``; ``walkers`` at least two per modifier parameter.

    Attributes
    ----------
    walkers : int
        Number of emcee walkers: even, >= 4.
    steps : int
        Chain length per walker, >= 1.
    burn : int
        Discarded burn-in steps, 0 <= burn < steps.
    thin : int
        Thinning of the kept chain.
    """

    walkers: int = 32
    steps: int = 3000
    burn: int = 1000
    thin: int = 1

    def _check(self, at: Callable[[str], str]) -> None:
        if self.walkers < 4 or self.walkers % 2:
            raise ConfigError("walkers must be an even number >= 4", at("walkers"))
        if self.steps < 1 or not 0 <= self.burn < self.steps:
            raise ConfigError("need steps >= 1 and 0 <= burn < steps", at("burn"))
        if self.thin < 1:
            raise ConfigError(f"thin must be an integer >= 1, got {self.thin}", at("thin"))


@dataclass(frozen=True)
class InversionConfig:
    """Objective, multi-start design and posterior sampling for the theta inversion.

    ``s_emu``: emulator error added in quadrature to telescope 1's errors, as a fraction of
    T1; ``"auto"`` takes the emulator's own off-grid RMS relative error. ``merge_tol``: optima
    closer than this fraction of every parameter's range (log range for geometric grid axes)
    are one optimum. ``n_tgrid``: log-spaced T_true points the emulator is evaluated on per
    theta (a spline carries them to the quadrature nodes). ``error_level``: the confidence
    level of the observations' errors when the file does not declare it (default 0.683, 1
    sigma; XSPEC's ``error`` default is 0.90); they are converted to 1 sigma.
    ``ensemble_draws``: rows (posterior draws) of ``corrected_ensemble.fits``.

    Attributes
    ----------
    objective : str
        A name in ``registry.OBJECTIVES`` (``likelihood``, ``seed_loss``, ``gaussian_kl``,
        ``wasserstein``).
    n_starts : int
        Multi-start optimiser starts, >= 1.
    start_design : str
        ``sobol`` or ``lhs``.
    seed : int
        Seed of the start design and the MCMC.
    s_emu : float or str
        Emulator error as a fraction of T1 (>= 0), or ``"auto"``.
    merge_tol : float
        Fraction of each parameter's range within which optima merge, in (0, 1).
    n_tgrid : int
        T_true points the emulator is evaluated on per theta, >= 8.
    mcmc : McmcConfig
        Posterior sampling settings.
    error_level : float or None
        Confidence level in (0, 1) of undeclared observation errors; None: 0.683 (1 sigma).
    ensemble_draws : int
        Posterior draws of the corrected ARF in the ensemble file, 1 to 100000.
    """

    objective: str = "likelihood"
    n_starts: int = 64
    start_design: str = "sobol"
    seed: int = 7
    s_emu: float | str = "auto"
    merge_tol: float = 0.02
    n_tgrid: int = 24
    mcmc: McmcConfig = McmcConfig()
    error_level: float | None = None
    ensemble_draws: int = 100

    def _check(self, at: Callable[[str], str]) -> None:
        _one_of(
            self.objective,
            OBJECTIVES.names(),
            at("objective"),
        )
        _one_of(self.start_design, ("sobol", "lhs"), at("start_design"))
        if self.n_starts < 1:
            raise ConfigError("n_starts must be at least 1", at("n_starts"))
        if isinstance(self.s_emu, str) and self.s_emu != "auto":
            raise ConfigError('s_emu is a number (fraction of T1) or "auto"', at("s_emu"))
        if not isinstance(self.s_emu, str) and self.s_emu < 0:
            raise ConfigError("s_emu must be >= 0", at("s_emu"))
        if not 0 < self.merge_tol < 1:
            raise ConfigError("merge_tol must be in (0, 1)", at("merge_tol"))
        if self.n_tgrid < 8:
            raise ConfigError("n_tgrid must be at least 8", at("n_tgrid"))
        if not 1 <= self.ensemble_draws <= 100_000:
            raise ConfigError(
                "ensemble_draws must be between 1 and 100000 (rows of corrected_ensemble.fits)",
                at("ensemble_draws"),
            )
        if self.error_level is not None and not 0 < self.error_level < 1:
            hint = (
                f" (a fraction: {self.error_level / 100:g} for {self.error_level:g}%)"
                if 1 < self.error_level < 100
                else ""
            )
            raise ConfigError(
                f"error_level must be a confidence level between 0 and 1{hint}",
                at("error_level"),
            )


@dataclass(frozen=True)
class MockConfig:
    """Synthetic observations for demos and injection tests (``xrmodifier mock``).

    ``t_range`` defaults to [1.5, 9.0] keV kept inside ``temperatures.t_true``.

    Attributes
    ----------
    n_sources : int
        Number of synthetic sources, >= 2.
    theta : dict of str to float
        The injected modifier parameters by name (e.g. mu, sigma in keV; A dimensionless).
    t_range : tuple of float
        True temperatures of the sources, ``(low, high)`` keV with 0 < low < high.
    counts : tuple of float
        Range ``(low, high)`` of telescope-1 counts per source, 0 < low <= high.
    seed : int
        Seed of the mock's random streams.
    """

    n_sources: int = 40
    theta: dict[str, float] = field(default_factory=dict)
    t_range: tuple[float, float] = (1.5, 9.0)
    counts: tuple[float, float] = (30_000.0, 80_000.0)
    seed: int = 99

    def _check(self, at: Callable[[str], str]) -> None:
        if self.n_sources < 2:
            raise ConfigError("n_sources must be at least 2", at("n_sources"))
        if not 0 < self.t_range[0] < self.t_range[1]:
            raise ConfigError("t_range must be [low, high] keV, 0 < low < high", at("t_range"))
        if not 0 < self.counts[0] <= self.counts[1]:
            raise ConfigError("counts must be [low, high] with 0 < low <= high", at("counts"))


@dataclass(frozen=True)
class SlurmConfig:
    """Resources for Slurm jobs submitted with submitit (``train --executor slurm``).

    Attributes
    ----------
    partition, account, qos : str
        Slurm settings; empty for the site default.
    nodes : int
        Nodes, >= 1.
    gpus_per_node : int
        GPUs per node (one task per GPU), >= 0.
    cpus_per_task : int
        CPUs per task, >= 1.
    mem_gb : float
        Memory per node in GB.
    time_minutes : int
        Time limit in minutes, >= 1.
    setup : tuple of str
        Shell lines run before the job (e.g. ``module load cuda``).
    container : str
        An Apptainer image the tasks run in; empty for none.
    additional : dict of str to Any
        Extra sbatch parameters (submitit's ``slurm_additional_parameters``).
    logs : Path
        Submitit's log folder.
    container_python : str
        The interpreter inside ``container`` that runs jobs.
    signal_delay_s : int
        Seconds between the preemption/timeout signal and the kill, >= 1.
    max_requeues : int
        Times a timed-out job is requeued from its checkpoint, >= 0.
    """

    partition: str = ""
    account: str = ""
    qos: str = ""
    nodes: int = 1
    gpus_per_node: int = 1
    cpus_per_task: int = 8
    mem_gb: float = 32.0
    time_minutes: int = 60
    setup: tuple[str, ...] = ()
    container: str = ""
    additional: dict[str, Any] = field(default_factory=dict)
    logs: Path = Path("slurm_logs")
    container_python: str = "python3"  #: the interpreter inside ``container`` that runs jobs
    signal_delay_s: int = 120  #: seconds between the preemption/timeout signal and the kill
    max_requeues: int = 3  #: times a timed-out job is requeued from its checkpoint

    def _check(self, at: Callable[[str], str]) -> None:
        for key in ("nodes", "cpus_per_task", "time_minutes"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{key} must be at least 1", at(key))
        if self.signal_delay_s < 1:
            raise ConfigError("signal_delay_s must be at least 1", at("signal_delay_s"))
        if self.max_requeues < 0:
            raise ConfigError("max_requeues must be >= 0", at("max_requeues"))
        if self.gpus_per_node < 0:
            raise ConfigError("gpus_per_node must be >= 0", at("gpus_per_node"))


@dataclass(frozen=True)
class PathsConfig:
    """Where artefacts go: ``workdir`` (relative to the config file) holds grid.h5 etc.

    Attributes
    ----------
    workdir : Path
        Folder of grid.h5, emulator.pt, result.json and figures/.
    """

    workdir: Path = Path("run")


@dataclass(frozen=True)
class Config:
    """The whole configuration. ``path`` is the file it came from; ``text`` its content.

    Attributes
    ----------
    instruments : InstrumentsConfig
        The reference and target telescopes.
    source : SourceConfig
        The source model.
    modifier : ModifierConfig
        The ARF modifier family and its grid.
    temperatures : TemperaturesConfig
        The true temperatures simulated.
    simulation : SimulationConfig
        How grid points are simulated and fitted.
    emulator : EmulatorConfig
        The emulator's architecture and training.
    inversion : InversionConfig
        The theta inversion.
    mock : MockConfig
        Synthetic observations.
    slurm : SlurmConfig
        Slurm resources.
    paths : PathsConfig
        Artefact locations.
    path : Path
        The config file, resolved.
    text : str
        The file's TOML text.
    raw : dict of str to Any
        The parsed TOML as written.
    derived : dict of str to Any
        Defaults derived from written values, by dotted key.
    """

    instruments: InstrumentsConfig
    source: SourceConfig = SourceConfig()
    modifier: ModifierConfig = ModifierConfig()
    temperatures: TemperaturesConfig = TemperaturesConfig()
    simulation: SimulationConfig = SimulationConfig()
    emulator: EmulatorConfig = EmulatorConfig()
    inversion: InversionConfig = InversionConfig()
    mock: MockConfig = MockConfig()
    slurm: SlurmConfig = SlurmConfig()
    paths: PathsConfig = PathsConfig()
    path: Path = Path("config.toml")
    text: str = ""
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    derived: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    # artefact locations -------------------------------------------------------------------
    @property
    def workdir(self) -> Path:
        """The folder that holds every artefact (``paths.workdir``)."""
        return self.paths.workdir

    @property
    def grid_path(self) -> Path:
        """The simulated grid, ``WORKDIR/grid.h5``."""
        return self.workdir / "grid.h5"

    @property
    def emulator_path(self) -> Path:
        """The trained emulator, ``WORKDIR/emulator.pt``."""
        return self.workdir / "emulator.pt"

    @property
    def result_path(self) -> Path:
        """The inversion result, ``WORKDIR/result.json``."""
        return self.workdir / "result.json"

    @property
    def figures_dir(self) -> Path:
        """The figures folder, ``WORKDIR/figures``."""
        return self.workdir / "figures"

    def simulation_fingerprint(self) -> str:
        """Digest of everything that determines ``grid.h5``'s content (sections and files).

        Response files enter by content, so moving a file does not invalidate a grid but
        changing one does.

        Returns
        -------
        str
            SHA-256 hex digest of the canonical JSON of :data:`SIMULATION_SECTIONS` (files by
            their SHA-256), less the keys that do not change the grid's content.
        """
        resolved = _resolved_sections(self, SIMULATION_SECTIONS)
        return hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()

    def simulation_summary(self) -> str:
        """Return the sections that determine ``grid.h5`` as canonical JSON (stored in its /meta).

        Returns
        -------
        str
            JSON with sorted keys of :data:`SIMULATION_SECTIONS` as resolved (files by their
            SHA-256).
        """
        return json.dumps(_resolved_sections(self, SIMULATION_SECTIONS), sort_keys=True)


def set_key(text: str, section: str, key: str, value: str) -> str:
    """Return a config text with ``key = value`` (TOML source) set in ``[section]``.

    The existing line is replaced, else the line is added under the section's header, else a
    new section is appended. For scripts that derive configs from the example (tests,
    benchmarks); comments elsewhere survive.

    Parameters
    ----------
    text : str
        The config's TOML text.
    section : str
        The section's name as in its header (``simulation``, ``inversion.mcmc``).
    key : str
        The key within the section.
    value : str
        The value as TOML source (``"100"``, ``'"xspec"'``, ``"[0.5, 7.0]"``).

    Returns
    -------
    str
        The new text (not validated).
    """
    pattern = re.compile(
        rf"(^\[{re.escape(section)}\][^\n]*\n(?:(?!\[).*\n)*?){re.escape(key)}\s*=.*$", re.M
    )
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    header = re.compile(rf"^\[{re.escape(section)}\][^\n]*$", re.M)
    if not header.search(text):
        return text + f"\n[{section}]\n{key} = {value}\n"
    return header.sub(lambda m: f"{m.group(0)}\n{key} = {value}", text, count=1)


# --------------------------------------------------------------------------------------------
# loading
# --------------------------------------------------------------------------------------------


def load_config(path: str | Path) -> Config:
    """Read, validate and resolve a config file.

    Parameters
    ----------
    path : str or Path
        The TOML config file; relative paths in it resolve beside it.

    Returns
    -------
    Config
        The validated configuration, with derived defaults applied.

    Raises
    ------
    ConfigError
        On any problem (exit 2): the file is missing or unreadable, is not valid TOML, has an
        unknown or missing key, a value of the wrong type, or fails a section's check;
        ``where`` names the file and the key.
    """
    path = Path(path)
    where = str(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError("config file not found", where) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(
            f"cannot read config file ({exc.__class__.__name__}: {exc})", where
        ) from None
    return parse_config(text, path)


def parse_config(text: str, path: str | Path = "config.toml") -> Config:
    """Validate TOML ``text`` as if read from ``path`` (relative paths resolve beside it).

    Parameters
    ----------
    text : str
        The config's TOML text.
    path : str or Path, optional
        The file it stands for (it need not exist); named in errors.

    Returns
    -------
    Config
        The validated configuration, with derived defaults applied.

    Raises
    ------
    ConfigError
        When ``text`` is not valid TOML, has an unknown or missing key, a value of the wrong
        type, or fails a section's check (a referenced ARF/RMF or table file that does not
        exist included); ``where`` names the file and the key.
    """
    path = Path(path)
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"not valid TOML: {exc}", str(path)) from None
    base = path.resolve().parent
    loader = _Loader(str(path), base)
    values = loader.build(Config, raw, "", skip={"path", "text", "raw", "derived"})
    cfg = Config(**values, path=path.resolve(), text=text, raw=raw)
    cfg = _derive_defaults(cfg)
    _check_all(cfg, str(path))
    return cfg


def _written(raw: dict[str, Any], dotted: str) -> bool:
    """Whether the user wrote the key ``a.b.c`` in the TOML."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _derive_defaults(cfg: Config) -> Config:
    """Apply the defaults that depend on what the user wrote.

    A default never conflicts with a written value: ``[simulation] norm`` alone drops the
    counts default; ``steps`` or ``burn`` alone scale the other; walkers cover two per
    modifier parameter; the mock's temperature range and the fit-temperature grid follow
    ``temperatures.t_true`` (and the model's range); ``min_counts`` stays below a small
    ``counts``. What was derived is in ``cfg.derived``.
    """
    raw = cfg.raw
    derived: dict[str, Any] = {}
    sim, inv, mock = cfg.simulation, cfg.inversion, cfg.mock
    if _written(raw, "simulation.norm") and not _written(raw, "simulation.counts"):
        sim = dataclasses.replace(sim, counts=None)
        derived["simulation.counts"] = None
    if (
        sim.counts is not None
        and _written(raw, "simulation.counts")
        and not _written(raw, "simulation.min_counts")
        and sim.counts < 2 * sim.min_counts
    ):
        sim = dataclasses.replace(sim, min_counts=0.5 * sim.counts)
        derived["simulation.min_counts"] = sim.min_counts
    t_lo, t_hi = cfg.temperatures.t_true.bounds
    if t_lo > 0 and not _written(raw, "simulation.fit_tgrid"):
        tgrid = _default_fit_tgrid(cfg, t_lo, t_hi, sim.fit_tgrid)
        if tgrid != sim.fit_tgrid:
            sim = dataclasses.replace(sim, fit_tgrid=tgrid)
            derived["simulation.fit_tgrid"] = [tgrid.bounds[0], tgrid.bounds[1], len(tgrid)]
    mcmc = inv.mcmc
    steps_given = _written(raw, "inversion.mcmc.steps")
    burn_given = _written(raw, "inversion.mcmc.burn")
    if steps_given and not burn_given and mcmc.burn >= mcmc.steps:
        mcmc = dataclasses.replace(mcmc, burn=mcmc.steps // 3)
        derived["inversion.mcmc.burn"] = mcmc.burn
    elif burn_given and not steps_given and mcmc.steps <= mcmc.burn:
        mcmc = dataclasses.replace(mcmc, steps=3 * mcmc.burn)
        derived["inversion.mcmc.steps"] = mcmc.steps
    if not _written(raw, "inversion.mcmc.walkers"):
        need = 2 * _n_modifier_params(cfg)
        if mcmc.walkers < need:
            mcmc = dataclasses.replace(mcmc, walkers=need + need % 2)
            derived["inversion.mcmc.walkers"] = mcmc.walkers
    if mcmc is not inv.mcmc:
        inv = dataclasses.replace(inv, mcmc=mcmc)
    if t_lo > 0 and not _written(raw, "mock.t_range"):
        lo, hi = max(mock.t_range[0], t_lo), min(mock.t_range[1], t_hi)
        t_range = (lo, hi) if lo < hi else (t_lo, t_hi)
        if t_range != mock.t_range and t_range[0] < t_range[1]:
            mock = dataclasses.replace(mock, t_range=t_range)
            derived["mock.t_range"] = list(t_range)
    return dataclasses.replace(cfg, simulation=sim, inversion=inv, mock=mock, derived=derived)


def _default_fit_tgrid(cfg: Config, t_lo: float, t_hi: float, default: Axis) -> Axis:
    """Return the fit-temperature grid when none is written.

    ``default`` widened to a factor 3 beyond ``t_true`` on each side, and clipped to the
    model's temperature range.
    """
    lo, hi = default.bounds
    lo, hi = min(lo, t_lo / 3.0), max(hi, 3.0 * t_hi)
    try:
        # the expression alone (no table file is read here: a table model keeps the default)
        model = MODEL_PARSERS.get("native")(cfg.source.model)
        m_lo, m_hi = model.param_range(cfg.source.temperature)
    except Exception:  # an invalid model is reported by the source check with its reason
        return default
    lo, hi = max(lo, m_lo), min(hi, m_hi)
    if (lo, hi) == default.bounds or not 0 < lo < hi:
        return default
    return Axis(tuple(np.geomspace(lo, hi, len(default))), "logspace")


def _n_modifier_params(cfg: Config) -> int:
    """Return the modifier family's number of parameters.

    0 for an invalid family, which the modifier check reports.
    """
    try:
        return len(make_modifier(cfg.modifier.family, cfg.modifier.options).param_names)
    except (UserError, TypeError, ValueError):
        return 0


class _Loader:
    def __init__(self, file: str, base: Path) -> None:
        self.file = file
        self.base = base

    def where(self, key: str) -> str:
        return f"{self.file} [{key}]" if key else self.file

    def build(self, cls: type, raw: Any, key: str, skip: frozenset | set = frozenset()) -> dict:
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a table, got {_tname(raw)}", self.where(key))
        fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in skip}
        for name in raw:
            if name not in fields:
                hint = _suggest(name, list(fields))
                raise ConfigError(f"unknown key {name!r}{hint}", self.where(_join(key, name)))
        hints = typing.get_type_hints(cls)
        out = {}
        for name, f in fields.items():
            sub = _join(key, name)
            if name in raw:
                out[name] = self.convert(hints[name], raw[name], sub)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("required key is missing", self.where(sub))
            elif dataclasses.is_dataclass(hints[name]) and hints[name] is not Axis:
                # build absent sections from {} so their relative default paths resolve too
                out[name] = self.convert(hints[name], {}, sub)
            elif hints[name] is Path or hints[name] == (Path | None):
                default = f.default if f.default is not dataclasses.MISSING else None
                out[name] = self.base / default if isinstance(default, Path) else default
        return out

    def convert(self, tp: Any, value: Any, key: str) -> Any:
        where = self.where(key)
        origin = typing.get_origin(tp)
        if tp is Axis:
            return parse_axis(value, key, self.file)
        if dataclasses.is_dataclass(tp):
            return tp(**self.build(tp, value, key))
        if origin in (typing.Union, types.UnionType):
            args = typing.get_args(tp)
            if value is None and type(None) in args:
                return None
            errors = []
            for arg in args:
                if arg is type(None):
                    continue
                try:
                    return self.convert(arg, value, key)
                except ConfigError as exc:
                    errors.append(exc)
            raise errors[0]
        if tp is Path:
            if not isinstance(value, str) or not value:
                raise ConfigError(f"expected a path string, got {_tname(value)}", where)
            p = Path(value).expanduser()
            return p if p.is_absolute() else self.base / p
        if tp is bool:
            if not isinstance(value, bool):
                raise ConfigError(f"expected true or false, got {_tname(value)}", where)
            return value
        if tp is int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"expected an integer, got {_tname(value)}", where)
            return value
        if tp is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"expected a number, got {_tname(value)}", where)
            if not math.isfinite(value):
                raise ConfigError("expected a finite number", where)
            return float(value)
        if tp is str:
            if not isinstance(value, str):
                raise ConfigError(f"expected a string, got {_tname(value)}", where)
            return value
        if tp is Any:
            return value
        if origin is tuple:
            args = typing.get_args(tp)
            if not isinstance(value, list):
                raise ConfigError(f"expected a list, got {_tname(value)}", where)
            if len(args) == 2 and args[1] is Ellipsis:
                return tuple(self.convert(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
            if len(value) != len(args):
                raise ConfigError(f"expected a list of {len(args)} values", where)
            return tuple(
                self.convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))
            )
        if origin is dict:
            ktype, vtype = typing.get_args(tp)
            if not isinstance(value, dict):
                raise ConfigError(f"expected a table, got {_tname(value)}", where)
            return {k: self.convert(vtype, v, _join(key, k)) for k, v in value.items()}
        raise TypeError(f"unsupported config type {tp!r}")  # pragma: no cover - schema bug


def _check_all(cfg: Config, file: str) -> None:
    """Per-section checks, then the cross-section ones (modifier grid against its family)."""

    def visit(obj: Any, key: str) -> None:
        check = getattr(obj, "_check", None)
        if check is not None:
            check(lambda name, key=key: f"{file} [{_join(key, name)}]")
        if dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                child = getattr(obj, f.name)
                if dataclasses.is_dataclass(child):
                    visit(child, _join(key, f.name))

    visit(cfg, "")
    for name in ("reference", "target"):
        inst = getattr(cfg.instruments, name)
        inst._check(lambda key, name=name: f"{file} [instruments.{name}.{key}]")
        for kind in ("arf", "rmf"):
            p = getattr(inst, kind)
            if p is not None and not p.is_file():
                raise ConfigError(
                    f"{kind.upper()} file {p} does not exist", f"{file} [instruments.{name}.{kind}]"
                )
    _check_modifier(cfg, file)
    _check_source(cfg, file)
    lo, hi = cfg.mock.t_range
    if cfg.mock.theta:
        fam = make_modifier(cfg.modifier.family, cfg.modifier.options)
        for name in cfg.mock.theta:
            if name not in fam.param_names:
                hint = _suggest(name, list(fam.param_names))
                raise ConfigError(
                    f"unknown parameter {name!r}{hint}", f"{file} [mock.theta.{name}]"
                )


def make_modifier(family: str, options: Mapping[str, Any] | None = None) -> Any:
    """Build the modifier family ``family`` from :data:`registry.MODIFIER_FAMILIES`.

    The family is built with its ``options``.

    Parameters
    ----------
    family : str
        A registered family name (``gaussian``, ``multi_gaussian``, ``spline``).
    options : mapping, optional
        The family's options (``n_components``, ``knots``).

    Returns
    -------
    Modifier
        The family object (``xrmodifier_hpc.physics.modifiers.Modifier``).

    Raises
    ------
    UserError
        When the family is unknown (``where`` = ``"family"``) or its options are invalid.
    """
    cls = MODIFIER_FAMILIES.get(family, "family")
    return cls(**dict(options or {}))


def _check_modifier(cfg: Config, file: str) -> None:
    try:
        family = make_modifier(cfg.modifier.family, cfg.modifier.options)
    except UserError as exc:
        raise ConfigError(exc.message, f"{file} [modifier.{exc.where or 'family'}]") from None
    grid = cfg.modifier.grid
    for name in grid:
        if name not in family.param_names:
            hint = _suggest(name, list(family.param_names))
            raise ConfigError(
                f"unknown parameter {name!r} for family {family.name!r}{hint}",
                f"{file} [modifier.grid.{name}]",
            )
    missing = [n for n in family.param_names if n not in grid]
    if missing:
        raise ConfigError(
            f"no grid for parameter(s) {', '.join(missing)} of family {family.name!r}",
            f"{file} [modifier.grid]",
        )
    for name in family.param_names:
        try:
            family.check_values(name, grid[name].array)
        except UserError as exc:
            raise ConfigError(exc.message, f"{file} [modifier.grid.{name}]") from None
    try:
        family.check_grid({name: axis.array for name, axis in grid.items()})
    except UserError as exc:
        raise ConfigError(exc.message, f"{file} [modifier.grid]") from None


def _check_source(cfg: Config, file: str) -> None:
    """Check the source model against the chosen backend, reading no file but the config.

    ``native``: a product of ``registry.SOURCE_COMPONENTS`` (syntax, names, one additive
    component); where no term is a table, the temperature and frozen parameters are checked
    against the components' parameters and ranges too (a table's parameters are in its file:
    ``xrmodifier check`` and the backend check those). ``xspec``: any text that can be an
    XSPEC expression; XSPEC itself judges names and parameters (``xrmodifier check``).
    Table files (``atable{f}``, ``mtable{f}``) must exist, relative to the config's folder.
    """
    from xrmodifier_hpc.config.expression import (
        ExpressionError,
        check_xspec_syntax,
        split_product,
        table_files,
    )
    from xrmodifier_hpc.registry import SOURCE_COMPONENTS

    at_model = f"{file} [source.model]"
    expression = cfg.source.model
    temp = cfg.source.temperature
    if not temp.strip():
        raise ConfigError("name the temperature parameter", f"{file} [source.temperature]")
    try:
        if cfg.simulation.backend == "xspec":
            check_xspec_syntax(expression)
            terms = ()
        else:
            terms = split_product(expression)
    except ExpressionError as exc:
        raise ConfigError(exc.message, at_model) from None
    for kind, name in table_files(expression):
        path = Path(name).expanduser()
        path = path if path.is_absolute() else cfg.path.parent / path
        if not path.is_file():
            raise ConfigError(f"{kind} file {path} does not exist", at_model)
    if cfg.simulation.backend == "xspec":
        return
    classes = []
    for term in terms:
        if term.name not in SOURCE_COMPONENTS:
            raise ConfigError(SOURCE_COMPONENTS.suggest(term.name), at_model)
        classes.append(SOURCE_COMPONENTS.get(term.name, at_model))
    n_add = sum(bool(c.additive) for c in classes)
    if n_add != 1:
        raise ConfigError(
            f"{expression!r} has {n_add} additive components: give exactly one (bremss or "
            "atable{file}), whose norm is the free normalisation",
            at_model,
        )
    if any(getattr(c, "is_table", False) for c in classes):
        return  # the tables' parameter names are in their files
    components = [_component(c, t.arg, at_model) for c, t in zip(classes, terms)]
    names = [p for comp in components for p in comp.param_names]
    if temp not in names:
        hint = _suggest(temp, names)
        raise ConfigError(
            f"model {expression!r} has no parameter {temp!r}{hint}", f"{file} [source.temperature]"
        )
    for name in cfg.source.params:
        if name not in names:
            hint = _suggest(name, names)
            raise ConfigError(
                f"model {expression!r} has no parameter {name!r}{hint}",
                f"{file} [source.params.{name}]",
            )
    frozen = [n for n in names if n != temp and n not in cfg.source.params]
    if frozen:
        raise ConfigError(
            f"give values for the model's frozen parameter(s): {', '.join(frozen)}",
            f"{file} [source.params]",
        )
    for name, value in cfg.source.params.items():
        comp = next(c for c in components if name in c.param_names)
        lo, hi = comp.param_range(name)
        if not lo <= value <= hi:
            raise ConfigError(
                f"{name} = {value:g} is outside its allowed range {lo:g}-{hi:g}",
                f"{file} [source.params.{name}]",
            )


def _component(cls: Any, arg: str | None, where: str) -> Any:
    """Return an instance of a registered component class (its ``{arg}`` variant, if any)."""
    try:
        return cls(arg) if arg is not None else cls()
    except UserError as exc:
        raise ConfigError(exc.message, where) from None
    except TypeError:
        raise ConfigError(f"component {cls.name!r} takes no {{...}} argument", where) from None


#: keys inside SIMULATION_SECTIONS that do not change grid.h5's content: telescope 0 is not
#: simulated on the grid, results never depend on how points are chunked, and a config that
#: needs allow_double_area is refused without it (the flag never changes an accepted result)
_NOT_IN_FINGERPRINT = frozenset(
    {"instruments.reference", "simulation.chunk_size", "instruments.target.allow_double_area"}
)


def _resolved_sections(cfg: Config, sections: tuple[str, ...]) -> dict:
    def plain(obj: Any, key: str) -> Any:
        if isinstance(obj, Path):
            if obj.is_file():
                return {"sha256": hashlib.sha256(obj.read_bytes()).hexdigest()}
            return str(obj)
        if isinstance(obj, Axis):
            return [float(v) for v in obj.values]
        if dataclasses.is_dataclass(obj):
            return {
                f.name: plain(getattr(obj, f.name), _join(key, f.name))
                for f in dataclasses.fields(obj)
                if _join(key, f.name) not in _NOT_IN_FINGERPRINT
            }
        if isinstance(obj, dict):
            return {str(k): plain(v, _join(key, str(k))) for k, v in obj.items()}
        if isinstance(obj, (list, tuple)):
            return [plain(v, key) for v in obj]
        return obj

    return {name: plain(getattr(cfg, name), name) for name in sections}


def _one_of(value: str, allowed: tuple[str, ...], where: str) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{value!r} is not one of {', '.join(allowed)}{_suggest(value, list(allowed))}", where
        )


def _suggest(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.5)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _tname(value: Any) -> str:
    return {dict: "a table", list: "a list", str: "a string", bool: "a boolean"}.get(
        type(value), type(value).__name__
    )
