"""``xrmodifier simulate`` / ``merge`` for real: MPI ranks under mpiexec, parallel HDF5, shards,
Slurm-array shards, SIGKILL and resume, refusals. Every way of running the same config must give
bitwise-identical datasets (point k always draws from point_rng(seed, k)).

The MPI tests spawn ``mpiexec -n 2 xrmodifier ...`` subprocesses (pytest stays one process).
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pty
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import psutil
import pytest
from conftest import XRMODIFIER, edit_config, mpiexec, shrink_to_small

from xrmodifier_hpc.backends import make_backend
from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io import store

RESULT_NAMES = (*store.RESULT_NAMES, "done")
GRID_NAMES = (
    "grid/theta",
    "grid/t_true",
    "grid/fit_tgrid",
    "grid/axes/mu",
    "grid/axes/sigma",
    "grid/axes/A",
    "grid/axes/t_true",
)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


#: thread settings a user may have; the tests run as a user without them would
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "XRM_THREADS")


def _env() -> dict[str, str]:
    # a test run inside a Slurm job must not turn into a shard run; no thread variables (each
    # rank sizes its pools from its cores), no injected fault unless a test asks for one
    drop = ("SLURM_", "PMI_", "XRM_FAULT", "XRM_THREADS")
    return {k: v for k, v in os.environ.items() if not k.startswith(drop) and k not in THREAD_VARS}


def _two_cpus() -> list[int]:
    """The first two CPUs this process may use (all of them on a 2-core machine)."""
    return sorted(os.sched_getaffinity(0))[:2]


def _mpiexec() -> str:
    exe = mpiexec()
    assert exe, "mpiexec not found: `make test` installs MPICH (tools/setup_env.sh)"
    return exe


def run(
    *args: str,
    ranks: int = 1,
    env: dict | None = None,
    timeout: float = 180,
    cpus: list[int] | None = None,
) -> subprocess.CompletedProcess:
    """``xrmodifier ARGS`` as one process, or under ``mpiexec -n ranks``; ``cpus``: the
    affinity mask of the launcher (its ranks inherit it)."""
    cmd = [XRMODIFIER, *args]
    if ranks > 1:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    return subprocess.run(
        cmd,
        env={**_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )


def ok(proc: subprocess.CompletedProcess) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


def shrink(text: str, workdir: str, **simulation: str) -> str:
    """The 72-point grid of conftest's small_config, results under ``workdir``."""
    text = shrink_to_small(text)
    for key, value in simulation.items():
        text = edit_config(text, "simulation", key, value)
    return edit_config(text, "paths", "workdir", f'"{workdir}"')


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {n: f[f"results/{n}"][()] for n in RESULT_NAMES} | {n: f[n][()] for n in GRID_NAMES}


def assert_identical(path: Path, reference: dict[str, np.ndarray]) -> None:
    got = datasets(path)
    for name, ref in reference.items():
        assert got[name].dtype == ref.dtype and got[name].shape == ref.shape, name
        assert got[name].tobytes() == ref.tobytes(), f"{name} differs from the 1-rank run"


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """An ``xrmodifier init`` project folder; tests add their own configs to it."""
    from xrmodifier_hpc.stages.init import init

    return init(tmp_path_factory.mktemp("sim") / "project").parent


def make_config(project: Path, name: str, **simulation: str) -> Path:
    base = (project / "config.toml").read_text()
    path = project / f"{name}.toml"
    path.write_text(shrink(base, f"run_{name}", **simulation))
    return path


@pytest.fixture(scope="module")
def reference(project: Path) -> dict:
    """The 1-rank run everything else must reproduce bit for bit."""
    config = make_config(project, "one")
    proc = ok(run("simulate", str(config)))
    path = load_config(config).grid_path
    return {"config": config, "path": path, "data": datasets(path), "proc": proc}


