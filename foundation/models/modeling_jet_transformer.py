"""The jet transformer: a backbone over token sequences of jets, and one class per task.

    JetTransformerModel                       backbone: token + position (+ particle feature) embeddings,
                                              pre-norm transformer blocks, causal or bidirectional
    JetTransformerForCausalJetModeling        next-token prediction (OmniJet-alpha style) + sampling
    JetTransformerForMaskedParticleModeling   predict the token ids of masked particles (MPM style)
    JetTransformerForPretraining              both objectives, weighted (one backbone, two heads)
    JetTransformerForJetClassification        tagging head (class-attention or mean pooling)

Sequences are [start, particle tokens (pT-ordered)..., stop, pad...] with an attention mask.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from foundation.layers import KVCache, TransformerStack, attention_mask_for
from foundation.models.configuration_jet_transformer import JetTransformerConfig


# ----------------------------------------------------------------------------- outputs
@dataclass
class JetModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # (B, L, D)
    cache: list[KVCache] | None = None


@dataclass
class CausalJetModelingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, V)
    cache: list[KVCache] | None = None
    token_accuracy: torch.Tensor | None = None
    nll_per_jet: torch.Tensor | None = None  # (B,) summed over the jet's predicted tokens
    tokens_per_jet: torch.Tensor | None = None  # (B,)


@dataclass
class MaskedParticleModelingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, vocab_codes)
    masked_accuracy: torch.Tensor | None = None
    masked_positions: torch.Tensor | None = None  # (B, L) bool


@dataclass
class JetPretrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    causal_loss: torch.Tensor | None = None
    token_accuracy: torch.Tensor | None = None
    masked_loss: torch.Tensor | None = None
    masked_accuracy: torch.Tensor | None = None


@dataclass
class JetClassificationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, C)
    pooled: torch.Tensor | None = None  # (B, D)
    accuracy: torch.Tensor | None = None


# ----------------------------------------------------------------------------- base
class JetTransformerPreTrainedModel(PreTrainedModel):
    config_class = JetTransformerConfig
    base_model_prefix = "transformer"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["TransformerBlock"]

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if getattr(module, "zero_init", False):
            # Particle features enter through a zero map: a backbone pretrained on tokens alone
            # starts fine-tuning exactly as it was pretrained, and learns to use them.
            nn.init.zeros_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=std)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, ClassAttentionPooling):
            nn.init.normal_(module.query, std=std)
        elif isinstance(module, nn.MultiheadAttention):
            # its input projection is a bare Parameter, not an nn.Linear
            nn.init.normal_(module.in_proj_weight, std=std)
            nn.init.zeros_(module.in_proj_bias)


class JetTransformerModel(JetTransformerPreTrainedModel):
    """The backbone. Returns the last hidden states (B, L, D)."""

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        d = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.max_sequence_length, d)
        self.feature_proj = None
        if config.num_particle_features:
            self.feature_proj = nn.Linear(config.num_particle_features, d)
            self.feature_proj.zero_init = True
        self.drop = nn.Dropout(config.dropout)
        self.stack = TransformerStack(config.num_layers, d, config.num_heads, config.intermediate_size, config.dropout)
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L_past + L), True = real
        particle_features: torch.Tensor | None = None,  # (B, L, F), zero at start/stop/pad
        causal: bool | None = None,
        cache: list[KVCache] | None = None,
        use_cache: bool = False,
        **unused,
    ) -> JetModelOutput:
        if causal is None:
            causal = self.config.default_attention == "causal"
        past_length = cache[0][0].shape[2] if cache else 0
        length = input_ids.shape[1]
        if past_length + length > self.config.max_sequence_length:
            raise ValueError(f"sequence of {past_length + length} tokens exceeds max_particles + 2 = {self.config.max_sequence_length}")
        positions = torch.arange(past_length, past_length + length, device=input_ids.device)
        x = self.wte(input_ids) + self.wpe(positions)[None]  # (B, L, D)
        if self.feature_proj is not None:
            if particle_features is None:
                raise ValueError(f"this model takes particle features {self.config.particle_feature_names} beside the tokens")
            x = x + self.feature_proj(particle_features.to(x.dtype))
        x = self.drop(x)
        mask = attention_mask.bool() if attention_mask is not None else None
        attn = attention_mask_for(mask, length, causal=causal, past_length=past_length, device=input_ids.device)
        x, presents = self.stack(x, attn, cache, use_cache)
        return JetModelOutput(last_hidden_state=x, cache=presents)


# ----------------------------------------------------------------------------- objectives
def causal_objective(logits: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor | None):
    """Next-token cross entropy over real targets. -> (mean loss, accuracy, nll per jet, targets per jet)."""
    targets = input_ids[:, 1:]  # (B, L-1)
    if attention_mask is None:
        valid = torch.ones_like(targets, dtype=torch.bool)
    else:
        valid = attention_mask[:, 1:].bool()
    pred = logits[:, :-1].float()  # (B, L-1, V)
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.reshape(-1), reduction="none").view_as(targets)
    nll = nll * valid
    count = valid.sum(1)  # (B,)
    loss = nll.sum() / count.sum().clamp(min=1)
    accuracy = ((pred.argmax(-1) == targets) & valid).sum() / count.sum().clamp(min=1)
    return loss, accuracy, nll.sum(1), count


def causal_loss_at_targets(hidden: torch.Tensor, head: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor, accuracy: bool):
    """causal_objective's mean loss (and accuracy, or None) from hidden states (B, L, D), with the head
    applied only where a real token follows: no vocabulary-wide logits for padding."""
    valid = attention_mask[:, 1:].bool()  # (B, L-1)
    targets = input_ids[:, 1:][valid]  # (T,)
    logits = head(hidden[:, :-1][valid]).float()  # (T, V)
    loss = F.cross_entropy(logits, targets)
    return loss, (logits.argmax(-1) == targets).float().mean() if accuracy else None


def choose_masked_particles(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, vocab_codes: int, fraction: float, generator: torch.Generator | None
) -> torch.Tensor:
    """(B, L) bool: a random `fraction` of each jet's particle tokens (at least one)."""
    particles = (input_ids < vocab_codes) & attention_mask.bool()
    noise = torch.rand(input_ids.shape, generator=generator, device=input_ids.device)
    chosen = (noise < fraction) & particles
    # Every jet gets at least one masked particle: its particle with the lowest noise.
    lowest = torch.where(particles, noise, torch.full_like(noise, 2.0)).argmin(dim=1)
    chosen[torch.arange(len(chosen), device=chosen.device), lowest] |= particles.any(1)
    return chosen


