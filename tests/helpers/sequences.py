"""Token sequences laid out as the tokenizer writes them, for model tests."""

from __future__ import annotations

import torch


def token_sequences(cfg, lengths: torch.Tensor, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N + 2) ids [start, random codes (lengths[b] of them), stop, pad...] and their attention mask,
    with N = cfg.max_particles."""
    g = torch.Generator().manual_seed(seed)
    n = cfg.max_particles
    ids = torch.randint(0, cfg.vocab_codes, (len(lengths), n + 2), generator=g)
    ids[:, 0] = cfg.start_token_id
    pos = torch.arange(n + 2)[None]
    ids = torch.where(pos == lengths[:, None] + 1, cfg.stop_token_id, ids)
    ids = torch.where(pos > lengths[:, None] + 1, cfg.pad_token_id, ids)
    return ids, pos <= lengths[:, None] + 1
