"""The emulator: an MLP of the simulation map (theta, T_true) -> (T1, T1'), its training and I/O.

Inputs are normalised by the grid bounds (T_true, and any parameter whose grid axis is
geometric, in log). The targets are ``log(T1/T_true)`` and ``log(T1'/T_true)``, averaged over
a grid point's usable realisations; the network predicts them as ``log(T1'/T_true)`` and
``log(T1/T1')``, because T1 and T1' are fits of the same counts and share their Poisson noise:
the ratio is 3 to 20 times less noisy than either, and carries the modifier's structure.
With ``predict_scatter`` a second, separate network learns the log-variance of ``log T``
across realisations (a chi-square likelihood, so it converges to the expected variance even
with two realisations per point).

Training is one loop for one process or many: under ``torch.distributed`` (set up by
:mod:`launch`) the networks are wrapped in DDP and each rank draws its share of every global
batch through a ``DistributedSampler``. The global batch is ``batch_size`` whatever the world
size, so one process and N processes see the same batches. AdamW, warm-up then cosine
learning rate, early stopping on the validation split, checkpoints every
``checkpoint_every`` epochs and on request (preemption), resume that is bitwise identical on
the same machine and thread count.

After training, rank 0 measures accuracy against multilinear interpolation of the grid, on the
validation split and on fresh off-grid points simulated noise-free (asimov), and writes
``emulator.pt`` and ``emulator_metrics.json`` beside ``grid.h5``. This module knows nothing
about Slurm or submitit.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from xrmodifier_hpc.config import Config, EmulatorConfig
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import replacing, write_bytes, write_text

log = logging.getLogger("xrmodifier")

FORMAT = "xrmodifier-emulator"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "emulator_checkpoint.pt"
METRICS_NAME = "emulator_metrics.json"
OFFGRID_CACHE_NAME = "emulator_offgrid_truth.npz"
#: off-grid RMS relative error the demo grid must reach (issue 5)
TARGET_RMS_REL = 0.003

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
}
# warm-up over the first few percent of steps avoids AdamW's large first steps on a fresh
# net; the cosine then ends at 1% of the peak so the last epochs average the grid noise
_WARMUP_FRACTION = 0.03
_FINAL_LR_FACTOR = 0.01
# a variance of log T below this is a duplicate fit, not information about the scatter
_MIN_VAR = 1e-12
_OUTPUTS = ("t_fit_orig", "t_fit_mod")


def _encode(y: np.ndarray) -> np.ndarray:
    """[log(T1/T_true), log(T1'/T_true)] -> the network's [log(T1'/T_true), log(T1/T1')]."""
    return np.stack([y[:, 1], y[:, 0] - y[:, 1]], axis=-1)


def _decode(z: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`_encode`, on tensors."""
    return torch.stack([z[:, 0] + z[:, 1], z[:, 0]], dim=-1)


# --------------------------------------------------------------------------------------------
# training data from the grid
# --------------------------------------------------------------------------------------------


@dataclass
class TrainingData:
    """Per grid point targets. Temperatures in keV; ``y`` is ``mean_r log(T_r / T_true)``
    for [T1, T1'] (the mean in log, as the network models log T: the fit's upper error grows
    with T, so the arithmetic mean would sit above the noise-free fit at high T).

    ``var`` is the sample variance (ddof 1) of ``log T_r`` over usable realisations and
    ``n_used`` their number, per output (T1, T1'). Points where either fit has no usable
    realisation are already removed (``n_excluded`` counts them). ``axes`` are the d parameter
    axes then the T_true axis, physical units; ``log_axes`` says which are used in log.
    """

    param_names: tuple[str, ...]
    param_units: tuple[str, ...]
    axes: tuple[np.ndarray, ...]
    log_axes: tuple[bool, ...]
    theta: np.ndarray
    t_true: np.ndarray
    y: np.ndarray
    var: np.ndarray
    n_used: np.ndarray
    n_excluded: int = 0
    n_realisations_excluded: int = 0
    n_grid_points: int = 0

    @property
    def n(self) -> int:
        return self.t_true.size

    @property
    def bounds(self) -> np.ndarray:
        """(d + 1, 2) physical bounds of the parameters, then of T_true (keV)."""
        return np.array([[a.min(), a.max()] for a in self.axes], dtype=np.float64)

    def transformed(self, theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
        """(n, d + 1) inputs with log applied where ``log_axes`` says (not yet scaled)."""
        x = np.column_stack([np.asarray(theta, np.float64), np.asarray(t_true, np.float64)])
        mask = np.asarray(self.log_axes)
        x[:, mask] = np.log(x[:, mask])
        return x

    def digest(self) -> str:
        """Content hash of the training targets: a checkpoint only resumes on the same data."""
        h = hashlib.sha256()
        for arr in (self.theta, self.t_true, self.y, self.var, self.n_used):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    @classmethod
    def from_grid(cls, g: Any) -> TrainingData:
        """From ``store.load_grid``'s :class:`~xrmodifier_hpc.io.store.GridData`."""
        return cls.from_arrays(
            tuple(g.param_names),
            dict(g.axes),
            g.theta,
            g.t_true,
            g.t_fit_orig,
            g.t_fit_mod,
            g.status,
            param_units=tuple(getattr(g, "param_units", ()) or ()) or None,
        )

    @classmethod
    def from_arrays(
        cls,
        param_names: tuple[str, ...],
        axes: dict[str, np.ndarray],
        theta: np.ndarray,
        t_true: np.ndarray,
        t_fit_orig: np.ndarray,
        t_fit_mod: np.ndarray,
        status: np.ndarray,
        param_units: tuple[str, ...] | None = None,
    ) -> TrainingData:
        """Reduce per-realisation fits (n, n_real) to per-point targets, leaving out fits
        whose status has an unusable bit (``backends.base.STATUS_UNUSABLE``) or a non-finite
        or non-positive temperature."""
        from xrmodifier_hpc.backends.base import STATUS_UNUSABLE

        theta = np.asarray(theta, np.float64).reshape(len(t_true), len(param_names))
        t_true = np.asarray(t_true, np.float64)
        temps = np.stack([t_fit_orig, t_fit_mod], axis=-1).astype(np.float64)  # (n, r, 2)
        status = np.asarray(status)
        with np.errstate(invalid="ignore"):
            usable = ((status & STATUS_UNUSABLE) == 0) & np.isfinite(temps) & (temps > 0)
        n_used = usable.sum(axis=1)  # (n, 2)
        keep = (n_used > 0).all(axis=1)
        logt = np.log(np.where(usable, temps, 1.0))
        mean_log = np.where(usable, logt, 0.0).sum(axis=1) / np.maximum(n_used, 1)
        y = np.where(keep[:, None], mean_log - np.log(t_true)[:, None], 0.0)
        dev2 = np.where(usable, (logt - mean_log[:, None, :]) ** 2, 0.0).sum(axis=1)
        var = np.where(n_used > 1, dev2 / np.maximum(n_used - 1, 1), 0.0)
        axes_t = tuple(np.asarray(axes[name], np.float64) for name in (*param_names, "t_true"))
        log_axes = tuple(_is_geometric(a) for a in axes_t[:-1]) + (True,)
        n_real_bad = int((~usable[keep]).any(axis=-1).sum())
        return cls(
            param_names=tuple(param_names),
            param_units=tuple(param_units or ("",) * len(param_names)),
            axes=axes_t,
            log_axes=log_axes,
            theta=theta[keep],
            t_true=t_true[keep],
            y=y[keep],
            var=var[keep],
            n_used=n_used[keep].astype(np.int64),
            n_excluded=int((~keep).sum()),
            n_realisations_excluded=n_real_bad,
            n_grid_points=int(t_true.size),
        )


def _is_geometric(axis: np.ndarray) -> bool:
    """True for a positive axis whose values are evenly spaced in log but not linearly (the
    config's ``logspace``): such a parameter is normalised and interpolated in log."""
    axis = np.sort(np.asarray(axis, np.float64))
    if axis.size < 3 or axis[0] <= 0:
        return False
    dlog, dlin = np.diff(np.log(axis)), np.diff(axis)
    return bool(np.allclose(dlog, dlog[0], rtol=1e-6) and not np.allclose(dlin, dlin[0], rtol=1e-6))


def check_grid(cfg: Config) -> Any:
    """Load ``grid.h5`` for training (without curves), or raise :class:`UserError` saying
    what to run. The grid must exist, be complete and have been simulated from this config's
    simulation settings (the fingerprint ``simulate`` stores): the off-grid check simulates
    with the config, so a grid from other settings would be measured against the wrong map.
    Returns the store's ``GridData``.
    """
    from xrmodifier_hpc.config.grid import Grid
    from xrmodifier_hpc.io.store import load_grid

    path = cfg.grid_path
    simulate = f"`xrmodifier simulate {cfg.path}`"
    if not path.is_file():
        raise UserError(f"no grid to train on: run {simulate} first", str(path))
    data = load_grid(path, curves=False, allow_incomplete=True)
    done = np.asarray(data.done, bool)
    if not done.all():
        raise UserError(
            f"the grid is incomplete ({int(done.sum())} of {done.size} points done): run "
            f"{simulate} to finish it",
            str(path),
        )
    stored = str(data.meta.get("fingerprint", ""))
    if stored and stored != cfg.simulation_fingerprint():
        raise UserError(
            f"the grid was simulated with other settings than {cfg.path.name} (instruments, "
            f"source, modifier, temperatures or simulation changed since): rerun {simulate}",
            str(path),
        )
    expected = Grid.from_config(cfg).param_names
    if tuple(data.param_names) != tuple(expected):
        raise UserError(
            f"the grid's parameters {tuple(data.param_names)} are not the config's "
            f"{tuple(expected)}: rerun {simulate}",
            str(path),
        )
    return data


def load_training_data(cfg: Config) -> TrainingData:
    """The config's ``grid.h5`` reduced to per-point training targets."""
    data = TrainingData.from_grid(check_grid(cfg))
    if data.n < 4:
        raise UserError(
            f"only {data.n} grid points have usable fits for both T1 and T1' "
            f"({data.n_excluded} left out): too few to train on",
            str(cfg.grid_path),
        )
    return data


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and validation point indices: a seeded permutation, the same on every rank."""
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# --------------------------------------------------------------------------------------------
# the networks
# --------------------------------------------------------------------------------------------


def _mlp(n_in: int, hidden: tuple[int, ...], n_out: int, activation: str) -> nn.Sequential:
    layers: list[nn.Module] = []
    width = n_in
    for h in hidden:
        layers += [nn.Linear(width, h), _ACTIVATIONS[activation]()]
        width = h
    layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


class _Networks(nn.Module):
    """The trainable part, in normalised units: inputs in [-1, 1], standardised outputs.

    Kept separate from :class:`Emulator` so that DDP wraps exactly the parameters it syncs.
    The scatter network has its own parameters, so its loss never pulls the mean's fit.
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
        return self.mean(x), (self.scatter(x) if self.scatter is not None else None)


class Emulator(nn.Module):
    """The simulation map in physical units: ``module(theta, t_true) -> (n, 2)`` [T1, T1'] keV.

    ``theta`` is (n, d) in ``param_names`` order and units, ``t_true`` (n,) keV. The output is
    differentiable with respect to both. Attributes: ``param_names``, ``param_units``,
    ``bounds`` (numpy (d + 1, 2), T_true last), ``metrics`` (the content of
    ``emulator_metrics.json``), ``config_text``, ``offgrid`` (the off-grid check points, a dict
    of numpy arrays, or None).
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
        self.nets = _Networks(d + 1, tuple(hidden), activation, scatter_hidden)
        self.metrics: dict[str, Any] = {}
        self.config_text = ""
        self.offgrid: dict[str, np.ndarray] | None = None

    @property
    def predicts_scatter(self) -> bool:
        return self.nets.scatter is not None

    def normalise(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor:
        """(n, d + 1) network inputs in [-1, 1] over the grid (outside it: beyond)."""
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
        """(n, 2) emulated [T1, T1'] in keV."""
        x = self.normalise(theta, t_true)
        out, _ = self.nets(x)
        z = out * self.out_std.to(out.dtype) + self.out_mean.to(out.dtype)
        return t_true.reshape(-1, 1) * torch.exp(_decode(z))

    def log_scatter(self, theta: torch.Tensor, t_true: torch.Tensor) -> torch.Tensor | None:
        """(n, 2) natural log of the relative scatter sigma_T / T of T1 and T1' across
        realisations (so sigma_T = T * exp(log_scatter)); None if not trained for it."""
        if self.nets.scatter is None:
            return None
        x = self.normalise(theta, t_true)
        s = self.nets.scatter(x)
        log_var = s * self.sc_std.to(s.dtype) + self.sc_mean.to(s.dtype)
        return 0.5 * log_var

    def spec(self) -> dict[str, Any]:
        """What rebuilds this module (without weights): names, bounds, flags, architecture."""
        return {
            "param_names": list(self.param_names),
            "param_units": list(self.param_units),
            "bounds": torch.as_tensor(self.bounds),
            "log_axes": list(self.log_axes),
            **self.arch,
        }

    @classmethod
    def from_spec(cls, spec: dict[str, Any]) -> Emulator:
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
    """A fresh emulator for ``data`` (seeded init), its output scaling from the train split."""
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
    z = _encode(data.y[train_idx])
    # one scale for both outputs, so that the loss is a squared error in log T for either
    # (a per-output scale would blow T1''s noise, which has almost no signal, up to unit
    # variance and let it dominate the loss and the choice of the best epoch)
    std = float(z.std(axis=0).max())
    model.out_mean.copy_(torch.as_tensor(z.mean(axis=0)))
    model.out_std.fill_(std if std > 0 else 1.0)
    w = data.n_used[train_idx] > 1
    if ecfg.predict_scatter and w.any():
        lv = np.log(np.maximum(data.var[train_idx], _MIN_VAR))
        mean = np.array([lv[w[:, k], k].mean() if w[:, k].any() else 0.0 for k in range(2)])
        sd = np.array([lv[w[:, k], k].std() if w[:, k].sum() > 1 else 1.0 for k in range(2)])
        model.sc_mean.copy_(torch.as_tensor(mean))
        model.sc_std.copy_(torch.as_tensor(np.where(sd > 0, sd, 1.0)))
    return model


# --------------------------------------------------------------------------------------------
# the training loop
# --------------------------------------------------------------------------------------------


@dataclass
class FitOutcome:
    """What :meth:`Trainer.run` leaves: ``completed`` False when stopped by a session limit."""

    completed: bool
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    train_seconds: float
    history: list[dict[str, float]]
    stopped_early: bool = False


def _rank_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def _atomic_torch_save(obj: Any, path: Path) -> None:
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def _fmt_seconds(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class Trainer:
    """One training run, single process or one rank of a DDP group.

    ``checkpoint_path``: where rank 0 writes its checkpoint (every ``checkpoint_every``
    epochs and in :meth:`save_latest`); a matching checkpoint there is resumed from.
    ``fingerprint`` identifies the data and settings a checkpoint may be resumed with.
    """

    def __init__(
        self,
        data: TrainingData,
        ecfg: EmulatorConfig,
        checkpoint_path: Path,
        fingerprint: str,
        device: torch.device,
    ) -> None:
        self.data = data
        self.ecfg = ecfg
        self.checkpoint_path = Path(checkpoint_path)
        self.fingerprint = fingerprint
        self.device = device
        self.rank, self.world = _rank_world()
        self.train_idx, self.val_idx = split_indices(data.n, ecfg.val_fraction, ecfg.seed)
        self.model = build_emulator(data, ecfg, self.train_idx)
        self._latest: dict[str, Any] | None = None
        self._prepare_tensors()
        self.model.to(device)

    # -- data ---------------------------------------------------------------------------
    def _prepare_tensors(self) -> None:
        data, model, dev = self.data, self.model, self.device
        with torch.no_grad():
            x = model.normalise(torch.as_tensor(data.theta), torch.as_tensor(data.t_true))
            y = (torch.as_tensor(_encode(data.y)) - model.out_mean) / model.out_std
            lv = torch.log(torch.as_tensor(np.maximum(data.var, _MIN_VAR)))
            w = torch.as_tensor(np.maximum(data.n_used - 1, 0), dtype=torch.float64)
        self.x = x.to(dev, torch.float32)
        self.y = y.to(dev, torch.float32)
        self.lv = lv.to(dev, torch.float32)
        self.w = w.to(dev, torch.float32)
        self.sc_mean = model.sc_mean.to(dev, torch.float32)
        self.sc_std = model.sc_std.to(dev, torch.float32)
        self.train_t = torch.as_tensor(self.train_idx, dtype=torch.long)
        # each rank validates a strided share; the sums are all-reduced so every rank takes
        # the same early-stopping decision (no rank may stop alone in DDP)
        self.val_t = torch.as_tensor(self.val_idx[self.rank :: self.world], dtype=torch.long)

    def _losses(
        self, mean_out: torch.Tensor, sc_out: torch.Tensor | None, idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        mse = ((mean_out - self.y[idx]) ** 2).mean()
        if sc_out is None:
            return mse, None
        # chi-square deviance of the sample variance: minimised at the expected variance,
        # weighted by degrees of freedom; zero at a perfect match
        w = self.w[idx]
        log_var = sc_out * self.sc_std + self.sc_mean
        r = self.lv[idx] - log_var
        dev = (torch.exp(r) - r - 1.0) * w
        return mse, dev.sum() / torch.clamp(w.sum(), min=1.0)

    # -- state ----------------------------------------------------------------------------
    def _snapshot(self, epoch: int, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": FORMAT + "-checkpoint",
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "world_size": self.world,
            "model": copy.deepcopy(self.model.nets.state_dict()),
            "ema": [e.detach().clone() for e in self.ema],
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            **copy.deepcopy(extra),
        }

    def save_latest(self, quiet: bool = False) -> bool:
        """Write the state at the end of the last completed epoch (rank 0 only; others and a
        trainer that has not finished an epoch do nothing). Returns whether it wrote."""
        if self.rank != 0 or self._latest is None:
            return False
        _atomic_torch_save(self._latest, self.checkpoint_path)
        (log.debug if quiet else log.info)(
            f"checkpoint: epoch {self._latest['epoch']} -> {self.checkpoint_path}"
        )
        return True

    def _load_checkpoint(self) -> dict[str, Any] | None:
        path = self.checkpoint_path
        if not path.is_file():
            return None
        try:
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a torn or foreign file: say so and start afresh
            log.warning(f"ignoring unreadable checkpoint {path} ({exc.__class__.__name__})")
            return None
        if ckpt.get("fingerprint") != self.fingerprint:
            log.warning(
                f"ignoring checkpoint {path}: it belongs to another grid or emulator settings"
            )
            return None
        if ckpt.get("world_size") != self.world:
            log.info(
                f"resuming a {ckpt.get('world_size')}-process checkpoint with {self.world} "
                "processes: same global batches, but not bitwise the same arithmetic"
            )
        return ckpt

    # -- the loop -------------------------------------------------------------------------
    def run(self, max_epochs_this_session: int | None = None) -> FitOutcome:
        """Train until ``epochs``, early stopping, or ``max_epochs_this_session`` epochs
        (then the state is checkpointed and ``completed`` is False)."""
        from torch.utils.data.distributed import DistributedSampler

        ecfg, dev = self.ecfg, self.device
        nets: nn.Module = self.model.nets
        if self.world > 1:
            from torch.nn.parallel import DistributedDataParallel

            ids = [dev.index] if dev.type == "cuda" else None
            nets = DistributedDataParallel(self.model.nets, device_ids=ids)
        sampler = DistributedSampler(
            range(self.train_t.numel()),
            num_replicas=self.world,
            rank=self.rank,
            shuffle=True,
            seed=ecfg.seed,
            drop_last=False,
        )
        per_rank = max(1, ecfg.batch_size // self.world)
        steps_per_epoch = math.ceil(len(sampler) / per_rank)
        total_steps = ecfg.epochs * steps_per_epoch
        warmup = max(1, int(_WARMUP_FRACTION * total_steps))

        def lr_factor(step: int) -> float:
            if step < warmup:
                return 0.1 + 0.9 * step / warmup
            p = min(1.0, (step - warmup) / max(1, total_steps - warmup))
            return _FINAL_LR_FACTOR + (1 - _FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * p))

        self.optimizer = torch.optim.AdamW(
            self.model.nets.parameters(), lr=ecfg.learning_rate, weight_decay=ecfg.weight_decay
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lr_factor)
        params = list(self.model.nets.parameters())
        self.ema = [p.detach().clone() for p in params]
        ema_steps = ecfg.ema_epochs * steps_per_epoch
        ema_decay = 1.0 - 1.0 / ema_steps if ema_steps >= 1 else 0.0
        state = {
            "best_val": math.inf,
            "best_epoch": -1,
            "best_model": None,
            "bad_epochs": 0,
            "history": [],
            "train_seconds": 0.0,
        }
        start_epoch = 0
        ckpt = self._load_checkpoint()
        if ckpt is not None:
            self.model.nets.load_state_dict(ckpt["model"])
            self.optimizer.load_state_dict(ckpt["optimizer"])
            self.scheduler.load_state_dict(ckpt["scheduler"])
            self.ema = [e.to(dev) for e in ckpt["ema"]]
            for key in state:
                state[key] = ckpt[key]
            start_epoch = int(ckpt["epoch"])
            log.info(
                f"resuming from {self.checkpoint_path} at epoch {start_epoch} "
                f"(best val loss {state['best_val']:.4g} at epoch {state['best_epoch'] + 1})"
            )
        self._latest = None
        t_session = time.perf_counter()
        t_before = float(state["train_seconds"])
        last_log = -math.inf
        epoch = start_epoch
        stopped_early = state["bad_epochs"] >= ecfg.patience
        session_epochs = 0
        while epoch < ecfg.epochs and not stopped_early:
            if max_epochs_this_session is not None and session_epochs >= max_epochs_this_session:
                break
            t0 = time.perf_counter()
            sampler.set_epoch(epoch)
            order = self.train_t[torch.as_tensor(list(iter(sampler)), dtype=torch.long)]
            nets.train()
            # NCCL reduces only device tensors; on the CPU this is the same thing
            sums = torch.zeros(3, dtype=torch.float64, device=dev)
            for start in range(0, order.numel(), per_rank):
                idx = order[start : start + per_rank].to(dev)
                mean_out, sc_out = nets(self.x[idx])
                mse, sc = self._losses(mean_out, sc_out, idx)
                loss = mse if sc is None else mse + sc
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                # the exponential moving average of the weights is what is validated and
                # kept: it averages out the minibatch noise that the grid's Poisson noise
                # puts into the weights (ramped up so early steps do not linger in it)
                t = self.scheduler.last_epoch
                decay = min(ema_decay, (1.0 + t) / (10.0 + t))
                with torch.no_grad():
                    torch._foreach_lerp_(self.ema, params, 1.0 - decay)
                n_b = idx.numel()
                sums[0] += mse.detach().double() * n_b
                if sc is not None:
                    sums[1] += sc.detach().double() * n_b
                sums[2] += n_b
            val = self._validate()
            if self.world > 1:
                dist.all_reduce(sums)
            train_loss = float(sums[0] / sums[2])
            sc_loss = float(sums[1] / sums[2])
            val_loss, val_rms = val["mse"], val["rms_rel"]
            epoch += 1
            session_epochs += 1
            improved = val_loss < state["best_val"]
            if improved:
                state["best_val"] = val_loss
                state["best_epoch"] = epoch - 1
                state["best_model"] = self._ema_state()
                state["bad_epochs"] = 0
            else:
                state["bad_epochs"] += 1
            stopped_early = state["bad_epochs"] >= ecfg.patience
            state["train_seconds"] = t_before + time.perf_counter() - t_session
            lr = self.optimizer.param_groups[0]["lr"]
            state["history"].append(
                {
                    "epoch": epoch,
                    "loss": train_loss,
                    "scatter_loss": sc_loss,
                    "val_loss": val_loss,
                    "val_rms_rel_orig": val_rms[0],
                    "val_rms_rel_mod": val_rms[1],
                    "lr": lr,
                    "seconds": time.perf_counter() - t0,
                }
            )
            self._latest = self._snapshot(epoch, state)
            if epoch % ecfg.checkpoint_every == 0:
                self.save_latest(quiet=True)
            now = time.perf_counter()
            if self.rank == 0 and (
                now - last_log > 10
                or epoch in (start_epoch + 1, ecfg.epochs)
                or epoch % max(1, ecfg.epochs // 20) == 0
                or stopped_early
            ):
                last_log = now
                per_epoch = (now - t_session) / session_epochs
                eta = per_epoch * (ecfg.epochs - epoch)
                log.info(
                    f"epoch {epoch}/{ecfg.epochs}  loss {train_loss:.4g}  val {val_loss:.4g} "
                    f"(rms rel T1 {100 * val_rms[0]:.3f}%, T1' {100 * val_rms[1]:.3f}%)  "
                    + (f"scatter {sc_loss:.3g}  " if self.model.predicts_scatter else "")
                    + f"lr {lr:.2e}  {'*' if improved else ' '}  "
                    f"{_fmt_seconds(now - t_session)} elapsed, ETA {_fmt_seconds(eta)}"
                )
        completed = epoch >= ecfg.epochs or stopped_early
        if not completed:
            self.save_latest()
            log.info(
                f"stopped after {session_epochs} epoch(s) this session at epoch {epoch}; "
                "run again to continue from the checkpoint"
            )
        else:
            if stopped_early:
                log.info(f"early stop at epoch {epoch}: no improvement for {ecfg.patience} epochs")
            if state["best_model"] is not None:
                self.model.nets.load_state_dict(state["best_model"])
        self.final_digest = _state_digest(self.model.nets.state_dict())
        return FitOutcome(
            completed=completed,
            epochs_run=epoch,
            best_epoch=int(state["best_epoch"]) + 1,
            best_val_loss=float(state["best_val"]),
            train_seconds=float(state["train_seconds"]),
            history=list(state["history"]),
            stopped_early=stopped_early,
        )

    def _ema_state(self) -> dict[str, torch.Tensor]:
        names = [n for n, _ in self.model.nets.named_parameters()]
        return {n: e.detach().clone() for n, e in zip(names, self.ema)}

    @torch.no_grad()
    def _validate(self) -> dict[str, Any]:
        self.model.nets.eval()
        idx = self.val_t.to(self.device)
        out, _ = torch.func.functional_call(self.model.nets, self._ema_state(), (self.x[idx],))
        err = out - self.y[idx]
        # relative error of T1 and T1' from the network's error in log units
        rel = torch.expm1(_decode(err.double() * self.model.out_std.to(self.device)))
        sums = torch.tensor(
            [
                float((err.double() ** 2).sum()),
                float((rel[:, 0] ** 2).sum()),
                float((rel[:, 1] ** 2).sum()),
                float(idx.numel()),
            ],
            dtype=torch.float64,
            device=self.device,
        )
        if self.world > 1:
            dist.all_reduce(sums)
        n = max(float(sums[3]), 1.0)
        return {
            "mse": float(sums[0]) / (2 * n),
            "rms_rel": (math.sqrt(float(sums[1]) / n), math.sqrt(float(sums[2]) / n)),
        }


# --------------------------------------------------------------------------------------------
# the baseline: multilinear interpolation of the grid
# --------------------------------------------------------------------------------------------


class GridInterpolator:
    """Multilinear interpolation of the per-node mean ``log(T/T_true)`` over the grid axes
    (scipy ``RegularGridInterpolator``), in the same coordinates as the emulator's inputs
    (log for T_true and geometric axes). Nodes without usable fits take the value of the
    nearest usable node; single-valued axes are dropped."""

    def __init__(self, data: TrainingData, exclude: np.ndarray | None = None) -> None:
        from scipy.interpolate import RegularGridInterpolator

        self.data = data
        self.node_index, self.values, self.valid = _node_table(data, exclude)
        self.n_filled = int((~self.valid).sum())
        self.keep_dims = [k for k, a in enumerate(data.axes) if a.size > 1]
        coords = [self._axis(k) for k in self.keep_dims]
        values = _fill_nearest(self.values, self.valid, data)
        slicer = tuple(slice(None) if k in self.keep_dims else 0 for k in range(len(data.axes)))
        self._rgi = RegularGridInterpolator(
            coords, values[slicer], method="linear", bounds_error=False, fill_value=None
        )

    def _axis(self, k: int) -> np.ndarray:
        a = self.data.axes[k]
        return np.log(a) if self.data.log_axes[k] else a

    def __call__(self, theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
        """(n, 2) interpolated [T1, T1'] in keV at theta (n, d), t_true (n,) keV."""
        x = self.data.transformed(theta, t_true)[:, self.keep_dims]
        return np.asarray(t_true)[:, None] * np.exp(self._rgi(x))

    def leave_one_out(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Interpolated [T1, T1'] (keV) at grid points ``points`` (indices into the data) as if
        each of them were missing: along every axis where both neighbours are usable, linear
        interpolation between them; averaged over those axes. Returns (pred (n, 2), defined)."""
        shape = self.values.shape[:-1]
        pred = np.zeros((len(points), 2))
        count = np.zeros(len(points))
        multi = self.node_index[points]
        for k in range(len(shape)):
            if shape[k] < 3:
                continue
            coord = self._axis(k)
            lo, hi = multi.copy(), multi.copy()
            lo[:, k] -= 1
            hi[:, k] += 1
            inside = (lo[:, k] >= 0) & (hi[:, k] < shape[k])
            lo_c, hi_c = np.clip(lo[:, k], 0, shape[k] - 1), np.clip(hi[:, k], 0, shape[k] - 1)
            lo[:, k], hi[:, k] = lo_c, hi_c
            v_lo = self.values[tuple(lo.T)]
            v_hi = self.values[tuple(hi.T)]
            ok = inside & self.valid[tuple(lo.T)] & self.valid[tuple(hi.T)]
            x0, x1, x = coord[lo_c], coord[hi_c], coord[multi[:, k]]
            f = np.where(ok, (x - x0) / np.where(ok, x1 - x0, 1.0), 0.0)[:, None]
            est = v_lo + f * (v_hi - v_lo)
            pred += np.where(ok[:, None], est, 0.0)
            count += ok
        defined = count > 0
        y = pred / np.maximum(count, 1)[:, None]
        return self.data.t_true[points][:, None] * np.exp(y), defined


def _node_table(
    data: TrainingData, exclude: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Map the points onto the Cartesian grid: multi-index per point (n, d + 1), node values
    (shape..., 2) of ``y`` and a usable-node mask (False for failed or excluded points)."""
    shape = tuple(a.size for a in data.axes)
    cols = [*data.theta.T, data.t_true]
    multi = np.empty((data.n, len(shape)), dtype=np.int64)
    for k, (axis, col) in enumerate(zip(data.axes, cols)):
        i = np.clip(np.searchsorted(axis, col), 0, axis.size - 1)
        j = np.clip(i - 1, 0, axis.size - 1)
        closer = np.abs(axis[j] - col) < np.abs(axis[i] - col)
        i = np.where(closer, j, i)
        tol = 1e-9 * max(1.0, float(np.abs(axis).max()))
        if np.any(np.abs(axis[i] - col) > tol):
            raise UserError(
                f"grid points do not lie on the grid axis of {(*data.param_names, 't_true')[k]}"
            )
        multi[:, k] = i
    values = np.full((*shape, 2), np.nan)
    valid = np.zeros(shape, dtype=bool)
    use = np.ones(data.n, bool) if exclude is None else ~np.asarray(exclude, bool)
    values[tuple(multi[use].T)] = data.y[use]
    valid[tuple(multi[use].T)] = True
    return multi, values, valid


def _fill_nearest(values: np.ndarray, valid: np.ndarray, data: TrainingData) -> np.ndarray:
    if valid.all():
        return values
    from scipy.spatial import cKDTree

    grids = np.meshgrid(
        *[np.linspace(0, 1, a.size) if a.size > 1 else np.zeros(1) for a in data.axes],
        indexing="ij",
    )
    coords = np.stack([g.ravel() for g in grids], axis=-1)
    flat_valid = valid.ravel()
    tree = cKDTree(coords[flat_valid])
    _, nearest = tree.query(coords[~flat_valid])
    out = values.reshape(-1, 2).copy()
    out[~flat_valid] = out[flat_valid][nearest]
    return out.reshape(values.shape)


# --------------------------------------------------------------------------------------------
# off-grid check points
# --------------------------------------------------------------------------------------------


def offgrid_design(
    bounds: np.ndarray, log_axes: tuple[bool, ...], n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """``n`` scrambled-Sobol points strictly inside the grid bounds (uniform in the emulator's
    input coordinates: log for T_true and geometric axes). Returns theta (n, d), t_true (n,)."""
    from scipy.stats import qmc

    from xrmodifier_hpc.config.grid import OFFGRID_STREAM

    bounds = np.asarray(bounds, np.float64)
    dim = bounds.shape[0]
    if n == 0:
        return np.empty((0, dim - 1)), np.empty(0)
    sobol = qmc.Sobol(dim, scramble=True, seed=np.random.default_rng([seed, OFFGRID_STREAM]))
    u = sobol.random_base2(max(1, math.ceil(math.log2(n))))[:n]
    u = np.clip(u, 1e-6, 1 - 1e-6)
    mask = np.asarray(log_axes, bool)
    lo, hi = bounds[:, 0].copy(), bounds[:, 1].copy()
    lo[mask], hi[mask] = np.log(lo[mask]), np.log(hi[mask])
    x = lo + u * (hi - lo)
    x[:, mask] = np.exp(x[:, mask])
    x = np.clip(x, bounds[:, 0], bounds[:, 1])
    return x[:, :-1], x[:, -1]


def simulate_offgrid(
    cfg: Config, theta: np.ndarray, t_true: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Noise-free (asimov) T1, T1' (n, 2) keV at the given points, and which are usable.

    Results are cached in the work folder, keyed by everything that determines them, so that
    retraining with other emulator settings does not simulate again.
    """
    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.backends.base import STATUS_UNUSABLE
    from xrmodifier_hpc.config.grid import OFFGRID_STREAM

    key = hashlib.sha256(
        cfg.simulation_fingerprint().encode()
        + np.ascontiguousarray(theta, np.float64).tobytes()
        + np.ascontiguousarray(t_true, np.float64).tobytes()
    ).hexdigest()
    cache = cfg.workdir / OFFGRID_CACHE_NAME
    if cache.is_file():
        try:
            with np.load(cache) as z:
                if str(z["key"]) == key:
                    log.info(f"off-grid truth: {t_true.size} asimov points from {cache}")
                    return z["truth"], z["usable"]
        except (OSError, KeyError, ValueError):
            pass
    n = t_true.size
    truth = np.full((n, 2), np.nan)
    usable = np.zeros(n, bool)
    index = np.arange(n)
    chunk = max(1, cfg.simulation.chunk_size)
    t0 = time.perf_counter()
    with make_backend(
        cfg, mode="asimov", realisations=1, stream=OFFGRID_STREAM, curves=False
    ) as backend:
        for s in range(0, n, chunk):
            sl = slice(s, min(n, s + chunk))
            res = backend.run(theta[sl], t_true[sl], index[sl])
            truth[sl, 0] = res.t_fit_orig[:, 0]
            truth[sl, 1] = res.t_fit_mod[:, 0]
            bad = (res.status[:, 0, :] & STATUS_UNUSABLE) != 0
            usable[sl] = ~bad.any(axis=-1) & np.isfinite(truth[sl]).all(axis=-1)
            done = sl.stop
            el = time.perf_counter() - t0
            log.info(
                f"off-grid truth: {done}/{n} asimov points  {_fmt_seconds(el)} elapsed, "
                f"ETA {_fmt_seconds(el / done * (n - done))}"
            )
    with replacing(cache, suffix=".npz") as tmp:
        np.savez(tmp, key=np.array(key), truth=truth, usable=usable)
    return truth, usable


def rms_rel(pred: np.ndarray, ref: np.ndarray) -> dict[str, float | None]:
    """RMS of (pred - ref)/ref per output column, as fractions, keyed by output name."""
    if len(ref) == 0:
        return {name: None for name in _OUTPUTS}
    rel = (np.asarray(pred) - np.asarray(ref)) / np.asarray(ref)
    return {name: float(np.sqrt(np.mean(rel[:, k] ** 2))) for k, name in enumerate(_OUTPUTS)}


@torch.no_grad()
def _predict(model: Emulator, theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
    m = copy.deepcopy(model).to(torch.device("cpu"), torch.float64).eval()
    return m(
        torch.as_tensor(theta, dtype=torch.float64), torch.as_tensor(t_true, dtype=torch.float64)
    ).numpy()


def evaluate(
    cfg: Config | None,
    data: TrainingData,
    model: Emulator,
    val_idx: np.ndarray,
    offgrid_points: int,
) -> tuple[dict[str, Any], dict[str, np.ndarray] | None]:
    """Held-out and off-grid accuracy of the emulator next to grid interpolation.

    Held-out: the validation points (never used for gradient steps, only to pick the best
    epoch) against their own mean over realisations; the interpolator predicts each of them
    leave-one-out from its grid neighbours. Off-grid: ``offgrid_points`` fresh points, truth
    from asimov fits (needs ``cfg``); the interpolator uses every grid node.
    Returns the metrics sections "heldout" and "offgrid" and the off-grid arrays.
    """
    ref_val = data.t_true[val_idx][:, None] * np.exp(data.y[val_idx])
    excluded = np.zeros(data.n, bool)
    excluded[val_idx] = True
    interp_loo = GridInterpolator(data, exclude=excluded)
    loo_pred, defined = interp_loo.leave_one_out(val_idx)
    emu_val = _predict(model, data.theta[val_idx], data.t_true[val_idx])
    heldout = {
        "n_points": int(defined.sum()),
        "emulator": rms_rel(emu_val[defined], ref_val[defined]),
        "interpolator": rms_rel(loo_pred[defined], ref_val[defined]),
        "reference": "grid mean over usable realisations at validation points (not used for "
        "gradient steps); interpolator leave-one-out from grid neighbours",
    }
    offgrid: dict[str, Any] = {
        "n_points": 0,
        "n_requested": int(offgrid_points),
        "emulator": rms_rel(np.empty((0, 2)), np.empty((0, 2))),
        "interpolator": rms_rel(np.empty((0, 2)), np.empty((0, 2))),
    }
    arrays = None
    if offgrid_points > 0 and cfg is not None:
        theta, t_true = offgrid_design(
            data.bounds, data.log_axes, offgrid_points, cfg.simulation.seed
        )
        truth, usable = simulate_offgrid(cfg, theta, t_true)
        emu = _predict(model, theta, t_true)
        interp = GridInterpolator(data)(theta, t_true)
        edges = np.geomspace(*data.bounds[-1], 5)
        by_t = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            sel = usable & (t_true >= lo) & (t_true <= hi)
            by_t.append(
                {
                    "t_true": [float(lo), float(hi)],
                    "n_points": int(sel.sum()),
                    "emulator": rms_rel(emu[sel], truth[sel]),
                    "interpolator": rms_rel(interp[sel], truth[sel]),
                }
            )
        offgrid.update(
            n_points=int(usable.sum()),
            n_failed=int((~usable).sum()),
            emulator=rms_rel(emu[usable], truth[usable]),
            interpolator=rms_rel(interp[usable], truth[usable]),
            by_t_true=by_t,
            truth="asimov (noise-free) fits at scrambled-Sobol points strictly inside the grid",
        )
        arrays = {
            "theta": theta,
            "t_true": t_true,
            "truth": truth,
            "emulator": emu,
            "interpolator": interp,
            "usable": usable,
        }
    return {"heldout": heldout, "offgrid": offgrid}, arrays


# --------------------------------------------------------------------------------------------
# save / load
# --------------------------------------------------------------------------------------------


def save(model: Emulator, path: str | Path) -> Path:
    """Write ``model`` (weights, normalisation, names, bounds, metrics, config, off-grid
    points) to ``path`` atomically."""
    path = Path(path)
    nets_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "spec": model.spec(),
        "state": nets_state,
        "metrics": json.dumps(model.metrics),
        "config_text": model.config_text,
        "offgrid": (
            {k: torch.as_tensor(v) for k, v in model.offgrid.items()}
            if model.offgrid is not None
            else None
        ),
    }
    _atomic_torch_save(payload, path)
    return path


def load(
    path: str | Path, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Emulator:
    """The trained emulator from ``emulator.pt``, in eval mode, weights frozen (gradients
    still flow to theta and t_true). Raises :class:`UserError` for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise UserError("no emulator here: run `xrmodifier train CONFIG` first", str(path))
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserError(
            f"not a readable emulator file ({exc.__class__.__name__}); retrain with "
            "`xrmodifier train CONFIG`",
            str(path),
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise UserError("not an xrmodifier emulator file", str(path))
    if payload.get("version", 0) > FORMAT_VERSION:
        raise UserError(
            f"emulator format {payload['version']} is newer than this package reads "
            f"({FORMAT_VERSION}): upgrade xrmodifier",
            str(path),
        )
    model = Emulator.from_spec(payload["spec"])
    model.load_state_dict(payload["state"])
    model.metrics = json.loads(payload["metrics"])
    model.config_text = payload["config_text"]
    if payload.get("offgrid") is not None:
        model.offgrid = {k: v.numpy() for k, v in payload["offgrid"].items()}
    model.to(device=torch.device(device), dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def metrics_path(cfg: Config) -> Path:
    """``emulator_metrics.json`` beside ``emulator.pt``."""
    return cfg.emulator_path.with_name(METRICS_NAME)


def checkpoint_path(cfg: Config) -> Path:
    return cfg.workdir / CHECKPOINT_NAME


def discard_checkpoint(cfg: Config) -> bool:
    """Remove a training checkpoint so that the next run starts afresh. True if one existed."""
    path = checkpoint_path(cfg)
    if path.is_file():
        path.unlink()
        return True
    return False


# --------------------------------------------------------------------------------------------
# the stage
# --------------------------------------------------------------------------------------------


@dataclass
class TrainResult:
    """What one process of ``train`` ends with. ``completed`` False: stopped by a session limit
    (the checkpoint holds the state). Paths and metrics are set on rank 0 when completed."""

    completed: bool
    rank: int
    world_size: int
    epochs_run: int
    weights_digest: str
    device: str
    first_loss: float | None = None
    last_loss: float | None = None
    best_val_loss: float | None = None
    emulator_path: Path | None = None
    metrics_path: Path | None = None
    metrics: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("emulator_path", "metrics_path"):
            out[key] = str(out[key]) if out[key] is not None else None
        return out


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """CUDA (the local rank's GPU) when asked or available under "auto", else the CPU."""
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("emulator.device is 'cuda' but torch sees no GPU here", "[emulator.device]")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def _set_threads(ecfg: EmulatorConfig) -> int:
    # [emulator] threads when above 0, else the cores granted to this process, shared among
    # the DDP processes on its node (OpenMP threads that share cores spin and slow a step 10x)
    from xrmodifier_hpc.runtime.environment import torch_distributed
    from xrmodifier_hpc.runtime.threads import configure_threads

    denv = torch_distributed()
    ranks = denv.world_size if denv else 1
    key = "[emulator] threads"
    return configure_threads(
        ranks=ranks, config_threads=ecfg.threads, config_key=key, torch=True
    ).threads


def training_fingerprint(data: TrainingData, ecfg: EmulatorConfig) -> str:
    """Identifies what a checkpoint may be resumed with: the data and the training settings
    (not the ones that only affect bookkeeping)."""
    settings = dataclasses.asdict(ecfg)
    for key in ("checkpoint_every", "offgrid_points", "threads", "device"):
        settings.pop(key, None)
    blob = json.dumps(settings, sort_keys=True, default=str) + data.digest()
    return hashlib.sha256(blob.encode()).hexdigest()


def train(
    cfg: Config,
    *,
    max_epochs_this_session: int | None = None,
    register_saver: Callable[[Callable[[], bool]], None] | None = None,
) -> TrainResult:
    """The ``train`` stage in this process: fit the emulator to ``grid.h5`` and, on rank 0,
    measure it and write ``emulator.pt`` and ``emulator_metrics.json`` to the work folder.

    Runs as one rank of a DDP group when ``torch.distributed`` is initialised (see
    :mod:`launch`). ``register_saver`` receives a function that writes the latest
    epoch-boundary state to the checkpoint (for preemption handlers).
    """
    from xrmodifier_hpc.runtime.environment import torch_distributed

    ecfg = cfg.emulator
    rank, world = _rank_world()
    denv = torch_distributed()
    local_rank = denv.local_rank if denv else 0
    device = pick_device(ecfg.device, local_rank)
    threads = _set_threads(ecfg)
    data = load_training_data(cfg)
    if rank == 0:
        log.info(
            f"training data: {data.n} of {data.n_grid_points} grid points "
            f"({data.n_excluded} left out: no usable fit for T1 or T1'; "
            f"{data.n_realisations_excluded} points lost some realisations to failed fits); "
            f"device {device}, {world} process(es), {threads} thread(s) each"
        )
    trainer = Trainer(data, ecfg, checkpoint_path(cfg), training_fingerprint(data, ecfg), device)
    if register_saver is not None:
        register_saver(trainer.save_latest)
    outcome = trainer.run(max_epochs_this_session)
    result = TrainResult(
        completed=outcome.completed,
        rank=rank,
        world_size=world,
        epochs_run=outcome.epochs_run,
        weights_digest=trainer.final_digest,
        device=str(device),
        first_loss=outcome.history[0]["loss"] if outcome.history else None,
        last_loss=outcome.history[-1]["loss"] if outcome.history else None,
        best_val_loss=outcome.best_val_loss,
    )
    if not outcome.completed or rank != 0:
        return result
    model = trainer.model.to("cpu")
    metrics, arrays = evaluate(cfg, data, model, trainer.val_idx, ecfg.offgrid_points)
    metrics["training"] = {
        "epochs_run": outcome.epochs_run,
        "best_epoch": outcome.best_epoch,
        "best_val_loss": outcome.best_val_loss,
        "stopped_early": outcome.stopped_early,
        "train_seconds": outcome.train_seconds,
        "world_size": world,
        "device": str(device),
        "n_train": int(trainer.train_idx.size),
        "n_val": int(trainer.val_idx.size),
        "n_excluded_failed": data.n_excluded,
        "n_realisations_excluded": data.n_realisations_excluded,
        "final_val_rms_rel": {
            "t_fit_orig": outcome.history[-1]["val_rms_rel_orig"] if outcome.history else None,
            "t_fit_mod": outcome.history[-1]["val_rms_rel_mod"] if outcome.history else None,
        },
    }
    off = metrics["offgrid"]["emulator"]
    metrics["target"] = {
        "offgrid_rms_rel": TARGET_RMS_REL,
        "met": bool(
            metrics["offgrid"]["n_points"] > 0
            and all(v is not None and v < TARGET_RMS_REL for v in off.values())
        ),
    }
    model.metrics = metrics
    model.config_text = cfg.text
    model.offgrid = arrays
    emu_path = save(model, cfg.emulator_path)
    met_path = metrics_path(cfg)
    write_text(met_path, json.dumps(metrics, indent=2) + "\n")
    discard_checkpoint(cfg)
    log.info(f"wrote {emu_path} and {met_path}")
    result.emulator_path = emu_path
    result.metrics_path = met_path
    result.metrics = metrics
    return result


def describe_metrics(metrics: dict[str, Any]) -> str:
    """A short table of the accuracy metrics: RMS relative error, emulator vs interpolation."""

    def pct(v: float | None) -> str:
        return "n/a" if v is None else f"{100 * v:.3f}%"

    t1p = "T1' (t_fit_mod)"
    lines = [f"{'RMS relative error':40s}{'T1 (t_fit_orig)':>17s}{t1p:>18s}"]
    for section, label in (("heldout", "held-out"), ("offgrid", "off-grid (asimov)")):
        sec = metrics.get(section, {})
        for who in ("emulator", "interpolator"):
            vals = sec.get(who, {})
            head = f"{label} n={sec.get('n_points', 0)}" if who == "emulator" else ""
            lines.append(
                f"{head:27s}{who:13s}{pct(vals.get('t_fit_orig')):>17s}"
                f"{pct(vals.get('t_fit_mod')):>18s}"
            )
    tr = metrics.get("training", {})
    target = metrics.get("target", {})
    lines.append(
        f"training: {tr.get('epochs_run')} epochs (best {tr.get('best_epoch')}), "
        f"{tr.get('n_train')} train / {tr.get('n_val')} validation points, "
        f"{tr.get('n_excluded_failed')} left out (failed fits), "
        f"{_fmt_seconds(float(tr.get('train_seconds', float('nan'))))} on "
        f"{tr.get('world_size')} x {tr.get('device')}"
    )
    if target:
        verdict = "met" if target.get("met") else "NOT met"
        lines.append(
            f"off-grid target RMS < {100 * target['offgrid_rms_rel']:.1f}% for T1 and T1': "
            f"{verdict}"
        )
    return "\n".join(lines)
