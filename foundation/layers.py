"""Transformer building blocks shared by the tokenizer and the backbone.

Pre-norm blocks (as GPT-2 / nanoGPT); attention through scaled_dot_product_attention so GPUs get
fused (flash / memory-efficient) kernels; padding masks, causal masks and a key/value cache.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F
from torch import nn

KVCache = tuple[torch.Tensor, torch.Tensor]  # (B, H, T, Dh) keys and values seen so far


CAUSAL = "causal"  # attention mask value meaning: plain causal, no padding (SDPA is_causal=True)


def attention_mask_for(
    key_padding_mask: torch.Tensor | None,  # (B, T) True = real
    query_length: int,
    causal: bool,
    past_length: int = 0,
    device: torch.device | None = None,
) -> torch.Tensor | str | None:
    """What SDPA needs: a boolean mask (B, 1, Q, T) (True = may attend), CAUSAL, or None.

    A causal pass over whole sequences is SDPA's is_causal (flash kernels on GPUs; on CPUs the
    blocks above the diagonal are skipped), and one new token attending to its key/value cache
    needs no mask at all. Padded sequences must then be right-padded, as every jet sequence here
    is (the real tokens first): a real token's earlier keys are all real, so the causal flag alone
    gives it exactly the attention of causal & padding. Padded positions attend to earlier padding
    too; no loss, pooling or sampling reads them.
    """
    if key_padding_mask is None and (not causal or query_length == 1):
        return None
    if causal and past_length == 0 and (key_padding_mask is None or key_padding_mask.shape[1] == query_length):
        if key_padding_mask is not None:
            _check_right_padded(key_padding_mask)
        return CAUSAL
    device = key_padding_mask.device if key_padding_mask is not None else device
    total = past_length + query_length if key_padding_mask is None else key_padding_mask.shape[1]
    mask = None
    if key_padding_mask is not None:
        mask = key_padding_mask[:, None, None, :]  # (B, 1, 1, T)
    if causal:
        q_pos = torch.arange(past_length, past_length + query_length, device=device)[:, None]  # (Q, 1)
        k_pos = torch.arange(total, device=device)[None, :]  # (1, T)
        causal_mask = (k_pos <= q_pos)[None, None]  # (1, 1, Q, T)
        mask = causal_mask if mask is None else (mask & causal_mask)
    return mask


def _check_right_padded(key_padding_mask: torch.Tensor) -> None:
    """Padding only after the real tokens. On an accelerator the check is asynchronous (no host
    sync per forward); a failure there is a device-side assert, as for any broken invariant."""
    padding_before_real = (key_padding_mask[:, 1:] & ~key_padding_mask[:, :-1]).any()
    if key_padding_mask.device.type == "cpu":
        if padding_before_real:
            raise ValueError("attention_mask of a causal pass must be right-padded (all real tokens before the padding)")
    else:
        torch._assert_async(~padding_before_real)


def with_attention_bias(
    mask: torch.Tensor | str | None,  # from attention_mask_for
    bias: torch.Tensor,  # (B, H, Q, T) additive, e.g. pairwise interactions
    past_length: int = 0,
) -> torch.Tensor:
    """One float mask for SDPA: the bias where attention is allowed, -inf where it is not.

    SDPA takes either a boolean or an additive mask, so the padding and causal masks are folded
    into the bias (GPUs then use the memory-efficient kernel, which takes a bias, not flash).
    """
    if isinstance(mask, str):  # CAUSAL: spell it out, SDPA cannot combine is_causal with a mask
        q, t = bias.shape[-2:]
        mask = torch.ones(q, t, dtype=torch.bool, device=bias.device).tril(past_length)[None, None]  # (1, 1, Q, T)
    if mask is None:
        return bias
    return bias.masked_fill(~mask, float("-inf"))  # (B, H, Q, T)


class _LowPrecisionCrossEntropy(torch.autograd.Function):
    """Mean cross entropy of bf16 / fp16 logits (N, V), computed in fp32 a block of rows at a time.

    F.cross_entropy(logits.float()) keeps an fp32 copy of the logits for log_softmax's backward,
    fills an (N, V) zero gradient for the target gather, runs log_softmax's backward and casts the
    gradient back, each pass writing a fresh N x V tensor: on a CPU core about a sixth of a small
    pretraining step (a vocabulary of ~2000 codes). Here the forward keeps only the low-precision
    logits and one log-sum-exp per row, and the backward rebuilds the softmax from them in place,
    in one reused fp32 block that stays in cache. Same loss in fp32, and the same gradient up to
    its final rounding to the logits' dtype.
    """

    BLOCK_ROWS = 256  # rows converted to fp32 at once (2 MB for 2000 codes)

    @staticmethod
    def _blocks(logits: torch.Tensor):
        """(row slice, fp32 copy of those rows) for each block; the copy's memory is reused."""
        buffer = torch.empty(min(_LowPrecisionCrossEntropy.BLOCK_ROWS, logits.shape[0]), logits.shape[1], device=logits.device)
        for start in range(0, logits.shape[0], _LowPrecisionCrossEntropy.BLOCK_ROWS):
            rows = slice(start, start + _LowPrecisionCrossEntropy.BLOCK_ROWS)
            block = buffer[: logits[rows].shape[0]]
            block.copy_(logits[rows])
            yield rows, block

    @staticmethod
    def forward(ctx, logits: torch.Tensor, targets: torch.Tensor, ignore_index: int) -> torch.Tensor:
        valid = targets != ignore_index  # (N,)
        safe_targets = targets.clamp(min=0)
        log_norm = torch.empty(logits.shape[0], dtype=torch.float32, device=logits.device)  # (N,) log-sum-exp
        for rows, block in _LowPrecisionCrossEntropy._blocks(logits):
            torch.logsumexp(block, dim=-1, out=log_norm[rows])
        target_logit = logits.gather(1, safe_targets[:, None])[:, 0].float()  # (N,)
        count = valid.sum().clamp(min=1)
        ctx.save_for_backward(logits, safe_targets, valid, log_norm, count)
        return ((log_norm - target_logit) * valid).sum() / count

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor):
        logits, targets, valid, log_norm, count = ctx.saved_tensors
        grad = torch.empty_like(logits)
        weight = (valid / count * grad_loss)[:, None]  # (N, 1): d loss / d nll of each row
        minus_one = torch.full((1, 1), -1.0, device=logits.device)
        for rows, block in _LowPrecisionCrossEntropy._blocks(logits):
            block.sub_(log_norm[rows, None]).exp_()  # the softmax
            block.scatter_add_(1, targets[rows, None], minus_one.expand(block.shape[0], 1))
            grad[rows].copy_(block.mul_(weight[rows]))
        return grad, None, None


