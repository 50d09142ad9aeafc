"""``xrmodifier report``: figures and a summary table from the artefacts.

Reads what the earlier stages wrote -- ``grid.h5`` (simulate), ``emulator.pt`` (train),
``result.json`` (:class:`~xrmodifier_hpc.io.result.InversionResult`), ``posterior.npz`` and
``corrected.arf`` (invert), and the observations file named in result.json with its mock
truth (:class:`~xrmodifier_hpc.io.truth.MockTruth`) when there is one -- and writes PNG
figures and ``summary.txt`` into ``WORKDIR/figures``. It never writes anywhere else: the
report must not change an artefact (DESIGN.md section 4).

The figures are built and drawn by :mod:`xrmodifier_hpc.figures` (one module per figure,
listed there). A missing artefact stops the report with a :class:`UserError` naming the stage
that makes it; a figure whose optional input is absent (no curves in grid.h5, no off-grid
points in the emulator) is skipped with a log line.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.figures.arf import (
    figure_data_arf,
    figure_data_ensemble,
    plot_arf,
    plot_ensemble,
)
from xrmodifier_hpc.figures.inputs import Artefacts
from xrmodifier_hpc.figures.parity import figure_data_parity, plot_parity
from xrmodifier_hpc.figures.posterior import CORNER_TAIL, figure_data_corner, plot_corner
from xrmodifier_hpc.figures.profiles import figure_data_profiles, plot_profiles
from xrmodifier_hpc.figures.style import DPI
from xrmodifier_hpc.figures.summary import summary_table
from xrmodifier_hpc.figures.temperatures import figure_data_temperatures, plot_temperatures
from xrmodifier_hpc.io.artefacts import Workdir, truth_path_for
from xrmodifier_hpc.io.atomic import replacing, write_text
from xrmodifier_hpc.io.metrics import EmulatorMetrics
from xrmodifier_hpc.io.result import InversionResult
from xrmodifier_hpc.io.truth import MockTruth
from xrmodifier_hpc.runtime.environment import detect

log = logging.getLogger("xrmodifier.report")

#: figure key -> file name inside WORKDIR/figures, in drawing order
FIGURES: dict[str, str] = {
    "arf": "fig1_arf_correction.png",
    "temperatures": "fig2_t1_vs_t0.png",
    "parity": "fig3_emulator_parity.png",
    "corner": "fig4_posterior_corner.png",
    "profiles": "fig5_profile_curves.png",
    "ensemble": "fig6_arf_ensemble.png",
}
SUMMARY_NAME = "summary.txt"


def _stage_hint(stage: str) -> str:
    return f"`xrmodifier {stage} CONFIG`"


# --------------------------------------------------------------------------------------------
# reading the artefacts
# --------------------------------------------------------------------------------------------


def check_artefacts(cfg: Config) -> None:
    """Refuse to report when an artefact is missing; warn when one is older than its input.

    Parameters
    ----------
    cfg : Config
        The configuration (its workdir).

    Raises
    ------
    UserError
        Listing every missing artefact with the stage that makes it.
    """
    wd = Workdir(cfg.workdir)
    needed = (
        (wd.grid, "simulate"),
        (wd.emulator, "train"),
        (wd.result, "invert"),
        (wd.posterior, "invert"),
        (wd.corrected_arf, "invert"),
    )
    missing = [(p, stage) for p, stage in needed if not p.is_file()]
    if missing:
        parts = [f"{p.name} (run {_stage_hint(stage)})" for p, stage in missing]
        raise UserError("missing artefact(s) for the report: " + ", ".join(parts), str(wd.root))
    # each stage reads the previous one's artefact: one older than its input is stale
    for (older, _), (newer, stage) in zip(needed[:2], needed[1:3]):
        if older.stat().st_mtime > newer.stat().st_mtime:
            log.warning(
                "report: %s is older than %s: the figures may mix runs (rerun %s)",
                newer.name,
                older.name,
                _stage_hint(stage),
            )


def flat_samples(path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    """Read the flat posterior samples from ``posterior.npz``.

    Parameters
    ----------
    path : Path
        The chains file.

    Returns
    -------
    samples : ndarray, shape (n, d)
        ``chain[burn::thin]`` flattened over steps and walkers (what result.json's summaries
        are computed from), parameter units.
    names : tuple of str
        The d parameter names.

    Raises
    ------
    UserError
        When the file is unreadable or its chain does not fit its names.
    """
    try:
        with np.load(path) as npz:
            chain = np.asarray(npz["chain"], dtype=np.float64)
            burn, thin = int(npz["burn"]), int(npz["thin"])
            names = tuple(str(n) for n in npz["param_names"])
    except (OSError, ValueError, KeyError) as exc:
        raise UserError(
            f"not a readable posterior file ({exc.__class__.__name__}): rerun "
            f"{_stage_hint('invert')}",
            str(path),
        ) from None
    if chain.ndim != 3 or chain.shape[-1] != len(names) or burn >= chain.shape[0]:
        raise UserError(
            f"posterior chain of shape {chain.shape} (burn {burn}) does not fit its "
            f"{len(names)} parameter names: rerun {_stage_hint('invert')}",
            str(path),
        )
    return chain[burn :: max(thin, 1)].reshape(-1, chain.shape[-1]), names


def read_result(path: Path) -> InversionResult:
    """``result.json`` as an :class:`InversionResult`.

    Parameters
    ----------
    path : Path
        The file.

    Returns
    -------
    InversionResult

    Raises
    ------
    UserError
        When it is missing, unreadable or from another schema (says to rerun invert).
    """
    try:
        return InversionResult.read(path)
    except UserError as exc:
        raise UserError(f"{exc.message}: rerun {_stage_hint('invert')}", exc.where) from None


def read_truth(observations: Path, names: tuple[str, ...]) -> tuple[MockTruth | None, Path | None]:
    """Read the mock truth beside an observations file, when there is a usable one.

    Parameters
    ----------
    observations : Path
        The observations file the result was computed from.
    names : tuple of str
        The result's parameters.

    Returns
    -------
    truth : MockTruth or None
        None without a sidecar (real data), or with one that cannot be read or is for other
        parameters (a log line says so).
    path : Path or None
        The sidecar's path when used.
    """
    candidate = truth_path_for(observations)
    if not candidate.is_file():
        return None, None
    try:
        truth = MockTruth.read(candidate)
    except UserError as exc:
        log.warning("report: %s; theta_true is not marked", exc)
        return None, None
    if truth.param_names != names:
        log.warning("report: %s is for other parameters; theta_true is not marked", candidate)
        return None, None
    return truth, candidate


def emulator_metrics(module: Any, where: str) -> EmulatorMetrics:
    """Return the emulator's metrics record (kept in emulator.pt beside its weights).

    Parameters
    ----------
    module : torch.nn.Module
        ``emulator.load``'s module.
    where : str
        The emulator file (for messages).

    Returns
    -------
    EmulatorMetrics
        Held-out and off-grid accuracy, training summary.

    Raises
    ------
    UserError
        When the emulator carries no metrics of the current schema (rerun ``train``).
    """
    data = getattr(module, "metrics", None)
    if not data:
        raise UserError("this emulator has no metrics: rerun `xrmodifier train CONFIG`", where)
    return EmulatorMetrics.from_dict(data, where)


def load_artefacts(cfg: Config) -> Artefacts:
    """Read every artefact the report needs (nothing is written).

    Parameters
    ----------
    cfg : Config
        The configuration.

    Returns
    -------
    Artefacts

    Raises
    ------
    UserError
        When an artefact is missing or unreadable, or result.json and posterior.npz come
        from different runs.
    """
    from xrmodifier_hpc.emulator import load
    from xrmodifier_hpc.io.ogip import read_arf

    check_artefacts(cfg)
    wd = Workdir(cfg.workdir)
    result = read_result(wd.result)
    names = result.param_names
    samples, chain_names = flat_samples(wd.posterior)
    if chain_names != names:
        raise UserError(
            f"{wd.posterior.name} holds parameters {chain_names}, {wd.result.name} {names}: "
            f"they come from different runs; rerun {_stage_hint('invert')}",
            str(wd.root),
        )
    module = load(wd.emulator)
    obs_path = Path(result.observations) if result.observations else None
    truth, truth_path = read_truth(obs_path, names) if obs_path is not None else (None, None)
    from xrmodifier_hpc.io.arf_products import read_arf_ensemble

    # by name in this workdir (a project copied or moved keeps its files together)
    listed = {item.statistic: wd.root / Path(item.path).name for item in result.corrected_arfs}
    for stat, path in listed.items():
        if not path.is_file():
            raise UserError(
                f"the {stat} corrected ARF listed in {wd.result.name} is missing: rerun "
                f"{_stage_hint('invert')}",
                str(path),
            )
    return Artefacts(
        result=result,
        samples=samples,
        param_names=names,
        metrics=emulator_metrics(module, str(Workdir(cfg.workdir).emulator)),
        offgrid=getattr(module, "offgrid", None),
        target_arf=read_arf(cfg.instruments.target.arf),
        corrected_arf=read_arf(wd.corrected_arf),
        corrected_arf_path=wd.corrected_arf,
        fit_band=(float(cfg.simulation.band[0]), float(cfg.simulation.band[1])),
        truth=truth,
        truth_path=truth_path,
        observations_path=obs_path,
        corrected_p16=read_arf(listed["p16"]) if "p16" in listed else None,
        corrected_p84=read_arf(listed["p84"]) if "p84" in listed else None,
        ensemble=read_arf_ensemble(listed["ensemble"]) if "ensemble" in listed else None,
    )


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG through a temporary file renamed into place (atomic).

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure.
    path : Path
        Where to write it.

    Returns
    -------
    Path
        ``path``.
    """
    with replacing(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


@dataclass
class ReportSummary:
    """What ``report`` wrote.

    Attributes
    ----------
    figures : dict of str to Path
        Figure key (:data:`FIGURES`) to PNG path.
    skipped : dict of str to str
        Figure key to why it was skipped.
    table : str
        The summary table.
    summary_path : Path or None
        ``summary.txt``.
    notes : dict of str to str
        Figure key to what it shows.
    """

    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    table: str = ""
    summary_path: Path | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """Describe the table and each figure (written or skipped), as ``summary.txt`` holds.

        Returns
        -------
        str
        """
        lines = [self.table, ""]
        for key in FIGURES:
            if key in self.figures:
                lines.append(f"  {self.figures[key].name}: {self.notes.get(key, '')}")
            elif key in self.skipped:
                lines.append(f"  {FIGURES[key]}: skipped ({self.skipped[key]})")
        if self.summary_path is not None:
            lines.append(f"  {self.summary_path.name}: this summary")
        return "\n".join(lines)

    def draw(self, key: str, data: Any, plot: Any, note: str, folder: Path) -> None:
        """Draw figure ``key`` from ``data`` with ``plot`` and save it in ``folder``.

        Parameters
        ----------
        key : str
            A key of :data:`FIGURES`.
        data : object
            The figure's data.
        plot : callable
            ``plot(data) -> Figure``.
        note : str
            What the figure shows (for the summary).
        folder : Path
            The figures folder.
        """
        self.figures[key] = save_figure(plot(data), folder / FIGURES[key])
        self.notes[key] = note
        log.info("report: wrote %s", self.figures[key])

    def skip(self, key: str, why: str) -> None:
        """Record that figure ``key`` was not drawn, and why.

        Parameters
        ----------
        key : str
            A key of :data:`FIGURES`.
        why : str
            The reason.
        """
        self.skipped[key] = why
        log.info("report: skipped %s: %s", FIGURES[key], why)


def report(config: Config | str | Path) -> ReportSummary | None:
    """Run the ``report`` stage: figures and ``summary.txt`` in ``WORKDIR/figures``.

    Serial: under an MPI launcher only rank 0 works.

    Parameters
    ----------
    config : Config, str or Path
        The configuration or its file.

    Returns
    -------
    ReportSummary or None
        What was written; None on ranks other than 0.

    Raises
    ------
    UserError
        When an artefact is missing or unreadable.
    """
    if detect().rank != 0:
        return None
    cfg = config if isinstance(config, Config) else load_config(config)
    art = load_artefacts(cfg)
    out = Workdir(cfg.workdir).figures
    summary = ReportSummary()

    arf = figure_data_arf(art)
    summary.draw(
        "arf",
        arf,
        plot_arf,
        f"target ARF and the written corrected.arf (pointwise posterior median of m(E) over "
        f"{arf.n_band_samples} posterior draws) with its 16-84% band (corrected_p16/p84.arf); "
        "m(E) at theta_best as a thin diagnostic line"
        + ("; m(E) at theta_true" if arf.m_true is not None else ""),
        out,
    )
    ens = figure_data_ensemble(art)
    if ens is None:
        summary.skip("ensemble", "no corrected_ensemble.fits (the target has no ARF file)")
    else:
        summary.draw(
            "ensemble",
            ens,
            plot_ensemble,
            f"the {ens.m_draws.shape[0]} posterior draws of corrected_ensemble.fits: their "
            "m(E) and corrected ARFs, with the written median",
            out,
        )
    temps = figure_data_temperatures(art.result)
    summary.draw(
        "temperatures",
        temps,
        plot_temperatures,
        f"T1 and corrected T1' against T0 for {temps.t0.size} sources, 1:1 line, 1-sigma "
        "error bars",
        out,
    )
    parity = figure_data_parity(art.offgrid)
    if parity is None:
        summary.skip("parity", "the emulator holds no off-grid points (offgrid_points = 0)")
    else:
        summary.draw(
            "parity",
            parity,
            plot_parity,
            f"emulated vs asimov-simulated T1 and T1' at {parity.truth.shape[0]} off-grid "
            "points; residuals vs T_true for emulator and grid interpolation",
            out,
        )
    corner_data = figure_data_corner(art)
    summary.draw(
        "corner",
        corner_data,
        plot_corner,
        f"theta posterior, {corner_data.samples.shape[0]} samples (axes span the central "
        f"{100 * (1 - 2 * CORNER_TAIL):g}% of each parameter)"
        + (", theta_true marked" if corner_data.truths is not None else " (no mock truth)"),
        out,
    )
    from xrmodifier_hpc.io.store import load_grid

    profiles = figure_data_profiles(
        load_grid(Workdir(cfg.workdir).grid, curves=True), art.theta_best
    )
    if profiles is None:
        summary.skip("profiles", "grid.h5 holds no C(T) curves ([simulation] curves = false)")
    else:
        summary.draw(
            "profiles",
            profiles,
            plot_profiles,
            f"C(T) - min C, original and modified ARF, grid points {profiles.index.tolist()}",
            out,
        )
    summary.table = summary_table(art, out)
    summary.summary_path = out / SUMMARY_NAME
    write_text(summary.summary_path, summary.describe() + "\n")
    return summary
