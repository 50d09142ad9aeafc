"""benchmarks/device_check.sh: refuses clearly without a GPU; its CPU half runs anywhere."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import REPO

SCRIPT = REPO / "benchmarks" / "device_check.sh"


def _run(*args: str, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    env = {**os.environ, "XRM_PYTHON": sys.executable, "TMPDIR": str(tmp_path)}
    env.pop("OUT", None)
    return subprocess.run(
        ["bash", str(SCRIPT), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
    )


def test_without_a_gpu_it_stops_with_one_line(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    proc = _run(str(tmp_path / "out"), tmp_path=tmp_path, timeout=120)
    assert proc.returncode == 3
    err = proc.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("device_check: error: torch sees no CUDA device")
    assert "--cpu-only" in err[0]
    assert not (tmp_path / "out" / "device_check.json").exists()


@pytest.mark.slow
def test_cpu_half_runs_and_writes_its_json(tmp_path: Path) -> None:
    out = tmp_path / "check.json"
    proc = _run("--cpu-only", str(out), tmp_path=tmp_path, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(out.read_text())
    assert report["cpu_only"] and report["passed"] == {"simulate": True, "train": True}
    sim = report["simulate"]
    assert sim["points"] == 108 and sim["status_agreement"] == 1.0
    assert set(sim["seconds"]) == {"simulate_cpu", "simulate_numpy"}
    assert all(v < 1e-6 for v in sim["max_rel_diff"].values())
    assert report["train"]["cpu"]["device"] == "cpu" and report["train"]["cpu"]["epochs_run"] > 0
    # the work folder is removed afterwards
    assert not list(tmp_path.glob("xrm-device-check.*"))
