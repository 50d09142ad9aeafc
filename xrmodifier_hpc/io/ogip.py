"""OGIP response and spectrum files (astropy.io.fits): ARF, RMF, PHA, and the ``Instrument``.

Readers handle what real files do: variable-length F_CHAN/N_CHAN/MATRIX columns, N_GRP > 1,
matrix extensions named MATRIX / SPECRESP MATRIX / RSP_MATRIX, channel numbering from 0 or 1
(TLMIN of F_CHAN, else 1, as XSPEC reads it), gzip, RMFs with the effective area folded
in (HDUCLAS3 = FULL) and ARF/RMF energy grids that differ by rounding. Every problem raises
:class:`ResponseError` naming the file and HDU.
"""

from __future__ import annotations

import datetime as _dt
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


# --------------------------------------------------------------------------------------------
# data classes
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arf:
    """Effective area ``specresp`` (cm^2) on the energy bins [energ_lo, energ_hi) keV."""

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    specresp: np.ndarray
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None


@dataclass(frozen=True)
class Rmf:
    """Redistribution matrix: ``matrix[i, c]`` is the probability that a photon in energy bin i
    lands in channel ``channel[c]`` (times the area, in cm^2, when ``includes_area``)."""

    energ_lo: np.ndarray
    energ_hi: np.ndarray
    matrix: sp.csr_matrix
    channel: np.ndarray
    e_min: np.ndarray
    e_max: np.ndarray
    includes_area: bool = False
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None


@dataclass(frozen=True)
class Instrument:
    """An ARF and an RMF on one energy grid: folds photon spectra into expected counts.

    ``area`` is the ARF in cm^2 (ones when the RMF already includes the area and no ARF was
    given); ``matrix`` is the RMF as a CSR matrix of shape (n_energies, n_channels).
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

    @property
    def n_energies(self) -> int:
        return self.energ_lo.size

    @property
    def n_channels(self) -> int:
        return self.channel.size

    @property
    def e_mid(self) -> np.ndarray:
        """Energy-bin centres (keV), where modifiers are evaluated."""
        return 0.5 * (self.energ_lo + self.energ_hi)

    @classmethod
    def load(cls, arf: str | Path | None, rmf: str | Path) -> Instrument:
        """Read an ARF (optional when the RMF includes the area) and an RMF."""
        rmf_data = read_rmf(rmf)
        if arf is None:
            if not rmf_data.includes_area:
                raise ResponseError(
                    "this RMF holds only the redistribution (HDUCLAS3 is not FULL): give an ARF",
                    str(rmf),
                )
            return cls.from_parts(None, rmf_data)
        return cls.from_parts(read_arf(arf), rmf_data)

    @classmethod
    def from_parts(cls, arf: Arf | None, rmf: Rmf) -> Instrument:
        """Combine a read ARF and RMF, checking that their energy grids agree."""
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
        )

    def with_area(self, area: np.ndarray) -> Instrument:
        """The same instrument with another effective area (cm^2) on the same energy grid."""
        area = np.asarray(area, dtype=np.float64)
        if area.shape != self.area.shape:
            raise ValueError(f"area has shape {area.shape}, expected {self.area.shape}")
        return replace(self, area=area)

    def fold(self, flux: np.ndarray, area: np.ndarray | None = None) -> np.ndarray:
        """Expected count rate per channel (counts/s) for photon flux per energy bin.

        ``flux``: photons cm^-2 s^-1 per energy bin, shape (n_E,) or (k, n_E); ``area``
        overrides the instrument's ARF (cm^2), shape (n_E,) or (k, n_E). Returns (n_chan,)
        or (k, n_chan).
        """
        area = self.area if area is None else area
        weighted = np.asarray(flux, dtype=np.float64) * area
        return np.asarray(weighted @ self.matrix)

    def band_mask(self, low: float, high: float) -> np.ndarray:
        """Channels left noticed by XSPEC's ``ignore **-low high-**`` (keV): E_MIN >= low and
        E_MAX < high.

        XSPEC ignores every channel up to and including the one that contains ``low`` and
        every channel from the one that contains ``high``, where a channel contains E when
        E_MIN < E <= E_MAX; on contiguous EBOUNDS that is the rule above (a channel whose
        E_MAX equals ``high`` is ignored). It reproduces XSPEC's noticed counts of all six
        spectra in reference/xspec_fits. Note that XSPEC's ``notice low-high`` differs: it
        also keeps the two channels that contain the band edges.
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
    """A type-I PHA spectrum: ``counts`` per ``channel`` in ``exposure`` seconds."""

    channel: np.ndarray
    counts: np.ndarray
    exposure: float
    respfile: str | None = None
    ancrfile: str | None = None
    backfile: str | None = None
    quality: np.ndarray | None = None
    header: fits.Header = field(default_factory=fits.Header, repr=False)
    path: Path | None = None

    def resolve(self, name: str | None) -> Path | None:
        """A RESPFILE/ANCRFILE name resolved relative to the PHA's own folder."""
        if name is None:
            return None
        p = Path(name)
        if not p.is_absolute() and self.path is not None:
            p = self.path.parent / p
        return p


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
    # an unusual EXTNAME still counts when the OGIP class says it is a response matrix
    for hdu in hdul[1:]:
        hduclas2 = str(hdu.header.get("HDUCLAS2", "")).strip().upper()
        if what == "matrix" and isinstance(hdu, fits.BinTableHDU) and hduclas2 == "RSP_MATRIX":
            return hdu
    raise ResponseError(f"no {what} extension (looked for EXTNAME {' / '.join(names)})", str(path))


