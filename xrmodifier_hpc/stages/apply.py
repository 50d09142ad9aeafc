"""``xrmodifier apply``: put the inferred ARF correction on other ARFs of the target instrument.

The correction found by ``invert`` holds for the instrument, not for one file: other
observations and extraction regions of the target come with their own ARFs, on their own
energy grids. ``apply`` evaluates the multiplier m(E; theta) at each file's own bin centres
for the posterior draws referenced by ``result.json`` (``posterior.npz`` beside it) and writes

* ``--stat median`` (default): ``<name>.corrected.arf``, the ARF times the pointwise
  posterior median of m(E), the same statistic as ``invert``'s ``corrected.arf``;
* ``--stat p16`` / ``p84``: ``<name>.corrected_p16.arf`` / ``_p84.arf``, the envelopes;
* ``--stat ensemble``: ``<name>.corrected_ensemble.fits``, ``--draws`` posterior draws of the
  corrected ARF, one per row (format in ``io.arf_products``).

``<name>`` is the input's file name without ``.gz`` and ``.arf``/``.fits``. Each written ARF
keeps every HDU and keyword of its input and records the statistic (XRMSTAT) and the result it
came from (XRMRESLT). An ARF whose TELESCOP/INSTRUME differ from the target's (the ARF the
inversion corrected) is refused unless ``--force``: a correction of one instrument's effective
area says nothing about another's. Every input is checked before anything is written; writes
are atomic. The draws are chosen with the inversion's seed, so the same result gives the same
correction on every grid.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.inference.arf_posterior import (
    ENSEMBLE_DRAWS,
    MAX_BAND_DRAWS,
    ensemble,
    pointwise_band,
)
from xrmodifier_hpc.io.arf_products import (
    IDENTITY_KEYS,
    arf_identity,
    write_arf_ensemble,
    write_corrected_arf,
)
from xrmodifier_hpc.io.ogip import read_arf
from xrmodifier_hpc.io.result import InversionResult
from xrmodifier_hpc.physics.modifiers import Modifier, ModifierError, get_modifier

log = logging.getLogger("xrmodifier.apply")

#: what ``--stat`` accepts
APPLY_STATISTICS = ("median", "p16", "p84", "ensemble")


@dataclass(frozen=True)
class PosteriorCorrection:
    """What ``apply`` needs from an inversion: the family, the posterior draws, the target.

    Attributes
    ----------
    result_path : Path
        The result.json read.
    family : Modifier
        The modifier family (with its options).
    samples : ndarray, shape (n_samples, d)
        Posterior samples of theta (after burn-in and thinning), ordered as
        ``family.param_names``.
    seed : int
        The inversion's seed (chooses the draws).
    target : dict of str to str or None
        TELESCOP and INSTRUME of the target ARF; None when the result does not say.
    target_where : str
        Where they came from (for messages).
    """

    result_path: Path
    family: Modifier
    samples: np.ndarray
    seed: int
    target: dict[str, str] | None
    target_where: str


def read_result(result_path: str | Path) -> InversionResult:
    """Read ``result.json`` as an :class:`~xrmodifier_hpc.io.result.InversionResult`.

    Parameters
    ----------
    result_path : str or Path
        The inversion's result.json.

    Returns
    -------
    InversionResult
        The typed result.

    Raises
    ------
    UserError
        When the file is missing, is not an inversion result, or is of another schema
        version (rerun invert).
    """
    try:
        return InversionResult.read(result_path)
    except UserError as exc:
        if "file not found" in exc.message:
            raise UserError(
                "result file not found (made by `xrmodifier invert`)", exc.where
            ) from None
        if "schema version" in exc.message:
            raise
        raise UserError(
            f"not an inversion result written by `xrmodifier invert` ({exc.message})", exc.where
        ) from None


def load_correction(result_path: str | Path) -> PosteriorCorrection:
    """Read what ``apply`` needs from ``result.json`` and the ``posterior.npz`` beside it.

    The result is read through :class:`~xrmodifier_hpc.io.result.InversionResult` (its
    ``modifier``, ``param_names``, ``seed``, ``posterior.samples_file`` and ``target``).

    Parameters
    ----------
    result_path : str or Path
        The inversion's result.json.

    Returns
    -------
    PosteriorCorrection
        The family, the posterior samples and the target's identity.

    Raises
    ------
    UserError
        When the file or the posterior beside it is missing or malformed.
    """
    path = Path(result_path)
    where = str(path)
    result = read_result(path)
    try:
        family = get_modifier(result.modifier.family, result.modifier.options)
    except ModifierError as exc:
        raise UserError(exc.message, f"{where} [modifier]") from None
    names = result.param_names
    if tuple(family.param_names) != names:
        raise UserError(
            f"param_names {names} are not those of family {family.name!r} "
            f"{tuple(family.param_names)}",
            where,
        )
    npz = path.parent / result.posterior.samples_file
    try:
        with np.load(npz) as post:
            chain = np.asarray(post["chain"], dtype=np.float64)
            burn, thin = int(post["burn"]), int(post["thin"])
            post_names = tuple(str(n) for n in post["param_names"])
    except FileNotFoundError:
        raise UserError(
            f"the posterior samples {npz.name} are not beside the result; keep the files "
            "`xrmodifier invert` wrote together",
            str(npz),
        ) from None
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"not a readable posterior file ({exc})", str(npz)) from None
    if post_names != names or chain.ndim != 3 or chain.shape[-1] != len(names):
        raise UserError(
            f"the posterior's parameters {post_names} (chain shape {chain.shape}) do not match "
            f"the result's {names}",
            str(npz),
        )
    samples = chain[burn :: max(thin, 1)].reshape(-1, len(names))
    if samples.shape[0] == 0 or not np.all(np.isfinite(samples)):
        raise UserError("the posterior holds no usable samples after burn-in", str(npz))
    return PosteriorCorrection(
        result_path=path,
        family=family,
        samples=samples,
        seed=result.seed,
        target=dict(result.target) or None,
        target_where=f"{where} [target]",
    )


def output_name(arf: Path, statistic: str) -> str:
    """Return the file name ``apply`` writes for ``arf`` and ``statistic`` (module docstring).

    Parameters
    ----------
    arf : Path
        The input ARF.
    statistic : str
        ``median``, ``p16``, ``p84`` or ``ensemble``.

    Returns
    -------
    str
        ``<name>.corrected.arf``, ``<name>.corrected_<stat>.arf`` or
        ``<name>.corrected_ensemble.fits``, ``<name>`` the input's name without ``.gz`` and
        its FITS suffix.
    """
    name = arf.name
    for suffix in (".gz", ".arf", ".fits", ".fit", ".fts"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
    if statistic == "median":
        return f"{name}.corrected.arf"
    if statistic == "ensemble":
        return f"{name}.corrected_ensemble.fits"
    return f"{name}.corrected_{statistic}.arf"


@dataclass(frozen=True)
class AppliedArf:
    """One written file.

    Attributes
    ----------
    source : Path
        The input ARF.
    output : Path
        The file written.
    statistic : str
        ``median``, ``p16``, ``p84`` or ``ensemble``.
    n_bins : int
        Energy bins of the ARF.
    energy_range : (float, float)
        Its energy span (keV).
    multiplier_range : (float, float)
        Smallest and largest m(E) applied (over all draws for an ensemble).
    """

    source: Path
    output: Path
    statistic: str
    n_bins: int
    energy_range: tuple[float, float]
    multiplier_range: tuple[float, float]

    def describe(self) -> str:
        """Describe the written file in one line for the terminal.

        Returns
        -------
        str
            Output path, statistic, bins, energy span (keV) and the range of m(E) applied.
        """
        return (
            f"wrote {self.output} ({self.statistic}; {self.n_bins} bins, "
            f"{self.energy_range[0]:.3g}-{self.energy_range[1]:.3g} keV; m(E) "
            f"{self.multiplier_range[0]:.4f}-{self.multiplier_range[1]:.4f})"
        )


def _check_identity(correction: PosteriorCorrection, arf: Path, force: bool) -> None:
    if force:
        return
    if correction.target is None:
        raise UserError(
            "cannot tell which instrument the correction belongs to (no target TELESCOP/"
            f"INSTRUME in {correction.target_where}); pass --force to apply it anyway",
            str(arf),
        )
    mine = arf_identity(arf)
    for key in IDENTITY_KEYS:
        want = correction.target.get(key)
        have = mine.get(key)
        if want is None or have is None:
            raise UserError(
                f"{key} is missing from {'the target ARF' if want is None else 'this ARF'}, "
                "so it cannot be checked against the target; pass --force to apply anyway",
                str(arf),
            )
        if have != want:
            raise UserError(
                f"{key} = {have!r} is not the target's {want!r} (the correction was inferred "
                f"for {correction.target.get('TELESCOP')}/{correction.target.get('INSTRUME')}); "
                "pass --force to apply it anyway",
                str(arf),
            )


def apply(
    result: str | Path,
    arfs: list[str | Path],
    outdir: str | Path,
    stat: str = "median",
    force: bool = False,
    draws: int = ENSEMBLE_DRAWS,
) -> list[AppliedArf]:
    """Write each ARF corrected by the posterior of ``result`` into ``outdir``.

    Parameters
    ----------
    result : str or Path
        ``result.json`` of ``xrmodifier invert`` (``posterior.npz`` beside it).
    arfs : list of str or Path
        ARFs of the target instrument (any energy grid; ``.gz`` accepted).
    outdir : str or Path
        Folder for the outputs (created if needed).
    stat : str
        ``median``, ``p16``, ``p84`` or ``ensemble``.
    force : bool
        Apply even when TELESCOP/INSTRUME differ from the target's or cannot be checked.
    draws : int
        Rows of an ensemble.

    Returns
    -------
    list of AppliedArf
        One per input, in order.

    Raises
    ------
    UserError
        For a bad result, an unreadable ARF, another instrument's ARF (without ``force``),
        two inputs that would write the same file, or a bad option; nothing is written then.
    """
    if stat not in APPLY_STATISTICS:
        raise UserError(f"--stat must be one of {', '.join(APPLY_STATISTICS)}, got {stat!r}")
    if stat == "ensemble" and draws < 1:
        raise UserError(f"--draws must be at least 1, got {draws}")
    if not arfs:
        raise UserError("give at least one ARF")
    correction = load_correction(result)
    if stat == "ensemble" and correction.samples.shape[0] < draws:
        raise UserError(
            f"the posterior holds {correction.samples.shape[0]} samples, fewer than the "
            f"{draws} draws asked for; lower --draws",
            str(result),
        )
    outdir = Path(outdir)
    if outdir.exists() and not outdir.is_dir():
        raise UserError("exists and is not a folder", str(outdir))
    # check every input before writing anything
    plans = []
    seen: dict[Path, Path] = {}
    for item in arfs:
        arf_path = Path(item)
        arf = read_arf(arf_path)  # ResponseError (exit 2) naming the file
        _check_identity(correction, arf_path, force)
        out = outdir / output_name(arf_path, stat)
        if out in seen:
            raise UserError(
                f"{seen[out]} and {arf_path} would both be written to {out.name}; apply them "
                "into different folders",
                str(arf_path),
            )
        if out.resolve() == arf_path.resolve():
            raise UserError("the output would overwrite the input; choose another -o", str(out))
        seen[out] = arf_path
        plans.append((arf_path, arf, out))
    outdir.mkdir(parents=True, exist_ok=True)
    family, names = correction.family, correction.family.param_names
    extra = {"XRMFAMIL": (family.name, "ARF modifier family")}
    done = []
    for arf_path, arf, out in plans:
        if out.exists():
            log.info("replacing %s (written by an earlier apply)", out)
        e_mid = 0.5 * (arf.energ_lo + arf.energ_hi)
        if stat == "ensemble":
            ens = ensemble(family, e_mid, correction.samples, draws, correction.seed)
            write_arf_ensemble(
                out, arf_path, ens.multipliers, ens.thetas, names, correction.result_path, extra
            )
            m = ens.multipliers
        else:
            band = pointwise_band(
                family, e_mid, correction.samples, MAX_BAND_DRAWS, correction.seed
            )
            m = band.statistic(stat)
            write_corrected_arf(
                out,
                arf_path,
                m,
                stat,
                correction.result_path,
                band.n_draws,
                extra,
                history=[f"xrmodifier apply: correction from {correction.result_path}"],
            )
        done.append(
            AppliedArf(
                source=arf_path,
                output=out,
                statistic=stat,
                n_bins=int(e_mid.size),
                energy_range=(float(arf.energ_lo[0]), float(arf.energ_hi[-1])),
                multiplier_range=(float(np.min(m)), float(np.max(m))),
            )
        )
    return done
