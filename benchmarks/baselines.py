"""Peers trained through the same loop and data as our models: ParT from weaver-core."""

from __future__ import annotations

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

    def forward(self, features, mask, momenta, labels=None, **unused) -> JetClassificationOutput:
        x = features.transpose(1, 2)  # (B, F, N)
        v = momenta.transpose(1, 2)  # (B, 4, N): px, py, pz, E
        m = mask[:, None].to(features.dtype)  # (B, 1, N)
        logits = self.part(x, v, m)  # (B, C)
        loss = accuracy = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
            accuracy = (logits.argmax(-1) == labels).float().mean()
        return JetClassificationOutput(loss, logits, None, accuracy)
