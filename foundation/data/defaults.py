"""The built-in default data set: generated top and QCD jets, made once and cached."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from foundation.data.dataset import GeneratedDataConfig
from foundation.data.generation import GeneratorConfig, generate

logger = logging.getLogger(__name__)


def foundation_home() -> Path:
    """Where runs, data and downloaded models land: $FOUNDATION_HOME or ./checkpoints."""
    return Path(os.environ.get("FOUNDATION_HOME", "checkpoints"))


def default_jet_files(config: GeneratedDataConfig, root: str | Path | None = None) -> list[Path]:
    """Paths of the generated QCD and top files for this config, generating what is missing."""
    root = Path(root) if root is not None else foundation_home() / "data"
    workers = config.workers or os.cpu_count() or 1
    files = []
    for process in ("qcd", "top"):
        path = root / f"{process}-{config.jets_per_class}-n{config.max_particles}-seed{config.seed}.h5"
        if not path.exists():
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
