"""Observed temperature pairs: reading, validating and writing observation tables.

One row per source: ``name, t0, t0_err, t1, t1_err`` (keV). ``t0`` is telescope 0's (the
trusted reference's) best-fit temperature, ``t1`` telescope 1's as fitted with its
ORIGINAL ARF (the biased T1 of DESIGN.md section 2). Errors are 1-sigma; asymmetric errors
may be given as ``t0_err_lo``/``t0_err_hi`` (and the same for ``t1``), the distances from the
best fit down to the lower and up to the upper end of the interval. Where both forms are
present the asymmetric one is used.

Formats: CSV (``#`` comment lines and blank lines are skipped; the first other line is the
header; column names are case-insensitive; extra columns are ignored) and FITS (the first
binary table holding the columns). Every problem raises :class:`ObservationError` naming the
file and the line (CSV) or row (FITS), and what is wrong.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import write_text

#: columns every table needs (errors may instead come as *_err_lo / *_err_hi pairs)
REQUIRED = ("name", "t0", "t1")
TELESCOPES = ("t0", "t1")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")


class ObservationError(UserError):
    """A problem with an observations file: ``where`` is ``FILE, line N`` (or ``row N``)."""


@dataclass(frozen=True)
class Observations:
    """Temperatures (keV) of ``n`` sources seen by both telescopes, with 1-sigma errors.

    ``*_err_lo`` / ``*_err_hi`` (n,) are the distances (keV, > 0) from the best fit down to
    the lower and up to the upper end of the 1-sigma interval; symmetric errors have both
    equal. ``lines`` (n,) are the source rows' line (CSV) or row (FITS) numbers.
    """

    names: tuple[str, ...]
    t0: np.ndarray
    t0_err_lo: np.ndarray
    t0_err_hi: np.ndarray
    t1: np.ndarray
    t1_err_lo: np.ndarray
    t1_err_hi: np.ndarray
    lines: tuple[int, ...] = ()
    path: Path | None = None

    @property
    def n(self) -> int:
        return len(self.names)

    @property
    def t0_err(self) -> np.ndarray:
        """Symmetrised 1-sigma error of T0 (keV): the mean of the two distances."""
        return 0.5 * (self.t0_err_lo + self.t0_err_hi)

    @property
    def t1_err(self) -> np.ndarray:
        """Symmetrised 1-sigma error of T1 (keV): the mean of the two distances."""
        return 0.5 * (self.t1_err_lo + self.t1_err_hi)

    @property
    def asymmetric(self) -> bool:
        return bool(
            np.any(self.t0_err_lo != self.t0_err_hi) or np.any(self.t1_err_lo != self.t1_err_hi)
        )

    def check_range(self, low: float, high: float) -> None:
        """Refuse temperatures outside [low, high] keV (the emulator's T_true range)."""
        for col in TELESCOPES:
            values = getattr(self, col)
            bad = np.flatnonzero((values < low) | (values > high))
            if bad.size:
                k = int(bad[0])
                where = self._where(k)
                more = f" ({bad.size - 1} more source(s) too)" if bad.size > 1 else ""
                raise ObservationError(
                    f"{col} = {values[k]:g} keV is outside the emulator's temperature range "
                    f"[{low:g}, {high:g}] keV{more}; drop the source or simulate a wider "
                    "[temperatures] t_true grid",
                    where,
                )

    def _where(self, k: int) -> str:
        label = "row" if self.path is not None and _is_fits(self.path) else "line"
        line = self.lines[k] if self.lines else k + 1
        return f"{self.path}, {label} {line}" if self.path is not None else f"{label} {line}"

    def to_rows(self) -> list[dict[str, object]]:
        """One dict per source (for JSON artefacts)."""
        return [
            {
                "name": self.names[k],
                "t0": float(self.t0[k]),
                "t0_err_lo": float(self.t0_err_lo[k]),
                "t0_err_hi": float(self.t0_err_hi[k]),
                "t1": float(self.t1[k]),
                "t1_err_lo": float(self.t1_err_lo[k]),
                "t1_err_hi": float(self.t1_err_hi[k]),
            }
            for k in range(self.n)
        ]


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_observations(path: str | Path, t_range: tuple[float, float] | None = None) -> Observations:
    """Read and validate an observations table (CSV or FITS).

    ``t_range`` (keV): when given, every t0 and t1 must lie inside it (the emulator's range).
    """
    path = Path(path)
    if not path.exists():
        raise ObservationError("observations file not found", str(path))
    if path.is_dir():
        raise ObservationError("is a folder, not an observations file", str(path))
    obs = _read_fits(path) if _is_fits(path) else _read_csv(path)
    if t_range is not None:
        obs.check_range(*t_range)
    return obs


def _is_fits(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


def _error_columns(columns: list[str], where: str) -> dict[str, tuple[str, str]]:
    """Per telescope, the (lo, hi) columns to read; symmetric errors give (err, err)."""
    missing = [c for c in REQUIRED if c not in columns]
    out: dict[str, tuple[str, str]] = {}
    for t in TELESCOPES:
        lo, hi, sym = f"{t}_err_lo", f"{t}_err_hi", f"{t}_err"
        if lo in columns and hi in columns:
            out[t] = (lo, hi)
        elif lo in columns or hi in columns:
            have, lack = (lo, hi) if lo in columns else (hi, lo)
            raise ObservationError(f"column {have} is given without {lack}", where)
        elif sym in columns:
            out[t] = (sym, sym)
        else:
            missing.append(sym)
    if missing:
        raise ObservationError(
            f"missing column(s) {', '.join(missing)} (found: {', '.join(columns) or 'none'}); "
            "need name, t0, t0_err, t1, t1_err",
            where,
        )
    return out


def _number(text: str, col: str, where: str) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise ObservationError(f"{col} = {text!r} is not a number", where) from None
    if not math.isfinite(value):
        raise ObservationError(f"{col} = {text!r} is not a finite number", where)
    return value


def _check_row(values: dict[str, float], errs: dict[str, tuple[str, str]], where: str) -> None:
    for t in TELESCOPES:
        if values[t] <= 0:
            raise ObservationError(
                f"{t} must be a positive temperature (got {values[t]:g} keV)", where
            )
        for col in dict.fromkeys(errs[t]):
            if values[col] <= 0:
                raise ObservationError(f"{col} must be positive (got {values[col]:g} keV)", where)


def _build(
    rows: list[tuple[int, str, dict[str, float]]],
    errs: dict[str, tuple[str, str]],
    path: Path,
    label: str,
) -> Observations:
    if not rows:
        raise ObservationError("no observations: the table has a header but no rows", str(path))
    seen: dict[str, int] = {}
    for line, name, _ in rows:
        if name in seen:
            raise ObservationError(
                f"duplicate source name {name!r} (first on {label} {seen[name]})",
                f"{path}, {label} {line}",
            )
        seen[name] = line

    def col(name: str) -> np.ndarray:
        return np.array([r[2][name] for r in rows], dtype=np.float64)

    return Observations(
        names=tuple(r[1] for r in rows),
        t0=col("t0"),
        t0_err_lo=col(errs["t0"][0]),
        t0_err_hi=col(errs["t0"][1]),
        t1=col("t1"),
        t1_err_lo=col(errs["t1"][0]),
        t1_err_hi=col(errs["t1"][1]),
        lines=tuple(r[0] for r in rows),
        path=path,
    )


def _read_csv(path: Path) -> Observations:
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise ObservationError(
            "not a text (CSV) file; FITS tables need a .fits name", str(path)
        ) from None
    except OSError as exc:
        raise ObservationError(f"cannot read ({exc.strerror})", str(path)) from None
    reader = csv.reader(io.StringIO(text), skipinitialspace=True)
    header: list[str] | None = None
    errs: dict[str, tuple[str, str]] = {}
    rows: list[tuple[int, str, dict[str, float]]] = []
    for fields in reader:
        line = reader.line_num
        if not fields or all(not f.strip() for f in fields) or fields[0].lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in fields]
        if header is None:
            header = [f.lower() for f in fields]
            dup = sorted({c for c in header if header.count(c) > 1})
            if dup:
                raise ObservationError(
                    f"column(s) {', '.join(dup)} appear twice in the header", f"{path}, line {line}"
                )
            errs = _error_columns(header, f"{path}, line {line}")
            continue
        where = f"{path}, line {line}"
        if len(fields) != len(header):
            raise ObservationError(
                f"expected {len(header)} fields ({', '.join(header)}), found {len(fields)}", where
            )
        record = dict(zip(header, fields))
        name = record["name"]
        if not name:
            raise ObservationError("empty source name", where)
        needed = ["t0", "t1", *(c for t in TELESCOPES for c in errs[t])]
        values = {c: _number(record[c], c, where) for c in dict.fromkeys(needed)}
        _check_row(values, errs, where)
        rows.append((line, name, values))
    if header is None:
        raise ObservationError(
            "empty file: expected a header line name,t0,t0_err,t1,t1_err", str(path)
        )
    return _build(rows, errs, path, "line")


def _read_fits(path: Path) -> Observations:
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise ObservationError(f"not a readable FITS file ({exc})", str(path)) from None
    with hdul:
        tables = [(i, h) for i, h in enumerate(hdul) if isinstance(h, fits.BinTableHDU)]
        if not tables:
            raise ObservationError("no binary table extension with the observations", str(path))
        index, hdu = next(
            ((i, h) for i, h in tables if "name" in [c.lower() for c in h.columns.names]),
            tables[0],
        )
        where_hdu = f"{path} [HDU {index}]"
        names = {c.lower(): c for c in hdu.columns.names}
        errs = _error_columns(list(names), where_hdu)
        data = hdu.data
        needed = ["t0", "t1", *(c for t in TELESCOPES for c in errs[t])]
        arrays: dict[str, np.ndarray] = {}
        for c in dict.fromkeys(needed):
            raw = np.asarray(data[names[c]])
            if raw.dtype.kind not in "fiu":
                raise ObservationError(f"column {c} is not numeric ({raw.dtype})", where_hdu)
            arrays[c] = raw.astype(np.float64)
        labels = [str(v).strip() for v in np.asarray(data[names["name"]])]
        rows: list[tuple[int, str, dict[str, float]]] = []
        for k, name in enumerate(labels):
            where = f"{path}, row {k + 1}"
            if not name:
                raise ObservationError("empty source name", where)
            values = {c: float(arrays[c][k]) for c in arrays}
            for c, v in values.items():
                if not math.isfinite(v):
                    raise ObservationError(f"{c} = {v} is not a finite number", where)
            _check_row(values, errs, where)
            rows.append((k + 1, name, values))
    return _build(rows, errs, path, "row")


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------

CSV_COLUMNS = (
    "name",
    "t0",
    "t0_err",
    "t1",
    "t1_err",
    "t0_err_lo",
    "t0_err_hi",
    "t1_err_lo",
    "t1_err_hi",
)


def format_csv(obs: Observations, comments: tuple[str, ...] = ()) -> str:
    """The CSV text of ``obs``: symmetric and asymmetric error columns, 8 significant digits."""
    buf = io.StringIO()
    for line in comments:
        buf.write(f"# {line}\n")
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for k in range(obs.n):
        nums = (
            obs.t0[k],
            obs.t0_err[k],
            obs.t1[k],
            obs.t1_err[k],
            obs.t0_err_lo[k],
            obs.t0_err_hi[k],
            obs.t1_err_lo[k],
            obs.t1_err_hi[k],
        )
        writer.writerow([obs.names[k], *(f"{float(v):.8g}" for v in nums)])
    return buf.getvalue()


def write_observations(path: str | Path, obs: Observations, comments: tuple[str, ...] = ()) -> Path:
    """Write ``obs`` as CSV atomically (temporary file renamed into place)."""
    path = Path(path)
    write_text(path, format_csv(obs, comments))
    return path
