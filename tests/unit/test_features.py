import numpy as np
import pytest

from foundation.data.features import FEATURES, compute_features, features_to_constituents, wrap_phi
from foundation.data.jets import JetArrays


def _jets_from_pt_eta_phi(pt, eta, phi, mask):
    e = pt * np.cosh(eta)
    c = np.stack([e, pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], -1) * mask[..., None]
    j, n = mask.shape
    return JetArrays(c.astype(np.float32), mask, np.zeros((j, n), np.int8), np.zeros((j, n), np.int32), np.zeros(j, np.int64), ["a"])


def test_phi_rel_is_correct_across_the_seam():
    # A jet sitting on phi = +-pi: its particles straddle the seam.
    pt = np.array([[100.0, 80.0, 5.0]])
    phi = np.array([[np.pi - 0.05, -np.pi + 0.05, np.pi - 0.2]])
    eta = np.array([[0.1, -0.1, 0.0]])
    jets = _jets_from_pt_eta_phi(pt, eta, phi, np.ones((1, 3), bool))
    f = compute_features(jets, ["phi_rel", "delta_r"])
    assert np.all(np.abs(f[0, :, 0]) < 0.25), f
    assert np.all(f[0, :, 1] < 0.3)
    assert np.all(wrap_phi(np.array([np.pi, -np.pi, 3 * np.pi])) < np.pi)
    assert np.all(wrap_phi(np.array([np.pi, -np.pi, 3 * np.pi])) >= -np.pi)


def test_padded_entries_are_zero_and_features_by_name(jets):
    f = compute_features(jets, list(FEATURES))
    assert f.shape == (*jets.mask.shape, len(FEATURES))
    assert np.all(f[~jets.mask] == 0)
    assert np.isfinite(f).all()
    names = list(FEATURES)
    log_pt_rel = f[..., names.index("log_pt_rel")][jets.mask]
    assert np.all(log_pt_rel < 0.01)  # each particle has less pT than its jet
    flags = f[..., [names.index(n) for n in ("is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")]]
    assert np.all(flags[jets.mask].sum(-1) <= 1)
    assert flags[jets.mask].sum(-1).mean() > 0.9


def test_unknown_feature_is_refused():
    with pytest.raises(ValueError, match="unknown feature"):
        compute_features(_jets_from_pt_eta_phi(np.ones((1, 1)), np.zeros((1, 1)), np.zeros((1, 1)), np.ones((1, 1), bool)), ["log_mass"])


def test_momenta_rebuild_is_the_inverse_for_massless_particles(jets):
    from foundation.data.jets import jet_kinematics

    names = ["log_pt", "eta_rel", "phi_rel"]
    f = compute_features(jets, names)
    rebuilt = features_to_constituents(f, names, jets.mask)
    p = np.linalg.norm(rebuilt[..., 1:], axis=-1)
    assert np.allclose(rebuilt[..., 0], p, rtol=1e-5), "massless: E = |p|"
    # The original jets with massless constituents (E -> |p|) have the same mass and pT: the rebuild
    # only moves the jet along z and rotates it in phi.
    massless = jets.constituents.copy()
    massless[..., 0] = np.linalg.norm(massless[..., 1:], axis=-1)
    a, b = jet_kinematics(massless, jets.mask), jet_kinematics(rebuilt, jets.mask)
    assert np.allclose(a["mass"], b["mass"], rtol=1e-3) and np.allclose(a["pt"], b["pt"], rtol=1e-4)
    refeatured = compute_features(JetArrays(rebuilt, jets.mask, jets.charge, jets.pid, jets.label, jets.class_names), names)
    assert np.allclose(refeatured[..., :1], f[..., :1], atol=1e-4)  # log pT
