"""Where a distributed torch job runs: this process, or a submitit job on Slurm, local or debug.

The callable to run is passed in (a module-level function, so that submitit can pickle it);
this module knows nothing about what it computes. :func:`make_executor` builds submitit's
``SlurmExecutor`` (resources from the config's ``[slurm]`` section, one task per GPU),
``LocalExecutor`` (``tasks`` local processes) or ``DebugExecutor`` (this process). In a job
every task sets up torch.distributed from submitit's ``TorchDistributedEnvironment`` (NCCL on
GPUs, gloo on CPUs) and calls the target (:class:`DistributedJob`). The job is
``Checkpointable``: on preemption or time-out submitit calls its ``checkpoint``, which asks
the target's registered saver to write its state, and the job is requeued and resumes.
:func:`wait_for` relays task 0's log while it waits; :func:`run_here` runs the target in this
process (one rank of a torchrun group when started by torchrun).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable, Iterator
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

from xrmodifier_hpc.config import Config
from xrmodifier_hpc.errors import UserError

log = logging.getLogger("xrmodifier")

EXECUTORS = ("slurm", "local", "debug")
#: how long ranks wait for each other (rendezvous and collectives) before giving up
PROCESS_GROUP_TIMEOUT = timedelta(minutes=10)

#: a function that writes the caller's latest state (True when it wrote)
Saver = Callable[[], bool]


class JobFailed(UserError):
    """A submitted job ended with an error; the message names its log."""

    exit_code = 1


# --------------------------------------------------------------------------------------------
# the DDP environment
# --------------------------------------------------------------------------------------------


def device_kind(requested: str = "auto") -> str:
    """Return the kind of device a task will compute on.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda"}
        What the config asks for.

    Returns
    -------
    str
        "cuda" when not "cpu" was asked and torch sees a GPU, else "cpu".
    """
    if requested == "cpu":
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def dist_backend(kind: str) -> str:
    """Return the torch.distributed backend for a device kind.

    Parameters
    ----------
    kind : {"cuda", "cpu"}
        The device kind.

    Returns
    -------
    str
        "nccl" between GPUs, "gloo" between CPU processes.
    """
    return "nccl" if kind == "cuda" else "gloo"


@contextlib.contextmanager
def process_group(world_size: int, backend: str) -> Iterator[None]:
    """Initialise torch.distributed from the ``env://`` variables, and tear it down after.

    Parameters
    ----------
    world_size : int
        Number of processes; 1 needs no group (nothing is initialised).
    backend : str
        "nccl" or "gloo".

    Yields
    ------
    None
    """
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


class DistributedJob(submitit.helpers.Checkpointable):
    """What each task of a job runs: the DDP set-up, then ``target(*args, register_saver=...)``.

    Picklable (submitit ships it to the job) when ``target`` is a module-level function. On
    preemption or time-out submitit calls :meth:`checkpoint`, which calls the saver the target
    registered (rank 0 writes its last state) and resubmits this same callable.

    Parameters
    ----------
    target : callable
        ``target(*args, register_saver=fn)``; ``fn(saver)`` registers a :data:`Saver`. Its
        return value is the task's result.
    *args
        Picklable arguments for ``target``.
    use_gpus : bool
        Whether the executor gave each task a GPU (submitit then sets CUDA_VISIBLE_DEVICES).
    device : {"auto", "cpu", "cuda"}
        What the target will compute on (chooses NCCL or gloo).
    name : str
        What the job is called in log lines ("training").
    """

    def __init__(
        self,
        target: Callable[..., Any],
        *args: Any,
        use_gpus: bool = False,
        device: str = "auto",
        name: str = "distributed",
    ) -> None:
        self.target = target
        self.args = args
        self.use_gpus = use_gpus
        self.device = device
        self.name = name
        self._saver: Saver | None = None

    def __call__(self) -> Any:
        """Run the target in this task of the job.

        Returns
        -------
        object
            The target's return value.
        """
        denv = submitit.helpers.TorchDistributedEnvironment()
        # overwrite: a job started from inside another job (or a torchrun) inherits its
        # rendezvous variables, which are wrong here
        denv.export(set_cuda_visible_devices=self.use_gpus, overwrite=True)
        _setup_job_logging(denv.rank, denv.world_size)
        backend = dist_backend(device_kind(self.device))
        if denv.rank == 0:
            log.info(
                f"{self.name} job: {denv.world_size} task(s), rendezvous "
                f"{denv.master_addr}:{denv.master_port}, backend {backend}"
            )
        with process_group(denv.world_size, backend):
            return self.target(*self.args, register_saver=self._register_saver)

    def _register_saver(self, saver: Saver) -> None:
        self._saver = saver

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """Save the target's last state (the periodic one may be older), then resubmit.

        Parameters
        ----------
        *args, **kwargs
            What submitit passes (the call's arguments).

        Returns
        -------
        submitit.core.utils.DelayedSubmission
            This callable, to be requeued.
        """
        if self._saver is not None:
            self._saver()
        return DelayedSubmission(self, *args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the registered saver (a live object of the task's process)."""
        state = dict(self.__dict__)
        state["_saver"] = None  # the live state stays behind; the target's checkpoint has it
        return state


# --------------------------------------------------------------------------------------------
# executors
# --------------------------------------------------------------------------------------------


def _mem(gb: float) -> str:
    return f"{int(gb)}GB" if float(gb).is_integer() else f"{int(gb * 1024)}MB"


def container_python(cfg: Config, gpus: bool) -> str | None:
    """Return the interpreter command for jobs in ``[slurm] container`` (``apptainer exec``).

    Binds the config's folder, the work folder and the logs so the job sees them.

    Parameters
    ----------
    cfg : Config
        The config.
    gpus : bool
        Whether the job uses GPUs (adds ``--nv``).

    Returns
    -------
    str or None
        ``apptainer exec [--nv] --bind ... IMAGE`` followed by ``[slurm] container_python``
        (shell-quoted), or None without a container.
    """
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
    *,
    device: str = "auto",
    job_name: str = "xrmodifier",
) -> tuple[submitit.Executor, bool]:
    """Build a configured submitit executor and say whether its tasks use GPUs.

    Parameters
    ----------
    cfg : Config
        Its ``[slurm]`` section gives resources, setup lines, container, requeues and logs.
    kind : {"slurm", "local", "debug"}
        slurm: ``nodes`` x (one task per GPU, at least one); local: ``tasks`` processes on
        this machine (one GPU each when CUDA is there and ``device`` allows it); debug: this
        process.
    tasks : int
        Processes for ``local``.
    timeout_min : float, optional
        Time limit, minutes (default ``[slurm] time_minutes``).
    signal_delay_s : int, optional
        Seconds before the limit at which the job is signalled to checkpoint.
    device : {"auto", "cpu", "cuda"}
        What the job computes on ("cpu": no GPUs are requested).
    job_name : str
        The Slurm job name.

    Returns
    -------
    executor : submitit.Executor
        ``SlurmExecutor``, ``LocalExecutor`` or ``DebugExecutor``, logs in
        ``[slurm] logs/%j``.
    gpus : bool
        Whether each task gets a GPU (always False for ``debug``).

    Raises
    ------
    UserError
        For an unknown kind, no Slurm here, or Slurm parameters submitit refuses.
    """
    s = cfg.slurm
    folder = s.logs / "%j"
    timeout = float(timeout_min if timeout_min is not None else s.time_minutes)
    delay = int(signal_delay_s if signal_delay_s is not None else s.signal_delay_s)
    if kind == "debug":
        return submitit.DebugExecutor(folder=folder), False
    if kind == "local":
        gpus = device_kind(device) == "cuda"
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
        return _slurm_executor(cfg, folder, timeout, delay, device, job_name)
    raise UserError(f"unknown executor {kind!r}: use one of {', '.join(EXECUTORS)}")


