"""``xrmodifier apply``: the inferred correction on other ARFs of the target instrument, each
on its own energy grid (issue 12, item 2), through the command line."""

from __future__ import annotations

import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits
from conftest import RESPONSES, SHARED, edit_config, run_cli

from xrmodifier_hpc.io.ogip import read_arf
from xrmodifier_hpc.physics.modifiers import get_modifier

REAL = SHARED / "realdata" / "responses"
PN_ARF = REAL / "xmm-epn_PN.arf"  # another pn ARF than the target's: 2067 bins
MOS1_ARF = REAL / "xmm-emos1_MOS1.arf"  # XMM too, but INSTRUME = EMOS1
ACIS_ARF = RESPONSES / "chandra_acis_9774.arf"
GAUSS = get_modifier("gaussian")


def _need(*paths: Path) -> None:
    for p in paths:
        if not p.is_file():
            pytest.skip(f"{p} not found")


def _ridge_chain(steps: int = 150, walkers: int = 16, seed: int = 0) -> np.ndarray:
    """A chain (steps, walkers, 3) like the issue's: a ~12% dip near 1.3 keV whose depth and
    width trade off at fixed area."""
    rng = np.random.default_rng(seed)
    n = steps * walkers
    sigma = np.exp(rng.normal(np.log(0.3), 0.3, n))
    amp = np.clip(-0.036 / sigma * (1 + 0.05 * rng.standard_normal(n)), -0.29, 0.29)
    mu = rng.normal(1.3, 0.04, n)
    return np.column_stack([mu, sigma, amp]).reshape(steps, walkers, 3)


def write_result(folder: Path, chain: np.ndarray, burn: int, **fields: object) -> Path:
    """Write result.json (an :class:`InversionResult`, as ``xrmodifier invert`` writes it)
    and posterior.npz; ``fields`` override the record's fields (e.g. ``target``)."""
    from xrmodifier_hpc.io.artefacts import provenance
    from xrmodifier_hpc.io.result import (
        EmulatorError,
        IdentifiabilityReport,
        InversionResult,
        ModifierSpec,
        ParamSummary,
        PosteriorSummary,
        SeedLoss,
        Timing,
    )

    folder.mkdir(parents=True, exist_ok=True)
    np.savez(
        folder / "posterior.npz",
        chain=chain,
        log_prob=np.zeros(chain.shape[:2]),
        param_names=np.array(GAUSS.param_names),
        burn=burn,
        thin=1,
        tau=np.ones(3),
        acceptance=0.3,
    )
    names = tuple(GAUSS.param_names)
    flat = chain[burn:].reshape(-1, 3)
    theta = dict(zip(names, np.median(flat, axis=0).tolist()))
    record = dict(
        provenance=provenance(stage="invert"),
        config="",
        observations="",
        emulator="",
        modifier=ModifierSpec("gaussian", {}),
        param_names=names,
        param_units=("keV", "keV", ""),
        bounds={"mu": (0.5, 3.0), "sigma": (0.05, 1.0), "A": (-0.3, 0.3)},
        t_true_range=(1.0, 12.0),
        objective="likelihood",
        posterior_objective="likelihood",
        s_emu=EmulatorError(0.0, "config"),
        n_sources=40,
        n_starts=1,
        start_design="sobol",
        seed=7,
        merge_tol=0.02,
        ranks=1,
        theta_best=theta,
        objective_best=0.0,
        optima=(),
        starts=(),
        posterior=PosteriorSummary(
            samples_file="posterior.npz",
            walkers=chain.shape[1],
            steps=chain.shape[0],
            burn=burn,
            thin=1,
            n_samples=flat.shape[0],
            acceptance_fraction=0.3,
            autocorr_time=dict.fromkeys(names, 1.0),
            chains_too_short=False,
            summary={n: ParamSummary.of(flat[:, j]) for j, n in enumerate(names)},
        ),
        seed_loss=SeedLoss(1.0, 0.5, 2.0),
        sources=(),
        corrected_arf=str(folder / "corrected.arf"),
        target_arf="",
        target={},
        identifiability=IdentifiabilityReport(names, {}, (), (), ()),
        corrected_arfs=(),
        warnings=(),
        timing=Timing(0.0, 0.0, 0.0),
    )
    record.update(fields)
    return InversionResult(**record).write(folder / "result.json")


