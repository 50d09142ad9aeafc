"""The native backend on the real ACIS response: recovery, pulls, exactness, engines, bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.optimize import minimize_scalar

from xrmodifier_hpc.backends.base import (
    STATUS_AT_GRID_BOUND,
    STATUS_ERROR_AT_BOUND,
    STATUS_FAILED,
    STATUS_TOO_FEW_COUNTS,
    SimulationSettings,
)
from xrmodifier_hpc.backends.native import NativeBackend, SpectrumFitter
from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.physics.fitstat import cstat_at_norm
from xrmodifier_hpc.physics.modifiers import get_modifier
from xrmodifier_hpc.physics.spectra import (
    Component,
    Model,
    ModelError,
    Wabs,
    parse_model,
    trapezoid_bins,
)

GAUSSIAN = get_modifier("gaussian")
IDENTITY = GAUSSIAN.identity()
BUMP = np.array([1.5, 0.3, 0.2])  # +20% area near 1.5 keV


@pytest.fixture(scope="module")
def acis(responses_dir) -> Instrument:
    return Instrument.load(
        responses_dir / "chandra_acis_9774.arf", responses_dir / "chandra_acis_9774.rmf"
    )


@pytest.fixture(scope="module")
def bremss_model() -> Model:
    return parse_model("wabs*bremss")


def settings(**kw) -> SimulationSettings:
    base = dict(
        exposure=5e4,
        band=(0.5, 7.0),
        realisations=1,
        seed=11,
        fit_tgrid=np.geomspace(0.5, 40.0, 96),
        counts=2e4,
        source_params={"nH": 0.05},
        min_counts=50.0,
    )
    base.update(kw)
    return SimulationSettings(**base)


class SmoothContinuum(Component):
    """exp(-E/kT) / (E sqrt(kT)): bremss without the Gaunt factor's piecewise fits (smooth)."""

    name = "smoothcont"
    additive = True
    param_names = ("kT",)

    def param_range(self, name):
        return (1e-3, 1e3)

    def evaluate(self, e_lo, e_hi, values):
        kt = np.asarray(values["kT"], dtype=float)[:, None]
        return trapezoid_bins(
            lambda e: np.exp(-e[None, :] / kt) / e[None, :] / np.sqrt(kt), e_lo, e_hi
        )


class BrokenAbove(SmoothContinuum):
    """Gives NaN above 20 keV: a model with non-finite values."""

    name = "broken"

    def evaluate(self, e_lo, e_hi, values):
        out = super().evaluate(e_lo, e_hi, values)
        out[np.asarray(values["kT"]) > 20.0] = np.nan
        return out


SMOOTH = Model("wabs*smoothcont", (Wabs(), SmoothContinuum()))


# --------------------------------------------------------------------------------------------
# recovery and statistics
# --------------------------------------------------------------------------------------------


def test_asimov_fits_return_t_true(acis, bremss_model):
    be = NativeBackend(acis, bremss_model, GAUSSIAN, settings(mode="asimov"))
    t_true = np.array([1.5, 3.0, 6.0, 10.0])
    theta = np.vstack([np.tile(IDENTITY, (4, 1)), np.tile(BUMP, (4, 1))])
    res = be.run(theta, np.tile(t_true, 2), np.arange(8))
    assert np.all(res.status == 0)
    # the modified response simulated the data, so the modified fit recovers T_true
    np.testing.assert_allclose(res.t_fit_mod[:, 0], np.tile(t_true, 2), rtol=1e-3)
    # with the identity modifier both fits see the simulating response
    np.testing.assert_allclose(res.t_fit_orig[:4, 0], t_true, rtol=1e-3)
    # the bump biases the original fit: T1 differs from T_true by far more than the tolerance
    assert np.all(np.abs(res.t_fit_orig[4:, 0] / t_true - 1) > 5e-3)
    # counts: the norm gives 2e4 expected counts through the ORIGINAL response
    np.testing.assert_allclose(res.counts[:4, 0], 2e4, rtol=1e-9)
    assert np.all(res.counts[4:, 0] > 2e4)  # the bump adds area, so more counts
    np.testing.assert_allclose(res.norm[:4], res.norm[4:], rtol=1e-12)


