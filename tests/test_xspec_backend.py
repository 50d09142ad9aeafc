"""The PyXspec backend, as far as it can be exercised without XSPEC.

Real XSPEC runs only inside the container (HEASoft cannot be installed here); there the
backend contract tests (tests/test_backend_contract.py) run it for real. Here we test:

* the plain helpers (seed derivation, scratch layout and its environment, band and steppar
  strings, status mapping) directly;
* the import-failure path through ``make_backend`` and the CLI (one line, exit 2), and that
  choosing ``native`` never imports the module;
* the orchestration of PyXspec calls against a RECORDING STAND-IN for PyXspec: a small
  ``xspec`` package written to a temporary folder that implements the documented calls the
  backend uses (Xset, Fit, AllData, AllModels, Model, FakeitSettings, Spectrum.response.arf)
  with toy numbers, and records what it was asked. It proves the order of operations (scratch
  environment before import, seed per realisation, band after every fakeit and ARF swap, the
  T1 fit on the original ARF), shapes, statuses and cleanup — not XSPEC's physics.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_config, run_cli

from xrmodifier_hpc.backends import base
from xrmodifier_hpc.backends.xspec import (
    ScratchLayout,
    band_ignore,
    fit_status,
    interval_distances,
    realisation_seeds,
    steppar_command,
    xspec_environment,
    xspec_expression,
)
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.runtime.environment import process_scratch_dir

# --------------------------------------------------------------------------------------------
# plain helpers
# --------------------------------------------------------------------------------------------


def test_realisation_seeds_depend_only_on_point():
    a = realisation_seeds(123, 7, 4, 0)
    assert a.dtype == np.int64 and a.shape == (4,)
    assert np.all((a >= 1) & (a < 2**31 - 1))
    np.testing.assert_array_equal(a, realisation_seeds(123, 7, 4, 0))
    # the first realisations do not change when more are asked for
    np.testing.assert_array_equal(a[:2], realisation_seeds(123, 7, 2, 0))
    for other in (
        realisation_seeds(124, 7, 4, 0),
        realisation_seeds(123, 8, 4, 0),
        realisation_seeds(123, 7, 4, 1),
    ):
        assert not np.array_equal(a, other)


def test_process_scratch_dir_is_unique_per_rank_job_and_process(monkeypatch, tmp_path):
    for name in ("PMI_RANK", "SLURM_PROCID", "SLURM_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    local = process_scratch_dir("xspec", tmp_path)
    assert local.parent == tmp_path and f"-p{os.getpid()}" in local.name
    assert "local-r0" in local.name
    monkeypatch.setenv("PMI_RANK", "3")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    ranked = process_scratch_dir("xspec", tmp_path)
    assert ranked.name == f"xrmodifier-xspec-4242_5-r3-p{os.getpid()}"
    monkeypatch.setenv("XRM_SCRATCH", str(tmp_path / "node"))
    assert process_scratch_dir("xspec").parent == tmp_path / "node"


def test_scratch_layout_create_and_remove(tmp_path):
    layout = ScratchLayout(tmp_path / "s")
    layout.create()
    for sub in (layout.home, layout.pfiles, layout.inputs):
        assert sub.is_dir() and sub.parent == layout.root
    layout.arf_dir(0).mkdir()
    (layout.arf_dir(0) / "p.arf").write_text("x")
    layout.remove()
    assert not layout.root.exists()
    layout.remove()  # idempotent


def test_xspec_environment_keeps_system_pfiles(tmp_path):
    layout = ScratchLayout(tmp_path)
    env = xspec_environment(layout, {"PFILES": "/home/u/pfiles;/opt/heasoft/syspfiles"})
    assert env["PFILES"] == f"{layout.pfiles};/opt/heasoft/syspfiles"
    assert env["HOME"] == str(layout.home)
    assert env["HEADASNOQUERY"] == "" and env["HEADASPROMPT"] == "/dev/null"
    env = xspec_environment(layout, {"HEADAS": "/opt/heasoft/x86_64"})
    assert env["PFILES"] == f"{layout.pfiles};/opt/heasoft/x86_64/syspfiles"


def test_band_and_steppar_strings():
    assert band_ignore((0.5, 7)) == "**-0.500000 7.000000-**"
    log_grid = np.geomspace(0.5, 30.0, 48)
    assert steppar_command(log_grid, 2) == "best log 2 0.5 30.0 47"
    assert steppar_command(np.linspace(1.0, 4.0, 7), 5) == "best nolog 5 1.0 4.0 6"
    assert steppar_command(np.array([1.0, 2.0, 2.5, 7.0]), 2) is None


def test_table_model_paths_are_made_absolute(tmp_path):
    assert xspec_expression("wabs*bremss", tmp_path) == "wabs*bremss"
    assert xspec_expression("wabs*bremss{xspec}", tmp_path) == "wabs*bremss"
    with pytest.raises(UserError, match="only in the native backend"):
        xspec_expression("wabs*bremss{smooth}", tmp_path)
    assert (
        xspec_expression("wabs*atable{tables/apec.fits}", tmp_path)
        == f"wabs*atable{{{tmp_path / 'tables' / 'apec.fits'}}}"
    )
    assert xspec_expression("wabs(atable{/abs/t.fits})", tmp_path) == "wabs(atable{/abs/t.fits})"


def test_fit_status_from_error_flags():
    bounds = (0.5, 30.0)
    assert fit_status(3.0, bounds, "FFFFFFFFF") == base.STATUS_OK
    assert fit_status(0.4995, bounds, "FFFFFFFFF") & base.STATUS_AT_GRID_BOUND
    assert fit_status(30.02, bounds, "FFFFFFFFF") & base.STATUS_AT_GRID_BOUND
    assert fit_status(3.0, bounds, "FFFTFFFFF") == base.STATUS_ERROR_AT_BOUND
    assert fit_status(3.0, bounds, "FFFFTFFFF") == base.STATUS_ERROR_AT_BOUND
    for flags in ("TFFFFFFFF", "FTFFFFFFF", "FFTFFFFFF", "FFFFFFTFF", "FFFFFFFTF"):
        assert fit_status(3.0, bounds, flags) == base.STATUS_NOT_CONVERGED, flags
    assert fit_status(float("nan"), bounds, "FFFFFFFFF") == base.STATUS_FAILED


def test_interval_distances():
    assert interval_distances(3.0, 2.5, 3.75, "FFFFFFFFF") == (0.5, 0.75)
    lo, hi = interval_distances(3.0, 0.0, 3.75, "FFFFFFTFF")
    assert np.isnan(lo) and hi == 0.75


# --------------------------------------------------------------------------------------------
# import-failure path
# --------------------------------------------------------------------------------------------


def _pyxspec_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("xspec") is not None


@pytest.mark.skipif(_pyxspec_importable(), reason="PyXspec is importable here")
def test_make_backend_without_pyxspec_is_one_line_user_error(small_config):
    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.errors import UserError

    cfg = load_config(small_config)
    with pytest.raises(UserError) as info:
        make_backend(cfg, name="xspec")
    message = str(info.value)
    assert "\n" not in message
    assert "PyXspec" in message and "container" in message and "native" in message


@pytest.mark.skipif(_pyxspec_importable(), reason="PyXspec is importable here")
def test_cli_with_xspec_backend_outside_container_exits_2(small_config):
    from xrmodifier_hpc.cli import build_parser

    assert "simulate" in build_parser()._subparsers._group_actions[0].choices
    small_config.write_text(
        edit_config(small_config.read_text(), "simulation", "backend", '"xspec"')
    )
    proc = run_cli("simulate", str(small_config), timeout=120)
    assert proc.returncode == 2, proc.stderr
    # the backend starts before the stage announces anything: the error is the only line
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xrmodifier: error:"), proc.stderr
    assert "PyXspec" in lines[0] and "container" in lines[0]
    assert "Traceback" not in proc.stderr


def test_native_choice_never_imports_the_xspec_module(small_config):
    code = textwrap.dedent(
        f"""
        import sys
        from xrmodifier_hpc.config import load_config
        from xrmodifier_hpc.backends import make_backend
        try:
            make_backend(load_config({str(small_config)!r}), name="native").close()
        except ImportError:
            pass  # the native backend may not exist yet; the point is what got imported
        print("xrmodifier_hpc.backends.xspec" in sys.modules)
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "False"


