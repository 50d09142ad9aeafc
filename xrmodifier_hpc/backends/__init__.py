"""Backends: the one interface to simulate-and-fit, with a native and a PyXspec family.

``make_backend`` is the only place that chooses one, by name through
``registry.BACKENDS``; the xspec module is imported only when chosen, so nothing else needs
HEASoft.
"""

from __future__ import annotations

from xrmodifier_hpc.backends.base import Backend, PointResults, SimulationSettings
from xrmodifier_hpc.config import Config
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.registry import BACKENDS

__all__ = ["Backend", "PointResults", "SimulationSettings", "make_backend"]


def make_backend(
    cfg: Config, role: str = "target", name: str | None = None, **overrides
) -> Backend:
    """Build the configured backend for one instrument.

    Parameters
    ----------
    cfg : Config
        The validated config.
    role : str
        ``"target"`` or ``"reference"``: whose response the backend simulates through.
    name : str, optional
        A backend of ``registry.BACKENDS`` instead of ``[simulation] backend``.
    **overrides
        Simulation settings to replace (e.g. ``mode="asimov"``, ``realisations=1``).

    Returns
    -------
    Backend
        Ready to ``run``; close it (or use it as a context manager) when done.

    Raises
    ------
    UserError
        An unknown backend name, a backend that cannot start here (PyXspec outside the
        container: one line saying where it runs), or what the backend refuses in the config.
    """
    name = name or cfg.simulation.backend
    if name not in BACKENDS:
        raise UserError(BACKENDS.suggest(name), f"{cfg.path} [simulation.backend]")
    cls = BACKENDS.get(name)
    try:
        return cls.from_config(cfg, role, **overrides)
    except ImportError as exc:
        raise UserError(
            f"backend {name!r} needs {cls.requires}, which does not import here ({exc}); "
            f'{cls.where_available} or use backend = "native"'
        ) from None
