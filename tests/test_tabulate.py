"""Table models: the FITS writer and reader, ``xrmodifier tabulate`` (native evaluator here,
XSPEC's through the PyXspec stand-in), and the native backend fitting with tables on the real
responses as it does with the model itself."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import edit_config, run_cli

from xrmodifier_hpc.errors import UserError
from xrmodifier_hpc.io.tables import load_model, read_table, write_table
from xrmodifier_hpc.physics.spectra import ModelError, TableData
from xrmodifier_hpc.stages.tabulate import (
    Energies,
    GridAxis,
    parse_energies,
    parse_grid_axis,
    tabulate,
)

FAKE_SITE = Path(__file__).resolve().parent / "fake_pyxspec"


def _table(additive=True, add=False, redshift=False) -> TableData:
    kt = np.array([1.0, 2.0, 4.0])
    ab = np.array([0.1, 0.5])
    edges = np.linspace(0.5, 3.0, 11)
    rng = np.random.default_rng(3)
    spectra = rng.uniform(0.5, 1.0, (2 if add else 1, 3, 2, 10))
    return TableData(
        name="toy",
        additive=additive,
        int_names=("kT", "Abundanc"),
        int_log=(True, False),
        axes=(kt, ab),
        e_lo=edges[:-1],
        e_hi=edges[1:],
        spectra=spectra,
        add_names=("boost",) if add else (),
        add_range={"boost": (0.0, 2.0)} if add else {},
        redshift=redshift,
        lo_limit=None if additive else 0.5,
    )


@pytest.mark.parametrize("additive", [True, False])
def test_write_then_read_round_trips(tmp_path, additive):
    data = _table(additive=additive, add=additive, redshift=additive)
    path = write_table(
        tmp_path / "t.fits",
        data,
        units={"kT": "keV"},
        provenance={"XSPECVER": ("12.14.0", "evaluator"), "ABUND": ("angr", "abundances")},
    )
    back = read_table(path)
    assert back.additive is additive and back.name == "toy"
    assert back.int_names == ("kT", "Abundanc") and back.int_log == (True, False)
    assert back.param_names == (
        ("kT", "Abundanc", "boost", "z") if additive else ("kT", "Abundanc")
    )
    for a, b in zip(back.axes, data.axes):
        np.testing.assert_allclose(a, b, rtol=1e-7)
    np.testing.assert_allclose(back.spectra, data.spectra, rtol=1e-7)
    np.testing.assert_allclose(back.e_lo, data.e_lo, rtol=1e-7)
    assert back.lo_limit == (None if additive else 0.5)
    with fits.open(path) as hdul:
        primary = hdul[0].header
        # what XSPEC's OGIPTable::formatCheck and read look for (OGIP/92-009)
        assert primary["HDUCLASS"] == "OGIP" and primary["HDUCLAS1"] == "XSPEC TABLE MODEL"
        assert primary["HDUVERS"].startswith("1.") and primary["ADDMODEL"] is additive
        assert primary["XSPECVER"] == "12.14.0" and primary["ABUND"] == "angr"
        assert "XRMVERS" in primary and "DATE" in primary
        assert [h.name for h in hdul[1:]] == ["PARAMETERS", "ENERGIES", "SPECTRA"]
        assert hdul["SPECTRA"].header["HDUCLAS2"] == "MODEL SPECTRA"
        assert hdul["PARAMETERS"].header["NINTPARM"] == 2
        units = ["keV", ""] + ([""] if additive else [])
        assert list(hdul["PARAMETERS"].data["UNITS"]) == units
        # OGIP order: the last parameter varies fastest
        np.testing.assert_allclose(
            hdul["SPECTRA"].data["PARAMVAL"][:3], [[1, 0.1], [1, 0.5], [2, 0.1]], rtol=1e-7
        )
    with pytest.raises(UserError, match="exists"):
        write_table(path, data)


def test_bad_tables_are_refused(tmp_path):
    good = _table()
    for change, match in (
        ({"axes": (np.array([1.0, 4.0, 2.0]), good.axes[1])}, "must increase"),
        ({"spectra": good.spectra[..., :5]}, "the spectra have shape"),
        ({"name": "x"}, "at least 2 characters"),
        ({"int_names": ("kT", "kT")}, "repeat"),
    ):
        bad = TableData(**{**good.__dict__, **change})
        with pytest.raises(ModelError, match=match):
            write_table(tmp_path / "bad.fits", bad)
    assert not (tmp_path / "bad.fits").exists()


def test_mtable_averages_the_factors_it_overlaps(tmp_path):
    """A multiplicative table's bins are averaged over the overlapped fraction of each table
    bin (XSPEC's Rebin::interpolate), and a model bin outside the table gets LOELIMIT /
    HIELIMIT (1 when absent)."""
    edges = np.array([1.0, 2.0, 3.0, 4.0])
    data = TableData(
        name="abs",
        additive=False,
        int_names=("nH",),
        int_log=(False,),
        axes=(np.array([0.0, 1.0]),),
        e_lo=edges[:-1],
        e_hi=edges[1:],
        spectra=np.array([[[1.0, 1.0, 1.0], [0.2, 0.4, 0.8]]]),
    )
    write_table(tmp_path / "abs.fits", data)
    write_table(tmp_path / "one.fits", _table(additive=True))
    model = load_model("mtable{abs.fits}*atable{one.fits}", base=tmp_path)
    assert model.param_names == ("nH", "kT", "Abundanc")
    mult = model.components[0]
    lo, hi = np.array([0.2, 1.5, 2.5, 4.5]), np.array([0.5, 2.5, 3.5, 5.0])
    out = mult.evaluate(lo, hi, {"nH": np.array([1.0, 0.5])})
    np.testing.assert_allclose(out[0], [1.0, 0.3, 0.6, 1.0])
    np.testing.assert_allclose(out[1], [1.0, 0.65, 0.8, 1.0])
    with pytest.raises(ModelError, match="ADDMODEL is false: atable needs an additive table"):
        load_model("atable{abs.fits}", base=tmp_path)
    with pytest.raises(ModelError, match="ADDMODEL is true: mtable needs a multiplicative"):
        load_model("mtable{one.fits}*atable{one.fits}", base=tmp_path)


def test_grid_and_energy_options():
    axis = parse_grid_axis("kT=log:0.5:20:5")
    assert axis.log and axis.values.size == 5 and axis.values[-1] == pytest.approx(20.0)
    assert not parse_grid_axis("Abundanc=lin:0:1:3").log
    np.testing.assert_array_equal(parse_grid_axis("z=0,0.1,0.3").values, [0, 0.1, 0.3])
    assert parse_grid_axis("apec.kT=1,2").table_name == "kT"
    assert parse_energies("log:0.1:10:100").xspec == "0.1 10.0 100 log"
    for bad in ("kT", "kT=log:0:1:3", "kT=lin:1:2", "kT=3,2", "kT=1", "kT=log:1:2:2.5"):
        with pytest.raises(UserError):
            parse_grid_axis(bad)
    for bad in ("log:1:0.5:10", "cubic:1:2:3", "lin:1:2"):
        with pytest.raises(UserError):
            parse_energies(bad)


def test_cli_tabulate_native_and_bad_input(tmp_path):
    out = tmp_path / "br.fits"
    args = ["tabulate", "bremss", "-o", str(out), "--grid", "kT=log:1:8:6", "--backend", "native"]
    proc = run_cli(*args, "--energies", "log:0.3:10:300", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("use it as atable{br.fits}")
    table = read_table(out)
    assert table.additive and table.shape == (6,) and table.e_lo.size == 300
    assert fits.getheader(out)["TABEXPR"] == "bremss"
    for extra, message in (
        ([], "exists; give --overwrite"),
        (["--overwrite", "--grid", "nH=1,2"], "has no parameter 'nH'"),
        (["--overwrite", "--energies", "log:3:1:10"], "0 < LOW < HIGH"),
    ):
        proc = run_cli(*args, *extra, cwd=tmp_path)
        assert proc.returncode == 2, proc.stdout
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
    if not _pyxspec_importable():
        proc = run_cli("tabulate", "apec", "-o", str(tmp_path / "a.fits"), "--grid", "kT=1,2")
        assert proc.returncode == 2
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and "inside the container" in lines[0]


def _pyxspec_importable() -> bool:
    import importlib.util

    return importlib.util.find_spec("xspec") is not None


# --------------------------------------------------------------------------------------------
# XSPEC's part, through the PyXspec stand-in
# --------------------------------------------------------------------------------------------


@pytest.fixture
def fake_pyxspec(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(FAKE_SITE))
    monkeypatch.setenv("HEADAS", str(tmp_path / "heasoft"))
    monkeypatch.setenv("XRM_SCRATCH", str(tmp_path / "scratch"))
    from xrmodifier_hpc.backends import xspec as backend_module

    monkeypatch.setattr(backend_module, "_session", None)
    sys.modules.pop("xspec", None)
    yield tmp_path
    sys.modules.pop("xspec", None)


def test_tabulate_additive_xspec_model(fake_pyxspec, capfd):
    out = fake_pyxspec / "apec.fits"
    energies = Energies(0.2, 12.0, 50, True)
    summary = tabulate(
        "apec",
        out,
        [
            GridAxis("kT", np.geomspace(0.5, 20, 4), True),
            GridAxis("Abundanc", np.array([0.1, 1]), False),
        ],
        fixed={"Redshift": 0.0},
        energies=energies,
        abund="aspl",
        xsect="bcmc",
    )
    assert capfd.readouterr() == ("", "")  # XSPEC said nothing on the terminal
    import xspec

    assert summary.kind == "atable" and summary.n_spectra == 8
    table = read_table(out)
    assert (
        table.additive and table.int_names == ("kT", "Abundanc") and table.int_log == (True, False)
    )
    np.testing.assert_allclose(np.append(table.e_lo, table.e_hi[-1]), energies.edges, rtol=1e-6)
    # each row is XSPEC's model values at that point, norm 1
    model = xspec.Model("apec")
    xspec.AllModels.setEnergies(energies.xspec)
    model.apec.kT.values, model.apec.Abundanc.values = float(table.axes[0][2]), 1.0
    np.testing.assert_allclose(table.spectra[0, 2, 1], model.values(0), rtol=1e-6)
    header = fits.getheader(out)
    assert header["XSPECVER"] == "XSPEC 12.14.0 (PyXspec 2.1.0)"
    assert header["ABUND"] == "aspl" and header["XSECT"] == "bcmc" and header["TABEXPR"] == "apec"
    assert (header["FIXPN1"], header["FIXPV1"]) == ("Redshift", 0.0)
    assert header["MODLNAME"] == "apec" and header["ADDMODEL"] is True
    log = out.parent / "logs" / "tabulate-apec-xspec-rank0.log"
    assert log.is_file()


def test_tabulate_multiplicative_xspec_model(fake_pyxspec):
    out = fake_pyxspec / "tbabs.fits"
    energies = Energies(0.2, 12.0, 40, True)
    summary = tabulate(
        "tbabs", out, [GridAxis("nH", np.array([0.01, 0.1, 1.0]), True)], energies=energies
    )
    assert summary.kind == "mtable"
    table = read_table(out)
    assert not table.additive
    mid = 0.5 * (table.e_lo + table.e_hi)
    # the stand-in's tbabs: exp(-nH 0.2 E^-2.5) per bin; the powerlaw it was multiplied with
    # (PhoIndex 0) is divided out
    for k, nh in enumerate(table.axes[0]):
        np.testing.assert_allclose(table.spectra[0, k], np.exp(-nh * 0.2 * mid**-2.5), rtol=2e-6)


def test_tabulate_refuses_what_xspec_refuses(fake_pyxspec):
    energies = Energies(0.2, 12.0, 40, True)
    with pytest.raises(UserError, match="XSPEC does not accept the model 'nosuch'"):
        tabulate(
            "nosuch",
            fake_pyxspec / "x.fits",
            [GridAxis("kT", np.array([1.0, 2.0]), False)],
            energies=energies,
        )
    with pytest.raises(UserError, match="no parameter 'Abundance'"):
        tabulate(
            "apec",
            fake_pyxspec / "x.fits",
            [GridAxis("Abundance", np.array([1.0, 2.0]), False)],
            energies=energies,
        )
    assert not (fake_pyxspec / "x.fits").exists()


# --------------------------------------------------------------------------------------------
# the native backend with tables on the real responses
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def bremss_tables(tmp_path_factory):
    """bremss and wabs tabulated by ``xrmodifier tabulate --backend native`` (the same writer
    and reader as XSPEC's tables)."""
    folder = tmp_path_factory.mktemp("tables")
    energies = parse_energies("log:0.05:20:6000")
    tabulate(
        "bremss",
        folder / "bremss.fits",
        [GridAxis("kT", np.geomspace(0.4, 60.0, 240), True)],
        energies=energies,
        backend="native",
    )
    tabulate(
        "wabs",
        folder / "wabs.fits",
        [GridAxis("nH", np.array([0.0, 0.025, 0.05, 0.075, 0.1]), False)],
        energies=energies,
        backend="native",
    )
    return folder


def test_native_with_tables_matches_native_with_the_model(
    bremss_tables, small_config, responses_dir
):
    """``mtable{wabs.fits}*atable{bremss.fits}`` and ``wabs*bremss`` through the real ACIS
    (reference) and EPIC-pn (target) responses: T1 and T1' agree to 1e-3 (asimov)."""
    from xrmodifier_hpc.backends import make_backend
    from xrmodifier_hpc.config import load_config
    from xrmodifier_hpc.config.grid import Grid

    text = small_config.read_text()
    for role, arf, rmf in (
        ("reference", "chandra_acis_9774.arf", "chandra_acis_9774.rmf"),
        ("target", "xmm_epn_src.arf", "xmm_epn_ff20_dY9.rmf"),
    ):
        text = edit_config(text, f"instruments.{role}", "arf", f'"{responses_dir / arf}"')
        text = edit_config(text, f"instruments.{role}", "rmf", f'"{responses_dir / rmf}"')
    text = edit_config(text, "simulation", "mode", '"asimov"')
    text = edit_config(text, "simulation", "realisations", "1")
    small_config.write_text(text)
    model_cfg = load_config(small_config)
    tables = small_config.with_name("tables.toml")
    tables.write_text(
        edit_config(
            text,
            "source",
            "model",
            f'"mtable{{{bremss_tables / "wabs.fits"}}}*atable{{{bremss_tables / "bremss.fits"}}}"',
        )
    )
    table_cfg = load_config(tables)
    grid = Grid.from_config(model_cfg)
    index = np.arange(0, grid.n_points, 5)
    theta, t_true = grid.points(index)
    results = []
    for cfg in (model_cfg, table_cfg):
        with make_backend(cfg) as backend:
            results.append(backend.run(theta, t_true, index))
    direct, tabled = results
    assert np.all(direct.status == 0) and np.all(tabled.status == 0)
    for name in ("t_fit_orig", "t_fit_mod"):
        rel = np.abs(getattr(tabled, name) / getattr(direct, name) - 1)
        assert rel.max() < 1e-3, (name, rel.max())
    # the same model, so the same counts
    np.testing.assert_allclose(tabled.norm, direct.norm, rtol=2e-3)
