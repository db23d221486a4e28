"""Jet-level observables computed from the constituents, as an auxiliary pretraining target.

A backbone pretrained long enough spreads its embedding's variance over many directions; the
coarse jet-level physics (mass, prong structure), which with a handful of labels is most of what
tells a top jet from a QCD one, then no longer stands out. Regressing these observables from the
pooled hidden state during pretraining (config.jet_loss_weight) keeps them linearly readable. They
come from the unlabelled jet itself: no label enters pretraining.

Kinematics are the interaction-attention layout: (B, T, 4) of (pT [GeV], η_rel, φ_rel, E [GeV]) per
sequence position, zero rows where no particle sits. Constituents are taken as massless, as the
tokenizer's jet mass does (a boost along the jet axis leaves every observable below unchanged).
"""

from __future__ import annotations

import math

import torch

# What jet_observables returns, column by column.
JET_OBSERVABLES = (
    "log_mass",  # ln m_jet [GeV]
    "log_pt",  # ln pT_jet [GeV]
    "log_multiplicity",  # ln (number of constituents)
    "log_e2",  # ln e2: two-point energy correlation, Σ_{i<j} z_i z_j ΔR_ij (β = 1)
    "log_d2",  # ln D2 = ln e3 / e2³: small for two-prong and QCD-like jets, large for three-prong tops
)
EPS = 1e-8  # clamp before every log: a one-particle jet has e2 = e3 = 0


def jet_observables(kinematics: torch.Tensor) -> torch.Tensor:
    """(B, T, 4) (pT, η_rel, φ_rel, E), zero rows for non-particles -> (B, len(JET_OBSERVABLES)) float32."""
    kinematics = kinematics.float()  # sums of many particles and cubes of fractions: float32 under bf16
    pt, eta, phi, _ = kinematics.unbind(-1)  # (B, T) each
    is_particle = pt > 0
    # Massless four-momenta: E = pT cosh η, p = (pT cos φ, pT sin φ, pT sinh η).
    jet = torch.stack([pt * torch.cosh(eta), pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta)], -1).sum(1)  # (B, 4)
    mass_squared = jet[:, 0] ** 2 - (jet[:, 1:] ** 2).sum(-1)
    jet_pt = torch.hypot(jet[:, 1], jet[:, 2])
    multiplicity = is_particle.sum(1).float()
    z = pt / pt.sum(1, keepdim=True).clamp(min=EPS)  # (B, T) momentum fractions, zero off particles
    delta_r = _pairwise_delta_r(eta, phi)  # (B, T, T), zero on the diagonal
    e2 = 0.5 * torch.einsum("bi,bij,bj->b", z, delta_r, z)
    # e3 = Σ_{i<j<k} z_i z_j z_k ΔR_ij ΔR_jk ΔR_ki = trace((Z R)³) / 6 with Z = diag(z): every term
    # with a repeated index holds a ΔR_ii = 0, so the trace counts each triple 3! times.
    zr = z[:, :, None] * delta_r  # (B, T, T)
    e3 = torch.diagonal(zr @ zr @ zr, dim1=1, dim2=2).sum(-1) / 6
    log_e2 = e2.clamp(min=EPS).log()
    log_d2 = e3.clamp(min=EPS).log() - 3 * log_e2
    columns = [mass_squared.clamp(min=EPS).log() / 2, jet_pt.clamp(min=EPS).log(), multiplicity.clamp(min=1).log(), log_e2, log_d2]
    return torch.stack(columns, -1)


def measure_jet_observable_scaling(batches) -> tuple[torch.Tensor, torch.Tensor]:
    """Centre and scale of each observable over real jets, to standardise the targets with.

    batches: dicts with particle_kinematics (B, L, 4). -> median (K,), half the 16-84% range (K,):
    robust to the few-particle jets whose log D2 sits far out, and independent of how the batches
    were grouped (length-grouped batches hold jets of one multiplicity: batch statistics would
    see almost none of its spread).
    """
    values = torch.cat([jet_observables(batch["particle_kinematics"]) for batch in batches])  # (J, K)
    if len(values) < 2:
        raise ValueError("at least two jets are needed to measure the jet observables' scaling")
    low, median, high = torch.quantile(values, torch.tensor([0.16, 0.5, 0.84]), dim=0)
    return median, ((high - low) / 2).clamp(min=1e-3)


def _pairwise_delta_r(eta: torch.Tensor, phi: torch.Tensor) -> torch.Tensor:
    """(B, T) η, φ -> (B, T, T) ΔR with Δφ wrapped into [-π, π]."""
    delta_eta = eta[:, :, None] - eta[:, None, :]
    delta_phi = phi[:, :, None] - phi[:, None, :]
    delta_phi = delta_phi - 2 * math.pi * torch.round(delta_phi / (2 * math.pi))
    return torch.sqrt(delta_eta**2 + delta_phi**2)
