"""Synthetic observations by the FULL forward model (``xrmodifier mock``).

Each source i gets a true temperature (stratified in log T over ``[mock] t_range``, so any
number of sources spans the range) and a count level for telescope 1 (log-uniform in
``[mock] counts``: expected counts in the fitted band through the original target response).
Both set one model normalisation, the source's flux, which both telescopes see with their own
exposure and response. Then, with the configured backend (fakeit + C-stat fits):

* telescope 1 (``target``): simulated through the TRUE response ``phi_theta_true(Psi1)`` and
  fitted with the ORIGINAL ARF -> ``t1`` = ``t_fit_orig`` and its delta-C = 1 interval;
* telescope 0 (``reference``): simulated and fitted with its own response (identity
  modifier) -> ``t0``.

Random streams: source i's draws come from ``point_rng(seed, 3 i, MOCK_STREAM)``, telescope
1's spectrum from index ``3 i + 1`` and telescope 0's from ``3 i + 2`` (independent noise).
Sources whose fits fail, or whose fitted temperatures fall outside the simulated T_true grid
(the emulator's range), are dropped with a log line. Writes the observations CSV and a truth
sidecar ``<name>.truth.json`` (theta_true and each source's T_true, counts, norm).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc import __version__
from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.config.grid import MOCK_STREAM, point_rng
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.artefacts import Workdir, provenance, truth_path_for
from xrmodifier_hpc.io.observations import Observations, write_observations
from xrmodifier_hpc.io.result import ModifierSpec
from xrmodifier_hpc.io.truth import MockTruth, TruthSource
from xrmodifier_hpc.runtime.threads import FORWARD_MODEL_REASON, configure_threads

log = logging.getLogger("xrmodifier.mock")


@dataclass(frozen=True)
class MockResult:
    """What ``mock`` wrote.

    Attributes
    ----------
    observations : Observations
        The kept sources (keV).
    theta_true : dict of str to float
        The injected correction (parameter units).
    t_true : ndarray, shape (n_kept,)
        The kept sources' true temperatures (keV).
    path, truth_path : Path
        The observations CSV and its truth sidecar.
    dropped : tuple of str
        Names of the dropped sources.
    """

    observations: Observations
    theta_true: dict[str, float]
    t_true: np.ndarray
    path: Path
    truth_path: Path
    dropped: tuple[str, ...]


def parse_theta_overrides(items: Sequence[str] | None) -> dict[str, float]:
    """Parse ``--theta NAME=VALUE`` options.

    Parameters
    ----------
    items : sequence of str or None
        E.g. ``["mu=1.6", "A=0.1"]``.

    Returns
    -------
    dict of str to float
        E.g. ``{"mu": 1.6, "A": 0.1}``.

    Raises
    ------
    UserError
        For an item without ``=``, or a value that is not a finite number.
    """
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise UserError(f"--theta takes NAME=VALUE, got {item!r}")
        try:
            number = float(value)
        except ValueError:
            raise UserError(f"--theta {name}: {value.strip()!r} is not a number") from None
        if not math.isfinite(number):
            raise UserError(f"--theta {name}: {value.strip()!r} is not a finite number")
        out[name] = number
    return out


def resolve_theta(cfg: Config, overrides: Mapping[str, float] | None = None) -> np.ndarray:
    """theta_true in family order from ``[mock] theta`` updated by ``overrides``.

    Every parameter needs a value; values outside the family's domain are refused, values
    outside the simulated grid draw a warning (the emulator cannot reach them).

    Parameters
    ----------
    cfg : Config
        The configuration.
    overrides : mapping of str to float, optional
        Values from ``--theta``.

    Returns
    -------
    ndarray, shape (d,)
        Parameter units.

    Raises
    ------
    UserError
        For unknown or missing parameters, or values outside the family's domain.
    """
    from xrmodifier_hpc.physics.modifiers import ModifierError, get_modifier

    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    values = {**cfg.mock.theta, **(overrides or {})}
    unknown = [n for n in values if n not in family.param_names]
    if unknown:
        raise UserError(
            f"unknown parameter(s) {', '.join(unknown)} for family {family.name!r} "
            f"(parameters: {', '.join(family.param_names)})",
            "--theta",
        )
    missing = [n for n in family.param_names if n not in values]
    if missing:
        raise UserError(
            f"no true value for {', '.join(missing)}: set [mock] theta or pass --theta NAME=VALUE",
            f"{cfg.path} [mock.theta]",
        )
    theta = np.array([values[n] for n in family.param_names], dtype=np.float64)
    try:
        family.check_theta(theta)
    except ModifierError as exc:
        raise UserError(exc.message, f"{cfg.path} [mock.theta]") from None
    for name, value in zip(family.param_names, theta):
        axis = cfg.modifier.grid[name]
        lo, hi = axis.bounds
        if not lo <= value <= hi:
            log.warning(
                "theta_true %s = %g lies outside the simulated grid [%g, %g]: the "
                "emulator cannot reach it",
                name,
                value,
                lo,
                hi,
            )
    return theta


def draw_sources(
    n: int, t_range: tuple[float, float], counts: tuple[float, float], seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Draw true temperatures and telescope-1 count levels from each source's own stream.

    Parameters
    ----------
    n : int
        Number of sources.
    t_range : (float, float)
        Temperature range (keV).
    counts : (float, float)
        Count range.
    seed : int
        The mock's seed; source i draws from ``point_rng(seed, 3 i, MOCK_STREAM)``.

    Returns
    -------
    t_true : ndarray, shape (n,)
        keV, one per equal stratum of log T (jittered within it).
    counts : ndarray, shape (n,)
        Log-uniform in ``counts``.
    """
    lt = np.log(np.asarray(t_range, dtype=np.float64))
    lc = np.log(np.asarray(counts, dtype=np.float64))
    t_true = np.empty(n)
    level = np.empty(n)
    for i in range(n):
        u_t, u_c = point_rng(seed, 3 * i, MOCK_STREAM).random(2)
        t_true[i] = math.exp(lt[0] + (i + u_t) / n * (lt[1] - lt[0]))
        level[i] = math.exp(lc[0] + u_c * (lc[1] - lc[0]))
    return t_true, level


