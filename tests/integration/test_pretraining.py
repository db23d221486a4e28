"""Pretraining end to end on tiny data: bundle contents, exact resume, CLI."""

import json
import os
import signal

import numpy as np
import pytest
from typer.testing import CliRunner

from foundation.cli import app
from foundation.hub import load_bundle, verify_bundle
from foundation.models import JetTransformerForPretraining
from foundation.pipelines.pretrain import build_pretraining, load_pretrain_recipe, pretrain


def test_bundle_is_complete_and_loads(tiny_bundle):
    verify_bundle(tiny_bundle)
    names = {p.name for p in tiny_bundle.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer", "data_config.yaml", "README.md", "manifest.json"} <= names
    bundle = load_bundle(tiny_bundle)
    assert isinstance(bundle.model, JetTransformerForPretraining)
    assert bundle.data_config["class_names"] == ["qcd", "top"]
    card = (tiny_bundle / "README.md").read_text()
    assert "next-token prediction + masked particle modelling" in card and "perplexity" in card
    rows = [json.loads(line) for line in (tiny_bundle.parent / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert losses[-1] < losses[0]


def _run(jet_files, tokenizer, out, steps, resume=False):
    recipe = load_pretrain_recipe(
        "pretrain/tiny.yaml",
        {"tokenizer": str(tokenizer), "training.output_dir": str(out), "training.progress": False, "training.max_steps": steps, "training.save_every": 10, "training.eval_every": 10},
    )
    recipe.data.files = [str(p) for p in jet_files]
    return pretrain(recipe, resume=resume)


def test_pretrain_cli_and_bad_recipe(jet_files, tiny_tokenizer, tmp_path):
    recipe = tmp_path / "r.yaml"
    files = "[" + ", ".join(str(p) for p in jet_files) + "]"
    recipe.write_text(
        f"tokenizer: {tiny_tokenizer}\ndata:\n  files: {files}\nmodel:\n  hidden_size: 16\n  num_layers: 1\n  num_heads: 2\n"
        f"  intermediate_size: 32\ntraining:\n  max_steps: 4\n  global_batch_size: 16\n  micro_batch_size: 16\n  warmup_steps: 1\n  tensorboard: false\n  progress: false\n"
    )
    result = CliRunner().invoke(app, ["pretrain", "--config", str(recipe), "--output", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "run" / "model" / "manifest.json").exists()
    # the finished run is not replaced by accident, and --overwrite leaves nothing of it to mix with the new one
    result = CliRunner().invoke(app, ["pretrain", "--config", str(recipe), "--output", str(tmp_path / "run")])
    assert result.exit_code != 0 and "--overwrite" in str(result.exception)
    (tmp_path / "run" / "checkpoints" / "step-000099").mkdir()  # a later checkpoint of the old run
    result = CliRunner().invoke(app, ["pretrain", "--config", str(recipe), "--output", str(tmp_path / "run"), "--overwrite"])
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "run" / "checkpoints" / "step-000099").exists()
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps and steps == sorted(set(steps))  # one run's rows, not two
    recipe.write_text("model:\n  vocab_codes: 12\n")
    result = CliRunner().invoke(app, ["pretrain", "--config", str(recipe)])
    assert result.exit_code != 0 and "model.vocab_codes" in str(result.exception)


def test_cli_set_overrides_and_bad_set(jet_files, tiny_tokenizer, tmp_path):
    files = "[" + ",".join(str(p) for p in jet_files) + "]"
    args = ["pretrain", "--config", "pretrain/tiny.yaml", "--tokenizer", str(tiny_tokenizer), "--output", str(tmp_path / "run"),
            "--set", f"data.files={files}", "--set", "training.max_steps=3", "--set", "training.progress=false", "--set", "training.save_every=3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000003" / "trainer_state.json").read_text())
    assert state["step"] == 3
    result = CliRunner().invoke(app, ["pretrain", "--config", "pretrain/tiny.yaml", "--set", "training.max_steps"])
    assert result.exit_code != 0 and "KEY=VALUE" in str(result.exception)  # an InputError: one line from main()


def test_sigterm_checkpoints_and_stops_without_exporting(jet_files, tiny_tokenizer, tmp_path, monkeypatch, caplog):
    """Preemption: SIGTERM at step 5 writes a checkpoint there and raises; no half-trained model
    is exported; --resume then finishes the run. Checkpoints hold the tied next-token head once,
    without accelerate's "Removed shared tensor" warning, and the finished model is still tied."""
    from foundation.errors import TrainingInterrupted

    _terminate_at(monkeypatch, 5)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="step 5"):
        _run(jet_files, tiny_tokenizer, out, 20)
    assert (out / "checkpoints" / "step-000005").is_dir() and not (out / "model").exists()
    monkeypatch.undo()
    bundle = _run(jet_files, tiny_tokenizer, out, 20, resume=True)
    assert (bundle / "model.safetensors").exists()
    assert json.loads((out / "checkpoints" / "step-000020" / "trainer_state.json").read_text())["step"] == 20
    assert not [r for r in caplog.records if "Removed shared tensor" in r.getMessage()]
    model = JetTransformerForPretraining.from_pretrained(bundle)
    assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr()


def _terminate_at(monkeypatch, at_step: int) -> None:
    """SIGTERM to this process just before the trainer checks for it after optimizer step `at_step`."""
    from foundation.training.loop import Trainer

    stop_agreed = Trainer._stop_agreed

    def terminate_then_check(self):
        if self.state.step == at_step and not getattr(self, "_terminated", False):
            self._terminated = True
            os.kill(os.getpid(), signal.SIGTERM)  # the trainer's handler catches it
        return stop_agreed(self)

    monkeypatch.setattr(Trainer, "_stop_agreed", terminate_then_check)


def test_sigterm_at_an_evaluation_step_saves_at_once_and_evaluates_on_resume(jet_files, tiny_tokenizer, tmp_path, monkeypatch):
    """A launcher kills what has not stopped within its grace period (torchrun: 30 s), often shorter
    than a validation pass: SIGTERM at an evaluation step saves first, the resumed run evaluates
    that step before training on, and the run ends as an uninterrupted one does."""
    import torch
    from safetensors.torch import load_file

    from foundation.errors import TrainingInterrupted

    _terminate_at(monkeypatch, 10)  # eval_every and save_every are 10 in _run
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted, match="step 10"):
        _run(jet_files, tiny_tokenizer, out, 20)
    state = json.loads((out / "checkpoints" / "step-000010" / "trainer_state.json").read_text())
    assert state["evaluation_pending"] is True
    assert _evaluations(out) == []
    monkeypatch.undo()
    _run(jet_files, tiny_tokenizer, out, 20, resume=True)
    reference = tmp_path / "uninterrupted"
    _run(jet_files, tiny_tokenizer, reference, 20)
    assert [r["step"] for r in _evaluations(out)] == [10, 20]
    assert [r["eval/loss"] for r in _evaluations(out)] == [r["eval/loss"] for r in _evaluations(reference)]
    ours, theirs = load_file(out / "model" / "model.safetensors"), load_file(reference / "model" / "model.safetensors")
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in theirs)


