"""Native source models: photon flux integrated over energy bins, in XSPEC's units.

A model is a product of components written as in XSPEC, e.g. ``wabs*bremss`` or
``wabs*atable{apec.fits}``, with exactly one additive component whose normalisation is the
free norm. :meth:`Model.photon_flux` returns photons cm^-2 s^-1 per energy bin at norm = 1;
multiplicative components are bin-averaged transmissions.

Components (each a small class registered by name):

- ``bremss``: XSPEC's thermal bremsstrahlung of an H+He plasma (n_He / n_H = 0.085),
  ``N(E) = norm * [g(E, T, 1) + 4 * 0.085 * g(E, T, 2)] * kT^-1/2 * exp(-E/kT) / E`` with free-free
  Gaunt factors from the polynomial fits of Kellogg, Baldwin & Koch (1975, ApJ 199, 299) to
  Karzas & Latter (1961, ApJS 6, 167), as revised by Molnar & Hughes, the Born approximation
  where gamma^2 = Z^2 Ry / kT < 1e-3 and the Kurucz (1970, SAO SR 309) table where it exceeds
  0.1. As in XSPEC, each bin is integrated with the two-point (trapezoid) rule and the flux is
  zero above 50 kT. With ``norm = 3.02e-15 / (4 pi D^2) * Int n_e n_H dV`` (D in cm).
  ``bremss`` (also ``bremss{xspec}``) is XSPEC's algorithm, regime switches included (its
  shape jumps by up to 3% at kT = 13.6 keV and 0.5% at 0.54 keV); ``bremss{smooth}`` blends
  those switches smoothly (:func:`gaunt_factor`).
- ``wabs``: photo-absorption ``exp(-nH sigma(E))`` with the Morrison & McCammon (1983, ApJ 270,
  119) cross-sections (nH in 1e22 cm^-2), averaged over each bin with the trapezoid rule on
  each side of the absorption edges, as XSPEC does.
- ``atable{file}`` / ``mtable{file}``: XSPEC additive / multiplicative table models
  (OGIP/92-009: PARAMETERS, ENERGIES, SPECTRA), interpolated (linearly, or in log where
  METHOD = 1) in their parameters and carried onto the requested bins as XSPEC does
  (integrating the tabulated flux, or averaging the tabulated factors). The physics gets the
  tables as arrays (:class:`TableData`); ``io.tables`` reads and writes the FITS files, and
  ``xrmodifier tabulate`` makes them from any XSPEC model.

The package embeds the published coefficient tables in ``xrmodifier_hpc/data``.
"""

from __future__ import annotations

import dataclasses
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.special import k0e

from xrmodifier_hpc.config.expression import ExpressionError, split_product
from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.registry import SOURCE_COMPONENTS


class ModelError(UserError):
    """A source-model expression, table file or parameter value is invalid."""


# --------------------------------------------------------------------------------------------
# embedded tables
# --------------------------------------------------------------------------------------------


def _read_table(name: str) -> tuple[list[str], np.ndarray]:
    text = resources.files(__package__).joinpath("data", name).read_text()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    header = lines[0].split(",")
    rows = [[float(v) for v in ln.split(",")] for ln in lines[1:]]
    return header, np.asarray(rows, dtype=np.float64)


@cache
def _kbk_coefficients() -> tuple[np.ndarray, np.ndarray]:
    """Return (a, nodes): a[m, n, k] for gamma1 column m (7), u range n (6), power k (3)."""
    _, rows = _read_table("gaunt_kbk1975.csv")
    a = rows[:, 3:6].reshape(7, 6, 3)
    nodes = rows[::6, 2]
    return a, nodes


@cache
def _kurucz_table() -> np.ndarray:
    """Gaunt factor [k, j] at log10(u) = -4 + k/2 and log10(gamma^2) = -1 + j/2."""
    _, rows = _read_table("gaunt_kurucz.csv")
    return rows[:, 1:]


@cache
def _mm83_bands() -> np.ndarray:
    """Rows (e_lo, e_hi, c0, c1, c2): sigma = (c0 + c1 E + c2 E^2) E^-3 in 1e-24 cm^2."""
    _, rows = _read_table("morrison_mccammon_1983.csv")
    return rows


# --------------------------------------------------------------------------------------------
# physics kernels (pure functions)
# --------------------------------------------------------------------------------------------

#: Rydberg energy (keV) as used by KBK75 and XSPEC: gamma^2 = Z^2 RY / kT
RY_KEV = 0.01358
#: sqrt(3)/pi rounded as in KBK75 (the Born-approximation prefactor)
BORN_PREFACTOR = 0.5513
#: XSPEC switches between the gamma1 column pairs at these values (1.773, not the 1.7783 node)
_GAMMA1_SWITCH = np.array([1.773, 3.0, 5.6234, 10.0, 30.0])
_U_SWITCH = np.array([0.03, 0.30, 1.0, 5.0, 15.0])
#: bremss is zero above this many kT (as in XSPEC)
BREMSS_CUTOFF = 50.0
#: n_He / n_H of XSPEC's bremss
HE_ABUNDANCE = 0.085


