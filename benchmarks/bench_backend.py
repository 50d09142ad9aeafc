"""Native-backend throughput on the real responses, its cost model, and two baselines.

A grid point = fakeit through the modified response + two C-stat fits (original and modified
ARF) with their delta-C = 1 intervals + both profile curves. Measured on the real Chandra
ACIS (1078 x 1024) and XMM EPIC-pn (1319 x 4096) responses in ../shared/responses, single
thread (OMP_NUM_THREADS=1), with 1 realisation, 128 fit temperatures, band 0.5-7 keV, Poisson
mode, 20,000 counts per spectrum:

- ``grid``: the Cartesian grid simulate evaluates (6 mu x 6 sigma x 6 A x 40 T_true = 8640
  points, T_true fastest), in chunks of 256 points in grid order, with a fresh backend per
  repeat (so every per-(mu, sigma), per-theta and per-temperature cache starts empty, as in
  a new ``xrmodifier simulate`` on one rank). This is the headline number.
- ``random theta``: batches of 6 random thetas x 40 T_true, no two sharing (mu, sigma): the
  worst case for the per-(mu, sigma) sharing of folds (an irregular design).

Throughputs are per core: CPU seconds of this single-threaded process (time.process_time), so
time slices lost to other processes on a shared machine do not count; the BEST of several
repeats is the figure (the median and the wall-clock rate are recorded too). Timings on a
shared machine are noisy all the same (caches and memory bandwidth are shared).

Cost model (``cost_model`` per response): the work per grid point the backend counts while it
runs (multiply-adds of the basis folds on the fit grid and at T_true and of the profile
products, the modified fit's ln(1 + z) values, Poisson draws) against this CPU's measured limits
(``cpu_limits``: single-thread dgemm multiply-adds per second on 1024^3 and on the profile
product's own shape, Poisson draws (physics.poisson) per second on this response's expected
counts, ln(1 + z) values per second on one theta's table): the time those alone take, beside
the measured time per point.

Baselines, in the same process:

- Sherpa: fake_pha + two C-stat fits (levmar) of the same model, the native
  ``wabs*bremss`` plugged in as a Sherpa user model (``pip install .[bench]``);
- scipy: a straightforward per-spectrum loop (fold, Poisson draw, scipy.optimize on the
  C-stat over log kT and log norm, twice).

XSPEC's figure is the one measured on this machine before (~75 ms per fakeit + fit, about
7 grid points/s/core); it is quoted, not re-measured (no HEASoft here). Writes
benchmarks/out/bench_backend.json and prints a table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backend.py [--quick] [--repeats N]
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
from scipy.optimize import minimize  # noqa: E402

from xrmodifier_hpc.backends.base import SimulationSettings  # noqa: E402
from xrmodifier_hpc.backends.native import NativeBackend  # noqa: E402
from xrmodifier_hpc.config.grid import point_rng  # noqa: E402
from xrmodifier_hpc.io.ogip import Instrument  # noqa: E402
from xrmodifier_hpc.physics.log1p import log1p_combination  # noqa: E402
from xrmodifier_hpc.physics.modifiers import get_modifier  # noqa: E402
from xrmodifier_hpc.physics.poisson import poisson_rows  # noqa: E402
from xrmodifier_hpc.physics.spectra import parse_model  # noqa: E402

HERE = Path(__file__).resolve().parent
RESPONSES = HERE.parent.parent / "shared" / "responses"
OUT = HERE / "out" / "bench_backend.json"

INSTRUMENTS = {
    "acis": ("chandra_acis_9774.arf", "chandra_acis_9774.rmf"),
    "epn": ("xmm_epn_src.arf", "xmm_epn_ff20_dY9.rmf"),
}
MODEL = "wabs*bremss"
NH = 0.05
EXPOSURE = 5e4  # s
COUNTS = 2e4  # expected counts in the band per spectrum
BAND = (0.5, 7.0)  # keV
FIT_TGRID = np.geomspace(0.3, 40.0, 128)  # keV
T_TRUE = np.geomspace(1.0, 12.0, 40)  # keV
#: the grid's modifier axes (mu keV, sigma keV, A); quick mode: the first two axes cut to 3
MU = np.linspace(0.8, 3.0, 6)
SIGMA = np.geomspace(0.15, 0.8, 6)
AMP = np.linspace(-0.3, 0.3, 6)
CHUNK = 256  # simulation.chunk_size's default
XSPEC_MS_PER_FAKEIT_FIT = 75.0  # measured here with XSPEC 12.9.1 (see issue 3)
XSPEC_POINTS_PER_S = 7.0


def _thetas(n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw n Gaussian-modifier parameter sets (mu keV, sigma keV, A) like a real grid's."""
    return np.column_stack(
        [rng.uniform(0.8, 3.0, n), rng.uniform(0.15, 0.8, n), rng.uniform(-0.3, 0.3, n)]
    )


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**20


