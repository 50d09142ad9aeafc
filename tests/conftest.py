"""Shared fixtures: the real responses and XSPEC references in ../shared, and small configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from xrmodifier_hpc.config import set_key

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
RESPONSES = SHARED / "responses"
REFERENCE = SHARED / "reference"
VENV_BIN = Path(sys.executable).parent
XRMODIFIER = str(VENV_BIN / "xrmodifier")


def mpiexec() -> str | None:
    """The mpiexec of the MPI that mpi4py was built against, or None."""
    return shutil.which("mpiexec")


@pytest.fixture(scope="session")
def responses_dir() -> Path:
    if not RESPONSES.is_dir():
        pytest.skip(f"real responses not found at {RESPONSES}")
    return RESPONSES


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    if not REFERENCE.is_dir():
        pytest.skip(f"XSPEC reference numbers not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(scope="session")
def synthetic_pair(tmp_path_factory) -> dict[str, Path]:
    """The synthetic reference/target OGIP files, written once per session."""
    from xrmodifier_hpc.io.synthetic import write_pair

    return write_pair(tmp_path_factory.mktemp("instruments"))


#: set ``key = value`` in ``[section]`` of a config text
edit_config = set_key


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """``xrmodifier init`` output: the example config plus synthetic instruments."""
    from xrmodifier_hpc.stages.init import init

    return init(tmp_path / "project")


def shrink_to_small(text: str) -> str:
    """A config text with the grid cut to 3 x 2 x 3 thetas x 4 temperatures (72 points), a
    48-point fit grid, chunks of 16 points and 8 off-grid check points (simulate fits them)."""
    for key, value in (
        ("mu", "{ linspace = [1.0, 2.5, 3] }"),
        ("sigma", "{ values = [0.2, 0.5] }"),
        ("A", "{ linspace = [-0.2, 0.2, 3] }"),
    ):
        text = edit_config(text, "modifier.grid", key, value)
    text = edit_config(text, "temperatures", "t_true", "{ logspace = [1.5, 8.0, 4] }")
    text = edit_config(text, "simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }")
    text = edit_config(text, "emulator", "offgrid_points", "8")
    return edit_config(text, "simulation", "chunk_size", "16")


@pytest.fixture
def small_config(demo_config: Path) -> Path:
    """The example config shrunk to a 72-point grid (:func:`shrink_to_small`)."""
    demo_config.write_text(shrink_to_small(demo_config.read_text()))
    return demo_config


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed ``xrmodifier`` command; returns the completed process (no check)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [XRMODIFIER, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )


#: the injection-recovery project: a 1920-point grid (8 mu x 4 sigma x 5 A x 12 T_true),
#: noise-free (asimov) fits so a short training learns it, bright mock sources
INJECTION_EDITS = (
    ("modifier.grid", "mu", "{ linspace = [0.8, 3.0, 8] }"),
    ("modifier.grid", "sigma", "{ logspace = [0.15, 0.8, 4] }"),
    ("modifier.grid", "A", "{ linspace = [-0.3, 0.3, 5] }"),
    ("temperatures", "t_true", "{ logspace = [1.0, 12.0, 12] }"),
    ("simulation", "mode", '"asimov"'),
    ("simulation", "realisations", "1"),
    ("emulator", "epochs", "600"),
    ("emulator", "patience", "100"),
    ("emulator", "batch_size", "256"),
    ("emulator", "threads", "1"),
    ("emulator", "predict_scatter", "false"),
    ("emulator", "offgrid_points", "120"),
    ("inversion", "n_starts", "8"),
    ("inversion.mcmc", "walkers", "24"),
    ("inversion.mcmc", "steps", "1500"),
    ("inversion.mcmc", "burn", "300"),
    ("mock", "n_sources", "36"),
    ("mock", "counts", "[100000.0, 300000.0]"),
)


@pytest.fixture(scope="session")
def injection_project(tmp_path_factory) -> Path:
    """A project that went through ``xrmodifier simulate`` and ``xrmodifier train`` for real
    (shared by the inversion tests); returns its config path."""
    from xrmodifier_hpc.stages.init import init

    config = init(tmp_path_factory.mktemp("injection") / "project")
    text = config.read_text()
    for section, key, value in INJECTION_EDITS:
        text = edit_config(text, section, key, value)
    config.write_text(text)
    for stage in ("simulate", "train"):
        done = run_cli(stage, str(config))
        assert done.returncode == 0, f"xrmodifier {stage} failed:\n{done.stderr[-3000:]}"
    assert (config.parent / "run" / "emulator.pt").is_file()
    return config


#: a 288-point grid (4 mu x 3 sigma x 4 A x 6 T_true, 2 Poisson realisations) and a small,
#: fast emulator: for the training and launch tests
EMULATOR_EDITS = (
    ("modifier.grid", "mu", "{ linspace = [1.0, 2.5, 4] }"),
    ("modifier.grid", "sigma", "{ logspace = [0.2, 0.5, 3] }"),
    ("modifier.grid", "A", "{ linspace = [-0.2, 0.2, 4] }"),
    ("temperatures", "t_true", "{ logspace = [1.5, 8.0, 6] }"),
    ("simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }"),
    ("simulation", "curves", "false"),
    ("emulator", "hidden", "[32, 32]"),
    ("emulator", "scatter_hidden", "[16]"),
    ("emulator", "epochs", "40"),
    ("emulator", "batch_size", "64"),
    ("emulator", "patience", "1000"),
    ("emulator", "checkpoint_every", "5"),
    ("emulator", "offgrid_points", "24"),
    ("emulator", "threads", "1"),
)


@pytest.fixture(scope="session")
def emulator_grid_project(tmp_path_factory) -> Path:
    """A project with a real ``grid.h5`` from ``simulate`` (EMULATOR_EDITS), made once per
    session; copy the folder (``copy_project``) before training in it."""
    from xrmodifier_hpc.stages.init import init
    from xrmodifier_hpc.stages.simulate import simulate

    config = init(tmp_path_factory.mktemp("emulator") / "project")
    text = config.read_text()
    for section, key, value in EMULATOR_EDITS:
        text = edit_config(text, section, key, value)
    config.write_text(text)
    simulate(config)
    assert (config.parent / "run" / "grid.h5").is_file()
    return config


def copy_project(config: Path, dest: Path) -> Path:
    """Copy a project folder (config, instruments, run/) to ``dest``; returns the new config."""
    shutil.copytree(config.parent, dest)
    return dest / config.name
