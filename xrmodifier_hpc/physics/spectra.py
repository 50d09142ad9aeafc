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
- ``atable{file}``: an XSPEC additive table model (OGIP/92-009 FITS: PARAMETERS, ENERGIES,
  SPECTRA), interpolated (linearly, or in log where METHOD = 1) in its parameters and re-binned
  onto the requested bins by integrating the tabulated flux (flat within each table bin).
  Relative paths are resolved against the config file's folder.

The package embeds the published coefficient tables in ``xrmodifier_hpc/data``.
"""

from __future__ import annotations

import math
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, lru_cache
from importlib import resources
from pathlib import Path
from typing import ClassVar

import numpy as np
from scipy.special import k0e

from xrmodifier_hpc.errors import UserError


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
    """(a, nodes): a[m, n, k] for gamma1 column m (7), u range n (6), power k (3)."""
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
    """Photon spectrum density (photons cm^-2 s^-1 keV^-1 at norm 1) of XSPEC's bremss
    (``seams``: see :func:`gaunt_factor`)."""
    energy, kt = np.broadcast_arrays(np.asarray(energy, float), np.asarray(kt, float))
    gaunt = gaunt_factor(energy, kt, 1.0, seams) + 4.0 * HE_ABUNDANCE * gaunt_factor(
        energy, kt, 2.0, seams
    )
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        dens = gaunt * np.exp(-energy / kt) / (energy * np.sqrt(kt))
    return np.where(gaunt > 0, dens, 0.0)


def trapezoid_bins(density_at: callable, e_lo: np.ndarray, e_hi: np.ndarray) -> np.ndarray:
    """Two-point integral of ``density_at(E)`` (shape (..., n_points)) over each bin."""
    if e_lo.size > 1 and np.array_equal(e_lo[1:], e_hi[:-1]):
        edges = np.append(e_lo, e_hi[-1])
        f = density_at(edges)
        return 0.5 * (f[..., :-1] + f[..., 1:]) * (e_hi - e_lo)
    return 0.5 * (density_at(e_lo) + density_at(e_hi)) * (e_hi - e_lo)


def mm83_cross_section(energy: np.ndarray, band: np.ndarray | None = None) -> np.ndarray:
    """Morrison & McCammon (1983) cross-section per H atom in 1e-22 cm^2 (nH unit 1e22).

    ``band`` forces the coefficient row (to take one-sided limits at an edge); by default the
    row with e_lo <= E < e_hi. Zero below 0.0136 keV.
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
    """Bin-averaged ``exp(-nH sigma_MM83(E))`` for ``nh`` (n,) in 1e22 cm^-2 -> (n, n_E)."""
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

_COMPONENTS: dict[str, type[Component]] = {}


def _register(cls: type[Component]) -> type[Component]:
    _COMPONENTS[cls.name] = cls
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
        """Allowed [low, high] of parameter ``name`` (units as the parameter)."""

    @abstractmethod
    def evaluate(
        self, e_lo: np.ndarray, e_hi: np.ndarray, values: Mapping[str, np.ndarray]
    ) -> np.ndarray:
        """See the class docstring."""

    def describe(self) -> str:
        return self.name


@_register
class Bremss(Component):
    """XSPEC ``bremss``: thermal bremsstrahlung of an H+He plasma; parameter kT (keV).

    ``bremss`` (and ``bremss{xspec}``) is XSPEC's algorithm, its discontinuous Gaunt-factor
    regime switches included; ``bremss{smooth}`` blends them smoothly (see
    :func:`gaunt_factor`).
    """

    name = "bremss"
    additive = True
    param_names = ("kT",)

    def __init__(self, seams: str = "xspec") -> None:
        if seams not in ("smooth", "xspec"):
            raise ModelError(f"bremss takes {{xspec}} or {{smooth}}, not {{{seams}}}")
        self.seams = seams

    def param_range(self, name: str) -> tuple[float, float]:
        return (1e-4, 200.0)  # XSPEC's hard limits for bremss kT

    def evaluate(self, e_lo, e_hi, values):
        kt = np.asarray(values["kT"], dtype=np.float64)[:, None]
        return trapezoid_bins(lambda e: bremss_density(e[None, :], kt, self.seams), e_lo, e_hi)

    def describe(self) -> str:
        return "bremss" if self.seams == "xspec" else "bremss{smooth}"


