"""The emulator: an MLP of the simulation map (theta, T_true) -> (T1, T1'), its training and I/O.

One module per part, in the order the ``train`` stage uses them:

* :mod:`.data`: :class:`TrainingData`, the grid reduced to one target per point, and the
  train/validation split;
* :mod:`.model`: :class:`Emulator` (physical units in and out) and :func:`build_emulator`;
* :mod:`.training`: :class:`Trainer`, one loop for one process or a DDP group, with
  checkpoints and bitwise resume;
* :mod:`.interpolation`: :class:`GridInterpolator`, the baseline;
* :mod:`.evaluation`: accuracy of the emulator next to the baseline, held out and off the
  grid;
* :mod:`.persist`: :func:`save` and :func:`load` of ``emulator.pt``.

This package knows nothing about Slurm, submitit or backends: ``stages.train`` reads the grid
(and its off-grid check points) and launches the training through ``runtime.launch``.
"""

from xrmodifier_hpc.emulator.data import TrainingData, split_indices
from xrmodifier_hpc.emulator.evaluation import (
    OffgridTruth,
    heldout_accuracy,
    offgrid_accuracy,
    predict,
    rms_rel,
)
from xrmodifier_hpc.emulator.interpolation import GridInterpolator
from xrmodifier_hpc.emulator.model import Emulator, build_emulator
from xrmodifier_hpc.emulator.persist import FORMAT, FORMAT_VERSION, discard_checkpoint, load, save
from xrmodifier_hpc.emulator.training import (
    FitOutcome,
    Trainer,
    format_seconds,
    pick_device,
    rank_world,
    set_threads,
    training_fingerprint,
)

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Emulator",
    "FitOutcome",
    "GridInterpolator",
    "OffgridTruth",
    "Trainer",
    "TrainingData",
    "build_emulator",
    "discard_checkpoint",
    "format_seconds",
    "heldout_accuracy",
    "load",
    "offgrid_accuracy",
    "pick_device",
    "predict",
    "rank_world",
    "rms_rel",
    "save",
    "set_threads",
    "split_indices",
    "training_fingerprint",
]
