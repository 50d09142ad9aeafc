"""The simulation driver: split the grid over ranks, run the backend, write, resume, report.

Three ways to write, one result (bitwise: point k always draws from ``point_rng(seed, k)``):

* ``single``: one ``grid.h5``; under ``mpiexec -n K`` / ``srun`` every rank writes its rows
  into it through h5py's ``mpio`` driver.
* ``shards`` (``--shards``, or K > 1 ranks where h5py lacks MPI): each rank writes its own
  shard file, and rank 0 merges them into ``grid.h5`` at the end.
* ``array`` (``--shard i/n``, by default from a Slurm array task): this job computes shard i
  of n into its own file; ``xrmodifier merge`` (:mod:`~xrmodifier_hpc.stages.merge`) joins
  the shards afterwards.

Work is cut into chunks of ``simulation.chunk_size`` consecutive points; under
``mpiexec -n K`` each rank takes a few long runs of the chunks still to do, in turns along
the grid (:func:`~xrmodifier_hpc.config.grid.deal_chunks`), so neighbouring points that
share a modified response stay on one rank; ``--shards`` and Slurm array shards keep their
chunks dealt round-robin (shard i of n: chunks i, i + n, ...; a shard file lists them). On
resume only the chunks with points not yet done are dealt. Rank 0 shows progress for
all ranks (ranks send it a count after each chunk). An exception on any rank prints the
error with the rank and aborts the whole MPI job rather than leaving the others waiting; a
UserError that every rank meets in the same collective step ends the run cleanly (exit 2).

Once ``grid.h5`` is complete, the off-grid check points that ``train`` measures the emulator
with are fitted noise-free, split over the ranks, and stored in it (:func:`_write_offgrid`).
After a Slurm array and ``xrmodifier merge``, running ``simulate`` once more on the complete
grid does only that step (``jobs/merge.sbatch`` does it).

Each rank sizes its thread pools from the cores it was granted before any heavy work
(:mod:`~xrmodifier_hpc.runtime.threads`). This module contains no physics: the backend
computes, ``store`` writes, ``shards`` knows which files belong together.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from xrmodifier_hpc.backends import Backend, PointResults, make_backend
from xrmodifier_hpc.backends.offgrid import simulate_offgrid
from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.config.grid import (
    Grid,
    chunk_ranges,
    deal_chunks,
    offgrid_design,
    pending_chunks,
)
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import shards as shard_files
from xrmodifier_hpc.io import store
from xrmodifier_hpc.physics.modifiers import get_modifier
from xrmodifier_hpc.runtime import mpi
from xrmodifier_hpc.runtime.environment import JobEnvironment, detect
from xrmodifier_hpc.runtime.progress import Progress, ProgressChannel
from xrmodifier_hpc.runtime.threads import FORWARD_MODEL_REASON, configure_threads

log = logging.getLogger("xrmodifier.simulate")

#: how each mode writes, in the start and summary lines
WRITTEN = {"single": "one file", "shards": "per-rank shards", "array": "array shard"}
#: off-grid check points per modified response (they share the family's non-linear
#: parameters, e.g. the Gaussian's mu and sigma, and differ in the rest and in T_true)
OFFGRID_GROUP = 8

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` (0-based) of ``count``: the chunks ``index, index + count, ...``.

    Attributes
    ----------
    index : int
        0-based shard number.
    count : int
        Number of shards (array tasks).
    """

    index: int
    count: int

    def __str__(self) -> str:
        """Return ``"i/n"``."""
        return f"{self.index}/{self.count}"


def parse_shard(text: str, where: str = "--shard") -> Shard:
    """Parse ``"i/n"`` (0 <= i < n) into a :class:`Shard`.

    Parameters
    ----------
    text : str
        ``"i/n"``.
    where : str
        The option or variables it came from, for the error message.

    Returns
    -------
    Shard
        ``Shard(i, n)``.

    Raises
    ------
    UserError
        When ``text`` is not two integers with 0 <= i < n.
    """
    try:
        i, n = (int(v) for v in str(text).split("/"))
    except ValueError:
        raise UserError(f"expected i/n such as 0/4, got {text!r}", where) from None
    if n < 1 or not 0 <= i < n:
        raise UserError(f"need 0 <= i < n, got {text!r}", where)
    return Shard(i, n)


