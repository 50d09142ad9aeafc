"""Modifier families: formulas, batches, domains, and the refusal of negative ARFs."""

from __future__ import annotations

import numpy as np
import pytest

from xrmodifier_hpc.physics.modifiers import ModifierError, families, get_modifier

ENERGY = np.linspace(0.2, 12.0, 600)


def test_registry_lists_the_three_families():
    assert {"gaussian", "multi_gaussian", "spline"} <= set(families())
    with pytest.raises(ModifierError, match="did you mean 'spline'"):
        get_modifier("splines")


def test_gaussian_formula_and_batch_shapes():
    fam = get_modifier("gaussian")
    assert fam.param_names == ("mu", "sigma", "A") and fam.param_units == ("keV", "keV", "")
    theta = np.array([[1.5, 0.3, 0.2], [4.0, 1.0, -0.5]])
    m = fam.evaluate(ENERGY, theta)
    assert m.shape == (2, ENERGY.size)
    expected = 1 + theta[:, 2:3] * np.exp(
        -((ENERGY - theta[:, 0:1]) ** 2) / (2 * theta[:, 1:2] ** 2)
    )
    np.testing.assert_allclose(m, expected, rtol=1e-14)
    np.testing.assert_allclose(fam.evaluate(ENERGY, theta[1]), expected[1])
    np.testing.assert_allclose(fam.evaluate(ENERGY, fam.identity()), 1.0)
    # the peak sits at mu with height 1 + A
    assert m[0].max() == pytest.approx(1.2, abs=1e-3)
    assert ENERGY[m[0].argmax()] == pytest.approx(1.5, abs=0.02)


def test_gaussian_domain_checks():
    fam = get_modifier("gaussian")
    with pytest.raises(ModifierError, match="sigma must be > 0"):
        fam.check_theta([[1.0, 0.0, 0.1]])
    with pytest.raises(ModifierError, match="A must be > -1"):
        fam.check_theta([[1.0, 0.2, -1.0]])
    with pytest.raises(ModifierError, match="takes 3 parameters"):
        fam.evaluate(ENERGY, [1.0, 0.2])


def test_multi_gaussian_is_the_sum_of_bumps():
    fam = get_modifier("multi_gaussian", {"n_components": 3})
    assert fam.param_names[:4] == ("mu1", "sigma1", "A1", "mu2") and fam.n_params == 9
    theta = np.array([1.0, 0.2, 0.1, 2.0, 0.4, -0.2, 6.0, 1.5, 0.05])
    single = get_modifier("gaussian")
    expected = 1 + sum(single.evaluate(ENERGY, theta[3 * k : 3 * k + 3]) - 1 for k in range(3))
    np.testing.assert_allclose(fam.evaluate(ENERGY, theta), expected, rtol=1e-14)
    assert fam.options() == {"n_components": 3}
    with pytest.raises(ModifierError, match="n_components"):
        get_modifier("multi_gaussian", {"n_components": 0})
    with pytest.raises(ModifierError, match="overlapping dips"):
        fam.check_grid(
            {n: np.array([0.5]) for n in fam.param_names}
            | {"A1": np.array([-0.5]), "A2": np.array([-0.3]), "A3": np.array([-0.25])}
        )


def test_spline_interpolates_in_log_energy_without_overshoot():
    knots = [0.5, 1.0, 2.0, 4.0, 8.0]
    fam = get_modifier("spline", {"knots": knots})
    assert fam.param_names == ("d1", "d2", "d3", "d4", "d5")
    d = np.array([0.0, 0.3, -0.2, 0.1, 0.0])
    m = fam.evaluate(np.array(knots), d)
    np.testing.assert_allclose(m, 1 + d, atol=1e-12)
    dense = fam.evaluate(ENERGY, d)
    assert dense.max() <= 1.3 + 1e-12 and dense.min() >= 0.8 - 1e-12
    # held constant outside the knots
    np.testing.assert_allclose(dense[ENERGY < 0.5], 1.0)
    np.testing.assert_allclose(dense[ENERGY > 8.0], 1.0)
    # the midpoint in log E between 1 and 2 keV lies between the knot values
    mid = fam.evaluate(np.array([np.sqrt(2.0)]), d)[0]
    assert 0.8 < mid < 1.3
    with pytest.raises(ModifierError, match="knots"):
        get_modifier("spline", {"knots": [2.0, 1.0]})


def test_negative_modified_arf_is_an_error():
    fam = get_modifier("multi_gaussian", {"n_components": 2})
    area = np.full(ENERGY.size, 300.0)
    ok = fam.apply(ENERGY, area, [1.0, 0.2, -0.5, 3.0, 0.3, 0.2])
    assert ok.min() > 0
    with pytest.raises(ModifierError, match="makes the ARF negative"):
        # two overlapping dips of -0.6 drive m below zero at 1 keV
        fam.apply(ENERGY, area, [1.0, 0.2, -0.6, 1.0, 0.2, -0.6])
