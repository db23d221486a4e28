"""The training loop: accelerate + (optionally) DeepSpeed, resumable, evaluated, logged.

Used unchanged by the tokenizer, pretraining and fine-tuning: a model whose forward returns an
output with `.loss`, a training and a validation dataset, and a TrainingConfig.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import resource
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
import yaml
from safetensors import SafetensorError
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from foundation.data.dataset import BlockShuffleSampler, LengthGroupedSampler, collate_batch
from foundation.errors import ConfigError, DataFormatError, TrainingDiverged, TrainingInterrupted, one_line
from foundation.layers import TransformerBlock
from foundation.training import checkpoint as ckpt
from foundation.training.config import TrainingConfig
from foundation.training.distributed import build_accelerator, finish_trackers
from foundation.training.inputs import PadToMultiple, model_input_names, select_inputs

logger = logging.getLogger(__name__)


class _TiedHeadNotice(logging.Filter):
    """Drops accelerate's warning, at every checkpoint, that it left `lm_head.weight` out of the
    saved state: the next-token head is tied to the token embedding (transformers' tying), so the
    file holds it once and loading ties it again (exact resume is tested). Any other shared tensor
    still warns."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Removed shared tensor {'lm_head.weight'} while saving" not in record.getMessage()


logging.getLogger("accelerate.utils.other").addFilter(_TiedHeadNotice())


class EvalMetrics(Protocol):
    """Metrics beyond the model's scalar outputs, taken during the trainer's one pass over the
    validation jets (so each validation batch goes through the model once per evaluation)."""

    def update(self, batch: dict, output, accelerator) -> None:
        """One validation batch and the model's output on it (every process calls this)."""

    def compute(self, accelerator) -> dict:
        """The metrics over all batches seen, named without the eval/ prefix."""


@dataclass
class TrainResult:
    step: int
    output_dir: Path
    history: list[dict] = field(default_factory=list)  # one row per logged or evaluated step
    final_metrics: dict = field(default_factory=dict)
    seconds: float = 0.0  # training time of the whole run (all resumes), without evaluation and checkpointing
    samples_per_second: float = 0.0
    tokens_per_second: float = 0.0
    peak_memory_mb: float = 0.0
    world_size: int = 1
    best: dict | None = None  # {"step", "metric", "value"} of the weights kept (training.keep_best)
    stopped_early: bool = False  # ended by training.early_stopping_patience before max_steps

    def summary(self) -> dict:
        """What a run folder's train_summary.json holds."""
        return {
            "steps": self.step,
            "seconds": self.seconds,
            "jets_per_second": self.samples_per_second,
            "tokens_per_second": self.tokens_per_second,
            "peak_memory_mb": self.peak_memory_mb,
            "world_size": self.world_size,
            "final": self.final_metrics,
            "best": self.best,
            "stopped_early": self.stopped_early,
        }


# Steps between the ranks' checks for SIGTERM (several processes; one process checks every step).
STOP_CHECK_EVERY = 10


@dataclass
class TrainerState:
    """Where a run stands: with the model, optimizer and RNG states (accelerate's save_state) it is
    what a checkpoint holds, as trainer_state.json (Trainer.state_dict / load_state_dict)."""

    step: int = 0  # optimizer steps taken
    epoch: int = 0
    batches_in_epoch: int = 0  # micro-batches of this epoch this process has consumed
    samples_seen: int = 0  # jets trained on, all processes
    best: dict | None = None  # {"step", "metric", "value"} of the best evaluation (training.keep_best)
    evals_since_best: int = 0  # evaluations since keep_best last improved (early stopping)
    # SIGTERM came at an evaluation step: the checkpoint was written without that evaluation (a
    # launcher's grace period, torchrun's 30 s, is shorter than a validation pass), and the resumed
    # run makes it first, so its metrics and kept weights are those of an uninterrupted run.
    evaluation_pending: bool = False
    # Training time and work of the earlier invocations of a resumed run, so that resumes add up
    # (evaluation and checkpointing left out). Checkpoints written before these were recorded carry
    # nothing: the count starts at the resume.
    earlier_seconds: float = 0.0
    earlier_samples: int = 0
    earlier_tokens: float = 0.0  # real tokens, all processes


@dataclass
class _Invocation:
    """What one call of Trainer.train() has done so far (a resumed run adds it to TrainerState's totals)."""

    start_samples: int  # samples_seen when this call began
    start: float = field(default_factory=time.perf_counter)
    overhead: float = 0.0  # seconds in evaluation and checkpointing: not training throughput
    local_tokens: torch.Tensor | int = 0  # real tokens this process trained on (a device tensor once counted)
    window_loss: torch.Tensor | None = None  # summed micro-batch losses since the last log line
    window_batches: int = 0

    def seconds(self) -> float:
        return time.perf_counter() - self.start - self.overhead

    @contextlib.contextmanager
    def overhead_time(self):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.overhead += time.perf_counter() - t0


def peak_memory_mb() -> float:
    if torch.cuda.is_available():
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# Graphs a statically compiled block may keep: (lengths: e.g. 9 multiples of 16 up to 130) x (batch
# sizes: the micro-batch, a last partial one, evaluation's) x (training, evaluation).
STATIC_SHAPE_GRAPHS = 64


def compile_transformer_blocks(model: torch.nn.Module, static_shapes: bool = False) -> int:
    """torch.compile each TransformerBlock of the model in place; returns how many.

    Per block rather than the whole model: the losses around the backbone index by data-dependent
    masks (graph breaks), while a block is one static graph that every layer reuses. In place
    (nn.Module.compile), so state-dict keys, checkpoints and bundles are those of the eager model.
    `static_shapes` (batches padded to a few lengths, training.pad_to_multiple_of): one compiled
    graph per length, never a dynamic-shape one; dynamo's recompile limit (8 by default) is raised
    so that every length, batch size and train/eval mode keeps its own graph.
    """
    blocks = [module for module in model.modules() if isinstance(module, TransformerBlock)]
    if static_shapes:
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, STATIC_SHAPE_GRAPHS)
    for block in blocks:
        block.compile(dynamic=False if static_shapes else None)
    return len(blocks)


