"""Batches of jets -> backbone inputs: token sequences and aligned particle features."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from foundation.data.dataset import collate_batch


def trim_to_longest(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Cut the sequence axis to the longest jet of the batch: padding beyond it is dead compute.
    Positions are absolute, so the result is the same as with the full length."""
    length = int(batch["attention_mask"].sum(1).max())
    for key in ("input_ids", "attention_mask", "particle_features"):
        if key in batch:
            batch[key] = batch[key][:, :length]
    return batch


def collate_sequences(batch) -> dict[str, torch.Tensor]:
    """Batches read from a token file, trimmed to their longest jet."""
    return trim_to_longest(collate_batch(batch))


def dataset_feature_names(tokenizer_features: Sequence[str], particle_features: Sequence[str]) -> list[str]:
    """The features a jet dataset must compute: the tokenizer's, then the backbone's extra ones."""
    names = list(tokenizer_features)
    names += [n for n in particle_features if n not in names]
    return names


class JetSequenceCollator:
    """Tokenises jets on the fly (in DataLoader workers when there are any).

    Produces input_ids (B, N + 2), attention_mask, labels, index and, when the backbone takes
    them, particle_features (B, N + 2, F): standardised, at the particle positions, zero elsewhere.
    """

    def __init__(
        self,
        tokenizer,
        dataset_features: Sequence[str],
        particle_features: Sequence[str] = (),
        feature_mean: Sequence[float] | None = None,
        feature_std: Sequence[float] | None = None,
    ):
        self.tokenizer = tokenizer.eval()
        names = list(dataset_features)
        self.token_columns = [names.index(n) for n in tokenizer.config.feature_names]
        self.feature_columns = [names.index(n) for n in particle_features]
        f = len(self.feature_columns)
        self.mean = torch.as_tensor(feature_mean if feature_mean is not None else np.zeros(f), dtype=torch.float32)
        self.std = torch.as_tensor(feature_std if feature_std is not None else np.ones(f), dtype=torch.float32)

    @torch.no_grad()
    def __call__(self, batch) -> dict[str, torch.Tensor]:
        b = collate_batch(batch)
        features, mask = b["features"], b["mask"].bool()  # (B, N, F_all), (B, N)
        # Nearest codes, not the tokenizer's encode search: that costs 1 + particles x (candidates - 1)
        # decoder passes, here on the loader's CPU workers for every batch of every epoch. The two
        # differ only in which of a few neighbouring codes the hardest particles of a jet get;
        # searched tokens come from a token file (foundation tokenizer encode).
        ids = self.tokenizer.encode(features[..., self.token_columns], mask, search=False)
        input_ids, attention_mask = self.tokenizer.to_sequence(ids, mask)  # (B, N + 2)
        out = {"input_ids": input_ids, "attention_mask": attention_mask, "labels": b["labels"], "index": b["index"]}
        if self.feature_columns:
            # Jets are stored pT-ordered with padding last, so particle i sits at sequence position i + 1.
            scaled = (features[..., self.feature_columns] - self.mean) / self.std * mask[..., None]
            n = mask.shape[1]
            particle_features = torch.zeros(*input_ids.shape, len(self.feature_columns))
            particle_features[:, 1 : n + 1] = scaled
            out["particle_features"] = particle_features
        return trim_to_longest(out)
