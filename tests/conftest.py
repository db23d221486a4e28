"""Shared fixtures: a small set of real Pythia jets, generated once per test session."""

from __future__ import annotations

import os

import pytest

# Runs and default data of tests never land in the repository's checkpoints/.
os.environ.setdefault("FOUNDATION_HOME", os.path.join(os.environ.get("TMPDIR", "/tmp"), "foundation-test-home"))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

JETS_PER_CLASS = 150
MAX_PARTICLES = 64


@pytest.fixture(scope="session")
def jet_files(tmp_path_factory):
    """[qcd.h5, top.h5]: real generated jets, 150 of each, up to 64 constituents."""
    root = tmp_path_factory.mktemp("jets")
    given = os.environ.get("FOUNDATION_TEST_JETS")
    if given:
        # Machines without Pythia (the GPU box): slices of files generated elsewhere, "qcd.h5:top.h5".
        from foundation.data.canonical import CanonicalSource, write_jets

        files = []
        for process, path in zip(("qcd", "top"), given.split(":"), strict=True):
            jets = CanonicalSource(path).read(0, JETS_PER_CLASS).padded_to(MAX_PARTICLES)
            files.append(write_jets(root / f"{process}.h5", jets))
        return files
    from foundation.data.generation import GeneratorConfig, generate

    files = []
    for process in ("qcd", "top"):
        path = root / f"{process}.h5"
        generate(GeneratorConfig(process=process, max_particles=MAX_PARTICLES), JETS_PER_CLASS, path, seed=7, workers=2, chunk_jets=75, progress=False)
        files.append(path)
    return files


@pytest.fixture(scope="session")
def jets(jet_files):
    """All jets of jet_files in memory (JetArrays), QCD first."""
    from foundation.data.sources import JetCollection

    return JetCollection.open(jet_files).read_all()


@pytest.fixture(scope="session")
def tiny_tokenizer(jet_files, tmp_path_factory):
    """A tokenizer trained for a few steps with tokenizers/tiny.yaml: its folder."""
    from foundation.pipelines.tokenizer import load_tokenizer_recipe, train_tokenizer

    out = tmp_path_factory.mktemp("tokenizer") / "run"
    recipe, model_config = load_tokenizer_recipe(
        "tokenizers/tiny.yaml", {"training.output_dir": str(out), "training.progress": False, "training.max_steps": 30}
    )
    recipe.data.files = [str(p) for p in jet_files]
    return train_tokenizer(recipe, model_config)


@pytest.fixture(scope="session")
def tiny_bundle(jet_files, tiny_tokenizer, tmp_path_factory):
    """A tiny pretrained model bundle (pretrain/tiny.yaml): its folder."""
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    out = tmp_path_factory.mktemp("pretrain") / "run"
    recipe = load_pretrain_recipe(
        "pretrain/tiny.yaml",
        {"tokenizer": str(tiny_tokenizer), "training.output_dir": str(out), "training.progress": False, "training.max_steps": 20, "training.save_every": 10},
    )
    recipe.data.files = [str(p) for p in jet_files]
    return pretrain(recipe)


@pytest.fixture(scope="session")
def tiny_conditional_bundle(jet_files, tiny_bundle, tmp_path_factory):
    """tiny_bundle made class-conditional (pretrain/class_conditional.yaml, a few steps): its folder."""
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    out = tmp_path_factory.mktemp("conditional") / "run"
    recipe = load_pretrain_recipe(
        "pretrain/class_conditional.yaml",
        {"init_from": str(tiny_bundle), "training.output_dir": str(out), "training.progress": False, "training.max_steps": 6, "training.save_every": 6, "training.eval_every": 6},
    )
    recipe.data.files = [str(p) for p in jet_files]
    return pretrain(recipe)


@pytest.fixture(scope="session")
def tiny_tagger(jet_files, tiny_bundle, tmp_path_factory):
    """tiny_bundle fine-tuned a few steps as a top/QCD tagger (finetune/top_tagging_tiny.yaml): its bundle folder."""
    from foundation.pipelines.finetune import finetune, load_finetune_recipe

    out = tmp_path_factory.mktemp("tagger") / "run"
    recipe = load_finetune_recipe(
        "finetune/top_tagging_tiny.yaml",
        {"model": str(tiny_bundle), "training.output_dir": str(out), "training.progress": False, "training.max_steps": 4, "training.save_every": 4, "training.eval_every": 4},
    )
    recipe.data.files = [str(p) for p in jet_files]
    return finetune(recipe)
