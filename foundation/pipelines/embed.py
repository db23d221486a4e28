"""`foundation embed`: per-jet (or per-particle) embeddings of a whole data set, streamed to a file."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import torch

from foundation.data.sources import AtomicH5Writer, check_output
from foundation.errors import InputError
from foundation.hub import load_bundle
from foundation.models import JetTransformerModel
from foundation.models.modeling_jet_transformer import mean_pool
from foundation.outputs import temporary_path
from foundation.pipelines.common import require_finite
from foundation.pipelines.inference import bundle_inputs, inference_device, iterate_batches, jet_dataset


class _H5Sink(AtomicH5Writer):
    def __init__(self, path: Path, dim: int, per_particle: int | None, meta: dict):
        super().__init__(path)
        shape = (0, per_particle, dim) if per_particle else (0, dim)
        self.emb = self._file.create_dataset("embedding", shape, maxshape=(None, *shape[1:]), dtype=np.float32, chunks=(64, *shape[1:]))
        self.mask = self._file.create_dataset("mask", (0, per_particle), maxshape=(None, per_particle), dtype=bool, chunks=(64, per_particle)) if per_particle else None
        self.label = self._file.create_dataset("label", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        self.source_file = self._file.create_dataset("source_file", (0,), maxshape=(None,), dtype=h5py.string_dtype(), chunks=(4096,))
        self.row = self._file.create_dataset("row", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        for k, v in meta.items():
            self._file.attrs[k] = json.dumps(v)

    def write(self, emb, mask, label, source_file, row):
        rows = ((self.emb, emb), (self.mask, mask), (self.label, label), (self.source_file, source_file.astype(str).astype(object)), (self.row, row))
        self._append_rows(((ds, value) for ds, value in rows if ds is not None), len(emb))


class _ParquetSink:
    def __init__(self, path: Path, dim: int, per_particle: int | None, meta: dict):
        import pyarrow as pa

        self.pa, self.path, self.per_particle, self.class_names = pa, path, per_particle, meta["class_names"]
        item = pa.list_(pa.float32(), dim)
        emb_type = pa.list_(item) if per_particle else item
        self.schema = pa.schema(
            [("source_file", pa.string()), ("row", pa.int64()), ("label", pa.int64()), ("class_name", pa.string()), ("embedding", emb_type)],
            metadata={k: json.dumps(v) for k, v in meta.items()},
        )
        import pyarrow.parquet as pq

        self.tmp = temporary_path(path)
        self.tmp.unlink(missing_ok=True)  # a stale one from a killed process
        self.writer = pq.ParquetWriter(str(self.tmp), self.schema)

    def write(self, emb, mask, label, source_file, row):
        pa = self.pa
        if self.per_particle:
            values = [row[m].tolist() for row, m in zip(emb, mask, strict=True)]  # ragged: only the real particles
        else:
            values = emb.tolist()
        table = pa.table(
            {"source_file": source_file.tolist(), "row": row, "label": label, "class_name": [self.class_names[i] for i in label], "embedding": values},
            schema=self.schema,
        )
        self.writer.write_table(table)

    def close(self):
        self.writer.close()
        self.tmp.replace(self.path)

    def abort(self):
        self.writer.close()
        self.tmp.unlink(missing_ok=True)


def embedding_batches(backbone, dataset, inputs, per_particle: bool = False, batch_size: int = 256, progress: bool = True, device=None):
    """Per batch: (embeddings (B, D) or (B, N, D), mask (B, N) with per_particle else None, labels (B,),
    jet indices in the collection (B,)), in dataset order."""
    n = inputs.max_particles
    for batch in iterate_batches(dataset, inputs, batch_size, progress, desc="embedding", device=device):
        hidden = backbone(
            batch["input_ids"], batch["attention_mask"], batch.get("particle_features"), batch.get("particle_kinematics")
        ).last_hidden_state.float().cpu()
        batch = {k: v.cpu() for k, v in batch.items()}
        mask = None
        if per_particle:
            # Particle i sits at sequence position i + 1 (after the start token).
            length = batch["attention_mask"].sum(1) - 2
            emb = torch.zeros(len(hidden), n, hidden.shape[-1])
            emb[:, : hidden.shape[1] - 1] = hidden[:, 1 : n + 1]
            mask = (torch.arange(n)[None] < length[:, None]).numpy()
            emb = (emb * torch.as_tensor(mask)[..., None]).numpy()
        else:
            emb = mean_pool(hidden, batch["attention_mask"]).numpy()
        yield emb.astype(np.float32), mask, batch["labels"].numpy(), batch["index"].numpy()


@torch.no_grad()
def embed(model, data, out: str | Path, per_particle: bool = False, batch_size: int = 256, limit: int | None = None, revision: str | None = None, progress: bool = True) -> Path:
    """Pooled backbone outputs (mean over the jet's tokens) per jet, or hidden states per particle,
    written with each jet's label, source file and row in that file so results join back. Deterministic."""
    out = Path(out)
    if out.suffix not in (".h5", ".hdf5", ".parquet"):
        raise InputError(f"{out}: the output must end in .h5 or .parquet")
    check_output(out)
    bundle = load_bundle(model, model_class=JetTransformerModel, revision=revision)
    device = inference_device()
    backbone = bundle.model.eval().to(device)
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config, kinematics=backbone.config.interaction_attention)
    dataset = jet_dataset(data, inputs, limit=limit)
    meta = {
        "model": str(bundle.path),
        "class_names": dataset.class_names,
        "files": [str(p) for p in dataset.collection.paths],
        "pooling": "per-particle hidden states" if per_particle else "mean over the jet's tokens (start, particles, stop)",
        "attention": backbone.config.default_attention,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    sink_class = _ParquetSink if out.suffix == ".parquet" else _H5Sink
    sink = sink_class(out, backbone.config.hidden_size, inputs.max_particles if per_particle else None, meta)
    try:
        for emb, mask, label, index in embedding_batches(backbone, dataset, inputs, per_particle, batch_size, progress, device):
            require_finite(emb, f"embeddings of jets {int(index[0])}..{int(index[-1])}", bundle.path)
            sink.write(emb, mask, label, *dataset.collection.locate(index))
    except BaseException:
        sink.abort()  # nothing half-written is left under the output name
        raise
    sink.close()
    return out
