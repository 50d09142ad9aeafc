"""Coverage of the posterior intervals (issue 12, item 4): do the 68% and 95% intervals of
theta contain the truth in 68% and 95% of injections?

Set-up (not timed): ``xrmodifier init`` in a scratch folder, the injection tests' 1920-point
grid (8 mu x 4 sigma x 5 A x 12 T_true, noise-free fits), ``xrmodifier simulate`` and
``xrmodifier train``. ``--project DIR`` uses an already trained project instead.

Each injection draws theta_true from the flat prior on the grid's bounds (the prior the
posterior uses: averaged over it, a calibrated posterior covers at exactly the nominal rate),
makes ``--n-sources`` mock sources whose telescope-1 counts are log-uniform over
``--counts`` (default 8000-30000: a factor 3.75, as real samples differ) and inverts them with
``invert`` (the whole stage, one process per injection, ``--workers`` at a time). Recorded per
injection and parameter: whether the 68% (16-84%) and 95% (2.5-97.5%) intervals contain the
truth, and the posterior rank of the truth (the fraction of posterior samples below it; for a
calibrated posterior it is uniform over injections — simulation-based calibration, Talts et
al. 2018, arXiv:1804.06788).

``--mocks`` chooses how the observations are made:

* ``forward`` (default): ``xrmodifier mock``, the full forward model (fakeit through the true
  response, C-stat fits of both telescopes): the real test;
* ``emulator``: the same sources and errors, but T0 = T_true + noise and T1 = T1_emu(theta,
  T_true) + noise with symmetric Gaussian errors, i.e. data drawn from the inversion's own
  likelihood. Its coverage tests the sampler and the prior alone; the difference to
  ``forward`` is what the likelihood model gets wrong (emulator error, fit bias, errors);
* ``asimov``: as ``emulator`` but T1 from the exact noise-free forward model (asimov fits of
  the true response): it differs from the likelihood only by the emulator's error.

Writes ``benchmarks/out/bench_coverage.json`` (``--tag`` adds a suffix for experiments) and
prints the table. ``--quick``: 30 injections of 20 sources with short chains (a few minutes on
two cores), for a first look; the full run (100 injections of 30 sources) takes about half an
hour on two quiet cores.

    .venv/bin/python benchmarks/bench_coverage.py [--quick] [--project DIR] [--workers N]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import os
import platform
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config import set_key

REPO = Path(__file__).resolve().parents[1]
OUT_DIR = REPO / "benchmarks" / "out"
XRMODIFIER = str(Path(sys.executable).parent / "xrmodifier")
PARAMS = ("mu", "sigma", "A")
LEVELS = {"68": (16.0, 84.0), "95": (2.5, 97.5)}
#: how the observations of an injection are made (module docstring)
MOCKS = ("forward", "emulator", "asimov", "asimov-t0", "asimov-t1", "expected-errors")
#: the acceptance bands of issue 12: nominal +- tolerance
TOLERANCE = {"68": 0.07, "95": 0.04}

GRID_EDITS = (
    ("modifier.grid", "mu", "{ linspace = [0.8, 3.0, 8] }"),
    ("modifier.grid", "sigma", "{ logspace = [0.15, 0.8, 4] }"),
    ("modifier.grid", "A", "{ linspace = [-0.3, 0.3, 5] }"),
    ("temperatures", "t_true", "{ logspace = [1.0, 12.0, 12] }"),
    ("simulation", "mode", '"asimov"'),
    ("simulation", "realisations", "1"),
    ("emulator", "epochs", "600"),
    ("emulator", "patience", "100"),
    ("emulator", "batch_size", "256"),
    ("emulator", "threads", "1"),
    ("emulator", "predict_scatter", "false"),
    ("emulator", "offgrid_points", "120"),
)


def _run(*args: str) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def prepare(workdir: Path, project: Path | None) -> Path:
    """A trained project; returns its config path."""
    if project is not None:
        config = project / "config.toml"
        if not (project / "run" / "emulator.pt").is_file():
            raise SystemExit(f"bench: {project} has no run/emulator.pt (train it first)")
        return config
    _run(XRMODIFIER, "init", str(workdir / "project"))
    config = workdir / "project" / "config.toml"
    text = config.read_text()
    for section, key, value in GRID_EDITS:
        text = set_key(text, section, key, value)
    config.write_text(text)
    for stage in ("simulate", "train"):
        print(f"set-up: {stage} took {_run(XRMODIFIER, stage, str(config)):.0f} s", flush=True)
    return config


def _asimov_fits(cfg: Any, role: str, thetas: np.ndarray, res: Any) -> Any:
    """Noise-free fits (asimov) of the mock's kept sources with their own norms."""
    from xrmodifier_hpc.backends import make_backend

    truth = json.loads(res.truth_path.read_text())
    norm = np.array([s["norm"] for s in truth["sources"]])
    with make_backend(cfg, role=role, mode="asimov", realisations=1, curves=False) as be:
        return be.run(thetas, res.t_true, np.arange(len(norm)), norm=norm)


