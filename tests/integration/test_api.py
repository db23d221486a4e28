"""The Python API on arrays gives the numbers the CLI writes for the same jets in a file."""

import subprocess
import sys

import awkward as ak
import h5py
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import foundation
from foundation.cli import app
from foundation.data.canonical import write_jets
from foundation.data.tokens import TokenFile
from foundation.errors import InputError
from foundation.hub import load_bundle

JETS = 60  # 30 QCD, 30 top: a few batches with batch_size=16


@pytest.fixture(scope="module")
def sample(jets, tmp_path_factory):
    """(numpy (J, N, 4), mask (J, N), awkward records, the same jets written to a canonical file)."""
    picked = jets.subset(np.r_[0:30, 150:180])
    path = write_jets(tmp_path_factory.mktemp("api") / "sample.h5", picked)
    n = picked.mask.sum(1)
    flat = picked.constituents[picked.mask]  # (P, 4)
    records = ak.unflatten(ak.zip({name: flat[:, i] for i, name in enumerate(("E", "px", "py", "pz"))}), n)
    return picked.constituents, picked.mask, records, path


def _cli(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def test_embed_on_numpy_and_awkward_matches_the_cli(tiny_bundle, sample, tmp_path):
    constituents, mask, records, path = sample
    _cli("embed", "--model", tiny_bundle, "--data", path, "--out", tmp_path / "emb.h5", "--batch-size", 16)
    with h5py.File(tmp_path / "emb.h5") as f:
        expected, rows = f["embedding"][:], f["row"][:]
    assert np.array_equal(rows, np.arange(JETS))
    from_numpy = foundation.embed(tiny_bundle, constituents, mask, batch_size=16)
    from_awkward = foundation.embed(load_bundle(tiny_bundle), records)  # a loaded bundle, other batches
    assert from_numpy.shape == expected.shape == (JETS, from_numpy.shape[1])
    np.testing.assert_allclose(from_numpy, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(from_awkward, expected, rtol=1e-4, atol=1e-4)


def test_tag_on_numpy_and_awkward_matches_predict(tiny_tagger, sample, tmp_path):
    constituents, mask, records, path = sample
    _cli("predict", "--model", tiny_tagger, "--data", path, "--out", tmp_path / "scores.csv", "--batch-size", 16)
    table = pd.read_csv(tmp_path / "scores.csv")
    names = foundation.class_names(tiny_tagger)
    assert list(table.columns) == ["source_file", "row", *(f"score_{c}" for c in names)]
    assert (table["source_file"] == str(path)).all() and np.array_equal(table["row"], np.arange(JETS))
    expected = table[[f"score_{c}" for c in names]].to_numpy()
    np.testing.assert_allclose(foundation.tag(tiny_tagger, constituents, mask), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(foundation.tag(tiny_tagger, records), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("suffix", [".h5", ".parquet"])
def test_predict_writes_source_file_and_row_in_every_format(tiny_tagger, jet_files, tmp_path, suffix):
    out = tmp_path / f"scores{suffix}"
    files = ["--data", jet_files[0], jet_files[1]] if suffix == ".h5" else ["--data", jet_files[0], "--data", jet_files[1]]
    _cli("predict", "--model", tiny_tagger, *files, "--out", out, "--limit", 160)
    if suffix == ".h5":
        with h5py.File(out) as f:
            files, rows, top = f["source_file"].asstr()[:], f["row"][:], f["score_top"][:]
    else:
        table = pd.read_parquet(out)
        files, rows, top = table["source_file"].to_numpy(), table["row"].to_numpy(), table["score_top"].to_numpy()
    assert list(files[:150]) == [str(jet_files[0])] * 150 and list(files[150:]) == [str(jet_files[1])] * 10
    assert np.array_equal(rows, np.r_[0:150, 0:10]) and ((top >= 0) & (top <= 1)).all()
    assert [p.name for p in tmp_path.iterdir()] == [out.name]  # no temporary file left


def test_tokenize_matches_tokenizer_encode(tiny_tokenizer, tiny_bundle, sample, tmp_path):
    constituents, mask, records, path = sample
    _cli("tokenizer", "encode", "--tokenizer", tiny_tokenizer, "--data", path, "--out", tmp_path / "tokens.h5")
    expected = TokenFile(tmp_path / "tokens.h5").read(np.arange(JETS))
    ids, attention = foundation.tokenize(tiny_tokenizer, constituents, mask)
    assert np.array_equal(ids, expected["tokens"]) and np.array_equal(attention.sum(1), expected["length"])
    ids_awkward, _ = foundation.tokenize(tiny_bundle, records)  # a bundle's tokenizer, the same one
    assert np.array_equal(ids_awkward, ids)


def test_bad_arrays_are_named():
    with pytest.raises(InputError, match=r"jets: expected shape \(J, N, 4\)"):
        foundation.as_jet_arrays(np.zeros((3, 5)))
    with pytest.raises(InputError, match="mask: expected shape"):
        foundation.as_jet_arrays(np.zeros((3, 5, 4)), np.ones((3, 4), bool))
    with pytest.raises(InputError, match="missing"):
        foundation.as_jet_arrays(ak.Array([[{"E": 1.0, "px": 0.0}]]))


def test_import_foundation_is_light_and_registers_the_auto_classes(tiny_bundle):
    script = (
        "import sys, foundation\n"
        "assert 'torch' not in sys.modules, 'import foundation pulled in torch'\n"
        "from transformers import AutoModel\n"
        f"model = AutoModel.from_pretrained({str(tiny_bundle)!r})\n"
        "print(type(model).__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "JetTransformerModel"


def test_anomaly_scores_carry_the_columns_embeddings_have(tiny_bundle, jet_files, tmp_path):
    from foundation.pipelines.anomaly import score_file

    score_file(tiny_bundle, [str(p) for p in jet_files], tmp_path / "scores.h5", limit=160, batch_size=64)
    with h5py.File(tmp_path / "scores.h5") as f:
        assert "index" not in f
        files, rows = f["source_file"].asstr()[:], f["row"][:]
    assert list(files) == [str(jet_files[0])] * 150 + [str(jet_files[1])] * 10
    assert np.array_equal(rows, np.r_[0:150, 0:10])
