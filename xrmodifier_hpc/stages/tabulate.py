"""``xrmodifier tabulate``: XSPEC physics for the native backend, as XSPEC table models.

Run once where XSPEC is (inside the container), it evaluates any XSPEC model over a grid of
its parameters on a fine energy grid and writes an XSPEC table model (OGIP/92-009, through
``io.tables.write_table``): an additive table (``atable``) when the model has a ``norm``
parameter, a multiplicative one (``mtable``) otherwise. The native backend then simulates
and fits ``mtable{tbabs.fits}*atable{apec.fits}`` anywhere, at native speed; XSPEC reads the
same files (``tbabs*atable{apec.fits}`` in XSPEC itself).

    xrmodifier tabulate apec -o apec.fits --grid kT=log:0.5:20:60 --grid Abundanc=lin:0.1:1:10
    xrmodifier tabulate tbabs -o tbabs.fits --grid nH=log:0.001:5:60

Grid axes: ``log:LOW:HIGH:N`` (interpolated in log, XSPEC's METHOD 1), ``lin:LOW:HIGH:N`` or
``V1,V2,...`` (linear); parameters not on the grid keep XSPEC's defaults unless ``--set``.
Every written file records how it was made (XSPEC version, abundance and cross-section
tables, the expression, the fixed parameters). Under ``mpirun``/``srun`` the ranks share the
spectra and rank 0 writes the file. ``--backend native`` tabulates a native component
(``bremss``, ``wabs``) the same way, without XSPEC.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config.expression import ExpressionError, split_product
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.tables import write_table
from xrmodifier_hpc.physics.spectra import TableData
from xrmodifier_hpc.runtime import mpi
from xrmodifier_hpc.runtime.environment import detect
from xrmodifier_hpc.runtime.progress import Progress

log = logging.getLogger("xrmodifier.tabulate")

#: default energy grid of the tables (keV): covers every response of ../shared/realdata
DEFAULT_ENERGIES = "log:0.05:50:5000"


@dataclass(frozen=True)
class GridAxis:
    """One tabulated parameter.

    Parameters
    ----------
    name : str
        XSPEC's parameter name (``kT``), or ``component.name`` where several components share
        it; the table uses the part after the dot.
    values : ndarray
        Increasing values (the parameter's units: keV for kT).
    log : bool
        Interpolate in log10 of the value (METHOD = 1).
    """

    name: str
    values: np.ndarray
    log: bool

    @property
    def table_name(self) -> str:
        """The name in the table: the part after the last dot of :attr:`name`."""
        return self.name.rpartition(".")[2]


@dataclass(frozen=True)
class Energies:
    """The energy grid: ``n`` bins from ``low`` to ``high`` keV, log- or linearly spaced.

    Attributes
    ----------
    low, high : float
        Lower edge of the first bin and upper edge of the last (keV).
    n : int
        Number of bins.
    log : bool
        Log spacing (else linear).
    """

    low: float
    high: float
    n: int
    log: bool

    @property
    def xspec(self) -> str:
        """XSPEC's ``energies`` specification (``AllModels.setEnergies``)."""
        return f"{self.low!r} {self.high!r} {self.n} {'log' if self.log else 'lin'}"

    @property
    def edges(self) -> np.ndarray:
        """The n + 1 bin edges (keV)."""
        if self.log:
            return np.geomspace(self.low, self.high, self.n + 1)
        return np.linspace(self.low, self.high, self.n + 1)


def _numbers(text: str, what: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UserError(f"{what}: expected numbers, got {text!r}") from None
    if not values or not all(math.isfinite(v) for v in values):
        raise UserError(f"{what}: expected finite numbers, got {text!r}")
    return values


def parse_grid_axis(item: str) -> GridAxis:
    """Parse ``NAME=log:LOW:HIGH:N``, ``NAME=lin:LOW:HIGH:N`` or ``NAME=V1,V2,...``.

    Parameters
    ----------
    item : str
        One ``--grid`` option value.

    Returns
    -------
    GridAxis
        The axis; ``log`` spacing is interpolated in log (METHOD 1), the others linearly.

    Raises
    ------
    UserError
        Malformed text, fewer than 2 values, values not increasing, log with values <= 0.
    """
    name, sep, spec = item.partition("=")
    name, spec = name.strip(), spec.strip()
    where = f"--grid {item}"
    if not sep or not name or not spec:
        raise UserError("takes NAME=log:LOW:HIGH:N, NAME=lin:LOW:HIGH:N or NAME=V1,V2,...", where)
    kind, _, rest = spec.partition(":")
    if kind in ("log", "lin"):
        parts = rest.split(":")
        if len(parts) != 3:
            raise UserError(f"{kind} takes LOW:HIGH:N", where)
        low, high = _numbers(parts[0], where)[0], _numbers(parts[1], where)[0]
        n = _numbers(parts[2], where)[0]
        if n != int(n) or n < 2:
            raise UserError("N must be an integer >= 2", where)
        if kind == "log":
            if low <= 0:
                raise UserError("log spacing needs LOW > 0", where)
            values = np.geomspace(low, high, int(n))
        else:
            values = np.linspace(low, high, int(n))
        log_interp = kind == "log"
    else:
        values = np.asarray(_numbers(spec, where))
        log_interp = False
    if values.size < 2 or np.any(np.diff(values) <= 0):
        raise UserError("give at least 2 increasing values", where)
    return GridAxis(name, values, log_interp)


def parse_energies(text: str) -> Energies:
    """Parse ``log:LOW:HIGH:N`` or ``lin:LOW:HIGH:N`` (keV) into :class:`Energies`.

    Parameters
    ----------
    text : str
        The ``--energies`` option value.

    Returns
    -------
    Energies
        ``N`` bins from ``LOW`` to ``HIGH`` keV.

    Raises
    ------
    UserError
        Malformed text, or not ``0 < LOW < HIGH`` with an integer ``N >= 2`` (names
        ``--energies``).
    """
    where = f"--energies {text}"
    kind, _, rest = text.strip().partition(":")
    parts = rest.split(":")
    if kind not in ("log", "lin") or len(parts) != 3:
        raise UserError("takes log:LOW:HIGH:N or lin:LOW:HIGH:N (keV)", where)
    low, high = _numbers(parts[0], where)[0], _numbers(parts[1], where)[0]
    n = _numbers(parts[2], where)[0]
    if not 0 < low < high or n != int(n) or n < 2:
        raise UserError("need 0 < LOW < HIGH and an integer N >= 2", where)
    return Energies(low, high, int(n), kind == "log")


def parse_fixed(items: Sequence[str] | None) -> dict[str, float]:
    """Parse the ``--set`` values: ``["Redshift=0", ...]`` -> ``{"Redshift": 0.0}``.

    Parameters
    ----------
    items : sequence of str or None
        ``NAME=NUMBER`` strings; None for none.

    Returns
    -------
    dict of str to float
        Values by parameter name (a later repeat wins).

    Raises
    ------
    UserError
        An item is not ``NAME=NUMBER`` with a finite number.
    """
    out: dict[str, float] = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if not sep or not name.strip() or not math.isfinite(number):
            raise UserError(f"--set takes NAME=NUMBER, got {item!r}")
        out[name.strip()] = number
    return out


@dataclass
class TabulateSummary:
    """What ``tabulate`` wrote.

    Attributes
    ----------
    path : Path
        The table-model file.
    kind : str
        ``"atable"`` (additive) or ``"mtable"`` (multiplicative).
    n_spectra : int
        Number of tabulated spectra (grid points).
    n_energies : int
        Energy bins per spectrum.
    parameters : list of str
        One ``"NAME LOW-HIGH (N)"`` per grid axis.
    seconds : float
        Wall time of the run (s).
    evaluator : str
        What computed the spectra (XSPEC's version, or the native component).
    """

    path: Path
    kind: str
    n_spectra: int
    n_energies: int
    parameters: list[str]
    seconds: float
    evaluator: str

    def describe(self) -> str:
        """Return one line for the terminal: the file, its size and how to use it.

        Returns
        -------
        str
            Ends with ``use it as atable{NAME.fits}`` (or ``mtable``).
        """
        return (
            f"{self.path}: {self.kind} with {self.n_spectra} spectra of {self.n_energies} "
            f"energy bins over {', '.join(self.parameters)} ({self.evaluator}, "
            f"{self.seconds:.1f} s); use it as {self.kind}{{{self.path.name}}}"
        )


class _NativeEvaluator:
    """One native component (``bremss``, ``wabs``) on the energy grid.

    What ``--backend native`` tabulates (no XSPEC needed).
    """

    def __init__(self, expression: str, edges: np.ndarray, fixed: Mapping[str, float]) -> None:
        from xrmodifier_hpc.registry import SOURCE_COMPONENTS

        try:
            terms = split_product(expression)
        except ExpressionError as exc:
            raise UserError(exc.message) from None
        if len(terms) != 1 or terms[0].name not in SOURCE_COMPONENTS:
            raise UserError(
                f"--backend native tabulates one native component ({', '.join(SOURCE_COMPONENTS)}"
                f"), not {expression!r}"
            )
        term = terms[0]
        cls = SOURCE_COMPONENTS.get(term.name)
        if getattr(cls, "is_table", False):
            raise UserError("a table model is already a table")
        self.component = cls(term.arg) if term.arg is not None else cls()
        self.additive = bool(self.component.additive)
        self.edges = edges
        self.fixed = dict(fixed)
        self.version = f"native {self.component.describe()}"
        self.abund, self.xsect = "", ""
        for name in self.fixed:
            self.check_name(name)

    def check_name(self, name: str) -> None:
        if name not in self.component.param_names:
            raise UserError(
                f"{self.component.describe()} has no parameter {name!r}; its parameters: "
                f"{', '.join(self.component.param_names)}"
            )

    def spectrum(self, values: Mapping[str, float]) -> np.ndarray:
        merged = {**self.fixed, **values}
        missing = [p for p in self.component.param_names if p not in merged]
        if missing:
            raise UserError(f"give a grid or --set value for {', '.join(missing)}")
        arrays = {k: np.array([float(v)]) for k, v in merged.items()}
        return self.component.evaluate(self.edges[:-1], self.edges[1:], arrays)[0]

    def close(self) -> None:
        pass


def _log_path(output: Path, rank: int) -> Path:
    return output.parent / "logs" / f"tabulate-{output.stem}-xspec-rank{rank}.log"


def _table_name(expression: str, name: str | None) -> str:
    if name:
        return name
    words = re.findall(r"[A-Za-z][A-Za-z0-9_]*", expression)
    words = [w for w in words if w not in ("atable", "mtable", "etable")] or ["table"]
    return "_".join(words)[:12].ljust(2, "_")


def tabulate(
    model: str,
    output: str | Path,
    grid: Sequence[GridAxis],
    *,
    fixed: Mapping[str, float] | None = None,
    energies: Energies | None = None,
    backend: str = "xspec",
    abund: str = "angr",
    xsect: str = "vern",
    name: str | None = None,
    redshift: bool = False,
    overwrite: bool = False,
) -> TabulateSummary | None:
    """Tabulate ``model`` over ``grid`` into the table-model file ``output``.

    Parameters
    ----------
    model : str
        An XSPEC model expression (``apec``, ``tbabs``, ``vapec``...); with ``backend =
        "native"`` one native component.
    output : str or Path
        The FITS file to write (rank 0 writes it).
    grid : sequence of GridAxis
        The interpolated parameters, in table order (the last varies fastest).
    fixed : mapping of str to float, optional
        Parameters held at a value (XSPEC's names).
    energies : Energies, optional
        The energy grid (keV); default :data:`DEFAULT_ENERGIES`.
    backend : str
        ``"xspec"`` (PyXspec: inside the container) or ``"native"``.
    abund, xsect : str
        XSPEC's abundance and photoelectric cross-section tables (recorded in the file).
    name : str, optional
        MODLNAME (default: from the expression, at most 12 characters).
    redshift : bool
        Let XSPEC (and the native backend) add a redshift parameter ``z`` to the table.
    overwrite : bool
        Replace an existing ``output``.

    Returns
    -------
    TabulateSummary or None
        What was written (None on ranks other than 0).

    Raises
    ------
    UserError
        Bad options, an existing output, XSPEC refusing the model or a value, PyXspec not
        importable (for ``backend = "xspec"``).
    """
    output = Path(output).resolve()
    energies = energies or parse_energies(DEFAULT_ENERGIES)
    fixed = dict(fixed or {})
    if not grid:
        raise UserError("give at least one --grid NAME=...")
    names = [a.table_name for a in grid]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise UserError(f"a parameter is on the grid twice: {', '.join(dup)}")
    both = sorted(set(a.name for a in grid) & set(fixed))
    if both:
        raise UserError(f"{', '.join(both)} is both on the grid and --set")
    if output.exists() and not overwrite:
        raise UserError("exists; give --overwrite to replace it", str(output))
    if backend not in ("xspec", "native"):
        raise UserError(f"--backend is xspec or native, not {backend!r}")
    t0 = time.monotonic()
    env = detect()
    comm = mpi.world_comm(env)
    with mpi.fail_fast(comm):
        evaluator = mpi.agree(
            comm,
            lambda: _evaluator(model, energies, fixed, backend, abund, xsect, output, env.rank),
        )
        try:
            for axis in grid:
                if isinstance(evaluator, _NativeEvaluator):
                    evaluator.check_name(axis.name)
            shape = tuple(a.values.size for a in grid)
            points = np.stack(np.meshgrid(*[a.values for a in grid], indexing="ij"), -1)
            points = points.reshape(-1, len(grid))
            mine = np.arange(env.rank, points.shape[0], max(env.size, 1))
            edges = evaluator.edges
            rows = np.zeros((points.shape[0], edges.size - 1))
            progress = (
                Progress(points.shape[0], interactive=env.interactive, label="tabulate")
                if env.rank == 0
                else None
            )
            for k in mine:
                rows[k] = evaluator.spectrum({a.name: float(v) for a, v in zip(grid, points[k])})
                if progress is not None:
                    progress.update(max(env.size, 1) if env.size > 1 else 1)
            if progress is not None:
                progress.close()
            if comm is not None:
                rows = comm.reduce(rows, root=0)
            info = {
                "additive": evaluator.additive,
                "version": evaluator.version,
                "abund": evaluator.abund,
                "xsect": evaluator.xsect,
            }
        finally:
            evaluator.close()
        if env.rank != 0:
            mpi.wait_politely(comm)
            return None
        data = TableData(
            name=_table_name(model, name),
            additive=bool(info["additive"]),
            int_names=tuple(names),
            int_log=tuple(a.log for a in grid),
            axes=tuple(np.asarray(a.values, dtype=np.float64) for a in grid),
            e_lo=edges[:-1].copy(),
            e_hi=edges[1:].copy(),
            spectra=rows.reshape(1, *shape, edges.size - 1),
            redshift=redshift,
            source=str(output),
        )
        units = {a.table_name: "keV" for a in grid if a.table_name == "kT"}
        write_table(
            output,
            data,
            units=units,
            provenance=_provenance(model, backend, info, fixed, energies),
            overwrite=overwrite,
        )
        mpi.wait_politely(comm)
    kind = "atable" if data.additive else "mtable"
    return TabulateSummary(
        output,
        kind,
        int(np.prod(shape)),
        edges.size - 1,
        [f"{a.table_name} {a.values[0]:g}-{a.values[-1]:g} ({a.values.size})" for a in grid],
        time.monotonic() - t0,
        str(info["version"]),
    )


def _evaluator(
    model: str,
    energies: Energies,
    fixed: Mapping[str, float],
    backend: str,
    abund: str,
    xsect: str,
    output: Path,
    rank: int,
) -> Any:
    if backend == "native":
        return _NativeEvaluator(model, energies.edges, fixed)
    from xrmodifier_hpc.backends.xspec import XspecTabulator, pyxspec_available

    if not pyxspec_available():
        raise UserError(
            "tabulating an XSPEC model needs PyXspec, which does not import here: run "
            "`xrmodifier tabulate` inside the container (apptainer exec xrmodifier.sif ...)"
        )
    return XspecTabulator(
        model,
        energies.xspec,
        fixed,
        abund=abund,
        xsect=xsect,
        log_path=_log_path(output, rank),
        base=Path.cwd(),
    )


def _provenance(
    model: str,
    backend: str,
    info: Mapping[str, Any],
    fixed: Mapping[str, float],
    energies: Energies,
) -> dict[str, tuple[Any, str]]:
    prov: dict[str, tuple[Any, str]] = {
        "XRMSTAGE": ("tabulate", "xrmodifier stage that wrote this file"),
        "TABEXPR": (model, "the tabulated model expression"),
        "TABBACK": (backend, "what evaluated it"),
        "XSPECVER": (str(info["version"]), "model evaluator version"),
    }
    if info.get("abund"):
        prov["ABUND"] = (str(info["abund"]), "XSPEC abundance table (xset abund)")
    if info.get("xsect"):
        prov["XSECT"] = (str(info["xsect"]), "XSPEC photoionisation cross-sections")
    prov["TABEGRID"] = (energies.xspec, "energy grid: low high n spacing (keV)")
    for k, (key, value) in enumerate(sorted(fixed.items()), start=1):
        prov[f"FIXPN{k}"] = (key, f"fixed parameter {k} name")
        prov[f"FIXPV{k}"] = (float(value), f"fixed parameter {k} value")
    return prov