def _evaluations(run) -> list[dict]:
    return [row for row in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/loss" in row]


def test_stop_calibration_sums_the_stop_probabilities_up_to_each_true_end(tiny_bundle, jet_files):
    """Against a jet-by-jet walk through the sequence with the key/value cache, as sampling does."""
    import torch

    from foundation.pipelines.generate import load_generator, stop_calibration
    from foundation.pipelines.inference import bundle_inputs, iterate_batches, jet_dataset

    files = [str(p) for p in jet_files]  # QCD then top: 4 jets spread over both
    report = stop_calibration(tiny_bundle, files, limit=4, progress=False)
    bundle = load_generator(tiny_bundle)
    net, cfg = bundle.model, bundle.model.config
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config)
    batch = next(iterate_batches(jet_dataset(files, inputs, limit=4, spread=True), inputs, progress=False))
    sums, lengths = [], []
    with torch.no_grad():
        for ids, mask in zip(batch["input_ids"], batch["attention_mask"].bool(), strict=True):
            sequence = ids[mask]  # start, particles, stop
            assert sequence[-1] == cfg.stop_token_id
            past, total = None, 0.0
            for token in sequence[:-1]:  # every position before the stop token could have stopped the jet
                out = net(token.view(1, 1), past_key_values=past, use_cache=True)
                past = out.past_key_values
                total += torch.softmax(out.logits[0, -1].float(), -1)[cfg.stop_token_id].item()
            sums.append(total)
            lengths.append(len(sequence) - 2)
    assert report["jets"] == 4 and report["mean_particles"] == pytest.approx(sum(lengths) / 4)
    assert report["cumulative_stop_probability"] == pytest.approx(sum(sums) / 4, rel=1e-4)
    assert {name: c["jets"] for name, c in report["by_class"].items()} == {"qcd": 2, "top": 2}