def _settings() -> SimulationSettings:
    return SimulationSettings(
        exposure=EXPOSURE,
        band=BAND,
        realisations=1,
        seed=2026,
        fit_tgrid=FIT_TGRID,
        counts=COUNTS,
        source_params={"nH": NH},
        curves=True,
        t_true_axis=T_TRUE,  # as simulate's settings carry the grid's axis
    )


def grid_chunks(quick: bool) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Cut the Cartesian grid (mu, sigma, A, T_true; T_true fastest) into simulate's chunks."""
    mu, sigma = (MU[::2][:3], SIGMA[::2][:3]) if quick else (MU, SIGMA)
    thetas = np.stack(np.meshgrid(mu, sigma, AMP, indexing="ij"), axis=-1).reshape(-1, 3)
    theta = np.repeat(thetas, T_TRUE.size, axis=0)
    t_true = np.tile(T_TRUE, thetas.shape[0])
    index = np.arange(t_true.size)
    return [
        (theta[a : a + CHUNK], t_true[a : a + CHUNK], index[a : a + CHUNK])
        for a in range(0, t_true.size, CHUNK)
    ]


def bench_native(inst: Instrument, quick: bool, repeats: int) -> dict:
    """Time the native backend on the grid workload and on the random-theta worst case.

    Points per CPU second over the whole grid, best of ``repeats`` fresh backends; the work
    the backend counted per point.
    """
    model = parse_model(MODEL)
    modifier = get_modifier("gaussian")
    chunks = grid_chunks(quick)
    n = sum(c[2].size for c in chunks)
    cpu, wall, setup, rss = [], [], [], []
    work: dict[str, float] = {}
    statuses = 0
    for r in range(repeats):
        t0 = time.perf_counter()
        backend = NativeBackend(inst, model, modifier, _settings())
        setup.append(time.perf_counter() - t0)
        c0, t0 = time.process_time(), time.perf_counter()
        for theta, t_true, index in chunks:
            res = backend.run(theta, t_true, index)
            if r == 0:
                statuses += int(np.count_nonzero(res.status))
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
        rss.append(_rss_mb())
        if r == 0:
            work = {k: v / n for k, v in backend.work.items()}
    # the worst case: no two thetas share (mu, sigma); one backend, batches like the grid's
    rng = np.random.default_rng(5)
    backend = NativeBackend(inst, model, modifier, _settings())
    random_times = []
    for b in range(1 + (3 if quick else 8)):
        theta = np.repeat(_thetas(6, rng), T_TRUE.size, axis=0)
        index = np.arange(theta.shape[0]) + b * theta.shape[0]
        c0 = time.process_time()
        backend.run(theta, np.tile(T_TRUE, 6), index)
        if b:  # the first batch fills the per-temperature caches
            random_times.append((time.process_time() - c0) / theta.shape[0])
    best = min(cpu)
    return {
        "points_per_s": n / best,
        "points_per_s_median": n / float(np.median(cpu)),
        "points_per_s_wall": n / min(wall),
        "us_per_point": 1e6 * best / n,
        "points": n,
        "repeats": repeats,
        "grid": {
            "mu": 3 if quick else int(MU.size),
            "sigma": 3 if quick else int(SIGMA.size),
            "A": int(AMP.size),
            "t_true": int(T_TRUE.size),
            "chunk": CHUNK,
        },
        "points_per_s_random_theta": 1.0 / min(random_times),
        "setup_s": min(setup),
        "fit_tgrid": int(FIT_TGRID.size),
        "noticed_channels": int(backend.fitter.channels.size),
        "response_rows": int(backend.fitter.rows.size),
        "response_nonzero": int(backend.fitter.band_response.nonzero),
        "flagged_fits": statuses,
        "work_per_point": work,
        "rss_mb_after_first_batch": rss[0],
        "rss_mb_after_last_batch": rss[-1],
        "rss_growth_mb": rss[-1] - rss[0],
    }