@_register
class Wabs(Component):
    """XSPEC ``wabs``: Morrison & McCammon (1983) absorption; parameter nH (1e22 cm^-2)."""

    name = "wabs"
    additive = False
    param_names = ("nH",)

    def param_range(self, name: str) -> tuple[float, float]:
        return (0.0, 1e5)

    def evaluate(self, e_lo, e_hi, values):
        nh = np.asarray(values["nH"], dtype=np.float64)
        unique, inverse = np.unique(nh, return_inverse=True)
        return wabs_transmission(e_lo, e_hi, unique)[inverse.ravel()]


class TableModel(Component):
    """An XSPEC additive table model (OGIP/92-009), read once when the model is parsed.

    Interpolation parameters are interpolated multi-linearly on their tabulated grid (in
    log10 of the value where METHOD = 1) and may not leave it; additional parameters add their
    spectra linearly. A REDSHIFT table gets a ``redshift`` parameter: E_obs = E_table/(1+z) and
    the flux is divided by (1+z). Table spectra are photons cm^-2 s^-1 per table bin, taken as
    flat within the bin when re-binned; bins wholly outside the tabulated energies get the
    LOELIMIT/HIELIMIT keywords' values (zero when absent).
    """

    name = "atable"
    additive = True

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        from astropy.io import fits

        where = str(self.path)
        if not self.path.is_file():
            raise ModelError("table model file not found", where)
        try:
            with fits.open(self.path, memmap=False) as hdul:
                primary = hdul[0].header
                params = hdul["PARAMETERS"]
                energies = hdul["ENERGIES"].data
                spectra = hdul["SPECTRA"].data
                n_int = int(params.header.get("NINTPARM", 0))
                n_add = int(params.header.get("NADDPARM", 0))
                names = [str(s).strip() for s in params.data["NAME"]]
                method = np.asarray(params.data["METHOD"], dtype=np.int64)
                numbvals = np.asarray(params.data["NUMBVALS"], dtype=np.int64)
                values = [np.asarray(v, dtype=np.float64) for v in params.data["VALUE"]]
                minimum = np.asarray(params.data["MINIMUM"], dtype=np.float64)
                maximum = np.asarray(params.data["MAXIMUM"], dtype=np.float64)
                self.e_lo = np.asarray(energies["ENERG_LO"], dtype=np.float64)
                self.e_hi = np.asarray(energies["ENERG_HI"], dtype=np.float64)
                intpspec = np.asarray(spectra["INTPSPEC"], dtype=np.float64)
                paramval = np.asarray(spectra["PARAMVAL"], dtype=np.float64).reshape(
                    intpspec.shape[0], -1
                )
                addspec = [
                    np.asarray(spectra[f"ADDSP{i + 1:03d}"], dtype=np.float64) for i in range(n_add)
                ]
        except ModelError:
            raise
        except (OSError, KeyError, ValueError, TypeError, IndexError) as exc:
            raise ModelError(
                f"not a readable XSPEC table model (OGIP/92-009: PARAMETERS, ENERGIES, "
                f"SPECTRA): {exc}",
                where,
            ) from None
        if not bool(primary.get("ADDMODEL", False)):
            raise ModelError("ADDMODEL is not true: atable needs an additive table", where)
        if bool(primary.get("ESCALE", False)) or "NXFLTEXP" in primary:
            raise ModelError("ESCALE / NXFLTEXP table models are not supported", where)
        if n_int < 1 or len(names) != n_int + n_add:
            raise ModelError("NINTPARM/NADDPARM disagree with the PARAMETERS rows", where)
        self.model_name = str(primary.get("MODLNAME", self.path.stem)).strip()
        self.redshift = bool(primary.get("REDSHIFT", False))
        self.lo_limit = float(primary.get("LOELIMIT", 0.0))
        self.hi_limit = float(primary.get("HIELIMIT", 0.0))
        self.int_names = tuple(names[:n_int])
        self.add_names = tuple(names[n_int:])
        self.log_method = tuple(bool(m == 1) for m in method[:n_int])
        self.axes = tuple(values[i][: numbvals[i]] for i in range(n_int))
        for name, axis, log in zip(self.int_names, self.axes, self.log_method):
            if axis.size < 1 or np.any(np.diff(axis) <= 0) or not np.all(np.isfinite(axis)):
                raise ModelError(f"parameter {name!r}: VALUE must increase", where)
            if log and axis[0] <= 0:
                raise ModelError(f"parameter {name!r}: log interpolation needs VALUE > 0", where)
        self.add_range = {
            n: (float(lo), float(hi))
            for n, lo, hi in zip(self.add_names, minimum[n_int:], maximum[n_int:])
        }
        shape = tuple(a.size for a in self.axes)
        n_spec = int(np.prod(shape))
        n_e = self.e_lo.size
        if intpspec.shape != (n_spec, n_e) or paramval.shape[0] != n_spec:
            raise ModelError(
                f"SPECTRA has {intpspec.shape[0]} rows of {intpspec.shape[-1]} bins; expected "
                f"{n_spec} (the parameter grid {shape}) of {n_e} (ENERGIES)",
                where,
            )
        expected = np.stack(np.meshgrid(*self.axes, indexing="ij"), -1).reshape(n_spec, n_int)
        if not np.allclose(paramval[:, :n_int], expected, rtol=1e-5, atol=0):
            raise ModelError(
                "SPECTRA rows are not in OGIP order (last parameter fastest) or PARAMVAL "
                "disagrees with VALUE",
                where,
            )
        if n_e == 0 or np.any(self.e_hi <= self.e_lo) or np.any(np.diff(self.e_lo) <= 0):
            raise ModelError("ENERGIES must be increasing bins with ENERG_LO < ENERG_HI", where)
        stack = np.stack([intpspec, *addspec], axis=0)  # (1 + n_add, n_spec, n_e)
        if not np.all(np.isfinite(stack)):
            raise ModelError("SPECTRA has non-finite values", where)
        self.spectra = stack.reshape(1 + n_add, *shape, n_e)
        self._rebin_cache: dict = {}
        self.param_names = (
            self.int_names + self.add_names + (("redshift",) if self.redshift else ())
        )
        dup = {n for n in self.param_names if self.param_names.count(n) > 1}
        if dup:
            raise ModelError(f"parameter names repeat: {sorted(dup)}", where)

    def describe(self) -> str:
        return f"atable{{{self.path.name}}}"

    def param_range(self, name: str) -> tuple[float, float]:
        if name in self.int_names:
            axis = self.axes[self.int_names.index(name)]
            return (float(axis[0]), float(axis[-1]))
        if name in self.add_range:
            return self.add_range[name]
        return (0.0, 10.0)  # redshift

    def _rebinned(self, e_lo: np.ndarray, e_hi: np.ndarray, z: float) -> np.ndarray:
        """All table spectra re-binned onto [e_lo, e_hi) for redshift z (cached per grid):
        (1 + n_add, *grid shape, n_E) photons cm^-2 s^-1 per requested bin."""
        key = (e_lo.tobytes(), e_hi.tobytes(), float(z))
        cached = self._rebin_cache.get(key)
        if cached is None:
            matrix = _overlap_matrix(self.e_lo / (1 + z), self.e_hi / (1 + z), e_lo, e_hi)
            flat = self.spectra.reshape(-1, self.e_lo.size)
            cached = np.asarray((matrix.T @ flat.T).T).reshape(*self.spectra.shape[:-1], -1)
            cached /= 1 + z
            below = e_hi <= self.e_lo[0] / (1 + z)
            above = e_lo >= self.e_hi[-1] / (1 + z)
            cached[..., below] = self.lo_limit
            cached[..., above] = self.hi_limit
            if len(self._rebin_cache) >= 8:
                self._rebin_cache.pop(next(iter(self._rebin_cache)))
            self._rebin_cache[key] = cached
        return cached

    def evaluate(self, e_lo, e_hi, values):
        e_lo = np.ascontiguousarray(e_lo, dtype=np.float64)
        e_hi = np.ascontiguousarray(e_hi, dtype=np.float64)
        n = np.atleast_1d(np.asarray(values[self.int_names[0]])).size
        z = np.broadcast_to(np.asarray(values.get("redshift", 0.0), float), (n,))
        add = [np.broadcast_to(np.asarray(values[a], float), (n,)) for a in self.add_names]
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
        per_axis = []
        for name, axis, log in zip(self.int_names, self.axes, self.log_method):
            v = np.broadcast_to(np.asarray(values[name], dtype=np.float64), (n,))
            lo, hi = axis[0], axis[-1]
            if np.any((v < lo) | (v > hi)) or not np.all(np.isfinite(v)):
                raise ModelError(
                    f"{name} = {v[(v < lo) | (v > hi) | ~np.isfinite(v)][0]:g} is outside the "
                    f"table's range {lo:g}-{hi:g}",
                    str(self.path),
                )
            if axis.size == 1:
                per_axis.append((np.zeros(n, int), np.zeros(n)))
                continue
            xa, xv = (np.log10(axis), np.log10(v)) if log else (axis, v)
            i = np.clip(np.searchsorted(xa, xv, side="right") - 1, 0, axis.size - 2)
            f = (xv - xa[i]) / (xa[i + 1] - xa[i])
            per_axis.append((i, f))
        weights, corners = [], []
        d = len(per_axis)
        for r in range(n):
            w_r, c_r = [], []
            for bits in range(2**d):
                w, idx = 1.0, []
                for k, (i, f) in enumerate(per_axis):
                    b = (bits >> k) & 1
                    if self.axes[k].size == 1:
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


