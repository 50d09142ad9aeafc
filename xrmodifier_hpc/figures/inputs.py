"""What the figures are drawn from: the artefacts, already read (``stages.report`` reads them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrmodifier_hpc.io.metrics import EmulatorMetrics
from xrmodifier_hpc.io.ogip import Arf
from xrmodifier_hpc.io.result import InversionResult
from xrmodifier_hpc.io.truth import MockTruth


@dataclass
class Artefacts:
    """The artefacts of one run, as the figures read them.

    Attributes
    ----------
    result : InversionResult
        ``result.json``.
    samples : ndarray, shape (n, d)
        The flat posterior samples (after burn-in and thinning, as ``result.posterior``'s
        summaries were computed), parameter units.
    param_names : tuple of str
        The d parameters.
    metrics : EmulatorMetrics
        The emulator's accuracy (``emulator_metrics.json``).
    offgrid : dict of str to ndarray, or None
        The emulator's off-grid check points (``emulator.load(...).offgrid``).
    target_arf, corrected_arf : Arf
        The target ARF and ``corrected.arf`` (cm^2): the target times the pointwise posterior
        median of m(E), as written by ``invert``.
    corrected_arf_path : Path
        Where the corrected ARF was read.
    corrected_p16, corrected_p84 : Arf or None
        ``corrected_p16.arf`` and ``corrected_p84.arf`` (cm^2), the written envelopes.
    ensemble : tuple of ndarray, or None
        ``corrected_ensemble.fits`` as ``io.arf_products.read_arf_ensemble`` returns it:
        ``(energ_lo, energ_hi, specresp (N, n_E) cm^2, thetas (N, d))``; None when none was
        written.
    fit_band : (float, float)
        The fitted band (keV).
    truth : MockTruth or None
        The mock truth of the observations, when there is one.
    truth_path, observations_path : Path or None
        Where they are.
    """

    result: InversionResult
    samples: np.ndarray
    param_names: tuple[str, ...]
    metrics: EmulatorMetrics
    offgrid: dict[str, np.ndarray] | None
    target_arf: Arf
    corrected_arf: Arf
    corrected_arf_path: Path
    fit_band: tuple[float, float]
    truth: MockTruth | None = None
    truth_path: Path | None = None
    observations_path: Path | None = None
    corrected_p16: Arf | None = None
    corrected_p84: Arf | None = None
    ensemble: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def theta_true(self) -> np.ndarray | None:
        """theta_true (d,) in ``param_names`` order, or None without a mock truth."""
        return None if self.truth is None else self.truth.theta_vector(self.param_names)

    @property
    def theta_best(self) -> np.ndarray:
        """theta_best (d,) in ``param_names`` order."""
        return self.result.vector(self.result.theta_best)
