"""``emulator.pt``: the trained emulator on disk, and the removal of a training checkpoint.

The file holds the weights, the normalisation, parameter names and bounds, the metrics, the
config it was trained with and the off-grid check.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from xrmodifier_hpc.emulator.model import Emulator
from xrmodifier_hpc.emulator.training import atomic_torch_save
from xrmodifier_hpc.errors import UserError

#: the ``format`` of an emulator file and the newest version this package writes and reads
FORMAT = "xrmodifier-emulator"
FORMAT_VERSION = 1


def save(model: Emulator, path: str | Path) -> Path:
    """Write ``model`` to ``path`` atomically (a temporary file renamed into place).

    Parameters
    ----------
    model : Emulator
        The emulator with its ``metrics``, ``config_text`` and ``offgrid``.
    path : str or Path
        Destination (``Workdir.emulator``).

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    nets_state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "spec": model.spec(),
        "state": nets_state,
        "metrics": json.dumps(model.metrics),
        "config_text": model.config_text,
        "training_fingerprint": getattr(model, "training_fingerprint", None),
        "offgrid": (
            {k: torch.as_tensor(v) for k, v in model.offgrid.items()}
            if model.offgrid is not None
            else None
        ),
    }
    atomic_torch_save(payload, path)
    return path


def load(
    path: str | Path, dtype: torch.dtype = torch.float64, device: str | torch.device = "cpu"
) -> Emulator:
    """Read the trained emulator from ``emulator.pt``, in eval mode with its weights frozen.

    Gradients still flow to ``theta`` and ``t_true``.

    Parameters
    ----------
    path : str or Path
        The file ``train`` wrote.
    dtype : torch.dtype
        Parameter dtype (float64 by default; float32 for speed).
    device : str or torch.device
        Where to put it.

    Returns
    -------
    Emulator
        With ``metrics`` (the JSON form of ``EmulatorMetrics``), ``config_text`` and
        ``offgrid`` restored.

    Raises
    ------
    UserError
        For a missing, unreadable or foreign file, or one written by a newer version.
    """
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
    model.training_fingerprint = payload.get("training_fingerprint")
    if payload.get("offgrid") is not None:
        model.offgrid = {k: v.numpy() for k, v in payload["offgrid"].items()}
    model.to(device=torch.device(device), dtype=dtype)
    model.eval()
    model.requires_grad_(False)
    return model


def discard_checkpoint(path: str | Path) -> bool:
    """Remove a training checkpoint so that the next run starts afresh.

    Parameters
    ----------
    path : str or Path
        The checkpoint (``Workdir.emulator_checkpoint``).

    Returns
    -------
    bool
        Whether one existed.
    """
    path = Path(path)
    if path.is_file():
        path.unlink()
        return True
    return False
