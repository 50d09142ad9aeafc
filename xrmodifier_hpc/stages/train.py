"""The ``train`` stage: fit the emulator to ``grid.h5``, here or as a submitit job, and measure it.

``xrmodifier train CONFIG`` trains in the current process (as one rank of a DDP group when
started by torchrun); ``--executor slurm|local|debug`` submits the same training through
``runtime.launch`` (Slurm DDP job, ``--tasks N`` local processes, or this process). Each
process reads the grid and runs :func:`train_process`; rank 0 then measures the emulator
against grid interpolation, on the validation split and at the off-grid check points that
``simulate`` stored in ``grid.h5``, and writes ``emulator.pt`` and ``emulator_metrics.json``.

Training builds no backend: with ``backend = "xspec"`` a GPU node needs no HEASoft. A grid
made before ``simulate`` produced the off-grid points trains all the same, with the off-grid
accuracy reported as not measured.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from xrmodifier_hpc.backends.base import STATUS_UNUSABLE
from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.emulator import (
    OffgridTruth,
    Trainer,
    TrainingData,
    discard_checkpoint,
    format_seconds,
    heldout_accuracy,
    offgrid_accuracy,
    pick_device,
    rank_world,
    save,
    set_threads,
    training_fingerprint,
)
from xrmodifier_hpc.emulator.persist import load as load_emulator
from xrmodifier_hpc.emulator.training import FitOutcome
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import store
from xrmodifier_hpc.io.artefacts import Workdir, provenance
from xrmodifier_hpc.io.metrics import (
    AccuracyTarget,
    EmulatorMetrics,
    OffGridAccuracy,
    RmsRel,
    TrainingSummary,
)
from xrmodifier_hpc.runtime import launch
from xrmodifier_hpc.runtime.environment import torch_distributed

log = logging.getLogger("xrmodifier")

#: the Slurm job name of a training job
JOB_NAME = "xrmodifier-train"


# --------------------------------------------------------------------------------------------
# the grid
# --------------------------------------------------------------------------------------------


def check_grid(cfg: Config) -> store.GridData:
    """Load ``grid.h5`` for training (without curves), or say what to run.

    The grid must exist, be complete and come from this config's simulation settings (the
    fingerprint ``simulate`` stores), so that the emulator and its off-grid check describe
    the configured instruments and source.

    Parameters
    ----------
    cfg : Config
        The config.

    Returns
    -------
    xrmodifier_hpc.io.store.GridData
        The grid without its C(T) curves (temperatures in keV).

    Raises
    ------
    UserError
        When the grid is missing, unreadable, incomplete, or from other settings.
    """
    path = Workdir(cfg.workdir).grid
    simulate = f"`xrmodifier simulate {cfg.path}`"
    if not path.is_file():
        raise UserError(f"no grid to train on: run {simulate} first", str(path))
    data = store.load_grid(path, curves=False, allow_incomplete=True)
    done = np.asarray(data.done, bool)
    if not done.all():
        raise UserError(
            f"the grid is incomplete ({int(done.sum())} of {done.size} points done): run "
            f"{simulate} to finish it",
            str(path),
        )
    stored = str(data.meta.get("fingerprint", ""))
    if stored and stored != cfg.simulation_fingerprint():
        raise UserError(
            f"the grid was simulated with other settings than {cfg.path.name} (instruments, "
            f"source, modifier, temperatures or simulation changed since): rerun {simulate}",
            str(path),
        )
    expected = Grid.from_config(cfg).param_names
    if tuple(data.param_names) != tuple(expected):
        raise UserError(
            f"the grid's parameters {tuple(data.param_names)} are not the config's "
            f"{tuple(expected)}: rerun {simulate}",
            str(path),
        )
    return data


def load_training_data(cfg: Config) -> TrainingData:
    """Read the config's ``grid.h5`` reduced to per-point training targets.

    Fits whose status has a ``backends.base.STATUS_UNUSABLE`` bit are left out.

    Parameters
    ----------
    cfg : Config
        The config.

    Returns
    -------
    TrainingData
        One target per grid point with usable fits of both T1 and T1'.

    Raises
    ------
    UserError
        As :func:`check_grid`, or when fewer than 4 points have usable fits.
    """
    data = TrainingData.from_grid(check_grid(cfg), unusable=STATUS_UNUSABLE)
    if data.n < 4:
        raise UserError(
            f"only {data.n} grid points have usable fits for both T1 and T1' "
            f"({data.n_excluded} left out): too few to train on",
            str(Workdir(cfg.workdir).grid),
        )
    return data


def load_offgrid_truth(cfg: Config) -> tuple[OffgridTruth | None, str]:
    """Read the off-grid check points stored in ``grid.h5``, and a note for the metrics.

    Parameters
    ----------
    cfg : Config
        The config (``[emulator] offgrid_points`` = 0: no off-grid check).

    Returns
    -------
    truth : OffgridTruth or None
        The points, their asimov [T1, T1'] (keV) and which are usable (no
        ``STATUS_UNUSABLE`` bit, finite and positive); None when there is nothing to measure
        with.
    note : str
        Why there is nothing, or how the stored points differ from the config; empty
        otherwise. Logged here too.

    Raises
    ------
    UserError
        When grid.h5 is missing, unreadable or not a grid file, or its ``/offgrid`` group
        is damaged.
    """
    wanted = cfg.emulator.offgrid_points
    if wanted == 0:
        return None, "not requested ([emulator] offgrid_points = 0)"
    path = Workdir(cfg.workdir).grid
    stored = store.load_offgrid(path)
    if stored is None:
        note = (
            f"{path.name} holds no off-grid check points (made before simulate produced "
            f"them): rerun `xrmodifier simulate {cfg.path}` to add them"
        )
        log.info(f"off-grid accuracy not measured: {note}")
        return None, note
    note = ""
    if stored.n_points != wanted:
        note = (
            f"{path.name} holds {stored.n_points} off-grid check points, the config asks for "
            f"{wanted}: using the {stored.n_points} stored (rerun simulate to make {wanted})"
        )
        log.info(note)
    truth = np.column_stack([stored.t_fit_orig, stored.t_fit_mod]).astype(np.float64)
    bad = ((stored.status & STATUS_UNUSABLE) != 0).any(axis=-1)
    usable = ~bad & np.isfinite(truth).all(axis=-1) & (truth > 0).all(axis=-1)
    return OffgridTruth(stored.theta, stored.t_true, truth, usable), note


# --------------------------------------------------------------------------------------------
# one process of the training
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What one process of ``train`` ends with.

    Parameters
    ----------
    completed : bool
        False when stopped by ``--epochs-this-run`` (the checkpoint holds the state).
    rank, world_size : int
        This process in its DDP group.
    epochs_run : int
        Epochs trained, earlier sessions included.
    weights_digest : str
        SHA-256 of the final weights (equal on every rank).
    device : str
        The torch device.
    first_loss, last_loss, best_val_loss : float or None
        Training loss of the first and last epoch, best validation loss.
    emulator_path, metrics_path : Path or None
        Set on rank 0 when completed.
    metrics : dict or None
        The JSON form of :class:`EmulatorMetrics` (rank 0, completed).
    """

    completed: bool
    rank: int
    world_size: int
    epochs_run: int
    weights_digest: str
    device: str
    first_loss: float | None = None
    last_loss: float | None = None
    best_val_loss: float | None = None
    emulator_path: Path | None = None
    metrics_path: Path | None = None
    metrics: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        """Return the result as plain values (paths as strings), as a job returns it.

        Returns
        -------
        dict
            Every field by name; ``emulator_path`` and ``metrics_path`` as str or None.
        """
        out = dataclasses.asdict(self)
        for key in ("emulator_path", "metrics_path"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


def train_process(
    cfg: Config,
    *,
    max_epochs_this_session: int | None = None,
    register_saver: Callable[[Callable[[], bool]], None] | None = None,
) -> TrainResult:
    """Train in this process (one rank of a DDP group when torch.distributed is initialised).

    Rank 0 then measures the emulator and writes ``emulator.pt`` and
    ``emulator_metrics.json``, and removes the checkpoint.

    Parameters
    ----------
    cfg : Config
        The config.
    max_epochs_this_session : int, optional
        Stop after this many epochs, keeping the checkpoint.
    register_saver : callable, optional
        Receives a function that writes the latest epoch-boundary state to the checkpoint
        (for preemption handlers).

    Returns
    -------
    TrainResult
        This process's outcome (paths and metrics set on rank 0 when completed).

    Raises
    ------
    UserError
        For a missing, incomplete or foreign grid, or a device that is not there.
    """
    ecfg = cfg.emulator
    wd = Workdir(cfg.workdir)
    rank, world = rank_world()
    denv = torch_distributed()
    device = pick_device(ecfg.device, denv.local_rank if denv else 0)
    threads = set_threads(ecfg)
    data = load_training_data(cfg)
    if rank == 0:
        log.info(
            f"training data: {data.n} of {data.n_grid_points} grid points "
            f"({data.n_excluded} left out: no usable fit for T1 or T1'; "
            f"{data.n_realisations_excluded} points lost some realisations to failed fits); "
            f"device {device}, {world} process(es), {threads} thread(s) each"
        )
    fingerprint = training_fingerprint(data, ecfg)
    trainer = Trainer(data, ecfg, wd.emulator_checkpoint, fingerprint, device)
    if register_saver is not None:
        register_saver(trainer.save_latest)
    outcome = trainer.run(max_epochs_this_session)
    history = outcome.history
    result = TrainResult(
        completed=outcome.completed,
        rank=rank,
        world_size=world,
        epochs_run=outcome.epochs_run,
        weights_digest=trainer.final_digest,
        device=str(device),
        first_loss=history[0]["loss"] if history else None,
        last_loss=history[-1]["loss"] if history else None,
        best_val_loss=outcome.best_val_loss,
    )
    if outcome.completed and rank == 0:
        _measure_and_write(cfg, data, trainer, outcome, result, fingerprint)
    return result


def _measure_and_write(
    cfg: Config,
    data: TrainingData,
    trainer: Trainer,
    outcome: FitOutcome,
    result: TrainResult,
    fingerprint: str,
) -> None:
    """Measure the emulator on rank 0 after training; write ``emulator.pt`` and its metrics."""
    wd = Workdir(cfg.workdir)
    model = trainer.model.to("cpu")
    heldout = heldout_accuracy(data, model, trainer.val_idx)
    truth, note = load_offgrid_truth(cfg)
    if truth is not None:
        offgrid, arrays = offgrid_accuracy(data, model, truth, cfg.emulator.offgrid_points, note)
    else:
        offgrid, arrays = OffGridAccuracy(0, cfg.emulator.offgrid_points, note=note), None
    metrics = EmulatorMetrics(
        heldout=heldout,
        offgrid=offgrid,
        training=_training_summary(data, trainer, outcome, result),
        target=AccuracyTarget.for_offgrid(offgrid),
        provenance=provenance(stage="train", config=str(cfg.path), grid=str(wd.grid)),
    )
    model.metrics = metrics.to_dict()
    model.config_text = cfg.text
    model.offgrid = arrays
    model.training_fingerprint = fingerprint  # a rerun on the same data and settings is a no-op
    save(model, wd.emulator)
    metrics.write(wd.emulator_metrics)
    discard_checkpoint(wd.emulator_checkpoint)
    log.info(f"wrote {wd.emulator} and {wd.emulator_metrics}")
    result.emulator_path = wd.emulator
    result.metrics_path = wd.emulator_metrics
    result.metrics = model.metrics


def _training_summary(
    data: TrainingData, trainer: Trainer, outcome: FitOutcome, result: TrainResult
) -> TrainingSummary:
    last = outcome.history[-1] if outcome.history else {}
    return TrainingSummary(
        epochs_run=outcome.epochs_run,
        best_epoch=outcome.best_epoch,
        best_val_loss=outcome.best_val_loss,
        stopped_early=outcome.stopped_early,
        train_seconds=outcome.train_seconds,
        world_size=result.world_size,
        device=result.device,
        n_train=int(trainer.train_idx.size),
        n_val=int(trainer.val_idx.size),
        n_excluded_failed=data.n_excluded,
        n_realisations_excluded=data.n_realisations_excluded,
        final_val_rms_rel=RmsRel(last.get("val_rms_rel_orig"), last.get("val_rms_rel_mod")),
    )


def _train_job(
    config_path: str,
    max_epochs_this_session: int | None,
    register_saver: Callable[[Callable[[], bool]], None] | None = None,
) -> dict[str, Any]:
    """Run one task of a submitted training job (module level: submitit pickles it)."""
    cfg = load_config(config_path)
    result = train_process(
        cfg, max_epochs_this_session=max_epochs_this_session, register_saver=register_saver
    )
    return result.as_dict()


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """The end of ``xrmodifier train``.

    Parameters
    ----------
    executor : str or None
        "slurm", "local", "debug", or None (trained in this process).
    job_id : str or None
        The submitted job.
    log_folder : Path or None
        Its logs.
    results : list of dict
        Per-task :meth:`TrainResult.as_dict`, rank 0 first (empty with ``wait=False``).
    """

    executor: str | None
    job_id: str | None = None
    log_folder: Path | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def primary(self) -> dict[str, Any] | None:
        """Rank 0's result, or None when not waited for."""
        return self.results[0] if self.results else None

    @property
    def metrics(self) -> EmulatorMetrics | None:
        """Rank 0's metrics when the training completed, else None."""
        first = self.primary
        if first is None or not first.get("metrics"):
            return None
        return EmulatorMetrics.from_dict(first["metrics"])


def submit(
    cfg: Config,
    kind: str,
    tasks: int = 1,
    max_epochs_this_session: int | None = None,
    timeout_min: float | None = None,
    signal_delay_s: int | None = None,
) -> Any:
    """Submit the training of ``cfg`` as a submitit job of ``kind``.

    Parameters
    ----------
    cfg : Config
        The config (its file is re-read by every task).
    kind : {"slurm", "local", "debug"}
        Where it runs (see ``runtime.launch.make_executor``).
    tasks : int
        Processes for ``local``.
    max_epochs_this_session : int, optional
        Stop after this many epochs, keeping the checkpoint.
    timeout_min, signal_delay_s : optional
        Override ``[slurm] time_minutes`` and ``signal_delay_s``.

    Returns
    -------
    submitit.Job
        The submitted job; every task returns :meth:`TrainResult.as_dict`.

    Raises
    ------
    UserError
        When the job cannot be submitted.
    """
    return launch.submit(
        cfg,
        kind,
        _train_job,
        str(cfg.path),
        max_epochs_this_session,
        tasks=tasks,
        timeout_min=timeout_min,
        signal_delay_s=signal_delay_s,
        device=cfg.emulator.device,
        job_name=JOB_NAME,
        name="training",
    )


def train(
    config: str | Path | Config,
    executor: str | None = None,
    tasks: int | None = None,
    wait: bool = True,
    restart: bool = False,
    epochs_this_run: int | None = None,
    follow: TextIO | None = sys.stderr,
) -> TrainOutcome:
    """Run the ``train`` stage wherever it runs.

    Checks the grid first (a bad grid is a one-line error here, not a failed job), then
    trains in this process (``executor`` None) or submits and, with ``wait``, waits.

    Parameters
    ----------
    config : str, Path or Config
        The config.
    executor : {"slurm", "local", "debug"} or None
        Where to train; None: in this process.
    tasks : int, optional
        Processes for ``--executor local``.
    wait : bool
        Wait for a submitted job (relaying its log to ``follow``).
    restart : bool
        Discard a previous checkpoint instead of resuming from it.
    epochs_this_run : int, optional
        Stop after this many epochs, keeping the checkpoint.
    follow : file-like or None
        Where a submitted job's log is copied while waiting.

    Returns
    -------
    TrainOutcome
        The executor, the job and its log folder when submitted, and the per-task results
        (empty for a job not waited for).

    Raises
    ------
    UserError
        For bad options, a bad grid, or a failed submission; ``launch.JobFailed`` (exit
        code 1) when the job failed.
    """
    cfg = config if isinstance(config, Config) else load_config(config)
    _check_options(executor, tasks, epochs_this_run)
    check_grid(cfg)
    if restart and discard_checkpoint(Workdir(cfg.workdir).emulator_checkpoint):
        log.info("discarded the previous training checkpoint")
    done = None if restart else _up_to_date(cfg)
    if done is not None:
        return TrainOutcome(None, results=[done])
    if executor is None:
        here = launch.run_here(_train_here, cfg, epochs_this_run, device=cfg.emulator.device)
        return TrainOutcome(None, results=[here.as_dict()])
    job = submit(cfg, executor, tasks or 1, epochs_this_run)
    folder = Path(job.paths.folder)
    outcome = TrainOutcome(executor, job_id=str(job.job_id), log_folder=folder)
    if not wait:
        return outcome
    log.info(f"{executor} job {job.job_id} submitted; logs in {folder}")
    results = launch.wait_for(job, follow, what="training")
    outcome.results = sorted(results, key=lambda r: r.get("rank", 0))
    return outcome


def _up_to_date(cfg: Config) -> dict[str, Any] | None:
    """Rank 0's result of the training that made ``emulator.pt``, when rerunning would redo it.

    That is when no checkpoint waits and the emulator was trained on this grid's data with
    these ``[emulator]`` settings (:func:`training_fingerprint`); otherwise None.
    """
    wd = Workdir(cfg.workdir)
    if not wd.emulator.is_file() or wd.emulator_checkpoint.exists():
        return None
    try:
        model = load_emulator(wd.emulator)
    except Exception:  # noqa: BLE001 - unreadable or foreign: training makes a new one
        return None
    stored = getattr(model, "training_fingerprint", None)
    if not stored or stored != training_fingerprint(load_training_data(cfg), cfg.emulator):
        return None
    log.info(
        f"{wd.emulator} is up to date: trained on this grid with these [emulator] settings; "
        "nothing to do (`xrmodifier train --restart` trains again)"
    )
    return TrainResult(
        completed=True,
        rank=0,
        world_size=1,
        epochs_run=0,
        weights_digest="",
        device="none",
        emulator_path=wd.emulator,
        metrics_path=wd.emulator_metrics,
        metrics=model.metrics,
    ).as_dict()


def _train_here(cfg: Config, epochs_this_run: int | None) -> TrainResult:
    return train_process(cfg, max_epochs_this_session=epochs_this_run)


def _check_options(executor: str | None, tasks: int | None, epochs_this_run: int | None) -> None:
    if executor is not None and executor not in launch.EXECUTORS:
        raise UserError(f"unknown executor {executor!r}: use one of {', '.join(launch.EXECUTORS)}")
    if tasks is not None and executor != "local":
        raise UserError(
            "--tasks applies to --executor local; on Slurm the tasks per node follow "
            "[slurm] gpus_per_node, and in this process use torchrun for several ranks"
        )
    if tasks is not None and tasks < 1:
        raise UserError("--tasks must be at least 1")
    if epochs_this_run is not None and epochs_this_run < 1:
        raise UserError("--epochs-this-run must be at least 1")


def describe_metrics(metrics: EmulatorMetrics) -> str:
    """Format a short table of the accuracy: RMS relative error, emulator next to interpolation.

    Parameters
    ----------
    metrics : EmulatorMetrics
        What ``train`` measured.

    Returns
    -------
    str
        Lines for the terminal: held-out and off-grid errors (percent) of T1 and T1',
        the training summary and whether the off-grid target is met.
    """

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.3f}%"

    t1p = "T1' (t_fit_mod)"
    lines = [f"{'RMS relative error':40s}{'T1 (t_fit_orig)':>17s}{t1p:>18s}"]
    for sec, label in ((metrics.heldout, "held-out"), (metrics.offgrid, "off-grid (asimov)")):
        for who in ("emulator", "interpolator"):
            vals: RmsRel = getattr(sec, who)
            head = f"{label} n={sec.n_points}" if who == "emulator" else ""
            lines.append(
                f"{head:27s}{who:13s}{pct(vals.t_fit_orig):>17s}{pct(vals.t_fit_mod):>18s}"
            )
    if metrics.offgrid.note:
        lines.append(f"off-grid: {metrics.offgrid.note}")
    tr = metrics.training
    lines.append(
        f"training: {tr.epochs_run} epochs (best {tr.best_epoch}), "
        f"{tr.n_train} train / {tr.n_val} validation points, "
        f"{tr.n_excluded_failed} left out (failed fits), "
        f"{format_seconds(tr.train_seconds)} on {tr.world_size} x {tr.device}"
    )
    verdict = "met" if metrics.target.met else "NOT met"
    lines.append(
        f"off-grid target RMS < {100 * metrics.target.offgrid_rms_rel:.1f}% for T1 and T1': "
        f"{verdict}"
    )
    return "\n".join(lines)
