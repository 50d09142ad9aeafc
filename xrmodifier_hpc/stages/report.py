"""Figures and a summary table from the artefacts (``xrmodifier report``).

Reads what the earlier stages wrote -- ``grid.h5`` (simulate), ``emulator.pt`` (train),
``result.json``, ``posterior.npz`` and ``corrected.arf`` (invert), and the observations file
named in result.json with its mock truth sidecar when there is one -- and writes PNG figures
and ``summary.txt`` into ``WORKDIR/figures``. It never writes anywhere else: the report must
not change an artefact (DESIGN.md section 4).

1. ``fig1_arf_correction.png``: the target ARF and the corrected one; the multiplier
   m(E; theta_best), the posterior median and 16-84% band of m(E) over posterior samples,
   and m(E; theta_true) when the truth is known.
2. ``fig2_t1_vs_t0.png``: telescope 1 against telescope 0 per source, before (T1, the
   original ARF) and after the correction (T1' at theta_best), with the 1:1 line, and the
   fractional difference from T0 below.
3. ``fig3_emulator_parity.png``: emulated against simulated (asimov) T1 and T1' at the
   emulator's off-grid check points, and the relative residuals against T_true, for the
   emulator and for multilinear interpolation of the grid.
4. ``fig4_posterior_corner.png``: corner plot of the theta posterior samples (posterior.npz
   after burn-in and thinning), theta_true marked when the mock truth is available,
   theta_best as a star.
5. ``fig5_profile_curves.png``: C(T) - min C of both fits (original and modified ARF) from
   grid.h5's curves, at the grid theta nearest theta_best and four T_true values.

Every figure's numbers come from a pure ``figure_data_*`` function (tested against the
artefacts); the ``plot_*`` functions only draw what those return. A missing artefact stops
the report with a :class:`UserError` naming the stage that makes it; a figure whose optional
input is absent (no curves in grid.h5, no off-grid points in the emulator) is skipped with a
log line.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import replacing, write_text
from xrmodifier_hpc.io.metrics import EmulatorMetrics
from xrmodifier_hpc.physics.fitstat import LocalPolyGrid
from xrmodifier_hpc.runtime.environment import detect

log = logging.getLogger("xrmodifier.report")

#: figure key -> file name inside WORKDIR/figures, in drawing order
FIGURES: dict[str, str] = {
    "arf": "fig1_arf_correction.png",
    "temperatures": "fig2_t1_vs_t0.png",
    "parity": "fig3_emulator_parity.png",
    "corner": "fig4_posterior_corner.png",
    "profiles": "fig5_profile_curves.png",
}
SUMMARY_NAME = "summary.txt"
#: posterior samples evaluated for the m(E) band: evenly spaced through the flat chain, so
#: the band's percentiles are stable to ~1% of their spread and cost stays bounded
MAX_BAND_SAMPLES = 4000
#: posterior percentiles of the band (the 68% interval and the median)
BAND_PERCENTILES = (16.0, 50.0, 84.0)
#: profile-curve examples drawn in figure 5
#: points of the drawn interpolant per fit-grid node (figure 5)
PROFILE_FINE_PER_NODE = 20
N_PROFILE_EXAMPLES = 4
#: figure 4's axes leave out this fraction of the samples at each end (per parameter)
CORNER_TAIL = 0.005
#: figure 5 shows this many fit-grid temperatures either side of each curve's minimum
PROFILE_HALF_WINDOW = 3
DPI = 150

# one colour per meaning across every figure (Okabe-Ito, colour-blind safe)
C_ORIG = "#D55E00"  # telescope 1 with the original ARF (T1)
C_CORR = "#0072B2"  # telescope 1 with the corrected ARF (T1')
C_TRUE = "#000000"  # truth
C_INTERP = "#999999"  # grid interpolation
C_BAND = "#56B4E9"


# --------------------------------------------------------------------------------------------
# the artefacts
# --------------------------------------------------------------------------------------------


@dataclass
class Artefacts:
    """What the report reads. ``samples`` (n, d) are the flat posterior samples (after burn-in
    and thinning, as result.json's summaries were computed); ``truth`` the mock sidecar."""

    cfg: Config
    result: dict[str, Any]
    samples: np.ndarray
    param_names: tuple[str, ...]
    metrics: EmulatorMetrics
    offgrid: dict[str, np.ndarray] | None
    truth: dict[str, Any] | None = None
    truth_path: Path | None = None
    observations_path: Path | None = None

    @property
    def corrected_arf_path(self) -> Path:
        return self.cfg.workdir / "corrected.arf"

    @property
    def theta_true(self) -> np.ndarray | None:
        if self.truth is None:
            return None
        return np.array([self.truth["theta_true"][n] for n in self.param_names], dtype=float)

    @property
    def theta_best(self) -> np.ndarray:
        return np.array([self.result["theta_best"][n] for n in self.param_names], dtype=float)


def _stage_hint(stage: str) -> str:
    return f"`xrmodifier {stage} CONFIG`"


def check_artefacts(cfg: Config) -> None:
    """Raise a UserError listing every missing artefact with the stage that makes it."""
    needed = (
        (cfg.grid_path, "simulate"),
        (cfg.emulator_path, "train"),
        (cfg.result_path, "invert"),
        (cfg.workdir / "posterior.npz", "invert"),
        (cfg.workdir / "corrected.arf", "invert"),
    )
    missing = [(p, stage) for p, stage in needed if not p.is_file()]
    if missing:
        parts = [f"{p.name} (run {_stage_hint(stage)})" for p, stage in missing]
        raise UserError("missing artefact(s) for the report: " + ", ".join(parts), str(cfg.workdir))
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
    """Posterior samples (n, d) from ``posterior.npz``: ``chain[burn::thin]`` flattened over
    steps and walkers (what result.json's summaries are computed from), and the names."""
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


def load_artefacts(cfg: Config) -> Artefacts:
    """Read every artefact the report needs (nothing is written)."""
    from xrmodifier_hpc.emulator import load

    check_artefacts(cfg)
    try:
        result = json.loads(cfg.result_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise UserError(
            f"not a readable result file ({exc}): rerun {_stage_hint('invert')}",
            str(cfg.result_path),
        ) from None
    names = tuple(result["param_names"])
    samples, chain_names = flat_samples(cfg.workdir / "posterior.npz")
    if chain_names != names:
        raise UserError(
            f"posterior.npz holds parameters {chain_names}, result.json {names}: they come "
            f"from different runs; rerun {_stage_hint('invert')}",
            str(cfg.workdir),
        )
    module = load(cfg.emulator_path)
    obs_path = Path(result["observations"]) if result.get("observations") else None
    truth, truth_path = None, None
    if obs_path is not None:
        from xrmodifier_hpc.stages.mock import truth_path_for

        candidate = truth_path_for(obs_path)
        if candidate.is_file():
            try:
                truth = json.loads(candidate.read_text())
                truth_path = candidate
            except json.JSONDecodeError:
                log.warning("report: %s is not valid JSON; theta_true is not marked", candidate)
        if truth is not None and tuple(truth.get("param_names", ())) != names:
            log.warning("report: %s is for other parameters; theta_true is not marked", candidate)
            truth, truth_path = None, None
    return Artefacts(
        cfg=cfg,
        result=result,
        samples=samples,
        param_names=names,
        metrics=EmulatorMetrics.from_dict(module.metrics or {}, str(cfg.emulator_path)),
        offgrid=getattr(module, "offgrid", None),
        truth=truth,
        truth_path=truth_path,
        observations_path=obs_path,
    )


# --------------------------------------------------------------------------------------------
# figure data: pure functions of the artefacts
# --------------------------------------------------------------------------------------------


def _family(result: dict[str, Any]) -> Any:
    from xrmodifier_hpc.physics.modifiers import get_modifier

    mod = result["modifier"]
    return get_modifier(mod["family"], mod.get("options") or {})


def band_subset(samples: np.ndarray, limit: int = MAX_BAND_SAMPLES) -> np.ndarray:
    """At most ``limit`` rows of ``samples``, evenly spaced through the flat chain (all of
    them when there are fewer)."""
    n = samples.shape[0]
    if n <= limit:
        return samples
    return samples[np.linspace(0, n - 1, limit).round().astype(np.int64)]


@dataclass
class ArfFigureData:
    """Figure 1. ``energy`` (n_E,) keV bin centres; areas in cm^2; multipliers dimensionless.
    ``m_band`` (3, n_E): the 16th, 50th and 84th posterior percentiles of m(E) over
    ``n_band_samples`` posterior samples; ``m_true`` None without a mock truth."""

    energy: np.ndarray
    area_target: np.ndarray
    area_corrected: np.ndarray
    m_best: np.ndarray
    m_band: np.ndarray
    n_band_samples: int
    m_true: np.ndarray | None
    fit_band: tuple[float, float]
    theta_best: dict[str, float]
    theta_true: dict[str, float] | None


def figure_data_arf(art: Artefacts) -> ArfFigureData:
    """The target and corrected ARFs (as written), m(E; theta_best) and its posterior band."""
    from xrmodifier_hpc.io.ogip import read_arf

    target = read_arf(art.cfg.instruments.target.arf)
    corrected = read_arf(art.corrected_arf_path)
    if corrected.specresp.shape != target.specresp.shape:
        raise UserError(
            f"corrected.arf is not on the target ARF's energy grid: rerun {_stage_hint('invert')}",
            str(art.corrected_arf_path),
        )
    family = _family(art.result)
    energy = 0.5 * (target.energ_lo + target.energ_hi)
    subset = band_subset(art.samples)
    m_samples = family.evaluate(energy, subset)
    theta_true = art.theta_true
    return ArfFigureData(
        energy=energy,
        area_target=np.asarray(target.specresp, dtype=float),
        area_corrected=np.asarray(corrected.specresp, dtype=float),
        m_best=family.evaluate(energy, art.theta_best),
        m_band=np.percentile(m_samples, BAND_PERCENTILES, axis=0),
        n_band_samples=int(subset.shape[0]),
        m_true=None if theta_true is None else family.evaluate(energy, theta_true),
        fit_band=tuple(float(v) for v in art.cfg.simulation.band),
        theta_best=dict(art.result["theta_best"]),
        theta_true=None if art.truth is None else dict(art.truth["theta_true"]),
    )


@dataclass
class TemperatureFigureData:
    """Figure 2, per source (keV): ``t0``, ``t1`` (original ARF), ``t1_corr`` (T1' at
    theta_best) and their errors as (2, n) arrays of [down, up] distances."""

    names: tuple[str, ...]
    t0: np.ndarray
    t0_err: np.ndarray
    t1: np.ndarray
    t1_err: np.ndarray
    t1_corr: np.ndarray
    t1_corr_err: np.ndarray
    seed_loss_before: float
    seed_loss_after: float


def figure_data_temperatures(result: dict[str, Any]) -> TemperatureFigureData:
    """Observed (T0, T1) and corrected T1' per source, from result.json's ``sources`` (which
    carry the observations file's values)."""
    src = result["sources"]

    def col(key: str) -> np.ndarray:
        return np.array([float(s[key]) for s in src], dtype=float)

    def err(prefix: str) -> np.ndarray:
        return np.vstack([col(f"{prefix}_err_lo"), col(f"{prefix}_err_hi")])

    return TemperatureFigureData(
        names=tuple(str(s["name"]) for s in src),
        t0=col("t0"),
        t0_err=err("t0"),
        t1=col("t1"),
        t1_err=err("t1"),
        t1_corr=col("t1_corrected"),
        t1_corr_err=err("t1_corrected"),
        seed_loss_before=float(result["seed_loss"]["before"]),
        seed_loss_after=float(result["seed_loss"]["after"]),
    )


@dataclass
class ParityFigureData:
    """Figure 3 at the usable off-grid points: ``t_true`` (n,) keV; ``truth``, ``emulator``,
    ``interpolator`` (n, 2) keV, columns [T1, T1']; ``rms`` the RMS relative errors
    {"emulator"|"interpolator": {"t_fit_orig"|"t_fit_mod": fraction}}."""

    t_true: np.ndarray
    truth: np.ndarray
    emulator: np.ndarray
    interpolator: np.ndarray
    rms: dict[str, dict[str, float]]

    @property
    def residual_emulator(self) -> np.ndarray:
        return self.emulator / self.truth - 1.0

    @property
    def residual_interpolator(self) -> np.ndarray:
        return self.interpolator / self.truth - 1.0


def figure_data_parity(offgrid: dict[str, np.ndarray] | None) -> ParityFigureData | None:
    """The emulator's stored off-grid check (``emulator.load(...).offgrid``), usable points
    only; None when the emulator has none (``offgrid_points = 0``)."""
    if offgrid is None or len(offgrid.get("t_true", ())) == 0:
        return None
    ok = np.asarray(offgrid["usable"], dtype=bool)
    truth = np.asarray(offgrid["truth"], dtype=float)[ok]
    emu = np.asarray(offgrid["emulator"], dtype=float)[ok]
    interp = np.asarray(offgrid["interpolator"], dtype=float)[ok]
    if truth.shape[0] == 0:
        return None
    rms = {
        who: {
            name: float(np.sqrt(np.mean((pred[:, k] / truth[:, k] - 1.0) ** 2)))
            for k, name in enumerate(("t_fit_orig", "t_fit_mod"))
        }
        for who, pred in (("emulator", emu), ("interpolator", interp))
    }
    return ParityFigureData(
        t_true=np.asarray(offgrid["t_true"], dtype=float)[ok],
        truth=truth,
        emulator=emu,
        interpolator=interp,
        rms=rms,
    )


@dataclass
class CornerFigureData:
    """Figure 4: ``samples`` (n, d) in theta units, axis labels, truths (or None)."""

    samples: np.ndarray
    labels: tuple[str, ...]
    truths: np.ndarray | None
    theta_best: np.ndarray


def figure_data_corner(art: Artefacts) -> CornerFigureData:
    """Every flat posterior sample, labelled with units; theta_true when known."""
    units = art.result.get("param_units") or [""] * len(art.param_names)
    labels = tuple(f"{n} [{u}]" if u else n for n, u in zip(art.param_names, units))
    return CornerFigureData(
        samples=art.samples, labels=labels, truths=art.theta_true, theta_best=art.theta_best
    )


@dataclass
class ProfileFigureData:
    """Figure 5: ``tgrid`` (n_T,) keV; for each example k: ``index`` its grid point,
    ``delta_orig``/``delta_mod`` (k, n_T) the stored C(T) of realisation 0 minus its minimum,
    ``fine_orig``/``fine_mod`` (k, n_fine) the interpolant the fit refines on (local
    polynomials in ln T, fitstat.LocalPolyGrid) at ``t_fine`` (n_fine,) keV minus the same
    minimum (the interpolant's, i.e. C at the best fit), ``t_fit_orig`` / ``t_fit_mod`` (k,)
    the best fits, ``t_true`` (k,) keV and ``theta`` (k, d)."""

    tgrid: np.ndarray
    index: np.ndarray
    delta_orig: np.ndarray
    delta_mod: np.ndarray
    t_fine: np.ndarray
    fine_orig: np.ndarray
    fine_mod: np.ndarray
    t_fit_orig: np.ndarray
    t_fit_mod: np.ndarray
    t_true: np.ndarray
    theta: np.ndarray
    param_names: tuple[str, ...]


def nearest_grid_theta(grid: Any, theta: np.ndarray) -> np.ndarray:
    """Per parameter, the index of the grid axis value nearest to ``theta`` (d,) -- in log
    for geometric axes, as the emulator sees them."""
    out = []
    for name, value in zip(grid.param_names, np.asarray(theta, dtype=float)):
        axis = np.asarray(grid.axes[name], dtype=float)
        geometric = (
            axis.size > 2
            and axis[0] > 0
            and np.allclose(np.diff(np.log(axis)), np.log(axis[1] / axis[0]))
        )
        if geometric and value > 0:
            out.append(int(np.argmin(np.abs(np.log(axis) - math.log(value)))))
        else:
            out.append(int(np.argmin(np.abs(axis - value))))
    return np.array(out, dtype=np.int64)


def pick_profile_examples(
    grid: Any, theta: np.ndarray | None = None, n: int = N_PROFILE_EXAMPLES
) -> np.ndarray:
    """Grid points for figure 5: ``n`` T_true values spread over the T_true axis, at the grid
    theta nearest to ``theta`` (the inversion's theta_best: the fits the found correction
    changes). Without ``theta``, or where that point is unusable (a flagged fit, non-finite
    curves), the usable point at that T_true where the correction moves the best fit most.
    """
    shape = grid.shape  # points are C-ordered, T_true fastest (store.GridData.shape)
    n_t = shape[-1]
    t_index = np.arange(grid.n_points) % n_t
    t1 = grid.t_fit_orig[:, 0].astype(float)
    t1p = grid.t_fit_mod[:, 0].astype(float)
    usable = (
        grid.done
        & np.all(grid.status[:, 0, :] == 0, axis=1)
        & np.isfinite(t1)
        & np.isfinite(t1p)
        & np.all(np.isfinite(grid.curve_orig[:, 0, :]), axis=1)
        & np.all(np.isfinite(grid.curve_mod[:, 0, :]), axis=1)
    )
    shift = np.where(usable, np.abs(np.log(np.where(usable, t1 / t1p, 1.0))), -np.inf)
    base = None if theta is None else nearest_grid_theta(grid, theta)
    picks = []
    for j in np.unique(np.round(np.linspace(0, n_t - 1, min(n, n_t))).astype(int)):
        if base is not None:
            k = int(np.ravel_multi_index((*base, j), shape))
            if usable[k]:
                picks.append(k)
                continue
        cand = np.flatnonzero((t_index == j) & usable)
        if cand.size:
            picks.append(int(cand[np.argmax(shift[cand])]))
    return np.array(picks, dtype=np.int64)


def figure_data_profiles(
    grid: Any, theta: np.ndarray | None = None, n: int = N_PROFILE_EXAMPLES
) -> ProfileFigureData | None:
    """C(T) curves of a few grid points (see :func:`pick_profile_examples`) from
    ``store.load_grid(..., curves=True)``; None when the grid holds no curves or no usable
    point."""
    if grid.curve_orig is None or grid.curve_mod is None:
        return None
    idx = pick_profile_examples(grid, theta, n)
    if idx.size == 0:
        return None
    c_orig = grid.curve_orig[idx, 0, :].astype(float)
    c_mod = grid.curve_mod[idx, 0, :].astype(float)
    tgrid = np.asarray(grid.fit_tgrid, dtype=float)
    interpolant = LocalPolyGrid.build(np.log(tgrid))
    t_fine = np.geomspace(tgrid[0], tgrid[-1], PROFILE_FINE_PER_NODE * tgrid.size)
    fine_orig = interpolant.interpolate(c_orig, np.log(t_fine))
    fine_mod = interpolant.interpolate(c_mod, np.log(t_fine))
    min_orig = fine_orig.min(axis=1, keepdims=True)
    min_mod = fine_mod.min(axis=1, keepdims=True)
    return ProfileFigureData(
        tgrid=tgrid,
        index=idx,
        delta_orig=c_orig - min_orig,
        delta_mod=c_mod - min_mod,
        t_fine=t_fine,
        fine_orig=fine_orig - min_orig,
        fine_mod=fine_mod - min_mod,
        t_fit_orig=grid.t_fit_orig[idx, 0].astype(float),
        t_fit_mod=grid.t_fit_mod[idx, 0].astype(float),
        t_true=grid.t_true[idx].astype(float),
        theta=grid.theta[idx].astype(float),
        param_names=tuple(grid.param_names),
    )


# --------------------------------------------------------------------------------------------
# the summary table
# --------------------------------------------------------------------------------------------


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def summary_table(art: Artefacts, figures_dir: Path | None = None) -> str:
    """theta_true against the recovered posterior (median, 68% interval) and theta_best; the
    seed's loss before and after the correction; the emulator's off-grid accuracy against
    grid interpolation; where the figures are."""
    res = art.result
    summ = res["posterior"]["summary"]
    truth = art.truth["theta_true"] if art.truth else None
    lines = [
        f"inversion: {res['n_sources']} sources, objective {res['objective']}, "
        f"{len(res['optima'])} distinct optima from {res['n_starts']} starts, "
        f"{res['posterior']['n_samples']} posterior samples"
    ]
    head = f"{'param':>7} {'true':>9} {'median':>9} {'68% interval':>21} {'best':>9}"
    lines.append(head + ("  true in 68% / 95%" if truth else ""))
    for n in art.param_names:
        s = summ[n]
        interval = f"[{_fmt(s['p16'])}, {_fmt(s['p84'])}]"
        row = (
            f"{n:>7} {_fmt(truth[n]) if truth else '-':>9} {_fmt(s['median']):>9} "
            f"{interval:>21} {_fmt(res['theta_best'][n]):>9}"
        )
        if truth:
            in68 = s["p16"] <= truth[n] <= s["p84"]
            in95 = s["p2.5"] <= truth[n] <= s["p97.5"]
            row += f"  {'yes' if in68 else 'no':>8} / {'yes' if in95 else 'no'}"
        lines.append(row)
    sl = res["seed_loss"]
    lines.append(
        f"seed loss sum_i (T0_i - T1'_i)^2: before {_fmt(sl['before'])} keV^2, after "
        f"{_fmt(sl['after'])} keV^2 ({_fmt(sl['ratio'])}x smaller)"
    )
    off = art.metrics.offgrid
    if off.n_points:
        emu, itp = off.emulator, off.interpolator
        lines.append(
            f"emulator off-grid RMS relative error ({off.n_points} asimov points): "
            f"T1 {100 * emu.t_fit_orig:.2f}%, T1' {100 * emu.t_fit_mod:.2f}% "
            f"(grid interpolation: {100 * itp.t_fit_orig:.2f}%, "
            f"{100 * itp.t_fit_mod:.2f}%)"
        )
    else:
        lines.append(f"emulator off-grid accuracy: not measured ({off.note or 'no points'})")
    for w in res.get("warnings", []):
        lines.append(f"warning: {w}")
    if figures_dir is not None:
        lines.append(f"figures: {figures_dir}/")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# drawing
# --------------------------------------------------------------------------------------------


def _new_figure(width: float, height: float) -> Any:
    """A figure on the Agg canvas, outside pyplot (no global state, no display needed)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Any, path: Path) -> Path:
    """Write ``fig`` as PNG through a temporary file renamed into place (atomic)."""
    with replacing(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    return path


def log_ticks(lo: float, hi: float, max_ticks: int = 7) -> list[float]:
    """Round tick values for a log axis from ``lo`` to ``hi`` (> 0), at most ``max_ticks``:
    1-2-5 per decade over wide ranges, finer steps over narrower ones, and linear round
    steps (like 2.1, 2.2, 2.3) when the range is less than a factor of 3."""
    ratio = hi / lo
    if ratio < 3:
        from matplotlib.ticker import MaxNLocator

        values = MaxNLocator(nbins=min(max_ticks, 5) - 1).tick_values(lo, hi)
        return [float(f"{v:.6g}") for v in values if lo <= v <= hi]
    if ratio > 30:
        mantissas = (1.0, 2.0, 5.0)
    elif ratio > 4:
        mantissas = (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0)
    else:
        mantissas = (1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0)
    ticks = [
        float(f"{m * 10.0**e:.6g}")
        for e in range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
        for m in mantissas
    ]
    ticks = [t for t in ticks if lo <= t <= hi]
    while len(ticks) > max_ticks:
        ticks = ticks[::2]
    return ticks


def _plain_log_axis(ax: Any, which: str = "x", max_ticks: int = 7) -> None:
    """Label a log axis with plain numbers at round values (not 2x10^0); call it after the
    axis limits are final."""
    from matplotlib.ticker import FixedLocator, FormatStrFormatter, NullFormatter

    axis = ax.xaxis if which == "x" else ax.yaxis
    lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
    axis.set_major_locator(FixedLocator(log_ticks(lo, hi, max_ticks)))
    axis.set_major_formatter(FormatStrFormatter("%g"))
    axis.set_minor_formatter(NullFormatter())


def _theta_text(theta: dict[str, float]) -> str:
    return ", ".join(f"{k} = {v:.3g}" for k, v in theta.items())


def plot_arf(data: ArfFigureData) -> Any:
    fig = _new_figure(7.5, 6.5)
    ax_a, ax_m = fig.subplots(2, 1, sharex=True, height_ratios=(1.2, 1.0))
    for ax in (ax_a, ax_m):
        ax.axvspan(data.fit_band[0], data.fit_band[1], color="0.94", zorder=0, lw=0)
        ax.set_xscale("log")
        ax.grid(alpha=0.3, which="both", lw=0.5)
    # corrected solid underneath, original dashed on top: both stay visible where they agree
    ax_a.plot(
        data.energy,
        data.area_corrected,
        color=C_CORR,
        lw=1.8,
        label=r"corrected: ARF $\times$ $m(E;\theta_\mathrm{best})$",
    )
    ax_a.plot(
        data.energy,
        data.area_target,
        color=C_ORIG,
        lw=1.3,
        ls=(0, (4, 2)),
        label="target ARF (original)",
    )
    ax_a.set_ylabel(r"effective area [cm$^2$]")
    ax_a.set_title("Telescope 1: original and corrected effective area")
    ax_a.legend(loc="upper right", fontsize=9)
    ax_a.set_ylim(bottom=0)
    ax_a.text(
        data.fit_band[0] * 1.04,
        0.96,
        f"fitted band {data.fit_band[0]:g}-{data.fit_band[1]:g} keV",
        ha="left",
        va="top",
        fontsize=8,
        color="0.4",
        transform=ax_a.get_xaxis_transform(),
    )

    lo, med, hi = data.m_band
    ax_m.fill_between(
        data.energy,
        lo,
        hi,
        color=C_BAND,
        alpha=0.45,
        lw=0,
        label=f"posterior 16-84% ({data.n_band_samples} samples)",
    )
    ax_m.plot(data.energy, med, color=C_CORR, lw=1.0, ls="--", label="posterior median")
    ax_m.plot(
        data.energy,
        data.m_best,
        color=C_CORR,
        lw=1.8,
        label=r"$\theta_\mathrm{best}$: " + _theta_text(data.theta_best),
    )
    if data.m_true is not None and data.theta_true is not None:
        ax_m.plot(
            data.energy,
            data.m_true,
            color=C_TRUE,
            lw=1.3,
            ls=":",
            label=r"$\theta_\mathrm{true}$: " + _theta_text(data.theta_true),
        )
    ax_m.axhline(1.0, color="0.4", lw=0.8)
    ax_m.set_xlabel("energy [keV]")
    ax_m.set_ylabel(r"multiplier $m(E)$")
    ax_m.set_xlim(data.energy[0], data.energy[-1])
    ax_m.legend(loc="best", fontsize=8)
    _plain_log_axis(ax_m, "x")
    return fig


def plot_temperatures(data: TemperatureFigureData) -> Any:
    fig = _new_figure(7.0, 7.5)
    ax, ax_r = fig.subplots(2, 1, sharex=True, height_ratios=(1.5, 1.0))
    lo = 0.95 * min(data.t0.min(), data.t1.min(), data.t1_corr.min())
    hi = 1.05 * max(data.t0.max(), data.t1.max(), data.t1_corr.max())
    common = dict(fmt="o", ms=3.5, capsize=0, elinewidth=0.8, alpha=0.9)
    ax.errorbar(
        data.t0,
        data.t1,
        xerr=data.t0_err,
        yerr=data.t1_err,
        color=C_ORIG,
        label=r"before: $T_1$ (original ARF)",
        **common,
    )
    ax.errorbar(
        data.t0,
        data.t1_corr,
        xerr=data.t0_err,
        yerr=data.t1_corr_err,
        color=C_CORR,
        label=r"after: $T_1'$ (corrected ARF)",
        **common,
    )
    ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, ls="--", label="1:1")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_ylabel("telescope 1 temperature [keV]")
    ax.set_title(
        f"{data.t0.size} sources; seed loss " + r"$\sum_i (T_{0,i} - T_{1,i}')^2$: "
        f"{data.seed_loss_before:.4g} " + r"$\to$" + f" {data.seed_loss_after:.4g} keV$^2$",
        fontsize=10,
    )
    ax.legend(loc="upper left", fontsize=9)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    _plain_log_axis(ax, "y")

    # fractional difference from T0, where the correction is visible at every temperature;
    # a small horizontal offset keeps the two sets of error bars apart
    for t, err, color, shift in (
        (data.t1, data.t1_err, C_ORIG, 0.99),
        (data.t1_corr, data.t1_corr_err, C_CORR, 1.01),
    ):
        ax_r.errorbar(data.t0 * shift, t / data.t0 - 1.0, yerr=err / data.t0, color=color, **common)
    ax_r.axhline(0.0, color="0.3", lw=1.0, ls="--")
    ax_r.set_xlabel(r"telescope 0 temperature $T_0$ [keV]")
    ax_r.set_ylabel(r"$T_1 / T_0 - 1$  and  $T_1' / T_0 - 1$")
    ax_r.grid(alpha=0.3, which="both", lw=0.5)
    _plain_log_axis(ax_r, "x")
    return fig


def plot_parity(data: ParityFigureData) -> Any:
    fig = _new_figure(10.0, 8.0)
    axes = fig.subplots(2, 2)
    labels = (r"$T_1$ (original ARF)", r"$T_1'$ (modified ARF)")
    short = (r"$T_1$", r"$T_1'$")
    for k, name in enumerate(("t_fit_orig", "t_fit_mod")):
        ax = axes[0, k]
        lo, hi = data.truth[:, k].min() / 1.05, data.truth[:, k].max() * 1.05
        ax.plot([lo, hi], [lo, hi], color="0.3", lw=1.0, ls="--", zorder=0, label="1:1")
        ax.scatter(
            data.truth[:, k],
            data.emulator[:, k],
            s=7,
            color=C_CORR,
            alpha=0.7,
            lw=0,
            label="emulator",
        )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(lo, hi)
        ax.set_xlabel(f"simulated (asimov) {short[k]} [keV]")
        ax.set_ylabel(f"emulated {short[k]} [keV]")
        ax.set_title(
            f"{labels[k]}: {data.truth.shape[0]} off-grid points, "
            f"RMS {100 * data.rms['emulator'][name]:.2f}%",
            fontsize=10,
        )
        ax.legend(loc="upper left", fontsize=8, markerscale=2)
        ax.grid(alpha=0.3, which="both", lw=0.5)
        _plain_log_axis(ax, "x")
        _plain_log_axis(ax, "y")

        ax_r = axes[1, k]
        ax_r.scatter(
            data.t_true,
            100 * data.residual_interpolator[:, k],
            s=7,
            color=C_INTERP,
            alpha=0.7,
            lw=0,
            label=f"grid interpolation (RMS {100 * data.rms['interpolator'][name]:.2f}%)",
        )
        ax_r.scatter(
            data.t_true,
            100 * data.residual_emulator[:, k],
            s=7,
            color=C_CORR,
            alpha=0.8,
            lw=0,
            label=f"emulator (RMS {100 * data.rms['emulator'][name]:.2f}%)",
        )
        ax_r.axhline(0.0, color="0.3", lw=1.0, ls="--")
        ax_r.set_xscale("log")
        ax_r.set_xlabel(r"$T_\mathrm{true}$ [keV]")
        ax_r.set_ylabel(f"{short[k]}: predicted / simulated $-$ 1 [%]")
        ax_r.legend(loc="lower left", fontsize=8, markerscale=2)
        ax_r.grid(alpha=0.3, which="both", lw=0.5)
        _plain_log_axis(ax_r, "x")
    # one y range for both residual panels, so the two outputs compare at a glance
    ylim = max(abs(v) for ax in axes[1] for v in ax.get_ylim())
    for ax in axes[1]:
        ax.set_ylim(-ylim, ylim)
    return fig


def corner_ranges(
    data: CornerFigureData, pad: float = 0.03, tail: float = CORNER_TAIL
) -> list[tuple[float, float]]:
    """Axis ranges for figure 4: from the ``tail`` to the ``1 - tail`` quantile of the
    samples (a few walkers left in a minor mode would otherwise squeeze the bulk of the
    posterior into a corner), widened to include theta_best and theta_true, padded by ``pad``
    of the width (so a point on a prior bound is not clipped onto the frame)."""
    lo, hi = np.quantile(data.samples, [tail, 1.0 - tail], axis=0)
    for point in (data.theta_best, data.truths):
        if point is not None:
            lo = np.minimum(lo, np.asarray(point, dtype=float))
            hi = np.maximum(hi, np.asarray(point, dtype=float))
    width = np.where(hi > lo, hi - lo, np.maximum(np.abs(lo), 1.0) * 1e-3)
    return [(float(a - pad * w), float(b + pad * w)) for a, b, w in zip(lo, hi, width)]


def plot_corner(data: CornerFigureData) -> Any:
    import corner

    d = data.samples.shape[1]
    fig = _new_figure(2.6 * d + 0.8, 2.6 * d + 0.8)
    fig.set_layout_engine(None)  # corner places its axes itself
    corner.corner(
        data.samples,
        fig=fig,
        labels=list(data.labels),
        range=corner_ranges(data),
        truths=None if data.truths is None else list(data.truths),
        truth_color=C_TRUE,
        quantiles=[0.16, 0.5, 0.84],
        show_titles=True,
        title_fmt=".3g",
        title_kwargs={"fontsize": 10},
        label_kwargs={"fontsize": 11},
        color=C_CORR,
        plot_datapoints=False,
        fill_contours=True,
        levels=(1 - np.exp(-0.5), 1 - np.exp(-2.0)),
        smooth=1.0,
        bins=30,
    )
    axes = np.array(fig.axes).reshape(d, d)
    for i in range(d):
        for j in range(i):
            axes[i, j].plot(
                data.theta_best[j],
                data.theta_best[i],
                marker="*",
                ms=12,
                color=C_ORIG,
                mec="white",
                mew=0.6,
                ls="none",
                zorder=5,
            )
    handles = [
        _line(C_CORR, "-", "posterior: 39% and 86% contours, 16/50/84% (dashed)"),
        _line(C_ORIG, "none", r"$\theta_\mathrm{best}$ (best multi-start optimum)", marker="*"),
    ]
    if data.truths is not None:
        handles.append(_line(C_TRUE, "-", r"$\theta_\mathrm{true}$ (mock truth)"))
    fig.legend(handles=handles, loc="upper right", fontsize=10, frameon=False)
    return fig


def _line(color: str, ls: str, label: str, marker: str | None = None) -> Any:
    from matplotlib.lines import Line2D

    return Line2D([], [], color=color, ls=ls, marker=marker, ms=10, label=label)


def profile_window(
    data: ProfileFigureData, i: int, half: int = PROFILE_HALF_WINDOW
) -> tuple[tuple[float, float], float]:
    """Temperature range (keV) and delta-C top for example ``i`` of figure 5: ``half``
    fit-grid points either side of both curves' minima, and T_true. The fit grid is often
    coarse next to a bright spectrum's curve width, so a fixed delta-C window could hold
    only two or three points; this keeps the curves' shape in view."""
    n = data.tgrid.size
    mins = [int(np.argmin(data.delta_orig[i])), int(np.argmin(data.delta_mod[i]))]
    a, b = max(min(mins) - half, 0), min(max(mins) + half, n - 1)
    lo = min(data.tgrid[a], data.t_true[i]) / 1.02
    hi = max(data.tgrid[b], data.t_true[i]) * 1.02
    shown = (data.tgrid >= lo) & (data.tgrid <= hi)
    values = np.concatenate([data.delta_orig[i][shown], data.delta_mod[i][shown]])
    top = max(float(np.nanmax(values)) * 1.05, 3.0)
    return (float(lo), float(hi)), top


def plot_profiles(data: ProfileFigureData) -> Any:
    k = data.index.size
    cols = 2 if k > 1 else 1
    rows = math.ceil(k / cols)
    fig = _new_figure(5.2 * cols, 3.6 * rows + 0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for i in range(k):
        ax = axes[i]
        for fine, nodes, colour in (
            (data.fine_orig[i], data.delta_orig[i], C_ORIG),
            (data.fine_mod[i], data.delta_mod[i], C_CORR),
        ):
            ax.plot(data.t_fine, fine, color=colour, lw=1.3)
            ax.plot(data.tgrid, nodes, color=colour, lw=0, marker="o", ms=3)
        ax.axvline(data.t_true[i], color=C_TRUE, lw=1.2, ls=":")
        ax.axvline(data.t_fit_orig[i], color=C_ORIG, lw=0.9, ls="--")
        ax.axvline(data.t_fit_mod[i], color=C_CORR, lw=0.9, ls="--")
        ax.axhline(1.0, color="0.5", lw=0.8, ls="-.")
        (lo, hi), top = profile_window(data, i)
        ax.set_xscale("log")
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.03 * top, top)
        theta = ", ".join(f"{n} = {v:.3g}" for n, v in zip(data.param_names, data.theta[i]))
        ax.set_title(
            f"grid point {data.index[i]}: {theta}\n"
            f"$T_\\mathrm{{true}}$ = {data.t_true[i]:.3g}, $T_1$ = {data.t_fit_orig[i]:.3g}, "
            f"$T_1'$ = {data.t_fit_mod[i]:.3g} keV",
            fontsize=9,
        )
        ax.set_xlabel("fitted temperature T [keV]")
        ax.set_ylabel(r"$C(T) - C_\mathrm{min}$")
        ax.grid(alpha=0.3, which="both", lw=0.5)
        _plain_log_axis(ax, "x", max_ticks=6)
    for ax in axes[k:]:
        ax.set_visible(False)
    handles = [
        _line(C_ORIG, "-", "fitted with the original ARF", marker="o"),
        _line(C_CORR, "-", "fitted with the modified ARF", marker="o"),
        _line(C_TRUE, ":", r"$T_\mathrm{true}$"),
        _line("0.3", "--", r"best fits $T_1$, $T_1'$"),
        _line("0.5", "-.", r"$\Delta C = 1$"),
    ]
    for h in handles[:2]:
        h.set_markersize(4)
    fig.legend(handles=handles, loc="outside lower center", ncols=5, fontsize=8, frameon=False)
    fig.suptitle(
        "Profile C-statistic of one simulated spectrum per grid point, minus C at the best fit\n"
        "dots: the fit-temperature grid; lines: the interpolant the fit refines on",
        fontsize=10,
    )
    return fig


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


@dataclass
class ReportSummary:
    """What ``report`` wrote: ``figures`` key -> PNG path, ``skipped`` key -> why, the
    summary table and the path of ``summary.txt``."""

    figures: dict[str, Path] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    table: str = ""
    summary_path: Path | None = None
    notes: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        lines = [self.table, ""]
        for key in FIGURES:
            if key in self.figures:
                lines.append(f"  {self.figures[key].name}: {self.notes.get(key, '')}")
            elif key in self.skipped:
                lines.append(f"  {FIGURES[key]}: skipped ({self.skipped[key]})")
        if self.summary_path is not None:
            lines.append(f"  {self.summary_path.name}: this summary")
        return "\n".join(lines)


def report(config: Config | str | Path) -> ReportSummary | None:
    """The ``report`` stage: figures and ``summary.txt`` in ``WORKDIR/figures``.

    Serial: under an MPI launcher only rank 0 works (the others return None).
    """
    if detect().rank != 0:
        return None
    cfg = config if isinstance(config, Config) else load_config(config)
    art = load_artefacts(cfg)
    out = cfg.figures_dir
    summary = ReportSummary()

    def draw(key: str, data: Any, plot: Any, note: str) -> None:
        fig = plot(data)
        summary.figures[key] = save_figure(fig, out / FIGURES[key])
        summary.notes[key] = note
        log.info("report: wrote %s", summary.figures[key])

    arf = figure_data_arf(art)
    draw(
        "arf",
        arf,
        plot_arf,
        f"target and corrected ARF; m(E) at theta_best, posterior median and 16-84% band "
        f"from {arf.n_band_samples} posterior samples"
        + ("; m(E) at theta_true" if arf.m_true is not None else ""),
    )
    temps = figure_data_temperatures(art.result)
    draw(
        "temperatures",
        temps,
        plot_temperatures,
        f"T1 and corrected T1' against T0 for {temps.t0.size} sources, 1:1 line, 1-sigma "
        "error bars",
    )
    parity = figure_data_parity(art.offgrid)
    if parity is None:
        summary.skipped["parity"] = "the emulator holds no off-grid points (offgrid_points = 0)"
        log.info("report: skipped %s: %s", FIGURES["parity"], summary.skipped["parity"])
    else:
        draw(
            "parity",
            parity,
            plot_parity,
            f"emulated vs asimov-simulated T1 and T1' at {parity.truth.shape[0]} off-grid "
            "points; residuals vs T_true for emulator and grid interpolation",
        )
    corner_data = figure_data_corner(art)
    draw(
        "corner",
        corner_data,
        plot_corner,
        f"theta posterior, {corner_data.samples.shape[0]} samples (axes span the central "
        f"{100 * (1 - 2 * CORNER_TAIL):g}% of each parameter)"
        + (", theta_true marked" if corner_data.truths is not None else " (no mock truth)"),
    )
    from xrmodifier_hpc.io.store import load_grid

    grid = load_grid(cfg.grid_path, curves=True)
    profiles = figure_data_profiles(grid, art.theta_best)
    del grid
    if profiles is None:
        summary.skipped["profiles"] = "grid.h5 holds no C(T) curves ([simulation] curves = false)"
        log.info("report: skipped %s: %s", FIGURES["profiles"], summary.skipped["profiles"])
    else:
        draw(
            "profiles",
            profiles,
            plot_profiles,
            f"C(T) - min C, original and modified ARF, grid points {profiles.index.tolist()}",
        )

    summary.table = summary_table(art, out)

    summary.summary_path = out / SUMMARY_NAME
    write_text(summary.summary_path, summary.describe() + "\n")
    return summary
