"""Every benchmark script runs in its --tiny setting, so none can rot unnoticed."""

import json

import numpy as np
import pytest
import yaml

from benchmarks import anomaly, generation, label_efficiency, model_sizes, render, speed, tagging, tokenizer


def _page(out, name):
    """A --tiny run writes results.json and its page beside its results (never into docs/), the page
    being what that results.json renders to."""
    saved = json.loads((out / "docs" / name / "results.json").read_text())
    assert saved["benchmark"] == name and saved["command"].startswith(f"python -m benchmarks.{name} --tiny")
    assert (out / "docs" / f"{name}.md").read_text() == render.render_page(saved)
    assert all((out / "docs" / name / plot).exists() for plot in saved["plots"])
    return saved


def _files(jet_files):
    return [str(p) for p in jet_files]


def test_tagging(jet_files, tiny_bundle, tmp_path):
    summary = tagging.main(["--tiny", "--pretrained", str(tiny_bundle), "--data", *_files(jet_files), "--budgets", "0.5", "--out", str(tmp_path), "--recipe", "finetune/top_tagging_tiny.yaml", "--max-part-steps", "3"])
    assert {r["model"]: r["steps"] for r in summary} == {"pretrained": 6, "scratch": 6, "part": 3}
    assert all(0 <= r["auc"] <= 1 and r["params"] > 0 for r in summary)
    assert (tmp_path / "roc-budget-0.5.png").exists()
    assert json.loads((tmp_path / "results.json").read_text())["benchmark"] == "tagging"
    assert "roc-budget-0.5.png" in _page(tmp_path, "tagging")["plots"]


def test_tagging_at_another_learning_rate_keeps_its_own_runs(jet_files, tiny_bundle, tmp_path):
    args = ["--tiny", "--pretrained", str(tiny_bundle), "--data", *_files(jet_files), "--budgets", "0.5", "--recipe", "finetune/top_tagging_tiny.yaml", "--models", "pretrained", "--runs", str(tmp_path / "runs")]
    tagging.main([*args, "--out", str(tmp_path / "a"), "--learning-rate", "3e-4"])
    tagging.main([*args, "--out", str(tmp_path / "b")])
    runs = sorted(p.name for p in (tmp_path / "runs" / "budget-0.5").iterdir())
    recipe_lr = yaml.safe_load(open("finetune/top_tagging_tiny.yaml"))["training"]["learning_rate"]
    assert runs == sorted([f"pretrained-seed0-steps6-bestauc-lr{recipe_lr:g}", "pretrained-seed0-steps6-bestauc-lr0.0003"])
    for run, lr in ((f"pretrained-seed0-steps6-bestauc-lr{recipe_lr:g}", recipe_lr), ("pretrained-seed0-steps6-bestauc-lr0.0003", 3e-4)):
        recipe = yaml.safe_load((tmp_path / "runs" / "budget-0.5" / run / "recipe.yaml").read_text())
        assert recipe["training"]["learning_rate"] == lr


def test_label_efficiency(jet_files, tiny_bundle, tmp_path):
    result = label_efficiency.main(["--tiny", "--pretrained", str(tiny_bundle), "--data", *_files(jet_files), "--budgets", "0.2", "1", "--out", str(tmp_path), "--recipe", "finetune/top_tagging_tiny.yaml"])
    assert len(result["factors"]) == 2 and (tmp_path / "label_efficiency.png").exists()
    assert _page(tmp_path, "label_efficiency")["plots"] == ["label_efficiency.png"]


def test_label_factor_interpolation():
    import numpy as np

    # scratch reaches AUC 0.9 with 1000 jets, 0.95 with 10000; pretrained gets 0.95 with 1000.
    f = label_efficiency.label_factor(np.array([1000.0]), np.array([0.95]), np.array([1000.0, 10000.0]), np.array([0.9, 0.95]))
    assert f[0] == pytest.approx(10.0)
    assert label_efficiency.label_factor(np.array([100.0]), np.array([0.99]), np.array([1000.0]), np.array([0.9])) == [None]


def test_tokenizer(jet_files, tmp_path):
    argv = ["--tiny", "--sizes", "16", "32", "--recipe", "tokenizers/tiny.yaml", "--data", *_files(jet_files), "--steps", "4", "--out", str(tmp_path)]
    rows = tokenizer.main(argv)
    assert [r["codebook_size"] for r in rows] == [16, 32] and all(0 < r["code_usage"] <= 1 for r in rows)
    assert sum(b["jets"] for b in json.loads((tmp_path / "results.json").read_text())["by_mass"]) == 2 * rows[0]["jets"]
    # Run again: the finished trainings are reused and keep the time their training took.
    again = tokenizer.main(argv)
    assert [r["train_seconds"] for r in again] == pytest.approx([r["train_seconds"] for r in rows], abs=0.05)
    assert [r["jet_mass_relative_rms"] for r in again] == [r["jet_mass_relative_rms"] for r in rows]
    assert "codes-32-seed0/plots/jet_mass.png" in _page(tmp_path, "tokenizer")["plots"]


