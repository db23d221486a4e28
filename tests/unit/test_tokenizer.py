from pathlib import Path

import numpy as np
import pytest
import torch

from foundation.data.features import compute_features
from foundation.tokenizer import JetTokenizer, JetTokenizerConfig
from foundation.tokenizer.modeling_jet_tokenizer import restore_phi_axis

NAMES = ["log_pt", "eta_rel", "phi_rel"]


def tiny_config(**kw):
    base = dict(hidden_size=32, num_encoder_layers=1, num_decoder_layers=1, num_heads=2, intermediate_size=64, codebook_size=32, code_dim=4, max_particles=64)
    base.update(kw)
    return JetTokenizerConfig(**base)


@pytest.fixture(scope="module")
def batch(jets):
    f = torch.as_tensor(compute_features(jets, NAMES))
    m = torch.as_tensor(jets.mask)
    return f, m


def make_tokenizer(batch, **kw):
    torch.manual_seed(0)
    f, m = batch
    tok = JetTokenizer(tiny_config(**kw))
    valid = f[m]
    tok.set_feature_scaling(valid.mean(0), valid.std(0))
    tok.initialize_codebook(f, m)
    return tok


@pytest.mark.parametrize("quantizer", ["vq", "rvq", "fsq"])
def test_encode_decode_shapes_masks_and_padding(batch, quantizer):
    f, m = batch
    tok = make_tokenizer(batch, quantizer=quantizer, codebook_size=8, fsq_levels=[4, 4, 3]).eval()
    ids = tok.encode(f[:20], m[:20])
    assert ids.shape == m[:20].shape
    cfg = tok.config
    assert torch.all(ids[~m[:20]] == cfg.pad_token_id), "a padded particle gets no code"
    assert torch.all(ids[m[:20]] < cfg.vocab_codes)
    decoded = tok.decode(ids, m[:20])
    assert decoded.shape == f[:20].shape
    assert torch.all(decoded[~m[:20]] == 0)
    constituents, mask = tok.decode_to_constituents(ids, m[:20])
    assert constituents.shape == (20, 64, 4) and np.array_equal(mask, m[:20].numpy())
    assert np.isfinite(constituents).all()


def test_special_token_ids_follow_the_codebook():
    cfg = tiny_config(codebook_size=100)
    assert (cfg.start_token_id, cfg.stop_token_id, cfg.pad_token_id, cfg.vocab_size) == (100, 101, 102, 103)
    assert tiny_config(quantizer="rvq", codebook_size=10, num_quantizers=2).vocab_codes == 100
    assert tiny_config(quantizer="fsq", fsq_levels=[8, 5]).vocab_codes == 40


def test_sequences_round_trip(batch):
    f, m = batch
    tok = make_tokenizer(batch).eval()
    ids = tok.encode(f[:10], m[:10])
    seq, attn = tok.to_sequence(ids, m[:10])
    cfg = tok.config
    n = m[:10].sum(1)
    assert seq.shape == (10, 66)
    assert torch.all(seq[:, 0] == cfg.start_token_id)
    assert torch.all(seq[torch.arange(10), n + 1] == cfg.stop_token_id)
    assert torch.equal(attn.sum(1), n + 2)
    back, mask = tok.from_sequence(seq)
    assert torch.equal(back, ids) and torch.equal(mask, m[:10])


def test_padded_values_never_matter(batch):
    """Garbage in padded slots changes neither the tokens nor the codebook update."""
    f, m = batch
    torch.manual_seed(1)
    a = make_tokenizer(batch)
    b = make_tokenizer(batch)
    garbage = f.clone()
    garbage[~m] = torch.randn_like(garbage[~m]) * 100
    a.train()
    b.train()
    out_a, out_b = a(f[:50], m[:50]), b(garbage[:50], m[:50])
    assert torch.allclose(out_a.loss, out_b.loss)
    assert torch.equal(out_a.token_ids, out_b.token_ids)
    for (name, buf_a), (_, buf_b) in zip(a.quantizer.named_buffers(), b.quantizer.named_buffers(), strict=False):
        assert torch.allclose(buf_a, buf_b), name


def test_encoding_is_deterministic_and_survives_save_and_load(batch, tmp_path):
    f, m = batch
    tok = make_tokenizer(batch).eval()
    ids = tok.encode(f, m)
    assert torch.equal(ids, tok.encode(f, m))
    tok.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    loaded = JetTokenizer.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded.encode(f, m), ids)
    assert torch.allclose(loaded.decode(ids, m), tok.decode(ids, m))


