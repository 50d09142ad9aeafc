"""Grid files of one config: compatibility, provenance, and joining shard files into grid.h5.

``simulate`` (its ``--shards`` mode and the leftovers it folds in) and ``merge`` share this
logic; :mod:`~xrmodifier_hpc.io.store` knows the HDF5 layout, this module knows which files
belong together. A merge is planned (:func:`plan_merge`: which shards, is anything missing,
create ``grid.h5``), its shards copied (:func:`~xrmodifier_hpc.io.store.copy_done_rows`, by
one process or by every rank of an MPI job into the same file), then finished
(:func:`finish_merge`: delete what was merged, check completeness). :func:`merge_shards`
does all three in one process.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config import Config
from xrmodifier_hpc.config.grid import Grid, chunk_ranges, pending_chunks
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import store
from xrmodifier_hpc.io.artefacts import provenance

log = logging.getLogger("xrmodifier.merge")


@dataclass
class MergeSummary:
    """What a merge did.

    Attributes
    ----------
    path : Path
        The ``grid.h5`` written.
    n_points : int
        Points of the grid.
    shards : int
        Shard files merged (and deleted).
    copied : int
        Points copied from them.
    complete : bool
        Every point of ``grid.h5`` is done.
    """

    path: Path
    n_points: int
    shards: int
    copied: int
    complete: bool

    def describe(self) -> str:
        """Return one line for the user: what was merged and whether the grid is complete.

        Returns
        -------
        str
            The path, shard files and points merged, and ``complete`` or ``NOT complete``.
        """
        return (
            f"{self.path}: merged {self.shards} shard file{'s' if self.shards != 1 else ''} "
            f"({self.copied} points); {'complete' if self.complete else 'NOT complete'}, "
            f"{self.n_points} points"
            + (
                "; next: `xrmodifier simulate CONFIG` adds the off-grid check points for train"
                if self.complete
                else ""
            )
        )


def check_compatible(
    path: Path, cfg: Config, info: store.FileInfo | None = None
) -> store.FileInfo | None:
    """Inspect a grid or shard file and refuse it unless it holds ``cfg``'s simulation.

    Parameters
    ----------
    path : Path
        A ``grid.h5`` or shard file.
    cfg : Config
        The config whose ``simulation_fingerprint()`` the file must carry.
    info : FileInfo, optional
        The file already inspected (not read again).

    Returns
    -------
    FileInfo or None
        None when the file does not exist.

    Raises
    ------
    UserError
        When the file holds results of another simulation config (the message names the
        first differing keys), or is not a readable grid file.
    """
    if info is None:
        if not path.exists():
            return None
        info = store.inspect_file(path)
    if info.fingerprint != cfg.simulation_fingerprint():
        what = store.describe_difference(
            str(info.meta.get("simulation", "")), cfg.simulation_summary()
        )
        raise UserError(
            "holds results of a different simulation config"
            + (f" ({what})" if what else "")
            + ": rerun with --overwrite to start again, or point [paths] workdir elsewhere",
            str(path),
        )
    return info


def result_shape(cfg: Config) -> store.ResultShape:
    """Size the result datasets for ``cfg``: realisations, and fit-grid points with curves.

    Parameters
    ----------
    cfg : Config
        The config (its ``[simulation]`` realisations, fit_tgrid and curves).

    Returns
    -------
    ResultShape
        ``n_real``, and ``n_tgrid`` (None when curves are not stored).
    """
    sim = cfg.simulation
    return store.ResultShape(sim.realisations, len(sim.fit_tgrid) if sim.curves else None)


def grid_meta(
    cfg: Config, grid: Grid, backend: str, backend_version: str, n_ranks: int, writer: str
) -> dict[str, Any]:
    """Build the ``/meta`` attributes of a grid or shard file (see :mod:`~xrmodifier_hpc.io.store`).

    Parameters
    ----------
    cfg, grid : Config, Grid
        The simulation.
    backend, backend_version : str
        Who computes the points.
    n_ranks : int
        Ranks (or shards) that write.
    writer : str
        ``"serial"``, ``"mpio"``, ``"shards"``, ``"array"`` or ``"merge"``.

    Returns
    -------
    dict
        HDF5-attribute-friendly values; time and host from
        :func:`~xrmodifier_hpc.io.artefacts.provenance`.
    """
    sim = cfg.simulation
    prov = provenance()
    return {
        "config": cfg.text,
        "config_path": str(cfg.path),
        "simulation": cfg.simulation_summary(),
        "fingerprint": cfg.simulation_fingerprint(),
        "package_version": prov["version"],
        "backend": backend,
        "backend_version": backend_version,
        "seed": sim.seed,
        "mode": sim.mode,
        "realisations": sim.realisations,
        "n_points": grid.n_points,
        "chunk_size": sim.chunk_size,
        "created": prov["created"],
        "host": prov["host"],
        "n_ranks": n_ranks,
        "writer": writer,
    }


def create_grid(cfg: Config, grid: Grid, meta: dict[str, Any]) -> None:
    """Create an empty ``grid.h5`` for ``cfg`` (replacing any file there at the final rename).

    Parameters
    ----------
    cfg : Config
        The config: ``grid_path``, fit-temperature grid (keV), modifier family and options.
    grid : Grid
        The points whose coordinates are written.
    meta : dict of str to Any
        The ``/meta`` attributes (from :func:`grid_meta`).
    """
    store.create_grid_file(
        cfg.grid_path,
        grid,
        cfg.simulation.fit_tgrid.array,
        result_shape(cfg),
        meta,
        cfg.modifier.family,
        cfg.modifier.options,
        offgrid_points=cfg.emulator.offgrid_points,
    )


@dataclass
class MergePlan:
    """The shard files to copy into ``grid.h5`` (already created), and what to delete after.

    Small (paths only), so that MPI ranks can share it.

    Attributes
    ----------
    shards : list of Path
        Compatible shard files, sorted by name.
    stale : list of Path
        Files of another config to delete once merged (``overwrite`` only).
    """

    shards: list[Path] = field(default_factory=list)
    stale: list[Path] = field(default_factory=list)


def plan_merge(cfg: Config, grid: Grid, *, overwrite: bool) -> MergePlan:
    """Check the shard files of ``cfg``'s workdir and prepare ``grid.h5`` for them.

    Parameters
    ----------
    cfg, grid : Config, Grid
        The simulation.
    overwrite : bool
        Files of a different config are replaced (``grid.h5``) or deleted (shards) instead
        of refused.

    Returns
    -------
    MergePlan
        Empty when ``grid.h5`` is complete and no shard is left.

    Raises
    ------
    UserError
        When a file holds another config's results (without ``overwrite``), when there is
        no shard file and ``grid.h5`` is not complete, or when points would still be missing
        (the message names the shards to compute).
    """
    grid_path = cfg.grid_path
    stale: list[Path] = []
    base = None
    try:
        base = check_compatible(grid_path, cfg)
    except UserError:
        if not overwrite:
            raise
        stale.append(grid_path)
    infos = []
    for path in store.find_shards(grid_path):
        try:
            info = check_compatible(path, cfg)
        except UserError:
            if not overwrite:
                raise
            stale.append(path)
            continue
        infos.append(info)
    if not infos:
        if base is not None and base.done.all():
            return MergePlan()
        raise UserError(
            f"no shard files to merge in {grid_path.parent / store.SHARD_DIR}: run "
            "`xrmodifier simulate CONFIG --shard i/n` for every i first",
            str(grid_path),
        )
    done = base.done.copy() if base is not None else np.zeros(grid.n_points, dtype=bool)
    for info in infos:
        done |= info.done
    if not done.all():
        raise UserError(missing_message(cfg, done, infos), str(grid_path))
    if base is None:
        first = infos[0].meta
        meta = grid_meta(
            cfg,
            grid,
            str(first.get("backend", "")),
            str(first.get("backend_version", "")),
            infos[0].shard[1],
            "merge",
        )
        create_grid(cfg, grid, meta)
    versions = {str(i.meta.get("backend_version")) for i in infos}
    if len(versions) > 1:
        log.warning(
            "shards were computed by different backend versions: %s", ", ".join(sorted(versions))
        )
    return MergePlan([i.path for i in infos], [p for p in stale if p != grid_path])


def finish_merge(cfg: Config, grid: Grid, plan: MergePlan, copied: int) -> MergeSummary:
    """Delete the merged shards (and stale files), and say whether ``grid.h5`` is complete.

    Parameters
    ----------
    cfg, grid : Config, Grid
        The simulation.
    plan : MergePlan
        What :func:`plan_merge` returned; its shards have been copied.
    copied : int
        Points copied (for the summary).

    Returns
    -------
    MergeSummary
    """
    grid_path = cfg.grid_path
    for path in plan.shards + plan.stale:
        path.unlink(missing_ok=True)
    folder = grid_path.parent / store.SHARD_DIR
    if folder.is_dir() and not any(folder.iterdir()):
        folder.rmdir()
    complete = bool(store.inspect_file(grid_path).done.all())
    return MergeSummary(grid_path, grid.n_points, len(plan.shards), copied, complete)


def merge_shards(cfg: Config, grid: Grid, *, overwrite: bool = False) -> MergeSummary:
    """Join every shard file of ``cfg``'s workdir into ``grid.h5`` in this process.

    Parameters
    ----------
    cfg, grid : Config, Grid
        The simulation.
    overwrite : bool
        See :func:`plan_merge`.

    Returns
    -------
    MergeSummary

    Raises
    ------
    UserError
        As :func:`plan_merge`.
    """
    plan = plan_merge(cfg, grid, overwrite=overwrite)
    if not plan.shards:
        return MergeSummary(cfg.grid_path, grid.n_points, 0, 0, True)
    copied = 0
    with store.ResultWriter(cfg.grid_path) as writer:
        for path in plan.shards:
            copied += store.copy_done_rows(store.inspect_file(path), writer)
    return finish_merge(cfg, grid, plan, copied)


def missing_message(cfg: Config, done: np.ndarray, infos: list[store.FileInfo]) -> str:
    """Word the error of an incomplete merge: how many points, and which shards to compute.

    Parameters
    ----------
    cfg : Config
        The simulation (its chunk size defines the shards).
    done : ndarray of bool, shape (n_points,)
        Points done in ``grid.h5`` or any shard.
    infos : list of FileInfo
        The shard files found (their most common count is the array's size).

    Returns
    -------
    str
    """
    counts = [i.shard[1] for i in infos]
    count = max(set(counts), key=counts.count)
    chunks = chunk_ranges(done.size, cfg.simulation.chunk_size)
    missing = [i for i in range(count) if pending_chunks(chunks[i::count], done)]
    listed = ", ".join(f"{i}/{count}" for i in missing[:8]) + (" ..." if len(missing) > 8 else "")
    return (
        f"{int((~done).sum())} of {done.size} points are not done yet (shard {listed}): run "
        f"`xrmodifier simulate {cfg.path.name} --shard i/{count}` for each, then merge again"
    )
