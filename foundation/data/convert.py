"""`foundation data convert`: any supported jet files to the canonical layout (one file or shards)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from tqdm.auto import tqdm

from foundation.data.canonical import CanonicalWriter
from foundation.data.sources import JetCollection, check_output

logger = logging.getLogger(__name__)

SHARD_PATTERN = "shard-{:05d}.h5"


def _source_particles(source) -> int | None:
    return getattr(source, "max_particles", None)


def convert(
    inputs: str | Path | Sequence[str | Path],
    out: str | Path,
    max_particles: int | None = None,
    chunk_jets: int = 4096,
    shard_jets: int | None = None,
    progress: bool = True,
    drop_invalid: bool = False,
) -> list[Path]:
    """Read `inputs` (file, folder, glob or a list; any supported format) chunk by chunk and
    write them to the canonical layout.

    out: the output .h5 file, or, when `shard_jets` is given, a folder that receives
    `shard-00000.h5`, `shard-00001.h5`, ... of `shard_jets` jets each.
    max_particles: constituents kept per jet (the hardest); default: as many as the input has.
    drop_invalid: leave out jets that cannot be real (JetArrays.physics_problems: negative energy,
    a mask that disagrees with the momenta, NaN or absurd momenta) and log how many, instead of
    refusing the input at the first of them.
    Returns the paths written.
    """
    if chunk_jets < 1:
        raise ValueError(f"chunk_jets must be at least 1, got {chunk_jets}")
    if shard_jets is not None and shard_jets < 1:
        raise ValueError(f"shard_jets must be at least 1, got {shard_jets}")
    out = Path(out)
    if shard_jets is not None and out.suffix in (".h5", ".hdf5"):
        raise ValueError(f"{out}: with shard_jets the output must be a folder, not a .h5 file")
    if shard_jets is None and out.is_dir():
        raise ValueError(f"{out}: is a folder; give an output file, or shard_jets to write shards into it")
    check_output(out, folder=shard_jets is not None)

    collection = JetCollection.open(inputs, max_particles=max_particles)
    for source in collection.sources:
        source.drop_invalid = drop_invalid
    if max_particles is None:
        counts = [n for n in map(_source_particles, collection.sources) if n is not None]
        max_particles = max(counts) if counts else collection.read(0, 1).max_particles
    total = len(collection)
    sources = [{"path": str(s.path), "format": s.format_name, "jets": len(s)} for s in collection.sources]
    metadata = {"converted_from": sources, "max_particles": max_particles}
    # Canonical inputs carry their own provenance (generator settings, seed, ...): keep it.
    inherited = [
        dict(s.metadata)
        for s in collection.sources
        if s.format_name == "canonical" and getattr(s, "metadata", None)
    ]
    if inherited:
        metadata["source_metadata"] = inherited

    if shard_jets is None:
        bounds = [(0, total, out)]
    else:
        out.mkdir(parents=True, exist_ok=True)
        bounds = [
            (s, min(s + shard_jets, total), out / SHARD_PATTERN.format(i))
            for i, s in enumerate(range(0, max(total, 1), shard_jets))
        ]
    logger.info(
        "converting %d jets from %d file(s) into %d file(s), %d particles",
        total,
        len(sources),
        len(bounds),
        max_particles,
    )

    written = []
    with tqdm(total=total, unit="jet", unit_scale=True, desc="convert", disable=not progress) as bar:
        for first, last, path in bounds:
            shard_meta = dict(metadata)
            if shard_jets is not None:
                shard_meta["shard"] = {"index": len(written), "jets": [first, last]}
            with CanonicalWriter(path, max_particles, collection.class_names, shard_meta) as w:
                for start in range(first, last, chunk_jets):
                    stop = min(start + chunk_jets, last)
                    w.append(collection.read(start, stop))
                    bar.update(stop - start)
            written.append(path)
    dropped = sum(s.dropped for s in collection.sources)
    if drop_invalid:
        logger.info("dropped %d of %d jets that cannot be real (--drop-invalid)", dropped, total)
    return written
