"""Observed temperature pairs: reading, validating and writing observation tables.

One row per source: ``name, t0, t0_err, t1, t1_err`` (keV). ``t0`` is telescope 0's (the
trusted reference's) best-fit temperature, ``t1`` telescope 1's as fitted with its
ORIGINAL ARF (the biased T1 of DESIGN.md section 2). Asymmetric errors may be given as
``t0_err_lo``/``t0_err_hi`` (and the same for ``t1``), the distances from the best fit down to
the lower and up to the upper end of the interval. Where both forms are present the
asymmetric one is used.

Confidence level of the errors: 68.3% (1 sigma) unless declared. A file declares it with a
comment line (``# error_level = 0.90``, ``# confidence: 90%``, ``# errors: 90% confidence``), a
column ``error_level`` (per source; also ``t0_error_level``/``t1_error_level``) or, in FITS, the
keyword ``ERRLEVEL``; the config's ``[inversion] error_level`` applies to files that do not
declare one (a file that declares another level is refused). Errors at level p are divided by
the two-sided Gaussian quantile z = Phi^-1((1 + p) / 2) (1.645 for XSPEC's default 90%) to give
1 sigma; asymmetric errors are scaled side by side. Which level was assumed is logged.

Formats: CSV as spreadsheets and other tools write them: UTF-8 (with or without a byte-order
mark), UTF-16 (byte-order mark, or none with ASCII content), Windows-1252 / Latin-1; LF, CRLF
or CR line ends; comma, semicolon, tab or whitespace delimiters (a decimal comma is read where
the delimiter is not a comma); quoted fields; ``#`` comment lines and blank lines; column names
in any case, with spaces or hyphens for underscores and units in brackets (``T0 [keV]``,
``t0 (keV)``, ``t0/keV``: keV, eV, K and MK are converted to keV; another unit is refused).
FITS: the first table holding the columns (units from the column name or TUNIT). Every problem
raises :class:`ObservationError` naming the file and the line (CSV) or row (FITS), the column,
and what is wrong.
"""

from __future__ import annotations

import codecs
import csv
import io
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import write_text

log = logging.getLogger("xrmodifier")

#: columns every table needs (errors may instead come as *_err_lo / *_err_hi pairs)
REQUIRED = ("name", "t0", "t1")
TELESCOPES = ("t0", "t1")
FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz")
#: the 1-sigma confidence level, erf(1/sqrt(2)); a declared 0.683 (or 0.6827) means 1 sigma
ONE_SIGMA = math.erf(1.0 / math.sqrt(2.0))
#: the level assumed when neither the file nor the config declares one
DEFAULT_ERROR_LEVEL = ONE_SIGMA
#: Boltzmann constant in keV/K (CODATA 2018): kT[keV] = T[K] * K_B_KEV
K_B_KEV = 8.617333262e-8
#: temperature units accepted in column names / TUNIT, with their factor to keV
UNITS = {"kev": 1.0, "ev": 1e-3, "k": K_B_KEV, "mk": 1e6 * K_B_KEV}
#: keys of an error-level declaration in a comment line
_LEVEL_KEYS = r"(?:error[ _-]?level|err[ _-]?level|confidence(?:[ _-]?level)?|conf[ _-]?level|cl)"
_LEVEL_DECL = re.compile(rf"^\s*{_LEVEL_KEYS}\s*[=:]\s*(?P<value>.+?)\s*$", re.I)
_LEVEL_PROSE = re.compile(r"(?P<value>\d+(?:\.\d+)?\s*%)\s*(?:confidence|c\.?l\.?)", re.I)


class ObservationError(UserError):
    """A problem with an observations file: ``where`` is ``FILE, line N`` (or ``row N``)."""


