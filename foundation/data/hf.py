"""Bridge to Hugging Face `datasets` (Arrow): one row per jet, ragged constituents.

    to_hf_dataset(files)            -> datasets.Dataset with columns
                                       constituents [[E, px, py, pz], ...], charge [...], pid [...],
                                       label, class_name
    from_hf_dataset(dataset, out)   -> a canonical HDF5 file from such a dataset
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foundation.data.canonical import CanonicalWriter
from foundation.data.jets import JetArrays
from foundation.data.sources import JetCollection
from foundation.errors import DataFormatError

COLUMNS = ("constituents", "charge", "pid", "label", "class_name")


def _rows(collection: JetCollection, limit: int | None, chunk: int):
    n = len(collection) if limit is None else min(limit, len(collection))
    for start in range(0, n, chunk):
        jets = collection.read(start, min(start + chunk, n))
        for j in range(len(jets)):
            m = jets.mask[j]
            yield {
                "constituents": jets.constituents[j][m].tolist(),
                "charge": jets.charge[j][m].tolist(),
                "pid": jets.pid[j][m].tolist(),
                "label": int(jets.label[j]),
                "class_name": jets.class_names[jets.label[j]],
            }


def to_hf_dataset(data, limit: int | None = None, chunk: int = 4096):
    """Jets of any supported file(s) as a `datasets.Dataset` (written to the datasets cache)."""
    import datasets

    collection = JetCollection.open(data)
    features = datasets.Features(
        {
            "constituents": datasets.Sequence(datasets.Sequence(datasets.Value("float32"), length=4)),
            "charge": datasets.Sequence(datasets.Value("int8")),
            "pid": datasets.Sequence(datasets.Value("int32")),
            "label": datasets.ClassLabel(names=collection.class_names),
            "class_name": datasets.Value("string"),
        }
    )
    return datasets.Dataset.from_generator(
        _rows, gen_kwargs={"collection": collection, "limit": limit, "chunk": chunk}, features=features
    )


def from_hf_dataset(dataset, out: str | Path, max_particles: int = 200, chunk: int = 4096) -> Path:
    """Write a dataset with the columns of `to_hf_dataset` to the canonical layout."""
    missing = [c for c in ("constituents", "label") if c not in dataset.column_names]
    if missing:
        raise DataFormatError("<datasets.Dataset>", missing[0], f"column missing (have {dataset.column_names})")
    label_feature = dataset.features["label"]
    class_names = list(getattr(label_feature, "names", None) or sorted(set(dataset["class_name"])))
    with CanonicalWriter(out, max_particles, class_names, {"source": "Hugging Face datasets"}) as writer:
        for start in range(0, len(dataset), chunk):
            rows = dataset[start : start + chunk]
            j = len(rows["label"])
            parts = [np.asarray(p, np.float32).reshape(-1, 4) for p in rows["constituents"]]
            width = max((len(p) for p in parts), default=0)  # the chunk's widest jet
            c = np.zeros((j, width, 4), np.float32)
            mask = np.zeros((j, width), bool)
            charge = np.zeros((j, width), np.int8)
            pid = np.zeros((j, width), np.int32)
            for i, p in enumerate(parts):
                n = len(p)
                c[i, :n], mask[i, :n] = p, True
                if "charge" in rows:
                    charge[i, :n] = np.asarray(rows["charge"][i])
                if "pid" in rows:
                    pid[i, :n] = np.asarray(rows["pid"][i])
            # the hardest max_particles of each jet, in pT order
            jets = JetArrays(c, mask, charge, pid, np.asarray(rows["label"], np.int64), class_names).sorted_by_pt().padded_to(max_particles)
            jets.validate(f"<datasets.Dataset> rows {start}..{start + j}")
            writer.append(jets)
    return Path(out)
