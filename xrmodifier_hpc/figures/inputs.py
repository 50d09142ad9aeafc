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
        The target ARF and ``corrected.arf`` (cm^2).
    corrected_arf_path : Path
        Where the corrected ARF was read.
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

    @property
    def theta_true(self) -> np.ndarray | None:
        """theta_true (d,) in ``param_names`` order, or None without a mock truth."""
        return None if self.truth is None else self.truth.theta_vector(self.param_names)

    @property
    def theta_best(self) -> np.ndarray:
        """theta_best (d,) in ``param_names`` order."""
        return self.result.vector(self.result.theta_best)
