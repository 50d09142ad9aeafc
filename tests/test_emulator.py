"""The emulator: targets from the grid, the interpolation baseline, training, resume, I/O.

Training tests run on a real ``grid.h5`` from ``simulate`` (conftest ``emulator_grid_project``:
288 points x 2 Poisson realisations through the synthetic instruments) with a small network.
"""

from __future__ import annotations

import json
import logging

import h5py
import numpy as np
import pytest
import torch
from conftest import copy_project, edit_config, run_cli

from xrmodifier_hpc import emulator
from xrmodifier_hpc.backends.base import (
    STATUS_AT_GRID_BOUND,
    STATUS_NOT_CONVERGED,
    STATUS_UNUSABLE,
)
from xrmodifier_hpc.config import EmulatorConfig, load_config
from xrmodifier_hpc.config.grid import offgrid_design
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.artefacts import Workdir
from xrmodifier_hpc.io.metrics import EmulatorMetrics
from xrmodifier_hpc.stages.train import check_grid, train_process


def _axes():
    return {
        "mu": np.linspace(1.0, 3.0, 5),
        "sigma": np.geomspace(0.2, 0.8, 4),
        "A": np.linspace(-0.3, 0.3, 5),
        "t_true": np.geomspace(1.0, 10.0, 6),
    }


def _cartesian(axes):
    mesh = np.meshgrid(*axes.values(), indexing="ij")
    pts = np.stack([m.ravel() for m in mesh], axis=-1)
    return pts[:, :-1], pts[:, -1]


def _smooth_map(theta, t_true):
    """A smooth stand-in for the simulation map: [log(T1/T), log(T1'/T)]."""
    mu, sigma, a = theta.T
    lt = np.log(t_true)
    y1 = 0.6 * a * np.exp(-((lt - np.log(2.5 * mu)) ** 2) / (2 * (0.6 + sigma) ** 2))
    return np.stack([y1 - 0.02 * a * lt, 0.002 * np.sin(lt)], axis=-1)


def _linear_in_inputs(theta, t_true):
    """Linear in (mu, log sigma, A, log T): multilinear interpolation must be exact."""
    mu, sigma, a = theta.T
    lt = np.log(t_true)
    return np.stack([0.05 * mu - 0.1 * np.log(sigma) + 0.3 * a + 0.02 * lt, 0.01 * mu], -1)


def _data_from_map(fn, n_real=2, noise=0.0, seed=0):
    axes = _axes()
    theta, t = _cartesian(axes)
    y = fn(theta, t)
    rng = np.random.default_rng(seed)
    temps = t[:, None, None] * np.exp(
        y[:, None, :] + noise * rng.standard_normal((t.size, n_real, 2))
    )
    status = np.zeros((t.size, n_real, 2), np.uint8)
    data = emulator.TrainingData.from_arrays(
        ("mu", "sigma", "A"),
        axes,
        theta,
        t,
        temps[..., 0],
        temps[..., 1],
        status,
        unusable=STATUS_UNUSABLE,
    )
    return data, theta, t, temps, status


# --------------------------------------------------------------------------------------------
# targets, baseline, design
# --------------------------------------------------------------------------------------------


def test_training_targets_leave_out_failed_fits_and_count_them():
    axes = _axes()
    theta, t = _cartesian(axes)
    n = t.size
    temps = np.empty((n, 3, 2))
    temps[..., 0] = (1.1 * t)[:, None] * np.array([1.0, 1.02, 1.04])
    temps[..., 1] = t[:, None] * np.array([0.99, 1.0, 1.01])
    status = np.zeros((n, 3, 2), np.uint8)
    status[0, 2, 0] = STATUS_AT_GRID_BOUND  # one unusable T1 fit: mean over the other two
    status[1, :, 1] = STATUS_AT_GRID_BOUND  # no usable T1' at all: the point is left out
    status[2, 1, :] = STATUS_NOT_CONVERGED  # a usable flag: kept
    temps[3, 0, 0] = np.nan  # non-finite: left out like a failed fit
    data = emulator.TrainingData.from_arrays(
        ("mu", "sigma", "A"),
        axes,
        theta,
        t,
        temps[..., 0],
        temps[..., 1],
        status,
        unusable=STATUS_UNUSABLE,
    )
    assert data.n == n - 1 and data.n_excluded == 1 and data.n_grid_points == n
    assert data.n_realisations_excluded == 2  # points 0 and 3 lost one realisation each
    # the mean is taken in log (a geometric mean of T / T_true) over usable realisations only
    np.testing.assert_allclose(np.exp(data.y[0, 0]), 1.1 * 1.02**0.5, rtol=1e-12)
    np.testing.assert_allclose(np.exp(data.y[1, 0]), 1.1 * (1.02 * 1.04) ** (1 / 3), rtol=1e-12)
    assert data.n_used[0].tolist() == [2, 3] and data.n_used[1].tolist() == [3, 3]
    np.testing.assert_allclose(data.var[1, 1], np.var(np.log([0.99, 1.0, 1.01]), ddof=1))
    assert data.log_axes == (False, True, False, True)  # sigma and T_true are geometric


