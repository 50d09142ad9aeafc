"""What every backend promises (backends/base.py), checked on each backend the same way."""

from __future__ import annotations

import numpy as np
import pytest

from xrmodifier_hpc.backends import make_backend
from xrmodifier_hpc.backends.base import (
    STATUS_AT_GRID_BOUND,
    STATUS_NAMES,
    STATUS_TOO_FEW_COUNTS,
)
from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import Grid

ALL_BITS = sum(STATUS_NAMES)


def _available(name: str) -> bool:
    if name != "xspec":
        return True
    try:
        import xspec  # noqa: F401
    except Exception:
        return False
    return True


@pytest.fixture(params=["native", "xspec"])
def backend_name(request) -> str:
    if not _available(request.param):
        pytest.skip("PyXspec not importable (runs inside the container)")
    return request.param


@pytest.fixture
def cfg(small_config):
    return load_config(small_config)


def _run(cfg, name, index, **overrides):
    grid = Grid.from_config(cfg)
    theta, t_true = grid.points(np.asarray(index))
    with make_backend(cfg, name=name, **overrides) as backend:
        return backend.run(theta, t_true, np.asarray(index))


def test_shapes_and_dtypes(backend_name, cfg):
    index = np.array([0, 5, 17, 40, 71])
    res = _run(cfg, backend_name, index)
    n_real, n_t = cfg.simulation.realisations, len(cfg.simulation.fit_tgrid)
    res.check_shapes(index.size, n_real, n_t)
    for name in (
        "t_fit_orig",
        "t_fit_mod",
        "err_orig",
        "err_mod",
        "norm",
        "counts",
        "curve_orig",
        "curve_mod",
    ):
        assert np.issubdtype(getattr(res, name).dtype, np.floating), name
    assert res.status.dtype == np.uint8
    assert np.all((res.status & ~np.uint8(ALL_BITS)) == 0)
    ok = res.status == 0
    assert ok.mean() > 0.9  # tens of thousands of counts per spectrum: ordinary fits converge
    assert np.all(np.isfinite(res.t_fit_orig[ok[..., 0]])) and np.all(res.err_orig[ok[..., 0]] > 0)
    assert np.all(np.isfinite(res.t_fit_mod[ok[..., 1]])) and np.all(res.err_mod[ok[..., 1]] > 0)
    assert np.all(res.norm > 0) and np.all(res.counts > 0)


def test_curves_optional(backend_name, cfg):
    res = _run(cfg, backend_name, [3], curves=False)
    assert res.curve_orig is None and res.curve_mod is None
    res.check_shapes(1, cfg.simulation.realisations, None)


def test_status_codes(backend_name, cfg):
    grid = Grid.from_config(cfg)
    theta, _ = grid.points([0, 1, 2])
    t_hi = float(cfg.simulation.fit_tgrid.array.max())
    t_true = np.array([3.0, 1.5 * t_hi, 3.0])
    with make_backend(cfg, name=backend_name, mode="asimov", realisations=1) as be:
        res = be.run(theta, t_true, np.array([0, 1, 2]))
    assert np.all(res.status[0] == 0)
    assert np.all(res.status[1] & STATUS_AT_GRID_BOUND)
    with make_backend(
        cfg,
        name=backend_name,
        mode="asimov",
        realisations=1,
        counts=0.5 * cfg.simulation.min_counts,
    ) as be:
        few = be.run(theta[:1], np.array([3.0]), np.array([0]))
    assert np.all(few.status == STATUS_TOO_FEW_COUNTS)
    assert np.all(np.isnan(few.t_fit_orig)) and np.all(np.isnan(few.t_fit_mod))


def test_results_do_not_depend_on_batching(backend_name, cfg):
    index = np.arange(8, 32)
    full = _run(cfg, backend_name, index)
    rng = np.random.default_rng(1)
    for take in (
        rng.permutation(index.size)[:9],
        np.sort(rng.choice(index.size, 5, False)),
        np.array([index.size - 1]),
    ):
        part = _run(cfg, backend_name, index[take])
        for name in (
            "t_fit_orig",
            "t_fit_mod",
            "err_orig",
            "err_mod",
            "status",
            "norm",
            "counts",
            "curve_orig",
            "curve_mod",
        ):
            a, b = getattr(full, name)[take], getattr(part, name)
            assert a.tobytes() == b.tobytes(), name


def test_asimov_identity_recovers_t_true(backend_name, cfg):
    grid = Grid.from_config(cfg)
    from xrmodifier_hpc.physics.modifiers import get_modifier

    identity = get_modifier(cfg.modifier.family, cfg.modifier.options).identity()
    t_true = grid.t_true_axis
    theta = np.tile(identity, (t_true.size, 1))
    with make_backend(cfg, name=backend_name, mode="asimov", realisations=1) as be:
        res = be.run(theta, t_true, np.arange(t_true.size))
    assert np.all(res.status == 0)
    np.testing.assert_allclose(res.t_fit_orig[:, 0], t_true, rtol=1e-3)
    np.testing.assert_allclose(res.t_fit_mod[:, 0], t_true, rtol=1e-3)
    np.testing.assert_allclose(res.counts[:, 0], cfg.simulation.counts, rtol=1e-3)


def test_curves_have_their_minimum_at_the_best_fit(backend_name, cfg):
    res = _run(cfg, backend_name, np.arange(24, 36))
    tgrid = cfg.simulation.fit_tgrid.array
    step = np.max(np.diff(np.log(tgrid)))
    for curve, t_fit, status in (
        (res.curve_orig, res.t_fit_orig, res.status[..., 0]),
        (res.curve_mod, res.t_fit_mod, res.status[..., 1]),
    ):
        ok = status == 0
        node = tgrid[np.argmin(curve, axis=-1)]
        assert np.all(np.abs(np.log(node[ok] / t_fit[ok])) <= step)
        # the profile rises by far more than 1 across the grid: it is a real statistic curve
        assert np.all(np.ptp(curve[ok], axis=-1) > 10)
