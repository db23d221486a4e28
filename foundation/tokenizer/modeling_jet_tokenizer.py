"""The VQ-VAE jet tokenizer.

features (B, N, F) --standardise--> encoder (transformer over the particles of a jet, so each
particle's code can depend on its jet) --> z (B, N, C) --quantiser--> codes, one token per particle
--> decoder (transformer over all codes of the jet) --> reconstructed features (B, N, F).
Padded particles get no code (the pad token), and are kept out of the losses and the codebook
updates (vector-quantize-pytorch's `mask`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers.utils import ModelOutput
from vector_quantize_pytorch import FSQ, ResidualVQ, VectorQuantize

from foundation.data.features import compute_features, features_to_constituents
from foundation.data.jets import JetArrays
from foundation.layers import TransformerStack, attention_mask_for
from foundation.tokenizer.configuration_jet_tokenizer import JetTokenizerConfig


@dataclass
class JetTokenizerOutput(ModelOutput):
    loss: torch.Tensor | None = None
    reconstruction_loss: torch.Tensor | None = None
    commitment_loss: torch.Tensor | None = None
    jet_loss: torch.Tensor | None = None
    reconstruction: torch.Tensor | None = None  # (B, N, F) features, in physical units
    token_ids: torch.Tensor | None = None  # (B, N), pad token where masked


def _build_quantizer(config: JetTokenizerConfig) -> nn.Module:
    common = dict(
        decay=config.ema_decay,
        kmeans_init=config.kmeans_init,
        kmeans_iters=config.kmeans_iters,
        threshold_ema_dead_code=config.dead_code_threshold,
        rotation_trick=config.rotation_trick,
        use_cosine_sim=config.cosine_similarity,
        commitment_weight=config.commitment_weight,
    )
    if config.quantizer == "vq":
        return VectorQuantize(dim=config.code_dim, codebook_size=config.codebook_size, **common)
    if config.quantizer == "rvq":
        return ResidualVQ(
            dim=config.code_dim, num_quantizers=config.num_quantizers, codebook_size=config.codebook_size, **common
        )
    # FSQ computes its codebook size with .item() in __init__, which fails on the meta device
    # transformers builds models on in from_pretrained; its buffers are fixed, so build it on CPU.
    with torch.device("cpu"):
        return FSQ(levels=config.fsq_levels, dim=config.code_dim)


def particle_four_momenta(features: torch.Tensor, mask: torch.Tensor, names: list[str]) -> torch.Tensor:
    """(B, N, 4) E, px, py, pz of massless particles from log_pt, eta_rel, phi_rel; zero where masked."""
    pt = torch.exp(features[..., names.index("log_pt")]) * mask  # (B, N)
    eta = features[..., names.index("eta_rel")]
    phi = features[..., names.index("phi_rel")]
    return torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1)


def minkowski_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """(..., 4) x (..., 4) -> (...) E_a E_b - p_a . p_b."""
    return a[..., 0] * b[..., 0] - (a[..., 1:] * b[..., 1:]).sum(-1)


def restore_phi_axis(features: torch.Tensor, mask: torch.Tensor, names: list[str], iterations: int = 2) -> torch.Tensor:
    """(B, N, F) features whose phi_rel moved by the least (Euclidean) amount that puts the jet's phi
    axis back at 0: phi_rel is measured from the axis, so the jet's p_y = sum_i pT_i sin(phi_i) is
    0 for the original particles, exactly. Newton steps on that one constraint; differentiable."""
    pt = torch.exp(features[..., names.index("log_pt")]) * mask  # (B, N)
    i_phi = names.index("phi_rel")
    phi = features[..., i_phi]
    for _ in range(iterations):
        p_y = (pt * torch.sin(phi)).sum(1, keepdim=True)  # (B, 1)
        gradient = pt * torch.cos(phi)  # (B, N) d p_y / d phi_i
        phi = phi - p_y * gradient / (gradient**2).sum(1, keepdim=True).clamp(min=1e-12)
    return torch.cat([features[..., :i_phi], phi[..., None], features[..., i_phi + 1 :]], -1)


def jet_mass_and_pt(features: torch.Tensor, mask: torch.Tensor, names: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Differentiable jet mass and pT (B,) from log_pt, eta_rel, phi_rel of massless particles."""
    jet = particle_four_momenta(features, mask, names).sum(1)  # (B, 4)
    mass = torch.sqrt(torch.clamp(minkowski_dot(jet, jet), min=1e-6))
    return mass, torch.hypot(jet[:, 1], jet[:, 2])


