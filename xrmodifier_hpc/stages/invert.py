"""``xrmodifier invert``: find the ARF correction theta that makes telescope 1 agree with 0.

Inputs are the trained emulator (``emulator.pt``) and an observations table (T0 +- s0,
T1 +- s1 per source). Nothing is re-simulated: every temperature comes from the emulator. The
statistics live in :mod:`xrmodifier_hpc.inference`; this module loads the inputs, spreads
the work over MPI ranks, assembles the :class:`~xrmodifier_hpc.io.result.InversionResult`
and writes the artefacts.

Under ``mpiexec``/``srun`` every rank loads the inputs (a file missing on one node ends the
job with that rank's message, see ``runtime.mpi``), the ``n_starts`` starts of the
multi-start are dealt round-robin over the ranks, rank 0 gathers them, merges those that
converged to the same point, samples the posterior and writes, in the workdir:

* ``corrected.arf``: the target ARF times the pointwise posterior MEDIAN of m(E) over the
  posterior draws, on the ARF's own energy grid (the file to use);
* ``corrected_p16.arf``, ``corrected_p84.arf``: the same with the 16th and 84th pointwise
  percentiles (the 68% envelope);
* ``corrected_ensemble.fits``: ``[inversion] ensemble_draws`` posterior draws of the corrected
  ARF, one per row (``io.arf_products``);
* ``posterior.npz`` (the chains) and ``result.json`` (:class:`InversionResult`: theta_best as a
  diagnostic, the identifiability report, the list of the corrected-ARF files).

Every corrected ARF says which statistic it holds (XRMSTAT) and which result it came from
(XRMRESLT). The seed loss "after" and the per-source T1' use the same corrected response as
the written ``corrected.arf``: the emulator takes theta, not a curve, so it is evaluated at the
member of the modifier family nearest the written median curve
(``inference.arf_posterior.nearest_theta``: weighted least squares over the fitted band, weights
the target's effective area); how far that member is from the written curve is recorded
(``seed_loss.curve_mismatch``). An exception on any rank aborts every rank with its message
(``runtime.mpi.fail_fast``): no rank waits forever in the gather.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.inference.arf_posterior import (
    MAX_BAND_DRAWS,
    Ensemble,
    MultiplierBand,
    ensemble,
    multiplier_draws,
    nearest_theta,
    pointwise_band,
    prior_band,
    select_draws,
)
from xrmodifier_hpc.inference.identifiability import analyse
from xrmodifier_hpc.inference.objectives import CorrectedSources, Objectives, corrected_sources
from xrmodifier_hpc.inference.optimise import merge_optima, run_starts, start_points
from xrmodifier_hpc.inference.posterior import (
    Posterior,
    likelihood_optima,
    sample_posterior,
    summarise,
)
from xrmodifier_hpc.inference.view import EmulatorView
from xrmodifier_hpc.io.artefacts import Workdir, provenance
from xrmodifier_hpc.io.atomic import replacing
from xrmodifier_hpc.io.metrics import offgrid_error
from xrmodifier_hpc.io.observations import Observations, read_observations
from xrmodifier_hpc.io.result import (
    CorrectedArfFile,
    EmulatorError,
    IdentifiabilityReport,
    InversionResult,
    ModeSummary,
    ModifierSpec,
    Optimum,
    PosteriorSummary,
    SeedLoss,
    SourceResult,
    StartResult,
    Timing,
    theta_dict,
)
from xrmodifier_hpc.runtime import mpi
from xrmodifier_hpc.runtime.environment import JobEnvironment, detect
from xrmodifier_hpc.runtime.progress import Progress
from xrmodifier_hpc.runtime.threads import configure_threads

log = logging.getLogger("xrmodifier.invert")


# --------------------------------------------------------------------------------------------
# settings and inputs
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InversionSettings:
    """Everything the inversion needs from ``[inversion]``, with s_emu resolved to a number.

    Attributes
    ----------
    objective : str
        The multi-start's objective (``registry.OBJECTIVES``).
    n_starts : int
        Multi-start starts.
    start_design : str
        ``sobol`` or ``lhs``.
    seed : int
        Start design and MCMC seed.
    s_emu : float
        Emulator error as a fraction of T1.
    s_emu_source : str
        ``"auto"`` (the emulator's off-grid error) or ``"config"``.
    merge_tol : float
        Two optima are the same when no parameter differs by more than this fraction of its
        range.
    walkers, steps, burn, thin : int
        emcee settings.
    n_tgrid : int
        Points of the log-T grid the emulator is evaluated on per theta.
    maxiter : int
        L-BFGS-B iteration limit.
    """

    objective: str = "likelihood"
    n_starts: int = 64
    start_design: str = "sobol"
    seed: int = 7
    s_emu: float = 0.0
    s_emu_source: str = "config"
    merge_tol: float = 0.02
    walkers: int = 32
    steps: int = 3000
    burn: int = 1000
    thin: int = 1
    n_tgrid: int = 24
    maxiter: int = 1000

    @classmethod
    def from_config(cls, cfg: Config, metrics: dict | None = None) -> InversionSettings:
        """Read the settings of ``cfg``'s ``[inversion]`` section.

        Parameters
        ----------
        cfg : Config
            The configuration.
        metrics : dict, optional
            The emulator's metrics (for ``s_emu = "auto"``).

        Returns
        -------
        InversionSettings
            The settings, with ``s_emu`` a number (a fraction of T1) and its source.

        Raises
        ------
        UserError
            When ``s_emu = "auto"`` and the metrics lack the off-grid error.
        """
        inv = cfg.inversion
        if isinstance(inv.s_emu, str):
            where = str(Workdir(cfg.workdir).emulator)
            s_emu, source = resolve_auto_s_emu(metrics, where), "auto"
        else:
            s_emu, source = float(inv.s_emu), "config"
        return cls(
            objective=inv.objective,
            n_starts=inv.n_starts,
            start_design=inv.start_design,
            seed=inv.seed,
            s_emu=s_emu,
            s_emu_source=source,
            walkers=inv.mcmc.walkers,
            steps=inv.mcmc.steps,
            burn=inv.mcmc.burn,
            thin=inv.mcmc.thin,
            merge_tol=inv.merge_tol,
            n_tgrid=inv.n_tgrid,
        )


def resolve_auto_s_emu(metrics: dict | None, where: str) -> float:
    """Take s_emu from the emulator's off-grid RMS relative error of T1 (``"auto"``).

    Parameters
    ----------
    metrics : dict or None
        The emulator's metrics (``emulator_metrics.json``'s content).
    where : str
        The emulator file (for messages).

    Returns
    -------
    float
        ``metrics["offgrid"]["emulator"]["t_fit_orig"]`` (a fraction, >= 0).

    Raises
    ------
    UserError
        When it is missing, non-finite or negative.
    """
    try:
        value = offgrid_error(metrics, "t_fit_orig")
    except (KeyError, TypeError, ValueError):
        raise UserError(
            's_emu = "auto" needs the emulator\'s off-grid error (metrics offgrid.emulator.'
            "t_fit_orig), which this emulator does not have; set [inversion] s_emu to a "
            "number (fraction of T1), e.g. 0.003",
            where,
        ) from None
    if not math.isfinite(value) or value < 0:
        raise UserError(f"the emulator's off-grid error is {value}; set [inversion] s_emu", where)
    return value


def load_emulator(cfg: Config) -> torch.nn.Module:
    """Load the trained emulator of ``cfg`` (float64, CPU).

    Parameters
    ----------
    cfg : Config
        The configuration (its workdir holds ``emulator.pt``).

    Returns
    -------
    torch.nn.Module
        ``emulator.load``'s module.

    Raises
    ------
    UserError
        When there is no emulator (naming the stages that make one) or it cannot be read.
    """
    path = Workdir(cfg.workdir).emulator
    if not path.is_file():
        raise UserError(
            "emulator not found: run `xrmodifier simulate CONFIG` then `xrmodifier train CONFIG`",
            str(path),
        )
    from xrmodifier_hpc.emulator import load

    return load(path, dtype=torch.float64, device="cpu")


@dataclass
class Problem:
    """One rank's inputs: the config, the emulator view, the observations and objectives.

    Attributes
    ----------
    cfg : Config
        The configuration.
    settings : InversionSettings
        ``[inversion]`` with s_emu resolved.
    view : EmulatorView
        The emulator in float64 on its log-T grid.
    obs : Observations
        The observed temperature pairs (keV) of the ``n`` sources.
    objectives : Objectives
        Every objective of theta for these observations.
    observations_path : Path
        The observations table read.
    """

    cfg: Config
    settings: InversionSettings
    view: EmulatorView
    obs: Observations
    objectives: Objectives
    observations_path: Path


def prepare(
    config: Config | str | Path, observations: str | Path, module: torch.nn.Module | None
) -> Problem:
    """Load and check everything the inversion needs (on every rank).

    Parameters
    ----------
    config : Config, str or Path
        The configuration or its file.
    observations : str or Path
        The observations table (CSV or FITS).
    module : torch.nn.Module, optional
        An emulator to use instead of the config's (tests).

    Returns
    -------
    Problem
        The config, settings, emulator view, observations (keV, 1-sigma errors) and
        objectives, ready for the multi-start.

    Raises
    ------
    UserError
        For a bad config, a missing or foreign emulator, a modifier family other than the
        emulator's, too few walkers, or bad observations.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    if module is None:
        module = load_emulator(cfg)
    settings = InversionSettings.from_config(cfg, getattr(module, "metrics", None))
    view = EmulatorView(module, settings.n_tgrid)
    from xrmodifier_hpc.physics.modifiers import get_modifier

    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    if tuple(family.param_names) != view.param_names:
        raise UserError(
            f"the emulator's parameters {view.param_names} are not those of the configured "
            f"modifier family {family.name!r} {tuple(family.param_names)}; retrain it",
            str(Workdir(cfg.workdir).emulator),
        )
    if settings.walkers < 2 * view.d:
        raise UserError(
            f"the ensemble sampler needs at least 2 walkers per parameter ({2 * view.d} for "
            f"{view.d} parameters), got {settings.walkers}",
            f"{cfg.path} [inversion.mcmc.walkers]",
        )
    obs = read_observations(
        observations, t_range=(view.t_lo, view.t_hi), error_level=cfg.inversion.error_level
    )
    if obs.n < view.d:
        log.warning("only %d sources for %d parameters: theta is not identifiable", obs.n, view.d)
    objectives = Objectives(view, obs, settings.s_emu)
    return Problem(cfg, settings, view, obs, objectives, Path(observations).resolve())


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


