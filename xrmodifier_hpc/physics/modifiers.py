"""Multiplicative ARF modifier families: ``ARF1'(E) = ARF1(E) * m(E; theta)``.

Each family is a small class with its parameter names, units, domain checks and a vectorised
``evaluate(energy, theta)`` over a batch of theta. Families are registered by name in
:data:`xrmodifier_hpc.registry.MODIFIER_FAMILIES`; ``get_modifier(name, options)`` builds one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.registry import MODIFIER_FAMILIES


class ModifierError(UserError):
    """A modifier family, option or parameter value is invalid."""


def families() -> list[str]:
    """Names of the registered modifier families.

    Returns
    -------
    list of str
        The names :data:`xrmodifier_hpc.registry.MODIFIER_FAMILIES` holds, sorted.
    """
    return sorted(MODIFIER_FAMILIES.names())


def get_modifier(name: str, options: Mapping[str, Any] | None = None) -> Modifier:
    """Build the family ``name`` with its ``options`` (family-specific, e.g. ``knots``).

    Parameters
    ----------
    name : str
        A family of :data:`xrmodifier_hpc.registry.MODIFIER_FAMILIES`.
    options : mapping, optional
        Keyword arguments of the family's constructor (``n_components``, ``knots``).

    Returns
    -------
    Modifier
        The family.

    Raises
    ------
    ModifierError
        When ``name`` is not registered (``where`` = ``"family"``) or an option is invalid.
    """
    if name not in MODIFIER_FAMILIES:
        raise ModifierError(MODIFIER_FAMILIES.suggest(name), "family")
    return MODIFIER_FAMILIES.get(name)(**dict(options or {}))


class Modifier(ABC):
    """One family of multiplicative ARF corrections ``m(E; theta)``.

    ``theta`` is always ordered as ``param_names``. ``evaluate`` takes energies in keV and a
    batch of theta of shape ``(n, d)`` (or one theta of shape ``(d,)``) and returns
    ``(n, n_E)`` (or ``(n_E,)``) dimensionless multipliers.

    Attributes
    ----------
    name : str
        The family's registered name.
    param_names : tuple of str
        Names of the ``d`` parameters, in the order of theta.
    param_units : tuple of str
        Their units (``"keV"`` or ``""`` for dimensionless).
    """

    name: ClassVar[str]
    param_names: tuple[str, ...]
    param_units: tuple[str, ...]

    def options(self) -> dict[str, Any]:
        """Return the options that rebuild this family with ``get_modifier`` (stored in artefacts).

        Returns
        -------
        dict of str to Any
            Keyword arguments of the constructor; empty for a family without options.
        """
        return {}

    @property
    def n_params(self) -> int:
        """Number of parameters ``d``."""
        return len(self.param_names)

    @abstractmethod
    def _evaluate(self, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """``energy`` (n_E,), ``theta`` (n, d) -> (n, n_E)."""

    @abstractmethod
    def check_values(self, name: str, values: np.ndarray) -> None:
        """Raise :class:`ModifierError` if any value of parameter ``name`` is out of domain.

        Parameters
        ----------
        name : str
            A name of ``param_names``.
        values : numpy.ndarray
            Values of that parameter, any shape (keV for energies, dimensionless amplitudes).

        Raises
        ------
        ModifierError
            A value lies outside the parameter's domain.
        """

    @abstractmethod
    def identity(self) -> np.ndarray:
        """Return a theta for which ``m(E) = 1`` everywhere.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, ordered as ``param_names``.
        """

    def evaluate(self, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Return the multiplier m(E; theta) at ``energy`` (keV).

        Parameters
        ----------
        energy : numpy.ndarray
            Energies, shape ``(n_E,)`` (keV).
        theta : numpy.ndarray
            One theta, shape ``(d,)``, or a batch, shape ``(n, d)``, ordered as
            ``param_names``.

        Returns
        -------
        numpy.ndarray
            Dimensionless multipliers, shape ``(n_E,)`` for one theta or ``(n, n_E)`` for a
            batch.

        Raises
        ------
        ModifierError
            ``theta`` does not have ``d`` columns.
        """
        energy = np.asarray(energy, dtype=np.float64)
        theta = np.asarray(theta, dtype=np.float64)
        single = theta.ndim == 1
        batch = np.atleast_2d(theta)
        if batch.shape[-1] != self.n_params:
            raise ModifierError(
                f"{self.name} takes {self.n_params} parameters {self.param_names}, "
                f"got {batch.shape[-1]}"
            )
        m = self._evaluate(energy, batch)
        return m[0] if single else m

    def check_theta(self, theta: np.ndarray) -> None:
        """Check a batch of theta (n, d) against every parameter's domain.

        Parameters
        ----------
        theta : numpy.ndarray
            Shape ``(n, d)`` (or ``(d,)`` for one theta), ordered as ``param_names``.

        Raises
        ------
        ModifierError
            A value lies outside its parameter's domain.
        """
        theta = np.atleast_2d(np.asarray(theta, dtype=np.float64))
        for j, name in enumerate(self.param_names):
            self.check_values(name, theta[:, j])

    def apply(self, energy: np.ndarray, area: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Return the modified effective area ``area * m(E; theta)`` (cm^2).

        A negative result is refused.

        Parameters
        ----------
        energy : numpy.ndarray
            Energies, shape ``(n_E,)`` (keV).
        area : numpy.ndarray
            Effective area at ``energy``, shape ``(n_E,)`` (cm^2).
        theta : numpy.ndarray
            One theta ``(d,)`` or a batch ``(n, d)``.

        Returns
        -------
        numpy.ndarray
            Modified area (cm^2), shape ``(n_E,)`` or ``(n, n_E)`` as for :meth:`evaluate`.

        Raises
        ------
        ModifierError
            The multiplier is negative somewhere (the message names the first such theta),
            or ``theta`` has the wrong number of parameters.
        """
        m = self.evaluate(energy, theta)
        bad_rows = ~np.all(np.atleast_2d(m) >= 0, axis=1)
        if np.any(bad_rows):
            first = np.atleast_2d(theta)[np.argmax(bad_rows)]
            raise ModifierError(
                f"{self.name} modifier with {self.describe(first)} makes the ARF negative; "
                "restrict the parameter grid"
            )
        return area * m

    def linear_form(self, theta: np.ndarray) -> tuple[tuple[float, ...], np.ndarray]:
        """Split one theta into a non-linear key and the amplitudes m is linear in.

        ``m(E; theta) = 1 + sum_j a_j b_j(E; key)``.

        Backends fold the basis functions ``b_j`` once per ``key`` and reuse the folds for
        every theta that shares it (e.g. every amplitude A of one (mu, sigma)).

        Parameters
        ----------
        theta : numpy.ndarray
            One parameter set, shape (d,), ordered as ``param_names``.

        Returns
        -------
        key : tuple of float
            The parameters the basis functions depend on (hashable). For a family that is not
            linear in any parameter (the default) the whole theta.
        amplitudes : numpy.ndarray
            (J,) the coefficients a_j (dimensionless); ``[1.0]`` by default, with
            ``b_1 = m - 1``.
        """
        theta = np.asarray(theta, dtype=np.float64).reshape(self.n_params)
        return tuple(float(v) for v in theta), np.ones(1)

    def key_params(self, low: np.ndarray, high: np.ndarray) -> tuple[bool, ...]:
        """Tell which parameters the key of :meth:`linear_form` depends on.

        Found by moving each parameter from the middle of ``[low, high]`` to three quarters
        of it: the key changes for the non-linear ones (the Gaussian's mu and sigma), not for
        the amplitudes; every parameter for a family that is not linear in any.

        Parameters
        ----------
        low, high : numpy.ndarray
            (d,) a box of valid parameter sets, ordered as ``param_names``.

        Returns
        -------
        tuple of bool
            (d,) True for a parameter the key depends on.
        """
        centre = 0.5 * (np.asarray(low, np.float64) + np.asarray(high, np.float64))
        key = self.linear_form(centre)[0]
        marks = []
        for d in range(centre.size):
            moved = centre.copy()
            moved[d] = 0.5 * (moved[d] + float(high[d]))
            marks.append(self.linear_form(moved)[0] != key)
        return tuple(marks)

    def linear_basis(self, energy: np.ndarray, key: tuple[float, ...]) -> np.ndarray:
        """Evaluate the basis functions ``b_j(E; key)`` of :meth:`linear_form`.

        Parameters
        ----------
        energy : numpy.ndarray
            (n_E,) energies, keV.
        key : tuple of float
            The ``key`` returned by :meth:`linear_form`.

        Returns
        -------
        numpy.ndarray
            (J, n_E) dimensionless; by default the single row ``m(E; theta) - 1``.
        """
        return self.evaluate(energy, np.asarray(key, dtype=np.float64))[None, :] - 1.0

    def check_grid(self, axes: Mapping[str, np.ndarray]) -> None:
        """Check every parameter's grid values; families add checks across parameters.

        Parameters
        ----------
        axes : mapping of str to numpy.ndarray
            Grid values of each parameter, by name (every name of ``param_names``).

        Raises
        ------
        ModifierError
            A value lies outside its parameter's domain.
        """
        for name in self.param_names:
            self.check_values(name, np.asarray(axes[name], dtype=np.float64))

    def describe(self, theta: np.ndarray) -> dict[str, float]:
        """Return theta as a name -> value mapping.

        Parameters
        ----------
        theta : numpy.ndarray
            One theta, shape ``(d,)``.

        Returns
        -------
        dict of str to float
            Values by parameter name, in the order of ``param_names``.
        """
        return {n: float(v) for n, v in zip(self.param_names, np.asarray(theta, dtype=float))}


def _check_amplitude(name: str, values: np.ndarray) -> None:
    if np.any(values <= -1):
        raise ModifierError(
            f"amplitude {name} must be > -1 everywhere on the grid (got min {values.min():g}): "
            "A <= -1 makes the ARF negative"
        )


def _check_positive(name: str, values: np.ndarray, unit: str = "keV") -> None:
    if np.any(values <= 0):
        raise ModifierError(f"{name} must be > 0 {unit} (got min {values.min():g})")


class Gaussian(Modifier):
    """``m(E) = 1 + A exp(-(E - mu)^2 / (2 sigma^2))``; mu, sigma in keV, A > -1."""

    name = "gaussian"
    param_names = ("mu", "sigma", "A")
    param_units = ("keV", "keV", "")

    def _evaluate(self, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        mu, sigma, amp = (theta[:, j : j + 1] for j in range(3))
        return 1.0 + amp * np.exp(-0.5 * ((energy[None, :] - mu) / sigma) ** 2)

    def check_values(self, name: str, values: np.ndarray) -> None:
        """Check ``A > -1`` and ``mu, sigma > 0`` keV.

        Parameters
        ----------
        name : str
            A name of ``param_names``.
        values : numpy.ndarray
            Values of that parameter, any shape (keV for energies, dimensionless amplitudes).

        Raises
        ------
        ModifierError
            A value lies outside the parameter's domain.
        """
        if name == "A":
            _check_amplitude(name, values)
        elif name in ("mu", "sigma"):
            _check_positive(name, values)

    def identity(self) -> np.ndarray:
        """Return ``(mu, sigma, A) = (1 keV, 1 keV, 0)``: no bump.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, ordered as ``param_names``.
        """
        return np.array([1.0, 1.0, 0.0])

    def linear_form(self, theta: np.ndarray) -> tuple[tuple[float, ...], np.ndarray]:
        """Split theta: ``key = (mu, sigma)``, amplitudes ``[A]`` (m is linear in A).

        See :meth:`Modifier.linear_form`.

        Parameters
        ----------
        theta : numpy.ndarray
            (3,) ``(mu, sigma, A)``: keV, keV, dimensionless.

        Returns
        -------
        key : tuple of float
            ``(mu, sigma)`` in keV.
        amplitudes : numpy.ndarray
            (1,) ``[A]``.
        """
        mu, sigma, amp = (float(v) for v in np.asarray(theta, dtype=np.float64).reshape(3))
        return (mu, sigma), np.array([amp])

    def linear_basis(self, energy: np.ndarray, key: tuple[float, ...]) -> np.ndarray:
        """Evaluate the Gaussian ``exp(-(E - mu)^2 / (2 sigma^2))`` for ``key = (mu, sigma)``.

        Parameters
        ----------
        energy : numpy.ndarray
            (n_E,) energies, keV.
        key : tuple of float
            ``(mu, sigma)`` in keV.

        Returns
        -------
        numpy.ndarray
            (1, n_E) basis function.
        """
        mu, sigma = key
        energy = np.asarray(energy, dtype=np.float64)
        return np.exp(-0.5 * ((energy - mu) / sigma) ** 2)[None, :]


class MultiGaussian(Modifier):
    """``m(E) = 1 + sum_k A_k exp(-(E - mu_k)^2 / (2 sigma_k^2))`` with K bumps.

    Parameters ``mu1, sigma1, A1, mu2, ...``. Each A_k > -1, and the sum of the most negative
    amplitudes must stay above -1 so no overlap of dips can make the ARF negative.

    Parameters
    ----------
    n_components : int
        Number of bumps K (at least 1); ``d = 3 K`` parameters.

    Raises
    ------
    ModifierError
        ``n_components`` is not a positive integer (names ``options.n_components``).
    """

    name = "multi_gaussian"
    param_units: tuple[str, ...]

    def __init__(self, n_components: int = 2) -> None:
        if not isinstance(n_components, int) or isinstance(n_components, bool) or n_components < 1:
            raise ModifierError("n_components must be a positive integer", "options.n_components")
        self.n_components = n_components
        self.param_names = tuple(
            f"{p}{k + 1}" for k in range(n_components) for p in ("mu", "sigma", "A")
        )
        self.param_units = ("keV", "keV", "") * n_components

    def options(self) -> dict[str, Any]:
        """Return ``{"n_components": K}``.

        Returns
        -------
        dict of str to Any
            The constructor's keyword arguments.
        """
        return {"n_components": self.n_components}

    def _evaluate(self, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        m = np.ones((theta.shape[0], energy.size))
        for k in range(self.n_components):
            mu, sigma, amp = (theta[:, 3 * k + j : 3 * k + j + 1] for j in range(3))
            m += amp * np.exp(-0.5 * ((energy[None, :] - mu) / sigma) ** 2)
        return m

    def check_values(self, name: str, values: np.ndarray) -> None:
        """Check ``A_k > -1`` and ``mu_k, sigma_k > 0`` keV.

        Parameters
        ----------
        name : str
            A name of ``param_names``.
        values : numpy.ndarray
            Values of that parameter, any shape (keV for energies, dimensionless amplitudes).

        Raises
        ------
        ModifierError
            A value lies outside the parameter's domain.
        """
        if name.startswith("A"):
            _check_amplitude(name, values)
        else:
            _check_positive(name, values)

    def check_grid(self, axes: Mapping[str, np.ndarray]) -> None:
        """Check each parameter, and that the most negative amplitudes sum to more than -1.

        Parameters
        ----------
        axes : mapping of str to numpy.ndarray
            Grid values of each parameter, by name (every name of ``param_names``).

        Raises
        ------
        ModifierError
            A value lies outside its domain, or overlapping dips could make the ARF negative.
        """
        super().check_grid(axes)
        worst = sum(min(float(np.min(axes[f"A{k + 1}"])), 0.0) for k in range(self.n_components))
        if worst <= -1:
            raise ModifierError(
                f"the most negative amplitudes sum to {worst:g} <= -1: overlapping dips "
                "could make the ARF negative"
            )

    def identity(self) -> np.ndarray:
        """Return ``(1 keV, 1 keV, 0)`` for every bump: no bumps.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, ordered as ``param_names``.
        """
        return np.array([1.0, 1.0, 0.0] * self.n_components)

    def linear_form(self, theta: np.ndarray) -> tuple[tuple[float, ...], np.ndarray]:
        """Split theta: ``key = (mu1, sigma1, mu2, sigma2, ...)``, amplitudes ``[A1, ...]``.

        See :meth:`Modifier.linear_form`.

        Parameters
        ----------
        theta : numpy.ndarray
            (3 K,) ``(mu1, sigma1, A1, mu2, ...)``: keV, keV, dimensionless.

        Returns
        -------
        key : tuple of float
            ``(mu1, sigma1, ..., muK, sigmaK)`` in keV.
        amplitudes : numpy.ndarray
            (K,) ``[A1, ..., AK]``.
        """
        t = np.asarray(theta, dtype=np.float64).reshape(self.n_components, 3)
        return tuple(float(v) for v in t[:, :2].ravel()), t[:, 2].copy()

    def linear_basis(self, energy: np.ndarray, key: tuple[float, ...]) -> np.ndarray:
        """Evaluate one Gaussian per component for ``key = (mu1, sigma1, ...)``.

        Parameters
        ----------
        energy : numpy.ndarray
            (n_E,) energies, keV.
        key : tuple of float
            ``(mu1, sigma1, ..., muK, sigmaK)`` in keV.

        Returns
        -------
        numpy.ndarray
            (K, n_E) basis functions.
        """
        energy = np.asarray(energy, dtype=np.float64)
        pairs = np.asarray(key, dtype=np.float64).reshape(self.n_components, 2)
        return np.stack([np.exp(-0.5 * ((energy - mu) / sigma) ** 2) for mu, sigma in pairs])


class Spline(Modifier):
    """``m(E) = 1 + d(E)`` with ``d`` given at fixed ``knots`` (keV), interpolated in log E.

    The interpolation is monotone piecewise-cubic (PCHIP), so it never overshoots the knot
    values and m stays positive when every ``d_k > -1``. Outside the knots d is held constant.

    Parameters
    ----------
    knots : sequence of float
        At least two increasing positive energies (keV); one parameter ``d_k`` per knot.

    Raises
    ------
    ModifierError
        ``knots`` is not such a sequence (names ``options.knots``).
    """

    name = "spline"

    def __init__(self, knots: list[float] | tuple[float, ...] = (0.3, 0.6, 1.2, 2.4, 4.8, 9.6)):
        knots = np.asarray(knots, dtype=np.float64)
        if knots.ndim != 1 or knots.size < 2 or np.any(knots <= 0) or np.any(np.diff(knots) <= 0):
            raise ModifierError(
                "knots must be at least two increasing positive energies (keV)", "options.knots"
            )
        self.knots = knots
        self.param_names = tuple(f"d{k + 1}" for k in range(knots.size))
        self.param_units = ("",) * knots.size

    def options(self) -> dict[str, Any]:
        """Return ``{"knots": [...]}`` (keV).

        Returns
        -------
        dict of str to Any
            The constructor's keyword arguments.
        """
        return {"knots": [float(k) for k in self.knots]}

    def _evaluate(self, energy: np.ndarray, theta: np.ndarray) -> np.ndarray:
        log_e = np.log(np.clip(energy, self.knots[0], self.knots[-1]))
        from scipy.interpolate import PchipInterpolator  # only this family needs it (0.3 s)

        interp = PchipInterpolator(np.log(self.knots), theta, axis=1)
        return 1.0 + interp(log_e)

    def check_values(self, name: str, values: np.ndarray) -> None:
        """Check ``d_k > -1``.

        Parameters
        ----------
        name : str
            A name of ``param_names``.
        values : numpy.ndarray
            Values of that parameter, any shape (keV for energies, dimensionless amplitudes).

        Raises
        ------
        ModifierError
            A value lies outside the parameter's domain.
        """
        _check_amplitude(name, values)

    def identity(self) -> np.ndarray:
        """Return zeros at every knot: ``d(E) = 0``.

        Returns
        -------
        numpy.ndarray
            Shape ``(d,)``, ordered as ``param_names``.
        """
        return np.zeros(self.knots.size)
