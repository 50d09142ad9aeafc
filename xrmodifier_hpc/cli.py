"""The ``xrmodifier`` command: argument parsing and error-to-exit-code mapping only.

Each subcommand calls the stage function of the same name. A :class:`UserError` (bad config,
bad file, bad option) prints one line and exits with code 2; argparse errors exit 2 too.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from xrmodifier_hpc import __version__
from xrmodifier_hpc.errors import RESUME_HINT, Terminated, UserError
from xrmodifier_hpc.runtime.environment import detect
from xrmodifier_hpc.runtime.threads import THREADS_VAR

log = logging.getLogger("xrmodifier")


def _thread_count(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a positive number of threads, got {text!r}")
    return int(text)


def _add_threads(p: argparse.ArgumentParser) -> None:
    """``--threads N``: passed on as XRM_THREADS (which submitit jobs inherit too)."""
    p.add_argument(
        "--threads",
        type=_thread_count,
        default=None,
        metavar="N",
        help="BLAS/OpenMP and torch threads per process (default: the cores this process was "
        "granted, shared among the ranks on its node, or OMP_NUM_THREADS when set)",
    )


# --------------------------------------------------------------------------------------------
# init / check
# --------------------------------------------------------------------------------------------


def _init_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write an example config and a synthetic telescope pair")
    p.add_argument("directory", type=Path, help="folder to create (config.toml, instruments/)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    p.set_defaults(func=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.init import init

    path = init(args.directory, force=args.force)
    print(f"wrote {path} and {path.parent / 'instruments'}/ (synthetic reference/target pair)")
    return 0


def _check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check", help="validate a config and the files it names; print what it describes"
    )
    p.add_argument("config", type=Path)
    p.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.check import check

    print(json.dumps(check(args.config), indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# mock / invert
# --------------------------------------------------------------------------------------------


def _mock_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "mock", help="synthetic observations of both telescopes by the full forward model"
    )
    p.add_argument("config", type=Path)
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        default=None,
        help="observations CSV to write (default: WORKDIR/observations.csv)",
    )
    p.add_argument(
        "--theta",
        action="append",
        metavar="NAME=VALUE",
        default=None,
        help="true modifier parameter (repeatable; overrides [mock] theta)",
    )
    p.add_argument("--n-sources", type=int, default=None, help="overrides [mock] n_sources")
    p.add_argument("--seed", type=int, default=None, help="overrides [mock] seed")
    _add_threads(p)
    p.set_defaults(func=_run_mock)


def _run_mock(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.mock import mock, parse_theta_overrides

    result = mock(
        args.config,
        output=args.output,
        theta=parse_theta_overrides(args.theta),
        n_sources=args.n_sources,
        seed=args.seed,
    )
    print(
        f"wrote {result.observations.n} sources to {result.path} "
        f"(truth: {result.truth_path}; {len(result.dropped)} dropped)"
    )
    return 0


def _invert_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "invert", help="find theta: multi-start optimisation (MPI) and posterior sampling"
    )
    p.add_argument("config", type=Path)
    p.add_argument("observations", type=Path, help="CSV or FITS table: name,t0,t0_err,t1,t1_err")
    _add_threads(p)
    p.set_defaults(func=_run_invert)


def _run_invert(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.invert import format_summary, invert

    result = invert(args.config, args.observations)
    if result is not None:
        print(format_summary(result))
        print(f"wrote {result.corrected_arf} and result.json, posterior.npz beside it")
    return 0


def _apply_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply",
        help="put the inferred correction (posterior of RESULT.json) on other ARFs of the "
        "target instrument, each on its own energy grid",
    )
    p.add_argument("result", type=Path, help="result.json of `xrmodifier invert`")
    p.add_argument("arfs", type=Path, nargs="+", metavar="ARF", help="ARFs to correct (.gz ok)")
    p.add_argument("-o", "--output-dir", type=Path, required=True, help="folder for the outputs")
    p.add_argument(
        "--stat",
        choices=("median", "p16", "p84", "ensemble"),
        default="median",
        help="pointwise posterior statistic of m(E), or an ensemble of posterior draws "
        "(default median)",
    )
    p.add_argument("--draws", type=int, default=100, help="rows of an ensemble (default 100)")
    p.add_argument(
        "--force",
        action="store_true",
        help="apply even to an ARF whose TELESCOP/INSTRUME differ from the target's",
    )
    p.set_defaults(func=_run_apply)


def _run_apply(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.apply import apply

    for item in apply(
        args.result, args.arfs, args.output_dir, stat=args.stat, force=args.force, draws=args.draws
    ):
        print(item.describe())
    return 0


# --------------------------------------------------------------------------------------------
# fit
# --------------------------------------------------------------------------------------------


def _fit_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "fit", help="C-stat fit of one PHA spectrum with the native backend (prints JSON)"
    )
    p.add_argument("spectrum", type=Path, help="type-I PHA file")
    p.add_argument("--arf", type=Path, default=None, help="ARF (default: the PHA's ANCRFILE)")
    p.add_argument("--rmf", type=Path, default=None, help="RMF (default: the PHA's RESPFILE)")
    p.add_argument("--model", default="wabs*bremss", help="source model (default wabs*bremss)")
    p.add_argument(
        "--band",
        type=float,
        nargs=2,
        default=(0.5, 7.0),
        metavar=("LOW", "HIGH"),
        help="fitted band in keV (default 0.5 7.0)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        default=None,
        help="frozen parameter value, e.g. nH=0.05 (repeatable)",
    )
    p.add_argument("--temperature", default="kT", help="the free temperature parameter")
    p.add_argument(
        "--tgrid",
        type=float,
        nargs=3,
        default=None,
        metavar=("LOW", "HIGH", "N"),
        help="profile grid: N log-spaced keV values (default 0.08 80 256)",
    )
    p.add_argument("--curve", action="store_true", help="include the profile C(kT)")
    p.add_argument(
        "--allow-double-area",
        action="store_true",
        help="accept an ARF with a response whose matrix already includes the area",
    )
    p.add_argument(
        "--ignore-bad",
        action="store_true",
        help="also leave out QUALITY = 2 (dubious) channels, as XSPEC's `ignore bad`",
    )
    p.set_defaults(func=_run_fit)


def _run_fit(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.fit import fit, parse_set

    result = fit(
        args.spectrum,
        arf=args.arf,
        rmf=args.rmf,
        model=args.model,
        band=tuple(args.band),
        params=parse_set(args.set),
        curve=args.curve,
        temperature=args.temperature,
        tgrid=args.tgrid,
        allow_double_area=args.allow_double_area,
        ignore_bad=args.ignore_bad,
    )
    print(json.dumps(result))
    return 0


# --------------------------------------------------------------------------------------------
# simulate / merge
# --------------------------------------------------------------------------------------------


def _simulate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "simulate",
        help="evaluate the (theta, T_true) grid into WORKDIR/grid.h5 (mpiexec/srun for ranks)",
    )
    p.add_argument("config", type=Path)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard existing results (grid.h5 and shards) and start again",
    )
    p.add_argument(
        "--shards", action="store_true", help="one shard file per rank, merged by rank 0 at the end"
    )
    p.add_argument(
        "--shard",
        metavar="I/N",
        default=None,
        help="compute shard I of N only (Slurm arrays; default from "
        "SLURM_ARRAY_TASK_ID/SLURM_ARRAY_TASK_COUNT), then `xrmodifier merge`",
    )
    _add_threads(p)
    p.set_defaults(func=_run_simulate)


def _run_simulate(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.simulate import simulate

    summary = simulate(args.config, overwrite=args.overwrite, shards=args.shards, shard=args.shard)
    if detect().rank == 0:
        print(summary.describe())
    return 0


def _merge_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="join the shard files of `simulate --shard` into grid.h5")
    p.add_argument("config", type=Path)
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a grid.h5 or shards left by a different config",
    )
    p.set_defaults(func=_run_merge)


def _run_merge(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.merge import merge

    summary = merge(args.config, overwrite=args.overwrite)
    if detect().rank == 0:
        print(summary.describe())
    return 0


def _train_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train the emulator on WORKDIR/grid.h5 (here, or as a submitit job: Slurm DDP, "
        "local processes, debug)",
    )
    p.add_argument("config", type=Path)
    p.add_argument(
        "--executor",
        choices=("slurm", "local", "debug"),
        default=None,
        help="submit with submitit: slurm (resources from [slurm]), local "
        "(--tasks processes here) or debug (this process); default: train here",
    )
    p.add_argument(
        "--tasks",
        type=int,
        default=None,
        help="processes for --executor local (DDP over gloo, or NCCL with GPUs)",
    )
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="print the job id and return instead of waiting for the job",
    )
    p.add_argument(
        "--restart",
        action="store_true",
        help="discard a previous training checkpoint instead of resuming from it",
    )
    p.add_argument(
        "--epochs-this-run",
        type=int,
        default=None,
        metavar="N",
        help="stop after N epochs, keeping the checkpoint (run again to continue)",
    )
    _add_threads(p)
    p.set_defaults(func=_run_train)


def _run_train(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.stages.train import describe_metrics, train

    cfg = load_config(args.config)
    out = train(
        cfg,
        executor=args.executor,
        tasks=args.tasks,
        wait=not args.no_wait,
        restart=args.restart,
        epochs_this_run=args.epochs_this_run,
    )
    if args.no_wait:
        print(f"submitted {out.executor} job {out.job_id}; logs in {out.log_folder}")
        return 0
    first = out.primary
    if first is None or first.get("rank", 0) != 0:
        return 0
    if not first["completed"]:
        print(
            f"stopped at epoch {first['epochs_run']}; the checkpoint is in {cfg.workdir}: "
            f"run `xrmodifier train {args.config}` again to continue"
        )
        return 0
    print(describe_metrics(out.metrics))
    print(f"emulator: {first['emulator_path']}\nmetrics:  {first['metrics_path']}")
    return 0


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


def _report_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report", help="figures (PNG) and a summary table from the artefacts, in WORKDIR/figures"
    )
    p.add_argument("config", type=Path)
    p.set_defaults(func=_run_report)


def _run_report(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.report import report

    summary = report(args.config)
    if summary is not None:
        print(summary.describe())
    return 0


# --------------------------------------------------------------------------------------------
# tabulate
# --------------------------------------------------------------------------------------------


def _tabulate_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tabulate",
        help="tabulate an XSPEC model over a parameter grid into an XSPEC table model "
        "(atable/mtable FITS) for the native backend; run inside the container",
    )
    p.add_argument("model", help="XSPEC model expression, e.g. apec or tbabs")
    p.add_argument("-o", "--output", type=Path, required=True, help="table-model FITS to write")
    p.add_argument(
        "--grid",
        action="append",
        metavar="NAME=SPEC",
        required=True,
        help="a tabulated parameter: NAME=log:LOW:HIGH:N, NAME=lin:LOW:HIGH:N or "
        "NAME=V1,V2,... (repeatable; the last varies fastest)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="NAME=VALUE",
        default=None,
        help="hold a parameter at a value (repeatable; others keep XSPEC's defaults)",
    )
    p.add_argument(
        "--energies",
        default=None,
        metavar="log|lin:LOW:HIGH:N",
        help="energy grid of the table, keV (default log:0.05:50:5000)",
    )
    p.add_argument("--abund", default="angr", help="XSPEC abundance table (default angr)")
    p.add_argument("--xsect", default="vern", help="XSPEC cross-sections (default vern)")
    p.add_argument("--name", default=None, help="MODLNAME (default: from the expression)")
    p.add_argument("--redshift", action="store_true", help="give the table a redshift parameter z")
    p.add_argument(
        "--backend",
        choices=("xspec", "native"),
        default="xspec",
        help="xspec (default) or native (one native component, no XSPEC needed)",
    )
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.set_defaults(func=_run_tabulate)


def _run_tabulate(args: argparse.Namespace) -> int:
    from xrmodifier_hpc.stages.tabulate import (
        parse_energies,
        parse_fixed,
        parse_grid_axis,
        tabulate,
    )

    summary = tabulate(
        args.model,
        args.output,
        [parse_grid_axis(item) for item in args.grid],
        fixed=parse_fixed(args.set),
        energies=parse_energies(args.energies) if args.energies else None,
        backend=args.backend,
        abund=args.abund,
        xsect=args.xsect,
        name=args.name,
        redshift=args.redshift,
        overwrite=args.overwrite,
    )
    if summary is not None:
        print(summary.describe())
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

PARSERS = (
    _init_parser,
    _check_parser,
    _mock_parser,
    _invert_parser,
    _apply_parser,
    _fit_parser,
    _simulate_parser,
    _merge_parser,
    _train_parser,
    _report_parser,
    _tabulate_parser,
)


def build_parser() -> argparse.ArgumentParser:
    """Build the ``xrmodifier`` argument parser: global options and one subcommand per stage.

    Returns
    -------
    argparse.ArgumentParser
        The parser; each subcommand sets ``func``, the handler :func:`main` calls.
    """
    parser = argparse.ArgumentParser(
        prog="xrmodifier",
        description="Find a parametric ARF correction that makes two X-ray telescopes agree.",
    )
    parser.add_argument("--version", action="version", version=f"xrmodifier {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in PARSERS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``xrmodifier`` command and map its errors to exit codes.

    A :class:`~xrmodifier_hpc.errors.UserError` is printed on one line (by rank 0 under MPI)
    and ends the command with its ``exit_code`` (2); Ctrl-C gives 130, SIGTERM 143 (each
    with a line saying so).

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        The exit status: the command's (0 on success), 2 for a user error, 130 when
        interrupted (SIGINT), 143 when terminated (SIGTERM).
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    env = detect()
    if getattr(args, "threads", None) is not None:
        os.environ[THREADS_VAR] = str(args.threads)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=("%(asctime)s " if not env.interactive else "")
        + (f"[rank {env.rank}] " if env.size > 1 else "")
        + "%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    previous = _on_sigterm_raise()
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if env.rank == 0 or env.size == 1:
            print(f"xrmodifier: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Terminated:
        print(f"xrmodifier: terminated (SIGTERM){RESUME_HINT}", file=sys.stderr)
        return Terminated.exit_code
    except KeyboardInterrupt:
        print(f"xrmodifier: interrupted{RESUME_HINT}", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


def _on_sigterm_raise() -> Any:
    """Make SIGTERM raise :class:`Terminated` in the main thread; return the old handler.

    Python's default for SIGTERM ends the process at once and silently; under ``mpirun`` the
    launcher then reported exit 0 for a job that had not finished (found by a new user's
    trial: ``kill -TERM`` on ``mpirun -n 2 xrmodifier simulate`` mid-run).
    """
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGTERM, _raise_terminated)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