def invert(
    config: Config | str | Path,
    observations: str | Path,
    module: torch.nn.Module | None = None,
    comm: Any = "auto",
) -> InversionResult | None:
    """Run the ``invert`` stage: multi-start over MPI ranks, posterior and artefacts on rank 0.

    Parameters
    ----------
    config : Config, str or Path
        The configuration or its file.
    observations : str or Path
        The observations table (CSV or FITS; keV).
    module : torch.nn.Module, optional
        An emulator to use instead of the config's ``emulator.pt`` (tests).
    comm : mpi4py communicator, None or "auto"
        ``"auto"``: COMM_WORLD when launched as several ranks; None: one process.

    Returns
    -------
    InversionResult or None
        What rank 0 wrote to ``result.json``; None on the other ranks.

    Raises
    ------
    UserError
        For bad inputs (on every rank alike; a failure on some ranks only aborts the job).
    """
    # the tensors here are small (tens to a few thousand rows): intra-op threads cost more in
    # synchronisation than they gain, badly so on a loaded machine; ranks give parallelism
    threads = torch.get_num_threads()
    env = detect()
    comm = mpi.world_comm(env) if comm == "auto" else comm
    try:
        with mpi.fail_fast(comm):
            return _invert(config, observations, module, comm, env)
    finally:
        torch.set_num_threads(threads)