def cross_entropy(logits: torch.Tensor, targets: torch.Tensor, ignore_index: int = -100) -> torch.Tensor:
    """F.cross_entropy's mean loss of logits (N, V) against targets (N,), always computed in fp32.
    bf16 / fp16 logits on a CPU (autocast) take the lean path of _LowPrecisionCrossEntropy; other
    dtypes, and every accelerator, F.cross_entropy."""
    if logits.dtype not in (torch.bfloat16, torch.float16) or logits.device.type != "cpu":
        return F.cross_entropy(logits.float(), targets, ignore_index=ignore_index)
    return _LowPrecisionCrossEntropy.apply(logits, targets, ignore_index)


class SelfAttention(nn.Module):
    def __init__(self, hidden_size: int, num_heads: int, dropout: float = 0.0, bias: bool = True):
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.qkv = nn.Linear(hidden_size, 3 * hidden_size, bias=bias)
        self.out = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.dropout = dropout

    def forward(
        self,
        x: torch.Tensor,  # (B, Q, D)
        attn_mask: torch.Tensor | str | None,  # (B, 1, Q, T) bool, (B, H, Q, T) float bias, CAUSAL or None
        past: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, KVCache | None]:
        b, q_len, d = x.shape
        q, k, v = self.qkv(x).split(d, dim=-1)
        q, k, v = (t.view(b, q_len, self.num_heads, self.head_dim).transpose(1, 2) for t in (q, k, v))  # (B, H, Q, Dh)
        if past is not None:
            k = torch.cat([past[0], k], dim=2)  # (B, H, T, Dh)
            v = torch.cat([past[1], v], dim=2)
        present = (k, v) if use_cache else None
        is_causal = isinstance(attn_mask, str)
        dtype = q.dtype
        # CPU autocast: the matmuls around attention gain from bf16 (AMX / AVX-512 BF16), but the
        # CPU attention kernel's bf16 backward is ~4x slower than its fp32 one: attend in fp32.
        fp32_attention = q.device.type == "cpu" and torch.is_autocast_enabled("cpu")
        if fp32_attention:
            q, k, v = q.float(), k.float(), v.float()
        if isinstance(attn_mask, torch.Tensor) and attn_mask.is_floating_point():
            attn_mask = attn_mask.to(q.dtype)  # SDPA wants an additive mask in the query's dtype (bf16 under autocast)
        with torch.autocast("cpu", enabled=False) if fp32_attention else contextlib.nullcontext():
            y = F.scaled_dot_product_attention(
                q, k, v, attn_mask=None if is_causal else attn_mask, dropout_p=self.dropout if self.training else 0.0, is_causal=is_causal
            )  # (B, H, Q, Dh)
        y = y.to(dtype).transpose(1, 2).reshape(b, q_len, d)  # (B, Q, D)
        return self.out(y), present


