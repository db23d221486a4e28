"""Per-particle features computed from raw constituents, chosen by name in a data recipe.

All features are relative to the jet axis of the summed constituents, so every input format
gives the same numbers. Padded entries are exactly zero and carry mask False.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from foundation.data.jets import JetArrays, jet_kinematics


def wrap_phi(phi: np.ndarray) -> np.ndarray:
    """Map angles into [-pi, pi), correct across the seam."""
    return (phi + np.pi) % (2 * np.pi) - np.pi


@dataclass
class ParticleKinematics:
    """Everything the feature functions need, computed once per batch."""

    pt: np.ndarray  # (J, N)
    eta: np.ndarray  # (J, N)
    phi: np.ndarray  # (J, N)
    energy: np.ndarray  # (J, N)
    jet_pt: np.ndarray  # (J, 1)
    jet_eta: np.ndarray  # (J, 1)
    jet_phi: np.ndarray  # (J, 1)
    jet_energy: np.ndarray  # (J, 1)
    charge: np.ndarray  # (J, N)
    pid: np.ndarray  # (J, N)
    mask: np.ndarray  # (J, N)

    @classmethod
    def from_jets(cls, jets: JetArrays) -> ParticleKinematics:
        c = jets.constituents.astype(np.float64)
        e, px, py, pz = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
        pt = np.hypot(px, py)
        safe_pt = np.where(pt > 0, pt, 1.0)
        eta = np.where(jets.mask, np.arcsinh(pz / safe_pt), 0.0)
        phi = np.where(jets.mask, np.arctan2(py, px), 0.0)
        jet = jet_kinematics(jets.constituents, jets.mask)
        return cls(
            pt=pt,
            eta=eta,
            phi=phi,
            energy=e,
            jet_pt=jet["pt"][:, None],
            jet_eta=jet["eta"][:, None],
            jet_phi=jet["phi"][:, None],
            jet_energy=jet["energy"][:, None],
            charge=jets.charge.astype(np.float64),
            pid=np.abs(jets.pid),
            mask=jets.mask,
        )


def _log(x: np.ndarray, mask: np.ndarray) -> np.ndarray:
    return np.log(np.where(mask & (x > 0), x, 1.0))


def _eta_rel(k: ParticleKinematics) -> np.ndarray:
    return k.eta - k.jet_eta


def _phi_rel(k: ParticleKinematics) -> np.ndarray:
    return wrap_phi(k.phi - k.jet_phi)


_CHARGED_HADRONS = (211, 321, 2212, 3112, 3222, 3312, 3334)
_NEUTRAL_HADRONS = (130, 310, 2112, 3122, 3322)

FEATURES: dict[str, Callable[[ParticleKinematics], np.ndarray]] = {
    "log_pt": lambda k: _log(k.pt, k.mask),
    "log_e": lambda k: _log(k.energy, k.mask),
    "log_pt_rel": lambda k: _log(k.pt / k.jet_pt, k.mask),
    "log_e_rel": lambda k: _log(k.energy / k.jet_energy, k.mask),
    "eta_rel": _eta_rel,
    "phi_rel": _phi_rel,
    "delta_r": lambda k: np.hypot(_eta_rel(k), _phi_rel(k)),
    "charge": lambda k: k.charge,
    "is_electron": lambda k: (k.pid == 11).astype(np.float64),
    "is_muon": lambda k: (k.pid == 13).astype(np.float64),
    "is_photon": lambda k: (k.pid == 22).astype(np.float64),
    "is_charged_hadron": lambda k: np.isin(k.pid, _CHARGED_HADRONS).astype(np.float64),
    "is_neutral_hadron": lambda k: np.isin(k.pid, _NEUTRAL_HADRONS).astype(np.float64),
}
FEATURE_NAMES = tuple(FEATURES)


def check_feature_names(names: Sequence[str]) -> None:
    unknown = [n for n in names if n not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
    if not names:
        raise ValueError("at least one feature must be chosen")


def compute_features(jets: JetArrays, names: Sequence[str]) -> np.ndarray:
    """(J, N, F) float32 features in the order of `names`, zero at padded entries."""
    check_feature_names(names)
    k = ParticleKinematics.from_jets(jets)
    out = np.stack([FEATURES[n](k) for n in names], axis=-1)  # (J, N, F)
    out = np.where(jets.mask[..., None], out, 0.0)
    return out.astype(np.float32)


# Feature sets from which 4-momenta can be rebuilt (massless constituents).
INVERTIBLE_FEATURES = ("log_pt", "eta_rel", "phi_rel")


def features_to_constituents(
    features: np.ndarray,
    names: Sequence[str],
    mask: np.ndarray,
    jet_eta: np.ndarray | float = 0.0,
    jet_phi: np.ndarray | float = 0.0,
) -> np.ndarray:
    """Rebuild (J, N, 4) E, px, py, pz from log_pt, eta_rel and phi_rel, taking particles massless.

    The jet axis defaults to (eta, phi) = (0, 0): jet mass and pT do not depend on it.
    """
    missing = [n for n in INVERTIBLE_FEATURES if n not in names]
    if missing:
        raise ValueError(f"cannot rebuild momenta without features {missing} (have {list(names)})")
    idx = {n: list(names).index(n) for n in INVERTIBLE_FEATURES}
    f = features.astype(np.float64)
    pt = np.exp(f[..., idx["log_pt"]])
    eta = f[..., idx["eta_rel"]] + np.reshape(jet_eta, (-1, 1))
    phi = f[..., idx["phi_rel"]] + np.reshape(jet_phi, (-1, 1))
    out = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    return np.where(mask[..., None], out, 0.0).astype(np.float32)