@dataclass
class SimulateSummary:
    """What a ``simulate`` run did.

    Attributes
    ----------
    path : Path
        ``grid.h5``, or the shard file in array mode.
    mode : str
        ``"single"``, ``"shards"`` or ``"array"``.
    n_ranks : int
        MPI ranks of the run.
    n_points, already_done, computed : int
        Points the run is responsible for, done before it, computed by it.
    seconds : float
        Wall time inside :func:`simulate`, s.
    complete : bool
        Every point of ``path`` is done.
    merged_shards : int
        Leftover shard files folded into ``grid.h5`` first.
    messages : list of str
        Extra lines for the user.
    """

    path: Path
    mode: str
    n_ranks: int
    n_points: int  #: points this run is responsible for (the grid, or one shard's)
    already_done: int
    computed: int
    seconds: float
    complete: bool  #: every point of ``path`` is done
    merged_shards: int = 0
    messages: list[str] = field(default_factory=list)

    def describe(self) -> str:
        """Say what was done: points, time, rate, ranks and mode, then the messages.

        Returns
        -------
        str
            One line ``PATH: D/N points done (C computed now in S s, R points/s, K ranks,
            HOW)`` (no rate when nothing was computed; with K > 1 ranks ``R points/s in all,
            R/K per rank``; HOW: one file, per-rank shards or array shard), then one line per
            message.
        """
        rate = ""
        if self.computed and self.seconds > 0:
            rate = f", {self.computed / self.seconds:.1f} points/s"
            if self.n_ranks > 1:
                rate += f" in all, {self.computed / self.seconds / self.n_ranks:.1f} per rank"
        head = (
            f"{self.path}: {self.already_done + self.computed}/{self.n_points} points done "
            f"({self.computed} computed now in {self.seconds:.1f} s{rate}, "
            f"{self.n_ranks} rank{'s' if self.n_ranks != 1 else ''}, "
            f"{WRITTEN.get(self.mode, self.mode)})"
        )
        return "\n".join([head, *self.messages])


def simulate(
    config: str | Path | Config,
    *,
    overwrite: bool = False,
    shards: bool = False,
    shard: str | Shard | None = None,
) -> SimulateSummary:
    """Evaluate every grid point of ``config`` with its backend into ``grid.h5`` (or a shard).

    Call it in every rank of an MPI job. Thread pools are sized per rank first
    (:func:`~xrmodifier_hpc.runtime.threads.configure_threads`; ``--threads N`` reaches it as
    ``XRM_THREADS``).

    Parameters
    ----------
    config : str, Path or Config
        The config file (or loaded config).
    overwrite : bool
        Discard existing results (grid.h5 and shards) and start again.
    shards : bool
        One shard file per rank, merged by rank 0 at the end.
    shard : str or Shard, optional
        ``"i/n"``: compute shard i of n only (Slurm arrays); default from
        ``SLURM_ARRAY_TASK_ID``/``SLURM_ARRAY_TASK_COUNT``.

    Returns
    -------
    SimulateSummary
        The same on every rank.

    Raises
    ------
    UserError
        Bad config or files, a grid.h5 of another config (without ``overwrite``), bad shard
        arguments; raised on every rank when every rank meets it, else the job is aborted
        with the failing rank's message.
    """
    t0 = time.monotonic()
    env = detect()
    shard = _choose_shard(shard, shards, env)
    comm = mpi.world_comm(env)
    # from here on an exception on one rank must abort every rank: the others would wait
    with mpi.fail_fast(comm):
        return _simulate(config, overwrite, shards, shard, comm, env, t0)