# --------------------------------------------------------------------------------------------
# model expressions
# --------------------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?:\{(?P<arg>[^{}]*)\})?|(?P<op>[*()]))"
)


@dataclass(frozen=True)
class Model:
    """A product of components with exactly one additive one (whose norm is free).

    ``param_names``: every parameter except the norm (the temperature included), in component
    order.
    """

    expression: str
    components: tuple[Component, ...]

    @property
    def param_names(self) -> tuple[str, ...]:
        return tuple(p for c in self.components for p in c.param_names)

    @property
    def additive(self) -> Component:
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
        """Allowed [low, high] of parameter ``name``."""
        return self._owner(name).param_range(name)

    def check_params(self, params: Mapping[str, float]) -> None:
        """Refuse unknown names and non-finite or out-of-range values."""
        for name, value in params.items():
            lo, hi = self.param_range(name)
            if not isinstance(value, (int, float)) or isinstance(value, bool):
                raise ModelError(f"{name} must be a number, got {value!r}")
            if not math.isfinite(value) or not lo <= value <= hi:
                raise ModelError(f"{name} = {value:g} is outside its allowed range {lo:g}-{hi:g}")

    def photon_flux(
        self,
        e_lo: np.ndarray,
        e_hi: np.ndarray,
        temperature: np.ndarray,
        params: Mapping[str, float],
        temperature_param: str = "kT",
    ) -> np.ndarray:
        """Photons cm^-2 s^-1 per bin [e_lo, e_hi) keV at norm 1, shape (n, n_E).

        ``temperature`` (n,) are values of ``temperature_param`` (keV); ``params`` gives every
        other parameter (frozen). Raises :class:`ModelError` for out-of-range values or a
        non-finite result.
        """
        e_lo = np.asarray(e_lo, dtype=np.float64)
        e_hi = np.asarray(e_hi, dtype=np.float64)
        t = np.atleast_1d(np.asarray(temperature, dtype=np.float64))
        lo, hi = self.param_range(temperature_param)
        bad = ~np.isfinite(t) | (t < lo) | (t > hi)
        if bad.any():
            raise ModelError(
                f"{temperature_param} = {t[bad][0]:g} is outside the model's range {lo:g}-{hi:g}"
            )
        values: dict[str, np.ndarray] = {}
        for name in self.param_names:
            if name == temperature_param:
                values[name] = t
            elif name in params:
                values[name] = np.full(t.size, float(params[name]))
            else:
                raise ModelError(f"no value given for parameter {name!r}")
        self.check_params({k: float(v) for k, v in params.items() if k != temperature_param})
        flux = np.ones((t.size, e_lo.size))
        for comp in self.components:
            flux *= comp.evaluate(e_lo, e_hi, {n: values[n] for n in comp.param_names})
        if not np.all(np.isfinite(flux)):
            raise ModelError(f"model {self.expression!r} gave non-finite values")
        return flux