# --------------------------------------------------------------------------------------------
# orchestration against a stand-in for PyXspec (tests/fake_pyxspec/xspec)
# --------------------------------------------------------------------------------------------

FAKE_SITE = Path(__file__).resolve().parent / "fake_pyxspec"


@pytest.fixture
def fake_pyxspec(tmp_path, monkeypatch):
    """Put the stand-in on sys.path as ``xspec`` (fresh for every test), give it a HEADAS."""
    monkeypatch.syspath_prepend(str(FAKE_SITE))
    monkeypatch.setenv("HEADAS", str(tmp_path / "heasoft"))
    monkeypatch.setenv("XRM_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("HOME", "/original/home")
    monkeypatch.delenv("PFILES", raising=False)
    monkeypatch.delenv("FAKE_XSPEC_NO_ATOMDB", raising=False)
    from xrmodifier_hpc.backends import xspec as backend_module

    monkeypatch.setattr(backend_module, "_session", None)
    sys.modules.pop("xspec", None)
    yield tmp_path
    sys.modules.pop("xspec", None)


def _backend(config: Path, **overrides):
    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.config import load_config

    return make_backend(load_config(config), name="xspec", **overrides)


def _points(config: Path, indices):
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.config.grid import Grid

    grid = Grid.from_config(load_config(config))
    theta, t_true = grid.points(indices)
    return theta, t_true, np.asarray(indices)


def test_orchestration_over_recording_pyxspec(fake_pyxspec, small_config):
    backend = _backend(small_config, realisations=2)
    import xspec

    layout_root = fake_pyxspec / "scratch"
    (scratch,) = list(layout_root.iterdir())
    # XSPEC saw its own HOME and PFILES from the moment it was imported
    assert xspec.ENV_AT_IMPORT["HOME"] == str(scratch / "home")
    assert xspec.ENV_AT_IMPORT["PFILES"].startswith(f"{scratch / 'pfiles'};")
    assert xspec.ENV_AT_IMPORT["HEADASNOQUERY"] == ""
    assert xspec.ENV_AT_IMPORT["HEADASPROMPT"] == "/dev/null"
    assert xspec.Xset.chatter == 0 and xspec.Xset.logChatter == 0
    assert xspec.Xset.allowPrompting is False and xspec.Fit.statMethod == "cstat"
    assert xspec.Fit.query == "yes" and xspec.Xset.abund == "angr" and xspec.Xset.xsect == "vern"
    assert ("cmd", ("autosave", "off")) in xspec.CALLS
    assert backend.version() == "XSPEC 12.14.0 (PyXspec 2.1.0)"

    indices = [5, 40]
    theta, t_true, index = _points(small_config, indices)
    xspec.CALLS.clear()
    res = backend.run(theta, t_true, index, norm=np.array([2.0, 3.0]))
    res.check_shapes(2, 2, backend.settings.fit_tgrid.size)

    # the modified fit recovers T_true, the original-ARF fit is the (toy) biased one
    np.testing.assert_allclose(res.t_fit_mod, np.repeat(t_true[:, None], 2, 1))
    np.testing.assert_allclose(res.t_fit_orig, 1.1 * np.repeat(t_true[:, None], 2, 1))
    assert np.all(res.status == base.STATUS_OK)
    np.testing.assert_allclose(res.err_mod[..., 0], 0.1 * res.t_fit_mod)
    np.testing.assert_allclose(res.err_mod[..., 1], 0.2 * res.t_fit_mod)
    np.testing.assert_array_equal(res.norm, [2.0, 3.0])
    # counts are those noticed in the band (16 of the 20 toy channels)
    assert np.all(res.counts > 0) and np.all(res.counts < 20 * 3.0 * 50 * 2)
    # profile curves are steppar's scan on the fit grid
    grid = backend.settings.fit_tgrid
    np.testing.assert_allclose(res.curve_mod[0, 0], xspec.toy_statistic(grid, t_true[0]))

    calls = xspec.CALLS
    seeds = [c[1] for c in calls if c[0] == "seed"]
    expected = np.concatenate(
        [realisation_seeds(backend.settings.seed, k, 2, backend.settings.stream) for k in indices]
    )
    assert seeds == list(expected)
    fakeits = [i for i, c in enumerate(calls) if c[0] == "fakeit"]
    assert len(fakeits) == 4
    for i in fakeits:
        _, arf, apply_stats, no_write, area = calls[i]
        assert apply_stats and no_write and arf.endswith(".arf")
        assert calls[i - 1][0] == "seed"  # the seed is set right before each fakeit
        assert calls[i + 1] == ("ignore", "**-0.500000 7.000000-**")  # band after fakeit
    # the modified ARF handed to fakeit is the target ARF times m(E; theta)
    inst, mod = backend.instrument, backend.modifier
    for n, i in enumerate(fakeits):
        expect = (inst.area * mod.evaluate(inst.e_mid, theta[n // 2])).astype(np.float32)
        np.testing.assert_array_equal(calls[i][4], expect)
    # every fit runs with the band applied; each realisation fits the modified ARF first,
    # then the original ARF (after the swap, with the band re-applied)
    performs = [c for c in calls if c[0] == "perform"]
    assert all(not noticed_all for _, _, noticed_all in performs)
    swaps = [i for i, c in enumerate(calls) if c[0] == "arf"]
    assert len(swaps) == 4
    for i in swaps:
        assert calls[i][1] == backend._arf and calls[i + 1][0] == "ignore"
    # each fit: a first fit, the C(T) scan, then the fit from the scan's best node
    steps = [c[0] for c in calls if c[0] in ("perform", "steppar", "error")]
    assert steps[:5] == [
        "perform",
        "steppar",
        "perform",
        "perform",
        "error",
    ]
    # no modified ARF is left behind after a point
    assert not any(backend._arf_dir.iterdir())
    # autosave is off: XSPEC's autosave file stays empty, so its exit handler removes it
    assert Path(xspec.AUTOSAVE_FILE).stat().st_size == 0

    backend.close()
    # the work files are gone; HOME stays for XSPEC's exit handler (~/.xspec/cache)
    assert sorted(p.name for p in scratch.iterdir()) == ["home"]
    assert (scratch / "home" / ".xspec" / "cache").is_dir()
    assert os.environ["HOME"] == "/original/home" and "PFILES" not in os.environ


def test_results_do_not_depend_on_batching(fake_pyxspec, small_config):
    with _backend(small_config, realisations=3) as backend:
        theta, t_true, index = _points(small_config, [1, 2, 3])
        together = backend.run(theta, t_true, index)
        alone = backend.run(theta[1:2], t_true[1:2], index[1:2])
    np.testing.assert_array_equal(together.counts[1], alone.counts[0])
    np.testing.assert_array_equal(together.t_fit_orig[1], alone.t_fit_orig[0])
    assert not np.array_equal(together.counts[0], together.counts[1])


def test_norm_from_counts_uses_original_response_asimov(fake_pyxspec, small_config):
    with _backend(small_config, realisations=1) as backend:
        import xspec

        theta, t_true, index = _points(small_config, [0])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index)
        target_counts = backend.settings.counts
        calls = list(xspec.CALLS)
    first = next(c for c in calls if c[0] == "fakeit")
    assert first[1] == backend._arf and first[2] is False  # original ARF, no noise
    # toy asimov at norm 1: 50 counts in each of the 16 noticed channels
    np.testing.assert_allclose(res.norm, [target_counts / (16 * 50.0)])


def test_asimov_mode_and_too_few_counts(fake_pyxspec, small_config):
    with _backend(small_config, realisations=1, mode="asimov", min_counts=1e9) as backend:
        import xspec

        theta, t_true, index = _points(small_config, [0, 1])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(2))
        calls = list(xspec.CALLS)
    assert all(c[2] is False for c in calls if c[0] == "fakeit")
    assert not any(c[0] == "perform" for c in calls)
    assert np.all(res.status == base.STATUS_TOO_FEW_COUNTS)
    assert np.all(np.isnan(res.t_fit_orig)) and np.all(np.isnan(res.curve_mod))
    np.testing.assert_allclose(res.counts, 16 * 50.0)


def test_new_best_fit_is_refitted_until_the_error_run_is_clean(fake_pyxspec, small_config):
    with _backend(small_config, realisations=1, curves=False) as backend:
        import xspec

        theta, t_true, index = _points(small_config, [0])
        # a new minimum during the first error search: refit, search again, then clean; the
        # second fit's search runs into a hard limit
        xspec.ERROR_FLAGS[:] = ["TFFFFFFFF", "FFFFFFFFF", "FFFTFFFFF"]
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        names = [c[0] for c in xspec.CALLS]
        assert names.count("error") == 3
        # the refit happens right after the search that found the new minimum
        names = [n for n in names if n in ("perform", "error", "steppar")]
        first_error = names.index("error")
        assert names[first_error + 1 : first_error + 3] == ["perform", "error"]
        assert res.status[0, 0, 1] == base.STATUS_REFITTED  # modified fit (first)
        assert base.describe_status(int(res.status[0, 0, 1])) == ["refitted"]
        assert res.status[0, 0, 0] == base.STATUS_ERROR_AT_BOUND  # original fit
        assert res.curve_orig is None
        # an XSPEC exception inside a fit is a status, not a crash
        xspec.FAIL_FITS[0] = True
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        assert np.all(res.status == base.STATUS_FAILED)
        assert np.all(np.isnan(res.t_fit_mod)) and res.counts[0, 0] > 0


def test_fit_starts_from_the_best_node_of_the_scan(fake_pyxspec, small_config):
    """The seam: a local minimum between the start and the global minimum catches XSPEC's
    gradient fit; the fit from the scan's best node reaches the global minimum, and nothing
    is flagged."""
    with _backend(small_config, realisations=1, mode="asimov") as backend:
        import xspec  # imported by the backend, in its scratch HOME

        xspec.SEAM[0] = (1.13, 1.18)  # local minimum at 1.13 m, global at 1.18 m
        theta, t_true, index = _points(small_config, [12])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        ended = [c[1] for c in xspec.CALLS if c[0] == "perform_at" and not c[2]]
    m_mod, m_orig = t_true[0], 1.1 * t_true[0]  # the toy's plain minima, modified/original ARF
    # the first fit from T_true stalls at the local minimum, as XSPEC's did at the seam ...
    assert ended[0] == pytest.approx(1.13 * m_mod)
    # ... the fit from the scan's best node ends at the global one
    assert res.t_fit_mod[0, 0] == pytest.approx(1.18 * m_mod)
    assert res.t_fit_orig[0, 0] == pytest.approx(1.18 * m_orig)
    assert np.all(res.status == base.STATUS_OK)
    # and no error search had to find a new minimum
    assert not [c for c in xspec.CALLS if c[0] == "error"][2:]


def test_fit_that_stays_above_the_scan_is_not_converged(fake_pyxspec, small_config):
    with _backend(small_config, realisations=1, curves=False) as backend:
        import xspec

        xspec.STUCK[0] = True  # the fit never moves and every error search finds a new minimum
        theta, t_true, index = _points(small_config, [3])
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        errors = [c for c in xspec.CALLS if c[0] == "error"]
    from xrmodifier_hpc.backends.xspec import ERROR_RETRIES

    assert len(errors) == 2 * (ERROR_RETRIES + 1)
    for slot in (0, 1):
        bits = base.describe_status(int(res.status[0, 0, slot]))
        assert "not_converged" in bits and "refitted" in bits


def test_irregular_fit_grid_profiles_point_by_point(fake_pyxspec, small_config):
    text = edit_config(
        small_config.read_text(),
        "simulation",
        "fit_tgrid",
        "{ values = [0.5, 0.8, 1.0, 1.7, 2.0, 3.3, 5.0, 9.0, 20.0] }",
    )
    small_config.write_text(text)
    with _backend(small_config, realisations=1) as backend:
        import xspec

        theta, t_true, index = _points(small_config, [2])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(1))
    assert not any(c[0] == "steppar" for c in xspec.CALLS)
    grid = np.array([0.5, 0.8, 1.0, 1.7, 2.0, 3.3, 5.0, 9.0, 20.0])
    np.testing.assert_allclose(res.curve_mod[0, 0], xspec.toy_statistic(grid, t_true[0]))
    assert res.t_fit_mod[0, 0] == pytest.approx(t_true[0])


def test_model_xspec_cannot_use_is_user_error_and_cleans_up(fake_pyxspec, small_config):
    """A model with two temperatures passes no config check of ours, but the backend
    cannot tell which to step: refused, and the half-built work files are gone."""
    from xrmodifier_hpc.backends.base import SimulationSettings
    from xrmodifier_hpc.backends.xspec import XspecBackend
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.errors import UserError
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.physics.modifiers import get_modifier

    cfg = load_config(small_config)
    inst = Instrument.load(cfg.instruments.target.arf, cfg.instruments.target.rmf)
    modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
    settings = SimulationSettings.from_config(cfg)
    for expression, message in (
        ("wabs*bremss*bremss", "2 parameters named 'kT': give one of bremss.kT, bremss_2.kT"),
        ("wabs*nosuch", "does not accept"),
        ("apec", "no parameter 'nH'"),  # apec has no nH: the frozen nH is unknown
    ):
        with pytest.raises(UserError, match=message) as info:
            XspecBackend(inst, None, modifier, settings, expression=expression)
        assert "\n" not in str(info.value)
        for folder in (fake_pyxspec / "scratch").glob("*"):
            assert sorted(p.name for p in folder.iterdir()) == ["home", "xspec.log"]


def test_any_xspec_expression_with_xspec_parameter_names(fake_pyxspec, small_config):
    """tbabs*apec, phabs*mekal, tbabs*bremss: parameters set and frozen by XSPEC's names,
    qualified names where two components share one."""
    text = small_config.read_text()
    text = edit_config(text, "simulation", "backend", '"xspec"')
    for model, params in (
        ("tbabs*apec", "{ nH = 0.05, Abundanc = 0.3, Redshift = 0.05 }"),
        (
            "phabs*mekal",
            '{ "phabs.nH" = 0.05, "mekal.nH" = 1.0, Abundanc = 0.3, Redshift = 0.0, switch = 1 }',
        ),
        ("tbabs*bremss", "{ nH = 0.05 }"),
    ):
        small_config.write_text(
            edit_config(
                edit_config(text, "source", "model", f'"{model}"'), "source", "params", params
            )
        )
        with _backend(small_config, realisations=1, mode="asimov") as backend:
            import xspec

            model_obj = xspec.AllModels.current
            frozen = {
                f"{c}.{p}": getattr(getattr(model_obj, c), p)
                for c in model_obj.componentNames
                for p in getattr(model_obj, c).parameterNames
            }
            theta, t_true, index = _points(small_config, [7])
            res = backend.run(theta, t_true, index)
        assert res.status[0, 0, 1] == base.STATUS_OK
        assert res.t_fit_mod[0, 0] == pytest.approx(t_true[0])
        if model == "tbabs*apec":
            assert frozen["apec.Abundanc"].values[0] == 0.3 and frozen["apec.Abundanc"].frozen
            assert frozen["tbabs.nH"].values[0] == 0.05 and not frozen["apec.kT"].frozen
        if model == "phabs*mekal":
            assert frozen["phabs.nH"].values[0] == 0.05 and frozen["mekal.nH"].values[0] == 1.0


def test_find_parameter_names():
    from types import SimpleNamespace

    from xrmodifier_hpc.backends.xspec import find_parameter

    def comp(*names):
        return SimpleNamespace(parameterNames=list(names), **{n: f"<{n}>" for n in names})

    model = SimpleNamespace(
        componentNames=["phabs", "mekal"],
        phabs=comp("nH"),
        mekal=comp("kT", "nH", "norm"),
    )
    assert find_parameter(model, "kT", "m") == "<kT>"
    assert find_parameter(model, "mekal.nH", "m") == "<nH>"
    with pytest.raises(UserError, match="2 parameters named 'nH': give one of phabs.nH, mekal.nH"):
        find_parameter(model, "nH", "m")
    with pytest.raises(UserError, match=r"no parameter 'kt' \(did you mean 'kT'\?\)"):
        find_parameter(model, "kt", "m")


def test_apecroot_from_environment(fake_pyxspec, small_config, monkeypatch):
    monkeypatch.setenv("XRM_APECROOT", "/atomdb/apec_v3.1.3")
    with _backend(small_config):
        import xspec

        assert ("modelstring", "APECROOT", "/atomdb/apec_v3.1.3") in xspec.CALLS


def test_missing_headas_is_user_error(fake_pyxspec, small_config, monkeypatch):
    monkeypatch.delenv("HEADAS")
    with pytest.raises(UserError, match="HEADAS"):
        _backend(small_config)


# --------------------------------------------------------------------------------------------
# XSPEC's output goes to the rank's log; a model without photons is refused
# --------------------------------------------------------------------------------------------


def test_xspec_output_goes_to_the_log_not_the_terminal(fake_pyxspec, small_config, capfd):
    """XSPEC writes to file descriptors 1 and 2 from C++; the backend points both at
    WORKDIR/logs/xspec-rank0.log while XSPEC works."""
    with _backend(small_config, realisations=1, curves=False) as backend:
        import xspec

        log_path = backend.log_path
        theta, t_true, index = _points(small_config, [0])
        xspec.ERROR_FLAGS[:] = ["TFFFFFFFF"]
        print("product line")
        backend.run(theta, t_true, index, norm=np.ones(1))
    out, err = capfd.readouterr()
    assert out == "product line\n" and err == ""
    assert log_path == small_config.parent / "run" / "logs" / "xspec-rank0.log"
    assert "New best fit found" in log_path.read_text()


def test_model_without_photons_is_refused_at_the_first_point(
    fake_pyxspec, small_config, monkeypatch
):
    monkeypatch.setenv("FAKE_XSPEC_NO_ATOMDB", "1")
    _xspec_config(small_config, "tbabs*apec", "{ nH = 0.05, Abundanc = 0.3, Redshift = 0.0 }")
    with _backend(small_config, realisations=1) as backend:
        theta, t_true, index = _points(small_config, [0])
        for norm in (None, np.ones(1)):  # counts from the norm's fakeit, or a given norm
            with pytest.raises(UserError, match="gives no photons .* in 0.5-7 keV") as info:
                backend.run(theta, t_true, index, norm=norm)
            assert "AtomDB" in str(info.value) and "\n" not in str(info.value)


def _xspec_config(config: Path, model: str, params: str) -> Path:
    text = edit_config(config.read_text(), "simulation", "backend", '"xspec"')
    text = edit_config(text, "source", "model", f'"{model}"')
    config.write_text(edit_config(text, "source", "params", params))
    return config


def _fake_env(tmp_path: Path, **extra) -> dict[str, str]:
    return {
        "PYTHONPATH": os.pathsep.join([str(FAKE_SITE), os.environ.get("PYTHONPATH", "")]),
        "HEADAS": str(tmp_path / "heasoft"),
        "XRM_SCRATCH": str(tmp_path / "scratch"),
        "HOME": str(tmp_path / "user-home"),
        **extra,
    }


def test_check_asks_xspec(fake_pyxspec, small_config):
    import json

    config = _xspec_config(small_config, "tbabs*apec", "{ nH = 0.05, Abundanc = 0.3 }")
    proc = run_cli("check", str(config), env=_fake_env(fake_pyxspec))
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["model_check"].startswith("xspec: XSPEC 12.14.0 (PyXspec 2.1.0) accepts")
    assert "kT, Abundanc, Redshift, norm" in summary["model_check"]
    assert proc.stderr == ""
    for params, message in (
        ("{ nH = 0.05, Abundance = 0.3 }", "no parameter 'Abundance' (did you mean 'Abundanc'?)"),
        ("{ nH = 0.05, nosuch = 1 }", "no parameter 'nosuch'"),
    ):
        config = _xspec_config(small_config, "tbabs*apec", params)
        proc = run_cli("check", str(config), env=_fake_env(fake_pyxspec))
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0] and "[source.model]" in lines[0]
    config = _xspec_config(small_config, "tbabs*apec", "{ nH = 0.05 }")
    proc = run_cli("check", str(config), env=_fake_env(fake_pyxspec, FAKE_XSPEC_NO_ATOMDB="1"))
    assert proc.returncode == 2 and proc.stdout == ""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "gives no photons" in lines[0], proc.stderr
    config = _xspec_config(small_config, "tbabs*nosuch", "{ nH = 0.05 }")
    proc = run_cli("check", str(config), env=_fake_env(fake_pyxspec))
    assert proc.returncode == 2 and "XSPEC does not accept the model" in proc.stderr


