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
    # a redistribution-only RMF without an ARF is used as XSPEC uses it (area 1), warned
    plain = Instrument.load(None, write_small_rmf(tmp_path / "plain.rmf"))
    np.testing.assert_allclose(plain.fold(np.ones(N_E)), small_matrix().sum(axis=0), rtol=1e-6)
    (warning,) = plain.warnings
    assert "redistribution-only" in warning and "1 cm^2" in warning


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


# --------------------------------------------------------------------------------------------
# whether a matrix carries the area: keywords AND values
# --------------------------------------------------------------------------------------------


def _set_keywords(path, extname="MATRIX", **keywords):
    with fits.open(path, mode="update") as hdul:
        for key, value in keywords.items():
            if value is None:
                hdul[extname].header.remove(key, ignore_missing=True)
            else:
                hdul[extname].header[key] = value
    return path


@pytest.mark.parametrize(
    "hduclas3, scale, area, evidence",
    [
        ("REDIST", 1.0, False, "HDUCLAS3 = REDIST, rows sum to up to 1"),
        ("DETECTOR", 0.8, False, "HDUCLAS3 = DETECTOR"),
        (None, 1.0, False, "no HDUCLAS3"),
        ("FULL", 300.0, True, "rows sum to up to 300, an area in cm^2, with HDUCLAS3 = FULL"),
        # the values decide when the keyword is missing or says otherwise
        (None, 300.0, True, "rows sum to up to 300, an area in cm^2, with no HDUCLAS3"),
        ("REDIST", 300.0, True, "with HDUCLAS3 = REDIST"),
        ("DETECTOR", 2.0, True, "rows sum to up to 2"),
        # FULL with probabilities: the keyword still says the area is in (a tiny RSP)
        ("FULL", 0.9, True, "HDUCLAS3 = FULL, though its rows sum to up to 0.9"),
    ],
)
def test_area_in_matrix_from_keyword_and_values(tmp_path, hduclas3, scale, area, evidence):
    path = write_small_rmf(tmp_path / "r.rmf", scale=scale)
    _set_keywords(path, HDUCLAS3=hduclas3)
    rmf = read_rmf(path)
    assert rmf.includes_area == area
    assert evidence in rmf.area_evidence
    arf = write_small_arf(tmp_path / "a.arf")
    if area:
        with pytest.raises(ResponseError, match="applied twice") as info:
            Instrument.load(arf, path)
        assert str(path) in str(info.value) and "allow_double_area" in str(info.value)
        both = Instrument.load(arf, path, allow_double_area=True)
        assert any("applied twice" in w for w in both.warnings)
        alone = Instrument.load(None, path)
        assert alone.warnings == () and alone.area_in_matrix
    else:
        assert Instrument.load(arf, path).warnings == ()
        assert "redistribution-only" in Instrument.load(None, path).warnings[0]


def test_corrected_arf_of_an_rsp_is_a_multiplier_that_goes_with_it(tmp_path):
    rsp = write_small_rmf(tmp_path / "r.rsp", extname="SPECRESP MATRIX", full=True, scale=300.0)
    inst = Instrument.load(None, rsp)
    m = np.linspace(0.9, 1.1, N_E)
    out = write_modified_arf(tmp_path / "c.arf", inst, "gaussian", ("mu",), (1.0,), m)
    assert read_arf(out).header["XRMMULT"] is True
    corrected = Instrument.load(out, rsp)  # not a second area: accepted without a warning
    assert corrected.warnings == ()
    np.testing.assert_allclose(corrected.fold(np.ones(N_E)), inst.fold(m), rtol=1e-6)


