"""Error types raised at the boundaries (files, recipes), so deep code can trust its inputs."""

from __future__ import annotations

from pathlib import Path


def one_line(err: BaseException) -> str:
    """The first line of a library's error message (some span a paragraph), for one-line reports."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


class DataFormatError(ValueError):
    """A data file cannot be used: names the file, the field and what is wrong."""

    def __init__(self, path: str | Path, field: str | None, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


class InputError(ValueError):
    """A command's arguments do not fit the data or the model (a class name, an output suffix,
    a feature): the message says what to change. The CLI prints it as one line."""


class TrainingInterrupted(RuntimeError):
    """Training stopped on SIGTERM after writing a checkpoint. Raised so that no pipeline goes on
    to export or evaluate a half-trained model; `--resume` continues from the checkpoint."""

    def __init__(self, output_dir: str | Path, step: int):
        self.output_dir = str(output_dir)
        self.step = step
        super().__init__(f"{self.output_dir}: stopped on SIGTERM at step {step}, checkpoint written; run again with --resume to continue")


class TrainingDiverged(FloatingPointError):
    """The training loss became NaN or infinite: names the run and what to change. The CLI prints it
    as one line; the checkpoints written before stay (`--resume` starts from the latest)."""

    def __init__(self, output_dir: str | Path, step: int, loss: float):
        self.output_dir = str(output_dir)
        self.step = step
        super().__init__(
            f"{self.output_dir}: the training loss became {loss} at step {step}; lower training.learning_rate "
            "(or training.max_grad_norm) and run again with --overwrite, or --resume from the last checkpoint"
        )


class ConfigError(ValueError):
    """A recipe cannot be used: names the file, the key and what was expected."""

    def __init__(self, path: str | Path | None, key: str | None, problem: str):
        self.path = None if path is None else str(path)
        self.key = key
        self.problem = problem
        where = self.path or "<config>"
        if key:
            where += f", key '{key}'"
        super().__init__(f"{where}: {problem}")
