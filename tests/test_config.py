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


# --------------------------------------------------------------------------------------------
# defaults never conflict with what the user wrote (issue 13 item 7)
# --------------------------------------------------------------------------------------------

MINIMAL = """\
[instruments.reference]
arf = "instruments/reference.arf"
rmf = "instruments/reference.rmf"
[instruments.target]
arf = "instruments/target.arf"
rmf = "instruments/target.rmf"
[modifier.grid]
mu = { linspace = [0.8, 3.0, 4] }
sigma = 0.3
A = { linspace = [-0.2, 0.2, 3] }
"""


def _load(demo_config, text):
    from xrmodifier_hpc.config import parse_config

    return parse_config(text, demo_config)


def test_norm_alone_is_accepted_and_counts_alone_too(demo_config):
    cfg = _load(demo_config, MINIMAL + "[simulation]\nnorm = 0.004\n")
    assert cfg.simulation.norm == 0.004 and cfg.simulation.counts is None
    assert cfg.derived["simulation.counts"] is None
    cfg = _load(demo_config, MINIMAL)
    assert cfg.simulation.counts == 50_000.0 and cfg.simulation.norm is None
    assert cfg.derived == {}
    with pytest.raises(ConfigError, match="give exactly one of counts and norm: both"):
        _load(demo_config, MINIMAL + "[simulation]\nnorm = 0.004\ncounts = 1000.0\n")


@pytest.mark.parametrize(
    "extra, checks",
    [
        # a small counts keeps min_counts below it (else every point would be "too few")
        ("[simulation]\ncounts = 30.0\n", {"simulation.min_counts": 15.0}),
        ("[inversion.mcmc]\nsteps = 600\n", {"inversion.mcmc.burn": 200}),
        ("[inversion.mcmc]\nburn = 5000\n", {"inversion.mcmc.steps": 15000}),
        ("[temperatures]\nt_true = { logspace = [2.0, 5.0, 4] }\n", {"mock.t_range": [2.0, 5.0]}),
        (
            "[temperatures]\nt_true = { logspace = [0.3, 30.0, 8] }\n",
            {"simulation.fit_tgrid": [0.1, 90.0, 128], "mock.t_range": [1.5, 9.0]},
        ),
    ],
)
def test_defaults_follow_written_values(demo_config, extra, checks):
    cfg = _load(demo_config, MINIMAL + extra)
    for key, value in checks.items():
        if key in cfg.derived:
            assert cfg.derived[key] == pytest.approx(value), key
        else:  # an unchanged default
            section, name = key.rsplit(".", 1)
            obj = cfg
            for part in section.split("."):
                obj = getattr(obj, part)
            assert list(np.atleast_1d(getattr(obj, name))) == pytest.approx(value), key
    # what was written is never changed
    if "min_counts" in extra:
        assert cfg.simulation.counts == 30.0


def test_walkers_default_covers_the_family(demo_config):
    text = MINIMAL.replace(
        "[modifier.grid]",
        '[modifier]\nfamily = "spline"\noptions = { knots = '
        + str([0.5 + 0.5 * k for k in range(20)])
        + " }\n[modifier.grid]",
    )
    grid = "".join(f"d{k} = 0.0\n" for k in range(1, 21))
    text = text[: text.index("mu = ")] + grid
    cfg = _load(demo_config, text)
    assert cfg.inversion.mcmc.walkers == 40 == cfg.derived["inversion.mcmc.walkers"]
    cfg = _load(demo_config, text + "[inversion.mcmc]\nwalkers = 50\n")
    assert cfg.inversion.mcmc.walkers == 50 and "inversion.mcmc.walkers" not in cfg.derived


def test_written_values_that_conflict_are_still_refused(demo_config):
    with pytest.raises(ConfigError, match="need steps >= 1 and 0 <= burn < steps"):
        _load(demo_config, MINIMAL + "[inversion.mcmc]\nsteps = 500\nburn = 600\n")


@pytest.mark.parametrize("thin", ["0", "-2"])
def test_thin_below_one_is_refused_on_the_command_line(demo_config, thin):
    """thin = 0 crashed invert; a negative thin silently sampled the burn-in backwards."""
    text = demo_config.read_text() + f"\n[inversion.mcmc]\nthin = {thin}\n"
    if "[inversion.mcmc]" in demo_config.read_text():
        text = edit_config(demo_config.read_text(), "inversion.mcmc", "thin", thin)
    demo_config.write_text(text)
    done = run_cli("check", str(demo_config))
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "[inversion.mcmc.thin]" in lines[0] and ">= 1" in lines[0]


@pytest.mark.parametrize(
    "value, message",
    [("90", "(a fraction: 0.9 for 90%)"), ("0", "between 0 and 1"), ("1.0", "between 0 and 1")],
)
def test_error_level_key(demo_config, value, message):
    with pytest.raises(ConfigError, match="error_level must be a confidence level") as info:
        _load(demo_config, MINIMAL + f"[inversion]\nerror_level = {value}\n")
    assert message in str(info.value) and "[inversion.error_level]" in str(info.value)
    assert _load(demo_config, MINIMAL + "[inversion]\nerror_level = 0.9\n").inversion.error_level


# --------------------------------------------------------------------------------------------
# instruments without an ARF, or with an area-carrying matrix
# --------------------------------------------------------------------------------------------


def _write_rsp(path, rmf_path):
    """The instrument's RMF times its ARF as one matrix (an RSP, no HDUCLAS3)."""
    from xrmodifier_hpc.io.ogip import Instrument, write_rmf

    inst = Instrument.load(rmf_path.with_suffix(".arf"), rmf_path)
    write_rmf(
        path,
        inst.energ_lo,
        inst.energ_hi,
        inst.matrix.multiply(inst.area[:, None]).tocsr(),
        inst.e_min,
        inst.e_max,
    )
    from astropy.io import fits

    with fits.open(path, mode="update") as hdul:
        del hdul["MATRIX"].header["HDUCLAS3"]
    return path


def test_check_without_arfs_and_with_an_rsp(demo_config):
    import json

    inst = demo_config.parent / "instruments"
    _write_rsp(inst / "target.rsp", inst / "target.rmf")
    text = MINIMAL.replace('arf = "instruments/reference.arf"\n', "").replace(
        'arf = "instruments/target.arf"\nrmf = "instruments/target.rmf"',
        'rmf = "instruments/target.rsp"',
    )
    demo_config.write_text(text)
    out = run_cli("check", str(demo_config))
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert summary["instruments"]["target"]["effective_area"] == "in the matrix"
    assert summary["instruments"]["reference"]["effective_area"] == "1 cm^2 (no ARF)"
    (warning,) = summary["warnings"]
    assert warning.startswith("instruments.reference: reference.rmf: no ARF given")
    # the target's ARF given with its RSP: refused, naming the key that allows it
    demo_config.write_text(
        text.replace('rmf = "instruments/target.rsp"', 'arf = "instruments/target.arf"\n'
                     'rmf = "instruments/target.rsp"')
    )  # fmt: skip
    out = run_cli("check", str(demo_config))
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert "target.rsp" in line and "applied twice" in line and "allow_double_area" in line
    demo_config.write_text(
        demo_config.read_text().replace(
            'rmf = "instruments/target.rsp"', 'rmf = "instruments/target.rsp"\n'
            "allow_double_area = true"
        )
    )  # fmt: skip
    out = run_cli("check", str(demo_config))
    assert out.returncode == 0, out.stderr
    assert any("applied twice" in w for w in json.loads(out.stdout)["warnings"])