@pytest.mark.parametrize(
    "keywords, message",
    [
        ({"EFFAREA": 2.0}, "EFFAREA = 2: a matrix scaled by EFFAREA != 1 is not supported"),
        ({"EFFAREA": "1.0"}, "EFFAREA = '1.0' (a string) must be a number"),
        ({"DETCHANS": "8"}, "DETCHANS = '8' (a string) must be an integer"),
        ({"DETCHANS": 9}, "DETCHANS = 9 but EBOUNDS has 8 rows"),
        ({"TLMIN4": 1.5}, "TLMIN4 = 1.5 must be an integer"),
    ],
)
def test_rmf_keywords_are_type_checked(tmp_path, keywords, message):
    path = _set_keywords(write_small_rmf(tmp_path / "r.rmf"), **keywords)
    with pytest.raises(ResponseError) as info:
        read_rmf(path)
    assert message in str(info.value) and str(path) in str(info.value)
    assert read_rmf(_set_keywords(path, EFFAREA=1.0, DETCHANS=8, TLMIN4=1)).matrix.shape == (
        N_E,
        N_CHAN,
    )


def _rewrite_energies(path, lo, hi):
    with fits.open(path, mode="update") as hdul:
        hdul["MATRIX"].data["ENERG_LO"] = lo
        hdul["MATRIX"].data["ENERG_HI"] = hi
    return path


def test_zero_width_energy_bins_read_and_hold_no_flux(tmp_path):
    lo, hi, _, _ = small_grid()
    lo, hi = lo.copy(), hi.copy()
    hi[4] = lo[4]  # bin 5 has zero width, as 19 bins of the ROSAT PSPC responses
    lo[5] = hi[4]
    path = _rewrite_energies(write_small_rmf(tmp_path / "r.rmf"), lo, hi)
    inst = Instrument.load(None, path)
    from xrmodifier_hpc.physics.spectra import parse_model

    flux = parse_model("wabs*bremss").photon_flux(inst.energ_lo, inst.energ_hi, [3.0], {"nH": 0.1})
    assert np.all(np.isfinite(flux)) and flux[0, 4] == 0 and np.all(np.delete(flux, 4) > 0)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda lo, hi: (lo, np.where(np.arange(N_E) == 3, lo - 0.1, hi)), "ENERG_LO <= ENERG_HI"),
        (lambda lo, hi: (np.where(np.arange(N_E) == 3, lo[2] - 0.1, lo), hi), "must increase"),
        (lambda lo, hi: (np.where(np.arange(N_E) == 3, lo - 0.1, lo), hi), "overlap"),
        (lambda lo, hi: (lo, np.where(np.arange(N_E) == 3, hi + 0.3, hi)), "overlap"),
    ],
)
def test_bad_energy_grids_are_refused(tmp_path, change, message):
    lo, hi, _, _ = small_grid()
    path = _rewrite_energies(write_small_rmf(tmp_path / "r.rmf"), *change(lo.copy(), hi.copy()))
    with pytest.raises(ResponseError, match=message):
        read_rmf(path)


# --------------------------------------------------------------------------------------------
# PHA keywords and columns (OGIP/92-007) as XSPEC applies them
# --------------------------------------------------------------------------------------------

SMALL_COUNTS = np.array([3, 10, 25, 40, 33, 18, 7, 2])


def make_pha(path, counts=SMALL_COUNTS, data_column="COUNTS", columns=(), **keywords):
    """A type-I PHA with the OGIP keywords of a plain Poisson spectrum, changed by
    ``keywords`` (None removes one) and extra ``columns`` ((name, format, values), ...)."""
    counts = np.asarray(counts)
    cols = [fits.Column("CHANNEL", "J", array=1 + np.arange(counts.size))]
    fmt = "J" if data_column == "COUNTS" and counts.dtype.kind in "iu" else "E"
    cols.append(fits.Column(data_column, fmt, array=counts))
    cols += [fits.Column(n, f, array=np.asarray(v)) for n, f, v in columns]
    hdu = fits.BinTableHDU.from_columns(cols, name="SPECTRUM")
    header = {
        "HDUCLASS": "OGIP",
        "HDUCLAS1": "SPECTRUM",
        "HDUCLAS2": "TOTAL",
        "HDUCLAS3": "COUNT" if data_column == "COUNTS" else "RATE",
        "DETCHANS": counts.size,
        "EXPOSURE": 1000.0,
        "AREASCAL": 1.0,
        "BACKSCAL": 1.0,
        "CORRSCAL": 0.0,
        "POISSERR": True,
        "BACKFILE": "none",
        "CORRFILE": "none",
        "RESPFILE": "none",
        "ANCRFILE": "none",
        "TLMIN1": 1,
    }
    header.update(keywords)
    for key, value in header.items():
        if value is not None:
            hdu.header[key] = value
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)
    return path