def test_tokenizer_round_trip_writes_the_jets_a_perfect_generator_would(tiny_bundle, jet_files, tmp_path):
    """Real jets through the bundle's tokenizer and back: same jets, labels and multiplicities,
    particles exactly as the tokenizer decodes their codes."""
    import torch

    from foundation.data.jets import JetArrays
    from foundation.data.sources import JetCollection
    from foundation.pipelines.generate import load_generator, tokenizer_round_trip

    jets = JetCollection.open([str(p) for p in jet_files]).read_all()
    jets = jets.subset(np.r_[0:3, len(jets) - 3 : len(jets)])  # QCD and top
    out = tokenizer_round_trip(tiny_bundle, jets, tmp_path / "tokens.h5", batch_size=4)
    decoded = JetCollection.open(out).read_all()
    tokenizer = load_generator(tiny_bundle).tokenizer.eval()
    n = tokenizer.config.max_particles
    assert decoded.class_names == jets.class_names and list(decoded.label) == list(jets.label)
    assert (decoded.mask.sum(1) == np.minimum(jets.mask.sum(1), n)).all()
    features, mask = tokenizer.jet_features(jets)
    ids = tokenizer.encode(torch.as_tensor(features), torch.as_tensor(mask))
    expected, expected_mask = tokenizer.decode_to_constituents(ids, torch.as_tensor(mask))
    # files hold constituents pT-ordered, and decoded particles need not come out in that order
    expected = JetArrays(expected, expected_mask, np.zeros(mask.shape, np.int8), np.zeros(mask.shape, np.int32), jets.label, jets.class_names).sorted_by_pt()
    np.testing.assert_allclose(decoded.constituents, expected.constituents, rtol=1e-5, atol=1e-4)


def test_evaluation_by_class_prepares_each_jet_once_and_matches_one_class_at_a_time(jet_files, tmp_path, monkeypatch):
    """Class-labelled real jets stand in for a class-conditional sample: every class's rows are
    those of evaluating that class alone, yet each jet's EFPs are computed only once."""
    from foundation.errors import InputError
    from foundation.evaluation import generation as metrics
    from foundation.pipelines.generate import evaluate_generation, evaluate_generation_by_class

    files = [str(p) for p in jet_files]
    seen = []
    efps = metrics.energy_flow_polynomials
    monkeypatch.setattr(metrics, "energy_flow_polynomials", lambda c, m, *a, **k: seen.append(len(c)) or efps(c, m, *a, **k))
    reports = evaluate_generation_by_class(files, files, [None, "qcd", "top"], out_dir=tmp_path, seed=1)
    assert sum(seen) == 2 * 300  # the generated jets once, the reference jets once
    assert json.loads((tmp_path / "top" / "generation_metrics.json").read_text())["generated_jets"] == 150
    for name in (None, "qcd", "top"):
        alone = evaluate_generation(files, files, reference_class=name, seed=1)
        assert [r["metric"] for r in reports[name]] == [r["metric"] for r in alone]
        assert [r["value"] for r in reports[name]] == pytest.approx([r["value"] for r in alone], rel=1e-9, abs=1e-12)
        assert [r["floor"] for r in reports[name]] == pytest.approx([r["floor"] for r in alone], rel=1e-9, abs=1e-12)
    with pytest.raises(InputError, match="'w' not in the reference classes"):
        evaluate_generation_by_class(files, files, ["w"])


