"""Training launched through submitit: DDP over local processes, preemption and requeue, the
Slurm submission script, the debug executor and the ``train`` command's options.

The local jobs are real: ``LocalExecutor`` starts two processes that form a gloo group from
submitit's ``TorchDistributedEnvironment``, exactly the path a Slurm job takes.
"""

from __future__ import annotations

import json
import os
import pickle
import signal
import stat
import sys
import time
from pathlib import Path
from unittest import mock

import psutil
import pytest
from conftest import copy_project, edit_config, run_cli

from xrmodifier_hpc.cli import main
from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.artefacts import Workdir
from xrmodifier_hpc.runtime import launch
from xrmodifier_hpc.runtime.environment import torch_distributed
from xrmodifier_hpc.stages import train as train_stage

#: longer than the fixture's default so that a preemption lands mid-training
LAUNCH_EPOCHS = "120"


def _launch_project(base: Path, dest: Path) -> Path:
    config = copy_project(base, dest)
    text = edit_config(config.read_text(), "emulator", "epochs", LAUNCH_EPOCHS)
    text = edit_config(text, "emulator", "offgrid_points", "0")
    text = edit_config(text, "slurm", "max_requeues", "5")
    config.write_text(text)
    return config


@pytest.fixture(scope="module")
def ddp_reference(emulator_grid_project, tmp_path_factory):
    """One uninterrupted 2-process DDP training through LocalExecutor, and one in-process."""
    base = tmp_path_factory.mktemp("ddp")
    ddp_cfg = load_config(_launch_project(emulator_grid_project, base / "ddp"))
    single_cfg = load_config(_launch_project(emulator_grid_project, base / "single"))
    outcome = train_stage.train(ddp_cfg, executor="local", tasks=2, follow=None)
    single = train_stage.train(single_cfg).primary
    return ddp_cfg, outcome, single


def test_ddp_over_two_local_processes(ddp_reference):
    cfg, outcome, single = ddp_reference
    assert outcome.executor == "local" and outcome.job_id
    r0, r1 = outcome.results
    assert (r0["rank"], r1["rank"]) == (0, 1)
    assert r0["world_size"] == r1["world_size"] == 2
    assert r0["completed"] and r1["completed"]
    # gradients are all-reduced: both ranks hold the very same weights
    assert r0["weights_digest"] == r1["weights_digest"]
    assert r0["last_loss"] < 0.5 * r0["first_loss"]
    # only rank 0 measures and writes
    assert r0["emulator_path"] and r1["emulator_path"] is None
    metrics = json.loads(Path(r0["metrics_path"]).read_text())
    assert metrics["training"]["world_size"] == 2
    # same global batches as one process: the validation error is close to single-process
    assert single["world_size"] == 1 and single["completed"]
    assert r0["best_val_loss"] == pytest.approx(single["best_val_loss"], rel=0.25)
    ddp_ho = metrics["heldout"]["emulator"]
    single_ho = single["metrics"]["heldout"]["emulator"]
    for key in ("t_fit_orig", "t_fit_mod"):
        assert ddp_ho[key] == pytest.approx(single_ho[key], rel=0.25)
    log_text = Path(outcome.log_folder, f"{outcome.job_id}_0_log.err").read_text()
    assert "2 task(s)" in log_text and "backend gloo" in log_text
    assert "epoch 1/" in log_text and "ETA" in log_text


