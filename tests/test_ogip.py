"""OGIP I/O on the real Chandra/XMM responses and on small files with every quirk we handle."""

from __future__ import annotations

import gzip
import shutil

import numpy as np
import pytest
import scipy.sparse as sp
from astropy.io import fits

from xrmodifier_hpc import __version__
from xrmodifier_hpc.errors import ResponseError
from xrmodifier_hpc.io.ogip import (
    Instrument,
    read_arf,
    read_pha,
    read_rmf,
    write_arf,
    write_modified_arf,
    write_pha,
    write_rmf,
)
from xrmodifier_hpc.physics.modifiers import get_modifier

REAL_PAIRS = [
    ("chandra_acis_9774.arf", "chandra_acis_9774.rmf", 1078, 1024, 1),
    # no TLMIN on F_CHAN: XSPEC counts F_CHAN from 1 (see ogip._first_channel)
    ("xmm_epn_src.arf", "xmm_epn_ff20_dY9.rmf", 1319, 4096, 1),
]


def dense_from_raw_columns(path) -> tuple[np.ndarray, int]:
    """An independent reading of an RMF: walk the raw FITS columns into a dense matrix."""
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul[1:] if "MATRIX" in h.name)
        ebounds = hdul["EBOUNDS"]
        n_chan = ebounds.header["NAXIS2"]
        col = hdu.columns.names.index("F_CHAN") + 1
        first = hdu.header.get(f"TLMIN{col}", 1)
        dense = np.zeros((hdu.header["NAXIS2"], n_chan))
        for i, row in enumerate(hdu.data):
            values = np.ravel(row["MATRIX"])
            pos = 0
            for g in range(int(row["N_GRP"])):
                f = int(np.ravel(row["F_CHAN"])[g]) - first
                n = int(np.ravel(row["N_CHAN"])[g])
                skip = min(max(0, -f), n)  # channels below the first do not exist
                dense[i, f + skip : f + n] += values[pos + skip : pos + n]
                pos += n
    return dense, first


@pytest.mark.parametrize("arf_name, rmf_name, n_e, n_chan, first", REAL_PAIRS)
def test_real_responses_fold_like_dense_computation(
    responses_dir, arf_name, rmf_name, n_e, n_chan, first
):
    inst = Instrument.load(responses_dir / arf_name, responses_dir / rmf_name)
    assert inst.n_energies == n_e and inst.n_channels == n_chan
    assert inst.channel[0] == first and inst.channel[-1] == first + n_chan - 1
    dense, _ = dense_from_raw_columns(responses_dir / rmf_name)
    with fits.open(responses_dir / arf_name) as hdul:
        area = hdul["SPECRESP"].data["SPECRESP"].astype(float)
    flat = np.full(n_e, 1e-3)  # photons cm^-2 s^-1 per bin
    expected = (flat * area) @ dense
    np.testing.assert_allclose(inst.fold(flat), expected, rtol=1e-10, atol=1e-12)
    # batches fold row by row
    batch = np.vstack([flat, 2 * flat])
    np.testing.assert_allclose(inst.fold(batch)[1], 2 * expected, rtol=1e-10, atol=1e-12)


def test_real_arf_peaks_where_the_readme_says(responses_dir):
    acis = read_arf(responses_dir / "chandra_acis_9774.arf")
    assert 670 < acis.specresp.max() < 700
    assert 1.3 < acis.energ_lo[acis.specresp.argmax()] < 1.7
    pn = read_arf(responses_dir / "xmm_epn_src.arf")
    assert 860 < pn.specresp.max() < 900


def test_acis_channel_numbers_come_from_tlmin_not_the_broken_ebounds_column(responses_dir):
    rmf = read_rmf(responses_dir / "chandra_acis_9774.rmf")
    np.testing.assert_array_equal(rmf.channel, np.arange(1, 1025))
    assert rmf.matrix.nnz == 438482


# --------------------------------------------------------------------------------------------
# small synthetic files with the quirks
# --------------------------------------------------------------------------------------------

N_E, N_CHAN = 12, 8


