"""Config loading: good configs resolve, bad ones end with exit code 2 and one clear line."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import edit_config, run_cli

from xrmodifier_hpc.config import load_config, parse_axis
from xrmodifier_hpc.errors import ConfigError
from xrmodifier_hpc.stages.init import EXAMPLE_CONFIG


def test_example_config_loads_and_resolves_paths(demo_config):
    cfg = load_config(demo_config)
    base = demo_config.parent
    assert cfg.instruments.target.arf == base / "instruments" / "target.arf"
    assert cfg.workdir == base / "run"
    assert cfg.slurm.logs == base / "slurm_logs"
    assert cfg.grid_path == base / "run" / "grid.h5"
    assert cfg.modifier.family == "gaussian"
    assert len(cfg.modifier.grid["mu"]) == 12
    np.testing.assert_allclose(cfg.modifier.grid["sigma"].array[[0, -1]], [0.15, 0.8])
    assert cfg.simulation.band == (0.5, 7.0)
    assert cfg.mock.theta == {"mu": 1.6, "sigma": 0.35, "A": 0.15}
    assert cfg.emulator.hidden == (128, 128, 128)


def test_check_command_summarises_the_grid(demo_config):
    out = run_cli("check", str(demo_config))
    assert out.returncode == 0, out.stderr
    assert '"grid_points": 10080' in out.stdout


@pytest.mark.parametrize(
    "raw, values",
    [
        ({"linspace": [1, 2, 3]}, [1, 1.5, 2]),
        ({"logspace": [1, 100, 3]}, [1, 10, 100]),
        ({"values": [3, 1]}, [1, 3]),
        ([0.5, 0.25], [0.25, 0.5]),
        (2.0, [2.0]),
    ],
)
def test_axis_forms(raw, values):
    np.testing.assert_allclose(parse_axis(raw, "k").array, values)


def test_fingerprint_ignores_training_settings_but_not_grid(demo_config):
    base = load_config(demo_config).simulation_fingerprint()
    text = demo_config.read_text()
    demo_config.write_text(edit_config(text, "emulator", "epochs", "7"))
    assert load_config(demo_config).simulation_fingerprint() == base
    demo_config.write_text(edit_config(text, "simulation", "chunk_size", "7"))
    assert load_config(demo_config).simulation_fingerprint() == base
    demo_config.write_text(edit_config(text, "instruments.reference", "exposure", "1.0"))
    assert load_config(demo_config).simulation_fingerprint() == base
    demo_config.write_text(edit_config(text, "simulation", "seed", "1"))
    assert load_config(demo_config).simulation_fingerprint() != base


def test_fingerprint_follows_response_content(demo_config):
    base = load_config(demo_config).simulation_fingerprint()
    arf = demo_config.parent / "instruments" / "target.arf"
    data = bytearray(arf.read_bytes())
    data[-10] ^= 0xFF
    arf.write_bytes(bytes(data))
    assert load_config(demo_config).simulation_fingerprint() != base


# (section, key, TOML value) -> the expected fragment of the one-line message
BAD = [
    (
        "simulation",
        "realisatons",
        "3",
        "[simulation.realisatons]: unknown key 'realisatons' (did you mean 'realisations'?)",
    ),
    (
        "simulation",
        "realisations",
        '"four"',
        "[simulation.realisations]: expected an integer, got a string",
    ),
    ("simulation", "realisations", "0", "realisations must be at least 1"),
    (
        "modifier.grid",
        "sigma",
        "{ values = [0.0, 0.2] }",
        "[modifier.grid.sigma]: sigma must be > 0 keV",
    ),
    (
        "modifier.grid",
        "A",
        "{ linspace = [-1.2, 0.3, 4] }",
        "[modifier.grid.A]: amplitude A must be > -1",
    ),
    ("modifier.grid", "mu", "{ values = [] }", "[modifier.grid.mu.values]: the grid is empty"),
    (
        "modifier.grid",
        "mu",
        "{ linspace = [1, 2, 0] }",
        "the number of points must be a positive integer",
    ),
    (
        "temperatures",
        "t_true",
        "{ values = [0.0, 2.0] }",
        "[temperatures.t_true]: temperatures must be positive",
    ),
    (
        "temperatures",
        "t_true",
        "{ logspace = [-1.0, 2.0, 4] }",
        "logspace needs positive start and stop",
    ),
    ("instruments.target", "arf", '"missing.arf"', "[instruments.target.arf]: ARF file"),
    (
        "simulation",
        "backend",
        '"xpsec"',
        "'xpsec' is not one of native, xspec (did you mean 'xspec'?)",
    ),
    ("simulation", "band", "[7.0, 0.5]", "[simulation.band]: band must be [low, high]"),
    ("simulation", "norm", "0.01", "give exactly one of counts and norm"),
    (
        "modifier",
        "family",
        '"gausian"',
        "unknown modifier family 'gausian' (did you mean 'gaussian'?)",
    ),
    ("modifier.grid", "amp", "{ values = [0.1] }", "unknown parameter 'amp' for family 'gaussian'"),
    ("source", "model", '"wabs*bremsstrahlung"', "[source.model]"),
    ("emulator", "val_fraction", "0.9", "val_fraction must be in (0, 0.5)"),
    ("inversion", "objective", '"chi2"', "'chi2' is not one of likelihood"),
    ("inversion.mcmc", "walkers", "5", "walkers must be an even number >= 4"),
    ("paths", "workdir", "3", "[paths.workdir]: expected a path string, got int"),
]


@pytest.mark.parametrize(
    "section, key, value, message", BAD, ids=[f"{s}.{k}={v}" for s, k, v, _ in BAD]
)
def test_bad_config_exits_2_with_one_line(demo_config, section, key, value, message):
    demo_config.write_text(edit_config(EXAMPLE_CONFIG, section, key, value))
    out = run_cli("check", str(demo_config))
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith(f"xrmodifier: error: {demo_config}")
    assert message in lines[0]
    assert "Traceback" not in out.stderr


def test_missing_required_section(demo_config):
    text = EXAMPLE_CONFIG.split("[source]")[1]
    demo_config.write_text("[source]" + text)
    with pytest.raises(ConfigError, match=r"\[instruments\]: required key is missing"):
        load_config(demo_config)


def test_missing_config_file_and_bad_toml(tmp_path):
    out = run_cli("check", str(tmp_path / "nope.toml"))
    assert out.returncode == 2 and "config file not found" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("[simulation\nseed = 1")
    out = run_cli("check", str(bad))
    assert out.returncode == 2 and "not valid TOML" in out.stderr


def _strip_hdu(path, extname):
    from astropy.io import fits

    with fits.open(path) as hdul:
        kept = [h for h in hdul if h.name != extname]
        fits.HDUList(kept).writeto(path, overwrite=True)


def _drop_column(path, extname, column):
    from astropy.io import fits

    with fits.open(path) as hdul:
        hdu = hdul[extname]
        cols = [c for c in hdu.columns if c.name != column]
        hdul[extname] = fits.BinTableHDU.from_columns(cols, header=hdu.header)
        hdul.writeto(path, overwrite=True)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda d: (d / "target.rmf").write_text("hello"), "target.rmf: not a readable FITS file"),
        (lambda d: _strip_hdu(d / "target.rmf", "EBOUNDS"), "target.rmf: no EBOUNDS extension"),
        (lambda d: _strip_hdu(d / "reference.arf", "SPECRESP"), "reference.arf: no SPECRESP"),
        (
            lambda d: _drop_column(d / "target.arf", "SPECRESP", "SPECRESP"),
            "target.arf: HDU 'SPECRESP' has no column SPECRESP",
        ),
        (lambda d: (d / "reference.rmf").unlink(), "RMF file"),
    ],
)
def test_check_reads_the_responses(demo_config, damage, message):
    """`xrmodifier check` reads every file the config names: bad ones are one line, exit 2."""
    damage(demo_config.parent / "instruments")
    out = run_cli("check", str(demo_config))
    assert out.returncode == 2, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.stderr


def test_check_reports_the_instruments(demo_config):
    import json

    out = run_cli("check", str(demo_config))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    for role in ("reference", "target"):
        inst = summary["instruments"][role]
        assert inst["channels"] == 1024 and 300 < inst["channels_in_band"] < 500
    assert summary["model"] == "wabs*bremss"


def test_multi_gaussian_and_spline_configs(demo_config):
    text = EXAMPLE_CONFIG.replace(
        'family = "gaussian"', 'family = "multi_gaussian"\noptions = { n_components = 2 }'
    )
    grid = (
        "[modifier.grid]\n"
        "mu1 = { values = [1.0, 1.5] }\nsigma1 = 0.2\nA1 = { values = [-0.6, 0.1] }\n"
        "mu2 = 3.0\nsigma2 = 0.5\nA2 = { values = [-0.5, 0.2] }\n"
    )
    start = text.index("[modifier.grid]")
    end = text.index("[temperatures]")
    text = text[:start] + grid + "\n" + text[end:]
    text = text.replace("theta = { mu = 1.6, sigma = 0.35, A = 0.15 }", "theta = { A1 = 0.1 }")
    demo_config.write_text(text)
    with pytest.raises(ConfigError, match="overlapping dips"):
        load_config(demo_config)
    demo_config.write_text(
        text.replace("A2 = { values = [-0.5, 0.2] }", "A2 = { values = [-0.3, 0.2] }")
    )
    cfg = load_config(demo_config)
    assert list(cfg.modifier.grid) == ["mu1", "sigma1", "A1", "mu2", "sigma2", "A2"]


def test_set_key_replaces_adds_and_appends():
    from xrmodifier_hpc.config import set_key

    text = "[a]\nx = 1 # keep\n[b]\ny = { values = [1, 2] }\nz = 3\n"
    assert (
        set_key(text, "b", "z", "4") == "[a]\nx = 1 # keep\n[b]\ny = { values = [1, 2] }\nz = 4\n"
    )
    assert set_key(text, "a", "w", "5").startswith("[a]\nw = 5\nx = 1 # keep\n")
    assert set_key(text, "c", "q", '"s"').endswith('\n[c]\nq = "s"\n')
    # a key of the same name in another section is left alone
    assert set_key(text, "a", "z", "9").count("z = 3") == 1