def _slurm_executor(
    cfg: Config, folder: Path, timeout: float, delay: int, device: str, job_name: str
) -> tuple[submitit.Executor, bool]:
    s = cfg.slurm
    gpus = s.gpus_per_node > 0 and device != "cpu"
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
        "job_name": job_name,
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


# --------------------------------------------------------------------------------------------
# submitting, waiting, running here
# --------------------------------------------------------------------------------------------


def submit(
    cfg: Config,
    kind: str,
    target: Callable[..., Any],
    *args: Any,
    tasks: int = 1,
    timeout_min: float | None = None,
    signal_delay_s: int | None = None,
    device: str = "auto",
    job_name: str = "xrmodifier",
    name: str = "distributed",
) -> submitit.Job:
    """Submit ``target(*args, register_saver=...)`` as a :class:`DistributedJob`.

    Parameters
    ----------
    cfg : Config
        For the executor (see :func:`make_executor`).
    kind : {"slurm", "local", "debug"}
        Where it runs.
    target : callable
        A module-level function (picklable).
    *args
        Its arguments (picklable).
    tasks, timeout_min, signal_delay_s, device, job_name
        As for :func:`make_executor`.
    name : str
        What the job is called in its log lines.

    Returns
    -------
    submitit.Job
        The submitted job (see :func:`wait_for`).

    Raises
    ------
    UserError
        When the executor cannot be built or the submission fails.
    """
    executor, gpus = make_executor(
        cfg, kind, tasks, timeout_min, signal_delay_s, device=device, job_name=job_name
    )
    job_fn = DistributedJob(target, *args, use_gpus=gpus, device=device, name=name)
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
            raise UserError(f"could not submit the {name} job: {exc}") from None


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
    job: submitit.Job, follow: TextIO | None = sys.stderr, poll_s: float = 1.0, what: str = ""
) -> list[Any]:
    """Wait for ``job``, copying task 0's log (progress lines) to ``follow`` as it grows.

    Parameters
    ----------
    job : submitit.Job
        A submitted job.
    follow : file-like or None
        Where to copy the log; None: nowhere.
    poll_s : float
        Seconds between looks, s.
    what : str
        What the job does, for the error message ("training").

    Returns
    -------
    list
        Every task's result (None results left out).

    Raises
    ------
    JobFailed
        When the job failed; the message ends with its last error line and names its log.
    """
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
        label = f"{what} job" if what else "job"
        raise JobFailed(f"{label} {job.job_id} failed: {last} (log: {log_path})") from None
    return [r for r in results if r is not None]


def run_here(target: Callable[..., Any], *args: Any, device: str = "auto") -> Any:
    """Run ``target(*args)`` in this process; under torchrun as one rank of its group.

    Parameters
    ----------
    target : callable
        What to run.
    *args
        Its arguments.
    device : {"auto", "cpu", "cuda"}
        What it computes on (chooses NCCL or gloo).

    Returns
    -------
    object
        The target's return value.
    """
    from xrmodifier_hpc.runtime.environment import torch_distributed

    denv = torch_distributed()
    world = denv.world_size if denv else 1
    with process_group(world, dist_backend(device_kind(device))):
        return target(*args)
