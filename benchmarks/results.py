"""Render ``benchmarks/RESULTS.md`` from the benchmarks' JSON files in ``benchmarks/out``.

``make bench`` runs every ``benchmarks/bench_*.py`` (each writes one JSON file) and then this
script. It runs nothing itself: it reads

- ``bench_backend.json``: native backend throughput against Sherpa, a plain scipy loop and
  XSPEC's quoted 75 ms per fakeit + fit;
- ``bench_command.json``: ``xrmodifier simulate`` as typed (1 process, ``mpiexec -n 2``, no
  thread variables) on both real response pairs, beside the same points in process;
- ``bench_scaling.json``: ``xrmodifier simulate`` with 1 and 2 MPI ranks, peak memory;
- ``bench_training.json``: emulator training time on 1e5 points, inference throughput;
- ``bench_inversion.json``: 64 starts + posterior on 50 sources, 1 and 2 ranks;
- ``bench_coverage.json``: coverage of the posterior's 68% and 95% intervals over injections;

and writes a Markdown page with the machine it renders on (CPU model, cores, memory, load
average, date: ``make bench`` renders right after the runs, on the same machine) and each
benchmark's own date (its ``date`` field, else the JSON file's modification time). A missing
JSON file leaves its section saying how to produce it.

    .venv/bin/python benchmarks/results.py [--out-dir DIR] [--output FILE]
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from xrmodifier_hpc.io.atomic import write_text

HERE = Path(__file__).resolve().parent
OUT_DIR = HERE / "out"
RESULTS = HERE / "RESULTS.md"
#: the benchmarks, in page order: JSON stem -> (title, script)
BENCHMARKS: dict[str, tuple[str, str]] = {
    "bench_backend": ("Backend throughput", "bench_backend.py"),
    "bench_scaling": ("simulate under MPI: 1 vs 2 ranks, memory", "bench_scaling.py"),
    "bench_training": ("Emulator training and inference", "bench_training.py"),
    "bench_inversion": ("Inversion", "bench_inversion.py"),
    "bench_coverage": ("Coverage of the posterior intervals", "bench_coverage.py"),
}
#: benchmarks rendered inside another's section (as a ``###`` part): parent -> stem -> (title,
#: script); the command's throughput sits beside the in-process one
PARTS: dict[str, dict[str, tuple[str, str]]] = {
    "bench_backend": {
        "bench_command": ("The simulate command as users type it", "bench_command.py"),
    },
}


def _all_benchmarks() -> dict[str, tuple[str, str]]:
    """Every benchmark, sections and their parts, in page order."""
    out: dict[str, tuple[str, str]] = {}
    for stem, entry in BENCHMARKS.items():
        out[stem] = entry
        out.update(PARTS.get(stem, {}))
    return out


# --------------------------------------------------------------------------------------------
# machine
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def machine_info(now: _dt.datetime | None = None) -> dict[str, Any]:
    """This machine now: CPU model, logical and usable cores, memory (GiB), load average
    (1, 5, 15 min), OS, Python and torch versions, and the date (UTC)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = list(os.getloadavg())
    except OSError:  # pragma: no cover - not available
        load = None
    try:
        import torch

        torch_version = torch.__version__
    except ImportError:  # pragma: no cover - torch is a dependency
        torch_version = None
    now = now or _dt.datetime.now(_dt.timezone.utc)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "memory_gib": _memory_gib(),
        "load_average": load,
        "os": platform.platform(),
        "python": platform.python_version(),
        "torch": torch_version,
        "date": now.strftime("%Y-%m-%d %H:%M UTC"),
    }


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _num(value: float | None, fmt: str = ".3g") -> str:
    """A number for a table cell; an en dash when absent."""
    if value is None:
        return "–"
    return format(value, fmt)


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return out


def load_results(out_dir: Path) -> dict[str, tuple[dict[str, Any], str] | None]:
    """Each benchmark's JSON and its date (its ``date`` field, else the file's modification
    time), or None when the file is absent."""
    found: dict[str, tuple[dict[str, Any], str] | None] = {}
    for stem in _all_benchmarks():
        path = out_dir / f"{stem}.json"
        if not path.is_file():
            found[stem] = None
            continue
        data = json.loads(path.read_text())
        date = data.get("date") if isinstance(data, dict) else None
        if not date:
            mtime = _dt.datetime.fromtimestamp(path.stat().st_mtime, _dt.timezone.utc)
            date = mtime.strftime("%Y-%m-%d %H:%M UTC") + " (file time)"
        found[stem] = (data, str(date))
    return found


