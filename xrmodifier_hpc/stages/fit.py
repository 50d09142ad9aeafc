"""The ``fit`` stage: C-stat fit of one PHA spectrum with the native backend's fitter.

A user-facing check that doubles as the conformance entry point against XSPEC: the spectrum's
channels are paired with the response's by position (as XSPEC does), the band keeps the
channels XSPEC's ``ignore **-lo hi-**`` keeps, the norm and the temperature are free and every
other model parameter is frozen at the value given. The statistic is XSPEC's ``cstat``
without background; a BACKFILE named in the header is not used (reported as a warning).
GROUPING is not applied: channels are fitted one by one.
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
from xrmodifier_hpc.io.ogip import Instrument, read_pha
from xrmodifier_hpc.io.tables import load_model

#: default fit-temperature grid (keV): 256 log-spaced values, clipped to the model's range
DEFAULT_TGRID = (0.08, 80.0, 256)


def parse_set(items: Sequence[str] | None) -> dict[str, float]:
    """``["nH=0.05", ...]`` -> ``{"nH": 0.05}``; a malformed item raises :class:`UserError`."""
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
) -> dict[str, Any]:
    """Fit ``spectrum`` (a type-I PHA file) and return a JSON-ready summary.

    Responses default to the PHA's RESPFILE / ANCRFILE, resolved relative to its folder.
    ``band`` in keV; ``params`` freezes the model's other parameters (e.g. ``{"nH": 0.05}``,
    1e22 cm^-2); ``tgrid = (low, high, n)`` keV is the grid of the exact profile (log-spaced).
    Returns kT (keV), norm, cstat, kT_1sigma [low, high] (delta-C = 1), counts_noticed, status
    (and the profile C(kT) on the grid with ``curve``). Raises :class:`UserError` on bad input.
    """
    where = str(spectrum)
    pha = read_pha(spectrum)
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
    instrument = Instrument.load(arf_path, rmf_path)
    if pha.counts.size != instrument.n_channels:
        raise UserError(
            f"the spectrum has {pha.counts.size} channels but the response {rmf_path.name} has "
            f"{instrument.n_channels}: give the matching response (--rmf)",
            where,
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
    # XSPEC leaves channels of bad quality out
    usable = None if pha.quality is None else pha.quality == 0
    fitter = SpectrumFitter(
        instrument, src, params, (lo, hi), pha.exposure, grid, temperature, usable=usable
    )
    counts = pha.counts[fitter.mask]
    total = float(counts.sum())
    if total <= 0:
        raise UserError(
            f"no counts in the {counts.size} channels of the band {lo:g}-{hi:g} keV", where
        )
    result = fitter.fit(counts[None, :])
    t_fit = float(result.t_fit[0])
    status = int(result.status[0])
    out: dict[str, Any] = {
        "spectrum": str(spectrum),
        "arf": str(arf_path) if arf_path else None,
        "rmf": str(rmf_path),
        "model": src.expression,
        "params": params,
        "band": [lo, hi],
        "kT": _num(t_fit),
        "norm": _num(fitter.best_norm(counts[None, :], result.t_fit)[0]),
        "cstat": _num(result.cstat[0]),
        "kT_1sigma": [_num(t_fit - result.err[0, 0]), _num(t_fit + result.err[0, 1])],
        "counts_noticed": total,
        "channels_noticed": int(counts.size),
        "exposure": pha.exposure,
        "status": status,
        "status_names": describe_status(status),
    }
    if temperature != "kT":
        out["temperature_param"] = temperature
    if pha.backfile:
        out["warnings"] = [f"background file {pha.backfile} not used (cstat without background)"]
    if curve:
        out["curve"] = {
            "kT": [float(t) for t in grid],
            "cstat": [_num(c) for c in result.curves[0]],
        }
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
    """A float for JSON, None for NaN (flagged in ``status``)."""
    x = float(x)
    return x if math.isfinite(x) else None
