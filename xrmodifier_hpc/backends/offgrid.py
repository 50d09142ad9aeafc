"""The off-grid check points: noise-free fits between the grid nodes, with the configured backend.

``simulate`` runs this after the grid is complete and stores the result in ``grid.h5``
(``io.store.write_offgrid``); ``train`` compares the emulator and grid interpolation with it,
so training never needs a backend (nor HEASoft when ``backend = "xspec"``). The points are
``config.grid.offgrid_design``'s; each is simulated once without noise (asimov: the expected
counts) through the modified response and fitted with the original and the modified one,
exactly like a grid point, from its own ``OFFGRID_STREAM`` random stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from xrmodifier_hpc.backends import Backend, make_backend
from xrmodifier_hpc.config import Config
from xrmodifier_hpc.config.grid import OFFGRID_STREAM


@dataclass(frozen=True)
class OffgridFits:
    """Asimov fits at a batch of off-grid points.

    Parameters
    ----------
    t_fit_orig, t_fit_mod : numpy.ndarray
        (n,) T1 (original response) and T1' (modified response), keV; NaN where not fitted.
    status : numpy.ndarray
        (n, 2) uint8 fit-status bits of the [original, modified] fits
        (``backends.base.STATUS_*``).
    backend : str
        Name of the backend that fitted.
    backend_version : str
        Its version string.
    """

    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    status: np.ndarray
    backend: str = ""
    backend_version: str = ""


def simulate_offgrid(
    cfg: Config,
    theta: np.ndarray,
    t_true: np.ndarray,
    index: np.ndarray,
    progress: Callable[[int], None] | None = None,
    grid_backend: Backend | None = None,
) -> OffgridFits:
    """Fit noise-free T1 and T1' at the given off-grid points with the configured backend.

    Parameters
    ----------
    cfg : Config
        The config whose grid was simulated (instruments, source, modifier, simulation
        settings and backend).
    theta : numpy.ndarray
        (n, d) modifier parameters in the family's order and units.
    t_true : numpy.ndarray
        (n,) true temperatures, keV.
    index : numpy.ndarray
        (n,) the points' numbers in the off-grid design (their random-stream indices).
    progress : callable, optional
        Called with the number of points finished after each chunk of
        ``[simulation] chunk_size`` points.
    grid_backend : Backend, optional
        The backend that simulated the grid, still open: what it can share with the check
        points' backend (:meth:`Backend.derive`: the native backend's response, fluxes and
        templates) is not built again. Left open.

    Returns
    -------
    OffgridFits
        One asimov realisation per point, with the backend's name and version (both ''
        when ``n`` is 0: no backend is built then).

    Raises
    ------
    UserError
        When the backend cannot be built here (e.g. PyXspec missing for ``xspec``).
    """
    n = int(np.asarray(t_true).size)
    t_fit_orig = np.full(n, np.nan)
    t_fit_mod = np.full(n, np.nan)
    status = np.zeros((n, 2), np.uint8)
    if n == 0:  # a rank without a share builds no backend
        return OffgridFits(t_fit_orig, t_fit_mod, status)
    chunk = max(1, cfg.simulation.chunk_size)
    settings = {"mode": "asimov", "realisations": 1, "stream": OFFGRID_STREAM, "curves": False}
    derived = grid_backend.derive(**settings) if grid_backend is not None else None
    with derived if derived is not None else make_backend(cfg, **settings) as backend:
        for start in range(0, n, chunk):
            sl = slice(start, min(n, start + chunk))
            res = backend.run(theta[sl], t_true[sl], index[sl])
            t_fit_orig[sl] = res.t_fit_orig[:, 0]
            t_fit_mod[sl] = res.t_fit_mod[:, 0]
            status[sl] = res.status[:, 0, :]
            if progress is not None:
                progress(sl.stop - sl.start)
        name, version = backend.name, backend.version()
    return OffgridFits(t_fit_orig, t_fit_mod, status, name, version)
