"""The architecture is checked, not only described: the import-layer contract of DESIGN.md
section 4 (pyproject's [tool.importlinter]) and ruff's rules, numpydoc docstrings included."""

from __future__ import annotations

import shutil
import subprocess

import pytest
from conftest import REPO, VENV_BIN


def _tool(name: str) -> str:
    path = VENV_BIN / name
    if path.is_file():
        return str(path)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed (pip install -e '.[dev]')")
    return found


def test_import_layers_hold() -> None:
    done = subprocess.run(
        [_tool("lint-imports"), "--no-cache"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "broken" not in done.stdout.lower().split("contracts:")[-1].split("kept")[0]


def test_ruff_is_clean() -> None:
    done = subprocess.run(
        [_tool("ruff"), "check", "--no-cache", "."], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_a_lower_layer_importing_a_higher_one_is_caught(tmp_path) -> None:
    """The contract fails when physics imports a stage (run on a copy of the package)."""
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO / "xrmodifier_hpc",
        copy / "xrmodifier_hpc",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    bad = copy / "xrmodifier_hpc" / "physics" / "modifiers.py"
    bad.write_text(bad.read_text() + "\nfrom xrmodifier_hpc.stages import simulate  # noqa\n")
    done = subprocess.run(
        [_tool("lint-imports"), "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode != 0
    assert "xrmodifier_hpc.physics" in done.stdout and "stages" in done.stdout


def test_public_docstrings_have_numpydoc_sections() -> None:
    """tools/check_docstrings.py: Parameters (each argument), Returns, Raises where due."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), str(REPO / "tools" / "check_docstrings.py")],
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout[-4000:]


def test_docstring_checker_catches_a_missing_section(tmp_path) -> None:
    bad = tmp_path / "mod.py"
    bad.write_text(
        'def f(x: float) -> float:\n    """Twice x.\n\n    Returns\n    -------\n'
        '    float\n        2 x.\n    """\n    if x < 0:\n        raise ValueError("x")\n'
        "    return 2 * x\n"
    )
    done = subprocess.run(
        [str(VENV_BIN / "python"), str(REPO / "tools" / "check_docstrings.py"), str(bad)],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1
    assert "no Parameters section" in done.stdout and "no Raises section" in done.stdout
