"""The jet transformer: a backbone over token sequences of jets, and one class per task.

    JetTransformerModel                       backbone: token + position (+ particle feature) embeddings,
                                              pre-norm transformer blocks, causal or bidirectional
    JetTransformerForCausalJetModeling        next-token prediction (OmniJet-alpha style) + sampling
    JetTransformerForMaskedParticleModeling   predict the token ids of masked particles (MPM style)
    JetTransformerForPretraining              both objectives, weighted (one backbone, two heads)
    JetTransformerForJetClassification        tagging head (class-attention or mean pooling)

Sequences are [start, particle tokens (pT-ordered)..., stop, pad...] with an attention mask.

Forward arguments mean what they mean in transformers: `labels` is the loss target (token ids,
-100 where nothing is predicted, for the pretraining heads; the jet class for classification),
`class_labels` the class a causal model is conditioned on, `past_key_values` the key/value cache.
Accuracies and other metrics are computed by the caller from the outputs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput

from foundation.layers import (
    KVCache,
    TransformerStack,
    attention_mask_for,
    cross_entropy,
    with_attention_bias,
)
from foundation.models.configuration_jet_transformer import JetTransformerConfig
from foundation.models.interaction import PairInteractionEmbedding
from foundation.models.jet_observables import JET_OBSERVABLES, jet_observables

IGNORE_INDEX = -100  # labels that take no part in the loss (transformers' convention)


# ----------------------------------------------------------------------------- outputs
@dataclass
class JetModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor | None = None  # (B, L, D)
    past_key_values: list[KVCache] | None = None  # per layer (B, H, T, Dh) keys and values


@dataclass
class CausalJetModelingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, V): position i predicts token i + 1
    past_key_values: list[KVCache] | None = None


@dataclass
class MaskedParticleModelingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, L, vocab_codes), or (M, vocab_codes) at the masked positions
    masked_positions: torch.Tensor | None = None  # (B, L) bool
    last_hidden_state: torch.Tensor | None = None  # (B, L, D) of the masked input


@dataclass
class JetPretrainingOutput(ModelOutput):
    """Logits only where a loss is taken, and only in evaluation (model.eval()): for accuracies."""

    loss: torch.Tensor | None = None
    causal_loss: torch.Tensor | None = None
    masked_loss: torch.Tensor | None = None
    jet_loss: torch.Tensor | None = None  # the auxiliary jet-observable regression (config.jet_loss_weight)
    target_logits: torch.Tensor | None = None  # (T, V) next-token logits at labels[:, 1:] != IGNORE_INDEX
    masked_logits: torch.Tensor | None = None  # (M, vocab_codes) at masked_positions
    masked_positions: torch.Tensor | None = None  # (B, L) bool


@dataclass
class JetClassificationOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # (B, C)
    pooled: torch.Tensor | None = None  # (B, D)


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
        elif isinstance(module, JetTransformerModel) and module.code_kinematics is not None:
            nn.init.zeros_(module.code_kinematics)  # unmeasured: set_code_kinematics fills it
        elif isinstance(module, JetTransformerForPretraining) and module.jet_target_mean is not None:
            # unmeasured (set_jet_target_scaling fills them); also for a head added to a loaded
            # checkpoint, which would otherwise keep uninitialised memory
            nn.init.zeros_(module.jet_target_mean)
            nn.init.ones_(module.jet_target_std)


class JetTransformerModel(JetTransformerPreTrainedModel):
    """The backbone. Returns the last hidden states (B, L, D)."""

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        d = config.hidden_size
        self.wte = nn.Embedding(config.vocab_size, d)
        self.wpe = nn.Embedding(config.max_sequence_length, d)
        self.feature_proj = particle_feature_embedding(config) if config.num_particle_features else None
        self.drop = nn.Dropout(config.dropout)
        self.stack = TransformerStack(config.num_layers, d, config.num_heads, config.intermediate_size, config.dropout)
        self.interaction = None
        table = None
        if config.interaction_attention:
            self.interaction = PairInteractionEmbedding(config.num_heads, config.interaction_hidden_size)
            # (vocab_codes, 4): each code's mean particle (pT, η_rel, φ_rel, E), the kinematics known
            # when sampling; saved with the weights so generation needs nothing else.
            table = torch.zeros(config.vocab_codes, 4)
        self.register_buffer("code_kinematics", table)  # None (not saved) without interactions
        self.post_init()

    def get_input_embeddings(self) -> nn.Embedding:
        return self.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.wte = value

    def set_code_kinematics(self, table: torch.Tensor) -> None:
        """Store each code's mean particle kinematics (vocab_codes, 4): (pT, η_rel, φ_rel, E)."""
        if self.code_kinematics is None:
            raise ValueError("this model has no interaction attention (config.interaction_attention)")
        self.code_kinematics.copy_(torch.as_tensor(table, dtype=self.code_kinematics.dtype))

    def kinematics_of_tokens(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, L) token ids -> (B, L, 4) their codes' mean kinematics, zero for special tokens."""
        if self.code_kinematics is None:
            raise ValueError("this model has no interaction attention (config.interaction_attention)")
        is_code = (input_ids < self.config.vocab_codes)[..., None]
        return self.code_kinematics[input_ids.clamp(0, self.config.vocab_codes - 1)] * is_code

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L_past + L), True = real
        particle_features: torch.Tensor | None = None,  # (B, L, F), zero at start/stop/pad
        # (B, L_past + L, 4) (pT, η_rel, φ_rel, E) per position, zero where no particle (interaction
        # attention only); None: the codes' mean kinematics (needs the whole sequence, no cache)
        particle_kinematics: torch.Tensor | None = None,
        causal: bool | None = None,
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
    ) -> JetModelOutput:
        if causal is None:
            causal = self.config.default_attention == "causal"
        cache = past_key_values
        past_length = cache[0][0].shape[2] if cache else 0
        length = input_ids.shape[1]
        if past_length + length > self.config.max_sequence_length:
            raise ValueError(f"sequence of {past_length + length} tokens exceeds max_particles + 2 = {self.config.max_sequence_length}")
        positions = torch.arange(past_length, past_length + length, device=input_ids.device)
        token_ids = input_ids
        if not self.config.token_inputs:
            token_ids = self.hide_codes(input_ids)
        elif self.training and self.config.token_dropout > 0:
            token_ids = self.hide_codes(input_ids, torch.rand(input_ids.shape, device=input_ids.device) < self.config.token_dropout)
        x = self.wte(token_ids) + self.wpe(positions)[None]  # (B, L, D)
        if self.feature_proj is not None:
            if particle_features is None:
                raise ValueError(f"this model takes particle features {self.config.particle_feature_names} beside the tokens")
            x = x + self.feature_proj(particle_features.to(x.dtype))
        x = self.drop(x)
        mask = attention_mask.bool() if attention_mask is not None else None
        attn = attention_mask_for(mask, length, causal=causal, past_length=past_length, device=input_ids.device)
        if self.interaction is not None:
            attn = with_attention_bias(attn, self._interaction_bias(input_ids, particle_kinematics, past_length), past_length)
        x, presents = self.stack(x, attn, cache, use_cache)
        return JetModelOutput(last_hidden_state=x, past_key_values=presents)

    def hide_codes(self, input_ids: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        """(B, L) ids with the particle codes replaced by the mask token: all of them (token_inputs
        false), or those at `where` (B, L) bool (token_dropout); start, stop and padding stay."""
        codes = input_ids < self.config.vocab_codes
        return input_ids.masked_fill(codes if where is None else codes & where, self.config.mask_token_id)

    def _interaction_bias(self, input_ids: torch.Tensor, kinematics: torch.Tensor | None, past_length: int) -> torch.Tensor:
        """(B, H, L, L_past + L): the new positions' rows of the pairwise bias, against every key."""
        if kinematics is None:
            if past_length:
                raise ValueError("with past_key_values, give particle_kinematics for the past and new positions")
            kinematics = self.kinematics_of_tokens(input_ids)
        total = past_length + input_ids.shape[1]
        if kinematics.shape[:2] != (input_ids.shape[0], total):
            raise ValueError(f"particle_kinematics {tuple(kinematics.shape)} must cover the {total} past and new positions")
        queries = kinematics[:, past_length:] if past_length else kinematics  # the same tensor: a symmetric bias
        return self.interaction(queries, kinematics)  # (B, H, L, T)


def particle_feature_embedding(config: JetTransformerConfig) -> nn.Module:
    """(B, L, F) particle features -> (B, L, D), added to the token embeddings. Its last map starts
    at zero (_init_weights), so the features join a model that did not have them smoothly."""
    d, f = config.hidden_size, config.num_particle_features
    if config.particle_embedding == "mlp":
        last = nn.Linear(config.intermediate_size, d)
        module = nn.Sequential(nn.Linear(f, config.intermediate_size), nn.GELU(), last)
    else:
        module = last = nn.Linear(f, d)
    last.zero_init = True
    return module


# ----------------------------------------------------------------------------- objectives
def language_model_labels(input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """The pretraining targets of token sequences: their ids, IGNORE_INDEX at padding. (B, L)"""
    return input_ids.masked_fill(~attention_mask.bool(), IGNORE_INDEX)


def next_token_nll(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-jet negative log-likelihood of the next tokens: position i predicts labels[i + 1].
    -> (nll summed over each jet's targets (B,), targets per jet (B,))."""
    targets = labels[:, 1:]  # (B, L-1)
    valid = targets != IGNORE_INDEX
    pred = logits[:, :-1].float()  # (B, L-1, V)
    nll = F.cross_entropy(pred.reshape(-1, pred.shape[-1]), targets.clamp(min=0).reshape(-1), reduction="none")
    nll = nll.view_as(targets) * valid
    return nll.sum(1), valid.sum(1)


def causal_objective(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Next-token cross entropy, averaged over every target token of the batch."""
    nll, count = next_token_nll(logits, labels)
    return nll.sum() / count.sum().clamp(min=1)


def causal_loss_at_targets(hidden: torch.Tensor, head: nn.Module, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """causal_objective's mean loss from hidden states (B, L, D), with the head applied only where a
    token is to be predicted: no vocabulary-wide logits for padding.
    -> (loss, logits (T, V) of the targets labels[:, 1:][labels[:, 1:] != IGNORE_INDEX], in that order,
    in the head's dtype: bf16 under autocast)."""
    valid = labels[:, 1:] != IGNORE_INDEX  # (B, L-1)
    targets = labels[:, 1:][valid]  # (T,)
    logits = head(hidden[:, :-1][valid])  # (T, V)
    return cross_entropy(logits, targets), logits


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
    particle_kinematics: torch.Tensor | None,
    labels: torch.Tensor | None,
    masked_positions: torch.Tensor | None = None,
    return_logits: bool = True,
) -> MaskedParticleModelingOutput:
    """Masked particle modelling: a random mask_fraction of each jet's particles is replaced by the
    mask token (chosen here, not by the collator, so evaluation can fix its masks), their
    continuous features and kinematics removed, and their token ids predicted."""
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
    if particle_kinematics is not None:  # a masked particle's kinematics would give its token away
        particle_kinematics = particle_kinematics * (~masked_positions)[..., None]
    hidden = transformer(corrupted, attention_mask, particle_features, particle_kinematics, causal=False).last_hidden_state
    if return_logits:
        logits = head(hidden)  # (B, L, vocab_codes)
        picked = logits[masked_positions].float()  # (M, vocab_codes)
    else:
        # Only the masked particles are scored: the head's vocabulary-wide matmul and softmax on the
        # other ~70% of the positions would be thrown away.
        logits = picked = head(hidden[masked_positions])  # (M, vocab_codes), bf16 under autocast
    loss = None
    if labels is not None:
        loss = cross_entropy(picked, labels[masked_positions], ignore_index=IGNORE_INDEX)
    return MaskedParticleModelingOutput(loss, logits, masked_positions, hidden)


def conditioned_on_class(input_ids: torch.Tensor, class_labels: torch.Tensor | None, config: JetTransformerConfig, training: bool) -> torch.Tensor:
    """Class start tokens in place of the generic one, for class-conditional generation.
    In training a fraction keeps the generic start, so the model also learns p(jet)."""
    if class_labels is None or config.num_generation_classes == 0:
        return input_ids
    class_tokens = config.vocab_codes + 4 + class_labels.clamp(0, config.num_generation_classes - 1)
    use_class = torch.ones_like(class_labels, dtype=torch.bool)
    if training and config.unconditional_fraction > 0:
        use_class = torch.rand(class_labels.shape, device=class_labels.device) >= config.unconditional_fraction
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
    _keys_to_ignore_on_load_unexpected = [r"^mpm_head\.", r"^jet_head\.", r"^jet_target_(mean|std)$"]

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        self.transformer = JetTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor | None = None,  # (B, L_past + L)
        particle_features: torch.Tensor | None = None,  # (B, L, F)
        particle_kinematics: torch.Tensor | None = None,  # (B, L_past + L, 4); None: the codes' means
        class_labels: torch.Tensor | None = None,  # (B,) jet classes: class start tokens when configured
        labels: torch.Tensor | None = None,  # (B, L) target ids (language_model_labels), shifted inside
        past_key_values: list[KVCache] | None = None,
        use_cache: bool = False,
    ) -> CausalJetModelingOutput:
        if past_key_values is None:  # with a cache the start token was fed already
            input_ids = conditioned_on_class(input_ids, class_labels, self.config, self.training)
        out = self.transformer(
            input_ids, attention_mask, particle_features, particle_kinematics, causal=True, past_key_values=past_key_values, use_cache=use_cache
        )
        logits = self.lm_head(out.last_hidden_state)  # (B, L, V)
        loss = causal_objective(logits, labels) if labels is not None else None
        return CausalJetModelingOutput(loss, logits, out.past_key_values)

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
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample token sequences (num_jets, <= max_particles + 2) with a key/value cache:
        each new token costs one position. Sequences end at the stop token (pad after it).
        use_cache False runs the whole sequence at every step instead (the same draws, slower).

        guidance (class-conditional models, with class_index): classifier-free guidance, next-token
        logits uncond + guidance * (cond - uncond), the unconditional ones from the generic start
        token the model also learnt (unconditional_fraction). 1 samples the class as learnt; above 1
        each token leans further towards what sets the class apart, at twice the cost per token.

        With interaction attention, each new token's bias row against the cached positions comes
        from the codes' mean kinematics of the whole sequence so far (config.interaction_attention).
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
        interactions = self.transformer.code_kinematics is not None
        if interactions and not bool(self.transformer.code_kinematics.any()):
            raise ValueError("the codes' mean kinematics were never measured (interaction attention needs them to sample)")
        limit = min(max_particles or cfg.max_particles, cfg.max_particles)
        device = self.lm_head.weight.device
        start = cfg.start_token_id if class_index is None else cfg.class_start_token_id(class_index)
        sequences = torch.full((num_jets, 1), start, dtype=torch.long, device=device)
        finished = torch.zeros(num_jets, dtype=torch.bool, device=device)
        allowed = torch.zeros(cfg.vocab_size, dtype=torch.bool, device=device)
        allowed[: cfg.vocab_codes] = True
        # Guided: rows B..2B-1 follow the same tokens from the generic start (one forward pass for both).
        generic_start = torch.full_like(sequences, cfg.start_token_id)
        current = torch.cat([sequences, generic_start]) if guided else sequences
        past = None
        was_training = self.training
        self.eval()
        for position in range(limit + 1):
            kinematics = None
            if interactions:  # (B, T, 4) for the whole sequence; start tokens carry none
                kinematics = self.transformer.kinematics_of_tokens(sequences)
                kinematics = kinematics.repeat(2, 1, 1) if guided else kinematics
            out = self(current, particle_kinematics=kinematics, past_key_values=past, use_cache=use_cache)
            past = out.past_key_values
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
            if use_cache:  # the cache holds the rest
                current = token.repeat(2)[:, None] if guided else token[:, None]
            else:
                current = torch.cat([sequences, torch.cat([generic_start, sequences[:, 1:]], 1)]) if guided else sequences
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
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L)
        particle_features: torch.Tensor | None = None,  # (B, L, F)
        particle_kinematics: torch.Tensor | None = None,  # (B, L, 4); None: the codes' means
        masked_positions: torch.Tensor | None = None,  # (B, L) bool; None: drawn (mask_fraction)
        labels: torch.Tensor | None = None,  # (B, L) target ids, read at the masked positions
    ) -> MaskedParticleModelingOutput:
        return masked_objective(
            self.transformer, self.mpm_head, input_ids, attention_mask, particle_features, particle_kinematics, labels, masked_positions
        )


class JetTransformerForPretraining(_WithLanguageModelHead, JetTransformerPreTrainedModel):
    """Both pretraining objectives on one backbone: causal_loss_weight * next-token +
    masked_loss_weight * masked-particle loss. Its checkpoint loads into either single head.

    With interaction attention the next-token pass takes the codes' mean kinematics (what sampling
    knows), the masked pass the data's particle_kinematics (what tagging knows), when given.
    """

    _tied_weights_keys = {"lm_head.weight": "transformer.wte.weight"}

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        self.transformer = JetTransformerModel(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.mpm_head = _masked_head(config)
        self.jet_head = None
        mean = std = None
        if config.jet_loss_weight > 0:
            self.jet_head = nn.Linear(config.hidden_size, len(JET_OBSERVABLES))
            # The targets' centre and scale, measured once on training jets (set_jet_target_scaling)
            # and saved with the weights: fixed, so evaluation losses compare across steps.
            mean, std = torch.zeros(len(JET_OBSERVABLES)), torch.ones(len(JET_OBSERVABLES))
        self.register_buffer("jet_target_mean", mean)  # None (not saved) without the jet target
        self.register_buffer("jet_target_std", std)
        self.post_init()
        if config.masked_loss_weight == 0:
            # Its loss is off, so it never gets a gradient: frozen, or DDP would wait for one forever.
            self.mpm_head.requires_grad_(False)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L)
        particle_features: torch.Tensor | None = None,  # (B, L, F)
        particle_kinematics: torch.Tensor | None = None,  # (B, L, 4) of the data: masked objective
        class_labels: torch.Tensor | None = None,  # (B,) jet classes (class-conditional models)
        labels: torch.Tensor | None = None,  # (B, L) target ids of both objectives (language_model_labels)
    ) -> JetPretrainingOutput:
        cfg = self.config
        out = JetPretrainingOutput()
        losses = []
        if cfg.causal_loss_weight > 0:
            ids = conditioned_on_class(input_ids, class_labels, cfg, self.training)
            hidden = self.transformer(ids, attention_mask, particle_features, causal=True).last_hidden_state
            out.causal_loss, target_logits = causal_loss_at_targets(hidden, self.lm_head, labels) if labels is not None else (None, None)
            if out.causal_loss is not None:
                losses.append(cfg.causal_loss_weight * out.causal_loss)
        if cfg.masked_loss_weight > 0:
            masked = masked_objective(
                self.transformer, self.mpm_head, input_ids, attention_mask, particle_features, particle_kinematics, labels, return_logits=False
            )
            out.masked_positions, out.masked_loss, masked_logits = masked.masked_positions, masked.loss, masked.logits
            if masked.loss is not None:
                losses.append(cfg.masked_loss_weight * masked.loss)
            if self.jet_head is not None and labels is not None:
                out.jet_loss = self.jet_observable_loss(masked.last_hidden_state, attention_mask, particle_kinematics)
                losses.append(cfg.jet_loss_weight * out.jet_loss)
        if losses:
            out.loss = torch.stack(losses).sum()
        if not self.training:
            # For metrics computed outside (accuracies); in training no vocabulary-wide tensor outlives the step.
            out.target_logits = target_logits.float() if cfg.causal_loss_weight > 0 and target_logits is not None else None
            out.masked_logits = masked_logits.float() if cfg.masked_loss_weight > 0 else None
        return out

    @property
    def jet_target_scaling_measured(self) -> bool:
        return self.jet_head is not None and not (self.jet_target_mean.eq(0).all() and self.jet_target_std.eq(1).all())

    def set_jet_target_scaling(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        """Store the jet observables' centre and scale (K,) each (measure_jet_observable_scaling)."""
        if self.jet_head is None:
            raise ValueError("this model has no jet-level target (config.jet_loss_weight)")
        self.jet_target_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.jet_target_std.copy_(torch.as_tensor(std, dtype=torch.float32))

    def jet_observable_loss(self, hidden: torch.Tensor, attention_mask: torch.Tensor, particle_kinematics: torch.Tensor | None) -> torch.Tensor:
        """Huber loss of the linear jet head on the mean-pooled hidden state (B, L, D) against the jet's
        standardised observables (JET_OBSERVABLES); Huber because a few-particle jet's log D2 is an outlier."""
        if particle_kinematics is None:
            raise ValueError("jet_loss_weight > 0: the batch must hold particle_kinematics (the jets, not a token file)")
        targets = (jet_observables(particle_kinematics) - self.jet_target_mean) / self.jet_target_std  # (B, K), float32
        predicted = self.jet_head(mean_pool(hidden, attention_mask)).float()  # (B, K)
        return F.smooth_l1_loss(predicted, targets)


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
    _keys_to_ignore_on_load_unexpected = [r"^lm_head\.", r"^mpm_head\.", r"^jet_head\.", r"^jet_target_(mean|std)$"]

    def __init__(self, config: JetTransformerConfig):
        super().__init__(config)
        d = config.hidden_size
        self.transformer = JetTransformerModel(config)
        self.pooling = ClassAttentionPooling(d, config.num_heads) if config.classifier_pooling == "class_attention" else None
        self.classifier = nn.Sequential(
            nn.Linear(d, d), nn.GELU(), nn.Dropout(config.classifier_dropout), nn.Linear(d, config.num_labels)
        )
        self.post_init()

    def pool(self, input_ids, attention_mask, particle_features=None, particle_kinematics=None) -> torch.Tensor:
        causal = self.config.default_attention == "causal"
        hidden = self.transformer(input_ids, attention_mask, particle_features, particle_kinematics, causal=causal).last_hidden_state
        if self.pooling is not None:
            return self.pooling(hidden, attention_mask)
        return mean_pool(hidden, attention_mask)

    def forward(
        self,
        input_ids: torch.Tensor,  # (B, L)
        attention_mask: torch.Tensor,  # (B, L)
        particle_features: torch.Tensor | None = None,  # (B, L, F)
        particle_kinematics: torch.Tensor | None = None,  # (B, L, 4); None: the codes' means
        labels: torch.Tensor | None = None,  # (B,) jet classes
    ) -> JetClassificationOutput:
        pooled = self.pool(input_ids, attention_mask, particle_features, particle_kinematics)
        logits = self.classifier(pooled)  # (B, C)
        loss = F.cross_entropy(logits.float(), labels) if labels is not None else None
        return JetClassificationOutput(loss, logits, pooled)
