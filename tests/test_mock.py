"""``xrmodifier mock``: observations by the full forward model (native fakeit + C-stat fits of
both telescopes), their truth sidecar, determinism and the bad-option messages."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import edit_config

from xrmodifier_hpc.cli import main
from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.config.grid import MOCK_STREAM
from xrmodifier_hpc.io.observations import read_observations
from xrmodifier_hpc.stages.mock import draw_sources, mock, norms_for_counts, parse_theta_overrides


@pytest.fixture
def mock_config(demo_config: Path) -> Path:
    text = edit_config(demo_config.read_text(), "mock", "n_sources", "12")
    demo_config.write_text(text)
    return demo_config


def test_mock_is_the_forward_model_of_both_telescopes(mock_config: Path, tmp_path: Path) -> None:
    """Each row is exactly what the backends give: telescope 1 simulated through the modified
    ARF and fitted with the original one, telescope 0 through its own response."""
    from xrmodifier_hpc.backends import make_backend

    out = tmp_path / "obs.csv"
    res = mock(mock_config, output=out)
    cfg = load_config(mock_config)
    obs = read_observations(out)
    truth = json.loads(res.truth_path.read_text())
    assert res.truth_path == tmp_path / "obs.truth.json"
    assert truth["theta_true"] == {"mu": 1.6, "sigma": 0.35, "A": 0.15}
    assert [s["name"] for s in truth["sources"]] == list(obs.names)
    t_true = np.array([s["t_true"] for s in truth["sources"]])
    norm = np.array([s["norm"] for s in truth["sources"]])
    idx = np.array([int(n[3:]) - 1 for n in obs.names])
    theta = np.tile([1.6, 0.35, 0.15], (obs.n, 1))
    common = dict(
        realisations=1, mode="poisson", curves=False, seed=cfg.mock.seed, stream=MOCK_STREAM
    )
    with make_backend(cfg, role="target", **common) as target:
        r1 = target.run(theta, t_true, 3 * idx + 1, norm=norm)
    with make_backend(cfg, role="reference", **common) as reference:
        r0 = reference.run(np.tile([1.0, 1.0, 0.0], (obs.n, 1)), t_true, 3 * idx + 2, norm=norm)
    np.testing.assert_allclose(obs.t1, r1.t_fit_orig[:, 0], rtol=1e-7)
    np.testing.assert_allclose(obs.t1_err_lo, r1.err_orig[:, 0, 0], rtol=1e-7)
    np.testing.assert_allclose(obs.t1_err_hi, r1.err_orig[:, 0, 1], rtol=1e-7)
    np.testing.assert_allclose(obs.t0, r0.t_fit_orig[:, 0], rtol=1e-7)
    np.testing.assert_allclose(obs.t0_err_hi, r0.err_orig[:, 0, 1], rtol=1e-7)
    # the two telescopes' noise is independent (different streams), and errors are realistic:
    # delta-C = 1 intervals of a few percent at these counts, growing with temperature
    assert not np.allclose(obs.t0 / t_true, obs.t1 / t_true, rtol=1e-3)
    rel = obs.t0_err / obs.t0
    assert np.all((rel > 0.003) & (rel < 0.2))
    assert np.corrcoef(t_true, obs.t0_err)[0, 1] > 0.8


def test_sources_span_the_range_and_counts_set_the_norm(mock_config: Path) -> None:
    cfg = load_config(mock_config)
    t_true, counts = draw_sources(20, (1.5, 10.0), (8000.0, 30000.0), seed=3)
    edges = np.geomspace(1.5, 10.0, 21)
    # one source per equal stratum of log T: the range is covered whatever n is
    assert np.all((t_true >= edges[:-1]) & (t_true <= edges[1:]))
    assert np.all((counts >= 8000) & (counts <= 30000))
    norm = norms_for_counts(cfg, t_true[:3], counts[:3])
    from xrmodifier_hpc.backends import make_backend

    with make_backend(cfg, role="target", realisations=1, mode="asimov", curves=False) as b:
        res = b.run(np.tile([1.0, 1.0, 0.0], (3, 1)), t_true[:3], np.arange(3), norm=norm)
    np.testing.assert_allclose(res.counts[:, 0], counts[:3], rtol=1e-6)


def test_mock_is_deterministic_and_seeded(mock_config: Path, tmp_path: Path) -> None:
    a = mock(mock_config, output=tmp_path / "a.csv", n_sources=5)
    b = mock(mock_config, output=tmp_path / "b.csv", n_sources=5)
    c = mock(mock_config, output=tmp_path / "c.csv", n_sources=5, seed=12345)
    np.testing.assert_array_equal(a.observations.t1, b.observations.t1)
    np.testing.assert_array_equal(a.observations.t0, b.observations.t0)
    assert not np.allclose(a.observations.t1, c.observations.t1)


def test_theta_changes_telescope_1_only(mock_config: Path, tmp_path: Path) -> None:
    """A Gaussian bump in the true ARF biases telescope 1's temperatures, not telescope 0's;
    with A = 0 the two agree within their errors."""
    flat = mock(mock_config, output=tmp_path / "flat.csv", theta={"A": 0.0}, n_sources=12)
    bump = mock(
        mock_config, output=tmp_path / "bump.csv", theta={"A": 0.3, "mu": 1.2}, n_sources=12
    )
    np.testing.assert_array_equal(flat.observations.t0, bump.observations.t0)
    pull = (flat.observations.t1 - flat.observations.t0) / np.hypot(
        flat.observations.t0_err, flat.observations.t1_err
    )
    assert abs(pull.mean()) < 3 / np.sqrt(pull.size)
    shift = bump.observations.t1 / flat.observations.t1 - 1
    assert np.all(np.abs(shift) > 0) and abs(np.median(shift)) > 0.02
    assert json.loads(bump.truth_path.read_text())["theta_true"]["A"] == 0.3


def test_failed_fits_are_dropped_with_a_log_line(mock_config: Path, tmp_path: Path, caplog) -> None:
    text = edit_config(mock_config.read_text(), "mock", "counts", "[20.0, 2000.0]")
    mock_config.write_text(text)
    caplog.set_level("INFO", logger="xrmodifier.mock")
    res = mock(mock_config, output=tmp_path / "o.csv", n_sources=12)
    assert res.dropped, "sources with ~20 counts cannot be fitted (min_counts = 50)"
    assert res.observations.n == 12 - len(res.dropped)
    logged = [r.getMessage() for r in caplog.records if "dropped" in r.getMessage()]
    assert any(res.dropped[0] in m and "too_few_counts" in m for m in logged), logged
    truth = json.loads(res.truth_path.read_text())
    assert truth["dropped"] == list(res.dropped)
    assert len(truth["sources"]) == res.observations.n


def test_cli_mock_with_overrides(mock_config: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cli.csv"
    code = main(
        [
            "mock",
            str(mock_config),
            "-o",
            str(out),
            "--theta",
            "A=-0.2",
            "--theta",
            "mu=2.0",
            "--n-sources",
            "4",
            "--seed",
            "5",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert "wrote 4 sources" in capsys.readouterr().out
    truth = json.loads((tmp_path / "cli.truth.json").read_text())
    assert truth["theta_true"] == {"mu": 2.0, "sigma": 0.35, "A": -0.2}
    assert truth["seed"] == 5 and truth["n_requested"] == 4


def test_cli_mock_default_output_in_workdir(mock_config: Path, capsys) -> None:
    assert main(["mock", str(mock_config), "--n-sources", "3"]) == 0
    assert (mock_config.parent / "run" / "observations.csv").is_file()
    assert (mock_config.parent / "run" / "observations.truth.json").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["--theta", "A"], "--theta takes NAME=VALUE, got 'A'"),
        (["--theta", "A=big"], "--theta A: 'big' is not a number"),
        (["--theta", "B=0.1"], "unknown parameter(s) B for family 'gaussian'"),
        (["--theta", "A=-1.5"], "A must be > -1"),
        (["--theta", "sigma=-0.1"], "sigma must be > 0"),
        (["--n-sources", "0"], "--n-sources must be at least 1"),
        (["--seed", "-3"], "--seed must be a non-negative integer"),
    ],
)
def test_cli_mock_bad_options_exit_2(
    mock_config: Path, tmp_path: Path, capsys, args, message
) -> None:
    out = tmp_path / "never.csv"
    code = main(["mock", str(mock_config), "-o", str(out), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert message in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_mock_needs_every_parameter(demo_config: Path, tmp_path: Path, capsys) -> None:
    text = edit_config(demo_config.read_text(), "mock", "theta", "{ mu = 1.6, sigma = 0.35 }")
    demo_config.write_text(text)
    assert main(["mock", str(demo_config), "-o", str(tmp_path / "x.csv")]) == 2
    err = capsys.readouterr().err
    assert "no true value for A" in err and "[mock.theta]" in err


def test_parse_theta_overrides() -> None:
    assert parse_theta_overrides(["mu=1.5", " A = -0.1"]) == {"mu": 1.5, "A": -0.1}
    assert parse_theta_overrides(None) == {}


def test_truth_is_a_typed_record_beside_the_observations(mock_config: Path, tmp_path: Path) -> None:
    import datetime as dt

    from xrmodifier_hpc.io.artefacts import TIME_FORMAT
    from xrmodifier_hpc.io.truth import MockTruth

    res = mock(mock_config, output=tmp_path / "o.csv", n_sources=3)
    truth = MockTruth.for_observations(res.path)
    assert res.truth_path == tmp_path / "o.truth.json"
    assert truth.theta_true == res.theta_true and truth.param_names == ("mu", "sigma", "A")
    np.testing.assert_array_equal(truth.theta_vector(("A", "mu")), [0.15, 1.6])
    assert tuple(s.name for s in truth.sources) == res.observations.names
    np.testing.assert_array_equal([s.t_true for s in truth.sources], res.t_true)
    assert truth.observations == "o.csv" and truth.modifier.family == "gaussian"
    assert truth.provenance["stage"] == "mock"
    dt.datetime.strptime(truth.provenance["created"], TIME_FORMAT)  # the one time format
    assert json.loads(res.truth_path.read_text())["schema"] == "xrmodifier.mock_truth"
