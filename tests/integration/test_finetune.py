"""Fine-tuning modes, evaluation, CWoLa and the CLI on tiny data."""

import json

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from foundation.cli import app
from foundation.errors import ConfigError
from foundation.hub import load_bundle
from foundation.models import JetTransformerConfig, JetTransformerForJetClassification
from foundation.pipelines.anomaly import cwola, mixed_samples
from foundation.pipelines.finetune import (
    build_classifier,
    finetune,
    layerwise_param_groups,
    load_finetune_recipe,
)


def _recipe(jet_files, bundle, out, **overrides):
    values = {"model": str(bundle), "training.output_dir": str(out), "training.progress": False, "training.max_steps": 20, "training.save_every": 10, "training.eval_every": 10}
    values.update(overrides)
    recipe = load_finetune_recipe("finetune/top_tagging_tiny.yaml", values)
    recipe.data.files = [str(p) for p in jet_files]
    return recipe


def test_frozen_mode_leaves_the_backbone_alone(jet_files, tiny_bundle, tmp_path):
    bundle = finetune(_recipe(jet_files, tiny_bundle, tmp_path / "frozen", mode="frozen"))
    before, after = load_file(tiny_bundle / "model.safetensors"), load_file(bundle / "model.safetensors")
    for key in before:
        if key.startswith("transformer."):
            assert torch.equal(before[key], after[key]), key
    metrics = json.loads((bundle.parent / "metrics.json").read_text())
    assert metrics["auc"] > 0.6 and (bundle.parent / "roc.png").exists()
    card = (bundle / "README.md").read_text()
    assert "auc" in card and "mode: frozen" in card


def test_head_only_steps_keep_the_backbone_until_it_joins(jet_files, tiny_bundle, tmp_path):
    """LP-FT: for head_only_steps the backbone is exactly the pretrained one while the head and the
    new feature input learn; after them the backbone trains too."""
    pretrained = load_file(tiny_bundle / "model.safetensors")
    # the weights of the last step, and a particle-feature input new to the backbone
    last = {"training.keep_best": None, "training.early_stopping_patience": None, "particle_features": ["log_pt", "eta_rel"]}

    def backbone_changed(head_only_steps):
        bundle = finetune(_recipe(jet_files, tiny_bundle, tmp_path / f"lpft-{head_only_steps}", head_only_steps=head_only_steps, **last))
        tuned = load_file(bundle / "model.safetensors")
        return {key: not torch.equal(pretrained[key], tuned[key]) for key in pretrained if key.startswith("transformer.")}, tuned

    changed, tuned = backbone_changed(20)  # the whole run (20 steps)
    assert not any(changed.values())
    assert tuned["transformer.feature_proj.weight"].abs().sum() > 0  # zero-initialised, it learnt beside the head
    changed, _ = backbone_changed(10)
    assert changed["transformer.stack.blocks.0.attn.qkv.weight"] and changed["transformer.wte.weight"]


def test_early_stopping_waits_for_the_backbone_to_join(jet_files, tiny_bundle, tmp_path):
    """A head that stops improving during its head-only steps must not end the run before the
    backbone has trained for `patience` evaluations. (A rate too small to change the validation AUC:
    every evaluation after the first is "no better".)"""
    overrides = {
        "head_only_steps": 15, "training.learning_rate": 1e-9, "training.eval_every": 5, "training.warmup_steps": 1,
        "training.keep_best": "eval/auc", "training.keep_best_mode": "max", "training.early_stopping_patience": 1, "training.max_steps": 40,
    }
    bundle = finetune(_recipe(jet_files, tiny_bundle, tmp_path / "patient", **overrides))
    metrics = json.loads((bundle.parent / "metrics.json").read_text())
    assert metrics["stopped_early"] and metrics["steps"] == 15 + 5  # the backbone's start + one evaluation of patience


