"""jobs/simulate.sbatch (one MPI job) and jobs/simulate_array.sbatch + jobs/merge.sbatch (a
job array and a dependent merge) on the real local Slurm give bitwise the same grid.h5."""

from __future__ import annotations

import h5py
import numpy as np

from .conftest import JOBS, config_copy, job_env, job_output, require_stages


def _datasets(path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        f.visititems(
            lambda name, obj: (
                out.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return out


def test_array_and_merge_match_the_mpi_job_bitwise(slurm_cluster, tiny_project, mpi_simulation):
    require_stages("simulate", "merge")
    mpi_config, _ = mpi_simulation
    config = config_copy(tiny_project, "array")
    cwd, env = config.parent, job_env()
    array = slurm_cluster.sbatch(
        "--array=0-2", str(JOBS / "simulate_array.sbatch"), str(config), cwd=cwd, env=env
    )
    merge = slurm_cluster.sbatch(
        f"--dependency=afterok:{array}",
        "--kill-on-invalid-dep=yes",
        str(JOBS / "merge.sbatch"),
        str(config),
        cwd=cwd,
        env=env,
    )
    states = slurm_cluster.wait([array, merge], timeout=180)
    logs = job_output(cwd, f"xrm-simulate-{array}_*.out") + job_output(
        cwd, f"xrm-merge-{merge}.out"
    )
    assert states[array] == ["COMPLETED"] * 3, logs
    assert states[merge] == ["COMPLETED"], logs
    for shard in range(3):
        assert f"shard {shard}/3" in logs

    mpi = _datasets(mpi_config.parent / "run_mpi" / "grid.h5")
    arr = _datasets(config.parent / "run_array" / "grid.h5")
    assert set(mpi) == set(arr)
    assert {
        "grid/theta",
        "grid/t_true",
        "results/t_fit_orig",
        "results/t_fit_mod",
        "results/done",
    } <= set(mpi)
    assert mpi["results/done"].all() and mpi["results/done"].size == 72
    for name in sorted(mpi):
        a, b = mpi[name], arr[name]
        assert a.dtype == b.dtype and a.shape == b.shape, name
        assert a.tobytes() == b.tobytes(), f"{name} differs between the MPI and array runs"
