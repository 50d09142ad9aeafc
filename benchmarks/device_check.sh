#!/usr/bin/env bash
# Device check for a GPU machine: the torch engine's `simulate` on CUDA and a one-GPU DDP
# training (NCCL) with `xrmodifier train --executor local --tasks 1`, each compared with the
# same run on the CPU; writes a JSON of timings and agreements.
#
#   benchmarks/device_check.sh [--cpu-only] [--keep] [OUT]
#
# OUT: a folder (device_check.json is written into it) or a path ending in .json; default
# $OUT when set (the device tool's output folder), else benchmarks/out.
#
# What runs, on a small project from `xrmodifier init` (3 mu x 2 sigma x 3 A x 6 T_true = 108
# points, 2 realisations, 48 fit temperatures; 40 training epochs):
#   1. simulate with [simulation] engine = "torch", device = "cpu"   (the CPU reference)
#   2. simulate with engine = "torch", device = "cuda"
#      -> T1 and T1' agree to 1e-6 (relative) wherever both fits converged, status bits agree
#         (the Poisson draws are the same numpy streams; only the profile products and the
#         refinement run on the device)
#   3. train with [emulator] device = "cpu", then device = "cuda", both through
#      `--executor local --tasks 1` (submitit's local executor: the DDP code path)
#      -> both complete, finite validation loss, held-out RMS errors of T1/T1' within a factor
#         of 3 of each other (training on different devices is not bitwise the same)
#   4. an NCCL all-reduce on the GPU (one rank; one GPU cannot host two NCCL ranks)
# With --cpu-only (any machine) the CUDA runs are skipped and the numpy engine stands in as
# the second run of the simulate comparison, so the comparison itself is exercised.
#
# Without a CUDA device that torch can see (and without --cpu-only) it stops at once with
# exit code 3 and a one-line message. Exit code 1: a comparison failed (the JSON says which).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/.." && pwd)
cpu_only=0
keep=0
dest=""
for arg in "$@"; do
    case "$arg" in
        --cpu-only) cpu_only=1 ;;
        --keep) keep=1 ;;
        -h|--help) sed -n '2,30p' "$0"; exit 0 ;;
        -*) echo "device_check: unknown option $arg (use --cpu-only, --keep, OUT)" >&2; exit 2 ;;
        *) dest="$arg" ;;
    esac
done
dest=${dest:-${OUT:-$here/out}}
case "$dest" in
    *.json) json_path="$dest" ;;
    *) json_path="$dest/device_check.json" ;;
esac
mkdir -p "$(dirname "$json_path")"

if [[ -n "${XRM_PYTHON:-}" ]]; then
    py="$XRM_PYTHON"
elif [[ -x "$repo/.venv/bin/python" ]]; then
    py="$repo/.venv/bin/python"
else
    py=python3
fi
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
# one process per device: no thread pool spreading over the other runs' cores
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

xrm() { "$py" -c 'import sys; from xrmodifier_hpc.cli import main; sys.exit(main(sys.argv[1:]))' "$@"; }

