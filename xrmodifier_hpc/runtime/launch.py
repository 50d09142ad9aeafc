"""Where training runs: this process, or a submitit job on Slurm, on local processes or in debug.

``xrmodifier train CONFIG`` trains in the current process (as one rank of a DDP group when
started by torchrun). ``--executor slurm`` submits the same training to Slurm with
submitit's ``SlurmExecutor`` (resources from the config's ``[slurm]`` section, one task per
GPU), ``--executor local`` runs it as ``--tasks N`` local processes through ``LocalExecutor``
and ``--executor debug`` in this process through ``DebugExecutor``. In a job every task sets
up torch.distributed from submitit's ``TorchDistributedEnvironment`` (NCCL on GPUs, gloo on
CPUs) and runs :func:`emulator.train`. The job callable is ``Checkpointable``: on preemption
or time-out submitit calls its ``checkpoint``, which writes the last epoch's state, and the
job is requeued and resumes from it. Training itself lives in :mod:`emulator`.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, TextIO

import submitit
from submitit.core.utils import (
    DelayedSubmission,
    FailedJobError,
    FailedSubmissionError,
    UncompletedJobError,
)

from xrmodifier_hpc import emulator
from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.errors import UserError

log = logging.getLogger("xrmodifier")

EXECUTORS = ("slurm", "local", "debug")
#: how long ranks wait for each other (rendezvous and collectives) before giving up
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)


class TrainingJobFailed(UserError):
    """The submitted training job ended with an error; the message names its log."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# the DDP environment
# --------------------------------------------------------------------------------------------


