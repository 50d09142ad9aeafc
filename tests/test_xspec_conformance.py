"""The native fitter against a real XSPEC (12.9.1): six fakeit spectra through the real ACIS
and EPIC-pn responses, fitted with cstat over 0.5-7 keV (reference/xspec_fits/README)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import run_cli

from xrmodifier_hpc.physics.fitstat import LocalPolyGrid
from xrmodifier_hpc.stages.fit import fit


@pytest.fixture(scope="module")
def cases(reference_dir) -> dict[str, dict]:
    data = json.loads((reference_dir / "xspec_fits" / "fits.json").read_text())
    assert data["stat"] == "cstat" and len(data["cases"]) == 6
    return {c["file"]: c for c in data["cases"]}


CASE_FILES = [
    "acis_kT2.268.pha",
    "acis_kT6.851.pha",
    "acis_kT8.577.pha",
    "epn_kT2.923.pha",
    "epn_kT4.935.pha",
    "epn_kT9.693.pha",
]


#: bremss{smooth} blends XSPEC's Gaunt-regime switch over kT 10.4-13.6 keV (spectra.py)
SMOOTH_BLEND_KT = 13.58 / 1.3


def _check_against_xspec(result: dict, case: dict, curve_below: float = np.inf) -> None:
    ref = case["fit"]
    lo, hi = ref["kT_1sigma"]
    sigma = 0.5 * (hi - lo)
    assert result["status"] == 0
    assert abs(result["kT"] - ref["kT"]) < 0.2 * sigma
    assert abs(result["cstat"] - ref["cstat"]) < 1.0
    assert result["counts_noticed"] == round(ref["counts_noticed"])
    # the interval and the norm agree too (not required, but both follow from the above)
    assert result["kT_1sigma"] == pytest.approx([lo, hi], abs=0.05 * sigma)
    assert result["norm"] == pytest.approx(ref["norm"], rel=2e-3)
    # XSPEC's steppar refits the norm at each kT, as the profile does
    grid = LocalPolyGrid.build(np.log(result["curve"]["kT"]))
    ours = grid.interpolate(np.array(result["curve"]["cstat"]), np.log(case["profile"]["kT"]))
    theirs = np.array(case["profile"]["cstat"])
    kt = np.array(case["profile"]["kT"])
    diff = (ours - ours.min()) - (theirs - theirs.min())
    assert np.max(np.abs(diff[kt < curve_below])) < 0.5


@pytest.mark.parametrize("name", CASE_FILES)
@pytest.mark.parametrize("bremss", ["bremss", "bremss{xspec}", "bremss{smooth}"])
def test_native_fit_matches_xspec(reference_dir, responses_dir, cases, name, bremss):
    """``bremss`` (the default, also ``bremss{xspec}``) is XSPEC's model exactly: everything
    must match. ``bremss{smooth}`` differs only inside its seam blend, so its curve is compared
    below it."""
    case = cases[name]
    assert case["model"] == "wabs*bremss"
    result = fit(
        reference_dir / "xspec_fits" / name,
        arf=responses_dir / case["arf"],
        rmf=responses_dir / case["rmf"],
        model=f"wabs*{bremss}",
        band=tuple(case["notice_keV"]),
        params={"nH": case["true"]["nH"]},
        curve=True,
    )
    _check_against_xspec(result, case, SMOOTH_BLEND_KT if "smooth" in bremss else np.inf)


def test_cli_fit_matches_xspec(reference_dir, responses_dir, cases, tmp_path):
    name = "epn_kT4.935.pha"
    case = cases[name]
    proc = run_cli(
        "fit",
        str(reference_dir / "xspec_fits" / name),
        "--arf",
        str(responses_dir / case["arf"]),
        "--rmf",
        str(responses_dir / case["rmf"]),
        "--model",
        "wabs*bremss",
        "--band",
        "0.5",
        "7.0",
        "--set",
        "nH=0.05",
        "--curve",
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1  # one JSON object
    _check_against_xspec(json.loads(lines[0]), case)


def test_cli_fit_bad_input_is_one_line(reference_dir, responses_dir, tmp_path):
    pha = reference_dir / "xspec_fits" / "acis_kT2.268.pha"
    arf, rmf = responses_dir / "chandra_acis_9774.arf", responses_dir / "chandra_acis_9774.rmf"
    for args, match in (
        ([str(tmp_path / "missing.pha")], "does not exist"),
        (
            [
                str(pha),
                "--arf",
                str(arf),
                "--rmf",
                str(rmf),
                "--set",
                "nH=0.05",
                "--band",
                "20",
                "30",
            ],
            "no channel",
        ),
        ([str(pha), "--arf", str(arf), "--rmf", str(rmf)], "--set nH=VALUE"),
    ):
        proc = run_cli("fit", *args, cwd=tmp_path)
        assert proc.returncode == 2, (args, proc.stdout)
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("xrmodifier: error:") and match in err[0]
        assert proc.stdout == ""


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"params": {"nH": 0.05}}, "give --rmf"),  # the RESPFILE named is not beside the PHA
        ({"params": {"nH": 0.05}, "model": "wabs*atable{nope.fits}", "local": True}, "not found"),
        ({"params": {"nH": 0.05, "kT": 3.0}, "local": True}, "kT and the norm are free"),
        ({"params": {"nH": -1.0}, "local": True}, "outside"),
        ({"params": {"nH": 0.05}, "band": (7.0, 0.5), "local": True}, "0 < LOW < HIGH"),
        ({"params": {"nH": 0.05}, "tgrid": (0.01, 500.0, 64), "local": True}, "range"),
    ],
)
def test_fit_bad_input(reference_dir, responses_dir, kwargs, match):
    from xrmodifier_hpc.errors import UserError

    if kwargs.pop("local", False):
        kwargs["arf"] = responses_dir / "chandra_acis_9774.arf"
        kwargs["rmf"] = responses_dir / "chandra_acis_9774.rmf"
    with pytest.raises(UserError, match=match):
        fit(reference_dir / "xspec_fits" / "acis_kT2.268.pha", **kwargs)


def test_zero_count_spectrum_is_refused(reference_dir, responses_dir, tmp_path):
    from xrmodifier_hpc.errors import UserError
    from xrmodifier_hpc.io.ogip import read_pha, write_pha

    src = read_pha(reference_dir / "xspec_fits" / "acis_kT2.268.pha")
    empty = write_pha(
        tmp_path / "empty.pha",
        src.channel,
        np.zeros_like(src.counts),
        src.exposure,
        respfile="chandra_acis_9774.rmf",
        ancrfile="chandra_acis_9774.arf",
    )
    with pytest.raises(UserError, match="no counts"):
        fit(
            empty,
            arf=responses_dir / "chandra_acis_9774.arf",
            rmf=responses_dir / "chandra_acis_9774.rmf",
            params={"nH": 0.05},
        )