@dataclass(frozen=True)
class Observations:
    """Temperatures (keV) of ``n`` sources seen by both telescopes, with 1-sigma errors.

    ``*_err_lo`` / ``*_err_hi`` (n,) are the distances (keV, > 0) from the best fit down to
    the lower and up to the upper end of the 1-sigma interval; symmetric errors have both
    equal. ``lines`` (n,) are the source rows' line (CSV) or row (FITS) numbers.
    ``error_level`` is the confidence level the file's errors were given at (they are stored
    converted to 1 sigma) and ``error_level_from`` where that level came from.

    Attributes
    ----------
    names : tuple of str
        Source names, ``n`` of them, unique.
    t0 : numpy.ndarray
        Shape ``(n,)``, float64, keV: telescope 0's (the reference's) best-fit temperatures.
    t0_err_lo, t0_err_hi : numpy.ndarray
        Shape ``(n,)``, float64, keV, > 0: 1-sigma distances from ``t0`` down to the lower
        and up to the upper end of its interval.
    t1 : numpy.ndarray
        Shape ``(n,)``, float64, keV: telescope 1's best-fit temperatures with its ORIGINAL
        ARF (the biased T1).
    t1_err_lo, t1_err_hi : numpy.ndarray
        Shape ``(n,)``, float64, keV, > 0: 1-sigma distances below and above ``t1``.
    lines : tuple of int
        Shape ``(n,)``: line (CSV) or row (FITS) number of each source; empty when the
        observations were not read from a file.
    path : Path or None
        The file read, or None.
    error_level : float
        Two-sided confidence level in (0, 1) at which the file's errors were given (0.683,
        1 sigma, unless declared).
    error_level_from : str
        Where that level came from (``"default"``, ``"[inversion] error_level"``, a keyword
        or a comment line).
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
    error_level: float = DEFAULT_ERROR_LEVEL
    error_level_from: str = "default"

    @property
    def n(self) -> int:
        """Number of sources."""
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
        """Whether any error is asymmetric."""
        return bool(
            np.any(self.t0_err_lo != self.t0_err_hi) or np.any(self.t1_err_lo != self.t1_err_hi)
        )

    def check_range(self, low: float, high: float) -> None:
        """Refuse temperatures outside [low, high] keV (the emulator's T_true range).

        Parameters
        ----------
        low, high : float
            The range in keV.

        Raises
        ------
        ObservationError
            Naming the first source outside, its line and column.
        """
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

    def describe_errors(self) -> str:
        """Describe in one line at which confidence level the errors were read and how converted.

        Returns
        -------
        str
            E.g. ``errors read as 90% confidence (default), divided by 1.645 to 1 sigma``.
        """
        z = sigma_factor(self.error_level)
        how = "used as 1 sigma" if z == 1.0 else f"divided by {z:.4g} to 1 sigma"
        return (
            f"errors read as {100 * self.error_level:.3g}% confidence "
            f"({self.error_level_from}), {how}"
        )

    def to_rows(self) -> list[dict[str, object]]:
        """Return one dict per source (for JSON artefacts), errors at 1 sigma.

        Returns
        -------
        list of dict
            ``n`` dicts with keys ``name`` (str) and ``t0``, ``t0_err_lo``, ``t0_err_hi``,
            ``t1``, ``t1_err_lo``, ``t1_err_hi`` (float, keV).
        """
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
# confidence levels
# --------------------------------------------------------------------------------------------


def sigma_factor(level: float) -> float:
    """Return the two-sided Gaussian quantile of a level: error(level) / error(1 sigma).

    Parameters
    ----------
    level : float
        Two-sided confidence level in (0, 1); within 1e-3 of erf(1/sqrt 2) = 0.6827 it is 1
        sigma exactly (0.683 is how it is usually written).

    Returns
    -------
    float
        z = Phi^-1((1 + level) / 2), e.g. 1.645 for 0.90 (XSPEC's default ``error``), 1.960
        for 0.95.
    """
    if abs(level - ONE_SIGMA) < 1e-3:
        return 1.0
    from scipy.special import ndtri

    return float(ndtri(0.5 + 0.5 * level))


def parse_level(text: str) -> float:
    """Parse a confidence level.

    The level is written as a fraction (``0.9``), a percentage (``90%``, ``90``) or in sigmas
    (``1sigma``, ``2 sigma``, ``1σ``).

    Parameters
    ----------
    text : str
        The level as written (surrounding quotes and blanks are ignored; a decimal comma is
        read as a point). A bare number above 1 and below 100 is a percentage.

    Returns
    -------
    float
        The two-sided level in (0, 1); ``n sigma`` gives erf(n / sqrt 2).

    Raises
    ------
    ValueError
        Not a level: not a number, a non-positive number of sigmas, or outside (0, 1) once
        read.
    """
    t = text.strip().strip("\"'").strip().lower().replace(",", ".")
    m = re.fullmatch(r"(\d+(?:\.\d*)?)\s*(?:sigma|σ|sig)", t)
    if m:
        n = float(m.group(1))
        if n <= 0:
            raise ValueError(text)
        return math.erf(n / math.sqrt(2.0))
    percent = t.endswith("%")
    value = float(t.rstrip("%").strip())
    if percent or 1.0 < value < 100.0:
        value /= 100.0
    if not 0.0 < value < 1.0:
        raise ValueError(text)
    return value


# --------------------------------------------------------------------------------------------
# reading
# --------------------------------------------------------------------------------------------


def read_observations(
    path: str | Path,
    t_range: tuple[float, float] | None = None,
    error_level: float | None = None,
) -> Observations:
    """Read and validate an observations table (CSV or FITS).

    Parameters
    ----------
    path : str or Path
        The table (see the module docstring for the forms read).
    t_range : (float, float) or None
        keV: when given, every t0 and t1 must lie inside it (the emulator's range).
    error_level : float or None
        The config's ``[inversion] error_level``: the confidence level of files that do not
        declare one (None: 0.683, 1 sigma).

    Returns
    -------
    Observations
        Temperatures in keV, errors converted to 1 sigma.

    Raises
    ------
    ObservationError
        Naming the file, the line (or row) and the column of the problem.
    """
    path = Path(path)
    if not path.exists():
        raise ObservationError("observations file not found", str(path))
    if path.is_dir():
        raise ObservationError("is a folder, not an observations file", str(path))
    obs = _read_fits(path, error_level) if _is_fits(path) else _read_csv(path, error_level)
    if t_range is not None:
        obs.check_range(*t_range)
    log.info("observations %s: %d sources; %s", path.name, obs.n, obs.describe_errors())
    return obs


def _is_fits(path: Path) -> bool:
    return path.name.lower().endswith(FITS_SUFFIXES)


@dataclass(frozen=True)
class _Column:
    """A table column.

    Attributes
    ----------
    key : str
        The canonical name (``t0_err_lo``).
    label : str
        The name as written.
    factor : float
        Factor to keV from its unit.
    """

    key: str
    label: str
    factor: float = 1.0


_TOKEN_ALIASES = {
    "error": "err",
    "errors": "err",
    "sigma": "err",
    "unc": "err",
    "uncertainty": "err",
    "low": "lo",
    "lower": "lo",
    "minus": "lo",
    "neg": "lo",
    "high": "hi",
    "upper": "hi",
    "plus": "hi",
    "pos": "hi",
}
_NAME_ALIASES = ("name", "source", "cluster", "object", "target")
_LEVEL_COLUMNS = ("error_level", "t0_error_level", "t1_error_level")


def _canonical(label: str, where: str, unit_hint: str = "") -> _Column:
    """Column name as written -> its canonical key and unit factor.

    ``T0 [keV]``, ``t0 (keV)``, ``t0/keV``, ``T0_keV``, ``t0 err lo``, ``t0-error-minus``...
    """
    text = label.strip().strip("\"'").strip()
    unit = unit_hint.strip()
    m = re.fullmatch(r"(.*?)\s*(?:\[([^\]]*)\]|\(([^)]*)\)|/\s*([A-Za-z]+))\s*", text)
    if m and m.group(1):
        text = m.group(1)
        unit = next(g for g in m.groups()[1:] if g is not None).strip()
    tokens = [t for t in re.split(r"[\s_\-.]+", text.lower()) if t]
    if len(tokens) > 1 and tokens[-1] in ("kev", "ev"):
        unit = unit or tokens[-1]
        tokens = tokens[:-1]
    # "t0err" / "t1errlo" written without separators
    if tokens and re.fullmatch(r"t[01](err|error)(lo|hi)?", tokens[0]):
        m2 = re.fullmatch(r"(t[01])(err|error)(lo|hi)?", tokens[0])
        tokens = [m2.group(1), "err", *([m2.group(3)] if m2.group(3) else []), *tokens[1:]]
    tokens = [_TOKEN_ALIASES.get(t, t) for t in tokens]
    key = "_".join(tokens)
    if key in ("error_level", "err_level", "confidence", "confidence_level", "conf_level"):
        key = "error_level"
    elif re.fullmatch(r"t[01]_(err_level|confidence|confidence_level)", key):
        key = f"{key[:2]}_error_level"
    factor = 1.0
    if unit and key not in ("name", *_NAME_ALIASES, *_LEVEL_COLUMNS):
        factor = _unit_factor(unit, label, where)
    return _Column(key, label.strip(), factor)


def _unit_factor(unit: str, label: str, where: str) -> float:
    u = unit.strip()
    if u in ("K", "MK"):
        return UNITS[u.lower()]
    if u.lower() in ("kev", "ev"):
        return UNITS[u.lower()]
    raise ObservationError(
        f"column {label!r}: unit {u!r} is not a temperature unit (keV, eV, K, MK)", where
    )


def _resolve_columns(cols: list[_Column], where: str) -> dict[str, _Column]:
    """Canonical key -> column; name aliases; duplicates refused."""
    out: dict[str, _Column] = {}
    for col in cols:
        if not col.key:
            continue
        if col.key in out:
            raise ObservationError(
                f"column(s) {col.key} appear twice in the header "
                f"({out[col.key].label!r} and {col.label!r})",
                where,
            )
        out[col.key] = col
    if "name" not in out:
        for alias in _NAME_ALIASES[1:]:
            if alias in out:
                out["name"] = out.pop(alias)
                break
    return out


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


def _number(text: str, col: str, where: str, decimal_comma: bool = False) -> float:
    raw = text.strip()
    if decimal_comma and re.fullmatch(r"[+-]?\d*,\d+(?:[eE][+-]?\d+)?", raw):
        raw = raw.replace(",", ".")
    raw = raw.replace("\u2212", "-")  # a typographic minus sign
    try:
        value = float(raw)
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


def _row_levels(record: dict[str, str], where: str) -> tuple[float | None, float | None]:
    """Per-row confidence levels (t0, t1) from error_level columns (None: not given)."""
    levels = []
    for t in TELESCOPES:
        text = record.get(f"{t}_error_level") or record.get("error_level") or ""
        if not text.strip():
            levels.append(None)
            continue
        try:
            levels.append(parse_level(text))
        except ValueError:
            raise ObservationError(
                f"error_level = {text!r} is not a confidence level (0.9, 90%, 1sigma)", where
            ) from None
    return levels[0], levels[1]


def _base_level(
    declared: tuple[float, str] | None, config_level: float | None, path: Path
) -> tuple[float, str]:
    """Return the confidence level of the file's errors, and where it came from.

    Declared by the file, else the config's, else 1 sigma; a file and a config that declare
    different levels are refused.
    """
    if declared is not None:
        if (
            config_level is not None
            and abs(declared[0] - config_level) > 1e-6
            and not sigma_factor(declared[0]) == sigma_factor(config_level) == 1.0
        ):
            raise ObservationError(
                f"the file declares its errors at {100 * declared[0]:.3g}% confidence "
                f"({declared[1]}) but [inversion] error_level = {config_level:g}: remove one "
                "of the two",
                str(path),
            )
        return declared
    if config_level is not None:
        return float(config_level), "[inversion] error_level"
    return DEFAULT_ERROR_LEVEL, "default"


def _build(
    rows: list[tuple[int, str, dict[str, float]]],
    errs: dict[str, tuple[str, str]],
    path: Path,
    label: str,
    level: tuple[float, str],
    row_levels: list[tuple[float | None, float | None]],
) -> Observations:
    """Build the Observations of the parsed rows, errors converted to 1 sigma.

    Each source's errors are converted at its own ``error_level`` column value where given,
    else at ``level``.
    """
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

    base, source = level
    errors = {c: col(c) for t in TELESCOPES for c in errs[t]}
    for k, pair in enumerate(row_levels):
        for t, own in zip(TELESCOPES, pair):
            z = sigma_factor(base if own is None else own)
            for c in dict.fromkeys(errs[t]):
                errors[c][k] /= z
    if any(v is not None for pair in row_levels for v in pair):
        source = f"per source from the error_level column, else {source}"
    return Observations(
        names=tuple(r[1] for r in rows),
        t0=col("t0"),
        t0_err_lo=errors[errs["t0"][0]],
        t0_err_hi=errors[errs["t0"][1]],
        t1=col("t1"),
        t1_err_lo=errors[errs["t1"][0]],
        t1_err_hi=errors[errs["t1"][1]],
        lines=tuple(r[0] for r in rows),
        path=path,
        error_level=base,
        error_level_from=source,
    )


def _decode(path: Path) -> str:
    """Read the text of a CSV file as spreadsheets write it.

    Byte-order marks (UTF-8, UTF-16, UTF-32), UTF-16 without one, UTF-8, else Windows-1252 /
    Latin-1. Binary files are refused.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ObservationError(f"cannot read ({exc.strerror})", str(path)) from None
    boms = (
        (codecs.BOM_UTF32_LE, "utf-32"),
        (codecs.BOM_UTF32_BE, "utf-32"),
        (codecs.BOM_UTF8, "utf-8-sig"),
        (codecs.BOM_UTF16_LE, "utf-16"),
        (codecs.BOM_UTF16_BE, "utf-16"),
    )
    encoding = next((enc for bom, enc in boms if data.startswith(bom)), None)
    if encoding is None and b"\x00" in data:
        # UTF-16 without a byte-order mark: mostly ASCII, so one byte of each pair is zero
        even, odd = data[0::2], data[1::2]
        if len(data) % 2 == 0 and odd.count(0) >= 0.5 * len(odd) and even.count(0) == 0:
            encoding = "utf-16-le"
        elif len(data) % 2 == 0 and even.count(0) >= 0.5 * len(even) and odd.count(0) == 0:
            encoding = "utf-16-be"
    candidates = [encoding] if encoding else ["utf-8", "cp1252", "latin-1"]
    for enc in candidates:
        try:
            text = data.decode(enc)
        except UnicodeDecodeError:
            continue
        if not _looks_like_text(text):
            break
        return text
    raise ObservationError("not a text (CSV) file; FITS tables need a .fits name", str(path))


def _looks_like_text(text: str) -> bool:
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\r\n\f\v")
    return controls == 0


def _declared_level(line: str, where: str) -> float | None:
    """Return a confidence level declared in a comment line, or None."""
    body = line.lstrip().lstrip("#").strip()
    m = _LEVEL_DECL.match(body)
    text = m.group("value") if m else None
    if text is None:
        m = _LEVEL_PROSE.search(body)
        text = m.group("value") if m else None
    if text is None:
        return None
    for candidate in (text, text.split()[0]):  # "0.9", "1 sigma", "0.683 (1 sigma)"
        try:
            return parse_level(candidate)
        except ValueError:
            continue
    raise ObservationError(
        f"comment declares error level {text!r}: not a confidence level (0.9, 90%, 1sigma)",
        where,
    )


def _delimiter(line: str) -> str | None:
    """Return the delimiter of the header line.

    The most frequent of , ; tab | outside quotes; None for whitespace-separated columns.
    """
    unquoted = re.sub(r'"[^"]*"', "", line)
    counts = {d: unquoted.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else None


def _read_csv(path: Path, config_level: float | None) -> Observations:
    text = _decode(path)
    lines = io.StringIO(text, newline=None).read().split("\n")
    level: tuple[float, str] | None = None
    header: list[_Column] | None = None
    cols: dict[str, _Column] = {}
    errs: dict[str, tuple[str, str]] = {}
    rows: list[tuple[int, str, dict[str, float]]] = []
    row_levels: list[tuple[float | None, float | None]] = []
    delimiter: str | None = None
    for number, line in enumerate(lines, start=1):
        where = f"{path}, line {number}"
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            declared = _declared_level(stripped, where)
            if declared is not None:
                if level is not None and abs(level[0] - declared) > 1e-9:
                    raise ObservationError(
                        f"a second error level ({100 * declared:.3g}%) differs from the "
                        f"first ({level[1]})",
                        where,
                    )
                level = (declared, f"declared on line {number}")
            continue
        if header is None:
            delimiter = _delimiter(line)
        fields = _split(line, delimiter)
        if all(not f.strip() for f in fields):
            continue  # a spreadsheet's empty row (",,,,")
        if header is None:
            while fields and not fields[-1].strip():
                fields.pop()  # empty trailing columns
            header = [_canonical(f, where) for f in fields]
            cols = _resolve_columns(header, where)
            errs = _error_columns(list(cols), where)
            continue
        width = len(header)
        extra = fields[width:]
        if len(fields) < width or any(f.strip() for f in extra):
            names = ", ".join(c.label for c in header)
            raise ObservationError(
                f"expected {width} fields ({names}), found {len(fields) - len(extra)}"
                if len(fields) < width
                else f"expected {width} fields ({names}), found {len(fields)}",
                where,
            )
        record = {c.key: f.strip() for c, f in zip(header, fields)}
        name = record[cols["name"].key].strip()
        if not name:
            raise ObservationError("empty source name", where)
        needed = ["t0", "t1", *(c for t in TELESCOPES for c in errs[t])]
        values = {}
        for c in dict.fromkeys(needed):
            column = cols[c]
            values[c] = column.factor * _number(
                record[column.key], c, where, decimal_comma=delimiter not in (",", None)
            )
        _check_row(values, errs, where)
        rows.append((number, name, values))
        row_levels.append(_row_levels(record, where))
    if header is None:
        raise ObservationError(
            "empty file: expected a header line name,t0,t0_err,t1,t1_err", str(path)
        )
    return _build(rows, errs, path, "line", _base_level(level, config_level, path), row_levels)


def _split(line: str, delimiter: str | None) -> list[str]:
    if delimiter is None:
        return next(csv.reader([line.strip()], delimiter=" ", skipinitialspace=True))
    return next(csv.reader([line], delimiter=delimiter, skipinitialspace=True))


def _read_fits(path: Path, config_level: float | None) -> Observations:
    from astropy.io import fits

    try:
        hdul = fits.open(path, memmap=False)
    except (OSError, ValueError) as exc:
        raise ObservationError(f"not a readable FITS file ({exc})", str(path)) from None
    with hdul:
        tables = [
            (i, h) for i, h in enumerate(hdul) if isinstance(h, (fits.BinTableHDU, fits.TableHDU))
        ]
        if not tables:
            raise ObservationError("no binary table extension with the observations", str(path))
        index, hdu = next(
            (
                (i, h)
                for i, h in tables
                if "name"
                in _resolve_columns(
                    [_canonical(c.name, str(path), c.unit or "") for c in h.columns], str(path)
                )
            ),
            tables[0],
        )
        where_hdu = f"{path} [HDU {index}]"
        columns = [_canonical(c.name, where_hdu, c.unit or "") for c in hdu.columns]
        cols = _resolve_columns(columns, where_hdu)
        by_key = {c.key: hdu.columns.names[i] for i, c in enumerate(columns)}
        errs = _error_columns(list(cols), where_hdu)
        level = None
        for key, header in (("ERRLEVEL", hdu.header), ("ERRLEVEL", hdul[0].header)):
            if key in header:
                try:
                    level = (parse_level(str(header[key])), f"keyword {key}")
                except ValueError:
                    raise ObservationError(
                        f"{key} = {header[key]!r} is not a confidence level (0.9, 90%)",
                        where_hdu,
                    ) from None
                break
        data = hdu.data
        needed = ["t0", "t1", *(c for t in TELESCOPES for c in errs[t])]
        arrays: dict[str, np.ndarray] = {}
        for c in dict.fromkeys(needed):
            raw = np.asarray(data[by_key[cols[c].key]])
            if raw.dtype.kind not in "fiu":
                raise ObservationError(f"column {c} is not numeric ({raw.dtype})", where_hdu)
            arrays[c] = raw.astype(np.float64) * cols[c].factor
        labels = [str(v).strip() for v in np.asarray(data[by_key[cols["name"].key]])]
        level_cols = {
            k: [str(v) for v in np.asarray(data[by_key[k]])] for k in _LEVEL_COLUMNS if k in cols
        }
        rows: list[tuple[int, str, dict[str, float]]] = []
        row_levels = []
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
            row_levels.append(_row_levels({c: v[k] for c, v in level_cols.items()}, where))
    return _build(rows, errs, path, "row", _base_level(level, config_level, path), row_levels)


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
    """Return the CSV text of ``obs``: symmetric and asymmetric error columns, 8 digits.

    Parameters
    ----------
    obs : Observations
        The ``n`` sources (temperatures and 1-sigma errors in keV).
    comments : tuple of str
        Comment lines written first (``# ...``), then ``# error_level = 0.683``: the errors
        written are 1 sigma.

    Returns
    -------
    str
        The file's text: comments, the header :data:`CSV_COLUMNS`, then one line per source
        with values in keV to 8 significant digits.
    """
    buf = io.StringIO()
    for line in comments:
        buf.write(f"# {line}\n")
    buf.write("# error_level = 0.683 (errors are 1 sigma)\n")
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
    """Write ``obs`` as CSV atomically (temporary file renamed into place).

    Parameters
    ----------
    path : str or Path
        The CSV file to write (replaced if present).
    obs : Observations
        The sources (temperatures and 1-sigma errors in keV).
    comments : tuple of str
        Comment lines for the top of the file.

    Returns
    -------
    Path
        ``path`` as a Path.
    """
    path = Path(path)
    write_text(path, format_csv(obs, comments))
    return path