# --------------------------------------------------------------------------------------------
# sections
# --------------------------------------------------------------------------------------------


def section_backend(data: dict[str, Any]) -> list[str]:
    ref = data.get("xspec_reference", {})
    xspec_pps = ref.get("points_per_s")
    lines = [
        "One grid point = fakeit through the modified response + two C-stat fits (original "
        "and modified ARF) with their delta-C = 1 intervals + both profile curves; real "
        "Chandra ACIS and XMM EPIC-pn responses, one thread "
        f"(OMP_NUM_THREADS={data.get('threads')}). Points per second per core (CPU time).",
        "",
    ]
    rows = []
    for name, e in data["instruments"].items():
        native, sherpa, scipy_loop = e["native"], e.get("sherpa", {}), e.get("scipy", {})
        rows.append(
            [
                name,
                _num(native["points_per_s"], ".0f"),
                _num(native.get("us_per_point"), ".0f"),
                _num(sherpa.get("points_per_s"), ".1f"),
                _num(scipy_loop.get("points_per_s"), ".2f"),
                _num(xspec_pps, ".0f"),
                _num(e.get("speedup_vs_xspec"), ".0f") + "x",
                (_num(e["speedup_vs_sherpa"], ".0f") + "x") if "speedup_vs_sherpa" in e else "–",
                _num(e.get("speedup_vs_scipy"), ".0f") + "x",
            ]
        )
    lines += _table(
        [
            "response",
            "native pts/s",
            "µs/pt",
            "Sherpa pts/s",
            "scipy loop pts/s",
            "XSPEC pts/s (quoted)",
            "vs XSPEC",
            "vs Sherpa",
            "vs scipy",
        ],
        rows,
    )
    lines.append("")
    notes = []
    if xspec_pps is not None:
        notes.append(
            f"XSPEC: {ref.get('ms_per_fakeit_fit', float('nan')):g} ms per fakeit + fit "
            f"(about {xspec_pps:g} points/s/core), measured on this machine before and "
            "quoted, not re-measured (no HEASoft here)."
        )
    for name, e in data["instruments"].items():
        sherpa = e.get("sherpa", {})
        if "skipped" in sherpa:
            notes.append(f"Sherpa on {name}: skipped ({sherpa['skipped']}).")
        elif "version" in sherpa:
            notes.append(
                f"Sherpa {sherpa['version']} on {name}: its modified-ARF fit recovers T_true "
                f"to a median |relative error| of "
                f"{100 * sherpa['median_abs_rel_error_t_fit_mod']:.2f}% over {sherpa['points']} "
                "points (a check that it fits the same thing; the spread is Poisson noise)."
            )
        native = e["native"]
        if "rss_growth_mb" in native:
            notes.append(
                f"Native on {name}: resident memory {native['rss_mb_after_last_batch']:.0f} MB, "
                f"growth over the batches {native['rss_growth_mb']:+.1f} MB."
            )
    lines += [f"- {n}" for n in notes]
    lines += section_backend_cost_model(data)
    return lines