def _best_rate(fn, work: float, repeats: int = 7, number: int = 3) -> float:
    """Best units of ``work`` per CPU second of ``fn``."""
    best = np.inf
    for _ in range(repeats):
        c0 = time.process_time()
        for _ in range(number):
            fn()
        best = min(best, (time.process_time() - c0) / number)
    return work / best


def _limits_for(backend: NativeBackend, rng: np.random.Generator) -> dict:
    """Measure single-thread rates of the backend's operations on one response's shapes."""
    f = backend.fitter
    n_chan = f.channels.size
    counts = rng.poisson(10.0, (64, n_chan)).astype(np.float64)
    logs = np.log(np.maximum(f.templates, 1e-300))
    lam = f.fold_original(4.0)
    lam = lam * COUNTS / lam.sum()
    gen = np.random.default_rng(1)
    rows = np.ascontiguousarray(np.tile(lam, (64, 1)))
    # one theta's ratio table (z of a few tenths), as the modified fit's ln(1 + z) takes it
    ratio = rng.uniform(-0.3, 0.3, (1, *f.templates.shape)).astype(np.float32)
    log_ratio, scratch = np.empty(f.templates.shape), np.empty(f.templates.size)
    return {
        # the profile product's own shape: 64 spectra x channels x fit temperatures
        "profile_macs_per_s": _best_rate(
            lambda: counts @ logs.T, 64.0 * n_chan * logs.shape[0], number=20
        ),
        # the sampler (physics.poisson) on the expected counts of a 4 keV spectrum through
        # this response, 64 spectra with fresh uniforms each (as fakeit draws them)
        "poisson_draws_per_s": _best_rate(
            lambda: poisson_rows(rows, lambda r, out: gen.random(out=out)),
            float(rows.size),
            number=5,
        ),
        "log1p_per_s": _best_rate(
            lambda: log1p_combination(ratio, np.array([0.5]), log_ratio, scratch),
            float(ratio.size),
            number=20,
        ),
    }


def cpu_limits(backends: dict[str, NativeBackend]) -> dict:
    """Measure this CPU's single-thread limits for the operations the backend is made of."""
    rng = np.random.default_rng(0)
    a, b = rng.random((1024, 1024)), rng.random((1024, 1024))
    return {
        "dgemm_macs_per_s": _best_rate(lambda: a @ b, 1024.0**3, repeats=5, number=1),
        "instruments": {name: _limits_for(be, rng) for name, be in backends.items()},
    }


def cost_model(native: dict, limits: dict, name: str) -> dict:
    """Set the measured time per point beside the time its counted work takes.

    At this CPU's limits: multiply-adds at the dgemm rate, draws and logs at their own rates.
    """
    w = native["work_per_point"]
    lim = limits["instruments"][name]
    macs = {k: w.get(k, 0.0) for k in ("fold_grid", "fold_true", "profile")}
    total_macs = sum(macs.values())
    t_macs = total_macs / limits["dgemm_macs_per_s"]
    t_draws = w.get("poisson", 0.0) / lim["poisson_draws_per_s"]
    t_logs = w.get("log_ratio", 0.0) / lim["log1p_per_s"]
    measured = native["us_per_point"] * 1e-6
    return {
        "multiply_adds_per_point": total_macs,
        "multiply_adds_by_part": macs,
        "poisson_draws_per_point": w.get("poisson", 0.0),
        "log1p_per_point": w.get("log_ratio", 0.0),
        "us_multiply_adds_at_dgemm_peak": 1e6 * t_macs,
        "us_poisson_draws": 1e6 * t_draws,
        "us_log1p": 1e6 * t_logs,
        "us_model": 1e6 * (t_macs + t_draws + t_logs),
        "us_measured": 1e6 * measured,
        "points_per_s_limit": 1.0 / (t_macs + t_draws + t_logs),
    }