def _column(hdu: fits.BinTableHDU, name: str, path: Path) -> Any:
    names = [c.name.upper() for c in hdu.columns]
    if name not in names:
        raise ResponseError(
            f"HDU {hdu.name!r} has no column {name} (columns: {', '.join(names)})", str(path)
        )
    return hdu.data[hdu.columns.names[names.index(name)]]


def _tlmin(hdu: fits.BinTableHDU, name: str) -> int | None:
    names = [c.name.upper() for c in hdu.columns]
    if name not in names:
        return None
    value = hdu.header.get(f"TLMIN{names.index(name) + 1}")
    return None if value is None else int(value)


def read_arf(path: str | Path) -> Arf:
    """Read an ARF's SPECRESP extension (ENERG_LO, ENERG_HI in keV; SPECRESP in cm^2)."""
    path = Path(path)
    with _open(path) as hdul:
        hdu = _find_hdu(hdul, ("SPECRESP",), path, "SPECRESP (ARF)")
        lo = np.asarray(_column(hdu, "ENERG_LO", path), dtype=np.float64)
        hi = np.asarray(_column(hdu, "ENERG_HI", path), dtype=np.float64)
        area = np.asarray(_column(hdu, "SPECRESP", path), dtype=np.float64)
        header = hdu.header.copy()
    _check_energy_grid(lo, hi, path, "SPECRESP")
    if not np.all(np.isfinite(area)) or np.any(area < 0):
        raise ResponseError("SPECRESP has negative or non-finite values", f"{path} [SPECRESP]")
    return Arf(lo, hi, area, header, path)


def read_rmf(path: str | Path) -> Rmf:
    """Read an RMF into a CSR matrix (n_energies, n_channels) plus its EBOUNDS."""
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
        eb_channel = np.asarray(_column(ehdu, "CHANNEL", path), dtype=np.int64)
        first = _first_channel(mhdu, ehdu, eb_channel)
        detchans = int(mhdu.header.get("DETCHANS", e_min.size))
        hduclas3 = str(mhdu.header.get("HDUCLAS3", "")).strip().upper()
        header = mhdu.header.copy()
    _check_energy_grid(lo, hi, path, mhdu.name)
    n_channels = e_min.size
    if detchans != n_channels:
        raise ResponseError(
            f"DETCHANS = {detchans} but EBOUNDS has {n_channels} rows", f"{path} [{mhdu.name}]"
        )
    rows, cols, data = [], [], []
    for i in range(lo.size):
        groups = int(n_grp[i])
        if groups == 0:
            continue
        fc = np.atleast_1d(np.asarray(f_chan[i], dtype=np.int64))[:groups]
        nc = np.atleast_1d(np.asarray(n_chan[i], dtype=np.int64))[:groups]
        vals = np.atleast_1d(np.asarray(values[i], dtype=np.float64))
        if fc.size < groups or nc.size < groups or vals.size < nc.sum():
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
    includes_area = hduclas3 == "FULL"
    return Rmf(lo, hi, matrix, channel, e_min, e_max, includes_area, header, path)