class JetTokenizer(PreTrainedModel):
    config_class = JetTokenizerConfig
    base_model_prefix = "tokenizer"
    main_input_name = "features"

    def __init__(self, config: JetTokenizerConfig):
        super().__init__(config)
        num_features = len(config.feature_names)
        d = config.hidden_size
        # Feature scaling learnt from the training data (set_feature_scaling), saved with the weights.
        self.register_buffer("feature_mean", torch.zeros(num_features))
        self.register_buffer("feature_std", torch.ones(num_features))
        self.input_proj = nn.Linear(num_features, d)
        self.encoder = TransformerStack(config.num_encoder_layers, d, config.num_heads, config.intermediate_size, config.dropout)
        self.to_code = nn.Linear(d, config.code_dim)
        self.quantizer = _build_quantizer(config)
        self.from_code = nn.Linear(config.code_dim, d)
        self.rank_embedding = nn.Embedding(config.max_particles, d) if config.rank_embedding else None
        self.decoder = TransformerStack(config.num_decoder_layers, d, config.num_heads, config.intermediate_size, config.dropout)
        self.output_proj = nn.Linear(d, num_features)
        # freeze_codebook(): the codebook stops moving; without train_encoder also the encoder
        # (every jet keeps its tokens, only the decoder learns)
        self.codebook_frozen = False
        self.encoder_frozen = False
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        elif isinstance(module, FSQ):
            # FSQ's level/basis buffers are not saved (persistent=False), and from_pretrained
            # allocates them empty: recompute them from the config.
            with torch.device("cpu"):
                fresh = FSQ(levels=self.config.fsq_levels, dim=self.config.code_dim)
            for name, buffer in fresh.named_buffers(recurse=False):
                getattr(module, name).copy_(buffer)

    # ----- scaling -----
    def set_feature_scaling(self, mean: np.ndarray | torch.Tensor, std: np.ndarray | torch.Tensor) -> None:
        self.feature_mean.copy_(torch.as_tensor(mean, dtype=torch.float32))
        self.feature_std.copy_(torch.clamp(torch.as_tensor(std, dtype=torch.float32), min=1e-3))

    def _standardise(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return ((features - self.feature_mean) / self.feature_std) * mask[..., None]

    def _unstandardise(self, features: torch.Tensor) -> torch.Tensor:
        return features * self.feature_std + self.feature_mean

    # ----- the three stages -----
    def _encode_latent(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.input_proj(self._standardise(features, mask))  # (B, N, D)
        x, _ = self.encoder(x, attention_mask_for(mask, x.shape[1], causal=False))
        return self.to_code(x)  # (B, N, C)

    def _quantize(
        self, z: torch.Tensor, mask: torch.Tensor, copies: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> quantised (B, N, C) (zero where masked), flat token ids (B, N) (0 where masked), commitment loss.

        Only the real particles go through the quantiser, gathered into one sequence: its cost
        grows with particles x codes, and padding is often half of a batch. `copies` (B, N), if
        given, is how often each particle enters the codebook update (codebook_pt_weighting): the
        extra copies follow the real particles in the sequence, and only the real ones are kept.
        """
        cfg = self.config
        valid = z[mask]  # (P, C)
        num_valid = valid.shape[0]
        if copies is not None:
            valid = torch.cat([valid, valid.repeat_interleave(copies[mask] - 1, dim=0)])  # (P + extra, C)
        valid = valid[None]  # (1, P', C)
        if cfg.quantizer == "fsq":
            q_valid, ids_valid = self.quantizer(valid)
            commit = z.new_zeros(())
        else:
            q_valid, ids_valid, commit = self.quantizer(valid)
            commit = commit.sum()
        q_valid, ids_valid = q_valid[:, :num_valid], ids_valid[:, :num_valid]
        if cfg.quantizer == "rvq":  # (1, P, Q) -> one id per particle
            powers = cfg.codebook_size ** torch.arange(cfg.num_quantizers, device=ids_valid.device)
            ids_valid = (ids_valid.clamp(min=0) * powers).sum(-1)
        quantized = z.new_zeros(z.shape[:-1] + q_valid.shape[-1:]).masked_scatter(mask[..., None], q_valid[0].to(z.dtype))
        ids = torch.zeros(mask.shape, dtype=torch.long, device=z.device)
        ids[mask] = ids_valid[0].long()
        return quantized, ids, commit

    def _codes_to_vectors(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N), valid codes only -> quantised vectors (B, N, C)."""
        cfg = self.config
        ids = ids.clamp(0, cfg.vocab_codes - 1)
        if cfg.quantizer == "fsq":
            return self.quantizer.indices_to_codes(ids)
        if cfg.quantizer == "rvq":
            levels = torch.stack([(ids // cfg.codebook_size**q) % cfg.codebook_size for q in range(cfg.num_quantizers)], -1)
            return self.quantizer.get_output_from_indices(levels)
        return self.quantizer.get_output_from_indices(ids)

    def _decode_vectors(self, quantized: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.from_code(quantized * mask[..., None])  # (B, N, D)
        if self.rank_embedding is not None:
            rank = (torch.cumsum(mask.long(), 1) - 1).clamp(0, self.config.max_particles - 1)  # (B, N) among real particles
            x = x + self.rank_embedding(rank) * mask[..., None]
        x, _ = self.decoder(x, attention_mask_for(mask, x.shape[1], causal=False))
        features = self._unstandardise(self.output_proj(x))  # (B, N, F)
        if self.config.phi_axis_constraint:
            features = restore_phi_axis(features, mask, self.config.feature_names)
        return features

    # ----- training -----
    def _particle_share(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N) each particle's share of its jet, mean 1 per jet, 0 where masked:
        (1 - c) n pT_i / sum pT + c n (p_i . P) / M^2, with c = mass_weighting (see the config)."""
        names, c = self.config.feature_names, self.config.mass_weighting
        n = mask.sum(1, keepdim=True)  # (B, 1)
        pt = torch.exp(features[..., names.index("log_pt")]) * mask  # (B, N)
        share = pt / pt.sum(1, keepdim=True).clamp(min=1e-12) * n
        if c > 0:
            momenta = particle_four_momenta(features, mask, names)  # (B, N, 4)
            # p_i . P >= 0 for massless p_i and a jet P that is the sum of them; sum_i p_i . P = M^2
            to_jet = minkowski_dot(momenta, momenta.sum(1, keepdim=True)).clamp(min=0)  # (B, N)
            share = (1 - c) * share + c * to_jet / to_jet.sum(1, keepdim=True).clamp(min=1e-12) * n
        return share

    def _codebook_copies(self, features: torch.Tensor, mask: torch.Tensor, share: torch.Tensor | None = None) -> torch.Tensor | None:
        """(B, N) times each particle enters the codebook update, or None (each once; not training).
        `share`: the particles' _particle_share if the caller has it already."""
        b = self.config.codebook_pt_weighting
        if b == 0 or not self.training or self.codebook_frozen:
            return None
        if share is None:
            share = self._particle_share(features, mask)
        return torch.round(share**b).long().clamp(min=1)

    def _reconstruction_errors(
        self, reconstruction: torch.Tensor, features: torch.Tensor, mask: torch.Tensor, share: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The training loss's terms, before reduction: weighted squared errors (B, N, F) of the
        standardised features (0 where masked), and the jet term (B,) (squared log ratios of
        decoded to original jet mass and pT; None without jet_loss_weight)."""
        cfg = self.config
        valid = mask[..., None].float()
        target = self._standardise(features, mask)
        predicted = (reconstruction - self.feature_mean) / self.feature_std
        weight = valid
        if cfg.pt_weighting > 0:
            weight = ((1 - cfg.pt_weighting) + cfg.pt_weighting * share)[..., None] * valid
        per_entry = F.mse_loss(predicted, target, reduction="none") * weight
        jet_term = None
        if cfg.jet_loss_weight > 0:
            m_rec, pt_rec = jet_mass_and_pt(reconstruction, mask, cfg.feature_names)
            m_true, pt_true = jet_mass_and_pt(features, mask, cfg.feature_names)
            jet_term = (torch.log(m_rec) - torch.log(m_true)) ** 2 + (torch.log(pt_rec) - torch.log(pt_true)) ** 2
        return per_entry, jet_term

    def forward(self, features: torch.Tensor, mask: torch.Tensor) -> JetTokenizerOutput:
        """features (B, N, F) in physical units, mask (B, N)."""
        mask = mask.bool()
        # each particle's share of its jet, for the loss weight and the codebook update (computed once)
        share = self._particle_share(features, mask) if self.config.pt_weighting > 0 else None
        if self.encoder_frozen:
            with torch.no_grad():  # fixed tokens: nothing before the decoder learns
                quantized, ids, _ = self._quantize(self._encode_latent(features, mask), mask)
            commit = quantized.new_zeros(())
        else:
            z = self._encode_latent(features, mask)
            quantized, ids, commit = self._quantize(z, mask, self._codebook_copies(features, mask, share))
        reconstruction = self._decode_vectors(quantized, mask)
        per_entry, jet_term = self._reconstruction_errors(reconstruction, features, mask, share)
        recon_loss = per_entry.sum() / (mask.sum() * features.shape[-1]).clamp(min=1)
        loss = recon_loss + commit
        jet_loss = None
        if jet_term is not None:
            jet_loss = jet_term.mean()
            loss = loss + self.config.jet_loss_weight * jet_loss
        ids = torch.where(mask, ids, torch.full_like(ids, self.config.pad_token_id))
        return JetTokenizerOutput(loss, recon_loss, commit, jet_loss, reconstruction, ids)

    @torch.no_grad()
    def initialize_codebook(self, features: torch.Tensor, mask: torch.Tensor) -> bool:
        """k-means initialise the codebook on a large sample of particles (once; no-op after).

        The first training batch alone often holds fewer particles than codes.
        Returns True if it initialised.
        """
        if self.config.quantizer == "fsq" or not self.config.kmeans_init:
            return False
        codebooks = [m for m in self.quantizer.modules() if hasattr(m, "initted")]
        if all(bool(cb.initted) for cb in codebooks):
            return False
        was_training = self.training
        self.train()
        mask = mask.bool()
        self._quantize(self._encode_latent(features, mask), mask, self._codebook_copies(features, mask))
        self.train(was_training)
        return True

    # ----- after training: refit the codebook to the final encoder, then train the decoder on it -----
    @torch.no_grad()
    def particle_latents(self, features: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encoder outputs of the real particles (P, C), and how much each counts in a codebook
        refit (P,): (its share of the jet) ** codebook_pt_weighting, as in the training's codebook update."""
        mask = mask.bool()
        latents = self._encode_latent(features, mask)[mask]
        b = self.config.codebook_pt_weighting
        weights = self._particle_share(features, mask)[mask] ** b if b > 0 else torch.ones_like(latents[:, 0])
        return latents, weights

    @torch.no_grad()
    def set_codebook(self, codes: torch.Tensor) -> None:
        """Replace the vq codebook by `codes` (K, C), e.g. its refit. The EMA average follows, so
        that training on from here starts from these codes."""
        if self.config.quantizer != "vq" or self.config.cosine_similarity:
            raise ValueError(f"set_codebook needs a Euclidean vq codebook, not quantizer={self.config.quantizer!r} (cosine_similarity={self.config.cosine_similarity})")
        codebook = self.quantizer._codebook
        if tuple(codes.shape) != tuple(codebook.embed.shape[1:]):
            raise ValueError(f"codes must have shape {tuple(codebook.embed.shape[1:])}, got {tuple(codes.shape)}")
        codes = codes.to(codebook.embed)
        codebook.embed.copy_(codes[None])  # (1, K, C)
        codebook.embed_avg.copy_(codes[None] * codebook.cluster_size[..., None])

    def freeze_codebook(self, train_encoder: bool = False) -> None:
        """Stop the codebook moving (no EMA update, no dead-code re-seeding). Unless `train_encoder`,
        freeze the encoder too, so every jet keeps its tokens and only the decoder (from_code,
        decoder, output_proj) learns to turn them back into particles; with it, the encoder learns
        to pick among the fixed codes as well."""
        frozen = [self.quantizer] if train_encoder else [self.input_proj, self.encoder, self.to_code, self.quantizer]
        for module in frozen:
            module.requires_grad_(False)
        for module in self.quantizer.modules():
            if hasattr(module, "freeze_codebook"):  # vector-quantize-pytorch's switch
                module.freeze_codebook = True
        self.codebook_frozen = True
        self.encoder_frozen = not train_encoder

    # ----- whole-jet API -----
    @torch.no_grad()
    def encode(self, features: torch.Tensor, mask: torch.Tensor, search: bool | None = None) -> torch.Tensor:
        """Particle features (B, N, F) in physical units -> token ids (B, N); pad token where masked.

        `search` (default: the config's encode_search_candidates > 1): pick the hardest particles'
        tokens among their nearest codes by the decoded jet's loss (_search_tokens) instead of
        taking the nearest code."""
        mask = mask.bool()
        latents = self._encode_latent(features, mask)
        ids = self._nearest_code_ids(latents, mask)
        if search is None:
            search = self.config.encode_search_candidates > 1
        if search and self.config.encode_search_candidates > 1:
            ids = self._search_tokens(latents, ids, features, mask)
        return torch.where(mask, ids, torch.full_like(ids, self.config.pad_token_id))

    def _nearest_code_ids(self, latents: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) of the nearest codes (0 where masked), as the quantiser picks them in evaluation.

        For a plain euclidean VQ codebook, the argmin over codes of |c|^2 - 2 x.c as one matmul per
        block of particles (x augmented with a 1, each code with its |c|^2), kept in cache: about 4x
        cheaper than the library's forward, which builds full distances and a one-hot of particles x
        codes that encoding throws away; tokenisation is on the critical path of every pretraining
        and fine-tuning step. The ids differ from the library's only where two codes are equally near
        to float precision. Other quantisers go through _quantize.
        """
        quantizer = self.quantizer
        plain_vq = (
            isinstance(quantizer, VectorQuantize)
            and not quantizer.training
            and not quantizer._codebook.use_cosine_sim
            and not quantizer._codebook.affine_param
            and quantizer._codebook.vq_bridge is None
            and bool(quantizer._codebook.initted)
            and isinstance(quantizer.project_in, nn.Identity)
            and quantizer.heads == 1
        )
        if not plain_vq:
            return self._quantize(latents, mask)[1]
        codes = quantizer._codebook.embed.detach()[0].float()  # (K, C)
        weights = torch.cat([-2 * codes, (codes**2).sum(-1, keepdim=True)], -1).T.contiguous()  # (C + 1, K)
        flatten = latents[mask].float()  # (P, C)
        flatten = torch.cat([flatten, torch.ones_like(flatten[:, :1])], -1)  # (P, C + 1)
        # min(-1).indices, not argmin(-1): the same ids (the first of equal minima), about 3x faster
        # on a CPU core for 2048 codes (argmin's reduction kernel does not vectorise there)
        nearest = torch.cat([(block @ weights).min(-1).indices for block in flatten.split(512)]) if len(flatten) else flatten.new_zeros(0, dtype=torch.long)
        ids = torch.zeros(mask.shape, dtype=torch.long, device=latents.device)
        ids[mask] = nearest
        return ids

    def _jet_losses(self, ids: torch.Tensor, features: torch.Tensor, mask: torch.Tensor, share: torch.Tensor) -> torch.Tensor:
        """(B,) the training loss of each jet decoded from token ids (B, N), against its features."""
        reconstruction = self._decode_vectors(self._codes_to_vectors(ids), mask)
        per_entry, jet_term = self._reconstruction_errors(reconstruction, features, mask, share)
        loss = per_entry.sum((1, 2)) / (mask.sum(1) * features.shape[-1]).clamp(min=1)
        return loss if jet_term is None else loss + self.config.jet_loss_weight * jet_term

    def _search_tokens(self, latents: torch.Tensor, ids: torch.Tensor, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Token ids (B, N) chosen by a greedy search, from the nearest-code ids (B, N).

        The particles with the largest share of their jet come first, one rank at a time over the
        whole batch: each of a particle's nearest codes is tried in its place, the jet decoded, and
        the code kept if the jet's training loss falls. A particle's candidates are its
        encode_search_candidates nearest codes, so every token stays near what the encoder said.
        """
        cfg = self.config
        b = ids.shape[0]
        share = self._particle_share(features, mask)  # (B, N)
        searched = min(cfg.encode_search_particles, ids.shape[1])
        order = share.masked_fill(~mask, -1.0).argsort(1, descending=True)[:, :searched]  # (B, M) particle index
        codebook = self._codes_to_vectors(torch.arange(cfg.codebook_size, device=ids.device))  # (K, C)
        picked = torch.gather(latents, 1, order[..., None].expand(-1, -1, latents.shape[-1]))  # (B, M, C)
        candidates = torch.cdist(picked, codebook[None].expand(b, -1, -1)).topk(cfg.encode_search_candidates, largest=False).indices  # (B, M, k)
        rows = torch.arange(b, device=ids.device)
        best = self._jet_losses(ids, features, mask, share)  # (B,)
        for rank in range(searched):
            position = order[:, rank]  # (B,)
            real = mask[rows, position]  # jets with fewer particles have none at this rank
            for candidate in candidates[:, rank, 1:].unbind(1):  # (B,) each; the first is the nearest
                trial = ids.clone()
                trial[rows, position] = candidate
                loss = self._jet_losses(trial, features, mask, share)
                better = real & (loss < best)
                ids = torch.where(better[:, None], trial, ids)
                best = torch.where(better, loss, best)
        return ids

    @torch.no_grad()
    def decode(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids (B, N) -> particle features (B, N, F) in physical units (zero where masked)."""
        if mask is None:
            mask = token_ids < self.config.vocab_codes
        mask = mask.bool()
        features = self._decode_vectors(self._codes_to_vectors(token_ids), mask)
        return features * mask[..., None]

    @torch.no_grad()
    def reconstruct_without_codebook(self, features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """(B, N, F) particle features decoded straight from the encoder's latents, the codebook
        skipped: what encoder and decoder reach without quantisation (a diagnostic; the rest of the
        error is the codebook's)."""
        mask = mask.bool()
        latents = self._encode_latent(features, mask) * mask[..., None]
        return self._decode_vectors(latents, mask) * mask[..., None]

    def to_sequence(self, token_ids: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, N) ids -> (B, N + 2) sequences [start, codes..., stop, pad...] and their attention mask."""
        cfg = self.config
        b, n = token_ids.shape
        mask = mask.bool()
        order = torch.argsort((~mask).to(torch.int8), dim=1, stable=True)  # real particles first, in order
        codes = torch.gather(token_ids, 1, order)
        lengths = mask.sum(1)  # (B,)
        positions = torch.arange(n + 2, device=token_ids.device)[None]  # (1, N + 2)
        seq = torch.full((b, n + 2), cfg.pad_token_id, dtype=torch.long, device=token_ids.device)
        seq[:, 0] = cfg.start_token_id
        inside = positions[:, 1 : n + 1] <= lengths[:, None]  # (B, N)
        seq[:, 1 : n + 1] = torch.where(inside, codes, seq[:, 1 : n + 1])
        seq.scatter_(1, (lengths + 1)[:, None], cfg.stop_token_id)
        attention_mask = positions <= (lengths + 1)[:, None]  # start .. stop
        return seq, attention_mask

    def from_sequence(self, sequences: torch.Tensor, max_particles: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L) sequences (any start token first) -> ids (B, N) and mask: the codes up to the first non-code."""
        n = max_particles or self.config.max_particles
        body = sequences[:, 1 : n + 1]
        is_code = body < self.config.vocab_codes
        mask = torch.cumprod(is_code.to(torch.int64), dim=1).bool()  # stops at the first special token
        ids = torch.where(mask, body, torch.full_like(body, self.config.pad_token_id))
        if ids.shape[1] < n:
            pad = torch.full((ids.shape[0], n - ids.shape[1]), self.config.pad_token_id, dtype=ids.dtype, device=ids.device)
            ids, mask = torch.cat([ids, pad], 1), torch.cat([mask, torch.zeros_like(pad, dtype=torch.bool)], 1)
        return ids, mask

    # ----- numpy / JetArrays convenience -----
    def jet_features(self, jets: JetArrays) -> tuple[np.ndarray, np.ndarray]:
        jets = jets.padded_to(self.config.max_particles)
        return compute_features(jets, self.config.feature_names), jets.mask

    @torch.no_grad()
    def decode_to_constituents(self, token_ids: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Token ids -> ((B, N, 4) E, px, py, pz with the jet axis at eta = phi = 0, mask)."""
        if mask is None:
            mask = token_ids < self.config.vocab_codes
        features = self.decode(token_ids, mask).float().cpu().numpy()
        mask_np = mask.bool().cpu().numpy()
        return features_to_constituents(features, self.config.feature_names, mask_np), mask_np
