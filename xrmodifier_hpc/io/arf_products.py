"""The corrected-ARF products: one ARF per posterior statistic, and an ensemble file of draws.

``write_corrected_arf`` copies an original ARF file whole (every HDU, every keyword, the
column formats; gzip input is read transparently) and multiplies its SPECRESP column by a
multiplier m(E) given on the file's own energy bins; header keywords say which statistic the
file holds (``XRMSTAT``: ``median``, ``p16``, ``p84``) and which inversion result it came
from (``XRMRESLT``). XSPEC, Sherpa and every OGIP reader use it as the original ARF.

``write_arf_ensemble`` writes N posterior draws of the corrected ARF into one FITS table,
extension ``ENSEMBLE``, one row per draw:

======== ============ ===== =================================================
column   format       unit  content
======== ============ ===== =================================================
DRAW     J                  draw number, 1..N
ENERG_LO nE            keV  lower bin edges (the original ARF's; the same in every row)
ENERG_HI nE            keV  upper bin edges
SPECRESP nE            cm^2 the original SPECRESP times m(E; theta_k)
<param>  D                  theta_k, one column per modifier parameter
======== ============ ===== =================================================

Read it with astropy::

    from astropy.io import fits
    t = fits.getdata("corrected_ensemble.fits", "ENSEMBLE")
    e_lo, e_hi, arfs = t["ENERG_LO"][0], t["ENERG_HI"][0], t["SPECRESP"]  # arfs: (N, n_E) cm^2

This is the form in which effective-area uncertainty is propagated by drawing one ARF per fit
or per MCMC step (Drake et al. 2006, SPIE 6270, 62701I; Lee et al. 2011, ApJ 731, 126).
Both writers are atomic (a temporary file renamed into place, ``io.atomic``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from xrmodifier_hpc import __version__
from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.atomic import replacing
from xrmodifier_hpc.io.ogip import provenance_cards, read_arf

#: the statistics a corrected ARF may hold (XRMSTAT)
ARF_STATISTICS = ("median", "p16", "p84")
#: extension name of the ensemble table
ENSEMBLE_EXTNAME = "ENSEMBLE"
#: keywords that describe a table's layout: never copied from one table to another
_STRUCTURAL = {
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
    "SIMPLE",
    "EXTEND",
}
_COLUMN_PREFIXES = ("TTYPE", "TFORM", "TUNIT", "TDIM", "TNULL", "TSCAL", "TZERO", "TLMIN", "TLMAX")


def _specresp_hdu(hdul: fits.HDUList, path: Path) -> fits.BinTableHDU:
    for hdu in hdul[1:]:
        if (
            isinstance(hdu, fits.BinTableHDU)
            and str(hdu.header.get("EXTNAME", "")).strip().upper() == "SPECRESP"
        ):
            return hdu
    raise ResponseError("no SPECRESP extension", str(path))


def _column_name(hdu: fits.BinTableHDU, name: str) -> str:
    for col in hdu.columns.names:
        if col.upper() == name:
            return col
    raise KeyError(name)


def _check_multiplier(multiplier: np.ndarray, n_e: int, path: Path) -> np.ndarray:
    m = np.asarray(multiplier, dtype=np.float64)
    if m.shape[-1] != n_e:
        raise ValueError(f"the multiplier has {m.shape[-1]} energies, the ARF {n_e} ({path})")
    if not np.all(np.isfinite(m)) or np.any(m < 0):
        raise ResponseError("the corrected ARF would be negative or non-finite", str(path))
    return m


def _cards(
    statistic: str,
    result: str | Path,
    source: Path,
    n_draws: int,
    extra: Mapping[str, tuple[Any, str]] | None,
) -> list[tuple[str, Any, str]]:
    prov: dict[str, tuple[Any, str]] = {
        "XRMSTAT": (statistic, "statistic of m(E) over the posterior draws"),
        "XRMRESLT": (str(Path(result).resolve()), "inversion result this ARF comes from"),
        "XRMNDRAW": (int(n_draws), "posterior draws behind XRMSTAT"),
        "XRMSRC": (str(Path(source).resolve()), "ARF that was corrected"),
    }
    prov.update(extra or {})
    return provenance_cards(prov)


def write_corrected_arf(
    path: str | Path,
    source: str | Path,
    multiplier: np.ndarray,
    statistic: str,
    result: str | Path,
    n_draws: int,
    extra: Mapping[str, tuple[Any, str]] | None = None,
    history: Sequence[str] = (),
) -> Path:
    """Write ``source`` ARF x ``multiplier`` to ``path``, keeping every HDU and keyword.

    Parameters
    ----------
    path : str or Path
        The file to write (plain FITS; replaced atomically if it exists).
    source : str or Path
        The original ARF (OGIP, extension SPECRESP; ``.gz`` is read transparently).
    multiplier : ndarray, shape (n_E,)
        m(E) on the source's energy bins (dimensionless, >= 0).
    statistic : str
        What ``multiplier`` is: ``median``, ``p16`` or ``p84`` (keyword XRMSTAT).
    result : str or Path
        The inversion result it came from (keyword XRMRESLT).
    n_draws : int
        Posterior draws behind the statistic (keyword XRMNDRAW).
    extra : mapping of str to (value, comment), optional
        More keywords (e.g. the modifier family, XRMFAMIL).
    history : sequence of str
        HISTORY lines to add.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ResponseError
        When ``source`` is not a readable ARF or the result would be negative or non-finite.
    ValueError
        When ``statistic`` is unknown or ``multiplier`` is not on the source's grid.
    """
    if statistic not in ARF_STATISTICS:
        raise ValueError(f"unknown statistic {statistic!r}; known: {', '.join(ARF_STATISTICS)}")
    path, source = Path(path), Path(source)
    arf = read_arf(source)  # validates the file (ResponseError naming it)
    m = _check_multiplier(multiplier, arf.specresp.size, source)
    with fits.open(source, memmap=False) as hdul:
        hdu = _specresp_hdu(hdul, source)
        col = _column_name(hdu, "SPECRESP")
        values = hdu.data[col]
        hdu.data[col] = (np.asarray(values, dtype=np.float64) * m).astype(values.dtype)
        old = {k: hdu.header.get(k) for k in ("CREATOR", "DATE") if k in hdu.header}
        for key, value, comment in _cards(statistic, result, source, n_draws, extra):
            hdu.header[key] = (value, comment)
        if old:
            hdu.header.add_history(
                "before xrmodifier: " + ", ".join(f"{k} = {v}" for k, v in old.items())
            )
        hdu.header.add_history(
            f"xrmodifier {__version__}: SPECRESP multiplied by the pointwise posterior "
            f"{statistic} of the ARF modifier m(E)"
        )
        for line in history:
            hdu.header.add_history(line)
        with replacing(path, suffix=".fits") as tmp:
            hdul.writeto(tmp, overwrite=True, checksum=True)
    return path


def _copy_keywords(src: fits.Header, dst: fits.Header) -> None:
    for card in src.cards:
        key = card.keyword
        if not key or key in _STRUCTURAL or key.startswith(_COLUMN_PREFIXES):
            continue
        if key.startswith("HDUCLAS"):
            continue
        if key == "HISTORY":
            dst.add_history(str(card.value))
        elif key == "COMMENT":
            dst.add_comment(str(card.value))
        else:
            dst[key] = (card.value, card.comment)


def write_arf_ensemble(
    path: str | Path,
    source: str | Path,
    multipliers: np.ndarray,
    thetas: np.ndarray,
    param_names: Sequence[str],
    result: str | Path,
    extra: Mapping[str, tuple[Any, str]] | None = None,
) -> Path:
    """Write N posterior draws of the corrected ARF as one FITS table (module docstring).

    Parameters
    ----------
    path : str or Path
        The file to write (replaced atomically if it exists).
    source : str or Path
        The original ARF; its energy bins and SPECRESP are used, its primary and SPECRESP
        keywords (TELESCOP, INSTRUME, FILTER, ...) are kept in the ensemble's headers.
    multipliers : ndarray, shape (N, n_E)
        m(E; theta_k) on the source's bins, one row per draw.
    thetas : ndarray, shape (N, d)
        The draws theta_k, ordered as ``param_names``.
    param_names : sequence of str
        Modifier parameter names (d,): one column each.
    result : str or Path
        The inversion result the draws come from (keyword XRMRESLT).
    extra : mapping of str to (value, comment), optional
        More keywords.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    ResponseError
        When ``source`` is not a readable ARF or a corrected ARF would be negative.
    ValueError
        When the shapes disagree.
    """
    path, source = Path(path), Path(source)
    arf = read_arf(source)
    n_e = arf.specresp.size
    m = _check_multiplier(np.atleast_2d(multipliers), n_e, source)
    thetas = np.atleast_2d(np.asarray(thetas, dtype=np.float64))
    names = [str(n) for n in param_names]
    if thetas.shape != (m.shape[0], len(names)):
        raise ValueError(f"thetas has shape {thetas.shape}, expected ({m.shape[0]}, {len(names)})")
    n = m.shape[0]
    cols = [
        fits.Column("DRAW", "J", array=np.arange(1, n + 1, dtype=np.int32)),
        fits.Column(
            "ENERG_LO",
            f"{n_e}E",
            unit="keV",
            array=np.tile(arf.energ_lo.astype(np.float32), (n, 1)),
        ),
        fits.Column(
            "ENERG_HI",
            f"{n_e}E",
            unit="keV",
            array=np.tile(arf.energ_hi.astype(np.float32), (n, 1)),
        ),
        fits.Column(
            "SPECRESP",
            f"{n_e}E",
            unit="cm**2",
            array=(arf.specresp[None, :] * m).astype(np.float32),
        ),
    ]
    cols += [fits.Column(name, "D", array=thetas[:, j]) for j, name in enumerate(names)]
    table = fits.BinTableHDU.from_columns(cols, name=ENSEMBLE_EXTNAME)
    with fits.open(source, memmap=False) as original:
        primary = fits.PrimaryHDU()
        _copy_keywords(original[0].header, primary.header)
        _copy_keywords(_specresp_hdu(original, source).header, table.header)
    for key, value, comment in (
        ("HDUCLASS", "OGIP", "OGIP-style response data"),
        ("HDUCLAS1", "RESPONSE", "dataset relates to spectral response"),
        ("HDUCLAS2", "SPECRESP", "rows are effective areas"),
        ("HDUCLAS3", "ENSEMBLE", "one posterior draw of the corrected ARF per row"),
    ):
        table.header[key] = (value, comment)
    cards = _cards("ensemble", result, source, n, extra)
    cards.append(("XRMNPAR", len(names), "number of modifier parameters"))
    for k, name in enumerate(names, start=1):
        cards.append((f"XRMPN{k}", name, f"modifier parameter {k} (a column)"))
    for key, value, comment in cards:
        table.header[key] = (value, comment)
        primary.header[key] = (value, comment)
    table.header.add_history(
        f"xrmodifier {__version__}: {n} posterior draws of the ARF modifier m(E) applied to "
        "SPECRESP, one per row"
    )
    with replacing(path, suffix=".fits") as tmp:
        fits.HDUList([primary, table]).writeto(tmp, overwrite=True, checksum=True)
    return path


#: keywords that name the instrument an ARF belongs to
IDENTITY_KEYS = ("TELESCOP", "INSTRUME")


def instrument_identity(header_list: Sequence[fits.Header]) -> dict[str, str]:
    """Return TELESCOP and INSTRUME from the first header (in order) that has each, upper-cased.

    Parameters
    ----------
    header_list : sequence of astropy.io.fits.Header
        Headers to look in, e.g. the SPECRESP extension's then the primary's.

    Returns
    -------
    dict of str to str
        The keywords found (missing ones are absent).
    """
    out: dict[str, str] = {}
    for key in IDENTITY_KEYS:
        for header in header_list:
            value = str(header.get(key, "") or "").strip()
            if value:
                out[key] = value.upper()
                break
    return out


def arf_identity(path: str | Path) -> dict[str, str]:
    """Return the TELESCOP and INSTRUME of an ARF file (SPECRESP header first, then primary).

    Parameters
    ----------
    path : str or Path
        An OGIP ARF (``.gz`` read transparently).

    Returns
    -------
    dict of str to str
        The keywords found, upper-cased (missing ones are absent).

    Raises
    ------
    OSError
        When the file cannot be opened as FITS.
    """
    with fits.open(path, memmap=False) as hdul:
        headers = [h.header for h in hdul[1:] if h.name.upper() == "SPECRESP"] + [hdul[0].header]
        return instrument_identity(headers)


def read_arf_ensemble(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Read an ensemble file written by :func:`write_arf_ensemble`.

    Parameters
    ----------
    path : str or Path
        The ensemble FITS file.

    Returns
    -------
    energ_lo, energ_hi : ndarray, shape (n_E,)
        Bin edges (keV).
    specresp : ndarray, shape (N, n_E)
        One corrected ARF per draw (cm^2).
    thetas : ndarray, shape (N, d)
        The draws' parameters (columns ``XRMPN1..d``).

    Raises
    ------
    ResponseError
        When the file has no ENSEMBLE table or lacks its columns.
    """
    path = Path(path)
    try:
        with fits.open(path, memmap=False) as hdul:
            hdu = hdul[ENSEMBLE_EXTNAME]
            data, header = hdu.data, hdu.header
            names = [str(header[f"XRMPN{k}"]) for k in range(1, int(header["XRMNPAR"]) + 1)]
            lo = np.asarray(data["ENERG_LO"][0], dtype=np.float64)
            hi = np.asarray(data["ENERG_HI"][0], dtype=np.float64)
            area = np.atleast_2d(np.asarray(data["SPECRESP"], dtype=np.float64))
            thetas = np.column_stack([np.asarray(data[n], dtype=np.float64) for n in names])
    except (OSError, KeyError) as exc:
        raise ResponseError(f"not an ARF ensemble file ({exc})", str(path)) from None
    return lo, hi, area, thetas
