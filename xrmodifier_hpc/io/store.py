"""The one place that knows HDF5: the ``grid.h5`` layout, shard files, writing rows, reading back.

Layout of ``grid.h5`` (``LAYOUT_VERSION``; temperatures in keV)::

    /grid/theta        (n_points, d)  float64   attrs: names, units, family, options (JSON)
    /grid/t_true       (n_points,)    float64
    /grid/axes/<name>  (n_k,)         float64   one per modifier parameter, then t_true
    /grid/fit_tgrid    (n_tgrid,)     float64   temperatures of the C(T) curves
    /results/t_fit_orig, t_fit_mod    (n_points, n_real)          float32   T1, T1'
    /results/err_orig, err_mod        (n_points, n_real, 2)       float32   -/+ 1 sigma
    /results/status                   (n_points, n_real, 2)       uint8     [orig, mod] bits
    /results/norm                     (n_points,)                 float64
    /results/counts                   (n_points, n_real)          float32
    /results/curve_orig, curve_mod    (n_points, n_real, n_tgrid) float32   only with curves
    /results/done                     (n_points,)                 bool
    /offgrid/theta     (n_off, d)     float64   off-grid check points (asimov fits), optional
    /offgrid/t_true    (n_off,)       float64
    /offgrid/t_fit_orig, t_fit_mod    (n_off,)                    float64   T1, T1'
    /offgrid/status                   (n_off, 2)                  uint8     [orig, mod] bits
    /offgrid/done                     (1,)                        bool      attrs: provenance
    /meta  attrs: kind, layout_version, config, simulation, fingerprint, package_version,
                  backend, backend_version, seed, mode, realisations, n_points, chunk_size,
                  created, host, n_ranks, writer

Points not done read as NaN with status 0xFF (every "unusable" bit set); ``done`` decides.

``/offgrid`` holds the points ``simulate`` fits noise-free between the grid nodes so that
``train`` can judge the emulator off the grid without running a backend. It is allocated with
the file when the count is known then (``create_grid_file(offgrid_points=...)``) and filled
by raw writes, ``done`` last; otherwise (a grid made before, another count)
:func:`write_offgrid` writes a copy of the file with the group and renames it into place.

A shard file (``shards/grid-shard-IIII-of-NNNN.h5``) holds only its own points: the same
``/results`` datasets with one row per point of its chunks, listed in ``/shard/chunks``
((m, 2) global [start, stop)), and the same ``/meta`` with kind ``xrmodifier-grid-shard``.

Crash safety. Every file is created complete (all datasets allocated at creation, fill
values written) under a ``.partial`` name and renamed into place, so afterwards writing
results only writes raw data and never touches HDF5 metadata: a process killed at any moment
leaves a readable file. Rows are written first, ``done`` after them; a point whose row made
it but whose ``done`` did not is simply computed again. With the serial driver both steps
end with a flush (HDF5's sieve buffer would otherwise hold the bytes); with the ``mpio``
driver each independent write is an MPI-IO write that reaches the operating system before
it returns, and H5Fflush would be collective. The superblock stays at version 0 (default
``libver``): later versions mark a file as open for writing and refuse it after a kill.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from xrmodifier_hpc.config.grid import OFFGRID_STREAM, Grid, contiguous_runs
from xrmodifier_hpc.errors import UserError

LAYOUT_VERSION = 1
GRID_KIND = "xrmodifier-grid"
SHARD_KIND = "xrmodifier-grid-shard"
SHARD_DIR = "shards"

#: fill for points not yet done: NaN for values; status with every bit set (unusable)
STATUS_NOT_DONE = 0xFF

#: result datasets: name -> (trailing shape key, dtype, fill)
_RESULT_DATASETS: dict[str, tuple[str, str, Any]] = {
    "t_fit_orig": ("real", "f4", np.nan),
    "t_fit_mod": ("real", "f4", np.nan),
    "err_orig": ("real2", "f4", np.nan),
    "err_mod": ("real2", "f4", np.nan),
    "status": ("real2", "u1", STATUS_NOT_DONE),
    "norm": ("point", "f8", np.nan),
    "counts": ("real", "f4", np.nan),
    "curve_orig": ("curve", "f4", np.nan),
    "curve_mod": ("curve", "f4", np.nan),
}
CURVE_DATASETS = ("curve_orig", "curve_mod")
#: every result dataset but ``done``, in layout order
RESULT_NAMES = tuple(_RESULT_DATASETS)

#: rows per block when writing or copying whole datasets (keeps memory flat for any grid)
_BLOCK_ROWS = 65536


# --------------------------------------------------------------------------------------------
# paths
# --------------------------------------------------------------------------------------------


def shard_path(grid_path: Path, index: int, count: int) -> Path:
    """Return where shard ``index`` of ``count`` of ``grid_path`` lives.

    Parameters
    ----------
    grid_path : Path
        The ``grid.h5`` the shards belong to; the shards live in ``shards/`` beside it.
    index : int
        0-based shard index (``SLURM_ARRAY_TASK_ID``).
    count : int
        Number of shards.

    Returns
    -------
    Path
        ``<grid dir>/shards/grid-shard-IIII-of-NNNN.h5``.
    """
    return Path(grid_path).parent / SHARD_DIR / f"grid-shard-{index:04d}-of-{count:04d}.h5"


def find_shards(grid_path: Path) -> list[Path]:
    """Return the shard files beside ``grid_path`` (any count), sorted by name.

    Parameters
    ----------
    grid_path : Path
        The ``grid.h5`` whose ``shards/`` folder is searched.

    Returns
    -------
    list of Path
        Files matching ``grid-shard-*-of-*.h5``; empty when there is no ``shards/`` folder.
    """
    folder = Path(grid_path).parent / SHARD_DIR
    return sorted(folder.glob("grid-shard-*-of-*.h5")) if folder.is_dir() else []


def partial_path(path: Path) -> Path:
    """Return the name a file is built under before it is renamed into place.

    Parameters
    ----------
    path : Path
        The final file name.

    Returns
    -------
    Path
        ``path`` with ``.partial`` appended to its name.
    """
    return path.with_name(path.name + ".partial")


# --------------------------------------------------------------------------------------------
# creation
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ResultShape:
    """Sizes of the result datasets: realisations, and fit-grid points (None: no curves).

    Attributes
    ----------
    n_real : int
        Realisations per grid point.
    n_tgrid : int or None
        Points of the fit temperature grid (length of the C(T) curves); None when the grid
        is simulated without curves.
    """

    n_real: int
    n_tgrid: int | None

    def shape(self, name: str, rows: int) -> tuple[int, ...]:
        """Return the shape of result dataset ``name`` for ``rows`` points.

        Parameters
        ----------
        name : str
            A result dataset name (one of ``RESULT_NAMES``).
        rows : int
            Number of points (rows) the file holds.

        Returns
        -------
        tuple of int
            ``(rows,)``, ``(rows, n_real)``, ``(rows, n_real, 2)`` or
            ``(rows, n_real, n_tgrid)`` (``n_tgrid`` 0 when there are no curves).

        Raises
        ------
        KeyError
            When ``name`` is not a result dataset.
        """
        key = _RESULT_DATASETS[name][0]
        return {
            "point": (rows,),
            "real": (rows, self.n_real),
            "real2": (rows, self.n_real, 2),
            "curve": (rows, self.n_real, self.n_tgrid or 0),
        }[key]

    @property
    def names(self) -> tuple[str, ...]:
        """Result dataset names this shape allocates (curves only when ``n_tgrid`` is set)."""
        return tuple(
            n for n in _RESULT_DATASETS if self.n_tgrid is not None or n not in CURVE_DATASETS
        )


def _early_dcpl() -> h5py.h5p.PropDCID:
    # a fresh list per dataset: h5py writes the fill value into the list it is given
    dcpl = h5py.h5p.create(h5py.h5p.DATASET_CREATE)
    dcpl.set_alloc_time(h5py.h5d.ALLOC_TIME_EARLY)
    return dcpl


def _create_dataset(
    group: h5py.Group, name: str, shape: tuple[int, ...], dtype: str, fill: Any = None
) -> h5py.Dataset:
    """Create a contiguous dataset allocated (and filled) now, so later writes are raw data only."""
    kwargs: dict[str, Any] = {"dcpl": _early_dcpl(), "track_times": False}
    if fill is not None:
        kwargs.update(fillvalue=fill, fill_time="alloc")
    return group.create_dataset(name, shape=shape, dtype=dtype, **kwargs)


def _create_results(f: h5py.File, rows: int, shape: ResultShape) -> None:
    g = f.create_group("results")
    for name in shape.names:
        _, dtype, fill = _RESULT_DATASETS[name]
        _create_dataset(g, name, shape.shape(name, rows), dtype, fill)
    _create_dataset(g, "done", (rows,), "bool", False)


def _write_meta(f: h5py.File, meta: Mapping[str, Any], kind: str) -> None:
    g = f.create_group("meta")
    g.attrs["kind"] = kind
    g.attrs["layout_version"] = LAYOUT_VERSION
    for key, value in meta.items():
        g.attrs[key] = value


@contextmanager
def _atomic_create(path: Path) -> Iterator[h5py.File]:
    """Build a file under its ``.partial`` name; rename it into place only when complete."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = partial_path(path)
    try:
        with h5py.File(tmp, "w") as f:
            yield f
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def create_grid_file(
    path: Path,
    grid: Grid,
    fit_tgrid: np.ndarray,
    shape: ResultShape,
    meta: Mapping[str, Any],
    family: str,
    options: Mapping[str, Any],
    offgrid_points: int = 0,
) -> None:
    """Write an empty ``grid.h5`` (grid coordinates, allocated results, provenance) atomically.

    Replaces an existing file at ``path`` only at the final rename.

    Parameters
    ----------
    path : Path
        Where (``Workdir.grid``).
    grid : Grid
        The (theta, T_true) grid; its points fill ``/grid``.
    fit_tgrid : numpy.ndarray
        (n_tgrid,) temperatures of the C(T) curves, keV.
    shape : ResultShape
        Realisations and curve length of the result datasets.
    meta : mapping
        ``/meta`` attributes (str, int or float values).
    family : str
        The modifier family.
    options : mapping
        Its options (stored as JSON).
    offgrid_points : int
        > 0: also allocate ``/offgrid`` for that many check points (filled later by
        :func:`write_offgrid`).

    Raises
    ------
    TypeError
        When a ``meta`` value cannot be an HDF5 attribute (nothing is left behind).
    """
    with _atomic_create(path) as f:
        g = f.create_group("grid")
        theta = _create_dataset(g, "theta", (grid.n_points, grid.n_params), "f8")
        t_true = _create_dataset(g, "t_true", (grid.n_points,), "f8")
        for start in range(0, grid.n_points, _BLOCK_ROWS):
            stop = min(start + _BLOCK_ROWS, grid.n_points)
            th, tt = grid.points(slice(start, stop))
            theta[start:stop] = th
            t_true[start:stop] = tt
        theta.attrs["names"] = list(grid.param_names)
        theta.attrs["units"] = list(grid.param_units)
        theta.attrs["family"] = family
        theta.attrs["options"] = json.dumps(dict(options), sort_keys=True)
        axes = g.create_group("axes")
        for name, axis in zip(grid.param_names, grid.param_axes):
            axes.create_dataset(name, data=np.asarray(axis, dtype=np.float64))
        axes.create_dataset("t_true", data=np.asarray(grid.t_true_axis, dtype=np.float64))
        g.create_dataset("fit_tgrid", data=np.asarray(fit_tgrid, dtype=np.float64))
        _create_results(f, grid.n_points, shape)
        if offgrid_points > 0:
            _create_offgrid(f, offgrid_points, grid.n_params)
        _write_meta(f, meta, GRID_KIND)


