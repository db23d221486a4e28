"""The VQ-VAE particle tokenizer: jets of constituents <-> sequences of discrete tokens."""

from foundation.tokenizer.configuration_jet_tokenizer import JetTokenizerConfig
from foundation.tokenizer.modeling_jet_tokenizer import JetTokenizer, JetTokenizerOutput

__all__ = ["JetTokenizerConfig", "JetTokenizer", "JetTokenizerOutput"]