class MLP(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.fc = nn.Linear(hidden_size, intermediate_size)
        self.proj = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(F.gelu(self.fc(x))))


class TransformerBlock(nn.Module):
    """x + Attn(LN(x)), then x + MLP(LN(x))."""

    def __init__(self, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.ln_attn = nn.LayerNorm(hidden_size)
        self.attn = SelfAttention(hidden_size, num_heads, dropout)
        self.ln_mlp = nn.LayerNorm(hidden_size)
        self.mlp = MLP(hidden_size, intermediate_size, dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(
        self,
        x: torch.Tensor,  # (B, Q, D)
        attn_mask: torch.Tensor | str | None,
        past: KVCache | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, KVCache | None]:
        a, present = self.attn(self.ln_attn(x), attn_mask, past, use_cache)
        x = x + self.dropout(a)
        x = x + self.mlp(self.ln_mlp(x))
        return x, present


class TransformerStack(nn.Module):
    """A stack of blocks with a final LayerNorm; optional gradient checkpointing."""

    def __init__(self, num_layers: int, hidden_size: int, num_heads: int, intermediate_size: int, dropout: float = 0.0):
        super().__init__()
        self.blocks = nn.ModuleList(
            TransformerBlock(hidden_size, num_heads, intermediate_size, dropout) for _ in range(num_layers)
        )
        self.ln_final = nn.LayerNorm(hidden_size)
        self.gradient_checkpointing = False

    def forward(
        self,
        x: torch.Tensor,  # (B, Q, D)
        attn_mask: torch.Tensor | str | None,
        past: list[KVCache] | None = None,
        use_cache: bool = False,
    ) -> tuple[torch.Tensor, list[KVCache] | None]:
        presents = [] if use_cache else None
        for i, block in enumerate(self.blocks):
            layer_past = past[i] if past is not None else None
            if self.gradient_checkpointing and self.training and not use_cache:
                x, _ = torch.utils.checkpoint.checkpoint(block, x, attn_mask, None, False, use_reentrant=False)
                present = None
            else:
                x, present = block(x, attn_mask, layer_past, use_cache)
            if use_cache:
                presents.append(present)
        return self.ln_final(x), presents