def _task_pids(controller_pid: int) -> list[int]:
    try:
        return [p.pid for p in psutil.Process(controller_pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_preempted_ddp_job_requeues_and_ends_with_the_same_weights(
    ddp_reference, emulator_grid_project, tmp_path
):
    """SIGUSR2 (what Slurm sends before preemption or the time limit) reaches both tasks
    mid-training: submitit calls the job's ``checkpoint`` on rank 0, which saves the last
    completed epoch; the job is requeued, resumes there and ends bitwise where the
    uninterrupted DDP run ended."""
    _, ref, _ = ddp_reference
    config = _launch_project(emulator_grid_project, tmp_path / "p")
    # no periodic checkpoint: whatever the job resumes from was written on the signal
    config.write_text(edit_config(config.read_text(), "emulator", "checkpoint_every", "1000"))
    cfg = load_config(config)
    job = train_stage.submit(cfg, "local", tasks=2)
    log_path = Path(job.paths.stderr)
    deadline = time.monotonic() + 240
    while not (log_path.exists() and "epoch 6/" in log_path.read_text()):
        assert time.monotonic() < deadline and not job.done(), "training never got going"
        time.sleep(0.05)
    assert not Workdir(cfg.workdir).emulator_checkpoint.exists()
    pids = _task_pids(int(job.job_id))
    assert len(pids) == 2, pids
    for pid in pids:
        os.kill(pid, signal.SIGUSR2)
    results = sorted(launch.wait_for(job, follow=None), key=lambda r: r["rank"])
    log_text = log_path.read_text()
    assert "Calling checkpoint method" in log_text and "Requeued job" in log_text
    assert "resuming from" in log_text
    resumed_at = int(log_text.split("resuming from", 1)[1].split("at epoch", 1)[1].split()[0])
    assert 6 <= resumed_at < int(LAUNCH_EPOCHS)
    assert [r["rank"] for r in results] == [0, 1] and all(r["completed"] for r in results)
    assert results[0]["weights_digest"] == results[1]["weights_digest"]
    assert results[0]["weights_digest"] == ref.results[0]["weights_digest"]  # bitwise


def test_debug_executor_through_the_command(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    done = run_cli("train", str(config), "--executor", "debug")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "off-grid (asimov)" in done.stdout and "interpolator" in done.stdout
    assert f"emulator: {config.parent / 'run' / 'emulator.pt'}" in done.stdout
    assert (config.parent / "run" / "emulator_metrics.json").is_file()
    assert "epoch 40/40" in done.stderr


def _echo_job(value: int, register_saver=None) -> dict:
    """A module-level job target (submitit pickles it by reference)."""
    register_saver(lambda: True)
    return {"value": value, "rank": 0}


def test_launch_runs_the_callable_it_is_given(demo_config):
    """runtime.launch knows nothing of training: it runs any module-level callable."""
    cfg = load_config(demo_config)
    job_fn = launch.DistributedJob(_echo_job, 7, name="echo")
    again = pickle.loads(pickle.dumps(job_fn))
    assert again.target is _echo_job and again.args == (7,)
    with mock.patch.dict(os.environ):  # the job exports its rendezvous variables
        job = launch.submit(cfg, "debug", _echo_job, 42, name="echo")
        assert launch.wait_for(job, follow=None) == [{"value": 42, "rank": 0}]
    assert job_fn.checkpoint().function is job_fn  # requeued as the same call


def _fake_slurm(bin_dir: Path, record: Path) -> dict[str, str]:
    """``sbatch`` that records the script it was given; ``srun`` that exists."""
    bin_dir.mkdir()
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f'#!/bin/bash\ncp "${{@: -1}}" {record}\necho "Submitted batch job 4242"\n')
    srun = bin_dir / "srun"
    srun.write_text("#!/bin/bash\nexit 1\n")
    for f in (sbatch, srun):
        f.chmod(f.stat().st_mode | stat.S_IEXEC)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_slurm_submission_script_follows_the_config(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    text = config.read_text()
    for key, value in (
        ("partition", '"gpu"'),
        ("account", '"astro42"'),
        ("qos", '"normal"'),
        ("nodes", "2"),
        ("gpus_per_node", "4"),
        ("cpus_per_task", "6"),
        ("mem_gb", "48.0"),
        ("time_minutes", "90"),
        ("setup", '["module load cuda/12.4", "export NCCL_DEBUG=WARN"]'),
        ("container", '"/images/xrmodifier.sif"'),
        ("additional", '{ constraint = "a100" }'),
    ):
        text = edit_config(text, "slurm", key, value)
    config.write_text(text)
    record = tmp_path / "submitted.sh"
    env = _fake_slurm(tmp_path / "bin", record)
    done = run_cli("train", str(config), "--executor", "slurm", "--no-wait", env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "submitted slurm job 4242" in done.stdout
    script = record.read_text()
    for line in (
        "#SBATCH --partition=gpu",
        "#SBATCH --account=astro42",
        "#SBATCH --qos=normal",
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=4",
        "#SBATCH --gpus-per-node=4",
        "#SBATCH --cpus-per-task=6",
        "#SBATCH --mem=48GB",
        "#SBATCH --time=90",
        "#SBATCH --signal=USR2@120",
        "#SBATCH --constraint=a100",
        "module load cuda/12.4",
        "export NCCL_DEBUG=WARN",
    ):
        assert line in script.splitlines(), (line, script)
    command = next(ln for ln in script.splitlines() if ln.startswith("srun"))
    assert "apptainer exec --nv" in command and "/images/xrmodifier.sif python3" in command
    assert f"--bind {config.parent}" in command
    assert "-m submitit.core._submit" in command


def test_slurm_without_slurm_is_a_clean_error(emulator_grid_project, tmp_path):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    env = {"PATH": str(Path(sys.executable).parent)}  # no srun on it
    done = run_cli("train", str(config), "--executor", "slurm", env=env)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "srun" in done.stderr and "--executor local" in done.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["--tasks", "2"], "--tasks applies to --executor local"),
        (["--executor", "local", "--tasks", "0"], "--tasks must be at least 1"),
        (["--epochs-this-run", "0"], "--epochs-this-run must be at least 1"),
    ],
)
def test_bad_train_options(emulator_grid_project, tmp_path, capsys, args, message):
    config = copy_project(emulator_grid_project, tmp_path / "p")
    assert main(["train", str(config), *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_bad_grid_is_reported_before_submitting(demo_config):
    cfg = load_config(demo_config)
    with pytest.raises(UserError, match="xrmodifier simulate"):
        train_stage.train(cfg, executor="local", tasks=2)
    assert not cfg.slurm.logs.exists()  # nothing was submitted


def test_torch_distributed_environment_detection(monkeypatch):
    for name in (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "LOCAL_WORLD_SIZE",
        "MASTER_ADDR",
        "MASTER_PORT",
    ):
        monkeypatch.delenv(name, raising=False)
    assert torch_distributed() is None
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("MASTER_ADDR", "node17")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    env = torch_distributed()
    assert (env.rank, env.world_size, env.local_rank, env.local_world_size) == (3, 8, 1, 2)
    assert (env.master_addr, env.master_port) == ("node17", 29500)
