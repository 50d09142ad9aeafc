"""Atomic writes: a failure leaves the old file and no debris; success replaces it whole."""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from xrmodifier_hpc.io.atomic import replacing, write_bytes, write_text


def test_success_replaces_the_file_with_normal_permissions(tmp_path):
    target = tmp_path / "sub" / "result.json"
    write_text(target, "old")
    write_text(target, "new")
    assert target.read_text() == "new"
    mode = stat.S_IMODE(target.stat().st_mode)
    mask = os.umask(0)
    os.umask(mask)
    assert mode == 0o666 & ~mask
    assert sorted(p.name for p in target.parent.iterdir()) == ["result.json"]


def test_failure_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "emulator.pt"
    write_bytes(target, b"good")
    with pytest.raises(RuntimeError), replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("killed mid-write")
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["emulator.pt"]


def test_suffix_for_writers_that_go_by_the_name(tmp_path):
    target = tmp_path / "posterior.npz"
    with replacing(target, suffix=".npz") as tmp:
        np.savez(tmp, x=np.arange(3))
    np.testing.assert_array_equal(np.load(target)["x"], np.arange(3))
    assert [p.name for p in tmp_path.iterdir()] == ["posterior.npz"]
