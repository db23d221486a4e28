"""The jet transformer's behaviour: causality, masking, cache, sampling, Auto loading."""

import pytest
import torch
from transformers import AutoConfig, AutoModel

from foundation.models import (
    JetTransformerConfig,
    JetTransformerForCausalJetModeling,
    JetTransformerForJetClassification,
    JetTransformerForMaskedParticleModeling,
    JetTransformerForPretraining,
    JetTransformerModel,
    add_generation_classes,
)
from foundation.models.modeling_jet_transformer import choose_masked_particles, language_model_labels


def config(**kw):
    base = dict(vocab_codes=40, max_particles=20, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
    base.update(kw)
    return JetTransformerConfig(**base)


def sequences(cfg, batch=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = cfg.max_particles
    ids = torch.randint(0, cfg.vocab_codes, (batch, n + 2), generator=g)
    lengths = torch.randint(3, n, (batch,), generator=g)
    ids[:, 0] = cfg.start_token_id
    pos = torch.arange(n + 2)[None]
    ids = torch.where(pos == lengths[:, None] + 1, cfg.stop_token_id, ids)
    ids = torch.where(pos > lengths[:, None] + 1, cfg.pad_token_id, ids)
    return ids, pos <= lengths[:, None] + 1


def test_causal_model_never_attends_to_the_future():
    cfg = config()
    model = JetTransformerForCausalJetModeling(cfg).eval()
    ids, mask = sequences(cfg)
    logits = model(ids, mask).logits
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % cfg.vocab_codes
    later = model(changed, mask).logits
    assert torch.allclose(logits[:, :5], later[:, :5], atol=1e-6)
    assert not torch.allclose(logits[:, 5:], later[:, 5:])


def test_a_padded_causal_pass_gives_each_jet_its_unpadded_logits():
    """The causal pass runs as SDPA's is_causal without a padding mask: exact for right-padded jets."""
    cfg = config()
    model = JetTransformerForCausalJetModeling(cfg).eval()
    ids, mask = sequences(cfg)
    padded = model(ids, mask).logits  # (B, L, V)
    for row in range(len(ids)):
        real = int(mask[row].sum())
        alone = model(ids[row : row + 1, :real]).logits[0]  # (real, V)
        assert torch.allclose(padded[row, :real], alone, atol=1e-5)


def test_a_causal_pass_refuses_padding_before_real_tokens():
    cfg = config()
    model = JetTransformerForCausalJetModeling(cfg).eval()
    ids, mask = sequences(cfg)
    with pytest.raises(ValueError, match="right-padded"):
        model(ids, mask.flip(1))


def test_key_value_cache_gives_the_full_forward_logits():
    cfg = config()
    model = JetTransformerForCausalJetModeling(cfg).eval()
    ids, _ = sequences(cfg, batch=2)
    full = model(ids).logits
    past, steps = None, []
    for t in range(ids.shape[1]):
        out = model(ids[:, t : t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, 1), full, atol=1e-5)


def test_only_masked_positions_enter_the_masked_loss():
    cfg = config(masked_loss_weight=1.0, causal_loss_weight=0.0)
    model = JetTransformerForMaskedParticleModeling(cfg).eval()
    ids, mask = sequences(cfg)
    chosen = choose_masked_particles(ids, mask, cfg.vocab_codes, 0.3, torch.Generator().manual_seed(1))
    assert not chosen[:, 0].any() and not chosen[~mask].any(), "start, stop and pad are never masked"
    assert chosen.any(1).all(), "every jet has a masked particle"
    out = model(ids, mask, masked_positions=chosen, labels=ids)
    # Changing the target of an unmasked particle must not change the loss...
    other = ids.clone()
    unmasked = (~chosen) & mask & (ids < cfg.vocab_codes)
    other[unmasked] = (other[unmasked] + 1) % cfg.vocab_codes
    # ...except through the input; so compare against the loss recomputed from the same logits.
    logits = out.logits
    manual = torch.nn.functional.cross_entropy(logits[chosen], ids[chosen])
    assert torch.allclose(out.loss, manual)
    shifted_targets = torch.nn.functional.cross_entropy(logits[chosen], other[chosen])
    assert torch.allclose(manual, shifted_targets), "unmasked targets do not enter the loss"


def test_sampling_makes_valid_sequences():
    cfg = config()
    model = JetTransformerForCausalJetModeling(cfg)
    seq = model.sample(16, temperature=1.0, top_k=20, top_p=0.95, generator=torch.Generator().manual_seed(0))
    assert seq.shape[0] == 16 and seq.shape[1] <= cfg.max_particles + 2
    assert torch.all(seq[:, 0] == cfg.start_token_id)
    for row in seq:
        stops = (row == cfg.stop_token_id).nonzero().flatten()
        assert len(stops) == 1, "exactly one stop token"
        body = row[1 : stops[0]]
        assert len(body) >= 1 and torch.all(body < cfg.vocab_codes)
        assert torch.all(row[stops[0] + 1 :] == cfg.pad_token_id)
    again = model.sample(16, temperature=1.0, top_k=20, top_p=0.95, generator=torch.Generator().manual_seed(0))
    assert torch.equal(seq, again)


def test_class_conditional_start_tokens():
    cfg = config(num_generation_classes=2, generation_class_names=["qcd", "top"])
    assert cfg.vocab_size == cfg.vocab_codes + 6 and cfg.class_start_token_id(1) == cfg.vocab_codes + 5
    model = JetTransformerForCausalJetModeling(cfg)
    seq = model.sample(3, class_index=1, generator=torch.Generator().manual_seed(0))
    assert torch.all(seq[:, 0] == cfg.class_start_token_id(1))
    with pytest.raises(ValueError):
        cfg.class_start_token_id(2)


def test_class_start_tokens_added_to_a_trained_model_start_as_the_generic_one(tmp_path):
    model = JetTransformerForPretraining(config()).eval()
    ids, mask = sequences(model.config)
    before = model.lm_head(model.transformer(ids, mask, causal=True).last_hidden_state)  # (B, L, V)
    add_generation_classes(model, ["qcd", "top"])
    cfg = model.config
    assert cfg.vocab_size == cfg.vocab_codes + 6 and model.lm_head.weight is model.transformer.wte.weight
    labels = torch.tensor([0, 1, 1, 0])
    hidden = model.transformer(ids.clone().index_fill_(1, torch.tensor([0]), cfg.class_start_token_id(1)), mask, causal=True).last_hidden_state
    # Same predictions for the old vocabulary as from the generic start: training begins from p(jet).
    assert torch.allclose(model.lm_head(hidden)[..., : before.shape[-1]], before, atol=1e-5)
    assert model(ids, mask, class_labels=labels, labels=language_model_labels(ids, mask)).loss > 0
    add_generation_classes(model, ["qcd", "top"])  # already there: unchanged
    with pytest.raises(ValueError, match="generates classes"):
        add_generation_classes(model, ["quark", "gluon"])
    model.save_pretrained(tmp_path)
    loaded = JetTransformerForCausalJetModeling.from_pretrained(tmp_path)
    seq = loaded.sample(4, class_index=1, generator=torch.Generator().manual_seed(0))
    assert torch.all(seq[:, 0] == cfg.class_start_token_id(1)) and torch.all(seq[:, 1] < cfg.vocab_codes)


def test_classifier_free_guidance_mixes_conditional_and_generic_logits():
    torch.manual_seed(0)  # the model's random weights: not whatever the tests before left in the global RNG
    cfg = config(num_generation_classes=2, generation_class_names=["qcd", "top"])
    model = JetTransformerForCausalJetModeling(cfg).eval()
    with torch.no_grad():  # make the class token differ from the generic start
        model.transformer.wte.weight[cfg.class_start_token_id(1)] += 1.0
    # guidance 1 is plain conditional sampling: the same draws with the same seed
    plain = model.sample(6, class_index=1, generator=torch.Generator().manual_seed(3))
    assert torch.equal(plain, model.sample(6, class_index=1, guidance=1.0, generator=torch.Generator().manual_seed(3)))
    # guidance 0 samples from the generic start's logits (the row still starts with the class token)
    generic = model.sample(6, generator=torch.Generator().manual_seed(3))
    unguided = model.sample(6, class_index=1, guidance=0.0, generator=torch.Generator().manual_seed(3))
    assert torch.equal(unguided[:, 1:], generic[:, 1:]) and torch.all(unguided[:, 0] == cfg.class_start_token_id(1))
    guided = model.sample(6, class_index=1, guidance=3.0, generator=torch.Generator().manual_seed(3))
    assert torch.all(guided[:, 0] == cfg.class_start_token_id(1)) and not torch.equal(guided, plain)
    with pytest.raises(ValueError, match="needs a class"):
        model.sample(2, guidance=2.0)
    never_unconditional = JetTransformerForCausalJetModeling(config(num_generation_classes=2, unconditional_fraction=0.0))
    with pytest.raises(ValueError, match="never learnt"):
        never_unconditional.sample(2, class_index=0, guidance=2.0)


def test_class_plan_splits_jets_by_fraction():
    from foundation.errors import InputError
    from foundation.pipelines.generate import class_plan

    cfg = config(num_generation_classes=3, generation_class_names=["q", "g", "t"])
    assert class_plan(cfg, "t", 5, "m") == [(2, 5)]
    assert class_plan(cfg, ["q", "t"], 5, "m") in ([(0, 3), (2, 2)], [(0, 2), (2, 3)])
    assert class_plan(cfg, {"q": 0.474, "t": 0.526}, 2000, "m") == [(0, 948), (2, 1052)]
    with pytest.raises(InputError, match="not one of"):
        class_plan(cfg, "w", 5, "m")
    with pytest.raises(InputError, match="no classes given"):
        class_plan(cfg, {}, 5, "m")
    with pytest.raises(InputError, match="non-negative"):
        class_plan(cfg, {"q": -1.0, "t": 2.0}, 5, "m")
    with pytest.raises(InputError, match="not trained class-conditionally"):
        class_plan(config(), "t", 5, "m")


def test_pretraining_checkpoint_loads_everywhere(tmp_path):
    cfg = config(masked_loss_weight=0.5)
    model = JetTransformerForPretraining(cfg)
    ids, mask = sequences(cfg)
    out = model(ids, mask, labels=language_model_labels(ids, mask))
    assert out.loss > 0 and out.causal_loss is not None and out.masked_loss is not None
    assert model(ids, mask).loss is None, "no labels, no loss (as in transformers)"
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    backbone = AutoModel.from_pretrained(tmp_path)
    assert isinstance(backbone, JetTransformerModel)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), JetTransformerConfig)
    assert torch.allclose(backbone.wte.weight, model.transformer.wte.weight)
    causal = JetTransformerForCausalJetModeling.from_pretrained(tmp_path)
    assert torch.allclose(causal.lm_head.weight, model.lm_head.weight)
    classifier = JetTransformerForJetClassification.from_pretrained(tmp_path, num_labels=3, particle_feature_names=["log_pt", "eta_rel"])
    # New particle-feature input starts at zero: the pretrained backbone is unchanged at first.
    assert torch.all(classifier.transformer.feature_proj.weight == 0)
    feats = torch.randn(*ids.shape, 2)
    assert torch.allclose(
        classifier.transformer(ids, mask, feats).last_hidden_state, model.transformer(ids, mask).last_hidden_state, atol=1e-6
    )
    logits = classifier(ids, mask, feats, labels=torch.tensor([0, 1, 2, 0])).logits
    assert logits.shape == (4, 3) and torch.isfinite(logits).all()


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="divisible"):
        config(hidden_size=30, num_heads=4)
    with pytest.raises(ValueError, match="at least one"):
        config(causal_loss_weight=0.0, masked_loss_weight=0.0)
    with pytest.raises(ValueError, match="mask_fraction"):
        config(mask_fraction=1.5)
    model = JetTransformerModel(config())
    ids = torch.zeros(1, 30, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds"):
        model(ids)


def test_a_pretraining_bundle_loads_as_a_generator_with_every_weight_accounted_for(tmp_path):
    """The masked-particle head is left out on purpose (no load report); nothing else is."""
    cfg = config()
    JetTransformerForPretraining(cfg).save_pretrained(tmp_path)
    model, info = JetTransformerForCausalJetModeling.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"]
    assert not info["missing_keys"] and not info["mismatched_keys"]
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def test_a_pretraining_bundle_loads_as_a_tagger_with_only_the_new_head_missing(tmp_path):
    cfg = config()
    JetTransformerForPretraining(cfg).save_pretrained(tmp_path)
    _, info = JetTransformerForJetClassification.from_pretrained(tmp_path, output_loading_info=True)
    assert not info["unexpected_keys"]
    assert info["missing_keys"] and all(key.startswith(("pooling.", "classifier.")) for key in info["missing_keys"])


def test_the_lean_cross_entropy_of_bf16_logits_matches_torchs():
    from foundation.layers import _LowPrecisionCrossEntropy, cross_entropy

    torch.manual_seed(0)
    logits = (3 * torch.randn(2500, 300)).bfloat16()  # more rows than one block of the lean path
    targets = torch.randint(0, 300, (2500,))
    targets[::7] = -100  # ignored rows take no part in the loss or its mean
    assert 2500 % _LowPrecisionCrossEntropy.BLOCK_ROWS  # a last block of fewer rows
    lean = logits.clone().requires_grad_()
    reference = logits.clone().requires_grad_()
    loss = cross_entropy(lean, targets)
    expected = torch.nn.functional.cross_entropy(reference.float(), targets, ignore_index=-100)
    loss.backward()
    expected.backward()
    assert loss.dtype == torch.float32 and loss.item() == pytest.approx(expected.item(), rel=1e-6)
    assert lean.grad.dtype == torch.bfloat16
    torch.testing.assert_close(lean.grad.float(), reference.grad.float(), rtol=1e-2, atol=1e-7)  # bf16 rounding of the gradient
    assert lean.grad[::7].abs().max() == 0


def test_a_bf16_pretraining_step_gives_the_loss_and_gradients_of_fp32_cross_entropy(monkeypatch):
    # The whole model under CPU autocast: the lean cross entropy against F.cross_entropy of fp32 logits.
    import foundation.models.modeling_jet_transformer as modeling

    config = JetTransformerConfig(vocab_codes=40, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, max_particles=12)
    model = JetTransformerForPretraining(config)
    ids = torch.randint(0, 40, (6, 14))
    ids[:, 0], ids[:, 10], ids[:, 11:] = 40, 41, 42
    attention = ids != 42
    labels = language_model_labels(ids, attention)

    def step():
        model.zero_grad()
        torch.manual_seed(1)  # the same masked particles
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=ids, attention_mask=attention, labels=labels).loss
        loss.backward()
        return loss.item(), [p.grad.clone() for p in model.parameters() if p.grad is not None]

    lean_loss, lean_grads = step()
    monkeypatch.setattr(modeling, "cross_entropy", lambda x, t, ignore_index=-100: torch.nn.functional.cross_entropy(x.float(), t, ignore_index=ignore_index))
    loss, grads = step()
    assert lean_loss == pytest.approx(loss, rel=1e-6)
    for lean, reference in zip(lean_grads, grads, strict=True):
        torch.testing.assert_close(lean, reference, rtol=2e-2, atol=1e-5)


