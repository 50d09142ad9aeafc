"""The report's summary table.

theta_true against the recovered posterior, the seed's loss, the emulator's accuracy.
"""

from __future__ import annotations

from pathlib import Path

from xrmodifier_hpc.figures.inputs import Artefacts


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def summary_table(art: Artefacts, figures_dir: Path | None = None) -> str:
    """Write the report's summary as plain text.

    theta_true against the recovered posterior (median, 68% interval) and theta_best; the
    seed's loss before and after the correction; the emulator's off-grid accuracy against
    grid interpolation; the identifiability report's plain lines; which corrected-ARF file
    holds which statistic; where the figures are.

    Parameters
    ----------
    art : Artefacts
        The run's artefacts.
    figures_dir : Path, optional
        Where the figures are (last line).

    Returns
    -------
    str
        Lines separated by newlines; one row per parameter, with "true in 68% / 95%"
        columns when the mock truth is known.
    """
    res = art.result
    post = res.posterior
    truth = art.truth.theta_true if art.truth is not None else None
    lines = [
        f"inversion: {res.n_sources} sources, objective {res.objective}, "
        f"{len(res.optima)} distinct optima from {res.n_starts} starts, "
        f"{post.n_samples} posterior samples"
    ]
    head = f"{'param':>7} {'true':>9} {'median':>9} {'68% interval':>21} {'best':>9}"
    lines.append(head + ("  true in 68% / 95%" if truth else ""))
    for n in art.param_names:
        s = post.summary[n]
        interval = f"[{_fmt(s.p16)}, {_fmt(s.p84)}]"
        row = (
            f"{n:>7} {_fmt(truth[n]) if truth else '-':>9} {_fmt(s.median):>9} "
            f"{interval:>21} {_fmt(res.theta_best[n]):>9}"
        )
        if truth:
            in68 = s.p16 <= truth[n] <= s.p84
            in95 = s.p2_5 <= truth[n] <= s.p97_5
            row += f"  {'yes' if in68 else 'no':>8} / {'yes' if in95 else 'no'}"
        lines.append(row)
    sl = res.seed_loss
    lines.append(
        f"seed loss sum_i (T0_i - T1'_i)^2: before {_fmt(sl.before)} keV^2, after "
        f"{_fmt(sl.after)} keV^2 ({_fmt(sl.ratio)}x smaller)"
    )
    off = art.metrics.offgrid
    emu, itp = off.emulator, off.interpolator
    if off.n_points and None not in (*emu.values(), *itp.values()):
        lines.append(
            f"emulator off-grid RMS relative error ({off.n_points} asimov points): "
            f"T1 {100 * emu.t_fit_orig:.2f}%, T1' {100 * emu.t_fit_mod:.2f}% "
            f"(grid interpolation: {100 * itp.t_fit_orig:.2f}%, "
            f"{100 * itp.t_fit_mod:.2f}%)"
        )
    else:
        lines.append(f"emulator off-grid accuracy: not measured ({off.note or 'no points'})")
    ident = res.identifiability
    if ident.lines:
        lines.append("what the data constrain:")
        lines.extend(f"  {line}" for line in ident.lines)
    if res.corrected_arfs:
        lines.append("corrected ARFs (which file is which):")
        lines.extend(
            f"  {Path(item.path).name}: {item.description} [XRMSTAT = {item.statistic}]"
            for item in res.corrected_arfs
        )
        lines.append(
            "  theta_best (the likelihood maximum) is kept in result.json as a diagnostic only"
        )
    for w in res.warnings:
        lines.append(f"warning: {w}")
    if figures_dir is not None:
        lines.append(f"figures: {figures_dir}/")
    return "\n".join(lines)