def masked_objective(
    transformer: JetTransformerModel,
    head: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    particle_features: torch.Tensor | None,
    masked_positions: torch.Tensor | None = None,
    return_logits: bool = True,
) -> MaskedParticleModelingOutput:
    cfg = transformer.config
    if masked_positions is None:
        # Fixed masks in evaluation, so validation losses compare across steps.
        generator = None
        if not transformer.training:
            generator = torch.Generator(device=input_ids.device).manual_seed(0)
        masked_positions = choose_masked_particles(input_ids, attention_mask, cfg.vocab_codes, cfg.mask_fraction, generator)
    corrupted = torch.where(masked_positions, torch.full_like(input_ids, cfg.mask_token_id), input_ids)
    if particle_features is not None:
        particle_features = particle_features * (~masked_positions)[..., None]
    hidden = transformer(corrupted, attention_mask, particle_features, causal=False).last_hidden_state
    targets = input_ids[masked_positions]  # (M,)
    if return_logits:
        logits = head(hidden)  # (B, L, vocab_codes)
        picked = logits[masked_positions].float()  # (M, vocab_codes)
    else:
        # Only the masked particles are scored: the head's vocabulary-wide matmul and softmax on the
        # other ~70% of the positions would be thrown away.
        logits = None
        picked = head(hidden[masked_positions]).float()  # (M, vocab_codes)
    loss = F.cross_entropy(picked, targets)
    accuracy = None if transformer.training else (picked.argmax(-1) == targets).float().mean()
    return MaskedParticleModelingOutput(loss, logits, accuracy, masked_positions)


def conditioned_on_class(input_ids: torch.Tensor, labels: torch.Tensor | None, config: JetTransformerConfig, training: bool) -> torch.Tensor:
    """Class start tokens in place of the generic one, for class-conditional generation.
    In training a fraction keeps the generic start, so the model also learns p(jet)."""
    if labels is None or config.num_generation_classes == 0:
        return input_ids
    class_tokens = config.vocab_codes + 4 + labels.clamp(0, config.num_generation_classes - 1)
    use_class = torch.ones_like(labels, dtype=torch.bool)
    if training and config.unconditional_fraction > 0:
        use_class = torch.rand(labels.shape, device=labels.device) >= config.unconditional_fraction
    first = torch.where(use_class, class_tokens, input_ids[:, 0])
    return torch.cat([first[:, None], input_ids[:, 1:]], dim=1)


