"""Error types raised at the boundaries (files, recipes), so deep code can trust its inputs."""

from __future__ import annotations

from pathlib import Path


class DataFormatError(ValueError):
    """A data file cannot be used: names the file, the field and what is wrong."""

    def __init__(self, path: str | Path, field: str | None, problem: str):
        self.path = str(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" + (f", field '{field}'" if field else "")
        super().__init__(f"{where}: {problem}")


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
