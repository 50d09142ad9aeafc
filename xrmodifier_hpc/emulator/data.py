"""Training data: the grid's per-realisation fits reduced to one target per grid point.

The targets are ``mean_r log(T_r / T_true)`` for [T1, T1'] over a point's usable
realisations (the mean in log, because the network models log T: the fit's upper error grows
with T, so the arithmetic mean would sit above the noise-free fit at high T), with the sample
variance of ``log T_r`` for the scatter network.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from xrmodifier_hpc.config.grid import is_geometric


@dataclass
class TrainingData:
    """Per grid point targets of the emulator.

    Parameters
    ----------
    param_names : tuple of str
        The d modifier parameters, in family order.
    param_units : tuple of str
        Their units.
    axes : tuple of numpy.ndarray
        The d parameter axes, then the T_true axis (keV), physical units.
    log_axes : tuple of bool
        (d + 1,) which axes are normalised and interpolated in log.
    theta : numpy.ndarray
        (n, d) parameters of the kept points.
    t_true : numpy.ndarray
        (n,) their true temperatures, keV.
    y : numpy.ndarray
        (n, 2) ``mean_r log(T_r / T_true)`` for [T1, T1'] over usable realisations.
    var : numpy.ndarray
        (n, 2) sample variance (ddof 1) of ``log T_r`` over usable realisations (0 with one).
    n_used : numpy.ndarray
        (n, 2) int, usable realisations per output.
    n_excluded : int
        Grid points left out: no usable realisation of T1 or of T1'.
    n_realisations_excluded : int
        Kept points that lost some realisation to an unusable fit.
    n_grid_points : int
        Points of the grid before exclusion.
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
        """Number of kept points."""
        return self.t_true.size

    @property
    def bounds(self) -> np.ndarray:
        """(d + 1, 2) physical bounds of the parameters, then of T_true (keV)."""
        return np.array([[a.min(), a.max()] for a in self.axes], dtype=np.float64)

    def transformed(self, theta: np.ndarray, t_true: np.ndarray) -> np.ndarray:
        """Return the inputs with log applied where ``log_axes`` says (not yet scaled).

        Parameters
        ----------
        theta : numpy.ndarray
            (n, d) parameters, physical units (``param_units``).
        t_true : numpy.ndarray
            (n,) true temperatures, keV.

        Returns
        -------
        numpy.ndarray
            (n, d + 1) float64: the parameters then T_true, each in log where its axis is.
        """
        x = np.column_stack([np.asarray(theta, np.float64), np.asarray(t_true, np.float64)])
        mask = np.asarray(self.log_axes)
        x[:, mask] = np.log(x[:, mask])
        return x

    def digest(self) -> str:
        """Return a content hash of the targets: a checkpoint only resumes on the same data.

        Returns
        -------
        str
            SHA-256 hex digest of theta, t_true, y, var and n_used.
        """
        h = hashlib.sha256()
        for arr in (self.theta, self.t_true, self.y, self.var, self.n_used):
            h.update(np.ascontiguousarray(arr).tobytes())
        return h.hexdigest()

    @classmethod
    def from_grid(cls, g: Any, *, unusable: int) -> TrainingData:
        """Reduce a loaded grid to training targets.

        Parameters
        ----------
        g : xrmodifier_hpc.io.store.GridData
            ``store.load_grid``'s result (curves not needed).
        unusable : int
            Status bits that make a fit unusable (the backends' ``STATUS_UNUSABLE``).

        Returns
        -------
        TrainingData
            One target per grid point with a usable fit of T1 and of T1' (see
            :meth:`from_arrays`).
        """
        return cls.from_arrays(
            tuple(g.param_names),
            dict(g.axes),
            g.theta,
            g.t_true,
            g.t_fit_orig,
            g.t_fit_mod,
            g.status,
            unusable=unusable,
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
        *,
        unusable: int,
        param_units: tuple[str, ...] | None = None,
    ) -> TrainingData:
        """Reduce per-realisation fits to per-point targets.

        A fit is left out when its status has an ``unusable`` bit or its temperature is
        non-finite or non-positive; a point is left out when T1 or T1' has no fit left.

        Parameters
        ----------
        param_names : tuple of str
            The d parameter names.
        axes : dict of str to numpy.ndarray
            Each parameter's grid axis and ``"t_true"``'s (keV).
        theta : numpy.ndarray
            (n, d) parameters of the grid points.
        t_true : numpy.ndarray
            (n,) keV.
        t_fit_orig, t_fit_mod : numpy.ndarray
            (n, n_real) T1 and T1', keV.
        status : numpy.ndarray
            (n, n_real, 2) uint8 fit-status bits [orig, mod].
        unusable : int
            Status bits that make a fit unusable (the backends' ``STATUS_UNUSABLE``).
        param_units : tuple of str, optional
            Units of the parameters ('' each when None).

        Returns
        -------
        TrainingData
            The kept points with their targets, and the counts of what was left out.
        """
        theta = np.asarray(theta, np.float64).reshape(len(t_true), len(param_names))
        t_true = np.asarray(t_true, np.float64)
        temps = np.stack([t_fit_orig, t_fit_mod], axis=-1).astype(np.float64)  # (n, r, 2)
        status = np.asarray(status)
        with np.errstate(invalid="ignore"):
            usable = ((status & unusable) == 0) & np.isfinite(temps) & (temps > 0)
        n_used = usable.sum(axis=1)  # (n, 2)
        keep = (n_used > 0).all(axis=1)
        logt = np.log(np.where(usable, temps, 1.0))
        mean_log = np.where(usable, logt, 0.0).sum(axis=1) / np.maximum(n_used, 1)
        y = np.where(keep[:, None], mean_log - np.log(t_true)[:, None], 0.0)
        dev2 = np.where(usable, (logt - mean_log[:, None, :]) ** 2, 0.0).sum(axis=1)
        var = np.where(n_used > 1, dev2 / np.maximum(n_used - 1, 1), 0.0)
        axes_t = tuple(np.asarray(axes[name], np.float64) for name in (*param_names, "t_true"))
        log_axes = tuple(is_geometric(a) for a in axes_t[:-1]) + (True,)
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


def split_indices(n: int, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return train and validation point indices: a seeded permutation, the same on every rank.

    Parameters
    ----------
    n : int
        Number of points (>= 2).
    val_fraction : float
        Fraction held out for validation (at least one point, at most n - 1).
    seed : int
        ``[emulator] seed``.

    Returns
    -------
    train : numpy.ndarray
        Sorted int indices.
    val : numpy.ndarray
        Sorted int indices.
    """
    perm = np.random.default_rng([int(seed), 7]).permutation(n)
    n_val = min(max(1, int(round(val_fraction * n))), n - 1)
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])
