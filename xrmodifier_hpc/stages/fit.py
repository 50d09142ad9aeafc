"""The ``fit`` stage: C-stat fit of one PHA spectrum with the native backend's fitter.

A user-facing check that doubles as the conformance entry point against XSPEC. The spectrum
is read as XSPEC reads it (:func:`~xrmodifier_hpc.io.ogip.read_pha`,
:func:`~xrmodifier_hpc.io.ogip.spectrum_response`): channels paired with the response's by
position, AREASCAL multiplying the model counts, QUALITY leaving bad channels out (2,
"dubious", only with ``ignore_bad``), GROUPING summing channels into fitted bins. The band
keeps the bins XSPEC's ``ignore **-lo hi-**`` keeps; the norm and the temperature are free and
every other model parameter is frozen at the value given. The statistic is XSPEC's ``cstat``
without background, so the data must be Poisson counts: NET, non-Poisson (POISSERR = F),
negative or non-integer spectra are refused with the reason. A BACKFILE named in the header is
not used (reported as a warning), nor are SYS_ERR and STAT_ERR (C-stat has no use for them).

Responses: an RMF without an ARF is used as XSPEC uses it (area 1 cm^2; a warning when the
matrix looks redistribution-only); an ARF with a matrix that already carries the area is
refused unless ``allow_double_area``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.backends.base import describe_status
from xrmodifier_hpc.backends.native import SpectrumFitter
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.ogip import Instrument, Pha, read_pha, spectrum_response
from xrmodifier_hpc.io.tables import load_model

#: default fit-temperature grid (keV): 256 log-spaced values, clipped to the model's range
DEFAULT_TGRID = (0.08, 80.0, 256)


def parse_set(items: Sequence[str] | None) -> dict[str, float]:
    """Parse ``--set`` items.

    Parameters
    ----------
    items : sequence of str or None
        ``["nH=0.05", ...]``.

    Returns
    -------
    dict
        ``{"nH": 0.05}``.

    Raises
    ------
    UserError
        A malformed item.
    """
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        name = name.strip()
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name or not math.isfinite(number):
            raise UserError(f"--set takes NAME=NUMBER, got {item!r}")
        out[name] = number
    return out


def fit(
    spectrum: str | Path,
    arf: str | Path | None = None,
    rmf: str | Path | None = None,
    model: str = "wabs*bremss",
    band: tuple[float, float] = (0.5, 7.0),
    params: Mapping[str, float] | None = None,
    curve: bool = False,
    temperature: str = "kT",
    tgrid: tuple[float, float, int] | None = None,
    allow_double_area: bool = False,
    ignore_bad: bool = False,
) -> dict[str, Any]:
    """Fit ``spectrum`` (a type-I PHA file) with C-stat and return a JSON-ready summary.

    Parameters
    ----------
    spectrum : str or Path
        The PHA file (Poisson counts).
    arf, rmf : str, Path or None
        Responses; default the PHA's ANCRFILE / RESPFILE, resolved relative to its folder.
        Without any ARF the matrix is used alone (area 1 cm^2, as XSPEC).
    model : str
        Source model expression (``wabs*bremss``; ``bremss`` is XSPEC's).
    band : (float, float)
        Fitted band in keV (XSPEC's ``ignore **-lo hi-**``).
    params : mapping
        Values of the model's frozen parameters (e.g. ``{"nH": 0.05}``, 1e22 cm^-2).
    curve : bool
        Include the profile C(kT) on the grid.
    temperature : str
        The free temperature parameter.
    tgrid : (float, float, int) or None
        ``(low, high, n)`` keV: the log-spaced grid of the exact profile.
    allow_double_area : bool
        Accept an ARF with a matrix that already carries the area (warned).
    ignore_bad : bool
        Also leave out QUALITY = 2 channels (XSPEC's ``ignore bad``).

    Returns
    -------
    dict
        kT (keV), norm, cstat, kT_1sigma [low, high] (delta-C = 1), counts_noticed,
        channels_noticed (fitted bins), exposure (s), status, warnings (what was assumed or
        not used), and the profile C(kT) with ``curve``.

    Raises
    ------
    UserError
        Bad input: unreadable or inconsistent files or keywords (naming file and keyword),
        data that are not Poisson counts, an ARF with an area-carrying matrix, bad options.
    """
    where = str(spectrum)
    pha = read_pha(spectrum)
    pha.require_poisson()
    rmf_path = Path(rmf) if rmf is not None else pha.resolve(pha.respfile)
    arf_path = Path(arf) if arf is not None else pha.resolve(pha.ancrfile)
    if rmf_path is None:
        raise UserError("the PHA names no RESPFILE: give the response with --rmf", where)
    for given, path, key, opt in (
        (rmf, rmf_path, "RESPFILE", "--rmf"),
        (arf, arf_path, "ANCRFILE", "--arf"),
    ):
        if given is None and path is not None and not path.exists():
            raise UserError(f"its {key} {path.name} is not in {path.parent}: give {opt}", where)
    instrument = Instrument.load(arf_path, rmf_path, allow_double_area=allow_double_area)
    if pha.counts.size != instrument.n_channels:
        raise UserError(
            f"the spectrum has {pha.counts.size} channels but the response {rmf_path.name} has "
            f"{instrument.n_channels}: give the matching response (--rmf)",
            where,
        )
    warnings = [*instrument.warnings, *pha.notes, *_mismatched_names(pha, instrument)]
    seen, seen_counts, usable = spectrum_response(pha, instrument, ignore_bad=ignore_bad)
    dubious = int(np.sum(pha.quality == 2)) if pha.quality is not None else 0
    if dubious and not ignore_bad:
        warnings.append(
            f"{dubious} channel(s) of QUALITY = 2 (dubious) are fitted, as XSPEC does until "
            "`ignore bad` (--ignore-bad)"
        )
    lo, hi = (float(b) for b in band)
    if not 0 < lo < hi:
        raise UserError(f"--band must be LOW HIGH keV with 0 < LOW < HIGH, got {lo:g} {hi:g}")
    src = load_model(model, base=Path.cwd())
    params = dict(params or {})
    for name in params:
        if name not in src.param_names or name == temperature:
            free = f" ({temperature} and the norm are free)" if name == temperature else ""
            raise UserError(
                f"--set {name}: model {model!r} has no frozen parameter {name!r}{free}; "
                f"its parameters: {', '.join(src.param_names)}"
            )
    frozen = [p for p in src.param_names if p != temperature]
    missing = [p for p in frozen if p not in params]
    if missing:
        raise UserError(
            f"give the frozen parameter(s) of {model!r}: "
            + " ".join(f"--set {p}=VALUE" for p in missing)
        )
    grid = _tgrid(src, temperature, tgrid)
    fitter = SpectrumFitter(
        seen, src, params, (lo, hi), pha.exposure, grid, temperature, usable=usable
    )
    counts = seen_counts[fitter.mask]
    total = float(counts.sum())
    if total <= 0:
        raise UserError(
            f"no counts in the {counts.size} channels of the band {lo:g}-{hi:g} keV", where
        )
    result = fitter.fit(counts[None, :])
    status = int(result.status[0])
    t_fit, cstat, t_lo, t_hi = _exact_minimum(
        fitter,
        counts,
        grid,
        float(result.t_fit[0]),
        float(result.cstat[0]),
        float(result.t_fit[0] - result.err[0, 0]),
        float(result.t_fit[0] + result.err[0, 1]),
    )
    out: dict[str, Any] = {
        "spectrum": str(spectrum),
        "arf": str(arf_path) if arf_path else None,
        "rmf": str(rmf_path),
        "model": src.expression,
        "params": params,
        "band": [lo, hi],
        "kT": _num(t_fit),
        "norm": _num(fitter.best_norm(counts[None, :], np.array([t_fit]))[0]),
        "cstat": _num(cstat),
        "kT_1sigma": [_num(t_lo), _num(t_hi)],
        "counts_noticed": total,
        "channels_noticed": int(counts.size),
        "exposure": pha.exposure,
        "status": status,
        "status_names": describe_status(status),
    }
    if temperature != "kT":
        out["temperature_param"] = temperature
    if pha.backfile:
        warnings.append(f"background file {pha.backfile} not used (cstat without background)")
    if pha.areascal is not None and np.any(pha.areascal != 1.0):
        out["areascal"] = [float(np.min(pha.areascal)), float(np.max(pha.areascal))]
    if pha.grouping is not None:
        out["grouping"] = f"{int(pha.counts.size)} channels in {int(usable.size)} bins"
    if warnings:
        out["warnings"] = warnings
    if curve:
        out["curve"] = {
            "kT": [float(t) for t in grid],
            "cstat": [_num(c) for c in result.curves[0]],
        }
    return out


#: exact scan around the profile fit: points, and half-width in units of the 1-sigma error
_SCAN_POINTS, _SCAN_SIGMAS = 61, 4.0


def _exact_minimum(
    fitter: SpectrumFitter,
    counts: np.ndarray,
    grid: np.ndarray,
    t_fit: float,
    c_fit: float,
    t_lo: float,
    t_hi: float,
) -> tuple[float, float, float, float]:
    """Return the minimum of the exact profile C(T) and its delta-C = 1 interval near a grid fit.

    The grid fit interpolates C(T) between exact nodes with smooth polynomials; XSPEC's
    ``bremss`` steps at its Gaunt-factor regime switches (kT = 13.6 and 0.54 keV), where a
    smooth interpolant misplaces the minimum (by up to 1.4 sigma at 13.6 keV). So the exact
    profile (the norm refitted at every T, as XSPEC's fit and ``error``) is scanned over
    +-4 sigma (at least two grid intervals), the best cell is refined by a bounded 1-D
    minimisation and the crossings of C_min + 1 are bracketed on the scan and solved.

    Returns
    -------
    (t, c, t_lo, t_hi) : floats
        Best-fit temperature (keV), C at it, and the 1-sigma interval ends (keV); the grid
        fit's values where the scan cannot improve them (a fit at the grid's edge).
    """
    from scipy.optimize import brentq, minimize_scalar

    if not (np.isfinite(t_fit) and np.isfinite(c_fit)):
        return t_fit, c_fit, t_lo, t_hi
    sigma = np.nanmax([t_fit - t_lo, t_hi - t_fit, 0.0])
    step = float(np.log(grid[1] / grid[0]))
    half = max(_SCAN_SIGMAS * sigma / t_fit, 2.0 * step)
    x0 = np.log(t_fit)
    xs = np.linspace(
        max(x0 - half, np.log(grid[0])), min(x0 + half, np.log(grid[-1])), _SCAN_POINTS
    )

    def exact(x: float) -> float:
        return float(fitter.exact_profile(counts, [np.exp(x)])[0, 0])

    cs = fitter.exact_profile(counts, np.exp(xs))[0]
    k = int(np.argmin(cs))
    res = minimize_scalar(
        exact,
        bounds=(xs[max(k - 1, 0)], xs[min(k + 1, xs.size - 1)]),
        method="bounded",
        options={"xatol": 1e-9},
    )
    x_best, c_best = (float(res.x), float(res.fun)) if res.fun < cs[k] else (xs[k], cs[k])
    target = c_best + 1.0
    ends = []
    for side in (-1, 1):
        idx = np.arange(k, -1, -1) if side < 0 else np.arange(k, xs.size)
        above = idx[cs[idx] >= target]
        if above.size == 0:
            ends.append(t_lo if side < 0 else t_hi)  # beyond the scan: keep the grid's
            continue
        j = int(above[0])
        inner = xs[j - side] if (j - side) * side > k * side else x_best
        a, b = sorted((inner, xs[j]))
        ends.append(float(np.exp(brentq(lambda x: exact(x) - target, a, b, xtol=1e-10))))
    return float(np.exp(x_best)), c_best, ends[0], ends[1]


#: names that one mission's files use interchangeably (TELESCOP)
_ALIASES = {"CXC": "CHANDRA", "AXAF": "CHANDRA", "XMM-NEWTON": "XMM"}


def _mismatched_names(pha: Pha, instrument: Instrument) -> list[str]:
    """Return warnings where the spectrum's TELESCOP/INSTRUME differ from the responses'.

    XSPEC does not check them; a mismatch usually means the wrong response.
    """
    out = []
    headers = [("ARF", instrument.arf_header), ("RMF", instrument.rmf_header)]
    for key, ours in (("TELESCOP", pha.telescope), ("INSTRUME", pha.instrument)):
        for label, header in headers:
            theirs = str(header.get(key, "") or "").strip()
            a, b = ours.upper(), theirs.upper()
            if a and b and _ALIASES.get(a, a) != _ALIASES.get(b, b):
                out.append(f"{key} of the spectrum is {ours} but of the {label} {theirs}")
    return out


def _tgrid(model, temperature: str, spec: tuple[float, float, int] | None) -> np.ndarray:
    t_lo, t_hi = model.param_range(temperature)
    if spec is None:
        lo, hi, n = DEFAULT_TGRID
        lo, hi = max(lo, t_lo), min(hi, t_hi)
    else:
        lo, hi, n = float(spec[0]), float(spec[1]), int(spec[2])
        if not (0 < lo < hi) or n < 8:
            raise UserError("--tgrid takes LOW HIGH N keV with 0 < LOW < HIGH and N >= 8")
        if lo < t_lo or hi > t_hi:
            raise UserError(
                f"--tgrid {lo:g}-{hi:g} keV leaves the model's {temperature} range "
                f"{t_lo:g}-{t_hi:g}"
            )
    return np.geomspace(lo, hi, int(n))


def _num(x: float) -> float | None:
    """Return a float for JSON, None for NaN (flagged in ``status``)."""
    x = float(x)
    return x if math.isfinite(x) else None
