"""The emulator's accuracy as a typed artefact: :class:`EmulatorMetrics`, emulator_metrics.json.

``train`` writes it (and embeds the same record in ``emulator.pt``); ``invert`` (``s_emu =
"auto"``) and ``report`` read it. Every accuracy is an RMS relative error, a fraction (0.003
is 0.3 %), of T1 (``t_fit_orig``) and of T1' (``t_fit_mod``), for the emulator and, as the
baseline, for multilinear interpolation of the grid:

* ``heldout``: at the validation grid points (never used for gradient steps), against their
  own mean over realisations;
* ``offgrid``: at quasi-random points between the grid nodes, against noise-free (asimov)
  fits that ``simulate`` stored in ``grid.h5``;
* ``training``: how the training went; ``target``: whether the off-grid accuracy reached
  :data:`TARGET_RMS_REL`.

Schema ``xrmodifier.emulator_metrics`` version 1; the JSON keys are the field names below.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from xrmodifier_hpc.io.artefacts import Record

#: the two emulated temperatures, in output column order
OUTPUTS = ("t_fit_orig", "t_fit_mod")
#: off-grid RMS relative error (fraction) the emulator must stay below for T1 and T1'
TARGET_RMS_REL = 0.003


@dataclass(frozen=True)
class RmsRel:
    """RMS relative error of T1 and T1' (fractions); None where there was nothing to measure.

    Parameters
    ----------
    t_fit_orig, t_fit_mod : float or None
        ``sqrt(mean(((pred - ref) / ref)^2))`` over the points, for T1 and T1'.
    """

    t_fit_orig: float | None = None
    t_fit_mod: float | None = None

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> RmsRel:
        """Build from ``{"t_fit_orig": ..., "t_fit_mod": ...}`` (missing keys: None).

        Parameters
        ----------
        data : mapping or None
            The JSON object.

        Returns
        -------
        RmsRel
            The errors as floats (fractions), None where absent or null.
        """
        data = data or {}
        return cls(*(None if data.get(k) is None else float(data[k]) for k in OUTPUTS))

    def values(self) -> tuple[float | None, float | None]:
        """Return the (T1, T1') errors.

        Returns
        -------
        tuple of (float or None)
            ``(t_fit_orig, t_fit_mod)``, fractions; None where not measured.
        """
        return self.t_fit_orig, self.t_fit_mod


@dataclass(frozen=True)
class HeldOutAccuracy:
    """Accuracy at the validation grid points.

    Parameters
    ----------
    n_points : int
        Validation points where the leave-one-out interpolation is defined (both are measured
        on these).
    emulator, interpolator : RmsRel
        Errors against the points' mean over usable realisations.
    reference : str
        What the errors are measured against, in words.
    """

    n_points: int
    emulator: RmsRel
    interpolator: RmsRel
    reference: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> HeldOutAccuracy:
        """Build from the JSON object (see :meth:`Record.to_dict`).

        Parameters
        ----------
        data : mapping
            The ``heldout`` section.

        Returns
        -------
        HeldOutAccuracy
            The section as a record (missing errors: None).
        """
        return cls(
            n_points=int(data["n_points"]),
            emulator=RmsRel.from_dict(data.get("emulator")),
            interpolator=RmsRel.from_dict(data.get("interpolator")),
            reference=str(data.get("reference", "")),
        )


@dataclass(frozen=True)
class TemperatureBin:
    """Off-grid accuracy in one T_true range.

    Parameters
    ----------
    t_true : tuple of float
        (low, high) keV, both included.
    n_points : int
        Usable off-grid points in the range.
    emulator, interpolator : RmsRel
        Errors against the asimov truth.
    """

    t_true: tuple[float, float]
    n_points: int
    emulator: RmsRel
    interpolator: RmsRel

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TemperatureBin:
        """Build from one element of ``offgrid.by_t_true``.

        Parameters
        ----------
        data : mapping
            The JSON object.

        Returns
        -------
        TemperatureBin
            The bin, its (low, high) range in keV.
        """
        lo, hi = data["t_true"]
        return cls(
            (float(lo), float(hi)),
            int(data["n_points"]),
            RmsRel.from_dict(data.get("emulator")),
            RmsRel.from_dict(data.get("interpolator")),
        )


@dataclass(frozen=True)
class OffGridAccuracy:
    """Accuracy at the off-grid check points stored in ``grid.h5``.

    Parameters
    ----------
    n_points : int
        Points whose asimov fits are usable (0: not measured; ``note`` says why).
    n_requested : int
        ``[emulator] offgrid_points`` of the config that trained.
    emulator, interpolator : RmsRel
        Errors against the asimov truth over the usable points.
    n_failed : int
        Points left out because an asimov fit is unusable.
    by_t_true : tuple of TemperatureBin
        The same in four T_true ranges (log-spaced over the grid).
    truth : str
        What the truth is, in words.
    note : str
        Why nothing was measured, or what differed from the config; empty otherwise.
    """

    n_points: int
    n_requested: int
    emulator: RmsRel = field(default_factory=RmsRel)
    interpolator: RmsRel = field(default_factory=RmsRel)
    n_failed: int = 0
    by_t_true: tuple[TemperatureBin, ...] = ()
    truth: str = ""
    note: str = ""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> OffGridAccuracy:
        """Build from the ``offgrid`` section.

        Parameters
        ----------
        data : mapping
            The JSON object.

        Returns
        -------
        OffGridAccuracy
            The section as a record (optional keys missing: their defaults).
        """
        return cls(
            n_points=int(data["n_points"]),
            n_requested=int(data.get("n_requested", 0)),
            emulator=RmsRel.from_dict(data.get("emulator")),
            interpolator=RmsRel.from_dict(data.get("interpolator")),
            n_failed=int(data.get("n_failed", 0)),
            by_t_true=tuple(TemperatureBin.from_dict(b) for b in data.get("by_t_true", ())),
            truth=str(data.get("truth", "")),
            note=str(data.get("note", "")),
        )


@dataclass(frozen=True)
class TrainingSummary:
    """How the training went.

    Parameters
    ----------
    epochs_run : int
        Epochs trained (including earlier sessions resumed from).
    best_epoch : int
        The (1-based) epoch whose weight average was kept.
    best_val_loss : float or None
        Its validation loss (mean squared error in standardised log units).
    stopped_early : bool
        Whether early stopping ended the training.
    train_seconds : float
        Wall time of the training loop over all sessions, s.
    world_size : int
        Processes of the DDP group.
    device : str
        torch device of rank 0.
    n_train, n_val : int
        Grid points in the training and validation split.
    n_excluded_failed : int
        Grid points left out: no usable fit of T1 or T1'.
    n_realisations_excluded : int
        Points that lost some realisations to unusable fits.
    final_val_rms_rel : RmsRel
        Validation RMS relative error at the last epoch.
    """

    epochs_run: int
    best_epoch: int
    best_val_loss: float | None
    stopped_early: bool
    train_seconds: float
    world_size: int
    device: str
    n_train: int
    n_val: int
    n_excluded_failed: int
    n_realisations_excluded: int
    final_val_rms_rel: RmsRel = field(default_factory=RmsRel)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainingSummary:
        """Build from the ``training`` section.

        Parameters
        ----------
        data : mapping
            The JSON object.

        Returns
        -------
        TrainingSummary
            The section as a record.
        """
        best = data.get("best_val_loss")
        return cls(
            epochs_run=int(data["epochs_run"]),
            best_epoch=int(data["best_epoch"]),
            best_val_loss=None if best is None else float(best),
            stopped_early=bool(data["stopped_early"]),
            train_seconds=float(data["train_seconds"]),
            world_size=int(data["world_size"]),
            device=str(data["device"]),
            n_train=int(data["n_train"]),
            n_val=int(data["n_val"]),
            n_excluded_failed=int(data["n_excluded_failed"]),
            n_realisations_excluded=int(data.get("n_realisations_excluded", 0)),
            final_val_rms_rel=RmsRel.from_dict(data.get("final_val_rms_rel")),
        )


@dataclass(frozen=True)
class AccuracyTarget:
    """The off-grid accuracy goal and whether it was met.

    Parameters
    ----------
    offgrid_rms_rel : float
        The goal: off-grid RMS relative error below this (fraction) for T1 and T1'.
    met : bool
        True when off-grid points were measured and both errors are below the goal.
    """

    offgrid_rms_rel: float
    met: bool

    @classmethod
    def for_offgrid(cls, offgrid: OffGridAccuracy, goal: float = TARGET_RMS_REL) -> AccuracyTarget:
        """Judge ``offgrid`` against ``goal``.

        Parameters
        ----------
        offgrid : OffGridAccuracy
            The measured off-grid accuracy.
        goal : float
            RMS relative error (fraction) to stay below.

        Returns
        -------
        AccuracyTarget
            ``goal``, and met when off-grid points were measured and the emulator's errors
            of both T1 and T1' are below it.
        """
        values = offgrid.emulator.values()
        met = offgrid.n_points > 0 and all(v is not None and v < goal for v in values)
        return cls(goal, bool(met))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AccuracyTarget:
        """Build from the ``target`` section.

        Parameters
        ----------
        data : mapping
            The JSON object.

        Returns
        -------
        AccuracyTarget
            The section as a record.
        """
        return cls(float(data["offgrid_rms_rel"]), bool(data["met"]))


@dataclass(frozen=True)
class EmulatorMetrics(Record):
    """The accuracy of a trained emulator (``emulator_metrics.json``, and inside ``emulator.pt``).

    Parameters
    ----------
    heldout : HeldOutAccuracy
        At the validation grid points.
    offgrid : OffGridAccuracy
        At the off-grid check points of ``grid.h5``.
    training : TrainingSummary
        How the training went.
    target : AccuracyTarget
        Whether the off-grid goal was met.
    provenance : dict
        :func:`~xrmodifier_hpc.io.artefacts.provenance` of the ``train`` run.
    """

    SCHEMA: ClassVar[str] = "xrmodifier.emulator_metrics"
    VERSION: ClassVar[int] = 1

    heldout: HeldOutAccuracy
    offgrid: OffGridAccuracy
    training: TrainingSummary
    target: AccuracyTarget
    provenance: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _build(cls, fields: dict[str, Any]) -> EmulatorMetrics:
        return cls(
            heldout=HeldOutAccuracy.from_dict(fields["heldout"]),
            offgrid=OffGridAccuracy.from_dict(fields["offgrid"]),
            training=TrainingSummary.from_dict(fields["training"]),
            target=AccuracyTarget.from_dict(fields["target"]),
            provenance=dict(fields.get("provenance") or {}),
        )


def offgrid_error(metrics: EmulatorMetrics | Mapping[str, Any] | None, output: str) -> float:
    """Return the emulator's off-grid RMS relative error of one output (for ``s_emu = "auto"``).

    Parameters
    ----------
    metrics : EmulatorMetrics, mapping or None
        The record, or its JSON form (:meth:`EmulatorMetrics.to_dict`, e.g. an emulator's
        ``metrics`` attribute).
    output : {"t_fit_orig", "t_fit_mod"}
        T1 or T1'.

    Returns
    -------
    float
        The error as a fraction.

    Raises
    ------
    KeyError
        When ``metrics`` holds no off-grid error for ``output`` (not measured, or no metrics).
    """
    if output not in OUTPUTS:
        raise KeyError(output)
    if isinstance(metrics, EmulatorMetrics):
        value = getattr(metrics.offgrid.emulator, output)
    else:
        try:
            value = metrics["offgrid"]["emulator"][output]  # type: ignore[index]
        except (KeyError, TypeError):
            raise KeyError(f"offgrid.emulator.{output}") from None
    if value is None:
        raise KeyError(f"offgrid.emulator.{output}")
    return float(value)
