"""A realistic synthetic CCD-like telescope pair, written as OGIP files (the embedded default).

Effective areas are built from a mirror (reflectivity falling above ~6 keV, an Au M edge at
2.2 keV), an optical-blocking filter with C K (0.284 keV) and O K (0.532 keV) edges and a
silicon CCD's quantum efficiency (Si K edge at 1.839 keV). Redistributions are Gaussians whose
width follows Fano noise plus read noise. The two telescopes differ in every ingredient, as
two real missions would, and do not share channel numbering (the reference starts at 1, the
target at 0).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import ndtr

from xrmodifier_hpc.io.ogip import write_arf, write_rmf

EDGE_C_K = 0.284  #: keV
EDGE_O_K = 0.532
EDGE_SI_K = 1.839
EDGE_AU_M = 2.206

N_CHANNELS = 1024
CHANNEL_WIDTH = 0.0146  #: keV, as ACIS


@dataclass(frozen=True)
class TelescopeDesign:
    """Physical knobs of one synthetic telescope (areas in cm^2, depths in micron).

    Attributes
    ----------
    name : str
        The ``TELESCOP`` keyword of its files.
    geometric_area : float
        Mirror collecting area (cm^2).
    mirror_cutoff : float
        Energy where the reflectivity has halved (keV).
    mirror_slope : float
        Exponent of the reflectivity fall-off ``1 / (1 + (E / cutoff)^slope)``.
    au_edge_drop : float
        Fractional reflectivity drop above the Au M edge (2.206 keV).
    filter_carbon : float
        Optical depth of the filter's C layer at 0.25 keV.
    filter_oxygen : float
        Optical depth of the filter's O-bearing layer at 0.5 keV.
    depletion_um : float
        CCD depletion depth (micron).
    dead_layer_um : float
        CCD dead-layer depth (micron).
    read_noise_ev : float
        rms read noise (eV).
    first_channel : int
        Number of the first RMF channel (0 or 1).
    """

    name: str
    geometric_area: float
    mirror_cutoff: float  #: keV where reflectivity has halved
    mirror_slope: float
    au_edge_drop: float  #: fractional reflectivity drop above the Au M edge
    filter_carbon: float  #: optical depth of the C layer at 0.25 keV
    filter_oxygen: float  #: optical depth of the O-bearing layer at 0.5 keV
    depletion_um: float  #: CCD depletion depth
    dead_layer_um: float
    read_noise_ev: float  #: rms read noise, eV
    first_channel: int


REFERENCE = TelescopeDesign("SYNTH-REF", 700.0, 6.5, 3.2, 0.18, 0.35, 0.25, 45.0, 0.15, 22.0, 1)
TARGET = TelescopeDesign("SYNTH-TGT", 820.0, 5.5, 2.8, 0.24, 0.55, 0.40, 60.0, 0.25, 30.0, 0)


def energy_grid(
    e_lo: float = 0.1, e_hi: float = 12.0, width: float = 0.01
) -> tuple[np.ndarray, np.ndarray]:
    """Return linear energy bins (keV): [lo, lo+width), ... up to ``e_hi``.

    Parameters
    ----------
    e_lo : float
        Lower edge of the first bin (keV).
    e_hi : float
        Upper edge of the last bin (keV).
    width : float
        Bin width (keV).

    Returns
    -------
    energ_lo, energ_hi : numpy.ndarray
        Lower and upper bin edges, shape ``(n_E,)`` (keV), rounded to 1e-6 keV.
    """
    edges = np.round(np.arange(e_lo, e_hi + 0.5 * width, width), 6)
    return edges[:-1], edges[1:]


def _silicon_attenuation_length_um(energy: np.ndarray) -> np.ndarray:
    """Return the photo-absorption length in silicon (micron).

    ~2.6 um at 1 keV, 12 um just below the K edge, 1.2 um just above it, ~115 um at 10 keV
    (power laws either side of the edge).
    """
    below = 2.6 * energy**2.6
    above = 1.2 * (energy / EDGE_SI_K) ** 2.7
    return np.where(energy < EDGE_SI_K, below, above)


def effective_area(design: TelescopeDesign, energy: np.ndarray) -> np.ndarray:
    """Return the effective area (cm^2) of ``design`` at ``energy`` (keV).

    Mirror reflectivity times filter transmission times CCD quantum efficiency times the
    geometric area.

    Parameters
    ----------
    design : TelescopeDesign
        The telescope.
    energy : numpy.ndarray
        Energies, shape ``(n_E,)`` (keV).

    Returns
    -------
    numpy.ndarray
        Effective area, shape ``(n_E,)`` (cm^2).
    """
    mirror = 1.0 / (1.0 + (energy / design.mirror_cutoff) ** design.mirror_slope)
    mirror = mirror * np.where(energy >= EDGE_AU_M, 1.0 - design.au_edge_drop, 1.0)
    # filter: optical depths fall as E^-2.6 and jump at their K edges
    tau_c = design.filter_carbon * (energy / 0.25) ** -2.6 * np.where(energy >= EDGE_C_K, 6.0, 1.0)
    tau_o = design.filter_oxygen * (energy / 0.5) ** -2.6 * np.where(energy >= EDGE_O_K, 4.0, 1.0)
    filt = np.exp(-(tau_c + tau_o))
    length = _silicon_attenuation_length_um(energy)
    qe = np.exp(-design.dead_layer_um / length) * (1.0 - np.exp(-design.depletion_um / length))
    return design.geometric_area * mirror * filt * qe


def resolution_sigma(design: TelescopeDesign, energy: np.ndarray) -> np.ndarray:
    """Return the Gaussian rms energy resolution (keV): Fano noise in silicon plus read noise.

    Parameters
    ----------
    design : TelescopeDesign
        The telescope (its read noise).
    energy : numpy.ndarray
        Energies, shape ``(n_E,)`` (keV).

    Returns
    -------
    numpy.ndarray
        rms resolution, shape ``(n_E,)`` (keV).
    """
    fano, w_si = 0.115, 3.65e-3  # Fano factor; keV per electron-hole pair
    return np.sqrt(fano * w_si * energy + (design.read_noise_ev * 1e-3) ** 2)


def redistribution(
    design: TelescopeDesign,
    energ_lo: np.ndarray,
    energ_hi: np.ndarray,
    e_min: np.ndarray,
    e_max: np.ndarray,
) -> np.ndarray:
    """Return the dense (n_E, n_chan) matrix of Gaussian redistribution probabilities.

    Parameters
    ----------
    design : TelescopeDesign
        The telescope (its resolution).
    energ_lo, energ_hi : numpy.ndarray
        Photon-energy bin edges, shape ``(n_E,)`` (keV).
    e_min, e_max : numpy.ndarray
        Channel energy bounds, shape ``(n_chan,)`` (keV).

    Returns
    -------
    numpy.ndarray
        Probability that a photon of bin ``i`` (at its centre) lands in channel ``j``, shape
        ``(n_E, n_chan)``, clipped at 0.
    """
    centre = 0.5 * (energ_lo + energ_hi)
    sigma = resolution_sigma(design, centre)[:, None]
    upper = ndtr((e_max[None, :] - centre[:, None]) / sigma)
    lower = ndtr((e_min[None, :] - centre[:, None]) / sigma)
    return np.clip(upper - lower, 0.0, None)


def write_pair(directory: str | Path) -> dict[str, Path]:
    """Write reference.arf/.rmf and target.arf/.rmf into ``directory``; return their paths.

    Parameters
    ----------
    directory : str or Path
        Output folder, created if missing.

    Returns
    -------
    dict of str to Path
        ``reference_arf``, ``reference_rmf``, ``target_arf``, ``target_rmf``.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    energ_lo, energ_hi = energy_grid()
    e_mid = 0.5 * (energ_lo + energ_hi)
    chan_edges = np.arange(N_CHANNELS + 1) * CHANNEL_WIDTH
    e_min, e_max = chan_edges[:-1], chan_edges[1:]
    paths: dict[str, Path] = {}
    for role, design in (("reference", REFERENCE), ("target", TARGET)):
        prov = {
            "TELESCOP": (design.name, "synthetic telescope"),
            "INSTRUME": ("CCD", "synthetic CCD"),
        }
        area = effective_area(design, e_mid)
        paths[f"{role}_arf"] = write_arf(
            directory / f"{role}.arf",
            energ_lo,
            energ_hi,
            area,
            provenance=prov,
            history=[f"synthetic {role} ARF written by xrmodifier init"],
        )
        matrix = redistribution(design, energ_lo, energ_hi, e_min, e_max)
        paths[f"{role}_rmf"] = write_rmf(
            directory / f"{role}.rmf",
            energ_lo,
            energ_hi,
            matrix,
            e_min,
            e_max,
            first_channel=design.first_channel,
            provenance=prov,
        )
    return paths
