"""One accelerate-based training loop shared by the tokenizer, pretraining and fine-tuning."""

from foundation.training.config import TrainingConfig
from foundation.training.loop import Trainer, TrainResult

__all__ = ["TrainingConfig", "Trainer", "TrainResult"]