def test_rank_embedding_tells_the_decoder_each_particles_place(batch, tmp_path):
    """With rank_embedding the decoder knows where a token stands in its pT-ordered jet: the same
    codes in another order decode differently, padding in between does not count as a place, and
    the embedding is saved and loaded with the rest."""
    f, m = batch
    tok = make_tokenizer(batch, rank_embedding=True).eval()
    with torch.no_grad():
        tok.rank_embedding.weight.normal_()  # as after training: places that differ
    counts = m.sum(1)
    jet = int(torch.argmax(torch.where(counts < m.shape[1], counts, 0)))  # room for a padded slot in front
    ids, mask = tok.encode(f[jet : jet + 1], m[jet : jet + 1]), m[jet : jet + 1]
    n = int(mask.sum())
    decoded = tok.decode(ids, mask)[0, :n]
    reversed_ids = ids.clone()
    reversed_ids[0, :n] = ids[0, :n].flip(0)
    assert not torch.allclose(tok.decode(reversed_ids, mask)[0, :n].flip(0), decoded, atol=1e-4)
    # a padded slot before the particles moves nothing: ranks count real particles only
    shifted_ids = torch.cat([torch.full_like(ids[:, :1], tok.config.pad_token_id), ids[:, :-1]], 1)
    shifted_mask = torch.cat([torch.zeros_like(mask[:, :1]), mask[:, :-1]], 1)
    assert torch.allclose(tok.decode(shifted_ids, shifted_mask)[0, 1 : n + 1], decoded, atol=1e-5)
    tok.save_pretrained(tmp_path)
    loaded = JetTokenizer.from_pretrained(tmp_path).eval()
    assert loaded.config.rank_embedding and torch.equal(loaded.rank_embedding.weight, tok.rank_embedding.weight)
    assert torch.allclose(loaded.decode(ids, mask), tok.decode(ids, mask))
    # without it the decoder is blind to the order
    plain = make_tokenizer(batch).eval()
    assert torch.allclose(plain.decode(reversed_ids, mask)[0, :n].flip(0), plain.decode(ids, mask)[0, :n], atol=1e-5)


def test_phi_axis_constraint_puts_the_decoded_jets_axis_back(batch):
    """phi_rel is measured from the jet axis, so sum_i pT_i sin(phi_i) = 0 for real jets; the
    projection leaves real jets alone, restores the axis of perturbed ones by the least change of
    the angles, and is what the decoder ends with when the config asks for it."""
    f, m = batch
    f, m = f.double(), m.bool()
    pt = torch.exp(f[..., 0]) * m
    p_y = lambda x: (pt * torch.sin(x[..., 2])).sum(1) / pt.sum(1)  # noqa: E731
    assert p_y(f).abs().max() < 1e-6
    assert torch.allclose(restore_phi_axis(f, m, NAMES), f, atol=1e-6)
    torch.manual_seed(0)
    moved = f.clone()
    moved[..., 2] += 0.02 * torch.randn_like(f[..., 2]) * m
    restored = restore_phi_axis(moved, m, NAMES)
    assert p_y(moved).abs().mean() > 1e-3 and p_y(restored).abs().max() < 1e-9
    assert torch.equal(restored[..., :2], moved[..., :2]) and torch.all(restored[~m] == moved[~m])
    # least change: along the constraint's gradient pT_i cos(phi_i), the Euclidean projection
    shift = (restored - moved)[..., 2]
    gradient = pt * torch.cos(moved[..., 2])
    expected = -(pt * torch.sin(moved[..., 2])).sum(1, keepdim=True) * gradient / (gradient**2).sum(1, keepdim=True)
    assert torch.allclose(shift, expected, rtol=0.02, atol=1e-6)
    tok = make_tokenizer(batch, phi_axis_constraint=True).eval()
    decoded = tok.decode(tok.encode(f.float(), m), m).double()
    assert ((torch.exp(decoded[..., 0]) * m * torch.sin(decoded[..., 2])).sum(1)).abs().max() < 1e-3


