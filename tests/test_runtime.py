"""runtime: thread-pool sizing (affinity, Slurm, ranks per node, user variables, --threads),
launcher detection, and the MPI helpers' semantics (fault_point, agree, on_root) without MPI:
a stand-in communicator plays the other ranks. The real ``mpiexec -n 2`` runs are in
test_simulate.py."""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from conftest import XRMODIFIER

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.runtime import mpi, threads
from xrmodifier_hpc.runtime.environment import granted_cores, ranks_on_node
from xrmodifier_hpc.runtime.mpi import NodeShare
from xrmodifier_hpc.runtime.threads import plan_threads

TWO = {0, 1}
EIGHT = set(range(8))


# --------------------------------------------------------------------------------------------
# environment: cores granted, ranks on this node
# --------------------------------------------------------------------------------------------


def test_cores_come_from_the_affinity_mask_outside_slurm():
    grant = granted_cores({}, affinity=6)
    assert (grant.cores, grant.source, grant.per_task) == (6, "affinity", False)
    # SLURM_CPUS_PER_TASK counts only inside a Slurm job
    assert granted_cores({"SLURM_CPUS_PER_TASK": "4"}, affinity=6).source == "affinity"


def test_slurm_cpus_per_task_is_a_per_task_grant_capped_by_the_mask():
    env = {"SLURM_JOB_ID": "7", "SLURM_CPUS_PER_TASK": "4"}
    grant = granted_cores(env, affinity=32)
    assert (grant.cores, grant.source, grant.per_task) == (4, "SLURM_CPUS_PER_TASK", True)
    assert granted_cores(env, affinity=2).cores == 2
    assert granted_cores({**env, "SLURM_CPUS_PER_TASK": "x"}, affinity=3).source == "affinity"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, (1, "single process")),
        ({"MPI_LOCALNRANKS": "2"}, (2, "MPI_LOCALNRANKS")),
        ({"OMPI_COMM_WORLD_LOCAL_SIZE": "16"}, (16, "OMPI_COMM_WORLD_LOCAL_SIZE")),
        ({"LOCAL_WORLD_SIZE": "4"}, (4, "LOCAL_WORLD_SIZE")),
        # srun: this node's entry of the step's task layout
        (
            {
                "SLURM_STEP_NUM_TASKS": "7",
                "SLURM_STEP_TASKS_PER_NODE": "3(x2),1",
                "SLURM_NODEID": "2",
            },
            (1, "SLURM_STEP_TASKS_PER_NODE"),
        ),
        (
            {
                "SLURM_STEP_NUM_TASKS": "7",
                "SLURM_STEP_TASKS_PER_NODE": "3(x2),1",
                "SLURM_NODEID": "1",
            },
            (3, "SLURM_STEP_TASKS_PER_NODE"),
        ),
        (
            {"SLURM_STEP_NUM_TASKS": "8", "SLURM_NTASKS_PER_NODE": "4"},
            (4, "SLURM_NTASKS_PER_NODE"),
        ),
        # a batch script outside srun is one process whatever the job's task count
        ({"SLURM_NTASKS_PER_NODE": "4", "SLURM_JOB_ID": "9"}, (1, "single process")),
    ],
)
def test_ranks_on_node_from_the_launcher(env, expected):
    assert ranks_on_node(env) == expected


# --------------------------------------------------------------------------------------------
# sizing: precedence and sharing
# --------------------------------------------------------------------------------------------


def test_two_ranks_on_two_cores_get_one_thread_each():
    plan = plan_threads(environ={"MPI_LOCALNRANKS": "2"}, affinity=TWO)
    assert (plan.threads, plan.source, plan.cores, plan.ranks_on_node) == (1, "cores", 2, 2)
    assert plan.describe("openblas 1", 1, ranks=2) == (
        "threads: 1 per rank (2 cores granted by affinity, 2 ranks on this node); "
        "BLAS openblas 1, torch 1"
    )


def test_one_process_uses_every_core_of_its_mask():
    plan = plan_threads(environ={}, affinity=EIGHT)
    assert (plan.threads, plan.ranks_on_node, plan.dataloader_workers) == (8, 1, 4)
    assert plan.describe("openblas 8", None).startswith(
        "threads: 8 per process (8 cores granted by affinity, 1 process on this node)"
    )


