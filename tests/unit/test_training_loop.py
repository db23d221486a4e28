"""The shared training loop on a one-parameter model: training.keep_best (the run ends with the
weights of its best evaluation) and what a resumed run remembers."""

import json

import numpy as np
import pytest
import torch
from transformers.utils import ModelOutput

from foundation.errors import ConfigError
from foundation.training import Trainer, TrainingConfig
from foundation.training import checkpoint as ckpt


class _Scale(torch.nn.Module):
    """y = w x. Training targets pull w to 2, validation targets sit at w = 1, so the
    validation loss falls, then rises again as training goes on: the best weights are mid-run."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.calls = 0

    def forward(self, x, y, **unused):
        self.calls += 1
        prediction = self.w * x
        return ModelOutput(loss=((prediction - y) ** 2).mean(), prediction=prediction)


class _Pairs(torch.utils.data.Dataset):
    def __init__(self, slope: float, n: int = 64):
        self.x = np.linspace(0.5, 1.5, n, dtype=np.float32)
        self.y = slope * self.x

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return {"x": self.x[i], "y": self.y[i]}


def _train(out, keep_best="eval/loss", resume=False, max_steps=40, mode="min", eval_metrics=None, patience=None, learning_rate=0.1, starts_from=None):
    config = TrainingConfig(
        output_dir=str(out), max_steps=max_steps, global_batch_size=16, micro_batch_size=16, learning_rate=learning_rate,
        warmup_steps=0, min_learning_rate_ratio=1.0, weight_decay=0.0, eval_every=2, save_every=20, log_every=2,
        tensorboard=False, progress=False, keep_best=keep_best, keep_best_mode=mode, early_stopping_patience=patience,
    )
    model = _Scale()
    trainer = Trainer(model, _Pairs(2.0), _Pairs(1.0), config, eval_metrics=eval_metrics, starts_from=starts_from)
    return trainer, trainer.train(resume=resume), model


def test_run_ends_with_the_weights_of_its_best_evaluation(tmp_path):
    _, result, model = _train(tmp_path / "run")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["eval/loss"], r["step"]) for r in rows if "eval/loss" in r]
    best_loss, best_step = min(evals)
    assert best_step < 40 and evals[-1][0] > best_loss + 0.05  # the last weights are clearly worse
    assert result.best == {"step": best_step, "metric": "eval/loss", "value": pytest.approx(best_loss)}
    assert abs(model.w.item() - 1.0) < abs(ckpt_w(tmp_path / "run", 40) - 1.0)  # nearer the validation optimum
    assert ckpt.read_best(tmp_path / "run")["step"] == best_step


def test_a_metric_to_maximise_keeps_its_highest_evaluation(tmp_path):
    # Like eval/auc in the fine-tuning recipes: an eval_metrics metric, the higher the better.
    _, result, model = _train(tmp_path / "run", keep_best="eval/closeness", mode="max", eval_metrics=_Closeness)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["eval/closeness"], r["step"]) for r in rows if "eval/closeness" in r]
    best, best_step = max(evals)
    assert evals[-1][0] < best - 0.05 and result.best["step"] == best_step
    assert -abs(model.w.item() - 1.0) == pytest.approx(best, abs=1e-6)


class _Closeness:
    """-|w - 1| from the predictions on the validation pairs (y = x there): an eval_metrics metric."""

    def __init__(self):
        self.deviation, self.x = 0.0, 0.0

    def update(self, batch, output, accelerator):
        self.deviation += (output.prediction - batch["y"]).abs().sum().item()
        self.x += batch["x"].sum().item()

    def compute(self, accelerator):
        return {"closeness": -self.deviation / self.x}


def test_evaluation_runs_the_model_once_per_validation_batch(tmp_path):
    trainer, _, model = _train(tmp_path / "run", max_steps=2, eval_metrics=_Closeness)
    before = model.calls
    metrics = trainer.evaluate()
    assert model.calls - before == 64 // 16  # the loss and the extra metrics come from one pass
    assert metrics["eval/closeness"] == pytest.approx(-abs(model.w.item() - 1.0))


def ckpt_w(out, step):
    from safetensors.torch import load_file

    return load_file(ckpt.step_dir(out, step) / "model.safetensors")["w"].item()


def test_early_stopping_ends_patience_evaluations_after_the_best_with_its_weights(tmp_path):
    _, full, _ = _train(tmp_path / "full")
    best_step = full.best["step"]
    assert best_step + 3 * 2 < 40 and not full.stopped_early
    _, early, model = _train(tmp_path / "early", patience=3)
    assert early.stopped_early and early.step == best_step + 3 * 2  # 3 evaluations (every 2 steps) without a better one
    from safetensors.torch import load_file

    assert early.best == full.best and model.w.item() == pytest.approx(load_file(ckpt.best_weights(tmp_path / "full"))["w"].item())
    assert ckpt.latest_checkpoint(tmp_path / "early") == ckpt.step_dir(tmp_path / "early", early.step)


def test_early_stopping_counter_survives_a_resume(tmp_path):
    _, uninterrupted, _ = _train(tmp_path / "whole", patience=3)
    best_step = uninterrupted.best["step"]
    # Killed one evaluation after the best (the checkpoint holds a count of 1), then resumed.
    _train(tmp_path / "split", patience=3, max_steps=best_step + 2)
    assert ckpt.read_trainer_state(ckpt.step_dir(tmp_path / "split", best_step + 2))["evals_since_best"] == 1
    _, resumed, _ = _train(tmp_path / "split", patience=3, resume=True)
    assert resumed.step == uninterrupted.step and resumed.stopped_early and resumed.best == uninterrupted.best
    # A run that stopped early stays stopped when resumed: no step is trained.
    _, again, model = _train(tmp_path / "split", patience=3, resume=True)
    assert again.step == uninterrupted.step and model.calls == 0


def test_early_stopping_needs_keep_best():
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        TrainingConfig(early_stopping_patience=3)
    with pytest.raises(ConfigError, match="early_stopping_patience"):
        TrainingConfig(keep_best="eval/loss", early_stopping_patience=0)


def test_without_keep_best_the_last_weights_stay(tmp_path):
    _, result, model = _train(tmp_path / "run", keep_best=None)
    assert result.best is None and not ckpt.best_weights(tmp_path / "run").exists()
    assert model.w.item() == pytest.approx(ckpt_w(tmp_path / "run", 40))


def test_resumed_run_remembers_its_best_and_a_fresh_run_forgets_an_old_one(tmp_path):
    _, full, _ = _train(tmp_path / "full")
    _train(tmp_path / "split", max_steps=20)
    _, resumed, model = _train(tmp_path / "split", resume=True)
    assert resumed.best["step"] == full.best["step"]
    stale = ckpt.read_best(tmp_path / "split")
    _, fresh, _ = _train(tmp_path / "split", max_steps=2)  # not resumed: the old best must not win
    assert fresh.best["step"] <= 2 and ckpt.read_best(tmp_path / "split") != stale


def test_unknown_metric_is_named(tmp_path):
    with pytest.raises(ConfigError, match="eval/auc"):
        _train(tmp_path / "run", keep_best="eval/auc")
    with pytest.raises(ConfigError, match="keep_best"):
        TrainingConfig(keep_best="loss")
    # a metric paired with the wrong direction (eval/loss left with the recipes' max) keeps the worst weights
    with pytest.raises(ConfigError, match="keep_best_mode: min"):
        TrainingConfig(keep_best="eval/loss", keep_best_mode="max")
    with pytest.raises(ConfigError, match="keep_best_mode: max"):
        TrainingConfig(keep_best="eval/auc")


def test_resumed_run_reports_the_training_time_of_the_whole_run(tmp_path):
    _, first, _ = _train(tmp_path / "split", max_steps=20)
    _, resumed, _ = _train(tmp_path / "split", resume=True)
    state = ckpt.read_trainer_state(ckpt.step_dir(tmp_path / "split", 40))
    assert state["train_samples"] == 40 * 16
    assert first.seconds < state["train_seconds"] <= resumed.seconds
    assert resumed.samples_per_second == pytest.approx(40 * 16 / resumed.seconds)
    # Resuming a finished run trains nothing and still reports the run's own time, not ~0 s.
    _, again, _ = _train(tmp_path / "split", resume=True)
    assert again.step == 40 and again.seconds == pytest.approx(resumed.seconds, abs=0.05)
    assert again.samples_per_second == pytest.approx(40 * 16 / again.seconds)


def test_auto_mixed_precision_follows_the_hardware(monkeypatch):
    from foundation.training import distributed

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: True)
    assert distributed.resolve_mixed_precision("auto") == "bf16"
    monkeypatch.setattr(distributed, "cpu_has_native_bf16", lambda: False)
    assert distributed.resolve_mixed_precision("auto") == "no"
    assert distributed.resolve_mixed_precision("fp16") == "fp16"
    with pytest.raises(ConfigError, match="mixed_precision"):
        TrainingConfig(mixed_precision="fp8")


def test_a_diverging_run_stops_with_its_folder_and_what_to_change(tmp_path):
    """A NaN loss ends the run with one message naming the run and the learning rate, not a bare FloatingPointError."""
    from foundation.errors import TrainingDiverged

    config = TrainingConfig(
        output_dir=str(tmp_path / "run"), max_steps=40, global_batch_size=16, micro_batch_size=16, learning_rate=1.0,
        warmup_steps=0, max_grad_norm=0, eval_every=40, save_every=40, log_every=2, tensorboard=False, progress=False,
    )
    diverging = _Pairs(2.0)
    diverging.y = diverging.y * np.float32("inf")
    trainer = Trainer(_Scale(), diverging, None, config)
    with pytest.raises(TrainingDiverged, match=r"run: the training loss became (nan|inf) at step 2; lower training.learning_rate"):
        trainer.train()


def test_a_resume_with_other_settings_or_other_starting_weights_is_refused(tmp_path):
    run = tmp_path / "run"
    _train(run, max_steps=20, starts_from={"weights_sha256": "aaa"})
    checkpoint = ckpt.latest_checkpoint(run)
    # what it trains with or starts from: refused, naming the checkpoint, the key and both values
    with pytest.raises(ConfigError, match=r"step-000020, key 'training.learning_rate': .*0.1 there, 0.05 now"):
        _train(run, resume=True, learning_rate=0.05, starts_from={"weights_sha256": "aaa"})
    with pytest.raises(ConfigError, match=r"key 'starts_from.weights_sha256': .*'aaa' there, 'bbb' now"):
        _train(run, resume=True, starts_from={"weights_sha256": "bbb"})
    assert ckpt.latest_checkpoint(run) == checkpoint  # nothing trained, nothing written
    # how long it trains: a resume continues it
    _, resumed, _ = _train(run, resume=True, max_steps=40, starts_from={"weights_sha256": "aaa"})
    assert resumed.step == 40


def test_a_checkpoint_written_before_run_identities_still_resumes(tmp_path):
    run = tmp_path / "run"
    _train(run, max_steps=20)
    state_file = ckpt.latest_checkpoint(run) / ckpt.TRAINER_STATE
    state = json.loads(state_file.read_text())
    del state["run_identity"]
    state_file.write_text(json.dumps(state))
    _, resumed, _ = _train(run, resume=True, learning_rate=0.05)
    assert resumed.step == 40


def test_a_run_saved_before_a_field_existed_resumes_at_its_as_before_value():
    """A checkpoint whose recipe lacks head_only_steps (added since) resumes with 0, the old behaviour,
    and is refused with any other value."""
    saved = ckpt.run_identity({"mode": "full", "training": {"learning_rate": 1e-4}})
    ckpt.check_same_run("ckpt", saved, ckpt.run_identity({"mode": "full", "head_only_steps": 0, "training": {"learning_rate": 1e-4}}))
    with pytest.raises(ConfigError, match="head_only_steps 0 there, 200 now"):
        ckpt.check_same_run("ckpt", saved, ckpt.run_identity({"mode": "full", "head_only_steps": 200, "training": {"learning_rate": 1e-4}}))


def test_fields_added_since_leave_a_recipe_only_at_their_as_before_value(monkeypatch):
    """Top-level and dotted (nested) fields alike; any other value stays, and the input is not changed."""
    monkeypatch.setattr(ckpt, "FIELDS_ADDED_SINCE", {"head_only_steps": 0, "training.new_knob": False})
    recipe = {"mode": "full", "head_only_steps": 0, "training": {"learning_rate": 1e-4, "new_knob": False}}
    assert ckpt.without_fields_at_as_before(recipe) == {"mode": "full", "training": {"learning_rate": 1e-4}}
    assert recipe["head_only_steps"] == 0 and recipe["training"]["new_knob"] is False
    changed = {"mode": "full", "head_only_steps": 200, "training": {"new_knob": True}}
    assert ckpt.without_fields_at_as_before(changed) == changed