def _raw_card(path, key, text):
    """Replace keyword ``key``'s card by raw text (values astropy will not write, e.g. NaN)."""
    data = bytearray(path.read_bytes())
    i = data.find(f"{key:<8}=".encode())
    data[i : i + 80] = f"{key:<8}= {text:>20}".ljust(80).encode()
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize(
    "value, raw, message",
    [
        (None, None, "keyword EXPOSURE (the exposure time, s) is missing"),
        ("50000", None, "EXPOSURE = '50000' (a string) must be a number"),
        (True, None, "EXPOSURE = T (a logical) must be a number"),
        (1.0, "NaN", "EXPOSURE = 'NaN' (a string) must be a number"),
        (1.0, "1.0E400", "EXPOSURE = inf must be a finite number"),
        (0.0, None, "EXPOSURE = 0 must be positive"),
        (-20.0, None, "EXPOSURE = -20 must be positive"),
    ],
)
def test_exposure_is_type_and_range_checked(tmp_path, value, raw, message):
    path = make_pha(tmp_path / "s.pha", EXPOSURE=value)
    if raw is not None:
        _raw_card(path, "EXPOSURE", raw)
    with pytest.raises(ResponseError) as info:
        read_pha(path)
    assert message in str(info.value)
    assert str(info.value).startswith(f"{path} [SPECTRUM]")


@pytest.mark.parametrize(
    "keywords, columns, message",
    [
        ({"AREASCAL": "half"}, (), "AREASCAL = 'half' (a string) must be a number"),
        ({"AREASCAL": -1.0}, (), "AREASCAL = -1 must not be negative"),
        ({"AREASCAL": 0.0}, (), "AREASCAL = 0 in 8 channel(s) of good QUALITY"),
        ({}, (("AREASCAL", "E", [1, 1, np.nan, 1, 1, 1, 1, 1]),), "column AREASCAL"),
        ({"BACKSCAL": False}, (), "BACKSCAL = F (a logical) must be a number"),
        ({"SYS_ERR": -0.1}, (), "SYS_ERR = -0.1 must not be negative"),
        ({"POISSERR": "T"}, (), "POISSERR = 'T' (a string) must be T or F"),
        ({"QUALITY": 0.5}, (), "QUALITY = 0.5 must be an integer"),
        ({}, (("GROUPING", "I", [1, -1, 2, 1, -1, 1, 1, 1]),), "GROUPING = 2 in row 3"),
        ({}, (("GROUPING", "I", [-1, -1, 1, 1, -1, 1, 1, 1]),), "GROUPING starts with -1"),
        ({"HDUCLAS1": "RESPONSE"}, (), "HDUCLAS1 = RESPONSE: this is not a spectrum"),
        ({"DETCHANS": 1024}, (), "DETCHANS = 1024 but the table has 8 rows"),
        ({"TLMIN1": 0}, (), "CHANNEL starts at 1 but its TLMIN is 0"),
        ({"CORRFILE": "corr.pha", "CORRSCAL": 0.5}, (), "correction files are not supported"),
        ({"HDUCLAS4": "TYPE:II"}, (), "type-II PHA"),
    ],
)
def test_pha_keywords_and_columns_are_checked(tmp_path, keywords, columns, message):
    path = make_pha(tmp_path / "s.pha", columns=columns, **keywords)
    with pytest.raises(ResponseError) as info:
        read_pha(path)
    assert message in str(info.value) and str(path) in str(info.value)


def test_channels_must_be_consecutive(tmp_path):
    path = make_pha(tmp_path / "s.pha")
    with fits.open(path, mode="update") as hdul:
        hdul["SPECTRUM"].data["CHANNEL"][5] = 9
    with pytest.raises(ResponseError, match="CHANNEL must run consecutively"):
        read_pha(path)