def norms_for_counts(cfg: Config, t_true: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """Model normalisations giving ``counts`` expected counts in the fitted band.

    Counts through the ORIGINAL target response and exposure (the ``[simulation] counts``
    convention).

    Parameters
    ----------
    cfg : Config
        The configuration (target instrument, source model, band).
    t_true : ndarray, shape (n,)
        Temperatures (keV).
    counts : ndarray, shape (n,)
        Expected counts in the band.

    Returns
    -------
    ndarray, shape (n,)
        Model normalisations (the model's norm units).

    Raises
    ------
    UserError
        When the model gives no counts in the band at some temperature.
    """
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.io.tables import load_model

    inst_cfg = cfg.instruments.target
    inst = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
    model = load_model(cfg.source.model, base=cfg.path.parent)
    params = {**cfg.source.params}
    flux = model.photon_flux(inst.energ_lo, inst.energ_hi, t_true, params)
    band = inst.band_mask(*cfg.simulation.band)
    per_norm = inst_cfg.exposure * inst.fold(flux)[:, band].sum(axis=1)
    if not np.all(per_norm > 0):
        raise UserError(
            "the source model gives no counts in the band at some temperature",
            f"{cfg.path} [source]",
        )
    return counts / per_norm


@dataclass(frozen=True)
class _Fits:
    """One telescope's fits of the n mock sources.

    T (n,) keV, errors (n, 2) keV, status (n,) and counts in the band (n,).
    """

    t: np.ndarray
    err: np.ndarray
    status: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, res: Any) -> _Fits:
        return cls(
            res.t_fit_orig[:, 0], res.err_orig[:, 0, :], res.status[:, 0, 0], res.counts[:, 0]
        )


def mock(
    config: Config | str | Path,
    output: str | Path | None = None,
    theta: Mapping[str, float] | None = None,
    n_sources: int | None = None,
    seed: int | None = None,
) -> MockResult:
    """Run the ``mock`` stage: sources seen by both telescopes, and their truth.

    Parameters
    ----------
    config : Config, str or Path
        The configuration or its file.
    output : str or Path, optional
        The observations CSV to write (default ``WORKDIR/observations.csv``); the truth goes
        beside it (``OBS.truth.json``).
    theta : mapping of str to float, optional
        True modifier parameters overriding ``[mock] theta``.
    n_sources : int, optional
        Sources to simulate (default ``[mock] n_sources``).
    seed : int, optional
        The mock's seed (default ``[mock] seed``).

    Returns
    -------
    MockResult
        The kept observations, theta_true, T_true (keV) and the files written.

    Raises
    ------
    UserError
        For bad options, an incomplete or invalid theta, or when every source is dropped.
    """
    from xrmodifier_hpc.physics.modifiers import get_modifier

    cfg = config if isinstance(config, Config) else load_config(config)
    n = cfg.mock.n_sources if n_sources is None else int(n_sources)
    seed = cfg.mock.seed if seed is None else int(seed)
    if n < 1:
        raise UserError(f"--n-sources must be at least 1 (got {n})")
    if seed < 0:
        raise UserError(f"--seed must be a non-negative integer (got {seed})")
    path = Path(output) if output is not None else Workdir(cfg.workdir).observations
    theta_true = resolve_theta(cfg, theta)
    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    # pools sized once the options are known good (a bad one is one line, nothing before it)
    # and before any heavy numpy work
    uses_torch = cfg.simulation.engine == "torch"
    configure_threads(torch=uses_torch, max_threads=1, max_reason=FORWARD_MODEL_REASON)
    t_true, level = draw_sources(n, cfg.mock.t_range, cfg.mock.counts, seed)
    norm = norms_for_counts(cfg, t_true, level)
    log.info("mock: %d sources, theta_true %s, seed %d", n, family.describe(theta_true), seed)
    tel1, tel0 = _observe(cfg, family, theta_true, t_true, norm, seed)
    names = [f"src{i + 1:03d}" for i in range(n)]
    keep = _keep(cfg, names, t_true, level, tel0, tel1)
    obs = _observations(names, keep, tel0, tel1, path)
    truth = MockTruth(
        provenance=provenance(stage="mock"),
        config=str(cfg.path),
        observations=path.name,
        modifier=ModifierSpec(family.name, family.options()),
        param_names=tuple(family.param_names),
        theta_true=family.describe(theta_true),
        seed=seed,
        n_requested=n,
        dropped=tuple(names[i] for i in range(n) if not keep[i]),
        sources=tuple(
            TruthSource(name, float(t), float(c), float(z), float(c1), float(c0))
            for name, t, c, z, c1, c0, k in zip(
                names, t_true, level, norm, tel1.counts, tel0.counts, keep
            )
            if k
        ),
    )
    truth_path = truth.write(truth_path_for(path))
    write_observations(path, obs, _comments(truth))
    log.info(
        "mock: wrote %d sources to %s (%d dropped), truth in %s", obs.n, path, n - obs.n, truth_path
    )
    return MockResult(obs, truth.theta_true, t_true[keep], path, truth_path, truth.dropped)