def small_matrix() -> np.ndarray:
    """Rows with two separated groups, so N_GRP = 2 appears."""
    rng = np.random.default_rng(3)
    m = np.zeros((N_E, N_CHAN))
    for i in range(N_E):
        c = min(i * N_CHAN // N_E, N_CHAN - 1)
        lo, hi = max(c - 1, 0), min(c + 2, N_CHAN)
        m[i, lo:hi] = rng.uniform(0.2, 1.0, size=hi - lo)
        m[i, (c + 4) % N_CHAN] = 0.05  # a second, detached group
    return m / m.sum(axis=1, keepdims=True)


def small_grid():
    edges = np.linspace(0.5, 6.5, N_E + 1)
    chan = np.linspace(0.4, 7.0, N_CHAN + 1)
    return edges[:-1], edges[1:], chan[:-1], chan[1:]


def write_small_rmf(path, first_channel=1, extname="MATRIX", tlmin=True, full=False, scale=1.0):
    lo, hi, emin, emax = small_grid()
    write_rmf(
        path,
        lo,
        hi,
        small_matrix() * scale,
        emin,
        emax,
        first_channel=first_channel,
        extname=extname,
        full=full,
    )
    if not tlmin:
        with fits.open(path, mode="update") as hdul:
            for hdu in hdul[1:]:
                for key in ("TLMIN4", "TLMAX4", "TLMIN1", "TLMAX1"):
                    hdu.header.remove(key, ignore_missing=True)
    return path


def write_small_arf(path, shift=0.0):
    lo, hi, _, _ = small_grid()
    write_arf(path, lo * (1 + shift), hi * (1 + shift), np.linspace(100, 200, N_E))
    return path


@pytest.mark.parametrize("first_channel, tlmin", [(0, True), (1, True), (1, False), (0, False)])
def test_channel_offsets(tmp_path, first_channel, tlmin):
    rmf_path = write_small_rmf(tmp_path / "r.rmf", first_channel=first_channel, tlmin=tlmin)
    rmf = read_rmf(rmf_path)
    if tlmin or first_channel == 1:
        assert rmf.channel[0] == first_channel
        np.testing.assert_allclose(rmf.matrix.toarray(), small_matrix(), atol=1e-7)
    else:
        # without TLMIN, XSPEC counts F_CHAN from 1: channel 0's elements are dropped and
        # the matrix sits one column lower than EBOUNDS
        assert rmf.channel[0] == 1
        expected = np.zeros_like(small_matrix())
        expected[:, :-1] = small_matrix()[:, 1:]
        np.testing.assert_allclose(rmf.matrix.toarray(), expected, atol=1e-7)


def test_two_groups_per_row_are_read(tmp_path):
    path = write_small_rmf(tmp_path / "r.rmf")
    with fits.open(path) as hdul:
        assert hdul["MATRIX"].data["N_GRP"].max() == 2
    np.testing.assert_allclose(read_rmf(path).matrix.toarray(), small_matrix(), atol=1e-7)


@pytest.mark.parametrize("extname", ["MATRIX", "SPECRESP MATRIX", "RSP_MATRIX"])
def test_matrix_extension_names(tmp_path, extname):
    path = write_small_rmf(tmp_path / "r.rmf", extname=extname)
    assert read_rmf(path).matrix.shape == (N_E, N_CHAN)


def test_gzipped_files(tmp_path):
    rmf = write_small_rmf(tmp_path / "r.rmf")
    arf = write_small_arf(tmp_path / "a.arf")
    for p in (rmf, arf):
        with open(p, "rb") as src, gzip.open(f"{p}.gz", "wb") as dst:
            shutil.copyfileobj(src, dst)
    inst = Instrument.load(f"{arf}.gz", f"{rmf}.gz")
    ref = Instrument.load(arf, rmf)
    np.testing.assert_allclose(inst.fold(np.ones(N_E)), ref.fold(np.ones(N_E)))


def test_rmf_with_area_folded_in(tmp_path):
    path = write_small_rmf(tmp_path / "full.rmf", extname="SPECRESP MATRIX", full=True, scale=50.0)
    rmf = read_rmf(path)
    assert rmf.includes_area
    inst = Instrument.load(None, path)
    np.testing.assert_allclose(inst.area, 1.0)
    np.testing.assert_allclose(
        inst.fold(np.ones(N_E)), 50.0 * small_matrix().sum(axis=0), rtol=1e-6
    )
    # a redistribution-only RMF needs an ARF
    plain = write_small_rmf(tmp_path / "plain.rmf")
    with pytest.raises(ResponseError, match="give an ARF"):
        Instrument.load(None, plain)


def test_arf_rmf_grid_mismatch(tmp_path):
    rmf = write_small_rmf(tmp_path / "r.rmf")
    Instrument.load(write_small_arf(tmp_path / "ok.arf", shift=5e-5), rmf)
    with pytest.raises(ResponseError, match="differ by up to"):
        Instrument.load(write_small_arf(tmp_path / "bad.arf", shift=1e-3), rmf)


def test_band_mask_selects_channels(tmp_path):
    inst = Instrument.load(write_small_arf(tmp_path / "a.arf"), write_small_rmf(tmp_path / "r.rmf"))
    mask = inst.band_mask(1.0, 5.0)
    assert 0 < mask.sum() < N_CHAN
    assert np.all(inst.e_max[mask] > 1.0) and np.all(inst.e_min[mask] < 5.0)
    with pytest.raises(ResponseError, match="no channel"):
        inst.band_mask(20.0, 30.0)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p.write_text("not fits at all"), "not a readable FITS file"),
        (lambda p: fits.HDUList([fits.PrimaryHDU()]).writeto(p), "no matrix extension"),
        (lambda p: None, "does not exist"),
    ],
)
def test_bad_rmf_files(tmp_path, make, message):
    path = tmp_path / "bad.rmf"
    make(path)
    with pytest.raises(ResponseError, match=message) as info:
        read_rmf(path)
    assert str(path) in str(info.value)


