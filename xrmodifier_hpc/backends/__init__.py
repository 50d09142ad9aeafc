"""Backends: the one interface to simulate-and-fit, with a native and a PyXspec family.

``make_backend`` is the only place that chooses one; the xspec module is imported only when
chosen, so nothing else needs HEASoft.
"""

from __future__ import annotations

from xrmodifier_hpc.backends.base import Backend, PointResults, SimulationSettings
from xrmodifier_hpc.config import Config
from xrmodifier_hpc.errors import UserError

__all__ = ["Backend", "PointResults", "SimulationSettings", "make_backend"]


def make_backend(
    cfg: Config, role: str = "target", name: str | None = None, **overrides
) -> Backend:
    """Build the configured backend for instrument ``role`` ("target" or "reference").

    ``overrides`` replace simulation settings (e.g. ``mode="asimov"``, ``realisations=1``).
    """
    from xrmodifier_hpc.io.ogip import Instrument
    from xrmodifier_hpc.physics.modifiers import get_modifier
    from xrmodifier_hpc.physics.spectra import parse_model

    name = name or cfg.simulation.backend
    inst_cfg = getattr(cfg.instruments, role)
    instrument = Instrument.load(inst_cfg.arf, inst_cfg.rmf, inst_cfg.allow_double_area)
    model = parse_model(cfg.source.model, base=cfg.path.parent)
    modifier = get_modifier(cfg.modifier.family, cfg.modifier.options)
    settings = SimulationSettings.from_config(cfg, role, **overrides)
    if name == "native":
        from xrmodifier_hpc.backends.native import NativeBackend

        return NativeBackend(instrument, model, modifier, settings)
    if name == "xspec":
        try:
            from xrmodifier_hpc.backends.xspec import XspecBackend

            # PyXspec itself is imported by the constructor, once the per-process scratch
            # folder (HOME, PFILES) that XSPEC reads at start-up is in place
            return XspecBackend(instrument, model, modifier, settings, cfg=cfg, role=role)
        except ImportError as exc:
            raise UserError(
                f"backend 'xspec' needs PyXspec, which does not import here ({exc}); run inside "
                'the container (apptainer exec xrmodifier.sif ...) or use backend = "native"'
            ) from None
    raise UserError(f"unknown backend {name!r}: use 'native' or 'xspec'")