def create_shard_file(
    path: Path,
    chunks: Sequence[tuple[int, int]],
    shape: ResultShape,
    meta: Mapping[str, Any],
    index: int,
    count: int,
) -> None:
    """Write an empty shard holding the rows of ``chunks`` (global [start, stop)) atomically.

    Parameters
    ----------
    path : Path
        Where (usually :func:`shard_path`); replaced only at the final rename.
    chunks : sequence of (int, int)
        (m, 2) global [start, stop) point ranges the shard holds, in order; the shard has
        one result row per point of them.
    shape : ResultShape
        Realisations and curve length of the result datasets.
    meta : mapping
        ``/meta`` attributes (str, int or float values).
    index : int
        0-based shard index (stored in ``/shard``).
    count : int
        Number of shards (stored in ``/shard``).

    Raises
    ------
    TypeError
        When a ``meta`` value cannot be an HDF5 attribute (nothing is left behind).
    """
    chunks_arr = np.asarray(chunks, dtype=np.int64).reshape(-1, 2)
    rows = int((chunks_arr[:, 1] - chunks_arr[:, 0]).sum())
    with _atomic_create(path) as f:
        g = f.create_group("shard")
        g.create_dataset("chunks", data=chunks_arr)
        g.attrs["index"] = index
        g.attrs["count"] = count
        _create_results(f, rows, shape)
        _write_meta(f, meta, SHARD_KIND)


