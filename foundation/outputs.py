"""Outputs are never silently replaced, and never left half-written.

- `check_new_output(path, overwrite)`: an existing output file (or non-empty folder) needs --overwrite.
- `prepare_run_folder(folder, resume, overwrite)`: an existing run folder needs --resume (continue it)
  or --overwrite (remove it first, so that checkpoints and metrics of two runs never mix).
- `atomic_output(path)`: a context manager giving `<path>.tmp` to write into; renamed to `path` when
  the block ends normally, removed on any exception (KeyboardInterrupt and sys.exit included). A
  `.tmp` left by a killed process (kill -9) is simply replaced.

Both checks run in the command before any data are read, so a refused command costs nothing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

from foundation.errors import InputError

# What a training run writes into its folder (foundation.training): a folder holding one of these is a run.
RUN_MARKERS = ("checkpoints", "metrics.jsonl", "train_summary.json")


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_new_output(path: str | Path, overwrite: bool, option: str = "--out") -> None:
    """Refuse an output that exists (a file, or a folder that is not empty) unless `overwrite`."""
    path = Path(path)
    if path.exists() and not _is_empty_dir(path) and not overwrite:
        raise InputError(f"{option} {path}: exists; pass --overwrite to replace it")


def is_run_folder(folder: str | Path) -> bool:
    return any((Path(folder) / name).exists() for name in RUN_MARKERS)


def prepare_run_folder(folder: str | Path, resume: bool, overwrite: bool) -> None:
    """Check (and with `overwrite` empty) a training run's folder before anything is loaded.

    A folder that exists and is not empty needs `resume` or `overwrite`. `overwrite` removes the
    old run whole (only a folder that holds one, see RUN_MARKERS: never an arbitrary folder), on
    the main process only; the other processes only check.
    """
    folder = Path(folder)
    main_process = int(os.environ.get("RANK", "0")) == 0  # torchrun / accelerate launch set RANK
    if resume and overwrite:
        raise InputError("--resume and --overwrite exclude each other: continue the run, or replace it")
    if not folder.exists() or _is_empty_dir(folder) or resume:
        return
    if not folder.is_dir():
        raise InputError(f"--output {folder}: is a file, not a run folder")
    if not overwrite:
        raise InputError(f"--output {folder}: holds an earlier run; pass --resume to continue it or --overwrite to replace it")
    if not main_process:
        return  # the main process checks what the folder holds while it removes it
    if not is_run_folder(folder):
        raise InputError(
            f"--output {folder}: is not empty and holds no run (none of {', '.join(RUN_MARKERS)}); not removing it, choose another folder"
        )
    shutil.rmtree(folder)


def temporary_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".tmp")


@contextlib.contextmanager
def atomic_output(path: str | Path) -> Iterator[Path]:
    """Write into the yielded temporary path; it becomes `path` only if the block ends normally."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(path)
    tmp.unlink(missing_ok=True)  # a stale one from a killed process
    try:
        yield tmp
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, path)


def exit_on_sigterm() -> None:
    """Turn SIGTERM (a scheduler's or `kill`'s stop) into SystemExit(143), so that `atomic_output` and the
    writers' cleanup run as they do for an exception; the default action would end the process with its
    `.tmp` files left behind. Only replaces the default action (training installs its own while it runs)."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _raise_exit)


def _raise_exit(signum, frame) -> None:
    raise SystemExit(128 + signum)  # 143: schedulers see a terminated job
