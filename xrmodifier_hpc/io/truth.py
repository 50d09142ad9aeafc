"""``OBS.truth.json``: what ``mock`` injected (:class:`MockTruth`).

``mock`` writes it beside the observations it simulated (``io.artefacts.truth_path_for``);
``report`` marks theta_true from it, and injection tests compare the inversion with it. Real
observations have none.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from xrmodifier_hpc.io.artefacts import Record, truth_path_for
from xrmodifier_hpc.io.result import ModifierSpec, Part, build_fields


@dataclass(frozen=True)
class TruthSource(Part):
    """One mock source as simulated.

    Attributes
    ----------
    name : str
        Source name (as in the observations file).
    t_true : float
        True temperature (keV).
    counts : float
        Requested telescope-1 counts in the fitted band through the original target response.
    norm : float
        The model normalisation that gives them (the source's flux, seen by both telescopes).
    counts_t1, counts_t0 : float
        Counts simulated in the fitted band by telescope 1 (through the true response) and
        telescope 0.
    """

    name: str
    t_true: float
    counts: float
    norm: float
    counts_t1: float
    counts_t0: float


@dataclass(frozen=True)
class MockTruth(Record):
    """The truth behind a mock observations file.

    Attributes
    ----------
    provenance : dict
        :func:`xrmodifier_hpc.io.artefacts.provenance` (stage ``mock``).
    config : str
        The config file used.
    observations : str
        File name of the observations table it belongs to (beside it).
    modifier : ModifierSpec
        The modifier family of theta_true.
    param_names : tuple of str
        The family's parameters, in order.
    theta_true : dict of str to float
        The injected correction (parameter units).
    seed : int
        The mock's seed.
    n_requested : int
        Sources simulated (before dropping failed fits).
    dropped : tuple of str
        Names of the sources dropped (failed fits or outside the grid).
    sources : tuple of TruthSource
        The kept sources, in the observations file's order.
    """

    SCHEMA: ClassVar[str] = "xrmodifier.mock_truth"
    VERSION: ClassVar[int] = 1
    NESTED: ClassVar[dict[str, tuple[str, type[Part]]]] = {
        "modifier": ("one", ModifierSpec),
        "sources": ("list", TruthSource),
    }

    provenance: dict[str, Any]
    config: str
    observations: str
    modifier: ModifierSpec
    param_names: tuple[str, ...]
    theta_true: dict[str, float]
    seed: int
    n_requested: int
    dropped: tuple[str, ...]
    sources: tuple[TruthSource, ...]

    @classmethod
    def _build(cls, fields: dict[str, Any]) -> MockTruth:
        return cls(**build_fields(cls, fields, cls.SCHEMA))

    @classmethod
    def for_observations(cls, observations: str | Path) -> MockTruth:
        """Read the truth sidecar of an observations file.

        Parameters
        ----------
        observations : str or Path
            The observations table (``OBS.csv``); the sidecar is ``OBS.truth.json``.

        Returns
        -------
        MockTruth

        Raises
        ------
        UserError
            When the sidecar is missing or not a mock truth record.
        """
        return cls.read(truth_path_for(Path(observations)))

    def theta_vector(self, names: Sequence[str] | None = None) -> np.ndarray:
        """theta_true as a vector.

        Parameters
        ----------
        names : sequence of str, optional
            Parameter order (default :attr:`param_names`).

        Returns
        -------
        ndarray, shape (d,)
            float64, parameter units.

        Raises
        ------
        KeyError
            When a name is not one of the truth's parameters.
        """
        order = self.param_names if names is None else names
        return np.array([self.theta_true[n] for n in order], dtype=np.float64)