def test_keywords_that_do_not_change_a_cstat_fit_are_accepted_and_reported(tmp_path):
    pha = read_pha(
        make_pha(
            tmp_path / "s.pha",
            CORRFILE="corr.pha",  # CORRSCAL = 0: no effect, as in XSPEC
            SYS_ERR=0.02,
            BACKSCAL=0.3,
            HDUCLAS3="RATE",  # the column says COUNTS: the column decides
        )
    )
    assert pha.poisson_problems == ()
    assert any("SYS_ERR" in n for n in pha.notes)
    assert any("HDUCLAS3 = RATE but the data are a COUNTS column" in n for n in pha.notes)
    bkg = read_pha(make_pha(tmp_path / "b.pha", HDUCLAS2="BKG"))
    assert bkg.poisson_problems == () and "background spectrum" in bkg.notes[0]


@pytest.mark.parametrize(
    "kwargs, problem",
    [
        ({"HDUCLAS2": "NET"}, "HDUCLAS2 = NET"),
        ({"POISSERR": False}, "POISSERR = F"),
        ({"counts": SMALL_COUNTS + 0.5}, "COUNTS is not a whole number of counts in 8"),
        (
            {"counts": SMALL_COUNTS - 5},
            "COUNTS is negative in 2 channel(s) (first: channel 1 = -2)",
        ),
        (
            {"counts": (SMALL_COUNTS + 0.25) / 1000.0, "data_column": "RATE"},
            "RATE x EXPOSURE is not a whole number",
        ),
    ],
)
def test_non_poisson_spectra_are_refused_for_cstat(tmp_path, kwargs, problem):
    pha = read_pha(make_pha(tmp_path / "s.pha", **kwargs))
    assert any(problem in p for p in pha.poisson_problems), pha.poisson_problems
    with pytest.raises(ResponseError, match="C-stat needs the Poisson counts") as info:
        pha.require_poisson()
    assert problem in str(info.value)


def test_rate_spectrum_of_whole_counts_reads_as_counts(tmp_path):
    rate = (SMALL_COUNTS / 1000.0).astype(np.float32)  # single precision, as files store it
    pha = read_pha(make_pha(tmp_path / "s.pha", counts=rate, data_column="RATE"))
    assert pha.column == "RATE" and pha.poisson_problems == ()
    np.testing.assert_array_equal(pha.counts, SMALL_COUNTS)


def _small_instrument(tmp_path):
    return Instrument.load(write_small_arf(tmp_path / "a.arf"), write_small_rmf(tmp_path / "r.rmf"))


def test_areascal_keyword_and_column_multiply_the_model_counts(tmp_path):
    inst = _small_instrument(tmp_path)
    flux = np.linspace(1.0, 2.0, N_E)
    scale = np.array([1, 1, 0.5, 0.5, 0.5, 1, 1, 0.25])
    col = read_pha(make_pha(tmp_path / "c.pha", columns=(("AREASCAL", "E", scale),), AREASCAL=None))
    key = read_pha(make_pha(tmp_path / "k.pha", AREASCAL=0.5))
    from xrmodifier_hpc.io.ogip import spectrum_response

    seen, counts, usable = spectrum_response(col, inst)
    np.testing.assert_allclose(seen.fold(flux), inst.fold(flux) * scale, rtol=1e-12)
    np.testing.assert_array_equal(counts, SMALL_COUNTS) and np.testing.assert_array_equal(
        usable, True
    )
    seen_k, _, _ = spectrum_response(key, inst)
    np.testing.assert_allclose(seen_k.fold(flux), 0.5 * inst.fold(flux), rtol=1e-12)