def add_generation_classes(model: PreTrainedModel, class_names: list[str]) -> None:
    """Give a model trained with the generic start token one start token per class, in place.

    The new rows of the (tied) token embedding start as copies of the generic start token, so the
    model begins as its unconditional self for every class and training on labelled jets teaches
    each class token its class: a published checkpoint becomes a class-conditional generator
    without pretraining again. A model that already has these classes is left as it is.
    """
    cfg = model.config
    names = list(class_names)
    if cfg.num_generation_classes:
        if list(cfg.generation_class_names) != names:
            raise ValueError(f"the model generates classes {cfg.generation_class_names}, not {names}")
        return
    old_size = cfg.vocab_size
    model.resize_token_embeddings(old_size + len(names), mean_resizing=False)
    with torch.no_grad():
        weight = model.get_input_embeddings().weight  # (V + C, D)
        weight[old_size:] = weight[cfg.start_token_id]
    cfg.num_generation_classes, cfg.generation_class_names = len(names), names
    cfg.vocab_size = cfg.vocab_codes + 4 + len(names)
    cfg.validate()


def _masked_head(config: JetTransformerConfig) -> nn.Module:
    d = config.hidden_size
    return nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.LayerNorm(d), nn.Linear(d, config.vocab_codes))


# ----------------------------------------------------------------------------- heads
class _WithLanguageModelHead:
    """The next-token head `lm_head`, tied to the token embedding (transformers' tying hooks)."""

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def set_output_embeddings(self, value: nn.Linear) -> None:
        self.lm_head = value


class JetTransformerForCausalJetModeling(_WithLanguageModelHead, JetTransformerPreTrainedModel):
    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}
    # A pretraining bundle also holds the masked-particle head; generation and likelihoods leave it out.
    _keys_to_ignore_on_load_unexpected = [r"^mpm_head\."]

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        self.transformer = JetTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        particle_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,  # jet classes: class-conditional start tokens when configured
        cache: list[KVCache] | None = None,
        use_cache: bool = False,
        **unused,
    ) -> CausalJetModelingOutput:
        input_ids = conditioned_on_class(input_ids, labels, self.config, self.training)
        out = self.transformer(input_ids, attention_mask, particle_features, causal=True, cache=cache, use_cache=use_cache)
        logits = self.lm_head(out.last_hidden_state)  # (B, L, V)
        loss = accuracy = nll = count = None
        if input_ids.shape[1] > 1 and cache is None:
            loss, accuracy, nll, count = causal_objective(logits, input_ids, attention_mask)
        return CausalJetModelingOutput(loss, logits, out.cache, accuracy, nll, count)

    @torch.no_grad()
    def sample(
        self,
        num_jets: int,
        class_index: int | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_particles: int | None = None,
        generator: torch.Generator | None = None,
        guidance: float = 1.0,
    ) -> torch.Tensor:
        """Sample token sequences (num_jets, <= max_particles + 2) with a key/value cache:
        each new token costs one position. Sequences end at the stop token (pad after it).

        guidance (class-conditional models, with class_index): classifier-free guidance, next-token
        logits uncond + guidance * (cond - uncond), the unconditional ones from the generic start
        token the model also learnt (unconditional_fraction). 1 samples the class as learnt; above 1
        each token leans further towards what sets the class apart, at twice the cost per token.
        """
        cfg = self.config
        if cfg.num_particle_features:
            raise ValueError("sampling needs a token-only model; this one also takes particle features")
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        guided = guidance != 1.0
        if guided and (class_index is None or guidance < 0):
            raise ValueError(f"guidance {guidance} needs a class to generate and must be >= 0")
        if guided and cfg.unconditional_fraction == 0:
            raise ValueError("guidance needs the generic start token's predictions, which this model never learnt (unconditional_fraction 0)")
        limit = min(max_particles or cfg.max_particles, cfg.max_particles)
        device = self.lm_head.weight.device
        start = cfg.start_token_id if class_index is None else cfg.class_start_token_id(class_index)
        sequences = torch.full((num_jets, 1), start, dtype=torch.long, device=device)
        finished = torch.zeros(num_jets, dtype=torch.bool, device=device)
        allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
        allowed[: cfg.vocab_codes] = True
        # Guided: rows B..2B-1 follow the same tokens from the generic start (one forward pass for both).
        current = torch.cat([sequences, torch.full_like(sequences, cfg.start_token_id)]) if guided else sequences
        past = None
        was_training = self.training
        self.eval()
        for position in range(limit + 1):
            out = self(current, cache=past, use_cache=True)
            past = out.cache
            logits = out.logits[:, -1].float()  # (B, V), or (2B, V) guided
            if guided:
                conditional, unconditional = logits.chunk(2)
                logits = unconditional + guidance * (conditional - unconditional)
            logits = logits / temperature
            ok = allowed.clone()
            ok[cfg.stop_token_id] = position > 0  # at least one particle per jet
            if position == limit:  # no room left: stop
                ok[:] = False
                ok[cfg.stop_token_id] = True
            logits = logits.masked_fill(~ok, float("-inf"))
            logits = _filter_top_k_top_p(logits, top_k, top_p)
            token = torch.multinomial(torch.softmax(logits, -1), 1, generator=generator).squeeze(1)  # (B,)
            token = torch.where(finished, torch.full_like(token, cfg.pad_token_id), token)
            finished |= token == cfg.stop_token_id
            sequences = torch.cat([sequences, token[:, None]], dim=1)
            current = token.repeat(2)[:, None] if guided else token[:, None]
            if finished.all():
                break
        self.train(was_training)
        return sequences


