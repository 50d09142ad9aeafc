"""Every response in ../shared/realdata (26 files of 12 missions) and its three real spectra.

Each RMF/RSP is read and compared with a dense matrix built independently from its raw FITS
columns, then folded (with its own ARF where the manifest pairs one) like the dense
computation. ARFs whose RMF is not in the set (manifest: "RMF not retrievable") are read
against their raw columns, and pairing them with a response of another energy grid is refused
(as XSPEC refuses it). ROSAT PSPC's 19 zero-width energy bins read and contribute nothing.
"""

from __future__ import annotations

import csv

import numpy as np
import pytest
from astropy.io import fits
from conftest import SHARED, run_cli

from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.ogip import Instrument, read_arf, read_pha, read_rmf
from xrmodifier_hpc.physics.spectra import parse_model

REALDATA = SHARED / "realdata"
RESP = REALDATA / "responses"
SPECTRA = REALDATA / "spectra"


def _manifest() -> list[dict[str, str]]:
    path = REALDATA / "manifest.csv"
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        return [r for r in csv.DictReader(fh) if r["file"].startswith("responses/")]


MANIFEST = {r["file"].removeprefix("responses/"): r for r in _manifest()}

#: RMF -> its ARF (same energy grid; manifest notes and sherpa-test-data's own pairings)
PAIRED = {
    "asca-sis0_s0_mar24.rmf": "asca-sis0_s0_mar24.arf",
    "chandra-acis-csc_acisf01575_001N001_r0085_rmf3.fits.gz": (
        "chandra-acis-csc_acisf01575_001N001_r0085_arf3.fits.gz"
    ),
    "chandra-acis_rmf2278.fits": "chandra-acis_arf2278.fits",
    "chandra-acisi_acisi_aimpt_cy0.rmf": "chandra-acisi_acisi_aimpt_cy0.arf",
    "chandra-acisi_acisi_aimpt_cy19.rmf": "chandra-acisi_acisi_aimpt_cy19.arf",
    "erosita-tm0_onaxis_tm0_rmf_2023-01-17.fits.gz": (
        "erosita-tm0_onaxis_tm0_arf_filter_2023-01-17.fits.gz"
    ),
    "swift-xrt_swxpc0to12s6_20130101v014.rmf.gz": "swift-xrt_target_sr.arf",
    "xmm-epn_PN.rmf": "xmm-epn_PN.arf",
}
#: responses with the area folded in (HDUCLAS3 = FULL, rows of hundreds of cm^2): no ARF
RSP = {"rosat-pspcc_pspcc_gain1_256.rsp", "rxte-pca_PCU2.rsp"}
#: a diagonal RMF on the XMM MOS ARFs' grid (BXA's helper, not a calibration product):
#: XSPEC takes it alone (area 1) or with either MOS ARF
DIAGONAL = "xmm-emos_mos_dia.rmf"
MOS_ARFS = {"xmm-emos1_MOS1.arf", "xmm-emos2_MOS2.arf"}
#: ARFs whose RMF is not in the set (manifest: over 4 MB, not retrievable)
ARF_ONLY = {
    "nustar-fpma_nu90402339002A01_sr.arf",
    "nicer-xti_2050300110_g2_b_001.arf",
    "xrism-resolve_rsl_standard_GVclosed.arf",
    "hitomi-sxs_ah100040040sxs.arf.gz",
    "chandra-hetg-heg_3c120_heg_1.arf.gz",
}
ARFS_OF_PAIRS = set(PAIRED.values())


def test_manifest_lists_every_file_and_each_has_a_role():
    if not MANIFEST:
        pytest.skip(f"{REALDATA} not found")
    assert len(MANIFEST) == 26 == len(list(RESP.iterdir()))
    roles = set(PAIRED) | ARFS_OF_PAIRS | RSP | {DIAGONAL} | MOS_ARFS | ARF_ONLY
    assert roles == set(MANIFEST)


