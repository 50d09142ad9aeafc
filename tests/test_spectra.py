"""Native source models against numbers a real XSPEC produced, table models, expressions."""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from xrmodifier_hpc.io.tables import load_model
from xrmodifier_hpc.physics.spectra import (
    Bremss,
    ModelError,
    bremss_density,
    gaunt_factor,
    parse_model,
    wabs_transmission,
)

ENERGY_BAND = (0.3, 12.0)  # keV: where the accuracy targets apply


@pytest.fixture(scope="module")
def xspec_values(reference_dir) -> dict[tuple[str, float], np.ndarray]:
    """(component, parameter) -> rows (e_lo, e_hi, value) of xspec_models.csv."""
    out: dict[tuple[str, float], list] = defaultdict(list)
    with open(reference_dir / "xspec_models.csv") as fh:
        rows = csv.reader(line for line in fh if not line.startswith("#"))
        next(rows)
        for comp, par, lo, hi, value in rows:
            out[(comp, float(par))].append((float(lo), float(hi), float(value)))
    return {k: np.array(v) for k, v in out.items()}


def _in_band(table: np.ndarray) -> np.ndarray:
    return (table[:, 0] >= ENERGY_BAND[0] - 1e-9) & (table[:, 1] <= ENERGY_BAND[1] + 1e-9)


def test_reference_covers_the_tabulated_parameters(xspec_values):
    kts = sorted(p for c, p in xspec_values if c == "bremss")
    nhs = sorted(p for c, p in xspec_values if c == "wabs")
    assert kts == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0]
    assert nhs == [0.01, 0.1, 1.0]


@pytest.mark.parametrize("kt", [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0])
def test_bremss_matches_xspec(xspec_values, kt):
    table = xspec_values[("bremss", kt)][_in_band(xspec_values[("bremss", kt)])]
    smooth = Bremss("smooth").evaluate(table[:, 0], table[:, 1], {"kT": np.array([kt])})[0]
    assert np.abs(smooth / table[:, 2] - 1).max() < 0.02  # the requirement
    for exact in (Bremss(), Bremss("xspec")):  # the default is XSPEC's algorithm
        values = exact.evaluate(table[:, 0], table[:, 1], {"kT": np.array([kt])})[0]
        # the same algorithm as XSPEC: what is left is XSPEC's single-precision bin edges
        assert np.abs(values / table[:, 2] - 1).max() < 2e-4


@pytest.mark.parametrize("seam_kt", [13.58, 54.32, 0.5432, 0.1358])
def test_smooth_bremss_is_continuous_across_xspecs_regime_switches(seam_kt):
    e = np.array([0.3, 0.5, 1.0, 2.0, 3.0])
    below, above = (1 - 1e-7) * seam_kt, (1 + 1e-7) * seam_kt
    jump = np.abs(bremss_density(e, above, "smooth") / bremss_density(e, below, "smooth") - 1)
    assert jump.max() < 1e-5
    # XSPEC's own switch (the default) is a step
    exact_jump = np.abs(bremss_density(e, above) / bremss_density(e, below) - 1)
    assert exact_jump.max() > 2e-3
    # the blend stays within XSPEC's two regimes' spread
    for kt in np.geomspace(seam_kt / 1.4, seam_kt * 1.4, 15):
        smooth, exact = bremss_density(e, kt, "smooth"), bremss_density(e, kt)
        assert np.all(np.abs(smooth / exact - 1) < 0.035)


def test_bremss_variant_syntax():
    assert parse_model("wabs*bremss{xspec}").components[1].seams == "xspec"
    assert parse_model("wabs*bremss").components[1].seams == "xspec"  # XSPEC's by default
    assert parse_model("wabs*bremss{smooth}").components[1].seams == "smooth"
    assert parse_model("wabs*bremss{smooth}").components[1].describe() == "bremss{smooth}"
    assert parse_model("wabs*bremss{xspec}").components[1].describe() == "bremss"
    with pytest.raises(ModelError, match="bremss takes"):
        parse_model("bremss{exact}")


