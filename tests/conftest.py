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
    from foundation.data.generation import GeneratorConfig, generate

    root = tmp_path_factory.mktemp("jets")
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
