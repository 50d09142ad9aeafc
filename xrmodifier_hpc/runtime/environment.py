"""Where are we running? The one place that reads MPI, Slurm and terminal state.

Nothing here imports mpi4py: the launcher's environment variables are enough to know the rank
before MPI starts (so that only rank 0 prints a config error once, for example).
"""

from __future__ import annotations

import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

_RANK_VARS = ("PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")
_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


@dataclass(frozen=True)
class JobEnvironment:
    """Rank and size under mpiexec/srun, Slurm job and array ids, and whether a person watches."""

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
    """Read the environment now (cheap; call it where needed rather than caching)."""
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
    """Node-local scratch space: ``$XRM_SCRATCH``, else Slurm's ``$SLURM_TMPDIR`` or ``$TMPDIR``,
    else the system temporary folder."""
    for name in ("XRM_SCRATCH", "SLURM_TMPDIR", "TMPDIR"):
        value = os.environ.get(name)
        if value:
            return Path(value)
    return Path(tempfile.gettempdir())


def process_scratch_dir(purpose: str, root: str | Path | None = None) -> Path:
    """A folder name unique to this process (not created there):
    ``ROOT/xrmodifier-PURPOSE-JOB-rRANK-pPID``.

    Tools that keep per-user state in files (XSPEC's ``~/.xspec``, HEASoft parameter files) must
    not share it between the ranks of one job, nor between jobs that share a node; the job id,
    rank and pid together keep every process apart.
    """
    env = detect()
    job = env.slurm_job_id or "local"
    if env.array_task_id is not None:
        job = f"{job}_{env.array_task_id}"
    base = Path(root) if root is not None else scratch_root()
    return base / f"xrmodifier-{purpose}-{job}-r{env.rank}-p{os.getpid()}"


@dataclass(frozen=True)
class TorchDistributedEnv:
    """A torch.distributed (``env://``) rendezvous: what torchrun sets, and what submitit's
    ``TorchDistributedEnvironment.export()`` sets inside a submitit job."""

    rank: int
    world_size: int
    local_rank: int
    local_world_size: int
    master_addr: str
    master_port: int


def torch_distributed() -> TorchDistributedEnv | None:
    """The ``env://`` variables (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR,
    MASTER_PORT) when all the required ones are set, else None (a plain single process)."""
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
