"""physics.poisson: the compiled exact Poisson sampler (inversion below PTRS_MIN, PTRS above).

The statistical tests use fixed seeds, so they are deterministic; their thresholds (5 standard
errors, p > 1e-4) are loose enough for a correct sampler and tight enough to catch a wrong one
(a biased mean, a wrong variance, a misshapen pmf, reused uniforms).
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from xrmodifier_hpc.physics import poisson

N_DRAWS = 200_000
#: a mean the rejection (PTRS) draws
BIG = 1.5 * poisson.PTRS_MIN
#: both sides of the inversion/PTRS boundary, the boundary itself and the far tail of lam
LAMS = [
    0.0,
    1e-3,
    0.7,
    3.0,
    9.99,
    10.0,
    37.0,
    float(np.nextafter(poisson.PTRS_MIN, 0.0)),
    poisson.PTRS_MIN,
    BIG,
    1e3,
    1e6,
]


def _row_stream(seed: int):
    """A row callback: row r's stream is a fresh generator seeded with ``seed + r``."""

    def uniforms(r: int, out: np.ndarray) -> None:
        np.random.default_rng(seed + r).random(out=out)

    return uniforms


def _keyed_stream(keys: list[int], calls: list[tuple[int, int]] | None = None):
    """A row callback: row r's stream starts from the beginning of ``default_rng(keys[r])``."""

    def uniforms(r: int, out: np.ndarray) -> None:
        if calls is not None:
            calls.append((r, out.size))
        np.random.default_rng(keys[r]).random(out=out)

    return uniforms


def _pull_mean(x: np.ndarray, lam: float) -> float:
    return (x.mean() - lam) / np.sqrt(lam / x.size)


def _pull_var(x: np.ndarray, lam: float) -> float:
    # Var(s^2) = (mu4 - sigma^4) / N to leading order; Poisson mu4 = lam + 3 lam^2
    return (x.var(ddof=1) - lam) / np.sqrt((lam + 2.0 * lam**2) / x.size)


def _chi2_p(x: np.ndarray, lam: float) -> float:
    """Chi-square p-value of x against Poisson(lam): bins with N pmf >= 20, tails pooled."""
    n = x.size
    dist = stats.poisson(lam)
    lo, hi = int(dist.ppf(1e-12)), int(dist.isf(1e-12)) + 1
    ks = np.arange(lo, hi + 1)
    enough = ks[n * dist.pmf(ks) >= 20]
    first, last = int(enough[0]), int(enough[-1])
    assert last > first, "need at least two bins"
    # first bin: k <= first, last bin: k >= last, one bin per k in between
    edges = np.arange(first, last + 1)
    expected = n * dist.pmf(edges)
    expected[0] = n * dist.cdf(first)
    expected[-1] = n * dist.sf(last - 1)
    observed = np.bincount(np.clip(x, first, last).astype(np.int64) - first, minlength=edges.size)
    assert observed.sum() == n
    assert expected.min() >= 20
    chi2 = np.sum((observed - expected) ** 2 / expected)
    return float(stats.chi2.sf(chi2, edges.size - 1))


# --- 1. distribution ------------------------------------------------------------------------


@pytest.mark.parametrize("lam", LAMS)
def test_distribution_single_lam(lam):
    x = poisson.poisson_counts(
        np.random.default_rng(20_000 + LAMS.index(lam)), np.full(N_DRAWS, lam)
    )
    assert x.shape == (N_DRAWS,)
    assert np.all(x >= 0)
    if lam == 0.0:
        assert np.all(x == 0)
        return
    assert abs(_pull_mean(x, lam)) < 5, (x.mean(), lam)
    assert abs(_pull_var(x, lam)) < 5, (x.var(ddof=1), lam)
    assert _chi2_p(x, lam) > 1e-4


