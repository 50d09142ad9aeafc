"""The local cluster itself: jobs run, MPI ranks start under srun, daemons are ours."""

from __future__ import annotations

import sys
from pathlib import Path

VENV_BIN = str(Path(sys.executable).parent)


def test_batch_job_runs_xrmodifier(slurm_cluster, demo_config, tmp_path):
    env = {"PATH": f"{VENV_BIN}:{slurm_cluster.env['PATH']}"}
    job = slurm_cluster.sbatch(
        "--output=check-%j.out", "--wrap", f"xrmodifier check {demo_config}", cwd=tmp_path, env=env
    )
    states = slurm_cluster.wait([job], timeout=120)
    out = (tmp_path / f"check-{job}.out").read_text()
    assert states[job] == ["COMPLETED"], out
    assert '"grid_points"' in out


def test_srun_starts_mpi_ranks_with_pmi2(slurm_cluster, tmp_path):
    env = {"PATH": f"{VENV_BIN}:{slurm_cluster.env['PATH']}"}
    code = "from mpi4py import MPI; c = MPI.COMM_WORLD; print(c.rank, c.size)"
    script = tmp_path / "mpi.sh"
    script.write_text(f"#!/bin/bash\nsrun --mpi=pmi2 {sys.executable} -c '{code}'\n")
    job = slurm_cluster.sbatch(
        "--ntasks=2", "--output=mpi-%j.out", str(script), cwd=tmp_path, env=env
    )
    states = slurm_cluster.wait([job], timeout=120)
    out = (tmp_path / f"mpi-{job}.out").read_text()
    assert states[job] == ["COMPLETED"], out
    assert sorted(out.split("\n")[:2]) == ["0 2", "1 2"], out


def test_stop_ends_every_daemon_and_job(slurm_cluster, tmp_path):
    """A second throw-away cluster with a running job: stop() leaves no daemon, no
    slurmstepd and no job process behind (slurmstepd detaches from slurmd by design)."""
    import os
    import time

    from .conftest import SlurmCluster

    other = SlurmCluster(
        root=tmp_path / "c2",
        node=slurm_cluster.node,
        partition="p2",
        cpus=slurm_cluster.cpus,
        memory_mb=slurm_cluster.memory_mb,
        env={k: v for k, v in os.environ.items() if k != "SLURM_CONF"},
    )
    try:
        other.start()
        job = other.sbatch("--wrap", "sleep 300", cwd=tmp_path)
        deadline = time.monotonic() + 30
        while other.states(job) != ["RUNNING"] and time.monotonic() < deadline:
            time.sleep(0.2)
        assert other.states(job) == ["RUNNING"]
    finally:
        other.stop()
    for proc in other.procs.values():
        assert proc.poll() is not None
    marker = f"SLURM_CONF={other.conf}".encode()
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            state = (pid_dir / "stat").read_text().rsplit(")", 1)[1].split()[0]
            environ = (pid_dir / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        assert state == "Z" or marker not in environ, f"process {pid_dir.name} survived"