def _simulate(
    config: str | Path | Config,
    overwrite: bool,
    shards: bool,
    shard: Shard | None,
    comm: Any,
    env: JobEnvironment,
    t0: float,
) -> SimulateSummary:
    # every rank reads the config itself: a file missing on one node must abort, not hang
    cfg = mpi.agree(comm, lambda: _load(config))
    size = comm.size if comm is not None else 1
    rank = comm.rank if comm is not None else 0
    grid = Grid.from_config(cfg)
    mode = mpi.agree(comm, lambda: _choose_mode(shard, shards, size, grid, cfg))

    plan = mpi.on_root(comm, lambda: _plan(cfg, grid, mode, shard, size, overwrite))
    if plan.pending == 0 and not plan.merge_first:
        summary = _summary(cfg, plan, 0, time.monotonic() - t0, size, complete=True)
        summary.messages.append("nothing to do: every point is already done")
        _finish_message(summary, mode, shard)
        if mode != "array":
            _write_offgrid(cfg, comm, grid, configured=False)
        return summary
    # the backend first: one that cannot start (XSPEC outside the container) is a one-line
    # error before anything is announced; then the thread pools, before any heavy numpy or
    # torch work (collective: ranks count their node)
    backend = mpi.agree(comm, lambda: make_backend(cfg))
    _size_threads(cfg, comm)
    if rank == 0:
        where = plan.targets[0].path if mode == "array" else cfg.grid_path
        resumed = plan.total - plan.pending
        log.info(
            "simulate: %d points into %s (%d rank%s, %s)%s",
            plan.total,
            where,
            size,
            "s" if size > 1 else "",
            WRITTEN.get(mode, mode),
            f"; resuming, {resumed} already done" if resumed else "",
        )

    try:
        writer_kind = {"single": "mpio" if comm is not None else "serial"}.get(mode, mode)
        meta = shard_files.grid_meta(cfg, grid, backend.name, backend.version(), size, writer_kind)
        done, merged = mpi.on_root(comm, lambda: _prepare(cfg, grid, plan, meta))
        target = plan.targets[rank if mode == "shards" else 0]
        todo = pending_chunks(target.chunks, done)
        mine = todo if mode == "shards" else deal_chunks(todo, rank, size)
        channel = ProgressChannel(comm, plan.pending, plan.total - plan.pending, env)
        parallel_file = mode != "shards" and comm is not None
        writer = None
        if parallel_file or mine:
            writer = store.ResultWriter(target.path, comm if parallel_file else None)
        # no close in a finally: closing an mpio file is collective and would wait for a
        # failed rank forever; the abort leaves the file consistent (see store)
        computed = _compute(backend, grid, mine, done, writer, channel, cfg, comm)
        if writer is not None and not parallel_file:
            writer.close()  # a rank's own shard: closed (unlocked) before rank 0 merges it
        channel.finish()
        mpi.wait_politely(comm)  # ranks done early sleep here rather than spin in the close
        if writer is not None and parallel_file:
            writer.close()
        if mode == "shards":
            mpi.on_root(comm, lambda: shard_files.merge_shards(cfg, grid))
        total_computed = mpi.allsum(comm, computed)
        complete = mpi.on_root(comm, lambda: _is_complete(plan, cfg, mode))
        summary = _summary(cfg, plan, total_computed, time.monotonic() - t0, size, complete)
        summary.merged_shards = merged
        _finish_message(summary, mode, shard)
        if mode != "array":  # the check points share what they can with the grid's backend
            _write_offgrid(cfg, comm, grid, grid_backend=backend)
    finally:
        backend.close()
    return summary


def _load(config: str | Path | Config) -> Config:
    return config if isinstance(config, Config) else load_config(config)


# --------------------------------------------------------------------------------------------
# planning (rank 0, read-only) and preparing files (rank 0)
# --------------------------------------------------------------------------------------------


@dataclass
class _Target:
    """A file some ranks write: grid.h5 (all chunks) or one shard (its chunks)."""

    path: Path
    chunks: list[tuple[int, int]]
    shard: Shard | None
    exists: bool  #: a compatible file is there already (resume); else it is created


@dataclass
class _Plan:
    mode: str
    targets: list[_Target]
    done: np.ndarray  #: (n_points,) points done in any compatible file the run may use
    total: int  #: points the run is responsible for
    pending: int  #: of those, not yet done
    remove: list[Path] = field(default_factory=list)  #: stale files (--overwrite)
    merge_first: list[store.FileInfo] = field(default_factory=list)


