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

import datetime as _dt
import json
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
from xrmodifier_hpc.io.atomic import write_text
from xrmodifier_hpc.io.observations import Observations, write_observations

log = logging.getLogger("xrmodifier.mock")


@dataclass(frozen=True)
class MockResult:
    """What ``mock`` wrote: the observations, their truth and the files."""

    observations: Observations
    theta_true: dict[str, float]
    t_true: np.ndarray
    path: Path
    truth_path: Path
    dropped: tuple[str, ...]


def parse_theta_overrides(items: Sequence[str] | None) -> dict[str, float]:
    """``["mu=1.6", "A=0.1"]`` -> ``{"mu": 1.6, "A": 0.1}``; bad items raise UserError."""
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
    """True temperatures (keV; one per equal stratum of log T, jittered) and telescope-1
    count levels (log-uniform), from source i's own stream."""
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
    """Model normalisations giving ``counts`` expected counts in the fitted band through the
    ORIGINAL target response (the ``[simulation] counts`` convention)."""
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.physics.spectra import parse_model

    inst_cfg = cfg.instruments.target
    inst = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
    model = parse_model(cfg.source.model, base=cfg.path.parent)
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


def truth_path_for(path: Path) -> Path:
    """``obs.csv`` -> ``obs.truth.json`` (beside it)."""
    return path.with_name(f"{path.stem}.truth.json")


def mock(
    config: Config | str | Path,
    output: str | Path | None = None,
    theta: Mapping[str, float] | None = None,
    n_sources: int | None = None,
    seed: int | None = None,
) -> MockResult:
    """Simulate observations of ``n_sources`` (default ``[mock]``) sources by both telescopes
    and write them (default ``workdir/observations.csv``) with the truth sidecar."""
    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.backends.base import STATUS_ERROR_AT_BOUND, STATUS_UNUSABLE, describe_status
    from xrmodifier_hpc.physics.modifiers import get_modifier

    cfg = config if isinstance(config, Config) else load_config(config)
    n = cfg.mock.n_sources if n_sources is None else int(n_sources)
    seed = cfg.mock.seed if seed is None else int(seed)
    if n < 1:
        raise UserError(f"--n-sources must be at least 1 (got {n})")
    if seed < 0:
        raise UserError(f"--seed must be a non-negative integer (got {seed})")
    path = Path(output) if output is not None else cfg.workdir / "observations.csv"
    theta_true = resolve_theta(cfg, theta)
    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    t_true, level = draw_sources(n, cfg.mock.t_range, cfg.mock.counts, seed)
    norm = norms_for_counts(cfg, t_true, level)
    index = np.arange(n, dtype=np.int64)
    common = dict(realisations=1, mode="poisson", curves=False, seed=seed, stream=MOCK_STREAM)
    log.info("mock: %d sources, theta_true %s, seed %d", n, family.describe(theta_true), seed)
    with make_backend(cfg, role="target", **common) as target:
        res1 = target.run(np.tile(theta_true, (n, 1)), t_true, 3 * index + 1, norm=norm)
    with make_backend(cfg, role="reference", **common) as reference:
        res0 = reference.run(np.tile(family.identity(), (n, 1)), t_true, 3 * index + 2, norm=norm)

    t1, e1, s1 = res1.t_fit_orig[:, 0], res1.err_orig[:, 0, :], res1.status[:, 0, 0]
    t0, e0, s0 = res0.t_fit_orig[:, 0], res0.err_orig[:, 0, :], res0.status[:, 0, 0]
    t_lo, t_hi = cfg.temperatures.t_true.bounds
    names = [f"src{i + 1:03d}" for i in range(n)]
    keep = np.ones(n, dtype=bool)
    bad_bits = STATUS_UNUSABLE | STATUS_ERROR_AT_BOUND
    for i in range(n):
        why = []
        for label, t, e, s in (("telescope 0", t0, e0, s0), ("telescope 1", t1, e1, s1)):
            if int(s[i]) & bad_bits:
                why.append(f"{label} fit {'/'.join(describe_status(int(s[i])))}")
            elif not (np.isfinite(t[i]) and np.all(np.isfinite(e[i])) and np.all(e[i] > 0)):
                why.append(f"{label} fit has no finite error interval")
            elif not t_lo <= t[i] <= t_hi:
                why.append(f"{label} T = {t[i]:.3g} keV outside the grid [{t_lo:g}, {t_hi:g}]")
        if why:
            keep[i] = False
            log.info(
                "mock: dropped %s (T_true %.3g keV, %.0f counts): %s",
                names[i],
                t_true[i],
                level[i],
                "; ".join(why),
            )
    if keep.sum() == 0:
        raise UserError(
            "every mock source was dropped (see the log): check [mock] counts and "
            "t_range against the [temperatures] grid"
        )
    obs = Observations(
        names=tuple(np.array(names)[keep]),
        t0=t0[keep].astype(np.float64),
        t0_err_lo=e0[keep, 0].astype(np.float64),
        t0_err_hi=e0[keep, 1].astype(np.float64),
        t1=t1[keep].astype(np.float64),
        t1_err_lo=e1[keep, 0].astype(np.float64),
        t1_err_hi=e1[keep, 1].astype(np.float64),
        path=path,
    )
    theta_dict = family.describe(theta_true)
    truth = {
        "version": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "config": str(cfg.path),
        "observations": path.name,
        "modifier": {"family": family.name, "options": family.options()},
        "param_names": list(family.param_names),
        "theta_true": theta_dict,
        "seed": seed,
        "n_requested": n,
        "dropped": [names[i] for i in range(n) if not keep[i]],
        "sources": [
            {
                "name": names[i],
                "t_true": float(t_true[i]),
                "counts": float(level[i]),
                "norm": float(norm[i]),
                "counts_t1": float(res1.counts[i, 0]),
                "counts_t0": float(res0.counts[i, 0]),
            }
            for i in range(n)
            if keep[i]
        ],
    }
    truth_path = truth_path_for(path)
    comments = (
        f"xrmodifier {__version__} mock observations (full forward model): "
        f"theta_true {theta_dict}, seed {seed}",
        "t0: telescope 0 (reference); t1: telescope 1 fitted with its original ARF; keV, "
        "1-sigma (delta-C = 1) errors",
    )
    write_text(truth_path, json.dumps(truth, indent=2) + "\n")
    write_observations(path, obs, comments)
    log.info(
        "mock: wrote %d sources to %s (%d dropped), truth in %s", obs.n, path, n - obs.n, truth_path
    )
    return MockResult(
        obs,
        theta_dict,
        t_true[keep],
        path,
        truth_path,
        tuple(names[i] for i in range(n) if not keep[i]),
    )


def read_truth(path: str | Path) -> dict[str, Any]:
    """The truth sidecar of an observations file (or the sidecar itself)."""
    path = Path(path)
    if path.suffix != ".json":
        path = truth_path_for(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError("truth sidecar not found (made by `xrmodifier mock`)", str(path)) from None
    except json.JSONDecodeError as exc:
        raise UserError(f"not valid JSON ({exc})", str(path)) from None