# --------------------------------------------------------------------------------------------
# inspection (resume, merge)
# --------------------------------------------------------------------------------------------


@dataclass
class FileInfo:
    """What an existing grid or shard file holds, read without loading its results.

    Attributes
    ----------
    path : Path
        The file.
    kind : str
        ``GRID_KIND`` or ``SHARD_KIND``.
    meta : dict
        The ``/meta`` attributes (provenance, ``fingerprint``, ``n_points``, ...).
    n_points : int
        Points of the whole grid.
    done : numpy.ndarray
        (n_points,) bool over the GLOBAL grid (False outside a shard's chunks).
    chunks : numpy.ndarray or None
        Shards: (m, 2) int64 global [start, stop) ranges held; None for a grid file.
    shard : tuple of (int, int) or None
        Shards: (index, count); None for a grid file.
    """

    path: Path
    kind: str
    meta: dict[str, Any]
    n_points: int
    done: np.ndarray  #: (n_points,) bool over the GLOBAL grid (False outside a shard's chunks)
    chunks: np.ndarray | None = None  #: shards: (m, 2) global [start, stop)
    shard: tuple[int, int] | None = None  #: shards: (index, count)

    @property
    def fingerprint(self) -> str:
        """The simulation fingerprint stored in ``/meta`` ('' when absent)."""
        return str(self.meta.get("fingerprint", ""))

    @property
    def n_done(self) -> int:
        """Number of points done."""
        return int(self.done.sum())