def _short_run(jet_files, tiny_tokenizer, out_dir, steps: int, **training):
    """The tiny recipe trained `steps` steps with these training.* settings, logging every
    steps // 5: (the run, its train-loss curve)."""
    overrides = {"training.output_dir": str(out_dir), "training.progress": False, "training.tensorboard": False, "training.max_steps": steps,
                 "training.log_every": steps // 5, "training.eval_every": steps, "training.save_every": steps}
    recipe = load_pretrain_recipe("pretrain/tiny.yaml", {"tokenizer": str(tiny_tokenizer), **overrides, **{f"training.{k}": v for k, v in training.items()}})
    recipe.data.files = [str(p) for p in jet_files]
    run = build_pretraining(recipe)
    result = run.trainer.train()
    return run, np.array([row["train/loss"] for row in result.history if "train/loss" in row])


def test_bf16_autocast_follows_the_fp32_loss_curve(jet_files, tiny_tokenizer, tmp_path):
    """training.mixed_precision: bf16 (fp32 master weights) learns as fp32 does over a short run."""
    _, fp32 = _short_run(jet_files, tiny_tokenizer, tmp_path / "no", 30, mixed_precision="no")
    _, bf16 = _short_run(jet_files, tiny_tokenizer, tmp_path / "bf16", 30, mixed_precision="bf16")
    assert fp32[-1] < fp32[0] - 0.3  # it learns at all
    assert not np.array_equal(fp32, bf16)  # autocast really ran
    np.testing.assert_allclose(bf16, fp32, rtol=0.02)


@pytest.mark.parametrize("multiple", [1, 8])
def test_compiled_blocks_follow_the_eager_loss_curve_and_save_the_same_weights(jet_files, tiny_tokenizer, tmp_path, multiple):
    """training.compile_blocks: torch.compile of each transformer block learns as eager does, and
    the bundle's weights carry the eager model's names (it loads anywhere, compiled or not); with
    training.pad_to_multiple_of the batches come in multiples of it (static shapes, compiled once each)."""
    from safetensors.torch import load_file

    curves, keys = {}, {}
    for compiled in (False, True):
        run, curves[compiled] = _short_run(jet_files, tiny_tokenizer, tmp_path / str(compiled), 10, compile_blocks=compiled, pad_to_multiple_of=multiple)
        if multiple > 1:
            longest = run.config.max_sequence_length  # 66: padding stops at the model's positions
            assert all(batch["input_ids"].shape[1] % multiple == 0 or batch["input_ids"].shape[1] == longest for batch in run.trainer.train_loader)
        blocks = [m for m in run.trainer.unwrapped_model().modules() if type(m).__name__ == "TransformerBlock"]
        assert blocks and all((m._compiled_call_impl is not None) == compiled for m in blocks)  # nn.Module.compile ran
        keys[compiled] = sorted(load_file(run.trainer.export(tmp_path / f"bundle-{compiled}") / "model.safetensors"))
    assert keys[True] == keys[False]
    np.testing.assert_allclose(curves[True], curves[False], rtol=1e-3)


def test_pretraining_with_particle_features_feeds_them_to_fine_tuning(jet_files, tiny_tokenizer, tmp_path):
    """A hybrid backbone (pretrain/release_hybrid.yaml): continuous features beside the tokens in
    pretraining, learnt there (not left at their zero start), kept in the bundle, and fine-tuning
    takes the same features; sampling refuses such a model in one message."""
    import torch
    from safetensors.torch import load_file

    from foundation.pipelines.finetune import finetune, load_finetune_recipe

    features = ["log_pt", "eta_rel", "phi_rel", "charge"]
    recipe = load_pretrain_recipe("pretrain/tiny.yaml", {
        "tokenizer": str(tiny_tokenizer), "particle_features": features, "training.output_dir": str(tmp_path / "pre"),
        "training.progress": False, "training.max_steps": 6, "training.save_every": 6, "training.eval_every": 6,
    })
    recipe.data.files = [str(p) for p in jet_files]
    bundle = pretrain(recipe)
    loaded = load_bundle(bundle)
    assert loaded.data_config["particle_features"] == features and loaded.model.config.num_particle_features == len(features)
    assert load_file(bundle / "model.safetensors")["transformer.feature_proj.weight"].abs().sum() > 0
    from foundation.hub import BundleError
    from foundation.pipelines.generate import load_generator

    with pytest.raises(BundleError, match="token-only"):
        load_generator(bundle)
    tune = load_finetune_recipe("finetune/top_tagging_tiny.yaml", {
        "model": str(bundle), "particle_features": features, "training.output_dir": str(tmp_path / "tune"),
        "training.progress": False, "training.max_steps": 4, "training.save_every": 4, "training.eval_every": 4,
    })
    tune.data.files = [str(p) for p in jet_files]
    tuned = load_file(finetune(tune) / "model.safetensors")
    assert tuned["transformer.feature_proj.weight"].shape == (loaded.model.config.hidden_size, len(features))
    assert not torch.isnan(tuned["transformer.feature_proj.weight"]).any()
