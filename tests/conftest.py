"""Shared fixtures: the real responses and XSPEC references in ../shared, and small configs."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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
    from xrmodifier_hpc.synthetic import write_pair

    return write_pair(tmp_path_factory.mktemp("instruments"))


def edit_config(text: str, section: str, key: str, value: str) -> str:
    """Set ``key = value`` (TOML source) inside ``[section]`` of a config text."""
    pattern = re.compile(
        rf"(^\[{re.escape(section)}\][^\n]*\n(?:(?!\[).*\n)*?){re.escape(key)}\s*=.*$", re.M
    )
    if pattern.search(text):
        return pattern.sub(lambda m: f"{m.group(1)}{key} = {value}", text, count=1)
    header = re.compile(rf"^\[{re.escape(section)}\][^\n]*$", re.M)
    if not header.search(text):
        return text + f"\n[{section}]\n{key} = {value}\n"
    return header.sub(lambda m: f"{m.group(0)}\n{key} = {value}", text, count=1)


@pytest.fixture
def demo_config(tmp_path: Path) -> Path:
    """``xrmodifier init`` output: the example config plus synthetic instruments."""
    from xrmodifier_hpc.scaffold import init

    return init(tmp_path / "project")


@pytest.fixture
def small_config(demo_config: Path) -> Path:
    """The example config shrunk to a grid of 3 x 2 x 3 thetas x 4 temperatures (72 points)."""
    text = demo_config.read_text()
    for key, value in (
        ("mu", "{ linspace = [1.0, 2.5, 3] }"),
        ("sigma", "{ values = [0.2, 0.5] }"),
        ("A", "{ linspace = [-0.2, 0.2, 3] }"),
    ):
        text = edit_config(text, "modifier.grid", key, value)
    text = edit_config(text, "temperatures", "t_true", "{ logspace = [1.5, 8.0, 4] }")
    text = edit_config(text, "simulation", "fit_tgrid", "{ logspace = [0.5, 30.0, 48] }")
    text = edit_config(text, "simulation", "chunk_size", "16")
    demo_config.write_text(text)
    return demo_config


def run_cli(
    *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 600
) -> subprocess.CompletedProcess:
    """Run the installed ``xrmodifier`` command; returns the completed process (no check)."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [XRMODIFIER, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
