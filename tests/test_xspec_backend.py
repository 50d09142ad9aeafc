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
# orchestration against a recording stand-in for PyXspec
# --------------------------------------------------------------------------------------------

# Toy semantics: fakeit draws Poisson(norm * 50) counts in each of 20 channels from a
# generator seeded by Xset.seed (expected counts when applyStats is False); a fit finds kT =
# true kT with the ARF the spectrum was faked with and 1.1 x true kT with any other ARF, so
# the tests can tell which ARF each fit used. Parameter.error answers from a queue of status
# strings (default all F). The stand-in records every call in ``xspec.CALLS``.
FAKE_XSPEC = """
import os
import numpy as np
from astropy.io import fits

CALLS = []
ENV_AT_IMPORT = {k: os.environ.get(k) for k in ("HOME", "PFILES", "HEADASNOQUERY",
                                                "HEADASPROMPT")}
ERROR_FLAGS = []
FAIL_FITS = [False]
N_CHAN = 20


class _Xset:
    chatter = 10
    logChatter = 10
    allowPrompting = True
    abund = "angr"
    xsect = "bcmc"
    version = ("2.1.0", "12.14.0")
    _seed = None

    @property
    def seed(self):
        return None

    def addModelString(self, key, value):
        CALLS.append(("modelstring", key, value))

    @seed.setter
    def seed(self, value):
        if not isinstance(value, int):
            raise Exception("Error: Seed argument must be an integer")
        CALLS.append(("seed", value))
        self._seed = value


Xset = _Xset()


class Parameter:
    def __init__(self, name, index, value):
        self.name, self.index, self._values, self.frozen = name, index, [value], False
        self.error = (0.0, 0.0, "FFFFFFFFF")

    @property
    def values(self):
        return list(self._values)

    @values.setter
    def values(self, value):
        if isinstance(value, (list, tuple)):
            self._values = [float(v) for v in value]
        else:
            self._values = [float(value)] + self._values[1:]


class _Comp:
    def __init__(self, names):
        self.parameterNames = names


class Model:
    COMPONENTS = {"wabs": ["nH"], "bremss": ["kT", "norm"], "apec": ["kT", "Abundanc",
                  "Redshift", "norm"]}

    def __init__(self, expr):
        self.expression = expr
        self.componentNames = []
        index = 1
        for name in expr.split("*"):
            if name not in self.COMPONENTS:
                raise Exception(f"Error: unknown model component {name}")
            comp = _Comp(self.COMPONENTS[name])
            for par in comp.parameterNames:
                setattr(comp, par, Parameter(par, index, 1.0))
                index += 1
            setattr(self, name, comp)
            self.componentNames.append(name)
        CALLS.append(("model", expr))
        AllModels.current = self

    def par(self, name):
        for comp in self.componentNames:
            if name in getattr(self, comp).parameterNames:
                return getattr(getattr(self, comp), name)


class _AllModels:
    current = None

    def clear(self):
        CALLS.append(("clear_models",))
        self.current = None


AllModels = _AllModels()


class FakeitSettings:
    def __init__(self, response="", arf="", background="", exposure="", correction="",
                 backExposure="", fileName=""):
        self.response, self.arf, self.exposure = response, arf, str(exposure)


class _Response:
    def __init__(self, spectrum):
        self._spectrum = spectrum

    @property
    def arf(self):
        return self._spectrum.arf

    @arf.setter
    def arf(self, name):
        CALLS.append(("arf", name))
        self._spectrum.arf = name
        self._spectrum.noticed_all = True  # conservative: make the caller re-apply the band


class Spectrum:
    def __init__(self, counts, exposure, arf, true_kt):
        self._counts, self.exposure, self.arf, self.true_kt = counts, exposure, arf, true_kt
        self.fake_arf = arf
        self.noticed_all = True
        self.response = _Response(self)

    def ignore(self, text):
        CALLS.append(("ignore", text))
        self.noticed_all = False

    @property
    def values(self):
        counts = self._counts if self.noticed_all else self._counts[2:-2]
        return tuple(counts / self.exposure)


class _AllData:
    spectrum = None

    def clear(self):
        CALLS.append(("clear_data",))
        self.spectrum = None

    def __call__(self, n):
        if n != 1 or self.spectrum is None:
            raise Exception("Error: no such spectrum")
        return self.spectrum

    def fakeit(self, nSpectra=1, settings=None, applyStats=True, filePrefix="", noWrite=False):
        model = AllModels.current
        kt, norm = model.par("kT").values[0], model.par("norm").values[0]
        area = fits.getdata(settings.arf, "SPECRESP")["SPECRESP"] if settings.arf else None
        CALLS.append(("fakeit", settings.arf, bool(applyStats), bool(noWrite), area))
        lam = np.full(N_CHAN, norm * 50.0)
        if applyStats:
            counts = np.random.default_rng(Xset._seed).poisson(lam).astype(float)
        else:
            counts = lam
        self.spectrum = Spectrum(counts, float(settings.exposure), settings.arf, kt)


AllData = _AllData()


class _Fit:
    query = "on"
    statMethod = "chi"
    statistic = 0.0
    _step = None

    def perform(self):
        spectrum = AllData.spectrum
        CALLS.append(("perform", spectrum.arf, spectrum.noticed_all))
        if FAIL_FITS[0]:
            raise Exception("Error: fit failed")
        kt = AllModels.current.par("kT")
        if kt.frozen:
            self.statistic = 100.0 + (kt.values[0] - self._best()) ** 2
            return
        kt.values = self._best()
        self.statistic = 100.0

    def _best(self):
        spectrum = AllData.spectrum
        return spectrum.true_kt * (1.0 if spectrum.arf == spectrum.fake_arf else 1.1)

    def error(self, text):
        CALLS.append(("error", text))
        kt = AllModels.current.par("kT")
        flags = ERROR_FLAGS.pop(0) if ERROR_FLAGS else "FFFFFFFFF"
        best = kt.values[0]
        kt.error = (best - 0.1 * best, best + 0.2 * best, flags)

    def steppar(self, text):
        CALLS.append(("steppar", text))
        words = text.split()
        lo, hi, steps = float(words[3]), float(words[4]), int(words[5])
        grid = np.geomspace(lo, hi, steps + 1) if words[1] == "log" else np.linspace(
            lo, hi, steps + 1)
        best = self._best()
        self._step = (grid, 100.0 + (grid - best) ** 2)

    def stepparResults(self, arg):
        if arg == "statistic":
            return list(self._step[1])
        return list(self._step[0])


Fit = _Fit()
"""


