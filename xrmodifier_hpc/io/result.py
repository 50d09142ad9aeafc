"""``result.json``: the inversion's typed, versioned result (:class:`InversionResult`).

``invert`` builds one :class:`InversionResult` and writes it with :meth:`Record.write`;
``report`` (and users' scripts) read it back with :meth:`Record.read`. The JSON layout is the
dataclasses' fields, nested parts as objects, keyed as listed in the README::

    {"schema": "xrmodifier.result", "schema_version": 2, "provenance": {...},
     "config": ..., "observations": ..., "emulator": ..., "modifier": {...},
     "param_names": [...], ..., "theta_best": {...}, "optima": [...], "starts": [...],
     "posterior": {"summary": {"mu": {"median": ..., "p16": ..., "p2.5": ...}}, ...},
     "seed_loss": {...}, "sources": [...], "corrected_arf": ..., "target_arf": ...,
     "target": {"TELESCOP": ..., "INSTRUME": ...}, "identifiability": {...},
     "corrected_arfs": [{"path": ..., "statistic": "median", ...}, ...], "warnings": [...],
     "timing": {...}}

Version 2 (issue 12) added ``target_arf``, ``target``, ``identifiability`` and
``corrected_arfs``; ``corrected.arf`` became the posterior median. A version-1 file is refused
with "rerun invert".

Non-finite numbers are written as ``null`` (strict JSON) and read back as NaN. Temperatures
are in keV, theta in each parameter's own unit (``param_units``).

:class:`Part` is the base of the nested parts (also used by :mod:`xrmodifier_hpc.io.truth`):
a frozen dataclass whose JSON keys are its field names unless a field's metadata gives
another ``key`` (``"p2.5"`` is not a Python name).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.artefacts import Record, _plain

P = TypeVar("P", bound="Part")


def _float(value: Any) -> float:
    """Read a JSON number (``null`` for a non-finite one) as a float (NaN)."""
    return math.nan if value is None else float(value)


#: how a field's JSON value becomes its Python value, by the field's annotation
_COERCE: dict[str, Any] = {
    "str": str,
    "int": int,
    "bool": bool,
    "float": _float,
    "Any": lambda v: v,
    "dict[str, Any]": dict,
    "dict[str, str]": lambda v: {str(k): str(x) for k, x in v.items()},
    "dict[str, float]": lambda v: {str(k): _float(x) for k, x in v.items()},
    "dict[str, tuple[float, float]]": lambda v: {
        str(k): (_float(x[0]), _float(x[1])) for k, x in v.items()
    },
    "tuple[str, ...]": lambda v: tuple(str(x) for x in v),
    "tuple[int, ...]": lambda v: tuple(int(x) for x in v),
    "tuple[float, float]": lambda v: (_float(v[0]), _float(v[1])),
    "tuple[float, ...]": lambda v: tuple(_float(x) for x in v),
    "tuple[tuple[float, float], ...]": lambda v: tuple((_float(a), _float(b)) for a, b in v),
    "tuple[tuple[float, ...], ...]": lambda v: tuple(tuple(_float(x) for x in row) for row in v),
}


def _convert(owner: type, f: dataclasses.Field, value: Any, where: str) -> Any:
    """Convert the JSON value of field ``f`` of ``owner`` to its Python value."""
    nested = getattr(owner, "NESTED", {}).get(f.name)
    try:
        if nested is not None:
            kind, part = nested
            if value is None and f.default is None:  # an optional part that is absent
                return None
            if kind == "one":
                return part.from_dict(value, where)
            if kind == "list":
                return tuple(part.from_dict(v, where) for v in value)
            return {str(k): part.from_dict(v, where) for k, v in value.items()}
        return _COERCE[str(f.type)](value)
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise UserError(
            f"{owner.__name__}.{f.name} has an unexpected value ({exc.__class__.__name__}: "
            f"{exc}): rerun the stage that writes it",
            where,
        ) from None


@dataclass(frozen=True)
class Part:
    """Base of the parts nested in a record: a frozen dataclass with a JSON round-trip.

    ``NESTED`` maps a field name to ``(kind, Part subclass)`` for nested parts: kind ``"one"``
    (an object), ``"list"`` (a list, held as a tuple) or ``"dict"`` (an object of objects).
    A field's JSON key is its name, or ``metadata["key"]`` when given.
    """

    NESTED: ClassVar[dict[str, tuple[str, type[Part]]]] = {}

    def to_dict(self) -> dict[str, Any]:
        """Return the part as a JSON-ready dict.

        Returns
        -------
        dict
            One entry per field, keyed by its JSON key; non-finite numbers as None.
        """
        return {
            f.metadata.get("key", f.name): _plain(getattr(self, f.name))
            for f in dataclasses.fields(self)
        }

    @classmethod
    def from_dict(cls: type[P], data: Mapping[str, Any], where: str = "") -> P:
        """Build the part from :meth:`to_dict`'s output.

        Parameters
        ----------
        data : mapping
            The JSON object.
        where : str
            The file it came from (for messages).

        Returns
        -------
        Part
            An instance of ``cls``.

        Raises
        ------
        UserError
            When ``data`` is not an object, lacks a field, or a value has the wrong type.
        """
        if not isinstance(data, Mapping):
            raise UserError(f"{cls.__name__} must be a JSON object, got {data!r:.60}", where)
        values = {}
        for f in dataclasses.fields(cls):
            key = f.metadata.get("key", f.name)
            if key in data:
                values[f.name] = _convert(cls, f, data[key], where)
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise UserError(
                    f"{cls.__name__} lacks {key!r}: rerun the stage that writes it", where
                )
        return cls(**values)


def build_fields(cls: type, fields: Mapping[str, Any], where: str) -> dict[str, Any]:
    """Convert a record's JSON fields to its Python values (nested parts, tuples, NaN).

    Parameters
    ----------
    cls : type
        A :class:`Record` subclass with optional ``NESTED`` (as :class:`Part`).
    fields : mapping
        Field name to JSON value (only the record's own fields).
    where : str
        The file they came from (for messages).

    Returns
    -------
    dict
        Field name to Python value, ready for ``cls(**...)``.

    Raises
    ------
    UserError
        When a value has the wrong type.
    """
    by_name = {f.name: f for f in dataclasses.fields(cls)}
    return {name: _convert(cls, by_name[name], value, where) for name, value in fields.items()}


# --------------------------------------------------------------------------------------------
# the parts
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ModifierSpec(Part):
    """The ARF modifier family, as ``physics.modifiers.get_modifier(family, options)`` takes.

    Attributes
    ----------
    family : str
        Registered family name (``gaussian``, ``multi_gaussian``, ``spline``).
    options : dict
        The family's options (``n_components``, ``knots`` in keV).
    """

    family: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EmulatorError(Part):
    """The emulator's error added in quadrature to telescope 1's errors.

    Attributes
    ----------
    fraction : float
        s_emu as a fraction of the observed T1 (dimensionless).
    source : str
        ``"auto"`` (the emulator's off-grid RMS relative error) or ``"config"``.
    """

    fraction: float
    source: str


@dataclass(frozen=True)
class Optimum(Part):
    """One distinct local optimum of the multi-start (starts merged within ``merge_tol``).

    Attributes
    ----------
    theta : dict of str to float
        The best member's theta, by parameter name (parameter units).
    objective : float
        Its objective value (the configured objective, minimised).
    log_likelihood : float
        log L at theta (nats).
    n_starts : int
        How many starts converged here.
    starts : tuple of int
        Their indices in the start design.
    converged : bool
        Whether any of them reported convergence.
    at_bound : tuple of str
        Parameters on a bound of the emulator's range there.
    """

    theta: dict[str, float]
    objective: float
    log_likelihood: float
    n_starts: int
    starts: tuple[int, ...]
    converged: bool
    at_bound: tuple[str, ...]


@dataclass(frozen=True)
class StartResult(Part):
    """One L-BFGS-B run of the multi-start.

    Attributes
    ----------
    start : int
        Index in the start design.
    theta0, theta : dict of str to float
        Where it started and where it ended (parameter units).
    objective : float
        The objective at ``theta``.
    converged : bool
        scipy's success flag.
    iterations : int
        L-BFGS-B iterations.
    """

    start: int
    theta0: dict[str, float]
    theta: dict[str, float]
    objective: float
    converged: bool
    iterations: int


@dataclass(frozen=True)
class ParamSummary(Part):
    """Posterior summary of one parameter (parameter units).

    Attributes
    ----------
    median, p16, p84, p2_5, p97_5 : float
        Percentiles of the posterior samples (JSON keys ``median``, ``p16``, ``p84``,
        ``p2.5``, ``p97.5``).
    mean, std : float
        Sample mean and standard deviation (ddof = 1).
    """

    median: float
    p16: float
    p84: float
    p2_5: float = field(metadata={"key": "p2.5"})
    p97_5: float = field(metadata={"key": "p97.5"})
    mean: float = math.nan
    std: float = math.nan

    @classmethod
    def of(cls, samples: np.ndarray) -> ParamSummary:
        """Summarise one parameter's samples.

        Parameters
        ----------
        samples : ndarray, shape (n,)
            Posterior samples of the parameter.

        Returns
        -------
        ParamSummary
            Percentiles by ``numpy.percentile`` (linear interpolation), mean and std.
        """
        samples = np.asarray(samples, dtype=np.float64)
        q = np.percentile(samples, [2.5, 16.0, 50.0, 84.0, 97.5])
        return cls(
            median=float(q[2]),
            p16=float(q[1]),
            p84=float(q[3]),
            p2_5=float(q[0]),
            p97_5=float(q[4]),
            mean=float(samples.mean()),
            std=float(samples.std(ddof=1)) if samples.size > 1 else 0.0,
        )


@dataclass(frozen=True)
class ModeSummary(Part):
    """A posterior mode the walkers started from (Laplace approximation).

    Attributes
    ----------
    theta : dict of str to float
        The mode (parameter units).
    log_posterior : float
        log posterior there, in the sampler's unit coordinates (up to a constant).
    log_mass_laplace : float
        log of its Laplace-approximated probability mass (same constant).
    walkers : int
        Walkers started around it.
    """

    theta: dict[str, float]
    log_posterior: float
    log_mass_laplace: float
    walkers: int


@dataclass(frozen=True)
class PosteriorSummary(Part):
    """The emcee posterior: settings, diagnostics and per-parameter summaries.

    Attributes
    ----------
    samples_file : str
        The chains' file name beside result.json (``posterior.npz``).
    walkers, steps, burn, thin : int
        Sampler settings.
    n_samples : int
        Flat samples after burn-in and thinning (what ``summary`` is computed from).
    acceptance_fraction : float
        Mean acceptance fraction over walkers.
    autocorr_time : dict of str to float
        Integrated autocorrelation time per parameter (steps).
    chains_too_short : bool
        Whether the chains are shorter than 50 autocorrelation times.
    summary : dict of str to ParamSummary
        Per parameter.
    modes : tuple of ModeSummary
        The modes the walkers started from.
    """

    NESTED: ClassVar[dict[str, tuple[str, type[Part]]]] = {
        "summary": ("dict", ParamSummary),
        "modes": ("list", ModeSummary),
    }

    samples_file: str
    walkers: int
    steps: int
    burn: int
    thin: int
    n_samples: int
    acceptance_fraction: float
    autocorr_time: dict[str, float]
    chains_too_short: bool
    summary: dict[str, ParamSummary]
    modes: tuple[ModeSummary, ...] = ()


@dataclass(frozen=True)
class SeedLoss(Part):
    """The seed's point-estimate loss sum_i (T0_i - T1'_i)^2 (keV^2).

    Attributes
    ----------
    before : float
        With the uncorrected ARF (T1' = T1).
    after : float
        With T1' emulated for the written ``corrected.arf``: at ``theta``, the member of the
        modifier family nearest the written pointwise posterior median of m(E).
    ratio : float
        before / after (NaN when after is 0).
    note : str
        What before and after mean.
    theta : dict of str to float
        The theta the emulator was evaluated at for ``after`` (parameter units).
    curve_mismatch : float
        ``max |m(E; theta) - m_written(E)|`` over the fitted band, where the ARF is non-zero
        (dimensionless): how faithfully ``theta`` stands for the written ARF.
    """

    before: float
    after: float
    ratio: float
    note: str = ""
    theta: dict[str, float] = field(default_factory=dict)
    curve_mismatch: float = math.nan


@dataclass(frozen=True)
class SourceResult(Part):
    """One source: its observed temperatures and its corrected telescope-1 temperature (keV).

    Attributes
    ----------
    name : str
        Source name from the observations file.
    t0, t0_err_lo, t0_err_hi, t1, t1_err_lo, t1_err_hi : float
        The observed values and 1-sigma errors (keV).
    t1_corrected, t1_corrected_err_lo, t1_corrected_err_hi : float
        T1' with the written corrected ARF (at :attr:`SeedLoss.theta`) and its errors carried
        from T1's (keV).
    t_true_implied : float
        The T_true that reproduces the observed T1 under that theta (keV).
    clamped : bool
        Whether T1 lies outside what the emulator gives there (T_true clamped to its range).
    """

    name: str
    t0: float
    t0_err_lo: float
    t0_err_hi: float
    t1: float
    t1_err_lo: float
    t1_err_hi: float
    t1_corrected: float
    t1_corrected_err_lo: float
    t1_corrected_err_hi: float
    t_true_implied: float
    clamped: bool


@dataclass(frozen=True)
class DirectionSummary(Part):
    """One eigen-direction of the posterior covariance in normalised units ``u``.

    ``u = (theta - lo) / (hi - lo)`` over the emulator's range (the prior's box).

    Attributes
    ----------
    weights : dict of str to float
        The unit eigenvector by parameter.
    posterior_width : float
        Posterior standard deviation along it (fractions of the ranges).
    posterior_over_prior : float
        That width over the flat prior's along it (1/sqrt(12)): near 1, the data do not
        constrain the direction; much less than 1, they pin it down.
    """

    weights: dict[str, float]
    posterior_width: float
    posterior_over_prior: float


@dataclass(frozen=True)
class DegeneracySummary(Part):
    """A strongly correlated pair of parameters and the combination the data constrain.

    Attributes
    ----------
    params : tuple of str
        The pair ``(p, q)``.
    correlation : float
        Their posterior correlation.
    kind : str
        ``"product"`` (``p * q^exponent``) or ``"linear"`` (``p + exponent * q``).
    exponent : float
        The exponent (product) or the coefficient (linear).
    combination : str
        The combination as text, e.g. ``"A*sigma"``.
    median, p16, p84 : float
        Its posterior median and 16/84 percentiles (units of the combination).
    relative_width : float
        Its 16-84% half-width over |median| (product) or over the prior's (linear).
    """

    params: tuple[str, ...]
    correlation: float
    kind: str
    exponent: float
    combination: str
    median: float
    p16: float
    p84: float
    relative_width: float


@dataclass(frozen=True)
class ConstrainedEnergy(Part):
    """Where the data constrain m(E) (keV).

    Attributes
    ----------
    low, high : float
        The widest contiguous range (keV) where the posterior's 16-84% band of m(E) is
        narrower than ``criterion`` says.
    intervals : tuple of (float, float)
        Every such range (keV), widest first.
    min_ratio : float
        Smallest posterior/prior band-width ratio.
    energy_of_min : float
        Where it is (keV).
    criterion : str
        The rule, e.g. ``"posterior 16-84% band < 0.5 x prior's"``.
    """

    low: float
    high: float
    intervals: tuple[tuple[float, float], ...]
    min_ratio: float
    energy_of_min: float
    criterion: str = ""


@dataclass(frozen=True)
class IdentifiabilityReport(Part):
    """What the data constrain (``inference.identifiability.analyse``), as in result.json.

    Attributes
    ----------
    param_names : tuple of str
        Order of the matrix rows and columns.
    at_bound : dict of str to str
        Parameters of theta_best on a bound of the emulator's range: ``"lower"``/``"upper"``.
    correlation : tuple of tuple of float
        The posterior correlation matrix, shape (d, d).
    directions : tuple of DirectionSummary
        Eigen-directions of the posterior covariance, least constrained first.
    degeneracies : tuple of DegeneracySummary
        Strongly correlated pairs, most correlated first.
    area : dict of str to float
        Posterior ``median``, ``p16``, ``p84`` of the integral of m(E) - 1 over ``area_band``
        (keV; JSON key ``area_keV``); empty when not computed.
    area_band : tuple of float
        That band (keV; JSON key ``area_band_keV``); empty when not computed.
    constrained : ConstrainedEnergy or None
        Where the data constrain m(E) (JSON key ``constrained_energy_keV``); None: nowhere.
    lines : tuple of str
        The plain-language summary (printed in summary.txt).
    """

    NESTED: ClassVar[dict[str, tuple[str, type[Part]]]] = {
        "directions": ("list", DirectionSummary),
        "degeneracies": ("list", DegeneracySummary),
        "constrained": ("one", ConstrainedEnergy),
    }

    param_names: tuple[str, ...]
    at_bound: dict[str, str]
    correlation: tuple[tuple[float, ...], ...]
    directions: tuple[DirectionSummary, ...]
    degeneracies: tuple[DegeneracySummary, ...]
    area: dict[str, float] = field(default_factory=dict, metadata={"key": "area_keV"})
    area_band: tuple[float, ...] = field(default=(), metadata={"key": "area_band_keV"})
    constrained: ConstrainedEnergy | None = field(
        default=None, metadata={"key": "constrained_energy_keV"}
    )
    lines: tuple[str, ...] = ()


@dataclass(frozen=True)
class CorrectedArfFile(Part):
    """One corrected-ARF file ``invert`` wrote, and what it holds.

    Attributes
    ----------
    path : str
        Absolute path.
    statistic : str
        ``median``, ``p16``, ``p84`` (pointwise posterior percentile of m(E), keyword XRMSTAT)
        or ``ensemble`` (one posterior draw per row).
    n_draws : int
        Posterior draws behind it.
    description : str
        One line for the user (summary.txt).
    """

    path: str
    statistic: str
    n_draws: int
    description: str = ""


@dataclass(frozen=True)
class Timing(Part):
    """Wall-clock seconds of the inversion's parts on rank 0.

    Attributes
    ----------
    multistart_s, posterior_s, total_s : float
        Multi-start (gather included), posterior sampling, and the whole stage before writing.
    """

    multistart_s: float
    posterior_s: float
    total_s: float


# --------------------------------------------------------------------------------------------
# the record
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InversionResult(Record):
    """Everything ``invert`` found, as written to ``result.json``.

    Attributes
    ----------
    provenance : dict
        :func:`xrmodifier_hpc.io.artefacts.provenance` (package, version, created, host,
        stage).
    config, observations, emulator : str
        Absolute paths of the inputs.
    modifier : ModifierSpec
        The ARF modifier family.
    param_names, param_units : tuple of str
        Theta's parameters, in the emulator's order, and their units.
    bounds : dict of str to (float, float)
        The emulator's range of each parameter (the prior's support).
    t_true_range : (float, float)
        The emulator's T_true range (keV).
    objective : str
        The multi-start's objective (``registry.OBJECTIVES``).
    posterior_objective : str
        Always ``"likelihood"``: the posterior is the likelihood's.
    s_emu : EmulatorError
        The emulator error used.
    n_sources, n_starts, seed, ranks : int
        Sources inverted, multi-start starts, seed, MPI ranks.
    start_design : str
        ``sobol`` or ``lhs``.
    merge_tol : float
        Optima closer than this fraction of every parameter's range are one.
    theta_best : dict of str to float
        The best optimum of the objective (a diagnostic).
    objective_best : float
        The objective there.
    optima : tuple of Optimum
        Every distinct optimum, best first.
    starts : tuple of StartResult
        Every start, in design order.
    posterior : PosteriorSummary
        The posterior.
    seed_loss : SeedLoss
        The seed's loss before and after.
    sources : tuple of SourceResult
        Per source.
    corrected_arf : str
        Path of ``corrected.arf``: the target ARF times the pointwise posterior median of
        m(E) (the one to use).
    target_arf : str
        The target ARF that was corrected ("" for an instrument without an ARF).
    target : dict of str to str
        Its TELESCOP and INSTRUME (what ``apply`` checks other ARFs against); empty when the
        file does not say.
    identifiability : IdentifiabilityReport
        What the data constrain.
    corrected_arfs : tuple of CorrectedArfFile
        Every corrected-ARF file written, with the statistic each holds.
    warnings : tuple of str
        Warnings for the user (short chains, ...).
    timing : Timing
        Seconds spent.
    """

    SCHEMA: ClassVar[str] = "xrmodifier.result"
    VERSION: ClassVar[int] = 2
    NESTED: ClassVar[dict[str, tuple[str, type[Part]]]] = {
        "identifiability": ("one", IdentifiabilityReport),
        "corrected_arfs": ("list", CorrectedArfFile),
        "modifier": ("one", ModifierSpec),
        "s_emu": ("one", EmulatorError),
        "optima": ("list", Optimum),
        "starts": ("list", StartResult),
        "posterior": ("one", PosteriorSummary),
        "seed_loss": ("one", SeedLoss),
        "sources": ("list", SourceResult),
        "timing": ("one", Timing),
    }

    provenance: dict[str, Any]
    config: str
    observations: str
    emulator: str
    modifier: ModifierSpec
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    bounds: dict[str, tuple[float, float]]
    t_true_range: tuple[float, float]
    objective: str
    posterior_objective: str
    s_emu: EmulatorError
    n_sources: int
    n_starts: int
    start_design: str
    seed: int
    merge_tol: float
    ranks: int
    theta_best: dict[str, float]
    objective_best: float
    optima: tuple[Optimum, ...]
    starts: tuple[StartResult, ...]
    posterior: PosteriorSummary
    seed_loss: SeedLoss
    sources: tuple[SourceResult, ...]
    corrected_arf: str
    target_arf: str
    target: dict[str, str]
    identifiability: IdentifiabilityReport
    corrected_arfs: tuple[CorrectedArfFile, ...]
    warnings: tuple[str, ...]
    timing: Timing

    @classmethod
    def _build(cls, fields: dict[str, Any]) -> InversionResult:
        return cls(**build_fields(cls, fields, cls.SCHEMA))

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "") -> InversionResult:
        """Build the result from :meth:`to_dict`'s output; other schema versions are refused.

        Parameters
        ----------
        data : dict
            The JSON object of ``result.json``.
        where : str
            The file it came from (for messages).

        Returns
        -------
        InversionResult
            The result.

        Raises
        ------
        UserError
            For another schema, another schema version (version 1 wrote ``corrected.arf`` at
            theta_best: "rerun invert"), or missing or malformed fields.
        """
        if (
            isinstance(data, Mapping)
            and data.get("schema") == cls.SCHEMA
            and data.get("schema_version") != cls.VERSION
        ):
            raise UserError(
                f"{cls.SCHEMA} schema version {data.get('schema_version')} is not the "
                f"supported {cls.VERSION}: rerun invert (`xrmodifier invert CONFIG OBS`)",
                where or cls.SCHEMA,
            )
        return super().from_dict(data, where)

    def corrected_file(self, statistic: str) -> CorrectedArfFile:
        """Return the written corrected-ARF file that holds ``statistic``.

        Parameters
        ----------
        statistic : str
            ``median``, ``p16``, ``p84`` or ``ensemble``.

        Returns
        -------
        CorrectedArfFile
            Its entry in :attr:`corrected_arfs`.

        Raises
        ------
        KeyError
            When no such file was written.
        """
        for item in self.corrected_arfs:
            if item.statistic == statistic:
                return item
        raise KeyError(statistic)

    def vector(self, theta: Mapping[str, float]) -> np.ndarray:
        """Order a theta dict as a vector in ``param_names`` order.

        Parameters
        ----------
        theta : mapping of str to float
            Values by parameter name (e.g. :attr:`theta_best`).

        Returns
        -------
        ndarray, shape (d,)
            float64, parameter units.
        """
        return np.array([theta[n] for n in self.param_names], dtype=np.float64)

    @property
    def theta_best_vector(self) -> np.ndarray:
        """:attr:`theta_best` as a (d,) vector in ``param_names`` order."""
        return self.vector(self.theta_best)

    def __getitem__(self, key: str) -> Any:
        """Return the value under ``key`` as ``result.json`` spells it (a JSON-ready copy).

        For scripts that index the result like the JSON file
        (``result["posterior"]["summary"]["A"]["p2.5"]``); typed access is by attribute.

        Raises
        ------
        KeyError
            When ``key`` is not a top-level key of result.json.
        """
        return self.to_dict()[key]


def theta_dict(names: Sequence[str], theta: np.ndarray) -> dict[str, float]:
    """Turn a theta vector into a dict by parameter name.

    Parameters
    ----------
    names : sequence of str
        Parameter names, in the vector's order.
    theta : array_like, shape (d,)
        Values (parameter units).

    Returns
    -------
    dict of str to float
    """
    return {str(n): float(v) for n, v in zip(names, np.asarray(theta, dtype=np.float64))}
