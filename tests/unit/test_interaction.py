"""Pairwise interaction attention (ParT): the pair features, the bias in the backbone, its cache,
save/load, pretraining and fine-tuning with it on; and bundles saved before the Hugging Face
argument names still load."""

import json
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from helpers.sequences import token_sequences
from transformers import AutoModel

from foundation.models import (
    JetTransformerConfig,
    JetTransformerForCausalJetModeling,
    JetTransformerForJetClassification,
    JetTransformerForMaskedParticleModeling,
    JetTransformerForPretraining,
    JetTransformerModel,
)
from foundation.models.interaction import measure_code_kinematics, pair_features
from foundation.models.modeling_jet_transformer import language_model_labels

OLD_BUNDLE = Path(__file__).parents[1] / "data" / "pre_hf_rename"


def config(**kw):
    base = dict(vocab_codes=40, max_particles=12, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, interaction_attention=True)
    base.update(kw)
    return JetTransformerConfig(**base)


def jet_kinematics(batch=3, n=10, seed=0):
    """(B, N + 2, 4) (pT, η_rel, φ_rel, E) at particle positions 1..k, zero at start, stop and pad."""
    g = torch.Generator().manual_seed(seed)
    pt = torch.exp(torch.randn(batch, n, generator=g) + 1.0)
    eta, phi = 0.3 * torch.randn(batch, n, generator=g), 0.3 * torch.randn(batch, n, generator=g)
    kin = torch.stack([pt, eta, phi, pt * torch.cosh(eta)], -1)
    lengths = torch.tensor([n, n // 2, 3])[:batch]
    kin = kin * (torch.arange(n)[None] < lengths[:, None])[..., None]
    out = torch.zeros(batch, n + 2, 4)
    out[:, 1 : n + 1] = kin
    return out, lengths


def with_code_table(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    v = model.config.vocab_codes
    pt, eta, phi = torch.exp(torch.randn(v, generator=g)), 0.2 * torch.randn(v, generator=g), 0.2 * torch.randn(v, generator=g)
    model.transformer.set_code_kinematics(torch.stack([pt, eta, phi, pt * torch.cosh(eta)], -1))
    return model


# ----------------------------------------------------------------------------- pair features
def test_pair_features_are_finite_masked_symmetric_and_match_their_definitions():
    kin, lengths = jet_kinematics()
    kin[0, 2] = kin[0, 1]  # a collinear pair: the same particle twice
    features, valid = pair_features(kin, kin)  # (B, T, T, 4), (B, T, T)
    assert torch.isfinite(features).all(), "padded and collinear pairs are clamped, never NaN or inf"
    assert torch.equal(features, features.transpose(1, 2)) and torch.equal(valid, valid.transpose(1, 2))
    real = kin[..., 0] > 0
    assert not valid[~(real[:, :, None] & real[:, None, :])].any(), "pairs with a non-particle are masked"
    assert not valid.diagonal(dim1=1, dim2=2).any() and not valid[0, 1, 2], "collinear pairs are masked"
    # One pair by hand, ParT's definitions.
    a, b = kin[1, 1], kin[1, 3]
    delta_r = math.hypot(a[1] - b[1], a[2] - b[2])
    p = lambda k: torch.stack([k[0] * torch.cos(k[2]), k[0] * torch.sin(k[2]), k[0] * torch.sinh(k[1])])  # noqa: E731
    m2 = (a[3] + b[3]) ** 2 - ((p(a) + p(b)) ** 2).sum()
    expected = [math.log(delta_r), math.log(min(a[0], b[0]) * delta_r), math.log(min(a[0], b[0]) / (a[0] + b[0])), math.log(m2)]
    assert valid[1, 1, 3] and torch.allclose(features[1, 1, 3], torch.tensor(expected), rtol=1e-4)


def test_pair_features_equal_weaver_particle_transformers():
    """The same numbers as ParT's own pairwise_lv_fts_pp (weaver-core, the benchmark's peer) for
    massless particles, where its rapidity is our η (its order: ln kT, ln z, ln ΔR, ln m²)."""
    weaver = pytest.importorskip("weaver.nn.model.ParticleTransformer")
    kin, _ = jet_kinematics(batch=2, n=8)
    pt, eta, phi, _ = kin[:, 1:9].double().unbind(-1)  # the particles of two jets
    e = pt * torch.cosh(eta)  # massless in double precision, as both sides then read it
    ours, valid = pair_features(torch.stack([pt, eta, phi, e], -1), torch.stack([pt, eta, phi, e], -1))
    p4 = torch.stack([pt * torch.cos(phi), pt * torch.sin(phi), pt * torch.sinh(eta), e], dim=1)  # (B, 4, N)
    theirs = weaver.pairwise_lv_fts_pp(p4[:, :, :, None], p4[:, :, None, :], num_outputs=4)  # (B, 4, N, N)
    theirs = theirs[:, [2, 0, 1, 3]].permute(0, 2, 3, 1)  # -> ln ΔR, ln kT, ln z, ln m²
    assert valid.sum() == 8 * 7 + 4 * 3  # jets of 8 and 4 particles: every ordered pair of distinct particles
    assert torch.allclose(ours[valid].double(), theirs[valid].float().double(), rtol=1e-4, atol=1e-4)


def test_pair_features_do_not_change_under_a_rotation_of_the_jet_in_phi():
    kin, _ = jet_kinematics()
    features, valid = pair_features(kin, kin)
    rotated = kin.clone()
    real = kin[..., 0] > 0
    # Rotate by 2.9 rad and wrap into [-π, π): pairs now straddle the ±π boundary.
    rotated[..., 2] = torch.where(real, torch.remainder(kin[..., 2] + 2.9 + math.pi, 2 * math.pi) - math.pi, 0.0)
    features_r, valid_r = pair_features(rotated, rotated)
    assert torch.equal(valid, valid_r)
    assert torch.allclose(features[valid], features_r[valid], atol=1e-4)


def test_code_kinematics_are_the_mean_kinematics_of_each_code():
    ids = torch.tensor([[42, 1, 1, 2, 43]])
    kin = torch.zeros(1, 5, 4)
    kin[0, 1:4] = torch.tensor([[math.e, 0.1, 0.2, 3.0], [math.e**3, 0.3, -0.2, 30.0], [1.0, -0.5, 0.0, 1.2]])
    table = measure_code_kinematics([{"input_ids": ids, "particle_kinematics": kin}], vocab_codes=4)
    assert torch.allclose(table[1, :3], torch.tensor([math.e**2, 0.2, 0.0]), atol=1e-5)  # exp(mean ln pT), means
    assert torch.allclose(table[1, 3], table[1, 0] * math.cosh(0.2), rtol=1e-5)  # massless energy
    assert torch.allclose(table[0, 1:3], torch.tensor([(0.1 + 0.3 - 0.5) / 3, 0.0]), atol=1e-5), "unseen codes: the mean of all"


# ----------------------------------------------------------------------------- the model
def test_interaction_bias_changes_attention_but_starts_at_zero():
    cfg = config()
    kin, lengths = jet_kinematics(n=cfg.max_particles)
    ids, mask = token_sequences(cfg, lengths)
    model = JetTransformerModel(cfg).eval()
    plain = JetTransformerModel(config(interaction_attention=False)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    same = model(ids, mask, particle_kinematics=kin, causal=False).last_hidden_state
    assert torch.allclose(same, plain(ids, mask, causal=False).last_hidden_state, atol=1e-6), "zero-initialised bias"
    torch.nn.init.normal_(model.interaction.mlp[-1].weight)
    out = model(ids, mask, particle_kinematics=kin, causal=False).last_hidden_state
    assert torch.isfinite(out).all() and not torch.allclose(out, same, atol=1e-4)
    # Padding keeps no influence: the real positions do not see what sits in the padded ones.
    noisy = kin.clone()
    noisy[~mask] = torch.rand(int((~mask).sum()), 4) + 1.0
    assert torch.allclose(model(ids, mask, particle_kinematics=noisy, causal=False).last_hidden_state[mask], out[mask], atol=1e-5)


def test_masked_particles_kinematics_are_hidden_from_the_masked_objective():
    cfg = config(causal_loss_weight=0.0, masked_loss_weight=1.0)
    kin, lengths = jet_kinematics(n=cfg.max_particles)
    ids, mask = token_sequences(cfg, lengths)
    model = JetTransformerForMaskedParticleModeling(cfg).eval()
    torch.nn.init.normal_(model.transformer.interaction.mlp[-1].weight)
    out = model(ids, mask, particle_kinematics=kin, labels=language_model_labels(ids, mask))
    moved = kin.clone()
    moved[out.masked_positions] *= 3.0
    again = model(ids, mask, particle_kinematics=moved, masked_positions=out.masked_positions)
    assert torch.allclose(out.logits, again.logits, atol=1e-6) and torch.isfinite(out.loss)


def test_interaction_model_round_trips_through_save_load_and_auto_classes(tmp_path):
    model = with_code_table(JetTransformerForPretraining(config(masked_loss_weight=0.5))).eval()
    torch.nn.init.normal_(model.transformer.interaction.mlp[-1].weight)
    kin, lengths = jet_kinematics(n=model.config.max_particles)
    ids, mask = token_sequences(model.config, lengths)
    model.save_pretrained(tmp_path)
    backbone = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(backbone, JetTransformerModel) and backbone.config.interaction_attention
    assert torch.equal(backbone.code_kinematics, model.transformer.code_kinematics), "the code table travels with the weights"
    for causal in (True, False):
        expected = model.transformer(ids, mask, particle_kinematics=kin, causal=causal).last_hidden_state
        assert torch.allclose(backbone(ids, mask, particle_kinematics=kin, causal=causal).last_hidden_state, expected, atol=1e-6)
    causal_model = JetTransformerForCausalJetModeling.from_pretrained(tmp_path).eval()
    labels = language_model_labels(ids, mask)
    assert torch.allclose(causal_model(ids, mask, labels=labels).loss, model(ids, mask, labels=labels).causal_loss, atol=1e-6)
    classifier = JetTransformerForJetClassification.from_pretrained(tmp_path, num_labels=2)
    assert torch.isfinite(classifier(ids, mask, particle_kinematics=kin, labels=torch.tensor([0, 1, 0])).loss)


def test_cached_sampling_with_interactions_draws_the_tokens_of_uncached_sampling():
    cfg = config(num_generation_classes=2, generation_class_names=["qcd", "top"])
    model = with_code_table(JetTransformerForCausalJetModeling(cfg)).eval()
    torch.nn.init.normal_(model.transformer.interaction.mlp[-1].weight, std=2.0)
    for kwargs in ({}, {"class_index": 1, "guidance": 2.0}):
        cached = model.sample(8, generator=torch.Generator().manual_seed(5), **kwargs)
        uncached = model.sample(8, generator=torch.Generator().manual_seed(5), use_cache=False, **kwargs)
        assert torch.equal(cached, uncached)
    # The bias matters for what is drawn: without it (plain model, same weights) the draws differ.
    plain = JetTransformerForCausalJetModeling(config(interaction_attention=False, num_generation_classes=2)).eval()
    plain.load_state_dict(model.state_dict(), strict=False)
    assert not torch.equal(plain.sample(8, generator=torch.Generator().manual_seed(5)), cached)
    with pytest.raises(ValueError, match="never measured"):
        JetTransformerForCausalJetModeling(cfg).sample(2)


# ----------------------------------------------------------------------------- old bundles
def test_a_bundle_saved_before_the_hugging_face_names_loads_and_predicts_as_it_did():
    expected = np.load(OLD_BUNDLE / "expected.npz")
    ids, mask = torch.as_tensor(expected["input_ids"]), torch.as_tensor(expected["attention_mask"])
    assert "interaction_attention" not in json.loads((OLD_BUNDLE / "pretraining" / "config.json").read_text())
    model = JetTransformerForCausalJetModeling.from_pretrained(OLD_BUNDLE / "pretraining").eval()
    assert not model.config.interaction_attention and model.transformer.interaction is None
    with torch.no_grad():
        # at the real positions: what padded positions hold is no prediction (the causal pass leaves them unmasked)
        real = mask.numpy()
        assert np.allclose(model(ids, mask).logits.numpy()[real], expected["causal_logits"][real], atol=1e-5)
        conditioned = model(ids, mask, class_labels=torch.as_tensor(expected["class_labels"]), labels=language_model_labels(ids, mask))
    assert np.allclose(conditioned.logits.numpy()[real], expected["conditioned_logits"][real], atol=1e-5)
    assert np.isclose(conditioned.loss.item(), float(expected["causal_loss_conditioned"]), atol=1e-5)
    assert isinstance(AutoModel.from_pretrained(OLD_BUNDLE / "pretraining"), JetTransformerModel)


# ----------------------------------------------------------------------------- training
def _losses(run_dir: Path) -> list[float]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in rows if "train/loss" in r]


def test_pretraining_and_finetuning_with_interactions_learn(jet_files, tiny_tokenizer, tmp_path):
    from foundation.hub import load_bundle
    from foundation.pipelines.finetune import finetune, load_finetune_recipe
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    files = [str(p) for p in jet_files]
    run = tmp_path / "pretrain"
    recipe = load_pretrain_recipe(
        "pretrain/tiny.yaml",
        {"tokenizer": str(tiny_tokenizer), "training.output_dir": str(run), "training.progress": False,
         "training.max_steps": 20, "training.save_every": 20, "training.eval_every": 20, "model.interaction_attention": True},
    )
    recipe.data.files = files
    bundle = pretrain(recipe)
    losses = _losses(run)
    assert losses[-1] < losses[0], losses
    final = json.loads((run / "train_summary.json").read_text())["final"]
    assert 0 < final["eval/token_accuracy"] <= 1 and 0 < final["eval/masked_accuracy"] <= 1
    model = load_bundle(bundle).model
    assert model.config.interaction_attention and model.transformer.code_kinematics.any(), "code table measured and saved"
    # The bundle alone generates (cached sampling on the stored code table), scores and embeds jets.
    from foundation.data.sources import JetCollection
    from foundation.pipelines.anomaly import likelihood_scores
    from foundation.pipelines.embed import embed
    from foundation.pipelines.generate import generate_jets

    generated = JetCollection.open(generate_jets(bundle, 6, tmp_path / "generated.h5", progress=False)).read_all()
    assert len(generated) == 6 and generated.mask.sum(1).min() >= 1
    assert np.isfinite(likelihood_scores(bundle, files, limit=4, progress=False)["nll_per_token"]).all()
    with h5py.File(embed(bundle, files, tmp_path / "embedding.h5", limit=4, progress=False), "r") as f:
        assert f["embedding"].shape == (4, model.config.hidden_size) and np.isfinite(f["embedding"][:]).all()

    tuned = tmp_path / "finetune"
    ft = load_finetune_recipe(
        "finetune/top_tagging_tiny.yaml",
        {"model": str(bundle), "training.output_dir": str(tuned), "training.progress": False, "training.max_steps": 20,
         "training.save_every": 20, "training.eval_every": 20},
    )
    ft.data.files = files
    finetune(ft)
    losses = _losses(tuned)
    assert losses[-1] < losses[0], losses
    assert 0 <= json.loads((tuned / "metrics.json").read_text())["auc"] <= 1


def test_interaction_recipes_load_and_fine_tuning_can_add_interactions_to_an_old_backbone():
    from foundation.pipelines.finetune import load_finetune_recipe
    from foundation.pipelines.pretrain import load_pretrain_recipe

    assert load_pretrain_recipe("pretrain/small_interaction.yaml").model["interaction_attention"] is True
    assert load_finetune_recipe("finetune/top_tagging_interaction.yaml").model.endswith("pretrain-small-interaction/model")
    load_finetune_recipe("finetune/top_tagging_tiny.yaml", {"head": {"interaction_attention": True}})
    old = JetTransformerForCausalJetModeling.from_pretrained(OLD_BUNDLE / "pretraining").eval()
    added = JetTransformerForJetClassification.from_pretrained(OLD_BUNDLE / "pretraining", num_labels=2, interaction_attention=True).eval()
    ids, mask = torch.as_tensor(np.load(OLD_BUNDLE / "expected.npz")["input_ids"]), None
    kin = torch.rand(*ids.shape, 4) + 0.1
    with torch.no_grad():
        before = old.transformer(ids, mask, causal=False).last_hidden_state
        after = added.transformer(ids, mask, particle_kinematics=kin, causal=False).last_hidden_state
    assert torch.allclose(before, after, atol=1e-6), "the new bias starts at zero: the backbone starts unchanged"


def test_key_value_cache_with_interactions_gives_the_full_forward_logits():
    model = with_code_table(JetTransformerForCausalJetModeling(config())).eval()
    torch.nn.init.normal_(model.transformer.interaction.mlp[-1].weight)
    ids, _ = token_sequences(model.config, torch.tensor([9, 4]))
    full = model(ids).logits
    past, steps = None, []
    kinematics = model.transformer.kinematics_of_tokens(ids)  # (B, L, 4)
    for t in range(ids.shape[1]):
        out = model(ids[:, t : t + 1], particle_kinematics=kinematics[:, : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)
    first = model(ids[:, :3], use_cache=True).past_key_values
    with pytest.raises(ValueError, match="with past_key_values, give particle_kinematics"):
        model(ids[:, 3:4], past_key_values=first)