def _redrawn_observations(cfg: Any, module: Any, res: Any, seed: int, model: str) -> Any:
    """The mock's sources with some of its numbers replaced (experiments, ``--mocks``).

    ``emulator`` / ``asimov``: T0 = T_true + noise and T1 = T1_model + noise with the mock's
    errors symmetrised (Gaussian); T1_model the emulator's or the exact noise-free forward
    model's. ``asimov-t0``: only T0 redrawn so (T1 the Poisson fit's). ``asimov-t1``: only T1.
    ``expected-errors``: the Poisson fits' values, with errors from noise-free fits at the
    truth instead of from the data (errors no longer correlated with the values).
    """
    import torch

    from xrmodifier_hpc.io.observations import Observations, write_observations

    obs = res.observations
    theta = np.array([res.theta_true[n] for n in PARAMS])
    thetas = np.tile(theta, (obs.n, 1))
    rng = np.random.default_rng([seed, 77])
    s0, s1 = obs.t0_err, obs.t1_err
    t0, t1 = obs.t0.copy(), obs.t1.copy()
    e0 = (obs.t0_err_lo.copy(), obs.t0_err_hi.copy())
    e1 = (obs.t1_err_lo.copy(), obs.t1_err_hi.copy())
    if model == "emulator":
        with torch.no_grad():
            out = module(torch.tensor(thetas), torch.tensor(res.t_true))
        t1_model = out[:, 0].numpy()
    elif model in ("asimov", "asimov-t1"):
        t1_model = _asimov_fits(cfg, "target", thetas, res).t_fit_orig[:, 0].astype(np.float64)
    noise0, noise1 = rng.standard_normal(obs.n), rng.standard_normal(obs.n)
    if model in ("emulator", "asimov", "asimov-t0"):
        t0, e0 = res.t_true + s0 * noise0, (s0, s0)
    if model in ("emulator", "asimov", "asimov-t1"):
        t1, e1 = t1_model + s1 * noise1, (s1, s1)
    if model == "expected-errors":
        fit1 = _asimov_fits(cfg, "target", thetas, res)
        identity = np.tile(np.array([1.0, 1.0, 0.0]), (obs.n, 1))
        fit0 = _asimov_fits(cfg, "reference", identity, res)
        e1 = (fit1.err_orig[:, 0, 0].astype(float), fit1.err_orig[:, 0, 1].astype(float))
        e0 = (fit0.err_orig[:, 0, 0].astype(float), fit0.err_orig[:, 0, 1].astype(float))
    # as mock does: sources whose temperatures leave the emulator's range are dropped
    lo, hi = (float(x) for x in module.bounds[-1])
    keep = (t0 >= lo) & (t0 <= hi) & (t1 >= lo) & (t1 <= hi)
    new = Observations(
        names=tuple(np.array(obs.names)[keep]),
        t0=t0[keep],
        t0_err_lo=e0[0][keep],
        t0_err_hi=e0[1][keep],
        t1=t1[keep],
        t1_err_lo=e1[0][keep],
        t1_err_hi=e1[1][keep],
        path=obs.path,
    )
    write_observations(obs.path, new, (f"{model} observations (bench_coverage)",))
    return new


def one_injection(spec: dict[str, Any]) -> dict[str, Any]:
    """Mock data at ``spec['theta']`` and invert them; coverage and rank of each parameter.

    Runs in a fresh worker process (spawned): one torch thread. A failure is returned as
    ``{"k": k, "error": message}`` (and counted) rather than ending the benchmark.
    """
    try:
        return _one_injection(spec)
    except Exception as exc:  # noqa: BLE001 - reported in the summary
        return {"k": spec["k"], "theta": spec["theta"], "error": f"{type(exc).__name__}: {exc}"}