def test_interpolator_is_exact_for_multilinear_maps_and_leave_one_out_too():
    data, *_ = _data_from_map(_linear_in_inputs)
    interp = emulator.GridInterpolator(data)
    theta, t = offgrid_design(data.bounds, data.log_axes, 64, seed=3)
    expected = t[:, None] * np.exp(_linear_in_inputs(theta, t))
    np.testing.assert_allclose(interp(theta, t), expected, rtol=1e-10)
    # leave-one-out: each node predicted from its neighbours only (its own value is spoiled)
    interior = [(1, 1, 1, 1), (2, 2, 3, 4), (3, 1, 2, 2), (0, 2, 2, 3)]  # last: mu at its edge
    points = np.ravel_multi_index(np.array(interior).T, (5, 4, 5, 6))
    original = data.y.copy()
    data.y[points] += 1.0
    loo = emulator.GridInterpolator(data, exclude=np.isin(np.arange(data.n), points))
    pred, defined = loo.leave_one_out(points)
    data.y[:] = original
    assert defined.all()
    ref = data.t_true[points][:, None] * np.exp(data.y[points])
    np.testing.assert_allclose(pred, ref, rtol=1e-10)


def test_offgrid_design_lies_strictly_inside_and_off_the_nodes():
    data, *_ = _data_from_map(_smooth_map)
    theta, t = offgrid_design(data.bounds, data.log_axes, 500, seed=11)
    x = np.column_stack([theta, t])
    assert x.shape == (500, 4)
    assert (x > data.bounds[:, 0]).all() and (x < data.bounds[:, 1]).all()
    for k, axis in enumerate(data.axes):
        assert np.abs(x[:, k, None] - axis[None, :]).min() > 0
    again = offgrid_design(data.bounds, data.log_axes, 500, seed=11)
    np.testing.assert_array_equal(again[0], theta)
    other = offgrid_design(data.bounds, data.log_axes, 500, seed=12)
    assert not np.allclose(other[0], theta)


def test_emulator_smooths_noise_better_than_interpolation(tmp_path):
    """On a noisy grid of a smooth map the MLP beats multilinear interpolation off the grid."""
    data, *_ = _data_from_map(_smooth_map, n_real=2, noise=0.02, seed=1)
    ecfg = EmulatorConfig(
        hidden=(64, 64),
        epochs=300,
        batch_size=64,
        patience=1000,
        predict_scatter=False,
        threads=1,
        checkpoint_every=1000,
    )
    torch.set_num_threads(1)
    trainer = emulator.Trainer(data, ecfg, tmp_path / "ck.pt", "fp", torch.device("cpu"))
    outcome = trainer.run()
    assert outcome.completed and outcome.history[-1]["loss"] < outcome.history[0]["loss"]
    theta, t = offgrid_design(data.bounds, data.log_axes, 400, seed=5)
    truth = t[:, None] * np.exp(_smooth_map(theta, t))
    emu = emulator.rms_rel(emulator.predict(trainer.model, theta, t), truth)
    interp = emulator.rms_rel(emulator.GridInterpolator(data)(theta, t), truth)
    for key in ("t_fit_orig", "t_fit_mod"):
        assert getattr(emu, key) < getattr(interp, key), (emu, interp)


# --------------------------------------------------------------------------------------------
# training on a real grid
# --------------------------------------------------------------------------------------------