def test_cores_are_shared_among_the_ranks_of_the_node():
    assert plan_threads(environ={"MPI_LOCALNRANKS": "4"}, affinity=EIGHT).threads == 2
    assert plan_threads(environ={"MPI_LOCALNRANKS": "3"}, affinity=EIGHT).threads == 2
    # more ranks than cores: never below one thread
    assert plan_threads(environ={"MPI_LOCALNRANKS": "16"}, affinity=TWO).threads == 1


def test_node_split_counts_bound_ranks_by_the_union_of_their_masks():
    # 8 ranks each bound to its own 4 of 32 cores: 4 threads each, not 32 // 8 of one mask
    plan = plan_threads(environ={}, affinity={0, 1, 2, 3}, node=NodeShare(ranks=8, cpus=32))
    assert (plan.threads, plan.cores, plan.ranks_on_node) == (4, 32, 8)
    assert plan.ranks_source == "MPI node split"
    # 2 ranks sharing the same 2-core mask
    assert plan_threads(environ={}, affinity=TWO, node=NodeShare(2, 2)).threads == 1
    # the launcher's variable is not needed with a node split, and not trusted over it
    env = {"MPI_LOCALNRANKS": "1"}
    assert plan_threads(environ=env, affinity=EIGHT, node=NodeShare(4, 8)).threads == 2


def test_a_stage_limit_caps_the_share_of_cores_but_not_the_users_choice():
    why = threads.FORWARD_MODEL_REASON
    plan = plan_threads(environ={}, affinity=EIGHT, max_threads=1, max_reason=why)
    assert (plan.threads, plan.source, plan.capped) == (1, "cores", why)
    assert plan.describe("openblas 1", None) == (
        "threads: 1 per process (8 cores granted by affinity, 1 process on this node; "
        f"{why}); BLAS openblas 1"
    )
    # a share already within the limit says nothing about it
    shared = plan_threads(environ={"MPI_LOCALNRANKS": "8"}, affinity=EIGHT, max_threads=1)
    assert (shared.threads, shared.capped) == (1, "")
    # what the user asked for is not limited
    for env in ({"OMP_NUM_THREADS": "4"}, {threads.THREADS_VAR: "4"}):
        mine = plan_threads(environ=env, affinity=EIGHT, max_threads=1, max_reason=why)
        assert (mine.threads, mine.capped) == (4, "")


def test_slurm_cpus_per_task_is_not_divided_again():
    env = {"SLURM_JOB_ID": "1", "SLURM_CPUS_PER_TASK": "4", "MPI_LOCALNRANKS": "8"}
    plan = plan_threads(environ=env, affinity=set(range(32)))
    assert (plan.threads, plan.per_task, plan.cores_source) == (4, True, "SLURM_CPUS_PER_TASK")
    assert "4 cores granted by SLURM_CPUS_PER_TASK per task" in plan.describe("x", None, 8)


def test_the_users_thread_variables_decide_when_set():
    env = {"OMP_NUM_THREADS": "3", "MPI_LOCALNRANKS": "2"}
    plan = plan_threads(environ=env, affinity=EIGHT)
    assert (plan.threads, plan.source, plan.from_user_vars) == (3, "OMP_NUM_THREADS", True)
    assert "OMP_NUM_THREADS=3 set by the user" in plan.describe("openblas 3", 3, 2)
    assert plan_threads(environ={"MKL_NUM_THREADS": "5"}, affinity=EIGHT).threads == 5
    # OpenMP's nested list: the outer level
    assert plan_threads(environ={"OMP_NUM_THREADS": "4,2"}, affinity=EIGHT).threads == 4
    with pytest.raises(UserError, match="OMP_NUM_THREADS"):
        plan_threads(environ={"OMP_NUM_THREADS": "many"}, affinity=EIGHT)