@pytest.mark.parametrize("nh", [0.01, 0.1, 1.0])
def test_wabs_matches_xspec(xspec_values, nh):
    table = xspec_values[("wabs", nh)][_in_band(xspec_values[("wabs", nh)])]
    model = wabs_transmission(table[:, 0], table[:, 1], np.array([nh]))[0]
    rel = np.abs(model / table[:, 2] - 1)
    assert rel.max() < 0.01
    assert rel.max() < 1e-4


def test_product_is_the_product_of_the_components(xspec_values):
    lo, hi = np.linspace(0.5, 7.0, 651)[:-1], np.linspace(0.5, 7.0, 651)[1:]
    model = parse_model("wabs*bremss")
    flux = model.photon_flux(lo, hi, np.array([2.0, 4.0]), {"nH": 0.1})
    expected = (
        Bremss().evaluate(lo, hi, {"kT": np.array([2.0, 4.0])})
        * wabs_transmission(lo, hi, np.array([0.1]))[0]
    )
    np.testing.assert_allclose(flux, expected, rtol=1e-14)
    assert model.param_names == ("nH", "kT")


def test_bremss_is_integrated_over_each_bin_not_sampled():
    kt = 1.0
    lo, hi = np.array([1.0]), np.array([3.0])
    wide = Bremss().evaluate(lo, hi, {"kT": np.array([kt])})[0, 0]
    # two-point rule over the bin, as XSPEC: (f(1) + f(3)) / 2 * 2
    trap = float(bremss_density(1.0, kt) + bremss_density(3.0, kt))
    assert wide == pytest.approx(trap, rel=1e-12)
    # finer bins converge to the integral; their sum is below the coarse trapezoid (convex f)
    edges = np.linspace(1.0, 3.0, 2001)
    fine = Bremss().evaluate(edges[:-1], edges[1:], {"kT": np.array([kt])}).sum()
    assert fine < wide
    centre = bremss_density(2.0, kt) * 2.0
    assert abs(fine - centre) / fine > 0.05  # a centre-sampled model would be far off


def test_gaunt_factor_regimes():
    e = np.array([0.5, 1.0, 5.0])
    # Born regime (gamma^2 < 1e-3: kT > 13.58 keV for hydrogen): sqrt(3)/pi e^x K0(x), x = u/2
    from scipy.special import k0e

    np.testing.assert_allclose(gaunt_factor(e, 20.0, 1.0), 0.5513 * k0e(e / 40.0), rtol=1e-12)
    # the polynomial fits stay within a few per cent of Born near the switch
    near = gaunt_factor(e, 13.0, 1.0) / (0.5513 * k0e(e / 26.0))
    assert np.all(np.abs(near - 1) < 0.05)
    # zero beyond 50 kT, for E = 0 and for kT = 0
    assert gaunt_factor(60.0, 1.0, 1.0) == 0.0
    assert gaunt_factor(0.0, 1.0, 1.0) == 0.0
    # low temperatures use the Kurucz table: positive, larger at lower u
    low = gaunt_factor(np.array([0.01, 0.1]), 0.05, 1.0)
    assert np.all(low > 0) and low[0] > low[1]


def test_wabs_edges_are_one_sided_and_bins_straddling_them_are_averaged():
    # the oxygen edge at 0.532 keV: transmission drops across it
    below = wabs_transmission(np.array([0.52]), np.array([0.53]), np.array([1.0]))[0, 0]
    above = wabs_transmission(np.array([0.534]), np.array([0.544]), np.array([1.0]))[0, 0]
    across = wabs_transmission(np.array([0.527]), np.array([0.537]), np.array([1.0]))[0, 0]
    assert above < across < below
    # a bin split at the edge averages its two halves exactly
    halves = wabs_transmission(np.array([0.527, 0.532]), np.array([0.532, 0.537]), np.array([1.0]))[
        0
    ]
    assert across == pytest.approx(halves.mean(), rel=1e-12)
    np.testing.assert_allclose(
        wabs_transmission(np.array([0.5, 2.0]), np.array([0.51, 2.01]), np.array([0.0])), 1.0
    )