def _observe(
    cfg: Config,
    family: Any,
    theta_true: np.ndarray,
    t_true: np.ndarray,
    norm: np.ndarray,
    seed: int,
) -> tuple[_Fits, _Fits]:
    """Simulate and fit both telescopes' spectra of the mock sources.

    Telescope 1 through the true response, fitted with the original ARF; telescope 0 through
    its own response; each source from its own random streams (module docstring).
    """
    from xrmodifier_hpc.backends import make_backend

    n = t_true.size
    index = np.arange(n, dtype=np.int64)
    common = dict(realisations=1, mode="poisson", curves=False, seed=seed, stream=MOCK_STREAM)
    with make_backend(cfg, role="target", **common) as target:
        res1 = target.run(np.tile(theta_true, (n, 1)), t_true, 3 * index + 1, norm=norm)
    with make_backend(cfg, role="reference", **common) as reference:
        res0 = reference.run(np.tile(family.identity(), (n, 1)), t_true, 3 * index + 2, norm=norm)
    return _Fits.of(res1), _Fits.of(res0)


def _keep(
    cfg: Config,
    names: list[str],
    t_true: np.ndarray,
    level: np.ndarray,
    tel0: _Fits,
    tel1: _Fits,
) -> np.ndarray:
    """Which sources to keep (n,) bool; each dropped one gets a log line saying why.

    Raises
    ------
    UserError
        When every source is dropped.
    """
    from xrmodifier_hpc.backends.base import STATUS_ERROR_AT_BOUND, STATUS_UNUSABLE, describe_status

    t_lo, t_hi = cfg.temperatures.t_true.bounds
    bad_bits = STATUS_UNUSABLE | STATUS_ERROR_AT_BOUND
    keep = np.ones(len(names), dtype=bool)
    for i, name in enumerate(names):
        why = []
        for label, tel in (("telescope 0", tel0), ("telescope 1", tel1)):
            t, e, s = tel.t[i], tel.err[i], int(tel.status[i])
            if s & bad_bits:
                why.append(f"{label} fit {'/'.join(describe_status(s))}")
            elif not (np.isfinite(t) and np.all(np.isfinite(e)) and np.all(e > 0)):
                why.append(f"{label} fit has no finite error interval")
            elif not t_lo <= t <= t_hi:
                why.append(f"{label} T = {t:.3g} keV outside the grid [{t_lo:g}, {t_hi:g}]")
        if why:
            keep[i] = False
            log.info(
                "mock: dropped %s (T_true %.3g keV, %.0f counts): %s",
                name,
                t_true[i],
                level[i],
                "; ".join(why),
            )
    if not keep.any():
        raise UserError(
            "every mock source was dropped (see the log): check [mock] counts and "
            "t_range against the [temperatures] grid"
        )
    return keep


def _observations(
    names: list[str], keep: np.ndarray, tel0: _Fits, tel1: _Fits, path: Path
) -> Observations:
    """Gather the kept sources into an observations table (keV)."""
    f64 = np.float64
    return Observations(
        names=tuple(n for n, k in zip(names, keep) if k),
        t0=tel0.t[keep].astype(f64),
        t0_err_lo=tel0.err[keep, 0].astype(f64),
        t0_err_hi=tel0.err[keep, 1].astype(f64),
        t1=tel1.t[keep].astype(f64),
        t1_err_lo=tel1.err[keep, 0].astype(f64),
        t1_err_hi=tel1.err[keep, 1].astype(f64),
        path=path,
    )


def _comments(truth: MockTruth) -> tuple[str, ...]:
    """Write the observations file's header lines."""
    return (
        f"xrmodifier {__version__} mock observations (full forward model): "
        f"theta_true {truth.theta_true}, seed {truth.seed}",
        "t0: telescope 0 (reference); t1: telescope 1 fitted with its original ARF; keV, "
        "1-sigma (delta-C = 1) errors",
    )