def _spectrum(n: int) -> np.ndarray:
    """A smooth spectrum from 0.01 to 5 PTRS_MIN counts: a steep continuum and a line."""
    e = np.linspace(0.5, 7.0, n)
    top = 5.0 * poisson.PTRS_MIN
    lam = 0.01 + top * np.exp(-(e - 0.5) / 0.5) + 40.0 * np.exp(-0.5 * ((e - 6.4) / 0.1) ** 2)
    lam[[10, 11]] = [np.nextafter(poisson.PTRS_MIN, 0.0), poisson.PTRS_MIN]  # both sides
    assert lam.min() < 0.02 and 0.75 * top < lam.max() < 1.25 * top
    assert 10 < np.count_nonzero(lam >= poisson.PTRS_MIN) < n - 10
    return lam


def test_distribution_mixed_lam_per_element_pulls():
    n, m = 96, 3000
    lam = _spectrum(n)
    x = poisson.poisson_rows(np.tile(lam, (m, 1)), _row_stream(7_000))
    pulls = (x.mean(axis=0) - lam) / np.sqrt(lam / m)
    assert np.max(np.abs(pulls)) < 5, pulls
    assert abs(pulls.mean()) < 5 / np.sqrt(n), pulls.mean()
    assert abs(pulls.std() - 1) < 5 / np.sqrt(2 * n), pulls.std()
    assert stats.chi2.sf(np.sum(pulls**2), n) > 1e-4
    # and the per-element variances follow lam (pulls of s^2, Poisson mu4 = lam + 3 lam^2)
    var_pulls = (x.var(axis=0, ddof=1) - lam) / np.sqrt((lam + 2 * lam**2) / m)
    assert abs(var_pulls.mean()) < 5 / np.sqrt(n), var_pulls.mean()


# --- 2. independence ------------------------------------------------------------------------


@pytest.mark.parametrize("lam", [3.0, 37.0])
@pytest.mark.parametrize("lag", [1, poisson.LANES])
def test_adjacent_elements_uncorrelated(lam, lag):
    x = poisson.poisson_counts(np.random.default_rng(31 + lag), np.full(N_DRAWS, lam))
    r = np.corrcoef(x[:-lag], x[lag:])[0, 1]
    assert abs(r) < 5 / np.sqrt(x.size - lag), r


