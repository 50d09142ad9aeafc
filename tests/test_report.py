"""`xrmodifier report` and the demo driver: figures from the artefacts, and nothing else.

One session fixture runs ``tools/demo.sh`` (the driver behind ``make demo``: init, simulate,
train, mock, invert, report) end to end on a shrunken config -- a 288-point grid, a small
emulator, 12 mock sources, short chains -- and the tests check the figures against the
artefacts it produced: the numbers drawn must be the artefacts' numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, XRMODIFIER, edit_config, run_cli

#: the demo's config shrunk so the whole pipeline runs in ~30 s on 2 cores
DEMO_TEST_EDITS = (
    ("modifier.grid", "mu", "{ linspace = [1.0, 2.5, 4] }"),
    ("modifier.grid", "sigma", "{ logspace = [0.2, 0.5, 3] }"),
    ("modifier.grid", "A", "{ linspace = [-0.2, 0.2, 4] }"),
    ("temperatures", "t_true", "{ logspace = [1.5, 8.0, 6] }"),
    ("simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }"),
    ("emulator", "hidden", "[32, 32]"),
    ("emulator", "scatter_hidden", "[16]"),
    ("emulator", "epochs", "40"),
    ("emulator", "batch_size", "64"),
    ("emulator", "patience", "1000"),
    ("emulator", "offgrid_points", "24"),
    ("emulator", "threads", "1"),
    ("inversion", "n_starts", "8"),
    ("inversion.mcmc", "walkers", "16"),
    ("inversion.mcmc", "steps", "400"),
    ("inversion.mcmc", "burn", "100"),
    ("mock", "n_sources", "12"),
    ("mock", "t_range", "[2.0, 6.0]"),
)
FIGURE_NAMES = (
    "fig1_arf_correction.png",
    "fig2_t1_vs_t0.png",
    "fig3_emulator_parity.png",
    "fig4_posterior_corner.png",
    "fig5_profile_curves.png",
    "fig6_arf_ensemble.png",
)


@dataclasses.dataclass
class DemoRun:
    config: Path
    stdout: str

    @property
    def workdir(self) -> Path:
        return self.config.parent / "run"


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> DemoRun:
    """``tools/demo.sh DIR`` on a shrunken copy of the embedded default (the script reuses
    an existing DIR/config.toml, which is how the config is shrunk here)."""
    from xrmodifier_hpc.stages.init import init

    directory = tmp_path_factory.mktemp("demo") / "demo"
    config = init(directory)
    text = config.read_text()
    for section, key, value in DEMO_TEST_EDITS:
        text = edit_config(text, section, key, value)
    config.write_text(text)
    done = subprocess.run(
        ["bash", str(REPO / "tools" / "demo.sh"), str(directory)],
        env={**os.environ, "XRMODIFIER": XRMODIFIER},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, f"demo failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return DemoRun(config, done.stdout)


@pytest.fixture(scope="session")
def artefacts(demo_run: DemoRun):
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.stages.report import load_artefacts

    return load_artefacts(load_config(demo_run.config))


def _hashes(folder: Path, skip: str = "figures") -> dict[str, tuple[str, int]]:
    """sha256 and mtime (ns) of every file under ``folder`` except the ``skip`` subfolder."""
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and skip not in p.relative_to(folder).parts:
            out[str(p.relative_to(folder))] = (
                hashlib.sha256(p.read_bytes()).hexdigest(),
                p.stat().st_mtime_ns,
            )
    return out


# --------------------------------------------------------------------------------------------
# the demo driver
# --------------------------------------------------------------------------------------------


def test_demo_ends_with_the_summary_table(demo_run: DemoRun) -> None:
    out = demo_run.stdout
    # the stages ran, the reused config was announced, timings were printed
    assert "reusing" in out
    for stage in ("simulate", "train", "mock", "invert", "report", "total"):
        assert stage in out
    # the table: theta_true vs recovered, the seed's loss, emulator accuracy, the figures
    truth = json.loads((demo_run.workdir / "observations.truth.json").read_text())
    result = json.loads((demo_run.workdir / "result.json").read_text())
    table = out[out.index("inversion:") :]
    for name, value in truth["theta_true"].items():
        summ = result["posterior"]["summary"][name]
        row = next(line for line in table.splitlines() if line.split()[:1] == [name])
        assert f"{value:.4g}" in row and f"{summ['median']:.4g}" in row
        assert f"[{summ['p16']:.4g}, {summ['p84']:.4g}]" in row
    assert f"before {result['seed_loss']['before']:.4g} keV^2" in table
    assert f"after {result['seed_loss']['after']:.4g} keV^2" in table
    assert "emulator off-grid RMS relative error" in table
    assert f"figures: {demo_run.workdir / 'figures'}/" in table


# --------------------------------------------------------------------------------------------
# the files
# --------------------------------------------------------------------------------------------


def test_every_figure_is_a_plausible_png(demo_run: DemoRun) -> None:
    from matplotlib.image import imread

    figures = demo_run.workdir / "figures"
    for name in FIGURE_NAMES:
        path = figures / name
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert path.stat().st_size > 30_000, f"{name} is suspiciously small"
        height, width = imread(path).shape[:2]
        assert 800 <= width <= 3000 and 700 <= height <= 3000, (name, width, height)
    summary = (figures / "summary.txt").read_text()
    for name in FIGURE_NAMES:
        assert name in summary
    # nothing half-written is left behind
    assert not [p for p in figures.iterdir() if p.name.startswith(".")]


def test_report_changes_no_artefact(demo_run: DemoRun) -> None:
    from xrmodifier_hpc.stages.report import report

    before = _hashes(demo_run.workdir)
    assert {"grid.h5", "emulator.pt", "result.json", "posterior.npz", "corrected.arf"} <= set(
        before
    )
    summary = report(demo_run.config)
    assert set(summary.figures) == {
        "arf",
        "temperatures",
        "parity",
        "corner",
        "profiles",
        "ensemble",
    }
    assert not summary.skipped
    assert _hashes(demo_run.workdir) == before
    # and nothing was written beside the project either
    assert sorted(p.name for p in demo_run.config.parent.iterdir()) == [
        "config.toml",
        "instruments",
        "logs",
        "run",
    ]


# --------------------------------------------------------------------------------------------
# the numbers drawn are the artefacts' numbers
# --------------------------------------------------------------------------------------------


def test_arf_band_is_the_posterior_from_the_chains(demo_run: DemoRun, artefacts) -> None:
    from xrmodifier_hpc.figures.arf import figure_data_arf
    from xrmodifier_hpc.io.ogip import read_arf
    from xrmodifier_hpc.physics.modifiers import get_modifier

    data = figure_data_arf(artefacts)
    result = json.loads((demo_run.workdir / "result.json").read_text())
    names = result["param_names"]
    with np.load(demo_run.workdir / "posterior.npz") as npz:
        chain, burn, thin = npz["chain"], int(npz["burn"]), int(npz["thin"])
    flat = chain[burn::thin].reshape(-1, chain.shape[-1])
    # the samples read are the ones result.json summarises
    for j, n in enumerate(names):
        s = result["posterior"]["summary"][n]
        q16, q50, q84 = np.percentile(flat[:, j], [16, 50, 84])
        assert (q16, q50, q84) == pytest.approx((s["p16"], s["median"], s["p84"]), rel=1e-12)

    family = get_modifier(result["modifier"]["family"], result["modifier"]["options"])
    target = read_arf(demo_run.config.parent / "instruments" / "target.arf")
    energy = 0.5 * (target.energ_lo + target.energ_hi)
    np.testing.assert_array_equal(data.energy, energy)
    # fig1 draws the WRITTEN files: corrected.arf (median) and its p16/p84 envelopes
    written = {
        s: read_arf(demo_run.workdir / n).specresp
        for s, n in (
            ("median", "corrected.arf"),
            ("p16", "corrected_p16.arf"),
            ("p84", "corrected_p84.arf"),
        )
    }
    np.testing.assert_array_equal(data.area_target, target.specresp)
    np.testing.assert_array_equal(data.area_corrected, written["median"])
    np.testing.assert_array_equal(data.area_band, [written["p16"], written["p84"]])
    # whose m(E) is the pointwise posterior percentile of m over the chain (float32 files)
    curves = family.evaluate(energy, flat)
    full = np.percentile(curves, [16, 50, 84], axis=0)
    width = max(float(np.max(full[2] - full[0])), 1e-6)
    assert np.max(np.abs(data.m_band - full)) < 0.05 * width
    assert np.all(data.m_band[0] <= data.m_band[1] + 1e-6)
    assert np.all(data.m_band[1] <= data.m_band[2] + 1e-6)
    assert data.n_band_samples == min(4000, flat.shape[0])
    # theta_best is a diagnostic line, not the written curve
    theta_best = np.array([result["theta_best"][n] for n in names])
    np.testing.assert_allclose(data.m_best, family.evaluate(energy, theta_best), rtol=1e-12)
    truth = json.loads((demo_run.workdir / "observations.truth.json").read_text())
    theta_true = np.array([truth["theta_true"][n] for n in names])
    np.testing.assert_allclose(data.m_true, family.evaluate(energy, theta_true), rtol=1e-12)


def test_ensemble_figure_is_the_written_ensemble(demo_run: DemoRun, artefacts) -> None:
    from astropy.io import fits

    from xrmodifier_hpc.figures.arf import figure_data_ensemble
    from xrmodifier_hpc.io.ogip import read_arf

    data = figure_data_ensemble(artefacts)
    table = fits.getdata(demo_run.workdir / "corrected_ensemble.fits", "ENSEMBLE")
    target = read_arf(demo_run.config.parent / "instruments" / "target.arf").specresp
    assert data.area_draws.shape == (100, target.size)
    np.testing.assert_array_equal(data.area_draws, table["SPECRESP"])
    good = target > 0
    np.testing.assert_allclose(data.m_draws[:, good], table["SPECRESP"][:, good] / target[good])


def test_summary_says_what_the_data_constrain_and_which_file_is_which(
    demo_run: DemoRun,
) -> None:
    result = json.loads((demo_run.workdir / "result.json").read_text())
    summary = (demo_run.workdir / "figures" / "summary.txt").read_text()
    assert result["identifiability"]["lines"]
    for line in result["identifiability"]["lines"]:
        assert line in summary
    for name, stat in (
        ("corrected.arf", "median"),
        ("corrected_p16.arf", "p16"),
        ("corrected_p84.arf", "p84"),
        ("corrected_ensemble.fits", "ensemble"),
    ):
        row = next(r for r in summary.splitlines() if r.strip().startswith(name + ":"))
        assert f"XRMSTAT = {stat}" in row
    assert "theta_best" in summary and "diagnostic" in summary


def test_temperature_points_are_the_observations(demo_run: DemoRun, artefacts) -> None:
    from xrmodifier_hpc.figures.temperatures import figure_data_temperatures
    from xrmodifier_hpc.io.observations import read_observations

    data = figure_data_temperatures(artefacts.result)
    obs = read_observations(demo_run.workdir / "observations.csv")
    assert data.names == obs.names
    np.testing.assert_array_equal(data.t0, obs.t0)
    np.testing.assert_array_equal(data.t1, obs.t1)
    np.testing.assert_array_equal(data.t0_err, np.vstack([obs.t0_err_lo, obs.t0_err_hi]))
    np.testing.assert_array_equal(data.t1_err, np.vstack([obs.t1_err_lo, obs.t1_err_hi]))
    result = json.loads((demo_run.workdir / "result.json").read_text())
    np.testing.assert_array_equal(data.t1_corr, [s["t1_corrected"] for s in result["sources"]])
    np.testing.assert_array_equal(
        data.t1_corr_err[1], [s["t1_corrected_err_hi"] for s in result["sources"]]
    )
    # the seed's loss in the title is the one the points give
    assert data.seed_loss_before == pytest.approx(float(np.sum((obs.t0 - obs.t1) ** 2)))
    assert data.seed_loss_after == pytest.approx(float(np.sum((obs.t0 - data.t1_corr) ** 2)))


def test_parity_points_are_the_emulator_offgrid_check(demo_run: DemoRun, artefacts) -> None:
    from xrmodifier_hpc.emulator import load
    from xrmodifier_hpc.figures.parity import figure_data_parity

    module = load(demo_run.workdir / "emulator.pt")
    off = module.offgrid
    ok = np.asarray(off["usable"], bool)
    data = figure_data_parity(artefacts.offgrid)
    assert data.truth.shape == (int(ok.sum()), 2)
    np.testing.assert_array_equal(data.truth, off["truth"][ok])
    np.testing.assert_array_equal(data.emulator, off["emulator"][ok])
    np.testing.assert_array_equal(data.interpolator, off["interpolator"][ok])
    np.testing.assert_array_equal(data.t_true, off["t_true"][ok])
    # the RMS in the legends is the one train reported
    metrics = json.loads((demo_run.workdir / "emulator_metrics.json").read_text())
    for who in ("emulator", "interpolator"):
        for name in ("t_fit_orig", "t_fit_mod"):
            assert data.rms[who][name] == pytest.approx(metrics["offgrid"][who][name], rel=1e-9)
    assert figure_data_parity(None) is None


def test_corner_shows_the_samples_and_the_mock_truth(demo_run: DemoRun, artefacts) -> None:
    from xrmodifier_hpc.figures.posterior import CORNER_TAIL, corner_ranges, figure_data_corner

    data = figure_data_corner(artefacts)
    with np.load(demo_run.workdir / "posterior.npz") as npz:
        chain, burn, thin = npz["chain"], int(npz["burn"]), int(npz["thin"])
    np.testing.assert_array_equal(data.samples, chain[burn::thin].reshape(-1, chain.shape[-1]))
    truth = json.loads((demo_run.workdir / "observations.truth.json").read_text())
    names = truth["param_names"]
    np.testing.assert_array_equal(data.truths, [truth["theta_true"][n] for n in names])
    assert data.labels == ("mu [keV]", "sigma [keV]", "A")
    # the drawn ranges hold the central 99% of the samples and every marked point
    for j, (lo, hi) in enumerate(corner_ranges(data)):
        inside = np.mean((data.samples[:, j] >= lo) & (data.samples[:, j] <= hi))
        assert inside >= 1 - 2 * CORNER_TAIL
        assert lo < data.theta_best[j] < hi and lo < data.truths[j] < hi


def test_profile_curves_are_the_grid_curves(demo_run: DemoRun, artefacts) -> None:
    from xrmodifier_hpc.figures.profiles import N_PROFILE_EXAMPLES, figure_data_profiles
    from xrmodifier_hpc.io.store import load_grid

    grid = load_grid(demo_run.workdir / "grid.h5")
    data = figure_data_profiles(grid, artefacts.theta_best)
    assert data.index.size == N_PROFILE_EXAMPLES
    c_orig = grid.curve_orig[data.index, 0, :]
    c_mod = grid.curve_mod[data.index, 0, :]
    # the stored curves, minus the interpolant's minimum: C at the best fit
    for delta, fine, stored, t_fit in (
        (data.delta_orig, data.fine_orig, c_orig, data.t_fit_orig),
        (data.delta_mod, data.fine_mod, c_mod, data.t_fit_mod),
    ):
        shift = stored - delta
        np.testing.assert_allclose(shift, shift[:, :1] * np.ones_like(shift), rtol=1e-12)
        np.testing.assert_allclose(fine.min(axis=1), 0.0, atol=1e-9)
        assert np.all(delta.min(axis=1) >= -1e-6)  # the grid minimum is above the true one
        # the drawn interpolant bottoms out where the fit found its minimum
        step = np.log(data.t_fine[1] / data.t_fine[0])
        at_min = data.t_fine[np.argmin(fine, axis=1)]
        assert np.all(np.abs(np.log(at_min / t_fit)) <= step)
    np.testing.assert_array_equal(data.tgrid, grid.fit_tgrid)
    np.testing.assert_array_equal(data.t_fit_orig, grid.t_fit_orig[data.index, 0])
    np.testing.assert_array_equal(data.t_fit_mod, grid.t_fit_mod[data.index, 0])
    # spread over the T_true axis from its first to its last value
    t_axis = grid.axes["t_true"]
    assert data.t_true[0] == t_axis[0] and data.t_true[-1] == t_axis[-1]
    # at the grid theta nearest theta_best, per axis (log for the geometric sigma axis),
    # wherever that point's fits are clean
    base = []
    for j, name in enumerate(grid.param_names):
        axis = grid.axes[name]
        x = np.log(axis) if name == "sigma" else axis
        v = np.log(artefacts.theta_best[j]) if name == "sigma" else artefacts.theta_best[j]
        base.append(int(np.argmin(np.abs(x - v))))
    n_t = t_axis.size
    nearest = [
        int(np.ravel_multi_index((*base, j), grid.shape))
        for j in np.round(np.linspace(0, n_t - 1, N_PROFILE_EXAMPLES)).astype(int)
    ]
    clean = [bool(np.all(grid.status[k, 0, :] == 0)) for k in nearest]
    assert sum(clean) >= 2
    for k, ok, picked in zip(nearest, clean, data.index):
        if ok:
            assert picked == k
    # without curves there is nothing to draw
    bare = dataclasses.replace(grid, curve_orig=None, curve_mod=None)
    assert figure_data_profiles(bare, artefacts.theta_best) is None


# --------------------------------------------------------------------------------------------
# missing inputs
# --------------------------------------------------------------------------------------------


def test_missing_artefacts_exit_2_naming_the_stage(demo_run: DemoRun, tmp_path: Path) -> None:
    project = tmp_path / "project"
    shutil.copytree(demo_run.config.parent, project, ignore=shutil.ignore_patterns("logs"))
    config = project / "config.toml"
    (project / "run" / "result.json").unlink()
    done = run_cli("report", str(config))
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert "result.json (run `xrmodifier invert CONFIG`)" in done.stderr
    shutil.rmtree(project / "run")
    done = run_cli("report", str(config))
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    assert "grid.h5 (run `xrmodifier simulate CONFIG`)" in done.stderr
    assert "emulator.pt (run `xrmodifier train CONFIG`)" in done.stderr
    assert not (project / "run" / "figures").exists()


def test_figures_without_input_are_skipped(
    demo_run: DemoRun, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No curves in grid.h5 and no off-grid points in the emulator: figures 3 and 5 are
    skipped with a reason, the others drawn."""
    from xrmodifier_hpc.io import store
    from xrmodifier_hpc.stages import report as report_mod

    project = tmp_path / "project"
    shutil.copytree(demo_run.config.parent, project, ignore=shutil.ignore_patterns("figures"))
    real_load_grid, real_load_artefacts = store.load_grid, report_mod.load_artefacts

    def load_grid_without_curves(path, **kwargs):
        grid = real_load_grid(path, curves=False)
        assert grid.curve_orig is None
        return grid

    def artefacts_without_offgrid(cfg):
        art = real_load_artefacts(cfg)
        art.offgrid = None
        return art

    monkeypatch.setattr(store, "load_grid", load_grid_without_curves)
    monkeypatch.setattr(report_mod, "load_artefacts", artefacts_without_offgrid)
    summary = report_mod.report(project / "config.toml")
    assert set(summary.skipped) == {"parity", "profiles"}
    assert "curves" in summary.skipped["profiles"]
    written = sorted(p.name for p in (project / "run" / "figures").iterdir())
    assert written == sorted(
        ["fig1_arf_correction.png", "fig2_t1_vs_t0.png", "fig4_posterior_corner.png"]
        + ["fig6_arf_ensemble.png", "summary.txt"]
    )
    assert "skipped" in (project / "run" / "figures" / "summary.txt").read_text()


