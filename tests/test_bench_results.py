"""benchmarks/results.py renders RESULTS.md from the benchmarks' JSON (no benchmark is run)."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest
from conftest import REPO

MACHINE = {
    "cpu": "Test CPU 9000",
    "cores": 2,
    "cores_usable": 2,
    "memory_gib": 23.5,
    "load_average": [0.5, 1.25, 2.0],
    "os": "Linux-test",
    "python": "3.11.7",
    "torch": "2.13.0+cpu",
    "date": "2026-11-24 09:00 UTC",
}

BACKEND = {
    "machine": "x86_64",
    "threads": "1",
    "xspec_reference": {"ms_per_fakeit_fit": 75.0, "points_per_s": 7.0},
    "instruments": {
        "acis": {
            "native": {
                "points_per_s": 7978.6,
                "us_per_point": 125.3,
                "rss_mb_after_last_batch": 126.3,
                "rss_growth_mb": 1.57,
            },
            "sherpa": {
                "points_per_s": 21.77,
                "points": 20,
                "median_abs_rel_error_t_fit_mod": 0.0169,
                "version": "4.19.0",
            },
            "scipy": {"points_per_s": 5.212},
            "speedup_vs_xspec": 1139.8,
            "speedup_vs_scipy": 1530.7,
            "speedup_vs_sherpa": 366.54,
        },
        "epn": {
            "native": {"points_per_s": 3194.4, "us_per_point": 313.0},
            "sherpa": {"skipped": "sherpa not importable (No module named 'sherpa')"},
            "scipy": {"points_per_s": 5.05},
            "speedup_vs_xspec": 456.3,
            "speedup_vs_scipy": 632.9,
        },
    },
}

SCALING = {
    "quick": False,
    "scaling": {
        "points": 100000,
        "realisations": 2,
        "fit_tgrid": 96,
        "runs": {
            "1": [{"wall_s": 19.27, "in_run_s": 19.0, "cpu_s": 19.25, "peak_rss_mb": [145.4]}],
            "2": [
                {"wall_s": 10.26, "in_run_s": 10.0, "cpu_s": 20.05, "peak_rss_mb": [158.2, 157.4]}
            ],
        },
        "load_average_before_runs": [0.71, 0.79],
        "points_per_s": {"1": 5189.4, "2": 9746.6},
        "speedup_wall": 1.878,
        "speedup_in_run": 1.9,
        "target_speedup": 1.8,
    },
    "memory": {
        "1e4": {
            "points": 10000,
            "ranks": 2,
            "peak_rss_mb_per_rank": [157.9, 156.3],
            "grid_h5_mb": 15.6,
        },
        "1e5": {
            "points": 100000,
            "ranks": 2,
            "peak_rss_mb_per_rank": [158.2, 157.4],
            "grid_h5_mb": 156.1,
        },
    },
    "memory_growth_mb": 0.3,
}

TRAINING = {
    "date": "2026-11-24 08:25:05",
    "quick": False,
    "grid": "synthetic analytic map",
    "training": {
        "grid_points": 100000,
        "n_train": 90000,
        "n_val": 10000,
        "settings": {"hidden": [128, 128, 128], "activation": "gelu", "batch_size": 512},
        "threads": 1,
        "train_seconds": 33.3,
        "total_seconds": 33.35,
        "epochs_run": 66,
        "stopped_early": True,
        "best_epoch": 26,
        "seconds_per_epoch": 0.5046,
        "seconds_for_all_epochs": 151.4,
        "target_seconds": 300.0,
        "target_met": True,
        "offgrid_rms_rel_vs_analytic_truth": {
            "emulator": {"t_fit_orig": 0.000437, "t_fit_mod": 0.000371},
            "interpolator": {"t_fit_orig": 0.00946, "t_fit_mod": 0.00945},
        },
    },
    "inference": {
        "float64_batch1": {"forward_per_s": 10269.2, "forward_backward_per_s": 3827.9},
        "float32_batch10000": {"forward_per_s": 1047871.0, "forward_backward_per_s": 452939.3},
    },
}


def _inversion_run(ranks: int, wall: float) -> dict:
    return {
        "ranks": ranks,
        "wall_s": wall,
        "load_before": 1.57,
        "stage": {"multistart_s": 6.52, "posterior_s": 13.13, "total_s": 20.53},
        "n_starts": 64,
        "distinct_optima": 3,
        "walkers": 32,
        "steps": 3000,
        "max_tau": 22.38,
    }


INVERSION = {
    "benchmark": "inversion: 64 starts + posterior on 50 sources",
    "target_s": 60.0,
    "date": "2026-11-24 08:29:09",
    "best": {"1": _inversion_run(1, 22.44), "2": _inversion_run(2, 21.36)},
    "met": True,
}

COVERAGE = {
    "benchmark": "coverage of the posterior's 68% and 95% intervals",
    "command": "benchmarks/bench_coverage.py",
    "date": "2026-11-24 08:40:00",
    "settings": {
        "injections": 100,
        "n_sources": 30,
        "counts": [8000.0, 30000.0],
        "mocks": "forward",
        "walkers": 16,
        "steps": 1500,
        "burn": 500,
    },
    "summary": {
        "n_injections": 100,
        "n_failed": 0,
        "68": {
            "per_param": {"mu": 0.7, "sigma": 0.66, "A": 0.69},
            "pooled": 0.6833,
            "target": [0.61, 0.75],
            "met": True,
        },
        "95": {
            "per_param": {"mu": 0.95, "sigma": 0.92, "A": 0.93},
            "pooled": 0.9333,
            "target": [0.91, 0.99],
            "met": True,
        },
        "rank_histogram": {"mu": [20, 20, 20, 20, 20]},
        "max_tau_median": 21.0,
    },
    "wall_s": 1800.0,
}


@pytest.fixture(scope="module")
def results():
    """benchmarks/results.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(
        "bench_results", REPO / "benchmarks" / "results.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(folder: Path, **files: dict) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stem, data in files.items():
        (folder / f"{stem}.json").write_text(json.dumps(data))
    return folder


def test_renders_every_section_from_the_json(results, tmp_path: Path) -> None:
    out = _write(
        tmp_path / "out",
        bench_backend=BACKEND,
        bench_scaling=SCALING,
        bench_training=TRAINING,
        bench_inversion=INVERSION,
        bench_coverage=COVERAGE,
    )
    page = results.render(out, MACHINE)
    # machine details and the date
    assert "| Test CPU 9000 | 2 (2) | 23.5 GiB | 0.50 / 1.25 / 2.00 |" in page
    assert "Rendered 2026-11-24 09:00 UTC" in page
    # the benchmarks' own dates: their field, else the file's time
    assert (
        "| Emulator training and inference | `benchmarks/bench_training.py` | "
        "2026-11-24 08:25:05 |" in page
    )
    assert "(file time)" in page
    # backend: native vs Sherpa, scipy and XSPEC's quoted 75 ms
    assert "| acis | 7979 | 125 | 21.8 | 5.21 | 7 | 1140x | 367x | 1531x |" in page
    assert "| epn | 3194 | 313 | – | 5.05 | 7 | 456x | – | 633x |" in page
    assert "75 ms per fakeit + fit" in page
    assert "Sherpa on epn: skipped (sherpa not importable" in page
    # MPI scaling and memory
    assert "| 1 | 19.3 | 19.0 | 19.2 | 5189 | 145 |" in page
    assert "| 2 | 10.3 | 10.0 | 20.1 | 9747 | 158 / 157 |" in page
    assert "**1.88x** whole command" in page
    assert "| 1e5 | 100000 | 2 | 158 / 157 | 156.1 |" in page
    assert "+0.3 MB" in page
    # training time and inference throughput
    assert "| training time (incl. reading the grid) | **33 s** |" in page
    assert "| target | < 300 s (met) |" in page
    assert "0.044% / 0.037%" in page
    assert "| float32 | 10000 | 1,047,871 | 452,939 |" in page
    # inversion
    assert "| 2 | **21.4** | 6.5 | 13.1 | 20.5 | 3 | 22.4 | 1.57 |" in page
    assert "Target: under 60 s on 2 cores: met" in page
    # coverage
    assert "| 68% | 0.700 | 0.660 | 0.690 | **0.683** | 0.61-0.75 | met |" in page
    assert "Made by `benchmarks/bench_coverage.py` in 30 min" in page
    # the sections come in order, numbered
    heads = [line for line in page.splitlines() if line.startswith("## ")]
    assert heads == [
        "## Machine",
        "## 1. Backend throughput",
        "## 2. simulate under MPI: 1 vs 2 ranks, memory",
        "## 3. Emulator training and inference",
        "## 4. Inversion",
        "## 5. Coverage of the posterior intervals",
    ]


def test_a_missing_benchmark_says_how_to_run_it(results, tmp_path: Path) -> None:
    out = _write(tmp_path / "out", bench_training=TRAINING)
    page = results.render(out, MACHINE)
    assert "Not run: `.venv/bin/python benchmarks/bench_inversion.py` writes" in page
    assert page.count("Not run:") == 4
    assert "**33 s**" in page


def test_main_writes_the_page_atomically(results, tmp_path: Path) -> None:
    out = _write(tmp_path / "out", bench_inversion=INVERSION, bench_scaling=SCALING)
    target = tmp_path / "RESULTS.md"
    assert results.main(["--out-dir", str(out), "--output", str(target)]) == 0
    text = target.read_text()
    assert text.startswith("# Benchmarks\n") and "## 4. Inversion" in text
    assert sorted(os.listdir(tmp_path)) == ["RESULTS.md", "out"]
    # real machine details were filled in
    assert "## Machine" in text and "GiB" in text
    # nothing to render: exit 2, nothing written
    empty = tmp_path / "empty"
    empty.mkdir()
    other = tmp_path / "other.md"
    assert results.main(["--out-dir", str(empty), "--output", str(other)]) == 2
    assert not other.exists()


def test_machine_info_describes_this_machine(results) -> None:
    info = results.machine_info()
    assert info["cores"] >= 1 and 1 <= info["cores_usable"] <= info["cores"]
    assert info["memory_gib"] is None or info["memory_gib"] > 0.1
    assert len(info["load_average"]) == 3
    assert info["cpu"]
    assert info["date"].endswith("UTC")


def _command_run(ranks: int, wall: float, ratio: float) -> dict:
    return {
        "ranks": ranks,
        "points": 20480,
        "wall_s": wall,
        "in_run_s": wall - 1.5,
        "outside_run_s": 1.5,
        "points_per_s_in_run_per_rank": 20480 / (wall - 1.5) / ranks,
        "cpu_s": 2 * wall,
        "points_per_s": 20480 / wall,
        "points_per_s_per_rank": 20480 / wall / ranks,
        "load_average_before": 0.42,
        "threads_log": [
            f"{3 - ranks} per {'rank' if ranks > 1 else 'process'} (2 cores granted by "
            f"affinity, {ranks} {'ranks' if ranks > 1 else 'process'} on this node); "
            f"BLAS openblas {3 - ranks}"
        ],
        "ratio_to_in_process": ratio,
        "cpu_ratio_to_in_process": ratio * 0.9,
    }


COMMAND = {
    "date": "2026-11-30 04:00 UTC",
    "settings": {"realisations": 1, "fit_tgrid": 128, "band_kev": [0.5, 7.0], "t_true": 40},
    "target_ratio": 0.8,
    "pairs": {
        "acis_ref_epn_target": {
            "reference": "acis",
            "target": "epn",
            "grid_points": 20480,
            "in_process": {"points_per_s": 2600.0, "points": 3840},
            "command": {"1": _command_run(1, 9.1, 0.866), "2": _command_run(2, 5.6, 0.703)},
        }
    },
}
COMMAND_ROUNDS = json.loads(json.dumps(COMMAND))
COMMAND_ROUNDS["rounds"] = 3
COMMAND_ROUNDS["pairs"]["acis_ref_epn_target"]["command"]["2"]["ratios_all_rounds"] = [
    0.703,
    0.81,
    0.69,
]
COMMAND_ROUNDS["pairs"]["acis_ref_epn_target"]["command"]["2"]["ratio_to_in_process_pair"] = 0.91
COMMAND_ROUNDS["pairs"]["acis_ref_epn_target"]["in_process"]["points_per_s_two_at_once"] = 2010.0


def test_the_command_benchmark_sits_beside_the_in_process_one(results, tmp_path: Path) -> None:
    out = _write(tmp_path / "out", bench_backend=BACKEND, bench_command=COMMAND)
    page = results.render(out, MACHINE)
    part = page.split("### The simulate command as users type it")[1].split("## 2.")[0]
    assert page.index("## 1. Backend throughput") < page.index("### The simulate command")
    assert "| acis ref, epn target | in process, 1 thread | 3840 | – | 2600 |" in part
    # the in-run rate and the fixed seconds outside the run beside the whole command's
    assert (
        "| acis ref, epn target | 1 process | 20480 | 9.1 | 2251 | 0.87 | – | 0.78 | 2695 | 1.5 "
        "| 0.4 |" in part
    )
    assert "| mpiexec -n 2 | 20480 | 5.6 | 1829 | 0.70 (below) | – | 0.63 | 2498 | 1.5 |" in part
    assert (
        "- acis ref, epn target, mpiexec -n 2: `threads: 1 per rank (2 cores granted by "
        "affinity, 2 ranks on this node); BLAS openblas 1`" in part
    )
    assert "target ≥ 0.8" in part
    assert "| The simulate command as users type it | `benchmarks/bench_command.py` |" in page
    # absent: the part says how to produce it, the sections keep their numbers
    alone = results.render(_write(tmp_path / "alone", bench_backend=BACKEND), MACHINE)
    assert "Not measured yet: `.venv/bin/python benchmarks/bench_command.py`" in alone
    assert "Every round:" not in page
    # in rounds: said so, every round's ratio listed
    rounds = results.render(_write(tmp_path / "rounds", bench_command=COMMAND_ROUNDS), MACHINE)
    assert "measured in 3 rounds" in rounds
    assert "- acis ref, epn target, mpiexec -n 2: ratio in each round 0.70, 0.81, 0.69" in rounds
    # beside two in-process samples at once: what a second busy core leaves
    assert "| acis ref, epn target | in process, 2 at once | 3840 | – | 2010 |" in rounds
    assert "| 5.6 | 1829 | 0.70 (below) | 0.91 | 0.63 |" in rounds
    assert "twice the points" not in rounds
    # each rank the same seconds: said so where the JSON records the grids by rank count
    weak = json.loads(json.dumps(COMMAND_ROUNDS))
    weak["pairs"]["acis_ref_epn_target"]["grid_points_by_ranks"] = {"1": 20480, "2": 40960}
    weak_page = results.render(_write(tmp_path / "weak", bench_command=weak), MACHINE)
    assert "the two-rank command's grid has twice the points" in weak_page
    # samples on either side of each command: said so
    assert "before, between and after" not in weak_page
    weak["pairs"]["acis_ref_epn_target"]["in_process"]["points_per_s_samples"] = [1.0, 2.0, 3.0]
    weak["pairs"]["acis_ref_epn_target"]["rounds"] = [
        {"command": {"1": {"points_per_s_per_rank": 2000.0}, "2": {"points_per_s_per_rank": v}}}
        for v in (1829.0, 2105.5, 1790.0)
    ]
    bracketed = results.render(_write(tmp_path / "bracketed", bench_command=weak), MACHINE)
    assert (
        "mpiexec -n 2: ratio in each round 0.70, 0.81, 0.69 (points/s per rank 1,829, 2,106, 1,790)"
        in bracketed
    )
    assert "samples of the same grid (an eighth of its chunks) before, between and after" in (
        bracketed
    )


def test_backend_cost_model_is_rendered_when_present(results, tmp_path: Path) -> None:
    backend = json.loads(json.dumps(BACKEND))
    backend["cpu_limits"] = {
        "dgemm_macs_per_s": 2.08e10,
        "instruments": {"epn": {"poisson_draws_per_s": 1.73e7}},
    }
    backend["instruments"]["epn"]["native"]["points_per_s_random_theta"] = 2493.2
    backend["instruments"]["epn"]["cost_model"] = {
        "multiply_adds_per_point": 582795.3,
        "multiply_adds_by_part": {"fold_grid": 146813.6, "fold_true": 96406.3, "profile": 339575.5},
        "poisson_draws_per_point": 1305.0,
        "log1p_per_point": 3568.7,
        "us_multiply_adds_at_dgemm_peak": 27.97,
        "us_poisson_draws": 75.41,
        "us_log1p": 6.29,
        "us_model": 109.67,
        "us_measured": 269.86,
        "points_per_s_limit": 9118.2,
    }
    page = results.render(_write(tmp_path / "out", bench_backend=backend), MACHINE)
    assert "dgemm 20.8 G multiply-adds/s" in page
    assert (
        "| epn | 583k (147k / 96k / 340k) | 1305 (58 ns) | 3569 | 110 (28 / 75 / 6) | 270 | "
        "9118 | 3194 | 2493 |" in page
    )
    # without a cost model (older JSON) the section is as before
    old = results.render(_write(tmp_path / "old", bench_backend=BACKEND), MACHINE)
    assert "Cost model" not in old
