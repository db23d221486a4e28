"""Small pieces every pipeline uses: run folders, JSON output, logging set-up."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import numpy as np

from foundation.errors import InputError
from foundation.training.checkpoint import write_atomic


def json_safe(value):
    """`value` as standard JSON can hold it: numpy scalars and arrays made Python numbers and lists,
    +-inf the strings "inf"/"-inf" (a rejection 1/eps_B with no background left is a real result),
    NaN null (not measured: JSON's own missing value), paths strings.

    json.dumps would otherwise write the non-standard tokens Infinity and NaN.
    """
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float):
        if math.isnan(value):
            return None
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
    if isinstance(value, Path):
        return str(value)
    return value


def require_finite(values, what: str, source) -> None:
    """Refuse results with NaN or inf before anything is written: they come from broken weights
    (a diverged run) or broken inputs, and a file of them would pass for results."""
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    if bad.any():
        raise InputError(f"{source}: {what} contain NaN or inf ({int(bad.sum())} of {values.size} values); nothing written (a diverged or broken model?)")


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
    quiet_libraries()


def quiet_libraries() -> None:
    """Warnings and errors only from the libraries underneath, and no progress bars of transformers'
    own (weights loaded and written in a fraction of a second, several times per fine-tuning run);
    its load report of the new head's missing weights is expected with every fine-tuning."""
    for noisy in ("DeepSpeed", "deepspeed", "accelerate", "transformers", "httpx", "matplotlib", "h5py", "torch.distributed"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        import transformers

        transformers.utils.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass
