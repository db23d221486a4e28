import numpy as np
import torch
from torch.utils.data import DataLoader

from foundation.data.dataset import (
    BlockShuffleSampler,
    DataConfig,
    JetDataset,
    LengthGroupedSampler,
    build_splits,
    collate_batch,
)
from foundation.data.features import compute_features
from foundation.data.sources import JetCollection


def test_block_shuffle_is_a_reproducible_permutation():
    s = BlockShuffleSampler(103, items_per_block=4, seed=1)
    a = list(s)
    assert sorted(a) == list(range(103)) and a != list(range(103))
    assert list(s) == a
    s.set_epoch(1)
    assert list(s) != a and sorted(s) == list(range(103))


def test_length_grouped_batches_are_a_reproducible_permutation_of_similar_lengths():
    lengths = np.random.default_rng(0).integers(5, 120, size=1000)
    sampler = LengthGroupedSampler(lengths, batch_size=16, seed=3)
    order = list(sampler)
    assert sorted(order) == list(range(1000)) and order == list(LengthGroupedSampler(lengths, 16, seed=3))
    sampler.set_epoch(1)
    assert list(sampler) != order
    batches = lengths[order[: 1000 // 16 * 16]].reshape(-1, 16)  # (batches, 16)
    assert (batches.max(1) - batches.min(1)).mean() < 0.25 * (lengths.max() - lengths.min())


def test_each_optimizer_step_gets_batches_of_similar_length_on_every_process():
    """accelerate gives batch j to process j % 2: the two micro-batches of a step on 2 processes x 2
    accumulation steps come from one sorted run, so no process waits long for the slowest."""
    from accelerate.data_loader import BatchSamplerShard
    from torch.utils.data import BatchSampler

    lengths = np.random.default_rng(1).integers(5, 120, size=2000)
    processes, accumulation, batch = 2, 2, 16

    def step_longest(per_step: int) -> np.ndarray:
        sampler = LengthGroupedSampler(lengths, batch, seed=0, batches_per_step=per_step)
        shards = [list(BatchSamplerShard(BatchSampler(sampler, batch, drop_last=True), processes, rank)) for rank in range(processes)]
        steps = min(len(s) for s in shards) // accumulation
        # (steps, processes): the longest jet each process sees in each optimizer step
        return np.array([[max(lengths[i].max() for i in shard[k * accumulation : (k + 1) * accumulation]) for shard in shards] for k in range(steps)])

    aligned, independent = step_longest(processes * accumulation), step_longest(1)
    wait = lambda longest: (longest.max(1) - longest.min(1)).mean()  # noqa: E731
    assert wait(aligned) < 0.2 * wait(independent)
    assert sorted(LengthGroupedSampler(lengths, batch, seed=0, batches_per_step=4)) == list(range(2000))


def test_batches_hold_the_right_jets(jet_files, jets):
    collection = JetCollection.open(jet_files)
    ds = JetDataset(collection, np.arange(len(collection)), ["log_pt", "eta_rel", "phi_rel"], 64)
    loader = DataLoader(ds, batch_size=32, sampler=BlockShuffleSampler(len(ds), 4, 0), collate_fn=collate_batch, num_workers=2)
    seen = []
    expected = compute_features(jets, ["log_pt", "eta_rel", "phi_rel"])
    for batch in loader:
        idx = batch["index"].numpy()
        seen.append(idx)
        assert torch.equal(batch["mask"], torch.as_tensor(jets.mask[idx]))
        assert torch.allclose(batch["features"], torch.as_tensor(expected[idx]))
        assert torch.equal(batch["labels"], torch.as_tensor(jets.label[idx]))
    seen = np.concatenate(seen)
    assert sorted(seen.tolist()) == list(range(len(collection)))


def test_read_indices_handles_repeats_and_order(jet_files, jets):
    collection = JetCollection.open(jet_files)
    idx = [200, 3, 4, 5, 3, 299, 150, 149]
    got = collection.read_indices(idx)
    assert np.array_equal(got.constituents, jets.constituents[idx])


def test_splits_are_disjoint_complete_and_budgeted(jet_files):
    config = DataConfig(files=[str(p) for p in jet_files], max_particles=64, validation_fraction=0.2, test_fraction=0.1)
    s = build_splits(config)
    parts = [s.train.indices, s.validation.indices, s.test.indices]
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == len(joined) == 300
    assert len(s.validation) == 60 and len(s.test) == 30
    limited = build_splits(DataConfig(files=[str(p) for p in jet_files], max_particles=64, train_limit=25))
    assert len(limited.train) == 25 and set(limited.train.indices) <= set(s.train.indices) | set(limited.train.indices)
    assert np.array_equal(limited.validation.indices, build_splits(DataConfig(files=[str(p) for p in jet_files], max_particles=64)).validation.indices)


def test_padding_to_fewer_particles_keeps_the_hardest(jet_files):
    collection = JetCollection.open(jet_files)
    ds = JetDataset(collection, np.arange(10), ["log_pt"], 16)
    batch = ds.__getitems__(list(range(10)))
    full = collection.read(0, 10)
    assert batch["mask"].shape == (10, 16) and batch["mask"].all()
    assert np.allclose(batch["features"][..., 0], compute_features(full, ["log_pt"])[:, :16, 0])


def test_jets_read_into_memory_give_the_same_batches(jet_files):
    """data.in_memory_mib: a split that fits is read once; batches are those streamed from the files."""
    collection = JetCollection.open(jet_files)
    indices = np.random.default_rng(0).permutation(len(collection))[:100]
    streamed = JetDataset(collection, indices, ["log_pt", "eta_rel", "phi_rel"], 64)
    loaded = JetDataset(collection, indices, ["log_pt", "eta_rel", "phi_rel"], 64)
    assert not loaded.preload(limit_mib=0.01)  # too large for the limit: it streams
    assert loaded.preload(limit_mib=100)
    positions = [7, 3, 99, 3, 0]
    a, b = streamed.__getitems__(positions), loaded.__getitems__(positions)
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)


def test_test_files_alone_split_validation_off_the_training_files(jet_files, caplog):
    """With data.test_files but no validation_files, model selection must not run on the training
    jets (nor on the test jets): validation is split off the training files, and the log says so."""
    import logging

    with caplog.at_level(logging.INFO, logger="foundation.data.dataset"):
        splits = build_splits(DataConfig(files=[str(jet_files[0])], test_files=[str(jet_files[1])], max_particles=64, validation_fraction=0.2))
    train, validation = set(splits.train.indices), set(splits.validation.indices)
    assert splits.validation.collection is splits.train.collection and not train & validation
    assert len(validation) == 30 and len(train) == 120  # 20% of the 150 training-file jets
    assert splits.test.collection is not splits.train.collection and len(splits.test) == 150
    assert "validation: 30 jets split off the training files" in caplog.text
