"""Every benchmark script runs in its --tiny setting, so none can rot unnoticed."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import (
    anomaly,
    compile_blocks,
    generation,
    label_efficiency,
    model_sizes,
    probe,
    render,
    speed,
    tagging,
    tagging_choices,
    tokenizer,
)
from foundation.hub import weights_sha256


def _page(out, name, script=None):
    """A --tiny run writes results.json and its page beside its results (never into docs/), the page
    being what that results.json renders to; its command is the script that ran (default: the page's name)."""
    saved = json.loads((out / "docs" / name / "results.json").read_text())
    assert saved["benchmark"] == name and saved["command"].startswith(f"python -m benchmarks.{script or name} --tiny")
    assert (out / "docs" / f"{name}.md").read_text() == render.render_page(saved)
    assert all((out / "docs" / name / plot).exists() for plot in saved["plots"])
    return saved


def _files(jet_files):
    return [str(p) for p in jet_files]


@pytest.fixture
def independent_samples(jet_files, tmp_path):
    """The session's jets split by generator chunk: the first chunk of each file as the labelled
    pool, the second as the test sample, each file recording its own Pythia seeds."""
    from foundation.data.canonical import CanonicalSource, write_jets

    train, test = [], []
    for path in jet_files:
        source = CanonicalSource(path)
        seeds, n = source.metadata.get("chunk_seeds") or [], source.metadata.get("chunk_jets", len(source) // 2)
        train.append(str(write_jets(tmp_path / f"train-{path.name}", source.read(0, n), {"chunk_seeds": seeds[:1]})))
        test.append(str(write_jets(tmp_path / f"test-{path.name}", source.read(n, len(source)), {"chunk_seeds": seeds[1:]})))
    return train, test


@pytest.fixture
def development_sample(tmp_path):
    """A third independent sample (its own Pythia seed), for --validation-only's development AUC."""
    pytest.importorskip("pythia8mc", reason="generates jets (machines without Pythia, such as the GPU box, skip it)")
    from foundation.data.generation import GeneratorConfig, generate

    return [
        str(generate(GeneratorConfig(process=process, max_particles=64), 25, tmp_path / f"dev-{process}.h5", seed=9, workers=1, chunk_jets=25, progress=False))
        for process in ("qcd", "top")
    ]


def _tagging_args(tiny_bundle, samples, tmp_path):
    train, test = samples
    return [
        "--tiny", "--pretrained", str(tiny_bundle), "--data", *train, "--test-data", *test, "--recipe", "finetune/top_tagging_tiny.yaml",
        "--learning-rates", "3e-4", "3e-3", "--runs", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
    ]


def test_tagging(independent_samples, development_sample, tiny_bundle, tmp_path):
    args = _tagging_args(tiny_bundle, independent_samples, tmp_path)
    # A validation-only pass trains and selects, reads no test jets and writes no page; the chosen
    # runs (each model's rate, both seeds) are also scored on the development sample ...
    valid = tagging.main([*args, "--budgets", "0.5", "--seeds", "0", "1", "--out", str(tmp_path / "v"), "--validation-only", "--dev-data", *development_sample])
    assert [r["model"] for r in valid] == ["pretrained", "scratch", "part"] and all("auc" not in r and 0 <= r["validation_auc"] <= 1 for r in valid)
    assert all(0 <= r["dev_auc"] <= 1 and r["dev_auc_std"] is not None for r in valid)
    assert len(list((tmp_path / "runs").glob("*/*/dev-*.json"))) == 6
    assert not list((tmp_path / "runs").glob("*/*/test.json")) and not list((tmp_path / "v").rglob("results.json"))
    trained = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/*/run.json")}
    # ... and the full command then reuses its runs.
    summary = tagging.main([*args, "--budgets", "0.5", "--seeds", "0", "1", "--out", str(tmp_path / "a")])
    assert len(trained) == 9 and {p: p.stat().st_mtime for p in trained} == trained
    assert [r["model"] for r in summary] == ["pretrained", "scratch", "part"] and all(r["seeds"] == 2 for r in summary)
    assert all(0 <= r["auc"] <= 1 and r["params"] > 0 and 0 < r["epochs"] <= r["max_epochs"] for r in summary)
    runs = {p.parent: json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/run.json")}
    # 2 learning rates with seed 0, then seed 1 at the chosen one, per model; early stopping counted in evaluations
    assert len(runs) == 9 and all(r["steps"] <= 16 and (r["stopped_early"] or r["steps"] == 16) for r in runs.values())
    assert all(r["steps"] - r["best_step"] <= 2 * 4 for r in runs.values() if r["stopped_early"])  # patience 2, evaluated every 4 steps
    # Only the chosen runs ever see the test sample, and each chosen rate is the best on validation.
    tested = {folder for folder in runs if (folder / "test.json").exists()}
    assert len(tested) == 6 and all(runs[f]["learning_rate"] == next(r for r in summary if r["model"] == runs[f]["model"])["learning_rate"] for f in tested)
    for row in json.loads((tmp_path / "a" / "results.json").read_text())["rows"]:
        tried = row["validation_auc_by_setting"]
        assert list(tried) == ["0.0003", "0.003"] and tried[row["setting"]] == max(tried.values()) and row["head_only_steps"] == 0
    saved = _page(tmp_path / "a", "tagging")
    assert "roc-budget-0.5.png" in saved["plots"] and saved["data"]["independence"]["checked"] is (bool(saved["data"]["train_pool"][0]["seed"] is not None))
    assert any(word in saved["tables"]["Goal: pretrained ahead of ParT beyond the seed spread"] for word in ("PASS", "MISS"))
    # Run again: every run and test evaluation is reused, nothing trains.
    before = {f: (f / "run.json").stat().st_mtime for f in runs}
    again = tagging.main([*args, "--budgets", "0.5", "--seeds", "0", "1", "--out", str(tmp_path / "b")])
    assert [r["auc"] for r in again] == [r["auc"] for r in summary]
    assert {f: (f / "run.json").stat().st_mtime for f in runs} == before and len(list((tmp_path / "runs").glob("*/*/run.json"))) == 9


def test_tagging_choices_compares_variants_on_validation_jets_only(independent_samples, development_sample, tiny_bundle, tmp_path):
    train, test = independent_samples
    args = [
        "--tiny", "--pretrained", str(tiny_bundle), "--data", *train, "--test-data", *test, "--dev-data", *development_sample,
        "--learning-rates", "3e-3", "--budgets", "0.5", "--runs", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "c"),
    ]
    summary = tagging_choices.main([*args, "--variants", "scratch-codes", "scratch-features", "pretrained-token-dropout"])
    assert [r["variant"] for r in summary] == ["scratch, codes and features", "scratch, features only", "pretrained, token dropout 0.3"]
    assert all(0 <= r["dev_auc"] <= 1 and 0 <= r["validation_auc"] <= 1 for r in summary)
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/run.json")]
    assert len(runs) == 3 and not list((tmp_path / "runs").glob("*/*/test.json"))  # no test jet read
    saved = _page(tmp_path / "c", "tagging_choices")
    assert saved["plots"] == ["tagging_choices.png"] and "scratch, features only" in saved["tables"]["Validation results (mean and spread over seeds)"]
    # The features-only variant is benchmark 1's scratch model: benchmark 1 reuses its run.
    trained = {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/*/run.json")}
    tagging.main(["--tiny", "--pretrained", str(tiny_bundle), "--data", *train, "--test-data", *test, "--learning-rates", "3e-3", "--budgets", "0.5",
                  "--runs", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"), "--out", str(tmp_path / "t"), "--models", "scratch", "--seeds", "0"])
    assert {p: p.stat().st_mtime for p in (tmp_path / "runs").glob("*/*/run.json")} == trained


def test_a_fresh_machine_reuses_the_recorded_runs(independent_samples, development_sample, tiny_bundle, tmp_path):
    """The runs' record (settings and figures, no weights) is committed; the weights are not. On a
    machine without the runs, what was recorded is read back, and only a run that must be scored and
    has no score yet trains again."""
    records, runs = tmp_path / "records", tmp_path / "runs"
    args = [*_tagging_args(tiny_bundle, independent_samples, tmp_path), "--records", str(records), "--budgets", "0.5", "--seeds", "0", "--models", "scratch"]
    first = tagging.main([*args, "--out", str(tmp_path / "v"), "--validation-only", "--dev-data", *development_sample])
    kept = {p.name for p in records.rglob("*") if p.is_file()}
    assert {"run.json", "settings.json"} < kept and all(name in tagging.RECORD_FILES or name.startswith("dev-") for name in kept)
    assert "test_predictions.npz" not in kept  # not scored on the test sample yet
    assert len(list(records.glob("*/*/run.json"))) == 2  # both learning rates of the search
    shutil.rmtree(runs)  # a fresh machine: the cache and weights gone, the record committed ...
    clone = tmp_path / "clone"  # ... and the checkout in another folder: the same jet files elsewhere
    clone.mkdir()
    train, test, dev = ([str(shutil.copy2(path, clone)) for path in files] for files in (*independent_samples, development_sample))
    runs = clone / "runs"
    args = [*_tagging_args(tiny_bundle, (train, test), clone), "--records", str(records), "--budgets", "0.5", "--seeds", "0", "--models", "scratch"]
    again = tagging.main([*args, "--out", str(clone / "v"), "--validation-only", "--dev-data", *dev])
    assert again == first and not list(runs.glob("*/*/model"))  # read back, nothing trained
    # The full command scores the chosen run on the test sample: it needs weights, so it trains again.
    final = tagging.main([*args, "--out", str(clone / "a")])
    assert len(list(runs.glob("*/*/model"))) == 1 and 0 <= final[0]["auc"] <= 1
    assert len(list(records.glob("*/*/test.json"))) == len(list(records.glob("*/*/test_predictions.npz"))) == 1


def test_benchmarks_scratch_model_reads_features_only_unless_given_a_recipe(tmp_path):
    """From scratch the codes let a tagger memorise few labels (benchmarks.tagging_choices): by default
    the scratch model reads the particles' features alone; --scratch-recipe trains it as that recipe says."""
    from types import SimpleNamespace

    data = SimpleNamespace(train=["train.h5"], validation=["validation.h5"])
    bench = tagging.Bench(data, tagging.Protocol(), tmp_path / "runs", "finetune/top_tagging.yaml", "jet-foundation-small", tiny=False)

    def recipe_of(bench, kind):
        return tagging.our_recipe(bench, kind, 225, 0, tagging.Setting(1e-3), str(tmp_path))

    assert recipe_of(bench, "scratch").architecture == {"token_inputs": False} and recipe_of(bench, "pretrained").architecture == {}
    with_codes = tagging.Bench(data, tagging.Protocol(), tmp_path / "runs", "finetune/top_tagging.yaml", "jet-foundation-small", tiny=False, scratch_recipe="finetune/top_tagging.yaml")
    assert recipe_of(with_codes, "scratch").architecture == {} and recipe_of(with_codes, "scratch").init == "scratch"
    # Without codes, token dropout has nothing to hide: the scratch model is the same run under either recipe.
    from foundation.config import to_dict
    from foundation.training.checkpoint import without_fields_at_as_before

    with_dropout = tagging.Bench(data, tagging.Protocol(), tmp_path / "runs", "finetune/top_tagging_token_dropout.yaml", "jet-foundation-small", tiny=False)
    assert recipe_of(with_dropout, "pretrained").head["token_dropout"] == 0.3

    def key(bench):
        return without_fields_at_as_before(to_dict(recipe_of(bench, "scratch")))

    assert key(with_dropout) == key(bench)


def test_tagging_refuses_a_test_sample_that_is_not_independent(independent_samples, tiny_bundle, tmp_path, capsys):
    train, _ = independent_samples
    base = ["--tiny", "--pretrained", str(tiny_bundle), "--recipe", "finetune/top_tagging_tiny.yaml", "--out", str(tmp_path), "--data", *train]
    with pytest.raises(SystemExit) as err:
        tagging.main(base)
    assert err.value.code == 2 and "--test-data" in capsys.readouterr().err
    if tagging.chunk_seeds_of(train):  # files that record their seeds: the same jets as test sample are refused
        with pytest.raises(SystemExit) as err:
            tagging.main([*base, "--test-data", *train])
        assert err.value.code == 2 and "independent" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_tagging_refuses_a_development_sample_that_is_the_test_sample_or_outside_validation_only(independent_samples, tiny_bundle, tmp_path, capsys):
    train, test = independent_samples
    args = _tagging_args(tiny_bundle, independent_samples, tmp_path)
    for extra in (["--validation-only", "--dev-data", *test], ["--dev-data", *train]):
        with pytest.raises(SystemExit) as err:
            tagging.main([*args, "--out", str(tmp_path / "out"), *extra])
        assert err.value.code == 2 and "--dev-data" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_benchmark_seeds_avoid_the_recipes_data():
    from benchmarks.common import sample_seeds

    benchmark = [sample_seeds(seed, 50_000) for seed in (tagging.TRAIN_SEED, tagging.TEST_SEED, tagging.DEV_SEED, generation.REFERENCE_SEED)]
    assert len(set.union(*benchmark)) == 4 * 400 and not set.union(*benchmark) & tagging.reserved_seeds()
    # The shipped models' own seeds are caught (the release's, 1001, and the recipes', 1).
    assert sample_seeds(1001, 250) <= tagging.reserved_seeds() and sample_seeds(1, 250) <= tagging.reserved_seeds()


def test_a_layerwise_recipe_applies_to_the_pretrained_model_only(tmp_path):
    """Frozen or layer-wise modes protect pretrained weights; the scratch model trains every layer."""
    from types import SimpleNamespace

    recipe = tmp_path / "layerwise.yaml"
    recipe.write_text(Path("finetune/top_tagging.yaml").read_text().replace("mode: full", "mode: layerwise"))
    data = SimpleNamespace(train=["train.h5"], validation=["validation.h5"])
    bench = tagging.Bench(data, tagging.Protocol(), tmp_path / "runs", str(recipe), "jet-foundation-small", tiny=False)
    modes = {kind: tagging.our_recipe(bench, kind, 225, 0, tagging.Setting(1e-3), str(tmp_path)).mode for kind in ("pretrained", "scratch")}
    assert modes == {"pretrained": "layerwise", "scratch": "full"}


def test_early_stopping_protocol_is_the_same_for_every_budget_unit():
    p = tagging.Protocol()
    assert p.schedule(22_500) == {"steps_per_epoch": 351, "max_steps": 30 * 351, "eval_every": 351, "max_epochs": 30}
    assert p.schedule(225)["max_steps"] == 600 and p.schedule(225)["eval_every"] == 20
    over = p.overrides(225, seed=1, learning_rate=1e-3)
    assert over["training.early_stopping_patience"] == 5 and over["training.keep_best"] == "eval/auc"


def test_a_page_names_a_model_folder_as_its_command_would(tiny_bundle, tmp_path, monkeypatch):
    """Relative to the working directory (where the page's command runs), never this machine's absolute path."""
    from benchmarks.common import measured_model

    monkeypatch.chdir(tiny_bundle.parent)
    assert measured_model(str(tiny_bundle.resolve()))["model"] == tiny_bundle.name
    monkeypatch.chdir(tmp_path)
    assert measured_model(str(tiny_bundle.resolve()))["model"] == str(tiny_bundle.resolve())  # outside: as given


def test_budgets_above_select_at_reuse_its_learning_rate():
    """The costly largest budgets reuse the rate chosen at --select-at; the smaller ones keep choosing their own."""
    assert [tagging.selection_budget(b, 0.1) for b in (0.001, 0.01, 0.1, 1.0)] == [0.001, 0.01, 0.1, 0.1]
    assert [tagging.selection_budget(b, None) for b in (0.001, 1.0)] == [0.001, 1.0]


def test_the_refinement_round_adds_one_configuration_per_model():
    """The same search size for every model: a head-first start for a pretrained one, a rate next to
    the chosen one (towards the better neighbour; outward at the grid's edge) from scratch."""
    auc = {3e-5: 0.80, 1e-4: 0.85, 3e-4: 0.84, 1e-3: 0.82}
    assert tagging.refinement("pretrained", 1e-4, auc, 200) == tagging.Setting(1e-4, 200)
    assert tagging.refinement("main_job", 1e-4, auc, 50) == tagging.Setting(1e-4, 50)
    assert tagging.refinement("scratch", 1e-4, auc, 200) == tagging.Setting(1.73e-4)  # sqrt(1e-4 * 3e-4)
    assert tagging.refinement("part", 1e-3, auc, 200) == tagging.Setting(1.83e-3)  # 1e-3 * sqrt(1e-3 / 3e-4)
    assert tagging.refinement("scratch", 3e-5, auc, 200) == tagging.Setting(1.64e-5)
    assert tagging.Setting(1e-4, 200).label == "0.0001 head-first 200" and tagging.Setting(1e-4).label == "0.0001"


def test_refine_chooses_among_five_configurations_on_validation(independent_samples, tiny_bundle, tmp_path, capsys):
    args = [*_tagging_args(tiny_bundle, independent_samples, tmp_path), "--budgets", "0.5", "--seeds", "0", "--out", str(tmp_path / "v"), "--validation-only"]
    summary = tagging.main([*args, "--models", "pretrained", "scratch", "--refine", "--head-first-steps", "2"])
    runs = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/*/settings.json")]
    # two grid rates and one refinement per model; only the pretrained model's trains the head first
    by_model = {}
    for r in runs:
        by_model.setdefault(r["model"], []).append((r["learning_rate"], r["recipe"].get("head_only_steps", 0)))
    assert len(by_model["pretrained"]) == len(by_model["scratch"]) == 3
    assert sum(head for _, head in by_model["pretrained"]) == 2 and all(head == 0 for _, head in by_model["scratch"])
    assert len({lr for lr, _ in by_model["scratch"]}) == 3 and len({lr for lr, _ in by_model["pretrained"]}) == 2
    assert [r["model"] for r in summary] == ["pretrained", "scratch"]
    # A recipe that already starts head-first has nothing to refine: one line, exit code 2, no run.
    recipe = tmp_path / "head_first.yaml"
    recipe.write_text(Path("finetune/top_tagging_tiny.yaml").read_text() + "head_only_steps: 3\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as err:
        tagging.main([*args, "--runs", str(tmp_path / "other"), "--recipe", str(recipe), "--refine"])
    message = capsys.readouterr().err.strip()
    assert err.value.code == 2 and "\n" not in message and "--refine" in message and not (tmp_path / "other").exists()


def test_label_efficiency(independent_samples, tiny_bundle, tiny_conditional_bundle, tmp_path):
    args = _tagging_args(tiny_bundle, independent_samples, tmp_path)
    # The main job's model (here another tiny bundle) as a third curve, with its own labels saved.
    models = ["--models", "pretrained", "main_job", "scratch", "--main-job-model", str(tiny_conditional_bundle)]
    result = label_efficiency.main([*args, *models, "--budgets", "0.2", "1", "--seeds", "0", "--out", str(tmp_path)])
    assert len(result["factors"]) == 2 and (tmp_path / "label_efficiency.png").exists()
    assert all(f"auc_{kind}" in row for row in result["factors"] for kind in ("pretrained", "main_job", "scratch"))
    assert _page(tmp_path, "label_efficiency")["plots"] == ["label_efficiency.png"]
    page = json.loads((tmp_path / "results.json").read_text())
    # The page says which configuration each model chose at each budget, and on what validation AUC.
    selection = page["tables"]["Selection (validation only)"]
    assert all(f"| {kind} |" in selection for kind in ("pretrained", "main_job", "scratch"))
    saved = page["labels_saved"]
    assert saved.startswith("labels saved: ") and ("PASS" in saved or "MISS" in saved)
    assert page["labels_saved_main_job"].startswith("labels saved: ") and page["headline"]["peer"].startswith("main job's model ")
    largest = max(r["labelled_jets"] for r in result["factors"])  # the headline names the labels it is measured at
    assert page["headline"]["metric"] == f"labels saved at the from-scratch model's test AUC with {largest} labels"
    # Each model is measured on its own weights: the page records both bundles, the runs start from each.
    assert [m["weights_sha256"] for m in page["models"]] == [weights_sha256(tiny_bundle), weights_sha256(tiny_conditional_bundle)]
    starts = {}
    for settings in (tmp_path / "runs").glob("*/*/settings.json"):
        run = json.loads(settings.read_text())
        starts.setdefault(run["model"], set()).add(run["pretrained"])
    assert set(starts) == {"pretrained", "main_job", "scratch"} and all(len(v) == 1 for v in starts.values())
    assert starts["main_job"] != starts["pretrained"] == starts["scratch"]  # scratch: the released model's shape


def test_the_main_job_model_is_checked_before_any_run(independent_samples, tiny_bundle, tmp_path, capsys):
    args = [*_tagging_args(tiny_bundle, independent_samples, tmp_path), "--out", str(tmp_path / "out")]
    for extra, words in (
        (["--models", "pretrained", "main_job", "--main-job-model", str(tmp_path / "nowhere")], "nowhere"),
        (["--main-job-model", str(tiny_bundle)], "without main_job"),
    ):
        with pytest.raises(SystemExit) as err:
            tagging.main([*args, *extra])
        message = capsys.readouterr().err.strip()
        assert err.value.code == 2 and message.count("\n") == 0 and "--main-job-model" in message and words in message
    assert not (tmp_path / "runs").exists()


def test_labels_saved_says_when_it_is_a_lower_bound():
    rows = [{"model": m, "labelled_jets": n, "budget": n / 1000, "auc": a} for m, n, a in
            [("pretrained", 10, 0.96), ("pretrained", 100, 0.97), ("scratch", 10, 0.90), ("scratch", 100, 0.95)]]
    saved = tagging.labels_saved_line(rows)  # pretrained with 10 labels already beats scratch with 100
    assert (saved.factor, saved.at_least, saved.target_jets, saved.figure) == (10.0, True, 100, "at least 10.0x")
    rows[0]["auc"] = rows[1]["auc"] = 0.93
    assert tagging.labels_saved_line(rows).figure == "not reached"
    one_budget = [r for r in rows if r["labelled_jets"] == 100]
    assert tagging.labels_saved_line(one_budget).line == "labels saved: needs at least two budgets"


def test_labels_saved_interpolates_the_pretrained_curve():
    jets = np.array([100.0, 1000.0, 10000.0])
    # scratch reaches 0.95 with 10000 labels; pretrained gets 0.94 with 100, 0.96 with 1000: halfway in log -> ~316
    factor, how = tagging.labels_saved(jets, np.array([0.94, 0.96, 0.97]), 0.95, 10000)
    assert how == "interpolated" and factor == pytest.approx(10000 / 10**2.5)
    assert tagging.labels_saved(jets, np.array([0.96, 0.97, 0.98]), 0.95, 10000) == (100.0, "at least")
    assert tagging.labels_saved(jets, np.array([0.90, 0.91, 0.92]), 0.95, 10000) == (None, "not reached")


def test_goal_table_compares_any_two_models():
    rows = [{"model": m, "budget": 0.01, "labelled_jets": 225, "auc": a, "auc_std": 0.002, "rejection_at_0.3": r, "rejection_at_0.3_std": 2.0}
            for m, a, r in [("pretrained", 0.95, 40.0), ("main_job", 0.93, 30.0), ("part", 0.951, 41.0)]]
    released = tagging.goal_table(rows, peer="main_job")
    assert "AUC: pretrained vs main job's model" in released and "0.9500 vs 0.9300: PASS" in released and "40 vs 30: PASS" in released
    assert "0.9500 vs 0.9510: MISS" in tagging.goal_table(rows)  # the default: against ParT
    assert tagging.goal_table([r for r in rows if r["model"] != "main_job"], peer="main_job") == ""


def test_the_tagging_headline_counts_the_budgets_ahead_of_part():
    def row(model, budget, auc, rejection):
        return {"model": model, "budget": budget, "labelled_jets": int(budget * 22500), "auc": auc, "auc_std": 0.002,
                "rejection_at_0.3": rejection, "rejection_at_0.3_std": 2.0}

    rows = [row("pretrained", 0.01, 0.96, 60.0), row("part", 0.01, 0.95, 40.0),  # ahead on both
            row("pretrained", 1.0, 0.98, 50.0), row("part", 1.0, 0.97, 70.0)]  # AUC ahead, 1/eps_B behind
    headline = tagging.tagging_headline(rows, 1.0)
    assert headline["metric"] == "test AUC, 22500 labels; ahead of ParT beyond the seed spread on AUC and 1/eps_B at 1 of 2 label budgets"
    assert headline["ours"] == "0.9800 ± 0.0020" and headline["peer"] == "ParT 0.9700 ± 0.0020"
    assert tagging.tagging_headline([r for r in rows if r["model"] != "part"], 1.0)["peer"] is None


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


def test_generation_makes_its_own_independent_reference(tiny_bundle, tmp_path):
    """Without --reference, a top + QCD sample is generated once with the benchmark's seed and reused."""
    args = ["--tiny", "--model", str(tiny_bundle), "--reference-jets", "20", "--jets", "20", "--temperatures", "1.0", "--out", str(tmp_path)]
    generation.main(args)
    made = sorted((tmp_path / "reference").glob("*.h5"))
    assert [p.name for p in made] == [f"reference-{c}-20-n128-seed{generation.REFERENCE_SEED}.h5" for c in ("qcd", "top")]
    stamps = [p.stat().st_mtime_ns for p in made]
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["stop_calibration"]["jets"] == 40
    generation.main(args)  # the second run reads the same files
    assert [p.stat().st_mtime_ns for p in made] == stamps


def test_generation_refuses_a_reference_seed_of_the_training_data(tiny_bundle, tmp_path, capsys):
    """The shipped models' seed is refused before any jet is generated: one line, exit code 2."""
    from benchmarks.common import run_script

    with pytest.raises(SystemExit) as err:
        run_script(lambda: generation.main(["--tiny", "--model", str(tiny_bundle), "--reference-seed", "1001", "--out", str(tmp_path)]))
    message = capsys.readouterr().err
    assert err.value.code == 2 and "seed 1001" in message and message.count("\n") == 1
    assert not (tmp_path / "reference").exists()


def test_a_benchmark_stopped_by_sigterm_says_so_in_one_line(tmp_path, capsys):
    from benchmarks.common import run_script
    from foundation.errors import TrainingInterrupted

    def interrupted():
        raise TrainingInterrupted(tmp_path / "run", 31)

    with pytest.raises(SystemExit) as err:
        run_script(interrupted)
    message = capsys.readouterr().err
    assert err.value.code == 143 and "step 31" in message and "resumes" in message and message.count("\n") == 1


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
    runs = tmp_path / f"weights-{weights_sha256(tiny_bundle)[:12]}"  # each pretrained model's runs apart
    cwola_scores = np.load(runs / "cwola-seed0" / "test_scores.npz")  # drawn with the others
    assert len(cwola_scores["score"]) == len(cwola_scores["is_signal"]) > 0
    assert _page(tmp_path, "anomaly")["plots"] == ["sic.png"]


def test_speed(jet_files, tiny_tokenizer, tiny_bundle, tmp_path):
    result = speed.main(["--tiny", "--tokenizer", str(tiny_tokenizer), "--model", str(tiny_bundle), "--recipes", "pretrain/tiny.yaml", "--data", *_files(jet_files), "--out", str(tmp_path), "--token-file"])
    assert result["speedup"] > 0
    timed = [r for r in result["rows"] if "precision" in r]
    assert {r["world_size"] for r in timed} == {1, 2} and timed[0]["precision"] == "no"
    # --token-file: the same recipe reading the data encoded once, and the rate of that encoding
    from_tokens = [r for r in timed if r.get("input") == "token file"]
    assert [r["world_size"] for r in from_tokens] == [1, 2] and (tmp_path / "tokens.h5").exists()
    assert any(r["what"].startswith("tokenizer encode") and r["jets_per_second"] > 0 for r in result["rows"])
    assert "token file" not in _page(tmp_path, "speed")["headline"]["metric"]  # the headline stays the loader's
    for row in timed:  # throughput against the matmul peak measured in the same process
        assert row["tokens_per_second"] > row["jets_per_second"] > 0
        assert 0 < row["flops_per_second"] < row["peak_flops_per_second"] and 0 < row["mfu"] < 1
    loader_rows = [r for r in result["rows"] if r["what"].startswith("streaming loader")]
    assert len(loader_rows) == 2 and all(r["peak_memory_mb"] > 0 for r in loader_rows)
    _page(tmp_path, "speed")


def test_compile_blocks_times_eager_and_compiled_steps(tiny_bundle, capsys):
    compile_blocks.main(["--model", str(tiny_bundle), "--micro-batch", "4", "--warmup", "1", "--steps", "1", "--precision", "no", "--pad-to-multiple-of", "1", "8"])
    lines = capsys.readouterr().out.splitlines()
    rates = {line.split("  ")[0]: float(line.split()[-5]) for line in lines if "jets/s" in line}
    padded = ", lengths padded to a multiple of 8"
    assert set(rates) == {"eager", "compiled blocks", "eager" + padded, "compiled blocks" + padded} and all(rate > 0 for rate in rates.values())


@pytest.mark.parametrize("bad, message", [
    (["--steps", "0"], "--steps: must be positive, got 0"), (["--warmup", "-1"], "--warmup: must be >= 0, got -1"),
    (["--pad-to-multiple-of", "1", "0"], "--pad-to-multiple-of: must be positive, got 0"),
])
def test_compile_blocks_refuses_bad_options_in_one_line(bad, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        compile_blocks.main(bad)
    assert exit_info.value.code == 2 and capsys.readouterr().err.strip() == f"error: {message}"


def test_speed_loss_parity(jet_files, tiny_tokenizer, tmp_path):
    """--loss-parity: the recipe in fp32 and in its own precision (tiny.yaml trains in fp32: one set of runs)."""
    result = speed.main(["--tiny", "--loss-parity", "--tokenizer", str(tiny_tokenizer), "--recipes", "pretrain/tiny.yaml", "--seeds", "0", "1", "--data", *_files(jet_files), "--out", str(tmp_path)])
    assert [r["what"] for r in result["rows"]] == ["tiny, no, seed 0", "tiny, no, seed 1"]
    assert all(r["validation_loss"] > 0 and r["jets"] == 4 * 32 for r in result["rows"])
    _page(tmp_path, "speed_loss_parity", script="speed")


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


def test_probe(independent_samples, development_sample, tiny_bundle, tmp_path):
    """The linear probe: the observables' floor and each model, C chosen on validation, seed 0 on
    benchmark 1's labelled jets; --validation-only reads the development sample and writes no page,
    the full command the test sample and its page; embeddings are computed once per model and sample."""
    train, test = independent_samples
    args = ["--tiny", "--models", str(tiny_bundle), "--data", *train, "--test-data", *test, "--data-dir", str(tmp_path / "data"), "--budgets", "0.5", "1", "--seeds", "0", "1"]
    valid = probe.main([*args, "--out", str(tmp_path / "v"), "--validation-only", "--dev-data", *development_sample])
    assert [(r["model"], r["budget"]) for r in valid] == [(m, b) for m in (probe.OBSERVABLES, str(tiny_bundle)) for b in (0.5, 1)]
    assert all(0 <= r["validation_auc"] <= 1 and 0 <= r["dev_auc"] <= 1 and "test_auc" not in r for r in valid)
    assert not list((tmp_path / "v").rglob("results.json")) and len(list((tmp_path / "v" / "embeddings").glob("*.npy"))) == 3
    summary = probe.main([*args, "--out", str(tmp_path / "a")])
    assert all(0 <= r["test_auc"] <= 1 and r["seeds"] == (2 if r["budget"] < 1 else 1) for r in summary)  # the whole pool: one fit
    saved = _page(tmp_path / "a", "probe")
    assert saved["plots"] == ["probe.png"] and {r["c"] for r in saved["rows"]} <= set(probe.C_GRID)
    # The labelled jets of seed 0 are those benchmark 1 fine-tunes on (build_splits' train_limit).
    from foundation.data.dataset import DataConfig, build_splits

    splits = build_splits(DataConfig(files=[str(tmp_path / "data" / "train.h5")], validation_files=[str(tmp_path / "data" / "validation.h5")], train_limit=10, max_particles=tagging.MAX_PARTICLES))
    assert list(probe.labelled_subset(len(probe._read([str(tmp_path / "data" / "train.h5")])[1]), 10, 0)) == list(splits.train.indices)


def test_a_benchmark_log_holds_no_library_chatter(tiny_bundle, capfd):
    """run_script quiets the libraries as the `foundation` commands do: a fine-tuning's expected load
    report of the new head and transformers' per-load progress bars stay out of a benchmark's log."""
    from benchmarks.common import run_script
    from foundation.models import JetTransformerForJetClassification

    run_script(lambda: JetTransformerForJetClassification.from_pretrained(tiny_bundle, num_labels=2))
    err = capfd.readouterr().err
    assert "LOAD REPORT" not in err and "Loading weights" not in err


@pytest.mark.parametrize("bad", [["--budgets", "0"], ["--seeds", "0", "0"], ["--c-grid", "-1"]])
def test_probe_refuses_bad_options_in_one_line(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        probe.main(["--tiny", "--out", str(tmp_path), *bad])
    assert err.value.code == 2 and bad[0] in capsys.readouterr().err
    assert not any(tmp_path.iterdir())