# ---- 0. what torch sees --------------------------------------------------------------------
probe=$("$py" - <<'EOF'
import json
import torch
info = {"torch": torch.__version__, "cuda_build": torch.version.cuda,
        "cuda_available": bool(torch.cuda.is_available()), "device_count": 0}
if info["cuda_available"]:
    info["device_count"] = torch.cuda.device_count()
    info["device_name"] = torch.cuda.get_device_name(0)
    info["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if torch.distributed.is_nccl_available() else None
print(json.dumps(info))
EOF
)
has_cuda=$("$py" -c 'import json,sys; print(int(json.loads(sys.argv[1])["cuda_available"]))' "$probe")
if [[ "$cpu_only" == 0 && "$has_cuda" != 1 ]]; then
    echo "device_check: error: torch sees no CUDA device here ($probe); run on a GPU machine, or with --cpu-only for the CPU half" >&2
    exit 3
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/xrm-device-check.XXXXXX")
if [[ "$keep" == 0 ]]; then trap 'rm -rf "$work"' EXIT; else echo "device_check: work folder $work"; fi
log="$work/logs"
mkdir -p "$log"

# ---- 1. a small project, one config per run ------------------------------------------------
xrm init "$work/project" > "$log/init.txt"
"$py" - "$work/project/config.toml" <<'EOF'
import sys
from pathlib import Path
from xrmodifier_hpc.config import set_key

base = Path(sys.argv[1])
text = base.read_text()
for section, key, value in (
    ("modifier.grid", "mu", "{ linspace = [1.0, 2.5, 3] }"),
    ("modifier.grid", "sigma", "{ values = [0.2, 0.5] }"),
    ("modifier.grid", "A", "{ linspace = [-0.2, 0.2, 3] }"),
    ("temperatures", "t_true", "{ logspace = [1.5, 8.0, 6] }"),
    ("simulation", "realisations", "2"),
    ("simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }"),
    ("simulation", "chunk_size", "36"),
    ("emulator", "epochs", "40"),
    ("emulator", "patience", "40"),
    ("emulator", "batch_size", "64"),
    ("emulator", "offgrid_points", "40"),
):
    text = set_key(text, section, key, value)
runs = {
    "cpu": ("torch", "cpu", "cpu"),
    "cuda": ("torch", "cuda", "cuda"),
    "numpy": ("numpy", "cpu", "cpu"),
}
for name, (engine, device, emu_device) in runs.items():
    t = set_key(text, "simulation", "engine", f'"{engine}"')
    t = set_key(t, "simulation", "device", f'"{device}"')
    t = set_key(t, "emulator", "device", f'"{emu_device}"')
    t = set_key(t, "paths", "workdir", f'"run_{name}"')
    (base.parent / f"{name}.toml").write_text(t)
EOF
cfg="$work/project"

timed() {  # timed NAME CMD...: runs CMD, logs to $log/NAME.txt, appends NAME seconds to times
    local name=$1; shift
    local t0 t1 seconds
    t0=$(date +%s%N)
    if ! "$@" > "$log/$name.txt" 2>&1; then
        echo "device_check: $name failed; its output:" >&2
        tail -n 30 "$log/$name.txt" >&2
        exit 1
    fi
    t1=$(date +%s%N)
    seconds=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
    echo "$name $seconds" >> "$work/times"
    echo "device_check: $name $seconds s"
}
: > "$work/times"

# ---- 2. simulate ---------------------------------------------------------------------------
timed simulate_cpu xrm simulate "$cfg/cpu.toml"
if [[ "$cpu_only" == 1 ]]; then
    timed simulate_numpy xrm simulate "$cfg/numpy.toml"
else
    timed simulate_cuda xrm simulate "$cfg/cuda.toml"
fi

# ---- 3. training through the DDP code path -------------------------------------------------
timed train_cpu xrm train "$cfg/cpu.toml" --executor local --tasks 1
if [[ "$cpu_only" == 0 ]]; then
    timed train_cuda xrm train "$cfg/cuda.toml" --executor local --tasks 1
    # ---- 4. NCCL itself ----------------------------------------------------------------------
    timed nccl "$py" - <<'EOF'
import socket
import torch
import torch.distributed as dist

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
dist.init_process_group("nccl", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
x = torch.arange(4.0, device="cuda")
dist.all_reduce(x)
torch.cuda.synchronize()
assert torch.equal(x.cpu(), torch.arange(4.0)), x
dist.destroy_process_group()
print("nccl all_reduce ok")
EOF
fi

# ---- 5. compare and write the JSON ---------------------------------------------------------
"$py" - "$cfg" "$work/times" "$json_path" "$probe" "$cpu_only" <<'EOF'
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from xrmodifier_hpc.io.store import load_grid

project, times_file, out, probe, cpu_only = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5] == "1"
times = {}
for line in Path(times_file).read_text().split("\n"):
    if line.strip():
        name, sec = line.split()
        times[name] = float(sec)
ref_name, other_name = ("cpu", "numpy") if cpu_only else ("cpu", "cuda")
a = load_grid(project / f"run_{ref_name}" / "grid.h5")
b = load_grid(project / f"run_{other_name}" / "grid.h5")
both = (a.status == 0) & (b.status == 0)
diffs = {}
for name in ("t_fit_orig", "t_fit_mod"):
    col = 0 if name == "t_fit_orig" else 1
    ok = both[..., col]
    x, y = getattr(a, name)[ok], getattr(b, name)[ok]
    diffs[name] = float(np.max(np.abs(x / y - 1))) if x.size else None
status_agree = float(np.mean(a.status == b.status))
simulate = {
    "points": int(a.t_true.size),
    "realisations": int(a.t_fit_orig.shape[1]),
    "compared": f"engine torch on cpu vs {'engine numpy on cpu' if cpu_only else 'engine torch on cuda'}",
    "seconds": {k: v for k, v in times.items() if k.startswith("simulate")},
    "max_rel_diff": diffs,
    "status_agreement": status_agree,
    "usable_fraction": float(both.mean()),
}
ok_sim = all(v is not None and v < 1e-6 for v in diffs.values()) and status_agree > 0.99

def metrics(run):
    m = json.loads((project / f"run_{run}" / "emulator_metrics.json").read_text())
    return {
        "heldout_rms_rel": m["heldout"]["emulator"],
        "offgrid_rms_rel": m["offgrid"]["emulator"],
        "best_val_loss": m["training"]["best_val_loss"],
        "epochs_run": m["training"]["epochs_run"],
        "train_seconds": m["training"]["train_seconds"],
        "device": m["training"]["device"],
        "world_size": m["training"]["world_size"],
    }

train = {"cpu": metrics("cpu"), "seconds": {k: v for k, v in times.items() if k.startswith("train")}}
ok_train = np.isfinite(train["cpu"]["best_val_loss"])
if not cpu_only:
    train["cuda"] = metrics("cuda")
    ok_train &= np.isfinite(train["cuda"]["best_val_loss"]) and train["cuda"]["device"].startswith("cuda")
    ratios = {}
    for key in ("t_fit_orig", "t_fit_mod"):
        c, g = train["cpu"]["heldout_rms_rel"][key], train["cuda"]["heldout_rms_rel"][key]
        ratios[key] = None if not (c and g) else g / c
    train["heldout_rms_ratio_cuda_over_cpu"] = ratios
    ok_train &= all(r is not None and 1 / 3 < r < 3 for r in ratios.values())
report = {
    "date": time.strftime("%Y-%m-%d %H:%M:%S"),
    "host": platform.node(),
    "cpu_only": cpu_only,
    "torch": json.loads(probe),
    "simulate": simulate,
    "train": train,
    "nccl_seconds": times.get("nccl"),
    "passed": {"simulate": bool(ok_sim), "train": bool(ok_train)},
}
Path(out).write_text(json.dumps(report, indent=2) + "\n")
print(json.dumps(report["passed"]), "->", out)
sys.exit(0 if ok_sim and ok_train else 1)
EOF