def _invert(
    config: Config | str | Path,
    observations: str | Path,
    module: torch.nn.Module | None,
    comm: Any,
    env: JobEnvironment,
) -> InversionResult | None:
    t_start = time.perf_counter()
    problem = mpi.agree(comm, lambda: prepare(config, observations, module))
    # pools sized once the inputs are known good (a bad one is one line, nothing before it)
    configure_threads(ranks=env.size, torch=True, torch_threads=1)  # BLAS: granted cores
    interactive = env.interactive
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    settings = problem.settings
    if rank == 0:
        log.info(
            "inverting %d sources (%s) with objective %s, s_emu = %.3g%s, %d starts on %d rank(s)",
            problem.obs.n,
            problem.observations_path,
            settings.objective,
            settings.s_emu,
            " (auto)" if settings.s_emu_source == "auto" else "",
            settings.n_starts,
            size,
        )
    # multi-start: identical start design on every rank, starts dealt round-robin
    starts = start_points(settings.n_starts, problem.view.d, settings.start_design, settings.seed)
    mine = list(range(rank, settings.n_starts, size))
    progress = Progress(
        len(mine),
        interactive=interactive and size == 1,
        label=f"multi-start (rank {rank})" if size > 1 else "multi-start",
    )
    local = run_starts(
        problem.objectives, settings.objective, starts, mine, settings.maxiter, progress.update
    )
    progress.close()
    mpi.fault_point("invert.starts", comm)
    results = _gather(comm, local)
    t_multistart = time.perf_counter() - t_start
    written: list[InversionResult] = []
    mpi.on_root(
        comm,
        lambda: written.append(_finish(problem, results, size, t_start, t_multistart, interactive)),
    )
    return written[0] if written else None