def test_head_only_steps_need_a_pretrained_backbone_that_trains(jet_files, tiny_bundle, tmp_path):
    with pytest.raises(ConfigError, match="'head_only_steps': a model from scratch"):
        _recipe(jet_files, tiny_bundle, tmp_path, init="scratch", head_only_steps=5)
    with pytest.raises(ConfigError, match="'head_only_steps': mode frozen"):
        _recipe(jet_files, tiny_bundle, tmp_path, mode="frozen", head_only_steps=5)
    with pytest.raises(ConfigError, match="'head_only_steps': must be >= 0"):
        _recipe(jet_files, tiny_bundle, tmp_path, head_only_steps=-1)


def test_scratch_has_the_same_architecture_and_other_weights(jet_files, tiny_bundle, tmp_path):
    bundle = finetune(_recipe(jet_files, tiny_bundle, tmp_path / "scratch", init="scratch", **{"training.max_steps": 2, "training.save_every": 2, "training.eval_every": 2}))
    pre, scratch = load_file(tiny_bundle / "model.safetensors"), load_file(bundle / "model.safetensors")
    key = "transformer.stack.blocks.0.attn.qkv.weight"
    assert pre[key].shape == scratch[key].shape and not torch.allclose(pre[key], scratch[key], atol=1e-2)


def test_only_a_model_from_scratch_may_change_the_backbone_shape(jet_files, tiny_bundle, tmp_path):
    base = load_bundle(tiny_bundle)
    deeper = base.model.config.num_layers + 1
    recipe = _recipe(jet_files, tiny_bundle, tmp_path, init="scratch", architecture={"num_layers": deeper})
    model = build_classifier(recipe, base, ["qcd", "top"], [])
    assert model.config.num_layers == deeper and len(model.transformer.stack.blocks) == deeper
    with pytest.raises(ConfigError, match="'architecture': only with init: scratch"):
        _recipe(jet_files, tiny_bundle, tmp_path, architecture={"num_layers": deeper})
    odd_heads = _recipe(jet_files, tiny_bundle, tmp_path, init="scratch", architecture={"num_heads": base.model.config.hidden_size + 1})
    with pytest.raises(ConfigError, match="'architecture': hidden_size .* must be divisible by num_heads"):
        build_classifier(odd_heads, base, ["qcd", "top"], [])
    with pytest.raises(ConfigError, match="'head': classifier_pooling must be one of"):
        build_classifier(_recipe(jet_files, tiny_bundle, tmp_path, head={"classifier_pooling": "max"}), base, ["qcd", "top"], [])
    with pytest.raises(ConfigError, match="architecture.depth"):
        _recipe(jet_files, tiny_bundle, tmp_path, init="scratch", architecture={"depth": deeper})


def test_a_recipe_sets_the_input_options_where_they_belong(jet_files, tiny_bundle, tmp_path):
    """token_inputs and particle_embedding shape a model from scratch; token_dropout regularises any."""
    base = load_bundle(tiny_bundle)
    features = ["log_pt", "eta_rel"]
    scratch = _recipe(jet_files, tiny_bundle, tmp_path, init="scratch", architecture={"token_inputs": False, "particle_embedding": "mlp"})
    model = build_classifier(scratch, base, ["qcd", "top"], features)
    assert not model.config.token_inputs and isinstance(model.transformer.feature_proj, torch.nn.Sequential)
    model = build_classifier(_recipe(jet_files, tiny_bundle, tmp_path, head={"token_dropout": 0.3}), base, ["qcd", "top"], features)
    assert model.config.token_dropout == 0.3
    with pytest.raises(ConfigError, match="'architecture': token_inputs false"):
        build_classifier(scratch, base, ["qcd", "top"], [])
    with pytest.raises(ConfigError, match="'architecture': only with init: scratch"):
        _recipe(jet_files, tiny_bundle, tmp_path, architecture={"token_inputs": False})


def test_layerwise_rates_fall_with_depth():
    cfg = JetTransformerConfig(vocab_codes=16, max_particles=8, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, num_labels=2)
    model = JetTransformerForJetClassification(cfg)
    groups = layerwise_param_groups(model, 0.5, 0.01)
    scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert scale[id(named["transformer.wte.weight"])] == 0.5**4
    assert scale[id(named["transformer.stack.blocks.0.attn.qkv.weight"])] == 0.5**3
    assert scale[id(named["transformer.stack.blocks.2.attn.qkv.weight"])] == 0.5
    assert scale[id(named["classifier.0.weight"])] == 1.0
    assert sum(len(g["params"]) for g in groups) == len(named)


