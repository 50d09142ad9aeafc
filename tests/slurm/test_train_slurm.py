"""``xrmodifier train CONFIG --executor slurm`` trains through submitit's SlurmExecutor on the
real local Slurm: the job is submitted with sbatch, runs, and emulator.pt appears."""

from __future__ import annotations

import re

from conftest import run_cli

from .conftest import job_env, require_stages


def test_train_executor_slurm(slurm_cluster, mpi_simulation):
    require_stages("train")
    config, _ = mpi_simulation
    logs = config.parent / "slurm_logs"
    before = {p.name for p in logs.iterdir()} if logs.is_dir() else set()
    proc = run_cli(
        "train",
        str(config),
        "--executor",
        "slurm",
        env={**job_env(), "SLURM_CONF": str(slurm_cluster.conf)},
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (config.parent / "run_mpi" / "emulator.pt").is_file()
    found = re.search(r"slurm job (\d+) submitted", proc.stderr)
    assert found, proc.stderr
    job = found.group(1)
    new = sorted(p.name for p in logs.iterdir() if p.name.isdigit() and p.name not in before)
    assert new == [job], (new, proc.stderr)
    info = slurm_cluster.run("scontrol", "show", "job", "-o", job).stdout
    assert re.search(r"\bJobName=xrmodifier-train\b", info), info
    # the result can arrive while Slurm still completes the job
    assert slurm_cluster.wait([job], timeout=60)[job] == ["COMPLETED"], info
    # submitit's own files: the pickled job, its log, its result
    files = {p.name for p in (logs / job).iterdir()}
    assert f"{job}_0_log.out" in files and f"{job}_0_result.pkl" in files, files