def section_backend_cost_model(data: dict[str, Any]) -> list[str]:
    """The native backend's cost model (bench_backend.py ``cost_model``, ``cpu_limits``): the
    work per grid point and the time it takes at this CPU's limits, beside the measured time.
    Empty when the JSON has no cost model."""
    limits = data.get("cpu_limits")
    entries = {n: e for n, e in data["instruments"].items() if "cost_model" in e}
    if not limits or not entries:
        return []
    lines = [
        "",
        "**Cost model.** Work per grid point counted by the backend while it ran (the grid "
        "workload: Cartesian mu x sigma x A x T_true in simulate's chunks, fresh backend, best "
        "of the repeats), and the time that work alone takes at this CPU's single-thread "
        f"limits: dgemm {limits['dgemm_macs_per_s'] / 1e9:.1f} G multiply-adds/s (1024^3), "
        "the Poisson sampler (physics.poisson) on the response's own expected counts, fresh "
        "uniforms per spectrum, the modified fit's ln(1 + z) (physics.log1p, one theta's table). "
        "The rest of the measured time is memory traffic, the fit refinement and Python.",
        "",
    ]
    rows = []
    for name, e in entries.items():
        cm, native = e["cost_model"], e["native"]
        parts = cm["multiply_adds_by_part"]
        lim = limits["instruments"].get(name, {})
        rows.append(
            [
                name,
                f"{cm['multiply_adds_per_point'] / 1e3:.0f}k "
                f"({parts['fold_grid'] / 1e3:.0f}k / {parts['fold_true'] / 1e3:.0f}k / "
                f"{parts['profile'] / 1e3:.0f}k)",
                f"{cm['poisson_draws_per_point']:.0f} ({1e9 / lim['poisson_draws_per_s']:.0f} ns)"
                if lim.get("poisson_draws_per_s")
                else _num(cm["poisson_draws_per_point"], ".0f"),
                _num(cm["log1p_per_point"], ".0f"),
                f"{cm['us_model']:.0f} ({cm['us_multiply_adds_at_dgemm_peak']:.0f} / "
                f"{cm['us_poisson_draws']:.0f} / {cm['us_log1p']:.0f})",
                _num(cm["us_measured"], ".0f"),
                _num(cm["points_per_s_limit"], ".0f"),
                _num(native["points_per_s"], ".0f"),
                _num(native.get("points_per_s_random_theta"), ".0f"),
            ]
        )
    lines += _table(
        [
            "response",
            "multiply-adds/pt (fit-grid folds / T_true folds / profiles)",
            "Poisson draws/pt (per draw)",
            "ln(1 + z) values/pt",
            "µs/pt at the limits (MACs / draws / ln(1 + z))",
            "measured µs/pt",
            "limit pts/s",
            "measured pts/s",
            "random-theta pts/s",
        ],
        rows,
    )
    return lines


def section_command(data: dict[str, Any]) -> list[str]:
    st = data.get("settings", {})
    target = data.get("target_ratio", 0.8)
    lines = [
        "`xrmodifier simulate CONFIG` as one process and under `mpiexec -n 2`, with no thread "
        "variables set (each rank sizes its own pools: the `threads:` line it logs is quoted), "
        f"timed whole, beside the same grid's points computed in process on one thread (CPU "
        f"time). {st.get('realisations', 1)} realisation, {st.get('fit_tgrid', 128)} fit "
        f"temperatures, band {st.get('band_kev', [0.5, 7.0])[0]:g}–"
        f"{st.get('band_kev', [0.5, 7.0])[1]:g} keV, {st.get('t_true', 40)} T_true, curves on. "
        "The ratio is the command's points/s per rank over the in-process points/s (target "
        f"≥ {target:g}); the CPU ratio uses the CPU seconds of all the command's processes "
        "instead of the wall time (a shared machine's lost time slices do not lower it; "
        "threads spinning against each other do). In the run: the points/s per rank between "
        "the start of `simulate()` and its summary line (building the backend and writing "
        "grid.h5 included); outside: the fixed seconds around it (interpreter start-up and "
        "imports, reading the config, the off-grid check points), which a longer grid "
        "spreads thinner.",
        "",
    ]
    if all("grid_points_by_ranks" in e for e in data["pairs"].values()):
        lines[0] += (
            " Each rank computes about the same seconds: the two-rank command's grid has "
            "twice the points of the one-rank command's (as a user gives more ranks more "
            "work); the in-process samples are taken from the one-rank grid."
        )
    n_rounds = data.get("rounds", 1)
    if n_rounds > 1:
        lines[0] += (
            f" A virtual machine's speed drifts by 10–20% from minute to minute, so this was "
            f"measured in {n_rounds} rounds, each an in-process sample of the same grid just "
            "before its two commands, each ratio within its round: the in-process rate is "
            "the median of the rounds', each command row the round of the median ratio (every "
            "round's ratio listed below the table)."
        )
        if any("points_per_s_samples" in e["in_process"] for e in data["pairs"].values()):
            lines[0] = lines[0].replace(
                "each an in-process sample of the same grid just before its two commands, "
                "each ratio within its round",
                "each with in-process samples of the same grid (an eighth of its chunks) "
                "before, between and after its two commands, each command's ratio to the mean "
                "of the samples on either side of it",
            )
    if any("points_per_s_two_at_once" in e["in_process"] for e in data["pairs"].values()):
        lines[0] += (
            " The two-rank command is also compared with the in-process sample run twice at "
            "once, one process per core (`in process, 2 at once`): where cores share caches, "
            "memory bandwidth and a power budget a second busy core slows the first, whatever "
            "the command does; that ratio is what the command itself costs."
        )
    rows = []
    threads_lines: list[str] = []
    round_lines: list[str] = []
    for e in data["pairs"].values():
        ip = e["in_process"]
        label = f"{e['reference']} ref, {e['target']} target"
        rows.append(
            [label, "in process, 1 thread", str(ip["points"]), "–", _num(ip["points_per_s"], ".0f")]
            + ["–", "–", "–", "–", "–", "–"]
        )
        if "points_per_s_two_at_once" in ip:
            rows.append(
                [
                    label,
                    "in process, 2 at once",
                    str(ip["points"]),
                    "–",
                    _num(ip["points_per_s_two_at_once"], ".0f"),
                ]
                + ["–", "–", "–", "–", "–", "–"]
            )
        for ranks, run in e["command"].items():
            how = "1 process" if ranks == "1" else f"mpiexec -n {ranks}"
            ratio = run["ratio_to_in_process"]
            mark = "" if ratio >= target else " (below)"
            rows.append(
                [
                    label,
                    how,
                    str(run["points"]),
                    _num(run["wall_s"], ".1f"),
                    _num(run["points_per_s_per_rank"], ".0f"),
                    _num(ratio, ".2f") + mark,
                    _num(run.get("ratio_to_in_process_pair"), ".2f"),
                    _num(run.get("cpu_ratio_to_in_process"), ".2f"),
                    _num(run.get("points_per_s_in_run_per_rank"), ".0f"),
                    _num(run.get("outside_run_s"), ".1f"),
                    _num(run.get("load_average_before"), ".1f"),
                ]
            )
            for line in run.get("threads_log", []):
                threads_lines.append(f"- {label}, {how}: `threads: {line}`")
            if len(run.get("ratios_all_rounds", [])) > 1:
                every = ", ".join(f"{x:.2f}" for x in run["ratios_all_rounds"])
                line = f"- {label}, {how}: ratio in each round {every}"
                rates = [
                    x["command"][ranks].get("points_per_s_per_rank") for x in e.get("rounds", [])
                ]
                if rates and all(r is not None for r in rates):
                    line += f" (points/s per rank {', '.join(f'{r:,.0f}' for r in rates)})"
                round_lines.append(line)
    lines += _table(
        [
            "responses",
            "how",
            "points",
            "wall s",
            "points/s per rank",
            "ratio",
            "ratio to 2 in process at once",
            "CPU ratio",
            "in the run: points/s per rank",
            "outside the run s",
            "load avg before",
        ],
        rows,
    )
    if round_lines:
        lines += ["", "Every round:", "", *round_lines]
    lines += ["", "What each rank chose:", "", *threads_lines]
    return lines