def _attrs(obj: h5py.HLObject) -> dict[str, Any]:
    out = {}
    for key, value in obj.attrs.items():
        if isinstance(value, bytes):
            value = value.decode()
        elif isinstance(value, np.ndarray):
            value = [v.decode() if isinstance(v, bytes) else v for v in value.tolist()]
        elif isinstance(value, np.generic):
            value = value.item()
        out[key] = value
    return out


def _open_read(path: Path, what: str) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise UserError(f"{what} not found", str(path))
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise UserError(
            f"not a readable HDF5 file ({_short(exc)}); delete it or rerun with --overwrite",
            str(path),
        ) from None


def _short(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__


def _check_kind(f: h5py.File, path: Path, kinds: tuple[str, ...]) -> dict[str, Any]:
    meta = _attrs(f["meta"]) if isinstance(f.get("meta"), h5py.Group) else {}
    if meta.get("kind") not in kinds:
        raise UserError(
            "not an xrmodifier grid file (no /meta kind attribute); "
            "move it away or rerun with --overwrite",
            str(path),
        )
    if int(meta.get("layout_version", 0)) > LAYOUT_VERSION:
        raise UserError(
            f"written with layout version {meta['layout_version']}, newer than this package "
            f"reads ({LAYOUT_VERSION}): upgrade xrmodifier",
            str(path),
        )
    return meta


def inspect_file(path: Path) -> FileInfo:
    """Read kind, provenance and the done mask of a grid or shard file.

    Parameters
    ----------
    path : Path
        A ``grid.h5`` or a shard file.

    Returns
    -------
    FileInfo
        The file's kind, ``/meta`` and done mask over the global grid (shards: also their
        chunks and (index, count)).

    Raises
    ------
    UserError
        When the file is missing, not readable HDF5, not an xrmodifier grid or shard file,
        written by a newer layout version, or damaged (datasets missing).
    """
    path = Path(path)
    with _open_read(path, "grid file") as f:
        meta = _check_kind(f, path, (GRID_KIND, SHARD_KIND))
        try:
            n_points = int(meta["n_points"])
            local_done = f["results/done"][()]
            if meta["kind"] == GRID_KIND:
                if local_done.shape != (n_points,):
                    raise KeyError("results/done")
                return FileInfo(path, GRID_KIND, meta, n_points, local_done.astype(bool))
            chunks = f["shard/chunks"][()].reshape(-1, 2)
            shard = (int(f["shard"].attrs["index"]), int(f["shard"].attrs["count"]))
        except KeyError:
            raise UserError(
                "damaged grid file (datasets missing); delete it or rerun with --overwrite",
                str(path),
            ) from None
    done = np.zeros(n_points, dtype=bool)
    for (a, b), off in zip(chunks, _offsets(chunks)):
        done[a:b] = local_done[off : off + (b - a)]
    return FileInfo(path, SHARD_KIND, meta, n_points, done, chunks=chunks, shard=shard)


def _offsets(chunks: np.ndarray) -> np.ndarray:
    lengths = chunks[:, 1] - chunks[:, 0]
    return np.concatenate(([0], np.cumsum(lengths)[:-1])).astype(np.int64)


def describe_difference(stored: str, current: str, limit: int = 3) -> str:
    """Describe which keys differ between two ``simulation_summary()`` JSON texts.

    Parameters
    ----------
    stored : str
        The summary stored in a file's ``/meta``.
    current : str
        The summary of the current configuration.
    limit : int
        Most keys to name; the rest are counted (``and N more``).

    Returns
    -------
    str
        ``key: old -> new`` parts (dotted keys, values shortened to 40 characters) joined
        by ``; ``; '' when either text is not JSON.
    """
    try:
        old, new = _flatten(json.loads(stored)), _flatten(json.loads(current))
    except (TypeError, ValueError):
        return ""
    keys = sorted(k for k in old.keys() | new.keys() if old.get(k, "-") != new.get(k, "-"))
    parts = [f"{k}: {_brief(old.get(k, '-'))} -> {_brief(new.get(k, '-'))}" for k in keys[:limit]]
    if len(keys) > limit:
        parts.append(f"and {len(keys) - limit} more")
    return "; ".join(parts)


def _flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: obj}


