"""One plug-in style for every family of plug-ins.

The families: backends, modifier families, source-model components, inversion objectives and
emulator activations.

Each family is a :class:`Registry`: names mapped to ``"module:attribute"`` targets that are
imported only when a name is used (so the config can validate a backend name without
importing PyXspec, and lower layers never import higher ones). ``names()`` lists what the
config accepts; ``get(name)`` returns the class or function; ``suggest`` builds the one-line
error for an unknown name. A plug-in is added by one line in the family's table below, or at
run time with :meth:`Registry.add` (tests, third-party code).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Iterator
from typing import Any

from xrmodifier_hpc.errors import UserError


class Registry:
    """Named plug-ins of one family, resolved lazily.

    Parameters
    ----------
    kind : str
        What the family is called in messages (``"backend"``, ``"modifier family"``).
    targets : dict of str to str
        Name to ``"package.module:attribute"``.

    Attributes
    ----------
    kind : str
        The ``kind`` argument.
    """

    def __init__(self, kind: str, targets: dict[str, str]) -> None:
        self.kind = kind
        self._targets = dict(targets)
        self._loaded: dict[str, Any] = {}

    def names(self) -> tuple[str, ...]:
        """Return the registered names, in registration order.

        Returns
        -------
        tuple of str
            The names the config accepts.
        """
        return tuple(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def __len__(self) -> int:
        return len(self._targets)

    def add(self, name: str, target: str | Any) -> None:
        """Register ``name``: a ``"module:attribute"`` string or the object itself.

        An existing ``name`` is replaced.

        Parameters
        ----------
        name : str
            The plug-in's name.
        target : str or object
            ``"package.module:attribute"`` (imported on first use) or the class or function
            itself.
        """
        if isinstance(target, str):
            self._targets[name] = target
            self._loaded.pop(name, None)
        else:
            self._targets[name] = f"{target.__module__}:{target.__qualname__}"
            self._loaded[name] = target

    def suggest(self, name: str) -> str:
        """Return the message for an unknown ``name``: the closest name and every known one.

        Parameters
        ----------
        name : str
            The unknown name.

        Returns
        -------
        str
            ``unknown KIND 'name' (did you mean 'x'?); known: a, b, ...``.
        """
        close = difflib.get_close_matches(str(name), self.names(), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        return f"unknown {self.kind} {name!r}{hint}; known: {', '.join(self.names())}"

    def get(self, name: str, where: str | None = None) -> Any:
        """Return the class or function registered as ``name``, importing it on first use.

        Parameters
        ----------
        name : str
            A registered name.
        where : str, optional
            What the error names (a config key).

        Returns
        -------
        Any
            The registered class or function.

        Raises
        ------
        UserError
            When ``name`` is not registered (message from :meth:`suggest`).
        """
        if name not in self._targets:
            raise UserError(self.suggest(name), where)
        if name not in self._loaded:
            module, _, attr = self._targets[name].partition(":")
            obj: Any = importlib.import_module(module)
            for part in attr.split("."):
                obj = getattr(obj, part)
            self._loaded[name] = obj
        return self._loaded[name]


#: simulate-and-fit engines (``[simulation] backend``)
BACKENDS = Registry(
    "backend",
    {
        "native": "xrmodifier_hpc.backends.native:NativeBackend",
        "xspec": "xrmodifier_hpc.backends.xspec:XspecBackend",
    },
)

#: ARF modifier families (``[modifier] family``)
MODIFIER_FAMILIES = Registry(
    "modifier family",
    {
        "gaussian": "xrmodifier_hpc.physics.modifiers:Gaussian",
        "multi_gaussian": "xrmodifier_hpc.physics.modifiers:MultiGaussian",
        "spline": "xrmodifier_hpc.physics.modifiers:Spline",
    },
)

#: source-model components of the native backend (``[source] model``)
SOURCE_COMPONENTS = Registry(
    "model component",
    {
        "bremss": "xrmodifier_hpc.physics.spectra:Bremss",
        "wabs": "xrmodifier_hpc.physics.spectra:Wabs",
        "atable": "xrmodifier_hpc.physics.spectra:TableModel",
        "mtable": "xrmodifier_hpc.physics.spectra:MultiplicativeTable",
    },
)

#: inversion objectives (``[inversion] objective``): ``f(Objectives, theta (d,)) -> scalar``
#: tensor to minimise (see ``inference.objectives``)
OBJECTIVES = Registry(
    "objective",
    {
        "likelihood": "xrmodifier_hpc.inference.objectives:negative_log_likelihood",
        "seed_loss": "xrmodifier_hpc.inference.objectives:seed_loss_objective",
        "gaussian_kl": "xrmodifier_hpc.inference.objectives:gaussian_kl_objective",
        "wasserstein": "xrmodifier_hpc.inference.objectives:wasserstein_objective",
    },
)

#: emulator activation functions (``[emulator] activation``): torch.nn module classes
ACTIVATIONS = Registry(
    "activation",
    {
        "gelu": "torch.nn:GELU",
        "relu": "torch.nn:ReLU",
        "silu": "torch.nn:SiLU",
        "tanh": "torch.nn:Tanh",
    },
)

#: source-model expression parsers of the native model language (``[source] model``): the
#: config asks one for a temperature parameter's range without importing physics
MODEL_PARSERS = Registry(
    "model parser",
    {"native": "xrmodifier_hpc.physics.spectra:parse_model"},
)
