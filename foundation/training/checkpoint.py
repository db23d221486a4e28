"""Checkpoint folders: numbered, written under a temporary name and renamed when complete.

    <output_dir>/checkpoints/step-000500/   accelerate state + trainer_state.json + recipe.yaml
    <output_dir>/checkpoints/latest          text file naming the newest complete folder
    <output_dir>/checkpoints/best.safetensors  weights of the best evaluation (training.keep_best)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
from pathlib import Path

import torch

from foundation.errors import ConfigError, DataFormatError, one_line

STEP_PATTERN = re.compile(r"^step-(\d+)$")
TRAINER_STATE = "trainer_state.json"


def checkpoint_root(output_dir: str | Path) -> Path:
    return Path(output_dir) / "checkpoints"


def step_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f"step-{step:06d}"


def temporary_dir(output_dir: str | Path, step: int) -> Path:
    return checkpoint_root(output_dir) / f".incomplete-step-{step:06d}"


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def complete_checkpoints(output_dir: str | Path) -> list[Path]:
    """Complete checkpoint folders, oldest first."""
    root = checkpoint_root(output_dir)
    if not root.exists():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := STEP_PATTERN.match(p.name)) and (p / TRAINER_STATE).exists()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The newest complete checkpoint: the one `latest` names, else the highest step found."""
    root = checkpoint_root(output_dir)
    pointer = root / "latest"
    if pointer.exists():
        candidate = root / pointer.read_text().strip()
        if (candidate / TRAINER_STATE).exists():
            return candidate
    found = complete_checkpoints(output_dir)
    return found[-1] if found else None


def finalize(output_dir: str | Path, step: int, trainer_state: dict, keep: int) -> Path:
    """Main process, after every rank has written into the temporary folder: publish it."""
    tmp, final = temporary_dir(output_dir, step), step_dir(output_dir, step)
    write_atomic(tmp / TRAINER_STATE, json.dumps(trainer_state, indent=2))
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(checkpoint_root(output_dir) / "latest", final.name)
    for old in complete_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def read_trainer_state(checkpoint: Path) -> dict:
    """The trainer's state saved with a checkpoint; a damaged file is refused by name."""
    path = Path(checkpoint) / TRAINER_STATE
    try:
        state = json.loads(path.read_text())
        if not isinstance(state, dict) or not isinstance(state.get("step"), int):
            raise ValueError("no integer 'step'")
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise DataFormatError(path, None, f"not a valid trainer state ({one_line(err)}); the checkpoint is damaged: remove {path.parent} to resume from an earlier one") from None
    return state


def check_resume(output_dir: str | Path, micro_batch_size: int, source: str | None = None) -> None:
    """Before any data is read: the latest checkpoint of a run to resume can be read and was
    written with this micro-batch size (the data position is counted in micro-batches)."""
    path = latest_checkpoint(output_dir)
    if path is None:
        return
    used = read_trainer_state(path).get("micro_batch_size")
    if used != micro_batch_size:
        raise ConfigError(
            source, "training.micro_batch_size",
            f"is {micro_batch_size}, but {path} was written with {used}; resume with the same micro_batch_size (change global_batch_size instead)",
        )


# Recipe fields a resumed run may change: how long it trains, how often it logs, evaluates and
# saves, and how it loads data; not what it trains on, from which weights, or how it optimises.
RESUMABLE_CHANGES = frozenset({
    "training.output_dir", "training.max_steps", "training.early_stopping_patience", "training.eval_every",
    "training.eval_batches", "training.save_every", "training.keep_checkpoints", "training.log_every",
    "training.tensorboard", "training.progress", "training.threads_per_process",
    "data.num_workers", "data.in_memory_mib", "data.generated.workers",
})


# Recipe fields added after runs were saved (dotted keys), with the value that means "as before": a
# saved run without the field matches it at that value, so it still resumes (and stays a cache hit).
FIELDS_ADDED_SINCE = {"head_only_steps": 0, "head.token_dropout": 0.0, "training.compile_blocks": False, "training.pad_to_multiple_of": 1}


