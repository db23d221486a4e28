"""`foundation data inspect`: what is in a jet file, as numbers and histograms per class."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foundation.data.features import compute_features
from foundation.data.jets import jet_kinematics
from foundation.data.sources import JetCollection

PLOTTED_FEATURES = ("log_pt", "eta_rel", "phi_rel", "delta_r", "log_pt_rel")


def _summary(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {}
    p16, p50, p84 = np.percentile(values, [16, 50, 84])
    return {"mean": float(values.mean()), "std": float(values.std()), "p16": float(p16), "median": float(p50), "p84": float(p84)}


def inspect_jets(data, plots_dir: str | Path | None = None, limit: int | None = 50_000) -> dict:
    """Per-class counts and summaries of jet mass, pT and multiplicity (and plots)."""
    collection = JetCollection.open(data, allow_empty=True)
    jets = collection.read_all(limit)
    kin = jet_kinematics(jets.constituents, jets.mask)
    report: dict = {
        "files": [str(p) for p in collection.paths],
        "formats": sorted({s.format_name for s in collection.sources}),
        "jets_total": len(collection),
        "jets_inspected": len(jets),
        "max_particles": jets.max_particles,
        "classes": {},
    }
    for c, name in enumerate(collection.class_names):
        sel = jets.label == c
        if not sel.any():
            continue
        report["classes"][name] = {
            "jets": int(sel.sum()),
            "mass": _summary(kin["mass"][sel]),
            "pt": _summary(kin["pt"][sel]),
            "multiplicity": _summary(kin["multiplicity"][sel].astype(float)),
        }
    if plots_dir is not None:
        report["plots"] = _plot(Path(plots_dir), jets, kin, collection.class_names)
    return report


def _plot(plots_dir: Path, jets, kin, class_names) -> list[str]:
    from foundation.evaluation.plots import plot_histograms

    plots_dir.mkdir(parents=True, exist_ok=True)
    present = [(c, n) for c, n in enumerate(class_names) if (jets.label == c).any()]
    paths = []
    for key, label in (("mass", "jet mass [GeV]"), ("pt", "jet $p_T$ [GeV]"), ("multiplicity", "constituents per jet")):
        samples = {n: kin[key][jets.label == c] for c, n in present}
        paths.append(plot_histograms(samples, plots_dir / f"jet_{key}.png", xlabel=label))
    feats = compute_features(jets, PLOTTED_FEATURES)
    for i, name in enumerate(PLOTTED_FEATURES):
        samples = {n: feats[jets.label == c][..., i][jets.mask[jets.label == c]] for c, n in present}
        paths.append(plot_histograms(samples, plots_dir / f"particle_{name}.png", xlabel=name, log=True))
    return [str(p) for p in paths]
