"""Progress of long work.

A tqdm bar on a terminal, else a log line every few seconds (batch jobs), and a channel that
carries every MPI rank's counts to rank 0's reporter.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from xrmodifier_hpc.runtime.environment import JobEnvironment

log = logging.getLogger("xrmodifier")

_TAG_PROGRESS = 41
_TAG_FINISHED = 42
#: seconds between progress lines when no terminal watches (batch jobs)
LOG_EVERY = 10.0


class Progress:
    """Points done / total, rate and ETA.

    A tqdm bar on a terminal, else a log line every ``every`` seconds (and one at the end).

    Parameters
    ----------
    total : int
        Points in all.
    initial : int
        Points done before this run (not counted in the rate).
    interactive : bool
        Draw a tqdm bar (a person watches a terminal).
    every : float
        Seconds between log lines without a bar.
    label : str
        What the line starts with.
    """

    def __init__(
        self,
        total: int,
        initial: int = 0,
        *,
        interactive: bool = False,
        every: float = LOG_EVERY,
        label: str = "simulate",
    ) -> None:
        self.total = total
        self.initial = initial
        self.done = initial
        self.every = every
        self.label = label
        self.start = time.monotonic()
        self._last = self.start
        self.bar = None
        if interactive:
            from tqdm import tqdm

            self.bar = tqdm(
                total=total,
                initial=initial,
                unit="pt",
                desc=label,
                dynamic_ncols=True,
                smoothing=0.05,
            )

    def update(self, n: int) -> None:
        """Count ``n`` more points done (a bar moves, or a line is logged when due).

        Parameters
        ----------
        n : int
            Points finished since the last update.
        """
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
        else:
            self.tick()

    def tick(self) -> None:
        """Log a line if ``every`` seconds have passed since the last one."""
        now = time.monotonic()
        if self.bar is None and now - self._last >= self.every:
            self._last = now
            log.info("%s", self.line(now))

    def line(self, now: float | None = None) -> str:
        """Return the progress line: points, percent, rate (new points only) and ETA.

        Parameters
        ----------
        now : float, optional
            ``time.monotonic()`` reading to measure the rate at (default: now).

        Returns
        -------
        str
            ``LABEL: DONE/TOTAL points (P%), R points/s, ETA 1h02m03s`` (``?`` before the
            first point).
        """
        elapsed = (now or time.monotonic()) - self.start
        new = self.done - self.initial
        rate = new / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _duration(left / rate) if rate > 0 else "?"
        pct = 100.0 * self.done / self.total if self.total else 100.0
        return (
            f"{self.label}: {self.done}/{self.total} points ({pct:.1f}%), "
            f"{rate:.1f} points/s, ETA {eta}"
        )

    def close(self) -> None:
        """Close the bar, or log the final line."""
        if self.bar is not None:
            self.bar.close()
        else:
            log.info("%s", self.line())


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s" if m else f"{s}s"


class ProgressChannel:
    """Counts from every rank to rank 0's :class:`Progress`.

    Ranks send a small message after each chunk (non-blocking); rank 0 drains them between
    its own chunks and, once done, until every rank has sent its 'finished' message.

    Parameters
    ----------
    comm : mpi4py.MPI.Comm or None
        The communicator of the ranks; None for a single process.
    pending : int
        Points this job still evaluates, over all ranks.
    already : int
        Points done before this run (resume).
    env : JobEnvironment
        The job's environment (whether a terminal watches).
    """

    def __init__(self, comm: Any, pending: int, already: int, env: JobEnvironment) -> None:
        self.comm = comm
        self.root = comm is None or comm.rank == 0
        self.requests: list[Any] = []
        self.finished = 0
        self.progress = (
            Progress(pending + already, already, interactive=env.interactive) if self.root else None
        )

    def report(self, n: int) -> None:
        """Count ``n`` points done by this rank (sent to rank 0 without waiting).

        Parameters
        ----------
        n : int
            Points finished since the last report.
        """
        if self.root:
            self.progress.update(n)
            self._drain()
        else:
            self.requests.append(self.comm.isend(n, dest=0, tag=_TAG_PROGRESS))
            # completed sends need no bookkeeping; keep the list short on long runs
            if len(self.requests) > 64:
                self.requests = [r for r in self.requests if not r.Test()]

    def _drain(self) -> None:
        if self.comm is None:
            return
        from mpi4py import MPI

        status = MPI.Status()
        while self.comm.iprobe(source=MPI.ANY_SOURCE, tag=MPI.ANY_TAG, status=status):
            msg = self.comm.recv(source=status.Get_source(), tag=status.Get_tag())
            if status.Get_tag() == _TAG_FINISHED:
                self.finished += 1
            else:
                self.progress.update(msg)

    def finish(self) -> None:
        """End this rank's reports; rank 0 waits (sleeping) until every rank has finished."""
        if not self.root:
            self.requests.append(self.comm.isend(None, dest=0, tag=_TAG_FINISHED))
            from mpi4py import MPI

            MPI.Request.waitall(self.requests)
            return
        others = self.comm.size - 1 if self.comm is not None else 0
        while True:
            self._drain()
            if self.finished >= others:
                break
            self.progress.tick()
            time.sleep(0.02)  # polite polling: a blocking MPI_Recv would spin a core
        self.progress.close()
