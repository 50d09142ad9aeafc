"""MPI for every stage: the world communicator and collective error handling.

One failing rank ends the whole job with its message: :func:`fail_fast` turns an exception on
any rank into an abort of every rank (the others would otherwise wait forever in the next
collective) after printing the error with the rank number; :func:`agree` runs a step on every
rank and, when it fails everywhere with the same kind of user error, ends the run cleanly on
all ranks (exit 2); :func:`on_root` runs a step on rank 0 and shares its value or its error.
mpi4py is imported only when the launcher started several ranks.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.runtime.environment import JobEnvironment

T = TypeVar("T")


def world_comm(env: JobEnvironment) -> Any:
    """COMM_WORLD when the launcher started several ranks, else None (no MPI at all)."""
    if env.size <= 1:
        return None
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - mpi4py is a dependency
        raise UserError(
            f"started as rank {env.rank} of {env.size} but mpi4py does not import ({exc})"
        ) from None
    comm = MPI.COMM_WORLD
    if comm.size != env.size:
        raise UserError(
            f"the launcher started {env.size} processes but MPI sees {comm.size}: mpi4py was "
            "built against a different MPI than this mpiexec/srun (check `which mpiexec` and "
            "`python -c 'import mpi4py; print(mpi4py.get_config())'`)"
        )
    return comm


class Agreed(UserError):
    """A UserError every rank raises at the same step: it ends the run without an abort."""


def _agreed(message: str, where: str | None) -> Agreed:
    return Agreed(message, where)


def on_root(comm: Any, fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 and give its value to every rank; its UserError is raised on all."""
    if comm is None:
        return fn()
    payload: tuple[str, Any] | None = None
    if comm.rank == 0:
        try:
            payload = ("ok", fn())
        except UserError as exc:
            payload = ("error", (exc.message, exc.where))
        except BaseException as exc:
            abort(comm, exc)
    wait_politely(comm)
    payload = comm.bcast(payload, root=0)
    if payload[0] == "error":
        raise _agreed(*payload[1])
    return payload[1]


def agree(comm: Any, fn: Callable[[], T]) -> T:
    """Run ``fn`` on every rank. If it fails everywhere with a UserError, raise that on all
    ranks; if it fails on some ranks only (or not with a UserError), abort the job."""
    if comm is None:
        return fn()
    try:
        value, outcome = fn(), None
    except UserError as exc:
        value, outcome = None, ("user", exc.message, exc.where, str(exc))
    except Exception as exc:
        value, outcome = (
            None,
            ("bug", f"{exc.__class__.__name__}: {exc}", None, traceback.format_exc()),
        )
    outcomes = comm.allgather(outcome)
    if all(o is None for o in outcomes):
        return value
    if all(o is not None and o[0] == "user" for o in outcomes):
        raise _agreed(outcome[1], outcome[2])
    if comm.rank == 0:
        text = "".join(
            f"xrmodifier: error: rank {r}: {o[3]}\n"
            for r, o in enumerate(outcomes)
            if o is not None
        )
        _write_then_abort(
            comm, text, 2 if all(o is None or o[0] == "user" for o in outcomes) else 1
        )
    time.sleep(60)  # rank 0 is aborting the job
    raise RuntimeError("unreachable: the job was aborted")  # pragma: no cover


def abort(comm: Any, exc: BaseException) -> None:
    """Print ``exc`` with this rank's number and abort every rank of the job."""
    rank = comm.rank
    if isinstance(exc, UserError):
        text, code = f"xrmodifier: error: rank {rank}: {exc}\n", exc.exit_code
    elif isinstance(exc, KeyboardInterrupt):
        text, code = f"xrmodifier: rank {rank}: interrupted\n", 130
    else:
        tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
        text = f"{tb}xrmodifier: error: rank {rank}: {exc.__class__.__name__}: {exc}\n"
        code = 1
    _write_then_abort(comm, text, code)


def _write_then_abort(comm: Any, text: str, code: int) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()
    # the launcher forwards our stderr through a pipe; an immediate abort can tear the job
    # down before the message gets through, leaving the user with no reason at all
    time.sleep(0.5)
    comm.Abort(code)


@contextmanager
def fail_fast(comm: Any) -> Iterator[None]:
    """Turn an exception on one rank into an abort of all ranks (others would wait forever)."""
    try:
        yield
    except Agreed:
        raise
    except BaseException as exc:
        if comm is None:
            raise
        abort(comm, exc)


def wait_politely(comm: Any) -> None:
    """A barrier that sleeps while it waits: MPICH spins a core in blocking calls, which on a
    shared or oversubscribed node slows the ranks that still compute."""
    if comm is None:
        return
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.005)


def allsum(comm: Any, value: int) -> int:
    return value if comm is None else int(comm.allreduce(value))


def fault_point(name: str, comm: Any) -> None:
    """Test hook: fail here on the rank that ``XRM_FAULT="NAME@RANK"`` names.

    Parameters
    ----------
    name : str
        This call site's name (e.g. ``"invert.starts"``).
    comm : mpi4py communicator or None
        The job's communicator (None: one process, rank 0).

    Raises
    ------
    RuntimeError
        ``"injected fault at NAME on rank R"`` when ``XRM_FAULT`` names this site and rank.
    """
    spec = os.environ.get("XRM_FAULT", "")
    site, _, rank = spec.rpartition("@")
    here = comm.rank if comm is not None else 0
    if site == name and rank.strip() == str(here):
        raise RuntimeError(f"injected fault at {name} on rank {here}")
