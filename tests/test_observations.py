"""Observation tables: parsing (CSV, FITS, asymmetric errors) and one test per kind of bad row,
each through the ``xrmodifier invert`` command (exit code 2 and a one-line message)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from xrmodifier_hpc.cli import main
from xrmodifier_hpc.io.observations import (
    ObservationError,
    Observations,
    format_csv,
    read_observations,
    write_observations,
)

GOOD = """\
# a comment line
name,t0,t0_err,t1,t1_err
A1795, 6.1, 0.20, 6.5, 0.25

A2029,8.0,0.4,8.3,0.5
"""


@pytest.fixture
def project(demo_config: Path) -> Path:
    """The demo config with an (untrained) emulator file in its workdir: enough for invert to
    reach the observation checks, which need the emulator's temperature range (1-12 keV)."""
    from xrmodifier_hpc.emulator import Emulator, save

    bounds = np.array([[0.8, 3.0], [0.15, 0.8], [-0.3, 0.3], [1.0, 12.0]])
    model = Emulator(
        ("mu", "sigma", "A"), bounds, (False, True, False, True), hidden=(8,), scatter_hidden=None
    )
    model.metrics = {"offgrid": {"emulator": {"t_fit_orig": 0.003}}}
    workdir = demo_config.parent / "run"
    workdir.mkdir(exist_ok=True)
    save(model, workdir / "emulator.pt")
    return demo_config


def _invert_error(project: Path, obs: Path, capsys) -> str:
    code = main(["invert", str(project), str(obs)])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert "Traceback" not in err
    assert len(err.splitlines()) == 1, err
    assert not (project.parent / "run" / "result.json").exists()
    return err