def _plan(
    cfg: Config, grid: Grid, mode: str, shard: Shard | None, size: int, overwrite: bool
) -> _Plan:
    n = grid.n_points
    chunks = chunk_ranges(n, cfg.simulation.chunk_size)
    done = np.zeros(n, dtype=bool)
    grid_path = cfg.grid_path
    remove: list[Path] = []
    merge_first: list[store.FileInfo] = []

    if mode == "array":
        targets = [
            _Target(
                store.shard_path(grid_path, shard.index, shard.count),
                chunks[shard.index :: shard.count],
                shard,
                False,
            )
        ]
    elif mode == "shards":
        targets = [
            _Target(store.shard_path(grid_path, r, size), chunks[r::size], Shard(r, size), False)
            for r in range(size)
        ]
    else:
        targets = [_Target(grid_path, chunks, None, False)]

    if overwrite:
        # array tasks run side by side: each may only discard its own shard
        if mode == "array":
            remove.append(targets[0].path)
        else:
            remove.extend(p for p in (grid_path, *store.find_shards(grid_path)) if p.exists())
    else:
        base = shard_files.check_compatible(grid_path, cfg)
        if base is not None:
            done |= base.done
            if mode == "single":
                targets[0].exists = True
        if mode != "array":
            # leftovers of an earlier --shards run or Slurm array count as done; a single-file
            # run folds them into grid.h5 first, a --shards run merges them at its end
            leftovers = [store.inspect_file(p) for p in store.find_shards(grid_path)]
            for info in leftovers:
                shard_files.check_compatible(info.path, cfg, info)
                done |= info.done
            if mode == "single":
                merge_first = leftovers
        if mode != "single":
            for t in targets:
                info = shard_files.check_compatible(t.path, cfg)
                if info is not None:
                    if info.shard != (t.shard.index, t.shard.count):
                        raise UserError("shard file holds another shard; delete it", str(t.path))
                    t.exists = True
                    done |= info.done
    mine = np.zeros(n, dtype=bool)
    for t in targets:
        for a, b in t.chunks:
            mine[a:b] = True
    total = int(mine.sum())
    pending = int((mine & ~done).sum())
    return _Plan(mode, targets, done, total, pending, remove, merge_first)


def _prepare(cfg: Config, grid: Grid, plan: _Plan, meta: dict[str, Any]) -> tuple[np.ndarray, int]:
    """Delete stale files, create missing ones, fold leftover shards in; return done, merged."""
    for path in plan.remove:
        path.unlink(missing_ok=True)
    shape = shard_files.result_shape(cfg)
    done = plan.done.copy()
    for t in plan.targets:
        needed = bool(pending_chunks(t.chunks, done)) or (t.shard is None and plan.merge_first)
        if t.exists or not needed:
            continue
        if t.shard is None:
            shard_files.create_grid(cfg, grid, meta)
        else:
            store.create_shard_file(t.path, t.chunks, shape, meta, t.shard.index, t.shard.count)
    merged = 0
    if plan.merge_first:
        with store.ResultWriter(cfg.grid_path) as writer:
            for info in plan.merge_first:
                merged += store.copy_done_rows(info, writer)
        for info in plan.merge_first:
            info.path.unlink()
        log.info(
            "folded %d points from %d leftover shard file(s) into %s",
            merged,
            len(plan.merge_first),
            cfg.grid_path,
        )
    return done, len(plan.merge_first)


def _is_complete(plan: _Plan, cfg: Config, mode: str) -> bool:
    if mode == "array":
        path = plan.targets[0].path
        if not path.exists():  # every point of the shard was already in grid.h5
            return True
        info = store.inspect_file(path)
        return all(bool(info.done[a:b].all()) for a, b in plan.targets[0].chunks)
    return cfg.grid_path.exists() and bool(store.inspect_file(cfg.grid_path).done.all())


# --------------------------------------------------------------------------------------------
# computing
# --------------------------------------------------------------------------------------------


def _compute(
    backend: Backend,
    grid: Grid,
    chunks: list[tuple[int, int]],
    done: np.ndarray,
    writer: store.ResultWriter | None,
    channel: ProgressChannel,
    cfg: Config,
    comm: Any,
) -> int:
    """Evaluate the not-done points of ``chunks``; write each chunk before the next."""
    sim = cfg.simulation
    n_tgrid = len(sim.fit_tgrid) if sim.curves else None
    computed = 0
    for k, (a, b) in enumerate(chunks):
        index = np.arange(a, b)[~done[a:b]]
        theta, t_true = grid.points(index)
        results = backend.run(theta, t_true, index)
        _check_results(results, index.size, sim.realisations, n_tgrid)
        writer.write(index, _arrays(results))
        computed += index.size
        log.debug("points [%d, %d) written (%d computed)", a, b, index.size)
        channel.report(index.size)
        if k == 0:
            mpi.fault_point("simulate.chunk", comm)  # test hook: XRM_FAULT=simulate.chunk@R
    return computed


