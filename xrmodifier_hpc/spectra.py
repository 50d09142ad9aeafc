"""PROVISIONAL placeholder so the foundation imports; the native-backend work replaces it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UserError


class ModelError(UserError):
    pass


@dataclass(frozen=True)
class Model:
    expression: str
    param_names: tuple[str, ...]

    def check_params(self, params: dict) -> None:
        if params.get("nH", 0) < 0:
            raise ModelError("nH must be >= 0")

    def photon_flux(self, e_lo, e_hi, temperature, params):
        e = 0.5 * (np.asarray(e_lo) + np.asarray(e_hi))
        t = np.atleast_1d(np.asarray(temperature, dtype=float))[:, None]
        return (np.exp(-e / t) / e / np.sqrt(t)) * (np.asarray(e_hi) - np.asarray(e_lo))


def parse_model(expression: str, base: Path | None = None) -> Model:
    names = {"wabs": ("nH",), "bremss": ("kT",)}
    parts = expression.split("*")
    pn = []
    for p in parts:
        if p not in names:
            raise ModelError(f"unknown model component {p!r}")
        pn.extend(names[p])
    return Model(expression, tuple(pn))
