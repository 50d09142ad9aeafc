"""The identifiability report (``inference.identifiability``): bounds, correlations,
eigen-directions against the prior, degenerate pairs, the constrained energy range."""

from __future__ import annotations

import json

import numpy as np
import pytest

from xrmodifier_hpc.inference.arf_posterior import MultiplierBand, pointwise_band, prior_band
from xrmodifier_hpc.inference.identifiability import (
    analyse,
    constrained_range,
    correction_area,
    correlation_matrix,
    degenerate_pairs,
    params_at_bound,
    principal_directions,
)
from xrmodifier_hpc.physics.modifiers import get_modifier

NAMES = ("mu", "sigma", "A")
LO = np.array([0.8, 0.15, -0.3])
HI = np.array([3.0, 0.8, 0.3])
GAUSS = get_modifier("gaussian")


def _ridge(n: int = 20000, seed: int = 3) -> np.ndarray:
    """A posterior on which only mu and the area A*sigma are constrained (the issue's case)."""
    rng = np.random.default_rng(seed)
    sigma = np.exp(rng.uniform(np.log(0.16), np.log(0.78), n))
    amp = -0.036 / sigma * (1 + 0.04 * rng.standard_normal(n))
    mu = rng.normal(1.3, 0.04, n)
    keep = (amp > LO[2]) & (amp < HI[2])
    return np.column_stack([mu, sigma, amp])[keep]


def test_params_at_bound() -> None:
    assert params_at_bound(NAMES, np.array([1.3, 0.15, -0.25]), LO, HI) == {"sigma": "lower"}
    assert params_at_bound(NAMES, np.array([3.0, 0.4, 0.3]), LO, HI) == {
        "mu": "upper",
        "A": "upper",
    }
    assert params_at_bound(NAMES, np.array([1.3, 0.4, 0.0]), LO, HI) == {}


def test_correlation_matrix_matches_numpy_and_handles_a_fixed_parameter() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((500, 3))
    x[:, 2] += 0.8 * x[:, 0]
    np.testing.assert_allclose(correlation_matrix(x), np.corrcoef(x, rowvar=False), atol=1e-12)
    x[:, 1] = 2.0
    c = correlation_matrix(x)
    assert np.all(np.isfinite(c)) and c[1, 1] == 1.0 and c[0, 1] == 0.0


def test_directions_compare_with_the_flat_prior() -> None:
    rng = np.random.default_rng(1)
    # the prior itself: every direction has posterior/prior width ~ 1
    prior_draws = LO + rng.random((40000, 3)) * (HI - LO)
    for d in principal_directions(NAMES, prior_draws, LO, HI):
        assert d.ratio == pytest.approx(1.0, abs=0.03)
    # one tight direction along (u_mu + u_A)/sqrt(2), width 0.01 in normalised units
    u = rng.random((40000, 3))
    v = np.array([1.0, 0.0, 1.0]) / np.sqrt(2)
    u = u - np.outer(u @ v - 0.5, v) + np.outer(0.01 * rng.standard_normal(40000), v)
    dirs = principal_directions(NAMES, LO + u * (HI - LO), LO, HI)
    tight = dirs[-1]
    assert tight.posterior_width == pytest.approx(0.01, rel=0.05)
    assert tight.ratio == pytest.approx(0.01 * np.sqrt(12), rel=0.05)
    assert tight.weights["mu"] == pytest.approx(v[0], abs=0.01)
    assert tight.weights["A"] == pytest.approx(v[2], abs=0.01)
    assert tight.label() == "0.71 mu + 0.71 A"
    assert dirs[0].ratio > 0.9


def test_a_dip_ridge_gives_the_area_as_the_constrained_product() -> None:
    samples = _ridge()
    found = degenerate_pairs(NAMES, samples, LO, HI)
    assert [g.params for g in found] == [("sigma", "A")]
    g = found[0]
    assert g.kind == "product" and g.exponent == 1.0 and g.label == "sigma*A"
    assert g.correlation > 0.7
    assert g.median == pytest.approx(-0.036, rel=0.02)
    assert g.half_width == pytest.approx(0.036 * 0.04, rel=0.15)
    assert g.relative_width < 0.06  # A alone spans more than a factor 4


