"""Opening jet files of any supported format, and treating many files (shards) as one set."""

from __future__ import annotations

import glob
import os
from bisect import bisect_right
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Protocol

import h5py
import numpy as np

from foundation.data.jets import JetArrays
from foundation.errors import DataFormatError, InputError, one_line
from foundation.outputs import temporary_path

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_ROOT_MAGIC = b"root"
DATA_SUFFIXES = (".h5", ".hdf5", ".root")


def check_output(path: str | Path, folder: bool = False) -> Path:
    """Refuse, before any work, an output that cannot be written: a parent (or the path, for a
    `folder`) that is a file, or a folder that is not writable. Returns the path."""
    path = Path(path)
    if folder and path.is_file():
        raise InputError(f"{path}: is a file; expected an output folder")
    if not folder and path.is_dir():
        raise InputError(f"{path}: is a folder; expected an output file")
    existing = path if folder and path.exists() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{path}: cannot be written, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise InputError(f"{path}: cannot be written, {existing} is not writable")
    return path


class AtomicH5Writer:
    """An HDF5 file built row by row in `<path>.tmp` and renamed to `path` on `close()`, so a
    killed job never leaves a half-written file under the final name. Subclasses create their
    datasets (first axis resizable) and call `_append_rows`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = temporary_path(self.path)
        self._tmp.unlink(missing_ok=True)  # a stale one from a killed process is replaced, not an obstacle
        self._file = h5py.File(self._tmp, "w")
        self.num_jets = 0

    def _append_rows(self, rows: Iterable[tuple[h5py.Dataset, np.ndarray]], count: int) -> None:
        j0, j1 = self.num_jets, self.num_jets + count
        for dataset, value in rows:
            dataset.resize(j1, axis=0)
            dataset[j0:j1] = value
        self.num_jets = j1

    def close(self) -> Path:
        self._file.close()
        os.replace(self._tmp, self.path)
        return self.path

    def abort(self) -> None:
        self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def check_layout(f: h5py.File, path: Path, format_name: str, datasets: Iterable[str], hint: str = "") -> None:
    """Refuse an HDF5 file that is not `format_name` or lacks one of `datasets`, naming the file."""
    if f.attrs.get("format") != format_name:
        raise DataFormatError(path, "format", f"not a {format_name} file{hint}")
    for name in datasets:
        if name not in f:
            raise DataFormatError(path, name, "dataset is missing")


class LazyFile:
    """A reader's file handle: opened on first use (subclasses say how, in `_open`), dropped when
    the reader is pickled into DataLoader workers (each opens its own), closed with the reader."""

    _handle_object = None
    # `data convert --drop-invalid`: physically impossible jets are dropped and counted, not refused.
    drop_invalid = False
    dropped = 0

    def checked(self, jets: JetArrays, where: str) -> JetArrays:
        """`jets` read from this file, validated (JetArrays.validate), or without the impossible
        ones when drop_invalid is set."""
        if not self.drop_invalid:
            jets.validate(where)
            return jets
        jets.check_shapes(where)
        jets.check_labels(where)
        jets, dropped = jets.without_invalid()
        self.dropped += dropped
        return jets

    def _open(self):
        raise NotImplementedError

    def handle(self):
        if self._handle_object is None:
            self._handle_object = self._open()
        return self._handle_object

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_handle_object"] = None
        return state

    def close(self) -> None:
        if self._handle_object is not None:
            self._handle_object.close()
            self._handle_object = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: the handle may already be gone
            pass


class JetSource(Protocol):
    """One file of jets, read lazily. Every format's reader has this shape."""

    path: Path
    class_names: list[str]
    format_name: str

    def __len__(self) -> int: ...

    def read(self, start: int, stop: int) -> JetArrays: ...


def detect_format(path: str | Path) -> str:
    """'canonical', 'toptagging' or 'jetclass', from the file's content (not its name)."""
    path = Path(path)
    if not path.exists():
        raise DataFormatError(path, None, "file does not exist")
    if path.is_dir():
        raise DataFormatError(path, None, "is a folder; expected a file")
    with open(path, "rb") as fh:
        head = fh.read(8)
    if head.startswith(_ROOT_MAGIC):
        return "jetclass"
    if head != _HDF5_MAGIC:
        raise DataFormatError(path, None, f"unknown format: neither HDF5 nor ROOT (first bytes {head!r})")
    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") == "foundation-jets":
                return "canonical"
            if f.attrs.get("format") == "foundation-tokens":
                raise DataFormatError(path, "format", "is a token file; expected jets (use it where tokens are asked for)")
            # pandas' HDFStore marks its groups with a pandas_type attribute.
            if any("pandas_type" in f[k].attrs for k in f.keys() if isinstance(f[k], h5py.Group)):
                return "toptagging"
    except OSError as err:  # h5py: a truncated or corrupted file
        raise DataFormatError(path, None, f"cannot be read as HDF5, truncated or corrupted ({one_line(err)})") from err
    raise DataFormatError(
        path, None, "unknown HDF5 layout: not a foundation-jets file nor a pandas table (top tagging landscape format)"
    )


def open_source(path: str | Path, max_particles: int | None = None) -> JetSource:
    """Open one file of any supported format."""
    kind = detect_format(path)
    if kind == "canonical":
        from foundation.data.canonical import CanonicalSource

        return CanonicalSource(path)
    if kind == "toptagging":
        from foundation.data.formats.toptagging import TopTaggingSource

        return TopTaggingSource(path)
    from foundation.data.formats.jetclass import JetClassSource

    return JetClassSource(path, max_particles=max_particles or 128)


