"""Emulator training time for a 1e5-point grid on the CPU, and inference throughput.

The grid is SYNTHETIC: a 100,000-point ``grid.h5`` (25 mu x 10 sigma x 16 A x 25 T_true, two
realisations) written through ``store`` in the real layout, whose temperatures come from a
smooth analytic stand-in for the simulation map plus Poisson-like noise of the size the native
backend gives at 20,000 counts (about 1.2% at 1 keV growing to 5% at 10 keV, shared by T1 and
T1' as in real fits). Simulating 1e5 real points would time the backend, not the training.

Training uses the default ``[emulator]`` settings (3 x 128 GELU, 300 epochs, batch 512,
early stopping, weight average, scatter network) in one process with the default one torch
thread (the second core stays free; see ``emulator.set_threads``); the time includes reading
the grid. Inference: ``emulator.load`` of the trained
model, evaluations per second for batches of 1 and 10,000 points, forward only and forward
plus gradient with respect to theta (what the inversion needs), float64 and float32.

Writes benchmarks/out/bench_training.json and prints a table. The machine is shared with
other work: timings are noisy.

    .venv/bin/python benchmarks/bench_training.py [--quick]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from xrmodifier_hpc import emulator
from xrmodifier_hpc.backends.base import STATUS_UNUSABLE
from xrmodifier_hpc.config import EmulatorConfig
from xrmodifier_hpc.config.grid import Grid, offgrid_design
from xrmodifier_hpc.io.store import ResultShape, ResultWriter, create_grid_file, load_grid

HERE = Path(__file__).resolve().parent
OUT = HERE / "out" / "bench_training.json"
TARGET_SECONDS = 300.0


def analytic_map(theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
    """[log(T1/T_true), log(T1'/T_true)]: a Gaussian ARF bump at mu biases T1 most where the
    spectrum's curvature sits near mu; T1' stays at T_true up to a small fit bias."""
    mu, sigma, a = theta.T
    lt = np.log(t_true)
    bump = np.exp(-((lt - np.log(2.5 * mu)) ** 2) / (2 * (0.6 + sigma) ** 2))
    y1 = 0.8 * a * bump - 0.03 * a * lt + 0.05 * a * sigma * np.tanh(lt - 1.0)
    return np.stack([y1, 0.002 * np.sin(lt)], axis=-1)


def synthesise_grid(path: Path, quick: bool, seed: int = 5) -> Grid:
    shape = (10, 5, 8, 12) if quick else (25, 10, 16, 25)
    grid = Grid(
        ("mu", "sigma", "A"),
        ("keV", "keV", ""),
        (
            np.linspace(0.8, 3.0, shape[0]),
            np.geomspace(0.15, 0.8, shape[1]),
            np.linspace(-0.3, 0.3, shape[2]),
        ),
        np.geomspace(1.0, 12.0, shape[3]),
    )
    n_real = 2
    meta = {
        "n_points": grid.n_points,
        "realisations": n_real,
        "mode": "poisson",
        "backend": "synthetic (benchmarks/bench_training.py)",
    }
    create_grid_file(
        path, grid, np.geomspace(0.3, 40.0, 16), ResultShape(n_real, None), meta, "gaussian", {}
    )
    theta, t_true = grid.all_points()
    y = analytic_map(theta, t_true)
    rng = np.random.default_rng(seed)
    sd = 0.012 * t_true**0.6
    shared = sd[:, None] * rng.standard_normal((grid.n_points, n_real))
    own = 0.1 * sd[:, None] * rng.standard_normal((grid.n_points, n_real))
    t_mod = t_true[:, None] * np.exp(y[:, None, 1] + shared)
    t_orig = t_true[:, None] * np.exp(y[:, None, 0] + shared + own)
    err = np.stack([sd, sd], -1)[:, None, :] * t_mod[..., None]
    arrays = {
        "t_fit_orig": t_orig,
        "t_fit_mod": t_mod,
        "err_orig": err,
        "err_mod": err,
        "status": np.zeros((grid.n_points, n_real, 2), np.uint8),
        "norm": np.full(grid.n_points, 1e-2),
        "counts": np.full((grid.n_points, n_real), 2e4),
    }
    with ResultWriter(path) as writer:
        writer.write(np.arange(grid.n_points), arrays)
    return grid


def bench_training(grid_path: Path, workdir: Path, quick: bool) -> tuple[dict, Path]:
    t0 = time.perf_counter()
    data = emulator.TrainingData.from_grid(
        load_grid(grid_path, curves=False), unusable=STATUS_UNUSABLE
    )
    t_read = time.perf_counter() - t0
    ecfg = EmulatorConfig(epochs=30 if quick else EmulatorConfig.epochs)
    threads = emulator.set_threads(ecfg)
    trainer = emulator.Trainer(data, ecfg, workdir / "checkpoint.pt", "bench", torch.device("cpu"))
    t1 = time.perf_counter()
    outcome = trainer.run()
    t_train = time.perf_counter() - t1
    model = trainer.model.cpu()
    theta, t_true = offgrid_design(data.bounds, data.log_axes, 2000, seed=3)
    truth = t_true[:, None] * np.exp(analytic_map(theta, t_true))
    emu = dataclasses.asdict(emulator.rms_rel(emulator.predict(model, theta, t_true), truth))
    interp = dataclasses.asdict(
        emulator.rms_rel(emulator.GridInterpolator(data)(theta, t_true), truth)
    )
    path = emulator.save(model, workdir / "emulator.pt")
    per_epoch = t_train / max(1, outcome.epochs_run - 0)
    result = {
        "grid_points": int(data.n_grid_points),
        "n_train": int(trainer.train_idx.size),
        "n_val": int(trainer.val_idx.size),
        "settings": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(ecfg).items()
        },
        "threads": threads,
        "read_seconds": t_read,
        "train_seconds": t_train,
        "total_seconds": t_read + t_train,
        "epochs_run": outcome.epochs_run,
        "stopped_early": outcome.stopped_early,
        "best_epoch": outcome.best_epoch,
        "seconds_per_epoch": per_epoch,
        "seconds_for_all_epochs": t_read + per_epoch * ecfg.epochs,
        "target_seconds": TARGET_SECONDS,
        "target_met": bool(t_read + t_train < TARGET_SECONDS),
        "offgrid_rms_rel_vs_analytic_truth": {"emulator": emu, "interpolator": interp},
    }
    return result, path


def _rate(fn, n_points: int, min_seconds: float) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_seconds:
            return reps * n_points / elapsed


def bench_inference(path: Path, quick: bool) -> dict:
    out: dict = {}
    min_s = 0.5 if quick else 2.0
    for dtype in (torch.float64, torch.float32):
        model = emulator.load(path, dtype=dtype)
        lo, hi = model.bounds[:, 0], model.bounds[:, 1]
        rng = np.random.default_rng(0)
        name = str(dtype).replace("torch.", "")
        for batch in (1, 10_000):
            x = lo + rng.random((batch, lo.size)) * (hi - lo)
            theta = torch.as_tensor(x[:, :-1], dtype=dtype)
            t_true = torch.as_tensor(x[:, -1], dtype=dtype)

            def forward(model=model, theta=theta, t_true=t_true):
                with torch.no_grad():
                    model(theta, t_true)

            def with_grad(model=model, theta=theta, t_true=t_true):
                th = theta.clone().requires_grad_(True)
                model(th, t_true)[:, 0].sum().backward()

            out[f"{name}_batch{batch}"] = {
                "forward_per_s": _rate(forward, batch, min_s),
                "forward_backward_per_s": _rate(with_grad, batch, min_s),
            }
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a 6000-point grid, 30 epochs")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S", stream=sys.stderr
    )
    with tempfile.TemporaryDirectory(prefix="xrm-bench-train-") as tmp:
        work = Path(tmp)
        grid_path = work / "grid.h5"
        t0 = time.perf_counter()
        synthesise_grid(grid_path, args.quick)
        synth = time.perf_counter() - t0
        training, model_path = bench_training(grid_path, work, args.quick)
        inference = bench_inference(model_path, args.quick)
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "torch": torch.__version__,
            "note": "shared machine: timings are noisy",
        },
        "quick": args.quick,
        "grid": "synthetic analytic map + noise in the grid.h5 layout (see module docstring)",
        "synthesise_seconds": synth,
        "training": training,
        "inference": inference,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(report, indent=2) + "\n")

    tr = training
    print(
        f"\nemulator training, {tr['grid_points']:,} grid points (synthetic), "
        f"{tr['threads']} CPU thread(s), torch {torch.__version__}"
    )
    print(
        f"  epochs run           {tr['epochs_run']} of {tr['settings']['epochs']}"
        f"{' (early stop)' if tr['stopped_early'] else ''}, best {tr['best_epoch']}"
    )
    print(
        f"  read grid + train    {tr['total_seconds']:8.1f} s   "
        f"(target < {TARGET_SECONDS:.0f} s: {'met' if tr['target_met'] else 'NOT met'})"
    )
    print(
        f"  per epoch            {tr['seconds_per_epoch']:8.2f} s   "
        f"(all {tr['settings']['epochs']} epochs: {tr['seconds_for_all_epochs']:.0f} s)"
    )
    acc = tr["offgrid_rms_rel_vs_analytic_truth"]
    print(
        f"  off-grid RMS rel     emulator T1 {100 * acc['emulator']['t_fit_orig']:.3f}% "
        f"T1' {100 * acc['emulator']['t_fit_mod']:.3f}% | interpolator T1 "
        f"{100 * acc['interpolator']['t_fit_orig']:.3f}% "
        f"T1' {100 * acc['interpolator']['t_fit_mod']:.3f}%"
    )
    print("\ninference (evaluations per second)")
    print(f"  {'':20s}{'forward':>14s}{'fwd + d/dtheta':>16s}")
    for key, v in inference.items():
        print(f"  {key:20s}{v['forward_per_s']:14,.0f}{v['forward_backward_per_s']:16,.0f}")
    print(f"\nwrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