def test_quality_flags_follow_xspec(tmp_path):
    quality = np.array([0, 1, 2, 5, 0, -1, 2, 0])
    pha = read_pha(make_pha(tmp_path / "s.pha", columns=(("QUALITY", "I", quality),)))
    # 0 and 2 ("dubious") are fitted; 2 too is left out by `ignore bad`; 1, 5, -1 never
    np.testing.assert_array_equal(pha.usable(), [1, 0, 1, 0, 1, 0, 1, 1])
    np.testing.assert_array_equal(pha.usable(ignore_bad=True), [1, 0, 0, 0, 1, 0, 0, 1])
    # a bad channel's AREASCAL does not matter, not even 0
    scale = np.where(quality == 1, 0.0, 1.0)
    read_pha(
        make_pha(
            tmp_path / "z.pha",
            columns=(("QUALITY", "I", quality), ("AREASCAL", "E", scale)),
            AREASCAL=None,
        )
    )


def test_grouping_sums_channels_into_bins_as_a_dense_computation(tmp_path):
    from xrmodifier_hpc.io.ogip import spectrum_response

    inst = _small_instrument(tmp_path)
    grouping = np.array([1, -1, -1, 1, -1, 0, 1, -1])
    quality = np.array([0, 0, 0, 0, 5, 0, 0, 0])  # a bad channel inside the second bin
    scale = np.array([1, 1, 1, 0.5, 0.5, 1, 1, 1])
    path = make_pha(
        tmp_path / "s.pha",
        columns=(("GROUPING", "I", grouping), ("QUALITY", "I", quality), ("AREASCAL", "E", scale)),
        AREASCAL=None,
    )
    seen, counts, usable = spectrum_response(read_pha(path), inst)
    bins = [[0, 1, 2], [3], [5], [6, 7]]  # channel 4 is bad: out of its bin
    np.testing.assert_array_equal(counts, [SMALL_COUNTS[b].sum() for b in bins])
    assert usable.all() and seen.n_channels == 4
    dense = inst.matrix.toarray() * inst.area[:, None] * scale[None, :]
    flux = np.linspace(1.0, 2.0, N_E)
    expected = [(flux @ dense[:, b]).sum() for b in bins]
    np.testing.assert_allclose(seen.fold(flux), expected, rtol=1e-12)
    np.testing.assert_allclose(seen.e_min, inst.e_min[[0, 3, 5, 6]])
    np.testing.assert_allclose(seen.e_max, inst.e_max[[2, 4, 5, 7]])


def test_fit_applies_quality_like_xspec(reference_dir, responses_dir, tmp_path):
    """QUALITY 5 leaves channels out; 2 is fitted (warned) unless --ignore-bad."""
    from xrmodifier_hpc.stages.fit import fit

    src = reference_dir / "xspec_fits" / "acis_kT2.268.pha"
    with fits.open(src) as hdul:
        hdu = hdul["SPECTRUM"]
        quality = np.zeros(len(hdu.data), np.int16)
        quality[99:109] = 2  # ~1.5 keV
        quality[199:204] = 5  # ~2.9 keV
        cols = [c for c in hdu.columns if c.name != "QUALITY"]
        cols.append(fits.Column("QUALITY", "I", array=quality))
        new = fits.BinTableHDU.from_columns(cols, header=hdu.header, name="SPECTRUM")
        new.header.remove("QUALITY", ignore_missing=True)
        fits.HDUList([fits.PrimaryHDU(), new]).writeto(tmp_path / "q.pha")
    kw = dict(
        arf=responses_dir / "chandra_acis_9774.arf",
        rmf=responses_dir / "chandra_acis_9774.rmf",
        params={"nH": 0.05},
    )
    plain = fit(src, **kw)
    dubious = fit(tmp_path / "q.pha", **kw)
    strict = fit(tmp_path / "q.pha", ignore_bad=True, **kw)
    assert dubious["channels_noticed"] == plain["channels_noticed"] - 5
    assert strict["channels_noticed"] == plain["channels_noticed"] - 15
    assert any("QUALITY = 2" in w for w in dubious["warnings"])
    assert "warnings" not in strict or not any("QUALITY = 2" in w for w in strict["warnings"])
    assert plain["counts_noticed"] > dubious["counts_noticed"] > strict["counts_noticed"]