def test_reads_csv_with_comments_blank_lines_and_spaces(tmp_path: Path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(GOOD)
    obs = read_observations(path, t_range=(1.0, 12.0))
    assert obs.names == ("A1795", "A2029")
    np.testing.assert_allclose(obs.t0, [6.1, 8.0])
    np.testing.assert_allclose(obs.t1_err_lo, [0.25, 0.5])
    np.testing.assert_allclose(obs.t1_err_hi, [0.25, 0.5])
    assert obs.lines == (3, 5)
    assert not obs.asymmetric


def test_asymmetric_columns_take_precedence_and_header_is_case_insensitive(tmp_path: Path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(
        "Name,T0,T0_ERR,T1,T1_ERR,t0_err_lo,t0_err_hi,t1_err_lo,t1_err_hi,comment\n"
        "a,5,0.3,5.5,0.35,0.2,0.4,0.3,0.4,first\n"
        "b,3,0.1,3.2,0.1,0.1,0.1,0.1,0.1,second\n"
    )
    obs = read_observations(path)
    np.testing.assert_allclose(obs.t0_err_lo, [0.2, 0.1])
    np.testing.assert_allclose(obs.t0_err_hi, [0.4, 0.1])
    np.testing.assert_allclose(obs.t0_err, [0.3, 0.1])
    assert obs.asymmetric


def test_asymmetric_only_without_symmetric_columns(tmp_path: Path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text("name,t0,t0_err_lo,t0_err_hi,t1,t1_err\nx,4,0.1,0.3,4.4,0.2\n")
    obs = read_observations(path)
    assert obs.t0_err_hi[0] == pytest.approx(0.3)
    assert obs.t1_err_lo[0] == pytest.approx(0.2)


def test_csv_round_trip(tmp_path: Path) -> None:
    obs = Observations(
        ("s1", "s2"),
        np.array([2.0, 7.5]),
        np.array([0.1, 0.3]),
        np.array([0.12, 0.35]),
        np.array([2.1, 7.9]),
        np.array([0.11, 0.4]),
        np.array([0.13, 0.45]),
    )
    path = write_observations(tmp_path / "sub" / "o.csv", obs, comments=("made by a test",))
    back = read_observations(path)
    assert back.names == obs.names
    for col in ("t0", "t0_err_lo", "t0_err_hi", "t1", "t1_err_lo", "t1_err_hi"):
        np.testing.assert_allclose(getattr(back, col), getattr(obs, col), rtol=1e-6)
    assert path.read_text().startswith("# made by a test\n")
    lines = [ln for ln in format_csv(obs).splitlines() if not ln.startswith("#")]
    assert lines[0].startswith("name,t0,t0_err,t1,t1_err")
    assert "# error_level = 0.683" in format_csv(obs)  # the errors written are 1 sigma


def _fits_table(path: Path, **cols) -> Path:
    columns = []
    for name, values in cols.items():
        values = np.asarray(values)
        fmt = "10A" if values.dtype.kind in "US" else "D"
        columns.append(fits.Column(name=name, format=fmt, array=values))
    hdu = fits.BinTableHDU.from_columns(columns, name="OBSERVATIONS")
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    return path


def test_reads_fits_table(tmp_path: Path) -> None:
    path = _fits_table(
        tmp_path / "obs.fits",
        NAME=["a", "b"],
        T0=[3.0, 6.0],
        T0_ERR=[0.1, 0.2],
        T1=[3.3, 6.4],
        T1_ERR=[0.15, 0.3],
    )
    obs = read_observations(path, t_range=(1.0, 12.0))
    assert obs.names == ("a", "b")
    np.testing.assert_allclose(obs.t1, [3.3, 6.4])
    np.testing.assert_allclose(obs.t1_err_hi, [0.15, 0.3])


def test_fits_bad_row_names_the_row(project: Path, tmp_path: Path, capsys) -> None:
    path = _fits_table(
        tmp_path / "obs.fits",
        NAME=["a", "b"],
        T0=[3.0, 6.0],
        T0_ERR=[0.1, 0.0],
        T1=[3.3, 6.4],
        T1_ERR=[0.15, 0.3],
    )
    err = _invert_error(project, path, capsys)
    assert f"{path}, row 2: t0_err must be positive" in err


def test_fits_text_column_is_refused(project: Path, tmp_path: Path, capsys) -> None:
    path = _fits_table(
        tmp_path / "obs.fits",
        NAME=["a", "b"],
        T0=["3", "6"],
        T0_ERR=[0.1, 0.2],
        T1=[3.3, 6.4],
        T1_ERR=[0.15, 0.3],
    )
    err = _invert_error(project, path, capsys)
    assert "column t0 is not numeric" in err


BAD_ROWS = {
    "missing_column": (
        "name,t0,t0_err,t1\na,3,0.1,3.2\n",
        "missing column(s) t1_err",
    ),
    "non_numeric": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2,0.1\nb,hot,0.1,3.2,0.1\n",
        "line 3: t0 = 'hot' is not a number",
    ),
    "not_finite": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,nan,0.1\n",
        "line 2: t1 = 'nan' is not a finite number",
    ),
    "zero_error": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2,0.1\nb,4,0,4.2,0.1\n",
        "line 3: t0_err must be positive (got 0 keV)",
    ),
    "negative_error": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2,-0.2\n",
        "line 2: t1_err must be positive (got -0.2 keV)",
    ),
    "negative_asymmetric_error": (
        "name,t0,t0_err,t1,t1_err_lo,t1_err_hi\na,3,0.1,3.2,0.1,-1\n",
        "line 2: t1_err_hi must be positive",
    ),
    "non_positive_temperature": (
        "name,t0,t0_err,t1,t1_err\na,-3,0.1,3.2,0.1\n",
        "line 2: t0 must be a positive temperature (got -3 keV)",
    ),
    "above_emulator_range": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2,0.1\nb,14,0.5,14.5,0.6\n",
        "line 3: t0 = 14 keV is outside the emulator's temperature range [1, 12] keV",
    ),
    "below_emulator_range": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,0.8,0.1\n",
        "line 2: t1 = 0.8 keV is outside the emulator's temperature range [1, 12] keV",
    ),
    "duplicate_name": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2,0.1\nb,4,0.1,4.2,0.1\na,5,0.1,5.2,0.1\n",
        "line 4: duplicate source name 'a' (first on line 2)",
    ),
    "wrong_field_count": (
        "name,t0,t0_err,t1,t1_err\na,3,0.1,3.2\n",
        "line 2: expected 5 fields",
    ),
    "empty_name": (
        "name,t0,t0_err,t1,t1_err\n,3,0.1,3.2,0.1\n",
        "line 2: empty source name",
    ),
    "lo_without_hi": (
        "name,t0,t0_err_lo,t1,t1_err\na,3,0.1,3.2,0.1\n",
        "column t0_err_lo is given without t0_err_hi",
    ),
    "header_only": (
        "name,t0,t0_err,t1,t1_err\n",
        "no observations",
    ),
    "empty_file": (
        "# nothing here\n",
        "empty file",
    ),
    "repeated_column": (
        "name,t0,t0,t0_err,t1,t1_err\na,3,3,0.1,3.2,0.1\n",
        "column(s) t0 appear twice",
    ),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_bad_observations_exit_2_with_message(
    case: str, project: Path, tmp_path: Path, capsys
) -> None:
    text, message = BAD_ROWS[case]
    path = tmp_path / "obs.csv"
    path.write_text(text)
    err = _invert_error(project, path, capsys)
    assert err.startswith(f"xrmodifier: error: {path}")
    assert message in err


