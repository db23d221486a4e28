"""Register the jet classes with transformers' Auto classes, so from_pretrained(folder) works
without the training code (e.g. AutoModel.from_pretrained(path) gives the backbone)."""

from __future__ import annotations

from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoModelForSequenceClassification

_done = False


def register_auto_classes() -> None:
    global _done
    if _done:
        return
    from foundation.models.configuration_jet_transformer import JetTransformerConfig
    from foundation.models.modeling_jet_transformer import (
        JetTransformerForCausalJetModeling,
        JetTransformerForJetClassification,
        JetTransformerModel,
    )
    from foundation.tokenizer import JetTokenizer, JetTokenizerConfig

    AutoConfig.register("jet_transformer", JetTransformerConfig, exist_ok=True)
    AutoModel.register(JetTransformerConfig, JetTransformerModel, exist_ok=True)
    AutoModelForCausalLM.register(JetTransformerConfig, JetTransformerForCausalJetModeling, exist_ok=True)
    AutoModelForSequenceClassification.register(JetTransformerConfig, JetTransformerForJetClassification, exist_ok=True)
    AutoConfig.register("jet_tokenizer", JetTokenizerConfig, exist_ok=True)
    AutoModel.register(JetTokenizerConfig, JetTokenizer, exist_ok=True)
    _done = True
