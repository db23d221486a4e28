"""Public formats (top tagging HDF5, JetClass ROOT): round trips, detection, conversion, bad files."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from helpers.public_formats import JETCLASS_CLASSES, random_jets, write_jetclass_file, write_toptagging_file

from foundation.data.canonical import CanonicalSource, write_jets
from foundation.data.convert import convert
from foundation.data.formats.jetclass import JetClassSource
from foundation.data.formats.toptagging import TopTaggingSource
from foundation.data.jets import JetArrays
from foundation.data.sources import JetCollection, detect_format, open_source
from foundation.errors import DataFormatError

N = 6  # constituents per jet in the test files


def top_jets(num: int = 9, seed: int = 0) -> JetArrays:
    return random_jets(num, 4, ("qcd", "top"), seed=seed)


def jetclass_jets(num: int = 12, seed: int = 1) -> JetArrays:
    return random_jets(num, 5, JETCLASS_CLASSES, seed=seed, with_pid=True)


def assert_same(read: JetArrays, original: JetArrays, pid: bool = True) -> None:
    original = original.padded_to(read.max_particles)
    np.testing.assert_array_equal(read.mask, original.mask)
    np.testing.assert_array_equal(read.constituents, original.constituents)  # float32 in, float32 out
    np.testing.assert_array_equal(read.label, original.label)
    assert read.class_names == original.class_names
    if pid:
        np.testing.assert_array_equal(read.pid, original.pid)
        np.testing.assert_array_equal(read.charge, original.charge)


def assert_names(err: pytest.ExceptionInfo, path, field: str) -> None:
    message = str(err.value)
    assert str(path) in message, message
    assert field in message, message


# ------------------------------------------------------------------ round trips


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_toptagging_round_trip(tmp_path, fmt):
    jets = top_jets()
    ttv = np.arange(len(jets)) % 3
    path = write_toptagging_file(tmp_path / "top.h5", jets, fmt=fmt, n_constituents=N, ttv=ttv)
    source = TopTaggingSource(path)
    assert (len(source), source.max_particles, source.format_name) == (len(jets), N, "toptagging")
    assert source.class_names == ["qcd", "top"]
    read = source.read(0, len(source))
    assert_same(read, jets)
    assert read.constituents.dtype == np.float32 and read.pid.dtype == np.int32
    assert not read.pid.any() and not read.charge.any()
    np.testing.assert_array_equal(source.ttv(), ttv)
    np.testing.assert_array_equal(source.ttv(2, 5), ttv[2:5])
    np.testing.assert_array_equal(source.read_labels(), jets.label)


@pytest.mark.parametrize("fmt", ["fixed", "table"])
def test_toptagging_lazy_read_returns_the_right_rows(tmp_path, fmt):
    jets = top_jets(20)
    source = TopTaggingSource(write_toptagging_file(tmp_path / "top.h5", jets, fmt=fmt, n_constituents=N))
    assert_same(source.read(7, 13), jets.subset(slice(7, 13)))
    assert len(source.read(18, 100)) == 2


def test_toptagging_sorts_constituents_by_pt(tmp_path):
    jets = top_jets()
    shuffled = jets.subset(np.arange(len(jets)))  # a copy
    rng = np.random.default_rng(3)
    for j in range(len(jets)):  # shuffle the real constituents of each jet
        n = int(jets.mask[j].sum())
        perm = rng.permutation(n)
        shuffled.constituents[j, :n] = jets.constituents[j, perm]
    read = TopTaggingSource(write_toptagging_file(tmp_path / "top.h5", shuffled, n_constituents=N)).read(
        0, len(jets)
    )
    assert_same(read, jets)


def shuffle_constituents(jets: JetArrays, seed: int = 3) -> JetArrays:
    """A copy with each jet's real constituents (and their charge and id) in random order."""
    shuffled = jets.subset(np.arange(len(jets)))
    rng = np.random.default_rng(seed)
    for j in range(len(jets)):
        perm = rng.permutation(int(jets.mask[j].sum()))
        for name in ("constituents", "charge", "pid"):
            getattr(shuffled, name)[j, : len(perm)] = getattr(jets, name)[j, perm]
    return shuffled


def test_canonical_files_are_read_and_written_pt_ordered(tmp_path):
    jets = jetclass_jets()  # pT-ordered, with charge and id
    assert jets.sorted_by_pt() is jets
    shuffled = shuffle_constituents(jets)
    assert_same(shuffled.sorted_by_pt(), jets)
    # a file written elsewhere, unordered: read back in order, charge and id following their particle
    path = tmp_path / "elsewhere.h5"
    write_jets(path, jets)
    with h5py.File(path, "a") as f:
        for name in ("constituents", "charge", "pid"):
            f[name][...] = getattr(shuffled, name)
    assert_same(CanonicalSource(path).read(0, len(jets)), jets)
    # and what the platform writes is ordered
    assert_same(CanonicalSource(write_jets(tmp_path / "ours.h5", shuffled)).read(0, len(jets)), jets)


