"""The Cartesian (theta, T_true) grid: its axes, point indexing and per-point random streams.

Points are numbered in C order over (theta_1, ..., theta_d, T_true): T_true varies fastest,
so a contiguous block of points shares theta and a backend can reuse per-theta work.
Point ``k`` always draws from the stream seeded by ``(seed, stream, k)``, whatever the rank
layout.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from xrmodifier_hpc.config.schema import Config, make_modifier

#: stream domains: grid points and mock observations never share a random stream
GRID_STREAM = 0
MOCK_STREAM = 1
OFFGRID_STREAM = 2


@dataclass(frozen=True)
class Grid:
    """Modifier parameter axes (in family order) times the true-temperature axis (keV).

    Attributes
    ----------
    param_names : tuple of str
        The modifier family's parameter names, in order (``d`` of them).
    param_units : tuple of str
        Their units (``"keV"`` or ``""``).
    param_axes : tuple of numpy.ndarray
        Grid values of each parameter, shapes ``(n_1,)``, ..., ``(n_d,)``.
    t_true_axis : numpy.ndarray
        True temperatures, shape ``(n_T,)`` (keV).
    """

    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    param_axes: tuple[np.ndarray, ...]
    t_true_axis: np.ndarray

    @classmethod
    def from_config(cls, cfg: Config) -> Grid:
        """Build the grid of ``[modifier.grid]`` and ``[temperatures] t_true``.

        Parameters
        ----------
        cfg : Config
            The loaded config.

        Returns
        -------
        Grid
            Axes in the family's parameter order.
        """
        family = make_modifier(cfg.modifier.family, cfg.modifier.options)
        axes = tuple(cfg.modifier.grid[name].array for name in family.param_names)
        return cls(family.param_names, family.param_units, axes, cfg.temperatures.t_true.array)

    @property
    def shape(self) -> tuple[int, ...]:
        """(n_1, ..., n_d, n_T): the grid as an array of points."""
        return tuple(a.size for a in self.param_axes) + (self.t_true_axis.size,)

    @property
    def n_points(self) -> int:
        """Number of grid points ``n_1 * ... * n_d * n_T``."""
        return int(np.prod(self.shape))

    @property
    def n_theta(self) -> int:
        """Number of distinct theta (points per T_true)."""
        return int(np.prod(self.shape[:-1]))

    @property
    def n_params(self) -> int:
        """Number of modifier parameters ``d``."""
        return len(self.param_names)

    @property
    def bounds(self) -> np.ndarray:
        """(d + 1, 2) lower/upper bounds of each parameter, then of T_true (keV)."""
        return np.array([[a.min(), a.max()] for a in (*self.param_axes, self.t_true_axis)])

    @property
    def log_axes(self) -> tuple[bool, ...]:
        """Per parameter, then T_true (always True): whether the axis is used in log."""
        return tuple(is_geometric(a) for a in self.param_axes) + (True,)

    def points(self, index: np.ndarray | Sequence[int] | slice) -> tuple[np.ndarray, np.ndarray]:
        """Return theta (n, d) and t_true (n,) of the points ``index``.

        Parameters
        ----------
        index : numpy.ndarray, sequence of int or slice
            Point indices (C order, T_true fastest), shape ``(n,)``, or a slice of them.

        Returns
        -------
        theta : numpy.ndarray
            Modifier parameters, shape ``(n, d)``.
        t_true : numpy.ndarray
            True temperatures, shape ``(n,)`` (keV).

        Raises
        ------
        IndexError
            An index is negative or not below :attr:`n_points`.
        """
        if isinstance(index, slice):
            index = np.arange(*index.indices(self.n_points))
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.n_points):
            raise IndexError("grid point index out of range")
        multi = np.unravel_index(index, self.shape)
        theta = np.stack([ax[i] for ax, i in zip(self.param_axes, multi[:-1])], axis=-1)
        return theta.reshape(index.size, self.n_params), self.t_true_axis[multi[-1]]

    def all_points(self) -> tuple[np.ndarray, np.ndarray]:
        """Return theta and t_true of every point, in index order.

        Returns
        -------
        theta : numpy.ndarray
            Shape ``(n_points, d)``.
        t_true : numpy.ndarray
            Shape ``(n_points,)`` (keV).
        """
        return self.points(slice(None))


def point_rng(seed: int, index: int, stream: int = GRID_STREAM) -> np.random.Generator:
    """Return the random stream of point ``index``.

    A fresh PCG64 seeded by ``(seed, stream, index)``.

    Parameters
    ----------
    seed : int
        The global seed.
    index : int
        The point's index.
    stream : int, optional
        The stream domain: ``GRID_STREAM`` (default), ``MOCK_STREAM`` or ``OFFGRID_STREAM``.

    Returns
    -------
    numpy.random.Generator
        A new generator; the same arguments always give the same draws.
    """
    return np.random.default_rng([int(seed), int(stream), int(index)])


def chunk_ranges(n_points: int, chunk_size: int) -> list[tuple[int, int]]:
    """Return contiguous [start, stop) chunks covering 0..n_points.

    Parameters
    ----------
    n_points : int
        Number of points.
    chunk_size : int
        Points per chunk (the last one may hold fewer).

    Returns
    -------
    list of tuple of int
        ``(start, stop)`` pairs in increasing order.
    """
    return [(s, min(s + chunk_size, n_points)) for s in range(0, n_points, chunk_size)]


#: runs of chunks each rank takes (:func:`deal_chunks`)
RUNS_PER_RANK = 8


def deal_chunks(
    chunks: Sequence[tuple[int, int]], rank: int, size: int, runs: int = RUNS_PER_RANK
) -> list[tuple[int, int]]:
    """Return the chunks rank ``rank`` of ``size`` evaluates: a few long runs of ``chunks``.

    Each rank gets ``len(chunks) // size`` chunks, one more for the first
    ``len(chunks) % size`` ranks, in ``runs`` runs of consecutive chunks (fewer where there are
    fewer chunks), the ranks' runs taking turns along the grid: run 1 of rank 0, run 1 of
    rank 1, ..., run 2 of rank 0, ...

    Long runs rather than chunks dealt one by one: neighbouring chunks share their modifier
    parameters (T_true runs fastest on the grid), so a rank that holds both builds their
    modified response once; dealt chunk by chunk, two ranks built every response that a
    chunk boundary splits (EPIC-pn grid of ``benchmarks/bench_command.py``: 1,021 responses
    over two ranks against 729 on one). Several runs rather than one: the cost of a point
    drifts along the grid (the modified responses of some (mu, sigma) reach more channels),
    and one half of the grid took 12% longer than the other there; turns of ``runs`` runs
    divide that imbalance by about ``runs``.

    Parameters
    ----------
    chunks : sequence of tuple of int
        ``(start, stop)`` pairs in increasing order (e.g. :func:`pending_chunks`).
    rank : int
        This rank, ``0 <= rank < size``.
    size : int
        Number of ranks.
    runs : int
        Runs per rank, at least 1.

    Returns
    -------
    list of tuple of int
        This rank's chunks, in increasing order; every chunk goes to exactly one rank.
    """
    n = len(chunks)
    turns = max(1, min(runs, n // size))
    counts = [n // size + (1 if r < n % size else 0) for r in range(size)]
    out: list[tuple[int, int]] = []
    pos = 0
    for turn in range(turns):
        for r in range(size):
            take = counts[r] // turns + (1 if turn < counts[r] % turns else 0)
            if r == rank:
                out.extend(chunks[pos : pos + take])
            pos += take
    return out


def pending_chunks(chunks: Sequence[tuple[int, int]], done: np.ndarray) -> list[tuple[int, int]]:
    """Return the chunks of ``chunks`` that still hold a point not marked in ``done``.

    Parameters
    ----------
    chunks : sequence of tuple of int
        ``(start, stop)`` pairs.
    done : numpy.ndarray
        Shape ``(n_points,)``, bool: points already evaluated.

    Returns
    -------
    list of tuple of int
        The chunks with at least one point not done, in the given order.
    """
    return [(a, b) for a, b in chunks if not bool(done[a:b].all())]


def contiguous_runs(index: np.ndarray) -> list[tuple[int, int]]:
    """Split sorted distinct point indices into maximal [start, stop) runs of consecutive ones.

    Parameters
    ----------
    index : numpy.ndarray
        Sorted distinct point indices, shape ``(n,)``.

    Returns
    -------
    list of tuple of int
        ``(start, stop)`` pairs; empty for no indices.
    """
    index = np.asarray(index, dtype=np.int64)
    if index.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(index) != 1) + 1
    starts = np.concatenate(([0], breaks))
    stops = np.concatenate((breaks, [index.size]))
    return [(int(index[s]), int(index[e - 1]) + 1) for s, e in zip(starts, stops)]


def is_geometric(axis: np.ndarray) -> bool:
    """Whether a grid axis is the config's ``logspace``: positive, evenly spaced in log.

    Such a parameter is normalised, interpolated and sampled off the grid in log.

    Parameters
    ----------
    axis : numpy.ndarray
        (n,) axis values in any order (physical units).

    Returns
    -------
    bool
        True for at least 3 positive values evenly spaced in log but not linearly.
    """
    axis = np.sort(np.asarray(axis, np.float64))
    if axis.size < 3 or axis[0] <= 0:
        return False
    dlog, dlin = np.diff(np.log(axis)), np.diff(axis)
    return bool(np.allclose(dlog, dlog[0], rtol=1e-6) and not np.allclose(dlin, dlin[0], rtol=1e-6))


def latin_hypercube(n: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    """Draw a Latin hypercube of ``n`` points in the unit cube [0, 1)^dim.

    Parameters
    ----------
    n : int
        Number of points (>= 1).
    dim : int
        Number of axes.
    rng : numpy.random.Generator
        The random stream (one permutation and n uniforms per axis).

    Returns
    -------
    numpy.ndarray
        (n, dim): on every axis exactly one point in each stratum [k/n, (k+1)/n), placed
        uniformly inside it (McKay, Beckman & Conover 1979).
    """
    strata = np.stack([rng.permutation(n) for _ in range(dim)], axis=1)
    return (strata + rng.random((n, dim))) / n


def offgrid_design(
    bounds: np.ndarray,
    log_axes: Sequence[bool],
    n: int,
    seed: int,
    shared: Sequence[bool] | None = None,
    group: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw the off-grid check points: ``n`` Latin-hypercube points strictly inside the grid.

    Uniform in the emulator's input coordinates (log for T_true and geometric axes), drawn
    from the ``OFFGRID_STREAM`` of ``seed`` so they never share a stream with grid points or
    mock observations, and the same for the same arguments. With ``shared`` axes and
    ``group > 1``, consecutive points come in groups of ``group`` that share their values on
    those axes (a second hypercube over them, one point per group), the other axes still one
    point each: the modifier's non-linear parameters (the Gaussian's mu and sigma), so a
    backend folds one modified response per group (``Modifier.linear_form``).

    Parameters
    ----------
    bounds : numpy.ndarray
        (d + 1, 2) lower/upper bound of each modifier parameter, then of T_true (keV)
        (:attr:`Grid.bounds`).
    log_axes : sequence of bool
        (d + 1,) which axes are sampled in log (:attr:`Grid.log_axes`).
    n : int
        Number of points (>= 0).
    seed : int
        The simulation seed (``[simulation] seed``).
    shared : sequence of bool, optional
        (d + 1,) the axes a group shares (never T_true, the last); None: none.
    group : int
        Points per group (1: no groups).

    Returns
    -------
    theta : numpy.ndarray
        (n, d) modifier parameters, in the units of the grid axes.
    t_true : numpy.ndarray
        (n,) true temperatures, keV.

    Notes
    -----
    A Latin hypercube (McKay, Beckman & Conover 1979, Technometrics 21, 239): on each axis
    the n points fall one in each of n equal strata, the strata of the axes matched by
    independent random permutations (:func:`latin_hypercube`). Not ``scipy.stats.qmc``:
    importing ``scipy.stats`` costs every ``simulate`` 0.65-0.9 s per rank (measured), the
    hypercube is a permutation per axis. The unit-cube points are clipped to
    [1e-6, 1 - 1e-6] so that none lies on the grid's edge.
    """
    bounds = np.asarray(bounds, np.float64)
    dim = bounds.shape[0]
    if n == 0:
        return np.empty((0, dim - 1)), np.empty(0)
    u = latin_hypercube(n, dim, np.random.default_rng([seed, OFFGRID_STREAM]))
    common = np.flatnonzero(np.asarray(shared, bool)) if shared is not None else np.zeros(0)
    if group > 1 and common.size:
        n_groups = math.ceil(n / group)
        rng = np.random.default_rng([seed, OFFGRID_STREAM, 1])
        shared_u = latin_hypercube(n_groups, common.size, rng)
        u[:, common] = shared_u[np.arange(n) // group]
    u = np.clip(u, 1e-6, 1 - 1e-6)
    mask = np.asarray(log_axes, bool)
    lo, hi = bounds[:, 0].copy(), bounds[:, 1].copy()
    lo[mask], hi[mask] = np.log(lo[mask]), np.log(hi[mask])
    x = lo + u * (hi - lo)
    x[:, mask] = np.exp(x[:, mask])
    x = np.clip(x, bounds[:, 0], bounds[:, 1])
    return x[:, :-1], x[:, -1]