def section_scaling(data: dict[str, Any]) -> list[str]:
    s = data["scaling"]
    lines = [
        f"`xrmodifier simulate` on {s['points']} grid points ({s['realisations']} "
        f"realisations, {s['fit_tgrid']}-point fit grid), whole commands timed, fastest of "
        f"{len(next(iter(s['runs'].values())))} runs"
        + (" (quick mode: a smaller grid)" if data.get("quick") else "")
        + ".",
        "",
    ]
    rows = []
    for ranks, runs in s["runs"].items():
        best = min(runs, key=lambda r: r["wall_s"])
        rows.append(
            [
                ranks,
                _num(best["wall_s"], ".1f"),
                _num(best.get("in_run_s"), ".1f"),
                _num(best.get("cpu_s"), ".1f"),
                _num(s["points_per_s"][ranks], ".0f"),
                " / ".join(f"{p:.0f}" for p in best.get("peak_rss_mb", [])) or "–",
            ]
        )
    lines += _table(
        [
            "ranks",
            "wall s",
            "inside simulate() s",
            "CPU s",
            "points/s",
            "peak RSS per rank (MB)",
        ],
        rows,
    )
    lines.append("")
    lines.append(
        f"Speed-up 1 → 2 ranks: **{s['speedup_wall']:.2f}x** whole command, "
        f"{s['speedup_in_run']:.2f}x inside `simulate()` (target ≥ {s['target_speedup']:g}x). "
        "Load average before the runs: "
        + ", ".join(f"{x:.2f}" for x in s.get("load_average_before_runs", []))
        + "."
    )
    mem = data.get("memory")
    if mem:
        lines += ["", "Peak resident memory per rank against grid size:", ""]
        mrows = [
            [
                label,
                str(m["points"]),
                str(m["ranks"]),
                " / ".join(f"{p:.0f}" for p in m["peak_rss_mb_per_rank"]),
                _num(m.get("grid_h5_mb"), ".1f"),
            ]
            for label, m in mem.items()
        ]
        lines += _table(
            ["grid", "points", "ranks", "peak RSS per rank (MB)", "grid.h5 (MB)"], mrows
        )
        if "memory_growth_mb" in data:
            lines += [
                "",
                f"Growth of the peak from 1e4 to 1e5 points: {data['memory_growth_mb']:+.1f} MB "
                "(chunks stream to disk; nothing grows with the grid).",
            ]
    return lines


