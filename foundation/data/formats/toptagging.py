"""Reader of the public top tagging landscape data set (Kasieczka et al., arXiv:1902.09914).

Each file is a pandas HDFStore with one DataFrame under the key ``table``, one row per jet:

    E_0..E_{N-1}, PX_0.., PY_0.., PZ_0..   float32  constituent 4-momenta [GeV], zero-padded (N = 200)
    truthE, truthPX, truthPY, truthPZ      float32  top-quark 4-momentum (zero for QCD)
    is_signal_new                          int      label: 0 QCD, 1 top
    ttv                                    int      split: 0 train, 1 test, 2 validation

The public files were written with ``DataFrame.to_hdf(path, key="table")`` in pandas' default
*fixed* format; files in ``format="table"`` are read as well. Both are read lazily: pandas'
``HDFStore.select(key, start=, stop=)`` slices the rows of the underlying PyTables arrays
(fixed format: ``block*_values[start:stop]``; table format: the table rows), so only the
requested jets are loaded.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from foundation.data.jets import JetArrays
from foundation.data.sources import LazyFile
from foundation.errors import DataFormatError, one_line

logger = logging.getLogger(__name__)

KEY = "table"
LABEL_COLUMN = "is_signal_new"
SPLIT_COLUMN = "ttv"
CLASS_NAMES = ["qcd", "top"]
# File column prefix of each entry of the last axis of JetArrays.constituents (E, px, py, pz).
MOMENTUM_PREFIXES = ("E", "PX", "PY", "PZ")
_COLUMN = re.compile(r"^(E|PX|PY|PZ)_(\d+)$")


def _particle_count(path: Path, columns: list[str]) -> int:
    """N from the columns E_0..E_{N-1}, PX_.., PY_.., PZ_..; raise if a set is incomplete."""
    indices: dict[str, set[int]] = {p: set() for p in MOMENTUM_PREFIXES}
    for col in columns:
        m = _COLUMN.match(str(col))
        if m:
            indices[m.group(1)].add(int(m.group(2)))
    for prefix in MOMENTUM_PREFIXES:
        if not indices[prefix]:
            raise DataFormatError(
                path, f"{prefix}_*", f"no {prefix}_0, {prefix}_1, ... columns (constituent momenta)"
            )
    n = max(len(s) for s in indices.values())
    for prefix in MOMENTUM_PREFIXES:
        missing = sorted(set(range(n)) - indices[prefix])
        if missing:
            shown = ", ".join(f"{prefix}_{i}" for i in missing[:5]) + (", ..." if len(missing) > 5 else "")
            raise DataFormatError(
                path,
                f"{prefix}_{missing[0]}",
                f"{len(missing)} of the {n} {prefix}_* columns are missing ({shown})",
            )
        extra = sorted(indices[prefix] - set(range(n)))
        if extra:
            raise DataFormatError(
                path, f"{prefix}_{extra[0]}", f"{prefix}_* columns do not run 0..{n - 1} like the others"
            )
    return n


class TopTaggingSource(LazyFile):
    """Lazy reader of one top tagging landscape file (a JetSource)."""

    format_name = "toptagging"

    def __init__(self, path: str | Path):
        import pandas as pd

        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError(self.path, None, "file does not exist")
        self.class_names = list(CLASS_NAMES)
        try:
            with pd.HDFStore(self.path, mode="r") as store:
                if f"/{KEY}" not in store.keys():
                    raise DataFormatError(
                        self.path, KEY, f"no DataFrame under the key '{KEY}' (keys: {store.keys()})"
                    )
                storer = store.get_storer(KEY)
                kind = getattr(storer, "pandas_kind", None) or getattr(storer, "pandas_type", None)
                if kind not in ("frame", "frame_table"):
                    raise DataFormatError(self.path, KEY, f"holds a pandas '{kind}', expected a DataFrame")
                self.is_table = bool(storer.is_table)
                self._num_jets = int(storer.nrows if self.is_table else storer.shape[0])
                columns = [str(c) for c in store.select(KEY, start=0, stop=0).columns]
        except DataFormatError:
            raise
        except (OSError, ValueError, TypeError, AttributeError) as err:
            raise DataFormatError(self.path, KEY, f"cannot be read as a pandas HDFStore ({err})") from err
        self.columns = columns
        self.max_particles = _particle_count(self.path, columns)
        if LABEL_COLUMN not in columns:
            raise DataFormatError(self.path, LABEL_COLUMN, "label column is missing (0 QCD, 1 top)")
        self.has_split = SPLIT_COLUMN in columns
        # Column order of the momenta: E_0..E_{N-1}, PX_0.., PY_0.., PZ_0..
        self._momentum_columns = [f"{p}_{i}" for p in MOMENTUM_PREFIXES for i in range(self.max_particles)]
        self.metadata = {"source_file": str(self.path), "source_format": self.format_name}
        logger.debug(
            "%s: %d jets, %d constituents, %s format",
            self.path,
            self._num_jets,
            self.max_particles,
            "table" if self.is_table else "fixed",
        )

    def __len__(self) -> int:
        return self._num_jets

    def _open(self):
        import pandas as pd

        return pd.HDFStore(self.path, mode="r")

    def _select(self, start: int, stop: int, columns: list[str] | None = None):
        """Rows [start, stop) as a DataFrame; only those rows are read from disk."""
        start, stop = max(0, int(start)), min(int(stop), self._num_jets)
        stop = max(start, stop)
        # Fixed format reads whole rows (pandas refuses `columns=` there); pick the columns after.
        df = self.handle().select(KEY, start=start, stop=stop, columns=columns if self.is_table else None)
        return df if columns is None else df[columns]

    def _labels_from(self, values: np.ndarray, start: int) -> np.ndarray:
        values = np.asarray(values)
        bad = ~np.isin(values, (0, 1))
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise DataFormatError(
                self.path, LABEL_COLUMN, f"value {values[i]!r} in row {start + i} is not 0 (QCD) or 1 (top)"
            )
        return values.astype(np.int64)

    def read(self, start: int, stop: int) -> JetArrays:
        try:
            df = self._select(start, stop)
        except (OSError, ValueError, KeyError) as err:  # PyTables / pandas on a truncated or corrupted file
            raise DataFormatError(self.path, KEY, f"rows {start}..{stop} cannot be read, truncated or corrupted file ({one_line(err)})") from err
        start = max(0, int(start))
        j, n = len(df), self.max_particles
        p = df[self._momentum_columns].to_numpy(dtype=np.float32)  # (J, 4N)
        p = p.reshape(j, 4, n).transpose(0, 2, 1)  # (J, N, 4): E, px, py, pz
        label = self._labels_from(df[LABEL_COLUMN].to_numpy(), start)
        finite = np.isfinite(p)  # (J, N, 4)
        if not finite.all() and not self.drop_invalid:
            row, i, k = (int(x[0]) for x in np.nonzero(~finite))
            raise DataFormatError(
                self.path,
                f"{MOMENTUM_PREFIXES[k]}_{i}",
                f"NaN or inf in row {start + row} ({int((~finite).sum())} values)",
            )
        # Padding is all zeros; anything else is a particle (one with E <= 0 is then refused as impossible).
        mask = (p != 0).any(axis=2)  # (J, N)
        jets = JetArrays(
            constituents=np.ascontiguousarray(p, dtype=np.float32),
            mask=mask,
            charge=np.zeros((j, n), np.int8),
            pid=np.zeros((j, n), np.int32),
            label=label,
            class_names=list(self.class_names),
            metadata=dict(self.metadata),
        ).sorted_by_pt()
        return self.checked(jets, f"{self.path} (jets {start}..{start + j})")

    def read_labels(self) -> np.ndarray:
        """(J,) labels of all jets, read in chunks (whole rows in fixed format)."""
        return self._column(LABEL_COLUMN, 0, self._num_jets, self._labels_from)

    def ttv(self, start: int = 0, stop: int | None = None) -> np.ndarray | None:
        """(J,) split of rows [start, stop): 0 train, 1 test, 2 validation; None if the file has none."""
        if not self.has_split:
            return None
        stop = self._num_jets if stop is None else stop
        return self._column(SPLIT_COLUMN, start, stop, lambda v, _: np.asarray(v).astype(np.int64))

    def _column(self, name: str, start: int, stop: int, convert, chunk: int = 65536) -> np.ndarray:
        stop = min(stop, self._num_jets)
        parts = [
            convert(self._select(s, min(s + chunk, stop), [name])[name].to_numpy(), s)
            for s in range(max(0, start), stop, chunk)
        ]
        return np.concatenate(parts) if parts else np.zeros(0, np.int64)
