"""The networks: an MLP of (theta, T_true) -> (T1, T1') in physical units, and its construction.

Inputs are normalised by the grid bounds to [-1, 1] (T_true, and any parameter whose grid axis
is geometric, in log). The network predicts ``log(T1'/T_true)`` and ``log(T1/T1')``, because
T1 and T1' are fits of the same counts and share their Poisson noise: the ratio is 3 to 20
times less noisy than either and carries the modifier's structure. With ``predict_scatter``
a second, separate network learns the log-variance of ``log T`` across realisations.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from xrmodifier_hpc.config import EmulatorConfig
from xrmodifier_hpc.emulator.data import TrainingData
from xrmodifier_hpc.registry import ACTIVATIONS

#: a variance of log T below this is a duplicate fit, not information about the scatter
MIN_VAR = 1e-12


def encode(y: np.ndarray) -> np.ndarray:
    """Convert targets to network outputs (the ratio T1/T1' as a separate output).

    Parameters
    ----------
    y : numpy.ndarray
        (n, 2) [log(T1/T_true), log(T1'/T_true)].

    Returns
    -------
    numpy.ndarray
        (n, 2) [log(T1'/T_true), log(T1/T1')].
    """
    return np.stack([y[:, 1], y[:, 0] - y[:, 1]], axis=-1)


def decode(z: torch.Tensor) -> torch.Tensor:
    """Invert :func:`encode`, on tensors.

    Parameters
    ----------
    z : torch.Tensor
        (n, 2) [log(T1'/T_true), log(T1/T1')].

    Returns
    -------
    torch.Tensor
        (n, 2) [log(T1/T_true), log(T1'/T_true)].
    """
    return torch.stack([z[:, 0] + z[:, 1], z[:, 0]], dim=-1)


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, activation: str) -> nn.Sequential:
    act = ACTIVATIONS.get(activation, "[emulator] activation")
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), act()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class Networks(nn.Module):
    """The trainable part, in normalised units: inputs in [-1, 1], standardised outputs.

    Kept separate from :class:`Emulator` so that DDP wraps exactly the parameters it syncs.
    The scatter network has its own parameters, so its loss never pulls the mean's fit.

    Parameters
    ----------
    n_in : int
        d + 1 inputs.
    hidden : tuple of int
        Widths of the mean network's hidden layers.
    activation : str
        A name of ``registry.ACTIVATIONS``.
    scatter_hidden : tuple of int or None
        Widths of the scatter network's hidden layers; None: no scatter network.
    """

    def __init__(
        self,
        n_in: int,
        hidden: tuple[int, ...],
        activation: str,
        scatter_hidden: tuple[int, ...] | None,
    ) -> None:
        super().__init__()
        self.mean = _mlp(n_in, hidden, 2, activation)
        self.scatter = _mlp(n_in, scatter_hidden, 2, activation) if scatter_hidden else None

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Return the standardised outputs of both networks.

        Parameters
        ----------
        x : torch.Tensor
            (n, d + 1) normalised inputs.

        Returns
        -------
        mean : torch.Tensor
            (n, 2) standardised [log(T1'/T_true), log(T1/T1')].
        scatter : torch.Tensor or None
            (n, 2) standardised log-variances, or None without a scatter network.
        """
        return self.mean(x), (self.scatter(x) if self.scatter is not None else None)


class Emulator(nn.Module):
    """The simulation map in physical units: ``module(theta, t_true) -> (n, 2)`` [T1, T1'] keV.

    The output is differentiable with respect to ``theta`` and ``t_true``.

    Parameters
    ----------
    param_names : tuple of str
        The d modifier parameters, in family order.
    bounds : numpy.ndarray
        (d + 1, 2) grid bounds of the parameters, then of T_true (keV).
    log_axes : tuple of bool
        (d + 1,) which inputs are normalised in log.
    hidden : tuple of int
        Hidden-layer widths of the mean network.
    activation : str
        A name of ``registry.ACTIVATIONS``.
    scatter_hidden : tuple of int or None
        Hidden-layer widths of the scatter network; None: none.
    param_units : tuple of str, optional
        Units of the parameters.

    Raises
    ------
    ValueError
        When ``log_axes`` does not have d + 1 flags.
    UserError
        For an unknown activation.

    Notes
    -----
    Further attributes: ``metrics`` (the JSON form of an
    :class:`~xrmodifier_hpc.io.metrics.EmulatorMetrics`, a dict), ``config_text`` and
    ``offgrid`` (the off-grid check: a dict of numpy arrays, or None).
    """

    def __init__(
        self,
        param_names: tuple[str, ...],
        bounds: np.ndarray,
        log_axes: tuple[bool, ...],
        hidden: tuple[int, ...] = (128, 128, 128),
        activation: str = "gelu",
        scatter_hidden: tuple[int, ...] | None = (64, 64),
        param_units: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        d = len(param_names)
        bounds = np.asarray(bounds, np.float64).reshape(d + 1, 2)
        if len(log_axes) != d + 1:
            raise ValueError("log_axes needs one flag per parameter plus one for T_true")
        self.param_names = tuple(param_names)
        self.param_units = tuple(param_units or ("",) * d)
        self.bounds = bounds
        self.log_axes = tuple(bool(v) for v in log_axes)
        self.arch = {
            "hidden": [int(h) for h in hidden],
            "activation": activation,
            "scatter_hidden": [int(h) for h in scatter_hidden] if scatter_hidden else None,
        }
        mask = torch.tensor(self.log_axes)
        lo = torch.as_tensor(bounds[:, 0]).clone()
        hi = torch.as_tensor(bounds[:, 1]).clone()
        lo[mask], hi[mask] = torch.log(lo[mask]), torch.log(hi[mask])
        width = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
        self.register_buffer("log_mask", mask)
        self.register_buffer("in_lo", lo)
        self.register_buffer("in_width", width)
        self.register_buffer("out_mean", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("out_std", torch.ones(2, dtype=torch.float64))
        self.register_buffer("sc_mean", torch.zeros(2, dtype=torch.float64))
        self.register_buffer("sc_std", torch.ones(2, dtype=torch.float64))
        self.nets = Networks(d + 1, tuple(hidden), activation, scatter_hidden)
        self.metrics: dict[str, Any] = {}
        self.config_text = ""
        self.offgrid: dict[str, np.ndarray] | None = None

    @property
    def predicts_scatter(self) -> bool:
        """Whether the emulator has a scatter network."""
        return self.nets.scatter is not None

    def normalise(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
        """Return the network inputs: [-1, 1] over the grid (beyond it outside).

        Parameters
        ----------
        theta : torch.Tensor
            (n, d) parameters, physical units.
        t_true : torch.Tensor
            (n,) true temperatures, keV (any shape with n values).

        Returns
        -------
        torch.Tensor
            (n, d + 1) normalised inputs (log first on the ``log_axes``), ``theta``'s dtype.

        Raises
        ------
        ValueError
            When ``theta`` is not (n, d) or ``t_true`` does not have n values.
        """
        d = len(self.param_names)
        if theta.ndim != 2 or theta.shape[1] != d:
            raise ValueError(
                f"theta must have shape (n, {d}) ({self.param_names}), got {tuple(theta.shape)}"
            )
        t_true = t_true.reshape(-1)
        if t_true.shape[0] != theta.shape[0]:
            raise ValueError(f"t_true has {t_true.shape[0]} values for {theta.shape[0]} theta")
        x = torch.cat([theta, t_true[:, None]], dim=1)
        mask = self.log_mask.to(x.device)
        x = torch.where(mask, torch.log(torch.where(mask, x, torch.ones_like(x))), x)
        lo = self.in_lo.to(x.dtype)
        width = self.in_width.to(x.dtype)
        return 2.0 * (x - lo) / width - 1.0

    def forward(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
        """Return the emulated temperatures.

        Parameters
        ----------
        theta : torch.Tensor
            (n, d) parameters, physical units.
        t_true : torch.Tensor
            (n,) true temperatures, keV.

        Returns
        -------
        torch.Tensor
            (n, 2) [T1, T1'] keV.
        """
        x = self.normalise(theta, t_true)
        out, _ = self.nets(x)
        z = out * self.out_std.to(out.dtype) + self.out_mean.to(out.dtype)
        return t_true.reshape(-1, 1) * torch.exp(decode(z))

    def log_scatter(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor | None:
        """Return the relative scatter of T1 and T1' across realisations, in log.

        Parameters
        ----------
        theta : torch.Tensor
            (n, d) parameters, physical units.
        t_true : torch.Tensor
            (n,) true temperatures, keV.

        Returns
        -------
        torch.Tensor or None
            (n, 2) ``log(sigma_T / T)`` (so sigma_T = T exp(log_scatter)); None when the
            emulator was trained without a scatter network.
        """
        if self.nets.scatter is None:
            return None
        x = self.normalise(theta, t_true)
        s = self.nets.scatter(x)
        log_var = s * self.sc_std.to(s.dtype) + self.sc_mean.to(s.dtype)
        return 0.5 * log_var

    def spec(self) -> dict[str, Any]:
        """Return what rebuilds this module without its weights.

        Returns
        -------
        dict
            ``param_names``, ``param_units``, ``bounds`` ((d + 1, 2) tensor, keV for T_true),
            ``log_axes`` and the architecture (``hidden``, ``activation``,
            ``scatter_hidden``).
        """
        return {
            "param_names": list(self.param_names),
            "param_units": list(self.param_units),
            "bounds": torch.as_tensor(self.bounds),
            "log_axes": list(self.log_axes),
            **self.arch,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Emulator:
        """Build a fresh module from :meth:`spec`'s output.

        Parameters
        ----------
        spec : dict
            As :meth:`spec` returns it.

        Returns
        -------
        Emulator
            Untrained (the caller loads the state).
        """
        return cls(
            tuple(spec["param_names"]),
            np.asarray(spec["bounds"], np.float64),
            tuple(spec["log_axes"]),
            hidden=tuple(spec["hidden"]),
            activation=spec["activation"],
            scatter_hidden=tuple(spec["scatter_hidden"]) if spec["scatter_hidden"] else None,
            param_units=tuple(spec.get("param_units") or ()) or None,
        )


def build_emulator(data: TrainingData, ecfg: EmulatorConfig, train_idx: np.ndarray) -> Emulator:
    """Build a fresh emulator for ``data``, with output scaling from the train split.

    The initialisation is seeded with ``ecfg.seed``. Both mean outputs share one scale (the
    larger standard deviation), so that the loss is a squared error in log T for either.

    Parameters
    ----------
    data : TrainingData
        The targets.
    ecfg : EmulatorConfig
        Architecture and seed.
    train_idx : numpy.ndarray
        (n_train,) int indices of the training points (the scaling must not see validation
        points).

    Returns
    -------
    Emulator
        Untrained, with its output (and scatter) scaling set.

    Raises
    ------
    UserError
        For an unknown ``[emulator] activation``.
    """
    torch.manual_seed(ecfg.seed)
    model = Emulator(
        data.param_names,
        data.bounds,
        data.log_axes,
        hidden=tuple(ecfg.hidden),
        activation=ecfg.activation,
        scatter_hidden=tuple(ecfg.scatter_hidden) if ecfg.predict_scatter else None,
        param_units=data.param_units,
    )
    z = encode(data.y[train_idx])
    # one scale for both outputs, so that the loss is a squared error in log T for either
    # (a per-output scale would blow T1''s noise, which has almost no signal, up to unit
    # variance and let it dominate the loss and the choice of the best epoch)
    std = float(z.std(axis=0).max())
    model.out_mean.copy_(torch.as_tensor(z.mean(axis=0)))
    model.out_std.fill_(std if std > 0 else 1.0)
    w = data.n_used[train_idx] > 1
    if ecfg.predict_scatter and w.any():
        lv = np.log(np.maximum(data.var[train_idx], MIN_VAR))
        mean = np.array([lv[w[:, k], k].mean() if w[:, k].any() else 0.0 for k in range(2)])
        sd = np.array([lv[w[:, k], k].std() if w[:, k].sum() > 1 else 1.0 for k in range(2)])
        model.sc_mean.copy_(torch.as_tensor(mean))
        model.sc_std.copy_(torch.as_tensor(np.where(sd > 0, sd, 1.0)))
    return model
