"""Multi-start optimisation: a space-filling start design, L-BFGS-B from each start, merging.

``n_starts`` scrambled Sobol (Owen 1998) or Latin-hypercube (McKay, Beckman & Conover 1979)
points in the unit cube, each minimised by L-BFGS-B (Byrd, Lu, Nocedal & Zhu 1995; bounds
respected) on torch gradients, in unit coordinates. Starts that converge to the same point
(max |delta u| below ``merge_tol``: a fraction of each parameter's range, in log for the
parameters whose grid is geometric) are one optimum. A start's result is a dict::

    {"start": i, "u0": (d,), "u": (d,), "fun": float, "success": bool, "nit": int,
     "nfev": int, "message": str}

and a merged optimum ``{"u": (d,), "fun": float, "starts": [i, ...], "success": bool}``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from xrmodifier_hpc.inference.objectives import Objectives


def start_points(n: int, d: int, design: str, seed: int) -> np.ndarray:
    """``n`` starting points in the unit cube.

    Parameters
    ----------
    n, d : int
        Number of points and dimension.
    design : str
        ``"sobol"`` (scrambled Sobol sequence) or ``"lhs"`` (Latin hypercube), from
        ``scipy.stats.qmc``.
    seed : int
        The design's random seed (the same design on every MPI rank).

    Returns
    -------
    ndarray, shape (n, d)
        In [0, 1).

    Raises
    ------
    ValueError
        For an unknown design.
    """
    from scipy.stats import qmc

    if design == "sobol":
        sampler = qmc.Sobol(d, scramble=True, rng=seed)
        with warnings.catch_warnings():
            # balance is best for powers of 2, but any n is a valid low-discrepancy design
            warnings.simplefilter("ignore", UserWarning)
            return sampler.random(n)
    if design == "lhs":
        return qmc.LatinHypercube(d, rng=seed).random(n)
    raise ValueError(f"unknown start design {design!r}")


def optimise_from(
    fun: Callable[[np.ndarray], tuple[float, np.ndarray]], u0: np.ndarray, maxiter: int
) -> dict[str, Any]:
    """Minimise ``fun`` from ``u0`` with L-BFGS-B inside the unit cube.

    Parameters
    ----------
    fun : callable
        ``f(u (d,)) -> (value, gradient (d,))`` (:meth:`Objectives.unit_function`).
    u0 : ndarray, shape (d,)
        Start, unit coordinates.
    maxiter : int
        Iteration limit.

    Returns
    -------
    dict
        ``u`` (d,) the end point, ``fun``, ``success``, ``nit``, ``nfev``, ``message``
        (``scipy.optimize.minimize``'s; ftol 1e-12, gtol 1e-8).
    """
    from scipy.optimize import minimize

    res = minimize(
        fun,
        u0,
        jac=True,
        method="L-BFGS-B",
        bounds=[(0.0, 1.0)] * u0.size,
        options={"maxiter": maxiter, "ftol": 1e-12, "gtol": 1e-8},
    )
    return {
        "u": np.clip(res.x, 0.0, 1.0),
        "fun": float(res.fun),
        "success": bool(res.success),
        "nit": int(res.nit),
        "nfev": int(res.nfev),
        "message": str(res.message),
    }


def run_starts(
    objectives: Objectives,
    name: str,
    starts: np.ndarray,
    indices: list[int],
    maxiter: int,
    progress: Callable[[int], None] | None = None,
) -> list[dict[str, Any]]:
    """Optimise the starts ``indices`` (rows of ``starts``).

    Parameters
    ----------
    objectives : Objectives
        The data set.
    name : str
        The objective to minimise (a registered name).
    starts : ndarray, shape (n_starts, d)
        The whole start design (unit coordinates).
    indices : list of int
        The rows to run here (an MPI rank's share).
    maxiter : int
        L-BFGS-B iteration limit.
    progress : callable, optional
        Called with 1 after each start (e.g. ``runtime.progress.Progress.update``).

    Returns
    -------
    list of dict
        One result per start (module docstring), in ``indices`` order.
    """
    fun = objectives.unit_function(name)
    out = []
    for i in indices:
        res = optimise_from(fun, np.asarray(starts[i], dtype=np.float64), maxiter)
        res["start"] = int(i)
        res["u0"] = np.asarray(starts[i], dtype=np.float64)
        out.append(res)
        if progress is not None:
            progress(1)
    return out


def merge_optima(results: list[dict[str, Any]], tol: float) -> list[dict[str, Any]]:
    """Group starts whose optima differ by less than ``tol`` in every unit coordinate.

    Parameters
    ----------
    results : list of dict
        Start results with ``start``, ``u``, ``fun``, ``success``.
    tol : float
        Fraction of each parameter's range (log range for geometric-grid parameters).

    Returns
    -------
    list of dict
        Merged optima, best (lowest ``fun``) first; each keeps its best member's ``u`` and
        ``fun``, lists its ``starts`` (sorted) and is ``success`` when any member is.
    """
    order = sorted(results, key=lambda r: (r["fun"], r["start"]))
    groups: list[dict[str, Any]] = []
    for r in order:
        for g in groups:
            if np.max(np.abs(g["u"] - r["u"])) < tol:
                g["starts"].append(r["start"])
                g["success"] = g["success"] or r["success"]
                break
        else:
            groups.append(
                {"u": r["u"], "fun": r["fun"], "starts": [r["start"]], "success": r["success"]}
            )
    for g in groups:
        g["starts"].sort()
    return groups
