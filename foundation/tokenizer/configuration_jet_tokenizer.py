"""Configuration of the VQ-VAE jet tokenizer."""

from __future__ import annotations

import math

from transformers import PretrainedConfig

QUANTIZERS = ("vq", "rvq", "fsq")
# The features a jet's mass and pT are computed from (massless particles around the jet axis).
JET_FEATURES = ("log_pt", "eta_rel", "phi_rel")


class JetTokenizerConfig(PretrainedConfig):
    """Every hyper-parameter of the tokenizer, with its default.

    Token ids: codes are 0 .. vocab_codes - 1; then the special tokens
    start = vocab_codes, stop = vocab_codes + 1, pad = vocab_codes + 2.
    For `rvq`, a particle's residual codes (i_0, i_1, ...) combine into one id
    i_0 + K i_1 + K^2 i_2 + ...; for `fsq` the id is the library's flat index over the levels.
    """

    model_type = "jet_tokenizer"

    def __init__(
        self,
        feature_names: list[str] | None = None,
        max_particles: int = 128,
        hidden_size: int = 128,
        num_encoder_layers: int = 3,
        num_decoder_layers: int = 3,
        num_heads: int = 4,
        intermediate_size: int = 256,
        dropout: float = 0.0,
        quantizer: str = "vq",
        codebook_size: int = 8192,
        code_dim: int = 8,
        num_quantizers: int = 2,
        fsq_levels: list[int] | None = None,
        ema_decay: float = 0.9,
        kmeans_init: bool = True,
        kmeans_iters: int = 10,
        dead_code_threshold: float = 0.1,
        rotation_trick: bool = True,
        cosine_similarity: bool = False,
        commitment_weight: float = 0.25,
        jet_loss_weight: float = 0.0,
        pt_weighting: float = 0.0,
        codebook_pt_weighting: float = 0.0,
        mass_weighting: float = 0.0,
        rank_embedding: bool = False,
        phi_axis_constraint: bool = False,
        encode_search_candidates: int = 1,
        encode_search_particles: int = 8,
        **kwargs,
    ):
        # Particle features encoded and decoded (a recipe sets them from data.features); decoding
        # into 4-momenta needs log_pt, eta_rel and phi_rel.
        self.feature_names = list(feature_names or ["log_pt", "eta_rel", "phi_rel"])
        self.max_particles = max_particles  # particles per jet (from data.max_particles)
        self.hidden_size = hidden_size  # width of the encoder and decoder transformers
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads  # attention heads of both
        self.intermediate_size = intermediate_size  # feed-forward width of both
        self.dropout = dropout
        self.quantizer = quantizer  # "vq": one codebook; "rvq": residual, num_quantizers codebooks; "fsq": fsq_levels
        self.codebook_size = codebook_size  # codes per codebook (vq, rvq)
        self.code_dim = code_dim  # dimension the codes live in (the encoder projects down to it)
        self.num_quantizers = num_quantizers  # rvq: codebooks, each quantising the previous one's residual
        self.fsq_levels = list(fsq_levels or [8, 8, 8, 4, 4])  # fsq: levels per dimension (codes: their product)
        self.ema_decay = ema_decay  # codebook update by exponential moving average of its particles
        self.kmeans_init = kmeans_init  # initialise the codebook by k-means on the particles of codebook_init_jets jets
        self.kmeans_iters = kmeans_iters  # iterations of that k-means
        # Codes whose EMA count of particles per step falls below this are re-seeded from the batch.
        # Keep it well below a code's average use (particles per step / codebook_size), or ordinary
        # codes get re-seeded every step (the tokenizer pipeline warns).
        self.dead_code_threshold = dead_code_threshold
        self.rotation_trick = rotation_trick  # gradients through the quantiser by the rotation trick (arXiv 2410.06424)
        self.cosine_similarity = cosine_similarity  # nearest codes by cosine instead of Euclidean distance
        self.commitment_weight = commitment_weight  # pulls the encoder's outputs towards their codes
        self.jet_loss_weight = jet_loss_weight  # also match each decoded jet's mass and pT (needs JET_FEATURES)
        # Reconstruction weight of a particle: (1 - a) + a * s_i, with s_i its share of the jet
        # (mean 1 per jet; see mass_weighting). Hard particles set a jet's mass; a > 0 spends the
        # codes' precision on them.
        self.pt_weighting = pt_weighting
        # The EMA codebook follows the density of the particles it sees, and soft particles
        # outnumber the hard ones that set a jet's mass. With b > 0 each particle enters the
        # codebook update round(s_i ** b) times (at least once), so codes crowd where the jet's
        # momentum is (b = 1: a pT-weighted k-means). Training only.
        self.codebook_pt_weighting = codebook_pt_weighting
        # A particle's share s_i = (1 - c) * n pT_i / sum pT + c * n (p_i . P) / M^2: with c > 0 also
        # its share of the jet mass squared (P the jet's 4-momentum, M its mass; sum_i p_i . P = M^2).
        # Soft particles far from the axis have a tiny pT share but can carry much of a narrow
        # jet's mass (a 0.03 GeV hadron 2 units of eta away: ~14% of M^2 at M = 30 GeV).
        self.mass_weighting = mass_weighting
        # The decoder also sees each particle's rank in its jet (particles come pT-ordered, and a
        # token sequence keeps that order): the ordering is information the codes need not carry
        # (a particle's pT lies between its neighbours'). Inputs must then be pT-ordered.
        self.rank_embedding = rank_embedding
        # Decoded particles keep the jet's phi axis where the features put it (sum_i pT_i sin phi_i
        # = 0): the least shift of their phi_rel that restores it (restore_phi_axis). Quantisation
        # moves the hard particles' angles; the axis constraint takes part of that back.
        self.phi_axis_constraint = phi_axis_constraint
        # Encoding by search instead of nearest codes: for the encode_search_particles particles
        # with the largest share of their jet, try each of their encode_search_candidates nearest
        # codes in turn and keep the one whose decoded jet has the lowest training loss (particle
        # reconstruction + jet mass and pT). The nearest code is not the best token: the decoder
        # reads each code in the context of the whole jet. 1 = nearest codes only. Costs
        # 1 + particles x (candidates - 1) decoder passes per batch when encoding; training is unchanged.
        self.encode_search_candidates = encode_search_candidates
        self.encode_search_particles = encode_search_particles
        for derived in ("start_token_id", "stop_token_id", "pad_token_id", "vocab_size"):
            kwargs.pop(derived, None)  # written to config.json for readers, always re-derived here
        super().__init__(**kwargs)
        self.validate()
        self.start_token_id = self.vocab_codes
        self.stop_token_id = self.vocab_codes + 1
        self.pad_token_id = self.vocab_codes + 2
        self.vocab_size = self.vocab_codes + 3  # codes plus start, stop and pad

    def validate(self) -> None:
        if self.quantizer not in QUANTIZERS:
            raise ValueError(f"quantizer must be one of {QUANTIZERS}, got {self.quantizer!r}")
        if self.codebook_size < 2:
            raise ValueError(f"codebook_size must be at least 2, got {self.codebook_size}")
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.quantizer == "fsq" and any(level < 3 for level in self.fsq_levels):
            raise ValueError(f"fsq_levels must each be at least 3, got {self.fsq_levels}")
        if not 0 < self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if not 0 <= self.pt_weighting <= 1:
            raise ValueError(f"pt_weighting must be in [0, 1], got {self.pt_weighting}")
        if not 0 <= self.codebook_pt_weighting <= 2:
            raise ValueError(f"codebook_pt_weighting must be in [0, 2], got {self.codebook_pt_weighting}")
        if not 0 <= self.mass_weighting <= 1:
            raise ValueError(f"mass_weighting must be in [0, 1], got {self.mass_weighting}")
        if not 1 <= self.encode_search_candidates <= self.codebook_size:
            raise ValueError(f"encode_search_candidates must be in [1, codebook_size={self.codebook_size}], got {self.encode_search_candidates}")
        if self.encode_search_particles < 1:
            raise ValueError(f"encode_search_particles must be at least 1, got {self.encode_search_particles}")
        if self.encode_search_candidates > 1 and (self.quantizer != "vq" or self.cosine_similarity):
            raise ValueError("encode_search_candidates > 1 needs a Euclidean vq codebook (quantizer vq, cosine_similarity false)")
        if self.codebook_pt_weighting and self.quantizer == "fsq":
            raise ValueError("codebook_pt_weighting needs a learnt codebook (quantizer vq or rvq), not fsq")
        needs_jet = (self.jet_loss_weight or self.pt_weighting or self.codebook_pt_weighting or self.mass_weighting
                     or self.phi_axis_constraint or self.encode_search_candidates > 1)  # the search ranks particles by their share
        if needs_jet and not self.has_jet_features:
            raise ValueError("jet_loss_weight, pt_weighting, codebook_pt_weighting, mass_weighting, phi_axis_constraint and "
                             "encode_search_candidates > 1 need the features log_pt, eta_rel and phi_rel")

    @property
    def has_jet_features(self) -> bool:
        """Whether decoded particles give a jet mass and pT (JET_FEATURES are all among the features)."""
        return all(n in self.feature_names for n in JET_FEATURES)

    @property
    def vocab_codes(self) -> int:
        """Number of distinct particle tokens."""
        if self.quantizer == "rvq":
            return self.codebook_size**self.num_quantizers
        if self.quantizer == "fsq":
            return math.prod(self.fsq_levels)
        return self.codebook_size