# --------------------------------------------------------------------------------------------
# one rank: layout, provenance, progress
# --------------------------------------------------------------------------------------------


def test_one_rank_file_has_the_documented_layout_and_provenance(reference):
    cfg = load_config(reference["config"])
    grid = Grid.from_config(cfg)
    n, n_real, n_t = grid.n_points, cfg.simulation.realisations, len(cfg.simulation.fit_tgrid)
    expected = {
        "t_fit_orig": ((n, n_real), "float32"),
        "t_fit_mod": ((n, n_real), "float32"),
        "err_orig": ((n, n_real, 2), "float32"),
        "err_mod": ((n, n_real, 2), "float32"),
        "status": ((n, n_real, 2), "uint8"),
        "norm": ((n,), "float64"),
        "counts": ((n, n_real), "float32"),
        "curve_orig": ((n, n_real, n_t), "float32"),
        "curve_mod": ((n, n_real, n_t), "float32"),
        "done": ((n,), "bool"),
    }
    with h5py.File(reference["path"], "r") as f:
        for name, (shape, dtype) in expected.items():
            assert f[f"results/{name}"].shape == shape, name
            assert f[f"results/{name}"].dtype == np.dtype(dtype), name
        theta, t_true = grid.all_points()
        np.testing.assert_array_equal(f["grid/theta"][()], theta)
        np.testing.assert_array_equal(f["grid/t_true"][()], t_true)
        assert list(f["grid/theta"].attrs["names"]) == ["mu", "sigma", "A"]
        assert f["grid/theta"].attrs["family"] == "gaussian"
        assert list(f["grid/axes"]) == ["A", "mu", "sigma", "t_true"]  # HDF5 lists by name
        np.testing.assert_array_equal(f["grid/fit_tgrid"][()], cfg.simulation.fit_tgrid.array)
        meta = dict(f["meta"].attrs)
    for key in (
        "config",
        "simulation",
        "fingerprint",
        "package_version",
        "backend",
        "backend_version",
        "seed",
        "mode",
        "realisations",
        "created",
        "host",
        "n_ranks",
        "layout_version",
    ):
        assert key in meta, key
    assert meta["config"] == reference["config"].read_text()
    assert meta["fingerprint"] == cfg.simulation_fingerprint()
    assert meta["simulation"] == cfg.simulation_summary()
    assert meta["backend"] == "native" and meta["n_ranks"] == 1 and meta["writer"] == "serial"
    assert meta["seed"] == cfg.simulation.seed

    data = store.load_grid(reference["path"])
    assert data.complete and data.done.all()
    assert data.param_names == ("mu", "sigma", "A") and data.shape == grid.shape
    # the physics is the backend's; here only that real numbers arrived in the right rows
    usable = (data.status[..., 0] & 0b10011) == 0
    assert usable.mean() > 0.9
    assert np.all(np.isfinite(data.t_fit_orig[usable]))
    rel = data.t_fit_mod[usable] / np.broadcast_to(data.t_true[:, None], usable.shape)[usable]
    assert 0.7 < np.median(rel) < 1.3
    # progress reaches the log at the end of a batch run
    assert "simulate: 72/72 points (100.0%)" in reference["proc"].stderr


def test_rerun_of_a_complete_grid_does_nothing(reference):
    before = reference["path"].stat().st_mtime_ns
    proc = ok(run("simulate", str(reference["config"])))
    assert "nothing to do" in proc.stdout
    assert reference["path"].stat().st_mtime_ns == before


def test_backend_results_do_not_depend_on_batch_composition(reference):
    """A resumed run may start mid-chunk: a point's results must not depend on its batch."""
    cfg = load_config(reference["config"])
    grid = Grid.from_config(cfg)
    backend = make_backend(cfg)
    full_index = np.arange(16, 32)
    full = backend.run(*grid.points(full_index), full_index)
    for subset in (np.array([21]), np.arange(19, 24), np.arange(17, 32, 3)):
        part = make_backend(cfg).run(*grid.points(subset), subset)
        for name in store.RESULT_NAMES:
            a, b = getattr(part, name), getattr(full, name)[subset - 16]
            assert a.tobytes() == b.tobytes(), f"{name} depends on the batch ({subset})"