def _gather(comm: Any, local: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every rank's start results on rank 0, in start order (an empty list elsewhere)."""
    if comm is None:
        return sorted(local, key=lambda r: r["start"])
    mpi.wait_politely(comm)  # ranks done early sleep rather than spin in the gather
    parts = comm.gather(local, root=0)
    if comm.rank != 0:
        return []
    return sorted((r for part in parts for r in part), key=lambda r: r["start"])


def _finish(
    problem: Problem,
    results: list[dict[str, Any]],
    size: int,
    t_start: float,
    t_multistart: float,
    interactive: bool,
) -> InversionResult:
    """Rank 0: merge the optima, sample the posterior, assemble and write the artefacts."""
    settings = problem.settings
    groups = merge_optima(results, settings.merge_tol)
    log.info(
        "multi-start: %d starts -> %d distinct optima in %.1f s",
        len(results),
        len(groups),
        t_multistart,
    )
    # the posterior is the likelihood's: its modes, from the distinct optima found
    t_post = time.perf_counter()
    modes_u = likelihood_optima(
        problem.objectives, settings.objective, groups, settings.merge_tol, settings.maxiter
    )
    progress = Progress(settings.steps, interactive=interactive, label="posterior sampling")
    posterior = sample_posterior(
        problem.objectives.likelihood,
        modes_u,
        settings.walkers,
        settings.steps,
        settings.burn,
        settings.thin,
        settings.seed,
        progress.update,
    )
    progress.close()
    for note in posterior.warnings:
        log.warning("%s", note)
    timing = Timing(
        multistart_s=t_multistart,
        posterior_s=time.perf_counter() - t_post,
        total_s=time.perf_counter() - t_start,
    )
    theta_best = problem.view.theta_of(groups[0]["u"])
    products = posterior_arfs(problem, posterior.flat(), theta_best)
    for note in products.warnings:
        log.warning("%s", note)
    result = _assemble(problem, results, groups, posterior, products, size, timing)
    _write_outputs(problem.cfg, result, posterior, products)
    return result


# --------------------------------------------------------------------------------------------
# the corrected ARFs from the posterior
# --------------------------------------------------------------------------------------------


@dataclass
class PosteriorArfs:
    """The corrected-ARF products of one posterior, on the target's own energy grid.

    Attributes
    ----------
    target : Instrument
        The target instrument (its ARF, or unit area without one), keV and cm^2.
    band : MultiplierBand
        Pointwise posterior median, 16/84 and 2.5/97.5 percentiles of m(E) on the target's
        bin centres.
    ensemble : Ensemble or None
        The ensemble's draws and curves; None when the target has no ARF file to copy.
    theta_written : ndarray, shape (d,)
        The family member nearest ``band.median`` (what the emulator is evaluated at for the
        seed loss "after" and T1').
    curve_mismatch : float
        ``max |m(E; theta_written) - band.median|`` over the fitted band (dimensionless).
    identifiability : IdentifiabilityReport
        What the data constrain.
    files : tuple of CorrectedArfFile
        What will be written, with the statistic each holds.
    warnings : list of str
        Notes for the user.
    """

    target: Any
    band: MultiplierBand
    ensemble: Ensemble | None
    theta_written: np.ndarray
    curve_mismatch: float
    identifiability: IdentifiabilityReport
    files: tuple[CorrectedArfFile, ...]
    warnings: list[str]


#: posterior draws used as starting points when projecting the median curve onto the family
_PROJECTION_STARTS = 8


def posterior_arfs(problem: Problem, samples: np.ndarray, theta_best: np.ndarray) -> PosteriorArfs:
    """Compute the corrected ARFs' multipliers, the identifiability report and theta_written.

    Parameters
    ----------
    problem : Problem
        The inversion's inputs (config: target instrument, fitted band, seed, ensemble size).
    samples : ndarray, shape (n_samples, d)
        The flat posterior samples (theta units).
    theta_best : ndarray, shape (d,)
        The multi-start's best optimum (checked against the bounds, a diagnostic).

    Returns
    -------
    PosteriorArfs
        The pointwise band and ensemble of m(E) on the target's bins, the family member
        nearest the median curve, the identifiability report and the files to write.
    """
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.physics.modifiers import get_modifier

    cfg, view, seed = problem.cfg, problem.view, problem.settings.seed
    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    tcfg = cfg.instruments.target
    target = Instrument.load(tcfg.arf, tcfg.rmf, tcfg.allow_double_area)
    e_mid = 0.5 * (target.energ_lo + target.energ_hi)
    notes: list[str] = []
    band = pointwise_band(family, e_mid, samples, MAX_BAND_DRAWS, seed)
    wanted = cfg.inversion.ensemble_draws
    n_ens = min(wanted, samples.shape[0])
    if n_ens < wanted:
        notes.append(
            f"the posterior holds {samples.shape[0]} samples, fewer than ensemble_draws = "
            f"{wanted}: the ensemble has {n_ens} rows"
        )
    ens = None
    if target.arf_path is not None:
        ens = ensemble(family, e_mid, samples, n_ens, seed)
    else:
        notes.append("the target has no ARF file: no corrected_ensemble.fits is written")
    # the emulator takes theta: project the written median curve onto the family, weighting
    # each energy of the fitted band by the target's effective area there
    fit_lo, fit_hi = (float(x) for x in cfg.simulation.band)
    in_band = (e_mid >= fit_lo) & (e_mid <= fit_hi)
    weights = np.where(in_band, target.area / max(float(target.area.max()), 1e-300), 0.0)
    if not np.any(weights > 0):
        weights = in_band.astype(np.float64) if in_band.any() else np.ones_like(e_mid)
    starts = np.vstack(
        [np.median(samples, axis=0), theta_best, select_draws(samples, _PROJECTION_STARTS, seed)]
    )
    theta_written, mismatch = nearest_theta(
        family, e_mid, band.median, view.theta_lo, view.theta_hi, starts, weights
    )
    curves = multiplier_draws(family, e_mid, select_draws(samples, MAX_BAND_DRAWS, seed))
    ident = analyse(
        view.param_names,
        samples,
        view.theta_lo,
        view.theta_hi,
        theta_best=theta_best,
        posterior_band=band,
        prior=prior_band(family, e_mid, view.theta_lo, view.theta_hi, seed=seed),
        energy_edges=(target.energ_lo, target.energ_hi),
        curves=curves,
        band=(fit_lo, fit_hi),
    )
    report = ident.to_dict()
    report["area_keV"] = report["area_keV"] or {}
    report["area_band_keV"] = report["area_band_keV"] or []
    workdir = Workdir(cfg.workdir)
    files = [
        CorrectedArfFile(
            str(workdir.corrected_arf_stat(stat)),
            stat,
            band.n_draws,
            f"target ARF x pointwise posterior {what} of m(E) over {band.n_draws} draws",
        )
        for stat, what in (
            ("median", "median (use this one)"),
            ("p16", "16th percentile"),
            ("p84", "84th percentile"),
        )
    ]
    if ens is not None:
        files.append(
            CorrectedArfFile(
                str(workdir.corrected_ensemble),
                "ensemble",
                ens.n_draws,
                f"{ens.n_draws} posterior draws of the corrected ARF, one per row "
                "(for propagating the calibration uncertainty)",
            )
        )
    return PosteriorArfs(
        target=target,
        band=band,
        ensemble=ens,
        theta_written=np.asarray(theta_written, dtype=np.float64),
        curve_mismatch=float(mismatch),
        identifiability=IdentifiabilityReport.from_dict(report, "identifiability"),
        files=tuple(files),
        warnings=notes,
    )


# --------------------------------------------------------------------------------------------
# the result
# --------------------------------------------------------------------------------------------


def _assemble(
    problem: Problem,
    results: list[dict[str, Any]],
    groups: list[dict[str, Any]],
    posterior: Posterior,
    products: PosteriorArfs,
    size: int,
    timing: Timing,
) -> InversionResult:
    """Assemble the :class:`InversionResult` of one run (rank 0)."""
    from xrmodifier_hpc.io.arf_products import arf_identity
    from xrmodifier_hpc.physics.modifiers import get_modifier

    cfg, view, obs, settings = problem.cfg, problem.view, problem.obs, problem.settings
    names = view.param_names
    theta_best = view.theta_of(groups[0]["u"])
    corrected = corrected_sources(view, products.theta_written, obs)
    if corrected.clamped.any():
        log.warning(
            "%d source(s) have T1 outside what the emulator gives for the corrected ARF",
            int(corrected.clamped.sum()),
        )
    arf_path = products.target.arf_path
    family = get_modifier(cfg.modifier.family, cfg.modifier.options)
    workdir = Workdir(cfg.workdir)
    return InversionResult(
        provenance=provenance(stage="invert"),
        config=str(cfg.path),
        observations=str(problem.observations_path),
        emulator=str(workdir.emulator),
        modifier=ModifierSpec(family.name, family.options()),
        param_names=names,
        param_units=tuple(getattr(family, "param_units", ("",) * len(names))),
        bounds={n: (float(a), float(b)) for n, a, b in zip(names, view.theta_lo, view.theta_hi)},
        t_true_range=(view.t_lo, view.t_hi),
        objective=settings.objective,
        posterior_objective="likelihood",
        s_emu=EmulatorError(settings.s_emu, settings.s_emu_source),
        n_sources=obs.n,
        n_starts=settings.n_starts,
        start_design=settings.start_design,
        seed=settings.seed,
        merge_tol=settings.merge_tol,
        ranks=size,
        theta_best=theta_dict(names, theta_best),
        objective_best=groups[0]["fun"],
        optima=_optima(problem, groups),
        starts=tuple(_start(view, r) for r in results),
        posterior=_posterior_summary(view, settings, posterior, workdir.posterior.name),
        seed_loss=_seed_loss(
            obs, corrected.t1_corrected, theta_dict(names, products.theta_written), products
        ),
        sources=_sources(obs, corrected),
        corrected_arf=str(workdir.corrected_arf),
        target_arf="" if arf_path is None else str(arf_path),
        target={} if arf_path is None else arf_identity(arf_path),
        identifiability=products.identifiability,
        corrected_arfs=products.files,
        warnings=tuple(posterior.warnings) + tuple(products.warnings),
        timing=timing,
    )


def _optima(problem: Problem, groups: list[dict[str, Any]]) -> tuple[Optimum, ...]:
    view, names = problem.view, problem.view.param_names
    thetas = np.array([view.theta_of(g["u"]) for g in groups])
    with torch.no_grad():
        log_l = problem.objectives.likelihood(torch.tensor(thetas)).numpy()
    return tuple(
        Optimum(
            theta=theta_dict(names, th),
            objective=g["fun"],
            log_likelihood=float(ll),
            n_starts=len(g["starts"]),
            starts=tuple(g["starts"]),
            converged=g["success"],
            at_bound=tuple(n for n, u in zip(names, g["u"]) if u <= 1e-6 or u >= 1 - 1e-6),
        )
        for g, th, ll in zip(groups, thetas, log_l)
    )


def _start(view: EmulatorView, r: dict[str, Any]) -> StartResult:
    return StartResult(
        start=r["start"],
        theta0=theta_dict(view.param_names, view.theta_of(r["u0"])),
        theta=theta_dict(view.param_names, view.theta_of(r["u"])),
        objective=r["fun"],
        converged=r["success"],
        iterations=r["nit"],
    )


def _posterior_summary(
    view: EmulatorView, settings: InversionSettings, posterior: Posterior, samples_file: str
) -> PosteriorSummary:
    names = view.param_names
    samples = posterior.flat()
    return PosteriorSummary(
        samples_file=samples_file,
        walkers=settings.walkers,
        steps=settings.steps,
        burn=settings.burn,
        thin=settings.thin,
        n_samples=int(samples.shape[0]),
        acceptance_fraction=posterior.acceptance,
        autocorr_time=theta_dict(names, posterior.tau),
        chains_too_short=bool(posterior.warnings),
        summary=summarise(samples, names),
        modes=tuple(
            ModeSummary(
                theta=theta_dict(names, view.theta_of(m.u)),
                log_posterior=m.log_post,
                log_mass_laplace=m.log_mass,
                walkers=m.walkers,
            )
            for m in posterior.modes
        ),
    )


def _seed_loss(
    obs: Observations, t1_corrected: np.ndarray, theta: dict[str, float], products: PosteriorArfs
) -> SeedLoss:
    before = float(np.sum((obs.t0 - obs.t1) ** 2))
    after = float(np.sum((obs.t0 - t1_corrected) ** 2))
    return SeedLoss(
        before=before,
        after=after,
        ratio=before / after if after > 0 else math.inf,
        note="before: theta = identity, where T1' = T1 (the uncorrected ARF); after: T1' "
        "emulated for the written corrected.arf, at the modifier nearest its posterior-median "
        f"m(E) (within {products.curve_mismatch:.2g} of it over the fitted band)",
        theta=theta,
        curve_mismatch=products.curve_mismatch,
    )


def _sources(obs: Observations, corrected: CorrectedSources) -> tuple[SourceResult, ...]:
    return tuple(
        SourceResult(
            **row,
            t1_corrected=float(corrected.t1_corrected[k]),
            t1_corrected_err_lo=float(corrected.err_lo[k]),
            t1_corrected_err_hi=float(corrected.err_hi[k]),
            t_true_implied=float(corrected.t_star[k]),
            clamped=bool(corrected.clamped[k]),
        )
        for k, row in enumerate(obs.to_rows())
    )


def _write_outputs(
    cfg: Config, result: InversionResult, posterior: Posterior, products: PosteriorArfs
) -> None:
    """``posterior.npz``, the corrected ARFs (median, p16, p84, ensemble), ``result.json``."""
    from xrmodifier_hpc.io.arf_products import write_arf_ensemble, write_corrected_arf
    from xrmodifier_hpc.io.ogip import MULTIPLIER_KEY, write_arf

    workdir = Workdir(cfg.workdir)
    workdir.root.mkdir(parents=True, exist_ok=True)
    with replacing(workdir.posterior, suffix=".npz") as tmp:
        np.savez(
            tmp,
            chain=posterior.chain,
            log_prob=posterior.log_prob,
            param_names=np.array(result.param_names),
            burn=posterior.burn,
            thin=posterior.thin,
            tau=posterior.tau,
            acceptance=posterior.acceptance,
        )
    extra = {
        "XRMFAMIL": (result.modifier.family, "ARF modifier family"),
        "XRMOBJ": (result.objective, "inversion objective"),
        "XRMOBS": (Path(result.observations).name, "observations file"),
        "XRMNSRC": (result.n_sources, "number of sources inverted"),
    }
    target, band = products.target, products.band
    for item in result.corrected_arfs:
        ens = products.ensemble
        if item.statistic == "ensemble" and ens is not None:  # listed only when drawn
            write_arf_ensemble(
                item.path,
                target.arf_path,
                ens.multipliers,
                ens.thetas,
                result.param_names,
                workdir.result,
                extra,
            )
        elif target.arf_path is not None:
            write_corrected_arf(
                item.path,
                target.arf_path,
                band.statistic(item.statistic),
                item.statistic,
                workdir.result,
                band.n_draws,
                extra,
            )
        else:  # no ARF: the file holds m(E) itself, for the instrument's own matrix
            write_arf(
                item.path,
                target.energ_lo,
                target.energ_hi,
                target.area * band.statistic(item.statistic),
                header=target.arf_header,
                provenance={
                    **extra,
                    "XRMSTAT": (item.statistic, "statistic of m(E) over the posterior draws"),
                    "XRMRESLT": (str(workdir.result), "inversion result this ARF comes from"),
                    "XRMNDRAW": (band.n_draws, "posterior draws behind XRMSTAT"),
                    MULTIPLIER_KEY: (True, "dimensionless multiplier of the RMF's area"),
                },
            )
    result.write(workdir.result)


def format_summary(result: InversionResult) -> str:
    """Format a short human-readable table of the result (printed by the CLI).

    Parameters
    ----------
    result : InversionResult
        The inversion's result.

    Returns
    -------
    str
        Objective and counts, one row per parameter (best, median, 16/84 percentiles,
        autocorrelation time), the seed's loss before and after, the warnings, which
        corrected-ARF file holds what.
    """
    lines = [
        f"objective {result.objective}, {result.n_sources} sources, "
        f"{len(result.optima)} distinct optima from {result.n_starts} starts"
    ]
    lines.append(f"{'param':>8} {'best':>10} {'median':>10} {'p16':>10} {'p84':>10} {'tau':>7}")
    post = result.posterior
    for n in result.param_names:
        s = post.summary[n]
        lines.append(
            f"{n:>8} {result.theta_best[n]:10.4g} {s.median:10.4g} "
            f"{s.p16:10.4g} {s.p84:10.4g} {post.autocorr_time[n]:7.1f}"
        )
    sl = result.seed_loss
    lines.append(
        f"seed loss sum (T0 - T1')^2: before {sl.before:.4g} keV^2, "
        f"after {sl.after:.4g} keV^2 (x{sl.ratio:.3g} smaller)"
    )
    for w in result.warnings:
        lines.append(f"warning: {w}")
    for item in result.corrected_arfs:
        lines.append(f"{Path(item.path).name}: {item.description}")
    return "\n".join(lines)