def test_layerwise_rates_let_a_new_feature_input_learn_at_full_rate():
    cfg = JetTransformerConfig(vocab_codes=16, max_particles=8, hidden_size=16, num_layers=3, num_heads=2, intermediate_size=32, num_labels=2, particle_feature_names=["log_pt", "eta_rel"])
    model = JetTransformerForJetClassification(cfg)
    named = dict(model.named_parameters())
    proj = [n for n in named if n.startswith("transformer.feature_proj")]
    assert proj
    for new_inputs, expected in ((False, 0.5**4), (True, 1.0)):
        groups = layerwise_param_groups(model, 0.5, 0.01, new_inputs=new_inputs)
        scale = {id(p): g["lr_scale"] for g in groups for p in g["params"]}
        assert {scale[id(named[n])] for n in proj} == {expected}
        assert scale[id(named["transformer.wte.weight"])] == 0.5**4


def test_bad_finetune_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("mode: thawed\n")
    with pytest.raises(ConfigError, match="mode"):
        load_finetune_recipe(bad)
    bad.write_text("head:\n  pooling: max\n")
    with pytest.raises(ConfigError, match="head.pooling"):
        load_finetune_recipe(bad)


def test_mixed_samples_have_the_asked_fractions():
    import numpy as np

    labels = np.r_[np.zeros(900), np.ones(300)].astype(int)
    a, b = mixed_samples(labels, 1, (0.3, 0.05))
    assert not set(a) & set(b) and len(a) == len(b)
    assert labels[a].mean() == pytest.approx(0.3, abs=0.01) and labels[b].mean() == pytest.approx(0.05, abs=0.01)


def test_cwola_and_cli(jet_files, tiny_bundle, tmp_path):
    report = cwola(_recipe(jet_files, tiny_bundle, tmp_path / "cwola"), fractions=(0.5, 0.1), plots_dir=tmp_path / "plots")
    assert 0 <= report["auc"] <= 1 and report["max_sic"] > 0
    assert (tmp_path / "plots" / "cwola_sic.png").exists()
    runner = CliRunner()
    result = runner.invoke(app, ["evaluate", "--model", str(tmp_path / "nothing"), "--data", str(jet_files[0])])
    assert result.exit_code != 0
    out = tmp_path / "gen.h5"
    result = runner.invoke(app, ["generate", "--model", str(tiny_bundle), "--jets", "10", "--out", str(out), "--top-k", "20"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["generate", "--model", str(tiny_bundle), "--jets", "10", "--out", str(tmp_path / "gen-top.h5"), "--class", "top"])
    assert result.exit_code != 0 and "class-conditionally" in str(result.exception)


def test_a_resumed_run_refuses_other_weights_behind_the_same_name(jet_files, tiny_bundle, tiny_conditional_bundle, tmp_path):
    # A name that now points at other weights (as a registered model's new version does): the recipe
    # reads the same, so only the weights' sha256 tells the two runs apart.
    import shutil

    name = tmp_path / "model"
    shutil.copytree(tiny_bundle, name)
    steps = {"training.save_every": 2, "training.eval_every": 2}
    finetune(_recipe(jet_files, name, tmp_path / "run", **{"training.max_steps": 2, **steps}))
    shutil.rmtree(name)
    shutil.copytree(tiny_conditional_bundle, name)
    with pytest.raises(ConfigError, match="key 'starts_from.weights_sha256': the run to resume was trained with other settings"):
        finetune(_recipe(jet_files, name, tmp_path / "run", **{"training.max_steps": 4, **steps}), resume=True)
    shutil.rmtree(name)
    shutil.copytree(tiny_bundle, name)  # the weights it started from: it continues
    finetune(_recipe(jet_files, name, tmp_path / "run", **{"training.max_steps": 4, **steps}), resume=True)
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"] == 4