def test_check_without_pyxspec_says_xspec_did_not_check(small_config):
    import json

    if _pyxspec_importable():
        pytest.skip("PyXspec is importable here")
    config = _xspec_config(small_config, "tbabs*(apec+gaussian)", "{ nH = 0.05 }")
    proc = run_cli("check", str(config))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["model_check"].startswith("xspec: not checked here")
    # what cannot be an XSPEC expression is refused by the config itself
    config = _xspec_config(small_config, "tbabs*(apec", "{ nH = 0.05 }")
    proc = run_cli("check", str(config))
    assert proc.returncode == 2 and "unbalanced parentheses" in proc.stderr


def test_simulate_prints_only_the_products_lines(fake_pyxspec, small_config):
    """A whole ``xrmodifier simulate`` with the XSPEC stand-in in a fresh process: XSPEC's
    start-up, warnings and exit handler print nothing on the terminal."""
    config = _xspec_config(small_config, "tbabs*apec", "{ nH = 0.05, Abundanc = 0.3 }")
    text = edit_config(config.read_text(), "simulation", "realisations", "1")
    text = edit_config(text, "temperatures", "t_true", "{ values = [2.0, 5.0] }")
    config.write_text(text)
    proc = run_cli("simulate", str(config), env=_fake_env(fake_pyxspec), timeout=600)
    assert proc.returncode == 0, proc.stderr
    out_lines = proc.stdout.strip().splitlines()
    assert len(out_lines) == 1 and "points done" in out_lines[0], proc.stdout
    for line in proc.stderr.splitlines():
        # the stage's own progress and summary lines, nothing of XSPEC's
        assert re.match(
            r"^(\d\d:\d\d:\d\d )?(simulate|threads:|off-grid check|\s*\d+/\d+|xrmodifier)", line
        ) or ("points" in line), proc.stderr
    for stray in ("Creating a $HOME/.xspec", "New best fit", "mv:", "xautosav", "Error"):
        assert stray not in proc.stdout + proc.stderr
    log = (config.parent / "run" / "logs" / "xspec-rank0.log").read_text()
    assert "Creating" not in log  # the scratch HOME held .xspec/cache before the import
