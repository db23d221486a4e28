"""Token files: jets as token sequences, written by `foundation tokenizer encode`.

    tokens   (J, L) int32   [start, codes..., stop, pad...] per jet (L = max particles + 2)
    length   (J,)   int32   number of real entries (start .. stop)
    label    (J,)   int64
    attributes: format="foundation-tokens", format_version=1, class_names (JSON),
                tokenizer (JSON: vocab_codes, start/stop/pad ids, the tokenizer's path and config),
                source (JSON: the jet files encoded)
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
from torch.utils.data import Dataset

from foundation.data.sources import AtomicH5Writer, LazyFile, check_layout
from foundation.errors import DataFormatError

FORMAT_NAME = "foundation-tokens"


class TokenWriter(AtomicH5Writer):
    """Appends token sequences to a token file (written atomically: see AtomicH5Writer)."""

    def __init__(self, path: str | Path, length: int, class_names: list[str], tokenizer_info: dict, source: dict):
        super().__init__(path)
        f = self._file
        f.attrs["format"] = FORMAT_NAME
        f.attrs["format_version"] = 1
        f.attrs["class_names"] = json.dumps(list(class_names))
        f.attrs["tokenizer"] = json.dumps(tokenizer_info)
        f.attrs["source"] = json.dumps(source)
        self._tokens = f.create_dataset("tokens", (0, length), maxshape=(None, length), dtype=np.int32, chunks=(64, length), compression="gzip", compression_opts=1)
        self._length = f.create_dataset("length", (0,), maxshape=(None,), dtype=np.int32, chunks=(4096,))
        self._label = f.create_dataset("label", (0,), maxshape=(None,), dtype=np.int64, chunks=(4096,))

    def append(self, tokens: np.ndarray, length: np.ndarray, label: np.ndarray) -> None:
        self._append_rows(((self._tokens, tokens), (self._length, length), (self._label, label)), len(tokens))


class TokenFile(LazyFile):
    """Lazy reader of a token file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError(self.path, None, "file does not exist")
        try:
            with h5py.File(self.path, "r") as f:
                check_layout(f, self.path, FORMAT_NAME, ("tokens", "length", "label"), " (encode jets with `foundation tokenizer encode`)")
                self.num_jets, self.sequence_length = f["tokens"].shape
                self.class_names = json.loads(f.attrs["class_names"])
                self.tokenizer_info = json.loads(f.attrs["tokenizer"])
                self.source = json.loads(f.attrs.get("source", "{}"))
        except OSError as err:
            raise DataFormatError(self.path, None, f"cannot be read as HDF5 ({err})") from err

    def __len__(self) -> int:
        return self.num_jets

    def _open(self) -> h5py.File:
        return h5py.File(self.path, "r")

    def read(self, index: np.ndarray) -> dict[str, np.ndarray]:
        order = np.argsort(index)
        sorted_index = index[order]
        inverse = np.empty_like(order)
        inverse[order] = np.arange(len(order))
        unique, back = np.unique(sorted_index, return_inverse=True)  # h5py needs increasing indices
        f = self.handle()
        out = {name: f[name][unique][back][inverse] for name in ("tokens", "length", "label")}
        vocab = self.tokenizer_info["vocab_size"]
        if (out["tokens"] < 0).any() or (out["tokens"] >= vocab).any():
            raise DataFormatError(self.path, "tokens", f"token ids outside the tokenizer's vocabulary [0, {vocab})")
        return out


class TokenDataset(Dataset):
    """Token sequences of a token file at the given indices: input_ids, attention_mask, labels."""

    def __init__(self, token_file: TokenFile, indices: np.ndarray):
        self.token_file = token_file
        self.indices = np.asarray(indices, dtype=np.int64)

    @property
    def class_names(self) -> list[str]:
        return self.token_file.class_names

    def __len__(self) -> int:
        return len(self.indices)

    def __getitems__(self, positions) -> dict[str, np.ndarray]:
        index = self.indices[np.asarray(positions, dtype=np.int64)]
        data = self.token_file.read(index)
        length = data["length"]
        attention_mask = np.arange(data["tokens"].shape[1])[None, :] < length[:, None]
        return {
            "input_ids": data["tokens"].astype(np.int64),  # (B, L)
            "attention_mask": attention_mask,  # (B, L)
            "labels": data["label"],  # (B,)
            "index": index,
        }

    def __getitem__(self, position: int) -> dict[str, np.ndarray]:
        return {k: v[0] for k, v in self.__getitems__([position]).items()}

    def lengths(self) -> np.ndarray:
        """(J,) sequence lengths, for length-grouped batches."""
        return self.token_file.handle()["length"][:][self.indices]
