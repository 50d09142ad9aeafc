"""The Slurm job recipes in jobs/, checked without a cluster.

What runs them for real is tests/slurm (a one-node Slurm on localhost, opt-in with
XRM_SLURM_TESTS=1). Here: the scripts are valid bash and shellcheck-clean, carry no site
settings, refuse bad usage with exit 2, and pipeline.sh chains its jobs with afterok
dependencies in the right order (seen through a stand-in ``sbatch`` on PATH that records its
arguments and answers like ``sbatch --parsable``).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

JOBS = Path(__file__).resolve().parents[1] / "jobs"
SCRIPTS = sorted([*JOBS.glob("*.sbatch"), *JOBS.glob("*.sh")])


def test_recipes_exist():
    names = {p.name for p in SCRIPTS}
    assert {
        "simulate.sbatch",
        "simulate_array.sbatch",
        "merge.sbatch",
        "train.sbatch",
        "invert.sbatch",
        "pipeline.sh",
    } <= names


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_is_strict_valid_bash(script):
    text = script.read_text()
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "set -euo pipefail" in text
    assert os.stat(script).st_mode & stat.S_IXUSR
    proc = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None,
    reason="shellcheck not installed (apt-get install shellcheck)",
)
def test_scripts_are_shellcheck_clean():
    proc = subprocess.run(["shellcheck", "-x", *map(str, SCRIPTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_no_site_specific_settings_baked_in(script):
    directives = re.findall(r"^#SBATCH\s+(\S+)", script.read_text(), re.M)
    for d in directives:
        assert not re.match(
            r"(-p|-A|-q|--partition|--account|--qos|--reservation|--gres"
            r"|--constraint|-C|--clusters|-M)\b",
            d,
        ), (script.name, d)


def _stand_in_sbatch(tmp_path: Path) -> tuple[dict[str, str], Path]:
    """A PATH with an ``sbatch`` that logs its argv (one line per call, NUL-separated
    arguments) and prints increasing job ids like ``sbatch --parsable`` (``id;cluster``)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    record = tmp_path / "sbatch.log"
    fake = bin_dir / "sbatch"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        "set -euo pipefail\n"
        f'log="{record}"\n'
        'n=$(( $(wc -l < "$log" 2>/dev/null || echo 0) + 101 ))\n'
        'printf "%s\\0" "$@" >> "$log"; echo >> "$log"\n'
        'echo "$n;testcluster"\n'
    )
    fake.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}, record


def _calls(record: Path) -> list[list[str]]:
    return [line.split("\0")[:-1] for line in record.read_text().splitlines()]


