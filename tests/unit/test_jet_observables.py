"""The auxiliary jet-level pretraining target: the observables against their definitions, the loss in
the pretraining model, its heads left out by every other head, and a pretraining run with it on."""

import itertools
import json
import math

import pytest
import torch
from helpers.sequences import token_sequences

from foundation.errors import ConfigError
from foundation.models import (
    JetTransformerConfig,
    JetTransformerForCausalJetModeling,
    JetTransformerForJetClassification,
    JetTransformerForPretraining,
)
from foundation.models.jet_observables import JET_OBSERVABLES, jet_observables, measure_jet_observable_scaling
from foundation.models.modeling_jet_transformer import language_model_labels


def random_jets(batch=4, n=9, seed=0):
    """(B, N + 2, 4) (pT, η_rel, φ_rel, E) with a start row, jets of 9, 5, 3 and 1 particles, then zero rows."""
    g = torch.Generator().manual_seed(seed)
    pt = torch.exp(torch.randn(batch, n, generator=g) + 2.0)
    eta, phi = 0.3 * torch.randn(batch, n, generator=g), 0.3 * torch.randn(batch, n, generator=g)
    kin = torch.stack([pt, eta, phi, pt * torch.cosh(eta)], -1)
    lengths = torch.tensor([n, 5, 3, 1])[:batch]
    kin = kin * (torch.arange(n)[None] < lengths[:, None])[..., None]
    out = torch.zeros(batch, n + 2, 4)
    out[:, 1 : n + 1] = kin
    return out, lengths


def brute_force(particles: torch.Tensor) -> list[float]:
    """The observables of one jet (K, 4) by their textbook sums, in float64."""
    pt, eta, phi = (particles[:, i].double() for i in range(3))
    e, px, py, pz = (pt * torch.cosh(eta)).sum(), (pt * torch.cos(phi)).sum(), (pt * torch.sin(phi)).sum(), (pt * torch.sinh(eta)).sum()
    z = pt / pt.sum()

    def delta_r(i, j):
        d_phi = (phi[i] - phi[j] + math.pi) % (2 * math.pi) - math.pi
        return math.hypot(eta[i] - eta[j], d_phi)

    k = len(pt)
    e2 = sum(z[i] * z[j] * delta_r(i, j) for i, j in itertools.combinations(range(k), 2))
    e3 = sum(z[i] * z[j] * z[m] * delta_r(i, j) * delta_r(j, m) * delta_r(i, m) for i, j, m in itertools.combinations(range(k), 3))
    mass = math.sqrt(e**2 - px**2 - py**2 - pz**2)
    return [math.log(mass), math.log(math.hypot(px, py)), math.log(k), math.log(e2), math.log(e3) - 3 * math.log(e2)]


def test_jet_observables_equal_their_textbook_sums():
    kin, lengths = random_jets()
    got = jet_observables(kin)
    assert got.shape == (4, len(JET_OBSERVABLES)) and got.dtype == torch.float32
    for row, k in enumerate(lengths[:3].tolist()):  # jets of 9, 5 and 3 particles
        assert got[row].tolist() == pytest.approx(brute_force(kin[row, 1 : k + 1]), rel=1e-4, abs=1e-4)
    assert torch.isfinite(got).all(), "a one-particle jet (no pairs, no mass) stays finite"


def test_jet_observables_do_not_change_under_a_rotation_in_phi_across_the_wrap():
    kin, _ = random_jets()
    rotated = kin.clone()
    rotated[..., 2] = torch.where(kin[..., 0] > 0, torch.remainder(kin[..., 2] + 3.0 + math.pi, 2 * math.pi) - math.pi, 0.0)
    assert torch.allclose(jet_observables(rotated)[:3], jet_observables(kin)[:3], atol=1e-4)


def test_the_scaling_is_the_median_and_central_spread_whatever_the_batching():
    kin, _ = random_jets(seed=3)
    jets = torch.cat([random_jets(seed=s)[0][:3] for s in range(40)])  # 120 jets of 9, 5 and 3 particles
    values = jet_observables(jets)
    median, scale = measure_jet_observable_scaling([{"particle_kinematics": jets}])
    assert torch.allclose(median, values.median(0).values, atol=0.05 * scale.max())
    assert torch.allclose(scale, (values.quantile(0.84, 0) - values.quantile(0.16, 0)) / 2, rtol=1e-5)
    by_multiplicity = [{"particle_kinematics": jets[i::3]} for i in range(3)]  # length-grouped batches
    assert torch.allclose(measure_jet_observable_scaling(by_multiplicity)[1], scale, rtol=1e-5)
    assert scale[JET_OBSERVABLES.index("log_multiplicity")] > 0.2, "the spread between batches counts"


