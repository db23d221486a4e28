"""`foundation release`: a finished pretraining run becomes a registered, manifest-verified model."""

import json
import shutil

import pytest
from typer.testing import CliRunner

from foundation import registry
from foundation.cli import app
from foundation.hub import load_bundle, verify_bundle, weights_sha256
from foundation.pipelines import release

NAME = "jet-foundation-tiny"


@pytest.fixture
def registered_name(tmp_path, monkeypatch):
    """NAME registered with its folder under a temporary repository root."""
    monkeypatch.setattr(registry, "REPOSITORY", tmp_path)
    entry = registry.RegisteredModel(NAME, 2, "tiny test model", f"checkpoints/{NAME}")
    monkeypatch.setattr(registry, "MODELS", {NAME: entry})
    return tmp_path / "checkpoints" / NAME


def test_a_run_becomes_the_registered_model_with_its_card(tiny_bundle, registered_name, tmp_path):
    run = tiny_bundle.parent
    result = CliRunner().invoke(app, ["release", "--run", str(run), "--name", NAME])
    assert result.exit_code == 0, result.output
    verify_bundle(registered_name)
    assert load_bundle(NAME).path == registered_name
    card = (registered_name / "README.md").read_text()
    assert f"# {NAME} (v2)" in card and "seed(s) [7]" in card  # the conftest jets' Pythia seed, read from the files
    assert "qcd 150" in card and "top 150" in card
    assert "tagging: not yet measured for this version" in card and f"--pretrained {NAME}" in card
    assert (registered_name / release.CURVE).stat().st_size > 0
    manifest = json.loads((registered_name / "manifest.json").read_text())["files"]
    assert release.CURVE in manifest and "model.safetensors" in manifest

    # a second release needs --overwrite; the first stays as it was
    before = (registered_name / "manifest.json").read_text()
    result = CliRunner().invoke(app, ["release", "--run", str(run), "--name", NAME])
    assert result.exit_code != 0 and "pass --overwrite" in str(result.exception)
    assert (registered_name / "manifest.json").read_text() == before
    result = CliRunner().invoke(app, ["release", "--run", str(run), "--name", NAME, "--overwrite"])
    assert result.exit_code == 0, result.output
    verify_bundle(registered_name)


def test_the_card_reports_benchmark_figures_measured_on_these_weights(tiny_bundle, registered_name, tmp_path):
    results = tmp_path / "results"
    for bench, weights in (("tagging", weights_sha256(tiny_bundle)), ("label_efficiency", "0" * 64)):  # the latter: other weights
        (results / bench).mkdir(parents=True)
        (results / bench / "results.json").write_text(json.dumps({
            "command": f"python -m benchmarks.{bench} --pretrained {NAME} --budgets 1",
            "models": [{"model": NAME, "version": 1, "weights_sha256": weights}],
            "headline": {"metric": "AUC at 100% of the labels", "ours": "0.981", "peer": "0.979 (ParT)"},
        }))
    folder = release.publish(tiny_bundle.parent, NAME, results_root=results)
    card = (folder / "README.md").read_text()
    assert "tagging: AUC at 100% of the labels: 0.981 (peer: 0.979 (ParT))" in card
    assert "label_efficiency: not yet measured for this version" in card


def test_refused_without_writing_anything(tiny_bundle, registered_name, tmp_path, monkeypatch):
    with pytest.raises(release.InputError, match="not a registered model"):
        release.publish(tiny_bundle.parent, "no-such-model")
    with pytest.raises(release.InputError, match="no finished pretraining run"):
        release.publish(tmp_path, NAME)
    monkeypatch.setattr(release, "MAX_WEIGHT_MB", 0)
    with pytest.raises(release.InputError, match="MB of safetensors"):
        release.publish(tiny_bundle.parent, NAME)
    assert not registered_name.exists() and not registered_name.with_name(NAME + ".tmp").exists()


def test_a_damaged_run_bundle_is_refused(tiny_bundle, registered_name, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_bundle.parent, run, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    (run / "model" / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(Exception, match="checksum does not match"):
        release.publish(run, NAME)
    assert not registered_name.exists()


def test_a_continued_run_is_released_with_every_stage_it_continued_from(tiny_conditional_bundle, tiny_bundle, registered_name):
    folder = release.publish(tiny_conditional_bundle.parent, NAME)
    card = (folder / "README.md").read_text()
    first, second = (line for line in card.splitlines() if line.startswith("- training (stage"))
    assert "stage 1 of 2" in first and "20 steps of" in first, first  # tiny_bundle: 20 steps
    assert "stage 2 of 2" in second and "6 steps of" in second and "continued from stage 1" in second, second
    assert card.count("- compute (stage") == 2
    assert [s.run for s in release.training_stages(tiny_conditional_bundle.parent)] == [tiny_bundle.parent, tiny_conditional_bundle.parent]
