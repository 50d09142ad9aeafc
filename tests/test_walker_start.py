"""Where the posterior's walkers start (issue 12, item 4): along directions the data do not
constrain they start spread over the prior, not in a small ball (which the short burn-in did
not undo: the intervals came out too narrow, bench_coverage)."""

from __future__ import annotations

import numpy as np

from xrmodifier_hpc.inference.posterior import PRIOR_PRECISION, Mode, start_walkers


def _mode(u: list[float], cov: np.ndarray | None, walkers: int) -> Mode:
    return Mode(u=np.array(u), log_post=0.0, cov=cov, log_mass=0.0, walkers=walkers)


def test_flat_and_unknown_directions_start_spread_over_the_prior() -> None:
    rng = np.random.default_rng(0)
    # mu flat (huge variance), sigma and A well constrained
    flat = _mode([0.5, 0.3, 0.7], np.diag([1e6, 1e-4, 4e-4]), 4000)
    p = start_walkers([flat], rng)
    assert p.shape == (4000, 3) and np.all((p > 0) & (p < 1))
    # along mu: the prior's Gaussian stand-in (sd 1/sqrt(12) = 0.29), cut to the cube
    assert p[:, 0].std() > 0.2 and p[:, 0].min() < 0.05 and p[:, 0].max() > 0.95
    # along the constrained axes the Laplace widths are kept (the prior barely narrows them)
    for j, var in ((1, 1e-4), (2, 4e-4)):
        expected = np.sqrt(1 / (1 / var + PRIOR_PRECISION))
        assert abs(p[:, j].std() / expected - 1) < 0.05
        assert abs(p[:, j].mean() - flat.u[j]) < 0.01
    # no Laplace approximation at all (Hessian not positive definite): the prior's width
    unknown = start_walkers([_mode([0.02, 0.5, 0.98], None, 2000)], rng)
    assert np.all((unknown > 0) & (unknown < 1))
    assert np.all(unknown.std(axis=0) > 0.1)


def test_walkers_are_shared_as_the_modes_say() -> None:
    rng = np.random.default_rng(1)
    modes = [
        _mode([0.2, 0.2], np.eye(2) * 1e-4, 6),
        _mode([0.8, 0.8], np.eye(2) * 1e-4, 10),
    ]
    p = start_walkers(modes, rng)
    assert p.shape == (16, 2)
    assert np.all(np.abs(p[:6] - 0.2) < 0.06) and np.all(np.abs(p[6:] - 0.8) < 0.06)


def test_a_negligible_mode_gets_no_walkers() -> None:
    """A grid-bound optimum e^-18.5 below the best (the demo's) took 2 walkers that never
    left it; below MIN_MODE_WEIGHT of the Laplace mass a mode now gets none."""
    from xrmodifier_hpc.inference.posterior import MIN_MODE_WEIGHT, allocate_walkers

    main = Mode(u=np.array([0.4, 0.3, 0.6]), log_post=-32.5, cov=None, log_mass=-38.3)
    minor = Mode(u=np.array([1.0, 0.4, 0.3]), log_post=-51.2, cov=None, log_mass=-56.8)
    live = allocate_walkers([main, minor], 32)
    assert [m.walkers for m in live] == [32] and live[0] is main and minor.walkers == 0
    # a mode holding a real share keeps its floor and its proportional share
    second = Mode(u=np.array([0.8, 0.3, 0.6]), log_post=-33.0, cov=None, log_mass=-39.0)
    live = allocate_walkers([main, second], 32)
    assert sum(m.walkers for m in live) == 32 and second.walkers >= 2
    assert 0 < MIN_MODE_WEIGHT < np.exp(-39.0 + 38.3) / (1 + np.exp(-39.0 + 38.3))


def test_stuck_walkers_are_found_and_never_all() -> None:
    from xrmodifier_hpc.inference.posterior import stuck_walkers

    rng = np.random.default_rng(2)
    log_prob = -1.5 - rng.chisquare(3, size=(400, 32)) / 2  # a 3-d posterior's scatter
    log_prob[:, 7] = -20.0 - rng.chisquare(3, size=400) / 2  # stuck 18.5 below
    log_prob[:100, 9] = -40.0  # only during burn-in: not stuck
    stuck = stuck_walkers(log_prob, burn=100)
    assert stuck.tolist() == [j == 7 for j in range(32)]
    assert not stuck_walkers(log_prob - 100.0, burn=100)[np.arange(32) != 7].any()
    assert not stuck_walkers(np.full((50, 4), -30.0), burn=10).any()