def section_training(data: dict[str, Any]) -> list[str]:
    t = data["training"]
    st = t.get("settings", {})
    off = t.get("offgrid_rms_rel_vs_analytic_truth", {})
    lines = [
        f"{t['grid_points']} grid points ({t['n_train']} train / {t['n_val']} validation), "
        f"{data.get('grid', 'grid')}; network {st.get('hidden')} {st.get('activation')}, "
        f"batch {st.get('batch_size')}, one process, {t.get('threads')} torch thread(s)"
        + (" (quick mode)" if data.get("quick") else "")
        + ".",
        "",
    ]
    rows = [
        ["training time (incl. reading the grid)", f"**{t['total_seconds']:.0f} s**"],
        ["target", f"< {t['target_seconds']:.0f} s ({'met' if t['target_met'] else 'NOT met'})"],
        [
            "epochs run (best epoch)",
            f"{t['epochs_run']} ({t['best_epoch']})"
            + (", stopped early" if t.get("stopped_early") else ""),
        ],
        ["seconds per epoch", _num(t.get("seconds_per_epoch"), ".2f")],
        [
            "time for all configured epochs (no early stop)",
            _num(t.get("seconds_for_all_epochs"), ".0f") + " s",
        ],
    ]
    for who in ("emulator", "interpolator"):
        if who in off:
            rows.append(
                [
                    f"off-grid RMS relative error, {who} (T1 / T1')",
                    f"{100 * off[who]['t_fit_orig']:.3f}% / {100 * off[who]['t_fit_mod']:.3f}%",
                ]
            )
    lines += _table(["", "value"], rows)
    inf = data.get("inference")
    if inf:
        lines += ["", "Inference throughput (evaluations per second, CPU):", ""]
        irows = []
        for key, v in inf.items():
            dtype, _, batch = key.partition("_batch")
            irows.append(
                [
                    dtype,
                    batch,
                    _num(v["forward_per_s"], ",.0f"),
                    _num(v["forward_backward_per_s"], ",.0f"),
                ]
            )
        lines += _table(["dtype", "batch", "forward /s", "forward + gradient /s"], irows)
    return lines


def section_inversion(data: dict[str, Any]) -> list[str]:
    best = data["best"]
    first = next(iter(best.values()))
    lines = [
        f"{data['benchmark']}: {first['n_starts']} multi-start L-BFGS optimisations, then "
        f"emcee with {first['walkers']} walkers x {first['steps']} steps; whole "
        "`xrmodifier invert` commands timed (interpreter start-up included).",
        "",
    ]
    rows = []
    for ranks, r in sorted(best.items(), key=lambda kv: int(kv[0])):
        stage = r.get("stage", {})
        rows.append(
            [
                ranks,
                f"**{r['wall_s']:.1f}**",
                _num(stage.get("multistart_s"), ".1f"),
                _num(stage.get("posterior_s"), ".1f"),
                _num(stage.get("total_s"), ".1f"),
                str(r.get("distinct_optima", "–")),
                _num(r.get("max_tau"), ".1f"),
                _num(r.get("load_before"), ".2f"),
            ]
        )
    lines += _table(
        [
            "ranks",
            "wall s",
            "multi-start s",
            "posterior s",
            "stage total s",
            "distinct optima",
            "max autocorr. time",
            "load before",
        ],
        rows,
    )
    lines += [
        "",
        f"Target: under {data['target_s']:.0f} s on 2 cores: "
        f"{'met' if data.get('met') else 'NOT met'}. The multi-start splits over the ranks; "
        "the posterior runs on rank 0.",
    ]
    return lines


