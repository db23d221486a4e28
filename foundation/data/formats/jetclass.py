"""Reader of JetClass ROOT files (Qu, Li, Qian, arXiv:2202.03772), with uproot + awkward.

Each file holds a TTree ``tree``, one entry per jet:

    part_px, part_py, part_pz, part_energy   jagged float   constituent 4-momenta [GeV]
    part_charge                              jagged float   electric charge
    part_isChargedHadron, part_isNeutralHadron, part_isPhoton, part_isElectron, part_isMuon
                                             jagged         particle-type flags (0/1)
    jet_pt, jet_eta, jet_phi, jet_energy, jet_nparticles, jet_sdmass, ...   per jet
    label_QCD, label_Hbb, ..., label_Tbl     one-hot class of the jet

Other branches (part_deta, part_d0val, ...) are not read. The PDG id is rebuilt from the flags and
the charge: e 11/-11, mu 13/-13 (sign opposite to the charge), photon 22, charged hadron
211 * charge, neutral hadron 130; 0 where no flag is set.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from foundation.data.jets import JetArrays
from foundation.data.sources import LazyFile
from foundation.errors import DataFormatError, one_line

logger = logging.getLogger(__name__)

TREE = "tree"
CLASS_NAMES = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]
LABEL_BRANCHES = [f"label_{name}" for name in CLASS_NAMES]
MOMENTUM_BRANCHES = ("part_energy", "part_px", "part_py", "part_pz")  # order of JetArrays' last axis
FLAG_BRANCHES = (
    "part_isChargedHadron",
    "part_isNeutralHadron",
    "part_isPhoton",
    "part_isElectron",
    "part_isMuon",
)
PARTICLE_BRANCHES = (*MOMENTUM_BRANCHES, "part_charge", *FLAG_BRANCHES)


def pid_from_flags(charge: np.ndarray, flags: dict[str, np.ndarray]) -> np.ndarray:
    """PDG id (int32, same shape as `charge`) from the JetClass particle-type flags."""
    q = charge.astype(np.int32)
    pid = np.zeros(q.shape, np.int32)
    pid = np.where(flags["part_isNeutralHadron"] != 0, 130, pid)
    pid = np.where(flags["part_isChargedHadron"] != 0, 211 * q, pid)
    pid = np.where(flags["part_isPhoton"] != 0, 22, pid)
    pid = np.where(flags["part_isElectron"] != 0, -11 * q, pid)
    pid = np.where(flags["part_isMuon"] != 0, -13 * q, pid)
    return pid.astype(np.int32)


class JetClassSource(LazyFile):
    """Lazy reader of one JetClass ROOT file (a JetSource): only the requested entries are read."""

    format_name = "jetclass"

    def __init__(self, path: str | Path, max_particles: int = 128):
        import uproot

        self.path = Path(path)
        if not self.path.exists():
            raise DataFormatError(self.path, None, "file does not exist")
        if max_particles < 1:
            raise ValueError(f"max_particles must be at least 1, got {max_particles}")
        self.max_particles = int(max_particles)
        self.class_names = list(CLASS_NAMES)
        try:
            with uproot.open(self.path) as f:
                if TREE not in f:
                    raise DataFormatError(
                        self.path, TREE, f"TTree '{TREE}' is missing (keys: {list(f.keys())})"
                    )
                tree = f[TREE]
                if not isinstance(tree, uproot.TTree):
                    raise DataFormatError(self.path, TREE, f"is a {type(tree).__name__}, expected a TTree")
                present = set(tree.keys())
                for name in (*PARTICLE_BRANCHES, *LABEL_BRANCHES):
                    if name not in present:
                        raise DataFormatError(self.path, name, f"branch is missing from TTree '{TREE}'")
                self._num_jets = int(tree.num_entries)
        except DataFormatError:
            raise
        except Exception as err:  # uproot raises many types for a file that is not ROOT
            raise DataFormatError(
                self.path, None, f"cannot be read as a ROOT file ({type(err).__name__}: {err})"
            ) from err
        self.metadata = {"source_file": str(self.path), "source_format": self.format_name}
        logger.debug("%s: %d jets, keeping %d particles", self.path, self._num_jets, self.max_particles)

    def __len__(self) -> int:
        return self._num_jets

    def _open(self):
        import uproot

        return uproot.open(self.path)

    def _tree(self):
        return self.handle()[TREE]

    def _range(self, start: int, stop: int) -> tuple[int, int]:
        start = max(0, int(start))
        return start, max(start, min(int(stop), self._num_jets))

    def _labels(self, arrays, start: int) -> np.ndarray:
        onehot = np.stack([np.asarray(arrays[b]).astype(np.int64) for b in LABEL_BRANCHES], axis=1)  # (J, C)
        ok = ((onehot == 0) | (onehot == 1)).all(axis=1) & (onehot.sum(axis=1) == 1)
        if not ok.all():
            i = int(np.flatnonzero(~ok)[0])
            values = ", ".join(f"{b}={v}" for b, v in zip(LABEL_BRANCHES, onehot[i], strict=True))
            raise DataFormatError(
                self.path,
                "label_*",
                f"entry {start + i} is not one-hot over the {len(LABEL_BRANCHES)} labels ({values})",
            )
        return onehot.argmax(axis=1).astype(np.int64)

    def read_labels(self) -> np.ndarray:
        """(J,) labels of all jets, without reading the particles."""
        start, stop = self._range(0, self._num_jets)
        return self._labels(self._arrays(LABEL_BRANCHES, start, stop, library="np"), start)

    def _arrays(self, branches: list[str], start: int, stop: int, **kwargs):
        """Entries [start, stop) of `branches`; a truncated or corrupted file gets one line."""
        import uproot

        try:
            return self._tree().arrays(branches, entry_start=start, entry_stop=stop, **kwargs)
        except (OSError, ValueError, KeyError, uproot.DeserializationError) as err:
            raise DataFormatError(
                self.path, None, f"entries {start}..{stop} cannot be read, truncated or corrupted file ({type(err).__name__}: {one_line(err)})"
            ) from err

    def read(self, start: int, stop: int) -> JetArrays:
        import awkward as ak

        start, stop = self._range(start, stop)
        arrays = self._arrays([*PARTICLE_BRANCHES, *LABEL_BRANCHES], start, stop)
        label = self._labels({b: ak.to_numpy(arrays[b]) for b in LABEL_BRANCHES}, start)
        n = self.max_particles
        # pT order, hardest first (stable), then cut or pad to n particles.
        pt = np.hypot(arrays["part_px"], arrays["part_py"])  # jagged (J, *)
        order = ak.argsort(pt, axis=1, ascending=False, stable=True)

        def padded(name: str, dtype) -> np.ndarray:  # (J, n)
            column = ak.pad_none(arrays[name][order], n, axis=1, clip=True)
            return ak.to_numpy(ak.fill_none(column, 0)).astype(dtype)

        counts = ak.to_numpy(ak.num(arrays["part_px"], axis=1))  # (J,)
        mask = np.arange(n)[None, :] < counts[:, None]  # (J, n)
        constituents = np.stack([padded(b, np.float32) for b in MOMENTUM_BRANCHES], axis=-1)  # (J, n, 4)
        charge = np.rint(padded("part_charge", np.float64)).astype(np.int8)  # (J, n)
        flags = {b: padded(b, np.float64) for b in FLAG_BRANCHES}
        pid = np.where(mask, pid_from_flags(charge, flags), 0).astype(np.int32)
        jets = JetArrays(
            constituents=np.ascontiguousarray(constituents),
            mask=mask,
            charge=np.where(mask, charge, 0).astype(np.int8),
            pid=pid,
            label=label,
            class_names=list(self.class_names),
            metadata=dict(self.metadata),
        )
        return self.checked(jets, f"{self.path} (jets {start}..{stop})")
