"""How good the emulator is: RMS relative error next to grid interpolation, on and off the grid.

Held out: the validation points (never used for gradient steps, only to pick the best epoch)
against their own mean over realisations; the interpolator predicts each of them
leave-one-out from its grid neighbours. Off the grid: the check points that ``simulate``
fitted noise-free and stored in ``grid.h5``; the interpolator uses every grid node there.
The results are the sections of :class:`~xrmodifier_hpc.io.metrics.EmulatorMetrics`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from xrmodifier_hpc.emulator.data import TrainingData
from xrmodifier_hpc.emulator.interpolation import GridInterpolator
from xrmodifier_hpc.emulator.model import Emulator
from xrmodifier_hpc.io.metrics import (
    OUTPUTS,
    HeldOutAccuracy,
    OffGridAccuracy,
    RmsRel,
    TemperatureBin,
)

#: what the held-out errors are measured against
HELDOUT_REFERENCE = (
    "grid mean over usable realisations at validation points (not used for gradient steps); "
    "interpolator leave-one-out from grid neighbours"
)
#: what the off-grid errors are measured against
OFFGRID_TRUTH = "asimov (noise-free) fits at Latin-hypercube points strictly inside the grid"


@dataclass(frozen=True)
class OffgridTruth:
    """The off-grid check points with their noise-free temperatures.

    Parameters
    ----------
    theta : numpy.ndarray
        (n, d) parameters.
    t_true : numpy.ndarray
        (n,) keV.
    truth : numpy.ndarray
        (n, 2) asimov [T1, T1'] keV.
    usable : numpy.ndarray
        (n,) bool: both fits usable and finite.
    """

    theta: np.ndarray
    t_true: np.ndarray
    truth: np.ndarray
    usable: np.ndarray

    @property
    def n_points(self) -> int:
        """Number of check points (usable or not)."""
        return int(np.asarray(self.t_true).size)


def rms_rel(pred: np.ndarray, ref: np.ndarray) -> RmsRel:
    """Return the RMS relative error ``sqrt(mean(((pred - ref) / ref)^2))`` per output.

    Parameters
    ----------
    pred, ref : numpy.ndarray
        (n, 2) [T1, T1'] keV: the prediction and the reference it is measured against.

    Returns
    -------
    RmsRel
        Fractions; None for both when n is 0.
    """
    if len(ref) == 0:
        return RmsRel()
    rel = (np.asarray(pred) - np.asarray(ref)) / np.asarray(ref)
    return RmsRel(*(float(np.sqrt(np.mean(rel[:, k] ** 2))) for k in range(len(OUTPUTS))))


@torch.no_grad()
def predict(model: Emulator, theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
    """Return the emulator's temperatures in float64 on the CPU (``model`` is left as it is).

    Parameters
    ----------
    model : Emulator
        The emulator (a float64 CPU copy of it predicts).
    theta : numpy.ndarray
        (n, d) modifier parameters, physical units.
    t_true : numpy.ndarray
        (n,) true temperatures, keV.

    Returns
    -------
    numpy.ndarray
        (n, 2) [T1, T1'] keV.
    """
    m = copy.deepcopy(model).to(torch.device("cpu"), torch.float64).eval()
    return m(
        torch.as_tensor(theta, dtype=torch.float64), torch.as_tensor(t_true, dtype=torch.float64)
    ).numpy()


def heldout_accuracy(data: TrainingData, model: Emulator, val_idx: np.ndarray) -> HeldOutAccuracy:
    """Measure the emulator and leave-one-out interpolation at the validation points.

    Both are compared with the points' mean over usable realisations,
    ``t_true * exp(y)`` (keV).

    Parameters
    ----------
    data : TrainingData
        The targets.
    model : Emulator
        The trained emulator.
    val_idx : numpy.ndarray
        (n_val,) int indices of the validation points into ``data``.

    Returns
    -------
    HeldOutAccuracy
        Over the validation points where leave-one-out interpolation is defined.
    """
    ref_val = data.t_true[val_idx][:, None] * np.exp(data.y[val_idx])
    excluded = np.zeros(data.n, bool)
    excluded[val_idx] = True
    loo_pred, defined = GridInterpolator(data, exclude=excluded).leave_one_out(val_idx)
    emu_val = predict(model, data.theta[val_idx], data.t_true[val_idx])
    return HeldOutAccuracy(
        n_points=int(defined.sum()),
        emulator=rms_rel(emu_val[defined], ref_val[defined]),
        interpolator=rms_rel(loo_pred[defined], ref_val[defined]),
        reference=HELDOUT_REFERENCE,
    )


def offgrid_accuracy(
    data: TrainingData, model: Emulator, points: OffgridTruth, n_requested: int, note: str = ""
) -> tuple[OffGridAccuracy, dict[str, np.ndarray]]:
    """Measure the emulator and interpolation at the off-grid check points, overall and by T_true.

    Parameters
    ----------
    data : TrainingData
        The targets (for the interpolator and the T_true range).
    model : Emulator
        The trained emulator.
    points : OffgridTruth
        The check points and their asimov temperatures.
    n_requested : int
        ``[emulator] offgrid_points`` (recorded; the stored points are what is measured).
    note : str
        Recorded in the result (e.g. that the stored count differs from the config).

    Returns
    -------
    accuracy : OffGridAccuracy
        Over the usable points, and in four T_true ranges log-spaced over the grid.
    arrays : dict of str to numpy.ndarray
        ``theta``, ``t_true``, ``truth``, ``emulator``, ``interpolator`` ((n, 2) keV) and
        ``usable``: what ``emulator.pt`` keeps for the report's parity figure.
    """
    theta, t_true, truth, usable = points.theta, points.t_true, points.truth, points.usable
    emu = predict(model, theta, t_true)
    interp = GridInterpolator(data)(theta, t_true)
    edges = np.geomspace(*data.bounds[-1], 5)
    by_t = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = usable & (t_true >= lo) & (t_true <= hi)
        by_t.append(
            TemperatureBin(
                (float(lo), float(hi)),
                int(sel.sum()),
                rms_rel(emu[sel], truth[sel]),
                rms_rel(interp[sel], truth[sel]),
            )
        )
    accuracy = OffGridAccuracy(
        n_points=int(usable.sum()),
        n_requested=int(n_requested),
        emulator=rms_rel(emu[usable], truth[usable]),
        interpolator=rms_rel(interp[usable], truth[usable]),
        n_failed=int((~usable).sum()),
        by_t_true=tuple(by_t),
        truth=OFFGRID_TRUTH,
        note=note,
    )
    arrays = {
        "theta": theta,
        "t_true": t_true,
        "truth": truth,
        "emulator": emu,
        "interpolator": interp,
        "usable": usable,
    }
    return accuracy, arrays
