"""The whole chain on tiny data in one test: `foundation run --quick`, every stage checked."""

import json

import h5py
import numpy as np
import pytest

from foundation.data.canonical import CanonicalSource
from foundation.data.jets import jet_kinematics
from foundation.pipelines.anomaly import likelihood_scores
from foundation.pipelines.embed import embed
from foundation.pipelines.main_job import QUICK, MainJob


@pytest.fixture(scope="module")
def quick_job(tmp_path_factory, monkeypatch_module):
    home = tmp_path_factory.mktemp("home")
    monkeypatch_module.setenv("FOUNDATION_HOME", str(home))
    out = home / "main-quick"
    state = MainJob(QUICK, out, progress=False).run()
    return out, state


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_every_stage_ran_and_is_summarised(quick_job):
    out, state = quick_job
    for stage in ("data", "inspect", "tokenizer", "pretrain", "finetune", "generation", "anomaly", "embeddings"):
        assert stage in state and state[stage]["seconds"] >= 0, stage
    summary = (out / "summary.md").read_text()
    assert "tagging" in summary and "AUC" in summary
    assert (out / "plots" / "data" / "jet_mass.png").exists()


def test_tagging_learns(quick_job):
    _, state = quick_job
    assert state["finetune"]["auc"] > 0.65, state["finetune"]
    assert state["tokenizer"]["code_usage"] > 0.3


def test_generated_jets_are_valid(quick_job):
    out, state = quick_job
    jets = CanonicalSource(state["generation"]["file"]).read(0, QUICK.generated_jets)
    assert len(jets) == QUICK.generated_jets
    assert np.isfinite(jets.constituents).all()
    n = jets.mask.sum(1)
    assert n.min() >= 1 and n.max() <= 64
    kin = jet_kinematics(jets.constituents, jets.mask)
    assert np.all(kin["pt"] > 0) and np.all(np.isfinite(kin["mass"]))
    assert "w1_mass" in state["generation"]["metrics"]


def test_anomaly_scores_and_embeddings(quick_job, tmp_path):
    out, state = quick_job
    with h5py.File(state["anomaly"]["scores_file"]) as f:
        assert np.isfinite(f["nll"][:]).all() and len(f["nll"]) == state["data"]["test_jets"]
        nll, llr = f["nll"][:], f["llr"][:]
    assert 0 <= state["anomaly"]["nll_per_token"]["auc"] <= 1 and 0 <= state["anomaly"]["llr"]["auc"] <= 1
    reference = likelihood_scores(state["pretrain"]["bundle"], state["data"]["test_file"], progress=False)
    np.testing.assert_allclose(llr, nll - reference["nll"], rtol=1e-4, atol=1e-3)
    assert state["embeddings"]["shape"][0] == state["data"]["test_jets"]
    again = embed(state["pretrain"]["bundle"], state["data"]["test_file"], tmp_path / "again.h5", progress=False)
    with h5py.File(state["embeddings"]["file"]) as a, h5py.File(again) as b:
        assert np.array_equal(a["embedding"][:], b["embedding"][:]), "embeddings are deterministic"
        assert np.array_equal(a["row"][:], np.arange(len(a["row"])))  # one test file, row by row
        assert set(a["source_file"].asstr()[:]) == {str(state["data"]["test_file"])}


def test_a_second_run_skips_finished_stages(quick_job):
    out, state = quick_job
    again = MainJob(QUICK, out, progress=False).run()
    assert again["finetune"]["auc"] == state["finetune"]["auc"]
    assert json.loads((out / "stages.json").read_text())["pretrain"]["seconds"] == state["pretrain"]["seconds"]
