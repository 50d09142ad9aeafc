"""ln(1 + z) of a linear combination of ratio tables, in one compiled pass.

The native backend's modified fit needs ``ln(1 + z)`` with ``z = sum_j a_j r_j`` at every
(fit temperature, channel) of a modified response: 166,000 values per theta on XMM EPIC-pn's
band. numpy takes five float32 passes and a float32 logarithm for it (~3.3 ns per value on
this project's benchmark CPU, an AMD EPYC without AVX-512); this kernel takes one pass.

Where ``-1/2 <= z <= 1`` it uses the series ``ln(1 + z) = 2 atanh(w)``, ``w = z / (2 + z)``,
``2 atanh(w) = 2 (w + w^3/3 + w^5/5 + ...)`` (Abramowitz & Stegun 1964, 4.1.27), to the
w^15 term, in float64: ``|w| <= 1/3`` there, so the terms left out are below
``(1/9)^8 / 17 = 1.4e-9`` of the sum, below float32's rounding (6e-8) of the ratio tables
themselves. A loop of multiplies, adds and one division that the compiler vectorises; any
``z`` outside that range is recomputed with ``math.log1p``.
"""

from __future__ import annotations

import math

import numpy as np

from xrmodifier_hpc.physics.compiled import compiled

#: the series' range of z: |w| = |z / (2 + z)| <= 1/3
SERIES_LOW = -0.5
SERIES_HIGH = 1.0
#: 1 / (2n + 1), n = 0 .. 7: the series' coefficients
_ODD_INVERSES = tuple(1.0 / (2 * n + 1) for n in range(8))


# error_model="numpy": no ZeroDivisionError check per division (2 + z > 0 here), which
# would keep the loop from being vectorised
@compiled(fastmath={"contract"}, error_model="numpy")
def _series(ratio, a, out):  # pragma: no cover - compiled
    # out[i] = 2 atanh(z / (2 + z)) to the w^15 term, z = a ratio[i] (a = 1: z itself, the
    # same bits); ratio and out must not overlap (the vectorised loop would fall back to one
    # value at a time)
    c = _ODD_INVERSES
    for i in range(ratio.size):
        x = a * ratio[i]
        w = x / (2.0 + x)
        w2 = w * w
        p = c[7]
        for n in range(6, -1, -1):  # Horner; a fixed count, unrolled by the compiler
            p = p * w2 + c[n]
        out[i] = 2.0 * w * p


@compiled()
def _exact_outside(ratio, a, out, at):  # pragma: no cover - compiled
    # out[i] = log1p(a ratio[i]) where that lies outside the series' range, i in ``at``
    for n in range(at.size):
        i = at[n]
        x = a * ratio[i]
        if x < SERIES_LOW or x > SERIES_HIGH:
            out[i] = math.log1p(x)


@compiled(fastmath={"contract"})
def _combine(ratios, amplitudes, z):  # pragma: no cover - compiled
    # z[i] = sum_j amplitudes[j] ratios[j, i], in float64, j in order
    for i in range(z.size):
        z[i] = amplitudes[0] * ratios[0, i]
    for j in range(1, amplitudes.size):
        a = amplitudes[j]
        for i in range(z.size):
            z[i] += a * ratios[j, i]


def log1p_combination(
    ratios: np.ndarray,
    amplitudes: np.ndarray,
    out: np.ndarray,
    z: np.ndarray | None = None,
    ratio_range: tuple[np.ndarray, np.ndarray] | None = None,
    wide: np.ndarray | None = None,
) -> np.ndarray:
    """Write ``ln(1 + sum_j a_j r_j)`` into ``out``, elementwise.

    Parameters
    ----------
    ratios : numpy.ndarray
        (J, ...) float32 ratio tables ``r_j`` (dimensionless), finite.
    amplitudes : numpy.ndarray
        (J,) float64 amplitudes ``a_j``.
    out : numpy.ndarray
        float64, C-contiguous, of the shape ``ratios.shape[1:]``; overwritten.
    z : numpy.ndarray, optional
        Scratch for J > 1: float64, C-contiguous, at least ``out.size`` values, not
        overlapping ``out`` (a caller that keeps one spares the page faults of a fresh
        array). With one table (J = 1) z is never formed: ``a_1 r_1`` is taken in the pass.
    ratio_range : tuple of numpy.ndarray, optional
        ((J,), (J,)) the least and greatest value of each table, when the caller knows them
        (with one table they bound z without a pass over it).
    wide : numpy.ndarray, optional
        With one table: the flat indices (int64, ascending) of every element with
        ``|r_1| >= 1/2``, when the caller knows them. For ``|a_1| <= 1`` only those can take
        ``z`` outside the series' range, and only those are looked at again.

    Returns
    -------
    numpy.ndarray
        ``out``. Where ``z = sum_j a_j r_j`` (summed in float64) is in [-1/2, 1]: the series
        above, within 2e-9 (relative) of ``log1p(z)``; elsewhere ``math.log1p(z)`` (NaN
        for z < -1, -inf at -1).

    Raises
    ------
    ValueError
        Shapes that disagree, an ``out`` or ``z`` that is not C-contiguous float64, or a
        ``z`` that is too small or overlaps ``out``.
    """
    amplitudes = np.asarray(amplitudes, dtype=np.float64)
    if ratios.ndim < 1 or ratios.shape[0] != amplitudes.size or ratios.shape[1:] != out.shape:
        raise ValueError(
            f"ratios {ratios.shape}, amplitudes {amplitudes.shape}, out {out.shape} disagree"
        )
    if out.dtype != np.float64 or not out.flags.c_contiguous:
        raise ValueError("out must be C-contiguous float64")
    if z is not None:
        if z.dtype != np.float64 or not z.flags.c_contiguous:
            raise ValueError("z must be C-contiguous float64")
        if z.size < out.size or np.shares_memory(z, out):
            raise ValueError("z must hold out.size values and not overlap out")
    flat = out.reshape(-1)
    if amplitudes.size == 1 and ratios.flags.c_contiguous:
        # one table: z = a r in the pass itself (the same bits as forming z first); its
        # least and greatest value are a times the table's (rounding is monotonic)
        table, a = ratios.reshape(-1), float(amplitudes[0])
        _series(table, a, flat)
        if table.size:
            lo, hi = ratio_range if ratio_range is not None else (table.min(), table.max())
            low, high = sorted((a * float(np.min(lo)), a * float(np.max(hi))))
            if low < SERIES_LOW or high > SERIES_HIGH:
                if wide is None or abs(a) > 1.0:
                    wide = np.arange(table.size)
                _exact_outside(table, a, flat, np.asarray(wide, dtype=np.int64))
        return out
    z = (np.empty(out.size) if z is None else z).reshape(-1)[: out.size]
    _combine(ratios.reshape(amplitudes.size, -1), amplitudes, z)
    _series(z, 1.0, flat)
    if z.size and (z.min() < SERIES_LOW or z.max() > SERIES_HIGH):
        _exact_outside(z, 1.0, flat, np.arange(z.size))
    return out
