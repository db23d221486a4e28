import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from scipy.linalg import sqrtm

from foundation.data.features import features_to_constituents
from foundation.data.jets import jet_kinematics
from foundation.evaluation.anomaly import anomaly_metrics, sic_curve
from foundation.evaluation.efp import connected_multigraphs, disconnected_products, energy_flow_polynomials
from foundation.evaluation.generation import (
    METRICS,
    fpd,
    frechet_distance,
    generation_metrics,
    generation_report,
    kpd,
    mmd2_unbiased,
    particle_features,
    w1,
    w1_batched,
)
from foundation.evaluation.plots import (
    histogram_edges,
    plot_binned_resolution,
    plot_code_usage,
    plot_histograms,
    plot_label_efficiency,
    plot_roc,
    plot_sic,
)
from foundation.evaluation.tagging import multiclass_tagging_metrics, tagging_metrics
from foundation.evaluation.tokenization import relative_rms_by_bin, wide_particle_diagnostics
from foundation.pipelines.common import json_safe


def _constituents(pt, eta, phi, mask):
    c = np.stack([pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1)
    return c * mask[..., None]


def _random_jets(n_jets, n_particles, seed, pt_scale=1.0):
    rng = np.random.default_rng(seed)
    pt = rng.exponential(10.0, (n_jets, n_particles)) * pt_scale
    eta = rng.normal(0.0, 0.2, (n_jets, n_particles))
    phi = rng.normal(0.0, 0.2, (n_jets, n_particles))
    mask = rng.random((n_jets, n_particles)) < 0.7
    mask[:, 0] = True
    return {"constituents": _constituents(pt, eta, phi, mask), "mask": mask}


# ---------------------------------------------------------------------------------- tagging


def test_perfect_and_random_classifiers():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 20000)
    perfect = tagging_metrics(labels, labels * 0.8 + 0.1)
    assert perfect["auc"] == 1.0 and perfect["accuracy"] == 1.0
    assert perfect["rejection_at_0.5"] == math.inf
    random = tagging_metrics(labels, rng.random(20000))
    assert abs(random["auc"] - 0.5) < 0.02
    assert abs(random["accuracy"] - 0.5) < 0.02
    assert abs(random["rejection_at_0.5"] - 2.0) < 0.15  # eps_B = eps_S for a random score


def test_rejection_equals_hand_value():
    # ROC points (eps_B, eps_S): (0, 0), (0, 0.5), (0.5, 1), (1, 1). At eps_S = 0.75 the diagonal
    # segment gives eps_B = 0.25, so the rejection is 4; at eps_S = 0.5 no background passes.
    labels = np.array([1, 1, 0, 0])
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    m = tagging_metrics(labels, scores, signal_efficiencies=(0.5, 0.75))
    assert m["rejection_at_0.75"] == pytest.approx(4.0)
    assert m["rejection_at_0.5"] == math.inf
    # A plateau: eps_S = 0.75 is reached at eps_B = 0.25 and kept up to eps_B = 0.75; the best cut counts.
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.5, 0.4, 0.2])
    assert tagging_metrics(labels, scores, (0.75,))["rejection_at_0.75"] == pytest.approx(4.0)
    # Logits: the accuracy cut moves to 0.
    assert tagging_metrics(np.array([0, 1, 0, 1]), np.array([-2.0, 3.0, -0.5, 0.5]))["accuracy"] == 1.0


def test_json_safe_turns_inf_into_strings_and_nan_into_null():
    value = {"r": math.inf, "m": -np.inf, "n": float("nan"), "x": np.float32(2.5), "l": [np.int64(3)], "a": np.array([1.0, np.nan]), "p": Path("a/b")}
    text = json.dumps(json_safe(value), allow_nan=False)  # standard JSON: no NaN or Infinity tokens
    assert json.loads(text) == {"r": "inf", "m": "-inf", "n": None, "x": 2.5, "l": [3], "a": [1.0, None], "p": "a/b"}


