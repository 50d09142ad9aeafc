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