@pytest.fixture(scope="module")
def pn_result(tmp_path_factory) -> Path:
    """A result whose target is the XMM EPIC-pn ARF in ../shared/responses."""
    _need(RESPONSES / "xmm_epn_src.arf", PN_ARF)
    from xrmodifier_hpc.io.arf_products import arf_identity

    target = RESPONSES / "xmm_epn_src.arf"
    return write_result(
        tmp_path_factory.mktemp("pn") / "run",
        _ridge_chain(),
        burn=30,
        target_arf=str(target),
        target=arf_identity(target),
    )


def _samples(result: Path) -> np.ndarray:
    with np.load(result.parent / "posterior.npz") as post:
        return post["chain"][int(post["burn"]) :].reshape(-1, 3)


def _median_multiplier(result: Path, arf: Path, q: float = 50.0) -> np.ndarray:
    """The pointwise percentile of m(E) over every posterior sample, computed here."""
    a = read_arf(arf)
    curves = GAUSS.evaluate(0.5 * (a.energ_lo + a.energ_hi), _samples(result))
    return np.percentile(curves, q, axis=0)


def _one_error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("xrmodifier: error:"), done.stderr
    assert "Traceback" not in done.stderr
    return lines[0]


def test_apply_median_to_another_pn_arf(pn_result: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    done = run_cli("apply", str(pn_result), str(PN_ARF), "-o", str(out))
    assert done.returncode == 0, done.stderr
    written = out / "xmm-epn_PN.corrected.arf"
    assert f"wrote {written} (median; 2067 bins" in done.stdout
    corrected, original = read_arf(written), read_arf(PN_ARF)
    assert corrected.specresp.size == 2067
    m = _median_multiplier(pn_result, PN_ARF)
    np.testing.assert_allclose(corrected.specresp, original.specresp * m, rtol=2e-7)
    # the dip is there, at the file's own bins, and nowhere else
    e = 0.5 * (original.energ_lo + original.energ_hi)
    assert m[np.argmin(np.abs(e - 1.3))] < 0.93 and np.all(np.abs(m[e > 3.0] - 1) < 1e-6)
    with fits.open(written, checksum=True) as new, fits.open(PN_ARF) as orig:
        hdr = new["SPECRESP"].header
        assert hdr["XRMSTAT"] == "median" and hdr["XRMRESLT"] == str(pn_result)
        assert hdr["XRMFAMIL"] == "gaussian"
        for h_orig, h_new in zip(orig, new):
            for card in h_orig.header.cards:
                if card.keyword not in ("", "HISTORY", "COMMENT", "CHECKSUM", "DATASUM"):
                    assert card.keyword in h_new.header, card.keyword


def test_apply_to_a_gzip_copy(pn_result: Path, tmp_path: Path) -> None:
    gz = tmp_path / "PN.arf.gz"
    with PN_ARF.open("rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    done = run_cli("apply", str(pn_result), str(gz), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    corrected = read_arf(tmp_path / "out" / "PN.corrected.arf")
    m = _median_multiplier(pn_result, PN_ARF)
    np.testing.assert_allclose(corrected.specresp, read_arf(PN_ARF).specresp * m, rtol=2e-7)
    with fits.open(tmp_path / "out" / "PN.corrected.arf") as f:  # where it came from, absolute
        assert f["SPECRESP"].header["XRMSRC"] == str(gz.resolve())
    # applied again: the earlier output is replaced, and the log says so
    again = run_cli("apply", str(pn_result), str(gz), "-o", str(tmp_path / "out"))
    assert again.returncode == 0 and "replacing" in again.stderr, again.stderr


def test_apply_envelopes_and_ensemble(pn_result: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    for stat in ("p16", "p84"):
        done = run_cli("apply", str(pn_result), str(PN_ARF), "-o", str(out), "--stat", stat)
        assert done.returncode == 0, done.stderr
    original = read_arf(PN_ARF).specresp
    lo = read_arf(out / "xmm-epn_PN.corrected_p16.arf").specresp
    hi = read_arf(out / "xmm-epn_PN.corrected_p84.arf").specresp
    np.testing.assert_allclose(lo, original * _median_multiplier(pn_result, PN_ARF, 16), rtol=2e-7)
    np.testing.assert_allclose(hi, original * _median_multiplier(pn_result, PN_ARF, 84), rtol=2e-7)
    assert np.all(lo <= hi)
    done = run_cli(
        "apply", str(pn_result), str(PN_ARF), "-o", str(out), "--stat", "ensemble", "--draws", "30"
    )
    assert done.returncode == 0, done.stderr
    t = fits.getdata(out / "xmm-epn_PN.corrected_ensemble.fits", "ENSEMBLE")
    assert t["SPECRESP"].shape == (30, 2067)
    samples = _samples(pn_result)
    arf = read_arf(PN_ARF)
    e = 0.5 * (arf.energ_lo + arf.energ_hi)
    for row in t[:5]:
        theta = np.array([row["mu"], row["sigma"], row["A"]])
        assert np.any(np.all(samples == theta, axis=1))  # a posterior draw
        np.testing.assert_allclose(
            row["SPECRESP"], arf.specresp * GAUSS.evaluate(e, theta), rtol=2e-7
        )


def test_another_instrument_is_refused_unless_forced(pn_result: Path, tmp_path: Path) -> None:
    _need(MOS1_ARF, ACIS_ARF)
    out = tmp_path / "out"
    # a good ARF first: nothing is written when any input is refused
    done = run_cli("apply", str(pn_result), str(PN_ARF), str(MOS1_ARF), "-o", str(out))
    line = _one_error_line(done)
    assert str(MOS1_ARF) in line and "INSTRUME = 'EMOS1'" in line and "'EPN'" in line
    assert "--force" in line
    assert not out.exists()
    line = _one_error_line(run_cli("apply", str(pn_result), str(ACIS_ARF), "-o", str(out)))
    assert "TELESCOP = 'CHANDRA'" in line
    done = run_cli("apply", str(pn_result), str(MOS1_ARF), "-o", str(out), "--force")
    assert done.returncode == 0, done.stderr
    assert read_arf(out / "xmm-emos1_MOS1.corrected.arf").specresp.size == 2400


def test_target_from_the_result_itself(tmp_path: Path) -> None:
    _need(PN_ARF)
    chain = _ridge_chain(steps=40)
    result = write_result(tmp_path / "a", chain, 10, target={"TELESCOP": "XMM", "INSTRUME": "EPN"})
    done = run_cli("apply", str(result), str(PN_ARF), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    # no way to tell the target: refused unless forced
    unknown = write_result(tmp_path / "b", chain, 10)
    line = _one_error_line(run_cli("apply", str(unknown), str(PN_ARF), "-o", str(tmp_path / "o")))
    assert "cannot tell which instrument" in line
    done = run_cli("apply", str(unknown), str(PN_ARF), "-o", str(tmp_path / "o"), "--force")
    assert done.returncode == 0, done.stderr


def test_bad_inputs_end_with_one_line(pn_result: Path, tmp_path: Path) -> None:
    out = str(tmp_path / "out")
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    (lonely / "result.json").write_text(pn_result.read_text())
    line = _one_error_line(run_cli("apply", str(lonely / "result.json"), str(PN_ARF), "-o", out))
    assert "posterior.npz" in line
    (lonely / "junk.json").write_text("[1, 2]")
    line = _one_error_line(run_cli("apply", str(lonely / "junk.json"), str(PN_ARF), "-o", out))
    assert "not an inversion result" in line
    (lonely / "partial.json").write_text(json.dumps({"param_names": ["mu"]}))
    line = _one_error_line(run_cli("apply", str(lonely / "partial.json"), str(PN_ARF), "-o", out))
    assert "not an inversion result" in line
    old = json.loads(pn_result.read_text())
    old["schema_version"] = 1  # corrected.arf at theta_best: refused
    (lonely / "v1.json").write_text(json.dumps(old))
    line = _one_error_line(run_cli("apply", str(lonely / "v1.json"), str(PN_ARF), "-o", out))
    assert "schema version 1" in line and "rerun invert" in line
    line = _one_error_line(run_cli("apply", str(tmp_path / "none.json"), str(PN_ARF), "-o", out))
    assert "not found" in line
    line = _one_error_line(run_cli("apply", str(pn_result), str(tmp_path / "x.arf"), "-o", out))
    assert "x.arf" in line
    twin = tmp_path / "twin"
    twin.mkdir()
    shutil.copy(PN_ARF, twin / PN_ARF.name)
    line = _one_error_line(
        run_cli("apply", str(pn_result), str(PN_ARF), str(twin / PN_ARF.name), "-o", out)
    )
    assert "both be written" in line
    line = _one_error_line(
        run_cli(
            "apply", str(pn_result), str(PN_ARF), "-o", out, "--stat", "ensemble", "--draws", "0"
        )
    )
    assert "--draws" in line
    assert not Path(out).exists()
    done = run_cli("apply", str(pn_result), str(PN_ARF), "-o", out, "--stat", "mean")
    assert done.returncode == 2 and "invalid choice" in done.stderr


def test_apply_after_a_real_inversion(injection_project: Path, tmp_path: Path) -> None:
    """invert -> apply on the synthetic target's own ARF: the file ``apply`` writes is the
    target ARF times the pointwise posterior median of m(E) of invert's own posterior."""
    project = tmp_path / "project"
    shutil.copytree(
        injection_project.parent,
        project,
        ignore=shutil.ignore_patterns("grid.h5", "*.npz", "*checkpoint*", "result.json", "*.csv"),
    )
    config = project / "config.toml"
    text = config.read_text()
    for section, key, value in (
        ("inversion", "n_starts", "4"),
        ("inversion.mcmc", "walkers", "8"),
        ("inversion.mcmc", "steps", "300"),
        ("inversion.mcmc", "burn", "100"),
        ("mock", "n_sources", "20"),
    ):
        text = edit_config(text, section, key, value)
    config.write_text(text)
    obs = project / "run" / "obs.csv"
    for args in (("mock", str(config), "-o", str(obs)), ("invert", str(config), str(obs))):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr[-3000:]
    result = project / "run" / "result.json"
    target = project / "instruments" / "target.arf"
    done = run_cli("apply", str(result), str(target), "-o", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    corrected = read_arf(tmp_path / "out" / "target.corrected.arf").specresp
    m = _median_multiplier(result, target)  # 8 x 200 samples: all of them set the median
    np.testing.assert_allclose(corrected, read_arf(target).specresp * m, rtol=2e-7)
    # the same statistic, draws and seed as invert's own corrected.arf: the same file content
    np.testing.assert_array_equal(corrected, read_arf(project / "run" / "corrected.arf").specresp)
    done = run_cli(
        "apply", str(result), str(target), "-o", str(tmp_path / "ens"), "--stat", "ensemble"
    )
    assert done.returncode == 0, done.stderr
    np.testing.assert_array_equal(
        fits.getdata(tmp_path / "ens" / "target.corrected_ensemble.fits", "ENSEMBLE")["SPECRESP"],
        fits.getdata(project / "run" / "corrected_ensemble.fits", "ENSEMBLE")["SPECRESP"],
    )
    # the synthetic telescope's correction is not the XMM pn's
    if PN_ARF.is_file():
        line = _one_error_line(run_cli("apply", str(result), str(PN_ARF), "-o", str(tmp_path)))
        assert "TELESCOP = 'XMM'" in line and "SYNTH-TGT" in line