def test_values_written_for_a_child_process_are_not_the_users():
    env = {"OMP_NUM_THREADS": "4", "OPENBLAS_NUM_THREADS": "4", threads.AUTO_VAR: "4"}
    plan = plan_threads(environ={**env, "LOCAL_WORLD_SIZE": "2"}, affinity=EIGHT)
    assert (plan.threads, plan.source) == (4, "cores")  # 8 cores / 2 DDP tasks, sized anew
    changed = {**env, "OMP_NUM_THREADS": "2"}  # the user changed it afterwards: theirs
    assert plan_threads(environ=changed, affinity=EIGHT).source == "OMP_NUM_THREADS"


def test_threads_option_then_config_key_override_everything():
    env = {"OMP_NUM_THREADS": "3", threads.THREADS_VAR: "6", "MPI_LOCALNRANKS": "2"}
    plan = plan_threads(environ=env, affinity=TWO, config_threads=2, config_key="[emulator] x")
    assert (plan.threads, plan.source, plan.from_user_vars) == (6, "--threads", False)
    env.pop(threads.THREADS_VAR)
    plan = plan_threads(environ=env, affinity=TWO, config_threads=2, config_key="[emulator] x")
    assert (plan.threads, plan.source) == (2, "[emulator] x")
    assert "[emulator] x 2; 2 cores granted" in plan.describe("openblas 2", 2, 2)
    with pytest.raises(UserError, match="XRM_THREADS"):
        plan_threads(environ={threads.THREADS_VAR: "0"}, affinity=TWO)


def test_configure_limits_blas_now_and_sets_the_variables_for_later_libraries(monkeypatch, caplog):
    from threadpoolctl import threadpool_info

    # a copy of the environment: what configure writes must not reach later tests
    monkeypatch.setattr(os, "environ", dict(os.environ))
    for name in (*threads.USER_VARS, threads.AUTO_VAR, threads.THREADS_VAR):
        os.environ.pop(name, None)
    os.environ["MPI_LOCALNRANKS"] = "2"
    monkeypatch.setattr(threads, "affinity_cpus", lambda: frozenset(TWO))
    import numpy  # noqa: F401  (its BLAS must be loaded to be limited)

    try:
        with caplog.at_level(logging.INFO, logger="xrmodifier"):
            plan = threads.configure_threads(ranks=2)
        assert plan.threads == 1
        assert all(p["num_threads"] == 1 for p in threadpool_info() if p["user_api"] == "blas")
        assert os.environ["OMP_NUM_THREADS"] == "1" and os.environ[threads.AUTO_VAR] == "1"
        lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("threads:")]
        assert lines and lines[0].startswith(
            "threads: 1 per rank (2 cores granted by affinity, 2 ranks on this node); BLAS "
        )
    finally:
        threads.restore_threads()


