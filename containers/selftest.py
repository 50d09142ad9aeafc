"""The container's ``%test``: a tiny fakeit + fit through the chosen backend (XSPEC inside).

    python selftest.py [--backend xspec|native]

Writes the example project of ``xrmodifier init`` (synthetic telescope pair) to a temporary
folder, simulates two grid points in asimov mode (expected counts, no noise) through the
MODIFIED target response and fits them with the modified and the original ARF. Passes when
both fits converge, the modified-ARF fit returns the true temperature (within 1%), the
profile curve C(T) has its minimum next to it, and the backend reports a version. Exit code
0 on success, 1 with the reason otherwise. Outside the container the tests run it with
``--backend native`` so the script itself is known to work.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("xspec", "native"), default="xspec")
    args = parser.parse_args(argv)

    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.backends.base import STATUS_OK
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.config.grid import Grid
    from xrmodifier_hpc.errors import UserError
    from xrmodifier_hpc.stages.init import init

    with tempfile.TemporaryDirectory(prefix="xrm-selftest-") as tmp:
        cfg = load_config(init(Path(tmp) / "project"))
        grid = Grid.from_config(cfg)
        # one theta away from the identity, two true temperatures (keV)
        index = np.array([grid.n_points // 2, grid.n_points // 2 + 3])
        theta, t_true = grid.points(index)
        try:
            with make_backend(cfg, name=args.backend, mode="asimov", realisations=1) as backend:
                version = backend.version()
                res = backend.run(theta, t_true, index)
        except UserError as exc:
            print(f"selftest FAILED: {exc}", file=sys.stderr)
            return 1
        tgrid = cfg.simulation.fit_tgrid.array
    problems = []
    if not version:
        problems.append("the backend reports no version")
    if np.any(res.status != STATUS_OK):
        problems.append(f"fit status {res.status.tolist()} (0 = converged)")
    rel = np.abs(res.t_fit_mod[:, 0] / t_true - 1)
    if not np.all(rel < 0.01):
        problems.append(f"modified-ARF fit {res.t_fit_mod[:, 0]} keV vs true {t_true} keV")
    if res.curve_mod is not None:
        best = tgrid[np.argmin(res.curve_mod[:, 0], axis=-1)]
        spacing = np.exp(np.median(np.diff(np.log(tgrid))))
        if not np.all((best / t_true < spacing**1.5) & (t_true / best < spacing**1.5)):
            problems.append(f"profile minima at {best} keV, true {t_true} keV")
    summary = (
        f"{args.backend} ({version}): T_true {np.round(t_true, 3).tolist()} keV -> "
        f"T1' {np.round(res.t_fit_mod[:, 0], 3).tolist()}, "
        f"T1 {np.round(res.t_fit_orig[:, 0], 3).tolist()} keV"
    )
    if problems:
        print(f"selftest FAILED: {summary}: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"selftest ok: {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