# --------------------------------------------------------------------------------------------
# MPI: two ranks into one file, rank shards, Slurm array shards
# --------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_two_ranks_write_one_parallel_file_identical_to_one_rank(project, reference):
    """Also: with no thread variables set and two cores granted by affinity, each rank sizes
    its pools to one thread and says so."""
    config = make_config(project, "two")
    cpus = _two_cpus()
    proc = ok(run("simulate", str(config), ranks=2, cpus=cpus))
    n = len(cpus)
    for rank in (0, 1):
        line = f"[rank {rank}] threads: 1 per rank ({n} core{'s' if n > 1 else ''} granted by "
        line += "affinity, 2 ranks on this node); BLAS openblas 1"
        assert line in proc.stderr, proc.stderr
    path = load_config(config).grid_path
    assert_identical(path, reference["data"])
    with h5py.File(path, "r") as f:  # written with mpio, read back serially
        assert f["meta"].attrs["n_ranks"] == 2 and f["meta"].attrs["writer"] == "mpio"
    assert store.load_grid(path).complete
    assert "72/72 points" in proc.stdout and "2 ranks" in proc.stdout
    # rank 0's progress counts rank 1's points too
    assert "[rank 0] simulate: 72/72 points (100.0%)" in proc.stderr
    assert not list(path.parent.glob("*.partial"))


@pytest.mark.mpi
def test_rank_shards_merged_by_rank0_identical(project, reference):
    config = make_config(project, "shards")
    ok(run("simulate", str(config), "--shards", ranks=2))
    path = load_config(config).grid_path
    assert_identical(path, reference["data"])
    assert store.find_shards(path) == []  # merged shards are removed


@pytest.mark.mpi
def test_slurm_array_shards_then_merge_identical(project, reference):
    config = make_config(project, "array")
    path = load_config(config).grid_path
    # an array task may itself be an MPI job: its ranks share the shard file (mpio)
    first = ok(run("simulate", str(config), "--shard", "0/2", ranks=2))
    assert "shard 0/2 complete" in first.stdout and not path.exists()
    with h5py.File(store.shard_path(path, 0, 2), "r") as f:
        assert f["meta"].attrs["writer"] == "array" and f["meta"].attrs["n_ranks"] == 2

    early = run("merge", str(config))  # shard 1 is missing: refuse, name it, write nothing
    assert early.returncode == 2
    assert early.stderr.count("\n") == 1 and "shard 1/2" in early.stderr
    assert not path.exists()

    # the second task takes its shard from Slurm's variables (ids 5, 7 with step 2)
    slurm = {
        "SLURM_ARRAY_TASK_ID": "7",
        "SLURM_ARRAY_TASK_MIN": "5",
        "SLURM_ARRAY_TASK_STEP": "2",
        "SLURM_ARRAY_TASK_COUNT": "2",
        "SLURM_JOB_ID": "1",
    }
    second = ok(run("simulate", str(config), env=slurm))
    assert "shard 1/2 complete" in second.stdout
    assert len(store.find_shards(path)) == 2
    merged = ok(run("merge", str(config), ranks=2))  # each rank copies one shard (mpio)
    assert "merged 2 shard files" in merged.stdout
    assert_identical(path, reference["data"])
    assert store.find_shards(path) == []
    with h5py.File(path, "r") as f:
        assert f["meta"].attrs["writer"] == "merge" and f["meta"].attrs["n_ranks"] == 2


