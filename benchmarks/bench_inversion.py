"""Inversion speed (issue 6): 64 multi-start optimisations + the emcee posterior on 50 sources.

Set-up (not timed): ``xrmodifier init`` in a scratch folder, a 1920-point grid (8 mu x 4 sigma
x 5 A x 12 T_true, noise-free fits), ``xrmodifier simulate`` and ``xrmodifier train`` (the
default 128 x 3 network), then ``xrmodifier mock`` of 50 sources at the demo's theta and count
levels. ``--project DIR`` uses an already trained project instead (its config.toml and
emulator; the mock is redone).

Timed: ``xrmodifier invert CONFIG OBS`` with the default inversion settings (64 Sobol starts,
32 walkers x 3000 steps, 1000 burn-in), once with one process and once under ``mpiexec -n 2``
(the starts split over the ranks; the posterior runs on rank 0). Whole commands are timed,
interpreter start-up included; the stage's own split (multi-start / posterior / total) is read
from result.json. Target: under 1 minute on 2 cores. The machine may be shared: the load
average before each run is recorded and timings are noisy.

Writes ``benchmarks/out/bench_inversion.json`` and prints a table. Run:
``.venv/bin/python benchmarks/bench_inversion.py [--project DIR] [--reps N]``
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from xrmodifier_hpc.config import set_key
from xrmodifier_hpc.io.result import InversionResult

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out" / "bench_inversion.json"
XRMODIFIER = str(Path(sys.executable).parent / "xrmodifier")
TARGET_S = 60.0
N_SOURCES = 50

GRID_EDITS = (
    ("modifier.grid", "mu", "{ linspace = [0.8, 3.0, 8] }"),
    ("modifier.grid", "sigma", "{ logspace = [0.15, 0.8, 4] }"),
    ("modifier.grid", "A", "{ linspace = [-0.3, 0.3, 5] }"),
    ("temperatures", "t_true", "{ logspace = [1.0, 12.0, 12] }"),
    ("simulation", "mode", '"asimov"'),
    ("simulation", "realisations", "1"),
    ("emulator", "threads", "1"),
    ("emulator", "predict_scatter", "false"),
    ("emulator", "offgrid_points", "200"),
)


def _run(*args: str, env: dict | None = None) -> tuple[float, subprocess.CompletedProcess]:
    t0 = time.perf_counter()
    done = subprocess.run(args, capture_output=True, text=True, env={**os.environ, **(env or {})})
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"bench: {' '.join(args)} failed:\n{done.stderr[-3000:]}")
    return wall, done


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
        wall, _ = _run(XRMODIFIER, stage, str(config))
        print(f"set-up: {stage} took {wall:.0f} s", flush=True)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, default=None, help="a trained project folder")
    parser.add_argument("--reps", type=int, default=1, help="runs per rank count (best kept)")
    args = parser.parse_args()
    launcher = shutil.which("mpiexec")
    with tempfile.TemporaryDirectory(prefix="bench_inversion_") as tmp:
        config = prepare(Path(tmp), args.project)
        obs = config.parent / "run" / "bench_observations.csv"
        _run(XRMODIFIER, "mock", str(config), "-o", str(obs), "--n-sources", str(N_SOURCES))
        n_obs = sum(
            1
            for line in obs.read_text().splitlines()
            if line and not line.startswith(("#", "name"))
        )
        runs = []
        for ranks in (1, 2):
            if ranks > 1 and launcher is None:
                print("bench: mpiexec not found, skipping the 2-rank run")
                continue
            for _ in range(args.reps):
                load = os.getloadavg()[0]
                cmd = [XRMODIFIER, "invert", str(config), str(obs)]
                if ranks > 1:
                    cmd = [launcher, "-n", str(ranks), *cmd]
                cpu0 = os.times()
                wall, _ = _run(*cmd)
                cpu1 = os.times()
                result = InversionResult.read(config.parent / "run" / "result.json")
                runs.append(
                    {
                        "ranks": ranks,
                        "wall_s": wall,
                        "cpu_s": (cpu1.children_user - cpu0.children_user)
                        + (cpu1.children_system - cpu0.children_system),
                        "load_before": load,
                        "stage": result.timing.to_dict(),
                        "n_starts": result.n_starts,
                        "distinct_optima": len(result.optima),
                        "walkers": result.posterior.walkers,
                        "steps": result.posterior.steps,
                        "max_tau": max(result.posterior.autocorr_time.values()),
                        "n_sources": result.n_sources,
                    }
                )
        best = {}
        for r in runs:
            if r["ranks"] not in best or r["wall_s"] < best[r["ranks"]]["wall_s"]:
                best[r["ranks"]] = r
    out = {
        "benchmark": "inversion: 64 starts + posterior on 50 sources",
        "target_s": TARGET_S,
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "n_sources": n_obs,
        "runs": runs,
        "best": {str(k): v for k, v in best.items()},
        "met": all(v["wall_s"] < TARGET_S for v in best.values()),
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = OUT.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(out, indent=2) + "\n")
    tmp_out.replace(OUT)
    print(
        f"\ninversion of {n_obs} sources, {runs[0]['n_starts']} starts, "
        f"{runs[0]['walkers']} walkers x {runs[0]['steps']} steps (target < {TARGET_S:.0f} s)"
    )
    print(
        f"{'ranks':>5} {'wall s':>8} {'multi-start s':>14} {'posterior s':>12} "
        f"{'stage s':>8} {'optima':>7} {'max tau':>8} {'load':>5}"
    )
    for k, r in sorted(best.items()):
        st = r["stage"]
        print(
            f"{k:>5} {r['wall_s']:8.1f} {st['multistart_s']:14.1f} {st['posterior_s']:12.1f} "
            f"{st['total_s']:8.1f} {r['distinct_optima']:>7} {r['max_tau']:8.1f} "
            f"{r['load_before']:5.1f}"
        )
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