def test_generation(jet_files, tiny_bundle, tmp_path):
    rows = generation.main([
        "--tiny", "--model", str(tiny_bundle), "--reference", str(jet_files[1]), "--jets", "20", "--temperatures", "1.0", "--out", str(tmp_path), "--jet-pt-range", "0", "1e5",
    ])
    assert {r["metric"] for r in rows} >= {"w1_mass", "fpd", "kpd"}
    # The tokenizer's share: half the reference through the tokenizer, against the other half.
    assert {r["temperature"] for r in rows} == {"tokens", 1.0}
    assert {r["metric"] for r in rows if r["temperature"] == "tokens"} == {r["metric"] for r in rows if r["temperature"] == 1.0}
    calibration = json.loads((tmp_path / "results.json").read_text())["stop_calibration"]
    assert calibration["jets"] == 150 and calibration["cumulative_stop_probability"] > 0
    # The pT window's acceptance per run (tests/integration/test_cli.py checks the selection itself).
    assert json.loads((tmp_path / "results.json").read_text())["acceptance"] == {"T=1 seed 0": {"generated": 1.0}}
    assert _page(tmp_path, "generation")["headline"]["metric"] == "W1(jet mass) at T = 1"


def test_generation_of_a_class_conditional_model_follows_the_reference_mix(jet_files, tiny_conditional_bundle, tmp_path):
    rows = generation.main(["--tiny", "--model", str(tiny_conditional_bundle), "--reference", *_files(jet_files), "--jets", "20", "--temperatures", "1.0", "--seeds", "0", "1", "--out", str(tmp_path)])
    assert {r["class"] for r in rows if r["temperature"] == 1.0} == {"all", "qcd", "top"}
    # With several seeds, one more row per class and metric: the mean over seeds, beside the mean floor.
    means = [r for r in rows if r["seed"] == "mean"]
    assert len(means) == 3 * len({r["metric"] for r in rows})
    mass = [r for r in rows if r["class"] == "top" and r["metric"] == "w1_mass"]
    assert means and abs(mass[2]["value"] - (mass[0]["value"] + mass[1]["value"]) / 2) < 1e-9
    assert json.loads((tmp_path / "results.json").read_text())["class_mix"] == {"qcd": 0.5, "top": 0.5}
    per_class = json.loads((tmp_path / "t1-seed0" / "top" / "generation_metrics.json").read_text())
    assert per_class["generated_jets"] == 10 and per_class["reference_jets"] == 150


def test_anomaly(jet_files, tiny_bundle, tmp_path):
    rows = anomaly.main(["--tiny", "--pretrained", str(tiny_bundle), "--data", *_files(jet_files), "--out", str(tmp_path)])
    assert len(rows) == 5 and all(0 <= r["auc"] <= 1 for r in rows)
    assert (tmp_path / "sic.png").exists()
    cwola_scores = np.load(tmp_path / "cwola-seed0" / "test_scores.npz")  # drawn with the others
    assert len(cwola_scores["score"]) == len(cwola_scores["is_signal"]) > 0
    assert _page(tmp_path, "anomaly")["plots"] == ["sic.png"]


def test_speed(jet_files, tiny_tokenizer, tiny_bundle, tmp_path):
    result = speed.main(["--tiny", "--tokenizer", str(tiny_tokenizer), "--model", str(tiny_bundle), "--recipe", "pretrain/tiny.yaml", "--data", *_files(jet_files), "--out", str(tmp_path)])
    assert result["speedup"] > 0
    loader_rows = [r for r in result["rows"] if r["what"].startswith("streaming loader")]
    assert len(loader_rows) == 2 and all(r["peak_memory_mb"] > 0 for r in loader_rows)
    _page(tmp_path, "speed")


def test_model_sizes(tmp_path):
    rows = model_sizes.main(["--tiny", "--recipes", "pretrain/tiny.yaml", "--out", str(tmp_path)])
    assert rows[0]["recipe"] == "pretrain/tiny.yaml" and rows[0]["params_millions"] > 0
    assert _page(tmp_path, "model_sizes")["rows"] == rows


def test_readme_benchmark_commands_start_from_the_repository_root():
    """Each `python -m benchmarks.<name>` the README gives imports and parses its arguments, as typed."""
    import re
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    names = sorted(set(re.findall(r"python -m benchmarks\.(\w+)", (root / "README.md").read_text())))
    assert set(render.BENCHMARKS) <= set(names)
    for name in names:
        proc = subprocess.run([sys.executable, "-m", f"benchmarks.{name}", "--help"], cwd=root, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0 and "usage:" in proc.stdout, f"benchmarks.{name}: {proc.stderr[-2000:]}"