@pytest.mark.mpi
def test_single_file_run_folds_in_leftover_shards(project, reference):
    """Shard 0 of an unfinished array, then a plain 2-rank run: it keeps shard 0's points,
    computes only the rest, and leaves one complete grid.h5."""
    config = make_config(project, "leftover")
    path = load_config(config).grid_path
    ok(run("simulate", str(config), "--shard", "0/2"))
    proc = ok(run("simulate", str(config), ranks=2))
    assert "(32 computed now" in proc.stdout, proc.stdout  # shard 0 held 40 of the 72
    assert "resuming, 40 already done" in proc.stderr
    assert_identical(path, reference["data"])
    assert store.find_shards(path) == []


# --------------------------------------------------------------------------------------------
# kill and resume
# --------------------------------------------------------------------------------------------


def _done_count(path: Path) -> int:
    try:
        with h5py.File(path, "r") as f:
            return int(f["results/done"][()].sum())
    except (OSError, KeyError):
        return 0


def _kill_all(proc: subprocess.Popen) -> None:
    """SIGKILL mpiexec, its proxies and the ranks at once (hydra gives them their own
    sessions, so a process group would miss them)."""
    parent = psutil.Process(proc.pid)
    family = parent.children(recursive=True) + [parent]
    for p in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


@pytest.mark.mpi
def test_killed_then_resumed_run_is_identical(project, reference):
    # chunks of 2 points: many writes to interrupt, and batches unlike the reference's 16
    config = make_config(project, "killed", chunk_size="2")
    path = load_config(config).grid_path
    n = 72
    killed_at = None
    for attempt in range(3):
        args = [_mpiexec(), "-n", "2", XRMODIFIER, "simulate", str(config)]
        if attempt:
            args.append("--overwrite")
        proc = subprocess.Popen(
            args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            done = _done_count(path) if path.exists() else 0
            if 4 <= done < n - 8:
                _kill_all(proc)
                killed_at = done
                break
            time.sleep(0.01)
        if killed_at is not None:
            break
        if proc.poll() is None:  # past the deadline
            _kill_all(proc)
    assert killed_at is not None, "the run always finished before the test could kill it"

    # the killed file is readable and its done points are final. A point not done may hold
    # fill values or rows written just before the kill (rows go first, then done): either way
    # it is computed again.
    partial = store.load_grid(path, allow_incomplete=True)
    assert 0 < partial.done.sum() < n
    ref = reference["data"]
    for name in store.RESULT_NAMES:
        got = getattr(partial, name)[partial.done]
        assert got.tobytes() == ref[name][partial.done].tobytes(), name
    with pytest.raises(UserError, match="not done"):
        store.load_grid(path)

    resumed = ok(run("simulate", str(config), ranks=2))
    computed = int(resumed.stdout.split("(")[1].split(" computed")[0])
    assert computed == n - int(partial.done.sum()), resumed.stdout
    assert_identical(path, ref)


@pytest.mark.mpi
@pytest.mark.parametrize("ranks", [1, 2])
def test_sigterm_mid_run_fails_the_command_saying_so_and_a_rerun_resumes(project, reference, ranks):
    """SIGTERM to the command (``kill``, ``scancel``, a Slurm time limit; to ``mpiexec`` under
    MPI, which passes it to the ranks) ends it with exit 143 and a line saying so: Python's
    default ended it silently and ``mpiexec`` then reported 0, a success to a batch script."""
    config = make_config(project, f"term{ranks}", chunk_size="2")
    path = load_config(config).grid_path
    n = 72
    stopped, proc, err = None, None, ""
    for attempt, delay in enumerate((0.2, 0.1, 0.05, 0.02, 0.0, 0.0)):
        args = [XRMODIFIER, "simulate", str(config)] + (["--overwrite"] if attempt else [])
        if ranks > 1:
            args = [_mpiexec(), "-n", str(ranks), *args]
        proc = subprocess.Popen(
            args, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        # signalled once the run has started (its start line): a single process holds its
        # file locked, so the done count cannot be watched
        lines: list[str] = []
        reader = threading.Thread(target=lines.extend, args=(proc.stderr,), daemon=True)
        reader.start()
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            if any("points into" in line for line in lines):
                time.sleep(delay)
                proc.send_signal(signal.SIGTERM)
                stopped = True
                break
            time.sleep(0.005)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_all(proc)
            pytest.fail("the command did not end after SIGTERM")
        reader.join(timeout=30)
        err = "".join(lines)
        if stopped and _done_count(path) < n:
            break  # the signal arrived mid-run (not after the grid was done): this test's case
        stopped = None
    assert stopped is not None, "the run always finished before the test could signal it"
    assert proc.returncode == 143, (proc.returncode, err)
    assert "terminated (SIGTERM); rerun the command without --overwrite" in err, err
    assert "Traceback" not in err
    done = _done_count(path)
    assert done < n
    resumed = ok(run("simulate", str(config), ranks=ranks))
    computed = int(resumed.stdout.split("(")[1].split(" computed")[0])
    assert computed == n - done, resumed.stdout  # nothing saved is computed again
    assert_identical(path, reference["data"])


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------


def test_the_summary_line_rates_all_ranks_and_each_rank():
    from xrmodifier_hpc.stages.simulate import SimulateSummary

    two = SimulateSummary(Path("grid.h5"), "single", 2, 1000, 0, 1000, 4.0, True).describe()
    assert "(1000 computed now in 4.0 s, 250.0 points/s in all, 125.0 per rank, 2 ranks" in two
    one = SimulateSummary(Path("grid.h5"), "single", 1, 1000, 0, 1000, 4.0, True).describe()
    assert "(1000 computed now in 4.0 s, 250.0 points/s, 1 rank, one file)" in one
    none = SimulateSummary(Path("grid.h5"), "single", 2, 1000, 1000, 0, 0.5, True).describe()
    assert "points/s" not in none


def test_progress_log_lines_have_count_rate_and_eta(caplog):
    from xrmodifier_hpc.runtime.progress import Progress

    caplog.set_level(logging.INFO, logger="xrmodifier")
    quiet = Progress(100, 40, every=3600.0)
    quiet.update(10)
    assert caplog.records == []  # batch jobs: one line per interval, not per chunk
    chatty = Progress(100, 40, every=0.0)
    chatty.start -= 2.0  # as if it had run for 2 s
    chatty.update(20)
    line = caplog.records[-1].getMessage()
    assert line.startswith("simulate: 60/100 points (60.0%), ")
    rate = float(line.split(", ")[1].split(" points/s")[0])
    assert 9.0 < rate <= 10.0  # 20 new points in ~2 s; the 40 done before do not count
    assert "ETA 4s" in line or "ETA 5s" in line
    quiet.close()
    assert caplog.records[-1].getMessage().startswith("simulate: 50/100 points (50.0%)")


def test_progress_bar_on_a_terminal(project):
    """On a terminal (stderr is a tty) the progress is a tqdm bar instead of log lines."""
    config = make_config(project, "tty", chunk_size="8")
    text = config.read_text()
    config.write_text(edit_config(text, "modifier.grid", "mu", "{ values = [1.5] }"))
    leader, follower = pty.openpty()
    # a terminal 100 columns wide (a fresh pty reports 0 x 0)
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))
    proc = subprocess.Popen(
        [XRMODIFIER, "simulate", str(config)],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    chunks = []
    while True:
        try:
            data = os.read(leader, 4096)
        except OSError:  # the child closed the terminal
            break
        if not data:
            break
        chunks.append(data)
    proc.wait(timeout=120)
    os.close(leader)
    err = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, err
    assert "24/24" in err and "pt/s" in err and "%|" in err  # tqdm's bar
    assert "points/s, ETA" not in err  # no log lines


# --------------------------------------------------------------------------------------------
# refusals and errors
# --------------------------------------------------------------------------------------------


@pytest.mark.mpi
def test_changed_config_is_refused_and_overwrite_starts_again(project):
    tiny = {"chunk_size": "4"}
    config = make_config(project, "changed", **tiny)
    text = config.read_text()
    text = edit_config(text, "modifier.grid", "mu", "{ values = [1.5] }")
    text = edit_config(text, "modifier.grid", "A", "{ values = [0.1] }")
    config.write_text(text)
    ok(run("simulate", str(config)))
    path = load_config(config).grid_path

    config.write_text(edit_config(text, "simulation", "realisations", "3"))
    proc = run("simulate", str(config), ranks=2)  # under MPI too: refused once, no abort
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert str(path) in proc.stderr and "simulation.realisations: 2 -> 3" in proc.stderr
    assert "--overwrite" in proc.stderr
    assert store.load_grid(path).n_real == 2  # untouched

    ok(run("simulate", str(config), "--overwrite"))
    data = store.load_grid(path)
    assert data.n_real == 3 and data.complete


def test_foreign_file_in_place_of_grid_is_refused(project):
    config = make_config(project, "foreign")
    path = load_config(config).grid_path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not hdf5 at all")
    proc = run("simulate", str(config))
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert "not a readable HDF5 file" in proc.stderr and "--overwrite" in proc.stderr
    assert path.read_bytes() == b"not hdf5 at all"


@pytest.mark.parametrize(
    "args, message",
    [
        (("--shard", "2/2"), "need 0 <= i < n"),
        (("--shard", "one/two"), "expected i/n"),
        (("--shard", "0/2", "--shards"), "not both"),
        (("--shard", "0/50"), "at most as many array tasks as chunks"),
    ],
)
def test_bad_shard_arguments_exit_2(project, args, message):
    config = make_config(project, "badshard")
    proc = run("simulate", str(config), *args)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert message in proc.stderr


def test_merge_without_shards_exits_2(project):
    config = make_config(project, "noshards")
    proc = run("merge", str(config))
    assert proc.returncode == 2 and "no shard files" in proc.stderr


@pytest.mark.mpi
def test_error_on_one_rank_aborts_the_job_with_its_message(project, tmp_path):
    """Rank 1 sees a damaged copy of the target ARF (as a node with a stale local copy would):
    its backend cannot be built, so the job must stop with rank 1's error, not hang."""
    good = make_config(project, "onerank")
    inst = tmp_path / "instruments"
    inst.mkdir()
    for f in (project / "instruments").iterdir():
        (inst / f.name).write_bytes(f.read_bytes())
    (inst / "target.arf").write_bytes(b"SIMPLE  = garbage" + b"\0" * 2000)
    bad = tmp_path / "onerank.toml"
    bad.write_text(good.read_text().replace('"instruments/', f'"{inst}/'))
    cmd = [
        _mpiexec(),
        "-n",
        "1",
        XRMODIFIER,
        "simulate",
        str(good),
        ":",
        "-n",
        "1",
        XRMODIFIER,
        "simulate",
        str(bad),
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert time.monotonic() - t0 < 60
    assert "xrmodifier: error: rank 1:" in proc.stderr
    assert "target.arf" in proc.stderr
    assert "rank 0:" not in proc.stderr
    assert not load_config(good).grid_path.exists()


def _ends_with_rank1s_fault(proc: subprocess.CompletedProcess, point: str, seconds: float) -> None:
    assert proc.returncode != 0
    assert seconds < 60, f"the job took {seconds:.0f} s to end after rank 1 failed"
    assert f"xrmodifier: error: rank 1: RuntimeError: injected fault at {point} on rank 1" in (
        proc.stderr
    ), proc.stderr
    assert "rank 0:" not in proc.stderr


@pytest.mark.mpi
def test_fault_on_rank1_only_in_simulate_ends_the_job_with_its_message(project, reference):
    """Rank 1 fails after its first chunk while rank 0 computes on: the whole job ends, with
    rank 1's message, and the file keeps only final points."""
    config = make_config(project, "fault")
    t0 = time.monotonic()
    proc = run("simulate", str(config), ranks=2, env={"XRM_FAULT": "simulate.chunk@1"})
    _ends_with_rank1s_fault(proc, "simulate.chunk", time.monotonic() - t0)
    partial = store.load_grid(load_config(config).grid_path, allow_incomplete=True)
    assert 16 <= partial.done.sum() < 72  # rank 1's first chunk at least
    for name in ("t_fit_orig", "curve_mod"):
        got = getattr(partial, name)[partial.done]
        assert got.tobytes() == reference["data"][name][partial.done].tobytes(), name


@pytest.mark.mpi
def test_fault_on_rank1_only_in_merge_ends_the_job_then_a_rerun_merges(project, reference):
    """A 2-rank merge whose rank 1 fails after reading its shard ends with rank 1's message;
    the shards stay, and running merge again completes the same grid."""
    config = make_config(project, "mergefault")
    path = load_config(config).grid_path
    for i in (0, 1):
        ok(run("simulate", str(config), "--shard", f"{i}/2"))
    t0 = time.monotonic()
    proc = run("merge", str(config), ranks=2, env={"XRM_FAULT": "merge.read@1"})
    _ends_with_rank1s_fault(proc, "merge.read", time.monotonic() - t0)
    assert len(store.find_shards(path)) == 2
    again = ok(run("merge", str(config), ranks=2))
    assert "merged 2 shard files" in again.stdout and "complete" in again.stdout
    assert_identical(path, reference["data"])


def _rank_process(proc: subprocess.Popen, rank: int) -> psutil.Process | None:
    for child in psutil.Process(proc.pid).children(recursive=True):
        try:
            # the ranks, not hydra's proxy: only they carry PMI_RANK
            if child.environ().get("PMI_RANK") == str(rank):
                return child
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.mark.mpi
def test_interrupt_of_one_rank_mid_run_aborts_the_job(project, reference):
    """SIGINT to rank 1 alone while both compute: rank 1 reports it and aborts the job; rank 0
    does not wait for it forever, and the file stays readable with only final points done."""
    config = make_config(project, "interrupted", chunk_size="2")
    path = load_config(config).grid_path
    sent, err = False, ""
    for attempt in range(4):
        args = [_mpiexec(), "-n", "2", XRMODIFIER, "simulate", str(config)]
        proc = subprocess.Popen(
            args + (["--overwrite"] if attempt else []),
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        sent = False
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            # early in the run (the first third of the points), so rank 1 is still computing
            if (
                path.exists()
                and 2 <= _done_count(path) < 24
                and (rank1 := _rank_process(proc, 1)) is not None
            ):
                rank1.send_signal(signal.SIGINT)
                sent = True
                break
            time.sleep(0.01)
        if not sent:
            if proc.poll() is None:
                _kill_all(proc)
            proc.communicate()
            continue
        try:
            _, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_all(proc)
            pytest.fail("the job hung after one rank was interrupted")
        if proc.returncode != 0 or "interrupted" in err:
            break  # the signal arrived while rank 1 worked: what this test is about
        # rank 1 had already finished its share when the signal came: try again
    assert sent, "the run always finished before rank 1 could be interrupted"
    assert proc.returncode != 0
    # rank 1 reports with its number: "interrupted" (KeyboardInterrupt), or the error a C
    # extension turned the signal into when it landed inside one (h5py, numpy)
    assert "xrmodifier: rank 1: interrupted" in err or "rank 1:" in err, (proc.returncode, err)
    partial = store.load_grid(path, allow_incomplete=True)
    for name in ("t_fit_orig", "curve_mod"):
        got = getattr(partial, name)[partial.done]
        assert got.tobytes() == reference["data"][name][partial.done].tobytes(), name


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
