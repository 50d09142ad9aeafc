"""The off-grid check points: ``simulate`` (and ``merge``) fit them noise-free and store them in
``grid.h5``; ``train`` reads them and builds no backend, so it runs where the backend cannot
(``backend = "xspec"`` without PyXspec), and a grid made before them still trains.
"""

from __future__ import annotations

import logging
import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest
from conftest import XRMODIFIER, copy_project, edit_config, mpiexec, run_cli, shrink_to_small

from xrmodifier_hpc.backends import make_backend
from xrmodifier_hpc.backends.offgrid import simulate_offgrid
from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import store
from xrmodifier_hpc.io.artefacts import Workdir
from xrmodifier_hpc.io.metrics import EmulatorMetrics
from xrmodifier_hpc.stages.merge import merge
from xrmodifier_hpc.stages.simulate import OFFGRID_GROUP, offgrid_points, simulate
from xrmodifier_hpc.stages.train import train_process


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An ``xrmodifier init`` project folder; tests add their own small configs to it."""
    from xrmodifier_hpc.stages.init import init

    return init(tmp_path_factory.mktemp("offgrid") / "project").parent


def small(project: Path, name: str) -> Path:
    """The 72-point grid with 8 off-grid points (conftest's shrink), results in run_NAME."""
    path = project / f"{name}.toml"
    text = shrink_to_small((project / "config.toml").read_text())
    path.write_text(edit_config(text, "paths", "workdir", f'"run_{name}"'))
    return path


def grid_path(config: Path) -> Path:
    return Workdir(load_config(config).workdir).grid


def assert_same_points(a: store.OffgridPoints, b: store.OffgridPoints) -> None:
    for name in ("theta", "t_true", "t_fit_orig", "t_fit_mod", "status"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name


def test_simulate_stores_the_design_points_fitted_noise_free(emulator_grid_project):
    cfg = load_config(emulator_grid_project)
    points = store.load_offgrid(cfg.grid_path)
    assert points is not None and points.n_points == 24
    grid = Grid.from_config(cfg)
    theta, t_true = offgrid_points(cfg, grid)
    np.testing.assert_array_equal(points.theta, theta)
    np.testing.assert_array_equal(points.t_true, t_true)
    # groups of OFFGRID_GROUP share the Gaussian's (mu, sigma), one modified response each,
    # and differ in A and T_true; every value lies strictly inside the grid
    groups = np.arange(24) // OFFGRID_GROUP
    for g in np.unique(groups):
        own = theta[groups == g]
        assert np.unique(own[:, :2], axis=0).shape[0] == 1
        assert np.unique(own[:, 2]).size == own.shape[0]
        assert np.unique(t_true[groups == g]).size == own.shape[0]
    assert np.unique(theta[:, :2], axis=0).shape[0] == 24 // OFFGRID_GROUP
    assert np.all((theta > grid.bounds[:-1, 0]) & (theta < grid.bounds[:-1, 1]))
    # the configured backend's asimov fits of three points alone (the stored ones come in
    # chunks: another batch sums in another order in BLAS, ~1e-12 relative)
    direct = simulate_offgrid(cfg, theta[[0, 5, 17]], t_true[[0, 5, 17]], np.array([0, 5, 17]))
    np.testing.assert_allclose(points.t_fit_orig[[0, 5, 17]], direct.t_fit_orig, rtol=1e-9)
    np.testing.assert_allclose(points.t_fit_mod[[0, 5, 17]], direct.t_fit_mod, rtol=1e-9)
    np.testing.assert_array_equal(points.status[[0, 5, 17]], direct.status)
    ok = (points.status == 0).all(axis=1)
    assert ok.sum() >= 20
    # no noise: fitted with the response that made the counts, T1' is T_true up to fit bias
    np.testing.assert_allclose(points.t_fit_mod[ok], points.t_true[ok], rtol=0.02)
    assert points.meta["mode"] == "asimov"


def test_train_with_backend_xspec_builds_no_backend(emulator_grid_project, tmp_path):
    """A grid simulated with XSPEC (in the container) trains where PyXspec does not import."""
    config = copy_project(emulator_grid_project, tmp_path / "p")
    config.write_text(edit_config(config.read_text(), "simulation", "backend", '"xspec"'))
    cfg = load_config(config)
    with pytest.raises(UserError, match="PyXspec"):  # the premise: no XSPEC backend here
        make_backend(cfg)
    # the grid is what `simulate` made with this config in the container
    with h5py.File(cfg.grid_path, "r+") as f:
        f["meta"].attrs["fingerprint"] = cfg.simulation_fingerprint()
        f["meta"].attrs["simulation"] = cfg.simulation_summary()
        f["meta"].attrs["backend"] = "xspec"
    done = run_cli("train", str(config))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "off-grid (asimov) n=" in done.stdout
    metrics = EmulatorMetrics.read(Workdir(cfg.workdir).emulator_metrics)
    assert metrics.offgrid.n_points + metrics.offgrid.n_failed == 24
    assert metrics.offgrid.n_points > 0 and metrics.offgrid.emulator.t_fit_orig is not None


def test_grid_without_offgrid_points_trains_then_simulate_adds_them(
    emulator_grid_project, tmp_path, caplog
):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    config.write_text(edit_config(config.read_text(), "emulator", "epochs", "6"))
    path = grid_path(config)
    with h5py.File(path, "r+") as f:  # a grid made before simulate stored them
        del f["offgrid"]
    with caplog.at_level(logging.INFO, logger="xrmodifier"):
        result = train_process(load_config(config))
    assert result.completed
    metrics = EmulatorMetrics.from_dict(result.metrics)
    assert metrics.offgrid.n_points == 0 and metrics.offgrid.emulator.t_fit_orig is None
    assert "rerun `xrmodifier simulate" in metrics.offgrid.note
    assert not metrics.target.met
    said = [r.getMessage() for r in caplog.records if "off-grid" in r.getMessage()]
    assert len(said) == 1 and "rerun `xrmodifier simulate" in said[0], said

    # simulate adds them to the complete grid without recomputing a grid point
    with h5py.File(path, "r") as f:
        before = f["results/t_fit_orig"][()]
    summary = simulate(config)
    assert summary.computed == 0 and "nothing to do" in summary.describe()
    added = store.load_offgrid(path)
    assert added.n_points == 24
    with h5py.File(path, "r") as f:
        assert f["results/t_fit_orig"][()].tobytes() == before.tobytes()

    # another count in the config: train uses what is stored and says so ...
    config.write_text(edit_config(config.read_text(), "emulator", "offgrid_points", "16"))
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="xrmodifier"):
        result = train_process(load_config(config))
    off = EmulatorMetrics.from_dict(result.metrics).offgrid
    assert off.n_requested == 16 and off.n_points + off.n_failed == 24
    assert "holds 24 off-grid check points, the config asks for 16" in off.note
    assert any("using the 24 stored" in r.getMessage() for r in caplog.records)
    # ... and a rerun of simulate makes the 16 without touching the grid
    simulate(config)
    assert store.load_offgrid(path).n_points == 16
    assert load_config(config).simulation_fingerprint() == store.inspect_file(path).fingerprint


def test_simulate_after_a_merge_adds_the_offgrid_points(project):
    """An array run: the shards, `merge` (the grid), then `simulate` once more adds only the
    off-grid check points (what jobs/merge.sbatch does), the same as a serial run's."""
    config = small(project, "array")
    path = grid_path(config)
    simulate(config, shard="0/2")
    simulate(config, shard="1/2")
    assert not path.exists()  # array tasks leave shards; merge makes grid.h5
    summary = merge(config)
    assert summary.complete and "xrmodifier simulate CONFIG" in summary.describe()
    assert store.load_offgrid(path) is None  # merge fits nothing
    done_before = store.inspect_file(path).done.copy()
    again = simulate(config)
    assert again.computed == 0 and (store.inspect_file(path).done == done_before).all()
    merged = store.load_offgrid(path)
    assert merged is not None and merged.n_points == 8
    serial = small(project, "serial")
    simulate(serial)
    assert_same_points(merged, store.load_offgrid(grid_path(serial)))


@pytest.mark.mpi
def test_two_ranks_split_the_offgrid_points_and_store_the_same(project):
    exe = mpiexec()
    assert exe, "mpiexec not found: `make test` installs MPICH (tools/setup_env.sh)"
    one = small(project, "one")
    simulate(one)
    two = small(project, "two")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    proc = subprocess.run(
        [exe, "-n", "2", XRMODIFIER, "simulate", str(two)],
        env={**env, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "off-grid check: 8 noise-free points over 2 rank(s)" in proc.stderr
    assert_same_points(store.load_offgrid(grid_path(two)), store.load_offgrid(grid_path(one)))
    with h5py.File(grid_path(two), "r") as f:
        assert f["offgrid"].attrs["mode"] == "asimov"
