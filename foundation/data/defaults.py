"""The built-in default data set: generated top and QCD jets, made once and cached."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

from foundation.data.dataset import GeneratedDataConfig
from foundation.data.generation import GeneratorConfig, generate
from foundation.errors import InputError

logger = logging.getLogger(__name__)


def foundation_home() -> Path:
    """Where runs, data and downloaded models land: $FOUNDATION_HOME or ./checkpoints."""
    return Path(os.environ.get("FOUNDATION_HOME", "checkpoints"))


# How long a process other than the main one waits for the main process to generate the default data.
WAIT_ENV = "FOUNDATION_DATA_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 6 * 3600.0


def default_jet_files(config: GeneratedDataConfig, root: str | Path | None = None) -> list[Path]:
    """Paths of the generated QCD and top files for this config, generating what is missing.

    Several processes (torchrun, accelerate launch; RANK set): only global rank 0 generates. A file
    appears under its final name only when complete (written to `<name>.tmp` and renamed), so the
    other ranks wait for that name: the completed file is the marker.
    """
    root = Path(root) if root is not None else foundation_home() / "data"
    workers = config.workers or os.cpu_count() or 1
    rank = int(os.environ.get("RANK", "0"))
    files = []
    for process in ("qcd", "top"):
        path = root / f"{process}-{config.jets_per_class}-n{config.max_particles}-seed{config.seed}.h5"
        if not path.exists() and rank != 0:
            wait_for_file(path, float(os.environ.get(WAIT_ENV, DEFAULT_WAIT_SECONDS)), rank)
        elif not path.exists():
            logger.info("generating the default %s jets into %s", process, path)
            generate(
                GeneratorConfig(process=process, max_particles=config.max_particles),
                config.jets_per_class,
                path,
                seed=config.seed,
                workers=workers,
            )
        files.append(path)
    return files


def wait_for_file(path: Path, timeout: float, rank: int) -> None:
    """Sleep (1 s, doubling to 30 s) until `path` exists; a clear InputError after `timeout` seconds."""
    start, delay = time.monotonic(), 1.0
    while not path.exists():
        waited = time.monotonic() - start
        if waited >= timeout:
            raise InputError(
                f"{path}: rank {rank} waited {waited:.0f} s for rank 0 to generate this default data file; make it "
                f"beforehand with `foundation data generate` (see launch/), put FOUNDATION_HOME on a file system all "
                f"nodes share, or raise {WAIT_ENV}"
            )
        time.sleep(min(delay, timeout - waited))
        delay = min(2 * delay, 30.0)