def dist_backend(device_kind: str) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device_kind == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(world_size: int, backend: str) -> Iterator[None]:
    """Initialise torch.distributed from the ``env://`` variables for ``world_size`` > 1 and
    tear it down afterwards; a single process needs no group."""
    import torch.distributed as dist

    if world_size <= 1:
        yield
        return
    dist.init_process_group(backend=backend, init_method="env://", timeout=PROCESS_GROUP_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _setup_job_logging(rank: int, world: int) -> None:
    # in a submitit task nothing configured logging; in the debug executor the CLI already has
    root = logging.getLogger()
    if root.handlers:
        return
    prefix = f"[rank {rank}] " if world > 1 else ""
    logging.basicConfig(
        level=logging.INFO,
        format=f"%(asctime)s {prefix}%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )


class TrainingJob(submitit.helpers.Checkpointable):
    """What each task of a training job runs: the DDP set-up, then :func:`emulator.train`.

    Picklable (submitit ships it to the job). On preemption or time-out submitit calls
    :meth:`checkpoint` on rank 0, which saves the last completed epoch and resubmits this
    same callable; the requeued job resumes from that checkpoint.
    """

    def __init__(
        self,
        config_path: str | Path,
        max_epochs_this_session: int | None = None,
        use_gpus: bool = False,
    ) -> None:
        self.config_path = str(config_path)
        self.max_epochs_this_session = max_epochs_this_session
        self.use_gpus = use_gpus
        self._saver: Callable[[], bool] | None = None

    def __call__(self) -> dict[str, Any]:
        denv = submitit.helpers.TorchDistributedEnvironment()
        # overwrite: a job started from inside another job (or a torchrun) inherits its
        # rendezvous variables, which are wrong here
        denv.export(set_cuda_visible_devices=self.use_gpus, overwrite=True)
        _setup_job_logging(denv.rank, denv.world_size)
        cfg = load_config(self.config_path)
        device = emulator.pick_device(cfg.emulator.device, denv.local_rank)
        if denv.rank == 0:
            log.info(
                f"training job: {denv.world_size} task(s), rendezvous "
                f"{denv.master_addr}:{denv.master_port}, backend {dist_backend(device.type)}"
            )
        with process_group(denv.world_size, dist_backend(device.type)):
            result = emulator.train(
                cfg,
                max_epochs_this_session=self.max_epochs_this_session,
                register_saver=self._register_saver,
            )
        return result.as_dict()

    def _register_saver(self, saver: Callable[[], bool]) -> None:
        self._saver = saver

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Save the last completed epoch (the periodic checkpoint may be older), then resubmit."""
        if self._saver is not None:
            self._saver()
        return DelayedSubmission(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_saver"] = None  # the live trainer stays behind; the checkpoint file carries it
        return state


# --------------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------------


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if float(gb).is_integer() else f"{int(gb * 1024)}MB"


def container_python(cfg: Config, gpus: bool) -> str | None:
    """The interpreter command for jobs in ``[slurm] container`` (``apptainer exec``), binding
    the config's folder, the work folder and the logs so the job sees them; None without one."""
    image = cfg.slurm.container
    if not image:
        return None
    binds = sorted({str(p) for p in (cfg.path.parent, cfg.workdir, cfg.slurm.logs)})
    parts = ["apptainer", "exec"]
    if gpus:
        parts.append("--nv")
    for b in binds:
        parts += ["--bind", b]
    parts.append(image)
    return " ".join(shlex.quote(p) for p in parts) + " " + cfg.slurm.container_python


def make_executor(
    cfg: Config,
    kind: str,
    tasks: int = 1,
    timeout_min: float | None = None,
    signal_delay_s: int | None = None,
) -> tuple[submitit.Executor, bool]:
    """A configured submitit executor of ``kind`` and whether its tasks use GPUs.

    slurm: ``nodes`` x (one task per GPU, at least one) with ``[slurm]`` resources, setup
    lines, container and additional parameters. local: ``tasks`` processes on this machine
    (one GPU each when CUDA is there and the emulator may use it). debug: this process.
    """
    s = cfg.slurm
    folder = s.logs / "%j"
    timeout = float(timeout_min if timeout_min is not None else s.time_minutes)
    delay = int(signal_delay_s if signal_delay_s is not None else s.signal_delay_s)
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder), False
    if kind == "local":
        import torch

        gpus = cfg.emulator.device != "cpu" and torch.cuda.is_available()
        ex = submitit.LocalExecutor(folder=folder, max_num_timeout=s.max_requeues)
        ex.update_parameters(
            timeout_min=timeout,
            tasks_per_node=tasks,
            gpus_per_node=tasks if gpus else 0,
            signal_delay_s=delay,
            setup=list(s.setup),
        )
        return ex, gpus
    if kind == "slurm":
        gpus = s.gpus_per_node > 0 and cfg.emulator.device != "cpu"
        try:
            ex = submitit.SlurmExecutor(
                folder=folder, max_num_timeout=s.max_requeues, python=container_python(cfg, gpus)
            )
        except RuntimeError:  # submitit looks for srun
            raise UserError(
                "--executor slurm needs Slurm here (no srun on PATH): submit from a cluster "
                "login node, or use --executor local"
            ) from None
        params: dict[str, Any] = {
            "job_name": "xrmodifier-train",
            "nodes": s.nodes,
            "ntasks_per_node": max(1, s.gpus_per_node),
            "cpus_per_task": s.cpus_per_task,
            "time": max(1, int(round(timeout))),
            "signal_delay_s": delay,
            "setup": list(s.setup),
        }
        if s.gpus_per_node > 0:
            params["gpus_per_node"] = s.gpus_per_node
        if s.mem_gb > 0:
            params["mem"] = _mem(s.mem_gb)
        for key in ("partition", "account", "qos"):
            if getattr(s, key):
                params[key] = getattr(s, key)
        if s.additional:
            params["additional_parameters"] = {k: v for k, v in s.additional.items()}
        try:
            ex.update_parameters(**params)
        except ValueError as exc:
            raise UserError(f"invalid Slurm parameters: {exc}", f"{cfg.path} [slurm]") from None
        return ex, gpus
    raise UserError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")


# --------------------------------------------------------------------------------------------
# submitting and waiting
# --------------------------------------------------------------------------------------------


@dataclass
class TrainOutcome:
    """The end of ``xrmodifier train``: per-task results (rank 0 first) when waited for."""

    executor: str | None
    job_id: str | None = None
    log_folder: Path | None = None
    results: list[dict[str, Any]] = field(default_factory=list)

    @property
    def primary(self) -> dict[str, Any] | None:
        return self.results[0] if self.results else None


def _relay(path: Path, pos: int, out: TextIO) -> int:
    try:
        with open(path, errors="replace") as fh:
            fh.seek(pos)
            chunk = fh.read()
            pos = fh.tell()
    except FileNotFoundError:
        return pos
    if chunk:
        out.write(chunk)
        out.flush()
    return pos


def wait_for(
    job: submitit.Job, follow: TextIO | None = sys.stderr, poll_s: float = 1.0
) -> list[dict[str, Any]]:
    """Wait for ``job``, copying task 0's log (progress lines) to ``follow`` as it grows;
    return every task's result. A failed job raises :class:`TrainingJobFailed`."""
    log_path = Path(job.paths.stderr)
    pos = 0
    if not isinstance(job, submitit.DebugJob):
        try:
            while not job.done():
                if follow is not None:
                    pos = _relay(log_path, pos, follow)
                time.sleep(poll_s)
        except KeyboardInterrupt:
            if isinstance(job, submitit.LocalJob):
                job.cancel(check=False)  # local tasks belong to this terminal
            raise
        if follow is not None:
            _relay(log_path, pos, follow)
    try:
        results = job.results()
    except (FailedJobError, UncompletedJobError) as exc:
        lines = [ln for ln in str(exc).strip().splitlines() if ln.strip()]
        last = lines[-1].strip() if lines else exc.__class__.__name__
        raise TrainingJobFailed(
            f"training job {job.job_id} failed: {last} (log: {log_path})"
        ) from None
    return [r for r in results if r is not None]


def submit(
    cfg: Config,
    kind: str,
    tasks: int = 1,
    max_epochs_this_session: int | None = None,
    timeout_min: float | None = None,
    signal_delay_s: int | None = None,
) -> submitit.Job:
    """Submit the training of ``cfg`` as a job of ``kind`` (see :func:`make_executor`)."""
    executor, gpus = make_executor(cfg, kind, tasks, timeout_min, signal_delay_s)
    job_fn = TrainingJob(cfg.path, max_epochs_this_session, use_gpus=gpus)
    # a job submitted from inside a Slurm job must not inherit that job's variables; but
    # SLURM_CONF names the cluster's configuration (sites and test clusters that keep it
    # outside /etc/slurm), without which sbatch cannot submit at all
    slurm_conf = os.environ.get("SLURM_CONF")
    with submitit.helpers.clean_env():
        if slurm_conf:
            os.environ["SLURM_CONF"] = slurm_conf
        try:
            return executor.submit(job_fn)
        except (FailedSubmissionError, FileNotFoundError) as exc:
            raise UserError(f"could not submit the training job: {exc}") from None


def train(
    cfg: Config,
    executor: str | None = None,
    tasks: int | None = None,
    wait: bool = True,
    restart: bool = False,
    epochs_this_run: int | None = None,
    follow: TextIO | None = sys.stderr,
) -> TrainOutcome:
    """The ``train`` stage wherever it runs. Checks the grid first (a bad grid is a one-line
    error here, not a failed job), then trains in this process (``executor`` None) or submits
    and, with ``wait``, waits for the job. ``restart`` discards a previous checkpoint;
    ``epochs_this_run`` stops after that many epochs, keeping the checkpoint."""
    if executor is not None and executor not in EXECUTORS:
        raise UserError(f"unknown executor {executor!r}: use one of {', '.join(EXECUTORS)}")
    if tasks is not None and executor != "local":
        raise UserError(
            "--tasks applies to --executor local; on Slurm the tasks per node follow "
            "[slurm] gpus_per_node, and in this process use torchrun for several ranks"
        )
    if tasks is not None and tasks < 1:
        raise UserError("--tasks must be at least 1")
    if epochs_this_run is not None and epochs_this_run < 1:
        raise UserError("--epochs-this-run must be at least 1")
    emulator.check_grid(cfg)
    if restart and emulator.discard_checkpoint(cfg):
        log.info("discarded the previous training checkpoint")
    if executor is None:
        return TrainOutcome(None, results=[train_here(cfg, epochs_this_run).as_dict()])
    job = submit(cfg, executor, tasks or 1, epochs_this_run)
    folder = Path(job.paths.folder)
    outcome = TrainOutcome(executor, job_id=str(job.job_id), log_folder=folder)
    if not wait:
        return outcome
    log.info(f"{executor} job {job.job_id} submitted; logs in {folder}")
    outcome.results = sorted(wait_for(job, follow), key=lambda r: r.get("rank", 0))
    return outcome


def train_here(cfg: Config, epochs_this_run: int | None = None) -> emulator.TrainResult:
    """Train in this process; under torchrun (``env://`` variables set) as one DDP rank."""
    from xrmodifier_hpc.runtime.environment import torch_distributed

    denv = torch_distributed()
    world = denv.world_size if denv else 1
    device = emulator.pick_device(cfg.emulator.device, denv.local_rank if denv else 0)
    with process_group(world, dist_backend(device.type)):
        return emulator.train(cfg, max_epochs_this_session=epochs_this_run)