def config(**kw):
    base = dict(vocab_codes=40, max_particles=9, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64, masked_loss_weight=0.5, jet_loss_weight=1.0)
    return JetTransformerConfig(**{**base, **kw})


def test_the_jet_target_adds_its_loss_and_trains_its_head():
    model = JetTransformerForPretraining(config())
    kin, lengths = random_jets()
    ids, mask = token_sequences(model.config, lengths)
    out = model(ids, mask, particle_kinematics=kin, labels=language_model_labels(ids, mask))
    assert torch.isfinite(out.jet_loss) and out.jet_loss > 0
    assert torch.allclose(out.loss, out.causal_loss + 0.5 * out.masked_loss + out.jet_loss)
    out.loss.backward()
    assert model.jet_head.weight.grad.abs().sum() > 0 and model.transformer.wte.weight.grad.abs().sum() > 0
    model.set_jet_target_scaling(torch.full((5,), 2.0), torch.full((5,), 3.0))
    assert model.jet_target_scaling_measured and torch.equal(model.jet_target_std, torch.full((5,), 3.0))
    with pytest.raises(ValueError, match="particle_kinematics"):
        model(ids, mask, labels=language_model_labels(ids, mask))
    with pytest.raises(ValueError, match="masked_loss_weight"):
        config(masked_loss_weight=0.0)
    with pytest.raises(ValueError, match="jet_loss_weight"):
        config(jet_loss_weight=-1.0)
    assert JetTransformerForPretraining(config(jet_loss_weight=0.0)).jet_head is None, "off: the model is as before"


def test_every_other_head_loads_a_jet_target_checkpoint_without_its_head(tmp_path, caplog):
    model = JetTransformerForPretraining(config())
    model.save_pretrained(tmp_path)
    for cls, kwargs in ((JetTransformerForJetClassification, {"num_labels": 2}), (JetTransformerForCausalJetModeling, {})):
        loaded, info = cls.from_pretrained(tmp_path, output_loading_info=True, **kwargs)
        assert not info["unexpected_keys"], (cls.__name__, info["unexpected_keys"])
        assert torch.equal(loaded.transformer.wte.weight, model.transformer.wte.weight)


def test_pretraining_with_the_jet_target_learns_and_continues_from_a_bundle(jet_files, tiny_tokenizer, tmp_path):
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    def run(folder, overrides):
        recipe = load_pretrain_recipe(
            "pretrain/tiny.yaml",
            {"tokenizer": str(tiny_tokenizer), "training.output_dir": str(folder), "training.progress": False,
             "training.max_steps": 20, "training.save_every": 20, "training.eval_every": 5, "training.log_every": 1, **overrides},
        )
        recipe.data.files = [str(p) for p in jet_files]
        return pretrain(recipe)

    bundle = run(tmp_path / "plain", {})
    assert JetTransformerForPretraining.from_pretrained(bundle).jet_head is None
    continued = run(tmp_path / "continued", {"init_from": str(bundle), "model": {"jet_loss_weight": 1.0}})
    model = JetTransformerForPretraining.from_pretrained(continued)
    assert model.config.jet_loss_weight == 1.0 and model.jet_target_scaling_measured, "measured before training and saved"
    assert (model.jet_target_std > 0.01).all() and (model.jet_target_std != 1).all()
    logged = [json.loads(line) for line in (tmp_path / "continued" / "metrics.jsonl").read_text().splitlines()]
    jet_losses = [r["eval/jet_loss"] for r in logged if "eval/jet_loss" in r]  # steps 5, 10, 15, 20
    assert len(jet_losses) == 4 and jet_losses[-1] < 0.95 * jet_losses[0], jet_losses
    assert "jet observables regression" in (continued / "README.md").read_text()
    # Continuing a jet-target bundle keeps its scaling (the targets the head learnt), measured on other jets or not.
    again = JetTransformerForPretraining.from_pretrained(run(tmp_path / "again", {"init_from": str(continued), "model": {}, "jet_target_jets": 7}))
    assert torch.equal(again.jet_target_mean, model.jet_target_mean) and torch.equal(again.jet_target_std, model.jet_target_std)
    # Next-token training alone (finetune/anomaly_background.yaml) drops the target, which reads the masked pass.
    causal_only = run(tmp_path / "causal", {"init_from": str(continued), "model": {"masked_loss_weight": 0.0}})
    assert JetTransformerForPretraining.from_pretrained(causal_only).jet_head is None
    with pytest.raises(ConfigError, match="masked_loss_weight"):
        run(tmp_path / "bad", {"init_from": str(continued), "model": {"masked_loss_weight": 0.0, "jet_loss_weight": 1.0}})
