"""What a model is called with: the columns of a batch its forward takes.

The caller drops the others (jet index, ...), as transformers' Trainer drops unused dataset
columns, so a model's forward names every input it takes and swallows none (no **kwargs); the
whole batch stays available to evaluation metrics.
"""

from __future__ import annotations

import inspect

import torch


def model_input_names(model: torch.nn.Module) -> frozenset[str] | None:
    """The arguments of a model's forward (of the model inside a DDP / DeepSpeed wrapper);
    None when it takes any keyword."""
    inner = getattr(model, "module", model)
    parameters = inspect.signature(inner.forward).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return None
    return frozenset(p.name for p in parameters)


def select_inputs(names: frozenset[str] | None, batch: dict) -> dict:
    """The columns of `batch` among `names` (model_input_names; None keeps them all)."""
    return dict(batch) if names is None else {k: v for k, v in batch.items() if k in names}


def model_inputs(model: torch.nn.Module, batch: dict) -> dict:
    """The columns of `batch` that `model` takes."""
    return select_inputs(model_input_names(model), batch)
