"""The (theta, T_true) grid: point order, chunking over ranks and shards, random streams."""

from __future__ import annotations

import numpy as np
import pytest

from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import (
    GRID_STREAM,
    MOCK_STREAM,
    Grid,
    chunk_ranges,
    contiguous_runs,
    deal_chunks,
    latin_hypercube,
    offgrid_design,
    pending_chunks,
    point_rng,
)


@pytest.fixture
def grid() -> Grid:
    return Grid(
        ("mu", "sigma", "A"),
        ("keV", "keV", ""),
        (np.array([1.0, 2.0, 3.0]), np.array([0.2, 0.5]), np.array([-0.1, 0.1])),
        np.array([2.0, 4.0, 8.0, 16.0]),
    )


def test_points_are_c_ordered_with_t_true_fastest(grid):
    assert grid.shape == (3, 2, 2, 4) and grid.n_points == 48 and grid.n_theta == 12
    theta, t_true = grid.all_points()
    assert theta.shape == (48, 3) and t_true.shape == (48,)
    np.testing.assert_array_equal(t_true[:8], [2, 4, 8, 16, 2, 4, 8, 16])
    np.testing.assert_array_equal(theta[:4], [[1.0, 0.2, -0.1]] * 4)
    np.testing.assert_array_equal(theta[4], [1.0, 0.2, 0.1])
    np.testing.assert_array_equal(theta[-1], [3.0, 0.5, 0.1])
    # every (theta, T) combination exactly once
    rows = {(*th, t) for th, t in zip(theta.tolist(), t_true.tolist())}
    assert len(rows) == 48
    # a point's coordinates do not depend on how it is asked for
    th, tt = grid.points([47, 5, 0])
    np.testing.assert_array_equal(th, theta[[47, 5, 0]])
    np.testing.assert_array_equal(tt, t_true[[47, 5, 0]])
    th, tt = grid.points(slice(10, 14))
    np.testing.assert_array_equal(th, theta[10:14])
    with pytest.raises(IndexError):
        grid.points([48])
    np.testing.assert_array_equal(grid.bounds, [[1, 3], [0.2, 0.5], [-0.1, 0.1], [2, 16]])


def test_grid_from_small_config(small_config):
    grid = Grid.from_config(load_config(small_config))
    assert grid.param_names == ("mu", "sigma", "A")
    assert grid.shape == (3, 2, 3, 4) and grid.n_points == 72


@pytest.mark.parametrize("n, chunk", [(72, 16), (10, 3), (5, 10), (1, 1)])
def test_chunks_cover_every_point_once_and_ranks_partition_them(n, chunk):
    chunks = chunk_ranges(n, chunk)
    covered = np.concatenate([np.arange(a, b) for a, b in chunks])
    np.testing.assert_array_equal(covered, np.arange(n))
    assert all(0 < b - a <= chunk for a, b in chunks)
    for size in (1, 2, 3, 5):
        dealt = [deal_chunks(chunks, r, size) for r in range(size)]
        assert sorted(c for d in dealt for c in d) == chunks
        assert all(d == sorted(d) for d in dealt)
        assert max(map(len, dealt)) - min(map(len, dealt)) <= 1


def _runs(dealt: list[tuple[int, int]]) -> int:
    return sum(1 for i, c in enumerate(dealt) if i == 0 or dealt[i - 1][1] != c[0])


@pytest.mark.parametrize("n_chunks, size", [(1000, 2), (1000, 3), (37, 2), (16, 4), (3, 2)])
def test_ranks_take_a_few_long_runs_in_turns(n_chunks, size):
    chunks = chunk_ranges(n_chunks * 10, 10)
    dealt = [deal_chunks(chunks, r, size, runs=8) for r in range(size)]
    turns = max(1, min(8, n_chunks // size))
    # at most `turns` runs each (neighbouring chunks stay together) ...
    assert all(_runs(d) <= turns for d in dealt)
    # ... taking turns along the grid: every rank's k-th run ends before any (k+1)-th starts
    if n_chunks >= 8 * size:
        starts = []
        for d in dealt:
            assert _runs(d) == 8
            starts.append([c[0] for i, c in enumerate(d) if i == 0 or d[i - 1][1] != c[0]])
        for k in range(7):
            assert max(s[k] for s in starts) < min(s[k + 1] for s in starts)
    # one run each when asked
    one = [deal_chunks(chunks, r, size, runs=1) for r in range(size)]
    assert [c for d in one for c in d] == chunks


def test_pending_chunks_keep_chunks_with_any_point_not_done():
    chunks = chunk_ranges(10, 4)  # [0,4) [4,8) [8,10)
    done = np.zeros(10, dtype=bool)
    assert pending_chunks(chunks, done) == chunks
    done[:4] = True
    done[5] = True
    assert pending_chunks(chunks, done) == [(4, 8), (8, 10)]
    done[:] = True
    assert pending_chunks(chunks, done) == []


@pytest.mark.parametrize(
    "index, runs",
    [
        ([], []),
        ([3], [(3, 4)]),
        ([0, 1, 2, 3], [(0, 4)]),
        ([0, 1, 3, 4, 9], [(0, 2), (3, 5), (9, 10)]),
    ],
)
def test_contiguous_runs(index, runs):
    assert contiguous_runs(np.array(index, dtype=np.int64)) == runs


def test_point_streams_depend_only_on_seed_point_and_domain():
    a = point_rng(7, 123).random(5)
    np.testing.assert_array_equal(a, point_rng(7, 123, GRID_STREAM).random(5))
    assert not np.array_equal(a, point_rng(7, 124).random(5))
    assert not np.array_equal(a, point_rng(8, 123).random(5))
    assert not np.array_equal(a, point_rng(7, 123, MOCK_STREAM).random(5))


def test_latin_hypercube_puts_one_point_in_each_stratum_of_every_axis():
    u = latin_hypercube(37, 4, np.random.default_rng(2))
    assert u.shape == (37, 4) and np.all((u >= 0) & (u < 1))
    for axis in range(4):
        assert sorted(np.floor(u[:, axis] * 37).astype(int).tolist()) == list(range(37))
    again = latin_hypercube(37, 4, np.random.default_rng(2))
    assert np.array_equal(u, again)


def test_offgrid_design_is_inside_the_grid_in_groups_sharing_the_key_axes():
    bounds = np.array([[0.8, 3.0], [0.15, 0.8], [-0.3, 0.3], [1.0, 12.0]])
    log_axes = [False, True, False, True]
    theta, t_true = offgrid_design(bounds, log_axes, 50, 7, [True, True, False, False], 8)
    assert theta.shape == (50, 3) and t_true.shape == (50,)
    assert np.all((theta > bounds[:3, 0]) & (theta < bounds[:3, 1]))
    assert np.all((t_true > 1.0) & (t_true < 12.0))
    groups = np.arange(50) // 8
    for g in range(groups.max() + 1):
        members = theta[groups == g]
        assert np.all(members[:, :2] == members[0, :2])  # mu, sigma shared
    assert np.unique(theta[:, 2]).size == 50 and np.unique(t_true).size == 50
    # log axes are uniform in log: T_true's strata are equal in ln T
    strata = np.floor((np.log(t_true) - np.log(1.0)) / np.log(12.0) * 50).astype(int)
    assert sorted(strata.tolist()) == list(range(50))
    again = offgrid_design(bounds, log_axes, 50, 7, [True, True, False, False], 8)
    assert np.array_equal(theta, again[0]) and np.array_equal(t_true, again[1])