def test_padding_batches_to_a_multiple_leaves_both_losses_unchanged():
    """training.pad_to_multiple_of: the extra positions are masked padding (labels IGNORE_INDEX), so
    the next-token and masked-particle losses are those of the unpadded batch."""
    from foundation.training.inputs import pad_to_multiple

    cfg = config(masked_loss_weight=1.0, max_particles=30)
    ids, mask = sequences(config(max_particles=20))  # (4, 22), for a model with positions up to 32
    batch = {"input_ids": ids, "attention_mask": mask, "labels": language_model_labels(ids, mask), "class_labels": torch.zeros(4, dtype=torch.long)}
    padded = pad_to_multiple(batch, 8)
    assert padded["input_ids"].shape == (4, 24) and padded["class_labels"].shape == (4,)
    assert not padded["attention_mask"][:, 22:].any() and (padded["labels"][:, 22:] == -100).all()
    assert pad_to_multiple(padded, 8) is padded and pad_to_multiple(batch, 1) is batch  # already a multiple: as is
    assert pad_to_multiple(batch, 16, max_length=cfg.max_sequence_length)["input_ids"].shape == (4, 32)
    assert pad_to_multiple(batch, 16, max_length=30)["input_ids"].shape == (4, 30)  # never past the model's positions
    causal = JetTransformerForCausalJetModeling(cfg).eval()
    assert torch.allclose(causal(ids, mask, labels=batch["labels"]).loss, causal(padded["input_ids"], padded["attention_mask"], labels=padded["labels"]).loss, atol=1e-6)
    masked = JetTransformerForMaskedParticleModeling(cfg).eval()
    chosen = choose_masked_particles(ids, mask, cfg.vocab_codes, 0.3, torch.Generator().manual_seed(1))
    unpadded_loss = masked(ids, mask, masked_positions=chosen, labels=ids).loss
    padded_chosen = torch.nn.functional.pad(chosen, (0, 2))
    assert torch.allclose(unpadded_loss, masked(padded["input_ids"], padded["attention_mask"], masked_positions=padded_chosen, labels=padded["input_ids"]).loss, atol=1e-6)