def _arrays(results: PointResults) -> dict[str, np.ndarray]:
    return {n: getattr(results, n) for n in store.RESULT_NAMES if getattr(results, n) is not None}


def _check_results(res: PointResults, n: int, n_real: int, n_tgrid: int | None) -> None:
    expected = {
        "t_fit_orig": (n, n_real),
        "t_fit_mod": (n, n_real),
        "err_orig": (n, n_real, 2),
        "err_mod": (n, n_real, 2),
        "status": (n, n_real, 2),
        "norm": (n,),
        "counts": (n, n_real),
    }
    if n_tgrid is not None:
        expected.update(curve_orig=(n, n_real, n_tgrid), curve_mod=(n, n_real, n_tgrid))
    for name, shape in expected.items():
        value = getattr(res, name)
        if value is None or np.shape(value) != shape:
            raise RuntimeError(
                f"backend returned {name} of shape {np.shape(value) if value is not None else None}"
                f", expected {shape}"
            )


def _finish_message(summary: SimulateSummary, mode: str, shard: Shard | None) -> None:
    if mode == "array":
        summary.messages.append(
            f"shard {shard} {'complete' if summary.complete else 'NOT complete'}; when every "
            "shard is done run `xrmodifier merge CONFIG`"
        )
    elif not summary.complete:
        summary.messages.append("NOT complete: rerun it without --overwrite to finish")


def _summary(
    cfg: Config, plan: _Plan, computed: int, seconds: float, size: int, complete: bool
) -> SimulateSummary:
    path = plan.targets[0].path if plan.mode == "array" else cfg.grid_path
    return SimulateSummary(
        path, plan.mode, size, plan.total, plan.total - plan.pending, computed, seconds, complete
    )


# --------------------------------------------------------------------------------------------
# the off-grid check points
# --------------------------------------------------------------------------------------------


def _size_threads(cfg: Config, comm: Any) -> None:
    """Size every rank's thread pools (one log line each; collective over ``comm``)."""
    uses_torch = cfg.simulation.backend == "native" and cfg.simulation.engine == "torch"
    mpi.agree(
        comm,
        lambda: configure_threads(
            comm, torch=uses_torch, max_threads=1, max_reason=FORWARD_MODEL_REASON
        ),
    )


def _write_offgrid(
    cfg: Config,
    comm: Any,
    grid: Grid,
    configured: bool = True,
    grid_backend: Backend | None = None,
) -> None:
    """Fit the ``[emulator] offgrid_points`` check points noise-free and store them in grid.h5.

    Collective: whole chunks of points are dealt round-robin to the ranks (a point is always
    fitted in the same batch, so the result is bitwise independent of the rank count), rank 0
    gathers and writes. Does nothing unless grid.h5 is complete and holds another number of
    check points than the config asks (``offgrid_points`` is not part of the simulation
    fingerprint: changing it only redoes this step). ``configured`` is False when the thread
    pools still need sizing (a run that found every grid point done); ``grid_backend`` the
    grid's backend, still open, when this run built one (see ``simulate_offgrid``).
    """
    n = cfg.emulator.offgrid_points
    if n == 0 or not mpi.on_root(comm, lambda: _offgrid_missing(cfg.grid_path, n)):
        return
    if not configured:
        _size_threads(cfg, comm)
    rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
    theta, t_true = offgrid_points(cfg, grid)
    # chunks dealt round-robin, whole groups each, small enough that every rank gets a
    # share; a point's fit never depends on its batch (the backends' contract), so the
    # stored fits are bitwise the same whatever the number of ranks
    per_rank = OFFGRID_GROUP * math.ceil(n / size / OFFGRID_GROUP)
    chunks = chunk_ranges(n, max(1, min(cfg.simulation.chunk_size, per_rank)))
    mine = np.concatenate(
        [np.arange(a, b) for i, (a, b) in enumerate(chunks) if i % size == rank]
        or [np.zeros(0, np.int64)]
    ).astype(np.int64)
    progress = None
    if rank == 0:
        log.info("off-grid check: %d noise-free points over %d rank(s)", n, size)
        label = "off-grid check" + (" (rank 0's share)" if size > 1 else "")
        progress = Progress(mine.size, interactive=detect().interactive, label=label)
    fits = simulate_offgrid(
        cfg, theta[mine], t_true[mine], mine, progress and progress.update, grid_backend
    )
    if progress is not None:
        progress.close()
    mpi.wait_politely(comm)
    parts = comm.gather((mine, fits), root=0) if comm is not None else [(mine, fits)]
    mpi.on_root(comm, lambda: _store_offgrid(cfg.grid_path, theta, t_true, parts))