def test_log_ticks_are_round_and_inside() -> None:
    from xrmodifier_hpc.figures.style import log_ticks

    for lo, hi in ((0.1, 12.0), (1.0, 12.0), (1.5, 10.5), (2.05, 2.45), (0.95, 1.25)):
        ticks = log_ticks(lo, hi, max_ticks=7)
        assert 2 <= len(ticks) <= 7, (lo, hi, ticks)
        assert all(lo <= t <= hi for t in ticks)
        assert all(len(f"{t:g}") <= 4 for t in ticks), ticks
    assert log_ticks(0.1, 12.0) == [0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0]


def test_without_a_mock_truth_nothing_is_marked(demo_run: DemoRun, tmp_path: Path) -> None:
    """Real observations have no truth sidecar: the report draws the rest, marks nothing."""
    from xrmodifier_hpc.stages.report import report

    project = tmp_path / "project"
    shutil.copytree(demo_run.config.parent, project, ignore=shutil.ignore_patterns("figures"))
    run = project / "run"
    (run / "observations.truth.json").unlink()
    result = json.loads((run / "result.json").read_text())
    result["observations"] = str(run / "observations.csv")  # this copy's, without a sidecar
    (run / "result.json").write_text(json.dumps(result))
    summary = report(project / "config.toml")
    assert not summary.skipped and len(summary.figures) == 6
    assert "no mock truth" in summary.notes["corner"]
    assert "theta_true" not in summary.notes["arf"]
    rows = summary.table.splitlines()[2:5]
    assert [r.split()[:2] for r in rows] == [["mu", "-"], ["sigma", "-"], ["A", "-"]]
    assert "true in 68%" not in summary.table