def test_multiclass_metrics_and_signal_vs_background():
    labels = np.array([0, 0, 1, 1, 2, 2])
    probs = np.array(
        [[0.7, 0.2, 0.1], [0.5, 0.1, 0.4], [0.1, 0.8, 0.1], [0.4, 0.3, 0.3], [0.1, 0.1, 0.8], [0.2, 0.3, 0.5]]
    )
    m = multiclass_tagging_metrics(
        labels, probs, ["qcd", "top", "w"], signal_class="top", background_class="qcd"
    )
    assert m["accuracy"] == pytest.approx(5 / 6)  # jet 3 (top) is called qcd
    assert set(m["auc_per_class"]) == {"qcd", "top", "w"}
    assert m["auc"] == pytest.approx(np.mean(list(m["auc_per_class"].values())))
    # top vs qcd on the four jets of those classes: scores p_t/(p_t+p_q) = 2/9, 1/6, 8/9, 3/7
    b = m["binary"]
    assert (b["signal_class"], b["background_class"]) == ("top", "qcd")
    assert b["auc"] == 1.0 and b["accuracy"] == pytest.approx(0.75)


# ---------------------------------------------------------------------------------- anomaly


def test_sic_on_constructed_example():
    labels = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.5, 0.4, 0.1])
    eps_s, sic = sic_curve(labels, scores, min_background_jets=1)
    assert np.all(np.isfinite(sic))  # the eps_B = 0 point (eps_S = 0.75) keeps no background jet
    m = anomaly_metrics(labels, scores, min_background_jets=1)
    assert m["max_sic"] == pytest.approx(0.75 / np.sqrt(0.25))
    assert m["eps_s_at_max_sic"] == pytest.approx(0.75)
    assert m["eps_b_at_max_sic"] == pytest.approx(0.25)
    assert m["auc"] == pytest.approx(13 / 16)  # 13 of the 16 signal-background pairs are ordered right


