"""jobs/pipeline.sh on the real local Slurm: simulate (MPI job) -> train (driver job that
submits the DDP job with submitit and waits for it) -> invert (MPI job), chained with
``sbatch --parsable`` and ``--dependency=afterok``, all the way to result.json."""

from __future__ import annotations

import json
import re

from conftest import run_cli

from .conftest import JOBS, config_copy, job_env, job_output, require_stages


def test_pipeline_runs_to_completion(slurm_cluster, tiny_project):
    require_stages("simulate", "train", "mock", "invert")
    config = config_copy(tiny_project, "pipeline")
    cwd = config.parent
    observations = cwd / "observations_pipeline.csv"
    proc = run_cli("mock", str(config), "-o", str(observations), timeout=300)
    assert proc.returncode == 0, proc.stderr
    env = job_env(
        XRM_SIMULATE_SBATCH_ARGS="--ntasks=2",
        XRM_TRAIN_SBATCH_ARGS="--time=30",
        XRM_INVERT_SBATCH_ARGS="--ntasks=2",
    )
    proc = slurm_cluster.run(
        str(JOBS / "pipeline.sh"), str(config), str(observations), cwd=cwd, env=env
    )
    stages = dict(line.split() for line in proc.stdout.strip().splitlines())
    assert list(stages) == ["simulate", "train", "invert"], proc.stdout
    # the later jobs wait on the earlier ones
    for stage, after in (("train", "simulate"), ("invert", "train")):
        info = slurm_cluster.run("scontrol", "show", "job", "-o", stages[stage]).stdout
        assert f"afterok:{stages[after]}" in info, info

    states = slurm_cluster.wait(stages.values(), timeout=300)
    logs = (
        job_output(cwd, f"xrm-simulate-{stages['simulate']}.out")
        + job_output(cwd, f"xrm-train-{stages['train']}.out")
        + job_output(cwd, f"xrm-invert-{stages['invert']}.out")
    )
    assert all(s == ["COMPLETED"] for s in states.values()), (states, logs)

    # the training itself ran as its own Slurm job, submitted by submitit from the driver
    driver = job_output(cwd, f"xrm-train-{stages['train']}.out")
    found = re.search(r"slurm job (\d+) submitted", driver)
    assert found, driver
    assert slurm_cluster.wait([found.group(1)], timeout=60)[found.group(1)] == ["COMPLETED"]

    workdir = cwd / "run_pipeline"
    for artefact in ("grid.h5", "emulator.pt", "result.json"):
        assert (workdir / artefact).is_file(), (artefact, logs)
    result = json.loads((workdir / "result.json").read_text())
    assert result["ranks"] == 2, logs  # invert ran as two MPI ranks under srun
    assert set(result["theta_best"]) == set(result["param_names"]) == {"mu", "sigma", "A"}