def bench_scipy(inst: Instrument, n_points: int) -> dict:
    """Time the straightforward way: per spectrum, fold the model at each trial and minimise."""
    model = parse_model(MODEL)
    modifier = get_modifier("gaussian")
    mask = inst.band_mask(*BAND)
    rng = np.random.default_rng(9)
    thetas = _thetas(n_points, rng)
    temps = rng.choice(T_TRUE, n_points)

    def folded(t: float, area: np.ndarray) -> np.ndarray:
        flux = model.photon_flux(inst.energ_lo, inst.energ_hi, np.array([t]), {"nH": NH})
        return EXPOSURE * inst.fold(flux[0], area)[mask]

    def cstat(params: np.ndarray, counts: np.ndarray, area: np.ndarray) -> float:
        m = np.exp(params[1]) * folded(float(np.exp(params[0])), area)
        m = np.maximum(m, 1e-300)
        term = np.where(counts > 0, counts * np.log(np.where(counts > 0, counts, 1) / m), 0)
        return float(2 * np.sum(m - counts + term))

    fits = 0
    times = []
    for i in range(n_points):
        t0 = time.process_time()
        area_mod = modifier.apply(inst.e_mid, inst.area, thetas[i][None, :])[0]
        base = folded(temps[i], inst.area)
        mu = COUNTS / base.sum() * folded(temps[i], area_mod)
        counts = point_rng(1, i).poisson(mu).astype(float)
        for area in (inst.area, area_mod):
            start = np.array([np.log(5.0), np.log(counts.sum() / folded(5.0, area).sum())])
            res = minimize(
                cstat,
                start,
                args=(counts, area),
                method="Nelder-Mead",
                options={"xatol": 1e-6, "fatol": 1e-4},
            )
            fits += res.nfev
        times.append(time.process_time() - t0)
    return {
        "points_per_s": 1.0 / np.median(times),
        "points_per_s_best": 1.0 / min(times),
        "ms_per_point": 1e3 * np.median(times),
        "points": n_points,
        "model_evaluations_per_fit": fits / (2 * n_points),
    }


def bench_sherpa(arf: Path, rmf: Path, n_points: int) -> dict:
    """fake_pha + two cstat fits per point, the native model as a Sherpa user model."""
    try:
        from sherpa.astro import ui
    except ImportError as exc:
        return {"skipped": f"sherpa not importable ({exc}); pip install '.[bench]'"}
    logging.getLogger("sherpa").setLevel(logging.ERROR)
    model = parse_model(MODEL)
    modifier = get_modifier("gaussian")
    inst = Instrument.load(arf, rmf)
    rng = np.random.default_rng(13)
    thetas = _thetas(n_points, rng)
    temps = rng.choice(T_TRUE, n_points)

    def native(pars, lo, hi=None):
        flux = model.photon_flux(np.asarray(lo), np.asarray(hi), np.array([pars[0]]), {"nH": NH})
        return pars[1] * flux[0]

    ui.clean()
    ui.load_user_model(native, "src")
    ui.add_user_pars("src", ["kT", "norm"], [5.0, 1e-3], parmins=[0.1, 0.0], parmaxs=[64.0, 1e3])
    ui.set_stat("cstat")
    ui.set_method("levmar")
    orig_arf = ui.unpack_arf(str(arf))
    the_rmf = ui.unpack_rmf(str(rmf))
    mask = inst.band_mask(*BAND)
    times, recovered = [], []
    for i in range(n_points):
        t0 = time.process_time()
        area_mod = modifier.apply(inst.e_mid, inst.area, thetas[i][None, :])[0]
        mod_arf = ui.create_arf(inst.energ_lo, inst.energ_hi, area_mod)
        # the norm that gives COUNTS expected counts through the original response
        flux = model.photon_flux(inst.energ_lo, inst.energ_hi, np.array([temps[i]]), {"nH": NH})
        scale = COUNTS / (EXPOSURE * inst.fold(flux[0])[mask].sum())
        ui.dataspace1d(1, inst.n_channels, id=1, dstype=ui.DataPHA)
        ui.set_source(1, "src")
        src = ui.get_model_component("src")
        src.kT, src.norm = temps[i], scale
        ui.fake_pha(1, arf=mod_arf, rmf=the_rmf, exposure=EXPOSURE)
        ui.notice(*BAND)
        for response in (mod_arf, orig_arf):
            ui.set_arf(1, response)
            src.kT, src.norm = 5.0, scale
            ui.fit(1)
            if response is mod_arf:
                recovered.append(src.kT.val / temps[i] - 1)
        times.append(time.process_time() - t0)
    return {
        "points_per_s": 1.0 / np.median(times),
        "points_per_s_best": 1.0 / min(times),
        "ms_per_point": 1e3 * np.median(times),
        "points": n_points,
        "median_abs_rel_error_t_fit_mod": float(np.median(np.abs(recovered))),
        "version": _sherpa_version(),
    }