def test_max_sic_rests_on_enough_background_jets():
    """One QCD jet scoring above most top jets makes a SIC of sqrt(n_background) at a cut keeping
    that jet alone; by default no point rests on fewer than MIN_BACKGROUND_JETS background jets."""
    from foundation.evaluation.anomaly import MIN_BACKGROUND_JETS

    rng = np.random.default_rng(0)
    n = 1000
    labels = np.r_[np.ones(n), np.zeros(n)]
    scores = np.r_[rng.normal(1.0, 1.0, n), rng.normal(0.0, 1.0, n)]
    scores[n] = 10.0  # the outlier: a background jet above every signal jet
    scores[: n // 5] += 20.0  # a fifth of the signal above it
    lucky = anomaly_metrics(labels, scores, min_background_jets=1)
    assert lucky["eps_b_at_max_sic"] == pytest.approx(1 / n) and lucky["max_sic"] >= 0.2 * np.sqrt(n)  # resting on that one jet
    m = anomaly_metrics(labels, scores)
    assert m["eps_b_at_max_sic"] >= MIN_BACKGROUND_JETS / n - 1e-12 and m["max_sic"] < lucky["max_sic"] / 3
    eps_s, sic = sic_curve(labels[: n + 10], scores[: n + 10])  # 10 background jets, fewer than the floor:
    assert len(sic) and np.allclose(sic, eps_s)  # only cuts that keep them all (eps_B = 1)


# ---------------------------------------------------------------------------------- W1


def test_w1_of_identical_and_shifted_samples():
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    assert w1(a, a) == 0.0
    assert w1(a, a + 0.7) == pytest.approx(0.7)
    mean, std = w1_batched(a, a + 0.7, num_batches=5, seed=0)
    assert abs(mean - 0.7) < 0.05 and 0 < std < 0.05
    mean0, _ = w1_batched(a, a, num_batches=5, seed=0)
    assert mean0 < 0.05  # only resampling noise


def test_particle_features_relative_to_jet_axis_across_the_seam():
    pt = np.array([[100.0, 50.0, 0.0]])
    eta = np.array([[1.0, 1.2, 0.0]])
    phi = np.array([[np.pi - 0.05, -np.pi + 0.05, 0.0]])
    mask = np.array([[True, True, False]])
    f = particle_features(_constituents(pt, eta, phi, mask), mask)
    assert np.all(np.abs(f[0, :2, 1]) < 0.1)  # phi_rel small although phi jumps by 2 pi
    assert np.all(f[0, 2] == 0)
    assert f[0, 0, 2] > f[0, 1, 2] and f[0, :2, 2].sum() == pytest.approx(1.0, abs=0.01)


# ---------------------------------------------------------------------------------- EFPs


def test_efp_set_is_jetnets_36():
    graphs = connected_multigraphs(4)
    assert [sum(g.degree == d for g in graphs) for d in range(5)] == [1, 1, 2, 5, 12]
    # (vertices, edges) of the 21 connected EFPs of energyflow's EFPSet(("d<=", 4)), read off its
    # efps_d_le_10 file; jetnet's get_fpd_kpd_jet_features uses exactly this set.
    expected = [(1, 0), (2, 1), (2, 2), (2, 3), (2, 4), (3, 2), (3, 3), (3, 3), (3, 4), (3, 4), (3, 4)]
    expected += [(4, 3), (4, 3)] + [(4, 4)] * 5 + [(5, 4)] * 3
    assert sorted((g.n_vertices, g.degree) for g in graphs) == expected
    assert len(disconnected_products(4)) == 15


def _brute_force_efps(pt, eta, phi, mask, normed):
    graphs, products = connected_multigraphs(4), disconnected_products(4)
    c = _constituents(pt, eta, phi, mask)
    rows = []
    for j in range(len(pt)):
        m = mask[j]
        total = pt[j][m].sum() if normed else jet_kinematics(c[j : j + 1], mask[j : j + 1])["pt"][0]
        z, e, p = pt[j][m] / total, eta[j][m], phi[j][m]
        d_phi = (p[:, None] - p[None, :] + np.pi) % (2 * np.pi) - np.pi
        theta = np.sqrt((e[:, None] - e[None, :]) ** 2 + d_phi**2)
        values = []
        for g in graphs:
            s = 0.0
            for t in itertools.product(range(len(z)), repeat=g.n_vertices):
                v = np.prod(z[list(t)])
                for a, b, w in g.edges:
                    v *= theta[t[a], t[b]] ** w
                s += v
            values.append(s)
        values += [np.prod([values[i] for i in combo]) for combo in products]
        rows.append(values)
    return np.array(rows), z, theta


@pytest.mark.parametrize("normed", [False, True])
def test_efps_match_brute_force_sum_over_particle_tuples(normed):
    rng = np.random.default_rng(2)
    pt = rng.uniform(1.0, 50.0, (3, 4))
    eta = rng.normal(0.0, 0.3, (3, 4))
    phi = np.pi + rng.normal(0.0, 0.3, (3, 4))  # straddles the phi seam
    mask = np.ones((3, 4), bool)
    mask[1, 3] = False
    mask[2, 2:] = False
    efps = energy_flow_polynomials(_constituents(pt, eta, phi, mask), mask, normed=normed)
    expected, z, theta = _brute_force_efps(pt, eta, phi, mask, normed)
    assert efps.shape == (3, 36)
    np.testing.assert_allclose(efps, expected, rtol=1e-10)
    # trivial values on the last jet: the dot is sum z (1 when normed), the single edge sum z_i z_j theta_ij
    assert efps[2, 0] == pytest.approx(z.sum())
    assert efps[2, 1] == pytest.approx(z @ theta @ z)
    if normed:
        np.testing.assert_allclose(efps[:, 0], 1.0)


def test_efps_ignore_padding_and_particle_order():
    jets = _random_jets(20, 12, seed=3)
    c, m = jets["constituents"], jets["mask"]
    base = energy_flow_polynomials(c, m)
    perm = np.random.default_rng(0).permutation(12)
    padded_c = np.concatenate([c[:, perm], np.zeros((20, 5, 4))], axis=1)
    padded_m = np.concatenate([m[:, perm], np.zeros((20, 5), bool)], axis=1)
    np.testing.assert_allclose(
        energy_flow_polynomials(padded_c, padded_m, chunk_elements=300), base, rtol=1e-10
    )


# ---------------------------------------------------------------------------------- FPD, KPD


def test_frechet_distance_and_mmd_match_direct_formulas():
    rng = np.random.default_rng(4)
    a, b = rng.normal(size=(6, 4)), rng.normal(size=(6, 4))
    s1, s2 = a @ a.T, b @ b.T
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    direct = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(sqrtm(s1 @ s2)))
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(direct, rel=1e-6)
    x, y = rng.normal(size=(40, 3)), rng.normal(size=(30, 3)) + 0.5
    k = lambda p, q: (p @ q.T / 3 + 1.0) ** 4  # noqa: E731
    kxx, kyy = k(x, x), k(y, y)
    direct = (
        (kxx.sum() - np.trace(kxx)) / (40 * 39) + (kyy.sum() - np.trace(kyy)) / (30 * 29) - 2 * k(x, y).mean()
    )
    assert mmd2_unbiased(x, y) == pytest.approx(direct)