def _brief(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 40 else text[:37] + "..."


# --------------------------------------------------------------------------------------------
# writing rows
# --------------------------------------------------------------------------------------------


def _write_rows(ds: h5py.Dataset, start: int, values: np.ndarray) -> None:
    """Write ``values`` (n, ...) into rows [start, start + n) of ``ds``, of its own dtype.

    The HDF5 calls h5py's ``ds[a:b] = values`` makes, without its selection machinery
    (~0.1 ms per call, ten calls per chunk: 3-4% of a fast response's run).
    """
    values = np.ascontiguousarray(values)
    file_space = ds.id.get_space()
    file_space.select_hyperslab((start,) + (0,) * (values.ndim - 1), values.shape)
    ds.id.write(h5py.h5s.create_simple(values.shape), file_space, values)


class ResultWriter:
    """Writes results of grid points into an open grid or shard file, then marks them done.

    Opened serially, or by every rank of ``comm`` with the ``mpio`` driver (a collective open;
    every write after it is independent, so ranks never wait for each other).

    Parameters
    ----------
    path : Path
        An existing grid or shard file (made by :func:`create_grid_file` or
        :func:`create_shard_file`), opened ``r+``.
    comm : mpi4py.MPI.Comm or None
        None: open serially (a flush after each write); otherwise the communicator of the
        ranks opening the file together with the ``mpio`` driver.
    """

    def __init__(self, path: Path, comm: Any = None) -> None:
        self.path = Path(path)
        self.parallel = comm is not None
        if self.parallel:
            self.file = h5py.File(self.path, "r+", driver="mpio", comm=comm)
        else:
            self.file = h5py.File(self.path, "r+")
        meta = _attrs(self.file["meta"])
        self.n_points = int(meta["n_points"])
        if meta["kind"] == SHARD_KIND:
            chunks = self.file["shard/chunks"][()].reshape(-1, 2)
            self._starts = chunks[:, 0]
            self._stops = chunks[:, 1]
            self._offsets = _offsets(chunks)
        else:
            self._starts = np.array([0], dtype=np.int64)
            self._stops = np.array([self.n_points], dtype=np.int64)
            self._offsets = np.array([0], dtype=np.int64)
        self.results = self.file["results"]
        self.names = tuple(n for n in _RESULT_DATASETS if n in self.results)
        # the datasets opened once: opening one by name costs ~0.1 ms, ten per chunk
        self._datasets = {n: self.results[n] for n in (*self.names, "done")}
        self._dtypes = {n: ds.dtype for n, ds in self._datasets.items()}

    def _local(self, start: int, stop: int) -> int:
        j = int(np.searchsorted(self._starts, start, side="right")) - 1
        if j < 0 or stop > self._stops[j]:
            raise ValueError(f"points [{start}, {stop}) are not held by {self.path}")
        return int(self._offsets[j] + start - self._starts[j])

    def write(self, index: np.ndarray, arrays: Mapping[str, np.ndarray]) -> None:
        """Store rows for the sorted global point indices ``index``, then mark them done.

        ``arrays`` maps every result dataset name to an array with ``len(index)`` rows
        (converted to the stored dtype here).

        Parameters
        ----------
        index : numpy.ndarray
            (n,) sorted global point indices, all held by this file.
        arrays : mapping of str to numpy.ndarray
            Every result dataset name of the file (``names``) to its n rows, shaped as the
            layout says (e.g. ``t_fit_orig`` (n, n_real), keV; ``counts`` (n, n_real),
            counts).

        Raises
        ------
        ValueError
            When a run of ``index`` is not held by this file (a shard's chunks).
        KeyError
            When ``arrays`` lacks one of the file's result datasets.
        """
        index = np.asarray(index, dtype=np.int64)
        runs = []
        row = 0
        for a, b in contiguous_runs(index):
            runs.append((self._local(a, b), row, b - a))
            row += b - a
        for name in self.names:
            values = np.asarray(arrays[name]).astype(self._dtypes[name], copy=False)
            for lo, r0, n in runs:
                _write_rows(self._datasets[name], lo, values[r0 : r0 + n])
        if not self.parallel:
            self.file.flush()
        for lo, _, n in runs:
            _write_rows(self._datasets["done"], lo, np.ones(n, dtype=bool))
        if not self.parallel:
            self.file.flush()

    def close(self) -> None:
        """Close the file (collective under ``mpio``)."""
        self.file.close()

    def __enter__(self) -> ResultWriter:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def copy_done_rows(source: FileInfo, writer: ResultWriter, block: int = 4096) -> int:
    """Copy the done points of a shard or grid file into ``writer``.

    Streams ``block`` points at a time so memory does not grow with the grid.

    Parameters
    ----------
    source : FileInfo
        The file to copy from (:func:`inspect_file`).
    writer : ResultWriter
        The open destination; its result datasets are copied.
    block : int
        Points read at a time.

    Returns
    -------
    int
        Number of points copied.
    """
    copied = 0
    with h5py.File(source.path, "r") as f:
        results = f["results"]
        if source.chunks is not None:
            spans = list(zip(source.chunks[:, 0], source.chunks[:, 1], _offsets(source.chunks)))
        else:
            spans = [(0, source.n_points, 0)]
        for a, b, off in spans:
            for s in range(int(a), int(b), block):
                e = min(s + block, int(b))
                lo = int(off) + s - int(a)
                done = results["done"][lo : lo + (e - s)]
                if not done.any():
                    continue
                arrays = {name: results[name][lo : lo + (e - s)][done] for name in writer.names}
                writer.write(np.arange(s, e)[done], arrays)
                copied += int(done.sum())
    return copied


# --------------------------------------------------------------------------------------------
# reading for the next stages
# --------------------------------------------------------------------------------------------


@dataclass
class GridData:
    """Everything in ``grid.h5`` as numpy arrays (temperatures in keV).

    Points with ``done`` False hold NaN values and status 0xFF. ``axes`` maps each modifier
    parameter name (family order) and ``"t_true"`` to its grid axis. Curves are None when the
    grid was simulated without them or loaded with ``curves=False``.

    Attributes
    ----------
    path : Path
        The file read.
    theta : numpy.ndarray
        (n_points, d) float64 modifier parameters (units ``param_units``).
    t_true : numpy.ndarray
        (n_points,) float64 true temperatures, keV.
    param_names, param_units : tuple of str
        The d modifier parameter names and units, family order.
    family : str
        The modifier family.
    options : dict
        The family's options.
    axes : dict of str to numpy.ndarray
        Each parameter name and ``"t_true"`` to its (n_k,) float64 grid axis.
    fit_tgrid : numpy.ndarray
        (n_tgrid,) float64 temperatures of the C(T) curves, keV.
    t_fit_orig, t_fit_mod : numpy.ndarray
        (n_points, n_real) float32 fitted temperatures T1 and T1', keV.
    err_orig, err_mod : numpy.ndarray
        (n_points, n_real, 2) float32 -/+ 1 sigma errors of T1 and T1', keV: distances from
        the best fit down to the lower and up to the upper end of the delta-C = 1 interval.
    status : numpy.ndarray
        (n_points, n_real, 2) uint8 fit-status bits of the [original, modified] fits.
    norm : numpy.ndarray
        (n_points,) float64 model normalisation each point was simulated with.
    counts : numpy.ndarray
        (n_points, n_real) float32 noticed counts of each realisation, counts.
    done : numpy.ndarray
        (n_points,) bool, which points are computed.
    curve_orig, curve_mod : numpy.ndarray or None
        (n_points, n_real, n_tgrid) float32 C(T) curves, or None (see above).
    meta : dict
        The ``/meta`` attributes (provenance).
    """

    path: Path
    theta: np.ndarray
    t_true: np.ndarray
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    family: str
    options: dict[str, Any]
    axes: dict[str, np.ndarray]
    fit_tgrid: np.ndarray
    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    err_orig: np.ndarray
    err_mod: np.ndarray
    status: np.ndarray
    norm: np.ndarray
    counts: np.ndarray
    done: np.ndarray
    curve_orig: np.ndarray | None = None
    curve_mod: np.ndarray | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        """Number of grid points."""
        return int(self.t_true.shape[0])

    @property
    def n_real(self) -> int:
        """Realisations per point."""
        return int(self.t_fit_orig.shape[1])

    @property
    def complete(self) -> bool:
        """Whether every point is done."""
        return bool(self.done.all())

    @property
    def shape(self) -> tuple[int, ...]:
        """(n_1, ..., n_d, n_T): the points as a C-ordered array, T_true fastest."""
        return tuple(self.axes[n].size for n in self.param_names) + (self.axes["t_true"].size,)


def load_grid(path: str | Path, *, curves: bool = True, allow_incomplete: bool = False) -> GridData:
    """Read a ``grid.h5`` written by ``xrmodifier simulate`` (or ``merge``).

    Parameters
    ----------
    path : str or Path
        The ``grid.h5``.
    curves : bool
        False skips the (large) C(T) curves (``curve_orig``/``curve_mod`` are then None).
    allow_incomplete : bool
        True accepts a grid with points not done (they read as NaN, status 0xFF).

    Returns
    -------
    GridData
        Everything in the file as numpy arrays (temperatures in keV).

    Raises
    ------
    UserError
        When the file is missing, not readable HDF5, not a grid file, written by a newer
        layout, damaged (datasets missing), or (unless ``allow_incomplete``) has points not
        done.
    """
    path = Path(path)
    if not path.exists():
        raise UserError("grid file not found: run `xrmodifier simulate CONFIG` first", str(path))
    with _open_read(path, "grid file") as f:
        meta = _check_kind(f, path, (GRID_KIND,))
        try:
            theta_ds = f["grid/theta"]
            names = tuple(str(n) for n in _attrs(theta_ds)["names"])
            units = tuple(str(u) for u in _attrs(theta_ds)["units"])
            done = f["results/done"][()].astype(bool)
            if not allow_incomplete and not done.all():
                raise UserError(
                    f"{int((~done).sum())} of {done.size} grid points are not done: rerun "
                    "`xrmodifier simulate CONFIG` to finish them (after Slurm array shards: "
                    "`xrmodifier merge CONFIG`)",
                    str(path),
                )
            res = f["results"]
            with_curves = curves and "curve_orig" in res
            data = GridData(
                path=path,
                theta=theta_ds[()],
                t_true=f["grid/t_true"][()],
                param_names=names,
                param_units=units,
                family=str(_attrs(theta_ds)["family"]),
                options=json.loads(_attrs(theta_ds)["options"]),
                axes={n: f[f"grid/axes/{n}"][()] for n in (*names, "t_true")},
                fit_tgrid=f["grid/fit_tgrid"][()],
                t_fit_orig=res["t_fit_orig"][()],
                t_fit_mod=res["t_fit_mod"][()],
                err_orig=res["err_orig"][()],
                err_mod=res["err_mod"][()],
                status=res["status"][()],
                norm=res["norm"][()],
                counts=res["counts"][()],
                done=done,
                curve_orig=res["curve_orig"][()] if with_curves else None,
                curve_mod=res["curve_mod"][()] if with_curves else None,
                meta=meta,
            )
        except KeyError:
            raise UserError(
                "damaged grid file (datasets missing): rerun `xrmodifier simulate CONFIG "
                "--overwrite`",
                str(path),
            ) from None
    return data


# --------------------------------------------------------------------------------------------
# the off-grid check points
# --------------------------------------------------------------------------------------------

#: /offgrid datasets: name -> (shape after n, dtype, fill)
_OFFGRID_DATASETS: dict[str, tuple[tuple[int, ...] | None, str, Any]] = {
    "theta": (None, "f8", np.nan),  # (n, d)
    "t_true": ((), "f8", np.nan),
    "t_fit_orig": ((), "f8", np.nan),
    "t_fit_mod": ((), "f8", np.nan),
    "status": ((2,), "u1", STATUS_NOT_DONE),
}


@dataclass
class OffgridPoints:
    """Noise-free (asimov) fits at quasi-random points between the grid nodes.

    Parameters
    ----------
    theta : numpy.ndarray
        (n, d) modifier parameters (grid units).
    t_true : numpy.ndarray
        (n,) true temperatures, keV.
    t_fit_orig, t_fit_mod : numpy.ndarray
        (n,) T1 and T1' of the asimov spectrum, keV (NaN where the fit failed).
    status : numpy.ndarray
        (n, 2) uint8 fit-status bits of the [original, modified] fits.
    meta : dict
        The group's attributes as read (``mode``, ``realisations``, ``stream``, ``design``);
        backend, its version and the seed are the grid's ``/meta``.
    """

    theta: np.ndarray
    t_true: np.ndarray
    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    status: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_points(self) -> int:
        """Number of check points."""
        return int(self.t_true.shape[0])


def _create_offgrid(f: h5py.File, n: int, d: int) -> h5py.Group:
    g = f.create_group("offgrid")
    for name, (tail, dtype, fill) in _OFFGRID_DATASETS.items():
        shape = (n, d) if tail is None else (n, *tail)
        _create_dataset(g, name, shape, dtype, fill)
    _create_dataset(g, "done", (1,), "bool", False)
    g.attrs.update(
        mode="asimov",
        realisations=1,
        stream=OFFGRID_STREAM,
        design="Latin hypercube strictly inside the grid (config.grid.offgrid_design)",
    )
    return g


def _offgrid_fits(f: h5py.File, n: int, d: int) -> bool:
    """Check whether ``f`` has an ``/offgrid`` group allocated for n points of d parameters."""
    g = f.get("offgrid")
    if not isinstance(g, h5py.Group) or "done" not in g:
        return False
    for name, (tail, _, _) in _OFFGRID_DATASETS.items():
        shape = (n, d) if tail is None else (n, *tail)
        if name not in g or g[name].shape != shape:
            return False
    return True


def _fill_offgrid(g: h5py.Group, points: OffgridPoints) -> None:
    """Write every row of ``points`` raw into ``g`` (``done`` is the caller's)."""
    for name in _OFFGRID_DATASETS:
        ds = g[name]
        ds[...] = np.asarray(getattr(points, name)).astype(ds.dtype, copy=False)


def write_offgrid(path: str | Path, points: OffgridPoints) -> None:
    """Store the off-grid check points in ``grid.h5``, crash-safely.

    Into the ``/offgrid`` group allocated at creation when it has the right size (raw writes,
    ``done`` last); otherwise into a copy of the file that is renamed into place, so a kill
    at any moment leaves the grid readable.

    Parameters
    ----------
    path : str or Path
        An existing ``grid.h5``.
    points : OffgridPoints
        The points (``points.meta`` is not stored: the group's attributes are fixed).

    Raises
    ------
    UserError
        When ``path`` is missing or not a grid file.
    """
    path = Path(path)
    n, d = points.n_points, int(np.asarray(points.theta).reshape(points.n_points, -1).shape[1])
    with _open_read(path, "grid file") as f:
        _check_kind(f, path, (GRID_KIND,))
        in_place = _offgrid_fits(f, n, d)
    if in_place:
        with h5py.File(path, "r+") as f:
            g = f["offgrid"]
            g["done"][0] = False
            f.flush()
            _fill_offgrid(g, points)
            f.flush()
            g["done"][0] = True
        return
    tmp = partial_path(path)
    try:
        shutil.copyfile(path, tmp)
        with h5py.File(tmp, "r+") as f:
            if "offgrid" in f:
                del f["offgrid"]
            g = _create_offgrid(f, n, d)
            _fill_offgrid(g, points)
            g["done"][0] = True
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def load_offgrid(path: str | Path) -> OffgridPoints | None:
    """Return the off-grid check points of ``grid.h5``, or None when it holds none (yet).

    Parameters
    ----------
    path : str or Path
        A ``grid.h5``.

    Returns
    -------
    OffgridPoints or None
        None when the file has no ``/offgrid`` group (made before ``simulate`` produced
        them) or the group was never completed.

    Raises
    ------
    UserError
        When the file is missing, unreadable or not a grid file, or its ``/offgrid`` group
        is damaged.
    """
    path = Path(path)
    with _open_read(path, "grid file") as f:
        _check_kind(f, path, (GRID_KIND,))
        g = f.get("offgrid")
        if not isinstance(g, h5py.Group):
            return None
        try:
            if not bool(g["done"][0]):
                return None
            arrays = {name: g[name][()] for name in _OFFGRID_DATASETS}
        except KeyError:
            raise UserError(
                "damaged /offgrid group: rerun `xrmodifier simulate CONFIG` to rewrite it",
                str(path),
            ) from None
        meta = _attrs(g)
    return OffgridPoints(**arrays, meta=meta)
