"""Generated jets must be physics: top mass peak, QCD falling spectrum, the selection applied."""

import json

import h5py
import numpy as np

from foundation.data.canonical import CanonicalSource
from foundation.data.generation import GeneratorConfig, generate
from foundation.data.jets import jet_kinematics


def test_top_jets_peak_at_the_top_mass(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    top_mass = kin["mass"][jets.label == 1]
    assert 160 < np.median(top_mass) < 190
    assert np.mean((top_mass > 140) & (top_mass < 210)) > 0.6


def test_qcd_jets_have_a_falling_mass_spectrum(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    qcd_mass = kin["mass"][jets.label == 0]
    assert np.median(qcd_mass) < 110
    counts, _ = np.histogram(qcd_mass, bins=[40, 90, 140, 190, 240])
    assert counts[0] > counts[2] > counts[3]


def test_selection_and_ordering(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    # The selection is on the full jet; kept constituents (64 of them at most) carry nearly all its pT.
    assert np.all(kin["pt"] < 650.5) and np.all(kin["pt"] > 500)
    assert np.mean(kin["pt"] > 550) > 0.9
    assert np.all(np.abs(kin["eta"]) < 2.05)
    c = jets.constituents
    pt = np.hypot(c[..., 1], c[..., 2])
    pt = np.where(jets.mask, pt, -1)
    assert np.all(np.diff(pt, axis=1) <= 1e-3), "constituents must be pT-ordered"
    assert np.all(jets.mask[:, 0]) and np.all(jets.mask.sum(1) >= 5)
    charged = jets.charge[jets.mask] != 0
    assert 0.3 < charged.mean() < 0.9, "about 2/3 of visible particles are charged"
    assert set(np.unique(np.abs(jets.pid[jets.mask]))) >= {22, 211}


def test_same_seed_same_jets_whatever_the_worker_count(tmp_path):
    config = GeneratorConfig(process="qcd", max_particles=32)
    a = generate(config, 12, tmp_path / "a.h5", seed=3, workers=1, chunk_jets=6, progress=False)
    b = generate(config, 12, tmp_path / "b.h5", seed=3, workers=2, chunk_jets=6, progress=False)
    c = generate(config, 12, tmp_path / "c.h5", seed=4, workers=1, chunk_jets=6, progress=False)
    ja, jb, jc = (CanonicalSource(p).read(0, 12) for p in (a, b, c))
    assert np.array_equal(ja.constituents, jb.constituents)
    assert not np.array_equal(ja.constituents, jc.constituents)


def test_file_records_settings_seed_and_versions(jet_files):
    with h5py.File(jet_files[1], "r") as f:
        meta = json.loads(f.attrs["metadata"])
        assert f.attrs["format"] == "foundation-jets"
        assert json.loads(f.attrs["class_names"]) == ["qcd", "top"]
    assert meta["seed"] == 7
    assert meta["generator"]["process"] == "top"
    assert meta["generator"]["jet_radius"] == 0.8
    assert "pythia8mc" in meta["versions"] and "fastjet" in meta["versions"]
    assert any("Top:gg2ttbar" in s for s in meta["pythia_settings"])
