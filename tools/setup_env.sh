#!/usr/bin/env bash
# Creates .venv with a real MPI (Debian MPICH) and parallel HDF5 (h5py built
# against libhdf5-mpich), a CPU build of torch and this package in editable mode.
# Idempotent: safe to rerun; pip's wheel cache makes reruns fast.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
VENV=${VENV:-.venv}

need_apt=()
command -v mpicc >/dev/null 2>&1 || need_apt+=(mpich)
command -v pkg-config >/dev/null 2>&1 || need_apt+=(pkg-config)
if ! pkg-config --exists hdf5-mpich 2>/dev/null; then need_apt+=(libhdf5-mpich-dev); fi
if [ ${#need_apt[@]} -gt 0 ]; then
    echo "[setup] installing Debian packages: ${need_apt[*]}"
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends mpich libhdf5-mpich-dev pkg-config >/dev/null
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PIP="$VENV/bin/python -m pip --disable-pip-version-check -q"
$PIP install --upgrade pip
$PIP install "setuptools>=77" wheel cython pkgconfig numpy

if ! "$VENV/bin/python" -c "import h5py, mpi4py, sys; sys.exit(0 if h5py.get_config().mpi else 1)" 2>/dev/null; then
    echo "[setup] building mpi4py and h5py against MPICH + parallel HDF5 (several minutes the first time)"
    # mpi4py first: h5py's build imports it (no build isolation, so it must be installed)
    CC=mpicc $PIP install --no-binary=mpi4py --no-build-isolation "mpi4py>=4"
    CC=mpicc HDF5_MPI=ON HDF5_PKGCONFIG_NAME=hdf5-mpich \
        $PIP install --no-binary=h5py --no-build-isolation --force-reinstall --no-deps "h5py>=3.11"
fi

# A CPU build that lies on this machine's disk; a bare `torch` would pull a CUDA build.
"$VENV/bin/python" -c "import torch" 2>/dev/null || $PIP install "torch==2.13.0"

$PIP install -e ".[dev]"

"$VENV/bin/python" - <<'PY'
import h5py, mpi4py, torch
assert h5py.get_config().mpi, "h5py was built without MPI support"
print(f"[setup] ok: h5py {h5py.__version__} (mpi), mpi4py {mpi4py.__version__}, torch {torch.__version__}")
PY