def test_pipeline_chains_simulate_train_invert(tmp_path, demo_config):
    env, record = _stand_in_sbatch(tmp_path)
    obs = tmp_path / "obs.csv"
    obs.write_text("name,t0,t0_err,t1,t1_err\n")
    env.update(
        XRM_SBATCH_ARGS="--account=abc --partition=cpu",
        XRM_SIMULATE_SBATCH_ARGS="--nodes=2 --ntasks-per-node=4",
        XRM_TRAIN_SBATCH_ARGS="--time=02:00:00",
    )
    proc = subprocess.run(
        [str(JOBS / "pipeline.sh"), str(demo_config), str(obs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["simulate", "101", "train", "102", "invert", "103"]
    sim, train, inv = _calls(record)
    for call in (sim, train, inv):
        assert call[0] == "--parsable" and call[1:3] == ["--account=abc", "--partition=cpu"]
    assert sim[-2:] == [str(JOBS / "simulate.sbatch"), str(demo_config.resolve())]
    assert "--nodes=2" in sim and "--ntasks-per-node=4" in sim
    assert not any(a.startswith("--dependency") for a in sim)
    assert "--dependency=afterok:101" in train and "--kill-on-invalid-dep=yes" in train
    assert "--time=02:00:00" in train
    assert train[-2:] == [str(JOBS / "train.sbatch"), str(demo_config.resolve())]
    assert "--dependency=afterok:102" in inv
    assert inv[-3:] == [str(JOBS / "invert.sbatch"), str(demo_config.resolve()), str(obs.resolve())]
    # options come before the script (sbatch reads everything after it as script arguments)
    for call in (sim, train, inv):
        script_at = next(i for i, a in enumerate(call) if a.endswith(".sbatch"))
        assert all(a.startswith("--") for a in call[:script_at])


def test_pipeline_array_mode_adds_merge(tmp_path, demo_config):
    env, record = _stand_in_sbatch(tmp_path)
    obs = tmp_path / "obs.csv"
    obs.write_text("x\n")
    env.update(XRM_SIMULATE="array", XRM_ARRAY_TASKS="3")
    proc = subprocess.run(
        [str(JOBS / "pipeline.sh"), str(demo_config), str(obs)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [
        "simulate_array",
        "101",
        "merge",
        "102",
        "train",
        "103",
        "invert",
        "104",
    ]
    array, merge, train, _ = _calls(record)
    assert "--array=0-2" in array and array[-2].endswith("simulate_array.sbatch")
    assert "--dependency=afterok:101" in merge and merge[-2].endswith("merge.sbatch")
    assert "--dependency=afterok:102" in train


def test_pipeline_usage_errors(tmp_path, demo_config):
    env, record = _stand_in_sbatch(tmp_path)
    pipeline = str(JOBS / "pipeline.sh")
    for args in ([], [str(demo_config)], [str(demo_config), str(tmp_path / "missing.csv")]):
        proc = subprocess.run([pipeline, *args], env=env, capture_output=True, text=True)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr.strip()
    proc = subprocess.run(
        [pipeline, str(demo_config), str(demo_config)],
        env={**env, "XRM_SIMULATE": "bogus"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "mpi or array" in proc.stderr
    assert not record.exists()  # nothing was submitted


def test_pipeline_stops_when_sbatch_fails(tmp_path, demo_config):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text("#!/usr/bin/env bash\necho 'sbatch: error: no' >&2\nexit 1\n")
    (bin_dir / "sbatch").chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [str(JOBS / "pipeline.sh"), str(demo_config), str(demo_config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0
    assert "train" not in proc.stdout and "sbatch: error" in proc.stderr


@pytest.mark.parametrize(
    "script",
    ["simulate.sbatch", "merge.sbatch", "train.sbatch", "invert.sbatch", "simulate_array.sbatch"],
)
def test_job_scripts_refuse_missing_arguments(script, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("XRM_", "SLURM_"))}
    proc = subprocess.run(
        ["bash", str(JOBS / script)], env=env, capture_output=True, text=True, cwd=tmp_path
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith("usage:")


def test_container_command_line_is_built_from_environment(tmp_path, demo_config):
    """merge.sbatch outside Slurm, with XRM_IMAGE set and a stand-in ``apptainer`` on PATH:
    the commands it runs are ``apptainer exec ARGS IMAGE xrmodifier merge CONFIG``, then the
    same with ``simulate CONFIG`` (which only adds the off-grid check points)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "apptainer").write_text('#!/usr/bin/env bash\nprintf "%s\\n" "$@"\n')
    (bin_dir / "apptainer").chmod(0o755)
    env = {
        **os.environ,
        "PATH": f"{bin_dir}:{os.environ['PATH']}",
        "XRM_IMAGE": "/img/x.sif",
        "XRM_APPTAINER_ARGS": "--bind /data --nv",
    }
    proc = subprocess.run(
        ["bash", str(JOBS / "merge.sbatch"), str(demo_config)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    prefix = ["exec", "--bind", "/data", "--nv", "/img/x.sif", "xrmodifier"]
    assert proc.stdout.split("\n")[:-1] == [
        *prefix,
        "merge",
        str(demo_config),
        *prefix,
        "simulate",
        str(demo_config),
    ]
