"""The `foundation` command as a user runs it: real process, clear one-line errors, exit codes."""

import json
import re
import subprocess
import sys

import h5py
import numpy as np
import pytest
from typer.testing import CliRunner

from foundation.cli import app, main


def _foundation(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "foundation", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_generate_and_inspect(tmp_path):
    out = tmp_path / "top.h5"
    result = _foundation("data", "generate", "--process", "top", "--jets", "6", "--seed", "3", "--out", str(out), "--workers", "1", "--max-particles", "32")
    assert result.returncode == 0, result.stderr
    with h5py.File(out) as f:
        assert f["constituents"].shape == (6, 32, 4)
    result = _foundation("data", "inspect", str(out), "--plots", str(tmp_path / "plots"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout[result.stdout.index("{"):])
    assert report["classes"]["top"]["jets"] == 6
    assert (tmp_path / "plots" / "jet_mass.png").exists()


def test_bad_input_gets_one_clear_line(tmp_path):
    result = _foundation("data", "inspect", str(tmp_path / "missing.h5"))
    assert result.returncode == 2
    assert "missing.h5" in result.stderr and "does not exist" in result.stderr and "Traceback" not in result.stderr
    text = tmp_path / "notes.h5"
    text.write_text("not jets")
    result = _foundation("data", "inspect", str(text))
    assert result.returncode == 2 and "unknown format" in result.stderr
    recipe = tmp_path / "r.yaml"
    recipe.write_text("training:\n  max_step: 3\n")
    result = _foundation("tokenizer", "train", "--config", str(recipe))
    assert result.returncode == 2 and "training.max_step" in result.stderr and str(recipe) in result.stderr
    result = _foundation("embed", "--model", "any", "--data", "any.h5", "--out", str(tmp_path / "emb.csv"))
    assert result.returncode == 2 and "emb.csv: the output must end in .h5 or .parquet" in result.stderr and "Traceback" not in result.stderr


def test_arguments_that_do_not_fit_the_model_get_one_line(tiny_bundle, jet_files, tmp_path):
    result = _foundation("generate", "--model", str(tiny_bundle), "--jets", "0", "--out", "never.h5")
    assert result.returncode == 2 and "number of jets must be positive" in result.stderr and "Traceback" not in result.stderr
    result = _foundation("generate", "--model", str(tiny_bundle), "--jets", "4", "--class", "top", "--out", "never.h5")
    assert result.returncode == 2 and "not trained class-conditionally" in result.stderr and "Traceback" not in result.stderr
    result = _foundation("generate", "--model", str(tiny_bundle), "--jets", "4", "--guidance", "2", "--out", "never.h5")
    assert result.returncode == 2 and "give --class" in result.stderr and "Traceback" not in result.stderr
    result = _foundation("generate", "--model", str(tiny_bundle), "--jets", "4", "--temperature", "0", "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2 and "temperature must be positive" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "never.h5").exists()  # the writer leaves no half-written file


def test_class_conditional_generation(jet_files, tiny_tokenizer, tiny_bundle, tmp_path):
    files = "[" + ",".join(str(p) for p in jet_files) + "]"
    short = ["--set", "training.max_steps=6", "--set", "training.save_every=6", "--set", "training.eval_every=6", "--set", "training.progress=false"]
    runner = CliRunner()
    result = runner.invoke(app, [
        "pretrain", "--config", "pretrain/tiny.yaml", "--tokenizer", str(tiny_tokenizer), "--output", str(tmp_path / "cond"),
        "--set", f"data.files={files}", "--set", "model.num_generation_classes=2", "--set", "model.masked_loss_weight=0", *short,
    ])
    assert result.exit_code == 0, result.output
    out = tmp_path / "top.h5"
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "cond" / "model"), "--jets", "8", "--out", str(out), "--class", "top"])
    assert result.exit_code == 0, result.output
    with h5py.File(out) as f:
        assert json.loads(f.attrs["class_names"]) == ["qcd", "top"] and set(f["label"][:]) == {1}

    # A model pretrained without classes becomes class-conditional by continuing its training.
    result = runner.invoke(app, [
        "pretrain", "--config", "pretrain/class_conditional.yaml", "--from", str(tiny_bundle), "--output", str(tmp_path / "added"),
        "--set", f"data.files={files}", *short,
    ])
    assert result.exit_code == 0, result.output
    config = json.loads((tmp_path / "added" / "model" / "config.json").read_text())
    assert config["generation_class_names"] == ["qcd", "top"] and config["vocab_size"] == config["vocab_codes"] + 6
    mix = tmp_path / "mix.h5"
    result = runner.invoke(app, ["generate", "--model", str(tmp_path / "added" / "model"), "--jets", "40", "--out", str(mix), "--class", "qcd=0.7", "--class", "top=0.3", "--guidance", "1.5"])
    assert result.exit_code == 0, result.output
    with h5py.File(mix) as f:
        assert list(f["label"][:]) == [0] * 28 + [1] * 12
    result = runner.invoke(app, ["evaluate-generation", "--generated", str(mix), "--reference", str(jet_files[1]), "--reference-class", "top", "--plots", str(tmp_path / "plots")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "plots" / "generation_metrics.json").read_text())["generated_jets"] == 12  # the top jets only
    result = _foundation("generate", "--model", str(tmp_path / "added" / "model"), "--jets", "4", "--class", "w=0.5", "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2 and "'w' is not one of the model's classes ['qcd', 'top']" in result.stderr


def test_push_uploads_a_verified_bundle(tiny_bundle, monkeypatch):
    calls = {}

    class FakeApi:
        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls["create"] = (repo_id, private)

        def upload_folder(self, folder_path, repo_id, revision=None, commit_message=""):
            calls["upload"] = (folder_path, repo_id)
            return type("Info", (), {"commit_url": f"https://huggingface.co/{repo_id}/commit/abc"})()

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    result = CliRunner().invoke(app, ["push", "--model", str(tiny_bundle), "--repo", "me/jets"])
    assert result.exit_code == 0, result.output
    assert calls["create"] == ("me/jets", False) and calls["upload"] == (str(tiny_bundle), "me/jets")


def test_generation_keeps_only_jets_in_the_pt_window(tiny_conditional_bundle, tmp_path):
    from foundation.data.jets import jet_kinematics
    from foundation.data.sources import JetCollection
    from foundation.pipelines.generate import generate_jets

    # The window around the middle of what the model samples freely: about half the jets fall outside.
    free = JetCollection.open(generate_jets(tiny_conditional_bundle, 64, tmp_path / "free.h5", {"qcd": 0.5, "top": 0.5}, progress=False)).read_all()
    pt = jet_kinematics(free.constituents, free.mask)["pt"]
    window = (float(np.quantile(pt, 0.25)), float(np.quantile(pt, 0.75)))
    out = tmp_path / "window.h5"
    result = CliRunner().invoke(app, [
        "generate", "--model", str(tiny_conditional_bundle), "--jets", "30", "--out", str(out), "--class", "qcd", "--class", "top",
        "--jet-pt-range", str(window[0]), str(window[1]),
    ])
    assert result.exit_code == 0, result.output
    jets = JetCollection.open(out).read_all()
    pt = jet_kinematics(jets.constituents, jets.mask)["pt"]
    assert len(jets) == 30 and list(jets.label) == [0] * 15 + [1] * 15
    assert np.all((pt >= window[0]) & (pt < window[1]))
    with h5py.File(out) as f:
        metadata = json.loads(f.attrs["metadata"])
    assert metadata["jet_pt_range"] == list(window) and set(metadata["acceptance"]) == {"qcd", "top"}
    assert all(0 < a < 1 for a in metadata["acceptance"].values())

    result = _foundation("generate", "--model", str(tiny_conditional_bundle), "--jets", "4", "--jet-pt-range", "1e6", "1e7", "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2 and re.search(r"none of \d+ sampled jets has a jet pT in \[1000000.0, 10000000.0\] GeV", result.stderr)
    result = _foundation("generate", "--model", str(tiny_conditional_bundle), "--jets", "4", "--jet-pt-range", "650", "550", "--out", str(tmp_path / "never.h5"))
    assert result.returncode == 2 and "jet pT range must be 0 <= low < high GeV, got (650.0, 550.0)" in result.stderr
    assert not (tmp_path / "never.h5").exists()


def test_push_without_a_network_or_a_valid_repo_id_is_one_line(tiny_bundle, tmp_path, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens there: like no network
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    for repo, expected in (("me/jets", "pushing to me/jets"), ("me/not a repo!", "--repo me/not a repo!: not a hub repo id")):
        monkeypatch.setattr(sys, "argv", ["foundation", "push", "--model", str(tiny_bundle), "--repo", repo])
        with pytest.raises(SystemExit) as exit_info:
            main()
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and len(err.strip().splitlines()) == 1 and expected in err, err
    help_text = " ".join(CliRunner().invoke(app, ["push", "--help"]).output.split())
    assert "hf auth login" in help_text  # the installed hub client's command
