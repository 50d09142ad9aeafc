"""The embedded synthetic telescope pair and ``xrmodifier init``."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_cli

from xrmodifier_hpc.config import load_config
from xrmodifier_hpc.io.ogip import Instrument, read_arf
from xrmodifier_hpc.io.synthetic import (
    EDGE_AU_M,
    EDGE_C_K,
    EDGE_O_K,
    EDGE_SI_K,
    REFERENCE,
    TARGET,
    effective_area,
    resolution_sigma,
)


@pytest.mark.parametrize("edge", [EDGE_C_K, EDGE_O_K, EDGE_SI_K, EDGE_AU_M])
def test_areas_jump_at_the_edges(edge):
    for design in (REFERENCE, TARGET):
        below, above = effective_area(design, np.array([edge - 1e-4, edge + 1e-4]))
        assert abs(above - below) / below > 0.03, (design.name, edge)


def test_pair_reads_back_through_the_ogip_reader(synthetic_pair):
    ref = Instrument.load(synthetic_pair["reference_arf"], synthetic_pair["reference_rmf"])
    tgt = Instrument.load(synthetic_pair["target_arf"], synthetic_pair["target_rmf"])
    for inst, first in ((ref, 1), (tgt, 0)):
        assert inst.n_channels == 1024 and inst.channel[0] == first
        assert 500 < inst.area.max() < 900
        # redistribution rows are normalised probabilities for lines well inside the channels
        inside = (inst.e_mid > 0.3) & (inst.e_mid < 12.0)
        np.testing.assert_allclose(
            np.asarray(inst.matrix.sum(axis=1)).ravel()[inside], 1, atol=2e-3
        )
    assert not np.allclose(ref.area, tgt.area)


def test_resolution_is_ccd_like():
    fwhm_ev = 2.355 * 1e3 * resolution_sigma(TARGET, np.array([1.0, 6.0]))
    assert 60 < fwhm_ev[0] < 110 and 110 < fwhm_ev[1] < 170


def test_line_lands_in_its_channel(synthetic_pair):
    inst = Instrument.load(synthetic_pair["target_arf"], synthetic_pair["target_rmf"])
    flux = np.zeros(inst.n_energies)
    k = np.searchsorted(inst.e_mid, 3.0)
    flux[k] = 1.0
    counts = inst.fold(flux)
    centre = 0.5 * (inst.e_min + inst.e_max)
    assert abs(centre[counts.argmax()] - inst.e_mid[k]) < 0.02


def test_init_writes_a_loadable_project(tmp_path):
    out = run_cli("init", str(tmp_path / "p"))
    assert out.returncode == 0, out.stderr
    cfg = load_config(tmp_path / "p" / "config.toml")
    arf = read_arf(cfg.instruments.target.arf)
    assert arf.header["TELESCOP"] == "SYNTH-TGT"
    again = run_cli("init", str(tmp_path / "p"))
    assert again.returncode == 2 and "already exists" in again.stderr
    assert run_cli("init", str(tmp_path / "p"), "--force").returncode == 0
