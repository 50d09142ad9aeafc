"""``xrmodifier check``: validate a config and everything it points to, before any long job.

Reads the config, both telescopes' responses and the source model, and checks that the
fitted band reaches channels of both; returns what the config describes, the defaults it
derived from what was written, and warnings (e.g. an RMF used without an ARF).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.physics.spectra import parse_model


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
        ``warnings``.

    Raises
    ------
    UserError
        Naming the file and key of the first problem.
    """
    cfg = load_config(config)
    grid = Grid.from_config(cfg)
    model = parse_model(cfg.source.model, base=cfg.path.parent)
    instruments = {}
    warnings: list[str] = []
    for role in ("reference", "target"):
        inst_cfg = getattr(cfg.instruments, role)
        inst = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
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
    out = {
        "config": str(cfg.path),
        "model": model.expression,
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
