"""Training hyper-parameters shared by every recipe (the `training:` section)."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Literal

from foundation.config import check

# Largest learning rate accepted: above 1, AdamW (steps of about lr per weight) cannot train these
# models; such a value is a typo, refused at loading rather than found as a NaN loss at step 5.
MAX_LEARNING_RATE = 1.0

# Metrics whose better direction is known, so a keep_best_mode against it is refused.
_KNOWN_DIRECTIONS = {"loss": "min", "auc": "max", "accuracy": "max", "code_usage": "max", "jet_mass_relative_rms": "min"}


@dataclass
class TrainingConfig:
    """The `training:` section of every recipe: the loop shared by tokenizer, pretraining and fine-tuning."""

    output_dir: str = "checkpoints/run"  # run folder: checkpoints/, metrics.jsonl, logs/, the exported bundle
    seed: int = 0  # seeds weights, data order and masks; the same seed and processes give the same run
    max_steps: int = 1000  # optimizer steps
    global_batch_size: int = 256  # jets per optimizer step, over all processes
    micro_batch_size: int = 64  # jets per forward pass on one process (accumulation is derived from both)
    learning_rate: float = 3e-4  # peak learning rate of AdamW, reached after warmup_steps
    min_learning_rate_ratio: float = 0.1  # cosine decays to learning_rate * this
    warmup_steps: int = 100  # linear warmup from learning_rate / warmup_steps
    weight_decay: float = 0.01  # AdamW's decoupled weight decay (not on biases and norms)
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float = 1.0  # clip the global gradient norm to this; 0 disables clipping
    eval_every: int = 200  # steps between evaluations on the validation jets (and at the last step)
    eval_batches: int | None = None  # None: the whole validation set
    save_every: int = 500  # steps between checkpoints (and at the last step and on SIGTERM)
    keep_checkpoints: int = 2  # complete checkpoints kept; older ones are deleted
    log_every: int = 10  # steps between log lines, metrics.jsonl rows and TensorBoard points
    # bf16 / fp16 autocast with fp32 master weights (accelerate). "auto": bf16 where the hardware
    # computes it natively (CUDA GPUs with bf16, CPUs with AVX-512 BF16 or AMX), else "no". On such
    # a CPU, bf16 matmuls run ~6x faster than fp32 on one core (benchmarks/speed.py measures both).
    mixed_precision: Literal["no", "bf16", "fp16", "auto"] = "no"
    gradient_checkpointing: bool = False  # recompute activations in the backward pass: less memory, more time
    # torch.compile every transformer block in place (torchtitan's per-block compile; weights and
    # checkpoints keep their names): fuses the norms, activations and casts between the matmuls.
    # It is for GPUs. On a CPU core it does not pay (`python -m benchmarks.compile_blocks
    # --pad-to-multiple-of 1 16`, the small recipe's model, bf16, 1 thread, 160 steps): 118 jets/s
    # compiled against 128 eager (new jet lengths force recompiles, then dynamic-shape kernels);
    # with lengths padded to multiples of 16 (static shapes) 86 against 119 while lengths still
    # compile, and 134 against 140 once all have (60 warm-up steps). CPU recipes leave it off.
    compile_blocks: bool = False
    # Pad each batch's sequences up to a multiple of this many positions (masked, so results do not
    # change; at most the model's max_sequence_length). With compile_blocks, batches then come in a
    # few lengths, each compiled once with static shapes (one graph per length) instead of a
    # recompile for each new length and dynamic-shape kernels after. The padding is extra compute,
    # so it is for compiled models only. 1: no padding, batches cut to their longest jet.
    pad_to_multiple_of: int = 1
    deepspeed: str | None = None  # path to a DeepSpeed JSON (launch/deepspeed/zero2.json), or None
    tensorboard: bool = True  # write TensorBoard logs to <output_dir>/logs
    threads_per_process: int | None = None  # torch CPU threads; None: leave torch's default
    progress: bool = True  # a progress bar with jets/s on the main process
    group_by_length: bool = True  # batches of similar multiplicity: little padding, much less compute
    # Early stopping without stopping: keep the weights of the evaluation with the best value of this
    # metric (e.g. "eval/loss") and end the run with them; None keeps the last weights.
    keep_best: str | None = None
    keep_best_mode: Literal["min", "max"] = "min"  # whether keep_best's metric is best at its minimum or maximum
    # Early stopping: end the run once keep_best has not improved for this many evaluations in a
    # row (counted in evaluations, every eval_every steps), with the best weights; None runs to max_steps.
    early_stopping_patience: int | None = None

    def __post_init__(self):
        check(self.max_steps > 0, "max_steps", f"must be positive, got {self.max_steps}")
        check(self.micro_batch_size > 0, "micro_batch_size", "must be positive")
        check(self.pad_to_multiple_of > 0, "pad_to_multiple_of", f"must be positive, got {self.pad_to_multiple_of}")
        check(
            self.global_batch_size >= self.micro_batch_size,
            "global_batch_size",
            f"must be at least micro_batch_size ({self.micro_batch_size}), got {self.global_batch_size}",
        )
        for name in ("learning_rate", "min_learning_rate_ratio", "weight_decay", "adam_beta1", "adam_beta2", "max_grad_norm"):
            check(math.isfinite(getattr(self, name)), name, f"must be a finite number, got {getattr(self, name)}")
        check(0 < self.learning_rate <= MAX_LEARNING_RATE, "learning_rate", f"must be in (0, {MAX_LEARNING_RATE}], got {self.learning_rate}")
        check(0 <= self.min_learning_rate_ratio <= 1, "min_learning_rate_ratio", "must be in [0, 1]")
        check(self.warmup_steps >= 0, "warmup_steps", "must be >= 0")
        check(self.weight_decay >= 0, "weight_decay", "must be >= 0")
        check(0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1, "adam_beta1", "betas must be in [0, 1)")
        check(self.max_grad_norm >= 0, "max_grad_norm", "must be >= 0 (0 disables clipping)")
        check(self.eval_every > 0, "eval_every", "must be positive")
        check(self.save_every > 0, "save_every", "must be positive")
        check(self.keep_checkpoints > 0, "keep_checkpoints", "must keep at least one")
        check(self.log_every > 0, "log_every", "must be positive")
        check(self.keep_best is None or self.keep_best.startswith("eval/"), "keep_best", f"must name an evaluation metric (eval/...), got {self.keep_best!r}")
        check(self.keep_best_mode in ("min", "max"), "keep_best_mode", f"must be min or max, got {self.keep_best_mode!r}")
        # The recipes pair eval/auc with max: changing only the metric back to a loss would keep the worst weights.
        known = _KNOWN_DIRECTIONS.get((self.keep_best or "").rsplit("/", 1)[-1])
        check(known is None or known == self.keep_best_mode, "keep_best_mode", f"{self.keep_best} is best at its {known}imum; set keep_best_mode: {known}")
        check(self.mixed_precision in ("no", "bf16", "fp16", "auto"), "mixed_precision", f"must be no, bf16, fp16 or auto, got {self.mixed_precision!r}")
        check(self.early_stopping_patience is None or self.early_stopping_patience > 0, "early_stopping_patience", f"must be positive (or null), got {self.early_stopping_patience}")
        check(self.early_stopping_patience is None or self.keep_best is not None, "early_stopping_patience", "needs training.keep_best (the metric it watches)")
        check(self.threads_per_process is None or self.threads_per_process > 0, "threads_per_process", "must be positive")
        # The launcher (torchrun, accelerate launch) sets WORLD_SIZE: the batch sizes must fit the
        # processes before any data is read.
        self.gradient_accumulation_steps(int(os.environ.get("WORLD_SIZE", "1")))

    def gradient_accumulation_steps(self, world_size: int) -> int:
        """Derived, never asked for: global batch = micro batch x processes x accumulation."""
        per_step = self.micro_batch_size * world_size
        check(
            self.global_batch_size % per_step == 0,
            "global_batch_size",
            f"{self.global_batch_size} is not a multiple of micro_batch_size {self.micro_batch_size} x {world_size} processes = {per_step} "
            f"(e.g. --set training.global_batch_size={per_step * max(1, round(self.global_batch_size / per_step))})",
        )
        return self.global_batch_size // per_step

    def delayed_start_factor(self, step: int, start_step: int) -> float:
        """For a parameter group that joins the run at start_step (a param group's "start_step"):
        0 before it (AdamW with a zero rate leaves the weights exactly as they are, decay included),
        then a linear warm-up over warmup_steps of its own, as the run had at its start. A group
        that starts with the run (start_step 0) has the run's warm-up only: factor 1."""
        if start_step == 0:
            return 1.0
        if step < start_step:
            return 0.0
        return min(1.0, (step - start_step + 1) / max(1, self.warmup_steps))

    def learning_rate_factor(self, step: int) -> float:
        """Linear warmup, then cosine down to min_learning_rate_ratio, as a factor of learning_rate."""
        import math

        if step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        span = max(1, self.max_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / span)
        cosine = 0.5 * (1 + math.cos(math.pi * progress))
        return self.min_learning_rate_ratio + (1 - self.min_learning_rate_ratio) * cosine
