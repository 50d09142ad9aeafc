"""Native-backend throughput against Sherpa and a plain per-spectrum scipy loop.

A grid point = fakeit through the modified response + two C-stat fits (original and modified
ARF) with their delta-C = 1 intervals + both profile curves. Measured on the real Chandra
ACIS (1078 x 1024) and XMM EPIC-pn (1319 x 4096) responses in ../shared/responses, single
thread (OMP_NUM_THREADS=1), on a Cartesian batch (thetas x 40 T_true, T_true fastest, one
realisation, 128 fit temperatures), beside, in the same process:

- Sherpa: fake_pha + two C-stat fits (levmar) of the same model, the native
  ``wabs*bremss`` plugged in as a Sherpa user model (``pip install .[bench]``);
- scipy: a straightforward per-spectrum loop (fold, Poisson draw, scipy.optimize on the
  C-stat over log kT and log norm, twice).

XSPEC's figure is the one measured on this machine before (~75 ms per fakeit + fit, about
7 grid points/s/core); it is quoted, not re-measured (no HEASoft here). Throughputs are per
core: CPU seconds of this single-threaded process (time.process_time), so time slices lost to
other processes on a shared machine do not count, as medians over batches (native) or points
(Sherpa, scipy); the best batch/point and the native wall-clock rate are recorded too.
Writes benchmarks/out/bench_backend.json and prints a table. Timings on a shared machine are
noisy all the same (caches and memory bandwidth are shared).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/bench_backend.py [--quick]
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
from xrmodifier_hpc.physics.modifiers import get_modifier  # noqa: E402
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
XSPEC_MS_PER_FAKEIT_FIT = 75.0  # measured here with XSPEC 12.9.1 (see issue 3)
XSPEC_POINTS_PER_S = 7.0


def _thetas(n: int, rng: np.random.Generator) -> np.ndarray:
    """n Gaussian-modifier parameter sets (mu keV, sigma keV, A) like a real grid's."""
    return np.column_stack(
        [rng.uniform(0.8, 3.0, n), rng.uniform(0.15, 0.8, n), rng.uniform(-0.3, 0.3, n)]
    )


def _rss_mb() -> float:
    try:
        import psutil
    except ImportError:
        return float("nan")
    return psutil.Process().memory_info().rss / 2**20


def bench_native(inst: Instrument, n_theta: int, batches: int) -> dict:
    """Grid points per second for ``batches`` chunks of n_theta x 40 points."""
    model = parse_model(MODEL)
    modifier = get_modifier("gaussian")
    settings = SimulationSettings(
        exposure=EXPOSURE,
        band=BAND,
        realisations=1,
        seed=2026,
        fit_tgrid=FIT_TGRID,
        counts=COUNTS,
        source_params={"nH": NH},
        curves=True,
    )
    t0 = time.perf_counter()
    backend = NativeBackend(inst, model, modifier, settings)
    setup_s = time.perf_counter() - t0
    rng = np.random.default_rng(5)
    n_per = n_theta * T_TRUE.size
    # warm-up: the per-T_true caches fill on the first batch, as on the first chunk of a run
    theta = np.repeat(_thetas(n_theta, rng), T_TRUE.size, axis=0)
    t0 = time.perf_counter()
    backend.run(theta, np.tile(T_TRUE, n_theta), np.arange(n_per))
    first_s = time.perf_counter() - t0
    times, walls, rss = [], [], []
    statuses = 0
    for b in range(batches):
        theta = np.repeat(_thetas(n_theta, rng), T_TRUE.size, axis=0)
        index = np.arange(n_per) + (b + 1) * n_per
        c0, t0 = time.process_time(), time.perf_counter()
        res = backend.run(theta, np.tile(T_TRUE, n_theta), index)
        times.append(time.process_time() - c0)
        walls.append(time.perf_counter() - t0)
        rss.append(_rss_mb())
        statuses += int(np.count_nonzero(res.status))
    per_s = n_per / np.median(times)
    return {
        "points_per_s": per_s,
        "points_per_s_best_batch": n_per / min(times),
        "points_per_s_wall": n_per / np.median(walls),
        "us_per_point": 1e6 / per_s,
        "batch_points": n_per,
        "batches": batches,
        "setup_s": setup_s,
        "first_batch_s": first_s,
        "fit_tgrid": int(FIT_TGRID.size),
        "noticed_channels": int(backend.fitter.channels.size),
        "flagged_fits": statuses,
        "rss_mb_after_first_batch": rss[0],
        "rss_mb_after_last_batch": rss[-1],
        "rss_growth_mb": rss[-1] - rss[0],
    }


def bench_scipy(inst: Instrument, n_points: int) -> dict:
    """The straightforward way: per spectrum, fold the model at each trial and minimise."""
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer points (a smoke run)")
    args = parser.parse_args()
    n_theta, batches = (4, 2) if args.quick else (12, 6)
    n_slow = 5 if args.quick else 20
    report = {
        "machine": platform.processor() or platform.machine(),
        "threads": os.environ.get("OMP_NUM_THREADS"),
        "note": "shared machine: timings are noisy",
        "xspec_reference": {
            "ms_per_fakeit_fit": XSPEC_MS_PER_FAKEIT_FIT,
            "points_per_s": XSPEC_POINTS_PER_S,
        },
        "instruments": {},
    }
    for name, (arf_name, rmf_name) in INSTRUMENTS.items():
        arf, rmf = RESPONSES / arf_name, RESPONSES / rmf_name
        inst = Instrument.load(arf, rmf)
        native = bench_native(inst, n_theta, batches)
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
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2))
    print(
        f"{'response':8} {'native pts/s':>13} {'us/pt':>7} {'sherpa pts/s':>13} "
        f"{'scipy pts/s':>12} {'x XSPEC':>8} {'x Sherpa':>9} {'x scipy':>8} {'RSS growth':>11}"
    )
    for name, e in report["instruments"].items():
        sh = e["sherpa"].get("points_per_s", float("nan"))
        print(
            f"{name:8} {e['native']['points_per_s']:13.0f} {e['native']['us_per_point']:7.0f} "
            f"{sh:13.1f} {e['scipy']['points_per_s']:12.2f} {e['speedup_vs_xspec']:8.0f} "
            f"{e.get('speedup_vs_sherpa', float('nan')):9.0f} {e['speedup_vs_scipy']:8.0f} "
            f"{e['native']['rss_growth_mb']:9.1f}MB"
        )
    print(
        f"(XSPEC: {XSPEC_POINTS_PER_S:g} points/s/core measured here earlier; "
        f"written {OUT.relative_to(HERE.parent)})"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