def test_poisson_pulls_are_standard_normal(acis, bremss_model):
    n_real = 1000
    be = NativeBackend(
        acis, bremss_model, GAUSSIAN, settings(realisations=n_real, curves=False, counts=1e4)
    )
    t_true = 4.0
    res = be.run(BUMP[None, :], np.array([t_true]), np.array([5]))
    assert res.curve_mod is None
    t, err = res.t_fit_mod[0], res.err_mod[0]
    assert np.all(res.status == 0)
    sigma = np.where(t < t_true, err[:, 1], err[:, 0])  # the side towards the truth
    pulls = (t - t_true) / sigma
    assert abs(pulls.mean()) < 0.1
    assert abs(pulls.std() - 1) < 0.1
    assert np.all(np.abs(res.counts[0] - res.counts[0].mean()) < 6 * np.sqrt(1.2e4))


def test_explicit_norm_overrides_counts(acis, bremss_model):
    be = NativeBackend(acis, bremss_model, GAUSSIAN, settings(mode="asimov"))
    a = be.run(IDENTITY[None, :], np.array([3.0]), np.array([0]))
    b = be.run(IDENTITY[None, :], np.array([3.0]), np.array([0]), norm=np.array([2 * a.norm[0]]))
    assert b.norm[0] == 2 * a.norm[0]
    assert b.counts[0, 0] == pytest.approx(2 * a.counts[0, 0], rel=1e-12)
    fixed = NativeBackend(
        acis, bremss_model, GAUSSIAN, settings(mode="asimov", counts=None, norm=1e-3)
    )
    c = fixed.run(IDENTITY[None, :], np.array([3.0]), np.array([0]))
    assert c.norm[0] == 1e-3
    assert c.t_fit_orig[0, 0] == pytest.approx(3.0, rel=1e-3)


def test_torch_engine_agrees_with_numpy(acis, bremss_model):
    pytest.importorskip("torch")
    st = settings(realisations=3, fit_tgrid=np.geomspace(0.5, 40.0, 64))
    theta = np.vstack([np.tile(BUMP, (3, 1)), np.tile([2.5, 0.6, -0.2], (3, 1))])
    t_true = np.tile([1.5, 4.0, 9.0], 2)
    a = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(theta, t_true, np.arange(6))
    b = NativeBackend(
        acis, bremss_model, GAUSSIAN, dataclasses.replace(st, engine="torch", device="cpu")
    ).run(theta, t_true, np.arange(6))
    for name in ("t_fit_orig", "t_fit_mod", "err_orig", "err_mod", "curve_orig", "curve_mod"):
        np.testing.assert_allclose(getattr(b, name), getattr(a, name), rtol=1e-6)
    np.testing.assert_array_equal(a.counts, b.counts)
    np.testing.assert_array_equal(a.status, b.status)


# --------------------------------------------------------------------------------------------
# exactness of the profile, the interpolation and the refinement
# --------------------------------------------------------------------------------------------


def _exact_fit(fitter: SpectrumFitter, counts: np.ndarray, t0: float) -> tuple[float, float]:
    """Slow reference: scipy's bounded scalar minimiser on the exact profile (exact folds)."""
    res = minimize_scalar(
        lambda x: fitter.exact_profile(counts, [np.exp(x)])[0, 0],
        bounds=(np.log(t0) - 0.05, np.log(t0) + 0.05),
        method="bounded",
        options={"xatol": 1e-9},
    )
    return float(np.exp(res.x)), float(res.fun)


