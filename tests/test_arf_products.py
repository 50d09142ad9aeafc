"""Corrected-ARF products (``io.arf_products``): a corrected ARF per statistic that keeps its
source's every keyword, and the ensemble file of posterior draws."""

from __future__ import annotations

import gzip
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import SHARED

from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.arf_products import write_arf_ensemble, write_corrected_arf
from xrmodifier_hpc.io.ogip import read_arf
from xrmodifier_hpc.physics.modifiers import get_modifier

PN_ARF = SHARED / "realdata" / "responses" / "xmm-epn_PN.arf"  # 2067 bins
ACIS_ARF = SHARED / "responses" / "chandra_acis_9774.arf"  # keywords in both HDUs
GAUSS = get_modifier("gaussian")
#: keywords a corrected ARF sets on purpose (its own provenance)
OURS = {"CREATOR", "DATE", "CHECKSUM", "DATASUM"}


def _need(path: Path) -> Path:
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path


def _cards(header: fits.Header) -> dict[str, object]:
    return {
        c.keyword: c.value
        for c in header.cards
        if c.keyword and c.keyword not in ("HISTORY", "COMMENT", "")
    }


def _open_verified(path: Path) -> fits.HDUList:
    """Open with checksum verification; a bad checksum is an error here."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return fits.open(path, checksum=True, memmap=False)


def _multiplier(path: Path) -> np.ndarray:
    arf = read_arf(path)
    return GAUSS.evaluate(0.5 * (arf.energ_lo + arf.energ_hi), np.array([1.3, 0.3, -0.12]))


@pytest.mark.parametrize("source", [PN_ARF, ACIS_ARF], ids=["xmm-pn", "chandra-acis"])
def test_corrected_arf_keeps_every_keyword_and_multiplies(source: Path, tmp_path: Path) -> None:
    source = _need(source)
    m = _multiplier(source)
    out = write_corrected_arf(
        tmp_path / "c.arf",
        source,
        m,
        "p16",
        tmp_path / "run" / "result.json",
        4000,
        extra={"XRMFAMIL": ("gaussian", "ARF modifier family")},
    )
    with fits.open(source) as orig, _open_verified(out) as new:
        assert [h.name for h in new] == [h.name for h in orig]
        for h_orig, h_new in zip(orig, new):
            before, after = _cards(h_orig.header), _cards(h_new.header)
            for key, value in before.items():
                assert key in after, (h_orig.name, key)
                if key not in OURS:
                    assert after[key] == value, (h_orig.name, key)
        hdr = new["SPECRESP"].header
        assert hdr["XRMSTAT"] == "p16"
        assert hdr["XRMRESLT"] == str(tmp_path / "run" / "result.json")
        assert hdr["XRMNDRAW"] == 4000 and hdr["XRMFAMIL"] == "gaussian"
        assert hdr["XRMSRC"] == str(Path(source).resolve())
        if "CREATOR" in orig["SPECRESP"].header:  # ours replaces it, the old one is recorded
            assert any("before xrmodifier" in str(h) for h in hdr["HISTORY"])
        assert new["SPECRESP"].columns.formats == orig["SPECRESP"].columns.formats
    before, after = read_arf(source), read_arf(out)
    assert after.specresp.size == before.specresp.size
    np.testing.assert_array_equal(after.energ_lo, before.energ_lo)
    np.testing.assert_allclose(after.specresp, before.specresp * m, rtol=2e-7)


def test_corrected_arf_from_gzip_matches_plain(tmp_path: Path) -> None:
    source = _need(PN_ARF)
    gz = tmp_path / "PN.arf.gz"
    with source.open("rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    m = _multiplier(source)
    a = write_corrected_arf(tmp_path / "a.arf", source, m, "median", "r.json", 10)
    b = write_corrected_arf(tmp_path / "b.arf", gz, m, "median", "r.json", 10)
    assert b.read_bytes()[:6] == b"SIMPLE"  # written as plain FITS
    np.testing.assert_array_equal(read_arf(a).specresp, read_arf(b).specresp)
    assert read_arf(b).specresp.size == 2067


def test_refusals_leave_nothing_behind(tmp_path: Path) -> None:
    source = _need(PN_ARF)
    m = _multiplier(source)
    bad = m.copy()
    bad[10] = -0.5
    with pytest.raises(ResponseError, match="negative"):
        write_corrected_arf(tmp_path / "c.arf", source, bad, "median", "r.json", 10)
    with pytest.raises(ValueError, match="2067"):
        write_corrected_arf(tmp_path / "c.arf", source, m[:-1], "median", "r.json", 10)
    with pytest.raises(ValueError, match="statistic"):
        write_corrected_arf(tmp_path / "c.arf", source, m, "mean", "r.json", 10)
    with pytest.raises(ResponseError, match="does not exist"):
        write_corrected_arf(tmp_path / "c.arf", tmp_path / "none.arf", m, "median", "r", 1)
    assert list(tmp_path.iterdir()) == []


def test_ensemble_file_rows_are_corrected_arfs(tmp_path: Path) -> None:
    source = _need(PN_ARF)
    arf = read_arf(source)
    e = 0.5 * (arf.energ_lo + arf.energ_hi)
    rng = np.random.default_rng(4)
    thetas = np.column_stack(
        [rng.normal(1.3, 0.05, 25), rng.uniform(0.2, 0.4, 25), rng.normal(-0.1, 0.02, 25)]
    )
    m = GAUSS.evaluate(e, thetas)
    out = write_arf_ensemble(
        tmp_path / "ens.fits", source, m, thetas, GAUSS.param_names, "run/result.json"
    )
    # the README's three-line read
    t = fits.getdata(out, "ENSEMBLE")
    e_lo, e_hi, arfs = t["ENERG_LO"][0], t["ENERG_HI"][0], t["SPECRESP"]
    assert arfs.shape == (25, 2067)
    np.testing.assert_allclose(e_lo, arf.energ_lo, rtol=1e-7)
    np.testing.assert_allclose(e_hi, arf.energ_hi, rtol=1e-7)
    np.testing.assert_allclose(arfs, arf.specresp[None, :] * m, rtol=2e-7)
    np.testing.assert_array_equal(t["DRAW"], np.arange(1, 26))
    for j, name in enumerate(GAUSS.param_names):
        np.testing.assert_array_equal(t[name], thetas[:, j])
    with _open_verified(out) as hdul, fits.open(source) as orig:
        hdr = hdul["ENSEMBLE"].header
        assert hdr["XRMSTAT"] == "ensemble" and hdr["XRMNDRAW"] == 25
        assert hdr["XRMRESLT"] == str(Path("run/result.json").resolve())  # absolute
        assert hdr["TELESCOP"] == "XMM" and hdr["INSTRUME"] == "EPN"
        assert hdr["TUNIT4"] == "cm**2"
        for key, value in _cards(orig[0].header).items():  # primary keywords kept
            if key not in OURS | {"SIMPLE", "BITPIX", "NAXIS", "EXTEND"}:
                assert hdul[0].header[key] == value, key
    with pytest.raises(ValueError, match="thetas"):
        write_arf_ensemble(tmp_path / "x.fits", source, m, thetas[:, :2], ("a", "b", "c"), "r")
    assert not (tmp_path / "x.fits").exists()