def section_coverage(data: dict[str, Any]) -> list[str]:
    st, summ = data["settings"], data["summary"]
    lines = [
        f"{summ['n_injections']} injections ({summ.get('n_failed', 0)} failed), theta_true drawn "
        f"from the flat prior on the grid's bounds; {st['n_sources']} mock sources each, "
        f"telescope-1 counts log-uniform over {st['counts'][0]:g}-{st['counts'][1]:g} "
        f"({st['mocks']} mocks); emcee {st['walkers']} walkers x {st['steps']} steps "
        f"({st['burn']} burn-in). Made by `{data.get('command', 'benchmarks/bench_coverage.py')}` "
        f"in {data['wall_s'] / 60:.0f} min.",
        "",
    ]
    rows = []
    for level in ("68", "95"):
        s = summ[level]
        rows.append(
            [
                f"{level}%",
                *(f"{v:.3f}" for v in s["per_param"].values()),
                f"**{s['pooled']:.3f}**",
                f"{s['target'][0]:.2f}-{s['target'][1]:.2f}",
                "met" if s["met"] else "NOT met",
            ]
        )
    names = list(summ["68"]["per_param"])
    lines += _table(["interval", *names, "pooled", "target", ""], rows)
    lines += [
        "",
        "Rank of the truth among the posterior samples, histogram in 5 bins (calibrated: "
        f"{summ['n_injections'] / 5:.0f} each): "
        + "; ".join(f"{p} {h}" for p, h in summ["rank_histogram"].items())
        + f". Median max autocorrelation time {summ['max_tau_median']:.0f} steps.",
    ]
    return lines


SECTIONS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "bench_backend": section_backend,
    "bench_command": section_command,
    "bench_scaling": section_scaling,
    "bench_training": section_training,
    "bench_inversion": section_inversion,
    "bench_coverage": section_coverage,
}


# --------------------------------------------------------------------------------------------
# page
# --------------------------------------------------------------------------------------------


def render(out_dir: Path, machine: dict[str, Any]) -> str:
    """The Markdown page for the JSON files in ``out_dir`` on ``machine`` (see
    :func:`machine_info`)."""
    found = load_results(out_dir)
    load = machine.get("load_average")
    mem = machine.get("memory_gib")
    lines = [
        "# Benchmarks",
        "",
        f"Rendered {machine['date']} by `benchmarks/results.py` from `benchmarks/out/*.json`; "
        "`make bench` runs every `benchmarks/bench_*.py` and then renders this page. The "
        "machine may be shared with other work: timings are noisy, and the load average is "
        "recorded with them.",
        "",
        "## Machine",
        "",
    ]
    lines += _table(
        ["CPU", "cores (usable)", "memory", "load average 1/5/15 min", "OS", "Python", "torch"],
        [
            [
                str(machine.get("cpu")),
                f"{machine.get('cores')} ({machine.get('cores_usable')})",
                f"{mem:.1f} GiB" if mem is not None else "–",
                " / ".join(f"{x:.2f}" for x in load) if load else "–",
                str(machine.get("os")),
                str(machine.get("python")),
                str(machine.get("torch")),
            ]
        ],
    )
    lines += ["", "Runs:", ""]
    lines += _table(
        ["benchmark", "script", "run at"],
        [
            [title, f"`benchmarks/{script}`", found[stem][1] if found[stem] else "not run"]
            for stem, (title, script) in _all_benchmarks().items()
        ],
    )
    for number, (stem, (title, script)) in enumerate(BENCHMARKS.items(), start=1):
        lines += ["", f"## {number}. {title}", ""]
        entry = found[stem]
        if entry is None:
            lines.append(
                f"Not run: `.venv/bin/python benchmarks/{script}` writes "
                f"`benchmarks/out/{stem}.json`."
            )
        else:
            lines += SECTIONS[stem](entry[0])
        for part, (part_title, part_script) in PARTS.get(stem, {}).items():
            lines += ["", f"### {part_title}", ""]
            if found[part] is None:
                lines.append(
                    f"Not measured yet: `.venv/bin/python benchmarks/{part_script}` writes "
                    f"`benchmarks/out/{part}.json`."
                )
            else:
                lines += SECTIONS[part](found[part][0])
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out-dir", type=Path, default=OUT_DIR, help="the benchmarks' JSON")
    parser.add_argument("--output", type=Path, default=RESULTS, help="the page to write")
    args = parser.parse_args(argv)
    if not any(load_results(args.out_dir).values()):
        print(f"results: no benchmark results in {args.out_dir}: run `make bench`", file=sys.stderr)
        return 2
    write_text(args.output, render(args.out_dir, machine_info()))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