# --------------------------------------------------------------------------------------------
# expressions and parameters
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "expr, match",
    [
        ("wabs*blackbody", "unknown model component 'blackbody'"),
        ("wabs*bremms", "did you mean 'bremss'"),
        ("wabs**bremss", "bad syntax"),
        ("wabs*", "incomplete"),
        ("(wabs*bremss", "incomplete"),
        ("wabs*bremss)", "unbalanced"),
        ("wabs+bremss", "sums of components are not supported"),
        ("wabs", "0 additive components"),
        ("bremss*bremss", "2 additive components"),
        ("wabs bremss", "missing"),
        ("", "empty"),
        ("atable{}", "needs a file"),
        ("wabs{x}*bremss", "takes no"),
    ],
)
def test_bad_expressions_are_refused(expr, match):
    with pytest.raises(ModelError, match=match):
        parse_model(expr)


def test_xspec_parenthesis_form_is_a_product():
    assert parse_model("wabs(bremss)").param_names == ("nH", "kT")
    assert parse_model(" wabs * bremss ").expression == "wabs * bremss"


def test_missing_table_file_is_refused(tmp_path):
    with pytest.raises(ModelError, match="not found") as err:
        load_model("wabs*atable{nope.fits}", base=tmp_path)
    assert str(tmp_path / "nope.fits") in str(err.value)


def test_check_params_refuses_out_of_range_values():
    model = parse_model("wabs*bremss")
    model.check_params({"nH": 0.05, "kT": 3.0})
    for bad, match in (
        ({"nH": -0.1}, "outside"),
        ({"kT": 500.0}, "outside"),
        ({"nH": float("nan")}, "outside"),
        ({"nH": "x"}, "number"),
        ({"Z": 1.0}, "no parameter 'Z'"),
    ):
        with pytest.raises(ModelError, match=match):
            model.check_params(bad)
    with pytest.raises(ModelError, match="outside the model's range"):
        model.photon_flux(np.array([1.0]), np.array([1.1]), np.array([0.0]), {"nH": 0.1})
    with pytest.raises(ModelError, match="no value given"):
        model.photon_flux(np.array([1.0]), np.array([1.1]), np.array([1.0]), {})


# --------------------------------------------------------------------------------------------
# table models: a bremss table written here, read back as atable
# --------------------------------------------------------------------------------------------

TABLE_KT = np.geomspace(1.0, 16.0, 25)
TABLE_EDGES = np.round(np.arange(0.1, 15.0 + 1e-9, 0.005), 6)


def write_bremss_table(
    path: Path,
    kt=TABLE_KT,
    method: int = 1,
    add_param: bool = False,
    redshift: bool = False,
    shuffle_rows: bool = False,
) -> Path:
    """An OGIP/92-009 additive table of bremss spectra on a kT grid (with an optional
    additional parameter 'boost' adding a flat 1e-3 photons/cm^2/s/bin)."""
    lo, hi = TABLE_EDGES[:-1], TABLE_EDGES[1:]
    spectra = Bremss().evaluate(lo, hi, {"kT": kt})
    primary = fits.PrimaryHDU()
    for key, value in (
        ("MODLNAME", "brtab"),
        ("MODLUNIT", "photons/cm^2/s"),
        ("REDSHIFT", redshift),
        ("ADDMODEL", True),
        ("HDUCLASS", "OGIP"),
    ):
        primary.header[key] = value
    names = ["kT"] + (["boost"] if add_param else [])
    nvals = [kt.size] + ([0] if add_param else [])
    values = np.zeros((len(names), kt.size), np.float32)
    values[0] = kt
    params = fits.BinTableHDU.from_columns(
        [
            fits.Column("NAME", "12A", array=names),
            fits.Column("METHOD", "J", array=[method] + ([0] if add_param else [])),
            fits.Column("INITIAL", "E", array=[2.0] + ([0.0] if add_param else [])),
            fits.Column("DELTA", "E", array=[0.01] * len(names)),
            fits.Column("MINIMUM", "E", array=[kt[0]] + ([0.0] if add_param else [])),
            fits.Column("BOTTOM", "E", array=[kt[0]] + ([0.0] if add_param else [])),
            fits.Column("TOP", "E", array=[kt[-1]] + ([10.0] if add_param else [])),
            fits.Column("MAXIMUM", "E", array=[kt[-1]] + ([10.0] if add_param else [])),
            fits.Column("NUMBVALS", "J", array=nvals),
            fits.Column("VALUE", f"{kt.size}E", array=values),
        ],
        name="PARAMETERS",
    )
    params.header["NINTPARM"] = 1
    params.header["NADDPARM"] = 1 if add_param else 0
    energies = fits.BinTableHDU.from_columns(
        [fits.Column("ENERG_LO", "D", array=lo), fits.Column("ENERG_HI", "D", array=hi)],
        name="ENERGIES",
    )
    order = np.arange(kt.size)[::-1] if shuffle_rows else np.arange(kt.size)
    cols = [
        fits.Column("PARAMVAL", "E", array=kt[order].astype(np.float32)),
        fits.Column("INTPSPEC", f"{lo.size}E", array=spectra[order].astype(np.float32)),
    ]
    if add_param:
        cols.append(
            fits.Column(
                "ADDSP001", f"{lo.size}E", array=np.full((kt.size, lo.size), 1e-3, np.float32)
            )
        )
    hdul = fits.HDUList(
        [primary, params, energies, fits.BinTableHDU.from_columns(cols, name="SPECTRA")]
    )
    hdul.writeto(path, overwrite=True)
    return path


