"""Pairwise interaction attention (ParT, arXiv 2202.03772): for each particle pair ln ΔR, ln kT,
ln z and ln m², embedded by a small pointwise MLP into one attention bias per head.

Kinematics enter as (B, T, 4) tensors of (pT [GeV], η_rel, φ_rel, E [GeV]) per sequence position,
zero where the position holds no particle (start, stop, class, mask and pad tokens): pT > 0 marks a
particle. Pairs without two particles, and collinear pairs (ΔR ~ 0, the diagonal among them), get
no bias (0): their logarithms are clamped before the log, so they are finite, and then masked out.
"""

from __future__ import annotations

import math

import torch
from torch import nn

# Per-particle inputs, in this order: what the data pipeline computes for each particle
# (foundation.data.features names) and what the code table holds per token.
KINEMATIC_FEATURES = ("log_pt", "eta_rel", "phi_rel", "log_e")
NUM_PAIR_FEATURES = 4  # ln ΔR, ln kT, ln z, ln m²
EPS = 1e-8  # clamp before every log (ParT's choice): ln(1e-8) = -18.4 bounds the features
COLLINEAR_DELTA_R = 1e-6  # pairs closer than this carry no direction: masked out


def kinematics_from_features(features: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(..., 4) features in KINEMATIC_FEATURES order + (...) mask -> (..., 4) (pT, η_rel, φ_rel, E), zero where masked."""
    log_pt, eta, phi, log_e = features.unbind(-1)
    kinematics = torch.stack([log_pt.exp(), eta, phi, log_e.exp()], dim=-1)
    return kinematics * mask[..., None].to(kinematics.dtype)


def pair_features(query: torch.Tensor, key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ParT's pair features of every (query, key) pair.

    query (B, Q, 4), key (B, T, 4): (pT, η_rel, φ_rel, E), zero rows for non-particles.
    -> features (B, Q, T, 4): ln ΔR, ln kT, ln z, ln m², finite everywhere;
       valid (B, Q, T) bool: both positions hold particles and the pair is not collinear.
    kT = min(pT_a, pT_b)·ΔR, z = min(pT_a, pT_b) / (pT_a + pT_b), m² = (E_a + E_b)² − |p_a + p_b|².
    ΔR uses η (the inputs are relative pseudorapidities), with Δφ wrapped into [-π, π], so the
    features are symmetric and invariant under a rotation of the whole jet in φ.
    """
    query, key = query.float(), key.float()  # logs and squared sums need float32 under bf16
    pt_a, eta_a, phi_a, e_a = (t[:, :, None] for t in query.unbind(-1))  # (B, Q, 1)
    pt_b, eta_b, phi_b, e_b = (t[:, None, :] for t in key.unbind(-1))  # (B, 1, T)
    # Wrapped into [-π, π] as d − 2π·round(d / 2π): exactly odd in d, so every feature below is
    # bitwise symmetric in (a, b) and the bias of a cached row equals the full pass's.
    delta_phi = phi_a - phi_b
    delta_phi = delta_phi - 2 * math.pi * torch.round(delta_phi / (2 * math.pi))
    delta_r = torch.sqrt((eta_a - eta_b) ** 2 + delta_phi**2)  # (B, Q, T)
    pt_min = torch.minimum(pt_a, pt_b)
    kt = pt_min * delta_r
    z = pt_min / (pt_a + pt_b).clamp(min=EPS)
    m2 = _pair_mass_squared(pt_a, eta_a, e_a, pt_b, eta_b, e_b, eta_a - eta_b, delta_phi)
    features = torch.stack([t.clamp(min=EPS).log() for t in (delta_r, kt, z, m2)], dim=-1)  # (B, Q, T, 4)
    valid = (pt_a > 0) & (pt_b > 0) & (delta_r > COLLINEAR_DELTA_R)
    return features, valid


def _pair_mass_squared(pt_a, eta_a, e_a, pt_b, eta_b, e_b, delta_eta, delta_phi) -> torch.Tensor:
    """m² = (E_a + E_b)² − |p_a + p_b|², as a sum of non-negative terms: in float32 the direct
    difference cancels for nearly collinear pairs (m² ~ 1e-4 E²) and its log would be noise.

    With |p| = pT cosh η and d = E − |p| >= 0 per particle (0 when massless):
    m² = m_a² + m_b² + 2 (E_a E_b − p_a·p_b), m² = d (E + |p|) for each particle, and
    cosh Δη − cos Δφ = 2 sinh²(Δη/2) + 2 sin²(Δφ/2).
    """
    p_a, p_b = pt_a * torch.cosh(eta_a), pt_b * torch.cosh(eta_b)  # |p|
    d_a, d_b = (e_a - p_a).clamp(min=0), (e_b - p_b).clamp(min=0)
    separation = 2 * torch.sinh(delta_eta / 2) ** 2 + 2 * torch.sin(delta_phi / 2) ** 2
    # E_a E_b − p_a·p_b = pT_a pT_b (cosh Δη − cos Δφ) + |p_a| d_b + d_a |p_b| + d_a d_b (symmetric in a, b)
    dot = pt_a * pt_b * separation + (p_a * d_b + d_a * p_b) + d_a * d_b
    return d_a * (e_a + p_a) + d_b * (e_b + p_b) + 2 * dot


class PairInteractionEmbedding(nn.Module):
    """Pair features -> one additive attention bias per head, (B, H, Q, T).

    A pointwise MLP (ParT's 1x1 convolutions) applied to the valid pairs only: padded pairs cost
    nothing, so memory follows the jets' real multiplicities rather than the padded length; when
    queries and keys are the same positions (no cache) only the pairs i < j are embedded and the
    bias mirrored (the features are symmetric), half the work.
    Its last layer starts at zero, so a model starts as it would without interactions.
    """

    def __init__(self, num_heads: int, hidden_size: int):
        super().__init__()
        self.num_heads = num_heads
        self.mlp = nn.Sequential(
            nn.Linear(NUM_PAIR_FEATURES, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, hidden_size),
            nn.GELU(),
            nn.Linear(hidden_size, num_heads),
        )
        self.mlp[-1].zero_init = True

    def forward(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        features, valid = pair_features(query, key)  # (B, Q, T, 4), (B, Q, T)
        square = query is key
        if square:  # the diagonal is collinear (masked): the pairs i < j determine the rest
            valid = valid & torch.ones(valid.shape[1:], dtype=torch.bool, device=valid.device).triu(1)
        per_pair = self.mlp(features[valid])  # (P, 4) -> (P, H), P valid pairs
        bias = per_pair.new_zeros(*valid.shape, self.num_heads)  # (B, Q, T, H)
        bias[valid] = per_pair
        if square:
            bias = bias + bias.transpose(1, 2)
        return bias.permute(0, 3, 1, 2)  # (B, H, Q, T)


@torch.no_grad()
def measure_code_kinematics(batches, vocab_codes: int) -> torch.Tensor:
    """Each code's mean particle kinematics over real jets: what next-token modelling knows of a
    particle when only its token is known (at sampling time).

    batches: dicts with input_ids (B, L), particle_kinematics (B, L, 4) (pT, η_rel, φ_rel, E).
    -> (vocab_codes, 4) (pT, η_rel, φ_rel, E): means of ln pT, η_rel and φ_rel (pT = exp of the
    mean log, E that of a massless particle there); codes never seen get the mean of all particles.
    """
    sums = torch.zeros(vocab_codes, 3, dtype=torch.float64)
    counts = torch.zeros(vocab_codes, dtype=torch.float64)
    for batch in batches:
        ids, kinematics = batch["input_ids"], batch["particle_kinematics"].double()
        real = (ids < vocab_codes) & (kinematics[..., 0] > 0)  # (B, L) particle positions
        codes, values = ids[real], kinematics[real]  # (P,), (P, 4)
        per_particle = torch.stack([values[:, 0].log(), values[:, 1], values[:, 2]], dim=-1)  # (P, 3)
        sums.index_add_(0, codes, per_particle)
        counts.index_add_(0, codes, torch.ones_like(codes, dtype=torch.float64))
    if counts.sum() == 0:
        raise ValueError("no particles to measure the codes' mean kinematics on")
    overall = sums.sum(0) / counts.sum()
    means = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], overall)  # (V, 3)
    pt, eta, phi = means[:, 0].exp(), means[:, 1], means[:, 2]
    return torch.stack([pt, eta, phi, pt * torch.cosh(eta)], dim=-1).float()  # (V, 4)