#: width (a factor in gamma^2) over which the smooth variant blends two Gaunt-factor regimes
SEAM_BLEND = 1.3
#: gamma^2 where XSPEC switches from the KBK polynomials to the Kurucz table
KURUCZ_SWITCH = 0.1


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def gaunt_factor(energy: np.ndarray, kt: np.ndarray, z: float, seams: str = "xspec") -> np.ndarray:
    """Free-free Gaunt factor for ion charge ``z`` at photon ``energy`` and ``kt`` (both keV).

    Kellogg, Baldwin & Koch (1975) polynomial fits to Karzas & Latter (1961), the Born
    approximation for gamma^2 < 1e-3 and the Kurucz (1970) table for gamma^2 > 0.1, following
    XSPEC's bremss. XSPEC switches regimes abruptly, so its spectrum jumps in shape by up to 3%
    at kT = 13.6 keV (hydrogen: KBK -> Born) and ~0.5% at 0.54 keV (helium: KBK -> Kurucz),
    which puts small steps into C(kT). ``seams="xspec"`` (default) reproduces XSPEC exactly;
    ``seams="smooth"`` blends the two regimes with a C1 smoothstep over a factor
    ``SEAM_BLEND`` in gamma^2 on the KBK side of the Born switch and on the Kurucz side of the
    Kurucz switch (kT 10.4-13.6 keV for H, 0.42-0.54 keV for He). Arrays broadcast; zero where
    E = 0, kT = 0 or E > 50 kT.

    Parameters
    ----------
    energy : numpy.ndarray
        Photon energies in keV, any shape broadcastable with ``kt``.
    kt : numpy.ndarray
        Plasma temperatures kT in keV, broadcastable with ``energy``.
    z : float
        Ion charge (1 for hydrogen, 2 for helium).
    seams : str, optional
        ``"xspec"`` (XSPEC's abrupt regime switches) or ``"smooth"`` (blended).

    Returns
    -------
    numpy.ndarray
        The dimensionless Gaunt factor, float64, of the broadcast shape of ``energy`` and
        ``kt``.

    Raises
    ------
    ValueError
        When ``seams`` is neither ``"smooth"`` nor ``"xspec"``.
    """
    if seams not in ("smooth", "xspec"):
        raise ValueError(f"seams must be 'smooth' or 'xspec', got {seams!r}")
    energy, kt = np.broadcast_arrays(np.asarray(energy, float), np.asarray(kt, float))
    out = np.zeros(energy.shape)
    valid = (kt > 0) & (energy > 0) & (energy <= BREMSS_CUTOFF * kt)
    if not valid.any():
        return out
    e, t = energy[valid], kt[valid]
    u = e / t
    gam = z * z * RY_KEV / t
    g = np.empty(e.shape)

    low_t = gam > KURUCZ_SWITCH
    if low_t.any():
        g[low_t] = _kurucz(u[low_t], gam[low_t])
        if seams == "smooth":
            weight = _smoothstep(np.log(gam[low_t] / KURUCZ_SWITCH) / np.log(SEAM_BLEND))
            blend = weight < 1.0
            if blend.any():
                kbk = _kbk_or_born(u[low_t][blend], gam[low_t][blend], seams)
                g_low = g[low_t]
                g_low[blend] = weight[blend] * g_low[blend] + (1.0 - weight[blend]) * kbk
                g[low_t] = g_low
    rest = ~low_t
    if rest.any():
        g[rest] = _kbk_or_born(u[rest], gam[rest], seams)
    out[valid] = g
    return out


def _kbk_or_born(u: np.ndarray, gam: np.ndarray, seams: str) -> np.ndarray:
    """KBK polynomials where gamma^2 >= 1e-3 (blended into Born near it), else Born."""
    born = BORN_PREFACTOR * k0e(0.5 * u)
    gam1 = np.minimum(gam * 1000.0, 100.0)
    poly = gam1 >= 1.0
    out = born.copy()
    if poly.any():
        kbk = _kbk_polynomial(u[poly], gam1[poly], born[poly])
        if seams == "smooth":
            weight = _smoothstep(np.log(gam1[poly]) / np.log(SEAM_BLEND))
            kbk = weight * kbk + (1.0 - weight) * born[poly]
        out[poly] = kbk
    return out


def _kbk_polynomial(u: np.ndarray, gam1: np.ndarray, born: np.ndarray) -> np.ndarray:
    a, nodes = _kbk_coefficients()
    uc = np.maximum(u, 0.003)  # the fits are not valid below u = 0.003: KBK clamp there
    n = np.searchsorted(_U_SWITCH, uc, side="left")
    m = np.searchsorted(_GAMMA1_SWITCH, gam1, side="left")
    g1 = a[m, n, 0] + a[m, n, 1] * uc + a[m, n, 2] * uc * uc
    g2 = a[m + 1, n, 0] + a[m + 1, n, 1] * uc + a[m + 1, n, 2] * uc * uc
    p = (gam1 - nodes[m]) / (nodes[m + 1] - nodes[m])
    return ((1.0 - p) * g1 + p * g2) * born


def _kurucz(u: np.ndarray, gam: np.ndarray) -> np.ndarray:
    table = _kurucz_table()
    lg, lu = np.log10(gam), np.log10(u)
    j = np.trunc(2.0 * lg + 3.0).astype(np.int64)  # 1-based column, as the published table
    k = np.maximum(np.trunc(2.0 * lu + 9.0).astype(np.int64), 1)
    out = np.zeros(u.shape)
    ok = (j >= 1) & (j < 7) & (k < 12)
    j, k, lg, lu = j[ok], k[ok], lg[ok], lu[ok]
    tj = (lg - (j - 3) / 2.0) / 0.5
    tk = (lu - (k - 9) / 2.0) / 0.5
    j0, k0 = j - 1, k - 1
    out[ok] = (
        (1 - tj) * (1 - tk) * table[k0, j0]
        + tj * (1 - tk) * table[k0, j0 + 1]
        + tj * tk * table[k0 + 1, j0 + 1]
        + (1 - tj) * tk * table[k0 + 1, j0]
    )
    return out


