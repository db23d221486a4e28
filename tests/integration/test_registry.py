"""Registered model names resolve to a shipped, manifest-verified bundle (or a pinned hub copy)."""

import json
import shutil
import sys

import pytest
from typer.testing import CliRunner

import foundation
from foundation import registry
from foundation.cli import app, main
from foundation.hub import BundleError, load_bundle

NAME = "jet-foundation-tiny"


@pytest.fixture
def registered(tiny_bundle, tmp_path, monkeypatch):
    """A copy of the tiny bundle registered as NAME (the real release is trained by the lead, never faked)."""
    folder = tmp_path / "checkpoints" / NAME
    shutil.copytree(tiny_bundle, folder)
    monkeypatch.setattr(registry, "REPOSITORY", tmp_path)
    entry = registry.RegisteredModel(NAME, 3, "tiny test model", f"checkpoints/{NAME}", repo_id="someone/jet-foundation-tiny", revision="0" * 40)
    monkeypatch.setattr(registry, "MODELS", {NAME: entry})
    return folder


def _run_main(monkeypatch, capsys, *args):
    monkeypatch.setattr(sys, "argv", ["foundation", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def test_a_name_loads_the_shipped_bundle_and_its_manifest_is_checked(registered):
    bundle = load_bundle(NAME)
    assert bundle.path == registered and bundle.model.config.model_type == "jet_transformer"
    assert foundation.embed(bundle, foundation.as_jet_arrays(registered_jets())).shape[0] == 2
    (registered / "model.safetensors").write_bytes(b"changed")
    with pytest.raises(BundleError, match="checksum does not match"):
        load_bundle(NAME)


def registered_jets():
    import numpy as np

    jets = np.zeros((2, 3, 4), np.float32)
    jets[:, :, 0], jets[:, :, 1] = [[400.0, 100.0, 20.0]] * 2, [[390.0, 95.0, 19.0]] * 2  # E, px
    jets[:, :, 3] = [[80.0, 30.0, 5.0], [60.0, 25.0, 4.0]]  # pz
    return jets


def test_embed_and_finetune_take_the_name(registered, jet_files, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["embed", "--model", NAME, "--data", str(jet_files[0]), "--out", str(tmp_path / "e.h5"), "--limit", "20"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [
        "finetune", "--config", "finetune/top_tagging_tiny.yaml", "--from", NAME, "--output", str(tmp_path / "ft"),
        "--set", f"data.files=[{jet_files[0]},{jet_files[1]}]", "--set", "training.max_steps=2", "--set", "training.save_every=2",
        "--set", "training.eval_every=2", "--set", "training.progress=false",
    ])
    assert result.exit_code == 0, result.output
    assert foundation.class_names(tmp_path / "ft" / "model") == ["qcd", "top"]


def test_models_lists_names_versions_and_where(registered, tmp_path):
    result = CliRunner().invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.output
    (row,) = json.loads(result.output)["models"]
    assert row["name"] == NAME and row["version"] == 3 and row["local"] is True and row["where"] == str(registered)
    shutil.rmtree(registered)
    (row,) = json.loads(CliRunner().invoke(app, ["models", "--json"]).output)["models"]
    assert row["local"] is False and row["where"] == "someone/jet-foundation-tiny@" + "0" * 40


def test_an_absent_name_without_network_is_one_line(registered, tmp_path, monkeypatch, capsys):
    shutil.rmtree(registered)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)  # HF_HUB_OFFLINE=1, read at import
    code, err = _run_main(monkeypatch, capsys, "embed", "--model", NAME, "--data", "missing.h5", "--out", tmp_path / "e.h5")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "someone/jet-foundation-tiny" in err
    unpublished = registry.RegisteredModel(NAME, 1, "", f"checkpoints/{NAME}")
    monkeypatch.setattr(registry, "MODELS", {NAME: unpublished})
    code, err = _run_main(monkeypatch, capsys, "embed", "--model", NAME, "--data", "missing.h5", "--out", tmp_path / "e.h5")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not published" in err


def test_registered_folders_are_not_ignored_by_git():
    import subprocess

    for entry in registry.MODELS.values():
        probe = f"{entry.folder}/model.safetensors"
        done = subprocess.run(["git", "check-ignore", "-q", probe], cwd=registry.REPOSITORY, capture_output=True)
        if done.returncode == 128:
            pytest.skip("not a git checkout")
        assert done.returncode == 1, f"{probe} is ignored by .gitignore; a registered model must be committable"
