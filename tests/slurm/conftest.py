"""A real one-node Slurm cluster on localhost for the job-recipe tests (``slurm_cluster``).

Debian's ``slurm-wlm`` (slurmctld + slurmd, 22.05) and ``munge`` run from a temporary folder
with their own munge key, socket, ports, state and logs, so nothing touches /etc or a system
Slurm. Opt-in for a plain ``make test`` (set ``XRM_SLURM_TESTS=1``); ``.ci/run`` sets it and
installs the packages. When the cluster cannot start within a minute (packages missing, not
root, a daemon refusing to start) every test here is skipped with the reason and the daemon
logs' last lines. The fixture stops every daemon it started, also when a test fails.

Configuration choices: ``proctrack/linuxproc`` and ``task/none`` (no cgroup plugin is
loaded, so no cgroup.conf is read and none is needed), ``select/cons_tres`` with ``CR_Core``
(cores are consumable, memory is not), one partition holding the node with the CPUs and
real memory ``slurmd -C`` reports, no accounting database (``sacct`` is unavailable, so
submitit learns that a job finished from its result file; ``scontrol show job`` reports
states here), and ``MpiDefault=none`` so the job scripts' own ``srun --mpi=pmi2`` is what
gives MPICH ranks their PMI.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import pytest

OPT_IN = "XRM_SLURM_TESTS"
START_TIMEOUT_S = 60.0
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")
#: job states after which a job never runs again
FINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "BOOT_FAIL",
        "DEADLINE",
        "PREEMPTED",
        "SPECIAL_EXIT",
    }
)


class ClusterStartError(RuntimeError):
    """The cluster did not come up; the message says why."""


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.slurm)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 8) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return f"{path.name}: (no log)"
    return f"{path.name}: " + " | ".join(text[-lines:])


@dataclass
class SlurmCluster:
    """A running local cluster: ``env`` (os.environ plus SLURM_CONF) runs its clients."""

    root: Path
    node: str
    partition: str
    cpus: int
    memory_mb: int
    env: dict[str, str] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)

    @property
    def conf(self) -> Path:
        return self.root / "slurm.conf"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"

    # --------------------------------------------------------------------------- clients

    def run(
        self,
        *args: str,
        check: bool = True,
        timeout: float = 60,
        cwd: Path | None = None,
        env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess:
        """Run a command with this cluster's environment (plus ``env``)."""
        proc = subprocess.run(
            list(args),
            cwd=cwd,
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
            )
        return proc

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> str:
        """Submit with ``sbatch --parsable``; returns the job id."""
        out = self.run("sbatch", "--parsable", *args, cwd=cwd, env=env).stdout.strip()
        return out.split(";")[0]

    def states(self, job_id: str) -> list[str]:
        """The states of a job (one per array task), from ``scontrol show job``."""
        proc = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        if proc.returncode != 0:
            return []
        return re.findall(r"\bJobState=(\S+)", proc.stdout)

    def wait(self, job_ids: Iterable[str], timeout: float = 180) -> dict[str, list[str]]:
        """Wait until every job (and each of its array tasks) is in a final state."""
        ids = list(job_ids)
        deadline = time.monotonic() + timeout
        while True:
            states = {j: self.states(j) for j in ids}
            if all(s and all(x in FINAL_STATES for x in s) for s in states.values()):
                return states
            if time.monotonic() > deadline:
                queue = self.run("squeue", "-o", "%i %j %T %r", check=False).stdout
                raise AssertionError(
                    f"jobs {ids} not finished after {timeout} s: {states}\n"
                    f"{queue}\n{self.daemon_logs()}"
                )
            time.sleep(0.5)

    def daemon_logs(self) -> str:
        return "\n".join(_tail(self.log_dir / f"{d}.log") for d in DAEMONS)

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Write the configuration and start munged, slurmctld and slurmd; wait for idle."""
        for sub in ("munge", "state", "spool", "log"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        munge = self.root / "munge"
        munge.chmod(0o755)  # clients (any user) reach the socket through this folder
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)
        socket_path = munge / "munge.socket"
        self._spawn(
            "munged",
            [
                "munged",
                "--foreground",
                "--force",
                f"--key-file={key}",
                f"--socket={socket_path}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self.log_dir / 'munged.log'}",
                f"--seed-file={munge / 'seed'}",
            ],
        )
        self._wait_for(lambda: socket_path.exists(), "munged did not create its socket")

        (self.root / "plugstack.conf").write_text("")
        self.conf.write_text(self._slurm_conf(socket_path))
        self.env["SLURM_CONF"] = str(self.conf)
        self._spawn("slurmctld", ["slurmctld", "-D", "-i", "-f", str(self.conf)])
        self._spawn("slurmd", ["slurmd", "-D", "-f", str(self.conf), "-N", self.node])

        def idle() -> bool:
            proc = self.run(
                "sinfo", "-h", "-N", "-n", self.node, "-o", "%T", check=False, timeout=10
            )
            return proc.returncode == 0 and proc.stdout.strip() == "idle"

        self._wait_for(idle, f"node {self.node} did not become idle")

    def _slurm_conf(self, munge_socket: Path) -> str:
        r = self.root
        return "\n".join(
            [
                "# written by tests/slurm/conftest.py for a throw-away one-node cluster",
                "ClusterName=xrmtest",
                f"SlurmctldHost={self.node}(127.0.0.1)",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"SlurmctldPort={_free_port()}",
                f"SlurmdPort={_free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge_socket}",
                f"StateSaveLocation={r / 'state'}",
                f"SlurmdSpoolDir={r / 'spool'}",
                f"SlurmctldPidFile={r / 'slurmctld.pid'}",
                f"SlurmdPidFile={r / 'slurmd.pid'}",
                f"SlurmctldLogFile={self.log_dir / 'slurmctld.log'}",
                f"SlurmdLogFile={self.log_dir / 'slurmd.log'}",
                f"PlugStackConfig={r / 'plugstack.conf'}",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "JobCompType=jobcomp/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_Core",
                "SchedulerType=sched/backfill",
                "MpiDefault=none",
                "SwitchType=switch/none",
                "ReturnToService=2",
                "MailProg=/bin/true",
                "InactiveLimit=0",
                "KillWait=5",
                "MinJobAge=3600",
                "SlurmctldTimeout=30",
                "SlurmdTimeout=30",
                f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={self.cpus} "
                f"RealMemory={self.memory_mb} State=UNKNOWN",
                f"PartitionName={self.partition} Nodes={self.node} Default=YES "
                "MaxTime=INFINITE State=UP",
                "",
            ]
        )

    def _spawn(self, name: str, argv: list[str]) -> None:
        log = open(self.log_dir / f"{name}.stdout", "w")  # noqa: SIM115 - lives with the daemon
        # its own session: the daemon and whatever it forks can be told apart from pytest's
        self.procs[name] = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )

    def _wait_for(self, ready, what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise ClusterStartError(
                        f"{name} exited with {proc.returncode}: {self.daemon_logs()} "
                        f"{_tail(self.log_dir / f'{name}.stdout')}"
                    )
            if ready():
                return
            time.sleep(0.2)
        raise ClusterStartError(f"{what} within {START_TIMEOUT_S:.0f} s: {self.daemon_logs()}")

    def stop(self) -> None:
        """Cancel every job, wait for their steps to end, then stop the daemons (TERM, then
        KILL). Safe to call on a half-started cluster and more than once."""
        if "slurmctld" in self.procs and self.procs["slurmctld"].poll() is None:
            self.run("scancel", "--full", "--user", str(os.getuid()), check=False, timeout=20)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                queue = self.run("squeue", "-h", "-o", "%i", check=False, timeout=10)
                if queue.returncode != 0 or not queue.stdout.strip():
                    break
                time.sleep(0.5)
        for name in reversed(DAEMONS):
            proc = self.procs.get(name)
            if proc is None or proc.poll() is not None:
                continue
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        self._kill_leftover_steps()

    def _kill_leftover_steps(self) -> None:
        """slurmstepd detaches from slurmd (own session, parent init) and outlives it by
        design. Ours carry our SLURM_CONF in their environment (inherited from the slurmd we
        started); kill them and every process below them."""
        marker = f"SLURM_CONF={self.conf}".encode()
        parents: dict[int, int] = {}
        steps = []
        for pid_dir in Path("/proc").iterdir():
            if not pid_dir.name.isdigit():
                continue
            pid = int(pid_dir.name)
            try:
                stat = (pid_dir / "stat").read_text()
                parents[pid] = int(stat.rsplit(")", 1)[1].split()[1])
                if (pid_dir / "comm").read_text().strip() == "slurmstepd" and marker in (
                    pid_dir / "environ"
                ).read_bytes().split(b"\0"):
                    steps.append(pid)
            except (OSError, ValueError, IndexError):
                continue
        doomed = set(steps)
        grew = True
        while grew:
            below = {pid for pid, ppid in parents.items() if ppid in doomed} - doomed
            doomed |= below
            grew = bool(below)
        for pid in doomed:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                continue


def _unavailable_reason() -> str | None:
    if os.environ.get(OPT_IN) != "1":
        return f"real-Slurm tests are opt-in: set {OPT_IN}=1 (.ci/run does)"
    missing = [b for b in (*DAEMONS, *CLIENTS) if shutil.which(b) is None]
    if missing:
        return (
            f"Slurm/munge not installed ({', '.join(missing)} missing): "
            "apt-get install slurm-wlm munge"
        )
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs; run the Slurm tests as root (CI does)"
    return None


def _node_hardware() -> tuple[int, int]:
    """CPUs and RealMemory (MB) of this machine, as slurmd itself measures them."""
    out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, timeout=30).stdout
    cpus = re.search(r"\bCPUs=(\d+)", out)
    memory = re.search(r"\bRealMemory=(\d+)", out)
    if not (cpus and memory):
        raise ClusterStartError(f"cannot read slurmd -C output: {out!r}")
    return int(cpus.group(1)), int(memory.group(1))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[SlurmCluster]:
    """The running cluster (session-wide); skips every dependent test if it cannot start."""
    reason = _unavailable_reason()
    if reason:
        pytest.skip(reason)
    started = time.monotonic()
    cluster = None
    try:
        cpus, memory = _node_hardware()
        cluster = SlurmCluster(
            root=tmp_path_factory.mktemp("slurm"),
            node=socket.gethostname().split(".")[0],
            partition="xrm",
            cpus=cpus,
            memory_mb=memory,
            env=dict(os.environ),
        )
        cluster.start()
    except (ClusterStartError, OSError, subprocess.SubprocessError) as exc:
        if cluster is not None:
            cluster.stop()
        pytest.skip(f"local Slurm cluster did not start: {exc}")
    print(
        f"\nlocal Slurm cluster up in {time.monotonic() - started:.1f} s "
        f"({cluster.cpus} CPUs, {cluster.memory_mb} MB, conf {cluster.conf})"
    )
    saved = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(cluster.conf)  # for submitit inside this process
    try:
        yield cluster
    finally:
        if saved is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = saved
        cluster.stop()


# --------------------------------------------------------------------------------------------
# a tiny project for the job recipes
# --------------------------------------------------------------------------------------------

VENV_BIN = str(Path(sys.executable).parent)

#: (section, key, TOML value): a grid of 3 x 2 x 3 thetas x 4 temperatures = 72 points, and
#: training, mock and inversion settings that finish in seconds on 2 cores
TINY = (
    ("modifier.grid", "mu", "{ linspace = [1.0, 2.5, 3] }"),
    ("modifier.grid", "sigma", "{ values = [0.2, 0.5] }"),
    ("modifier.grid", "A", "{ linspace = [-0.2, 0.2, 3] }"),
    ("temperatures", "t_true", "{ logspace = [1.5, 8.0, 4] }"),
    ("simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }"),
    ("simulation", "chunk_size", "8"),
    ("simulation", "realisations", "2"),
    ("emulator", "hidden", "[32, 32]"),
    ("emulator", "epochs", "30"),
    ("emulator", "batch_size", "64"),
    ("emulator", "offgrid_points", "40"),
    ("emulator", "checkpoint_every", "10"),
    ("inversion", "n_starts", "4"),
    ("inversion.mcmc", "walkers", "8"),
    ("inversion.mcmc", "steps", "300"),
    ("inversion.mcmc", "burn", "100"),
    ("mock", "n_sources", "12"),
    ("slurm", "gpus_per_node", "0"),
    ("slurm", "cpus_per_task", "1"),
    ("slurm", "mem_gb", "1"),
    ("slurm", "time_minutes", "15"),
)


def job_env(**extra: str) -> dict[str, str]:
    """Variables for sbatch: the venv first on PATH (jobs inherit the environment)."""
    return {"PATH": f"{VENV_BIN}:{os.environ['PATH']}", **extra}


def cli_commands() -> set[str]:
    from xrmodifier_hpc.cli import build_parser

    return set(build_parser()._subparsers._group_actions[0].choices)


def require_stages(*names: str) -> None:
    """Skip (with the reason) while another stage of the pipeline is not in the CLI yet."""
    missing = [n for n in names if n not in cli_commands()]
    if missing:
        pytest.skip(f"xrmodifier {', '.join(missing)} not available yet")


@pytest.fixture(scope="session")
def tiny_project(tmp_path_factory) -> Path:
    """``xrmodifier init`` output shrunk by TINY; returns the config path. Its folder is
    shared by the tests, each giving its own ``[paths] workdir`` in a copy of the config."""
    from conftest import edit_config

    from xrmodifier_hpc.stages.init import init

    config = init(tmp_path_factory.mktemp("slurm-project") / "project")
    text = config.read_text()
    for section, key, value in TINY:
        text = edit_config(text, section, key, value)
    config.write_text(text)
    return config


def config_copy(config: Path, name: str) -> Path:
    """A copy of ``config`` beside it whose workdir is ``run_NAME``."""
    from conftest import edit_config

    copy = config.with_name(f"config_{name}.toml")
    copy.write_text(edit_config(config.read_text(), "paths", "workdir", f'"run_{name}"'))
    return copy


JOBS = Path(__file__).resolve().parents[2] / "jobs"


def job_output(folder: Path, pattern: str) -> str:
    """The text of the job output files matching ``pattern`` in ``folder`` (for messages)."""
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')}" for p in sorted(folder.glob(pattern))
    )


@pytest.fixture(scope="session")
def mpi_simulation(slurm_cluster, tiny_project) -> tuple[Path, str]:
    """jobs/simulate.sbatch with 2 MPI ranks (srun --mpi=pmi2) on the tiny project; returns
    the config whose workdir holds the grid.h5 it wrote, and the job id."""
    require_stages("simulate")
    config = config_copy(tiny_project, "mpi")
    job = slurm_cluster.sbatch(
        "--ntasks=2", str(JOBS / "simulate.sbatch"), str(config), cwd=config.parent, env=job_env()
    )
    states = slurm_cluster.wait([job], timeout=180)
    out = job_output(config.parent, f"xrm-simulate-{job}.out")
    assert states[job] == ["COMPLETED"], out
    assert "2 rank(s)" in out, out  # the job script saw two Slurm tasks...
    with h5py.File(config.parent / "run_mpi" / "grid.h5", "r") as f:
        assert int(f["meta"].attrs["n_ranks"]) == 2, out  # ...and simulate ran as 2 ranks
    return config, job
