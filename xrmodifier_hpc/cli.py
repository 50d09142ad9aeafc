"""The ``xrmodifier`` command: argument parsing and error-to-exit-code mapping only.

Each subcommand calls the stage function of the same name. A :class:`UserError` (bad config,
bad file, bad option) prints one line and exits with code 2; argparse errors exit 2 too.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from . import __version__
from .environment import detect
from .errors import UserError

log = logging.getLogger("xrmodifier")


# --------------------------------------------------------------------------------------------
# init / check
# --------------------------------------------------------------------------------------------


def _init_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("init", help="write an example config and a synthetic telescope pair")
    p.add_argument("directory", type=Path, help="folder to create (config.toml, instruments/)")
    p.add_argument("--force", action="store_true", help="overwrite an existing config.toml")
    p.set_defaults(func=_run_init)


def _run_init(args: argparse.Namespace) -> int:
    from .scaffold import init

    path = init(args.directory, force=args.force)
    print(f"wrote {path} and {path.parent / 'instruments'}/ (synthetic reference/target pair)")
    return 0


def _check_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("check", help="validate a config and print what it describes")
    p.add_argument("config", type=Path)
    p.set_defaults(func=_run_check)


def _run_check(args: argparse.Namespace) -> int:
    from .config import load_config
    from .grid import Grid

    cfg = load_config(args.config)
    grid = Grid.from_config(cfg)
    summary = {
        "config": str(cfg.path),
        "modifier": cfg.modifier.family,
        "parameters": {
            n: [float(a.min()), float(a.max()), int(a.size)]
            for n, a in zip(grid.param_names, grid.param_axes)
        },
        "t_true": [
            float(grid.t_true_axis.min()),
            float(grid.t_true_axis.max()),
            int(grid.t_true_axis.size),
        ],
        "grid_points": grid.n_points,
        "realisations": cfg.simulation.realisations,
        "backend": cfg.simulation.backend,
        "workdir": str(cfg.workdir),
    }
    print(json.dumps(summary, indent=2))
    return 0


# --------------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------------

PARSERS = (_init_parser, _check_parser)


def build_parser() -> argparse.ArgumentParser:
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
    parser = build_parser()
    args = parser.parse_args(argv)
    env = detect()
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format=("%(asctime)s " if not env.interactive else "")
        + (f"[rank {env.rank}] " if env.size > 1 else "")
        + "%(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        if env.rank == 0 or env.size == 1:
            print(f"xrmodifier: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("xrmodifier: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