def test_inversion_and_rejection_elements_uncorrelated():
    # small and large lam interleaved in one row: the rejection must not reuse the
    # inversion's uniforms (nor one element's uniforms another's)
    lam = np.tile([3.0, 30.0], N_DRAWS // 2)
    x = poisson.poisson_counts(np.random.default_rng(5), lam)
    small, big = x[0::2], x[1::2]
    for a, b in [(small, big), (big[:-1], small[1:]), (big[:-1], big[1:])]:
        r = np.corrcoef(a, b)[0, 1]
        assert abs(r) < 5 / np.sqrt(a.size), r
    assert abs(_pull_mean(small, 3.0)) < 5 and abs(_pull_mean(big, 30.0)) < 5


def test_elements_of_a_row_uncorrelated_across_rows():
    # the same few elements in many rows, each row from its own stream: every element takes
    # uniforms of its own (the rejection's come after the inversion's, none shared; the last
    # element is an inversion one, so its uniform is the one next to the rejection's first)
    lam = np.array([3.0, 30.0, 0.5, 300.0, 10.0, 9.99])
    m = 5000
    x = poisson.poisson_rows(np.tile(lam, (m, 1)), _row_stream(50_000))
    r = np.corrcoef(x, rowvar=False)
    off = r[~np.eye(lam.size, dtype=bool)]
    assert np.max(np.abs(off)) < 5 / np.sqrt(m), r
    pulls = (x.mean(axis=0) - lam) / np.sqrt(lam / m)
    assert np.max(np.abs(pulls)) < 5, pulls


# --- 3. determinism and batch independence --------------------------------------------------

_ROWS = {
    "A": np.linspace(0.0, 25.0, 40),
    "B": np.full(40, 4.0),
    "C": np.geomspace(1e-2, 2e3, 40),
}
_SEEDS = {"A": 101, "B": 202, "C": 303}


@pytest.mark.parametrize("exhaust", [False, True], ids=["default", "exhausted"])
def test_rows_do_not_depend_on_the_batch(exhaust, monkeypatch):
    if exhaust:  # every row with a lam >= PTRS_MIN goes through the redraw
        monkeypatch.setattr(poisson, "PTRS_UNIFORMS", 0)
        monkeypatch.setattr(poisson, "SPARE_UNIFORMS", 0)

    def draw(names):
        lam = np.stack([_ROWS[k] for k in names])
        return poisson.poisson_rows(lam, _keyed_stream([_SEEDS[k] for k in names]))

    abc = draw("ABC")
    ca = draw("CA")
    np.testing.assert_array_equal(ca[0], abc[2])
    np.testing.assert_array_equal(ca[1], abc[0])
    np.testing.assert_array_equal(draw("B")[0], abc[1])
    np.testing.assert_array_equal(draw("ABC"), abc)


def test_counts_same_seed_same_output():
    lam = np.concatenate([_spectrum(96), np.full(50, 1e6)])
    a = poisson.poisson_counts(np.random.default_rng(9), lam)
    b = poisson.poisson_counts(np.random.default_rng(9), lam)
    c = poisson.poisson_counts(np.random.default_rng(10), lam)
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


# --- 4. the uniform contract ----------------------------------------------------------------


def test_callback_called_once_per_row_with_uniforms_needed():
    lam = np.stack([np.full(30, 0.5), np.linspace(0, 40, 30), np.full(30, 500.0), np.zeros(30)])
    needed = poisson.uniforms_needed(lam)
    n_big = np.count_nonzero(lam >= poisson.PTRS_MIN, axis=1)
    np.testing.assert_array_equal(
        needed, 30 + poisson.PTRS_UNIFORMS * n_big + poisson.SPARE_UNIFORMS
    )
    calls = []

    def uniforms(r, out):
        assert out.dtype == np.float64 and out.flags.c_contiguous and out.flags.writeable
        calls.append((r, out.size))
        np.random.default_rng(r).random(out=out)

    poisson.poisson_rows(lam, uniforms)
    assert calls == [(r, int(needed[r])) for r in range(lam.shape[0])]


def test_counts_takes_uniforms_needed_from_the_generator():
    lam = _spectrum(96)
    rng = np.random.default_rng(4)
    poisson.poisson_counts(rng, lam)
    # the generator moved on by exactly uniforms_needed (no redraw in the normal case)
    after = rng.random()
    reference = np.random.default_rng(4).random(int(poisson.uniforms_needed(lam[None])[0]) + 1)
    assert after == reference[-1]


# --- 5. the exhaustion path -----------------------------------------------------------------


def test_source_reads_the_budget_only_in_python():
    # the monkeypatching below only works if the compiled code never reads these
    import inspect

    for name in ("PTRS_UNIFORMS", "SPARE_UNIFORMS"):
        for func in (poisson._settle, poisson._inversion, poisson._ptrs, poisson._rows):
            assert name not in inspect.getsource(func.py_func)
        assert name in inspect.getsource(poisson.uniforms_needed)


@pytest.mark.parametrize("spare", [0, 1])
def test_exhausted_rows_are_redrawn_from_a_longer_stream(spare, monkeypatch):
    lam = np.stack([np.full(20, 2.0), np.full(20, BIG), np.linspace(0.0, 2 * BIG, 20)])
    keys = [11, 22, 33]
    default = poisson.poisson_rows(lam, _keyed_stream(keys))

    monkeypatch.setattr(poisson, "PTRS_UNIFORMS", 0)
    monkeypatch.setattr(poisson, "SPARE_UNIFORMS", spare)
    needed = poisson.uniforms_needed(lam)
    np.testing.assert_array_equal(needed, 20 + spare)
    calls = []
    exhausted = poisson.poisson_rows(lam, _keyed_stream(keys, calls))

    sizes = {r: [s for q, s in calls if q == r] for r in range(3)}
    assert sizes[0] == [20 + spare]  # inversion only: never runs out
    for r in (1, 2):  # the rejections ran out: called again, each time with more
        assert sizes[r][0] == needed[r]
        assert len(sizes[r]) >= 2
        assert all(b > a for a, b in zip(sizes[r], sizes[r][1:]))
    # a row is redrawn from its stream's beginning: the same counts as with enough uniforms
    np.testing.assert_array_equal(exhausted, default)


def test_exhausted_draws_follow_the_distribution(monkeypatch):
    lam = np.full(N_DRAWS // 2, BIG)
    default = poisson.poisson_counts(np.random.default_rng(77), lam)
    monkeypatch.setattr(poisson, "PTRS_UNIFORMS", 0)
    monkeypatch.setattr(poisson, "SPARE_UNIFORMS", 0)
    x = poisson.poisson_counts(np.random.default_rng(77), lam)
    np.testing.assert_array_equal(x, default)  # the same generator stream, the same counts
    assert abs(_pull_mean(x, BIG)) < 5
    assert abs(_pull_var(x, BIG)) < 5
    assert _chi2_p(x, BIG) > 1e-4

    # and many rows each redrawn from its own stream
    calls = []
    rows = poisson.poisson_rows(np.full((500, 40), BIG), _keyed_stream(list(range(500)), calls))
    assert len(calls) >= 2 * 500
    assert abs(_pull_mean(rows.ravel(), BIG)) < 5
    assert abs(_pull_var(rows.ravel(), BIG)) < 5


# --- 6. errors ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad", [-1.0, np.nan, np.inf, -np.inf, 2e15])
@pytest.mark.parametrize("where", [(0, 0), (2, 3)])
def test_invalid_lam_raises_naming_the_value(bad, where):
    lam = np.full((3, 5), 4.0)
    lam[:, -1] = 50.0
    lam[where] = bad
    with pytest.raises(ValueError) as info:
        poisson.poisson_rows(lam, _row_stream(0))
    message = str(info.value)
    assert f"Poisson mean {float(bad)!r} is not" in message, message  # a plain number
    assert "\n" not in message
    with pytest.raises(ValueError, match="Poisson mean"):
        poisson.poisson_counts(np.random.default_rng(0), lam.reshape(3, 5, 1))


def test_invalid_lam_first_bad_value_is_named():
    lam = np.array([[1.0, 20.0, 3.0], [5.0, -2.5, 30.0], [np.nan, 1.0, 1.0]])
    with pytest.raises(ValueError, match=r"-2\.5"):
        poisson.poisson_rows(lam, _row_stream(0))


def test_lam_max_is_accepted():
    x = poisson.poisson_counts(np.random.default_rng(3), np.full(100, poisson.LAM_MAX))
    assert np.all(np.isfinite(x))
    assert abs(x.mean() - poisson.LAM_MAX) < 5 * np.sqrt(poisson.LAM_MAX / x.size)


@pytest.mark.parametrize("shape", [(5,), (2, 3, 4), ()])
def test_rows_needs_a_2d_lam(shape):
    with pytest.raises(ValueError, match="lam must be"):
        poisson.poisson_rows(np.ones(shape), _row_stream(0))


# --- 7. shapes ------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(3, 4, 5), (60,), (7, 1), (), (3, 0, 5)])
def test_counts_keeps_the_shape_and_gives_integers(shape):
    lam = np.geomspace(1e-2, 1e4, max(int(np.prod(shape)), 1))[: int(np.prod(shape))]
    x = poisson.poisson_counts(np.random.default_rng(8), lam.reshape(shape))
    assert x.shape == shape
    assert x.dtype == np.float64
    np.testing.assert_array_equal(x, np.round(x))
    assert np.all(x >= 0)


def test_zero_lam_gives_zeros():
    x = poisson.poisson_counts(np.random.default_rng(1), np.zeros((4, 6, 2)))
    np.testing.assert_array_equal(x, np.zeros((4, 6, 2)))
    rows = poisson.poisson_rows(np.zeros((3, 50)), _row_stream(1))
    np.testing.assert_array_equal(rows, 0.0)


def test_rows_accepts_any_layout_and_dtype():
    lam = np.arange(60, dtype=np.int64).reshape(5, 12)
    strided = np.asfortranarray(lam.astype(np.float64))[:, ::-1]
    a = poisson.poisson_rows(strided, _row_stream(2))
    b = poisson.poisson_rows(np.ascontiguousarray(lam[:, ::-1]), _row_stream(2))
    np.testing.assert_array_equal(a, b)


def test_without_a_writable_cache_the_kernels_compile_per_process():
    """Where numba finds no writable cache place it refuses ``cache=True`` at decoration
    (a read-only image and home): the module still imports and draws, compiling instead."""
    import subprocess
    import sys

    code = (
        "import numba\n"
        "real = numba.njit\n"
        "def njit(*a, cache=False, **k):\n"
        "    if cache:\n"
        "        raise RuntimeError('cannot cache function: no locator available')\n"
        "    return real(*a, **k)\n"
        "numba.njit = njit\n"
        "import numpy as np\n"
        "from xrmodifier_hpc.physics import poisson\n"
        "x = poisson.poisson_counts(np.random.default_rng(1), np.full(20000, 5.0))\n"
        "assert abs(x.mean() - 5.0) < 0.1, x.mean()\n"
        "print('ok')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "ok"


def test_the_inversions_exp_is_math_exp_to_a_unit_in_the_last_place():
    """exp(-lam) of the inversion (p_0 of the Poisson CDF) is computed in a vectorised loop:
    within ~1 ulp of math.exp on all of [0, PTRS_MIN], at the seams of its range reduction
    (odd multiples of ln 2 / 2) and at the ends."""
    import math

    rng = np.random.default_rng(5)
    seams = (np.arange(1, 2 * int(poisson.PTRS_MIN / math.log(2)) + 2, 2) * math.log(2) / 2)[
        :, None
    ] * (1 + np.array([-1e-15, 0.0, 1e-15]))
    lam = np.concatenate(
        [
            rng.uniform(0, poisson.PTRS_MIN, 200_000),
            np.linspace(0, poisson.PTRS_MIN, 40_001),
            seams.ravel(),
            [0.0, 5e-324, 1e-300, 1e-12, poisson.PTRS_MIN],
        ]
    )
    lam = lam[lam <= poisson.PTRS_MIN]
    out = np.empty_like(lam)
    poisson._exp_neg(lam, out, np.empty_like(lam))
    exact = np.array([math.exp(-x) for x in lam])
    assert np.max(np.abs(out - exact) / exact) <= 1.1 * np.finfo(float).eps
    assert out[lam == 0.0][0] == 1.0


def _pcg64_words(bit_generator: np.random.PCG64) -> list[int]:
    state = bit_generator.state["state"]
    m64 = (1 << 64) - 1
    return [state["state"] >> 64, state["state"] & m64, state["inc"] >> 64, state["inc"] & m64]


@pytest.mark.parametrize("spare", [None, 0])
def test_pcg64_rows_draw_what_the_generator_callback_draws(spare, monkeypatch):
    """The compiled PCG64 stream is numpy's, bit for bit, and the counts are poisson_rows'
    with each row's Generator as its uniforms (also when the rejections need more)."""
    rng = np.random.default_rng(5)
    lam = np.abs(rng.normal(8.0, 20.0, (12, 300)))
    lam[:, :5] = 0.0
    lam[:, 5:40] = 3 * BIG  # many rejection draws
    seeds = [1000 + r for r in range(lam.shape[0])]
    words = np.array([_pcg64_words(np.random.PCG64(s)) for s in seeds], dtype=np.uint64)
    before = words.copy()
    if spare is not None:  # the compiled batches start short: the stream continues
        monkeypatch.setattr(poisson, "SPARE_UNIFORMS", spare)

    def uniforms(r: int, out: np.ndarray) -> None:
        np.random.Generator(np.random.PCG64(seeds[r])).random(out=out)

    ours = poisson.poisson_rows_pcg64(lam, words)
    np.testing.assert_array_equal(ours, poisson.poisson_rows(lam, uniforms))
    np.testing.assert_array_equal(words, before)  # the caller's states are not advanced
    # the raw stream
    state = words[0].copy()
    u = np.empty(1000)
    poisson._pcg64_fill(state, u)
    np.testing.assert_array_equal(u, np.random.Generator(np.random.PCG64(seeds[0])).random(1000))


def test_pcg64_rows_refuse_bad_input():
    words = np.zeros((2, 4), dtype=np.uint64)
    with pytest.raises(ValueError, match="states"):
        poisson.poisson_rows_pcg64(np.ones((3, 5)), words)
    with pytest.raises(ValueError, match="-1.0"):
        poisson.poisson_rows_pcg64(np.array([[1.0, 2.0], [3.0, -1.0]]), words)