def test_fpd_and_kpd_vanish_for_one_distribution_and_not_for_a_shift():
    rng = np.random.default_rng(5)
    cov = np.diag([1.0, 2.0, 0.5, 1.0, 1.5])
    real = rng.multivariate_normal(np.zeros(5), cov, 4000)
    same = rng.multivariate_normal(np.zeros(5), cov, 4000)
    shifted = rng.multivariate_normal(np.full(5, 0.5), cov, 4000)
    sizes = dict(min_samples=800, max_samples=2000, num_batches=5, num_points=5)
    v_same, e_same = fpd(real, same, **sizes)
    v_shift, e_shift = fpd(real, shifted, **sizes)
    assert v_same < 3e-3 and e_shift >= 0
    assert v_shift > 20 * max(v_same, 1e-4) and v_shift > 5 * e_shift
    k_same, k_err = kpd(real, same, num_batches=5, batch_size=1000)
    k_shift, _ = kpd(real, shifted, num_batches=5, batch_size=1000)
    assert abs(k_same) < 3 * k_err + 1e-3
    assert k_shift > 10 * (abs(k_same) + k_err)


def test_generation_metrics_and_report_see_a_distorted_generator():
    reference = _random_jets(300, 16, seed=6)
    good = _random_jets(150, 16, seed=7)
    bad = _random_jets(150, 16, seed=8, pt_scale=1.5)
    m = generation_metrics(good, reference, seed=0)
    assert set(m) == set(METRICS) and all(np.isfinite(v) and np.isfinite(e) for v, e in m.values())
    rows = {r["metric"]: r for r in generation_report(bad, reference, seed=0)}
    assert set(rows) == set(METRICS)
    # jet pT and mass scale with the constituent pT; relative quantities and EFPs (pT_rel) do not
    assert rows["w1_pt"]["value"] > 5 * rows["w1_pt"]["floor"]
    assert rows["w1_mass"]["value"] > 3 * rows["w1_mass"]["floor"]
    assert m["w1_pt"][0] < rows["w1_pt"]["value"] / 3


# ---------------------------------------------------------------------------------- plots


def _is_png(path):
    data = path.read_bytes()
    return len(data) > 1000 and data[:8] == b"\x89PNG\r\n\x1a\n"


def test_histogram_edges_give_integer_data_whole_integer_bins():
    multiplicity = np.arange(1, 129)  # 128 values into 50 bins: 3 integers per bin, no comb
    edges = histogram_edges([multiplicity], 50)
    counts, _ = np.histogram(multiplicity, edges)
    assert set(counts[:-1]) == {3} and counts.sum() == 128
    assert np.allclose(edges, np.round(edges - 0.5) + 0.5)  # edges fall between integers
    assert len(histogram_edges([np.arange(10, 20)], 50)) == 11  # one bin per integer
    real = histogram_edges([np.array([0.5, 2.5]), np.array([1.0])], 4)
    assert np.allclose(real, [0.5, 1.0, 1.5, 2.0, 2.5])


def test_every_plot_writes_a_png(tmp_path):
    rng = np.random.default_rng(9)
    labels = rng.integers(0, 2, 500)
    curves = {"good": (labels, labels + rng.normal(0, 0.7, 500)), "random": (labels, rng.random(500))}
    paths = [
        plot_roc(curves, tmp_path / "roc.png"),
        plot_sic(curves, tmp_path / "sic.png"),
        plot_histograms(
            {"a": rng.normal(size=300), "b": rng.normal(1, 1, 300)}, tmp_path / "h.png", xlabel="x [GeV]"
        ),
        plot_histograms(
            {"n": rng.integers(5, 30, 200)}, tmp_path / "mult.png", xlabel="multiplicity", log=True
        ),
        plot_code_usage(rng.poisson(3.0, 64), tmp_path / "codes.png"),
        plot_label_efficiency(
            {
                "pretrained": ([100, 1000, 10000], [0.85, 0.9, 0.93], [0.01, 0.005, 0.002]),
                "scratch": ([100, 1000, 10000], [0.7, 0.82, 0.9], None),
            },
            tmp_path / "sub" / "labels.png",
        ),
        plot_binned_resolution(relative_rms_by_bin(np.array([22.0, 105.0, 250.0]), np.array([20.0, 100.0, 250.0])), tmp_path / "bins.png", "mass", "RMS"),
    ]
    for p in paths:
        assert _is_png(p), p


