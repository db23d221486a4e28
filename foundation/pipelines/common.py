"""Small pieces every pipeline uses: run folders, JSON output, logging set-up."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from foundation.training.checkpoint import write_atomic


def json_safe(value):
    """Numbers as JSON can hold them: inf/nan become strings, numpy scalars plain floats."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, (np.floating, float)):
        v = float(value)
        return v if math.isfinite(v) else str(v)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, data: dict) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(json_safe(data), indent=2))
    return path


def is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup_logging(verbose: bool = False) -> None:
    """Readable logs from our modules; the noisy libraries' chatter kept down."""
    from rich.logging import RichHandler

    level = logging.DEBUG if verbose else logging.INFO
    logging.basicConfig(
        level=level if is_main_process() else logging.WARNING,
        format="%(message)s",
        datefmt="[%X]",
        handlers=[RichHandler(show_path=False, rich_tracebacks=False)],
        force=True,
    )
    for noisy in ("DeepSpeed", "deepspeed", "accelerate", "transformers", "httpx", "matplotlib", "h5py", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
