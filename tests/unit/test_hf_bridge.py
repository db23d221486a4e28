"""Jets through Hugging Face `datasets` and back are unchanged."""

import numpy as np

from foundation.data.canonical import CanonicalSource
from foundation.data.hf import from_hf_dataset, to_hf_dataset


def test_round_trip_through_datasets(jet_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = to_hf_dataset(jet_files, limit=20)
    assert len(ds) == 20 and ds.features["label"].names == ["qcd", "top"]
    first = ds[0]
    original = CanonicalSource(jet_files[0]).read(0, 20)
    assert len(first["constituents"]) == int(original.mask[0].sum())
    out = from_hf_dataset(ds, tmp_path / "back.h5", max_particles=64)
    back = CanonicalSource(out).read(0, 20)
    assert np.array_equal(back.mask, original.mask)
    assert np.allclose(back.constituents, original.constituents)
    assert np.array_equal(back.pid, original.pid) and np.array_equal(back.label, original.label)


def test_unordered_rows_keep_their_hardest_particles_in_pt_order(jet_files, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))
    ds = to_hf_dataset(jet_files, limit=5)
    rng = np.random.default_rng(0)

    def shuffle(row):  # the same permutation for each particle's momentum, charge and id
        perm = rng.permutation(len(row["constituents"]))
        return {k: [row[k][i] for i in perm] for k in ("constituents", "charge", "pid")}

    shuffled = ds.map(shuffle)
    keep = 10
    back = CanonicalSource(from_hf_dataset(shuffled, tmp_path / "back.h5", max_particles=keep)).read(0, 5)
    original = CanonicalSource(jet_files[0]).read(0, 5).padded_to(keep)  # pT-ordered: its first 10 are the hardest
    assert np.array_equal(back.mask, original.mask)
    assert np.allclose(back.constituents, original.constituents)
    assert np.array_equal(back.pid, original.pid) and np.array_equal(back.charge, original.charge)
