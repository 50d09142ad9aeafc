#!/usr/bin/env bash
# The whole pipeline on the embedded default (`make demo` runs it on demo/):
#
#   xrmodifier init DIR                       config.toml + a synthetic instrument pair
#   [mpiexec -n 2] xrmodifier simulate CONFIG the (theta, T_true) grid -> DIR/run/grid.h5
#   xrmodifier train CONFIG                   the emulator -> DIR/run/emulator.pt
#   xrmodifier mock CONFIG -o OBS             40 sources seen by both telescopes, theta_true
#                                             from the config's [mock] section
#   [mpiexec -n 2] xrmodifier invert CONFIG OBS   theta posterior, corrected ARF, result.json
#   xrmodifier report CONFIG                  figures + summary table -> DIR/run/figures
#
# Usage: tools/demo.sh [DIR]   (DIR defaults to demo; relative to the current folder)
#
# Rerunning: an existing DIR/config.toml is reused as it is (so it may be edited first), the
# grid is resumed by simulate (nothing to do when it is complete), and training, the mock,
# the inversion and the report are redone from it. `rm -rf DIR` starts from scratch.
# Each stage's output goes to DIR/logs/STAGE.log; a failing stage prints the end of its log.
#
# Environment: DEMO_RANKS (MPI ranks for simulate and invert; default 2 when mpiexec and
# mpi4py work and there are 2 cores, else 1), XRMODIFIER (the command; default the repo's
# .venv/bin/xrmodifier).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DIR="${1:-demo}"
XRM="${XRMODIFIER:-$REPO/.venv/bin/xrmodifier}"
PY="$(dirname "$XRM")/python"
CONFIG="$DIR/config.toml"
WORKDIR="$DIR/run"
OBS="$WORKDIR/observations.csv"
LOGS="$DIR/logs"
# no thread variables set here: every stage sizes its own thread pools from the cores it was
# granted (runtime/threads.py), as it does for users

if [ ! -x "$XRM" ]; then
    echo "[demo] $XRM not found: run \`make setup\` first (or set XRMODIFIER)" >&2
    exit 2
fi

if [ -z "${DEMO_RANKS:-}" ]; then
    DEMO_RANKS=1
    # nproc honours OMP_NUM_THREADS: ask for the usable cores without it
    cores="$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc 2>/dev/null || echo 1)"
    if [ "$cores" -ge 2 ] && command -v mpiexec >/dev/null 2>&1 \
        && "$PY" -c "import mpi4py.MPI" >/dev/null 2>&1; then
        DEMO_RANKS=2
    fi
fi
launch=()
if [ "$DEMO_RANKS" -gt 1 ]; then
    launch=(mpiexec -n "$DEMO_RANKS")
fi

mkdir -p "$DIR" "$LOGS"
t_start=$(date +%s.%N)
timings=()

# run_stage NAME COMMAND...: run it with its output in LOGS/NAME.log, one line on the terminal
run_stage() {
    local name="$1"
    shift
    local log="$LOGS/$name.log"
    # show the command as a user would type it (xrmodifier from the activated venv)
    local shown="${*/#$XRM/xrmodifier}"
    printf '[demo] %-9s %s\n' "$name" "$shown"
    local t0 t1
    t0=$(date +%s.%N)
    if ! "$@" >"$log" 2>&1; then
        echo "[demo] $name failed; the end of $log:" >&2
        tail -n 25 "$log" >&2
        exit 1
    fi
    t1=$(date +%s.%N)
    timings+=("$(awk -v n="$name" -v a="$t0" -v b="$t1" 'BEGIN { printf "%-9s %6.1f s", n, b - a }')")
}

if [ -f "$CONFIG" ]; then
    echo "[demo] reusing $CONFIG (rm -rf $DIR to start from scratch)"
else
    run_stage init "$XRM" init "$DIR"
fi
run_stage simulate "${launch[@]}" "$XRM" simulate "$CONFIG"
run_stage train "$XRM" train "$CONFIG"
run_stage mock "$XRM" mock "$CONFIG" -o "$OBS"
run_stage invert "${launch[@]}" "$XRM" invert "$CONFIG" "$OBS"
run_stage report "$XRM" report "$CONFIG"
t_end=$(date +%s.%N)

echo
echo "[demo] wall time per stage ($DEMO_RANKS MPI rank(s) for simulate and invert):"
for line in "${timings[@]}"; do echo "  $line"; done
awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "  %-9s %6.1f s\n", "total", b - a }'
echo
# the report's summary: theta_true vs recovered, seed loss, emulator accuracy, figures
cat "$WORKDIR/figures/summary.txt"