def test_jetclass_round_trip(tmp_path):
    jets = jetclass_jets()
    source = JetClassSource(write_jetclass_file(tmp_path / "jc.root", jets), max_particles=8)
    assert (len(source), source.format_name, source.class_names) == (len(jets), "jetclass", JETCLASS_CLASSES)
    read = source.read(0, len(source))
    assert read.max_particles == 8
    assert_same(read, jets)
    np.testing.assert_array_equal(source.read_labels(), jets.label)


def test_jetclass_lazy_read_and_cut(tmp_path):
    jets = jetclass_jets(15)
    source = JetClassSource(write_jetclass_file(tmp_path / "jc.root", jets), max_particles=3)
    read = source.read(4, 11)
    assert_same(read, jets.subset(slice(4, 11)).padded_to(3))  # the hardest three kept


# ------------------------------------------------------------------ detection, collections, conversion


def test_detect_format_picks_each_reader(tmp_path):
    top = write_toptagging_file(tmp_path / "top.h5", top_jets(), n_constituents=N)
    table = write_toptagging_file(tmp_path / "top_table.h5", top_jets(), fmt="table", n_constituents=N)
    jc = write_jetclass_file(tmp_path / "jc.root", jetclass_jets())
    canon = write_jets(tmp_path / "canon.h5", top_jets())
    assert [detect_format(p) for p in (top, table, jc, canon)] == [
        "toptagging",
        "toptagging",
        "jetclass",
        "canonical",
    ]
    assert isinstance(open_source(top), TopTaggingSource)
    assert isinstance(open_source(jc), JetClassSource)
    assert isinstance(open_source(canon), CanonicalSource)


def test_collection_over_mixed_shards(tmp_path):
    a, b, c = top_jets(5, seed=1), top_jets(7, seed=2), top_jets(4, seed=3)
    files = [
        write_toptagging_file(tmp_path / "a.h5", a, n_constituents=N),
        write_jets(tmp_path / "b.h5", b.padded_to(N)),
        write_toptagging_file(tmp_path / "c.h5", c, fmt="table", n_constituents=N),
    ]
    collection = JetCollection.open(tmp_path)
    assert collection.paths == files and len(collection) == 16
    assert_same(collection.read(3, 14), JetArrays.concatenate([a, b, c]).subset(slice(3, 14)), pid=False)
    np.testing.assert_array_equal(collection.labels(), np.concatenate([a.label, b.label, c.label]))


def test_convert_toptagging_to_canonical(tmp_path):
    jets = top_jets(11)
    src = write_toptagging_file(tmp_path / "top.h5", jets, n_constituents=N)
    [out] = convert(src, tmp_path / "out" / "canon.h5", chunk_jets=4, progress=False)
    canon = CanonicalSource(out)
    assert canon.max_particles == N
    assert_same(canon.read(0, len(canon)), jets)
    assert canon.metadata["converted_from"] == [{"path": str(src), "format": "toptagging", "jets": 11}]


def test_convert_jetclass_to_canonical_shards(tmp_path):
    jets = jetclass_jets(10)
    src = write_jetclass_file(tmp_path / "jc.root", jets)
    paths = convert([src], tmp_path / "shards", max_particles=5, chunk_jets=3, shard_jets=4, progress=False)
    assert [p.name for p in paths] == ["shard-00000.h5", "shard-00001.h5", "shard-00002.h5"]
    back = JetCollection.open(tmp_path / "shards")
    assert [len(s) for s in back.sources] == [4, 4, 2]
    assert back.class_names == JETCLASS_CLASSES
    assert_same(back.read_all(), jets)
    assert back.sources[0].metadata["converted_from"][0]["format"] == "jetclass"


def test_convert_cuts_to_max_particles(tmp_path):
    jets = top_jets(6)
    src = write_toptagging_file(tmp_path / "top.h5", jets, n_constituents=N)
    [out] = convert(src, tmp_path / "canon.h5", max_particles=2, progress=False)
    assert_same(CanonicalSource(out).read(0, 6), jets.padded_to(2))


# ------------------------------------------------------------------ bad input


def test_missing_file(tmp_path):
    path = tmp_path / "nope.h5"
    with pytest.raises(DataFormatError, match="does not exist") as err:
        JetCollection.open(path)
    assert_names(err, path, "nope.h5")


