"""Pointwise posterior statistics and ensembles of the ARF multiplier m(E)
(``inference.arf_posterior``)."""

from __future__ import annotations

import numpy as np
import pytest

from xrmodifier_hpc.inference.arf_posterior import (
    STATISTICS,
    ensemble,
    multiplier_draws,
    pointwise_band,
    prior_band,
    select_draws,
)
from xrmodifier_hpc.physics.modifiers import get_modifier

GAUSS = get_modifier("gaussian")
ENERGY = np.linspace(0.3, 10.0, 400)


def _amplitude_samples(n: int = 5000, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Posterior samples with mu, sigma fixed and A ~ N(-0.1, 0.03): m(E) = 1 + A g(E) with
    g > 0, so every pointwise percentile of m is 1 + (that percentile of A) g(E)."""
    rng = np.random.default_rng(seed)
    amp = -0.1 + 0.03 * rng.standard_normal(n)
    return np.column_stack([np.full(n, 1.3), np.full(n, 0.25), amp]), amp


def test_select_draws_is_seeded_and_without_replacement() -> None:
    samples = np.arange(300.0).reshape(100, 3)
    a = select_draws(samples, 40, seed=3)
    b = select_draws(samples, 40, seed=3)
    c = select_draws(samples, 40, seed=4)
    assert a.shape == (40, 3)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    assert len({tuple(r) for r in a}) == 40  # no row twice
    assert all(np.any(np.all(samples == r, axis=1)) for r in a)  # every row is a sample
    assert np.all(np.diff(a[:, 0]) > 0)  # chain order kept
    np.testing.assert_array_equal(select_draws(samples, None), samples)
    np.testing.assert_array_equal(select_draws(samples, 500), samples)
    with pytest.raises(ValueError):
        select_draws(samples, 0)
    with pytest.raises(ValueError):
        select_draws(np.zeros((0, 3)), 5)


def test_pointwise_percentiles_follow_the_amplitude() -> None:
    samples, amp = _amplitude_samples()
    band = pointwise_band(GAUSS, ENERGY, samples, max_draws=None)
    g = np.exp(-0.5 * ((ENERGY - 1.3) / 0.25) ** 2)
    for name, q in STATISTICS.items():
        expected = 1.0 + np.percentile(amp, q) * g
        np.testing.assert_allclose(band.statistic(name), expected, atol=1e-12)
    np.testing.assert_allclose(band.p2_5, 1.0 + np.percentile(amp, 2.5) * g, atol=1e-12)
    assert band.n_draws == samples.shape[0]
    assert np.all(band.p16 <= band.median) and np.all(band.median <= band.p84)
    # far from the dip every draw gives m = 1: no width
    assert band.width[ENERGY > 4].max() < 1e-12
    with pytest.raises(ValueError):
        band.statistic("mean")


def test_median_of_a_degenerate_ridge_is_near_the_truth_not_at_its_end() -> None:
    """The issue's case: A and sigma trade off at fixed area; the likelihood maximum can sit at
    the ridge's end (deep, narrow dip) while the pointwise median stays near the truth."""
    rng = np.random.default_rng(7)
    n = 20000
    log_sigma = rng.normal(np.log(0.3), 0.25, n)
    sigma = np.exp(log_sigma)
    amp = -0.12 * 0.3 / sigma * (1 + 0.03 * rng.standard_normal(n))
    mu = rng.normal(1.3, 0.03, n)
    samples = np.column_stack([mu, sigma, amp])
    truth = GAUSS.evaluate(ENERGY, np.array([1.3, 0.3, -0.12]))
    ridge_end = GAUSS.evaluate(ENERGY, np.array([1.3, 0.16, -0.225]))
    band = pointwise_band(GAUSS, ENERGY, samples, seed=2)
    in_band = (ENERGY > 0.5) & (ENERGY < 7.0)
    assert np.max(np.abs(band.median - truth)[in_band]) < 0.03
    assert np.max(np.abs(ridge_end - truth)[in_band]) > 0.08


def test_ensemble_rows_are_curves_of_posterior_draws() -> None:
    samples, _ = _amplitude_samples(2000)
    samples[:, 0] += np.linspace(-0.1, 0.1, samples.shape[0])  # make draws distinguishable
    ens = ensemble(GAUSS, ENERGY, samples, n_draws=100, seed=9)
    assert ens.n_draws == 100 and ens.multipliers.shape == (100, ENERGY.size)
    for theta, row in zip(ens.thetas, ens.multipliers):
        assert np.any(np.all(samples == theta, axis=1))
        np.testing.assert_allclose(row, GAUSS.evaluate(ENERGY, theta), rtol=0, atol=0)
    # the same seed picks the same draws on another energy grid (apply and invert agree)
    other = ensemble(GAUSS, np.linspace(0.1, 12, 57), samples, n_draws=100, seed=9)
    np.testing.assert_array_equal(other.thetas, ens.thetas)
    with pytest.raises(ValueError):
        ensemble(GAUSS, ENERGY, samples[:10], n_draws=100)
    with pytest.raises(ValueError):
        ensemble(GAUSS, ENERGY, samples, n_draws=0)


def test_prior_band_is_wide_where_the_family_can_act() -> None:
    lo, hi = np.array([0.8, 0.15, -0.3]), np.array([3.0, 0.8, 0.3])
    prior = prior_band(GAUSS, ENERGY, lo, hi, n_draws=3000, seed=1)
    at = lambda e: int(np.argmin(np.abs(ENERGY - e)))  # noqa: E731
    assert prior.width[at(1.9)] > 0.1  # inside the mu range: the prior moves m by +-0.3
    assert prior.width[at(9.5)] < 1e-3  # far above mu + 3 sigma_max: m = 1 for every prior draw
    np.testing.assert_allclose(prior.median[at(9.5)], 1.0, atol=1e-6)


def test_multiplier_draws_shape_for_a_spline_family() -> None:
    spline = get_modifier("spline", {"knots": [0.5, 1.0, 2.0, 4.0]})
    thetas = np.array([[0.1, 0.0, -0.1, 0.0], [0.0, 0.0, 0.0, 0.0]])
    m = multiplier_draws(spline, ENERGY, thetas)
    assert m.shape == (2, ENERGY.size)
    np.testing.assert_allclose(m[1], 1.0)


def test_nearest_theta_recovers_a_member_and_projects_the_median() -> None:
    from xrmodifier_hpc.inference.arf_posterior import nearest_theta

    lo, hi = np.array([0.8, 0.15, -0.3]), np.array([3.0, 0.8, 0.3])
    truth = np.array([1.3, 0.3, -0.12])
    starts = np.array([[2.0, 0.5, 0.1], [1.0, 0.2, -0.2]])
    theta, err = nearest_theta(GAUSS, ENERGY, GAUSS.evaluate(ENERGY, truth), lo, hi, starts)
    np.testing.assert_allclose(theta, truth, rtol=1e-5)
    assert err < 1e-6
    # the pointwise median of a ridge posterior is not a member: its projection is close
    rng = np.random.default_rng(2)
    sigma = np.exp(rng.normal(np.log(0.3), 0.25, 4000))
    samples = np.column_stack([np.full(4000, 1.3), sigma, -0.036 / sigma])
    band = pointwise_band(GAUSS, ENERGY, samples)
    w = ((ENERGY > 0.5) & (ENERGY < 7.0)).astype(float)
    theta, err = nearest_theta(GAUSS, ENERGY, band.median, lo, hi, samples[:4], weights=w)
    assert 0 < err < 0.01
    assert theta[0] == pytest.approx(1.3, abs=0.02) and theta[1] * theta[2] == pytest.approx(
        -0.036, rel=0.1
    )
    # bounds hold even when the curve asks for more
    deep = GAUSS.evaluate(ENERGY, np.array([1.3, 0.3, -0.6]))
    theta, err = nearest_theta(GAUSS, ENERGY, deep, lo, hi, starts)
    assert np.all(theta >= lo) and np.all(theta <= hi) and err > 0.1
