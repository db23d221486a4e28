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


class PadToMultiple:
    """Wraps a collate function: pads each batch's sequence axis up to a multiple of `multiple`
    (at most `max_length`, the model's longest sequence).

    Batches then come in a few lengths, so a compiled model (training.compile_blocks) meets each
    length once and keeps static-shape kernels, instead of recompiling for every new length and
    falling back to dynamic-shape ones. The padding is masked, so results do not change: masks
    (attention_mask, mask) and every other per-position column get 0, `labels` IGNORE_INDEX.
    A class, not a closure, so DataLoader workers can pickle it.
    """

    def __init__(self, collate_fn, multiple: int, max_length: int | None = None):
        self.collate_fn = collate_fn
        self.multiple = multiple
        self.max_length = max_length

    def __call__(self, batch) -> dict[str, torch.Tensor]:
        return pad_to_multiple(self.collate_fn(batch), self.multiple, self.max_length)


def pad_to_multiple(batch: dict, multiple: int, max_length: int | None = None) -> dict:
    """`batch` with its (B, L, ...) columns padded to (B, L', ...): L' the multiple of `multiple` at
    or above L, or `max_length` if that is shorter. L is that of `attention_mask` (token sequences)
    or `mask` (particles)."""
    from foundation.models.modeling_jet_transformer import IGNORE_INDEX

    mask = batch.get("attention_mask", batch.get("mask"))
    if mask is None or mask.ndim != 2:
        return batch
    length = mask.shape[1]
    target = length + -length % multiple
    if max_length is not None:
        target = min(target, max_length)
    if target <= length:
        return batch
    out = dict(batch)
    for key, value in batch.items():
        if isinstance(value, torch.Tensor) and value.ndim >= 2 and value.shape[:2] == mask.shape:
            fill = IGNORE_INDEX if key == "labels" else 0
            padding = value.new_full((value.shape[0], target - length, *value.shape[2:]), fill)
            out[key] = torch.cat([value, padding], dim=1)
    return out