def expand_paths(spec: str | Path | Sequence[str | Path]) -> list[Path]:
    """Files named by a path, a folder (all data files in it, sorted), a glob, or a list of these."""
    if isinstance(spec, (str, Path)):
        spec = [spec]
    files: list[Path] = []
    for item in spec:
        item_str = str(item)
        p = Path(item_str)
        if any(ch in item_str for ch in "*?["):
            matched = sorted(Path(m) for m in glob.glob(item_str))
            if not matched:
                raise DataFormatError(item_str, None, "no file matches this pattern")
            files.extend(matched)
        elif p.is_dir():
            inside = sorted(q for q in p.iterdir() if q.suffix in DATA_SUFFIXES and q.is_file())
            if not inside:
                raise DataFormatError(p, None, f"folder holds no data files ({', '.join(DATA_SUFFIXES)})")
            files.extend(inside)
        elif p.exists():
            files.append(p)
        else:
            raise DataFormatError(p, None, "file does not exist")
    return files


class ArraySource:
    """Jets held in memory (a JetArrays) seen as one file: the Python API feeds arrays through the
    same datasets and collators as files. Its `path` names it in outputs (source_file)."""

    format_name = "memory"

    def __init__(self, jets: JetArrays, name: str = "<memory>"):
        self.jets = jets.sorted_by_pt()  # file readers give pT-ordered constituents; so do arrays
        self.path = Path(name)
        self.class_names = list(jets.class_names)

    def __len__(self) -> int:
        return len(self.jets)

    def read(self, start: int, stop: int) -> JetArrays:
        return self.jets.subset(slice(start, stop))


class JetCollection:
    """Several sources (shards) seen as one indexable set of jets."""

    def __init__(self, sources: Sequence[JetSource]):
        if not sources:
            raise ValueError("a jet collection needs at least one file")
        names = sources[0].class_names
        for s in sources[1:]:
            if s.class_names != names:
                raise DataFormatError(s.path, "class_names", f"{s.class_names} differ from {names} in {sources[0].path}")
        self.sources = list(sources)
        self.class_names = list(names)
        self.offsets = np.cumsum([0] + [len(s) for s in sources])  # (S+1,)

    @classmethod
    def open(cls, spec: str | Path | Sequence[str | Path], max_particles: int | None = None, allow_empty: bool = False) -> JetCollection:
        """The jets of `spec`; refused when there are none (all files empty), unless `allow_empty`."""
        collection = cls([open_source(p, max_particles) for p in expand_paths(spec)])
        if not allow_empty and not len(collection):
            names = ", ".join(str(p) for p in collection.paths)
            raise DataFormatError(names, None, "holds no jets" if len(collection.sources) == 1 else "these files hold no jets")
        return collection

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def paths(self) -> list[Path]:
        return [s.path for s in self.sources]

    def _locate(self, index: int) -> tuple[int, int]:
        shard = bisect_right(self.offsets, index) - 1
        return shard, index - int(self.offsets[shard])

    def locate(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(file path as str, row in that file) of each jet index of the whole set: (J,), (J,)."""
        indices = np.asarray(indices, dtype=np.int64)
        shard = np.searchsorted(self.offsets, indices, side="right") - 1
        paths = np.array([str(p) for p in self.paths], dtype=object)
        return paths[shard], indices - self.offsets[shard]

    def read(self, start: int, stop: int) -> JetArrays:
        """Jets [start, stop) of the whole set, across shard boundaries."""
        stop = min(stop, len(self))
        parts = []
        pos = start
        while pos < stop:
            shard, local = self._locate(pos)
            take = min(stop - pos, len(self.sources[shard]) - local)
            parts.append(self.sources[shard].read(local, local + take))
            pos += take
        return JetArrays.concatenate(parts or [self.sources[0].read(0, 0)])  # none: an empty set

    def read_indices(self, indices: Iterable[int]) -> JetArrays:
        """Jets at arbitrary indices, in the order given; contiguous runs are read in one go."""
        idx = np.asarray(list(indices), dtype=np.int64)
        order = np.argsort(idx, kind="stable")
        sorted_idx = idx[order]
        # Split the sorted indices into runs of consecutive values: one slice read per run.
        breaks = np.flatnonzero(np.diff(sorted_idx) != 1) + 1
        parts = []
        for run in np.split(sorted_idx, breaks):
            if len(run):
                parts.append(self.read(int(run[0]), int(run[-1]) + 1))
        # A repeated index (padding of a last batch) starts a run of its own, so the rows read
        # match sorted_idx one to one.
        joined = JetArrays.concatenate(parts)
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        return joined.subset(inverse)

    def labels(self) -> np.ndarray:
        """(J,) labels of all jets; read alone where the format allows (no constituents)."""
        return self._per_jet("label", "read_labels")

    def multiplicities(self) -> np.ndarray:
        """(J,) constituents per jet; read alone where the format stores it."""
        return self._per_jet("multiplicity", "read_multiplicities")

    def _per_jet(self, field: str, reader: str) -> np.ndarray:
        """One value per jet over all sources (cached): from the source's own `reader` method where
        it has one, else from whole jets read in large slices."""
        cache = self.__dict__.setdefault("_per_jet_cache", {})
        if field not in cache:
            parts = []
            for source in self.sources:
                read = getattr(source, reader, None)
                if read is not None:
                    parts.append(read())
                else:
                    parts += [getattr(source.read(s, min(s + 65536, len(source))), field) for s in range(0, len(source), 65536)]
            cache[field] = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        return cache[field]

    def read_all(self, limit: int | None = None) -> JetArrays:
        return self.read(0, len(self) if limit is None else min(limit, len(self)))
