"""OGIP response and spectrum files (astropy.io.fits): ARF, RMF, PHA, and the ``Instrument``.

Readers handle what real files do: variable-length or fixed-width F_CHAN/N_CHAN/MATRIX
columns, N_GRP > 1, matrix extensions named MATRIX / SPECRESP MATRIX / RSP_MATRIX (or any
table with HDUCLAS2 = RSP_MATRIX), extensions in any order, channel numbering from 0 or 1
(TLMIN of F_CHAN, else 1, as XSPEC reads it), gzip, zero-width energy bins (ENERG_LO =
ENERG_HI: they contribute nothing, as in XSPEC) and ARF/RMF energy grids that differ by
rounding.

Whether a matrix carries the effective area is decided from its keywords AND its values
(:func:`read_rmf`): HDUCLAS3 = FULL, or rows summing to more than :data:`AREA_ROW_SUM` (a
redistribution matrix's rows are probabilities). An RMF without an ARF is used as XSPEC uses
it (area 1 cm^2, with a warning when the matrix looks redistribution-only); an ARF given with
an area-carrying matrix is refused unless explicitly allowed.

PHA keywords and columns are applied as XSPEC applies them (OGIP/92-007; XSPEC manual): the
counts come from COUNTS, or RATE x EXPOSURE; AREASCAL (keyword or column) multiplies the
model counts of its channel; QUALITY 1, 5 and other bad flags leave a channel out, 2
("dubious") only under ``ignore_bad`` (XSPEC's ``ignore bad``); GROUPING (1 starts a group, -1
continues it) sums channels into fitted bins (:func:`spectrum_response`). Keywords that only
matter for a background or a correction file (BACKSCAL, CORRSCAL) are type-checked and
reported, not applied. Whether the data are Poisson counts (HDUCLAS2, POISSERR, integer
counts, no negative bins) is recorded in :attr:`Pha.poisson_problems` for C-stat users.
Every problem raises :class:`ResponseError` naming the file, the HDU and the keyword.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from astropy.io import fits

from xrmodifier_hpc import __version__
from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.atomic import replacing

#: accepted names of the redistribution-matrix extension
MATRIX_EXTNAMES = ("MATRIX", "SPECRESP MATRIX", "RSP_MATRIX")
#: ARF and RMF energy grids may differ by this much (relative) and still be used together
GRID_TOLERANCE = 1e-4
#: keyword (T) of an ARF that multiplies an area-carrying matrix (a corrected ARF of an
#: instrument given without an ARF): it is dimensionless, not an area
MULTIPLIER_KEY = "XRMMULT"
#: a redistribution matrix's rows are probabilities (<= 1, a little more from calibration
#: noise); rows summing to more than this carry the effective area (cm^2)
AREA_ROW_SUM = 1.5
#: OGIP/92-007 QUALITY flags: 0 good, 1 bad (software), 2 dubious (software), 5 bad (user);
#: XSPEC always leaves out every flag but 0 and 2, and 2 too after ``ignore bad``
QUALITY_DUBIOUS = 2
#: a count is a whole number when within this (relative, at least absolute 1e-4) of one:
#: RATE x EXPOSURE in single precision is exact to ~1e-7
INTEGER_TOLERANCE = 1e-6


# --------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arf:
    """Effective area ``specresp`` (cm^2) on the energy bins [energ_lo, energ_hi) keV.

    Attributes
    ----------
    energ_lo, energ_hi : numpy.ndarray
        Shape ``(n_E,)``, float64: lower and upper energy-bin edges in keV.
    specresp : numpy.ndarray
        Shape ``(n_E,)``, float64: effective area in cm^2, finite and >= 0.
    header : astropy.io.fits.Header
        The SPECRESP extension's header.
    path : Path or None
        The file read, or None.
    """

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    specresp: np.ndarray
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None


@dataclass(frozen=True)
class Rmf:
    """Redistribution matrix of an RMF (or RSP) with its channel energy bounds.

    ``matrix[i, c]`` is the probability that a photon in energy bin i lands in channel
    ``channel[c]`` (times the area, in cm^2, when ``includes_area``).

    ``max_row_sum`` is the largest row sum of the matrix (probabilities: <= ~1; cm^2 when the
    area is folded in); ``area_evidence`` says why ``includes_area`` was decided (keyword,
    values, or both).

    Attributes
    ----------
    energ_lo, energ_hi : numpy.ndarray
        Shape ``(n_E,)``, float64: lower and upper energy-bin edges in keV.
    matrix : scipy.sparse.csr_matrix
        Shape ``(n_E, n_chan)``: probabilities (dimensionless), or cm^2 when
        ``includes_area``.
    channel : numpy.ndarray
        Shape ``(n_chan,)``, int64: channel numbers, consecutive from the first (TLMIN of
        F_CHAN, else 1).
    e_min, e_max : numpy.ndarray
        Shape ``(n_chan,)``, float64: the channels' energy bounds from EBOUNDS, keV.
    includes_area : bool
        Whether the matrix carries the effective area.
    header : astropy.io.fits.Header
        The matrix extension's header.
    path : Path or None
        The file read, or None.
    max_row_sum : float
        The largest row sum of ``matrix``.
    area_evidence : str
        Why ``includes_area`` was decided (HDUCLAS3, the row sums, or both).
    """

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    matrix: sp.csr_matrix
    channel: np.ndarray
    e_min: np.ndarray
    e_max: np.ndarray
    includes_area: bool = False
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None
    max_row_sum: float = 0.0
    area_evidence: str = ""


@dataclass(frozen=True)
class Instrument:
    """An ARF and an RMF on one energy grid: folds photon spectra into expected counts.

    ``area`` is the ARF in cm^2 (ones when no ARF was given, as XSPEC); ``matrix`` is the RMF
    as a CSR matrix of shape (n_energies, n_channels). ``warnings`` record what was assumed
    (an RMF used without an ARF, an area applied twice on request); ``area_in_matrix`` says
    whether the matrix carries the effective area (:func:`read_rmf`).

    Attributes
    ----------
    energ_lo, energ_hi : numpy.ndarray
        Shape ``(n_E,)``, float64: lower and upper energy-bin edges in keV (the RMF's).
    area : numpy.ndarray
        Shape ``(n_E,)``, float64: effective area in cm^2 (ones without an ARF).
    matrix : scipy.sparse.csr_matrix
        Shape ``(n_E, n_chan)``: the RMF's matrix.
    channel : numpy.ndarray
        Shape ``(n_chan,)``, int64: channel numbers.
    e_min, e_max : numpy.ndarray
        Shape ``(n_chan,)``, float64: the channels' energy bounds in keV.
    arf_path, rmf_path : Path or None
        The files read, or None.
    arf_header : astropy.io.fits.Header
        The ARF's SPECRESP header (empty without an ARF).
    warnings : tuple of str
        What was assumed, for the user to see.
    rmf_header : astropy.io.fits.Header
        The RMF's matrix header.
    area_in_matrix : bool
        Whether the matrix carries the effective area.
    """

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    area: np.ndarray
    matrix: sp.csr_matrix
    channel: np.ndarray
    e_min: np.ndarray
    e_max: np.ndarray
    arf_path: Path | None = None
    rmf_path: Path | None = None
    arf_header: fits.Header = field(default_factory=fits.Header, repr=False)
    warnings: tuple[str, ...] = ()
    rmf_header: fits.Header = field(default_factory=fits.Header, repr=False)
    area_in_matrix: bool = False

    @property
    def n_energies(self) -> int:
        """Number of energy bins, ``n_E``."""
        return self.energ_lo.size

    @property
    def n_channels(self) -> int:
        """Number of channels, ``n_chan``."""
        return self.channel.size

    @property
    def e_mid(self) -> np.ndarray:
        """Energy-bin centres (keV), where modifiers are evaluated."""
        return 0.5 * (self.energ_lo + self.energ_hi)

    @classmethod
    def load(
        cls, arf: str | Path | None, rmf: str | Path, allow_double_area: bool = False
    ) -> Instrument:
        """Read an ARF (optional) and an RMF, as XSPEC combines them.

        Parameters
        ----------
        arf : str, Path or None
            The ARF (SPECRESP, cm^2). Without one the effective area is 1 cm^2, as in XSPEC:
            right for a matrix that carries the area (an RSP), and accepted with a warning in
            :attr:`warnings` when the matrix looks redistribution-only.
        rmf : str or Path
            The RMF or RSP.
        allow_double_area : bool
            Accept an ARF together with a matrix that already carries the area (the area is
            then applied twice, as XSPEC would); a warning records it.

        Returns
        -------
        Instrument
            The combined response on the RMF's energy grid.

        Raises
        ------
        ResponseError
            An unreadable or inconsistent file, grids that differ, or an ARF given with an
            area-carrying matrix (unless ``allow_double_area``).
        """
        rmf_data = read_rmf(rmf)
        if arf is None:
            warnings: tuple[str, ...] = ()
            if not rmf_data.includes_area:
                warnings = (
                    f"{Path(rmf).name}: no ARF given and the matrix looks redistribution-only "
                    f"({rmf_data.area_evidence}): the effective area is taken as 1 cm^2, as "
                    "XSPEC does without an ARF, so the norm is not physical and the mirror's "
                    "energy dependence is missing; give the ARF",
                )
            return cls.from_parts(None, rmf_data, warnings=warnings)
        arf_data = read_arf(arf)
        warnings = ()
        # a corrected ARF written for an instrument without one (XRMMULT = T) is a pure
        # multiplier m(E) of the matrix's own area: it belongs with the area-carrying matrix
        multiplier = bool(arf_data.header.get(MULTIPLIER_KEY, False) is True)
        if rmf_data.includes_area and not multiplier:
            what = (
                f"the matrix already includes the effective area ({rmf_data.area_evidence}), "
                f"so with the ARF {Path(arf).name} the area would be applied twice"
            )
            if not allow_double_area:
                raise ResponseError(
                    f"{what}: give the response alone, or allow it explicitly "
                    "(fit --allow-double-area; allow_double_area = true for a config "
                    "instrument)",
                    str(rmf),
                )
            warnings = (f"{Path(rmf).name}: {what}; allowed by allow_double_area",)
        return cls.from_parts(arf_data, rmf_data, warnings=warnings)

    @classmethod
    def from_parts(cls, arf: Arf | None, rmf: Rmf, warnings: Sequence[str] = ()) -> Instrument:
        """Combine a read ARF and RMF, checking that their energy grids agree.

        Parameters
        ----------
        arf : Arf or None
            None: unit area (1 cm^2 per energy bin).
        rmf : Rmf
            The matrix and EBOUNDS; its energy grid is the instrument's.
        warnings : sequence of str
            Kept in :attr:`warnings`.

        Returns
        -------
        Instrument
            The combined response.

        Raises
        ------
        ResponseError
            The ARF and RMF energy grids differ by more than :data:`GRID_TOLERANCE`.
        """
        if arf is None:
            area = np.ones(rmf.energ_lo.size)
            header = fits.Header()
            arf_path = None
        else:
            _check_same_grid(arf, rmf)
            area = np.asarray(arf.specresp, dtype=np.float64)
            header = arf.header
            arf_path = arf.path
        return cls(
            energ_lo=rmf.energ_lo,
            energ_hi=rmf.energ_hi,
            area=area,
            matrix=rmf.matrix,
            channel=rmf.channel,
            e_min=rmf.e_min,
            e_max=rmf.e_max,
            arf_path=arf_path,
            rmf_path=rmf.path,
            arf_header=header,
            warnings=tuple(warnings),
            rmf_header=rmf.header,
            area_in_matrix=rmf.includes_area,
        )

    def with_area(self, area: np.ndarray) -> Instrument:
        """Return the same instrument with another effective area on the same energy grid.

        Parameters
        ----------
        area : numpy.ndarray
            Shape ``(n_E,)``: the new effective area in cm^2.

        Returns
        -------
        Instrument
            A copy with ``area`` replaced.

        Raises
        ------
        ValueError
            When ``area`` does not have the shape of :attr:`area`.
        """
        area = np.asarray(area, dtype=np.float64)
        if area.shape != self.area.shape:
            raise ValueError(f"area has shape {area.shape}, expected {self.area.shape}")
        return replace(self, area=area)

    def fold(self, flux: np.ndarray, area: np.ndarray | None = None) -> np.ndarray:
        """Return the expected count rate per channel (counts/s) for a photon flux per bin.

        Parameters
        ----------
        flux : numpy.ndarray
            Photons cm^-2 s^-1 per energy bin, shape ``(n_E,)`` or ``(k, n_E)``.
        area : numpy.ndarray or None, optional
            Overrides the instrument's ARF (cm^2), shape ``(n_E,)`` or ``(k, n_E)``.

        Returns
        -------
        numpy.ndarray
            Counts/s per channel, shape ``(n_chan,)`` or ``(k, n_chan)``.
        """
        area = self.area if area is None else area
        weighted = np.asarray(flux, dtype=np.float64) * area
        return np.asarray(weighted @ self.matrix)

    def band_mask(self, low: float, high: float) -> np.ndarray:
        """Return the channels XSPEC's ``ignore **-low high-**`` (keV) leaves noticed.

        These are the channels with E_MIN >= low and E_MAX < high.

        XSPEC ignores every channel up to and including the one that contains ``low`` and
        every channel from the one that contains ``high``, where a channel contains E when
        E_MIN < E <= E_MAX; on contiguous EBOUNDS that is the rule above (a channel whose
        E_MAX equals ``high`` is ignored). It reproduces XSPEC's noticed counts of all six
        spectra in reference/xspec_fits. Note that XSPEC's ``notice low-high`` differs: it
        also keeps the two channels that contain the band edges.

        Parameters
        ----------
        low, high : float
            The band's ends in keV.

        Returns
        -------
        numpy.ndarray
            Shape ``(n_chan,)``, bool: True for the noticed channels.

        Raises
        ------
        ResponseError
            When no channel lies wholly inside the band.
        """
        mask = (self.e_min >= low) & (self.e_max < high)
        if not mask.any():
            raise ResponseError(
                f"no channel lies wholly inside the band {low:g}-{high:g} keV "
                f"(channels span {self.e_min.min():g}-{self.e_max.max():g} keV)",
                str(self.rmf_path) if self.rmf_path else None,
            )
        return mask


@dataclass(frozen=True)
class Pha:
    """A type-I PHA spectrum: ``counts`` per ``channel`` in ``exposure`` seconds.

    ``counts`` (n,) come from the COUNTS column or RATE x EXPOSURE (``column`` says which);
    ``quality`` (n,) int flags (OGIP/92-007, zeros when absent); ``grouping`` (n,) 1 / -1 / 0
    flags or None; ``areascal`` (n,) the area scaling per channel (keyword or column, ones
    when absent). ``poisson_problems`` lists why the data are not Poisson counts (empty when
    they are); ``notes`` what the file holds that a fit does not use.

    Attributes
    ----------
    channel : numpy.ndarray
        Shape ``(n,)``, int64: channel numbers, consecutive.
    counts : numpy.ndarray
        Shape ``(n,)``, float64: counts per channel (RATE x EXPOSURE for a rate spectrum).
    exposure : float
        Exposure time in s, > 0.
    respfile, ancrfile, backfile : str or None
        The RESPFILE, ANCRFILE and BACKFILE names as written (None when absent or
        ``none``).
    quality : numpy.ndarray or None
        Shape ``(n,)``, int64: QUALITY flags (0 good, 1 and 5 bad, 2 dubious).
    header : astropy.io.fits.Header
        The SPECTRUM extension's header.
    path : Path or None
        The file read, or None.
    areascal : numpy.ndarray or None
        Shape ``(n,)``, float64, >= 0: AREASCAL per channel.
    grouping : numpy.ndarray or None
        Shape ``(n,)``, int64: GROUPING flags (1 starts a bin, -1 continues it, 0 no
        grouping); None when no channel continues a bin.
    column : str
        The data column read: ``"COUNTS"`` or ``"RATE"``.
    poisson_problems : tuple of str
        Why the data are not Poisson counts; empty when they are.
    notes : tuple of str
        What the file holds that a fit does not use.
    telescope, instrument : str
        TELESCOP and INSTRUME ('' when absent).
    """

    channel: np.ndarray
    counts: np.ndarray
    exposure: float
    respfile: str | None = None
    ancrfile: str | None = None
    backfile: str | None = None
    quality: np.ndarray | None = None
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None
    areascal: np.ndarray | None = None
    grouping: np.ndarray | None = None
    column: str = "COUNTS"
    poisson_problems: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()
    telescope: str = ""
    instrument: str = ""

    def resolve(self, name: str | None) -> Path | None:
        """Resolve a RESPFILE/ANCRFILE name relative to the PHA's own folder.

        Parameters
        ----------
        name : str or None
            The file name as written in the keyword.

        Returns
        -------
        Path or None
            The path (absolute names unchanged; relative ones beside :attr:`path`, when it
            is known), or None for None.
        """
        if name is None:
            return None
        p = Path(name)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p

    def usable(self, ignore_bad: bool = False) -> np.ndarray:
        """Return the channels XSPEC fits.

        QUALITY 0, and 2 ("dubious") unless ``ignore_bad`` (XSPEC's ``ignore bad``); every
        other flag is always left out (OGIP/92-007).

        Parameters
        ----------
        ignore_bad : bool, optional
            Also leave out the QUALITY = 2 channels.

        Returns
        -------
        numpy.ndarray
            Shape ``(n,)``, bool: True for the channels fitted.
        """
        quality = np.zeros(self.counts.size, np.int64) if self.quality is None else self.quality
        good = quality == 0
        return good if ignore_bad else good | (quality == QUALITY_DUBIOUS)

    def require_poisson(self) -> None:
        """Refuse data that are not Poisson counts, as C-stat needs (Cash 1979).

        Raises
        ------
        ResponseError
            Naming the file and every reason in :attr:`poisson_problems`.
        """
        if self.poisson_problems:
            raise ResponseError(
                "C-stat needs the Poisson counts of a total (source + background) spectrum, "
                f"but {'; '.join(self.poisson_problems)}: give the spectrum as extracted "
                "(COUNTS, HDUCLAS2 = TOTAL, POISSERR = T) and fit its background separately",
                f"{self.path} [SPECTRUM]",
            )


# --------------------------------------------------------------------------------------------
# readers
# --------------------------------------------------------------------------------------------


def _open(path: str | Path) -> fits.HDUList:
    path = Path(path)
    if not path.exists():
        raise ResponseError("file does not exist", str(path))
    if path.is_dir():
        raise ResponseError("is a folder, not a FITS file", str(path))
    try:
        hdul = fits.open(path, memmap=False)
        hdul.verify("silentfix")
        _ = len(hdul)  # forces the lazy read of every HDU, so truncation shows here
        return hdul
    except (OSError, ValueError, TypeError) as exc:
        raise ResponseError(f"not a readable FITS file ({exc})", str(path)) from None


def _find_hdu(hdul: fits.HDUList, names: Sequence[str], path: Path, what: str) -> fits.BinTableHDU:
    for hdu in hdul[1:]:
        extname = str(hdu.header.get("EXTNAME", "")).strip().upper()
        if extname in names and isinstance(hdu, fits.BinTableHDU):
            return hdu
    # an unusual EXTNAME still counts when the OGIP class says what the table is
    wanted = {"matrix": ("HDUCLAS2", "RSP_MATRIX"), "SPECTRUM": ("HDUCLAS1", "SPECTRUM")}
    if what in wanted:
        key, value = wanted[what]
        for hdu in hdul[1:]:
            if isinstance(hdu, fits.BinTableHDU) and _text(hdu.header.get(key)) == value:
                return hdu
    raise ResponseError(f"no {what} extension (looked for EXTNAME {' / '.join(names)})", str(path))


def _text(value: Any) -> str:
    """Return a keyword value as upper-case text ('' when absent)."""
    return "" if value is None else str(value).strip().upper()


def _column(hdu: fits.BinTableHDU, name: str, path: Path) -> Any:
    names = [c.name.upper() for c in hdu.columns]
    if name not in names:
        raise ResponseError(
            f"HDU {hdu.name!r} has no column {name} (columns: {', '.join(names)})", str(path)
        )
    return hdu.data[hdu.columns.names[names.index(name)]]


def _tlmin(hdu: fits.BinTableHDU, name: str, where: str) -> int | None:
    names = [c.name.upper() for c in hdu.columns]
    if name not in names:
        return None
    key = f"TLMIN{names.index(name) + 1}"
    if key not in hdu.header:
        return None
    return int(_keyword_number(hdu.header, key, where, integer=True))


def _describe(value: Any) -> str:
    if isinstance(value, (bool, np.bool_)):
        return f"{'T' if value else 'F'} (a logical)"
    if isinstance(value, str):
        return f"'{value}' (a string)"
    if value is None or not isinstance(value, (int, float, np.number)):
        return "undefined"
    return f"{value}"


def _keyword_number(
    header: fits.Header,
    key: str,
    where: str,
    *,
    positive: bool = False,
    non_negative: bool = False,
    integer: bool = False,
    meaning: str = "",
) -> float:
    """Return the numeric value of keyword ``key`` (present), type- and range-checked.

    A logical, a string (astropy reads an unparsable ``NaN`` as one), an undefined value, a
    non-finite number, a fraction where an integer is needed or a value out of range raises
    :class:`ResponseError` naming ``where``, the keyword and what it should be.
    """
    value = header[key]
    what = f" ({meaning})" if meaning else ""
    if (
        isinstance(value, (bool, np.bool_, str))
        or value is None
        or not isinstance(value, (int, float, np.number))
    ):
        kind = "an integer" if integer else "a number"
        raise ResponseError(f"{key} = {_describe(value)} must be {kind}{what}", where)
    number = float(value)
    if not math.isfinite(number):
        raise ResponseError(f"{key} = {value} must be a finite number{what}", where)
    if integer and number != int(number):
        raise ResponseError(f"{key} = {value} must be an integer{what}", where)
    if positive and number <= 0:
        raise ResponseError(f"{key} = {value:g} must be positive{what}", where)
    if non_negative and number < 0:
        raise ResponseError(f"{key} = {value:g} must not be negative{what}", where)
    return number


def _keyword_logical(header: fits.Header, key: str, where: str, meaning: str) -> bool | None:
    """Return a logical keyword (T/F), None when absent; anything else raises ResponseError."""
    if key not in header:
        return None
    value = header[key]
    if not isinstance(value, (bool, np.bool_)):
        raise ResponseError(f"{key} = {_describe(value)} must be T or F ({meaning})", where)
    return bool(value)


def _keyword_string(header: fits.Header, key: str) -> str:
    """Return a string keyword's value, stripped.

    '' when absent; numbers are turned into text, as CFITSIO reads them.
    """
    value = header.get(key)
    return "" if value is None or isinstance(value, (bool, np.bool_)) else str(value).strip()


def read_arf(path: str | Path) -> Arf:
    """Read an ARF's SPECRESP extension.

    Parameters
    ----------
    path : str or Path
        The ARF (OGIP CAL/GEN/92-002: ENERG_LO, ENERG_HI in keV; SPECRESP in cm^2).

    Returns
    -------
    Arf
        Energies in keV and the area in cm^2, shape ``(n_E,)`` each.

    Raises
    ------
    ResponseError
        A missing extension or column, a bad energy grid, or negative / non-finite areas.
    """
    path = Path(path)
    with _open(path) as hdul:
        hdu = _find_hdu(hdul, ("SPECRESP",), path, "SPECRESP (ARF)")
        lo = np.asarray(_column(hdu, "ENERG_LO", path), dtype=np.float64)
        hi = np.asarray(_column(hdu, "ENERG_HI", path), dtype=np.float64)
        area = np.asarray(_column(hdu, "SPECRESP", path), dtype=np.float64)
        header = hdu.header.copy()
    if area.ndim != 1 or lo.ndim != 1:
        raise ResponseError(
            "a type-II ARF (one row per spectrum) is not supported: extract the row you need",
            f"{path} [SPECRESP]",
        )
    _check_energy_grid(lo, hi, path, "SPECRESP")
    if not np.all(np.isfinite(area)) or np.any(area < 0):
        raise ResponseError("SPECRESP has negative or non-finite values", f"{path} [SPECRESP]")
    return Arf(lo, hi, area, header, path)


def read_rmf(path: str | Path) -> Rmf:
    """Read an RMF (or RSP) into a CSR matrix (n_energies, n_channels) plus its EBOUNDS.

    Parameters
    ----------
    path : str or Path
        OGIP CAL/GEN/92-002 response: a matrix extension (MATRIX, SPECRESP MATRIX, RSP_MATRIX
        or HDUCLAS2 = RSP_MATRIX) with ENERG_LO/ENERG_HI (keV), N_GRP, F_CHAN, N_CHAN, MATRIX;
        and EBOUNDS (CHANNEL, E_MIN, E_MAX in keV). Extensions may come in any order.

    Returns
    -------
    Rmf
        ``includes_area`` is true when HDUCLAS3 = FULL or the rows sum to more than
        :data:`AREA_ROW_SUM` (values in cm^2), whatever HDUCLAS3 says.

    Raises
    ------
    ResponseError
        A missing extension or column; DETCHANS, TLMIN or EFFAREA of the wrong type or
        value; groups outside the channel range; a decreasing or overlapping energy grid;
        non-finite matrix values.
    """
    path = Path(path)
    with _open(path) as hdul:
        mhdu = _find_hdu(hdul, MATRIX_EXTNAMES, path, "matrix")
        ehdu = _find_hdu(hdul, ("EBOUNDS",), path, "EBOUNDS")
        where = f"{path} [{mhdu.name}]"
        lo = np.asarray(_column(mhdu, "ENERG_LO", path), dtype=np.float64)
        hi = np.asarray(_column(mhdu, "ENERG_HI", path), dtype=np.float64)
        n_grp = np.asarray(_column(mhdu, "N_GRP", path), dtype=np.int64)
        f_chan = _column(mhdu, "F_CHAN", path)
        n_chan = _column(mhdu, "N_CHAN", path)
        values = _column(mhdu, "MATRIX", path)
        e_min = np.asarray(_column(ehdu, "E_MIN", path), dtype=np.float64)
        e_max = np.asarray(_column(ehdu, "E_MAX", path), dtype=np.float64)
        first = _first_channel(mhdu, where)
        detchans = (
            int(
                _keyword_number(
                    mhdu.header,
                    "DETCHANS",
                    where,
                    integer=True,
                    positive=True,
                    meaning="the number of detector channels",
                )
            )
            if "DETCHANS" in mhdu.header
            else e_min.size
        )
        if "EFFAREA" in mhdu.header:
            effarea = _keyword_number(
                mhdu.header, "EFFAREA", where, positive=True, meaning="an area scaling factor"
            )
            if effarea != 1.0:
                raise ResponseError(
                    f"EFFAREA = {effarea:g}: a matrix scaled by EFFAREA != 1 is not supported "
                    "(fold the factor into the matrix or the ARF)",
                    where,
                )
        hduclas3 = _text(mhdu.header.get("HDUCLAS3"))
        header = mhdu.header.copy()
    _check_energy_grid(lo, hi, path, mhdu.name)
    n_channels = e_min.size
    if detchans != n_channels:
        raise ResponseError(f"DETCHANS = {detchans} but EBOUNDS has {n_channels} rows", where)
    if not (np.all(np.isfinite(e_min)) and np.all(np.isfinite(e_max))) or np.any(e_max < e_min):
        raise ResponseError("EBOUNDS needs finite E_MIN <= E_MAX", f"{path} [EBOUNDS]")
    rows, cols, data = [], [], []
    for i in range(lo.size):
        groups = int(n_grp[i])
        if groups == 0:
            continue
        fc = np.atleast_1d(np.asarray(f_chan[i], dtype=np.int64))[:groups]
        nc = np.atleast_1d(np.asarray(n_chan[i], dtype=np.int64))[:groups]
        vals = np.atleast_1d(np.asarray(values[i], dtype=np.float64))
        if groups < 0 or fc.size < groups or nc.size < groups or vals.size < nc.sum():
            raise ResponseError(f"row {i + 1}: N_GRP/N_CHAN disagree with the stored data", where)
        offset = 0
        for start, count in zip(fc - first, nc):
            if count <= 0:
                continue
            if start + count > n_channels:
                raise ResponseError(
                    f"row {i + 1}: channels {start + first}..{start + first + count - 1} are "
                    f"outside {first}..{first + n_channels - 1}",
                    where,
                )
            # elements numbered below the first channel do not exist for XSPEC (F_CHAN = 0
            # in a file without TLMIN): they are dropped, as there
            skip = min(max(0, -start), count)
            rows.append(np.full(count - skip, i))
            cols.append(np.arange(start + skip, start + count))
            data.append(vals[offset + skip : offset + count])
            offset += count
    if rows:
        rows_a, cols_a, data_a = np.concatenate(rows), np.concatenate(cols), np.concatenate(data)
    else:
        rows_a = cols_a = np.zeros(0, dtype=np.int64)
        data_a = np.zeros(0)
    # small negative elements are real (the XMM EPIC-pn RMFs have ~5e4 of them, down to -1e-3,
    # from their calibration fits); XSPEC keeps them, so only non-finite values are refused
    if not np.all(np.isfinite(data_a)):
        raise ResponseError("MATRIX has non-finite values", where)
    matrix = sp.csr_matrix((data_a, (rows_a, cols_a)), shape=(lo.size, n_channels))
    matrix.sum_duplicates()
    channel = first + np.arange(n_channels)
    row_sum = float(np.max(np.asarray(matrix.sum(axis=1)))) if matrix.nnz else 0.0
    includes_area, evidence = _area_status(hduclas3, row_sum)
    return Rmf(
        lo, hi, matrix, channel, e_min, e_max, includes_area, header, path, row_sum, evidence
    )


def _area_status(hduclas3: str, max_row_sum: float) -> tuple[bool, str]:
    """Whether a matrix carries the effective area, from HDUCLAS3 and its largest row sum.

    OGIP CAL/GEN/92-002: HDUCLAS3 = REDIST (redistribution only), DETECTOR (with detector
    efficiencies), FULL (with every effect, the mirror area too). A redistribution matrix's
    rows are probabilities, so rows summing to more than :data:`AREA_ROW_SUM` carry an area
    (cm^2) whatever the keyword says (hand-made RSPs often lack HDUCLAS3).
    """
    keyword = f"HDUCLAS3 = {hduclas3}" if hduclas3 else "no HDUCLAS3"
    sums = f"rows sum to up to {max_row_sum:.3g}"
    if max_row_sum > AREA_ROW_SUM:
        return True, f"{sums}, an area in cm^2, with {keyword}"
    if hduclas3 == "FULL":
        return True, f"{keyword}, though its {sums}"
    return False, f"{keyword}, {sums}"


def _first_channel(mhdu: fits.BinTableHDU, where: str) -> int:
    """Return the channel number of the first matrix column.

    TLMIN of F_CHAN, else the OGIP default 1.

    This is XSPEC's rule, and EBOUNDS rows are matched to channels by position. EBOUNDS'
    TLMIN and CHANNEL column are not used: XSPEC 12.9.1 ignores them (the XMM EPIC-pn RMF in
    ../shared/responses has no TLMIN on F_CHAN, EBOUNDS numbered from 0 and F_CHAN from 0;
    XSPEC's fits of spectra through it are reproduced only with F_CHAN counted from 1, i.e.
    its matrix one channel, 5 eV, below its EBOUNDS; reference/xspec_fits).
    """
    value = _tlmin(mhdu, "F_CHAN", where)
    return 1 if value is None else value


def _check_energy_grid(lo: np.ndarray, hi: np.ndarray, path: Path, hdu: str) -> None:
    """Refuse an energy grid that is not finite, non-negative, increasing, non-overlapping bins.

    Zero-width bins (ENERG_LO = ENERG_HI, 19 of them in the ROSAT PSPC responses) are
    allowed: they hold no flux.
    """
    where = f"{path} [{hdu}]"
    if lo.size == 0:
        raise ResponseError("the energy grid is empty", where)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ResponseError("ENERG_LO/ENERG_HI have non-finite values", where)
    if np.any(hi < lo) or np.any(lo < 0):
        raise ResponseError("energy bins must have 0 <= ENERG_LO <= ENERG_HI", where)
    if not np.any(hi > lo):
        raise ResponseError("every energy bin has zero width", where)
    if np.any(np.diff(lo) < 0):
        raise ResponseError("ENERG_LO must increase", where)
    overlap = lo[1:] < hi[:-1] * (1 - 1e-6)
    if np.any(overlap):
        i = int(np.flatnonzero(overlap)[0])
        raise ResponseError(
            f"energy bins {i + 1} and {i + 2} overlap ({lo[i]:g}-{hi[i]:g} and "
            f"{lo[i + 1]:g}-{hi[i + 1]:g} keV)",
            where,
        )


def _check_same_grid(arf: Arf, rmf: Rmf) -> None:
    where = f"{arf.path} vs {rmf.path}"
    if arf.energ_lo.size != rmf.energ_lo.size:
        raise ResponseError(
            f"the ARF has {arf.energ_lo.size} energy bins and the RMF {rmf.energ_lo.size}: "
            "they must share one energy grid",
            where,
        )
    scale = np.maximum(np.abs(rmf.energ_hi), 1e-12)
    worst = max(
        np.max(np.abs(arf.energ_lo - rmf.energ_lo) / scale),
        np.max(np.abs(arf.energ_hi - rmf.energ_hi) / scale),
    )
    if worst > GRID_TOLERANCE:
        raise ResponseError(
            f"ARF and RMF energy grids differ by up to {worst:.2e} (relative), more than the "
            f"{GRID_TOLERANCE:g} allowed: use the ARF made for this RMF",
            where,
        )


def read_pha(path: str | Path) -> Pha:
    """Read a type-I PHA file's SPECTRUM extension with its OGIP keywords and columns.

    Parameters
    ----------
    path : str or Path
        OGIP/92-007 spectrum: CHANNEL and COUNTS (or RATE, counts/s) columns; EXPOSURE (s);
        AREASCAL, BACKSCAL, SYS_ERR, QUALITY, GROUPING as keywords or columns; HDUCLAS1/2/3,
        POISSERR, STAT_ERR, DETCHANS, TLMIN of CHANNEL, CORRFILE/CORRSCAL, RESPFILE,
        ANCRFILE, BACKFILE, TELESCOP, INSTRUME.

    Returns
    -------
    Pha
        Counts per channel (RATE x EXPOSURE for rate spectra), the per-channel AREASCAL,
        QUALITY and GROUPING, and :attr:`Pha.poisson_problems` (HDUCLAS2 = NET,
        POISSERR = F, negative or non-integer counts) for C-stat users to refuse.

    Raises
    ------
    ResponseError
        Naming the file, HDU and keyword: a missing SPECTRUM extension or data column; a
        missing, non-numeric (string, logical, undefined), non-finite or non-positive
        EXPOSURE; another keyword or column of the wrong type or range; a type-II file; a
        non-consecutive CHANNEL column or one that disagrees with DETCHANS/TLMIN; a
        correction file with CORRSCAL != 0 (not supported).
    """
    path = Path(path)
    with _open(path) as hdul:
        hdu = _find_hdu(hdul, ("SPECTRUM",), path, "SPECTRUM")
        where = f"{path} [{hdu.name}]"
        header = hdu.header.copy()
        names = [c.name.upper() for c in hdu.columns]
        cols = {name: np.asarray(hdu.data[hdu.columns.names[i]]) for i, name in enumerate(names)}
        tlmin_channel = _tlmin(hdu, "CHANNEL", where)
    hduclas1 = _text(header.get("HDUCLAS1"))
    if hduclas1 and hduclas1 != "SPECTRUM":
        raise ResponseError(f"HDUCLAS1 = {hduclas1}: this is not a spectrum", where)
    data_col = "COUNTS" if "COUNTS" in names else "RATE" if "RATE" in names else None
    if data_col is None:
        raise ResponseError(f"no COUNTS or RATE column (columns: {', '.join(names)})", where)
    raw = cols[data_col]
    if raw.ndim != 1 or _text(header.get("HDUCLAS4")) == "TYPE:II" or "SPEC_NUM" in names:
        raise ResponseError(
            f"a type-II PHA file ({len(raw)} spectra in one table): only type-I files (one "
            "spectrum) are supported; extract the spectrum you want into its own file",
            where,
        )
    if "EXPOSURE" not in header:
        raise ResponseError("keyword EXPOSURE (the exposure time, s) is missing", where)
    exposure = _keyword_number(
        header, "EXPOSURE", where, positive=True, meaning="the exposure time in s"
    )
    channel = _channels(cols, header, tlmin_channel, raw.size, where)
    if raw.dtype.kind not in "iuf":
        raise ResponseError(f"column {data_col} is not numeric ({raw.dtype})", where)
    values = raw.astype(np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ResponseError(
            f"column {data_col} has {int(bad.sum())} non-finite value(s) (first: channel "
            f"{channel[k]} = {values[k]})",
            where,
        )
    counts = values * exposure if data_col == "RATE" else values
    quality = _per_channel_int(cols, header, "QUALITY", raw.size, where, default=0)
    grouping = _grouping(cols, header, raw.size, where)
    areascal = _per_channel(
        cols, header, "AREASCAL", raw.size, where, "the area scaling factor", non_negative=True
    )
    usable = (quality == 0) | (quality == QUALITY_DUBIOUS)
    zero_area = usable & (areascal == 0)
    if zero_area.any():
        k = int(np.flatnonzero(zero_area)[0])
        raise ResponseError(
            f"AREASCAL = 0 in {int(zero_area.sum())} channel(s) of good QUALITY (first: channel "
            f"{channel[k]}): the model would predict no counts there; flag them bad",
            where,
        )
    _per_channel(
        cols,
        header,
        "BACKSCAL",
        raw.size,
        where,
        "the background scaling factor",
        non_negative=True,
    )
    sys_err = _per_channel(
        cols,
        header,
        "SYS_ERR",
        raw.size,
        where,
        "a fractional systematic error",
        non_negative=True,
        default=0.0,
    )
    notes: list[str] = []
    if data_col == "COUNTS" and "RATE" in names:
        notes.append("the file has both COUNTS and RATE columns: COUNTS used")
    if np.any(sys_err[usable] > 0):
        notes.append(
            f"SYS_ERR (up to {sys_err[usable].max():g}) is not used: fractional systematic "
            "errors enter chi-square, not C-stat"
        )
    hduclas3 = _text(header.get("HDUCLAS3"))
    expected = {"COUNTS": "COUNT", "RATE": "RATE"}[data_col]
    if hduclas3 not in ("", expected):
        notes.append(f"HDUCLAS3 = {hduclas3} but the data are a {data_col} column: read as such")
    _correction(header, where)
    poisserr = _keyword_logical(header, "POISSERR", where, "whether the errors are Poisson")
    problems = _poisson_problems(
        header, data_col, counts, channel, usable, poisserr, "STAT_ERR" in names
    )
    if data_col == "RATE" and not problems:
        counts = np.round(counts)  # whole counts, as RATE x EXPOSURE stands for
    hduclas2 = _text(header.get("HDUCLAS2"))
    if hduclas2 == "BKG":
        notes.append("HDUCLAS2 = BKG: this file is a background spectrum")
    elif hduclas2 not in ("", "TOTAL", "NET", "BKG"):
        notes.append(f"HDUCLAS2 = {hduclas2} is not an OGIP value (TOTAL, NET, BKG)")
    return Pha(
        channel=channel,
        counts=counts,
        exposure=exposure,
        respfile=_filename_keyword(header, "RESPFILE"),
        ancrfile=_filename_keyword(header, "ANCRFILE"),
        backfile=_filename_keyword(header, "BACKFILE"),
        quality=quality,
        header=header,
        path=path,
        areascal=areascal,
        grouping=grouping,
        column=data_col,
        poisson_problems=problems,
        notes=tuple(notes),
        telescope=_keyword_string(header, "TELESCOP"),
        instrument=_keyword_string(header, "INSTRUME"),
    )


def _channels(
    cols: Mapping[str, np.ndarray],
    header: fits.Header,
    tlmin: int | None,
    n: int,
    where: str,
) -> np.ndarray:
    """Return the CHANNEL column, checked.

    Integers running consecutively from TLMIN (when given), one row per channel of DETCHANS
    (when given). Spectrum and response channels are then paired by position, as XSPEC pairs
    them.
    """
    if "CHANNEL" not in cols:
        raise ResponseError("no CHANNEL column", where)
    raw = cols["CHANNEL"]
    if raw.ndim != 1 or raw.dtype.kind not in "iuf" or not np.all(np.isfinite(raw)):
        raise ResponseError("CHANNEL must be a column of integers", where)
    if raw.dtype.kind == "f" and np.any(raw != np.round(raw)):
        raise ResponseError("CHANNEL must be a column of integers", where)
    channel = raw.astype(np.int64)
    if n and np.any(np.diff(channel) != 1):
        k = int(np.flatnonzero(np.diff(channel) != 1)[0])
        raise ResponseError(
            f"CHANNEL must run consecutively (row {k + 2} has {channel[k + 1]} after "
            f"{channel[k]}); a spectrum with missing channels cannot be paired with a response",
            where,
        )
    if tlmin is not None and n and channel[0] != tlmin:
        raise ResponseError(f"CHANNEL starts at {channel[0]} but its TLMIN is {tlmin}", where)
    if "DETCHANS" in header:
        detchans = _keyword_number(
            header,
            "DETCHANS",
            where,
            integer=True,
            positive=True,
            meaning="the number of detector channels",
        )
        if int(detchans) != n:
            raise ResponseError(
                f"DETCHANS = {int(detchans)} but the table has {n} rows (channels)", where
            )
    return channel


def _per_channel(
    cols: Mapping[str, np.ndarray],
    header: fits.Header,
    key: str,
    n: int,
    where: str,
    meaning: str,
    non_negative: bool = False,
    default: float = 1.0,
) -> np.ndarray:
    """Return a quantity OGIP/92-007 allows as a column or a keyword.

    AREASCAL, BACKSCAL, SYS_ERR: (n,) floats, finite and (``non_negative``) >= 0; ``default``
    when absent.
    """
    if key in cols:
        raw = cols[key]
        if raw.ndim != 1 or raw.dtype.kind not in "iuf":
            raise ResponseError(f"column {key} ({meaning}) must hold one number per channel", where)
        values = raw.astype(np.float64)
        bad = ~np.isfinite(values) | ((values < 0) if non_negative else False)
        if np.any(bad):
            k = int(np.flatnonzero(bad)[0])
            raise ResponseError(
                f"column {key} ({meaning}) has {int(np.sum(bad))} non-finite or negative "
                f"value(s) (first: row {k + 1} = {values[k]})",
                where,
            )
        return values
    if key in header:
        value = _keyword_number(header, key, where, non_negative=non_negative, meaning=meaning)
        return np.full(n, value)
    return np.full(n, default)


def _per_channel_int(
    cols: Mapping[str, np.ndarray], header: fits.Header, key: str, n: int, where: str, default: int
) -> np.ndarray:
    """Return an integer flag given as a column or a keyword (QUALITY, GROUPING): (n,) int64."""
    if key in cols:
        raw = cols[key]
        if raw.ndim != 1 or raw.dtype.kind not in "iu":
            raise ResponseError(f"column {key} must hold one integer flag per channel", where)
        return raw.astype(np.int64)
    if key in header:
        return np.full(n, int(_keyword_number(header, key, where, integer=True)), np.int64)
    return np.full(n, default, np.int64)


def _grouping(
    cols: Mapping[str, np.ndarray], header: fits.Header, n: int, where: str
) -> np.ndarray | None:
    """Return the GROUPING flags, or None when the spectrum is not grouped.

    OGIP/92-007: 1 starts a bin, -1 continues it, 0 no grouping.
    """
    grouping = _per_channel_int(cols, header, "GROUPING", n, where, default=0)
    bad = ~np.isin(grouping, (-1, 0, 1))
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise ResponseError(
            f"GROUPING = {grouping[k]} in row {k + 1}: OGIP flags are 1 (start of a bin), -1 "
            "(continuation) and 0 (no grouping)",
            where,
        )
    if n and grouping[0] == -1:
        raise ResponseError("GROUPING starts with -1 (a continuation of no bin)", where)
    return grouping if np.any(grouping == -1) else None


def _correction(header: fits.Header, where: str) -> None:
    """Refuse a named correction file with CORRSCAL != 0 (not supported).

    CORRSCAL scales a correction file (CORRFILE) that XSPEC subtracts; without one it has no
    effect.
    """
    corrscal = (
        _keyword_number(header, "CORRSCAL", where, meaning="the correction-file scaling factor")
        if "CORRSCAL" in header
        else 0.0
    )
    corrfile = _filename_keyword(header, "CORRFILE")
    if corrfile is not None and corrscal != 0:
        raise ResponseError(
            f"CORRFILE = {corrfile} with CORRSCAL = {corrscal:g}: correction files are not "
            "supported; subtract it beforehand or set CORRSCAL = 0",
            where,
        )


def _poisson_problems(
    header: fits.Header,
    column: str,
    counts: np.ndarray,
    channel: np.ndarray,
    usable: np.ndarray,
    poisserr: bool | None,
    has_stat_err: bool,
) -> tuple[str, ...]:
    """Why the data are not Poisson counts (empty tuple: they are)."""
    problems = []
    hduclas2 = _text(header.get("HDUCLAS2"))
    if hduclas2 == "NET":
        problems.append("HDUCLAS2 = NET (a background-subtracted spectrum)")
    if poisserr is False:
        stat = " with a STAT_ERR column" if has_stat_err else ""
        problems.append(f"POISSERR = F (the file declares non-Poisson errors{stat})")
    label = "RATE x EXPOSURE" if column == "RATE" else column
    negative = usable & (counts < 0)
    if negative.any():
        k = int(np.flatnonzero(negative)[0])
        problems.append(
            f"{label} is negative in {int(negative.sum())} channel(s) (first: channel "
            f"{channel[k]} = {counts[k]:.4g})"
        )
    tolerance = np.maximum(INTEGER_TOLERANCE * np.abs(counts), 1e-4)
    fractional = usable & (np.abs(counts - np.round(counts)) > tolerance)
    if fractional.any():
        k = int(np.flatnonzero(fractional)[0])
        problems.append(
            f"{label} is not a whole number of counts in {int(fractional.sum())} channel(s) "
            f"(first: channel {channel[k]} = {counts[k]:.6g})"
        )
    return tuple(problems)


def _filename_keyword(header: fits.Header, key: str) -> str | None:
    value = _keyword_string(header, key)
    return None if value.lower() in ("", "none", "null") else value


def spectrum_response(
    pha: Pha, instrument: Instrument, ignore_bad: bool = False
) -> tuple[Instrument, np.ndarray, np.ndarray]:
    """Return the instrument as one spectrum sees it, as XSPEC builds it from the PHA.

    Spectrum and response channels are paired by position. Each channel's column of the
    matrix is multiplied by its AREASCAL (model counts x AREASCAL, OGIP/92-007); channels of
    bad QUALITY are left out (:meth:`Pha.usable`); GROUPING sums the counts and the matrix
    columns of each group's usable channels into one fitted bin, whose energy range runs from
    the first channel's E_MIN to the last one's E_MAX (what XSPEC's ``ignore`` in keV acts
    on).

    Parameters
    ----------
    pha : Pha
        A spectrum with as many channels as the response.
    instrument : Instrument
        Its ARF and RMF.
    ignore_bad : bool
        Also leave out QUALITY = 2 ("dubious") channels, as XSPEC's ``ignore bad``.

    Returns
    -------
    instrument : Instrument
        The same response with (n_bins,) channels: AREASCAL applied, groups summed.
    counts : numpy.ndarray
        (n_bins,) counts per fitted bin.
    usable : numpy.ndarray
        (n_bins,) bool: bins holding at least one usable channel.

    Raises
    ------
    ResponseError
        The spectrum and the response have different numbers of channels.
    """
    n = pha.counts.size
    if n != instrument.n_channels:
        raise ResponseError(
            f"the spectrum has {n} channels but the response "
            f"{instrument.rmf_path.name if instrument.rmf_path else ''} has "
            f"{instrument.n_channels}: give the matching response",
            str(pha.path),
        )
    usable = pha.usable(ignore_bad)
    scale = np.ones(n) if pha.areascal is None else np.asarray(pha.areascal, dtype=np.float64)
    weight = np.where(usable, scale, 0.0)
    # a bin starts at every channel whose flag is not -1 (ungrouped: every channel)
    starts = np.arange(n) if pha.grouping is None else np.flatnonzero(pha.grouping != -1)
    group = np.cumsum(np.isin(np.arange(n), starts)) - 1  # bin index of every channel
    n_bins = starts.size
    ends = np.append(starts[1:], n) - 1
    # (n_chan, n_bins): each usable channel adds its AREASCAL-weighted column to its bin
    combine = sp.csr_matrix((weight, (np.arange(n), group)), shape=(n, n_bins))
    counts_in = sp.csr_matrix((usable.astype(np.float64), (np.arange(n), group)), shape=(n, n_bins))
    matrix = sp.csr_matrix(instrument.matrix @ combine)
    counts = np.asarray(counts_in.T @ pha.counts).ravel()
    usable_bins = np.asarray(counts_in.sum(axis=0)).ravel() > 0
    if pha.grouping is None and np.all(weight == 1.0):
        matrix = instrument.matrix
    out = replace(
        instrument,
        matrix=matrix,
        channel=np.asarray(instrument.channel)[starts],
        e_min=np.asarray(instrument.e_min)[starts],
        e_max=np.asarray(instrument.e_max)[ends],
    )
    return out, counts, usable_bins


# --------------------------------------------------------------------------------------------
# writers (atomic: a temporary file renamed into place)
# --------------------------------------------------------------------------------------------


def _atomic_write(hdul: fits.HDUList, path: Path) -> None:
    with replacing(path) as tmp:
        hdul.writeto(tmp, overwrite=True, checksum=True)


def provenance_cards(provenance: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """Return FITS cards recording how a file was made (package version, date, user items).

    Parameters
    ----------
    provenance : mapping of str to (value, str)
        More cards, ``KEY: (value, comment)``; a comment is dropped where a long string value
        (more than 60 characters with it) continues over CONTINUE cards.

    Returns
    -------
    list of (str, Any, str)
        ``(keyword, value, comment)``: CREATOR, XRMVERS, DATE (UTC), then the given cards.
    """
    cards: list[tuple[str, Any, str]] = [
        ("CREATOR", f"xrmodifier {__version__}", "software that wrote this file"),
        ("XRMVERS", __version__, "xrmodifier version"),
        ("DATE", _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"), "UTC"),
    ]
    for key, (value, comment) in provenance.items():
        # a long string value (a path) continues over CONTINUE cards; a comment beside it
        # would be truncated, so it is left out
        if isinstance(value, str) and len(value) + len(comment) > 60:
            comment = ""
        cards.append((key, value, comment))
    return cards


def write_arf(
    path: str | Path,
    energ_lo: np.ndarray,
    energ_hi: np.ndarray,
    specresp: np.ndarray,
    header: fits.Header | None = None,
    provenance: Mapping[str, tuple[Any, str]] | None = None,
    history: Sequence[str] = (),
) -> Path:
    """Write an OGIP ARF atomically (a temporary file renamed into place).

    ``header`` keywords (e.g. from the source ARF) are kept; the ``provenance`` cards (``KEY:
    (value, comment)``) and ``history`` lines are added.

    Parameters
    ----------
    path : str or Path
        The ARF to write (replaced if present).
    energ_lo, energ_hi : numpy.ndarray
        Shape ``(n_E,)``: energy-bin edges in keV (written as float32).
    specresp : numpy.ndarray
        Shape ``(n_E,)``: effective area in cm^2 (written as float32).
    header : astropy.io.fits.Header or None, optional
        Keywords to keep (structural and column keywords are left out); the OGIP HDUCLASn
        and HDUVERS keywords are added where it lacks them.
    provenance : mapping of str to (value, str) or None, optional
        Provenance cards (see :func:`provenance_cards`).
    history : sequence of str, optional
        HISTORY lines.

    Returns
    -------
    Path
        ``path`` as a Path.
    """
    path = Path(path)
    cols = [
        fits.Column("ENERG_LO", "E", unit="keV", array=np.asarray(energ_lo, dtype=np.float32)),
        fits.Column("ENERG_HI", "E", unit="keV", array=np.asarray(energ_hi, dtype=np.float32)),
        fits.Column("SPECRESP", "E", unit="cm**2", array=np.asarray(specresp, dtype=np.float32)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECRESP")
    structural = {
        "XTENSION",
        "BITPIX",
        "NAXIS",
        "NAXIS1",
        "NAXIS2",
        "PCOUNT",
        "GCOUNT",
        "TFIELDS",
        "EXTNAME",
        "CHECKSUM",
        "DATASUM",
    }
    if header is not None:
        for card in header.cards:
            key = card.keyword
            if key in structural or key.startswith(
                ("TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "TLMIN", "TLMAX")
            ):
                continue
            if key == "HISTORY":
                hdu.header.add_history(str(card.value))
            elif key == "COMMENT":
                hdu.header.add_comment(str(card.value))
            elif key:
                hdu.header[key] = (card.value, card.comment)
    for key, value, comment in (
        ("HDUCLASS", "OGIP", "format conforms to OGIP standard"),
        ("HDUCLAS1", "RESPONSE", "dataset relates to spectral response"),
        ("HDUCLAS2", "SPECRESP", "dataset contains spectral response"),
        ("HDUVERS", "1.1.0", "version of format"),
    ):
        if key not in hdu.header:
            hdu.header[key] = (value, comment)
    for key, value, comment in provenance_cards(provenance or {}):
        hdu.header[key] = (value, comment)
    for line in history:
        hdu.header.add_history(line)
    _atomic_write(fits.HDUList([fits.PrimaryHDU(), hdu]), path)
    return path


def write_modified_arf(
    path: str | Path,
    instrument: Instrument,
    family: str,
    param_names: Sequence[str],
    theta: Sequence[float],
    multiplier: np.ndarray,
    extra: Mapping[str, tuple[Any, str]] | None = None,
) -> Path:
    """Write ``instrument.area * multiplier`` as an ARF that keeps the source ARF's keywords.

    The file records the modifier family, theta, the source file and the package version.

    For an instrument without an ARF (area 1) the file holds m(E) itself, marked
    ``XRMMULT = T``: it multiplies the instrument's own matrix (XSPEC: ``arf FILE`` with the
    RSP), and :meth:`Instrument.load` accepts it with an area-carrying matrix.

    Parameters
    ----------
    path : str or Path
        Output ARF.
    instrument : Instrument
        The instrument whose area is modified.
    family : str
        Modifier family name.
    param_names, theta : sequences
        The modifier's parameter names and values.
    multiplier : numpy.ndarray
        m(E) on the instrument's energy grid (n_E,).
    extra : mapping
        More provenance cards ``KEY: (value, comment)``.

    Returns
    -------
    Path
        ``path`` as a Path.

    Raises
    ------
    ValueError
        ``multiplier`` is not on the instrument's energy grid (shape ``(n_E,)``).
    ResponseError
        A negative or non-finite product.
    """
    multiplier = np.asarray(multiplier, dtype=np.float64)
    if multiplier.shape != instrument.area.shape:
        raise ValueError("multiplier must be on the instrument's energy grid")
    if np.any(multiplier < 0) or not np.all(np.isfinite(multiplier)):
        raise ResponseError("the modified ARF would be negative or non-finite", str(path))
    prov: dict[str, tuple[Any, str]] = {
        "XRMFAMIL": (family, "ARF modifier family"),
        "XRMNPAR": (len(param_names), "number of modifier parameters"),
    }
    for k, (name, value) in enumerate(zip(param_names, theta), start=1):
        prov[f"XRMPN{k}"] = (str(name), f"modifier parameter {k} name")
        prov[f"XRMPV{k}"] = (float(value), f"modifier parameter {k} value")
    prov["XRMSRC"] = (
        str(instrument.arf_path) if instrument.arf_path else "none",
        "ARF that was modified",
    )
    if instrument.arf_path is None:
        # no ARF: the "ARF" is m(E) itself, to be used with the instrument's own matrix
        prov[MULTIPLIER_KEY] = (True, "dimensionless multiplier of the RMF's area")
    prov.update(extra or {})
    desc = ", ".join(f"{n}={float(v):.6g}" for n, v in zip(param_names, theta))
    return write_arf(
        path,
        instrument.energ_lo,
        instrument.energ_hi,
        instrument.area * multiplier,
        header=instrument.arf_header,
        provenance=prov,
        history=[f"xrmodifier {__version__}: ARF multiplied by {family} modifier ({desc})"],
    )


def write_rmf(
    path: str | Path,
    energ_lo: np.ndarray,
    energ_hi: np.ndarray,
    matrix: sp.spmatrix | np.ndarray,
    e_min: np.ndarray,
    e_max: np.ndarray,
    first_channel: int = 1,
    extname: str = "MATRIX",
    full: bool = False,
    threshold: float = 1e-8,
    provenance: Mapping[str, tuple[Any, str]] | None = None,
) -> Path:
    """Write an OGIP RMF with variable-length F_CHAN/N_CHAN/MATRIX columns.

    Each row holds one group per contiguous run of entries above ``threshold``; the file is
    written atomically (a temporary file renamed into place).

    Parameters
    ----------
    path : str or Path
        The RMF to write (replaced if present).
    energ_lo, energ_hi : numpy.ndarray
        Shape ``(n_E,)``: energy-bin edges in keV.
    matrix : scipy.sparse.spmatrix or numpy.ndarray
        Shape ``(n_E, n_chan)``: redistribution probabilities, or cm^2 with ``full``
        (written as float32).
    e_min, e_max : numpy.ndarray
        Shape ``(n_chan,)``: the channels' energy bounds in keV (EBOUNDS).
    first_channel : int, optional
        Number of the first channel (TLMIN of F_CHAN and CHANNEL).
    extname : str, optional
        EXTNAME of the matrix extension.
    full : bool, optional
        HDUCLAS3 = FULL (the matrix carries the area) instead of REDIST.
    threshold : float, optional
        Entries at or below it are not stored (LO_THRES).
    provenance : mapping of str to (value, str) or None, optional
        Provenance cards (see :func:`provenance_cards`).

    Returns
    -------
    Path
        ``path`` as a Path.
    """
    dense = matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
    n_e, n_chan = dense.shape
    n_grp, f_chan, n_chan_col, values = [], [], [], []
    for row in dense:
        keep = row > threshold
        edges = np.flatnonzero(np.diff(np.concatenate(([0], keep.view(np.int8), [0]))))
        starts, stops = edges[::2], edges[1::2]
        n_grp.append(len(starts))
        f_chan.append((starts + first_channel).astype(np.int32))
        n_chan_col.append((stops - starts).astype(np.int32))
        values.append(
            np.concatenate([row[a:b] for a, b in zip(starts, stops)]).astype(np.float32)
            if len(starts)
            else np.zeros(0, np.float32)
        )
    max_grp = max(max(n_grp), 1)
    cols = [
        fits.Column("ENERG_LO", "E", unit="keV", array=np.asarray(energ_lo, np.float32)),
        fits.Column("ENERG_HI", "E", unit="keV", array=np.asarray(energ_hi, np.float32)),
        fits.Column("N_GRP", "I", array=np.asarray(n_grp, np.int16)),
        fits.Column("F_CHAN", f"PJ({max_grp})", array=np.array(f_chan, dtype=object)),
        fits.Column("N_CHAN", f"PJ({max_grp})", array=np.array(n_chan_col, dtype=object)),
        fits.Column(
            "MATRIX", f"PE({max(v.size for v in values)})", array=np.array(values, dtype=object)
        ),
    ]
    mhdu = fits.BinTableHDU.from_columns(cols, name=extname)
    mhdu.header["TLMIN4"] = (first_channel, "first channel in the response")
    mhdu.header["TLMAX4"] = (first_channel + n_chan - 1, "last channel in the response")
    for key, value in (
        ("HDUCLASS", "OGIP"),
        ("HDUCLAS1", "RESPONSE"),
        ("HDUCLAS2", "RSP_MATRIX"),
        ("HDUCLAS3", "FULL" if full else "REDIST"),
        ("HDUVERS", "1.3.0"),
        ("CHANTYPE", "PI"),
        ("DETCHANS", n_chan),
        ("LO_THRES", threshold),
    ):
        mhdu.header[key] = value
    for key, value, comment in provenance_cards(provenance or {}):
        mhdu.header[key] = (value, comment)
    ecols = [
        fits.Column("CHANNEL", "J", array=first_channel + np.arange(n_chan, dtype=np.int32)),
        fits.Column("E_MIN", "E", unit="keV", array=np.asarray(e_min, np.float32)),
        fits.Column("E_MAX", "E", unit="keV", array=np.asarray(e_max, np.float32)),
    ]
    ehdu = fits.BinTableHDU.from_columns(ecols, name="EBOUNDS")
    ehdu.header["TLMIN1"] = first_channel
    ehdu.header["TLMAX1"] = first_channel + n_chan - 1
    for key, value in (
        ("HDUCLASS", "OGIP"),
        ("HDUCLAS1", "RESPONSE"),
        ("HDUCLAS2", "EBOUNDS"),
        ("HDUVERS", "1.2.0"),
        ("CHANTYPE", "PI"),
        ("DETCHANS", n_chan),
    ):
        ehdu.header[key] = value
    _atomic_write(fits.HDUList([fits.PrimaryHDU(), mhdu, ehdu]), Path(path))
    return Path(path)


def write_pha(
    path: str | Path,
    channel: np.ndarray,
    counts: np.ndarray,
    exposure: float,
    respfile: str | None = None,
    ancrfile: str | None = None,
    keywords: Mapping[str, Any] | None = None,
) -> Path:
    """Write a type-I PHA spectrum (integer COUNTS, Poisson errors) naming its responses.

    The file is written atomically (a temporary file renamed into place).

    Parameters
    ----------
    path : str or Path
        The PHA file to write (replaced if present).
    channel : numpy.ndarray
        Shape ``(n,)``: channel numbers (written as int32; TLMIN/TLMAX from their range).
    counts : numpy.ndarray
        Shape ``(n,)``: counts per channel, rounded to integers.
    exposure : float
        Exposure time in s.
    respfile, ancrfile : str or None, optional
        RESPFILE and ANCRFILE (``none`` when None).
    keywords : mapping of str to Any or None, optional
        More keywords, written last (they override the defaults).

    Returns
    -------
    Path
        ``path`` as a Path.
    """
    cols = [
        fits.Column("CHANNEL", "J", array=np.asarray(channel, dtype=np.int32)),
        fits.Column("COUNTS", "J", array=np.rint(counts).astype(np.int32)),
    ]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    channel = np.asarray(channel)
    for key, value in (
        ("HDUCLASS", "OGIP"),
        ("HDUCLAS1", "SPECTRUM"),
        ("HDUVERS", "1.2.1"),
        ("HDUCLAS2", "TOTAL"),
        ("HDUCLAS3", "COUNT"),
        ("CHANTYPE", "PI"),
        ("DETCHANS", int(channel.size)),
        ("EXPOSURE", float(exposure)),
        ("AREASCAL", 1.0),
        ("BACKSCAL", 1.0),
        ("CORRSCAL", 0.0),
        ("POISSERR", True),
        ("SYS_ERR", 0),
        ("QUALITY", 0),
        ("GROUPING", 0),
        ("BACKFILE", "none"),
        ("CORRFILE", "none"),
        ("RESPFILE", respfile or "none"),
        ("ANCRFILE", ancrfile or "none"),
        ("TLMIN1", int(channel.min())),
        ("TLMAX1", int(channel.max())),
    ):
        hdu.header[key] = value
    for key, value in (keywords or {}).items():
        hdu.header[key] = value
    for key, value, comment in provenance_cards({}):
        hdu.header[key] = (value, comment)
    _atomic_write(fits.HDUList([fits.PrimaryHDU(), hdu]), Path(path))
    return Path(path)