def test_encode_search_picks_tokens_that_lower_each_jets_loss(batch):
    """With encode_search_candidates > 1 the hardest particles' tokens are chosen among their
    nearest codes by the decoded jet's training loss: no jet's loss rises, some fall, only the
    searched particles change and each to one of its candidates; deterministic; search=False
    still gives the nearest codes."""
    f, m = batch
    f, m = f[:40], m[:40].bool()
    tok = make_tokenizer(batch, jet_loss_weight=2.0, pt_weighting=1.0, encode_search_candidates=4, encode_search_particles=3).eval()
    nearest, searched = tok.encode(f, m, search=False), tok.encode(f, m)
    assert torch.equal(searched, tok.encode(f, m)), "deterministic"
    assert torch.equal(nearest, make_tokenizer(batch, jet_loss_weight=2.0, pt_weighting=1.0).eval().encode(f, m))
    share = tok._particle_share(f, m)
    with torch.no_grad():
        before, after = tok._jet_losses(nearest, f, m, share), tok._jet_losses(searched, f, m, share)
    assert torch.all(after <= before) and torch.any(after < before)
    changed = searched != nearest
    hardest = share.masked_fill(~m, -1).argsort(1, descending=True)[:, :3]  # (B, 3)
    assert not changed.scatter(1, hardest, False).any(), "only the 3 hardest particles of a jet are searched"
    assert torch.all(searched[~m] == tok.config.pad_token_id)
    with torch.no_grad():
        distances = torch.cdist(tok._encode_latent(f, m), tok._codes_to_vectors(torch.arange(32))[None].expand(len(f), -1, -1))  # (B, N, K)
    rank = (distances.argsort(-1) == searched.clamp(max=31)[..., None]).float().argmax(-1)  # each token's rank among its codes
    assert changed.any() and torch.all(rank[changed] < 4), "a new token is one of the particle's 4 nearest codes"
    for bad in (dict(encode_search_candidates=0), dict(encode_search_particles=0), dict(quantizer="fsq", encode_search_candidates=2),
                dict(cosine_similarity=True, encode_search_candidates=2), dict(feature_names=["log_pt", "eta_rel"], encode_search_candidates=2)):
        with pytest.raises(ValueError, match="encode_search"):
            tiny_config(**bad)


def test_on_the_fly_tokenisation_takes_the_nearest_codes(batch):
    """The backbones' collator tokenises every batch of every epoch: it skips the encode search."""
    from foundation.models.inputs import JetSequenceCollator

    f, m = batch
    f, m = f[:12], m[:12].bool()
    tok = make_tokenizer(batch, jet_loss_weight=2.0, encode_search_candidates=4, encode_search_particles=3).eval()
    rows = {"features": f.numpy(), "mask": m.numpy(), "labels": np.zeros(12, np.int64), "index": np.arange(12)}
    out = JetSequenceCollator(tok, NAMES)(rows)
    expected, _ = tok.to_sequence(tok.encode(f, m, search=False), m)
    assert torch.equal(out["input_ids"], expected[:, : out["input_ids"].shape[1]])
    assert not torch.equal(tok.encode(f, m), tok.encode(f, m, search=False)), "the search would have changed tokens"


def test_jet_level_loss_is_used_when_asked(batch):
    f, m = batch
    tok = make_tokenizer(batch, jet_loss_weight=1.0)
    out = tok(f[:16], m[:16])
    assert out.jet_loss is not None and out.jet_loss > 0
    with pytest.raises(ValueError, match="jet_loss_weight"):
        tiny_config(feature_names=["log_pt", "eta_rel"], jet_loss_weight=1.0)


def test_codebook_pt_weighting_counts_hard_particles_more_in_the_codebook_update(batch):
    """Each particle enters the EMA update round(share ** b) times; its own code is unchanged."""
    f, m = batch
    f, m = f[:50], m[:50]
    plain = make_tokenizer(batch, dead_code_threshold=0.0)
    weighted = make_tokenizer(batch, dead_code_threshold=0.0, codebook_pt_weighting=1.0)
    weighted.load_state_dict(plain.state_dict())  # the same codebook, so only the update differs
    before = plain.quantizer._codebook.cluster_size.clone()
    plain.train(), weighted.train()
    out_plain, out_weighted = plain(f, m), weighted(f, m)
    assert torch.equal(out_plain.token_ids, out_weighted.token_ids), "the copies change no particle's code"
    assert torch.allclose(out_plain.reconstruction, out_weighted.reconstruction)

    pt = torch.exp(f[..., 0]) * m
    share = pt / pt.sum(1, keepdim=True) * m.sum(1, keepdim=True)
    copies = torch.round(share[m]).clamp(min=1)
    assert copies.sum() > 1.2 * m.sum(), "hard particles get extra copies"
    decay = plain.config.ema_decay
    seen_plain = (plain.quantizer._codebook.cluster_size - decay * before).sum() / (1 - decay)
    seen_weighted = (weighted.quantizer._codebook.cluster_size - decay * before).sum() / (1 - decay)
    assert seen_plain.item() == pytest.approx(m.sum().item(), rel=1e-4)
    assert seen_weighted.item() == pytest.approx(copies.sum().item(), rel=1e-4)

    plain.load_state_dict(weighted.state_dict())
    plain.eval(), weighted.eval()
    assert torch.equal(weighted.encode(f, m), plain.encode(f, m)), "encoding is not weighted"
    with pytest.raises(ValueError, match="codebook_pt_weighting"):
        tiny_config(quantizer="fsq", codebook_pt_weighting=1.0)