def test_missing_file_exit_2(project: Path, tmp_path: Path, capsys) -> None:
    err = _invert_error(project, tmp_path / "nope.csv", capsys)
    assert "observations file not found" in err


def test_binary_file_exit_2(project: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "obs.csv"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00")
    err = _invert_error(project, path, capsys)
    assert "not a text (CSV) file" in err


def test_missing_emulator_exit_2(demo_config: Path, tmp_path: Path, capsys) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(GOOD)
    code = main(["invert", str(demo_config), str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "emulator.pt" in err and "xrmodifier train" in err


def test_observation_error_is_user_error() -> None:
    from xrmodifier_hpc.errors import UserError

    assert issubclass(ObservationError, UserError)


def test_too_few_walkers_exit_2(project: Path, tmp_path: Path, capsys) -> None:
    from conftest import edit_config

    project.write_text(edit_config(project.read_text(), "inversion.mcmc", "walkers", "4"))
    path = tmp_path / "obs.csv"
    path.write_text(GOOD)
    code = main(["invert", str(project), str(path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "[inversion.mcmc.walkers]" in err and "at least 2 walkers per parameter (6" in err


# --------------------------------------------------------------------------------------------
# tables as spreadsheets and other tools write them
# --------------------------------------------------------------------------------------------

PLAIN = (
    "name,t0,t0_err,t1,t1_err\nAbell 2029 – core,6.1,0.2,6.5,0.25\nZwicky Réal,8.0,0.4,8.3,0.5\n"
)
PLAIN_NAMES = ("Abell 2029 – core", "Zwicky Réal")


def _values(obs: Observations) -> np.ndarray:
    return np.array([obs.t0, obs.t0_err, obs.t1, obs.t1_err])


@pytest.mark.parametrize(
    "encoding, bom",
    [
        ("utf-8", b""),
        ("utf-8", b"\xef\xbb\xbf"),  # Excel's "CSV UTF-8"
        ("utf-16-le", b"\xff\xfe"),  # Excel's "Unicode text"
        ("utf-16-be", b"\xfe\xff"),
        ("utf-16-le", b""),  # no byte-order mark
        ("cp1252", b""),  # Windows spreadsheets ("ANSI"): the en dash is 0x96
    ],
)
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_encodings_byte_order_marks_and_line_ends(tmp_path, encoding, bom, newline) -> None:
    path = tmp_path / "obs.csv"
    path.write_bytes(bom + PLAIN.replace("\n", newline).encode(encoding))
    obs = read_observations(path)
    assert obs.names == PLAIN_NAMES
    np.testing.assert_allclose(_values(obs), [[6.1, 8.0], [0.2, 0.4], [6.5, 8.3], [0.25, 0.5]])
    assert obs.lines == (2, 3)


def test_latin1_names(tmp_path) -> None:
    path = tmp_path / "obs.csv"
    path.write_bytes("name,t0,t0_err,t1,t1_err\nZwicky Réal,8,0.4,8.3,0.5\n".encode("latin-1"))
    assert read_observations(path).names == ("Zwicky Réal",)


@pytest.mark.parametrize(
    "text",
    [
        # quoting: a comma inside a name, quoted numbers, a quoted header
        '"name","t0","t0_err","t1","t1_err"\n"Abell 2029, core","6.1","0.2","6.5","0.25"\n',
        # European spreadsheets: semicolons and decimal commas
        "name;t0;t0_err;t1;t1_err\nAbell 2029, core;6,1;0,2;6,5;0,25\n",
        # tabs; whitespace-aligned columns
        'name\tt0\tt0_err\tt1\tt1_err\n"Abell 2029, core"\t6.1\t0.2\t6.5\t0.25\n',
        'name    t0   t0_err  t1   t1_err\n"Abell 2029, core"  6.1  0.2  6.5  0.25\n',
        # Excel: empty trailing columns and rows
        'name,t0,t0_err,t1,t1_err,,\n"Abell 2029, core",6.1,0.2,6.5,0.25,,\n,,,,,,\n',
        # units and spelling in the header: brackets, parentheses, slashes, spaces, case
        'Name,"T0 [keV]","T0 err (keV)",t1/keV,"t1 error [keV]"\n'
        '"Abell 2029, core",6.1,0.2,6.5,0.25\n',
        'NAME,t0_keV,T0-ERR,T1 (keV),T1_Err\n"Abell 2029, core",6.1,0.2,6.5,0.25\n',
        # other temperature units, converted to keV
        'name,t0 [eV],t0_err [eV],t1 (eV),t1_err (eV)\n"Abell 2029, core",6100,200,6500,250\n',
        "name,T0 [MK],T0_err [MK],T1 [MK],T1_err [MK]\n"
        '"Abell 2029, core",70.788,2.3209,75.430,2.9011\n',
        # a source column under another usual name
        'source,t0,t0_err,t1,t1_err\n"Abell 2029, core",6.1,0.2,6.5,0.25\n',
    ],
)
def test_spreadsheet_forms(tmp_path, text) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(text)
    obs = read_observations(path)
    assert obs.names == ("Abell 2029, core",)
    np.testing.assert_allclose(_values(obs)[:, 0], [6.1, 0.2, 6.5, 0.25], rtol=2e-4)


@pytest.mark.parametrize(
    "text, message",
    [
        ("name,t0 [Jy],t0_err,t1,t1_err\na,3,0.1,3.2,0.1\n", "column 't0 [Jy]': unit 'Jy'"),
        ("name;t0;t0_err;t1;t1_err\na;3,1;0,1;3.2.1;0,1\n", "line 2: t1 = '3.2.1' is not a number"),
        ('name,t0,t0_err,t1,t1_err\na,"3,1",0.1,3.2,0.1\n', "line 2: t0 = '3,1' is not a number"),
        ("name,T0 (keV),t0,t0_err,t1,t1_err\n", "'T0 (keV)' and 't0'"),
        ("# error_level = lots\nname,t0,t0_err,t1,t1_err\n", "line 1: comment declares error"),
        (
            "# error_level = 0.9\n# confidence: 68%\nname,t0,t0_err,t1,t1_err\n",
            "line 2: a second error level",
        ),
        ("name,t0,t0_err,t1,t1_err,error_level\na,3,0.1,3.2,0.1,high\n", "line 2: error_level"),
    ],
)
def test_unreadable_forms_name_line_and_column(tmp_path, text, message) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(text)
    with pytest.raises(ObservationError) as info:
        read_observations(path)
    assert message in str(info.value)
    assert str(path) in str(info.value)


# --------------------------------------------------------------------------------------------
# confidence level of the errors (issue 12 item 5)
# --------------------------------------------------------------------------------------------

Z90 = 1.6448536269514722  # two-sided 90%: XSPEC's default `error`


@pytest.mark.parametrize(
    "declaration",
    [
        "# error_level = 0.90",
        "# error_level: 90%",
        "# Confidence level = 90 %",
        "# errors: 90% confidence (XSPEC error, delta-C = 2.706)",
        "# CL = 0.9",
    ],
)
def test_declared_90_percent_errors_become_1_sigma(tmp_path, declaration, caplog) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(declaration + "\nname,t0,t0_err_lo,t0_err_hi,t1,t1_err\na,6,0.3,0.5,6.5,0.4\n")
    with caplog.at_level("INFO", logger="xrmodifier"):
        obs = read_observations(path)
    assert obs.error_level == pytest.approx(0.9)
    np.testing.assert_allclose(
        [obs.t0_err_lo[0], obs.t0_err_hi[0], obs.t1_err_lo[0], obs.t1_err_hi[0]],
        np.array([0.3, 0.5, 0.4, 0.4]) / Z90,
    )
    assert "errors read as 90% confidence (declared on line 1), divided by 1.645" in caplog.text


def test_default_and_config_levels(tmp_path, caplog) -> None:
    path = tmp_path / "obs.csv"
    path.write_text("name,t0,t0_err,t1,t1_err\na,6,0.3,6.5,0.4\n")
    with caplog.at_level("INFO", logger="xrmodifier"):
        plain = read_observations(path)
    assert plain.error_level_from == "default" and plain.t0_err[0] == 0.3
    assert "errors read as 68.3% confidence (default), used as 1 sigma" in caplog.text
    ninety = read_observations(path, error_level=0.9)
    assert ninety.error_level_from == "[inversion] error_level"
    assert ninety.t0_err[0] == pytest.approx(0.3 / Z90)
    two_sigma = read_observations(path, error_level=0.9545)
    assert two_sigma.t1_err[0] == pytest.approx(0.2, rel=1e-3)
    # 0.683 and 0.6827 are both "1 sigma": no change
    assert read_observations(path, error_level=0.683).t0_err[0] == 0.3
    # a file that says 1 sigma and a config that says 68.3% agree
    path.write_text("# error_level = 1 sigma\nname,t0,t0_err,t1,t1_err\na,6,0.3,6.5,0.4\n")
    assert read_observations(path, error_level=0.683).t0_err[0] == 0.3


def test_file_and_config_levels_that_differ_are_refused(tmp_path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text("# error_level = 0.9\nname,t0,t0_err,t1,t1_err\na,6,0.3,6.5,0.4\n")
    with pytest.raises(ObservationError, match="declares its errors at 90% confidence"):
        read_observations(path, error_level=0.683)


def test_per_source_levels_from_a_column(tmp_path) -> None:
    path = tmp_path / "obs.csv"
    path.write_text(
        "name,t0,t0_err,t1,t1_err,t1_error_level\na,6,0.3,6.5,0.4,90%\nb,5,0.2,5.5,0.3,\n"
    )
    obs = read_observations(path)
    np.testing.assert_allclose(obs.t1_err, [0.4 / Z90, 0.3])
    np.testing.assert_allclose(obs.t0_err, [0.3, 0.2])
    assert "error_level column" in obs.error_level_from


def test_fits_table_level_keyword_and_units(tmp_path) -> None:
    cols = [
        fits.Column("NAME", "10A", array=["a", "b"]),
        fits.Column("T0", "E", unit="eV", array=[6000.0, 3000.0]),
        fits.Column("T0_ERR", "E", unit="eV", array=[300.0, 200.0]),
        fits.Column("T1 [keV]", "E", array=[6.5, 3.2]),
        fits.Column("T1_ERR", "E", unit="keV", array=[0.4, 0.3]),
    ]
    hdu = fits.BinTableHDU.from_columns(cols)
    hdu.header["ERRLEVEL"] = 0.9
    path = tmp_path / "obs.fits"
    fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path)
    obs = read_observations(path)
    np.testing.assert_allclose(obs.t0, [6.0, 3.0], rtol=1e-6)
    np.testing.assert_allclose(obs.t0_err, np.array([0.3, 0.2]) / Z90, rtol=1e-6)
    np.testing.assert_allclose(obs.t1_err, np.array([0.4, 0.3]) / Z90, rtol=1e-6)
    assert obs.error_level_from == "keyword ERRLEVEL"