def test_a_pair_crossing_zero_gets_a_linear_combination() -> None:
    rng = np.random.default_rng(5)
    n = 20000
    mu = rng.uniform(1.0, 2.5, n)
    amp = 0.2 * (mu - 1.75) + 0.01 * rng.standard_normal(n)  # crosses zero
    samples = np.column_stack([mu, rng.uniform(0.2, 0.6, n), amp])
    (g,) = degenerate_pairs(NAMES, samples, LO, HI)
    assert g.params == ("mu", "A") and g.kind == "linear"
    assert g.exponent == pytest.approx(-5.0, rel=0.05)  # mu - 5 A is what is constrained
    assert g.median == pytest.approx(1.75, abs=0.01)
    assert g.label == f"mu - {abs(g.exponent):.3g}*A"


def test_constrained_range_of_bands() -> None:
    e = np.linspace(0.5, 7.0, 66)
    zero = np.zeros_like(e)

    def band(width: np.ndarray) -> MultiplierBand:
        return MultiplierBand(e, 1 + zero, 1 - width / 2, 1 + width / 2, 1 + zero, 1 + zero, 100)

    prior = band(np.full_like(e, 0.2))
    post = band(np.where((e >= 1.0) & (e <= 2.0), 0.02, np.where(e > 6.0, 0.05, 0.15)))
    c = constrained_range(post, prior)
    assert (c.low, c.high) == (pytest.approx(1.0), pytest.approx(2.0))
    assert c.intervals[1][0] == pytest.approx(6.1) and c.intervals[1][1] == pytest.approx(7.0)
    assert c.min_ratio == pytest.approx(0.1)
    assert constrained_range(prior, prior) is None
    with pytest.raises(ValueError):
        constrained_range(post, MultiplierBand(e + 1, *([1 + zero] * 5), 100))


def test_area_of_a_dip_is_sqrt_2pi_a_sigma() -> None:
    lo = np.arange(0.3, 10.0, 0.005)
    hi = lo + 0.005
    theta = np.array([[2.0, 0.3, -0.1], [2.0, 0.2, -0.2]])
    curves = GAUSS.evaluate(0.5 * (lo + hi), theta)
    med, p16, p84 = correction_area(lo, hi, curves, (0.5, 7.0))
    areas = np.sqrt(2 * np.pi) * theta[:, 1] * theta[:, 2]
    assert p16 == pytest.approx(np.percentile(areas, 16), rel=1e-4)
    assert p84 == pytest.approx(np.percentile(areas, 84), rel=1e-4)
    assert med == pytest.approx(areas.mean(), rel=1e-4)


def test_analyse_writes_the_plain_lines() -> None:
    samples = _ridge()
    e_lo = np.arange(0.3, 10.0, 0.01)
    e_hi = e_lo + 0.01
    e = 0.5 * (e_lo + e_hi)
    post = pointwise_band(GAUSS, e, samples, seed=1)
    prior = prior_band(GAUSS, e, LO, HI, seed=1)
    curves = GAUSS.evaluate(e, samples[:2000])
    report = analyse(
        NAMES,
        samples,
        LO,
        HI,
        theta_best=np.array([1.31, 0.15, -0.24]),
        posterior_band=post,
        prior=prior,
        energy_edges=(e_lo, e_hi),
        curves=curves,
        band=(0.5, 7.0),
    )
    text = "\n".join(report.lines)
    print(text)
    assert report.at_bound == {"sigma": "lower"}
    assert "sigma = 0.15 (lower bound)" in text
    assert "sigma and A are degenerate" in text and "the data constrain sigma*A = -0.036" in text
    assert "poorly constrained" in text
    assert "best constrained: 1.00 mu" in text
    assert "the correction's area" in text
    # only the area is known: the dip's depth at its centre is not, its absence above
    # ~1.5 keV (where the prior allows the dip to sit) is
    c = report.constrained
    assert c is not None and 1.3 < c.low < 1.6 and 2.5 < c.high < 3.5
    ratio = post.width / np.maximum(prior.width, 1e-300)
    inside = (e >= c.low) & (e <= c.high)
    assert np.all(ratio[inside] < 0.5) and ratio[np.argmin(np.abs(e - 1.3))] > 0.5
    data = json.loads(json.dumps(report.to_dict()))
    assert data["at_bound"] == {"sigma": "lower"}
    assert len(data["correlation"]) == 3 and len(data["directions"]) == 3
    assert data["degeneracies"][0]["combination"] == "sigma*A"
    assert data["area_keV"]["median"] == pytest.approx(np.sqrt(2 * np.pi) * -0.036, rel=0.03)
    assert data["constrained_energy_keV"]["low"] == pytest.approx(c.low)
