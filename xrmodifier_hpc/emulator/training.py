"""The training loop, one process or one rank of a DDP group.

Under ``torch.distributed`` (set up by ``runtime.launch``) the networks are wrapped in DDP and
each rank draws its share of every global batch through a ``DistributedSampler``; the global
batch is ``batch_size`` whatever the world size, so one process and N processes see the same
batches. AdamW (Loshchilov & Hutter 2019), linear warm-up then cosine learning rate
(Loshchilov & Hutter 2017), an exponential moving average of the weights that is what is
validated and kept, early stopping on the validation split, checkpoints every
``checkpoint_every`` epochs and on request (preemption), and a resume that is bitwise
identical on the same machine and thread count. Nothing here knows about Slurm or backends.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from xrmodifier_hpc.config import EmulatorConfig
from xrmodifier_hpc.emulator.data import TrainingData, split_indices
from xrmodifier_hpc.emulator.model import MIN_VAR, build_emulator, decode, encode
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.atomic import write_bytes
from xrmodifier_hpc.runtime.environment import torch_distributed
from xrmodifier_hpc.runtime.threads import configure_threads

log = logging.getLogger("xrmodifier")

#: the ``format`` of a training checkpoint file
CHECKPOINT_FORMAT = "xrmodifier-emulator-checkpoint"
# warm-up over the first few percent of steps avoids AdamW's large first steps on a fresh
# net; the cosine then ends at 1% of the peak so the last epochs average the grid noise
WARMUP_FRACTION = 0.03
FINAL_LR_FACTOR = 0.01


@dataclass
class FitOutcome:
    """What :meth:`Trainer.run` ends with.

    Parameters
    ----------
    completed : bool
        False when stopped by ``max_epochs_this_session`` (the checkpoint holds the state).
    epochs_run : int
        Epochs trained, earlier sessions included.
    best_epoch : int
        The 1-based epoch whose weight average is kept.
    best_val_loss : float
        Its validation loss.
    train_seconds : float
        Wall time of the loop over all sessions, s.
    history : list of dict
        Per epoch: loss, scatter_loss, val_loss, val_rms_rel_orig/mod, lr, seconds.
    stopped_early : bool
        Whether early stopping ended the training.
    """

    completed: bool
    epochs_run: int
    best_epoch: int
    best_val_loss: float
    train_seconds: float
    history: list[dict[str, float]]
    stopped_early: bool = False


@dataclass
class _Progress:
    """What a checkpoint carries besides the weights and optimiser (the keys it stores)."""

    best_val: float = math.inf
    best_epoch: int = -1
    best_model: dict[str, torch.Tensor] | None = None
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


@dataclass
class _Schedule:
    """Batching and the step schedule, the same on every rank."""

    sampler: Any
    per_rank: int
    steps_per_epoch: int
    total_steps: int
    warmup: int
    ema_decay: float

    def lr_factor(self, step: int) -> float:
        if step < self.warmup:
            return 0.1 + 0.9 * step / self.warmup
        p = min(1.0, (step - self.warmup) / max(1, self.total_steps - self.warmup))
        return FINAL_LR_FACTOR + (1 - FINAL_LR_FACTOR) * 0.5 * (1 + math.cos(math.pi * p))


def rank_world() -> tuple[int, int]:
    """Return the rank of this process and the world size of ``torch.distributed``.

    (0, 1) when ``torch.distributed`` is not available or not initialised.

    Returns
    -------
    tuple of int
        (rank, world_size).
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """Return the SHA-256 of a state dict's names and bytes (to compare weights bitwise).

    Parameters
    ----------
    state : dict of str to torch.Tensor
        A ``state_dict()`` (tensors on any device).

    Returns
    -------
    str
        Hex digest over the keys in sorted order.
    """
    h = hashlib.sha256()
    for key in sorted(state):
        h.update(key.encode())
        h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Save ``obj`` with ``torch.save`` to a temporary file renamed into place.

    Parameters
    ----------
    obj : object
        What to save (anything ``torch.save`` accepts).
    path : Path
        Destination; replaced only when the new file is complete.
    """
    buf = io.BytesIO()
    torch.save(obj, buf)
    write_bytes(path, buf.getvalue())


def format_seconds(s: float) -> str:
    """Format a duration for log lines: ``42s``, ``3m07s``, ``2h05m`` (``?`` when not finite).

    Parameters
    ----------
    s : float
        Duration, s.

    Returns
    -------
    str
        From the duration rounded to whole seconds: ``Ns`` below a minute, ``NmSSs`` below
        an hour, else ``NhMMm`` (seconds dropped).
    """
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def pick_device(requested: str = "auto", local_rank: int = 0) -> torch.device:
    """Return the torch device to train on.

    Parameters
    ----------
    requested : {"auto", "cpu", "cuda"}
        ``[emulator] device``: "auto" takes CUDA when torch sees a GPU.
    local_rank : int
        This process's rank on its node (its GPU, modulo the GPUs visible).

    Returns
    -------
    torch.device
        ``cpu``, or ``cuda:<local_rank modulo the visible GPUs>``.

    Raises
    ------
    UserError
        When "cuda" is requested and torch sees no GPU.
    """
    if requested == "cpu" or (requested == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise UserError("emulator.device is 'cuda' but torch sees no GPU here", "[emulator.device]")
    return torch.device("cuda", local_rank % torch.cuda.device_count())


def set_threads(ecfg: EmulatorConfig) -> int:
    """Set torch's intra-op (and BLAS) threads for training.

    ``[emulator] threads`` when above 0, else the cores granted to this process (affinity mask
    or SLURM_CPUS_PER_TASK) shared among the DDP processes on its node
    (:func:`xrmodifier_hpc.runtime.threads.configure_threads`): OpenMP threads that share cores
    with other work spin and slow a step 10 to 20 times.

    Parameters
    ----------
    ecfg : EmulatorConfig
        The settings.

    Returns
    -------
    int
        The number of threads set.
    """
    denv = torch_distributed()
    ranks = denv.world_size if denv else 1
    return configure_threads(
        ranks=ranks, config_threads=ecfg.threads, config_key="[emulator] threads", torch=True
    ).threads


def training_fingerprint(data: TrainingData, ecfg: EmulatorConfig) -> str:
    """Return the fingerprint a checkpoint must match: the data and the settings of training.

    Parameters
    ----------
    data : TrainingData
        The targets.
    ecfg : EmulatorConfig
        The settings (bookkeeping ones do not count: ``checkpoint_every``,
        ``offgrid_points``, ``threads``, ``device``).

    Returns
    -------
    str
        SHA-256 hex digest of the settings (JSON) and :meth:`TrainingData.digest`.
    """
    settings = dataclasses.asdict(ecfg)
    for key in ("checkpoint_every", "offgrid_points", "threads", "device"):
        settings.pop(key, None)
    blob = json.dumps(settings, sort_keys=True, default=str) + data.digest()
    return hashlib.sha256(blob.encode()).hexdigest()


class Trainer:
    """One training run, single process or one rank of a DDP group.

    Parameters
    ----------
    data : TrainingData
        The targets (every rank holds all of them).
    ecfg : EmulatorConfig
        Architecture and training settings.
    checkpoint_path : Path
        Where rank 0 writes its checkpoint (every ``checkpoint_every`` epochs and in
        :meth:`save_latest`); a matching checkpoint there is resumed from.
    fingerprint : str
        Identifies the data and settings a checkpoint may be resumed with
        (:func:`training_fingerprint`).
    device : torch.device
        Where to train.
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
        self.rank, self.world = rank_world()
        self.train_idx, self.val_idx = split_indices(data.n, ecfg.val_fraction, ecfg.seed)
        self.model = build_emulator(data, ecfg, self.train_idx)
        self.final_digest = ""
        self._latest: dict[str, Any] | None = None
        self._prepare_tensors()
        self.model.to(device)

    # -- data ---------------------------------------------------------------------------
    def _prepare_tensors(self) -> None:
        data, model, dev = self.data, self.model, self.device
        with torch.no_grad():
            x = model.normalise(torch.as_tensor(data.theta), torch.as_tensor(data.t_true))
            y = (torch.as_tensor(encode(data.y)) - model.out_mean) / model.out_std
            lv = torch.log(torch.as_tensor(np.maximum(data.var, MIN_VAR)))
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
    def _snapshot(self, epoch: int, progress: _Progress) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "fingerprint": self.fingerprint,
            "epoch": epoch,
            "world_size": self.world,
            "model": copy.deepcopy(self.model.nets.state_dict()),
            "ema": [e.detach().clone() for e in self.ema],
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
            "scheduler": copy.deepcopy(self.scheduler.state_dict()),
            **copy.deepcopy(progress.as_dict()),
        }

    def save_latest(self, quiet: bool = False) -> bool:
        """Write the state at the end of the last completed epoch to the checkpoint.

        Rank 0 only; other ranks, and a trainer that has not finished an epoch, do nothing.

        Parameters
        ----------
        quiet : bool
            Log at debug level instead of info.

        Returns
        -------
        bool
            Whether a checkpoint was written.
        """
        if self.rank != 0 or self._latest is None:
            return False
        atomic_torch_save(self._latest, self.checkpoint_path)
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
        """Train until ``epochs``, early stopping, or this session's epoch limit.

        Parameters
        ----------
        max_epochs_this_session : int, optional
            Stop after this many epochs in this call; the state is checkpointed and the
            outcome's ``completed`` is False.

        Returns
        -------
        FitOutcome
            How the run ended; when completed, ``model`` holds the best epoch's weight
            average.
        """
        nets = self._wrap()
        schedule = self._schedule()
        self._make_optimiser(schedule)
        progress, start_epoch = self._resume()
        self._latest = None
        t_session = time.perf_counter()
        t_before = float(progress.train_seconds)
        last_log = -math.inf
        epoch, session_epochs = start_epoch, 0
        stopped_early = progress.bad_epochs >= self.ecfg.patience
        while epoch < self.ecfg.epochs and not stopped_early:
            if max_epochs_this_session is not None and session_epochs >= max_epochs_this_session:
                break
            t0 = time.perf_counter()
            losses = self._train_epoch(nets, schedule, epoch)
            val = self._validate()
            epoch += 1
            session_epochs += 1
            improved = self._record(progress, epoch, losses, val, time.perf_counter() - t0)
            stopped_early = progress.bad_epochs >= self.ecfg.patience
            progress.train_seconds = t_before + time.perf_counter() - t_session
            self._latest = self._snapshot(epoch, progress)
            if epoch % self.ecfg.checkpoint_every == 0:
                self.save_latest(quiet=True)
            now = time.perf_counter()
            if self.rank == 0 and (
                now - last_log > 10
                or epoch in (start_epoch + 1, self.ecfg.epochs)
                or epoch % max(1, self.ecfg.epochs // 20) == 0
                or stopped_early
            ):
                last_log = now
                self._log_epoch(progress, epoch, improved, now - t_session, session_epochs)
        return self._finish(progress, epoch, session_epochs, stopped_early)

    def _wrap(self) -> nn.Module:
        """Return the networks, wrapped in DDP when there are several ranks."""
        if self.world <= 1:
            return self.model.nets
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device.index] if self.device.type == "cuda" else None
        return DistributedDataParallel(self.model.nets, device_ids=ids)

    def _schedule(self) -> _Schedule:
        from torch.utils.data.distributed import DistributedSampler

        ecfg = self.ecfg
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
        ema_steps = ecfg.ema_epochs * steps_per_epoch
        return _Schedule(
            sampler=sampler,
            per_rank=per_rank,
            steps_per_epoch=steps_per_epoch,
            total_steps=total_steps,
            warmup=max(1, int(WARMUP_FRACTION * total_steps)),
            ema_decay=1.0 - 1.0 / ema_steps if ema_steps >= 1 else 0.0,
        )

    def _make_optimiser(self, schedule: _Schedule) -> None:
        ecfg = self.ecfg
        self.optimizer = torch.optim.AdamW(
            self.model.nets.parameters(), lr=ecfg.learning_rate, weight_decay=ecfg.weight_decay
        )
        # a plain function (not a bound method): LambdaLR then keeps it out of its state
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: schedule.lr_factor(step)
        )
        self.params = list(self.model.nets.parameters())
        self.ema = [p.detach().clone() for p in self.params]

    def _resume(self) -> tuple[_Progress, int]:
        """Load a matching checkpoint into the model, optimiser and schedule, if any."""
        progress = _Progress()
        ckpt = self._load_checkpoint()
        if ckpt is None:
            return progress, 0
        self.model.nets.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.ema = [e.to(self.device) for e in ckpt["ema"]]
        for f in dataclasses.fields(progress):
            setattr(progress, f.name, ckpt[f.name])
        start_epoch = int(ckpt["epoch"])
        log.info(
            f"resuming from {self.checkpoint_path} at epoch {start_epoch} "
            f"(best val loss {progress.best_val:.4g} at epoch {progress.best_epoch + 1})"
        )
        return progress, start_epoch

    def _train_epoch(self, nets: nn.Module, schedule: _Schedule, epoch: int) -> tuple[float, float]:
        """Run one pass over this rank's share of the training points; return the losses.

        The (train, scatter) mean losses over the epoch, all-reduced over the ranks.
        """
        dev = self.device
        schedule.sampler.set_epoch(epoch)
        order = self.train_t[torch.as_tensor(list(iter(schedule.sampler)), dtype=torch.long)]
        nets.train()
        # NCCL reduces only device tensors; on the CPU this is the same thing
        sums = torch.zeros(3, dtype=torch.float64, device=dev)
        for start in range(0, order.numel(), schedule.per_rank):
            idx = order[start : start + schedule.per_rank].to(dev)
            mean_out, sc_out = nets(self.x[idx])
            mse, sc = self._losses(mean_out, sc_out, idx)
            loss = mse if sc is None else mse + sc
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            self.scheduler.step()
            self._update_ema(schedule.ema_decay)
            n_b = idx.numel()
            sums[0] += mse.detach().double() * n_b
            if sc is not None:
                sums[1] += sc.detach().double() * n_b
            sums[2] += n_b
        if self.world > 1:
            dist.all_reduce(sums)
        return float(sums[0] / sums[2]), float(sums[1] / sums[2])

    def _update_ema(self, ema_decay: float) -> None:
        # the exponential moving average of the weights is what is validated and kept: it
        # averages out the minibatch noise that the grid's Poisson noise puts into the
        # weights (ramped up so early steps do not linger in it)
        t = self.scheduler.last_epoch
        decay = min(ema_decay, (1.0 + t) / (10.0 + t))
        with torch.no_grad():
            torch._foreach_lerp_(self.ema, self.params, 1.0 - decay)

    def _record(
        self,
        progress: _Progress,
        epoch: int,
        losses: tuple[float, float],
        val: dict[str, Any],
        seconds: float,
    ) -> bool:
        """Book the finished epoch: best weights, patience, history. True when it improved."""
        improved = val["mse"] < progress.best_val
        if improved:
            progress.best_val = val["mse"]
            progress.best_epoch = epoch - 1
            progress.best_model = self._ema_state()
            progress.bad_epochs = 0
        else:
            progress.bad_epochs += 1
        progress.history.append(
            {
                "epoch": epoch,
                "loss": losses[0],
                "scatter_loss": losses[1],
                "val_loss": val["mse"],
                "val_rms_rel_orig": val["rms_rel"][0],
                "val_rms_rel_mod": val["rms_rel"][1],
                "lr": self.optimizer.param_groups[0]["lr"],
                "seconds": seconds,
            }
        )
        return improved

    def _log_epoch(
        self, progress: _Progress, epoch: int, improved: bool, elapsed: float, session: int
    ) -> None:
        h = progress.history[-1]
        eta = elapsed / session * (self.ecfg.epochs - epoch)
        log.info(
            f"epoch {epoch}/{self.ecfg.epochs}  loss {h['loss']:.4g}  val {h['val_loss']:.4g} "
            f"(rms rel T1 {100 * h['val_rms_rel_orig']:.3f}%, "
            f"T1' {100 * h['val_rms_rel_mod']:.3f}%)  "
            + (f"scatter {h['scatter_loss']:.3g}  " if self.model.predicts_scatter else "")
            + f"lr {h['lr']:.2e}  {'*' if improved else ' '}  "
            f"{format_seconds(elapsed)} elapsed, ETA {format_seconds(eta)}"
        )

    def _finish(
        self, progress: _Progress, epoch: int, session_epochs: int, stopped_early: bool
    ) -> FitOutcome:
        completed = epoch >= self.ecfg.epochs or stopped_early
        if not completed:
            self.save_latest()
            log.info(
                f"stopped after {session_epochs} epoch(s) this session at epoch {epoch}; "
                "run again to continue from the checkpoint"
            )
        else:
            if stopped_early:
                log.info(
                    f"early stop at epoch {epoch}: no improvement for {self.ecfg.patience} epochs"
                )
            if progress.best_model is not None:
                self.model.nets.load_state_dict(progress.best_model)
        self.final_digest = state_digest(self.model.nets.state_dict())
        return FitOutcome(
            completed=completed,
            epochs_run=epoch,
            best_epoch=int(progress.best_epoch) + 1,
            best_val_loss=float(progress.best_val),
            train_seconds=float(progress.train_seconds),
            history=list(progress.history),
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
        rel = torch.expm1(decode(err.double() * self.model.out_std.to(self.device)))
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
