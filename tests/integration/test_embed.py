"""`foundation embed`: both output formats join back to the jets, and a failed run leaves no file."""

import h5py
import numpy as np
import pandas as pd
import pytest

import foundation.pipelines.embed as embed_module
from foundation.data.sources import JetCollection
from foundation.pipelines.embed import embed


def test_parquet_rows_join_back_to_the_jets(tiny_bundle, jet_files, tmp_path):
    path = embed(tiny_bundle, jet_files, tmp_path / "emb.parquet", batch_size=64, progress=False)
    table = pd.read_parquet(path)
    labels = JetCollection.open(jet_files).labels()
    assert len(table) == len(labels)
    # source_file + row name each jet: QCD's 150 first, then top's.
    offset = np.where(table["source_file"].to_numpy() == str(jet_files[1]), 150, 0)
    assert set(table["source_file"]) == {str(p) for p in jet_files}
    assert np.array_equal(table["label"].to_numpy(), labels[offset + table["row"].to_numpy()])
    assert set(table["class_name"]) == {"qcd", "top"}
    assert np.isfinite(np.stack(table["embedding"].to_numpy())).all()


def test_per_particle_embeddings_cover_exactly_the_real_particles(tiny_bundle, jet_files, tmp_path):
    path = embed(tiny_bundle, jet_files, tmp_path / "emb.h5", per_particle=True, limit=40, progress=False)
    multiplicity = JetCollection.open(jet_files).multiplicities()
    with h5py.File(path) as f:
        mask, emb, index = f["mask"][:], f["embedding"][:], f["row"][:]
        assert set(f["source_file"].asstr()[:]) == {str(jet_files[0])}  # the first 40 jets: all in qcd.h5
    assert np.array_equal(mask.sum(1), np.minimum(multiplicity[index], mask.shape[1]))
    assert np.all(emb[~mask] == 0) and np.abs(emb[mask]).sum(-1).min() > 0


@pytest.mark.parametrize("suffix", [".h5", ".parquet"])
def test_a_failed_run_leaves_no_file(tiny_bundle, jet_files, tmp_path, monkeypatch, suffix):
    calls = []

    def failing_pool(hidden, mask):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("killed mid-run")
        return hidden.mean(1)

    monkeypatch.setattr(embed_module, "mean_pool", failing_pool)
    out = tmp_path / f"emb{suffix}"
    with pytest.raises(RuntimeError, match="killed mid-run"):
        embed(tiny_bundle, jet_files, out, batch_size=32, progress=False)
    assert list(tmp_path.iterdir()) == []