def _first_channel(mhdu: fits.BinTableHDU, ehdu: fits.BinTableHDU, eb_channel: np.ndarray) -> int:
    """The channel number of the first matrix column: TLMIN of F_CHAN, else the OGIP default 1.

    This is XSPEC's rule, and EBOUNDS rows are matched to channels by position. EBOUNDS'
    TLMIN and CHANNEL column are not used: XSPEC 12.9.1 ignores them (the XMM EPIC-pn RMF in
    ../shared/responses has no TLMIN on F_CHAN, EBOUNDS numbered from 0 and F_CHAN from 0;
    XSPEC's fits of spectra through it are reproduced only with F_CHAN counted from 1, i.e.
    its matrix one channel, 5 eV, below its EBOUNDS; reference/xspec_fits).
    """
    value = _tlmin(mhdu, "F_CHAN")
    return 1 if value is None else value


def _check_energy_grid(lo: np.ndarray, hi: np.ndarray, path: Path, hdu: str) -> None:
    where = f"{path} [{hdu}]"
    if lo.size == 0:
        raise ResponseError("the energy grid is empty", where)
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ResponseError("ENERG_LO/ENERG_HI have non-finite values", where)
    if np.any(hi <= lo) or np.any(lo < 0):
        raise ResponseError("energy bins must have 0 <= ENERG_LO < ENERG_HI", where)
    if np.any(np.diff(lo) <= 0):
        raise ResponseError("ENERG_LO must increase", where)


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
    """Read a type-I PHA file's SPECTRUM extension (COUNTS, or RATE times EXPOSURE)."""
    path = Path(path)
    with _open(path) as hdul:
        hdu = _find_hdu(hdul, ("SPECTRUM",), path, "SPECTRUM")
        where = f"{path} [SPECTRUM]"
        header = hdu.header.copy()
        names = [c.name.upper() for c in hdu.columns]
        exposure = header.get("EXPOSURE")
        if exposure is None or float(exposure) <= 0:
            raise ResponseError("EXPOSURE keyword is missing or not positive", where)
        exposure = float(exposure)
        channel = np.asarray(_column(hdu, "CHANNEL", path), dtype=np.int64)
        if "COUNTS" in names:
            counts = np.asarray(_column(hdu, "COUNTS", path), dtype=np.float64)
        elif "RATE" in names:
            counts = np.asarray(_column(hdu, "RATE", path), dtype=np.float64) * exposure
        else:
            raise ResponseError("no COUNTS or RATE column", where)
        quality = (
            np.asarray(_column(hdu, "QUALITY", path), dtype=np.int64)
            if "QUALITY" in names
            else None
        )
    if counts.ndim != 1:
        raise ResponseError("only type-I (one spectrum per file) PHA files are supported", where)
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ResponseError("COUNTS has negative or non-finite values", where)
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
    )


def _filename_keyword(header: fits.Header, key: str) -> str | None:
    value = str(header.get(key, "") or "").strip()
    return None if value.lower() in ("", "none", "null") else value


# --------------------------------------------------------------------------------------------
# writers (atomic: a temporary file renamed into place)
# --------------------------------------------------------------------------------------------


def _atomic_write(hdul: fits.HDUList, path: Path) -> None:
    with replacing(path) as tmp:
        hdul.writeto(tmp, overwrite=True, checksum=True)


def provenance_cards(provenance: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """FITS cards recording how a file was made (package version, date, user items)."""
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
    """Write an OGIP ARF. ``header`` keywords (e.g. from the source ARF) are kept; the
    ``provenance`` cards (``KEY: (value, comment)``) and ``history`` lines are added."""
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
    """Write ``instrument.area * multiplier`` as an ARF that keeps the source ARF's keywords
    and records the modifier family, theta, the source file and the package version."""
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
    """Write an OGIP RMF with variable-length F_CHAN/N_CHAN/MATRIX columns (one group per
    contiguous run of entries above ``threshold``)."""
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
    """Write a type-I PHA spectrum (integer COUNTS, Poisson errors) naming its responses."""
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
