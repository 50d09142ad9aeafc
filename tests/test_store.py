"""store: the grid.h5 / shard layout, crash-safe writing, inspection, merge copies, load_grid."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import store

N_REAL, N_TGRID = 2, 8
META = {
    "fingerprint": "abc",
    "simulation": json.dumps({"simulation": {"seed": 1}}),
    "n_points": 12,
    "backend": "test",
    "seed": 1,
}


@pytest.fixture
def grid() -> Grid:
    return Grid(
        ("mu", "sigma", "A"),
        ("keV", "keV", ""),
        (np.array([1.0, 2.0]), np.array([0.3]), np.array([-0.1, 0.1])),
        np.array([2.0, 4.0, 8.0]),
    )


def rows(index: np.ndarray, curves: bool = True) -> dict[str, np.ndarray]:
    """Recognisable values for points ``index`` (value = f(point, realisation))."""
    k = np.asarray(index, dtype=np.float64)[:, None]
    r = np.arange(N_REAL)[None, :]
    t = k + 0.25 * r + 1.0
    out = {
        "t_fit_orig": t,
        "t_fit_mod": t + 0.5,
        "err_orig": np.stack([t * 0.01, t * 0.02], axis=-1),
        "err_mod": np.stack([t, t], -1),
        "status": (np.stack([k + r, k * 0 + r], axis=-1) % 4).astype(np.uint8),
        "norm": k[:, 0] * 1e-3,
        "counts": t * 100,
    }
    if curves:
        c = t[..., None] + np.arange(N_TGRID)
        out.update(curve_orig=c, curve_mod=c * 2)
    return out


def new_grid_file(path, grid, curves=True):
    shape = store.ResultShape(N_REAL, N_TGRID if curves else None)
    store.create_grid_file(
        path, grid, np.geomspace(0.5, 20, N_TGRID), shape, META, "gaussian", {"n": 1}
    )


def test_created_file_has_the_layout_allocated_up_front(tmp_path, grid):
    path = tmp_path / "grid.h5"
    new_grid_file(path, grid)
    assert not store.partial_path(path).exists()
    with h5py.File(path, "r") as f:
        assert f["results/t_fit_orig"].shape == (12, N_REAL)
        assert f["results/curve_mod"].shape == (12, N_REAL, N_TGRID)
        assert f["results/status"].dtype == np.uint8 and f["results/norm"].dtype == np.float64
        for name in (*store.RESULT_NAMES, "done"):
            ds = f[f"results/{name}"]
            # early allocation: writing results later never has to allocate (touch metadata)
            assert ds.id.get_storage_size() == ds.size * ds.dtype.itemsize, name
            assert ds.chunks is None and ds.compression is None, name
        assert f["meta"].attrs["kind"] == store.GRID_KIND
        assert f["meta"].attrs["layout_version"] == store.LAYOUT_VERSION
        assert json.loads(f["grid/theta"].attrs["options"]) == {"n": 1}
    # superblock version 0: newer ones would mark the file open-for-write and refuse it after
    # a kill
    raw = path.read_bytes()
    assert raw[:8] == b"\x89HDF\r\n\x1a\n" and raw[8] == 0


def test_writer_writes_rows_then_done_and_reader_sees_not_done_points(tmp_path, grid):
    path = tmp_path / "grid.h5"
    new_grid_file(path, grid)
    size_before = path.stat().st_size
    index = np.array([0, 1, 2, 6, 7])
    with store.ResultWriter(path) as writer:
        writer.write(index, rows(index))
    assert path.stat().st_size == size_before  # raw data only: the file did not grow

    info = store.inspect_file(path)
    assert info.kind == store.GRID_KIND and info.fingerprint == "abc"
    np.testing.assert_array_equal(np.flatnonzero(info.done), index)

    with pytest.raises(UserError, match="7 of 12 grid points are not done.*xrmodifier simulate"):
        store.load_grid(path)
    data = store.load_grid(path, allow_incomplete=True)
    expect = rows(index)
    for name in store.RESULT_NAMES:
        np.testing.assert_array_equal(
            getattr(data, name)[index], expect[name].astype(getattr(data, name).dtype)
        )
    todo = ~data.done
    assert np.isnan(data.t_fit_orig[todo]).all() and np.isnan(data.curve_orig[todo]).all()
    assert (data.status[todo] == store.STATUS_NOT_DONE).all()
    assert data.param_names == ("mu", "sigma", "A") and data.family == "gaussian"
    assert data.shape == grid.shape and set(data.axes) == {"mu", "sigma", "A", "t_true"}
    np.testing.assert_array_equal(data.theta, grid.all_points()[0])
    assert data.meta["backend"] == "test"

    rest = np.flatnonzero(todo)
    with store.ResultWriter(path) as writer:
        writer.write(rest, rows(rest))
    full = store.load_grid(path, curves=False)
    assert full.complete and full.curve_orig is None
    np.testing.assert_array_equal(full.t_fit_mod, rows(np.arange(12))["t_fit_mod"])


def test_grid_without_curves(tmp_path, grid):
    path = tmp_path / "grid.h5"
    new_grid_file(path, grid, curves=False)
    index = np.arange(12)
    with store.ResultWriter(path) as writer:
        writer.write(index, rows(index, curves=False))
    data = store.load_grid(path)
    assert data.curve_orig is None and data.curve_mod is None and data.complete


def test_shard_rows_map_to_global_points_and_merge_copies_them(tmp_path, grid):
    shard = store.shard_path(tmp_path / "grid.h5", 1, 3)
    assert shard.parent.name == store.SHARD_DIR
    shape = store.ResultShape(N_REAL, N_TGRID)
    store.create_shard_file(shard, [(3, 6), (9, 12)], shape, META, 1, 3)
    assert store.find_shards(tmp_path / "grid.h5") == [shard]
    with store.ResultWriter(shard) as writer:
        writer.write(np.array([4, 5]), rows(np.array([4, 5])))
        writer.write(np.array([9, 10, 11]), rows(np.array([9, 10, 11])))
        with pytest.raises(ValueError, match="not held"):
            writer.write(np.array([6]), rows(np.array([6])))
    info = store.inspect_file(shard)
    assert info.kind == store.SHARD_KIND and info.shard == (1, 3)
    np.testing.assert_array_equal(np.flatnonzero(info.done), [4, 5, 9, 10, 11])

    target = tmp_path / "grid.h5"
    new_grid_file(target, grid)
    with store.ResultWriter(target) as writer:
        assert store.copy_done_rows(info, writer, block=2) == 5
    data = store.load_grid(target, allow_incomplete=True)
    np.testing.assert_array_equal(np.flatnonzero(data.done), [4, 5, 9, 10, 11])
    expect = rows(np.array([4, 5, 9, 10, 11]))
    np.testing.assert_array_equal(data.curve_mod[data.done], expect["curve_mod"])
    with pytest.raises(UserError, match="not an xrmodifier grid file"):
        store.load_grid(shard)  # a shard is not a grid


def test_unusable_files_give_one_line_user_errors(tmp_path):
    missing = tmp_path / "nope.h5"
    with pytest.raises(UserError, match="run `xrmodifier simulate CONFIG` first") as exc:
        store.load_grid(missing)
    assert str(missing) in str(exc.value)

    text = tmp_path / "text.h5"
    text.write_text("hello")
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        store.load_grid(text)
    with pytest.raises(UserError, match="not a readable HDF5 file"):
        store.inspect_file(text)

    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["x"] = 1
    with pytest.raises(UserError, match="not an xrmodifier grid file"):
        store.inspect_file(foreign)

    future = tmp_path / "future.h5"
    with h5py.File(future, "w") as f:
        f.create_group("meta").attrs.update(kind=store.GRID_KIND, layout_version=99)
    with pytest.raises(UserError, match="upgrade xrmodifier"):
        store.load_grid(future)


def test_failed_creation_leaves_nothing_behind(tmp_path, grid):
    path = tmp_path / "grid.h5"
    bad_meta = {**META, "unstorable": object()}
    shape = store.ResultShape(N_REAL, None)
    with pytest.raises(TypeError):
        store.create_grid_file(path, grid, np.ones(8), shape, bad_meta, "gaussian", {})
    assert not path.exists() and not store.partial_path(path).exists()


def test_describe_difference_names_changed_keys():
    old = json.dumps({"simulation": {"seed": 1, "realisations": 2}, "source": {"model": "a"}})
    new = json.dumps({"simulation": {"seed": 1, "realisations": 4}, "source": {"model": "b"}})
    assert store.describe_difference(old, new) == (
        'simulation.realisations: 2 -> 4; source.model: "a" -> "b"'
    )
    assert store.describe_difference("not json", new) == ""


# --------------------------------------------------------------------------------------------
# the off-grid check points
# --------------------------------------------------------------------------------------------


def offgrid(n: int, seed: int = 0) -> store.OffgridPoints:
    rng = np.random.default_rng(seed)
    t_true = rng.uniform(2.0, 8.0, n)
    status = np.zeros((n, 2), np.uint8)
    status[0] = (1, 0)
    return store.OffgridPoints(
        theta=rng.uniform(0.0, 1.0, (n, 3)),
        t_true=t_true,
        t_fit_orig=t_true * 1.1,
        t_fit_mod=t_true * 0.99,
        status=status,
    )


def assert_same_points(got: store.OffgridPoints, want: store.OffgridPoints) -> None:
    for name in ("theta", "t_true", "t_fit_orig", "t_fit_mod", "status"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name), err_msg=name)


def test_offgrid_points_written_in_place_when_allocated_at_creation(tmp_path, grid):
    path = tmp_path / "grid.h5"
    shape = store.ResultShape(N_REAL, None)
    store.create_grid_file(path, grid, np.ones(8), shape, META, "gaussian", {}, offgrid_points=5)
    assert store.load_offgrid(path) is None  # allocated, not written yet
    size = path.stat().st_size
    points = offgrid(5)
    store.write_offgrid(path, points)
    assert path.stat().st_size == size  # raw data into the allocated datasets only
    back = store.load_offgrid(path)
    assert back.n_points == 5 and back.meta["mode"] == "asimov" and back.meta["realisations"] == 1
    assert_same_points(back, points)
    with h5py.File(path, "r") as f:
        assert f["offgrid/status"].dtype == np.uint8
        for name in ("theta", "t_true", "t_fit_orig", "t_fit_mod", "status", "done"):
            ds = f[f"offgrid/{name}"]
            assert ds.id.get_storage_size() == ds.size * ds.dtype.itemsize, name


def test_offgrid_points_of_another_count_or_an_older_grid_go_through_a_copy(tmp_path, grid):
    path = tmp_path / "grid.h5"
    new_grid_file(path, grid, curves=False)  # an older grid: no /offgrid group at all
    with store.ResultWriter(path) as writer:
        writer.write(np.arange(12), rows(np.arange(12), curves=False))
    assert store.load_offgrid(path) is None
    first = offgrid(7, seed=1)
    store.write_offgrid(path, first)
    assert_same_points(store.load_offgrid(path), first)
    second = offgrid(3, seed=2)  # the config now asks for another count
    store.write_offgrid(path, second)
    assert_same_points(store.load_offgrid(path), second)
    assert not store.partial_path(path).exists()
    # the grid itself is untouched
    data = store.load_grid(path)
    assert data.complete
    np.testing.assert_array_equal(data.t_fit_mod, rows(np.arange(12))["t_fit_mod"])
    # a failed write leaves the file as it was and no partial copy behind
    broken = offgrid(4, seed=3)
    broken.t_true = broken.t_true[:2]
    with pytest.raises((TypeError, ValueError)):
        store.write_offgrid(path, broken)
    assert not store.partial_path(path).exists()
    assert_same_points(store.load_offgrid(path), second)


def test_offgrid_of_a_shard_or_damaged_group_is_a_clean_error(tmp_path, grid):
    shard = store.shard_path(tmp_path / "grid.h5", 0, 2)
    store.create_shard_file(shard, [(0, 6)], store.ResultShape(N_REAL, None), META, 0, 2)
    with pytest.raises(UserError, match="not an xrmodifier grid file"):
        store.write_offgrid(shard, offgrid(3))
    path = tmp_path / "grid.h5"
    new_grid_file(path, grid, curves=False)
    store.write_offgrid(path, offgrid(3))
    with h5py.File(path, "r+") as f:
        del f["offgrid/t_fit_mod"]
    with pytest.raises(UserError, match="damaged /offgrid group.*xrmodifier simulate"):
        store.load_offgrid(path)
