"""Bundles: local hub cache (no download), revision pinning, corruption and pickles refused."""

import shutil

import pytest
from safetensors.torch import load_file

from foundation.hub import BundleError, load_bundle, verify_bundle
from foundation.models import JetTransformerForCausalJetModeling

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _fill_cache(bundle, cache, repo="physicist/jet-model"):
    """The layout huggingface_hub's own downloads leave: models--owner--name/{refs,snapshots}."""
    root = cache / ("models--" + repo.replace("/", "--"))
    shutil.copytree(bundle, root / "snapshots" / COMMIT)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(COMMIT)
    return repo


def test_load_from_local_hub_cache_offline(tiny_bundle, tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    repo = _fill_cache(tiny_bundle, tmp_path / "cache")
    bundle = load_bundle(repo, cache_dir=tmp_path / "cache")
    assert bundle.path.name == COMMIT
    pinned = load_bundle(repo, revision=COMMIT, cache_dir=tmp_path / "cache", model_class=JetTransformerForCausalJetModeling)
    weights = load_file(tiny_bundle / "model.safetensors")
    assert (pinned.model.transformer.wte.weight - weights["transformer.wte.weight"]).abs().max() == 0
    with pytest.raises(BundleError, match="not in the local hub cache"):
        load_bundle("physicist/other-model", cache_dir=tmp_path / "cache")


def test_corrupted_safetensors_is_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(BundleError, match="model.safetensors: checksum does not match"):
        load_bundle(copy)


def test_pickles_and_missing_files_are_refused(tiny_bundle, tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    (copy / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(BundleError, match="pickled weights are never loaded"):
        verify_bundle(copy)
    (copy / "pytorch_model.bin").unlink()
    (copy / "tokenizer" / "model.safetensors").unlink()
    with pytest.raises(BundleError, match="missing"):
        verify_bundle(copy)
    with pytest.raises(BundleError, match="no such folder"):
        load_bundle(tmp_path / "nothing" / "here")


def test_a_rewritten_card_leaves_the_bundle_content_the_same(tiny_bundle, tmp_path):
    """Benchmark caches key a bundle by content_sha256: a new model card (foundation release
    --overwrite) must not make the same weights look like another model; new weights must."""
    from foundation.hub import content_sha256, write_manifest

    copy = tmp_path / "bundle"
    shutil.copytree(tiny_bundle, copy)
    before = content_sha256(copy)
    assert "model.safetensors" in before and "README.md" not in before
    (copy / "README.md").write_text("# a new card\n")
    write_manifest(copy)
    assert content_sha256(copy) == before
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    write_manifest(copy)
    assert content_sha256(copy)["model.safetensors"] != before["model.safetensors"]
