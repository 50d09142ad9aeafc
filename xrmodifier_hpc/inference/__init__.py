"""Inversion statistics on top of a torch emulator: find theta from observed temperature pairs.

Pure functions and small classes, no files and no MPI (``stages.invert`` loads, distributes
and writes). In the order the inversion uses them:

* :mod:`.view`: :class:`EmulatorView`, the emulator in float64 with its bounds, unit
  coordinates and a fixed log-T grid carried to any temperature by one spline matrix;
* :mod:`.likelihood`: :class:`Likelihood`, log L(theta) with each source's true temperature
  marginalised by quadrature (DESIGN.md section 2);
* :mod:`.objectives`: :class:`Objectives`, the corrected telescope-1 temperatures and the
  registered objectives (``registry.OBJECTIVES``: likelihood, seed_loss, gaussian_kl,
  wasserstein);
* :mod:`.optimise`: the start design, L-BFGS-B from each start, merging the optima;
* :mod:`.posterior`: Laplace approximations at the modes, emcee sampling, summaries;
* :mod:`.arf_posterior`: the pointwise posterior median and 16/84% bands of m(E) on any
  energy grid, and ensembles of posterior draws (the corrected ARFs users take home);
* :mod:`.identifiability`: parameters at a grid bound, posterior correlations, poorly
  constrained directions, the energy range the data constrain.

The names below are re-exported here for convenience.
"""

from __future__ import annotations

from xrmodifier_hpc.inference.likelihood import (
    Likelihood,
    Quadrature,
    build_quadrature,
    split_normal_logpdf,
)
from xrmodifier_hpc.inference.objectives import (
    CorrectedSources,
    Objectives,
    corrected_sources,
    corrected_t1,
    gaussian_kl,
    seed_loss,
    solve_t_star,
    wasserstein2,
)
from xrmodifier_hpc.inference.optimise import (
    merge_optima,
    optimise_from,
    run_starts,
    start_points,
)
from xrmodifier_hpc.inference.posterior import (
    Mode,
    Posterior,
    allocate_walkers,
    laplace_mode,
    likelihood_optima,
    sample_posterior,
    summarise,
)
from xrmodifier_hpc.inference.view import EmulatorView, spline_matrix
from xrmodifier_hpc.registry import OBJECTIVES

__all__ = [
    "OBJECTIVES",
    "CorrectedSources",
    "EmulatorView",
    "Likelihood",
    "Mode",
    "Objectives",
    "Posterior",
    "Quadrature",
    "allocate_walkers",
    "build_quadrature",
    "corrected_sources",
    "corrected_t1",
    "gaussian_kl",
    "laplace_mode",
    "likelihood_optima",
    "merge_optima",
    "optimise_from",
    "run_starts",
    "sample_posterior",
    "seed_loss",
    "solve_t_star",
    "spline_matrix",
    "split_normal_logpdf",
    "start_points",
    "summarise",
    "wasserstein2",
]
