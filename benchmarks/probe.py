"""Benchmark 8: linear probe of frozen jet embeddings, top against QCD, at label budgets.

    python -m benchmarks.probe --models jet-foundation-small --budgets 0.001 0.01 0.1 1 --seeds 0 1 2

What the embeddings users extract (`foundation embed`: the backbone's output averaged over a jet's
tokens) know about top against QCD, without any fine-tuning: a logistic regression on the
standardised embeddings of a few labelled jets, for each pretrained model in --models. Beside them,
the same regression on the observables a physicist would try first (log jet mass, log pT and
constituent multiplicity), the floor an embedding has to beat. No network trains, so the figures do
not depend on a learning rate or on when a run stopped: a steady measure of how much of the tagging
problem a backbone has learned, to compare backbones by (fine-tuning, benchmark 1, can recover
what a frozen embedding lacks).

Data: benchmark 1's (the same generated pool, validation split and test sample, made once into
--data-dir). Seed 0 draws the same labelled jets as benchmark 1's fine-tuning at each budget; each
further seed draws another subset (at a budget of the whole pool every seed would draw the same
jets, so it is fitted once). The regression's inverse regularisation strength C is chosen
from --c-grid by validation AUC for each (model, budget, seed); only the chosen fits are scored on
the test sample. --validation-only scores them on the development sample instead (no test jets
read, no results page), for comparing backbones while choosing one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, mean_and_spread, print_table, run_script, write_results
from benchmarks.tagging import (
    MAX_PARTICLES,
    add_data_arguments,
    budget_jets,
    check_data_arguments,
    fail,
    prepare_data,
)

OBSERVABLES = "jet mass, pT, multiplicity"  # the baseline's row name
C_GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "probe")
    parser.add_argument("--models", nargs="+", default=["jet-foundation-small"], help="pretrained bundles: registered names, folders or hub repo ids")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.001, 0.01, 0.1, 1.0], help="fractions of the labelled training jets")
    parser.add_argument("--c-grid", type=float, nargs="+", default=C_GRID, help="inverse regularisation strengths of the logistic regression, chosen on validation")
    add_data_arguments(parser)
    parser.set_defaults(seeds=[0, 1, 2])
    args = parser.parse_args(argv)
    if any(not 0 < b <= 1 for b in args.budgets):
        fail(f"--budgets: fractions in (0, 1], got {args.budgets}")
    if len(set(args.seeds)) != len(args.seeds) or any(s < 0 for s in args.seeds):
        fail(f"--seeds: distinct non-negative seeds, got {args.seeds}")
    if any(c <= 0 for c in args.c_grid):
        fail(f"--c-grid: must be positive, got {args.c_grid}")
    check_data_arguments(args)
    data = prepare_data(args)
    scored = data.dev if args.validation_only else data.test
    scored_name = "dev" if args.validation_only else "test"

    samples = {name: _read(files) for name, files in {"train": data.train, "validation": data.validation, scored_name: scored}.items() if files}
    labels = {name: jets.label for name, (_, jets) in samples.items()}
    if len(np.unique(labels["train"])) != 2:
        fail(f"{', '.join(data.train)}: the probe separates two classes (top and QCD); these jets have {len(np.unique(labels['train']))}")
    representations = {OBSERVABLES: {name: observables(jets) for name, (_, jets) in samples.items()}}
    for model in args.models:
        representations[model] = {name: cached_embeddings(model, files, jets, args.out / "embeddings") for name, (files, jets) in samples.items()}

    rows = []
    for name, features in representations.items():
        for budget in args.budgets:
            jets = budget_jets(budget, len(labels["train"]))
            # A budget of the whole pool draws the same jets for every seed: one fit, no spread.
            for seed in args.seeds if jets < len(labels["train"]) else args.seeds[:1]:
                chosen = labelled_subset(len(labels["train"]), jets, seed)
                rows.append({"model": name, "budget": budget, "labelled_jets": jets, "seed": seed, **probe(features, labels, chosen, args.c_grid, scored_name)})
    summary = summarise(rows, scored_name)
    columns = [("model", "representation", ""), ("labelled_jets", "labelled jets", "d"), ("validation_auc", "validation AUC", ".4f"), ("validation_auc_std", "±", ".4f")]
    if scored is not None:
        columns += [(f"{scored_name}_auc", f"{scored_name} AUC", ".4f"), (f"{scored_name}_auc_std", "±", ".4f")]
    table = print_table(summary, columns)
    if args.validation_only:
        print("validation only (no test jets read, no results page)" + (f"; dev AUC on {scored}" if scored else ""), flush=True)
        return summary
    plot = _plot(summary, args.out / "probe.png")
    # The headline at the largest budget, as benchmark 1's: the usual linear-evaluation figure.
    first = next(r for r in summary if r["model"] == args.models[0] and r["budget"] == max(args.budgets))
    floor = next(r for r in summary if r["model"] == OBSERVABLES and r["budget"] == max(args.budgets))
    headline = {"metric": f"test AUC of a linear probe, {first['labelled_jets']} labels", "ours": f"{first['test_auc']:.4f}", "peer": f"{OBSERVABLES}: {floor['test_auc']:.4f}"}
    write_results(args, "probe", rows, {"summary": summary, "table": table, "headline": headline, "plots": [plot], "c_grid": args.c_grid, "data": data.record}, models=args.models)
    return summary


# ----- representations -----
def _read(files: list[str]):
    """(files, JetArrays): each sample is read once, for its labels, observables and every model's embeddings."""
    from foundation.data.sources import JetCollection

    return files, JetCollection.open(files, max_particles=MAX_PARTICLES).read_all()


