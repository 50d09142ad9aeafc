"""The inversion's pieces against an analytic emulator with the real emulator's interface:
likelihood quadrature against brute-force integration, the corrected-T1 solve and its
gradient, the divergences against direct numerics, multi-start design and merging, recovery
on noise-free data, and the whole ``invert`` stage's artefacts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from astropy.io import fits

from xrmodifier_hpc import inference as inv
from xrmodifier_hpc.io.observations import Observations, read_observations, write_observations
from xrmodifier_hpc.io.result import InversionResult
from xrmodifier_hpc.stages import invert as stage

THETA_TRUE = np.array([1.6, 0.35, 0.15])


class AnalyticEmulator(torch.nn.Module):
    """A smooth, identifiable stand-in for the trained emulator (same call and attributes).

    log(T1 / T) = A/2 exp(-(mu - 0.9 sqrt T)^2 / (2 (sigma + 0.3)^2)): a bump in temperature
    whose place, width and height follow mu, sigma and A. T1' = T (1 + 0.002 ln T).
    """

    param_names = ("mu", "sigma", "A")
    param_units = ("keV", "keV", "")

    def __init__(self) -> None:
        super().__init__()
        self.bounds = np.array([[0.8, 3.0], [0.15, 0.8], [-0.3, 0.3], [1.0, 12.0]])
        self.metrics = {"offgrid": {"emulator": {"t_fit_orig": 0.002}}}
        self.config_text = ""

    def forward(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        mu, sig, a = theta[:, 0], theta[:, 1], theta[:, 2]
        g = torch.exp(-((mu - 0.9 * torch.sqrt(t)) ** 2) / (2 * (sig + 0.3) ** 2))
        t1 = t * torch.exp(0.5 * a * g)
        t1p = t * (1 + 0.002 * torch.log(t))
        return torch.stack([t1, t1p], 1)

    def log_scatter(self, theta: torch.Tensor, t: torch.Tensor) -> None:
        return None


def make_obs(
    module: torch.nn.Module,
    theta: np.ndarray,
    n: int = 40,
    rel_err: float = 0.03,
    seed: int = 1,
    noise: bool = True,
    asym: float = 1.0,
) -> tuple[Observations, np.ndarray]:
    rng = np.random.default_rng(seed)
    t_true = np.exp(np.linspace(np.log(1.5), np.log(10.0), n))
    with torch.no_grad():
        t1 = module(torch.tensor(np.tile(theta, (n, 1))), torch.tensor(t_true))[:, 0].numpy()
    s = rel_err * t_true
    z0, z1 = (rng.standard_normal(n), rng.standard_normal(n)) if noise else (0.0, 0.0)
    obs = Observations(
        tuple(f"s{i:02d}" for i in range(n)),
        t_true + s * z0,
        s,
        s * asym,
        t1 + s * z1,
        s * asym,
        s,
    )
    return obs, t_true


@pytest.fixture(scope="module")
def emu() -> AnalyticEmulator:
    return AnalyticEmulator()


@pytest.fixture(scope="module")
def view(emu) -> inv.EmulatorView:
    return inv.EmulatorView(emu)


# ---------------------------------------------------------------------------------- likelihood


def test_split_normal_is_normalised_and_gaussian_when_symmetric() -> None:
    x = torch.tensor(5.0, dtype=torch.float64)
    m = torch.linspace(-5, 15, 40001, dtype=torch.float64)
    lo, hi = torch.tensor(0.5, dtype=torch.float64), torch.tensor(1.5, dtype=torch.float64)
    dens = torch.exp(inv.split_normal_logpdf(x, m, lo, hi))
    assert float(torch.trapezoid(dens, m)) == pytest.approx(1.0, abs=1e-8)
    # the lower error applies where the model lies below the observed value
    below = inv.split_normal_logpdf(x, torch.tensor(4.0, dtype=torch.float64), lo, hi)
    assert float(below) == pytest.approx(-0.5 * 4.0 - math.log(1.0) - 0.5 * math.log(2 * math.pi))
    sym = inv.split_normal_logpdf(x, m, hi, hi)
    ref = -0.5 * ((x - m) / hi) ** 2 - math.log(1.5) - 0.5 * math.log(2 * math.pi)
    assert torch.allclose(sym, ref)


def test_spline_carries_the_grid_to_the_nodes(emu, view) -> None:
    obs, _ = make_obs(emu, THETA_TRUE)
    lik = inv.Likelihood(view, obs, 0.002)
    theta = torch.tensor(np.array([THETA_TRUE, [2.5, 0.2, -0.3]]))
    with torch.no_grad():
        via_grid = lik.t1_at_nodes(theta)
        nodes = torch.tensor(lik.quad.t_nodes.ravel())
        for b in range(2):
            direct = emu(theta[b].expand(nodes.numel(), -1), nodes)[:, 0]
            rel = (via_grid[b].ravel() - direct).abs() / direct
            # far below any emulator's own error (s_emu is ~1e-3 of T1)
            assert float(rel.max()) < 1e-4


def _brute_force_log_l(emu, obs: Observations, theta: np.ndarray, s_emu: float) -> np.ndarray:
    """log L_i by a dense trapezoid over the whole T range with direct emulator calls."""
    t = np.linspace(1.0, 12.0, 200_001)
    out = []
    for i in range(obs.n):
        with torch.no_grad():
            tt = torch.tensor(t)
            t1 = emu(torch.tensor(theta).expand(t.size, -1), tt)[:, 0]
            se = s_emu * obs.t1[i]
            l0 = inv.split_normal_logpdf(
                torch.tensor(obs.t0[i]),
                tt,
                torch.tensor(obs.t0_err_lo[i]),
                torch.tensor(obs.t0_err_hi[i]),
            )
            l1 = inv.split_normal_logpdf(
                torch.tensor(obs.t1[i]),
                t1,
                torch.tensor(math.hypot(obs.t1_err_lo[i], se)),
                torch.tensor(math.hypot(obs.t1_err_hi[i], se)),
            )
        dens = np.exp((l0 + l1).numpy()) / (12.0 - 1.0)
        out.append(math.log(np.trapezoid(dens, t)))
    return np.array(out)


@pytest.mark.parametrize("asym", [1.0, 1.6])
def test_likelihood_matches_brute_force_integration(emu, view, asym: float) -> None:
    obs, _ = make_obs(emu, THETA_TRUE, n=8, rel_err=0.05, asym=asym)
    # one source at the top of the range: its T_true interval is cut by the emulator range
    obs = Observations(
        obs.names,
        np.r_[obs.t0[:-1], 11.8],
        obs.t0_err_lo,
        obs.t0_err_hi,
        np.r_[obs.t1[:-1], 11.9],
        obs.t1_err_lo,
        obs.t1_err_hi,
    )
    lik = inv.Likelihood(view, obs, 0.002)
    nodes = lik.quad.t_nodes
    cut = (nodes.min(axis=1) <= 1.0) | (nodes.max(axis=1) >= 12.0)
    assert cut[-1] and not cut.all()
    for theta in (THETA_TRUE, np.array([1.0, 0.6, -0.2])):
        with torch.no_grad():
            got = lik.per_source(torch.tensor(theta)[None, :])[0].numpy()
        ref = _brute_force_log_l(emu, obs, theta, 0.002)
        if asym == 1.0:
            # smooth integrand decayed at both ends: the trapezoid rule is spectrally accurate
            np.testing.assert_allclose(got[~cut], ref[~cut], atol=1e-5)
            # an end cut by the emulator's range: fourth-order end corrections
            np.testing.assert_allclose(got[cut], ref[cut], atol=3e-4)
        else:
            # asymmetric T1 errors: a kink that moves with theta, second order (documented)
            np.testing.assert_allclose(got, ref, atol=3e-3)


# ----------------------------------------------------------------------- corrected temperatures


def test_t_star_solves_and_its_gradient_is_the_implicit_one(emu, view) -> None:
    obs, t_true = make_obs(emu, THETA_TRUE, n=12, noise=False)
    theta = torch.tensor(THETA_TRUE, requires_grad=True)
    t1 = torch.tensor(obs.t1)
    t_star, clamped = inv.solve_t_star(view, theta, t1)
    assert not clamped.any()
    np.testing.assert_allclose(t_star.detach().numpy(), t_true, rtol=1e-10)
    (grad,) = torch.autograd.grad(t_star.sum(), theta)
    eps = 1e-6
    fd = []
    for j in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[j] = eps
        up, _ = inv.solve_t_star(view, theta.detach() + step, t1)
        down, _ = inv.solve_t_star(view, theta.detach() - step, t1)
        fd.append(float((up - down).sum()) / (2 * eps))
    np.testing.assert_allclose(grad.numpy(), fd, rtol=1e-5, atol=1e-8)


def test_t_star_is_clamped_outside_the_emulated_range(emu, view) -> None:
    theta = torch.tensor(THETA_TRUE)
    t_star, clamped = inv.solve_t_star(view, theta, torch.tensor([0.5, 5.0, 30.0]))
    assert clamped.tolist() == [True, False, True]
    assert float(t_star[0]) == pytest.approx(1.0) and float(t_star[2]) == pytest.approx(12.0)


def test_corrected_t1_is_t1_prime_at_t_star(emu, view) -> None:
    obs, t_true = make_obs(emu, THETA_TRUE, n=6, noise=False)
    t1p, t_star, _ = inv.corrected_t1(view, torch.tensor(THETA_TRUE), torch.tensor(obs.t1))
    np.testing.assert_allclose(
        t1p.detach().numpy(), t_true * (1 + 0.002 * np.log(t_true)), rtol=1e-9
    )


def test_kl_and_wasserstein_match_direct_numerics() -> None:
    t0, s0, t1, s1 = 5.0, 0.3, 5.6, 0.5
    x = np.linspace(-5, 15, 400_001)
    p = np.exp(-0.5 * ((x - t0) / s0) ** 2) / (s0 * math.sqrt(2 * math.pi))
    q = np.exp(-0.5 * ((x - t1) / s1) ** 2) / (s1 * math.sqrt(2 * math.pi))
    mask = p > 1e-300
    kl_num = np.trapezoid(np.where(mask, p * np.log(np.where(mask, p / q, 1.0)), 0.0), x)
    # W2 in one dimension: the L2 distance between quantile functions
    from scipy.stats import norm

    u = np.linspace(1e-6, 1 - 1e-6, 200_001)
    w2_num = np.trapezoid((norm.ppf(u, t0, s0) - norm.ppf(u, t1, s1)) ** 2, u)
    args = [torch.tensor([v], dtype=torch.float64) for v in (t0, s0, t1, s1)]
    assert float(inv.gaussian_kl(*args)) == pytest.approx(kl_num, rel=1e-6)
    assert float(inv.wasserstein2(*args)) == pytest.approx(w2_num, rel=1e-3)
    assert float(inv.seed_loss(args[0], args[2])) == pytest.approx((t0 - t1) ** 2)


@pytest.mark.parametrize("name", inv.OBJECTIVES)
def test_objective_gradients_match_finite_differences(emu, view, name: str) -> None:
    obs, _ = make_obs(emu, THETA_TRUE, n=10)
    objs = inv.Objectives(view, obs, 0.002)
    fun = objs.unit_function(name)
    u = np.array([0.37, 0.52, 0.61])
    value, grad = fun(u)
    assert math.isfinite(value)
    eps = 1e-6
    fd = [(fun(u + eps * e)[0] - fun(u - eps * e)[0]) / (2 * eps) for e in np.eye(3)]
    np.testing.assert_allclose(grad, fd, rtol=1e-4, atol=1e-6 * max(1.0, abs(value)))


# ---------------------------------------------------------------------------- multi-start


@pytest.mark.parametrize("design", ["sobol", "lhs"])
def test_start_designs_fill_the_cube_reproducibly(design: str) -> None:
    a = inv.start_points(64, 3, design, seed=7)
    b = inv.start_points(64, 3, design, seed=7)
    c = inv.start_points(64, 3, design, seed=8)
    assert a.shape == (64, 3) and np.all((a >= 0) & (a < 1))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    # every tenth of every axis holds starts (a space-filling design, not a clump)
    for j in range(3):
        assert len(np.unique(np.floor(a[:, j] * 10))) == 10
    if design == "lhs":
        for j in range(3):  # Latin hypercube: one point per 1/64 stratum of each axis
            assert len(np.unique(np.floor(a[:, j] * 64))) == 64


def test_merge_optima_groups_within_tolerance_best_first() -> None:
    def r(start, u, fun, ok=True):
        return {"start": start, "u": np.array(u), "fun": fun, "success": ok}

    results = [
        r(0, [0.5, 0.5], 10.0),
        r(1, [0.505, 0.495], 9.9, ok=False),
        r(2, [0.1, 0.9], 12.0),
        r(3, [0.52, 0.5], 10.1),  # 0.02 away from start 1 in one parameter: distinct at 0.015
        r(4, [0.1, 0.905], 12.5),
    ]
    groups = inv.merge_optima(results, tol=0.015)
    assert [g["starts"] for g in groups] == [[0, 1], [3], [2, 4]]
    assert groups[0]["fun"] == 9.9 and groups[0]["success"]
    np.testing.assert_array_equal(groups[0]["u"], [0.505, 0.495])
    assert [g["starts"] for g in inv.merge_optima(results, tol=0.05)] == [[0, 1, 3], [2, 4]]


@pytest.mark.parametrize("name", inv.OBJECTIVES)
def test_multistart_recovers_theta_on_noise_free_data(emu, view, name: str) -> None:
    obs, _ = make_obs(emu, THETA_TRUE, n=30, noise=False)
    objs = inv.Objectives(view, obs, 0.0)
    starts = inv.start_points(8, 3, "sobol", 3)
    res = inv.run_starts(objs, name, starts, list(range(8)), maxiter=1000)
    best = inv.merge_optima(res, 0.02)[0]
    # the optimiser finds at least the truth's objective value (on noise-free data the
    # optimum is near, not at, the truth: the marginal likelihood weighs the slope dT1/dT,
    # and the emulated T1' carries a small fit bias) ...
    at_truth = objs.unit_function(name)(view.to_unit(THETA_TRUE))[0]
    assert best["fun"] <= at_truth + 1e-9 * max(1.0, abs(at_truth))
    # ... and lands near it: within 10% of each parameter's range (sigma is the loosest)
    assert np.max(np.abs(best["u"] - view.to_unit(THETA_TRUE))) < 0.1, best["u"]


# ----------------------------------------------------------------------------- the stage


@pytest.fixture
def analytic_project(demo_config: Path, edit_config=None) -> Path:
    from conftest import edit_config as edit

    text = demo_config.read_text()
    text = edit(text, "inversion", "n_starts", "12")
    text = edit(text, "inversion.mcmc", "walkers", "24")
    text = edit(text, "inversion.mcmc", "steps", "800")
    text = edit(text, "inversion.mcmc", "burn", "200")
    demo_config.write_text(text)
    return demo_config


def test_invert_stage_writes_result_posterior_and_corrected_arf(
    emu, analytic_project: Path, tmp_path: Path
) -> None:
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.io.ogip import read_arf
    from xrmodifier_hpc.physics.modifiers import get_modifier

    obs, _ = make_obs(emu, THETA_TRUE, n=40, rel_err=0.02, seed=5)
    obs_path = write_observations(tmp_path / "obs.csv", obs)
    result = stage.invert(analytic_project, obs_path, module=emu, comm=None)
    cfg = load_config(analytic_project)
    on_disk = json.loads(cfg.result_path.read_text())
    assert on_disk["theta_best"] == result["theta_best"]
    assert on_disk["objective"] == "likelihood" and on_disk["s_emu"]["source"] == "auto"
    assert on_disk["s_emu"]["fraction"] == pytest.approx(0.002)
    assert len(on_disk["starts"]) == 12
    assert sum(o["n_starts"] for o in on_disk["optima"]) == 12
    objective_values = [o["objective"] for o in on_disk["optima"]]
    assert objective_values == sorted(objective_values)
    summary = on_disk["posterior"]["summary"]
    for j, name in enumerate(("mu", "sigma", "A")):
        s = summary[name]
        assert s["p2.5"] <= s["p16"] <= s["median"] <= s["p84"] <= s["p97.5"]
        assert s["p2.5"] <= THETA_TRUE[j] <= s["p97.5"], (name, s)
        assert on_disk["posterior"]["autocorr_time"][name] > 0
    back = read_observations(obs_path)
    assert on_disk["seed_loss"]["before"] == pytest.approx(float(np.sum((back.t0 - back.t1) ** 2)))
    assert on_disk["seed_loss"]["after"] < on_disk["seed_loss"]["before"]
    assert len(on_disk["sources"]) == 40
    row = on_disk["sources"][0]
    assert row["t1_corrected_err_lo"] > 0 and row["t1_corrected_err_hi"] > 0
    # posterior samples on disk are the summarised ones
    with np.load(cfg.workdir / "posterior.npz") as npz:
        chain = npz["chain"]
        assert chain.shape == (800, 24, 3)
        flat = chain[int(npz["burn"]) :].reshape(-1, 3)
        assert np.median(flat[:, 2]) == pytest.approx(summary["A"]["median"])
    # corrected.arf = target ARF x the pointwise posterior median of m(E) (not theta_best)
    from xrmodifier_hpc.inference.arf_posterior import select_draws

    gauss = get_modifier("gaussian")
    orig = read_arf(cfg.instruments.target.arf)
    e_mid = 0.5 * (orig.energ_lo + orig.energ_hi)
    curves = gauss.evaluate(e_mid, select_draws(flat, 4000, seed=7))
    everything = gauss.evaluate(e_mid, flat[::4])
    areas = {}
    for stat, q in (("median", 50.0), ("p16", 16.0), ("p84", 84.0)):
        path = cfg.workdir / ("corrected.arf" if stat == "median" else f"corrected_{stat}.arf")
        areas[stat] = read_arf(path).specresp
        m = np.percentile(curves, q, axis=0)
        np.testing.assert_allclose(areas[stat], orig.specresp * m, rtol=2e-7)
        # the 4000 draws stand for the whole chain: percentiles agree within their sampling
        # noise (this short chain has ~1,000 effective samples; m spans up to ~0.3)
        np.testing.assert_allclose(m, np.percentile(everything, q, axis=0), atol=1.5e-2)
        with fits.open(path) as hdul:
            hdr = hdul["SPECRESP"].header
            assert hdr["XRMSTAT"] == stat and hdr["XRMNDRAW"] == 4000
            assert hdr["XRMRESLT"] == str(cfg.result_path)
            assert hdr["XRMFAMIL"] == "gaussian" and hdr["XRMOBJ"] == "likelihood"
            assert hdr["XRMOBS"] == "obs.csv"
    assert np.all(areas["p16"] <= areas["median"]) and np.all(areas["median"] <= areas["p84"])
    theta_best = np.array([result["theta_best"][n] for n in ("mu", "sigma", "A")])
    assert not np.allclose(areas["median"], orig.specresp * gauss.evaluate(e_mid, theta_best))
    with fits.open(cfg.workdir / "corrected_ensemble.fits") as hdul:
        table = hdul["ENSEMBLE"].data
        assert len(table) == 100 and hdul["ENSEMBLE"].header["XRMSTAT"] == "ensemble"
        np.testing.assert_allclose(
            table["SPECRESP"],
            orig.specresp[None, :]
            * gauss.evaluate(e_mid, np.column_stack([table["mu"], table["sigma"], table["A"]])),
            rtol=1e-6,
        )
    listed = {f.statistic: Path(f.path).name for f in result.corrected_arfs}
    assert listed == {
        "median": "corrected.arf",
        "p16": "corrected_p16.arf",
        "p84": "corrected_p84.arf",
        "ensemble": "corrected_ensemble.fits",
    }
    # the seed loss "after" uses the emulator at the family member nearest the written curve
    sl = result.seed_loss
    theta_w = np.array([sl.theta[n] for n in ("mu", "sigma", "A")])
    median_m = areas["median"] / orig.specresp
    band = (e_mid >= 0.5) & (e_mid <= 7.0) & (orig.specresp > 0)
    dev = np.max(np.abs(gauss.evaluate(e_mid, theta_w) - median_m)[band])
    assert dev == pytest.approx(sl.curve_mismatch, abs=1e-6) and dev < 0.02
    t1p = inv.corrected_sources(inv.EmulatorView(emu, 24), theta_w, back).t1_corrected
    assert sl.after == pytest.approx(float(np.sum((back.t0 - t1p) ** 2)), rel=1e-6)
    assert on_disk["sources"][0]["t1_corrected"] == pytest.approx(float(t1p[0]), rel=1e-6)
    # identifiability: correlation matrix, directions with width ratios, plain lines
    ident = on_disk["identifiability"]
    corr = np.array(ident["correlation"])
    assert corr.shape == (3, 3) and np.allclose(np.diag(corr), 1.0)
    np.testing.assert_allclose(corr, np.corrcoef(flat.T), atol=1e-9)
    assert len(ident["directions"]) == 3
    ratios = [d["posterior_over_prior"] for d in ident["directions"]]
    assert ratios == sorted(ratios, reverse=True) and 0 < ratios[-1] < 1
    assert ident["lines"] and any("best constrained" in line for line in ident["lines"])
    assert result.identifiability.lines == tuple(ident["lines"])
    from xrmodifier_hpc.io.arf_products import arf_identity

    assert on_disk["target"] and on_disk["target"] == arf_identity(cfg.instruments.target.arf)
    summary_text = stage.format_summary(result)
    assert "seed loss" in summary_text and "corrected.arf: " in summary_text


def test_chains_too_short_are_flagged(emu, view) -> None:
    obs, _ = make_obs(emu, THETA_TRUE, n=20)
    lik = inv.Likelihood(view, obs, 0.002)
    u = view.to_unit(THETA_TRUE)
    post = inv.sample_posterior(lik, [u], walkers=8, steps=60, burn=10, thin=1, seed=1)
    assert post.warnings and "autocorrelation" in post.warnings[0]
    assert post.chain.shape == (60, 8, 3)
    assert np.all(post.chain >= view.theta_lo) and np.all(post.chain <= view.theta_hi)


def test_auto_s_emu_needs_the_emulator_metrics() -> None:
    from xrmodifier_hpc.errors import UserError

    assert stage.resolve_auto_s_emu({"offgrid": {"emulator": {"t_fit_orig": 0.004}}}, "x") == 0.004
    with pytest.raises(UserError, match="set \\[inversion\\] s_emu"):
        stage.resolve_auto_s_emu({}, "emulator.pt")


@pytest.mark.parametrize("objective", ["seed_loss", "gaussian_kl"])
def test_invert_stage_with_another_objective(
    emu, analytic_project: Path, tmp_path: Path, objective: str
) -> None:
    """The chosen objective picks theta_best; the posterior is still the likelihood's, started
    from the likelihood's own maxima near the objective's optima."""
    from conftest import edit_config as edit

    analytic_project.write_text(
        edit(analytic_project.read_text(), "inversion", "objective", f'"{objective}"')
    )
    obs, _ = make_obs(emu, THETA_TRUE, n=30, rel_err=0.02, seed=9)
    result = stage.invert(
        analytic_project, write_observations(tmp_path / "o.csv", obs), module=emu, comm=None
    )
    assert result["objective"] == objective and result["posterior_objective"] == "likelihood"
    objs = inv.Objectives(inv.EmulatorView(emu), obs, 0.002)
    best = np.array([result["theta_best"][n] for n in ("mu", "sigma", "A")])
    with torch.no_grad():
        value = float(objs.value(objective, torch.tensor(best)))
    assert value == pytest.approx(result["objective_best"], rel=1e-6)
    modes = result["posterior"]["modes"]
    assert modes and sum(m["walkers"] for m in modes) == 24
    s = result["posterior"]["summary"]["A"]
    assert s["p2.5"] <= THETA_TRUE[2] <= s["p97.5"]


class SymmetricEmulator(AnalyticEmulator):
    """T1 depends on A only through A^2: every optimum at A has a twin at -A."""

    def forward(self, theta: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        squared = torch.stack([theta[:, 0], theta[:, 1], 4 * theta[:, 2] ** 2], 1)
        return super().forward(squared, t)


def test_allocate_walkers_follows_laplace_masses() -> None:
    modes = [
        inv.Mode(np.zeros(2), -10.0, None, math.log(3.0)),
        inv.Mode(np.ones(2), -10.5, None, math.log(1.0)),
        inv.Mode(np.ones(2) / 2, -40.0, None, 0.0),
    ]  # 30 below the best: dropped
    live = inv.allocate_walkers(modes, 16, min_walkers=0)
    assert [m.walkers for m in live] == [12, 4]
    # by default every live mode keeps two walkers, so walkers can hop between the modes,
    # except one holding a negligible share of the mass (a lone walker there never leaves)
    negligible = inv.Mode(np.ones(2) / 3, -11.0, None, math.log(1e-6))
    small = inv.Mode(np.ones(2) / 4, -11.0, None, math.log(0.05))
    modes += [negligible, small]
    live = inv.allocate_walkers(modes, 18)
    assert [m.walkers for m in live] == [2 + 9, 2 + 3, 2]
    assert live[-1] is small and negligible.walkers == 0


def test_posterior_covers_both_modes_of_a_bimodal_likelihood() -> None:
    emu = SymmetricEmulator()
    view = inv.EmulatorView(emu)
    obs, _ = make_obs(emu, THETA_TRUE, n=30, rel_err=0.02, seed=3)
    lik = inv.Likelihood(view, obs, 0.002)
    objs = inv.Objectives(view, obs, 0.002)
    starts = inv.start_points(16, 3, "sobol", 1)
    groups = inv.merge_optima(
        inv.run_starts(objs, "likelihood", starts, list(range(16)), 500), 0.02
    )
    signs = {np.sign(view.theta_of(g["u"])[2]) for g in groups[:2]}
    assert signs == {-1.0, 1.0}, "the multi-start finds both twins"
    modes = inv.likelihood_optima(objs, "likelihood", groups, 0.02, 500)
    post = inv.sample_posterior(lik, modes, walkers=16, steps=300, burn=60, thin=1, seed=2)
    positive = float(np.mean(post.flat()[:, 2] > 0))
    assert 0.25 < positive < 0.75, positive  # equal masses: about half the samples each side
    assert len(post.modes) == 2 and all(m.walkers > 0 for m in post.modes)


# ----------------------------------------------------------------------------- the record


def _record(names=("mu", "sigma", "A")) -> InversionResult:
    """A small InversionResult with every part filled, a non-finite ratio and a NaN tau."""
    from xrmodifier_hpc.io.artefacts import provenance
    from xrmodifier_hpc.io.result import (
        ConstrainedEnergy,
        CorrectedArfFile,
        DegeneracySummary,
        DirectionSummary,
        EmulatorError,
        IdentifiabilityReport,
        ModeSummary,
        ModifierSpec,
        Optimum,
        ParamSummary,
        PosteriorSummary,
        SeedLoss,
        SourceResult,
        StartResult,
        Timing,
    )

    theta = dict(zip(names, (1.6, 0.35, 0.15)))
    samples = np.random.default_rng(0).normal(size=(200, 3)) * 0.1 + [1.6, 0.35, 0.15]
    return InversionResult(
        provenance=provenance(stage="invert"),
        config="/c/config.toml",
        observations="/c/obs.csv",
        emulator="/c/run/emulator.pt",
        modifier=ModifierSpec("gaussian", {}),
        param_names=names,
        param_units=("keV", "keV", ""),
        bounds={n: (0.0, 4.0) for n in names},
        t_true_range=(1.0, 12.0),
        objective="likelihood",
        posterior_objective="likelihood",
        s_emu=EmulatorError(0.002, "auto"),
        n_sources=1,
        n_starts=2,
        start_design="sobol",
        seed=7,
        merge_tol=0.02,
        ranks=2,
        theta_best=theta,
        objective_best=-12.5,
        optima=(Optimum(theta, -12.5, 12.5, 2, (0, 1), True, ("A",)),),
        starts=tuple(StartResult(i, theta, theta, -12.5, True, 7) for i in range(2)),
        posterior=PosteriorSummary(
            samples_file="posterior.npz",
            walkers=8,
            steps=30,
            burn=5,
            thin=1,
            n_samples=200,
            acceptance_fraction=0.3,
            autocorr_time={"mu": 3.0, "sigma": math.nan, "A": 2.0},
            chains_too_short=True,
            summary={n: ParamSummary.of(samples[:, j]) for j, n in enumerate(names)},
            modes=(ModeSummary(theta, -3.0, -4.0, 8),),
        ),
        seed_loss=SeedLoss(before=1.0, after=0.0, ratio=math.inf, note="n"),
        sources=(SourceResult("s1", 5.0, 0.1, 0.2, 5.5, 0.1, 0.1, 5.01, 0.1, 0.11, 4.9, False),),
        corrected_arf="/c/run/corrected.arf",
        target_arf="/c/target.arf",
        target={"TELESCOP": "XMM", "INSTRUME": "EPN"},
        identifiability=IdentifiabilityReport(
            param_names=names,
            at_bound={"A": "lower"},
            correlation=((1.0, 0.1, 0.0), (0.1, 1.0, -0.9), (0.0, -0.9, 1.0)),
            directions=(DirectionSummary({"mu": 0.0, "sigma": 0.7, "A": 0.7}, 0.2, 0.69),),
            degeneracies=(
                DegeneracySummary(
                    ("sigma", "A"), -0.9, "product", 1.0, "A*sigma", -0.04, -0.05, -0.03, 0.25
                ),
            ),
            area={"median": -0.1, "p16": -0.12, "p84": -0.08},
            area_band=(0.5, 7.0),
            constrained=ConstrainedEnergy(0.8, 3.0, ((0.8, 3.0), (5.0, 6.0)), 0.1, 1.3, "c"),
            lines=("A and sigma are degenerate",),
        ),
        corrected_arfs=(
            CorrectedArfFile("/c/run/corrected.arf", "median", 4000, "use this"),
            CorrectedArfFile("/c/run/corrected_ensemble.fits", "ensemble", 100),
        ),
        warnings=("chains are short",),
        timing=Timing(1.0, 2.0, 3.5),
    )


def back_ident(path: Path):
    """The identifiability report of a result.json, read back."""
    return InversionResult.read(path).identifiability


def test_result_record_round_trips_through_strict_json(tmp_path: Path) -> None:
    from xrmodifier_hpc.errors import UserError

    rec = _record()
    path = rec.write(tmp_path / "result.json")
    raw = json.loads(path.read_text())  # strict JSON: no NaN/Infinity tokens
    assert raw["schema"] == "xrmodifier.result" and raw["schema_version"] == 2
    assert back_ident(path) == rec.identifiability
    assert raw["identifiability"]["constrained_energy_keV"]["intervals"][1] == [5.0, 6.0]
    assert raw["identifiability"]["area_keV"]["p84"] == -0.08
    assert raw["identifiability"]["directions"][0]["posterior_over_prior"] == 0.69
    assert raw["corrected_arfs"][1]["statistic"] == "ensemble"
    assert raw["seed_loss"]["ratio"] is None and raw["posterior"]["autocorr_time"]["sigma"] is None
    summary = raw["posterior"]["summary"]["A"]
    assert set(summary) == {"median", "p16", "p84", "p2.5", "p97.5", "mean", "std"}
    assert summary["p2.5"] == rec.posterior.summary["A"].p2_5
    back = InversionResult.read(path)
    assert back.posterior.summary["A"] == rec.posterior.summary["A"]
    assert back.optima == rec.optima and back.starts == rec.starts
    assert back.sources == rec.sources and back.timing == rec.timing
    assert back.bounds == rec.bounds and back.param_names == rec.param_names
    assert math.isnan(back.seed_loss.ratio) and math.isnan(back.posterior.autocorr_time["sigma"])
    np.testing.assert_array_equal(back.theta_best_vector, [1.6, 0.35, 0.15])
    # indexing reads the JSON view, as scripts that used the dict do
    assert back["posterior"]["summary"]["A"]["p97.5"] == summary["p97.5"]
    assert "seed loss" in stage.format_summary(back)
    assert back.corrected_file("ensemble").n_draws == 100 and back.target["INSTRUME"] == "EPN"
    # an identifiability report without a constrained range reads back as None
    raw_none = json.loads(path.read_text())
    raw_none["identifiability"]["constrained_energy_keV"] = None
    (tmp_path / "none.json").write_text(json.dumps(raw_none))
    assert InversionResult.read(tmp_path / "none.json").identifiability.constrained is None
    # a file of another schema version (v1 wrote corrected.arf at theta_best), or a broken
    # part, is a one-line user error
    raw["schema_version"] = 1
    (tmp_path / "v1.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="schema version 1 .*rerun invert"):
        InversionResult.read(tmp_path / "v1.json")
    raw["schema_version"] = 2
    del raw["posterior"]["summary"]["A"]["p2.5"]
    (tmp_path / "broken.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match="ParamSummary lacks 'p2.5'"):
        InversionResult.read(tmp_path / "broken.json")


# ----------------------------------------------------------------------------- MPI


def _mpi_project(demo_config: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A project whose emulator is an untrained network (the MPI orchestration does not care
    what it learnt), 6 starts, short chains; returns (config, observations)."""
    from conftest import edit_config as edit

    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.emulator import Emulator, save
    from xrmodifier_hpc.io.artefacts import Workdir

    text = demo_config.read_text()
    for section, key, value in (
        ("inversion", "n_starts", "6"),
        ("inversion", "s_emu", "0.003"),
        ("inversion.mcmc", "walkers", "8"),
        ("inversion.mcmc", "steps", "30"),
        ("inversion.mcmc", "burn", "10"),
    ):
        text = edit(text, section, key, value)
    demo_config.write_text(text)
    cfg = load_config(demo_config)
    names = ("mu", "sigma", "A")
    bounds = [cfg.modifier.grid[n].bounds for n in names] + [cfg.temperatures.t_true.bounds]
    torch.manual_seed(0)
    module = Emulator(names, np.array(bounds), (False, True, False, True), (8,), "tanh", None)
    Workdir(cfg.workdir).root.mkdir(parents=True, exist_ok=True)
    save(module, Workdir(cfg.workdir).emulator)
    t = np.geomspace(2.0, 8.0, 10)
    obs = Observations(
        tuple(f"s{i}" for i in range(10)), t, 0.05 * t, 0.05 * t, t, 0.05 * t, 0.05 * t
    )
    return demo_config, write_observations(tmp_path / "obs.csv", obs)