def test_without_token_inputs_a_tagger_sees_the_particles_through_their_features_alone():
    cfg = config(particle_feature_names=["log_pt", "eta_rel"], token_inputs=False, num_labels=2)
    model = JetTransformerForJetClassification(cfg).eval()
    torch.nn.init.normal_(model.transformer.feature_proj.weight)  # as if trained: it starts at zero
    ids, mask = sequences(cfg)
    features = torch.randn(*ids.shape, 2) * mask[..., None]
    other_codes = torch.where(ids < cfg.vocab_codes, (ids + 1) % cfg.vocab_codes, ids)
    logits = model(ids, mask, features).logits
    assert torch.equal(logits, model(other_codes, mask, features).logits)
    assert not torch.allclose(logits, model(ids, mask, features.flip(-1)).logits)
    with pytest.raises(ValueError, match="token_inputs false"):
        config(token_inputs=False)


@pytest.mark.parametrize("embedding", ["linear", "mlp"])
def test_a_particle_feature_embedding_starts_at_zero(embedding):
    """Either way features join unchanged: a backbone pretrained on tokens alone starts fine-tuning as it was."""
    cfg = config(particle_feature_names=["log_pt", "eta_rel"], particle_embedding=embedding)
    model = JetTransformerModel(cfg).eval()
    ids, mask = sequences(cfg)
    features = torch.randn(*ids.shape, 2)
    assert torch.equal(model(ids, mask, features).last_hidden_state, model(ids, mask, torch.zeros_like(features)).last_hidden_state)
    hidden_layers = [m for m in model.feature_proj.modules() if isinstance(m, torch.nn.Linear)]
    assert len(hidden_layers) == (2 if embedding == "mlp" else 1)
    with pytest.raises(ValueError, match="particle_embedding must be one of"):
        config(particle_embedding="conv")


def test_token_dropout_hides_codes_in_training_only():
    cfg = config(token_dropout=0.5)
    model = JetTransformerModel(cfg)
    ids, mask = sequences(cfg)
    seen = {}
    model.wte.register_forward_hook(lambda _m, args, _out: seen.update(ids=args[0].clone()))
    model.train()(ids, mask)
    codes = ids < cfg.vocab_codes
    hidden = seen["ids"] == cfg.mask_token_id
    assert torch.equal(seen["ids"][~hidden], ids[~hidden]) and not hidden[~codes].any()
    assert 0.3 < hidden[codes].float().mean() < 0.7
    model.eval()(ids, mask)
    assert torch.equal(seen["ids"], ids)
    with pytest.raises(ValueError, match="token_dropout must be in"):
        config(token_dropout=1.0)