@pytest.fixture
def fake_pyxspec(tmp_path, monkeypatch):
    """Put the recording stand-in on sys.path as ``xspec`` and give it a HEADAS."""
    package = tmp_path / "fake_site" / "xspec"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(FAKE_XSPEC)
    monkeypatch.syspath_prepend(str(package.parent))
    monkeypatch.setenv("HEADAS", str(tmp_path / "heasoft"))
    monkeypatch.setenv("XRM_SCRATCH", str(tmp_path / "scratch"))
    monkeypatch.setenv("HOME", "/original/home")
    monkeypatch.delenv("PFILES", raising=False)
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
    assert xspec.Xset.chatter == 0 and xspec.Fit.statMethod == "cstat"
    assert xspec.Fit.query == "yes" and xspec.Xset.abund == "angr" and xspec.Xset.xsect == "vern"
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
    # profile curves come from steppar on the fit grid, minimum at the best fit
    grid = backend.settings.fit_tgrid
    best_j = np.argmin(res.curve_mod, axis=-1)
    np.testing.assert_allclose(grid[best_j], res.t_fit_mod, rtol=0.1)

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
    # no modified ARF is left behind after a point
    assert not any(backend._arf_dir.iterdir())

    backend.close()
    assert not scratch.exists()
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
    import xspec

    with _backend(small_config, realisations=1) as backend:
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
    import xspec

    with _backend(small_config, realisations=1, mode="asimov", min_counts=1e9) as backend:
        theta, t_true, index = _points(small_config, [0, 1])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(2))
        calls = list(xspec.CALLS)
    assert all(c[2] is False for c in calls if c[0] == "fakeit")
    assert not any(c[0] == "perform" for c in calls)
    assert np.all(res.status == base.STATUS_TOO_FEW_COUNTS)
    assert np.all(np.isnan(res.t_fit_orig)) and np.all(np.isnan(res.curve_mod))
    np.testing.assert_allclose(res.counts, 16 * 50.0)


