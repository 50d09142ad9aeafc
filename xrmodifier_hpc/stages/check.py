"""``xrmodifier check``: validate a config and everything it points to, before any long job.

Reads the config, both telescopes' responses and the source model, and checks that the
fitted band reaches channels of both; returns what the config describes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import Grid
from xrmodifier_hpc.io.ogip import Instrument
from xrmodifier_hpc.physics.spectra import parse_model


def check(config: str | Path) -> dict[str, Any]:
    """Validate ``config`` and its files (UserError naming the file/key on any problem);
    return a JSON-ready summary: grid axes and size, instruments, model, workdir."""
    cfg = load_config(config)
    grid = Grid.from_config(cfg)
    model = parse_model(cfg.source.model, base=cfg.path.parent)
    instruments = {}
    for role in ("reference", "target"):
        inst_cfg = getattr(cfg.instruments, role)
        inst = Instrument.load(inst_cfg.arf, inst_cfg.rmf)
        noticed = inst.band_mask(*cfg.simulation.band)
        instruments[role] = {
            "arf": str(inst_cfg.arf) if inst_cfg.arf else None,
            "rmf": str(inst_cfg.rmf),
            "energy_bins": inst.n_energies,
            "channels": inst.n_channels,
            "channels_in_band": int(noticed.sum()),
            "peak_area_cm2": round(float(inst.area.max()), 3),
            "exposure_s": inst_cfg.exposure,
        }
    return {
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
    }