def _mpi_env(**extra: str) -> dict[str, str]:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "PMI_"))}
    return {**env, "OMP_NUM_THREADS": "1", **extra}


@pytest.mark.mpi
def test_two_ranks_share_the_starts_and_rank_0_writes(demo_config: Path, tmp_path: Path) -> None:
    import subprocess

    from conftest import XRMODIFIER, mpiexec

    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.io.artefacts import Workdir

    launcher = mpiexec()
    assert launcher, "mpiexec not found: `make test` installs MPICH (tools/setup_env.sh)"
    config, obs = _mpi_project(demo_config, tmp_path)
    cmd = [launcher, "-n", "2", XRMODIFIER, "invert", str(config), str(obs)]
    done = subprocess.run(cmd, env=_mpi_env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("seed loss") == 1  # rank 0 alone prints the summary
    result = InversionResult.read(Workdir(load_config(config).workdir).result)
    assert result.ranks == 2 and [s.start for s in result.starts] == list(range(6))
    assert sum(o.n_starts for o in result.optima) == 6
    assert "multi-start (rank 1)" in done.stderr  # each rank reports its own progress


@pytest.mark.mpi
def test_a_failure_on_rank_1_ends_the_job_with_its_message(
    demo_config: Path, tmp_path: Path
) -> None:
    """Rank 1 fails right before the multi-start gather (XRM_FAULT): the job must stop with
    rank 1's message, not hang with rank 0 waiting in the gather."""
    import subprocess
    import time

    from conftest import XRMODIFIER, mpiexec

    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.io.artefacts import Workdir

    launcher = mpiexec()
    assert launcher, "mpiexec not found: `make test` installs MPICH (tools/setup_env.sh)"
    config, obs = _mpi_project(demo_config, tmp_path)
    cmd = [launcher, "-n", "2", XRMODIFIER, "invert", str(config), str(obs)]
    t0 = time.monotonic()
    done = subprocess.run(
        cmd, env=_mpi_env(XRM_FAULT="invert.starts@1"), capture_output=True, text=True, timeout=120
    )
    assert done.returncode != 0
    assert time.monotonic() - t0 < 100
    assert "xrmodifier: error: rank 1: RuntimeError: injected fault at invert.starts on rank 1" in (
        done.stderr
    ), done.stderr[-3000:]
    assert "rank 0:" not in done.stderr
    assert not Workdir(load_config(config).workdir).result.exists()