def test_atable_reproduces_its_spectra_at_the_nodes(tmp_path):
    write_bremss_table(tmp_path / "br.fits")
    model = load_model("atable{br.fits}", base=tmp_path)
    assert model.param_names == ("kT",)
    assert model.param_range("kT") == pytest.approx((1.0, 16.0), rel=1e-6)
    lo, hi = TABLE_EDGES[:-1], TABLE_EDGES[1:]
    node = float(np.float32(TABLE_KT[7]))
    flux = model.photon_flux(lo, hi, np.array([node]), {})[0]
    expected = Bremss().evaluate(lo, hi, {"kT": np.array([TABLE_KT[7]])})[0].astype(np.float32)
    np.testing.assert_allclose(flux, expected, rtol=1e-6)


def test_atable_interpolates_in_log_or_linear_parameter(tmp_path):
    lo, hi = TABLE_EDGES[:-1], TABLE_EDGES[1:]
    k0, k1 = (float(np.float32(v)) for v in TABLE_KT[10:12])
    s0, s1 = (Bremss().evaluate(lo, hi, {"kT": np.array([v])})[0] for v in TABLE_KT[10:12])
    t = np.sqrt(k0 * k1) * 1.01
    for method, frac in ((1, np.log(t / k0) / np.log(k1 / k0)), (0, (t - k0) / (k1 - k0))):
        path = write_bremss_table(tmp_path / f"m{method}.fits", method=method)
        flux = load_model(f"atable{{{path}}}").photon_flux(lo, hi, np.array([t]), {})[0]
        np.testing.assert_allclose(flux, (1 - frac) * s0 + frac * s1, rtol=2e-6, atol=1e-12)
    # the table interpolated between close nodes is close to bremss itself
    exact = Bremss().evaluate(lo, hi, {"kT": np.array([t])})[0]
    sel = (lo > 0.5) & (hi < 7.0)
    assert np.max(np.abs(flux[sel] / exact[sel] - 1)) < 5e-3


def test_atable_rebins_by_integrating(tmp_path):
    path = write_bremss_table(tmp_path / "br.fits")
    model = load_model(f"wabs*atable{{{path}}}")
    assert model.param_names == ("nH", "kT")
    # coarse bins made of 4 table bins each, and bins that cut table bins in halves
    coarse = TABLE_EDGES[40:801:4]
    flux = model.photon_flux(coarse[:-1], coarse[1:], np.array([4.0]), {"nH": 0.0})[0]
    fine = load_model(f"atable{{{path}}}").photon_flux(
        TABLE_EDGES[:-1], TABLE_EDGES[1:], np.array([4.0]), {}
    )[0]
    np.testing.assert_allclose(flux, fine[40:800].reshape(-1, 4).sum(axis=1), rtol=1e-12)
    shifted = TABLE_EDGES[41:802:4] - 0.0025
    half = load_model(f"atable{{{path}}}").photon_flux(
        shifted[:-1], shifted[1:], np.array([4.0]), {}
    )[0]
    pieces = fine[40:801]
    manual = (
        0.5 * pieces[:-1:4][: half.size]
        + pieces[1::4][: half.size]
        + pieces[2::4][: half.size]
        + pieces[3::4][: half.size]
        + 0.5 * pieces[4::4][: half.size]
    )
    np.testing.assert_allclose(half, manual, rtol=1e-10)
    # outside the tabulated energies the model is zero (no LOELIMIT/HIELIMIT keywords)
    out = model.photon_flux(np.array([20.0]), np.array([21.0]), np.array([4.0]), {"nH": 0.0})
    assert out[0, 0] == 0.0