def test_too_few_jets_is_an_input_error_that_names_the_count():
    from foundation.errors import InputError

    rng = np.random.default_rng(0)
    with pytest.raises(InputError, match="at least 10 jets in each set, got 5 and 50"):
        fpd(rng.normal(size=(5, 3)), rng.normal(size=(50, 3)))
    with pytest.raises(InputError, match="at least 2 jets in each set, got 1 and 50"):
        kpd(rng.normal(size=(1, 3)), rng.normal(size=(50, 3)))


def test_resolution_by_mass_bin_by_hand():
    # Relative errors: 10% and 0% below 40 GeV, 5% in 80-140, none in 40-80 (empty bin), 20% above 200.
    original = np.array([20.0, 30.0, 100.0, 300.0])
    decoded = np.array([22.0, 30.0, 105.0, 240.0])
    rows = relative_rms_by_bin(decoded, original)
    assert [r["jets"] for r in rows] == [2, 0, 1, 0, 1]
    assert rows[0]["relative_rms"] == pytest.approx(math.sqrt((0.1**2 + 0) / 2))
    assert rows[1]["relative_rms"] is None and rows[1]["share_of_squared_error"] == 0.0
    assert rows[2]["relative_rms"] == pytest.approx(0.05)
    assert rows[-1]["high"] is None and rows[-1]["relative_rms"] == pytest.approx(0.2)
    total = 0.1**2 + 0.05**2 + 0.2**2
    assert rows[-1]["share_of_squared_error"] == pytest.approx(0.2**2 / total)
    assert sum(r["share_of_squared_error"] for r in rows) == pytest.approx(1.0)
    json.dumps(rows)  # JSON-ready: no inf


def test_wide_particles_diagnostics_blame_the_wide_particle():
    """Two narrow jets; the first has a soft particle 2 units of eta from its axis, decoded badly,
    the other particles decoded well: kept exact, the wide particle's error is gone."""
    names = ["log_pt", "eta_rel", "phi_rel"]
    hard = [[np.log(300.0), 0.02, 0.0], [np.log(300.0), -0.02, 0.01]]
    original = np.array([hard + [[np.log(0.05), 2.0, 0.1]], hard + [[0.0, 0.0, 0.0]]])  # (2, 3, 3)
    mask = np.array([[True, True, True], [True, True, False]])
    decoded = original.copy()
    decoded[:, :2, 1] += 0.001  # small errors on the hard particles
    decoded[0, 2] = [np.log(0.2), 1.5, 0.0]  # the wide one comes back wrong
    ids = np.array([[1, 2, 7], [1, 3, 9]])
    out = wide_particle_diagnostics(original, decoded, mask, ids, names, pt_below_mass=np.array([[False, False, True], [False, False, False]]))
    assert out["particles"] == 1 and out["distinct_codes"] == 1 and out["fraction_pt_below_mass"] == 1.0
    assert out["fraction_of_particles"] == pytest.approx(1 / 5) and out["median_pt"] == pytest.approx(0.05)
    assert out["resolution/eta_rel"] == pytest.approx(0.5) and out["resolution/log_pt"] == pytest.approx(np.log(4.0))
    assert out["jets_with_over_5pct_of_mass2"] == 1 and 0.05 < out["max_share_of_mass2"] < 1

    def mass(f, m):
        return jet_kinematics(features_to_constituents(f, names, m), m)["mass"]

    exact = decoded.copy()
    exact[0, 2] = original[0, 2]
    expected = np.sqrt(np.mean((mass(exact, mask) / mass(original, mask) - 1) ** 2))
    assert out["jet_mass_relative_rms_if_exact"] == pytest.approx(expected)
    assert out["jet_mass_relative_rms_if_exact"] < np.sqrt(np.mean((mass(decoded, mask) / mass(original, mask) - 1) ** 2)) / 10
    json.dumps(out)
