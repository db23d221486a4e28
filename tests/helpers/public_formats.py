"""Writers of tiny files in the public formats, laid out exactly like the published data sets."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from foundation.data.jets import JetArrays, jet_kinematics

JETCLASS_CLASSES = ["QCD", "Hbb", "Hcc", "Hgg", "H4q", "Hqql", "Zqq", "Wqq", "Tbqq", "Tbl"]


def random_jets(
    num_jets: int,
    max_particles: int,
    class_names: Sequence[str] = ("qcd", "top"),
    seed: int = 0,
    with_pid: bool = False,
) -> JetArrays:
    """Jets of massless constituents around a random axis, pT-ordered, 1..max_particles each."""
    rng = np.random.default_rng(seed)
    j, n = num_jets, max_particles
    mult = rng.integers(1, n + 1, size=j)  # (J,)
    mask = np.arange(n)[None, :] < mult[:, None]  # (J, N)
    pt = rng.uniform(1.0, 200.0, size=(j, n))
    eta = rng.normal(0.0, 1.0, size=(j, 1)) + rng.normal(0.0, 0.3, size=(j, n))
    phi = rng.uniform(-np.pi, np.pi, size=(j, 1)) + rng.normal(0.0, 0.3, size=(j, n))
    p = np.stack(
        [pt * np.cosh(eta), pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)], axis=-1
    )  # (J, N, 4)
    p = np.where(mask[..., None], p, 0.0).astype(np.float32)
    # pT order as the readers compute it (float32), hardest first, padding last.
    key = np.where(mask, np.hypot(p[..., 1], p[..., 2]), -1.0)
    order = np.argsort(-key, axis=1, kind="stable")
    p = np.take_along_axis(p, order[..., None], axis=1)
    charge = np.zeros((j, n), np.int8)
    pid = np.zeros((j, n), np.int32)
    if with_pid:
        choices = np.array([11, -11, 13, -13, 22, 211, -211, 130], np.int32)
        charges = np.array([-1, 1, -1, 1, 0, 1, -1, 0], np.int8)
        k = rng.integers(0, len(choices), size=(j, n))
        pid = np.where(mask, choices[k], 0).astype(np.int32)
        charge = np.where(mask, charges[k], 0).astype(np.int8)
    label = (np.arange(j) % len(class_names)).astype(np.int64)
    return JetArrays(p, mask, charge, pid, label, list(class_names))


def write_toptagging_file(
    path: str | Path,
    jets: JetArrays,
    fmt: str = "fixed",
    n_constituents: int = 200,
    ttv: np.ndarray | None = None,
    key: str = "table",
    drop_columns: Sequence[str] = (),
) -> Path:
    """A pandas HDFStore like the top tagging landscape files: E_i, PX_i, PY_i, PZ_i (float32),
    truthE.. (float32), ttv and is_signal_new (int64) under `key`, in `fmt` ("fixed" or "table").

    Labels are written as given (no check), so bad files can be made too.
    """
    import pandas as pd

    jets = jets.padded_to(n_constituents)
    c = np.where(jets.mask[..., None], jets.constituents, 0).astype(np.float32)  # (J, N, 4)
    columns: dict[str, np.ndarray] = {}
    for i in range(n_constituents):  # E_0, PX_0, PY_0, PZ_0, E_1, ... as in the public files
        for k, prefix in enumerate(("E", "PX", "PY", "PZ")):
            columns[f"{prefix}_{i}"] = c[:, i, k]
    # Truth top 4-momentum: stand-in from the summed constituents, zero for QCD.
    total = c.astype(np.float64).sum(axis=1)  # (J, 4)
    is_top = (jets.label == 1)[:, None]
    truth = np.where(is_top, total, 0.0).astype(np.float32)
    for k, name in enumerate(("truthE", "truthPX", "truthPY", "truthPZ")):
        columns[name] = truth[:, k]
    columns["ttv"] = np.zeros(len(jets), np.int64) if ttv is None else np.asarray(ttv, np.int64)
    columns["is_signal_new"] = np.asarray(jets.label, np.int64)
    for name in drop_columns:
        del columns[name]
    df = pd.DataFrame(columns)
    df.to_hdf(path, key=key, format=fmt, mode="w")
    return Path(path)


def _pid_flags(pid: np.ndarray, charge: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
    a = np.abs(pid)
    lepton = (a == 11) | (a == 13)
    return {
        "isElectron": mask & (a == 11),
        "isMuon": mask & (a == 13),
        "isPhoton": mask & (a == 22),
        "isChargedHadron": mask & (charge != 0) & ~lepton,
        "isNeutralHadron": mask & (charge == 0) & (a != 22) & (a != 0) & ~lepton,
    }


def write_jetclass_file(
    path: str | Path,
    jets: JetArrays,
    onehot: np.ndarray | None = None,
    tree_name: str = "tree",
    drop_branches: Sequence[str] = (),
) -> Path:
    """A ROOT file like the JetClass ones: TTree `tree_name` with jagged part_* branches (float32),
    jet_* branches from the summed constituents and the 10 one-hot label_* branches (bool).

    onehot: (J, 10) labels to write instead of those from jets.label (to make bad files).
    """
    import awkward as ak
    import uproot

    counts = jets.multiplicity  # (J,)
    mask = jets.mask
    c = jets.constituents

    def jagged(values: np.ndarray):
        return ak.unflatten(np.asarray(values[mask], np.float32), counts)

    kin = jet_kinematics(c, mask)
    pt = np.hypot(c[..., 1], c[..., 2]).astype(np.float64)
    eta = np.arcsinh(np.divide(c[..., 3], pt, out=np.zeros_like(pt), where=pt > 0))
    phi = np.arctan2(c[..., 2], c[..., 1])
    dphi = (phi - kin["phi"][:, None] + np.pi) % (2 * np.pi) - np.pi
    fields = {
        "px": jagged(c[..., 1]),
        "py": jagged(c[..., 2]),
        "pz": jagged(c[..., 3]),
        "energy": jagged(c[..., 0]),
        "deta": jagged(eta - kin["eta"][:, None]),
        "dphi": jagged(dphi),
        "charge": jagged(jets.charge.astype(np.float32)),
    }
    for name, flag in _pid_flags(jets.pid, jets.charge, mask).items():
        fields[name] = jagged(flag.astype(np.float32))
    fields = {k: v for k, v in fields.items() if f"part_{k}" not in drop_branches}
    branches: dict = {"part": ak.zip(fields)}
    for name in ("pt", "eta", "phi", "energy"):
        branches[f"jet_{name}"] = kin[name].astype(np.float32)
    branches["jet_nparticles"] = counts.astype(np.float32)
    branches["jet_sdmass"] = kin["mass"].astype(np.float32)
    if onehot is None:
        onehot = np.eye(len(JETCLASS_CLASSES), dtype=bool)[jets.label]
    for k, name in enumerate(JETCLASS_CLASSES):
        branches[f"label_{name}"] = np.asarray(onehot[:, k]).astype(bool)
    branches = {k: v for k, v in branches.items() if k not in drop_branches}
    with uproot.recreate(path) as f:
        # mktree makes a TTree (like the published files); `f[name] = ...` would make an RNTuple.
        tree = f.mktree(
            tree_name,
            {name: value.type if name == "part" else value.dtype for name, value in branches.items()},
        )
        tree.extend(branches)
    return Path(path)
