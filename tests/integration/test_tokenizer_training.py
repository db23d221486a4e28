"""The tokenizer trains through the shared loop: loss falls, resume is exact, the CLI works."""

import json
import shutil

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from foundation.cli import app
from foundation.data.tokens import TokenFile
from foundation.errors import ConfigError
from foundation.pipelines.tokenizer import load_tokenizer_recipe, train_tokenizer


def _run(jet_files, out, resume=False, **overrides):
    values = {"training.output_dir": str(out), "training.progress": False, "training.max_steps": 30, "training.save_every": 15}
    values.update(overrides)
    recipe, model_config = load_tokenizer_recipe("tokenizers/tiny.yaml", values)
    recipe.data.files = [str(p) for p in jet_files]
    return train_tokenizer(recipe, model_config, resume=resume)


@pytest.fixture(scope="module")
def trained(jet_files, tmp_path_factory):
    out = tmp_path_factory.mktemp("tok") / "run"
    _run(jet_files, out)
    return out


def test_loss_falls_and_codes_are_used(trained):
    rows = [json.loads(line) for line in (trained / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < 0.8 * losses[0]
    final = rows[-1]
    assert final["eval/code_usage"] > 0.5
    assert (trained / "tokenizer" / "model.safetensors").exists()
    assert (trained / "checkpoints" / "step-000030" / "recipe.yaml").exists()


def test_resumed_run_equals_uninterrupted(trained, jet_files, tmp_path):
    resumed = tmp_path / "resumed"
    (resumed / "checkpoints").mkdir(parents=True)
    shutil.copytree(trained / "checkpoints" / "step-000015", resumed / "checkpoints" / "step-000015")
    _run(jet_files, resumed, resume=True)
    a = load_file(trained / "checkpoints" / "step-000030" / "model.safetensors")
    b = load_file(resumed / "checkpoints" / "step-000030" / "model.safetensors")
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 1e-6, key


def test_bad_recipe_gets_its_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  codebook_sise: 64\n")
    with pytest.raises(ConfigError) as err:
        load_tokenizer_recipe(bad)
    assert "model.codebook_sise" in str(err.value) and str(bad) in str(err.value)
    cases = {
        "model:\n  quantizer: magic\n": "quantizer",
        "model:\n  quantizer: fsq\nrefine:\n  kmeans_iterations: 5\n": "refine.kmeans_iterations",  # no codebook to refit
        "refine:\n  jet_loss_weight: -1\n": "refine.jet_loss_weight",
        "data:\n  features: [log_pt, log_e]\nrefine:\n  phi_axis_constraint: true\n": "refine.phi_axis_constraint",
        "refine:\n  decoder_steps: -1\n": "refine.decoder_steps",
    }
    for text, key in cases.items():
        bad.write_text(text)
        with pytest.raises(ConfigError, match=key) as err:
            load_tokenizer_recipe(bad)
        assert str(bad) in str(err.value)


def test_cli_evaluate_and_encode(trained, jet_files, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["tokenizer", "evaluate", "--tokenizer", str(trained), "--data", str(jet_files[1]), "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    metrics = json.loads(result.stdout[result.stdout.index("{") :])
    assert 0 < metrics["code_usage"] <= 1 and metrics["perplexity"] > 1
    assert metrics["jet_mass_relative_rms"] > 0
    assert 0 < metrics["jet_mass_relative_rms_without_codebook"] < 10  # the codebook skipped: quantisation's share
    assert (tmp_path / "plots" / "code_usage.png").stat().st_size > 0
    assert "jet_mass_relative_rms_nearest_codes" not in metrics  # the tiny recipe encodes with nearest codes
    # encoding by search: the nearest codes' figure is reported beside it
    result = runner.invoke(app, ["tokenizer", "evaluate", "--tokenizer", str(trained), "--data", str(jet_files[1]), "--limit", "60", "--search-candidates", "3", "--search-particles", "2"])
    assert result.exit_code == 0, result.output
    searched = json.loads(result.stdout[result.stdout.index("{") :])
    assert searched["jets"] == 60 and searched["jet_mass_relative_rms_nearest_codes"] > 0
    assert (searched["encode_search_candidates"], searched["encode_search_particles"]) == (3, 2)
    result = runner.invoke(app, ["tokenizer", "evaluate", "--tokenizer", str(trained), "--data", str(jet_files[1]), "--search-candidates", "0"])
    assert result.exit_code != 0 and "encode_search_candidates" in str(result.exception)
    out = tmp_path / "tokens.h5"
    result = runner.invoke(app, ["tokenizer", "encode", "--tokenizer", str(trained / "tokenizer"), "--data", str(jet_files[0]), "--data", str(jet_files[1]), "--out", str(out)])
    assert result.exit_code == 0, result.output
    tokens = TokenFile(out)
    assert len(tokens) == 300 and tokens.class_names == ["qcd", "top"]
    assert tokens.tokenizer_info["encode_search_candidates"] == 1
    searched = tmp_path / "searched.h5"
    result = runner.invoke(app, ["tokenizer", "encode", "--tokenizer", str(trained), "--data", str(jet_files[1]), "--out", str(searched), "--search-candidates", "2"])
    assert result.exit_code == 0, result.output
    assert TokenFile(searched).tokenizer_info["encode_search_candidates"] == 2, "the file says how its tokens were chosen"


def test_refine_stage_refits_the_codebook_trains_the_decoder_and_resumes(jet_files, tmp_path):
    refine = {"refine.kmeans_iterations": 4, "refine.decoder_steps": 10, "refine.warmup_steps": 2, "refine.jet_loss_weight": 0.5,
              "refine.phi_axis_constraint": True, "training.save_every": 5}
    out = tmp_path / "refined"
    bundle = _run(jet_files, out, **refine)
    config = json.loads((bundle / "config.json").read_text())
    assert config["jet_loss_weight"] == 0.5, "the refine stage's loss is the model's last"
    assert config["phi_axis_constraint"] is True, "the decoder learnt with the constraint and decodes with it"
    exported = load_file(bundle / "model.safetensors")
    trained = load_file(out / "checkpoints" / "step-000030" / "model.safetensors")
    codebook = next(k for k in exported if k.endswith("_codebook.embed"))
    assert not (exported[codebook] - trained[codebook]).abs().max() < 1e-6, "the codebook was refit"
    for key in exported:
        if key.startswith(("input_proj", "encoder", "to_code")):
            assert (exported[key] - trained[key]).abs().max() == 0, f"{key} moved in the refine stage"
    assert any((exported[k] - trained[k]).abs().max() > 0 for k in exported if k.startswith("decoder")), "the decoder learns"
    summary = json.loads((out / "train_summary.json").read_text())
    errors = summary["refine"]["refit"]["weighted_squared_error"]
    assert len(errors) == 4 and errors[-1] < errors[0]
    assert summary["seconds"] > summary["training"]["seconds"] and summary["steps"] == 10

    # killed during the decoder training: the resume continues from step 5 (its checkpoint holds the refit)
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "checkpoints" / "step-000030", resumed / "checkpoints" / "step-000030")
    shutil.copytree(out / "refine" / "checkpoints" / "step-000005", resumed / "refine" / "checkpoints" / "step-000005")
    shutil.copy(out / "refine" / "refit.json", resumed / "refine" / "refit.json")
    _run(jet_files, resumed, resume=True, **refine)
    assert json.loads((resumed / "train_summary.json").read_text())["refine"]["refit"] == summary["refine"]["refit"], "not refit again"
    a = load_file(out / "refine" / "checkpoints" / "step-000010" / "model.safetensors")
    b = load_file(resumed / "refine" / "checkpoints" / "step-000010" / "model.safetensors")
    for key in a:
        assert (a[key].float() - b[key].float()).abs().max() <= 1e-6, key