def test_rmf_missing_column_is_named(tmp_path):
    path = write_small_rmf(tmp_path / "r.rmf")
    with fits.open(path) as hdul:
        cols = [c for c in hdul["MATRIX"].columns if c.name != "N_GRP"]
        hdul["MATRIX"] = fits.BinTableHDU.from_columns(cols, header=hdul["MATRIX"].header)
        hdul.writeto(tmp_path / "nogrp.rmf")
    with pytest.raises(ResponseError, match="no column N_GRP"):
        read_rmf(tmp_path / "nogrp.rmf")


def test_modified_arf_round_trip(responses_dir, tmp_path):
    inst = Instrument.load(
        responses_dir / "chandra_acis_9774.arf", responses_dir / "chandra_acis_9774.rmf"
    )
    family = get_modifier("gaussian")
    theta = np.array([1.5, 0.3, -0.2])
    m = family.evaluate(inst.e_mid, theta)
    out = write_modified_arf(
        tmp_path / "corrected.arf", inst, family.name, family.param_names, theta, m
    )
    back = read_arf(out)
    np.testing.assert_allclose(back.specresp, inst.area * m, rtol=1e-6)
    np.testing.assert_allclose(back.energ_lo, inst.energ_lo, rtol=1e-7)
    h = back.header
    # original keywords kept, provenance added
    assert h["TELESCOP"].strip() == "CHANDRA" and h["INSTRUME"].strip() == "ACIS"
    assert h["XRMFAMIL"] == "gaussian" and h["XRMNPAR"] == 3
    assert [h[f"XRMPN{k}"] for k in (1, 2, 3)] == ["mu", "sigma", "A"]
    np.testing.assert_allclose([h[f"XRMPV{k}"] for k in (1, 2, 3)], theta)
    assert h["XRMSRC"].endswith("chandra_acis_9774.arf")
    assert h["XRMVERS"] == __version__ and "DATE" in h
    assert h["HDUCLAS1"] == "RESPONSE" and h["HDUCLAS2"] == "SPECRESP"
    assert any("gaussian" in str(v) for v in h["HISTORY"])
    with fits.open(out, checksum=True) as hdul:
        assert hdul[1].verify_checksum() == 1


def test_negative_modified_arf_is_refused(responses_dir, tmp_path):
    inst = Instrument.load(
        responses_dir / "chandra_acis_9774.arf", responses_dir / "chandra_acis_9774.rmf"
    )
    with pytest.raises(ResponseError, match="negative"):
        write_modified_arf(
            tmp_path / "x.arf",
            inst,
            "gaussian",
            ("mu", "sigma", "A"),
            (1, 1, -2),
            np.full(inst.n_energies, -0.5),
        )
    assert not (tmp_path / "x.arf").exists()


def test_pha_round_trip_and_keywords(tmp_path):
    chan = np.arange(0, 16)
    counts = np.arange(16) % 5
    path = write_pha(tmp_path / "s.pha", chan, counts, 1234.5, respfile="r.rmf", ancrfile="a.arf")
    pha = read_pha(path)
    np.testing.assert_array_equal(pha.channel, chan)
    np.testing.assert_array_equal(pha.counts, counts)
    assert pha.exposure == 1234.5
    assert pha.resolve(pha.respfile) == tmp_path / "r.rmf"
    assert pha.resolve(pha.ancrfile) == tmp_path / "a.arf"


def test_real_xspec_pha_files_read(reference_dir):
    pha = read_pha(reference_dir / "xspec_fits" / "acis_kT2.268.pha")
    assert pha.exposure == 20000.0
    assert pha.respfile == "chandra_acis_9774.rmf" and pha.ancrfile == "chandra_acis_9774.arf"
    assert pha.counts.sum() > 40000


def test_instrument_with_area_keeps_matrix(tmp_path):
    inst = Instrument.load(write_small_arf(tmp_path / "a.arf"), write_small_rmf(tmp_path / "r.rmf"))
    doubled = inst.with_area(2 * inst.area)
    assert sp.issparse(doubled.matrix)
    np.testing.assert_allclose(doubled.fold(np.ones(N_E)), 2 * inst.fold(np.ones(N_E)))