def test_atable_additional_parameter_and_redshift(tmp_path):
    path = write_bremss_table(tmp_path / "add.fits", add_param=True, redshift=True)
    model = load_model(f"atable{{{path}}}")
    assert model.param_names == ("kT", "boost", "z")
    lo, hi = TABLE_EDGES[100:110], TABLE_EDGES[101:111]
    base = model.photon_flux(lo, hi, np.array([3.0]), {"boost": 0.0, "z": 0.0})[0]
    boosted = model.photon_flux(lo, hi, np.array([3.0]), {"boost": 2.0, "z": 0.0})[0]
    np.testing.assert_allclose(boosted - base, 2e-3, rtol=1e-5)
    # redshift z: the table's energies E/(1+z), flux divided by (1+z)
    z = 0.25
    shifted = model.photon_flux(lo, hi, np.array([3.0]), {"boost": 0.0, "z": z})[0]
    direct = model.photon_flux(
        lo * (1 + z), hi * (1 + z), np.array([3.0]), {"boost": 0.0, "z": 0.0}
    )[0] / (1 + z)
    np.testing.assert_allclose(shifted, direct, rtol=1e-9)


def test_atable_out_of_range_and_broken_tables(tmp_path):
    path = write_bremss_table(tmp_path / "br.fits")
    model = load_model(f"atable{{{path}}}")
    with pytest.raises(ModelError, match="outside"):
        model.photon_flux(np.array([1.0]), np.array([1.1]), np.array([20.0]), {})
    with pytest.raises(ModelError, match="outside"):
        model.check_params({"kT": 0.5})
    bad_order = write_bremss_table(tmp_path / "order.fits", shuffle_rows=True)
    with pytest.raises(ModelError, match="OGIP order"):
        load_model(f"atable{{{bad_order}}}")
    (tmp_path / "junk.fits").write_text("not fits")
    with pytest.raises(ModelError, match="not a readable XSPEC table model"):
        load_model("atable{junk.fits}", base=tmp_path)
    mult = tmp_path / "mult.fits"
    with fits.open(path) as hdul:
        hdul[0].header["ADDMODEL"] = False
        hdul.writeto(mult)
    with pytest.raises(ModelError, match="ADDMODEL"):
        load_model(f"atable{{{mult}}}")


def test_flux_function_is_photon_flux_one_temperature_at_a_time(responses_dir):
    """The fitters' per-temperature flux, fixed factors computed once and only the rows that
    reach the band, gives photon_flux's bits; bins that are runs of a grid (not one run)
    are integrated from each edge once, as the contiguous grid is."""
    from xrmodifier_hpc.io.ogip import Instrument

    inst = Instrument.load(
        responses_dir / "xmm_epn_src.arf", responses_dir / "xmm_epn_ff20_dY9.rmf"
    )
    model = parse_model("wabs*bremss")
    rows = np.r_[100:400, 420:900]  # two runs
    flux_at = model.flux_function(inst.energ_lo[rows], inst.energ_hi[rows], {"nH": 0.05})
    for kt in (0.3, 1.7, 13.55, 40.0):
        whole = model.photon_flux(inst.energ_lo, inst.energ_hi, np.array([kt]), {"nH": 0.05})
        assert flux_at(kt).tobytes() == whole[0, rows].tobytes()
    with pytest.raises(ModelError, match="kT = 500 is outside"):
        flux_at(500.0)
    with pytest.raises(ModelError, match="no value given for parameter 'nH'"):
        model.flux_function(inst.energ_lo, inst.energ_hi, {})
    with pytest.raises(ModelError, match="outside its allowed range"):
        model.flux_function(inst.energ_lo, inst.energ_hi, {"nH": -1.0})