def test_train_writes_emulator_and_metrics_and_load_round_trips(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    cfg = load_config(config)
    result = train_process(cfg)
    assert result.completed and result.rank == 0 and result.world_size == 1
    assert result.last_loss < result.first_loss
    metrics = json.loads(Workdir(cfg.workdir).emulator_metrics.read_text())
    assert metrics["schema"] == "xrmodifier.emulator_metrics" and metrics["schema_version"] == 1
    assert metrics["provenance"]["stage"] == "train"
    # the typed record reads back what was written
    record = EmulatorMetrics.read(Workdir(cfg.workdir).emulator_metrics)
    assert record.to_dict() == metrics
    assert record.offgrid.n_requested == 24 and record.offgrid.note == ""
    for section in ("heldout", "offgrid"):
        assert metrics[section]["n_points"] > 0
        for who in ("emulator", "interpolator"):
            for key in ("t_fit_orig", "t_fit_mod"):
                value = metrics[section][who][key]
                assert np.isfinite(value) and 0 < value < 0.5, (section, who, key, value)
    assert metrics["offgrid"]["n_points"] + metrics["offgrid"]["n_failed"] == 24
    tr = metrics["training"]
    assert tr["epochs_run"] == 40 and tr["world_size"] == 1 and tr["n_excluded_failed"] >= 0
    assert tr["n_train"] + tr["n_val"] + tr["n_excluded_failed"] == 288
    assert not Workdir(cfg.workdir).emulator_checkpoint.exists()  # the next run starts afresh

    model = emulator.load(cfg.emulator_path)
    assert model.param_names == ("mu", "sigma", "A")
    assert model.bounds.shape == (4, 2) and model.bounds[-1].tolist() == [1.5, 8.0]
    assert model.metrics == metrics and model.config_text == cfg.text
    off = model.offgrid
    assert off["theta"].shape == (24, 3) and off["truth"].shape == (24, 2)
    theta = torch.as_tensor(off["theta"])
    t_true = torch.as_tensor(off["t_true"])
    # the stored predictions are what the loaded module computes
    np.testing.assert_allclose(model(theta, t_true).numpy(), off["emulator"], rtol=1e-12)
    usable = off["usable"]
    rel = (off["emulator"][usable] - off["truth"][usable]) / off["truth"][usable]
    np.testing.assert_allclose(
        np.sqrt((rel**2).mean(axis=0)),
        [metrics["offgrid"]["emulator"]["t_fit_orig"], metrics["offgrid"]["emulator"]["t_fit_mod"]],
        rtol=1e-9,
    )
    scatter = model.log_scatter(theta, t_true)
    assert scatter.shape == (24, 2) and torch.isfinite(scatter).all()
    # float32 on request, same numbers to float32 precision
    model32 = emulator.load(cfg.emulator_path, dtype=torch.float32)
    np.testing.assert_allclose(
        model32(theta.float(), t_true.float()).numpy(), off["emulator"], rtol=1e-5
    )


def test_loaded_module_is_differentiable_in_theta_and_t_true(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    text = config.read_text()
    for key, value in (("epochs", "8"), ("offgrid_points", "0"), ("predict_scatter", "false")):
        text = edit_config(text, "emulator", key, value)
    config.write_text(text)
    cfg = load_config(config)
    train_process(cfg)
    model = emulator.load(cfg.emulator_path)
    assert model.log_scatter(torch.ones(1, 3), torch.ones(1)) is None
    assert model.metrics["offgrid"]["n_points"] == 0
    assert model.metrics["offgrid"]["emulator"]["t_fit_orig"] is None
    theta = torch.tensor(
        [[1.7, 0.3, 0.1], [2.2, 0.4, -0.15]], dtype=torch.float64, requires_grad=True
    )
    t_true = torch.tensor([2.0, 5.0], dtype=torch.float64, requires_grad=True)
    out = model(theta, t_true)
    assert out.shape == (2, 2)
    out[:, 0].sum().backward()
    grad = theta.grad.clone()
    assert torch.isfinite(grad).all() and grad.abs().sum() > 0
    assert t_true.grad is not None and torch.isfinite(t_true.grad).all()
    # autograd agrees with central differences
    eps = 1e-6
    with torch.no_grad():
        for k in range(3):
            step = torch.zeros_like(theta)
            step[:, k] = eps
            fd = (model(theta + step, t_true)[:, 0] - model(theta - step, t_true)[:, 0]) / (2 * eps)
            np.testing.assert_allclose(grad[:, k].numpy(), fd.numpy(), rtol=1e-5, atol=1e-9)
    assert all(not p.requires_grad for p in model.parameters())


def test_interrupted_training_resumes_to_the_same_weights(emulator_grid_project, tmp_path, caplog):
    """Stopped after 13 epochs and restarted, training ends bitwise where one run ends."""
    straight = load_config(copy_project(emulator_grid_project, tmp_path / "straight"))
    split = load_config(copy_project(emulator_grid_project, tmp_path / "split"))
    ref = train_process(straight)
    assert ref.completed and ref.epochs_run == 40

    first = train_process(split, max_epochs_this_session=13)
    assert not first.completed and first.epochs_run == 13
    assert Workdir(split.workdir).emulator_checkpoint.is_file()
    assert not split.emulator_path.exists()  # nothing half-made is written
    with caplog.at_level(logging.INFO, logger="xrmodifier"):
        second = train_process(split)
    assert "resuming from" in caplog.text and "at epoch 13" in caplog.text
    assert second.completed and second.epochs_run == 40
    assert second.weights_digest == ref.weights_digest  # bitwise
    a = emulator.load(straight.emulator_path).state_dict()
    b = emulator.load(split.emulator_path).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_from_other_settings_is_not_resumed(emulator_grid_project, tmp_path, caplog):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    cfg = load_config(config)
    train_process(cfg, max_epochs_this_session=5)
    config.write_text(edit_config(config.read_text(), "emulator", "learning_rate", "1e-3"))
    config.write_text(edit_config(config.read_text(), "emulator", "epochs", "6"))
    config.write_text(edit_config(config.read_text(), "emulator", "offgrid_points", "0"))
    with caplog.at_level(logging.INFO, logger="xrmodifier"):
        result = train_process(load_config(config))
    assert "ignoring checkpoint" in caplog.text and "resuming" not in caplog.text
    assert result.completed and result.epochs_run == 6


def test_rerunning_train_on_an_up_to_date_emulator_does_nothing(
    emulator_grid_project, tmp_path, caplog
):
    """A finished emulator trained on this grid with these settings: `train` says so and
    keeps it; other settings or --restart train again."""
    from xrmodifier_hpc.stages.train import train

    config = copy_project(emulator_grid_project, tmp_path / "p")
    text = edit_config(config.read_text(), "emulator", "epochs", "6")
    config.write_text(edit_config(text, "emulator", "offgrid_points", "0"))
    cfg = load_config(config)
    first = train(cfg)
    assert first.primary["completed"] and first.primary["epochs_run"] == 6
    stamp = cfg.emulator_path.stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="xrmodifier"):
        again = train(cfg)
    assert "is up to date" in caplog.text and "--restart" in caplog.text
    assert again.primary["completed"] and again.primary["epochs_run"] == 0
    assert again.metrics.to_dict() == first.metrics.to_dict()
    assert cfg.emulator_path.stat().st_mtime_ns == stamp
    # --restart trains again; so do other settings
    assert train(cfg, restart=True).primary["epochs_run"] == 6
    config.write_text(edit_config(config.read_text(), "emulator", "epochs", "7"))
    assert train(load_config(config)).primary["epochs_run"] == 7


# --------------------------------------------------------------------------------------------
# bad input
# --------------------------------------------------------------------------------------------


def test_train_without_grid_says_to_simulate(demo_config):
    done = run_cli("train", str(demo_config))
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert "grid.h5" in lines[0] and "xrmodifier simulate" in lines[0]


def test_train_on_incomplete_grid_says_to_finish_it(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    grid = config.parent / "run" / "grid.h5"
    with h5py.File(grid, "r+") as f:
        f["results/done"][10:20] = False
    done = run_cli("train", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "incomplete (278 of 288 points done)" in done.stderr
    assert "xrmodifier simulate" in done.stderr
    assert not (config.parent / "run" / "emulator.pt").exists()


def test_train_on_grid_of_other_settings_refuses(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    config.write_text(edit_config(config.read_text(), "simulation", "counts", "40000.0"))
    with pytest.raises(UserError, match="simulated with other settings"):
        check_grid(load_config(config))


def test_train_on_damaged_grid_file_is_a_clean_error(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    (config.parent / "run" / "grid.h5").write_bytes(b"not hdf5 at all")
    done = run_cli("train", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "grid.h5" in done.stderr


def test_load_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(UserError, match="xrmodifier train"):
        emulator.load(tmp_path / "emulator.pt")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not an xrmodifier emulator"):
        emulator.load(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(UserError, match="not a readable emulator"):
        emulator.load(tmp_path / "junk.pt")
