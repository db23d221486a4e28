"""The jet transformer backbone and its task heads (Hugging Face style, registered with Auto classes)."""

from foundation.models.configuration_jet_transformer import JetTransformerConfig
from foundation.models.modeling_jet_transformer import (
    JetTransformerForCausalJetModeling,
    JetTransformerForJetClassification,
    JetTransformerForMaskedParticleModeling,
    JetTransformerForPretraining,
    JetTransformerModel,
    add_generation_classes,
)
from foundation.models.registration import register_auto_classes

register_auto_classes()

__all__ = [
    "JetTransformerConfig",
    "JetTransformerModel",
    "JetTransformerForCausalJetModeling",
    "JetTransformerForMaskedParticleModeling",
    "JetTransformerForPretraining",
    "JetTransformerForJetClassification",
    "add_generation_classes",
]