def bremss_density(energy: np.ndarray, kt: np.ndarray, seams: str = "xspec") -> np.ndarray:
    """Return the photon spectrum density of XSPEC's bremss at norm 1.

    ``N(E) = [g(E, T, 1) + 4 * 0.085 * g(E, T, 2)] * kT^-1/2 * exp(-E/kT) / E``, with the
    Gaunt factors of :func:`gaunt_factor`; zero where the Gaunt factor is zero (E = 0,
    kT = 0, E > 50 kT).

    Parameters
    ----------
    energy : numpy.ndarray
        Photon energies in keV, broadcastable with ``kt``.
    kt : numpy.ndarray
        Temperatures kT in keV, broadcastable with ``energy``.
    seams : str, optional
        ``"xspec"`` or ``"smooth"``: see :func:`gaunt_factor`.

    Returns
    -------
    numpy.ndarray
        Photons cm^-2 s^-1 keV^-1 at norm 1, of the broadcast shape of ``energy`` and ``kt``.
    """
    energy, kt = np.broadcast_arrays(np.asarray(energy, float), np.asarray(kt, float))
    gaunt = gaunt_factor(energy, kt, 1.0, seams) + 4.0 * HE_ABUNDANCE * gaunt_factor(
        energy, kt, 2.0, seams
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dens = gaunt * np.exp(-energy / kt) / (energy * np.sqrt(kt))
    return np.where(gaunt > 0, dens, 0.0)


def trapezoid_bins(density_at: callable, e_lo: np.ndarray, e_hi: np.ndarray) -> np.ndarray:
    """Integrate ``density_at(E)`` over each bin with the two-point (trapezoid) rule.

    Each distinct edge is evaluated once (``n_E + 1`` of them where the bins are contiguous).

    Parameters
    ----------
    density_at : callable
        Maps energies (keV) of shape ``(n_points,)`` to densities of shape
        ``(..., n_points)`` (e.g. photons cm^-2 s^-1 keV^-1).
    e_lo, e_hi : numpy.ndarray
        Shape ``(n_E,)``: lower and upper bin edges in keV.

    Returns
    -------
    numpy.ndarray
        Shape ``(..., n_E)``: the integral over each bin, in the density's unit times keV
        (photons cm^-2 s^-1 per bin for a photon density).
    """
    if e_lo.size > 1 and np.array_equal(e_lo[1:], e_hi[:-1]):
        edges = np.append(e_lo, e_hi[-1])
        f = density_at(edges)
        return 0.5 * (f[..., :-1] + f[..., 1:]) * (e_hi - e_lo)
    # runs of contiguous bins (a response's rows that reach a band): each edge once
    edges, at = np.unique(np.concatenate([e_lo, e_hi]), return_inverse=True)
    f = density_at(edges)
    return 0.5 * (f[..., at[: e_lo.size]] + f[..., at[e_lo.size :]]) * (e_hi - e_lo)


def mm83_cross_section(energy: np.ndarray, band: np.ndarray | None = None) -> np.ndarray:
    """Morrison & McCammon (1983) cross-section per H atom in 1e-22 cm^2 (nH unit 1e22).

    ``band`` forces the coefficient row (to take one-sided limits at an edge); by default the
    row with e_lo <= E < e_hi. Zero below 0.0136 keV.

    Parameters
    ----------
    energy : numpy.ndarray
        Photon energies in keV, any shape.
    band : numpy.ndarray or None, optional
        Integer index of the coefficient row per energy (shape of ``energy``); None: the
        band that contains each energy.

    Returns
    -------
    numpy.ndarray
        Cross-section per H atom in 1e-22 cm^2, float64, shape of ``energy``.
    """
    rows = _mm83_bands()
    energy = np.asarray(energy, dtype=np.float64)
    if band is None:
        band = np.clip(np.searchsorted(rows[:, 0], energy, side="right") - 1, 0, len(rows) - 1)
    c0, c1, c2 = rows[band, 2], rows[band, 3], rows[band, 4]
    with np.errstate(divide="ignore", invalid="ignore"):
        sigma = (c0 + energy * (c1 + energy * c2)) / energy**3 * 0.01
    return np.where(energy >= rows[0, 0], sigma, 0.0)


@dataclass(frozen=True)
class _Segments:
    """Sub-intervals of a bin grid split at absorption edges (for bin-averaged transmission)."""

    lo: np.ndarray
    hi: np.ndarray
    band: np.ndarray
    bin_index: np.ndarray
    width: np.ndarray


@lru_cache(maxsize=16)
def _wabs_segments(lo_bytes: bytes, hi_bytes: bytes) -> _Segments:
    e_lo = np.frombuffer(lo_bytes)
    e_hi = np.frombuffer(hi_bytes)
    edges = _mm83_bands()[:, 0]
    seg_lo, seg_hi, seg_bin = [], [], []
    for i, (a, b) in enumerate(zip(e_lo, e_hi)):
        inside = edges[(edges > a) & (edges < b)]
        points = np.concatenate(([a], inside, [b]))
        seg_lo.append(points[:-1])
        seg_hi.append(points[1:])
        seg_bin.append(np.full(points.size - 1, i))
    lo, hi = np.concatenate(seg_lo), np.concatenate(seg_hi)
    band = np.clip(np.searchsorted(edges, lo, side="right") - 1, 0, len(edges) - 1)
    return _Segments(lo, hi, band, np.concatenate(seg_bin), e_hi - e_lo)


def wabs_transmission(e_lo: np.ndarray, e_hi: np.ndarray, nh: np.ndarray) -> np.ndarray:
    """Return the bin-averaged transmission ``exp(-nH sigma_MM83(E))``.

    Each bin is split at the absorption edges inside it and each piece integrated with the
    trapezoid rule, as XSPEC's ``wabs``; a zero-width bin gets the value at its energy.

    Parameters
    ----------
    e_lo, e_hi : numpy.ndarray
        Shape ``(n_E,)``: lower and upper bin edges in keV.
    nh : numpy.ndarray
        Shape ``(n,)`` (or a scalar): hydrogen column densities in 1e22 cm^-2.

    Returns
    -------
    numpy.ndarray
        Shape ``(n, n_E)``: the dimensionless transmission averaged over each bin.
    """
    e_lo = np.ascontiguousarray(e_lo, dtype=np.float64)
    e_hi = np.ascontiguousarray(e_hi, dtype=np.float64)
    nh = np.atleast_1d(np.asarray(nh, dtype=np.float64))
    seg = _wabs_segments(e_lo.tobytes(), e_hi.tobytes())
    # both ends of a segment use the segment's own band: one-sided limits at an edge
    s_lo = mm83_cross_section(seg.lo, seg.band)
    s_hi = mm83_cross_section(seg.hi, seg.band)
    area = 0.5 * (np.exp(-nh[:, None] * s_lo) + np.exp(-nh[:, None] * s_hi)) * (seg.hi - seg.lo)
    out = np.zeros((nh.size, e_lo.size))
    np.add.at(out.T, seg.bin_index, area.T)
    zero = seg.width <= 0  # zero-width bins (ROSAT PSPC responses): the value at that energy
    out /= np.where(zero, 1.0, seg.width)
    if zero.any():
        out[:, zero] = np.exp(-nh[:, None] * mm83_cross_section(e_lo[zero]))
    return out


def _overlap_matrix(src_lo, src_hi, dst_lo, dst_hi):
    """Sparse (n_src, n_dst): the fraction of each source bin inside each destination bin."""
    import scipy.sparse as sp

    points = np.unique(np.concatenate([src_lo, src_hi, dst_lo, dst_hi]))
    a, b = points[:-1], points[1:]
    mid = 0.5 * (a + b)
    i = np.searchsorted(src_lo, mid, side="right") - 1
    j = np.searchsorted(dst_lo, mid, side="right") - 1
    ok = (i >= 0) & (j >= 0)
    ok[ok] &= (mid[ok] < src_hi[i[ok]]) & (mid[ok] < dst_hi[j[ok]])
    frac = (b - a)[ok] / (src_hi - src_lo)[i[ok]]
    return sp.csr_matrix((frac, (i[ok], j[ok])), shape=(src_lo.size, dst_lo.size))


# --------------------------------------------------------------------------------------------
# components
# --------------------------------------------------------------------------------------------


def _register(cls: type[Component]) -> type[Component]:
    """Check that a component class is what ``registry.SOURCE_COMPONENTS`` names it.

    The registry is the one list the config and the parser accept.
    """
    assert cls.name in SOURCE_COMPONENTS, f"{cls.name} is missing from SOURCE_COMPONENTS"
    return cls


class Component(ABC):
    """One factor of a model expression.

    ``evaluate(e_lo, e_hi, values)`` takes bin edges (keV) and parameter values as arrays of
    shape (n,) and returns (n, n_E): photons cm^-2 s^-1 per bin at norm 1 (additive) or a
    dimensionless bin-averaged factor (multiplicative).
    """

    name: ClassVar[str]
    additive: ClassVar[bool]
    param_names: tuple[str, ...]

    @abstractmethod
    def param_range(self, name: str) -> tuple[float, float]:
        """Return the allowed [low, high] of parameter ``name`` (units as the parameter).

        Parameters
        ----------
        name : str
            One of :attr:`param_names`.

        Returns
        -------
        (float, float)
            The lowest and highest allowed value.
        """

    @abstractmethod
    def evaluate(
        self, e_lo: np.ndarray, e_hi: np.ndarray, values: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """Evaluate the component on energy bins for ``n`` parameter sets.

        Parameters
        ----------
        e_lo, e_hi : numpy.ndarray
            Shape ``(n_E,)``: lower and upper bin edges in keV.
        values : mapping of str to numpy.ndarray
            Every name of :attr:`param_names` to its values, shape ``(n,)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, n_E)``: photons cm^-2 s^-1 per bin at norm 1 (additive) or a
            dimensionless bin-averaged factor (multiplicative).
        """

    def describe(self) -> str:
        """Return the component as written in a model expression.

        Returns
        -------
        str
            Its registered name (``wabs``); variants add their ``{...}`` argument.
        """
        return self.name


@_register
class Bremss(Component):
    """XSPEC ``bremss``: thermal bremsstrahlung of an H+He plasma; parameter kT (keV).

    ``bremss`` (and ``bremss{xspec}``) is XSPEC's algorithm, its discontinuous Gaunt-factor
    regime switches included; ``bremss{smooth}`` blends them smoothly (see
    :func:`gaunt_factor`).

    Parameters
    ----------
    seams : str, optional
        The ``{...}`` argument: ``"xspec"`` (default) or ``"smooth"``.

    Raises
    ------
    ModelError
        When ``seams`` is neither.
    """

    name = "bremss"
    additive = True
    param_names = ("kT",)

    def __init__(self, seams: str = "xspec") -> None:
        if seams not in ("smooth", "xspec"):
            raise ModelError(f"bremss takes {{xspec}} or {{smooth}}, not {{{seams}}}")
        self.seams = seams

    def param_range(self, name: str) -> tuple[float, float]:
        """Return the allowed range of kT.

        Parameters
        ----------
        name : str
            ``"kT"``.

        Returns
        -------
        (float, float)
            XSPEC's hard limits, 1e-4 to 200 keV.
        """
        return (1e-4, 200.0)  # XSPEC's hard limits for bremss kT

    def evaluate(self, e_lo, e_hi, values):
        """Integrate the bremss density over each bin (trapezoid rule, as XSPEC).

        Parameters
        ----------
        e_lo, e_hi : numpy.ndarray
            Shape ``(n_E,)``: lower and upper bin edges in keV.
        values : mapping of str to numpy.ndarray
            ``"kT"``: temperatures in keV, shape ``(n,)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, n_E)``: photons cm^-2 s^-1 per bin at norm 1.
        """
        kt = np.asarray(values["kT"], dtype=np.float64)[:, None]
        return trapezoid_bins(lambda e: bremss_density(e[None, :], kt, self.seams), e_lo, e_hi)

    def describe(self) -> str:
        """Return ``bremss`` or ``bremss{smooth}``.

        Returns
        -------
        str
            The component as written in a model expression.
        """
        return "bremss" if self.seams == "xspec" else "bremss{smooth}"


@_register
class Wabs(Component):
    """XSPEC ``wabs``: Morrison & McCammon (1983) absorption; parameter nH (1e22 cm^-2)."""

    name = "wabs"
    additive = False
    param_names = ("nH",)

    def param_range(self, name: str) -> tuple[float, float]:
        """Return the allowed range of nH.

        Parameters
        ----------
        name : str
            ``"nH"``.

        Returns
        -------
        (float, float)
            0 to 1e5, in 1e22 cm^-2.
        """
        return (0.0, 1e5)

    def evaluate(self, e_lo, e_hi, values):
        """Return the bin-averaged transmission (:func:`wabs_transmission`).

        Parameters
        ----------
        e_lo, e_hi : numpy.ndarray
            Shape ``(n_E,)``: lower and upper bin edges in keV.
        values : mapping of str to numpy.ndarray
            ``"nH"``: columns in 1e22 cm^-2, shape ``(n,)``.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, n_E)``: dimensionless transmission per bin.
        """
        nh = np.asarray(values["nH"], dtype=np.float64)
        unique, inverse = np.unique(nh, return_inverse=True)
        return wabs_transmission(e_lo, e_hi, unique)[inverse.ravel()]


@dataclass(frozen=True)
class TableData:
    """The content of an XSPEC table model (OGIP/92-009) as arrays.

    This is what ``atable{...}`` and ``mtable{...}`` compute from. ``io.tables`` reads and
    writes it as FITS.

    Parameters
    ----------
    name : str
        The model name (MODLNAME, at least 2 characters in XSPEC).
    additive : bool
        ADDMODEL: spectra in photons cm^-2 s^-1 per energy bin (``atable``) or dimensionless
        multiplicative factors per bin (``mtable``).
    int_names : tuple of str
        Names of the interpolated parameters, in the order of the SPECTRA rows (the last
        varies fastest).
    int_log : tuple of bool
        Per interpolated parameter: interpolate in log10 of the value (METHOD = 1).
    axes : tuple of ndarray
        Tabulated values of each interpolated parameter, strictly increasing.
    e_lo, e_hi : ndarray, shape (n_E,)
        Energy bins of the spectra (keV), increasing, ``e_lo < e_hi``.
    spectra : ndarray, shape (1 + n_add, *grid shape, n_E)
        The interpolated spectra (INTPSPEC), then one block per additional parameter
        (ADDSPnnn), on the Cartesian grid of ``axes``.
    add_names : tuple of str
        Names of the additional parameters (their spectra are added times their value).
    add_range : dict of str to (float, float)
        Allowed [MINIMUM, MAXIMUM] of each additional parameter.
    redshift : bool
        REDSHIFT: the table gets a redshift parameter ``z`` (XSPEC's name).
    lo_limit, hi_limit : float or None
        LOELIMIT / HIELIMIT: the value below / above the tabulated energies (None: 0 for
        additive tables, 1 for multiplicative ones, as XSPEC).
    source : str
        Where the table came from (a file name), for messages.
    """

    name: str
    additive: bool
    int_names: tuple[str, ...]
    int_log: tuple[bool, ...]
    axes: tuple[np.ndarray, ...]
    e_lo: np.ndarray
    e_hi: np.ndarray
    spectra: np.ndarray
    add_names: tuple[str, ...] = ()
    add_range: Mapping[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    redshift: bool = False
    lo_limit: float | None = None
    hi_limit: float | None = None
    source: str = ""

    @property
    def shape(self) -> tuple[int, ...]:
        """Grid shape: the number of tabulated values of each interpolated parameter."""
        return tuple(int(a.size) for a in self.axes)

    @property
    def param_names(self) -> tuple[str, ...]:
        """Interpolated, then additional parameters, then ``z`` for a REDSHIFT table."""
        return self.int_names + self.add_names + (("z",) if self.redshift else ())

    def validate(self) -> None:
        """Check that the arrays describe one table.

        Raises
        ------
        ModelError
            Empty or repeated parameter names, axes not increasing (or not positive with log
            interpolation), energy bins not increasing, spectra of the wrong shape or with
            non-finite values.
        """
        where = self.source or None
        if len(self.name.strip()) < 2:
            raise ModelError("the model name (MODLNAME) needs at least 2 characters", where)
        if not self.int_names or len(self.int_names) != len(self.axes):
            raise ModelError("a table needs at least one interpolated parameter", where)
        if len(self.int_log) != len(self.int_names):
            raise ModelError("one interpolation method per interpolated parameter", where)
        names = self.param_names
        if any(not n.strip() for n in names):
            raise ModelError("parameter names may not be empty", where)
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ModelError(f"parameter names repeat: {dup}", where)
        for name, axis, log in zip(self.int_names, self.axes, self.int_log):
            if axis.ndim != 1 or axis.size < 1 or not np.all(np.isfinite(axis)):
                raise ModelError(f"parameter {name!r}: VALUE must be finite numbers", where)
            if np.any(np.diff(axis) <= 0):
                raise ModelError(f"parameter {name!r}: VALUE must increase", where)
            if log and axis[0] <= 0:
                raise ModelError(f"parameter {name!r}: log interpolation needs VALUE > 0", where)
        e_lo, e_hi = self.e_lo, self.e_hi
        if (
            e_lo.ndim != 1
            or e_lo.shape != e_hi.shape
            or e_lo.size == 0
            or np.any(e_hi <= e_lo)
            or np.any(np.diff(e_lo) <= 0)
        ):
            raise ModelError("ENERGIES must be increasing bins with ENERG_LO < ENERG_HI", where)
        expected = (1 + len(self.add_names), *self.shape, e_lo.size)
        if self.spectra.shape != expected:
            raise ModelError(
                f"the spectra have shape {self.spectra.shape}; the parameter grid and energies "
                f"need {expected}",
                where,
            )
        if not np.all(np.isfinite(self.spectra)):
            raise ModelError("SPECTRA has non-finite values", where)


class _Table(Component):
    """What additive and multiplicative tables share.

    Parameters, multi-linear interpolation on the parameter grid (XSPEC's OGIPTable: in log10
    of the value where METHOD = 1) and the redshift of the table's energies (E_obs = E_table /
    (1 + z)).
    """

    table_kind: ClassVar[str]

    def __init__(self, data: TableData) -> None:
        data.validate()
        if data.additive != self.additive:
            want = "an additive" if self.additive else "a multiplicative"
            raise ModelError(
                f"ADDMODEL is {'true' if data.additive else 'false'}: {self.table_kind} needs "
                f"{want} table",
                data.source or None,
            )
        self.data = data
        self.param_names = data.param_names
        self._rebin_cache: dict = {}

    def describe(self) -> str:
        return f"{self.table_kind}{{{Path(self.data.source).name or self.data.name}}}"

    def param_range(self, name: str) -> tuple[float, float]:
        d = self.data
        if name in d.int_names:
            axis = d.axes[d.int_names.index(name)]
            return (float(axis[0]), float(axis[-1]))
        if name in d.add_range:
            return tuple(float(v) for v in d.add_range[name])
        return (0.0, 10.0)  # z

    def _limits(self) -> tuple[float, float]:
        default = 0.0 if self.additive else 1.0
        d = self.data
        return (
            default if d.lo_limit is None else float(d.lo_limit),
            default if d.hi_limit is None else float(d.hi_limit),
        )

    def _rebinned(self, e_lo: np.ndarray, e_hi: np.ndarray, z: float) -> np.ndarray:
        """Return all table spectra carried onto the bins [e_lo, e_hi) (keV) at redshift ``z``.

        Cached per grid; shape (1 + n_add, *grid shape, n_E).
        """
        key = (e_lo.tobytes(), e_hi.tobytes(), float(z))
        cached = self._rebin_cache.get(key)
        if cached is None:
            d = self.data
            src_lo, src_hi = d.e_lo / (1 + z), d.e_hi / (1 + z)
            matrix = _overlap_matrix(src_lo, src_hi, e_lo, e_hi)
            flat = d.spectra.reshape(-1, d.e_lo.size)
            cached = np.asarray((matrix.T @ flat.T).T).reshape(*d.spectra.shape[:-1], -1)
            cached = self._finish_rebin(cached, matrix, z)
            below = e_hi <= src_lo[0]
            above = e_lo >= src_hi[-1]
            lo_value, hi_value = self._limits()
            cached[..., below] = lo_value
            cached[..., above] = hi_value
            if len(self._rebin_cache) >= 8:
                self._rebin_cache.pop(next(iter(self._rebin_cache)))
            self._rebin_cache[key] = cached
        return cached

    def _finish_rebin(self, summed: np.ndarray, matrix, z: float) -> np.ndarray:
        """Turn the overlap-weighted sums of table bins into the component's values."""
        raise NotImplementedError

    def evaluate(self, e_lo, e_hi, values):
        d = self.data
        e_lo = np.ascontiguousarray(e_lo, dtype=np.float64)
        e_hi = np.ascontiguousarray(e_hi, dtype=np.float64)
        n = np.atleast_1d(np.asarray(values[d.int_names[0]])).size
        z = np.broadcast_to(np.asarray(values.get("z", 0.0), float), (n,))
        add = [np.broadcast_to(np.asarray(values[a], float), (n,)) for a in d.add_names]
        weights, corners = self._weights(values, n)
        out = np.zeros((n, e_lo.size))
        for r in range(n):
            rebinned = self._rebinned(e_lo, e_hi, z[r])
            for w, idx in zip(weights[r], corners[r]):
                if w == 0.0:
                    continue
                block = rebinned[(slice(None), *idx)]
                out[r] += w * block[0]
                for k in range(len(add)):
                    out[r] += w * add[k][r] * block[1 + k]
        return out

    def _weights(self, values, n) -> tuple[list[list[float]], list[list[tuple[int, ...]]]]:
        """Multi-linear weights and grid corners for each of the n parameter sets."""
        d = self.data
        per_axis = []
        for name, axis, log in zip(d.int_names, d.axes, d.int_log):
            v = np.broadcast_to(np.asarray(values[name], dtype=np.float64), (n,))
            lo, hi = axis[0], axis[-1]
            if np.any((v < lo) | (v > hi)) or not np.all(np.isfinite(v)):
                raise ModelError(
                    f"{name} = {v[(v < lo) | (v > hi) | ~np.isfinite(v)][0]:g} is outside the "
                    f"table's range {lo:g}-{hi:g}",
                    d.source or None,
                )
            if axis.size == 1:
                per_axis.append((np.zeros(n, int), np.zeros(n)))
                continue
            xa, xv = (np.log10(axis), np.log10(v)) if log else (axis, v)
            i = np.clip(np.searchsorted(xa, xv, side="right") - 1, 0, axis.size - 2)
            f = (xv - xa[i]) / (xa[i + 1] - xa[i])
            per_axis.append((i, f))
        weights, corners = [], []
        dims = len(per_axis)
        for r in range(n):
            w_r, c_r = [], []
            for bits in range(2**dims):
                w, idx = 1.0, []
                for k, (i, f) in enumerate(per_axis):
                    b = (bits >> k) & 1
                    if d.axes[k].size == 1:
                        if b:
                            w = 0.0
                        idx.append(0)
                        continue
                    w *= f[r] if b else 1.0 - f[r]
                    idx.append(int(i[r]) + b)
                w_r.append(w)
                c_r.append(tuple(idx))
            weights.append(w_r)
            corners.append(c_r)
        return weights, corners


class TableModel(_Table):
    """``atable{file}``: an XSPEC additive table model (OGIP/92-009).

    Interpolation parameters are interpolated multi-linearly on their tabulated grid (in
    log10 of the value where METHOD = 1) and may not leave it; additional parameters add
    their spectra times their value. A REDSHIFT table gets XSPEC's parameter ``z``: the
    table's energies become E/(1+z) and the flux is divided by (1+z). Table spectra are
    photons cm^-2 s^-1 per table bin, taken as flat within the bin when re-binned (XSPEC's
    ``Rebin::rebin``: overlap fractions); bins wholly outside the tabulated energies get
    LOELIMIT/HIELIMIT (zero when absent).

    Parameters
    ----------
    data : TableData
        An additive table (``io.tables.read_table`` reads one from FITS).
    """

    name = "atable"
    table_kind = "atable"
    additive = True
    is_table = True

    def _finish_rebin(self, summed, matrix, z):
        return summed / (1 + z)


class MultiplicativeTable(_Table):
    """``mtable{file}``: an XSPEC multiplicative table model (OGIP/92-009, ADDMODEL = F).

    The tabulated values are dimensionless factors per table energy bin (a transmission,
    for absorption). Parameters interpolate as for :class:`TableModel`; a model bin gets the
    average of the table bins it overlaps, weighted by the overlapping fraction of each
    (XSPEC's ``Rebin::interpolate``); bins outside the tabulated energies get
    LOELIMIT/HIELIMIT (one when absent, as XSPEC).

    Parameters
    ----------
    data : TableData
        A multiplicative table.
    """

    name = "mtable"
    table_kind = "mtable"
    additive = False
    is_table = True

    def _finish_rebin(self, summed, matrix, z):
        cover = np.asarray(matrix.sum(axis=0)).ravel()
        out = np.empty_like(summed)
        ok = cover > 0
        out[..., ok] = summed[..., ok] / cover[ok]
        out[..., ~ok] = 0.0  # replaced by the limit values where wholly outside the table
        return out


# --------------------------------------------------------------------------------------------
# model expressions
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """A product of components with exactly one additive one (whose norm is free).

    ``param_names``: every parameter except the norm (the temperature included), in component
    order.

    Attributes
    ----------
    expression : str
        The model expression as written (stripped), e.g. ``wabs*bremss``.
    components : tuple of Component
        The factors in the expression's order, exactly one of them additive.
    """

    expression: str
    components: tuple[Component, ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        """Every parameter except the norm, in component order."""
        return tuple(p for c in self.components for p in c.param_names)

    @property
    def additive(self) -> Component:
        """The one additive component (whose norm is free)."""
        return next(c for c in self.components if c.additive)

    def _owner(self, name: str) -> Component:
        for comp in self.components:
            if name in comp.param_names:
                return comp
        raise ModelError(
            f"model {self.expression!r} has no parameter {name!r} "
            f"(parameters: {', '.join(self.param_names)})"
        )

    def param_range(self, name: str) -> tuple[float, float]:
        """Return the allowed [low, high] of parameter ``name``.

        Parameters
        ----------
        name : str
            One of :attr:`param_names`.

        Returns
        -------
        (float, float)
            The range of the component that owns it, in the parameter's unit (kT in keV, nH in
            1e22 cm^-2; a table's tabulated range).

        Raises
        ------
        ModelError
            When no component has a parameter ``name``.
        """
        return self._owner(name).param_range(name)

    def check_params(self, params: Mapping[str, float]) -> None:
        """Refuse unknown names and non-finite or out-of-range values.

        Parameters
        ----------
        params : mapping of str to float
            Parameter values by name, in the parameters' units.

        Raises
        ------
        ModelError
            A name that no component has, a value that is not a number (a bool included), not
            finite, or outside :meth:`param_range`.
        """
        for name, value in params.items():
            lo, hi = self.param_range(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ModelError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or not lo <= value <= hi:
                raise ModelError(f"{name} = {value:g} is outside its allowed range {lo:g}-{hi:g}")

    def check_source(self, temperature: str, params: Mapping[str, float]) -> None:
        """Check a ``[source]`` section against this model.

        Parameters
        ----------
        temperature : str
            The parameter on the temperature axis (keV).
        params : mapping of str to float
            Values of every other parameter (the norm excluded: it is always free).

        Raises
        ------
        ModelError
            With ``where`` naming the key (``[source.temperature]``, ``[source.params.X]``,
            ``[source.params]``): an unknown temperature or parameter name, a parameter
            without a value, a value outside its range.
        """
        import difflib

        def hint(name: str) -> str:
            close = difflib.get_close_matches(name, self.param_names, n=1, cutoff=0.5)
            return f" (did you mean {close[0]!r}?)" if close else ""

        if temperature not in self.param_names:
            raise ModelError(
                f"model {self.expression!r} has no parameter {temperature!r}{hint(temperature)}",
                "[source.temperature]",
            )
        for name in params:
            if name not in self.param_names:
                raise ModelError(
                    f"model {self.expression!r} has no parameter {name!r}{hint(name)}",
                    f"[source.params.{name}]",
                )
        frozen = [n for n in self.param_names if n != temperature and n not in params]
        if frozen:
            raise ModelError(
                f"give values for the model's frozen parameter(s): {', '.join(frozen)}",
                "[source.params]",
            )
        try:
            self.check_params(dict(params))
        except ModelError as exc:
            raise ModelError(exc.message, "[source.params]") from None

    def photon_flux(
        self,
        e_lo: np.ndarray,
        e_hi: np.ndarray,
        temperature: np.ndarray,
        params: Mapping[str, float],
        temperature_param: str = "kT",
    ) -> np.ndarray:
        """Return photons cm^-2 s^-1 per bin [e_lo, e_hi) keV at norm 1, shape (n, n_E).

        ``temperature`` (n,) are values of ``temperature_param`` (keV); ``params`` gives every
        other parameter (frozen).

        Parameters
        ----------
        e_lo, e_hi : numpy.ndarray
            Shape ``(n_E,)``: lower and upper bin edges in keV.
        temperature : numpy.ndarray
            Shape ``(n,)`` (or a scalar): values of ``temperature_param`` in keV.
        params : mapping of str to float
            Every other parameter's (frozen) value by name; an entry for
            ``temperature_param`` is ignored.
        temperature_param : str, optional
            The parameter on the temperature axis.

        Returns
        -------
        numpy.ndarray
            Shape ``(n, n_E)``, float64: photons cm^-2 s^-1 per bin at norm 1.

        Raises
        ------
        ModelError
            A temperature outside the model's range (or not finite), a parameter without a
            value, an unknown name or a value out of its range in ``params``, or a non-finite
            result.
        """
        e_lo = np.asarray(e_lo, dtype=np.float64)
        e_hi = np.asarray(e_hi, dtype=np.float64)
        t = np.atleast_1d(np.asarray(temperature, dtype=np.float64))
        self._check_temperatures(t, temperature_param)
        frozen = self._frozen(params, temperature_param)
        values = {n: np.full(t.size, frozen[n]) for n in frozen}
        values[temperature_param] = t
        flux = np.ones((t.size, e_lo.size))
        for comp in self.components:
            flux *= comp.evaluate(e_lo, e_hi, {n: values[n] for n in comp.param_names})
        return self._finite(flux)

    def _check_temperatures(self, t: np.ndarray, temperature_param: str) -> None:
        lo, hi = self.param_range(temperature_param)
        bad = ~np.isfinite(t) | (t < lo) | (t > hi)
        if bad.any():
            raise ModelError(
                f"{temperature_param} = {t[bad][0]:g} is outside the model's range {lo:g}-{hi:g}"
            )

    def _frozen(self, params: Mapping[str, float], temperature_param: str) -> dict[str, float]:
        """Every parameter but the temperature, as floats; refuses a missing or bad one."""
        for name in self.param_names:
            if name != temperature_param and name not in params:
                raise ModelError(f"no value given for parameter {name!r}")
        frozen = {k: float(v) for k, v in params.items() if k != temperature_param}
        self.check_params(frozen)
        return frozen

    def _finite(self, flux: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(flux)):
            raise ModelError(f"model {self.expression!r} gave non-finite values")
        return flux

    def flux_function(
        self,
        e_lo: np.ndarray,
        e_hi: np.ndarray,
        params: Mapping[str, float],
        temperature_param: str = "kT",
    ) -> Callable[[float], np.ndarray]:
        """Prepare :meth:`photon_flux` on fixed bins as a function of the temperature alone.

        The components without ``temperature_param`` (``wabs`` in ``wabs*bremss``) are
        evaluated once, here; each call evaluates the others at one temperature. The product
        is taken in the expression's order within each of the two groups, the fixed factors
        first (for two factors the same bits as :meth:`photon_flux`).

        Parameters
        ----------
        e_lo, e_hi : numpy.ndarray
            Shape ``(n_E,)``: lower and upper bin edges in keV.
        params : mapping of str to float
            Every other parameter's (frozen) value by name.
        temperature_param : str, optional
            The parameter on the temperature axis.

        Returns
        -------
        callable
            ``f(t)`` -> shape ``(n_E,)`` photons cm^-2 s^-1 per bin at norm 1 for the
            temperature ``t`` (keV); raises ModelError for a temperature outside the model's
            range or a non-finite result.

        Raises
        ------
        ModelError
            As :meth:`photon_flux`, for the frozen parameters (checked once, here).
        """
        e_lo = np.asarray(e_lo, dtype=np.float64)
        e_hi = np.asarray(e_hi, dtype=np.float64)
        frozen = self._frozen(params, temperature_param)
        fixed = np.ones(e_lo.size)
        varying = []
        for comp in self.components:
            if temperature_param in comp.param_names:
                varying.append(comp)
            else:
                values = {n: np.array([frozen[n]]) for n in comp.param_names}
                fixed *= comp.evaluate(e_lo, e_hi, values)[0]

        def at(t: float) -> np.ndarray:
            kt = np.array([float(t)])
            self._check_temperatures(kt, temperature_param)
            flux = fixed.copy()
            for comp in varying:
                values = {
                    n: kt if n == temperature_param else np.array([frozen[n]])
                    for n in comp.param_names
                }
                flux *= comp.evaluate(e_lo, e_hi, values)[0]
            return self._finite(flux)

        return at


def parse_model(
    expression: str,
    tables: Mapping[str, TableData] | None = None,
) -> Model:
    """Build the :class:`Model` of a product expression.

    For example ``wabs*bremss`` or ``mtable{tbabs.fits}*atable{apec.fits}``.

    Component names are those of ``registry.SOURCE_COMPONENTS``. Table components take their
    data from ``tables``, keyed by the text inside the braces as written (physics does no
    file I/O: ``io.tables.load_model`` reads the files and calls this).

    Parameters
    ----------
    expression : str
        The model expression (syntax: ``config.expression.split_product``).
    tables : mapping of str to TableData, optional
        The table of every ``atable{...}``/``mtable{...}`` term.

    Returns
    -------
    Model
        The product, with exactly one additive component.

    Raises
    ------
    ModelError
        Bad syntax, an unknown component, a table not given in ``tables``, not exactly one
        additive component, a parameter name in two components.
    """
    try:
        terms = split_product(expression)
    except ExpressionError as exc:
        raise ModelError(exc.message, exc.where) from None
    comps = [_make_component(t.name, t.arg, tables or {}, expression) for t in terms]
    n_add = sum(c.additive for c in comps)
    if n_add != 1:
        raise ModelError(
            f"{expression!r} has {n_add} additive components: give exactly one (bremss or "
            "atable{file}), whose norm is the free normalisation"
        )
    names = [p for c in comps for p in c.param_names]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ModelError(f"parameter name(s) {', '.join(dup)} appear in two components")
    return Model(expression.strip(), tuple(comps))


def _make_component(
    name: str, arg: str | None, tables: Mapping[str, TableData], expression: str
) -> Component:
    if name not in SOURCE_COMPONENTS:
        raise ModelError(SOURCE_COMPONENTS.suggest(name))
    cls = SOURCE_COMPONENTS.get(name)
    if getattr(cls, "is_table", False):
        if not arg:
            raise ModelError(f"{name} needs a file: {name}{{path.fits}} in {expression!r}")
        if arg not in tables:
            raise ModelError(
                f"no table data given for {name}{{{arg}}}: table files are read by "
                "xrmodifier_hpc.io.tables.load_model"
            )
        return cls(tables[arg])
    if name == "bremss" and arg is not None:
        return Bremss(arg.strip())
    if arg is not None:
        raise ModelError(f"component {name!r} takes no {{...}} argument")
    return cls()