def test_error_flags_retry_and_failures(fake_pyxspec, small_config):
    import xspec

    with _backend(small_config, realisations=1, curves=False) as backend:
        theta, t_true, index = _points(small_config, [0])
        # a new minimum during the first error search: refit, search again, then converged
        xspec.ERROR_FLAGS[:] = ["TFFFFFFFF", "FFFFFFFFF", "FFFTFFFFF"]
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        assert [c[0] for c in xspec.CALLS].count("error") == 3
        assert res.status[0, 0, 1] == base.STATUS_OK  # modified fit (first)
        assert res.status[0, 0, 0] == base.STATUS_ERROR_AT_BOUND  # original fit
        assert res.curve_orig is None
        # an XSPEC exception inside a fit is a status, not a crash
        xspec.FAIL_FITS[0] = True
        res = backend.run(theta, t_true, index, norm=np.ones(1))
        assert np.all(res.status == base.STATUS_FAILED)
        assert np.all(np.isnan(res.t_fit_mod)) and res.counts[0, 0] > 0


def test_irregular_fit_grid_profiles_point_by_point(fake_pyxspec, small_config):
    import xspec

    text = edit_config(
        small_config.read_text(),
        "simulation",
        "fit_tgrid",
        "{ values = [0.5, 0.8, 1.0, 1.7, 2.0, 3.3, 5.0, 9.0, 20.0] }",
    )
    small_config.write_text(text)
    with _backend(small_config, realisations=1) as backend:
        theta, t_true, index = _points(small_config, [2])
        xspec.CALLS.clear()
        res = backend.run(theta, t_true, index, norm=np.ones(1))
    assert not any(c[0] == "steppar" for c in xspec.CALLS)
    grid = np.array([0.5, 0.8, 1.0, 1.7, 2.0, 3.3, 5.0, 9.0, 20.0])
    np.testing.assert_allclose(res.curve_mod[0, 0], 100.0 + (grid - t_true[0]) ** 2)


def test_model_xspec_cannot_use_is_user_error_and_cleans_up(fake_pyxspec, small_config):
    """A model with two temperatures passes no config check of ours, but the backend
    cannot tell which to step: refused, and the half-built scratch folder is gone."""
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
        ("wabs*bremss*bremss", "2 parameters named 'kT'"),
        ("wabs*nosuch", "does not accept"),
    ):
        with pytest.raises(UserError, match=message):
            XspecBackend(inst, None, modifier, settings, expression=expression)
        scratch = fake_pyxspec / "scratch"
        assert not scratch.exists() or not any(scratch.iterdir())


def test_apecroot_from_environment(fake_pyxspec, small_config, monkeypatch):
    import xspec

    monkeypatch.setenv("XRM_APECROOT", "/atomdb/apec_v3.1.3")
    with _backend(small_config):
        assert ("modelstring", "APECROOT", "/atomdb/apec_v3.1.3") in xspec.CALLS


def test_missing_headas_is_user_error(fake_pyxspec, small_config, monkeypatch):
    from xrmodifier_hpc.errors import UserError

    monkeypatch.delenv("HEADAS")
    with pytest.raises(UserError, match="HEADAS"):
        _backend(small_config)
