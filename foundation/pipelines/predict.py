"""`foundation predict`: per-jet class scores of a fine-tuned tagger on unlabelled jets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from foundation.errors import InputError
from foundation.outputs import atomic_output
from foundation.pipelines.inference import bundle_inputs, inference_device, iterate_batches, jet_dataset

SUFFIXES = (".h5", ".hdf5", ".parquet", ".csv")


@torch.no_grad()
def class_probabilities(classifier, dataset, inputs, batch_size: int = 256, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Softmax scores (J, C) of every jet of `dataset` and their indices in its collection (J,).
    The file's labels are never shown to the model: the jets may be unlabelled."""
    device = inference_device()
    classifier = classifier.eval().to(device)
    probs, index = [], []
    for batch in iterate_batches(dataset, inputs, batch_size, progress, desc="predicting", device=device):
        logits = classifier(
            batch["input_ids"], batch["attention_mask"], batch.get("particle_features"), batch.get("particle_kinematics")
        ).logits  # (B, C)
        probs.append(torch.softmax(logits.float(), dim=-1).cpu().numpy())
        index.append(batch["index"].cpu().numpy())
    return np.concatenate(probs), np.concatenate(index)


def class_names_of(classifier) -> list[str]:
    return [classifier.config.id2label[i] for i in range(classifier.config.num_labels)]


def score_columns(class_names: list[str]) -> list[str]:
    """One column per class: score_qcd, score_top."""
    return [f"score_{name}" for name in class_names]


def predict_file(model, data, out: str | Path, batch_size: int = 256, limit: int | None = None, revision: str | None = None, progress: bool = True) -> Path:
    """Write one row per jet: source_file, row (the jet's place in its file) and a score per class."""
    import pandas as pd

    from foundation.hub import load_bundle
    from foundation.models import JetTransformerForJetClassification

    out = Path(out)
    if out.suffix not in SUFFIXES:
        raise InputError(f"{out}: the output must end in {', '.join(SUFFIXES)}")
    bundle = load_bundle(model, model_class=JetTransformerForJetClassification, revision=revision)
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config, kinematics=bundle.model.config.interaction_attention)
    dataset = jet_dataset(data, inputs, limit=limit)
    probs, index = class_probabilities(bundle.model, dataset, inputs, batch_size, progress)
    source_file, row = dataset.collection.locate(index)
    names = class_names_of(bundle.model)
    table = pd.DataFrame({"source_file": source_file.astype(str), "row": row, **dict(zip(score_columns(names), probs.T, strict=True))})
    with atomic_output(out) as tmp:  # written whole, then renamed: no half-written file under `out`
        if out.suffix == ".csv":
            table.to_csv(tmp, index=False)
        elif out.suffix == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            _write_h5(tmp, table, {"model": str(bundle.path), "class_names": names})
    return out


def _write_h5(path: Path, table, meta: dict) -> None:
    import h5py

    with h5py.File(path, "w") as f:
        for column in table.columns:
            values = table[column].to_numpy()
            if column == "source_file":
                f.create_dataset(column, data=values.astype(object), dtype=h5py.string_dtype())
            else:
                f[column] = values
        for key, value in meta.items():
            f.attrs[key] = json.dumps(value)
