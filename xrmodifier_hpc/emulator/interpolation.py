"""The baseline the emulator is judged against: multilinear interpolation of the grid."""

from __future__ import annotations

import numpy as np

from xrmodifier_hpc.emulator.data import TrainingData
from xrmodifier_hpc.errors import UserError


class GridInterpolator:
    """Multilinear interpolation of the per-node mean ``log(T/T_true)`` over the grid axes.

    Uses scipy's ``RegularGridInterpolator`` in the emulator's input coordinates (log for
    T_true and geometric axes). Nodes without usable fits take the value of the nearest
    usable node; single-valued axes are dropped.

    Parameters
    ----------
    data : TrainingData
        The grid's targets.
    exclude : numpy.ndarray, optional
        (n,) bool: points to treat as missing (e.g. the validation split).

    Raises
    ------
    UserError
        When the points do not lie on the grid axes.
    """

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
        """Return interpolated temperatures.

        Outside the grid the interpolation extrapolates linearly (no bounds error).

        Parameters
        ----------
        theta : numpy.ndarray
            (n, d) modifier parameters, physical units.
        t_true : numpy.ndarray
            (n,) true temperatures, keV.

        Returns
        -------
        numpy.ndarray
            (n, 2) [T1, T1'] keV.
        """
        x = self.data.transformed(theta, t_true)[:, self.keep_dims]
        return np.asarray(t_true)[:, None] * np.exp(self._rgi(x))

    def leave_one_out(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return interpolated temperatures at grid points as if each of them were missing.

        Along every axis where both neighbours are usable, linear interpolation between
        them; averaged over those axes.

        Parameters
        ----------
        points : numpy.ndarray
            (m,) int indices into the data.

        Returns
        -------
        pred : numpy.ndarray
            (m, 2) [T1, T1'] keV.
        defined : numpy.ndarray
            (m,) bool: whether some axis had two usable neighbours.
        """
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
    """Map the points onto the Cartesian grid.

    Returns the multi-index per point (n, d + 1), the node values (shape..., 2) of ``y`` and
    a usable-node mask (False for failed or excluded points).

    Raises
    ------
    UserError
        When a point does not lie on a grid axis (relative tolerance 1e-9).
    """
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
