"""Feeding jets of any file to a model bundle: the features, scaling and tokens it was trained on."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from foundation.data.dataset import JetDataset
from foundation.data.sources import JetCollection
from foundation.models.inputs import JetSequenceCollator, dataset_feature_names
from foundation.training.inputs import model_inputs


@dataclass
class BundleInputs:
    """How a bundle's model wants its jets."""

    feature_names: list[str]  # what the jet dataset computes
    collator: JetSequenceCollator
    max_particles: int


def bundle_inputs(
    tokenizer, data_config: dict, particle_features: list[str] | None = None, mean=None, std=None, kinematics: bool = False
) -> BundleInputs:
    """kinematics: batches also hold particle_kinematics, for a model with interaction attention."""
    particle_features = list(data_config.get("particle_features") or []) if particle_features is None else particle_features
    if mean is None and particle_features:
        mean, std = data_config.get("particle_feature_mean"), data_config.get("particle_feature_std")
    names = dataset_feature_names(tokenizer.config.feature_names, particle_features, kinematics)
    collator = JetSequenceCollator(tokenizer, names, particle_features, mean, std, kinematics=kinematics)
    return BundleInputs(names, collator, tokenizer.config.max_particles)


def jet_dataset(data, inputs: BundleInputs, limit: int | None = None, spread: bool = False) -> JetDataset:
    """`data`: file(s) or a JetCollection (arrays in memory). The first `limit` jets of `data`, or with `spread` that many spaced evenly through it
    (a file written class by class then gives every class its share)."""
    collection = data if isinstance(data, JetCollection) else JetCollection.open(data, max_particles=inputs.max_particles)
    n = len(collection) if limit is None else min(limit, len(collection))
    indices = np.linspace(0, len(collection) - 1, n).round().astype(int) if spread else np.arange(n)
    return JetDataset(collection, indices, inputs.feature_names, inputs.max_particles)


def iterate_batches(dataset: JetDataset, inputs: BundleInputs, batch_size: int = 256, progress: bool = True, desc: str = "jets", device=None) -> Iterator[dict]:
    """Batches of backbone inputs, in file order, on `device`, with a progress bar in jets/s."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=inputs.collator)
    with tqdm(total=len(dataset), unit="jet", desc=desc, disable=not progress) as bar:
        for batch in loader:
            yield to_device(batch, device) if device is not None else batch
            bar.update(len(batch["labels"]))


def inference_device() -> torch.device:
    """The GPU when there is one: inference commands (embed, score, generate) run there."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def to_device(batch: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


@torch.no_grad()
def predict(model, loader, accelerator, keys=("logits",)) -> dict[str, np.ndarray]:
    """Run a prepared model over a prepared loader; gather outputs, labels and indices (every jet once)."""
    model.eval()
    out: dict[str, list] = {k: [] for k in (*keys, "labels", "index")}
    for batch in loader:
        result = model(**model_inputs(model, batch))
        gathered = accelerator.gather_for_metrics({**{k: result[k].float() for k in keys}, "labels": batch["labels"], "index": batch["index"]})
        for k, v in gathered.items():
            out[k].append(v.cpu().numpy())
    model.train()
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in out.items()}