def dense_from_raw_columns(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(energ_lo, energ_hi, dense matrix): the raw columns walked row by row, group by group,
    F_CHAN counted from TLMIN (else 1) as OGIP CAL/GEN/92-002 and XSPEC do."""
    with fits.open(path) as hdul:
        hdu = next(
            h
            for h in hdul[1:]
            if h.name in ("MATRIX", "SPECRESP MATRIX", "RSP_MATRIX")
            or h.header.get("HDUCLAS2") == "RSP_MATRIX"
        )
        n_chan = hdul["EBOUNDS"].header["NAXIS2"]
        col = [c.name.upper() for c in hdu.columns].index("F_CHAN") + 1
        first = hdu.header.get(f"TLMIN{col}", 1)
        lo = np.asarray(hdu.data["ENERG_LO"], float)
        hi = np.asarray(hdu.data["ENERG_HI"], float)
        dense = np.zeros((lo.size, n_chan))
        for i, row in enumerate(hdu.data):
            values = np.ravel(row["MATRIX"]).astype(float)
            f_chan, n_grp = np.ravel(row["F_CHAN"]), np.ravel(row["N_CHAN"])
            pos = 0
            for g in range(int(row["N_GRP"])):
                f, n = int(f_chan[g]) - first, int(n_grp[g])
                for c in range(n):
                    if 0 <= f + c < n_chan:
                        dense[i, f + c] += values[pos + c]
                pos += n
    return lo, hi, dense


def _flux(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """wabs*bremss photons cm^-2 s^-1 per bin (kT 4 keV, nH 0.05, norm 1e-3)."""
    return 1e-3 * parse_model("wabs*bremss").photon_flux(lo, hi, [4.0], {"nH": 0.05})[0]


def _raw_arf(path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with fits.open(path) as hdul:
        d = hdul["SPECRESP"].data
        return (
            np.asarray(d["ENERG_LO"], float),
            np.asarray(d["ENERG_HI"], float),
            np.asarray(d["SPECRESP"], float),
        )


@pytest.mark.parametrize("name", sorted(MANIFEST))
def test_every_real_response_reads_and_folds_like_a_dense_computation(name):
    path = RESP / name
    if name in ARFS_OF_PAIRS | MOS_ARFS | ARF_ONLY:
        arf = read_arf(path)
        lo, hi, area = _raw_arf(path)
        np.testing.assert_array_equal(arf.specresp, area)
        np.testing.assert_array_equal(arf.energ_lo, lo)
        assert np.all(arf.energ_hi >= arf.energ_lo)
        if name in ARF_ONLY:
            # no RMF of its grid here: with another response's grid it is refused, as XSPEC
            # refuses an ARF and RMF whose energies differ
            with pytest.raises(ResponseError, match="one energy grid|differ by up to"):
                Instrument.load(path, SHARED / "responses" / "chandra_acis_9774.rmf")
            return
        if name in ARFS_OF_PAIRS:
            assert PAIRED[next(r for r, a in PAIRED.items() if a == name)] == name
            return  # folded with its RMF in that RMF's case
        rmf_name, arf_path = DIAGONAL, path
    else:
        rmf_name, arf_path = name, (RESP / PAIRED[name] if name in PAIRED else None)
    rmf_path = RESP / rmf_name
    lo, hi, dense = dense_from_raw_columns(rmf_path)
    rmf = read_rmf(rmf_path)
    np.testing.assert_allclose(rmf.matrix.toarray(), dense, rtol=0, atol=1e-12)
    assert rmf.includes_area == (rmf_name in RSP)
    inst = Instrument.load(arf_path, rmf_path)
    area = np.ones(lo.size) if arf_path is None else _raw_arf(arf_path)[2]
    flux = _flux(inst.energ_lo, inst.energ_hi)
    assert np.all(np.isfinite(flux))
    expected = (flux * area) @ dense
    np.testing.assert_allclose(inst.fold(flux), expected, rtol=1e-10, atol=1e-15)
    assert inst.fold(flux).sum() > 0
    if rmf_name == DIAGONAL and arf_path is None:
        assert any("redistribution-only" in w for w in inst.warnings)
    else:
        assert inst.warnings == ()


def test_diagonal_rmf_alone_is_used_as_xspec_does():
    inst = Instrument.load(None, RESP / DIAGONAL)
    (warning,) = inst.warnings
    assert "1 cm^2" in warning and "HDUCLAS3 = REDIST" in warning
    np.testing.assert_allclose(inst.area, 1.0)


def test_rosat_pspc_zero_width_bins_contribute_nothing():
    path = RESP / "rosat-pspcc_pspcc_gain1_256.rsp"
    inst = Instrument.load(None, path)
    zero = inst.energ_hi == inst.energ_lo
    assert zero.sum() == 19 and inst.area_in_matrix and inst.warnings == ()
    flux = _flux(inst.energ_lo, inst.energ_hi)
    assert np.all(flux[zero] == 0) and np.all(flux[~zero] > 0)
    # their matrix rows are not empty, yet the counts are those of the other bins alone
    assert np.abs(inst.matrix[np.flatnonzero(zero)].toarray()).sum() > 0
    rows = np.flatnonzero(~zero)
    alone = flux[rows] @ inst.matrix[rows].toarray()
    np.testing.assert_allclose(inst.fold(flux), alone, rtol=1e-12)


# --------------------------------------------------------------------------------------------
# the three real spectra
# --------------------------------------------------------------------------------------------


def test_asca_a2029_fits_like_an_independent_dense_fit():
    """ASCA SIS0 Abell 2029 with its ARF and RMF: the fit's minimum is the minimum of C(T)
    computed from the raw columns (dense fold, norm profiled), within 0.01 sigma."""
    from xrmodifier_hpc.stages.fit import fit

    folder = SPECTRA / "asca_sis0_a2029"
    out = fit(
        folder / "sis0.pha",
        arf=folder / "sis0.arf",
        rmf=folder / "sis0.rmf",
        params={"nH": 0.03},
        band=(1.0, 9.0),
    )
    assert out["status"] == 0 and out["counts_noticed"] > 40000
    lo, hi, dense = dense_from_raw_columns(folder / "sis0.rmf")
    area = _raw_arf(folder / "sis0.arf")[2]
    with fits.open(folder / "sis0.pha") as hdul:  # channels paired with EBOUNDS by position
        counts = np.asarray(hdul["SPECTRUM"].data["COUNTS"], float)
    with fits.open(folder / "sis0.rmf") as hdul:
        e_min, e_max = hdul["EBOUNDS"].data["E_MIN"], hdul["EBOUNDS"].data["E_MAX"]
    band = (e_min >= 1.0) & (e_max < 9.0)
    d = counts[band]
    model = parse_model("wabs*bremss")

    def cstat(t: float) -> float:
        s = (model.photon_flux(lo, hi, [t], {"nH": 0.03})[0] * area) @ dense
        s = np.maximum(s[band], 1e-300)
        m = d.sum() / s.sum() * s
        pos = d > 0
        return 2 * float(np.sum(m - d) + np.sum(d[pos] * np.log(d[pos] / m[pos])))

    sigma = 0.5 * (out["kT_1sigma"][1] - out["kT_1sigma"][0])
    c_fit = cstat(out["kT"])
    assert c_fit == pytest.approx(out["cstat"], abs=1e-3)
    for step in (-0.05, -0.01, 0.01, 0.05):  # lower nowhere nearby
        assert cstat(out["kT"] + step * sigma) >= c_fit - 1e-6
    assert cstat(out["kT_1sigma"][0]) == pytest.approx(c_fit + 1.0, abs=1e-3)
    assert cstat(out["kT_1sigma"][1]) == pytest.approx(c_fit + 1.0, abs=1e-3)


def test_hitomi_spectrum_reads_its_grouping_and_quality():
    pha = read_pha(SPECTRA / "hitomi_sxs_perseus" / "ah100040040sxs_src_grp.pha.gz")
    assert pha.counts.sum() == 119760 and pha.counts.size == 32768
    assert pha.channel[0] == 0 and pha.exposure == pytest.approx(68133.515625)
    assert pha.grouping is not None and int(np.sum(pha.grouping != -1)) > 1000
    assert int(np.sum(pha.quality == 2)) > 0
    assert pha.poisson_problems == ()


@pytest.mark.parametrize(
    "spectrum, arf, message",
    [
        # the RESPFILE it names is not in the set: an ARF alone is no response (as in XSPEC)
        (
            "hitomi_sxs_perseus/ah100040040sxs_src_grp.pha.gz",
            "hitomi_sxs_perseus/ah100040040sxs.arf.gz",
            "its RESPFILE ah100040040sxs.rmf.gz is not in",
        ),
        (
            "xrism_resolve_perseus/xa_merged_p0px1000_Hp.pi.gz",
            "xrism_resolve_perseus/rsl_standard_GVclosed.arf",
            "names no RESPFILE: give the response with --rmf",
        ),
    ],
)
def test_spectra_without_their_rmf_are_refused(tmp_path, spectrum, arf, message):
    proc = run_cli(
        "fit", str(SPECTRA / spectrum), "--arf", str(SPECTRA / arf), "--set", "nH=0.1",
        cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stdout == ""
    (line,) = proc.stderr.strip().splitlines()
    assert message in line
