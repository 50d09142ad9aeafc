"""Scaling and memory of ``xrmodifier simulate`` (issue 4).

1. Wall time of the same grid (1e5 points, the demo's simulation settings) with 1 rank and with
   ``mpiexec -n 2`` (target speed-up >= 1.8 on a 2-core machine). Whole commands are timed,
   start-up included, and the time inside ``simulate()`` is read from its summary; each is run
   ``--reps`` times alternately and the fastest kept (the machine may be shared: the load
   average before each run and the CPU time of each run are recorded too).
2. Peak resident memory per rank (``ru_maxrss``) for grids of 1e4 and 1e5 points under
   ``mpiexec -n 2`` (target: flat, i.e. chunks stream to disk and nothing grows with the grid).

Writes ``benchmarks/out/bench_scaling.json`` and prints a table. Run:
``.venv/bin/python benchmarks/bench_scaling.py`` (``--quick``: grids of 2e3 and 2e4 points).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from xrmodifier_hpc.config import set_key

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
#: thread settings a user may or may not have; the benchmarks run without them
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XRM_THREADS")


def make_config(project: Path, name: str, axes: tuple[int, int, int, int], chunk: int) -> Path:
    """The example config with ``axes`` = points along (mu, sigma, A, T_true)."""
    text = (project / "config.toml").read_text()
    mu, sigma, amp, temps = axes
    text = set_key(text, "modifier.grid", "mu", f"{{ linspace = [0.8, 3.0, {mu}] }}")
    text = set_key(text, "modifier.grid", "sigma", f"{{ logspace = [0.15, 0.8, {sigma}] }}")
    text = set_key(text, "modifier.grid", "A", f"{{ linspace = [-0.3, 0.3, {amp}] }}")
    text = set_key(text, "temperatures", "t_true", f"{{ logspace = [1.0, 12.0, {temps}] }}")
    text = set_key(text, "simulation", "chunk_size", str(chunk))
    text = set_key(text, "paths", "workdir", f'"run_{name}"')
    path = project / f"{name}.toml"
    path.write_text(text)
    return path


@dataclass
class Run:
    wall_s: float  #: the whole command, interpreter start-up included
    in_run_s: float  #: inside ``simulate()`` (config, backend, file, compute), from its summary
    cpu_s: float  #: user + system time of every process of the run
    peak_rss_mb: list[float]  #: per rank


def run(config: Path, ranks: int, rss_dir: Path) -> Run:
    """``simulate --overwrite`` with ``ranks`` ranks, every rank through this file's ``--child``
    mode, which records its peak resident memory in ``rss_dir``."""
    for old in rss_dir.glob("*.json"):
        old.unlink()
    cmd = [
        sys.executable,
        __file__,
        "--child",
        str(rss_dir),
        "simulate",
        str(config),
        "--overwrite",
    ]
    if ranks > 1:
        cmd = [shutil.which("mpiexec") or "mpiexec", "-n", str(ranks), *cmd]
    # as users run it: no thread variables (each rank sizes its pools from its cores)
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k not in THREAD_VARS
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}")
    in_run = float(re.search(r"computed now in ([0-9.]+) s", proc.stdout).group(1))
    peaks = [json.loads(p.read_text())["peak_rss_mb"] for p in sorted(rss_dir.glob("*.json"))]
    return Run(wall, in_run, cpu, peaks)


def child(rss_dir: str, argv: list[str]) -> int:
    """One rank: run the CLI in this process, then record its peak resident memory."""
    from xrmodifier_hpc.cli import main
    from xrmodifier_hpc.runtime.environment import detect

    code = main(argv)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    Path(rss_dir, f"rank-{detect().rank}.json").write_text(json.dumps({"peak_rss_mb": peak_mb}))
    return code


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller grids (a smoke check)")
    parser.add_argument("--reps", type=int, default=2, help="runs per rank count (fastest kept)")
    parser.add_argument("--child", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], args.child[1:])

    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.config.grid import Grid
    from xrmodifier_hpc.stages.init import init

    work = Path(tempfile.mkdtemp(prefix="bench_scaling_"))
    project = init(work / "project").parent
    rss_dir = work / "rss"
    rss_dir.mkdir()
    # the demo's settings (2 realisations, 96-point fit grid, curves) on grids of 1e4 and 1e5
    # points; the speed-up on the larger, where the per-rank start-up (~1 s: imports, reading
    # the responses) weighs least
    grids = {"1e4": (5, 5, 20, 20), "1e5": (25, 10, 20, 20)}
    if args.quick:
        grids = {"1e4": (5, 5, 4, 20), "1e5": (5, 5, 40, 20)}  # 2000 and 20000 points
    results: dict = {
        "machine": {
            "cpus": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
            "note": "shared machine: timings are noisy",
        },
        "quick": args.quick,
    }

    config = make_config(project, "scaling", grids["1e5"], 512)
    cfg = load_config(config)
    n_points = Grid.from_config(cfg).n_points
    runs: dict[int, list[Run]] = {1: [], 2: []}
    load = []
    for _ in range(args.reps):
        for ranks in (1, 2):
            load.append(os.getloadavg()[0])
            runs[ranks].append(run(config, ranks, rss_dir))
    best = {r: min(rs, key=lambda x: x.wall_s) for r, rs in runs.items()}
    best_in = {r: min(x.in_run_s for x in rs) for r, rs in runs.items()}
    results["scaling"] = {
        "points": n_points,
        "realisations": cfg.simulation.realisations,
        "fit_tgrid": len(cfg.simulation.fit_tgrid),
        "chunk_size": cfg.simulation.chunk_size,
        "runs": {str(r): [asdict(x) for x in rs] for r, rs in runs.items()},
        "load_average_before_runs": load,
        "best_wall_s": {str(r): b.wall_s for r, b in best.items()},
        "points_per_s": {str(r): n_points / b.wall_s for r, b in best.items()},
        "speedup_wall": best[1].wall_s / best[2].wall_s,
        "speedup_in_run": best_in[1] / best_in[2],
        # CPU seconds of all ranks, 2 ranks over 1: the work parallelism adds (start-up of the
        # second rank, messages); on a machine others share, the wall-time speed-up mixes this
        # with how much CPU the others left, and 2 / ratio is what two free cores would give
        "cpu_ratio_2_over_1": min(x.cpu_s for x in runs[2]) / min(x.cpu_s for x in runs[1]),
        "target_speedup": 1.8,
    }

    mem_config = make_config(project, "mem1e4", grids["1e4"], 512)
    small = run(mem_config, 2, rss_dir)
    large = best[2]
    results["memory"] = {
        "1e4": {
            "points": Grid.from_config(load_config(mem_config)).n_points,
            "ranks": 2,
            "peak_rss_mb_per_rank": small.peak_rss_mb,
            "grid_h5_mb": load_config(mem_config).grid_path.stat().st_size / 2**20,
        },
        "1e5": {
            "points": n_points,
            "ranks": 2,
            "peak_rss_mb_per_rank": large.peak_rss_mb,
            "grid_h5_mb": cfg.grid_path.stat().st_size / 2**20,
        },
        "1e5_one_rank": {
            "points": n_points,
            "ranks": 1,
            "peak_rss_mb_per_rank": best[1].peak_rss_mb,
        },
    }
    results["memory_growth_mb"] = max(large.peak_rss_mb) - max(small.peak_rss_mb)

    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "bench_scaling.json").write_text(json.dumps(results, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)

    s = results["scaling"]
    print(
        f"simulate scaling ({s['points']} points, {s['realisations']} realisations, "
        f"{s['fit_tgrid']}-point fit grid; {results['machine']['cpus']} cores, shared machine)"
    )
    print(f"{'ranks':>6} {'wall (s)':>9} {'in run (s)':>11} {'cpu (s)':>8} {'points/s':>9}")
    for r, rs in runs.items():
        for x in rs:
            print(
                f"{r:>6} {x.wall_s:>9.2f} {x.in_run_s:>11.2f} {x.cpu_s:>8.1f} "
                f"{n_points / x.wall_s:>9.0f}"
            )
    print(f"load average before each run: {', '.join(f'{x:.1f}' for x in load)}")
    print(
        f"speed-up 1 -> 2 ranks (fastest runs): {s['speedup_wall']:.2f}x whole command, "
        f"{s['speedup_in_run']:.2f}x inside simulate() (target >= 1.8x)"
    )
    print(
        f"CPU time, 2 ranks / 1 rank: {s['cpu_ratio_2_over_1']:.3f} (with two free cores the "
        f"speed-up would be about {2 / s['cpu_ratio_2_over_1']:.2f}x)"
    )
    print()
    print(
        f"{'grid':>12} {'points':>8} {'ranks':>6} {'peak RSS per rank (MB)':>24} "
        f"{'grid.h5 (MB)':>13}"
    )
    for label, m in results["memory"].items():
        peaks = " / ".join(f"{p:.0f}" for p in m["peak_rss_mb_per_rank"])
        size = f"{m['grid_h5_mb']:.1f}" if "grid_h5_mb" in m else ""
        print(f"{label:>12} {m['points']:>8} {m['ranks']:>6} {peaks:>24} {size:>13}")
    print(
        f"peak RSS growth from 1e4 to 1e5 points (2 ranks): {results['memory_growth_mb']:+.1f} MB"
    )
    print(f"wrote {OUT / 'bench_scaling.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
