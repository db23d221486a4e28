"""Building the Accelerator: one CPU process, gloo processes on CPU, GPUs, DeepSpeed ZeRO."""

from __future__ import annotations

import atexit
import logging
import os
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import (
    DataLoaderConfiguration,
    DeepSpeedPlugin,
    DistributedType,
    InitProcessGroupKwargs,
    ProjectConfiguration,
)

from foundation.training.config import TrainingConfig

logger = logging.getLogger(__name__)


def launched_world_size() -> int:
    """Processes started by torchrun / accelerate launch / srun (known before any process group)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def deepspeed_config_path(config: TrainingConfig) -> str | None:
    """The recipe's DeepSpeed JSON, else the one `accelerate launch` was given, else None."""
    if config.deepspeed:
        return config.deepspeed
    if os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true":
        return os.environ.get("ACCELERATE_DEEPSPEED_CONFIG_FILE") or None
    return None


def _forget_previous_accelerator() -> None:
    """accelerate keeps one process-wide state; a second run in the same process (the main job:
    a fp32 tokenizer, then a bf16 backbone) needs it cleared. The process group is kept."""
    from accelerate.state import AcceleratorState, GradientState

    if AcceleratorState._shared_state:
        AcceleratorState._reset_state(reset_partial_state=False)
        GradientState._reset_state()


def _destroy_process_group() -> None:
    """At exit: a gloo group left to the interpreter's teardown can abort a rank ("terminate
    called without an active exception", exit code -6) after a run that otherwise finished."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def finish_trackers(accelerator: Accelerator) -> None:
    """Close TensorBoard & co. Not `accelerator.end_training()`: that also destroys the process
    group, and the ranks still gather the weights and wait for each other after training."""
    for tracker in accelerator.trackers:
        tracker.finish()


def cpu_has_native_bf16() -> bool:
    """True on CPUs with bf16 matmul instructions (AVX-512 BF16 or AMX), read from /proc/cpuinfo
    (Linux; elsewhere False, so "auto" stays in fp32 rather than emulating bf16 slowly)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16"))


def resolve_mixed_precision(setting: str) -> str:
    """training.mixed_precision with "auto" made concrete for this machine."""
    if setting != "auto":
        return setting
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if cpu_has_native_bf16() else "no"


def build_accelerator(config: TrainingConfig) -> Accelerator:
    _forget_previous_accelerator()
    world = launched_world_size()
    accumulation = config.gradient_accumulation_steps(world)
    handlers = []
    if world > 1 and not torch.cuda.is_available():
        # Without an explicit backend, accelerate runs each CPU process as its own world of one.
        handlers.append(InitProcessGroupKwargs(backend="gloo"))
    plugin = None
    ds_path = deepspeed_config_path(config)
    if ds_path:
        if not Path(ds_path).exists():
            raise FileNotFoundError(f"training.deepspeed: DeepSpeed config {ds_path} does not exist")
        plugin = DeepSpeedPlugin(
            hf_ds_config=ds_path,
            gradient_accumulation_steps=accumulation,
            gradient_clipping=config.max_grad_norm if config.max_grad_norm > 0 else None,
        )
    # Several CPU processes without DeepSpeed: only cpu=True makes accelerate wrap the model in
    # DDP (MULTI_CPU); otherwise the gloo group forms but gradients are never averaged.
    # DeepSpeed on CPU wants cpu=False (its own communication set-up) with the gloo backend.
    multi_cpu = world > 1 and not torch.cuda.is_available() and plugin is None
    accelerator = Accelerator(
        cpu=multi_cpu,
        gradient_accumulation_steps=accumulation,
        mixed_precision=resolve_mixed_precision(config.mixed_precision),
        deepspeed_plugin=plugin,
        kwargs_handlers=handlers,
        log_with="tensorboard" if config.tensorboard else None,
        project_config=ProjectConfiguration(project_dir=config.output_dir, logging_dir=str(Path(config.output_dir) / "logs")),
        dataloader_config=DataLoaderConfiguration(even_batches=True),
        step_scheduler_with_optimizer=False,
    )
    if world > 1:
        atexit.unregister(_destroy_process_group)  # once, however many runs the process makes
        atexit.register(_destroy_process_group)
    if accelerator.num_processes != world:
        raise RuntimeError(
            f"launched {world} processes but accelerate sees a world of {accelerator.num_processes}; "
            "the process group did not form"
        )
    if world > 1 and accelerator.distributed_type == DistributedType.NO:
        raise RuntimeError(
            f"{world} processes were launched but accelerate would train each on its own "
            "(distributed type NO): gradients would not be synchronised"
        )
    return accelerator
