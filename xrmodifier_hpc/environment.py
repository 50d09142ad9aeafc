"""Where are we running? The one place that reads MPI, Slurm and terminal state.

Nothing here imports mpi4py: the launcher's environment variables are enough to know the rank
before MPI starts (so that only rank 0 prints a config error once, for example).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

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

    @property
    def under_mpi_launcher(self) -> bool:
        return any(v in os.environ for v in _RANK_VARS) or (
            "SLURM_PROCID" in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1
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
    size = _first_int((*_SIZE_VARS, "SLURM_NTASKS"), 1)
    task = os.environ.get("SLURM_ARRAY_TASK_ID")
    count = os.environ.get("SLURM_ARRAY_TASK_COUNT")
    return JobEnvironment(
        rank=rank,
        size=size,
        slurm_job_id=os.environ.get("SLURM_JOB_ID"),
        array_task_id=int(task) if task and task.isdigit() else None,
        array_task_count=int(count) if count and count.isdigit() else None,
        interactive=sys.stderr.isatty() and "SLURM_JOB_ID" not in os.environ,
    )