def observables(jets) -> np.ndarray:
    """(J, 3): log jet mass, log jet pT, constituent multiplicity, from the constituents."""
    from foundation.data.jets import jet_kinematics

    kin = jet_kinematics(jets.constituents, jets.mask)
    return np.stack([np.log1p(kin["mass"]), np.log1p(kin["pt"]), kin["multiplicity"]], axis=1).astype(np.float32)


def cached_embeddings(model: str, files: list[str], jets, folder: Path) -> np.ndarray:
    """(J, D) per-jet embeddings of the model (foundation.embed) of the jets read from `files`, kept
    in `folder` keyed by the bundle's content (not its card) and the files, so each backbone embeds each sample once."""
    import foundation
    from foundation.hub import content_sha256, resolve
    from foundation.outputs import atomic_output

    bundle = resolve(model)
    record = json.dumps(content_sha256(bundle), sort_keys=True) + "".join(f"{Path(f).resolve()}:{Path(f).stat().st_size}" for f in files)
    path = Path(folder) / f"{hashlib.sha256(record.encode()).hexdigest()[:16]}.npy"
    if path.exists():
        return np.load(path)
    embeddings = foundation.embed(str(bundle), jets)  # (J, D)
    with atomic_output(path) as tmp, open(tmp, "wb") as f:  # a killed run leaves no half-written cache
        np.save(f, embeddings)
    return embeddings


# ----- the probe -----
def labelled_subset(pool: int, jets: int, seed: int) -> np.ndarray:
    """Indices of the labelled training jets: seed 0 draws benchmark 1's subset (build_splits'
    train_limit with the default split_seed), each further seed another."""
    from foundation.data.dataset import DataConfig, label_budget_positions

    if jets >= pool:
        return np.arange(pool)
    return label_budget_positions(pool, jets, DataConfig().split_seed + seed)


def probe(features: dict[str, np.ndarray], labels: dict[str, np.ndarray], chosen: np.ndarray, c_grid: list[float], scored_name: str) -> dict:
    """Logistic regression on the chosen training jets, C picked by validation AUC; the chosen fit's
    AUC on validation and on the scored sample (when there is one)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = features["train"][chosen], labels["train"][chosen]
    if len(np.unique(y)) < 2:
        return {"c": None, "validation_auc": 0.5, f"{scored_name}_auc": 0.5 if scored_name in labels else None}  # one class drawn: no fit
    best = None
    for c in c_grid:
        fit = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000)).fit(x, y)
        auc = roc_auc_score(labels["validation"], fit.decision_function(features["validation"]))
        if best is None or auc > best[1]:
            best = (c, auc, fit)
    c, validation_auc, fit = best
    scored = roc_auc_score(labels[scored_name], fit.decision_function(features[scored_name])) if scored_name in labels else None
    return {"c": c, "validation_auc": float(validation_auc), f"{scored_name}_auc": None if scored is None else float(scored)}


def summarise(rows: list[dict], scored_name: str) -> list[dict]:
    """One row per (representation, budget): mean and spread over the seeds."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["budget"]), []).append(r)
    summary = []
    for (model, budget), group in groups.items():
        row = {"model": model, "budget": budget, "labelled_jets": group[0]["labelled_jets"], "seeds": len(group)}
        for key in ("validation_auc", f"{scored_name}_auc"):
            values = [r[key] for r in group if r.get(key) is not None]
            if values:
                row[key], row[f"{key}_std"] = mean_and_spread(values)
        summary.append(row)
    return summary


def _plot(summary: list[dict], path: Path) -> Path:
    from foundation.evaluation.plots import plot_label_efficiency

    curves = {}
    for model in dict.fromkeys(r["model"] for r in summary):
        mine = [r for r in summary if r["model"] == model]
        spread = [r.get("test_auc_std") for r in mine]
        curves[model] = ([r["labelled_jets"] for r in mine], [r["test_auc"] for r in mine], None if None in spread else spread)
    return plot_label_efficiency(curves, path, ylabel="test AUC (linear probe)", title="Frozen embeddings, logistic regression")


if __name__ == "__main__":
    run_script(main)