def test_mass_weighting_shares_a_jet_by_its_mass_squared(batch):
    """s_i = (1 - c) n pT_i / sum pT + c n (p_i . P) / M^2, checked against the pairwise sum
    p_i . P = sum_j pT_i pT_j (cosh(eta_i - eta_j) - cos(phi_i - phi_j)) of massless particles."""
    f, m = batch
    f, m = f[:20].double(), m[:20]
    pt, eta, phi = torch.exp(f[..., 0]) * m, f[..., 1], f[..., 2]
    pair = pt[:, :, None] * pt[:, None, :] * (torch.cosh(eta[:, :, None] - eta[:, None, :]) - torch.cos(phi[:, :, None] - phi[:, None, :]))
    to_jet = (pair * m[:, None, :]).sum(2) * m  # (B, N) p_i . P
    n = m.sum(1, keepdim=True)
    mass_share = to_jet / to_jet.sum(1, keepdim=True) * n
    pt_share = pt / pt.sum(1, keepdim=True) * n

    tok = JetTokenizer(tiny_config(mass_weighting=1.0)).double()
    assert torch.allclose(tok._particle_share(f, m), mass_share, atol=1e-9)
    tok.config.mass_weighting = 0.25
    assert torch.allclose(tok._particle_share(f, m), 0.75 * pt_share + 0.25 * mass_share, atol=1e-9)
    assert torch.allclose(tok._particle_share(f, m).sum(1), n.squeeze(1).double())

    # a soft particle far from the axis: almost nothing of the jet's pT, much of its mass
    jet = torch.tensor([[[np.log(300.0), 0.01, 0.0], [np.log(300.0), -0.01, 0.0], [np.log(0.05), 2.0, 0.3]]], dtype=torch.float64)
    everywhere = torch.ones(1, 3, dtype=torch.bool)
    tok.config.mass_weighting = 0.0
    assert tok._particle_share(jet, everywhere)[0, 2] < 1e-3
    tok.config.mass_weighting = 1.0
    assert tok._particle_share(jet, everywhere)[0, 2] > 1.0

    with pytest.raises(ValueError, match="mass_weighting"):
        tiny_config(mass_weighting=1.5)
    with pytest.raises(ValueError, match="mass_weighting"):
        tiny_config(feature_names=["log_pt", "eta_rel"], mass_weighting=0.5)


def test_bad_config_values_are_refused():
    with pytest.raises(ValueError, match="quantizer"):
        tiny_config(quantizer="lfq")
    with pytest.raises(ValueError, match="divisible"):
        tiny_config(hidden_size=30, num_heads=4)


def test_codebook_settings_that_cannot_settle_are_flagged():
    from foundation.pipelines.tokenizer import codebook_warnings
    from foundation.training import TrainingConfig

    mixed = TrainingConfig(group_by_length=False)
    # 128 jets of ~67 particles and 8192 codes: a code's average use is ~1 particle a step, so a
    # threshold of 1 would re-seed every code used less than average, every step.
    churning = codebook_warnings(JetTokenizerConfig(codebook_size=8192, dead_code_threshold=1.0), mixed, 128 * 67)
    assert len(churning) == 1 and "re-seeded every step" in churning[0]
    assert codebook_warnings(JetTokenizerConfig(codebook_size=8192, dead_code_threshold=0.05), mixed, 128 * 67) == []
    grouped = codebook_warnings(JetTokenizerConfig(codebook_size=8192, dead_code_threshold=0.05), TrainingConfig(group_by_length=True), 128 * 67)
    assert len(grouped) == 1 and "group_by_length" in grouped[0]
    assert codebook_warnings(JetTokenizerConfig(quantizer="fsq", dead_code_threshold=1.0), TrainingConfig(group_by_length=True), 10) == []


