"""Where every artefact lives, one provenance record for all of them, and the typed-record base.

:class:`Workdir` is the one place that spells artefact file names: stages ask it for paths
(``Workdir(cfg.workdir).grid``) instead of joining strings. :func:`provenance` is the one
builder of the provenance every artefact carries (package version, creation time in one
format, host, and what the caller adds). :class:`Record` is the base of the typed JSON
artefacts (``InversionResult``, ``EmulatorMetrics``, ``MockTruth``): a frozen dataclass with a
schema version and a JSON round-trip.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from xrmodifier_hpc import __version__
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import write_text

#: the one time format of every artefact (ISO 8601, UTC, seconds)
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"

R = TypeVar("R", bound="Record")


@dataclass(frozen=True)
class Workdir:
    """Every artefact path under ``[paths] workdir``.

    Parameters
    ----------
    root : Path
        The work folder (``Config.workdir``).
    """

    root: Path

    @property
    def grid(self) -> Path:
        """``grid.h5``: the simulated grid (and the off-grid check points)."""
        return self.root / "grid.h5"

    def shard(self, index: int, count: int) -> Path:
        """Return the file of shard ``index`` of ``count`` (Slurm arrays, ``--shards``).

        Parameters
        ----------
        index : int
            The shard's number, from 0.
        count : int
            Number of shards.

        Returns
        -------
        Path
            ``shards/grid-shard-IIII-of-CCCC.h5`` under the work folder.
        """
        return self.root / "shards" / f"grid-shard-{index:04d}-of-{count:04d}.h5"

    @property
    def emulator(self) -> Path:
        """``emulator.pt``: weights, normalisation, metrics."""
        return self.root / "emulator.pt"

    @property
    def emulator_metrics(self) -> Path:
        """``emulator_metrics.json``: :class:`EmulatorMetrics`."""
        return self.root / "emulator_metrics.json"

    @property
    def emulator_checkpoint(self) -> Path:
        """The training checkpoint that ``train`` resumes from."""
        return self.root / "emulator_checkpoint.pt"

    @property
    def observations(self) -> Path:
        """Default output of ``mock``."""
        return self.root / "observations.csv"

    @property
    def result(self) -> Path:
        """``result.json``: :class:`InversionResult`."""
        return self.root / "result.json"

    @property
    def posterior(self) -> Path:
        """``posterior.npz``: the MCMC chains."""
        return self.root / "posterior.npz"

    @property
    def corrected_arf(self) -> Path:
        """``corrected.arf``: target ARF times the pointwise posterior median of m(E)."""
        return self.root / "corrected.arf"

    def corrected_arf_stat(self, stat: str) -> Path:
        """Return ``corrected_<stat>.arf`` (``p16``, ``p84``); ``median`` is :attr:`corrected_arf`.

        Parameters
        ----------
        stat : str
            ``"median"``, ``"p16"`` or ``"p84"``: the pointwise posterior statistic of m(E).

        Returns
        -------
        Path
            The corrected ARF's path under the work folder.
        """
        return self.corrected_arf if stat == "median" else self.root / f"corrected_{stat}.arf"

    @property
    def corrected_ensemble(self) -> Path:
        """``corrected_ensemble.fits``: N posterior draws of the corrected ARF."""
        return self.root / "corrected_ensemble.fits"

    @property
    def figures(self) -> Path:
        """``figures/``: the report's figures and ``summary.txt``."""
        return self.root / "figures"

    @property
    def logs(self) -> Path:
        """``logs/``: per-stage logs (XSPEC chatter and the like)."""
        return self.root / "logs"


def truth_path_for(observations: Path) -> Path:
    """Return the ``MockTruth`` file beside a mock observation table: ``OBS.truth.json``.

    Parameters
    ----------
    observations : Path
        The observation table (``OBS.csv``).

    Returns
    -------
    Path
        ``OBS.truth.json`` in the same folder.
    """
    return observations.with_name(observations.stem + ".truth.json")


def utc_now() -> str:
    """Return the current UTC time in :data:`TIME_FORMAT`.

    Returns
    -------
    str
        ``YYYY-MM-DDTHH:MM:SSZ``.
    """
    return _dt.datetime.now(_dt.timezone.utc).strftime(TIME_FORMAT)