def _filter_top_k_top_p(logits: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Keep the k most likely tokens and/or the smallest set with probability >= p."""
    if top_k is not None and top_k > 0:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
        cumulative = torch.softmax(sorted_logits, -1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_logits, -1) >= top_p  # keep the token that crosses p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    return logits


class JetTransformerForMaskedParticleModeling(JetTransformerPreTrainedModel):
    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        self.transformer = JetTransformerModel(config)
        self.mpm_head = _masked_head(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        particle_features: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        **unused,
    ) -> MaskedParticleModelingOutput:
        return masked_objective(self.transformer, self.mpm_head, input_ids, attention_mask, particle_features, masked_positions)


class JetTransformerForPretraining(_WithLanguageModelHead, JetTransformerPreTrainedModel):
    """Both pretraining objectives on one backbone: causal_loss_weight * next-token +
    masked_loss_weight * masked-particle loss. Its checkpoint loads into either single head."""

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        self.transformer = JetTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mpm_head = _masked_head(config)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        particle_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> JetPretrainingOutput:
        cfg = self.config
        loss = input_ids.new_zeros((), dtype=torch.float32)
        out = JetPretrainingOutput()
        if cfg.causal_loss_weight > 0:
            ids = conditioned_on_class(input_ids, labels, cfg, self.training)
            hidden = self.transformer(ids, attention_mask, particle_features, causal=True).last_hidden_state
            # Accuracies are measured in evaluation only: their argmax over the vocabulary costs ~5% of a CPU step.
            out.causal_loss, out.token_accuracy = causal_loss_at_targets(hidden, self.lm_head, ids, attention_mask, accuracy=not self.training)
            loss = loss + cfg.causal_loss_weight * out.causal_loss
        if cfg.masked_loss_weight > 0:
            masked = masked_objective(self.transformer, self.mpm_head, input_ids, attention_mask, particle_features, return_logits=False)
            out.masked_loss, out.masked_accuracy = masked.loss, masked.masked_accuracy
            loss = loss + cfg.masked_loss_weight * masked.loss
        out.loss = loss
        return out


class ClassAttentionPooling(nn.Module):
    """A learned query attends over the particles of each jet (as ParT's class-attention blocks)."""

    def __init__(self, hidden_size: int, num_heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(1, 1, hidden_size))
        self.attention = nn.MultiheadAttention(hidden_size, num_heads, batch_first=True)
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, L, D), (B, L) -> (B, D)
        query = self.query.expand(hidden.shape[0], -1, -1)
        pooled, _ = self.attention(query, hidden, hidden, key_padding_mask=~mask.bool(), need_weights=False)
        return self.norm(pooled.squeeze(1))


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Average over the real positions: (B, L, D), (B, L) -> (B, D)."""
    weights = mask.to(hidden.dtype)[..., None]
    return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1)


class JetTransformerForJetClassification(JetTransformerPreTrainedModel):
    """Tagging: pooled backbone output -> MLP -> class logits (config.num_labels classes)."""

    # Fine-tuning starts from a pretraining bundle: its pretraining heads are left out on purpose
    # (the new pooling and classifier are still reported as newly initialised).
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^mpm_head\."]

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        d = config.hidden_size
        self.transformer = JetTransformerModel(config)
        self.pooling = ClassAttentionPooling(d, config.num_heads) if config.classifier_pooling == "class_attention" else None
        self.classifier = nn.Sequential(
            nn.Linear(d, d), nn.GELU(), nn.Dropout(config.classifier_dropout), nn.Linear(d, config.num_labels)
        )
        self.post_init()

    def pool(self, input_ids, attention_mask, particle_features=None) -> torch.Tensor:
        causal = self.config.default_attention == "causal"
        hidden = self.transformer(input_ids, attention_mask, particle_features, causal=causal).last_hidden_state
        if self.pooling is not None:
            return self.pooling(hidden, attention_mask)
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        particle_features: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **unused,
    ) -> JetClassificationOutput:
        pooled = self.pool(input_ids, attention_mask, particle_features)
        logits = self.classifier(pooled)  # (B, C)
        loss = accuracy = None
        if labels is not None:
            loss = F.cross_entropy(logits.float(), labels)
            accuracy = (logits.argmax(-1) == labels).float().mean()
        return JetClassificationOutput(loss, logits, pooled, accuracy)
