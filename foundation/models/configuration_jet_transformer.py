"""Configuration of the jet transformer backbone and its heads."""

from __future__ import annotations

from transformers import PretrainedConfig

ATTENTION_MODES = ("causal", "bidirectional")
POOLINGS = ("class_attention", "mean")
PARTICLE_EMBEDDINGS = ("linear", "mlp")


class JetTransformerConfig(PretrainedConfig):
    """Every hyper-parameter of the backbone and heads, with its default.

    Vocabulary (ids): the tokenizer's particle codes 0 .. vocab_codes - 1, then
    start = vocab_codes, stop = vocab_codes + 1, pad = vocab_codes + 2 (as the tokenizer),
    mask = vocab_codes + 3 (masked particle modelling), and one start token per class,
    vocab_codes + 4 + c, when num_generation_classes > 0 (class-conditional generation).
    """

    model_type = "jet_transformer"

    def __init__(
        self,
        vocab_codes: int = 8192,
        max_particles: int = 128,
        hidden_size: int = 256,
        num_layers: int = 6,
        num_heads: int = 8,
        intermediate_size: int = 1024,
        dropout: float = 0.0,
        particle_feature_names: list[str] | None = None,
        num_generation_classes: int = 0,
        generation_class_names: list[str] | None = None,
        unconditional_fraction: float = 0.2,
        causal_loss_weight: float = 1.0,
        masked_loss_weight: float = 0.0,
        mask_fraction: float = 0.3,
        classifier_attention: str | None = None,
        classifier_pooling: str = "class_attention",
        classifier_dropout: float = 0.1,
        initializer_range: float = 0.02,
        tie_word_embeddings: bool = True,
        # Pairwise interaction attention (ParT, arXiv 2202.03772): for every particle pair ln ΔR,
        # ln kT, ln z and ln m², embedded by a pointwise MLP (interaction_hidden_size wide) into one
        # bias per head, added to the attention logits of every layer. Kinematics come from the
        # data (particle_kinematics) in fine-tuning and masked modelling, and from each code's mean
        # particle kinematics (measured on the training data, stored in the model) in next-token
        # modelling and generation. Off: the model is exactly as before (and loads old bundles).
        interaction_attention: bool = False,
        interaction_hidden_size: int = 32,
        # Auxiliary jet-level target (models/jet_observables.py): the masked pass's mean-pooled hidden
        # state regresses, through a linear head, the jet's standardised log mass, log pT, log
        # multiplicity, log e2 and log D2 computed from its constituents, with this weight beside the
        # two token losses. Keeps the coarse jet physics a few-label tagger needs prominent in the
        # embedding of a long-pretrained backbone. Needs masked_loss_weight > 0 and the jets'
        # kinematics (not a token file). 0: off, and the model is exactly as before.
        jet_loss_weight: float = 0.0,
        # How particle_features enter the residual stream: "linear" (one zero-initialised map) or
        # "mlp" (Linear -> GELU -> zero-initialised Linear, intermediate_size wide, as ParT embeds its
        # particles before attention). Both start at zero, so a model pretrained on tokens alone
        # starts fine-tuning unchanged.
        particle_embedding: str = "linear",
        # False: the backbone does not read the particles' codes: every particle position gets the
        # mask token's embedding and the particle is seen through particle_features alone (a
        # from-scratch tagger without the tokenizer's discrete input). Needs particle features.
        token_inputs: bool = True,
        # Fine-tuning regulariser: in training mode, each particle's code is hidden behind the mask
        # token with this probability (its particle_features still enter), so a tagger cannot lean on
        # exact code combinations that few labelled jets share; a masked-particle pretrained backbone
        # has seen such inputs. 0: off. Evaluation always reads every code.
        token_dropout: float = 0.0,
        **kwargs,
    ):
        self.vocab_codes = vocab_codes
        self.max_particles = max_particles
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.dropout = dropout
        self.particle_feature_names = list(particle_feature_names or [])
        self.num_generation_classes = num_generation_classes
        self.generation_class_names = list(generation_class_names or [])
        self.unconditional_fraction = unconditional_fraction
        self.causal_loss_weight = causal_loss_weight
        self.masked_loss_weight = masked_loss_weight
        self.mask_fraction = mask_fraction
        self.classifier_attention = classifier_attention
        self.classifier_pooling = classifier_pooling
        self.classifier_dropout = classifier_dropout
        self.initializer_range = initializer_range
        self.interaction_attention = interaction_attention
        self.interaction_hidden_size = interaction_hidden_size
        self.jet_loss_weight = jet_loss_weight
        self.particle_embedding = particle_embedding
        self.token_inputs = token_inputs
        self.token_dropout = token_dropout
        for derived in ("start_token_id", "stop_token_id", "pad_token_id", "mask_token_id", "vocab_size"):
            kwargs.pop(derived, None)
        super().__init__(tie_word_embeddings=tie_word_embeddings, **kwargs)
        self.start_token_id = vocab_codes
        self.stop_token_id = vocab_codes + 1
        self.pad_token_id = vocab_codes + 2
        self.mask_token_id = vocab_codes + 3
        self.vocab_size = vocab_codes + 4 + num_generation_classes
        self.validate()

    def validate(self) -> None:
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.causal_loss_weight < 0 or self.masked_loss_weight < 0:
            raise ValueError("causal_loss_weight and masked_loss_weight must be >= 0")
        if self.causal_loss_weight == 0 and self.masked_loss_weight == 0:
            raise ValueError("at least one of causal_loss_weight and masked_loss_weight must be positive")
        if not 0 < self.mask_fraction < 1:
            raise ValueError(f"mask_fraction must be in (0, 1), got {self.mask_fraction}")
        if not 0 <= self.unconditional_fraction <= 1:
            raise ValueError(f"unconditional_fraction must be in [0, 1], got {self.unconditional_fraction}")
        if self.classifier_attention not in (None, *ATTENTION_MODES):
            raise ValueError(f"classifier_attention must be one of {ATTENTION_MODES} or null, got {self.classifier_attention!r}")
        if self.classifier_pooling not in POOLINGS:
            raise ValueError(f"classifier_pooling must be one of {POOLINGS}, got {self.classifier_pooling!r}")
        if self.jet_loss_weight < 0:
            raise ValueError(f"jet_loss_weight must be >= 0, got {self.jet_loss_weight}")
        if self.jet_loss_weight > 0 and self.masked_loss_weight == 0:
            raise ValueError("jet_loss_weight reads the masked pass: it needs masked_loss_weight > 0")
        if self.interaction_hidden_size < 1:
            raise ValueError(f"interaction_hidden_size must be >= 1, got {self.interaction_hidden_size}")
        if self.particle_embedding not in PARTICLE_EMBEDDINGS:
            raise ValueError(f"particle_embedding must be one of {PARTICLE_EMBEDDINGS}, got {self.particle_embedding!r}")
        if not self.token_inputs and not self.particle_feature_names:
            raise ValueError("token_inputs false leaves the particles nothing to be seen by: give particle features")
        if not 0 <= self.token_dropout < 1:
            raise ValueError(f"token_dropout must be in [0, 1), got {self.token_dropout}")
        if self.generation_class_names and len(self.generation_class_names) != self.num_generation_classes:
            raise ValueError("generation_class_names must name num_generation_classes classes")

    @property
    def num_particle_features(self) -> int:
        return len(self.particle_feature_names)

    @property
    def max_sequence_length(self) -> int:
        return self.max_particles + 2

    def class_start_token_id(self, class_index: int) -> int:
        if not 0 <= class_index < self.num_generation_classes:
            raise ValueError(f"class {class_index} outside the {self.num_generation_classes} generation classes")
        return self.vocab_codes + 4 + class_index

    @property
    def default_attention(self) -> str:
        """Attention for classification and embeddings when not set: bidirectional if the model
        was trained bidirectionally (masked modelling), causal if only autoregressively."""
        if self.classifier_attention:
            return self.classifier_attention
        return "bidirectional" if self.masked_loss_weight > 0 else "causal"
