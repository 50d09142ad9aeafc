"""Thread pools sized from the cores each process was granted.

Every MPI rank (or DDP process) runs its own BLAS/OpenMP pools and, where torch is used, its
own intra-op pool. Left alone, each library starts one thread per core of the whole node, so
K ranks on K cores run K x K threads that spin against each other (issue 14 measured
``mpiexec -n 2 xrmodifier simulate`` 2.3 to 10 times slower that way). :func:`configure_threads`,
called once at the start of ``simulate``, ``train``, ``mock`` and ``invert``, decides and
applies one size per process, in this order of precedence:

1. ``--threads N`` on the command line (the CLI passes it on as ``XRM_THREADS=N``, which
   reaches submitit jobs too);
2. the stage's config key (``[emulator] threads`` for ``train``), when above 0;
3. ``OMP_NUM_THREADS`` (or ``OPENBLAS_NUM_THREADS``, ``MKL_NUM_THREADS``) set by the user:
   the libraries read those themselves and are left alone; torch gets the same number;
4. the cores granted to the process: ``SLURM_CPUS_PER_TASK`` inside a Slurm job (per task),
   else the CPU affinity mask shared by the ranks of the node (counted with an MPI
   shared-memory split when a communicator exists, else from the launcher's variables:
   ``MPI_LOCALNRANKS``, ``OMPI_COMM_WORLD_LOCAL_SIZE``, ``SLURM_STEP_TASKS_PER_NODE``, ...),
   at most what the stage can use (``simulate`` and ``mock``: one, see
   :data:`FORWARD_MODEL_REASON`).

The size is applied with threadpoolctl to the BLAS and OpenMP libraries already loaded, with
``torch.set_num_threads``, and by setting ``OMP_NUM_THREADS``/``OPENBLAS_NUM_THREADS``/
``MKL_NUM_THREADS`` for libraries loaded later (torch, SciPy's own OpenBLAS). Those values
are marked as ours (``XRM_THREADS_AUTO``), so that a child process (a submitit task) sizes its
pools again from its own grant instead of taking them for the user's choice.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.runtime.environment import affinity_cpus, granted_cores, ranks_on_node
from xrmodifier_hpc.runtime.mpi import NodeShare, node_share

log = logging.getLogger("xrmodifier")

#: the CLI's ``--threads N`` travels as this variable (also settable by hand)
THREADS_VAR = "XRM_THREADS"
#: set beside the thread variables this module wrote; they are not the user's then
AUTO_VAR = "XRM_THREADS_AUTO"
#: thread variables a user sets for BLAS/OpenMP, in the order they are read
USER_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")

#: why the forward model (simulate, mock) takes one thread per process when sized from the
#: cores: its work is many small fits, and BLAS threads that share cores spin (measured with
#: ``benchmarks/bench_command.py``: 2 OpenBLAS threads in one process on 2 cores spent 10x
#: the CPU time per grid point of one thread); more cores are put to work with more ranks
FORWARD_MODEL_REASON = "the forward model runs 1 thread per process: use more ranks for more cores"

#: the threadpoolctl limiter in force (kept so that :func:`restore_threads` can undo it)
_limiter: Any = None


@dataclass(frozen=True)
class ThreadPlan:
    """How many threads one process uses, and why.

    Attributes
    ----------
    threads : int
        Threads per process for BLAS/OpenMP and torch's intra-op pool.
    source : str
        What decided: ``"--threads"``, a config key such as ``"[emulator] threads"``, a user
        variable such as ``"OMP_NUM_THREADS"``, or ``"cores"`` (sized from the grant).
    cores : int
        Cores granted: this process's own (``per_task``) or shared by the node's ranks.
    cores_source : str
        ``"SLURM_CPUS_PER_TASK"`` or ``"affinity"`` (with an MPI node split: the union of
        the masks of the node's ranks).
    per_task : bool
        True when ``cores`` belong to this process alone.
    ranks_on_node : int
        Ranks (processes of this job) on this node.
    ranks_source : str
        Where ``ranks_on_node`` was read (a launcher variable, ``"MPI node split"``).
    user_vars : dict of str to str
        The thread variables the user set (left as they are).
    dataloader_workers : int
        Worker processes for a torch ``DataLoader`` in this process: half the threads beyond
        the first, at most 4 (0: load in the main process).
    capped : str
        Why the stage took fewer threads than its share of the cores ("" when it did not).
    """

    threads: int
    source: str
    cores: int
    cores_source: str
    per_task: bool
    ranks_on_node: int
    ranks_source: str
    user_vars: dict[str, str]
    dataloader_workers: int
    capped: str = ""

    @property
    def from_user_vars(self) -> bool:
        """True when the user's OMP_NUM_THREADS (or BLAS variable) decided."""
        return self.source in USER_VARS

    def describe(self, blas: str, torch_threads: int | None, ranks: int = 1) -> str:
        """Say in one log line the threads per rank, the grant, and what the pools got.

        Parameters
        ----------
        blas : str
            The BLAS/OpenMP libraries and their thread counts, as :func:`loaded_pools` gives.
        torch_threads : int or None
            torch's intra-op threads (None: torch not used by this process).
        ranks : int
            Ranks of the job (says "per rank" or "per process").

        Returns
        -------
        str
            E.g. ``"threads: 1 per rank (2 cores granted by affinity, 2 ranks on this node);
            BLAS openblas 1, torch 1"``.
        """
        unit = "rank" if ranks > 1 or self.ranks_on_node > 1 else "process"
        count = self.ranks_on_node
        plural = {"rank": "ranks", "process": "processes"}[unit]
        on_node = f"{count} {unit if count == 1 else plural} on this node"
        grant = f"{self.cores} core{'s' if self.cores != 1 else ''} granted by {self.cores_source}"
        grant += " per task" if self.per_task else ""
        why = f"{grant}, {on_node}"
        if self.capped:
            why = f"{why}; {self.capped}"
        if self.source in USER_VARS:
            why = f"{self.source}={self.user_vars[self.source]} set by the user; {why}"
        elif self.source != "cores":
            why = f"{self.source} {self.threads}; {why}"
        torch_part = f", torch {torch_threads}" if torch_threads is not None else ""
        return f"threads: {self.threads} per {unit} ({why}); BLAS {blas}{torch_part}"


def _count(value: str, name: str) -> int:
    """Read a thread count: a positive integer; OpenMP's "4,2" lists give 4."""
    head = value.split(",")[0].strip()
    if not head.isdigit() or int(head) < 1:
        raise UserError(f"expected a positive number of threads, got {value!r}", name)
    return int(head)


def user_thread_vars(environ: Mapping[str, str]) -> dict[str, str]:
    """Find the thread variables the user set (not the ones this module wrote for a child).

    Parameters
    ----------
    environ : mapping
        Environment variables.

    Returns
    -------
    dict of str to str
        Name to value for each of :data:`USER_VARS` that is set and not marked as ours.
    """
    ours = environ.get(AUTO_VAR)
    return {
        name: environ[name]
        for name in USER_VARS
        if environ.get(name, "").strip() and environ[name] != ours
    }


def plan_threads(
    *,
    environ: Mapping[str, str] | None = None,
    affinity: Iterable[int] | None = None,
    node: NodeShare | None = None,
    config_threads: int = 0,
    config_key: str = "",
    max_threads: int = 0,
    max_reason: str = "",
) -> ThreadPlan:
    """Decide the threads of this process (no side effects).

    Parameters
    ----------
    environ : mapping, optional
        Environment variables (default ``os.environ``).
    affinity : iterable of int, optional
        This process's CPU affinity mask (default ``os.sched_getaffinity(0)``).
    node : NodeShare, optional
        The ranks on this node and the CPUs they hold together, from an MPI shared-memory
        split (:func:`~xrmodifier_hpc.runtime.mpi.node_share`); without it the ranks per node
        come from the launcher's variables and every rank is taken to share the same mask.
    config_threads : int
        The stage's config value (0: not set).
    config_key : str
        Its name for messages, e.g. ``"[emulator] threads"``.
    max_threads : int
        At most this many threads when sized from the cores (0: no limit); the user's
        settings are not limited.
    max_reason : str
        Why, for the log line.

    Returns
    -------
    ThreadPlan
        The size and its reasons (precedence: ``XRM_THREADS``/``--threads``, the config key,
        the user's OMP/BLAS variables, then the granted cores shared among the node's ranks,
        at most ``max_threads``).

    Raises
    ------
    UserError
        When ``XRM_THREADS`` or a user thread variable is not a positive integer.
    """
    env = os.environ if environ is None else environ
    mask = frozenset(affinity) if affinity is not None else affinity_cpus()
    grant = granted_cores(env, len(mask))
    if node is not None:
        ranks, ranks_source = node.ranks, "MPI node split"
    else:
        ranks, ranks_source = ranks_on_node(env)
    if grant.per_task:
        cores, cores_source, share = grant.cores, grant.source, grant.cores
    elif node is not None:
        # ranks bound to their own cores hold disjoint masks: the union counts them all
        cores, cores_source = node.cpus, "affinity"
        share = min(len(mask), node.cpus // max(node.ranks, 1))
    else:
        cores, cores_source, share = grant.cores, grant.source, grant.cores // max(ranks, 1)
    threads, source, capped = max(share, 1), "cores", ""
    if 0 < max_threads < threads:
        threads, capped = max_threads, max_reason or f"at most {max_threads} for this stage"
    user = user_thread_vars(env)

    requested = env.get(THREADS_VAR, "").strip()
    if requested:
        threads, source, capped = _count(requested, THREADS_VAR), "--threads", ""
    elif config_threads > 0:
        threads, source, capped = int(config_threads), config_key or "config", ""
    elif user:
        name = next(iter(user))
        threads, source, capped = _count(user[name], name), name, ""
    return ThreadPlan(
        threads=threads,
        source=source,
        cores=cores,
        cores_source=cores_source,
        per_task=grant.per_task,
        ranks_on_node=ranks,
        ranks_source=ranks_source,
        user_vars=user,
        dataloader_workers=min(4, threads // 2),
        capped=capped,
    )


def loaded_pools() -> str:
    """List the BLAS and OpenMP libraries loaded in this process and their thread counts.

    Returns
    -------
    str
        E.g. ``"openblas 1, openmp 1"`` (threadpoolctl's ``internal_api`` names), or
        ``"none loaded"``.
    """
    from threadpoolctl import threadpool_info

    seen: dict[str, set[int]] = {}
    for pool in threadpool_info():
        name = str(pool.get("internal_api") or pool.get("user_api"))
        seen.setdefault(name, set()).add(int(pool.get("num_threads", 0)))
    if not seen:
        return "none loaded"
    return ", ".join(f"{n} {'/'.join(map(str, sorted(v)))}" for n, v in sorted(seen.items()))


def apply_threads(
    plan: ThreadPlan, *, torch: bool = False, torch_threads: int | None = None
) -> int | None:
    """Size this process's pools as ``plan`` says.

    Parameters
    ----------
    plan : ThreadPlan
        From :func:`plan_threads`.
    torch : bool
        Import torch (when not imported yet) and size its intra-op pool; torch is sized
        anyway when already imported.
    torch_threads : int, optional
        torch's intra-op threads when they should differ from ``plan.threads`` (a stage whose
        tensors are too small to gain from more, e.g. ``invert``); never more than
        ``plan.threads``.

    Returns
    -------
    int or None
        torch's intra-op threads now, or None when torch is not loaded.
    """
    global _limiter
    from threadpoolctl import threadpool_limits

    if torch and "torch" not in sys.modules:
        importlib.import_module("torch")  # its OpenMP/MKL pools must exist before the limits
    n = plan.threads
    if not plan.from_user_vars:
        # libraries loaded later (SciPy's own OpenBLAS, torch) read these when they start
        for name in USER_VARS:
            os.environ[name] = str(n)
        os.environ[AUTO_VAR] = str(n)
        if _limiter is not None:
            _limiter.restore_original_limits()
        # threadpoolctl restores on request only: the limits hold for the rest of the process
        _limiter = threadpool_limits(limits=n)
    if "torch" in sys.modules:
        import torch as _torch

        want = min(torch_threads, n) if torch_threads else n
        if _torch.get_num_threads() != want:
            _torch.set_num_threads(want)
        return int(_torch.get_num_threads())
    return None


def configure_threads(
    comm: Any = None,
    *,
    ranks: int = 1,
    config_threads: int = 0,
    config_key: str = "",
    torch: bool = False,
    torch_threads: int | None = None,
    max_threads: int = 0,
    max_reason: str = "",
) -> ThreadPlan:
    """Size this process's thread pools from its grant and log one line saying so.

    Call it once at the start of a stage, before heavy numpy or torch work, on every rank
    (with ``comm`` it is collective: the ranks of each node count themselves).

    Parameters
    ----------
    comm : mpi4py communicator, optional
        The job's communicator; None for a single process or when none exists yet.
    ranks : int
        Ranks of the job (for the log line's "per rank"); ``comm.size`` when ``comm`` is given.
    config_threads : int
        The stage's config value for its threads (0: not set).
    config_key : str
        That key's name, e.g. ``"[emulator] threads"``.
    torch : bool
        The stage uses torch: import it and size its intra-op pool.
    torch_threads : int, optional
        A smaller intra-op size for torch (see :func:`apply_threads`).
    max_threads, max_reason : int, str
        A stage's limit when sized from the cores, and why (see :func:`plan_threads`).

    Returns
    -------
    ThreadPlan
        What was chosen.

    Raises
    ------
    UserError
        When ``XRM_THREADS`` or a thread variable is not a positive integer.
    """
    mask = affinity_cpus()
    node = node_share(comm, mask) if comm is not None else None
    plan = plan_threads(
        affinity=mask,
        node=node,
        config_threads=config_threads,
        config_key=config_key,
        max_threads=max_threads,
        max_reason=max_reason,
    )
    torch_now = apply_threads(plan, torch=torch, torch_threads=torch_threads)
    size = comm.size if comm is not None else ranks
    log.info("%s", plan.describe(loaded_pools(), torch_now, size))
    return plan


def restore_threads() -> None:
    """Undo the BLAS/OpenMP limits of the last :func:`apply_threads` (tests, notebooks).

    The environment variables it set stay; torch's intra-op size stays too.
    """
    global _limiter
    if _limiter is not None:
        _limiter.restore_original_limits()
        _limiter = None