def provenance(**extra: Any) -> dict[str, Any]:
    """Return the provenance every artefact carries.

    Parameters
    ----------
    **extra
        What the calling stage adds (``stage``, ``config``, ``backend``, ``seed``, ...).

    Returns
    -------
    dict
        ``package``, ``version``, ``created`` (UTC, :data:`TIME_FORMAT`), ``host``, then
        ``extra`` in the order given.
    """
    return {
        "package": "xrmodifier",
        "version": __version__,
        "created": utc_now(),
        "host": socket.gethostname(),
        **extra,
    }


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars and arrays to Python, non-finite floats to None."""
    if isinstance(value, Record) or hasattr(type(value), "to_dict"):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return _plain(value.tolist())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


@dataclass(frozen=True)
class Record:
    """Base of the typed JSON artefacts: a schema name and version, and a JSON round-trip.

    Subclasses are frozen dataclasses whose fields are JSON-ready values (numbers, strings,
    lists, dicts, nested dataclasses converted by their own ``from_dict``); they set
    ``SCHEMA`` (a name) and ``VERSION`` (an int, raised when a field changes meaning).

    Attributes
    ----------
    SCHEMA : str
        The record's name, written as ``schema``.
    VERSION : int
        Its schema version, written as ``schema_version``.
    """

    SCHEMA: ClassVar[str] = "record"
    VERSION: ClassVar[int] = 1

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict with ``schema`` and ``schema_version`` first.

        Returns
        -------
        dict of str to Any
            Numpy values as Python ones, non-finite floats as None, nested records as dicts.
        """
        body = {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}
        return {"schema": self.SCHEMA, "schema_version": self.VERSION, **body}

    def to_json(self) -> str:
        """Return the record as indented JSON text.

        Returns
        -------
        str
            :meth:`to_dict` as JSON (indent 2, strict: no NaN), ending with a newline.
        """
        return json.dumps(self.to_dict(), indent=2, allow_nan=False) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the record atomically to ``path``.

        Parameters
        ----------
        path : str or Path
            The JSON file; its folder is created.

        Returns
        -------
        Path
            ``path``.
        """
        return write_text(path, self.to_json())

    @classmethod
    def from_dict(cls: type[R], data: dict[str, Any], where: str = "") -> R:
        """Build the record from :meth:`to_dict`'s output.

        Parameters
        ----------
        data : dict of str to Any
            The dict, with ``schema`` and ``schema_version``; unknown keys are ignored.
        where : str, optional
            What the messages name (a file); default the schema name.

        Returns
        -------
        Record
            An instance of ``cls``.

        Raises
        ------
        UserError
            When the schema name or version differs, or fields are missing.
        """
        where = where or cls.SCHEMA
        if data.get("schema") != cls.SCHEMA:
            raise UserError(f"not a {cls.SCHEMA} record (schema = {data.get('schema')!r})", where)
        if data.get("schema_version") != cls.VERSION:
            raise UserError(
                f"{cls.SCHEMA} schema version {data.get('schema_version')} is not the "
                f"supported {cls.VERSION}: rerun the stage that writes it",
                where,
            )
        names = {f.name for f in dataclasses.fields(cls)}
        required = {
            f.name
            for f in dataclasses.fields(cls)
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        }
        missing = sorted(required - set(data))
        if missing:
            raise UserError(f"{cls.SCHEMA} record lacks {', '.join(missing)}", where)
        return cls._build({k: v for k, v in data.items() if k in names})

    @classmethod
    def _build(cls: type[R], fields: dict[str, Any]) -> R:
        """Build the record from its fields; subclasses convert nested records here."""
        return cls(**fields)

    @classmethod
    def read(cls: type[R], path: str | Path) -> R:
        """Read a record written by :meth:`write`.

        Parameters
        ----------
        path : str or Path
            The JSON file.

        Returns
        -------
        Record
            An instance of ``cls``.

        Raises
        ------
        UserError
            When the file is missing, not JSON, or not this record.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise UserError("file not found", str(path)) from None
        except (OSError, json.JSONDecodeError) as exc:
            raise UserError(f"cannot read it as JSON ({exc})", str(path)) from None
        if not isinstance(data, dict):
            raise UserError("expected a JSON object", str(path))
        return cls.from_dict(data, str(path))
