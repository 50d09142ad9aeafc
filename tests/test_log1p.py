"""ln(1 + sum_j a_j r_j) in one compiled pass (physics.log1p)."""

from __future__ import annotations

import numpy as np
import pytest

from xrmodifier_hpc.physics.log1p import SERIES_HIGH, SERIES_LOW, log1p_combination


def _ratios(shape, j=1, seed=0, scale=1.0):
    rng = np.random.default_rng(seed)
    return (scale * (2 * rng.random((j, *shape)) - 1)).astype(np.float32)


@pytest.mark.parametrize("amps", [[0.3], [-0.45], [0.9], [3.0], [0.2, -0.1], [0.5, 0.4, -0.3]])
def test_matches_log1p_in_float64_across_and_beyond_the_series_range(amps):
    ratios = _ratios((37, 101), j=len(amps))
    out = np.empty((37, 101))
    log1p_combination(ratios, np.array(amps), out)
    z = np.tensordot(np.array(amps), ratios.astype(np.float64), axes=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        exact = np.log1p(z)
    inside = (z >= SERIES_LOW) & (z <= SERIES_HIGH)
    np.testing.assert_allclose(out[inside], exact[inside], rtol=2e-9, atol=0)
    # beyond the series' range: log1p itself (NaN below -1, as log1p; z summed in another
    # order here)
    np.testing.assert_allclose(out[~inside], exact[~inside], rtol=1e-13, atol=0)
    assert np.array_equal(np.isnan(out), np.isnan(exact))


def test_a_value_does_not_depend_on_its_position_or_the_table_size():
    # the compiled loop is vectorised with a scalar remainder: every position gives the bits
    ratios = _ratios((1, 1003), scale=0.4)
    whole = log1p_combination(ratios, np.array([0.7]), np.empty((1, 1003)))
    for start, stop in ((1, 1003), (3, 500), (0, 7), (5, 6)):
        part = log1p_combination(
            np.ascontiguousarray(ratios[:, :, start:stop]),
            np.array([0.7]),
            np.empty((1, stop - start)),
        )
        np.testing.assert_array_equal(part, whole[:, start:stop])


def test_a_kept_scratch_array_gives_the_same_bits():
    ratios = _ratios((16, 40))
    fresh = log1p_combination(ratios, np.array([0.25]), np.empty((16, 40)))
    scratch = np.full(16 * 40 + 9, np.nan)
    kept = log1p_combination(ratios, np.array([0.25]), np.empty((16, 40)), scratch)
    np.testing.assert_array_equal(kept, fresh)


@pytest.mark.parametrize("amp", [0.3, -0.7, 2.5])
def test_one_table_takes_the_bits_of_the_general_combination(amp):
    # J = 1 takes a r inside the pass and bounds z by the table's extremes (given or found);
    # the general path forms z first: adding a zero second table leaves z's values as they are
    ratios = _ratios((29, 73), scale=0.8)
    general = log1p_combination(
        np.concatenate([ratios, ratios]), np.array([amp, 0.0]), np.empty((29, 73))
    )
    found = log1p_combination(ratios, np.array([amp]), np.empty((29, 73)))
    given = log1p_combination(
        ratios, np.array([amp]), np.empty((29, 73)), ratio_range=(ratios.min(), ratios.max())
    )
    np.testing.assert_array_equal(found, general)
    np.testing.assert_array_equal(given, general)
    # told which elements have |r| >= 1/2: only those are looked at again (|a| <= 1), with
    # the same bits; beyond |a| = 1 every element is
    wide = np.flatnonzero(np.abs(ratios) >= 0.5)
    told = log1p_combination(ratios, np.array([amp]), np.empty((29, 73)), wide=wide)
    np.testing.assert_array_equal(told, general)
    z = amp * ratios.ravel().astype(np.float64)
    outside = wide[(z[wide] < SERIES_LOW) | (z[wide] > SERIES_HIGH)]
    if abs(amp) <= 1 and outside.size:  # the list is used: one left off keeps a series value
        left = log1p_combination(
            ratios, np.array([amp]), np.empty((29, 73)), wide=np.setdiff1d(wide, outside[:1])
        )
        assert left.ravel()[outside[0]] != general.ravel()[outside[0]]


def test_bad_shapes_and_arrays_are_refused():
    ratios = _ratios((4, 5))
    with pytest.raises(ValueError, match="disagree"):
        log1p_combination(ratios, np.array([0.1, 0.2]), np.empty((4, 5)))
    with pytest.raises(ValueError, match="disagree"):
        log1p_combination(ratios, np.array([0.1]), np.empty((5, 4)))
    with pytest.raises(ValueError, match="out must be"):
        log1p_combination(ratios, np.array([0.1]), np.empty((4, 5), dtype=np.float32))
    out = np.empty((4, 5))
    with pytest.raises(ValueError, match="overlap"):
        log1p_combination(ratios, np.array([0.1]), out, out.reshape(-1))
    with pytest.raises(ValueError, match="overlap"):
        log1p_combination(ratios, np.array([0.1]), out, np.empty(3))