def default_param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on matrices only (not on biases, norms, embeddings of size-1 dims)."""
    decay, no_decay = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [
        {"params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
    ]


def _scalar_outputs(output) -> dict[str, torch.Tensor]:
    """The 0-dim tensors of a ModelOutput (loss and its parts, accuracies)."""
    return {k: v.detach().float() for k, v in output.items() if isinstance(v, torch.Tensor) and v.ndim == 0}


def _count_tokens(batch: dict) -> torch.Tensor | int:
    """Real tokens (or particles) of a batch, as a tensor on the batch's device: no host sync per step."""
    for key in ("attention_mask", "mask"):
        if key in batch:
            return batch[key].sum()
    return 0


class Trainer:
    def __init__(
        self,
        model: torch.nn.Module,
        train_dataset: Dataset,
        eval_dataset: Dataset | None,
        config: TrainingConfig,
        recipe: dict | None = None,
        collate_fn: Callable = collate_batch,
        param_groups: list[dict] | None = None,
        eval_metrics: Callable[[], EvalMetrics] | None = None,
        derive_metrics: Callable[[dict], dict] | None = None,
        shuffle_block_jets: int = 4,
        num_workers: int = 0,
        in_memory_mib: float = 0,
        starts_from: dict | None = None,
    ):
        self.config = config
        self.recipe = recipe or {}
        # Saved with every checkpoint and compared on resume (ckpt.check_same_run). starts_from: what
        # the run starts from that the recipe only names, e.g. {"weights_sha256": ...} of a pretrained bundle.
        self.identity = ckpt.run_identity({**self.recipe, "training": dataclasses.asdict(config)}, starts_from)
        self.eval_metrics = eval_metrics  # a fresh EvalMetrics for each evaluation
        self.derive_metrics = derive_metrics
        if config.threads_per_process:
            torch.set_num_threads(config.threads_per_process)
        self.accelerator = build_accelerator(config)
        acc = self.accelerator
        self.output_dir = Path(config.output_dir)
        if acc.is_main_process:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        if config.gradient_checkpointing and hasattr(model, "gradient_checkpointing_enable"):
            model.gradient_checkpointing_enable()
        if config.compile_blocks:
            compile_transformer_blocks(model, static_shapes=config.pad_to_multiple_of > 1)
        if config.pad_to_multiple_of > 1:
            longest = getattr(getattr(model, "config", None), "max_sequence_length", None)  # positions the model has
            collate_fn = PadToMultiple(collate_fn, config.pad_to_multiple_of, longest)
        for dataset in (train_dataset, eval_dataset):
            if in_memory_mib and hasattr(dataset, "preload"):
                dataset.preload(in_memory_mib)
        accumulation = config.gradient_accumulation_steps(acc.num_processes)  # refuses a batch size that does not divide
        if config.group_by_length and hasattr(train_dataset, "lengths"):
            per_step = acc.num_processes * accumulation  # the micro-batches of one optimizer step
            self.sampler = LengthGroupedSampler(train_dataset.lengths(), config.micro_batch_size, seed=config.seed, batches_per_step=per_step)
        else:
            self.sampler = BlockShuffleSampler(len(train_dataset), shuffle_block_jets, seed=config.seed)
        train_loader = DataLoader(
            train_dataset,
            batch_size=config.micro_batch_size,
            sampler=self.sampler,
            collate_fn=collate_fn,
            num_workers=num_workers,
            drop_last=len(train_dataset) >= config.micro_batch_size * acc.num_processes,
            persistent_workers=num_workers > 0,
            # Each iter(DataLoader) draws a seed; from its own generator it leaves the global RNG
            # (dropout, dead-code sampling) alone, so a resumed run draws the same numbers.
            generator=torch.Generator().manual_seed(config.seed),
        )
        eval_loader = None
        if eval_dataset is not None and len(eval_dataset):
            eval_loader = DataLoader(
                eval_dataset,
                batch_size=config.micro_batch_size,
                shuffle=False,
                collate_fn=collate_fn,
                num_workers=num_workers,
                generator=torch.Generator().manual_seed(config.seed),
            )
        groups = param_groups if param_groups is not None else default_param_groups(model, config.weight_decay)
        # Fused AdamW (one kernel over all parameters: ~6x faster on a CPU core than the per-tensor
        # loop); DeepSpeed steps its own partitioned copies, so it keeps the default implementation.
        fused = acc.state.deepspeed_plugin is None and all(p.device.type in ("cpu", "cuda") for g in groups for p in g["params"])
        optimizer = torch.optim.AdamW(
            groups, lr=config.learning_rate, betas=(config.adam_beta1, config.adam_beta2), weight_decay=config.weight_decay, fused=fused or None
        )
        self.model, self.optimizer, self.train_loader = acc.prepare(model, optimizer, train_loader)
        self.eval_loader = acc.prepare(eval_loader) if eval_loader is not None else None
        self.input_names = model_input_names(self.model)  # the batch columns forward takes, read once
        plugin = acc.state.deepspeed_plugin
        if config.keep_best and plugin is not None and plugin.zero_stage == 3:
            raise ConfigError(None, "training.keep_best", "is not supported with DeepSpeed ZeRO-3 (weights are sharded); leave it unset")
        if config.keep_best and self.eval_loader is None:
            raise ConfigError(None, "training.keep_best", "needs validation jets to evaluate on")
        self._stop_requested = False
        self.state = TrainerState()
        if config.tensorboard:
            run_config = {k: v for k, v in vars(config).items() if isinstance(v, (int, float, str, bool))}
            acc.init_trackers("run", config=run_config)

    # ----- learning rate -----

    @classmethod
    def from_recipe(cls, model: torch.nn.Module, recipe, train_dataset: Dataset, eval_dataset: Dataset | None, data=None, **kwargs) -> Trainer:
        """The trainer a recipe describes: its `training` section, the loader settings of its data
        section (or of `data`, when the pipeline adjusted it), and the whole recipe saved with
        every checkpoint."""
        data = data or recipe.data
        return cls(
            model, train_dataset, eval_dataset, recipe.training, recipe=dataclasses.asdict(recipe),
            shuffle_block_jets=data.shuffle_block_jets, num_workers=data.num_workers, in_memory_mib=data.in_memory_mib, **kwargs,
        )

    def _set_learning_rate(self, step: int) -> float:
        lr = self.config.learning_rate * self.config.learning_rate_factor(step)
        for group in self.optimizer.param_groups:
            group["lr"] = lr * group.get("lr_scale", 1.0) * self.config.delayed_start_factor(step, group.get("start_step", 0))
        return lr

    # ----- state and checkpoints -----
    def state_dict(self) -> dict:
        """What trainer_state.json holds. Every process calls it (the token count is summed over them)."""
        acc, state = self.accelerator, self.state
        seconds, samples, tokens = self._run_totals()
        return {
            "step": state.step,
            "epoch": state.epoch,
            # micro-batches of this epoch consumed by all processes together, so a resume with
            # another number of processes starts at the same place in the data
            "global_batches_in_epoch": state.batches_in_epoch * acc.num_processes,
            "samples_seen": state.samples_seen,
            "world_size": acc.num_processes,
            "micro_batch_size": self.config.micro_batch_size,
            # so that a resumed run reports the training time of the whole run, not of its last part
            "train_seconds": seconds,
            "train_samples": samples,
            "train_tokens": tokens,
            "evals_since_best": state.evals_since_best,
            "evaluation_pending": state.evaluation_pending,
            "run_identity": self.identity,
        }

    def _run_totals(self) -> tuple[float, int, float]:
        """Training seconds, jets and real tokens (all processes) of the whole run, earlier invocations
        included. Every process calls it: the token count is a collective."""
        acc, state, run = self.accelerator, self.state, self._run
        tokens = acc.reduce(torch.as_tensor(run.local_tokens, device=acc.device).float(), reduction="sum").item()
        return state.earlier_seconds + run.seconds(), state.earlier_samples + state.samples_seen - run.start_samples, state.earlier_tokens + tokens

    def load_state_dict(self, trainer_state: dict) -> None:
        """The inverse of state_dict, for this run's number of processes."""
        self.state = TrainerState(
            step=trainer_state["step"],
            epoch=trainer_state.get("epoch", 0),
            batches_in_epoch=trainer_state.get("global_batches_in_epoch", 0) // self.accelerator.num_processes,
            samples_seen=trainer_state.get("samples_seen", 0),
            earlier_seconds=trainer_state.get("train_seconds", 0.0),
            earlier_samples=trainer_state.get("train_samples", 0),
            earlier_tokens=trainer_state.get("train_tokens", 0.0),
            evals_since_best=trainer_state.get("evals_since_best", 0),
            evaluation_pending=trainer_state.get("evaluation_pending", False),
        )

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        trainer_state = self.state_dict()
        tmp = ckpt.temporary_dir(self.output_dir, self.state.step)
        acc.wait_for_everyone()
        acc.save_state(str(tmp))
        acc.wait_for_everyone()
        final = ckpt.step_dir(self.output_dir, self.state.step)
        if acc.is_main_process:
            (tmp / "recipe.yaml").write_text(yaml.safe_dump(self.recipe, sort_keys=False))
            final = ckpt.finalize(self.output_dir, self.state.step, trainer_state, self.config.keep_checkpoints)
            logger.info("saved checkpoint %s", final)
        acc.wait_for_everyone()
        return final

    def _resume_from(self, resume: bool | str) -> dict:
        """Loads the checkpoint to resume from into the model, optimizer and RNGs; returns its trainer state ({} if none)."""
        if not resume:
            return {}
        path = Path(resume) if isinstance(resume, str) else ckpt.latest_checkpoint(self.output_dir)
        if path is None:
            logger.info("no checkpoint in %s: starting from scratch", self.output_dir)
            return {}
        if not (path / ckpt.TRAINER_STATE).exists():
            raise FileNotFoundError(f"{path} is not a complete checkpoint (no {ckpt.TRAINER_STATE})")
        state = ckpt.read_trainer_state(path)
        if state.get("micro_batch_size") != self.config.micro_batch_size:
            raise ConfigError(
                None, "training.micro_batch_size",
                f"is {self.config.micro_batch_size}, but {path} was written with {state.get('micro_batch_size')}; the data position would not match",
            )
        ckpt.check_same_run(path, state.get("run_identity"), self.identity)
        try:
            self.accelerator.load_state(str(path))
        except (OSError, ValueError, RuntimeError, SafetensorError) as err:  # a truncated or damaged file of the checkpoint
            raise DataFormatError(path, None, f"the checkpoint cannot be loaded ({type(err).__name__}: {one_line(err)}); remove it to resume from an earlier one") from None
        logger.info("resumed from %s (step %d)", path, state["step"])
        return state

    # ----- best weights -----
    def _keep_if_best(self, metrics: dict, step: int, best: dict | None) -> dict | None:
        """Save the weights if `metrics` beat `best` on training.keep_best; returns the new best."""
        name, mode = self.config.keep_best, self.config.keep_best_mode
        if name not in metrics:
            raise ConfigError(None, "training.keep_best", f"{name!r} is not an evaluation metric of this run; it has {sorted(k for k in metrics if k.startswith('eval/'))}")
        value = float(metrics[name])
        if best is not None and not (value < best["value"] if mode == "min" else value > best["value"]):
            return best
        if self.accelerator.is_main_process:
            ckpt.save_best(self.output_dir, self.unwrapped_model(), step, name, value)
        self.accelerator.wait_for_everyone()
        return {"step": step, "metric": name, "value": value}

    def should_stop(self) -> bool:
        """Early stopping: keep_best has not improved for training.early_stopping_patience evaluations,
        and every parameter group has trained for that many evaluations (a backbone joining at its
        start_step gets its chance even if the head alone had stopped improving)."""
        patience = self.config.early_stopping_patience
        if patience is None or self.state.evals_since_best < patience:
            return False
        last_start = max((group.get("start_step", 0) for group in self.optimizer.param_groups), default=0)
        return self.state.step >= last_start + patience * self.config.eval_every

    # ----- evaluation -----
    @torch.no_grad()
    def evaluate(self) -> dict:
        if self.eval_loader is None:
            return {}
        acc = self.accelerator
        self.model.eval()
        extra = self.eval_metrics() if self.eval_metrics is not None else None
        sums: dict[str, torch.Tensor] = {}
        count = torch.zeros((), device=acc.device)
        for i, batch in enumerate(self.eval_loader):
            if self.config.eval_batches is not None and i >= self.config.eval_batches:
                break
            output = self.model(**select_inputs(self.input_names, batch))
            if extra is not None:
                extra.update(batch, output, acc)
            n = torch.tensor(float(next(iter(batch.values())).shape[0]), device=acc.device)
            for k, v in _scalar_outputs(output).items():
                sums[k] = sums.get(k, torch.zeros((), device=acc.device)) + v * n
            count += n
        metrics = {}
        if sums:
            keys = sorted(sums)
            stacked = acc.reduce(torch.stack([sums[k] for k in keys] + [count]), reduction="sum")
            metrics = {f"eval/{k}": (stacked[i] / stacked[-1]).item() for i, k in enumerate(keys)}
        if extra is not None:
            metrics.update({f"eval/{k}": v for k, v in extra.compute(acc).items()})
        if self.derive_metrics is not None:
            metrics.update(self.derive_metrics(metrics))
        self.model.train()
        return metrics

    # ----- the loop -----
    def _on_sigterm(self, signum, frame) -> None:
        self._stop_requested = True

    def should_log(self, step: int) -> bool:
        return step % self.config.log_every == 0 or step == self.config.max_steps

    def should_evaluate(self, step: int) -> bool:
        return step % self.config.eval_every == 0 or step == self.config.max_steps

    def should_save(self, step: int) -> bool:
        return step % self.config.save_every == 0 or step == self.config.max_steps

    def _drop_gradients_of_waiting_groups(self) -> None:
        """Parameter groups whose "start_step" is still ahead learn nothing yet (zero rate); without
        their gradients they neither count in the clipped norm nor fill AdamW's moments before they
        join. (Under DeepSpeed the engine holds the gradients: the zero rate alone keeps them fixed.)"""
        for group in self.optimizer.param_groups:
            if group.get("start_step", 0) > self.state.step:
                for param in group["params"]:
                    param.grad = None

    def train_step(self, batch: dict) -> torch.Tensor:
        """One micro-batch: forward, backward and, once gradients are synchronised (the last micro-batch
        of an accumulation), clipping and the optimizer step. Returns the detached loss."""
        acc, cfg = self.accelerator, self.config
        with acc.accumulate(self.model):
            output = self.model(**select_inputs(self.input_names, batch))
            acc.backward(output.loss)
            if acc.sync_gradients:
                self._drop_gradients_of_waiting_groups()
            if acc.sync_gradients and cfg.max_grad_norm > 0:
                acc.clip_grad_norm_(self.model.parameters(), cfg.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
        self.state.batches_in_epoch += 1
        self._run.local_tokens += _count_tokens(batch)
        return output.loss.detach().float()

    def train(self, resume: bool | str = False) -> TrainResult:
        """Train to training.max_steps (from the latest checkpoint with resume=True, or the one given)."""
        self._begin(resume)
        previous = signal.signal(signal.SIGTERM, self._on_sigterm)
        interrupted = False
        try:
            # a resumed run that had stopped early stays stopped
            while self.state.step < self.config.max_steps and not interrupted and not self.should_stop():
                for batch in self._epoch_batches():
                    self._add_to_window(self.train_step(batch))
                    if not self.accelerator.sync_gradients:
                        continue  # accumulating: no optimizer step yet
                    interrupted = self._end_optimizer_step()
                    if interrupted or self.state.step >= self.config.max_steps or self.should_stop():
                        break
                else:
                    self.state.epoch += 1
                    self.state.batches_in_epoch = 0
        finally:
            signal.signal(signal.SIGTERM, previous)
            self._bar.close()
        if interrupted:
            raise TrainingInterrupted(self.output_dir, self.state.step)
        return self._finish()

    def _begin(self, resume: bool | str) -> None:
        """State of a new or resumed run, progress bar and counters of this invocation."""
        acc, cfg = self.accelerator, self.config
        if acc.is_main_process:
            ckpt.clean_incomplete(self.output_dir)
        acc.wait_for_everyone()
        self.state = TrainerState()
        checkpoint_state = self._resume_from(resume)
        if checkpoint_state:
            self.load_state_dict(checkpoint_state)
        if cfg.keep_best:
            if checkpoint_state:
                self.state.best = ckpt.read_best(self.output_dir)
            elif acc.is_main_process:
                ckpt.best_weights(self.output_dir).unlink(missing_ok=True)  # an earlier run's, not this one's
        self._run = _Invocation(start_samples=self.state.samples_seen)
        self._history: list[dict] = []
        self._bar = tqdm(
            total=cfg.max_steps, initial=self.state.step, desc="training", unit="step", disable=not (cfg.progress and acc.is_main_process)
        )
        if self.state.evaluation_pending:  # the evaluation a SIGTERM put off (TrainerState.evaluation_pending)
            self._record({**self._evaluate_and_keep_best(), "step": self.state.step})
        self.model.train()
        self._learning_rate = self._set_learning_rate(self.state.step)

    def _epoch_batches(self):
        """The training loader for the current epoch, past the batches this epoch already consumed (after a resume)."""
        skip = self.state.batches_in_epoch
        loader = self.accelerator.skip_first_batches(self.train_loader, skip) if skip else self.train_loader
        # accelerate's loader re-applies its own iteration count as the sampler epoch on every
        # __iter__, so set it on the loader actually iterated (also after a resume).
        loader.set_epoch(self.state.epoch)
        return loader

    def _add_to_window(self, loss: torch.Tensor) -> None:
        run = self._run
        run.window_loss = loss if run.window_loss is None else run.window_loss + loss
        run.window_batches += 1

    def _end_optimizer_step(self) -> bool:
        """Bookkeeping after an optimizer step: log, evaluate, checkpoint. True if the run must stop (SIGTERM)."""
        state, cfg = self.state, self.config
        state.step += 1
        state.samples_seen += cfg.global_batch_size
        row = self._training_metrics() if self.should_log(state.step) else {}
        stop = self._stop_agreed()
        if self.should_evaluate(state.step):
            if stop:
                state.evaluation_pending = True  # saved now, evaluated first when resumed
            else:
                row.update(self._evaluate_and_keep_best())
        if row:
            self._record({**row, "step": state.step})
        self._bar.update(1)
        self._learning_rate = self._set_learning_rate(state.step)
        # should_stop is the same on every rank: evaluation metrics are reduced
        if self.should_save(state.step) or stop or self.should_stop():
            with self._run.overhead_time():
                self.save_checkpoint()
        return stop

    def _evaluate_and_keep_best(self) -> dict:
        """The evaluation of this step, and the best weights and early-stopping count it updates."""
        state = self.state
        with self._run.overhead_time():
            row = self.evaluate()
            if self.config.keep_best:
                kept = self._keep_if_best(row, state.step, state.best)
                state.evals_since_best = 0 if kept is not state.best else state.evals_since_best + 1
                state.best = kept
        state.evaluation_pending = False
        return row

    def _training_metrics(self) -> dict:
        """Mean training loss since the last log line (over processes), learning rate and jets/s.
        The only host sync of the step, so it happens at log steps only."""
        run = self._run
        mean = run.window_loss / max(run.window_batches, 1)
        loss = self.accelerator.reduce(mean, reduction="mean").item()
        if not math.isfinite(loss):
            raise TrainingDiverged(self.output_dir, self.state.step, loss)
        run.window_loss, run.window_batches = None, 0
        jets_per_second = (self.state.samples_seen - run.start_samples) / run.seconds()
        self._bar.set_postfix(loss=f"{loss:.4f}", jets_per_s=f"{jets_per_second:.0f}")
        return {"train/loss": loss, "train/lr": self._learning_rate, "train/samples_per_second": jets_per_second}

    def _record(self, row: dict) -> None:
        """One row of metrics: history, TensorBoard and metrics.jsonl."""
        self._history.append(row)
        self.accelerator.log({k: v for k, v in row.items() if k != "step"}, step=row["step"])
        if self.accelerator.is_main_process:
            with open(self.output_dir / "metrics.jsonl", "a") as fh:
                fh.write(json.dumps(row) + "\n")

    def _finish(self) -> TrainResult:
        """End of a complete run: the best weights if kept, throughput of the whole run."""
        acc, state = self.accelerator, self.state
        if state.best is not None:
            acc.wait_for_everyone()
            ckpt.load_best(self.output_dir, self.unwrapped_model())
            logger.info("ending with the weights of step %d (%s = %.5g), the best evaluation", state.best["step"], state.best["metric"], state.best["value"])
        seconds, samples, tokens = self._run_totals()
        finish_trackers(acc)
        return TrainResult(
            step=state.step,
            output_dir=self.output_dir,
            history=self._history,
            final_metrics=self._history[-1] if self._history else {},
            seconds=seconds,
            samples_per_second=samples / seconds if seconds > 0 else 0.0,
            tokens_per_second=tokens / seconds if seconds > 0 else 0.0,
            peak_memory_mb=peak_memory_mb(),
            world_size=acc.num_processes,
            best=state.best,
            stopped_early=self.should_stop(),
        )

    def _stop_agreed(self) -> bool:
        """True on every rank if any rank got SIGTERM (all must save the same checkpoint). With several
        processes the ranks agree every STOP_CHECK_EVERY steps and at log and save steps only: each
        check is a collective and a host sync, and a launcher kills what has not stopped within its
        grace period (torchrun: 30 s after its SIGTERM), which log_every steps can outlast on a CPU."""
        acc = self.accelerator
        if acc.num_processes == 1:
            return self._stop_requested
        step = self.state.step
        if not (step % STOP_CHECK_EVERY == 0 or self.should_log(step) or self.should_save(step)):
            return False
        flag = torch.tensor(1.0 if self._stop_requested else 0.0, device=acc.device)
        return bool(acc.reduce(flag, reduction="sum").item() > 0)

    # ----- export -----
    def export(self, directory: str | Path) -> Path | None:
        """save_pretrained of the trained model (full weights, also under ZeRO-3); main process writes."""
        acc = self.accelerator
        directory = Path(directory)
        state_dict = acc.get_state_dict(self.model)  # every rank takes part under ZeRO-3
        if acc.is_main_process:
            model = acc.unwrap_model(self.model)
            model.save_pretrained(directory, state_dict=state_dict, safe_serialization=True)
        acc.wait_for_everyone()
        return directory if acc.is_main_process else None

    def unwrapped_model(self) -> torch.nn.Module:
        return self.accelerator.unwrap_model(self.model)