def _sherpa_version() -> str:
    try:
        import sherpa

        return str(sherpa.__version__)
    except Exception:  # pragma: no cover - informative only
        return "?"


def main() -> int:
    """Run the benchmarks, write the JSON, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    parser.add_argument("--repeats", type=int, default=None, help="grid passes (best counts)")
    args = parser.parse_args()
    repeats = args.repeats or (2 if args.quick else 5)
    n_slow = 5 if args.quick else 20
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.processor() or platform.machine(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "note": "shared machine: timings are noisy; the best of the repeats is reported",
        "xspec_reference": {
            "ms_per_fakeit_fit": XSPEC_MS_PER_FAKEIT_FIT,
            "points_per_s": XSPEC_POINTS_PER_S,
        },
        "instruments": {},
    }
    backends = {}
    for name, (arf_name, rmf_name) in INSTRUMENTS.items():
        arf, rmf = RESPONSES / arf_name, RESPONSES / rmf_name
        inst = Instrument.load(arf, rmf)
        native = bench_native(inst, args.quick, repeats)
        backends[name] = NativeBackend(
            inst, parse_model(MODEL), get_modifier("gaussian"), _settings()
        )
        sherpa = bench_sherpa(arf, rmf, n_slow)
        scipy_loop = bench_scipy(inst, max(2, n_slow // 4))
        entry = {
            "native": native,
            "sherpa": sherpa,
            "scipy": scipy_loop,
            "speedup_vs_xspec": native["points_per_s"] / XSPEC_POINTS_PER_S,
            "speedup_vs_scipy": native["points_per_s"] / scipy_loop["points_per_s"],
        }
        if "points_per_s" in sherpa:
            entry["speedup_vs_sherpa"] = native["points_per_s"] / sherpa["points_per_s"]
        report["instruments"][name] = entry
    report["cpu_limits"] = cpu_limits(backends)
    for name, entry in report["instruments"].items():
        entry["cost_model"] = cost_model(entry["native"], report["cpu_limits"], name)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(
        f"{'response':8} {'native pts/s':>13} {'us/pt':>7} {'random-theta':>13} "
        f"{'MAC/pt':>8} {'draws/pt':>9} {'limit pts/s':>12} {'sherpa pts/s':>13} "
        f"{'scipy pts/s':>12} {'x XSPEC':>8} {'RSS growth':>11}"
    )
    for name, e in report["instruments"].items():
        sh = e["sherpa"].get("points_per_s", float("nan"))
        cm = e["cost_model"]
        print(
            f"{name:8} {e['native']['points_per_s']:13.0f} {e['native']['us_per_point']:7.0f} "
            f"{e['native']['points_per_s_random_theta']:13.0f} "
            f"{cm['multiply_adds_per_point'] / 1e3:7.0f}k {cm['poisson_draws_per_point']:9.0f} "
            f"{cm['points_per_s_limit']:12.0f} {sh:13.1f} {e['scipy']['points_per_s']:12.2f} "
            f"{e['speedup_vs_xspec']:8.0f} {e['native']['rss_growth_mb']:9.1f}MB"
        )
    lim = report["cpu_limits"]
    print(
        f"(dgemm {lim['dgemm_macs_per_s'] / 1e9:.1f} G multiply-adds/s; XSPEC: "
        f"{XSPEC_POINTS_PER_S:g} points/s/core measured here earlier; "
        f"written {OUT.relative_to(HERE.parent)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