def test_unknown_format_text_file(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("just some text\n")
    with pytest.raises(DataFormatError, match="unknown format") as err:
        open_source(path)
    assert_names(err, path, "unknown format")


def test_hdf5_of_neither_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.zeros(3)
    with pytest.raises(DataFormatError, match="unknown HDF5 layout") as err:
        open_source(path)
    assert_names(err, path, "layout")


def test_pandas_file_without_table_key(tmp_path):
    path = write_toptagging_file(tmp_path / "top.h5", top_jets(), n_constituents=N, key="jets")
    with pytest.raises(DataFormatError) as err:
        open_source(path)
    assert_names(err, path, "field 'table'")


def test_toptagging_missing_label_column(tmp_path):
    path = write_toptagging_file(
        tmp_path / "top.h5", top_jets(), n_constituents=N, drop_columns=["is_signal_new"]
    )
    with pytest.raises(DataFormatError) as err:
        TopTaggingSource(path)
    assert_names(err, path, "field 'is_signal_new'")


def test_toptagging_missing_px_columns(tmp_path):
    columns = [f"PX_{i}" for i in range(N)]
    path = write_toptagging_file(tmp_path / "top.h5", top_jets(), n_constituents=N, drop_columns=columns)
    with pytest.raises(DataFormatError) as err:
        TopTaggingSource(path)
    assert_names(err, path, "field 'PX_*'")


def test_toptagging_incomplete_column_set(tmp_path):
    path = write_toptagging_file(tmp_path / "top.h5", top_jets(), n_constituents=N, drop_columns=["PY_3"])
    with pytest.raises(DataFormatError) as err:
        TopTaggingSource(path)
    assert_names(err, path, "field 'PY_3'")


def test_jetclass_missing_branch(tmp_path):
    path = write_jetclass_file(tmp_path / "jc.root", jetclass_jets(), drop_branches=["part_isPhoton"])
    with pytest.raises(DataFormatError) as err:
        open_source(path)
    assert_names(err, path, "field 'part_isPhoton'")


def test_jetclass_missing_tree(tmp_path):
    path = write_jetclass_file(tmp_path / "jc.root", jetclass_jets(), tree_name="Events")
    with pytest.raises(DataFormatError) as err:
        JetClassSource(path)
    assert_names(err, path, "field 'tree'")


def test_jetclass_not_a_root_file(tmp_path):
    path = tmp_path / "fake.root"
    path.write_text("root of the problem: a text file that starts like a ROOT file\n")
    with pytest.raises(DataFormatError, match="ROOT") as err:
        open_source(path)
    assert_names(err, path, "cannot be read")


def test_nan_in_momenta(tmp_path):
    jets = top_jets()
    jets.constituents[2, 1, 2] = np.nan  # PY of the second constituent of jet 2
    path = write_toptagging_file(tmp_path / "top.h5", jets, n_constituents=N)
    with pytest.raises(DataFormatError, match="NaN") as err:
        TopTaggingSource(path).read(0, len(jets))
    assert_names(err, path, "field 'PY_")


def test_nan_in_jetclass_momenta(tmp_path):
    jets = jetclass_jets()
    jets.constituents[3, 0, 1] = np.inf
    path = write_jetclass_file(tmp_path / "jc.root", jets)
    with pytest.raises(DataFormatError, match="jet 3 has NaN or inf momenta") as err:
        JetClassSource(path).read(0, len(jets))
    assert_names(err, path, "field 'constituents'")


def test_jet_with_zero_constituents(tmp_path):
    jets = top_jets()
    jets.constituents[4] = 0
    jets.mask[4] = False
    path = write_toptagging_file(tmp_path / "top.h5", jets, n_constituents=N)
    source = TopTaggingSource(path)
    assert len(source.read(0, 4)) == 4  # rows before the bad one read fine
    with pytest.raises(DataFormatError, match="jet 1 has zero constituents") as err:
        source.read(3, 6)
    assert_names(err, path, "field 'mask'")
    assert "jets 3..6" in str(err.value)


def test_label_out_of_range(tmp_path):
    jets = top_jets()
    jets.label[5] = 2
    path = write_toptagging_file(tmp_path / "top.h5", jets, n_constituents=N)
    with pytest.raises(DataFormatError, match="row 5") as err:
        TopTaggingSource(path).read(0, len(jets))
    assert_names(err, path, "field 'is_signal_new'")


def test_canonical_label_out_of_range(tmp_path):
    jets = top_jets()
    jets.label[5] = 7
    path = write_jets(tmp_path / "canon.h5", jets)
    with pytest.raises(DataFormatError, match="label 7 of jet 5") as err:
        CanonicalSource(path).read(0, len(jets))
    assert_names(err, path, "field 'label'")


def test_jetclass_label_not_one_hot(tmp_path):
    jets = jetclass_jets()
    onehot = np.eye(10, dtype=bool)[jets.label]
    onehot[6, 0] = True  # two classes at once
    path = write_jetclass_file(tmp_path / "jc.root", jets, onehot=onehot)
    source = JetClassSource(path)
    with pytest.raises(DataFormatError, match="entry 6 is not one-hot") as err:
        source.read(0, len(jets))
    assert_names(err, path, "field 'label_*'")
    onehot[6] = False  # no class at all
    write_jetclass_file(path, jets, onehot=onehot)
    with pytest.raises(DataFormatError, match="entry 6 is not one-hot"):
        JetClassSource(path).read_labels()


def test_canonical_wrong_shapes(tmp_path):
    path = write_jets(tmp_path / "jets.h5", random_jets(4, 6))
    with h5py.File(path, "a") as f:
        del f["mask"]
        f["mask"] = np.ones((4, 5), bool)  # one particle short of the constituents
    with pytest.raises(DataFormatError) as err:
        CanonicalSource(path)
    assert str(path) in str(err.value) and "mask" in str(err.value) and "(4, 6)" in str(err.value)