def _one_injection(spec: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    import logging

    logging.disable(logging.WARNING)
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.emulator import load
    from xrmodifier_hpc.stages.invert import invert
    from xrmodifier_hpc.stages.mock import mock

    t0 = time.perf_counter()
    k = spec["k"]
    cfg = load_config(spec["config"])
    work = Path(spec["workdir"]) / f"inj{k:04d}"
    inv = dataclasses.replace(
        cfg.inversion,
        n_starts=spec["n_starts"],
        s_emu=spec["s_emu"] if spec["s_emu"] is not None else cfg.inversion.s_emu,
        mcmc=dataclasses.replace(
            cfg.inversion.mcmc, walkers=spec["walkers"], steps=spec["steps"], burn=spec["burn"]
        ),
    )
    cfg = dataclasses.replace(
        cfg,
        inversion=inv,
        mock=dataclasses.replace(cfg.mock, counts=tuple(spec["counts"])),
        paths=dataclasses.replace(cfg.paths, workdir=work),
    )
    module = load(spec["emulator"])
    theta = spec["theta"]
    res = mock(
        cfg, output=work / "obs.csv", theta=theta, n_sources=spec["n_sources"], seed=spec["seed"]
    )
    if spec["mocks"] != "forward":
        _redrawn_observations(cfg, module, res, spec["seed"], spec["mocks"])
    result = invert(cfg, res.path, module=module, comm=None)
    post = np.load(work / "posterior.npz")
    flat = post["chain"][int(post["burn"]) :: int(post["thin"])].reshape(-1, len(PARAMS))
    summ = result["posterior"]["summary"]
    out: dict[str, Any] = {
        "k": k,
        "theta": theta,
        "n_sources": result["n_sources"],
        "max_tau": float(max(result["posterior"]["autocorr_time"].values())),
        "acceptance": result["posterior"]["acceptance_fraction"],
        "short_chains": result["posterior"]["chains_too_short"],
        "s_emu": result["s_emu"]["fraction"],
        "seconds": time.perf_counter() - t0,
        "rank": {n: float(np.mean(flat[:, j] < theta[n])) for j, n in enumerate(PARAMS)},
        "median": {n: summ[n]["median"] for n in PARAMS},
    }
    for level, (lo, hi) in LEVELS.items():
        key = "p2.5" if lo == 2.5 else f"p{lo:g}"
        key_hi = "p97.5" if hi == 97.5 else f"p{hi:g}"
        out[f"in{level}"] = {n: bool(summ[n][key] <= theta[n] <= summ[n][key_hi]) for n in PARAMS}
    if not spec["keep"]:
        for f in work.iterdir():
            f.unlink()
        work.rmdir()
    return out


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Coverage per parameter and pooled, with binomial 95% intervals, for each level."""
    from scipy.stats import binom

    failed = [r for r in runs if "error" in r]
    runs = [r for r in runs if "error" not in r]
    n = len(runs)
    out: dict[str, Any] = {"n_injections": n, "n_failed": len(failed)}
    if n == 0:
        raise SystemExit("bench: every injection failed: " + "; ".join(r["error"] for r in failed))
    for level in LEVELS:
        nominal = float(level) / 100
        hits = np.array([[r[f"in{level}"][p] for p in PARAMS] for r in runs], dtype=float)
        per = {p: float(hits[:, j].mean()) for j, p in enumerate(PARAMS)}
        pooled = float(hits.mean())
        lo, hi = binom.interval(0.95, n, nominal)
        out[level] = {
            "nominal": nominal,
            "per_param": per,
            "pooled": pooled,
            "binomial95_per_param": [lo / n, hi / n],
            "target": [nominal - TOLERANCE[level], nominal + TOLERANCE[level]],
            "met": bool(abs(pooled - nominal) <= TOLERANCE[level]),
        }
    ranks = np.array([[r["rank"][p] for p in PARAMS] for r in runs])
    # rank histogram in 5 bins: a calibrated posterior gives n/5 each
    out["rank_histogram"] = {
        p: np.histogram(ranks[:, j], bins=5, range=(0, 1))[0].tolist() for j, p in enumerate(PARAMS)
    }
    out["rank_mean"] = {p: float(ranks[:, j].mean()) for j, p in enumerate(PARAMS)}
    out["max_tau_median"] = float(np.median([r["max_tau"] for r in runs]))
    out["short_chain_fraction"] = float(np.mean([r["short_chains"] for r in runs]))
    out["seconds_per_injection"] = float(np.median([r["seconds"] for r in runs]))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 injections, 20 sources")
    parser.add_argument("--project", type=Path, default=None, help="a trained project folder")
    parser.add_argument("--injections", type=int, default=None)
    parser.add_argument("--n-sources", type=int, default=None)
    parser.add_argument("--counts", type=float, nargs=2, default=(8000.0, 30000.0))
    parser.add_argument("--mocks", choices=MOCKS, default="forward")
    parser.add_argument("--s-emu", default=None, help="override [inversion] s_emu")
    parser.add_argument("--walkers", type=int, default=None)
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--burn", type=int, default=None)
    parser.add_argument("--n-starts", type=int, default=None, help="default: config's (64)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2024, help="draws of theta_true")
    parser.add_argument(
        "--mock-seed", type=int, default=5000, help="injection k's mock uses seed MOCK_SEED + k"
    )
    parser.add_argument("--tag", default="", help="suffix of the output JSON (experiments)")
    parser.add_argument("--keep", action="store_true", help="keep each injection's files")
    args = parser.parse_args(argv)
    n_inj = args.injections or (30 if args.quick else 100)
    n_src = args.n_sources or (20 if args.quick else 30)
    # the full run uses the product's defaults ([inversion] of `xrmodifier init`); --quick the
    # short chains of the injection tests
    walkers = args.walkers or (16 if args.quick else 32)
    steps = args.steps or (800 if args.quick else 3000)
    burn = args.burn if args.burn is not None else (200 if args.quick else 1000)
    n_starts = args.n_starts or (8 if args.quick else 64)
    s_emu: float | str | None = None
    if args.s_emu is not None:
        s_emu = args.s_emu if args.s_emu == "auto" else float(args.s_emu)
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench_coverage_") as tmp:
        config = prepare(Path(tmp), args.project)
        from xrmodifier_hpc.emulator import load

        emulator = config.parent / "run" / "emulator.pt"
        bounds = np.asarray(load(emulator).bounds)[: len(PARAMS)]
        rng = np.random.default_rng(args.seed)
        specs = []
        for k in range(n_inj):
            u = rng.random(len(PARAMS))
            specs.append(
                {
                    "k": k,
                    "config": str(config),
                    "emulator": str(emulator),
                    "workdir": str(Path(tmp) / "injections"),
                    "theta": {p: float(a + v * (b - a)) for p, (a, b), v in zip(PARAMS, bounds, u)},
                    "seed": args.mock_seed + k,
                    "n_sources": n_src,
                    "counts": list(args.counts),
                    "mocks": args.mocks,
                    "s_emu": s_emu,
                    "walkers": walkers,
                    "steps": steps,
                    "burn": burn,
                    "n_starts": n_starts,
                    "keep": args.keep,
                }
            )
        runs = []
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max(1, args.workers), mp_context=ctx) as pool:
            for done, r in enumerate(pool.map(one_injection, specs), start=1):
                runs.append(r)
                if done % 10 == 0 or done == n_inj:
                    part = summarise(runs)
                    print(
                        f"{done}/{n_inj} injections: 68% pooled {part['68']['pooled']:.3f}, "
                        f"95% pooled {part['95']['pooled']:.3f} "
                        f"({time.perf_counter() - t_start:.0f} s)",
                        flush=True,
                    )
    summary = summarise(runs)
    command = "benchmarks/bench_coverage.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out = {
        "benchmark": "coverage of the posterior's 68% and 95% intervals",
        "command": command.strip(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
            "load_after": list(os.getloadavg()),
        },
        "settings": {
            "injections": n_inj,
            "n_sources": n_src,
            "counts": list(args.counts),
            "mocks": args.mocks,
            "s_emu": s_emu if s_emu is not None else "config",
            "walkers": walkers,
            "steps": steps,
            "burn": burn,
            "n_starts": n_starts,
            "quick": args.quick,
        },
        "summary": summary,
        "wall_s": time.perf_counter() - t_start,
        "runs": runs,
    }
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / f"bench_coverage{('_' + args.tag) if args.tag else ''}.json"
    tmp_out = path.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2) + "\n")
    tmp_out.replace(path)
    print(
        f"\ncoverage over {n_inj} injections of {n_src} sources "
        f"(counts {args.counts[0]:g}-{args.counts[1]:g}, {args.mocks} mocks)"
    )
    print(f"{'level':>6} " + " ".join(f"{p:>7}" for p in PARAMS) + f" {'pooled':>7} target")
    for level in LEVELS:
        s = summary[level]
        lo, hi = s["target"]
        print(
            f"{level + '%':>6} "
            + " ".join(f"{s['per_param'][p]:7.3f}" for p in PARAMS)
            + f" {s['pooled']:7.3f} {lo:.2f}-{hi:.2f} {'met' if s['met'] else 'NOT met'}"
        )
    print("rank histograms (5 bins):", summary["rank_histogram"])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
