"""Peers trained through the same loop and data as our models: ParT from weaver-core."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from foundation.models.modeling_jet_transformer import JetClassificationOutput

# ParT as published for the top tagging landscape (arXiv 2202.03772): embedding 128-512-128,
# pair embedding 64-64-64, 8 particle-attention blocks, 2 class-attention blocks, 8 heads.
PART_DEFAULT = dict(embed_dims=(128, 512, 128), pair_embed_dims=(64, 64, 64), num_heads=8, num_layers=8, num_cls_layers=2)
PART_TINY = dict(embed_dims=(16, 32, 16), pair_embed_dims=(8, 8, 8), num_heads=2, num_layers=1, num_cls_layers=1)


class ParTTagger(nn.Module):
    """weaver-core's ParticleTransformer behind our batch interface (features, mask, momenta)."""

    def __init__(self, num_features: int, num_classes: int, **part_kwargs):
        super().__init__()
        from weaver.nn.model.ParticleTransformer import ParticleTransformer

        kwargs = {**PART_DEFAULT, **part_kwargs}
        self.part = ParticleTransformer(input_dim=num_features, num_classes=num_classes, pair_input_dim=4, fc_params=[], **kwargs)

    def forward(self, features, mask, momenta, labels=None) -> JetClassificationOutput:
        x = features.transpose(1, 2)  # (B, F, N)
        v = momenta.transpose(1, 2)  # (B, 4, N): px, py, pz, E
        m = mask[:, None].to(features.dtype)  # (B, 1, N)
        logits = self.part(x, v, m)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return JetClassificationOutput(loss, logits, None)


def part_inputs(train_dataset, features: list[str], seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standardisation of ParT's inputs from its training jets (as weaver's configs do): continuous
    features to mean 0, std 1; charge and particle-type flags as they are. Returns (mean, std), (F,)."""
    import numpy as np

    from foundation.data.dataset import feature_statistics

    mean, std = feature_statistics(train_dataset, seed=seed)
    continuous = np.array([not (n.startswith("is_") or n == "charge") for n in features])
    mean = np.where(continuous, mean, 0.0)
    std = np.where(continuous, np.maximum(std, 1e-3), 1.0)
    return torch.as_tensor(mean, dtype=torch.float32), torch.as_tensor(std, dtype=torch.float32)


def part_collator(mean: torch.Tensor, std: torch.Tensor):
    """Batches of (features, mask, momenta, labels) with standardised features (padding stays 0)."""
    from foundation.data.dataset import collate_batch

    def collate(batch):
        b = collate_batch(batch)
        b["features"] = (b["features"] - mean) / std * b["mask"][..., None]  # (B, N, F)
        return b

    return collate


def save_part(model: ParTTagger, mean: torch.Tensor, std: torch.Tensor, kwargs: dict, folder: Path) -> Path:
    """The trained tagger, its input scaling and its architecture, enough to evaluate it later."""
    from safetensors.torch import save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(model, str(folder / "model.safetensors"))
    payload = {"mean": mean.tolist(), "std": std.tolist(), "part_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}
    (folder / "inputs.json").write_text(json.dumps(payload))
    return folder


def load_part(folder: Path, num_features: int, num_classes: int) -> tuple[ParTTagger, torch.Tensor, torch.Tensor]:
    from safetensors.torch import load_model

    payload = json.loads((folder / "inputs.json").read_text())
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["part_kwargs"].items()}
    model = ParTTagger(num_features, num_classes, **kwargs)
    load_model(model, str(folder / "model.safetensors"))
    return model.eval(), torch.tensor(payload["mean"]), torch.tensor(payload["std"])
