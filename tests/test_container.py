"""containers/xrmodifier.def, checked without Apptainer (which cannot be installed here).

The definition file is parsed into its header and sections and checked for what the image
must contain; its shell scriptlets are syntax-checked with ``sh -n``; and the command lines of
``%environment``, ``%runscript`` and ``%test`` are RUN in the project's own environment:
``%environment`` against a stand-in ``headas-init.sh``, ``%runscript`` as is, ``%test`` with
the native backend standing in for XSPEC (the self-test script takes the backend choice).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEF_FILE = REPO / "containers" / "xrmodifier.def"
VENV_BIN = str(Path(sys.executable).parent)
SECTION = re.compile(r"^%(\w+)\s*(.*)$")
TEMPLATE = re.compile(r"\{\{\s*(\w+)\s*\}\}")


def parse_def(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """Header keywords and section bodies (dedented) of an Apptainer definition file."""
    header: dict[str, str] = {}
    sections: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        match = SECTION.match(line)
        if match:
            current = match.group(1)
            sections.setdefault(current, [])
            continue
        if current is None:
            if line.strip() and not line.lstrip().startswith("#"):
                key, _, value = line.partition(":")
                header[key.strip()] = value.strip()
            continue
        sections[current].append(line)
    bodies = {}
    for name, lines in sections.items():
        while lines and not lines[-1].strip():
            lines.pop()
        indents = [len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()]
        cut = min(indents) if indents else 0
        bodies[name] = "\n".join(ln[cut:] for ln in lines) + "\n"
    return header, bodies


@pytest.fixture(scope="module")
def definition() -> tuple[dict[str, str], dict[str, str], dict[str, str]]:
    header, sections = parse_def(DEF_FILE.read_text())
    arguments = {}
    for line in sections.get("arguments", "").splitlines():
        if line.strip():
            key, _, value = line.strip().partition("=")
            arguments[key] = value
    return header, sections, arguments


def render(body: str, arguments: dict[str, str]) -> str:
    """The scriptlet as Apptainer builds it with the default build arguments."""
    return TEMPLATE.sub(lambda m: arguments[m.group(1)], body)


def test_header_and_sections(definition):
    header, sections, arguments = definition
    assert list(header)[0] == "Bootstrap" and header["Bootstrap"] == "docker"
    assert header["From"].startswith("debian:")
    for name in (
        "arguments",
        "files",
        "post",
        "environment",
        "runscript",
        "test",
        "labels",
        "help",
    ):
        assert name in sections, name
    assert {"HEASOFT_VERSION", "HEASOFT_URL", "TORCH_VERSION", "TORCH_INDEX"} <= set(arguments)
    assert re.fullmatch(r"6\.\d+", arguments["HEASOFT_VERSION"])


def test_every_template_variable_has_a_default(definition):
    _, _, arguments = definition
    used = set(TEMPLATE.findall(DEF_FILE.read_text()))
    assert used and used <= set(arguments), used - set(arguments)


def test_files_sources_exist_in_the_repository(definition):
    _, sections, _ = definition
    entries = [ln.split() for ln in sections["files"].splitlines() if ln.strip()]
    assert entries
    for source, dest in entries:
        assert (REPO / source).exists(), source
        assert dest.startswith("/opt/xrmodifier/")
    sources = {e[0] for e in entries}
    assert {"pyproject.toml", "xrmodifier_hpc", "containers/selftest.py"} <= sources


def test_post_follows_the_documented_builds(definition):
    _, sections, arguments = definition
    post = render(sections["post"], arguments)
    for needle in (
        "gfortran",
        "libreadline-dev",
        "libncurses-dev",
        "perl",
        "python3-dev",
        "./configure --prefix=/opt/heasoft",
        "\nmake > /opt/heasoft-build.log",
        "make install",
        "PYTHON=/opt/venv/bin/python",
        "mpich",
        "libhdf5-mpich-dev",
        "CC=mpicc HDF5_MPI=ON",
        "--no-binary=mpi4py",
        "--no-binary=h5py",
        "torch==2.13.0",
        "pip install --no-cache-dir /opt/xrmodifier/src",
        "lheasoft6.34/heasoft-6.34src.tar.gz",
        "get_config().mpi",
    ):
        assert needle in post, needle
    assert post.startswith("set -eu\n")


@pytest.mark.parametrize("section", ["post", "environment", "runscript", "test"])
def test_scriptlets_are_valid_sh(definition, section):
    _, sections, arguments = definition
    sh = shutil.which("dash") or "sh"  # Apptainer runs scriptlets with /bin/sh
    proc = subprocess.run(
        [sh, "-n"], input=render(sections[section], arguments), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr


def test_environment_sources_headas_init_and_sets_batch_variables(definition, tmp_path):
    """Run %environment with /opt/heasoft/platform pointing at a stand-in HEASoft whose
    headas-init.sh exports a marker, then look at the resulting environment."""
    _, sections, arguments = definition
    fake = tmp_path / "heasoft"
    fake.mkdir()
    (fake / "headas-init.sh").write_text('export XRM_FAKE_INIT="$HEADAS"\n')
    body = render(sections["environment"], arguments).replace("/opt/heasoft/platform", str(fake))
    script = body + "env\n"
    env = {"PATH": os.environ["PATH"], "OMP_NUM_THREADS": "3"}
    proc = subprocess.run(
        [shutil.which("dash") or "sh", "-eu"], input=script, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    out = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    assert out["XRM_FAKE_INIT"] == str(fake) and out["HEADAS"] == str(fake)
    assert out["HEADASNOQUERY"] == "" and out["HEADASPROMPT"] == "/dev/null"
    assert out["PATH"].startswith("/opt/venv/bin:")
    assert out["OMP_NUM_THREADS"] == "3"  # a value from the host is kept


def test_runscript_runs_xrmodifier(definition, demo_config):
    _, sections, arguments = definition
    runscript = render(sections["runscript"], arguments)
    assert runscript.strip() == 'exec xrmodifier "$@"'
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    sh = shutil.which("dash") or "sh"
    proc = subprocess.run(
        [sh, "-s", "--", "--version"], input=runscript, env=env, capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("xrmodifier ")
    proc = subprocess.run(
        [sh, "-s", "--", "check", str(demo_config)],
        input=runscript,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert '"grid_points"' in proc.stdout
    proc = subprocess.run(
        [sh, "-s", "--", "check", "/nonexistent.toml"],
        input=runscript,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1


def _test_command(definition, backend: str) -> str:
    _, sections, arguments = definition
    command = render(sections["test"], arguments)
    assert command.strip() == "exec python /opt/xrmodifier/selftest.py --backend xspec"
    local = command.replace("/opt/xrmodifier/selftest.py", str(REPO / "containers" / "selftest.py"))
    return local.replace("--backend xspec", f"--backend {backend}")


def test_test_section_runs_fakeit_and_fit_with_native_standing_in(definition):
    try:
        from xrmodifier_hpc.backends.native import NativeBackend  # noqa: F401
    except ImportError:
        pytest.skip("the native backend is not available yet")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [shutil.which("dash") or "sh", "-s"],
        input=_test_command(definition, "native"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.startswith("selftest ok: native")


def test_test_section_outside_the_container_fails_cleanly(definition):
    import importlib.util

    if importlib.util.find_spec("xspec") is not None:
        pytest.skip("PyXspec is importable here")
    env = {**os.environ, "PATH": f"{VENV_BIN}:{os.environ['PATH']}"}
    proc = subprocess.run(
        [shutil.which("dash") or "sh", "-s"],
        input=_test_command(definition, "xspec"),
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert proc.stderr.startswith("selftest FAILED:") and "container" in proc.stderr
    assert "Traceback" not in proc.stderr
