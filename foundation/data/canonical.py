"""The project's own HDF5 layout for jets (documented in README, section "Data layout").

One file (or shard) holds:

    constituents  (J, N, 4) float32   E, px, py, pz of each constituent [GeV], pT-ordered, zero-padded
    mask          (J, N)    bool      True for a real constituent
    charge        (J, N)    int8      electric charge (0 for neutral, unknown or padded)
    pid           (J, N)    int32     PDG id (0 where unknown or padded)
    label         (J,)      int64     class index into the `class_names` attribute
    jet/pt, jet/eta, jet/phi, jet/mass, jet/energy  (J,) float64, summed over the constituents
    jet/multiplicity (J,)   int64
    attributes: format="foundation-jets", format_version=1, class_names (JSON list),
                metadata (JSON: generator settings, seed, package versions, source file, ...)

A large data set is a folder of such files (shards); every reader takes a file, a folder or a glob.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from foundation.data.jets import MOMENTUM_COLUMNS, JetArrays, jet_kinematics
from foundation.data.sources import AtomicH5Writer, LazyFile, check_layout
from foundation.errors import DataFormatError, one_line

FORMAT_NAME = "foundation-jets"
FORMAT_VERSION = 1
_PER_PARTICLE = {"constituents": np.float32, "mask": np.bool_, "charge": np.int8, "pid": np.int32}
_JET_FIELDS = ("pt", "eta", "phi", "mass", "energy", "multiplicity")


def is_canonical(path: str | Path) -> bool:
    try:
        with h5py.File(path, "r") as f:
            return f.attrs.get("format") == FORMAT_NAME
    except OSError:
        return False


class CanonicalWriter(AtomicH5Writer):
    """Appends jets to a canonical file (written atomically: see AtomicH5Writer)."""

    def __init__(
        self,
        path: str | Path,
        max_particles: int,
        class_names: list[str],
        metadata: dict | None = None,
        chunk_jets: int = 16,
    ):
        super().__init__(path)
        self.max_particles = max_particles
        self.class_names = list(class_names)
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = FORMAT_VERSION
        f.attrs["class_names"] = json.dumps(self.class_names)
        f.attrs["metadata"] = json.dumps(metadata or {})
        n = max_particles
        self._datasets = {}
        for name, dtype in _PER_PARTICLE.items():
            shape = (0, n, 4) if name == "constituents" else (0, n)
            chunks = (chunk_jets, n, 4) if name == "constituents" else (chunk_jets, n)
            self._datasets[name] = f.create_dataset(
                name, shape=shape, maxshape=(None,) + shape[1:], dtype=dtype, chunks=chunks, compression="gzip", compression_opts=1
            )
        self._datasets["constituents"].attrs["columns"] = json.dumps(list(MOMENTUM_COLUMNS))
        self._datasets["label"] = f.create_dataset("label", shape=(0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))
        jet = f.create_group("jet")
        for name in _JET_FIELDS:
            dtype = np.int64 if name == "multiplicity" else np.float64
            self._datasets["jet/" + name] = jet.create_dataset(name, shape=(0,), maxshape=(None,), dtype=dtype, chunks=(4096,))

    def set_metadata(self, metadata: dict) -> None:
        self._file.attrs["metadata"] = json.dumps(metadata)

    def append(self, jets: JetArrays) -> None:
        if jets.class_names != self.class_names:
            raise ValueError(f"{self.path}: classes {jets.class_names} differ from the file's {self.class_names}")
        jets = jets.sorted_by_pt().padded_to(self.max_particles)
        values = {
            "constituents": jets.constituents,
            "mask": jets.mask,
            "charge": jets.charge,
            "pid": jets.pid,
            "label": jets.label,
        }
        for name, value in jet_kinematics(jets.constituents, jets.mask).items():
            values["jet/" + name] = value
        self._append_rows(((self._datasets[name], value) for name, value in values.items()), len(jets))


def write_jets(path: str | Path, jets: JetArrays, metadata: dict | None = None) -> Path:
    """Write a whole JetArrays to a canonical file."""
    meta = dict(jets.metadata)
    meta.update(metadata or {})
    with CanonicalWriter(path, jets.max_particles, jets.class_names, meta) as w:
        w.append(jets)
    return Path(path)


class CanonicalSource(LazyFile):
    """Lazy reader of one canonical file: only the requested jets are read from disk."""

    format_name = "canonical"

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError(self.path, None, "file does not exist")
        try:
            with h5py.File(self.path, "r") as f:
                check_layout(f, self.path, FORMAT_NAME, (*_PER_PARTICLE, "label"))
                self._num_jets = int(f["constituents"].shape[0])
                self.max_particles = int(f["mask"].shape[1])
                try:
                    self.class_names = list(json.loads(f.attrs["class_names"]))
                    self.metadata = dict(json.loads(f.attrs.get("metadata", "{}")))
                except (KeyError, json.JSONDecodeError) as err:
                    raise DataFormatError(self.path, "class_names", f"attribute missing or not JSON ({err})") from err
                cshape = f["constituents"].shape
                if len(cshape) != 3 or cshape[2] != 4 or cshape[0] != self._num_jets:
                    raise DataFormatError(
                        self.path, "constituents", f"expected shape ({self._num_jets}, particles, 4), got {cshape}"
                    )
                for name in ("mask", "charge", "pid"):
                    if f[name].shape != cshape[:2]:
                        raise DataFormatError(self.path, name, f"expected shape {cshape[:2]}, got {f[name].shape}")
                if f["label"].shape != cshape[:1]:
                    raise DataFormatError(self.path, "label", f"expected one label per jet, shape {cshape[:1]}, got {f['label'].shape}")
        except OSError as err:
            raise DataFormatError(self.path, None, f"cannot be read as HDF5, truncated or corrupted ({one_line(err)})") from err

    def __len__(self) -> int:
        return self._num_jets

    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r")

    def read_labels(self) -> np.ndarray:
        labels = self.handle()["label"][:]
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.class_names)):
            raise DataFormatError(self.path, "label", f"labels outside the {len(self.class_names)} classes {self.class_names}")
        return labels

    def read_multiplicities(self) -> np.ndarray:
        f = self.handle()
        if "jet/multiplicity" in f:
            return f["jet/multiplicity"][:]
        return f["mask"][:].sum(axis=1)

    def read(self, start: int, stop: int) -> JetArrays:
        try:
            f = self.handle()
            arrays = {name: f[name][start:stop] for name in (*_PER_PARTICLE, "label")}
        except OSError as err:  # h5py: a chunk beyond the end of a truncated file, a bad checksum
            raise DataFormatError(self.path, None, f"jets {start}..{stop} cannot be read, truncated or corrupted file ({one_line(err)})") from err
        jets = JetArrays(
            **arrays, class_names=list(self.class_names), metadata=dict(self.metadata)
        ).sorted_by_pt()  # files written elsewhere need not be ordered
        return self.checked(jets, f"{self.path} (jets {start}..{stop})")