@pytest.mark.parametrize("recipe", sorted(str(p) for p in (Path(__file__).parents[2] / "tokenizers").glob("*.yaml")))
def test_recipes_let_their_codebooks_settle(recipe):
    from foundation.pipelines.tokenizer import codebook_warnings, load_tokenizer_recipe

    training_recipe, config = load_tokenizer_recipe(recipe)
    particles_per_jet = min(40, config.max_particles)  # below the generated jets' mean (about 67 at 128)
    # no dead-code churn, and mixed batches (grouped ones pull an EMA codebook back and forth)
    assert codebook_warnings(config, training_recipe.training, training_recipe.training.micro_batch_size * particles_per_jet) == []


def test_weighted_kmeans_matches_scikit_learn_and_lowers_the_error():
    from sklearn.cluster import KMeans

    from foundation.tokenizer.codebook_refit import weighted_kmeans

    rng = np.random.default_rng(0)
    points = np.concatenate([rng.normal(c, 0.3, size=(200, 3)) for c in rng.normal(0, 3, size=(6, 3))])
    weights = rng.exponential(size=len(points))
    start = points[rng.choice(len(points), 10, replace=False)]
    ours, errors = weighted_kmeans(points, weights, start, iterations=15)
    reference = KMeans(10, init=start, n_init=1, max_iter=15, tol=0, algorithm="lloyd").fit(points, sample_weight=weights)
    assert np.allclose(np.sort(ours, 0), np.sort(reference.cluster_centers_, 0), atol=1e-6)
    assert errors[-1] < errors[0] and all(b <= a + 1e-12 for a, b in zip(errors[:-1], errors[1:], strict=True))
    # a point of weight zero moves nothing
    far = np.concatenate([points, [[50.0, 50.0, 50.0]]])
    same, _ = weighted_kmeans(far, np.append(weights, 0.0), start, iterations=15)
    assert np.allclose(same, ours)
    with pytest.raises(ValueError, match="non-negative"):
        weighted_kmeans(points, -weights, start, iterations=1)


@pytest.mark.parametrize("train_encoder", [False, True])
def test_training_against_a_set_frozen_codebook(batch, train_encoder):
    """The refine stage: a new codebook is set and frozen; then the decoder learns (with
    train_encoder, the encoder too); without it every jet keeps its tokens."""
    f, m = batch
    f, m = f[:40], m[:40]
    tok = make_tokenizer(batch, codebook_pt_weighting=1.0)
    latents, weights = tok.particle_latents(f, m)
    assert latents.shape == (int(m.sum()), tok.config.code_dim) and weights.shape == (int(m.sum()),)
    assert weights.max() > 2 * weights.min(), "hard particles count more in the refit"
    refit = tok.quantizer.codebook + 0.01
    tok.set_codebook(refit)
    assert torch.equal(tok.quantizer.codebook, refit)
    tok.freeze_codebook(train_encoder=train_encoder)
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    tok.eval()
    tokens = tok.encode(f, m)
    tok.train()
    optimizer = torch.optim.AdamW([p for p in tok.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        out = tok(f, m)
        assert (out.commitment_loss > 0) == train_encoder
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
    state = tok.state_dict()
    moved = {k for k in state if not torch.equal(state[k], before[k])}
    assert not any(k.startswith("quantizer") for k in moved), "the codebook stays where it was set"
    assert any(k.startswith("decoder") for k in moved), "the decoder learns"
    assert any(k.startswith("encoder") for k in moved) == train_encoder
    if not train_encoder:
        tok.eval()
        assert torch.equal(tok.encode(f, m), tokens)
    with pytest.raises(ValueError, match="Euclidean vq"):
        make_tokenizer(batch, quantizer="fsq", fsq_levels=[4, 4, 3]).set_codebook(refit)


def test_encode_takes_the_codes_the_quantiser_would(batch):
    """encode's nearest codes (one matmul and a min over codes, no one-hot) are the ids of the library's forward."""
    f, m = batch
    m = m.bool()
    tok = make_tokenizer(batch).eval()
    with torch.no_grad():
        latents = tok._encode_latent(f, m)
        _, library_ids, _ = tok._quantize(latents, m)
    ids = tok.encode(f, m, search=False)
    assert torch.equal(ids[m], library_ids[m])
    assert (ids[~m] == tok.config.pad_token_id).all()
