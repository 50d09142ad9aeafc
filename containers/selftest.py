"""The container's ``%test``: a tiny fakeit + fit through the chosen backend (XSPEC inside),
and with ``--gpu`` the GPU training prerequisites.

    python selftest.py [--backend xspec|native] [--gpu]

Writes the example project of ``xrmodifier init`` (synthetic telescope pair) to a temporary
folder, simulates two grid points in asimov mode (expected counts, no noise) through the
MODIFIED target response and fits them with the modified and the original ARF. Passes when
both fits converge, the modified-ARF fit returns the true temperature (within 1%), the
profile curve C(T) has its minimum next to it, and the backend reports a version. Exit code
0 on success, 1 with the reason otherwise. Outside the container the tests run it with
``--backend native`` so the script itself is known to work.

``--gpu`` (run it with ``apptainer exec --nv``) also checks what distributed GPU training
needs: a CUDA build of torch that sees a GPU, and an NCCL process group (one rank) whose
all-reduce on the GPU gives the right sum.
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
    parser.add_argument(
        "--gpu", action="store_true", help="also check CUDA torch and NCCL (apptainer exec --nv)"
    )
    args = parser.parse_args(argv)
    if args.gpu:
        problem = gpu_problem()
        if problem:
            print(f"selftest FAILED: {problem}", file=sys.stderr)
            return 1

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
    if args.gpu:
        import torch

        cuda = torch.version.cuda
        print(f"selftest ok: torch {torch.__version__} (CUDA {cuda}), NCCL all-reduce on the GPU")
    return 0


def gpu_problem() -> str | None:
    """None when torch is a CUDA build that sees a GPU and an NCCL all-reduce works there,
    else what is missing (one line)."""
    import os
    import socket

    import torch
    import torch.distributed as dist

    if not torch.version.cuda:
        return f"torch {torch.__version__} is a CPU-only build (the image's TORCH_INDEX)"
    if not torch.cuda.is_available():
        return "torch sees no CUDA device: run with `apptainer exec --nv` on a GPU node"
    if not dist.is_nccl_available():
        return "torch was built without NCCL"
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    try:
        dist.init_process_group("nccl", rank=0, world_size=1)
        value = torch.arange(4.0, device="cuda")
        dist.all_reduce(value)
        torch.cuda.synchronize()
        if value.tolist() != [0.0, 1.0, 2.0, 3.0]:
            return f"NCCL all-reduce gave {value.tolist()}"
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return f"NCCL process group failed: {exc.__class__.__name__}: {exc}"
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
    return None


if __name__ == "__main__":
    sys.exit(main())