def offgrid_points(cfg: Config, grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """Draw the ``[emulator] offgrid_points`` check points that simulate fits and stores.

    :func:`~xrmodifier_hpc.config.grid.offgrid_design` in groups of OFFGRID_GROUP points
    sharing the modifier family's non-linear parameters (one modified response per group).

    Parameters
    ----------
    cfg : Config
        The loaded config (modifier family, seed, number of points).
    grid : Grid
        Its grid (bounds and log axes).

    Returns
    -------
    theta : numpy.ndarray
        (n, d) modifier parameters, in the units of the grid axes.
    t_true : numpy.ndarray
        (n,) true temperatures, keV.
    """
    n = cfg.emulator.offgrid_points
    shared = _key_axes(cfg, grid)
    return offgrid_design(grid.bounds, grid.log_axes, n, cfg.simulation.seed, shared, OFFGRID_GROUP)


def _key_axes(cfg: Config, grid: Grid) -> list[bool]:
    """Mark the grid axes a modified response depends on (the family's non-linear ones).

    The rest, and T_true, vary within an off-grid group; a family with no linear parameter
    marks none (its groups would be copies of one point).
    """
    modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
    axes = list(modifier.key_params(grid.bounds[:-1, 0], grid.bounds[:-1, 1]))
    return axes + [False] if not all(axes) else [False] * (len(axes) + 1)


def _offgrid_missing(path: Path, n: int) -> bool:
    if not path.exists() or not store.inspect_file(path).done.all():
        return False
    stored = store.load_offgrid(path)
    return stored is None or stored.n_points != n


def _store_offgrid(path: Path, theta: np.ndarray, t_true: np.ndarray, parts: list) -> None:
    n = t_true.size
    points = store.OffgridPoints(
        theta, t_true, np.full(n, np.nan), np.full(n, np.nan), np.zeros((n, 2), np.uint8)
    )
    for index, fits in parts:
        points.t_fit_orig[index] = fits.t_fit_orig
        points.t_fit_mod[index] = fits.t_fit_mod
        points.status[index] = fits.status
    store.write_offgrid(path, points)
    failed = int((~np.isfinite(points.t_fit_orig) | ~np.isfinite(points.t_fit_mod)).sum())
    log.info("off-grid check: %d points stored in %s (%d without a fit)", n, path, failed)


# --------------------------------------------------------------------------------------------
# MPI edges
# --------------------------------------------------------------------------------------------


def _choose_shard(shard: str | Shard | None, shards: bool, env: JobEnvironment) -> Shard | None:
    if shard is not None and shards:
        raise UserError("give either --shards (one shard per rank) or --shard i/n, not both")
    if isinstance(shard, str):
        return parse_shard(shard)
    if shard is None and not shards and env.array_task_count is not None:
        where = "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT"
        return parse_shard(f"{env.array_task_index}/{env.array_task_count}", where)
    return shard


def _choose_mode(shard: Shard | None, shards: bool, size: int, grid: Grid, cfg: Config) -> str:
    if shard is not None:
        _check_shard(shard, grid, cfg)
        if size > 1 and not _h5py_mpi():
            raise UserError(
                "h5py here has no MPI support, so the ranks of one array task cannot share a "
                "shard file: run one process per array task (or use --shards without --shard)"
            )
        return "array"
    if shards or (size > 1 and not _h5py_mpi()):
        return "shards"
    return "single"


def _check_shard(shard: Shard, grid: Grid, cfg: Config) -> None:
    n_chunks = len(chunk_ranges(grid.n_points, cfg.simulation.chunk_size))
    if shard.count > n_chunks:
        raise UserError(
            f"{shard.count} shards for {n_chunks} chunks of {cfg.simulation.chunk_size} points: "
            "use at most as many array tasks as chunks (or a smaller [simulation] chunk_size)",
            "--shard",
        )


def _h5py_mpi() -> bool:
    import h5py

    return bool(h5py.get_config().mpi)
