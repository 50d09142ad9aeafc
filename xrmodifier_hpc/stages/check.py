"""``xrmodifier check``: validate a config and everything it points to, before any long job.

Reads the config, both telescopes' responses and the source model, and checks that the
fitted band reaches channels of both and that the model gives photons in it. With the
native backend the model is parsed here (table files read); with ``backend = "xspec"`` XSPEC
itself is asked, where PyXspec imports (inside the container), whether it accepts the
expression and the parameter names, and whether the model gives photons in the band (a
model whose data files are missing evaluates to zero in XSPEC); elsewhere the summary says
that XSPEC did not check it. Returns what the config describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from xrmodifier_hpc.config import Config, load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.errors import ConfigError
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.io.tables import load_model
from xrmodifier_hpc.physics.spectra import ModelError


def check(config: str | Path) -> dict[str, Any]:
    """Validate a config and the files it names.

    Parameters
    ----------
    config : str or Path
        The TOML config.

    Returns
    -------
    dict
        JSON-ready: grid axes and size, instruments (bins, channels, where the area comes
        from), model, workdir, ``derived_defaults`` (defaults set from written values) and
        ``warnings``. ``model_check``: one line saying who checked the model.

    Raises
    ------
    UserError
        Naming the file/key on any problem: config, responses, an unknown model component
        or parameter, a model without photons in the band, XSPEC refusing the expression.
    """
    cfg = load_config(config)
    grid = Grid.from_config(cfg)
    instruments = {}
    warnings: list[str] = []
    loaded = {}
    for role in ("reference", "target"):
        inst_cfg = getattr(cfg.instruments, role)
        inst = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
        loaded[role] = inst
        noticed = inst.band_mask(*cfg.simulation.band)
        if inst.area_in_matrix:
            area = "in the matrix" + (" and the ARF (twice, allowed)" if inst_cfg.arf else "")
        else:
            area = "ARF" if inst_cfg.arf else "1 cm^2 (no ARF)"
        instruments[role] = {
            "arf": str(inst_cfg.arf) if inst_cfg.arf else None,
            "rmf": str(inst_cfg.rmf),
            "energy_bins": inst.n_energies,
            "channels": inst.n_channels,
            "channels_in_band": int(noticed.sum()),
            "effective_area": area,
            "peak_area_cm2": round(float(inst.area.max()), 3),
            "exposure_s": inst_cfg.exposure,
        }
        warnings += [f"instruments.{role}: {w}" for w in inst.warnings]
    if cfg.simulation.backend == "xspec":
        expression, model_check = _check_with_xspec(cfg)
    else:
        expression, model_check = _check_native(cfg, loaded["target"], grid)
    out = {
        "config": str(cfg.path),
        "model": expression,
        "model_check": model_check,
        "modifier": cfg.modifier.family,
        "parameters": {
            n: [float(a.min()), float(a.max()), int(a.size)]
            for n, a in zip(grid.param_names, grid.param_axes)
        },
        "t_true": [
            float(grid.t_true_axis.min()),
            float(grid.t_true_axis.max()),
            int(grid.t_true_axis.size),
        ],
        "grid_points": grid.n_points,
        "realisations": cfg.simulation.realisations,
        "backend": cfg.simulation.backend,
        "instruments": instruments,
        "workdir": str(cfg.workdir),
        "error_level": cfg.inversion.error_level
        if cfg.inversion.error_level is not None
        else "as each observations file declares, else 0.683 (1 sigma)",
    }
    if cfg.derived:
        out["derived_defaults"] = cfg.derived
    if warnings:
        out["warnings"] = warnings
    return out


def _where(cfg: Config, key: str | None) -> str:
    return f"{cfg.path} {key or '[source.model]'}"


def _check_native(cfg: Config, target: Instrument, grid: Grid) -> tuple[str, str]:
    """Parse the model (tables read) and check [source] against it.

    Also check that it gives photons in the band at the lowest and highest true temperature.
    """
    try:
        model = load_model(cfg.source.model, base=cfg.path.parent)
        model.check_source(cfg.source.temperature, cfg.source.params)
    except ModelError as exc:
        where = exc.where if exc.where and exc.where.startswith("[") else None
        message = exc.message if where or not exc.where else str(exc)
        raise ConfigError(message, _where(cfg, where)) from None
    params = {k: v for k, v in cfg.source.params.items() if k != cfg.source.temperature}
    temps = np.array([grid.t_true_axis.min(), grid.t_true_axis.max()])
    lo, hi = cfg.simulation.band
    in_band = (target.energ_hi > lo) & (target.energ_lo < hi)
    try:
        flux = model.photon_flux(
            target.energ_lo, target.energ_hi, temps, params, cfg.source.temperature
        )
    except ModelError as exc:
        raise ConfigError(str(exc), _where(cfg, "[temperatures.t_true]")) from None
    band_flux = flux[:, in_band].sum(axis=1)
    if not np.all(band_flux > 0):
        bad = temps[~(band_flux > 0)][0]
        raise ConfigError(
            f"model {model.expression!r} gives no photons in {lo:g}-{hi:g} keV at "
            f"{cfg.source.temperature} = {bad:g} keV",
            _where(cfg, None),
        )
    return model.expression, "native: components, parameters and band flux checked"


def _check_with_xspec(cfg: Config) -> tuple[str, str]:
    """Ask XSPEC (where PyXspec imports) to build the model; one line either way."""
    from xrmodifier_hpc.backends.xspec import pyxspec_available, validate_model

    if not pyxspec_available():
        return (
            cfg.source.model,
            "xspec: not checked here (PyXspec does not import); run `xrmodifier check` "
            "inside the container to have XSPEC check the expression and parameter names",
        )
    return cfg.source.model, validate_model(cfg)