def _spectra(fitter: SpectrumFitter, temps, seed=3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = np.stack([fitter.fold_original(t) for t in temps])
    return rng.poisson(mu * (3e4 / mu.sum(axis=1, keepdims=True)))


def test_profile_on_the_grid_is_the_exact_profiled_cstat(acis, bremss_model):
    fitter = SpectrumFitter(
        acis, bremss_model, {"nH": 0.05}, (0.5, 7.0), 5e4, np.geomspace(0.5, 40, 48)
    )
    counts = _spectra(fitter, [3.0])[0]
    curve = np.asarray(fitter.profiles(counts[None, :]))[0]
    # against cstat with the norm minimised numerically at each grid temperature
    for k in (10, 20, 30):
        s = fitter.fold_original(fitter.tgrid[k])
        guess = np.log(counts.sum() / s.sum())
        best = minimize_scalar(
            lambda ln, s=s: cstat_at_norm(counts, np.exp(ln) * s),
            bounds=(guess - 1, guess + 1),
            method="bounded",
            options={"xatol": 1e-10},
        )
        assert curve[k] == pytest.approx(best.fun, rel=1e-10)
        assert np.exp(best.x) == pytest.approx(np.exp(guess), rel=1e-6)  # D / S(T)


def test_log_template_interpolation_error_against_exact_folds(acis, bremss_model):
    grid = np.geomspace(0.2, 64.0, 128)  # 4.5% spacing
    x = np.log(grid)
    mid = np.exp(0.5 * (x[1:] + x[:-1]))
    sel = (mid > 1.0) & (mid < 20.0)
    for model, tol_max, tol_median in ((SMOOTH, 1e-8, 1e-9), (bremss_model, None, 1e-5)):
        f = SpectrumFitter(acis, model, {"nH": 0.05}, (0.5, 7.0), 5e4, grid)
        interp = f.xgrid.interpolate(np.log(f.templates).T, np.log(mid[sel]))
        exact = np.log(np.stack([f.fold_original(t) for t in mid[sel]])).T
        err = np.abs(interp - exact)
        assert np.median(err) < tol_median
        if tol_max is not None:
            assert err.max() < tol_max
        else:
            # XSPEC's Gaunt factor is a set of polynomial pieces that do not join exactly
            # (KBK75's u and gamma ranges, the Born switch at kT = 13.6 keV): ln s_j(T) has
            # steps there, which no smooth interpolant follows
            assert err.max() > 1e-5


def test_refinement_matches_a_slow_exact_fit(acis, bremss_model):
    grid = np.geomspace(0.5, 40.0, 128)
    temps = [1.3, 2.7, 5.1, 9.0]
    # a smooth model: the exact minimum is well defined, and found to 1e-5 (in fact ~1e-7)
    f = SpectrumFitter(acis, SMOOTH, {"nH": 0.05}, (0.5, 7.0), 5e4, grid)
    counts = _spectra(f, temps)
    fits = f.fit(counts)
    for i in range(len(temps)):
        t_exact, c_exact = _exact_fit(f, counts[i], fits.t_fit[i])
        assert fits.t_fit[i] == pytest.approx(t_exact, rel=1e-6)
        assert fits.cstat[i] == pytest.approx(c_exact, abs=1e-4)
    # XSPEC's bremss: its exact profile has steps of ~1e-3 in C (the seams of the Gaunt
    # factor's polynomial pieces), which move the exact minimum by up to ~1e-4 (0.01 sigma)
    f = SpectrumFitter(acis, bremss_model, {"nH": 0.05}, (0.5, 7.0), 5e4, grid)
    counts = _spectra(f, temps)
    fits = f.fit(counts)
    for i in range(len(temps)):
        t_exact, c_exact = _exact_fit(f, counts[i], fits.t_fit[i])
        assert fits.t_fit[i] == pytest.approx(t_exact, rel=2e-4)
        assert fits.cstat[i] == pytest.approx(c_exact, abs=2e-2)


def test_interval_is_where_the_profile_rises_by_one(acis, bremss_model):
    f = SpectrumFitter(acis, SMOOTH, {"nH": 0.05}, (0.5, 7.0), 5e4, np.geomspace(0.5, 40, 128))
    counts = _spectra(f, [3.3])
    fit = f.fit(counts)
    lo, hi = fit.t_fit[0] - fit.err[0, 0], fit.t_fit[0] + fit.err[0, 1]
    c = f.exact_profile(counts[0], [lo, hi])[0]
    np.testing.assert_allclose(c, fit.cstat[0] + 1.0, atol=2e-3)
    assert 0.005 < fit.err[0, 0] / fit.t_fit[0] < 0.05


@pytest.mark.parametrize("newton", [True, False], ids=["newton", "bisection"])
def test_the_compiled_fit_takes_the_steps_of_the_array_passes(
    acis, bremss_model, newton, monkeypatch
):
    # numpy profiles take a compiled loop over the spectra, torch the array passes: the same
    # steps, to rounding (the local polynomials' coefficients are summed in another order)
    from xrmodifier_hpc.physics import fitstat

    if not newton:  # no Newton step: every minimum and crossing by the bisection fallback
        monkeypatch.setattr(fitstat, "_NEWTON_STEPS", 0)
        monkeypatch.setattr(fitstat, "_NEWTON_STEPS_CROSSING", 0)
    grid = np.geomspace(0.3, 40.0, 64)
    f = SpectrumFitter(acis, bremss_model, {"nH": 0.05}, (0.5, 7.0), 5e4, grid)
    counts = _spectra(f, np.geomspace(0.4, 30.0, 40), seed=11)
    curves = np.asarray(f.profiles(counts))
    n = grid.size
    rng = np.random.default_rng(2)
    odd = [
        np.linspace(5.0, 1.0, n),  # falls to the upper grid end
        np.linspace(1.0, 5.0, n),  # the lower end
        np.full(n, 3.0),  # flat: no minimum inside, both interval ends open
        np.where(np.arange(n) == 20, np.nan, curves[0]),  # not finite
        -((np.arange(n) - 30.0) ** 2),  # concave
        (np.arange(n) - 30.0) ** 2 * 1e-4,  # too shallow to reach the level on either side
    ]
    curves = np.concatenate([curves, np.array(odd), curves[:20] + rng.normal(0, 0.5, (20, n))])
    arrays = fitstat._fit_profiles_arrays(curves, f._dev_xgrid, 1.0)
    compiled = fitstat.fit_profiles(curves, f._dev_xgrid)
    for name in ("at_bound", "lo_open", "hi_open", "finite", "convex"):
        np.testing.assert_array_equal(getattr(compiled, name), getattr(arrays, name), name)
    assert not arrays.finite[40 + 3] and arrays.lo_open[40 + 2] and arrays.hi_open[40 + 5]
    assert arrays.at_bound[40] and arrays.at_bound[41] and not arrays.convex[40 + 4]
    ok = arrays.finite
    for name in ("x", "value", "x_lo", "x_hi"):
        np.testing.assert_allclose(
            getattr(compiled, name)[ok], getattr(arrays, name)[ok], rtol=0, atol=1e-11
        )


# --------------------------------------------------------------------------------------------
# status flags and bad input
# --------------------------------------------------------------------------------------------


def test_zero_and_few_counts_are_flagged_not_fitted(acis, bremss_model):
    f = SpectrumFitter(
        acis, bremss_model, {"nH": 0.05}, (0.5, 7.0), 5e4, np.geomspace(0.5, 40, 32), min_counts=50
    )
    zeros = np.zeros((2, f.channels.size))
    zeros[1, 100] = 10  # 10 counts: below min_counts
    fit = f.fit(zeros)
    assert np.all(fit.status == STATUS_TOO_FEW_COUNTS)
    assert np.all(np.isnan(fit.t_fit)) and np.all(np.isnan(fit.err))
    assert np.all(np.isnan(fit.curves))
    be = NativeBackend(acis, bremss_model, GAUSSIAN, settings(realisations=2))
    res = be.run(
        np.tile(BUMP, (2, 1)), np.array([3.0, 3.0]), np.array([0, 1]), norm=np.array([0.0, 1e-9])
    )
    assert np.all(res.status == STATUS_TOO_FEW_COUNTS)
    assert np.all(np.isnan(res.t_fit_orig)) and np.all(np.isnan(res.t_fit_mod))
    assert np.all(res.counts == 0)


def test_grid_bounds_are_flagged(acis, bremss_model):
    be = NativeBackend(
        acis, bremss_model, GAUSSIAN, settings(mode="asimov", fit_tgrid=np.geomspace(1.0, 8.0, 32))
    )
    res = be.run(np.tile(IDENTITY, (3, 1)), np.array([4.0, 7.9, 15.0]), np.arange(3))
    assert res.status[0, 0, 0] == 0
    # the best fit inside the grid, but its upper delta-C = 1 end beyond it
    assert res.status[1, 0, 0] & STATUS_ERROR_AT_BOUND
    assert not res.status[1, 0, 0] & STATUS_AT_GRID_BOUND
    assert res.err_orig[1, 0, 1] == pytest.approx(8.0 - res.t_fit_orig[1, 0], rel=1e-9)
    # T_true above the grid: the fit sits on the grid's end
    assert res.status[2, 0, 0] & STATUS_AT_GRID_BOUND
    assert res.t_fit_orig[2, 0] == pytest.approx(8.0)


def test_band_without_channels_is_refused(acis, bremss_model):
    with pytest.raises(ResponseError, match="no channel"):
        NativeBackend(acis, bremss_model, GAUSSIAN, settings(band=(30.0, 40.0)))


def test_non_finite_model_values_are_refused_or_flagged(acis):
    broken = Model("wabs*broken", (Wabs(), BrokenAbove()))
    with pytest.raises(ModelError, match="non-finite"):
        NativeBackend(acis, broken, GAUSSIAN, settings())  # the fit grid reaches 40 keV
    be = NativeBackend(acis, broken, GAUSSIAN, settings(fit_tgrid=np.geomspace(0.5, 15, 48)))
    res = be.run(np.tile(BUMP, (2, 1)), np.array([3.0, 25.0]), np.array([0, 1]))
    assert res.status[0].max() == 0 and np.isfinite(res.t_fit_mod[0, 0])
    assert np.all(res.status[1] == STATUS_FAILED)
    assert np.isnan(res.t_fit_orig[1, 0]) and np.isnan(res.norm[1])


def test_table_temperature_range(acis, tmp_path):
    from test_spectra import write_bremss_table

    from xrmodifier_hpc.io.tables import load_model

    path = write_bremss_table(tmp_path / "br.fits")
    model = load_model(f"wabs*atable{{{path}}}")
    with pytest.raises(ModelError, match="allows kT in 1-16"):
        NativeBackend(acis, model, GAUSSIAN, settings())  # fit grid 0.5-40 keV
    be = NativeBackend(
        acis, model, GAUSSIAN, settings(mode="asimov", fit_tgrid=np.geomspace(1.0, 16.0, 64))
    )
    res = be.run(np.tile(BUMP, (3, 1)), np.array([0.8, 4.0, 20.0]), np.arange(3))
    assert np.all(res.status[[0, 2]] == STATUS_FAILED)
    assert np.all(np.isnan(res.t_fit_mod[[0, 2]]))
    assert res.status[1].max() == 0
    # the linearly interpolated table fits its own asimov data exactly
    assert res.t_fit_mod[1, 0] == pytest.approx(4.0, rel=1e-3)


# --------------------------------------------------------------------------------------------
# the fast paths against direct computations
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def epn(responses_dir) -> Instrument:
    return Instrument.load(
        responses_dir / "xmm_epn_src.arf", responses_dir / "xmm_epn_ff20_dY9.rmf"
    )


def _direct_fitter(inst: Instrument, modifier, theta, model, st) -> SpectrumFitter:
    """A fitter whose ORIGINAL response is the modified one: the templates folded directly,
    in float64, without the per-(mu, sigma) basis folds or the float32 log."""
    area = modifier.apply(inst.e_mid, inst.area, np.asarray(theta)[None, :])[0]
    return SpectrumFitter(
        inst.with_area(area), model, {"nH": 0.05}, st.band, st.exposure, st.fit_tgrid
    )


@pytest.mark.parametrize(
    "name, family, theta",
    [
        ("acis", "gaussian", [1.5, 0.3, 0.2]),
        ("epn", "gaussian", [2.2, 0.8, -0.3]),  # broad: every row, negative RMF elements
        ("epn", "gaussian", [1.2, 0.2, -0.9]),  # a deep dip: s'/s < 0.5, the float64 path
        ("acis", "multi_gaussian", [1.2, 0.2, 0.25, 2.5, 0.5, -0.15]),
        ("epn", "spline", [0.1, -0.2, 0.15, 0.05, -0.1, 0.2]),  # not linear: key = theta
    ],
)
def test_modified_fits_match_a_direct_float64_fold(request, bremss_model, name, family, theta):
    inst = request.getfixturevalue(name)
    modifier = get_modifier(family)
    st = settings(mode="asimov", fit_tgrid=np.geomspace(0.5, 40.0, 128))
    be = NativeBackend(inst, bremss_model, modifier, st)
    t_true = np.array([1.3, 3.0, 7.5])
    res = be.run(np.tile(theta, (3, 1)), t_true, np.arange(3))
    direct = _direct_fitter(inst, modifier, theta, bremss_model, st)
    # fakeit: the expected counts are the direct fold's (the norm is set through the original)
    expected = np.stack([direct.fold_original(t) for t in t_true]) * res.norm[:, None]
    np.testing.assert_allclose(res.counts[:, 0], expected.sum(axis=1), rtol=1e-12)
    # the modified fit: the same best fits, intervals and curves as with exact templates
    fits = direct.fit(np.maximum(expected, 0.0))
    np.testing.assert_allclose(res.t_fit_mod[:, 0], fits.t_fit, rtol=1e-5)
    np.testing.assert_allclose(res.err_mod[:, 0], fits.err, rtol=1e-3)
    np.testing.assert_allclose(res.curve_mod[:, 0], fits.curves, rtol=0, atol=2e-3)
    assert np.all(res.status == 0)


@pytest.mark.parametrize("axis_known", [False, True])
def test_results_do_not_depend_on_batching_within_a_key(acis, bremss_model, axis_known):
    """Two amplitudes of one (mu, sigma) over 40 temperatures (the temperature folds share
    fixed-shape blocks), then subsets in another order: bitwise the same. With the grid's
    T_true axis known (as simulate passes it) the axis is folded in one product and a
    theta's points share one profile block; two off-axis temperatures ride along."""
    t_axis = np.geomspace(1.0, 12.0, 40)
    st = settings(
        realisations=2,
        fit_tgrid=np.geomspace(0.5, 40.0, 64),
        t_true_axis=t_axis if axis_known else None,
    )
    theta = np.repeat([[1.5, 0.3, 0.2], [1.5, 0.3, -0.1]], t_axis.size + 1, axis=0)
    t_true = np.tile(np.append(t_axis, 5.55), 2)
    t_true[-1] = 2.22
    index = np.arange(t_true.size) + 77
    full = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(theta, t_true, index)
    take = np.random.default_rng(3).permutation(t_true.size)[:23]
    part = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(
        theta[take], t_true[take], index[take]
    )
    for name in ("t_fit_orig", "t_fit_mod", "err_mod", "counts", "curve_mod", "status"):
        assert getattr(full, name)[take].tobytes() == getattr(part, name).tobytes(), name


def test_point_streams_are_point_rng():
    from xrmodifier_hpc.backends.native import _PointStreams
    from xrmodifier_hpc.config.grid import point_rng

    for seed, stream in ((20261124, 0), (0, 2), (2**32 - 1, 1)):
        streams = _PointStreams(seed, stream)
        assert streams.fast
        index = np.array([0, 1, 5, 123456, 2**31 + 7, 2**32 - 1, 2**32, 2**40])
        for k, gen in zip(index, streams.generators(index), strict=True):
            ref = point_rng(seed, int(k), stream)
            np.testing.assert_array_equal(gen.poisson(12.5, 64), ref.poisson(12.5, 64))
            np.testing.assert_array_equal(gen.random(8), ref.random(8))
    # a seed beyond one 32-bit word takes point_rng itself
    big = _PointStreams(2**40, 0)
    assert not big.fast
    gen = next(big.generators(np.array([3])))
    np.testing.assert_array_equal(gen.random(4), point_rng(2**40, 3, 0).random(4))


def test_band_response_folds_like_the_dense_matrix(epn):
    from xrmodifier_hpc.backends.native import BandResponse

    dense = epn.matrix[:, epn.band_mask(0.5, 7.0)].toarray()
    dense = dense[np.any(dense != 0, axis=1)]
    band = BandResponse(dense, block_rows=64)
    assert band.nonzero == np.count_nonzero(dense)
    assert band.multiply_adds() < 0.4 * dense.size  # blocks keep only the reached channels
    x = np.random.default_rng(0).random((5, dense.shape[0]))
    np.testing.assert_allclose(band.fold(x), x @ dense, rtol=1e-12, atol=1e-12)
    rows = slice(100, 431)
    np.testing.assert_allclose(band.fold(x[:, rows], rows), x[:, rows] @ dense[rows], atol=1e-12)
    single = band.fold(x, single=True)
    assert single.dtype == np.float32
    np.testing.assert_allclose(single, x @ dense, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "family, options, theta",
    [
        ("gaussian", {}, [1.7, 0.4, -0.25]),
        ("multi_gaussian", {"n_components": 3}, [1.0, 0.2, 0.1, 2.0, 0.5, -0.2, 4.0, 1.0, 0.3]),
        ("spline", {}, [0.1, -0.2, 0.15, 0.05, -0.1, 0.2]),
    ],
)
def test_linear_form_rebuilds_the_multiplier(family, options, theta):
    modifier = get_modifier(family, options)
    energy = np.linspace(0.2, 12.0, 500)
    key, amps = modifier.linear_form(np.array(theta))
    hash(key)
    basis = modifier.linear_basis(energy, key)
    assert basis.shape == (amps.size, energy.size)
    np.testing.assert_allclose(
        1.0 + amps @ basis, modifier.evaluate(energy, np.array(theta)), rtol=1e-14, atol=1e-14
    )
    if family != "spline":  # the amplitudes are not part of the key
        other = np.array(theta, dtype=float)
        other[2::3] *= -0.5
        assert modifier.linear_form(other)[0] == key


def test_compiled_streams_draw_what_the_point_generators_draw(acis, bremss_model, monkeypatch):
    """fakeit's counts from the compiled PCG64 stream equal those from each point's own
    Generator (point_rng's state), bit for bit."""
    st = settings(realisations=2, fit_tgrid=np.geomspace(0.5, 40.0, 64))
    theta = np.repeat([[1.5, 0.3, 0.2], [2.5, 0.6, -0.2]], 5, axis=0)
    t_true = np.tile(np.geomspace(1.5, 9.0, 5), 2)
    index = np.arange(10) + 31
    fast = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(theta, t_true, index)
    from xrmodifier_hpc.backends.native import _PointStreams

    monkeypatch.setattr(_PointStreams, "words", lambda self, index: None)
    slow = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(theta, t_true, index)
    for name in ("counts", "t_fit_orig", "t_fit_mod", "curve_mod"):
        assert getattr(fast, name).tobytes() == getattr(slow, name).tobytes(), name


@pytest.mark.parametrize(
    "family, options, expected",
    [
        ("gaussian", {}, (True, True, False)),
        ("multi_gaussian", {"n_components": 2}, (True, True, False, True, True, False)),
        ("spline", {}, (True,) * 6),
    ],
)
def test_key_params_are_the_non_linear_ones(family, options, expected):
    """What off-grid groups share: the parameters the folded basis depends on."""
    modifier = get_modifier(family, options)
    n = modifier.n_params
    if family == "spline":
        low, high = np.full(n, -0.2), np.full(n, 0.2)
    else:
        low = np.tile([0.8, 0.15, -0.3], n // 3)
        high = np.tile([3.0, 0.8, 0.3], n // 3)
    assert modifier.key_params(low, high) == expected


def test_a_batch_of_more_thetas_than_the_cache_holds_fits_each_as_alone(acis, bremss_model):
    """Off-grid batches hold hundreds of thetas, each with its own ln(s'/s) table; the theta
    cache (8) hands its buffers back as it drops thetas, so every theta's modified profile
    is taken while its table is still its own: bitwise what each point gives alone."""
    from xrmodifier_hpc.backends.native import THETA_CACHE_SIZE

    rng = np.random.default_rng(8)
    n = 3 * THETA_CACHE_SIZE + 1
    theta = np.column_stack(
        [rng.uniform(1.0, 3.0, n), rng.uniform(0.2, 0.6, n), rng.uniform(-0.3, 0.3, n)]
    )
    t_true = rng.uniform(1.0, 9.0, n)
    index = np.arange(n)
    st = settings(mode="asimov", fit_tgrid=np.geomspace(0.5, 40.0, 48))
    backend = NativeBackend(acis, bremss_model, GAUSSIAN, st)
    made = backend._make_theta
    buffers = set()

    def make_theta(theta):
        terms = made(theta)
        buffers.add(id(terms.buffer))
        return terms

    backend._make_theta = make_theta
    together = backend.run(theta, t_true, index)
    # n thetas, at most one buffer more than the cache holds: the dropped ones were reused
    assert len(buffers) <= THETA_CACHE_SIZE + 1 < n
    for i in (0, 5, n // 2, n - 1):
        alone = NativeBackend(acis, bremss_model, GAUSSIAN, st).run(
            theta[i : i + 1], t_true[i : i + 1], index[i : i + 1]
        )
        for name in ("t_fit_orig", "t_fit_mod", "err_mod", "curve_mod"):
            assert getattr(together, name)[i].tobytes() == getattr(alone, name)[0].tobytes()


class _DeepGaussian(type(GAUSSIAN)):
    """The Gaussian family without its A > -1 check: m can go negative."""

    name = "deep_gaussian"

    def check_values(self, name, values):
        pass


@pytest.mark.parametrize("amp", [-1.5, -1.0 - 1e-12])
def test_a_theta_that_makes_the_arf_negative_is_refused(acis, bremss_model, amp):
    # the backend screens m = 1 + A b with the key's basis and lets the family decide near 0
    from xrmodifier_hpc.physics.modifiers import ModifierError

    deep = _DeepGaussian()
    backend = NativeBackend(acis, bremss_model, deep, settings(mode="asimov"))
    peak = float(acis.e_mid[np.argmax(acis.area)])  # an energy of the ARF: b = 1 there
    ok = backend.run(np.array([[peak, 0.3, -0.999]]), np.array([4.0]), np.array([0]))
    assert np.isfinite(ok.t_fit_mod).all()
    with pytest.raises(ModifierError, match="makes the ARF negative"):
        backend.run(np.array([[peak, 0.3, amp]]), np.array([4.0]), np.array([1]))
    # just above -1 m stays positive: near 0 but allowed (the family's own evaluation decides)
    near = backend.run(np.array([[peak, 0.3, -1.0 + 1e-12]]), np.array([4.0]), np.array([2]))
    assert near.t_fit_mod.shape == (1, 1)


def test_a_derived_backend_shares_the_fitter_and_fits_as_a_new_one(acis, bremss_model):
    st = settings(fit_tgrid=np.geomspace(0.5, 40.0, 48))
    grid_backend = NativeBackend(acis, bremss_model, GAUSSIAN, st)
    derived = grid_backend.derive(mode="asimov", stream=7, curves=False)
    assert derived is not None and derived.fitter is grid_backend.fitter
    fresh = NativeBackend(
        acis, bremss_model, GAUSSIAN, dataclasses.replace(st, mode="asimov", stream=7, curves=False)
    )
    theta = np.repeat([BUMP], 3, axis=0)
    t_true, index = np.array([2.0, 4.5, 7.0]), np.arange(3)
    a, b = derived.run(theta, t_true, index), fresh.run(theta, t_true, index)
    for name in ("t_fit_orig", "t_fit_mod", "err_orig", "err_mod", "status", "norm"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.curve_mod is None
    # a setting the fitter depends on: no sharing, the caller builds a new backend
    assert grid_backend.derive(band=(0.3, 8.0)) is None
    assert grid_backend.derive(exposure=1e3, mode="asimov") is None


def test_a_new_backend_has_its_kernels_ready_so_the_first_batch_compiles_nothing(responses_dir):
    # in a fresh process (numba's dispatchers start empty): building the backend compiles or
    # loads every kernel a batch calls, so simulate's first progress line is not the compile
    script = """
import json, numpy as np
from xrmodifier_hpc.backends.native import NativeBackend
from xrmodifier_hpc.backends.base import SimulationSettings
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.physics import fitstat, log1p, poisson
from xrmodifier_hpc.physics.modifiers import get_modifier
from xrmodifier_hpc.physics.spectra import parse_model
import sys
d = sys.argv[1]
inst = Instrument.load(d + "/chandra_acis_9774.arf", d + "/chandra_acis_9774.rmf")
kernels = [poisson._rows_pcg64, log1p._series, log1p._exact_outside,
           fitstat._integer_sums, fitstat._fit_rows]
fresh = [len(k.signatures) for k in kernels]
settings = SimulationSettings(exposure=5e4, band=(0.5, 7.0), realisations=1, seed=1,
    fit_tgrid=np.geomspace(0.5, 40.0, 32), counts=2e4, source_params={"nH": 0.05})
backend = NativeBackend(inst, parse_model("wabs*bremss"), get_modifier("gaussian"), settings)
built = [len(k.signatures) for k in kernels]
backend.run(np.array([[1.5, 0.3, 5.0], [1.5, 0.3, -0.5]]), np.array([3.0, 3.0]), np.arange(2))
print(json.dumps([fresh, built, [len(k.signatures) for k in kernels]]))
"""
    import json
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-c", script, str(responses_dir)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    fresh, built, after_run = json.loads(done.stdout.strip().splitlines()[-1])
    assert fresh == [0] * 5
    assert all(n >= 1 for n in built)
    assert after_run == built


def test_distinct_thetas_of_a_batch_are_np_unique_of_its_rows():
    from xrmodifier_hpc.backends.native import _unique_rows

    rng = np.random.default_rng(4)
    for _ in range(100):
        n = int(rng.integers(0, 60))
        thetas = rng.integers(0, 4, (int(rng.integers(1, 6)), 3)).astype(float)
        runs = rng.integers(0, thetas.shape[0], max(n // 3, 1))
        rows = thetas[np.repeat(runs, rng.integers(1, 5, runs.size))][:n]  # runs, revisited
        groups, inverse = _unique_rows(rows)
        ref_groups, ref_inverse = np.unique(rows, axis=0, return_inverse=True)
        np.testing.assert_array_equal(groups, ref_groups)
        np.testing.assert_array_equal(inverse, ref_inverse.ravel())


def test_slot_occurrence_counts_earlier_entries_of_the_same_slot():
    from xrmodifier_hpc.backends.native import _occurrence

    rng = np.random.default_rng(3)
    for size, n_slots in ((0, 4), (1, 4), (40, 40), (512, 64), (300, 7), (50, 1)):
        slots = rng.integers(0, n_slots, size)
        seen: dict[int, int] = {}
        expected = []
        for s in slots.tolist():
            expected.append(seen.get(s, 0))
            seen[s] = expected[-1] + 1
        np.testing.assert_array_equal(_occurrence(slots), np.array(expected, dtype=np.int64))
    # a run of the batch in slot order: all first occurrences
    np.testing.assert_array_equal(_occurrence(np.arange(64)), np.zeros(64, dtype=np.int64))
