"""MPI for every stage: the world communicator and collective error handling.

One failing rank ends the whole job with its message: :func:`fail_fast` turns an exception on
any rank into an abort of every rank (the others would otherwise wait forever in the next
collective) after printing the error with the rank number; :func:`agree` runs a step on every
rank and, when it fails everywhere with the same kind of user error, ends the run cleanly on
all ranks (exit 2); :func:`on_root` runs a step on rank 0 and shares its value or its error.
:func:`fault_point` is the test hook that fails one chosen rank at a named point
(``XRM_FAULT="NAME@RANK"``), so that the tests can check that every MPI stage ends the whole
job with that rank's message instead of hanging. :func:`node_share` tells how many ranks
share this node and how many cores they hold together (thread-pool sizing).
mpi4py is imported only when the launcher started several ranks.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from xrmodifier_hpc.errors import RESUME_HINT, Terminated, UserError
from xrmodifier_hpc.runtime.environment import JobEnvironment

T = TypeVar("T")


def world_comm(env: JobEnvironment) -> Any:
    """COMM_WORLD when the launcher started several ranks, else None (no MPI at all).

    Parameters
    ----------
    env : JobEnvironment
        From :func:`~xrmodifier_hpc.runtime.environment.detect`.

    Returns
    -------
    mpi4py.MPI.Comm or None

    Raises
    ------
    UserError
        When mpi4py does not import, or sees another number of ranks than the launcher
        started (mpi4py built against another MPI).
    """
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
    """Run ``fn`` on rank 0 and give its value to every rank; its UserError is raised on all.

    Parameters
    ----------
    comm : mpi4py communicator or None
        Every rank must call this (None: just ``fn()``).
    fn : callable
        The step; its value must be picklable.

    Returns
    -------
    object
        ``fn()``'s value, on every rank.

    Raises
    ------
    Agreed
        On every rank, when ``fn`` raised a UserError on rank 0. Any other exception on
        rank 0 aborts the job with its message.
    """
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
    """Run ``fn`` on every rank and agree on the outcome.

    Parameters
    ----------
    comm : mpi4py communicator or None
        Every rank must call this (None: just ``fn()``).
    fn : callable
        The step, run on every rank.

    Returns
    -------
    object
        This rank's ``fn()`` value, when it succeeded on every rank.

    Raises
    ------
    Agreed
        On every rank, when ``fn`` raised a UserError on every rank (rank 0's message).
        When it failed on some ranks only, or not with a UserError, rank 0 prints every
        failing rank's message (``xrmodifier: error: rank R: ...``) and aborts the job (exit
        code 2 if they were all user errors, else 1).
    """
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
    """Print ``exc`` with this rank's number and abort every rank of the job.

    Parameters
    ----------
    comm : mpi4py communicator
        The job's communicator (``MPI_Abort`` on it).
    exc : BaseException
        A UserError (one line, exit 2), Terminated (SIGTERM, exit 143), KeyboardInterrupt
        (exit 130) or anything else (traceback, exit 1).
    """
    rank = comm.rank
    if isinstance(exc, UserError):
        text, code = f"xrmodifier: error: rank {rank}: {exc}\n", exc.exit_code
    elif isinstance(exc, Terminated):
        text, code = f"xrmodifier: rank {rank}: terminated (SIGTERM){RESUME_HINT}\n", 143
    elif isinstance(exc, KeyboardInterrupt):
        text, code = f"xrmodifier: rank {rank}: interrupted{RESUME_HINT}\n", 130
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
    """Turn an exception on one rank into an abort of all ranks (others would wait forever).

    Parameters
    ----------
    comm : mpi4py communicator or None
        None: exceptions pass through unchanged.

    Yields
    ------
    None
        The body runs inside; an :class:`Agreed` error passes through (every rank raises it).
    """
    try:
        yield
    except Agreed:
        raise
    except BaseException as exc:
        if comm is None:
            raise
        abort(comm, exc)


def wait_politely(comm: Any) -> None:
    """Wait for every rank in a barrier that sleeps while it waits.

    MPICH spins a core in blocking calls, which on a shared or oversubscribed node slows the
    ranks that still compute.

    Parameters
    ----------
    comm : mpi4py communicator or None
        None: returns at once.
    """
    if comm is None:
        return
    request = comm.Ibarrier()
    while not request.Test():
        time.sleep(0.005)


def allsum(comm: Any, value: int) -> int:
    """Sum ``value`` over every rank (collective).

    Parameters
    ----------
    comm : mpi4py communicator or None
        None: ``value`` itself.
    value : int
        This rank's count.

    Returns
    -------
    int
    """
    return value if comm is None else int(comm.allreduce(value))


#: the environment variable of :func:`fault_point`: ``NAME@RANK``
FAULT_VAR = "XRM_FAULT"


def fault_point(name: str, comm: Any) -> None:
    """Fail here on one chosen rank: the test hook for "an error on rank R only".

    Parameters
    ----------
    name : str
        The point's name, ``"<stage>.<step>"`` (``"simulate.chunk"``, ``"merge.read"``).
    comm : mpi4py communicator or None
        The job's communicator (None: a single process, rank 0).

    Raises
    ------
    RuntimeError
        ``"injected fault at NAME on rank R"`` when the environment variable ``XRM_FAULT``
        is ``"NAME@R"`` and this process is rank R; nothing happens otherwise.
    UserError
        When ``XRM_FAULT`` is set but not of the form ``NAME@RANK``.
    """
    spec = os.environ.get(FAULT_VAR)
    if not spec:
        return
    point, at, rank_text = spec.rpartition("@")
    if not at or not point or not rank_text.strip().isdigit():
        raise UserError(f"expected NAME@RANK such as simulate.chunk@1, got {spec!r}", FAULT_VAR)
    rank = comm.rank if comm is not None else 0
    if point == name and int(rank_text) == rank:
        raise RuntimeError(f"injected fault at {name} on rank {rank}")


@dataclass(frozen=True)
class NodeShare:
    """The ranks that share this process's node (an MPI shared-memory split).

    Attributes
    ----------
    ranks : int
        Ranks of the communicator on this node (this one included).
    cpus : int
        Logical CPUs in the union of their affinity masks.
    """

    ranks: int
    cpus: int


def node_share(comm: Any, cpus: Iterable[int]) -> NodeShare | None:
    """Ranks on this node and the CPUs they may use together (collective over ``comm``).

    Parameters
    ----------
    comm : mpi4py communicator or None
        Every rank of ``comm`` must call this (it splits ``comm`` by shared memory,
        ``MPI_COMM_TYPE_SHARED``, and gathers the masks within each node).
    cpus : iterable of int
        This rank's CPU affinity mask.

    Returns
    -------
    NodeShare or None
        None without a communicator.
    """
    if comm is None:
        return None
    from mpi4py import MPI

    node = comm.Split_type(MPI.COMM_TYPE_SHARED)
    try:
        masks = node.allgather(sorted(cpus))
        return NodeShare(node.size, len(set().union(*map(set, masks))))
    finally:
        node.Free()