def test_threads_option_refuses_a_count_below_one(tmp_path):
    """``xrmodifier simulate --threads 0`` is refused by the parser (exit 2, one line)."""
    proc = subprocess.run(
        [XRMODIFIER, "simulate", str(tmp_path / "c.toml"), "--threads", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2 and "positive number of threads" in proc.stderr


# --------------------------------------------------------------------------------------------
# MPI helpers without MPI: a stand-in communicator plays rank 0 of two
# --------------------------------------------------------------------------------------------


class Aborted(Exception):
    def __init__(self, code: int) -> None:
        self.code = code


class FakeComm:
    """Rank ``rank`` of ``size``; ``others`` is what the other ranks contribute to allgather."""

    def __init__(self, rank: int = 0, size: int = 2, others: list | None = None) -> None:
        self.rank, self.size = rank, size
        self.others = others if others is not None else [None] * (size - 1)
        self.root_value = None

    def allgather(self, value):
        out = list(self.others)
        out.insert(self.rank, value)
        return out

    def bcast(self, value, root=0):
        return value if self.rank == root else self.root_value

    def Ibarrier(self):
        class Done:
            def Test(self):
                return True

        return Done()

    def Abort(self, code):
        raise Aborted(code)


@pytest.fixture
def no_sleep(monkeypatch):
    monkeypatch.setattr(mpi.time, "sleep", lambda s: None)


def test_fault_point_fails_only_the_named_point_on_the_named_rank(monkeypatch):
    monkeypatch.delenv(mpi.FAULT_VAR, raising=False)
    mpi.fault_point("simulate.chunk", None)  # unset: nothing
    monkeypatch.setenv(mpi.FAULT_VAR, "simulate.chunk@1")
    mpi.fault_point("simulate.chunk", None)  # a single process is rank 0
    mpi.fault_point("simulate.chunk", FakeComm(rank=0))
    mpi.fault_point("merge.read", FakeComm(rank=1))
    with pytest.raises(RuntimeError, match=r"^injected fault at simulate.chunk on rank 1$"):
        mpi.fault_point("simulate.chunk", FakeComm(rank=1))
    monkeypatch.setenv(mpi.FAULT_VAR, "merge.read@0")
    with pytest.raises(RuntimeError, match="on rank 0"):
        mpi.fault_point("merge.read", None)
    monkeypatch.setenv(mpi.FAULT_VAR, "merge.read")
    with pytest.raises(UserError, match="NAME@RANK"):
        mpi.fault_point("merge.read", None)


def test_agree_and_on_root_without_a_communicator_just_run():
    assert mpi.agree(None, lambda: 3) == 3
    assert mpi.on_root(None, lambda: 4) == 4
    with pytest.raises(UserError, match="bad"):
        mpi.agree(None, lambda: _raise(UserError("bad")))


def _raise(exc):
    raise exc


def test_agree_returns_the_value_when_every_rank_succeeds():
    assert mpi.agree(FakeComm(others=[None]), lambda: "ok") == "ok"


def test_agree_raises_a_user_error_met_by_every_rank_on_every_rank():
    other = ("user", "no such file", "c.toml", "c.toml: no such file")
    with pytest.raises(mpi.Agreed, match="c.toml: no such file"):
        mpi.agree(FakeComm(others=[other]), lambda: _raise(UserError("no such file", "c.toml")))


def test_agree_aborts_with_the_failing_ranks_message_when_only_some_fail(capsys, no_sleep):
    other = ("user", "damaged", "target.arf", "target.arf: damaged")
    with pytest.raises(Aborted) as info:
        mpi.agree(FakeComm(others=[other]), lambda: "fine here")
    assert info.value.code == 2  # a user error, even if on one rank only
    err = capsys.readouterr().err
    assert "xrmodifier: error: rank 1: target.arf: damaged" in err and "rank 0" not in err
    bug = ("bug", "RuntimeError: boom", None, "Traceback ...\nRuntimeError: boom\n")
    with pytest.raises(Aborted) as info:
        mpi.agree(FakeComm(others=[bug]), lambda: "fine here")
    assert info.value.code == 1
    assert "rank 1: Traceback" in capsys.readouterr().err


def test_on_root_shares_rank0s_value_or_its_user_error():
    assert mpi.on_root(FakeComm(rank=0), lambda: [1, 2]) == [1, 2]
    other = FakeComm(rank=1)
    other.root_value = ("ok", "plan")
    assert mpi.on_root(other, lambda: pytest.fail("runs on rank 0 only")) == "plan"
    other.root_value = ("error", ("points missing", "grid.h5"))
    with pytest.raises(mpi.Agreed, match="grid.h5: points missing"):
        mpi.on_root(other, lambda: None)
    with pytest.raises(mpi.Agreed, match="refused"):
        mpi.on_root(FakeComm(rank=0), lambda: _raise(UserError("refused")))


def test_on_root_and_fail_fast_abort_on_a_bug(capsys, no_sleep):
    with pytest.raises(Aborted) as info:
        mpi.on_root(FakeComm(rank=0), lambda: _raise(ValueError("bad index")))
    assert info.value.code == 1
    assert "xrmodifier: error: rank 0: ValueError: bad index" in capsys.readouterr().err
    with pytest.raises(Aborted) as info, mpi.fail_fast(FakeComm(rank=1)):
        raise RuntimeError("injected fault at simulate.chunk on rank 1")
    assert info.value.code == 1
    assert "rank 1: RuntimeError: injected fault" in capsys.readouterr().err
    # an error every rank agreed on ends the run normally (exit 2 through the CLI)
    with pytest.raises(mpi.Agreed), mpi.fail_fast(FakeComm(rank=1)):
        raise mpi.Agreed("same everywhere")
    # without MPI, fail_fast only re-raises
    with pytest.raises(KeyError), mpi.fail_fast(None):
        raise KeyError("x")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
