"""The ``merge`` stage: join the shard files of ``simulate --shard i/n`` into ``grid.h5``.

Run it once after every array task has finished (``jobs/merge.sbatch``), as one process or
under ``mpiexec``/``srun``. Rank 0 checks the shards (same config, no point missing) and
creates ``grid.h5`` when needed; then every rank copies its share of the shard files into it
(h5py's ``mpio`` driver; without MPI support in h5py, rank 0 copies them all); rank 0 deletes
the merged shards at the end. An error on any rank ends the whole job with that rank's
message (:mod:`~xrmodifier_hpc.runtime.mpi`); a merge stopped half way is simply run again.
"""

from __future__ import annotations

import logging
from pathlib import Path

from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.io import shards, store
from xrmodifier_hpc.io.shards import MergeSummary
from xrmodifier_hpc.runtime import mpi
from xrmodifier_hpc.runtime.environment import detect

log = logging.getLogger("xrmodifier.merge")

__all__ = ["MergeSummary", "merge"]


def merge(config: str | Path | Config, *, overwrite: bool = False) -> MergeSummary:
    """Join the shard files of ``config``'s workdir (and a compatible ``grid.h5``) into ``grid.h5``.

    Call it in every rank of an MPI job (or in one process).

    Parameters
    ----------
    config : str, Path or Config
        The config file (or loaded config) of the simulation.
    overwrite : bool
        Replace a ``grid.h5`` and delete shards left by a different config instead of
        refusing them.

    Returns
    -------
    MergeSummary
        The same on every rank.

    Raises
    ------
    UserError
        When no shard file is there and ``grid.h5`` is not complete, when points would be
        missing (the message lists the shards to compute), or when a file holds another
        config's results (without ``overwrite``).
    """
    comm = mpi.world_comm(detect())
    with mpi.fail_fast(comm):
        cfg = mpi.agree(comm, lambda: config if isinstance(config, Config) else load_config(config))
        grid = Grid.from_config(cfg)
        plan = mpi.on_root(comm, lambda: shards.plan_merge(cfg, grid, overwrite=overwrite))
        if not plan.shards:
            return MergeSummary(cfg.grid_path, grid.n_points, 0, 0, True)
        copied = _copy(cfg, plan, comm)
        return mpi.on_root(comm, lambda: shards.finish_merge(cfg, grid, plan, copied))


def _parallel(comm: object) -> bool:
    if comm is None:
        return False
    import h5py

    return bool(h5py.get_config().mpi)


def _copy(cfg: Config, plan: shards.MergePlan, comm: object) -> int:
    """Copy the planned shards into grid.h5: shard k by rank k mod size (or all by rank 0)."""
    rank = comm.rank if comm is not None else 0
    size = comm.size if comm is not None else 1
    parallel = _parallel(comm)
    everything = plan.shards if rank == 0 else []
    mine = plan.shards[rank::size] if parallel else everything
    copied = 0
    # no close in a finally: closing an mpio file is collective and would wait for a failed
    # rank forever; fail_fast aborts the job instead, and a rerun copies again
    writer = None
    if parallel or mine:
        writer = store.ResultWriter(cfg.grid_path, comm if parallel else None)
    for path in mine:
        copied += store.copy_done_rows(store.inspect_file(path), writer)
        log.debug("copied %s", path)
        mpi.fault_point("merge.read", comm)
    if not mine:
        mpi.fault_point("merge.read", comm)  # a rank without a share passes the point once
    mpi.wait_politely(comm)
    if writer is not None:
        writer.close()
    return mpi.allsum(comm, copied)