def without_fields_at_as_before(recipe: dict) -> dict:
    """A copy of a (nested) recipe dict without the FIELDS_ADDED_SINCE that hold their as-before
    value: what the recipe would have been before they existed (e.g. for a cache key)."""
    out = copy.deepcopy(recipe)
    for dotted, as_before in FIELDS_ADDED_SINCE.items():
        *parents, name = dotted.split(".")
        section = out
        for parent in parents:
            section = section.get(parent) if isinstance(section, dict) else None
        if isinstance(section, dict) and name in section and section[name] == as_before:
            del section[name]
    return out


def run_identity(recipe: dict, starts_from: dict | None = None) -> dict:
    """What a run to be resumed must share with this one: every recipe field (dotted keys) but
    RESUMABLE_CHANGES, and what it starts from beyond the recipe's names (e.g. the sha256 of the
    pretrained weights behind a registered name, which a new version changes). JSON values."""

    def flat(prefix: str, value) -> dict:
        if isinstance(value, dict) and value:
            return {k: v for key, item in value.items() for k, v in flat(f"{prefix}{key}.", item).items()}
        return {prefix[:-1]: value}

    identity = {k: v for k, v in flat("", recipe).items() if k not in RESUMABLE_CHANGES}
    identity.update({f"starts_from.{k}": v for k, v in (starts_from or {}).items()})
    return json.loads(json.dumps(identity, default=str))  # tuples as lists, as read back from the file


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 of a module's parameters and buffers (names, dtypes, shapes, values): for a run's
    starts_from, when what it starts from has no file of its own (a tokenizer loaded from a run folder)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        values = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{values.dtype}:{tuple(values.shape)}".encode())
        digest.update(values.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_same_run(checkpoint: Path, saved: dict | None, identity: dict) -> None:
    """Refuse to continue `checkpoint` with settings it was not trained with: the resumed run would
    mix two runs, and its results would be credited to the new settings. Checkpoints written before
    run identities were saved (no `saved`) are not checked."""
    if saved is None:
        return
    saved = {**{k: v for k, v in FIELDS_ADDED_SINCE.items() if k in identity}, **saved}
    changed = sorted(k for k in saved.keys() | identity.keys() if saved.get(k, "<unset>") != identity.get(k, "<unset>"))
    if not changed:
        return
    shown = "; ".join(f"{k} {saved.get(k, '<unset>')!r} there, {identity.get(k, '<unset>')!r} now" for k in changed[:3])
    more = f" (and {len(changed) - 3} more)" if len(changed) > 3 else ""
    raise ConfigError(
        checkpoint, changed[0],
        f"the run to resume was trained with other settings: {shown}{more}; resume with its own settings, or start a new run "
        "(--overwrite, or another training.output_dir)",
    )


def clean_incomplete(output_dir: str | Path) -> None:
    """Remove folders of checkpoints that were being written when a run died."""
    root = checkpoint_root(output_dir)
    if root.exists():
        for p in root.iterdir():
            if p.name.startswith(".incomplete-"):
                shutil.rmtree(p, ignore_errors=True)


def best_weights(output_dir: str | Path) -> Path:
    return checkpoint_root(output_dir) / "best.safetensors"


def read_best(output_dir: str | Path) -> dict | None:
    """{"step", "metric", "value"} of the kept best weights, or None if there are none."""
    from safetensors import safe_open

    path = best_weights(output_dir)
    if not path.exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    return {"step": int(meta["step"]), "metric": meta["metric"], "value": float(meta["value"])}


def save_best(output_dir: str | Path, model, step: int, metric: str, value: float) -> Path:
    """Main process: the model's weights with their step and metric in the file's metadata, one
    file written under a temporary name and renamed, so a crash never leaves half of it."""
    from safetensors.torch import save_model

    path = best_weights(output_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_model(model, str(tmp), metadata={"step": str(step), "metric": metric, "value": repr(float(value))})
    os.replace(tmp, path)
    return path


def load_best(output_dir: str | Path, model) -> None:
    from safetensors.torch import load_model

    load_model(model, str(best_weights(output_dir)))
