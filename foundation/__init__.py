"""foundation: pretrain, fine-tune and share foundation models for particle jets."""

__version__ = "0.1.0"
