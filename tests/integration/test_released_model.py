"""The released model shipped in the repository (checkpoints/jet-foundation-small/): on a fresh clone
it loads by name with no network, its manifest is verified, it embeds and fine-tunes."""

import pytest
from typer.testing import CliRunner

import foundation
from foundation import registry
from foundation.cli import app
from foundation.hub import load_bundle, verify_bundle
from foundation.pipelines.release import CURVE, MAX_WEIGHT_MB

NAME = "jet-foundation-small"
ENTRY = registry.lookup(NAME)
pytestmark = pytest.mark.skipif(not ENTRY.is_local(), reason=f"{NAME} is not shipped in this checkout yet (launch/release.sh makes it)")


def test_shipped_whole_small_and_verified():
    folder = ENTRY.local_path
    verify_bundle(folder)
    weights = sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20
    assert weights <= MAX_WEIGHT_MB
    card = (folder / "README.md").read_text()
    assert f"# {NAME} (v{ENTRY.version})" in card and "seed(s) [1001]" in card and (folder / CURVE).exists()


def test_loads_by_name_offline_then_embeds_and_finetunes(jets, jet_files, tmp_path, monkeypatch):
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    bundle = load_bundle(NAME)
    assert bundle.path == ENTRY.local_path
    vectors = foundation.embed(bundle, jets.constituents[:8], jets.mask[:8])
    assert vectors.shape == (8, bundle.model.config.hidden_size)
    result = CliRunner().invoke(app, [
        "finetune", "--config", "finetune/top_tagging_tiny.yaml", "--from", NAME, "--output", str(tmp_path / "ft"),
        "--set", f"data.files=[{jet_files[0]},{jet_files[1]}]", "--set", "training.max_steps=2", "--set", "training.save_every=2",
        "--set", "training.eval_every=2", "--set", "training.progress=false",
    ])
    assert result.exit_code == 0, result.output
    assert foundation.class_names(tmp_path / "ft" / "model") == ["qcd", "top"]
