"""GPU training in the image: a CUDA torch by default (CPU as a build argument), the self-test's
GPU check, and jobs/train.sbatch's direct mode (one NCCL rank per GPU task), run here with
stand-ins for ``srun``/``scontrol`` and for ``xrmodifier`` itself."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from test_container import DEF_FILE, parse_def, render

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO / "jobs" / "train.sbatch"


def _arguments() -> tuple[dict[str, str], dict[str, str]]:
    _, sections = parse_def(DEF_FILE.read_text())
    arguments = dict(
        line.strip().partition("=")[::2]
        for line in sections["arguments"].splitlines()
        if line.strip()
    )
    return sections, arguments


def test_image_installs_a_cuda_torch_by_default():
    sections, arguments = _arguments()
    # PyPI's Linux torch wheel is the CUDA build; the CPU build is a build argument away
    assert arguments["TORCH_INDEX"] == "https://pypi.org/simple"
    post = render(sections["post"], arguments)
    assert "is_nccl_available()" in post and "torch.version.cuda" in post
    help_text = DEF_FILE.read_text()
    assert "--build-arg TORCH_INDEX=https://download.pytorch.org/whl/cpu" in help_text
    assert "apptainer exec --nv" in render(sections["help"], arguments)


def _check_line(index: str) -> str:
    sections, arguments = _arguments()
    post = render(sections["post"], {**arguments, "TORCH_INDEX": index})
    (line,) = [ln for ln in post.splitlines() if "is_nccl_available" in ln]
    return line


def test_build_check_refuses_a_default_build_without_cuda():
    """The %post check, run here where torch is a CPU build: it passes with the CPU index and
    fails with the default (CUDA) one."""
    import torch

    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    sh = shutil.which("dash") or "sh"
    cpu = subprocess.run(
        [sh, "-c", _check_line("https://download.pytorch.org/whl/cpu")], env=env, timeout=120
    )
    assert cpu.returncode == 0
    default = subprocess.run(
        [sh, "-c", _check_line("https://pypi.org/simple")], env=env, timeout=120
    )
    assert default.returncode == (0 if torch.version.cuda else 1)


def test_selftest_gpu_check_fails_cleanly_without_a_gpu():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible here: the check would pass")
    proc = subprocess.run(
        [sys.executable, str(REPO / "containers" / "selftest.py"), "--backend", "native", "--gpu"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("selftest FAILED: ") and "Traceback" not in proc.stderr
    assert ("CPU-only build" in proc.stderr) or ("no CUDA device" in proc.stderr)


@pytest.mark.skipif(
    __import__("importlib").util.find_spec("torch") is None, reason="torch not installed"
)
def test_selftest_gpu_check_passes_on_a_gpu():
    """Runs where a GPU is visible (a GPU node, or inside the image with --nv)."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device visible here")
    proc = subprocess.run(
        [sys.executable, str(REPO / "containers" / "selftest.py"), "--backend", "native", "--gpu"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "NCCL all-reduce on the GPU" in proc.stdout


def _stand_ins(tmp_path: Path) -> dict[str, str]:
    """``srun`` running its command once per task with Slurm's task variables, ``scontrol``
    answering the node list, and ``xrmodifier`` printing what a rank sees."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/usr/bin/env bash\n"
        'echo "srun $*" >> "$XRM_TEST_LOG"\n'
        "while [[ $1 == --* ]]; do shift; done\n"
        "for ((i = 0; i < SLURM_NTASKS; i++)); do\n"
        '  SLURM_PROCID=$i SLURM_LOCALID=$((i % SLURM_NTASKS_PER_NODE)) "$@" || exit $?\n'
        "done\n"
    )
    (bin_dir / "scontrol").write_text("#!/usr/bin/env bash\nprintf 'gpu-a\\ngpu-b\\n'\n")
    (bin_dir / "fake-xrmodifier").write_text(
        "#!/usr/bin/env bash\n"
        'echo "rank RANK=$RANK LOCAL_RANK=$LOCAL_RANK WORLD_SIZE=$WORLD_SIZE '
        "LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE MASTER=$MASTER_ADDR:$MASTER_PORT "
        'NCCL_DEBUG=$NCCL_DEBUG args=$*" >> "$XRM_TEST_LOG"\n'
    )
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_train_job_direct_mode_starts_one_nccl_rank_per_task(tmp_path):
    env = _stand_ins(tmp_path)
    log = tmp_path / "calls.log"
    env.update(
        XRM_TEST_LOG=str(log),
        XRM_TRAIN_MODE="srun",
        XRM_BIN=str(tmp_path / "bin" / "fake-xrmodifier"),
        SLURM_JOB_ID="4242",
        SLURM_JOB_NODELIST="gpu-[a-b]",
        SLURM_NTASKS="4",
        SLURM_NTASKS_PER_NODE="2",
    )
    env.pop("MASTER_ADDR", None)
    env.pop("MASTER_PORT", None)
    env.pop("NCCL_DEBUG", None)
    proc = subprocess.run(
        ["bash", str(TRAIN), "config.toml", "--restart"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    lines = log.read_text().splitlines()
    assert lines[0] == "srun --mpi=none bash -c " + lines[0].split(" -c ", 1)[1]
    ranks = [ln for ln in lines if ln.startswith("rank ")]
    port = 20000 + 4242 % 20000
    assert ranks == [
        f"rank RANK={r} LOCAL_RANK={r % 2} WORLD_SIZE=4 LOCAL_WORLD_SIZE=2 "
        f"MASTER=gpu-a:{port} NCCL_DEBUG=WARN args=train config.toml --restart"
        for r in range(4)
    ]


def test_train_job_direct_mode_refuses_to_run_outside_slurm(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    env.update(XRM_TRAIN_MODE="srun")
    proc = subprocess.run(
        ["bash", str(TRAIN), "config.toml"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "submit it with sbatch" in proc.stderr
    env.update(XRM_TRAIN_MODE="gpu")
    proc = subprocess.run(
        ["bash", str(TRAIN), "config.toml"], env=env, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "driver or srun" in proc.stderr
