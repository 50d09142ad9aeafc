"""Where are we running? The one place that reads MPI, Slurm and terminal state.

Nothing here imports mpi4py: the launcher's environment variables are enough to know the rank
before MPI starts (so that only rank 0 prints a config error once, for example), how many
cores this process was granted (:func:`granted_cores`) and how many ranks share its node
(:func:`ranks_on_node`).
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_RANK_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class JobEnvironment:
    """Rank and size under mpiexec/srun, Slurm job and array ids, and whether a person watches.

    Attributes
    ----------
    rank, size : int
        This process's rank and the number of ranks (0 and 1 without a launcher).
    slurm_job_id : str or None
        ``SLURM_JOB_ID``.
    array_task_id, array_task_count : int or None
        ``SLURM_ARRAY_TASK_ID`` and ``SLURM_ARRAY_TASK_COUNT`` (None outside an array).
    interactive : bool
        Standard error is a terminal and this is not a Slurm job.
    array_task_index : int or None
        Position of this task in its array, 0-based.
    """

    rank: int
    size: int
    slurm_job_id: str | None
    array_task_id: int | None
    array_task_count: int | None
    interactive: bool
    #: position of this task in its array, 0-based (ids may start anywhere and step)
    array_task_index: int | None = None

    @property
    def under_mpi_launcher(self) -> bool:
        """True when an MPI launcher (mpiexec, or srun with several tasks) started us."""
        return any(v in os.environ for v in _RANK_VARS) or (
            "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_STEP_NUM_TASKS", "1")) > 1
        )


def _first_int(names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value is not None and value.strip().lstrip("-").isdigit():
            return int(value)
    return default


def detect() -> JobEnvironment:
    """Read the environment now (cheap; call it where needed rather than caching).

    Returns
    -------
    JobEnvironment
        Rank and size from the MPI launcher's variables (``PMI_*``, ``OMPI_COMM_WORLD_*``,
        ``MV2_COMM_WORLD_*``) or Slurm's (``SLURM_PROCID``, ``SLURM_STEP_NUM_TASKS``), and
        the Slurm job and array ids.
    """
    rank = _first_int((*_RANK_VARS, "SLURM_PROCID"), 0)
    # SLURM_STEP_NUM_TASKS, not SLURM_NTASKS: a batch script outside srun sees the job's
    # task count but is one process
    size = _first_int((*_SIZE_VARS, "SLURM_STEP_NUM_TASKS"), 1)
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    count = os.environ.get("SLURM_ARRAY_TASK_COUNT")
    index = None
    if task and task.isdigit():
        first = _first_int(("SLURM_ARRAY_TASK_MIN",), 0)
        step = max(_first_int(("SLURM_ARRAY_TASK_STEP",), 1), 1)
        index = (int(task) - first) // step
    return JobEnvironment(
        rank=rank,
        size=size,
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        array_task_id=int(task) if task and task.isdigit() else None,
        array_task_count=int(count) if count and count.isdigit() else None,
        interactive=sys.stderr.isatty() and "SLURM_JOB_ID" not in os.environ,
        array_task_index=index,
    )


def scratch_root() -> Path:
    """Return node-local scratch space.

    Returns
    -------
    Path
        ``$XRM_SCRATCH``, else Slurm's ``$SLURM_TMPDIR`` or ``$TMPDIR``, else the system
        temporary folder.
    """
    for name in ("XRM_SCRATCH", "SLURM_TMPDIR", "TMPDIR"):
        value = os.environ.get(name)
        if value:
            return Path(value)
    return Path(tempfile.gettempdir())


def process_scratch_dir(purpose: str, root: str | Path | None = None) -> Path:
    """Name a folder unique to this process (not created here).

    Tools that keep per-user state in files (XSPEC's ``~/.xspec``, HEASoft parameter files) must
    not share it between the ranks of one job, nor between jobs that share a node; the job id,
    rank and pid together keep every process apart.

    Parameters
    ----------
    purpose : str
        What the folder is for (``"xspec"``).
    root : str or Path, optional
        Where (default :func:`scratch_root`).

    Returns
    -------
    Path
        ``ROOT/xrmodifier-PURPOSE-JOB-rRANK-pPID``.
    """
    env = detect()
    job = env.slurm_job_id or "local"
    if env.array_task_id is not None:
        job = f"{job}_{env.array_task_id}"
    base = Path(root) if root is not None else scratch_root()
    return base / f"xrmodifier-{purpose}-{job}-r{env.rank}-p{os.getpid()}"


@dataclass(frozen=True)
class TorchDistributedEnv:
    """A torch.distributed (``env://``) rendezvous.

    What torchrun sets, and what submitit's ``TorchDistributedEnvironment.export()`` sets
    inside a submitit job.

    Attributes
    ----------
    rank, world_size : int
        ``RANK`` and ``WORLD_SIZE``: this process and the number of processes.
    local_rank, local_world_size : int
        ``LOCAL_RANK`` and ``LOCAL_WORLD_SIZE``: the same on this node (default: the global
        values).
    master_addr : str
        ``MASTER_ADDR``: host of rank 0.
    master_port : int
        ``MASTER_PORT``: its rendezvous port.
    """

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def torch_distributed() -> TorchDistributedEnv | None:
    """Read the ``env://`` rendezvous variables.

    Returns
    -------
    TorchDistributedEnv or None
        RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT when all the
        required ones are set, else None (a plain single process).
    """
    names = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
    if not all(os.environ.get(n) for n in names):
        return None
    try:
        rank = int(os.environ["RANK"])
        world = int(os.environ["WORLD_SIZE"])
        port = int(os.environ["MASTER_PORT"])
        local_rank = int(os.environ.get("LOCAL_RANK", rank))
        local_world = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    except ValueError:
        return None
    addr = os.environ["MASTER_ADDR"]
    return TorchDistributedEnv(rank, world, local_rank, local_world, addr, port)


# --------------------------------------------------------------------------------------------
# cores granted and ranks per node (thread-pool sizing, see runtime.threads)
# --------------------------------------------------------------------------------------------

#: launcher variables that give the number of ranks on this node, in the order they are read:
#: MPICH/Hydra, Open MPI, MVAPICH2, torchrun and submitit (``LOCAL_WORLD_SIZE``)
_LOCAL_SIZE_VARS = (
    "MPI_LOCALNRANKS",
    "OMPI_COMM_WORLD_LOCAL_SIZE",
    "MV2_COMM_WORLD_LOCAL_SIZE",
    "LOCAL_WORLD_SIZE",
)


@dataclass(frozen=True)
class CoreGrant:
    """The cores a process may use and whether they are its own or shared with its node's ranks.

    Attributes
    ----------
    cores : int
        Number of cores (logical CPUs).
    source : str
        ``"SLURM_CPUS_PER_TASK"`` (a per-task grant: this process's own cores) or
        ``"affinity"`` (the CPU affinity mask, which the ranks of one node may share).
    per_task : bool
        True when ``cores`` belong to this process alone.
    """

    cores: int
    source: str
    per_task: bool


def affinity_cpus() -> frozenset[int]:
    """Return the logical CPUs this process may run on (``os.sched_getaffinity``).

    Returns
    -------
    frozenset of int
        CPU ids; ``range(os.cpu_count())`` where the platform has no affinity call.
    """
    try:
        return frozenset(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return frozenset(range(os.cpu_count() or 1))


def _positive_int(value: str | None) -> int | None:
    if value is None:
        return None
    value = value.strip()
    return int(value) if value.isdigit() and int(value) > 0 else None


def granted_cores(
    environ: Mapping[str, str] | None = None, affinity: int | None = None
) -> CoreGrant:
    """Count the cores this process was granted: Slurm's per-task count, else its affinity mask.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).
    affinity : int, optional
        Size of the CPU affinity mask (default: :func:`affinity_cpus`).

    Returns
    -------
    CoreGrant
        Inside a Slurm job with ``SLURM_CPUS_PER_TASK`` (``--cpus-per-task``): that many cores
        (never more than the mask), per task. Otherwise the affinity mask, which the launcher
        may have given to every rank of the node alike.
    """
    env = os.environ if environ is None else environ
    mask = affinity if affinity is not None else len(affinity_cpus())
    per_task = _positive_int(env.get("SLURM_CPUS_PER_TASK"))
    if per_task is not None and env.get("SLURM_JOB_ID"):
        return CoreGrant(min(per_task, mask), "SLURM_CPUS_PER_TASK", True)
    return CoreGrant(mask, "affinity", False)


def _slurm_tasks_on_node(env: Mapping[str, str]) -> int | None:
    """Count this Slurm step's tasks on this node (None outside a step).

    From ``SLURM_STEP_TASKS_PER_NODE`` (e.g. ``"2(x3),1"``) and ``SLURM_NODEID``.
    """
    spec = env.get("SLURM_STEP_TASKS_PER_NODE")
    node = _positive_int(env.get("SLURM_NODEID")) or 0
    if not spec:
        return None
    counts: list[int] = []
    for part in spec.split(","):
        count, _, repeat = part.partition("(x")
        if not count.strip().isdigit():
            return None
        times = int(repeat.rstrip(")")) if repeat.rstrip(")").isdigit() else 1
        counts.extend([int(count)] * times)
    return counts[node] if node < len(counts) and counts[node] > 0 else None


def ranks_on_node(environ: Mapping[str, str] | None = None) -> tuple[int, str]:
    """Count the ranks of this job that share this node, from the launcher's variables.

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).

    Returns
    -------
    count : int
        Ranks on this node (1 for a plain process).
    source : str
        The variable read (``MPI_LOCALNRANKS``, ``OMPI_COMM_WORLD_LOCAL_SIZE``,
        ``MV2_COMM_WORLD_LOCAL_SIZE``, ``LOCAL_WORLD_SIZE``, ``SLURM_STEP_TASKS_PER_NODE``,
        ``SLURM_NTASKS_PER_NODE``), or ``"single process"``.

    Notes
    -----
    The Slurm variables are read only inside a step of several tasks (``SLURM_STEP_NUM_TASKS``
    > 1, as :func:`detect` does): a batch script outside ``srun`` is one process whatever the
    job's task count.
    """
    env = os.environ if environ is None else environ
    for name in _LOCAL_SIZE_VARS:
        value = _positive_int(env.get(name))
        if value is not None:
            return value, name
    step_tasks = _positive_int(env.get("SLURM_STEP_NUM_TASKS"))
    if step_tasks is not None and step_tasks > 1:
        step = _slurm_tasks_on_node(env)
        if step is not None:
            return step, "SLURM_STEP_TASKS_PER_NODE"
        value = _positive_int(env.get("SLURM_NTASKS_PER_NODE"))
        if value is not None:
            return min(value, step_tasks), "SLURM_NTASKS_PER_NODE"
    return 1, "single process"
