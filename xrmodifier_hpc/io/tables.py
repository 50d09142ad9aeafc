"""XSPEC table models as FITS files: read, write, and the models that use them.

The format is HEASARC's table-model file (OGIP memo 92-009, "The File Format for XSPEC Table
Models", heasarc.gsfc.nasa.gov/docs/heasarc/ofwg/docs/general/ogip_92_009): a PRIMARY header
with MODLNAME, MODLUNIT, REDSHIFT, ADDMODEL (and optionally LOELIMIT, HIELIMIT), then

* ``PARAMETERS``: one row per parameter (NAME, METHOD, INITIAL, DELTA, MINIMUM, BOTTOM, TOP,
  MAXIMUM, NUMBVALS, VALUE), with NINTPARM interpolated parameters and NADDPARM additional
  ones;
* ``ENERGIES``: the energy bins ENERG_LO, ENERG_HI (keV);
* ``SPECTRA``: one row per point of the interpolated parameters' grid, the last parameter
  varying fastest, with PARAMVAL (the point), INTPSPEC (the spectrum) and ADDSPnnn (one per
  additional parameter).

:func:`read_table` turns a file into :class:`physics.spectra.TableData` (arrays; the physics
layer never opens a file), :func:`write_table` the reverse (``xrmodifier tabulate`` writes
its tables with it), and :func:`load_model` builds a native model whose ``atable{...}`` and
``mtable{...}`` terms read their files, relative to a base folder.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from astropy.io import fits

from xrmodifier_hpc.config.expression import split_product
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import replacing
from xrmodifier_hpc.io.ogip import provenance_cards
from xrmodifier_hpc.physics.spectra import Model, ModelError, TableData, parse_model

#: what XSPEC's OGIPTable::formatCheck looks for in the primary header
HDUCLAS1 = "XSPEC TABLE MODEL"
HDUVERS = "1.1.0"


def read_table(path: str | Path) -> TableData:
    """Read an XSPEC table model (additive or multiplicative) into arrays.

    Parameters
    ----------
    path : str or Path
        The FITS file.

    Returns
    -------
    TableData
        The table; ``source`` is the file's path.

    Raises
    ------
    ModelError
        The file is missing or not a readable table model (OGIP/92-009), its SPECTRA rows
        are not in OGIP order or disagree with the parameter grid, or it uses ESCALE /
        NXFLTEXP (energy-dependent tables, not supported).
    """
    path = Path(path)
    where = str(path)
    if not path.is_file():
        raise ModelError("table model file not found", where)
    try:
        with fits.open(path, memmap=False) as hdul:
            primary = hdul[0].header
            params = hdul["PARAMETERS"]
            energies = hdul["ENERGIES"].data
            spectra = hdul["SPECTRA"].data
            n_int = int(params.header.get("NINTPARM", 0))
            n_add = int(params.header.get("NADDPARM", 0))
            names = [str(s).strip() for s in params.data["NAME"]]
            method = np.asarray(params.data["METHOD"], dtype=np.int64)
            numbvals = np.asarray(params.data["NUMBVALS"], dtype=np.int64)
            values = [np.atleast_1d(np.asarray(v, dtype=np.float64)) for v in params.data["VALUE"]]
            minimum = np.asarray(params.data["MINIMUM"], dtype=np.float64)
            maximum = np.asarray(params.data["MAXIMUM"], dtype=np.float64)
            e_lo = np.asarray(energies["ENERG_LO"], dtype=np.float64)
            e_hi = np.asarray(energies["ENERG_HI"], dtype=np.float64)
            intpspec = np.asarray(spectra["INTPSPEC"], dtype=np.float64)
            paramval = np.asarray(spectra["PARAMVAL"], dtype=np.float64).reshape(
                intpspec.shape[0], -1
            )
            addspec = [
                np.asarray(spectra[f"ADDSP{i + 1:03d}"], dtype=np.float64) for i in range(n_add)
            ]
    except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
        raise ModelError(
            f"not a readable XSPEC table model (OGIP/92-009: PARAMETERS, ENERGIES, SPECTRA): {exc}",
            where,
        ) from None
    if "ADDMODEL" not in primary:
        raise ModelError("no ADDMODEL keyword: not an XSPEC table model", where)
    if bool(primary.get("ESCALE", False)) or "NXFLTEXP" in primary:
        raise ModelError("ESCALE / NXFLTEXP table models are not supported", where)
    if n_int < 1 or len(names) != n_int + n_add:
        raise ModelError("NINTPARM/NADDPARM disagree with the PARAMETERS rows", where)
    axes = tuple(values[i][: numbvals[i]] for i in range(n_int))
    shape = tuple(a.size for a in axes)
    n_spec = int(np.prod(shape))
    intpspec = intpspec.reshape(intpspec.shape[0], -1)
    if intpspec.shape != (n_spec, e_lo.size) or paramval.shape[0] != n_spec:
        raise ModelError(
            f"SPECTRA has {intpspec.shape[0]} rows of {intpspec.shape[-1]} bins; expected "
            f"{n_spec} (the parameter grid {shape}) of {e_lo.size} (ENERGIES)",
            where,
        )
    expected = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(n_spec, n_int)
    if not np.allclose(paramval[:, :n_int], expected, rtol=1e-5, atol=0):
        raise ModelError(
            "SPECTRA rows are not in OGIP order (last parameter fastest) or PARAMVAL "
            "disagrees with VALUE",
            where,
        )
    stack = np.stack([intpspec, *[a.reshape(n_spec, -1) for a in addspec]], axis=0)
    data = TableData(
        name=str(primary.get("MODLNAME", path.stem)).strip(),
        additive=bool(primary["ADDMODEL"]),
        int_names=tuple(names[:n_int]),
        int_log=tuple(bool(m == 1) for m in method[:n_int]),
        axes=axes,
        e_lo=e_lo,
        e_hi=e_hi,
        spectra=stack.reshape(1 + n_add, *shape, e_lo.size),
        add_names=tuple(names[n_int:]),
        add_range={
            n: (float(lo), float(hi))
            for n, lo, hi in zip(names[n_int:], minimum[n_int:], maximum[n_int:])
        },
        redshift=bool(primary.get("REDSHIFT", False)),
        lo_limit=float(primary["LOELIMIT"]) if "LOELIMIT" in primary else None,
        hi_limit=float(primary["HIELIMIT"]) if "HIELIMIT" in primary else None,
        source=where,
    )
    data.validate()
    return data


def write_table(
    path: str | Path,
    data: TableData,
    *,
    units: Mapping[str, str] | None = None,
    provenance: Mapping[str, tuple[Any, str]] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``data`` as an XSPEC table model (OGIP/92-009, HDUVERS 1.1.0), atomically.

    Parameters
    ----------
    path : str or Path
        The FITS file to write.
    data : TableData
        The table (validated first). Spectra and parameter values are stored as 32-bit
        floats, as the format prescribes; energies in keV.
    units : mapping of str to str, optional
        Unit of each parameter (the PARAMETERS extension's UNITS column), e.g. ``keV``.
    provenance : mapping of str to (value, comment), optional
        Extra PRIMARY keywords recording how the table was made (``XSPECVER``, ``ABUND``,
        ``XSECT``, ...), written after CREATOR, XRMVERS and DATE.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    Path
        ``path``.

    Raises
    ------
    UserError
        ``path`` exists and ``overwrite`` is false.
    ModelError
        ``data`` is not a valid table (:meth:`TableData.validate`).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise UserError("exists; give --overwrite to replace it", str(path))
    data.validate()
    units = dict(units or {})
    n_int, n_add = len(data.int_names), len(data.add_names)
    names = list(data.int_names) + list(data.add_names)
    width = max(a.size for a in data.axes)
    value = np.zeros((len(names), width), np.float32)
    numbvals, method, initial, delta, lo, hi = [], [], [], [], [], []
    for k, (axis, log) in enumerate(zip(data.axes, data.int_log)):
        value[k, : axis.size] = axis
        numbvals.append(axis.size)
        method.append(1 if log else 0)
        start = float(axis[axis.size // 2])
        initial.append(start)
        delta.append(max(abs(start) * 0.01, 1e-6))
        lo.append(float(axis[0]))
        hi.append(float(axis[-1]))
    for name in data.add_names:
        a_lo, a_hi = data.add_range.get(name, (0.0, 1.0))
        numbvals.append(0)
        method.append(0)
        initial.append(float(min(max(0.0, a_lo), a_hi)))
        delta.append(0.01)
        lo.append(float(a_lo))
        hi.append(float(a_hi))
    primary = fits.PrimaryHDU()
    header = primary.header
    for key, val, comment in (
        ("HDUCLASS", "OGIP", "format conforms to OGIP standard"),
        ("HDUDOC", "OGIP/92-009", "the XSPEC table model file format"),
        ("HDUCLAS1", HDUCLAS1, ""),
        ("HDUVERS", HDUVERS, "version of the format"),
        ("MODLNAME", data.name[:12], "model name"),
        ("MODLUNIT", "photons/cm^2/s" if data.additive else " ", "model units"),
        ("REDSHIFT", bool(data.redshift), "add a redshift parameter z"),
        ("ADDMODEL", bool(data.additive), "additive (T) or multiplicative (F) table"),
    ):
        header[key] = (val, comment)
    if data.lo_limit is not None:
        header["LOELIMIT"] = (float(data.lo_limit), "value below the tabulated energies")
    if data.hi_limit is not None:
        header["HIELIMIT"] = (float(data.hi_limit), "value above the tabulated energies")
    for key, val, comment in provenance_cards(provenance or {}):
        header[key] = (val, comment)

    pcols = [
        fits.Column("NAME", "12A", array=np.array(names)),
        fits.Column("METHOD", "J", array=np.asarray(method, np.int32)),
        fits.Column("INITIAL", "E", array=np.asarray(initial, np.float32)),
        fits.Column("DELTA", "E", array=np.asarray(delta, np.float32)),
        fits.Column("MINIMUM", "E", array=np.asarray(lo, np.float32)),
        fits.Column("BOTTOM", "E", array=np.asarray(lo, np.float32)),
        fits.Column("TOP", "E", array=np.asarray(hi, np.float32)),
        fits.Column("MAXIMUM", "E", array=np.asarray(hi, np.float32)),
        fits.Column("NUMBVALS", "J", array=np.asarray(numbvals, np.int32)),
        fits.Column("VALUE", f"{width}E", array=value),
        fits.Column("UNITS", "12A", array=np.array([units.get(n, " ") for n in names])),
    ]
    phdu = fits.BinTableHDU.from_columns(pcols, name="PARAMETERS")
    ehdu = fits.BinTableHDU.from_columns(
        [
            fits.Column("ENERG_LO", "E", unit="keV", array=data.e_lo.astype(np.float32)),
            fits.Column("ENERG_HI", "E", unit="keV", array=data.e_hi.astype(np.float32)),
        ],
        name="ENERGIES",
    )
    n_spec = int(np.prod(data.shape))
    n_e = data.e_lo.size
    grid = np.stack(np.meshgrid(*data.axes, indexing="ij"), -1).reshape(n_spec, n_int)
    flat = data.spectra.reshape(1 + n_add, n_spec, n_e).astype(np.float32)
    scols = [
        fits.Column("PARAMVAL", f"{n_int}E", array=grid.astype(np.float32)),
        fits.Column("INTPSPEC", f"{n_e}E", unit=header["MODLUNIT"], array=flat[0]),
    ]
    for k in range(n_add):
        scols.append(fits.Column(f"ADDSP{k + 1:03d}", f"{n_e}E", array=flat[1 + k]))
    shdu = fits.BinTableHDU.from_columns(scols, name="SPECTRA")
    for hdu, clas2 in ((phdu, "PARAMETERS"), (ehdu, "ENERGIES"), (shdu, "MODEL SPECTRA")):
        hdu.header["HDUCLASS"] = "OGIP"
        hdu.header["HDUCLAS1"] = HDUCLAS1
        hdu.header["HDUCLAS2"] = clas2
        hdu.header["HDUVERS"] = "1.0.0"
    phdu.header["NINTPARM"] = (n_int, "number of interpolated parameters")
    phdu.header["NADDPARM"] = (n_add, "number of additional parameters")
    with replacing(path) as tmp:
        fits.HDUList([primary, phdu, ehdu, shdu]).writeto(tmp, overwrite=True, checksum=True)
    return path


def load_model(expression: str, base: str | Path | None = None) -> Model:
    """Build the native :class:`~xrmodifier_hpc.physics.spectra.Model` of ``expression``.

    The files of its ``atable{...}``/``mtable{...}`` terms are read.

    Parameters
    ----------
    expression : str
        A product expression (``wabs*bremss``, ``mtable{tbabs.fits}*atable{apec.fits}``).
    base : str or Path, optional
        The folder relative table paths are resolved against (the config file's folder);
        the working directory by default.

    Returns
    -------
    Model
        The parsed model.

    Raises
    ------
    ModelError
        Bad syntax, unknown components, unreadable table files (the file named).
    """
    base = Path(base) if base is not None else Path.cwd()
    try:
        terms = split_product(expression)
    except UserError as exc:
        raise ModelError(exc.message, exc.where) from None
    tables: dict[str, TableData] = {}
    for term in terms:
        if term.name in ("atable", "mtable") and term.arg and term.arg not in tables:
            path = Path(term.arg).expanduser()
            tables[term.arg] = read_table(path if path.is_absolute() else base / path)
    return parse_model(expression, tables)