def parse_model(expression: str, base: Path | None = None) -> Model:
    """Parse ``expression`` (``wabs*bremss``, ``wabs(atable{t.fits})``...) into a :class:`Model`.

    Table paths are relative to ``base`` (the config file's folder). Raises
    :class:`ModelError` for syntax errors, unknown components, missing files, sums or a
    product without exactly one additive component.
    """
    if not isinstance(expression, str) or not expression.strip():
        raise ModelError("the model expression is empty")
    base = Path(base) if base is not None else Path.cwd()
    comps: list[Component] = []
    pos, depth, expect_factor = 0, 0, True
    text = expression.strip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None or m.end() == pos:
            rest = text[pos:].strip()
            hint = " (sums of components are not supported)" if rest.startswith("+") else ""
            raise ModelError(f"bad syntax at {rest!r} in {expression!r}{hint}")
        pos = m.end()
        if m.group("name"):
            if not expect_factor:
                raise ModelError(f"missing '*' before {m.group('name')!r} in {expression!r}")
            comps.append(_make_component(m.group("name"), m.group("arg"), base, expression))
            expect_factor = False
        elif m.group("op") == "*":
            if expect_factor:
                raise ModelError(f"bad syntax: '*' without a component before it in {expression!r}")
            expect_factor = True
        elif m.group("op") == "(":
            depth += 1
            expect_factor = True  # XSPEC writes wabs(bremss) for wabs*bremss
        else:
            depth -= 1
            if depth < 0 or expect_factor:
                raise ModelError(f"unbalanced or empty parentheses in {expression!r}")
    if depth != 0 or expect_factor:
        raise ModelError(f"incomplete expression {expression!r}")
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


def _make_component(name: str, arg: str | None, base: Path, expression: str) -> Component:
    if name == "atable":
        if not arg or not arg.strip():
            raise ModelError(f"atable needs a file: atable{{path.fits}} in {expression!r}")
        path = Path(arg.strip()).expanduser()
        return TableModel(path if path.is_absolute() else base / path)
    if name not in _COMPONENTS:
        import difflib

        known = [*sorted(_COMPONENTS), "atable"]
        close = difflib.get_close_matches(name, known, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ModelError(f"unknown model component {name!r}{hint}; known: {', '.join(known)}")
    if name == "bremss" and arg is not None:
        return Bremss(arg.strip())
    if arg is not None:
        raise ModelError(f"component {name!r} takes no {{...}} argument")
    return _COMPONENTS[name]()
