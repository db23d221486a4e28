"""Torch datasets and loaders over jet files of any format, read lazily in blocks.

Memory stays constant in the size of the data: a batch reads only its own jets, as contiguous
runs, from the shard files. Shuffling permutes small blocks of consecutive jets (and the jets
within each batch), which keeps reads contiguous and batches mixed across files and classes.
Across distributed ranks, accelerate shards the batches, so ranks see disjoint jets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from foundation.config import check
from foundation.data.features import FEATURES, compute_features
from foundation.data.sources import JetCollection
from foundation.errors import InputError

logger = logging.getLogger(__name__)


@dataclass
class GeneratedDataConfig:
    """The built-in default data: generated top and QCD jets, cached under checkpoints/data/."""

    jets_per_class: int = 2000  # top and QCD jets each
    seed: int = 1  # generation seed: the same seed gives the same jets, whatever the number of workers
    workers: int = 0  # 0: one per CPU core
    max_particles: int = 128  # constituents kept per jet, hardest first

    def __post_init__(self):
        check(self.jets_per_class > 0, "jets_per_class", "must be positive")
        check(self.workers >= 0, "workers", "must be >= 0")
        check(self.max_particles > 0, "max_particles", "must be positive")


@dataclass
class DataConfig:
    """Which jets, which features, and how they are split (the `data:` section of every recipe)."""

    RENAMED_KEYS: ClassVar[dict[str, str]] = {"block_size": "shuffle_block_jets"}  # old recipes still load

    files: str | list[str] | None = None  # any supported format; None: the generated default set
    validation_files: str | list[str] | None = None  # the validation jets; None: validation_fraction split off `files`
    test_files: str | list[str] | None = None  # the test jets; None: test_fraction split off `files` (or validation_files if given)
    generated: GeneratedDataConfig = field(default_factory=GeneratedDataConfig)  # the default set, when files is None
    # Particle features by name (foundation/data/features.py, FEATURES); the tokenizer's inputs.
    # Pretraining and fine-tuning take them from the tokenizer instead.
    features: list[str] = field(default_factory=lambda: ["log_pt", "eta_rel", "phi_rel"])
    max_particles: int = 128  # constituents per jet, hardest first (longer jets are cut)
    validation_fraction: float = 0.1  # of the jets, when validation_files is not given (also with test_files alone)
    test_fraction: float = 0.1  # of the jets, when test_files is not given
    split_seed: int = 0  # seed of the random split (independent of training.seed, so splits agree)
    train_limit: int | None = None  # use only this many training jets (label budgets)
    classes: list[str] | None = None  # keep only jets of these classes (e.g. [qcd] for a background model)
    shuffle_block_jets: int = 4  # consecutive jets read together when shuffling (small: batches stay mixed)
    num_workers: int = 0  # DataLoader worker processes (0: read in the training process)
    # Read each split's jets into memory once when they fit in this many MiB (0: always stream from
    # the files). Shuffled batches otherwise cost many small reads: ~75 ms a 64-jet batch, on the
    # critical path of every training step. Larger sets stream, so memory never grows with the data.
    in_memory_mib: int = 2048

    def __post_init__(self):
        unknown = [f for f in self.features if f not in FEATURES]
        check(not unknown, "features", f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
        check(len(self.features) > 0, "features", "choose at least one feature")
        check(self.max_particles > 0, "max_particles", "must be positive")
        check(0 <= self.validation_fraction < 1, "validation_fraction", "must be in [0, 1)")
        check(0 <= self.test_fraction < 1, "test_fraction", "must be in [0, 1)")
        check(self.validation_fraction + self.test_fraction < 1, "test_fraction", "validation + test must leave training jets")
        check(self.train_limit is None or self.train_limit > 0, "train_limit", "must be positive")
        check(self.shuffle_block_jets > 0, "shuffle_block_jets", "must be positive")
        check(self.num_workers >= 0, "num_workers", "must be >= 0")
        check(self.in_memory_mib >= 0, "in_memory_mib", "must be >= 0 (0: always stream)")


# constituents (4 x float32), mask, charge (int8), pid (int32)
_BYTES_PER_PARTICLE = 4 * 4 + 1 + 1 + 4


class JetDataset(Dataset):
    """Jets of a collection at the given indices, as features + mask + label.

    `__getitems__` reads a whole batch at once (torch's DataLoader uses it when present).
    """

    def __init__(
        self,
        collection: JetCollection,
        indices: np.ndarray,
        feature_names: Sequence[str],
        max_particles: int,
        include_momenta: bool = False,
    ):
        self.collection = collection
        self.indices = np.asarray(indices, dtype=np.int64)
        self.feature_names = list(feature_names)
        self.max_particles = max_particles
        self.include_momenta = include_momenta  # also (B, N, 4) px, py, pz, E (models with pair features)
        self._loaded = None  # the jets at `indices`, once preload() read them

    @property
    def class_names(self) -> list[str]:
        return self.collection.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def preload(self, limit_mib: float) -> bool:
        """Read all jets of this dataset into memory if they take at most `limit_mib` MiB; True if it did.
        Batches then come from memory, the same jets in the same order as read from the files."""
        if self._loaded is not None:
            return True
        size_mib = len(self.indices) * self.max_particles * _BYTES_PER_PARTICLE / 2**20
        if not len(self.indices) or size_mib > limit_mib:
            return False
        self._loaded = self.collection.read_indices(self.indices).padded_to(self.max_particles)
        logger.info("%d jets in memory (%.0f MiB)", len(self.indices), size_mib)
        return True

    def __getitems__(self, positions: Sequence[int]) -> dict[str, np.ndarray]:
        positions = np.asarray(positions, dtype=np.int64)
        index = self.indices[positions]
        if self._loaded is not None:
            jets = self._loaded.subset(positions)
        else:
            jets = self.collection.read_indices(index).padded_to(self.max_particles)
        batch = {
            "features": compute_features(jets, self.feature_names),  # (B, N, F)
            "mask": jets.mask,  # (B, N)
            "labels": jets.label,  # (B,)
            "index": index,  # (B,) position in the whole collection, to join results back
        }
        if self.include_momenta:
            batch["momenta"] = jets.constituents[..., [1, 2, 3, 0]]  # (B, N, 4) px, py, pz, E
        return batch

    def __getitem__(self, position: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}

    def lengths(self) -> np.ndarray:
        """(J,) real particles per jet (at most max_particles), for length-grouped batches."""
        return np.minimum(self.collection.multiplicities()[self.indices], self.max_particles)

    def read_jets(self, limit: int | None = None):
        """The raw jets of this dataset (for evaluation of kinematics), in dataset order."""
        take = self.indices if limit is None else self.indices[:limit]
        return self.collection.read_indices(take).padded_to(self.max_particles)


def collate_batch(batch) -> dict[str, torch.Tensor]:
    """Numpy batch (from __getitems__) or list of single items -> dict of tensors.

    Jets are cut to the longest jet of the batch: trailing padding is dead compute (padded
    particles are masked everywhere, so results do not change).
    """
    if isinstance(batch, dict):
        out = {k: torch.as_tensor(v) for k, v in batch.items()}
    else:
        out = {k: torch.as_tensor(np.stack([item[k] for item in batch])) for k in batch[0]}
    if "mask" in out and out["mask"].ndim == 2:
        longest = max(int(out["mask"].sum(1).max()), 1)
        out["mask"] = out["mask"][:, :longest]
        for key in ("features", "momenta"):
            if key in out:
                out[key] = out[key][:, :longest]
    return out


class BlockShuffleSampler(Sampler[int]):
    """A permutation of 0..n-1 that keeps blocks of `items_per_block` consecutive items together.

    Deterministic for (seed, epoch); call `set_epoch` each epoch.
    """

    def __init__(self, num_items: int, items_per_block: int = 32, seed: int = 0, shuffle: bool = True):
        self.num_items = num_items
        self.items_per_block = items_per_block
        self.seed = seed
        self.shuffle = shuffle
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_items

    def __iter__(self) -> Iterator[int]:
        if not self.shuffle:
            yield from range(self.num_items)
            return
        rng = np.random.default_rng([self.seed, self.epoch])
        starts = np.arange(0, self.num_items, self.items_per_block)
        rng.shuffle(starts)
        order = np.concatenate([np.arange(s, min(s + self.items_per_block, self.num_items)) for s in starts])
        yield from order.tolist()


def feature_statistics(dataset: JetDataset, num_jets: int = 5000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std of each feature over the real particles of a random sample of jets."""
    rng = np.random.default_rng(seed)
    take = np.sort(rng.choice(len(dataset), min(num_jets, len(dataset)), replace=False))
    batch = dataset.__getitems__(take.tolist())
    valid = batch["features"][batch["mask"]]  # (P, F)
    return valid.mean(axis=0), valid.std(axis=0)


class LengthGroupedSampler(Sampler[int]):
    """Batches of jets with similar multiplicity, in random order.

    Each chunk of about `group_batches` batches of a random permutation is sorted by length and
    cut into batches, and the batches are shuffled. With batches cut to their longest jet, padding
    (and its attention cost, which grows with length squared) mostly disappears. Deterministic
    for (seed, epoch). `batch_size` must be the DataLoader's (per-process micro) batch size.

    `batches_per_step` (processes x gradient-accumulation steps) keeps that many consecutive
    sorted batches together through the shuffle. accelerate hands batch j to process j % processes,
    so one optimizer step's micro-batches, on every process, then have about the same length: the
    processes of a step wait little on each other at the gradient all-reduce. With independent
    lengths the slowest process sets the pace (about 20-28% lost on 2 processes with generated jets).
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, seed: int = 0, group_batches: int = 50, batches_per_step: int = 1):
        self.lengths = np.asarray(lengths)
        self.batch_size = batch_size
        self.seed = seed
        self.batches_per_step = batches_per_step
        # sorted chunks hold whole steps, so no step straddles two chunks
        self.group_batches = max(1, round(group_batches / batches_per_step)) * batches_per_step
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(len(self.lengths))
        size, per_step = self.batch_size, self.batches_per_step
        full = len(order) // size * size
        batches = []
        for start in range(0, full, size * self.group_batches):
            chunk = order[start : min(start + size * self.group_batches, full)]
            chunk = chunk[np.argsort(-self.lengths[chunk], kind="stable")]
            batches += [chunk[i : i + size] for i in range(0, len(chunk), size)]
        whole = len(batches) // per_step * per_step
        steps = [batches[i : i + per_step] for i in range(0, whole, per_step)]  # (steps, per_step) batches
        rng.shuffle(steps)
        batches = [batch for step in steps for batch in step] + batches[whole:]  # an incomplete step last
        if full < len(order):
            batches.append(order[full:])  # the partial batch last (dropped when drop_last)
        yield from np.concatenate(batches).tolist() if batches else []


@dataclass
class DataSplits:
    train: JetDataset
    validation: JetDataset
    test: JetDataset

    @property
    def class_names(self) -> list[str]:
        return self.train.class_names


def _split_indices(n: int, validation_fraction: float, test_fraction: float, seed: int):
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(round(n * test_fraction))
    n_val = int(round(n * validation_fraction))
    test, val, train = order[:n_test], order[n_test : n_test + n_val], order[n_test + n_val :]
    # Sorted indices read faster (contiguous runs); the sampler shuffles anyway.
    return np.sort(train), np.sort(val), np.sort(test)


def _only_classes(dataset: JetDataset, keep: list[int]) -> JetDataset:
    labels = dataset.collection.labels()[dataset.indices]
    return JetDataset(dataset.collection, dataset.indices[np.isin(labels, keep)], dataset.feature_names, dataset.max_particles)


def label_budget_positions(count: int, budget: int, split_seed: int) -> np.ndarray:
    """A label budget (data.train_limit): sorted positions of `budget` of `count` training jets, a
    random but reproducible subset (generator seed split_seed + 1)."""
    return np.sort(np.random.default_rng(split_seed + 1).choice(count, budget, replace=False))


def build_splits(config: DataConfig, data_root: str | None = None) -> DataSplits:
    """Open the configured files (generating the default set if none) and split them."""
    from foundation.data.defaults import default_jet_files

    files = config.files if config.files is not None else default_jet_files(config.generated, root=data_root)
    collection = JetCollection.open(files, max_particles=config.max_particles)
    names, n = config.features, config.max_particles
    if config.validation_files is None and config.test_files is not None:
        # Validation (model selection) is split off the training files: never the training jets
        # themselves, never the test jets.
        tr, va, _ = _split_indices(len(collection), config.validation_fraction, 0.0, config.split_seed)
        train, validation = (JetDataset(collection, idx, names, n) for idx in (tr, va))
        test_c = JetCollection.open(config.test_files, max_particles=n)
        test = JetDataset(test_c, np.arange(len(test_c)), names, n)
        logger.info("validation: %d jets split off the training files (data.validation_fraction %g, data.split_seed %d); test: data.test_files",
                    len(va), config.validation_fraction, config.split_seed)
    elif config.validation_files is not None:
        train = JetDataset(collection, np.arange(len(collection)), names, n)
        val_c = JetCollection.open(config.validation_files, max_particles=n)
        test_c = JetCollection.open(config.test_files or config.validation_files, max_particles=n)
        validation = JetDataset(val_c, np.arange(len(val_c)), names, n)
        test = JetDataset(test_c, np.arange(len(test_c)), names, n)
    else:
        tr, va, te = _split_indices(len(collection), config.validation_fraction, config.test_fraction, config.split_seed)
        train, validation, test = (JetDataset(collection, idx, names, n) for idx in (tr, va, te))
    if config.classes is not None:
        unknown = [c for c in config.classes if c not in collection.class_names]
        if unknown:
            raise InputError(f"data.classes: {unknown} not among the data's classes {collection.class_names}")
        keep = [collection.class_names.index(c) for c in config.classes]
        train, validation, test = (_only_classes(d, keep) for d in (train, validation, test))
    if config.train_limit is not None and config.train_limit < len(train):
        keep = label_budget_positions(len(train), config.train_limit, config.split_seed)
        train = JetDataset(train.collection, np.sort(train.indices[keep]), names, n)
    logger.info("data: %d train, %d validation, %d test jets; classes %s", len(train), len(validation), len(test), collection.class_names)
    return DataSplits(train, validation, test)
