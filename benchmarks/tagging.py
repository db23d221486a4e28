"""Benchmark 1: top tagging against a peer, at label budgets.

    python -m benchmarks.tagging --pretrained checkpoints/main/pretrain/model --budgets 0.01 0.1 1 --seeds 0

Three models on the same generated train / validation / test split of top vs QCD jets:
the pretrained model fine-tuned (finetune/top_tagging.yaml), the same architecture trained from
scratch, and ParT from weaver-core trained from scratch, all with the same 13 particle features
and the same number of optimizer steps per budget: max(300, min(1200, 20 epochs)) of 64 jets
(--max-part-steps caps ParT's, which costs about 5x ours per step on a CPU; the table says so).
Every model is evaluated on the validation jets 6 times during training and ends with the weights
of its best validation AUC (training.keep_best), so small budgets are not judged overfitted. (Not the
lowest validation loss: with few labels the loss rises from overconfidence while the AUC still
improves; at 160 jets from scratch the lowest loss came at step 50 with AUC 0.808, step 100 had 0.925.)
Prints AUC, accuracy, 1/eps_B at eps_S = 0.3 and 0.5, parameters and training time; writes
results.json and one ROC plot per budget.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, mean_and_spread, print_table, write_results

FEATURES = [
    "log_pt", "log_e", "log_pt_rel", "log_e_rel", "eta_rel", "phi_rel", "delta_r",
    "charge", "is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron",
]
BATCH = 64


def steps_for(train_jets: int, tiny: bool) -> int:
    if tiny:
        return 6
    return int(max(300, min(1200, 20 * train_jets / BATCH)))


def training_overrides(out: Path, steps: int, seed: int) -> dict:
    return {
        "training.output_dir": str(out),
        "training.max_steps": steps,
        "training.seed": seed,
        "training.global_batch_size": BATCH,
        "training.micro_batch_size": BATCH,
        "training.eval_every": max(steps // 6, 1),
        "training.keep_best": "eval/auc",
        "training.keep_best_mode": "max",
        "training.save_every": steps,
        "training.log_every": max(steps // 10, 1),
        "training.warmup_steps": max(steps // 12, 1),
        "training.tensorboard": False,
        "training.progress": False,
    }


def run_ours(init: str, pretrained: str, files: list[str], train_jets: int | None, steps: int, seed: int, out: Path, recipe: str, learning_rate: float | None = None) -> dict:
    from foundation.pipelines.finetune import finetune, load_finetune_recipe

    values = {"model": pretrained, "init": init, "particle_features": FEATURES, **training_overrides(out, steps, seed)}
    if learning_rate is not None:  # 0 or below reaches the recipe's check and its message
        values["training.learning_rate"] = learning_rate
    finetune_recipe = load_finetune_recipe(recipe, values)
    finetune_recipe.data.files = files
    finetune_recipe.data.train_limit = train_jets
    start = time.perf_counter()
    bundle = finetune(finetune_recipe)
    seconds = time.perf_counter() - start
    metrics = json.loads((bundle.parent / "metrics.json").read_text())
    from safetensors import safe_open

    with safe_open(bundle / "model.safetensors", "pt") as f:
        params = sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith(("lm_head", "mpm_head")))
    return {**metrics, "params": int(params), "seconds": seconds}


def run_part(files: list[str], train_jets: int | None, steps: int, seed: int, out: Path, tiny: bool) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from benchmarks.baselines import PART_TINY, ParTTagger
    from foundation.data.dataset import DataConfig, build_splits, collate_batch, feature_statistics
    from foundation.pipelines.finetune import ValidationAUC, classification_report
    from foundation.pipelines.inference import predict
    from foundation.training import Trainer, TrainingConfig

    torch.manual_seed(seed)
    data = DataConfig(files=files, features=FEATURES, max_particles=128, train_limit=train_jets)
    splits = build_splits(data)
    for ds in (splits.train, splits.validation, splits.test):
        ds.include_momenta = True
    mean, std = feature_statistics(splits.train, seed=seed)
    # Flags and charge stay as they are; continuous features are standardised (as weaver's configs do).
    continuous = np.array([not (n.startswith("is_") or n == "charge") for n in FEATURES])
    mean, std = torch.as_tensor(np.where(continuous, mean, 0.0), dtype=torch.float32), torch.as_tensor(np.where(continuous, np.maximum(std, 1e-3), 1.0), dtype=torch.float32)

    def collate(batch):
        b = collate_batch(batch)
        b["features"] = (b["features"] - mean) / std * b["mask"][..., None]
        return b

    model = ParTTagger(len(FEATURES), len(splits.class_names), **(PART_TINY if tiny else {}))
    config = TrainingConfig(**{k.removeprefix("training."): v for k, v in training_overrides(out, steps, seed).items()}, learning_rate=1e-3)
    signal = splits.class_names.index("top")
    trainer = Trainer(model, splits.train, splits.validation, config, collate_fn=collate, eval_metrics=lambda: ValidationAUC(signal, 1 - signal))
    start = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - start
    loader = trainer.accelerator.prepare(DataLoader(splits.test, batch_size=256, collate_fn=collate))
    pred = predict(trainer.model, loader, trainer.accelerator)
    metrics = classification_report(pred["logits"], pred["labels"], splits.class_names, signal, 1 - signal, out)
    np.savez(out / "test_predictions.npz", logits=pred["logits"], labels=pred["labels"], index=pred["index"], class_names=np.array(splits.class_names))
    return {**metrics, "params": sum(p.numel() for p in model.parameters()), "seconds": seconds}


def full_train_size(files: list[str]) -> int:
    from foundation.data.dataset import DataConfig, build_splits

    return len(build_splits(DataConfig(files=files, max_particles=128)).train)


def default_files() -> list[str]:
    from foundation.data.dataset import GeneratedDataConfig
    from foundation.data.defaults import default_jet_files

    return [str(p) for p in default_jet_files(GeneratedDataConfig(jets_per_class=10_000, seed=1, max_particles=128))]


def _cached(out: Path) -> dict | None:
    """A finished run of the same model, budget and seed (shared by tagging and label_efficiency)."""
    path = out / "benchmark_row.json"
    return json.loads(path.read_text()) if path.exists() and (out / "test_predictions.npz").exists() else None


def run_budgets(args, models: list[str]) -> list[dict]:
    files = args.data or default_files()
    runs = args.runs or args.out / "runs"
    full = full_train_size(files)
    # Our runs are named by the learning rate they use, so a run made under another recipe
    # learning rate (the recipe's default has changed before) is never taken for this one.
    from foundation.pipelines.finetune import load_finetune_recipe

    our_lr = args.learning_rate if args.learning_rate is not None else load_finetune_recipe(args.recipe).training.learning_rate
    rows = []
    for budget in args.budgets:
        n = max(int(round(budget * full)), 16)
        budget_steps = args.steps or steps_for(n, args.tiny)
        for seed in args.seeds:
            for kind in models:
                steps = min(budget_steps, args.max_part_steps) if kind == "part" and getattr(args, "max_part_steps", None) else budget_steps
                # "-bestauc": ends with the weights of the best validation AUC (older runs kept the
                # last weights, or "-best" ones those of the lowest validation loss)
                lr = our_lr if kind != "part" else None
                out = runs / f"budget-{budget:g}" / (f"{kind}-seed{seed}-steps{steps}-bestauc" + (f"-lr{lr:g}" if lr is not None else ""))
                cached = _cached(out)
                if cached is not None:
                    print(f"--- {kind}, {n} labelled jets, seed {seed}: done before ({out})", flush=True)
                    rows.append(cached)
                    continue
                print(f"--- {kind}, {n} labelled jets ({budget:g} of {full}), seed {seed}, {steps} steps", flush=True)
                if kind == "part":
                    m = run_part(files, n, steps, seed, out, args.tiny)
                else:
                    m = run_ours("scratch" if kind == "scratch" else "pretrained", args.pretrained, files, n, steps, seed, out, args.recipe, lr)
                row = {"model": kind, "budget": budget, "labelled_jets": n, "steps": steps, "seed": seed, "predictions": str(out / "test_predictions.npz"),
                       **{k: m.get(k) for k in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5", "params", "seconds")}}
                (out / "benchmark_row.json").write_text(json.dumps(row))
                rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean (and spread over seeds) per model and budget."""
    out = []
    for key in sorted({(r["budget"], r["model"]) for r in rows}, key=lambda k: (k[0], ["pretrained", "scratch", "part"].index(k[1]))):
        group = [r for r in rows if (r["budget"], r["model"]) == key]
        row = {"budget": key[0], "model": key[1], "labelled_jets": group[0]["labelled_jets"], "seeds": len(group), "params": group[0]["params"], "steps": group[0]["steps"]}
        for metric in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5", "seconds"):
            row[metric], row[metric + "_std"] = mean_and_spread([g[metric] for g in group])
        out.append(row)
    return out


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "tagging")
    parser.add_argument("--pretrained", default="checkpoints/main/pretrain/model", help="pretrained bundle")
    parser.add_argument("--data", nargs="+", default=None, help="jet files (default: the generated 10k + 10k top/QCD set)")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.1, 1.0], help="fractions of the training set with labels")
    parser.add_argument("--models", nargs="+", default=["pretrained", "scratch", "part"], choices=["pretrained", "scratch", "part"])
    parser.add_argument("--steps", type=int, default=None, help="optimizer steps for every model (default: by budget)")
    parser.add_argument("--max-part-steps", type=int, default=None, help="cap ParT's steps (about 3 s each on 2 CPU cores, 5x ours); the table gives every model's steps")
    parser.add_argument("--recipe", default="finetune/top_tagging.yaml")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate of our models (default: the recipe's)")
    parser.add_argument("--runs", type=Path, default=None, help="folder of the individual runs, reused when present (default: checkpoints/benchmarks/tagging-runs)")
    args = parser.parse_args(argv)
    args.runs = args.runs or (None if args.tiny else Path("checkpoints/benchmarks/tagging-runs"))
    rows = run_budgets(args, args.models)
    summary = summarise(rows)
    table = print_table(
        summary,
        [("budget", "labels", "g"), ("labelled_jets", "jets", "d"), ("model", "model", ""), ("auc", "AUC", ".4f"), ("auc_std", "± (seeds)", ".4f"),
         ("accuracy", "accuracy", ".4f"), ("rejection_at_0.3", "1/eps_B @0.3", ".0f"), ("rejection_at_0.5", "1/eps_B @0.5", ".0f"),
         ("params", "params", "d"), ("steps", "steps", "d"), ("seconds", "train s", ".0f")],
    )
    _plot_rocs(args.out, rows)
    write_results(args, "tagging", rows, {"summary": summary, "table": table, "steps_rule": "max(300, min(1200, 20 epochs)) of 64 jets"})
    return summary


NAMES = {"pretrained": "pretrained + fine-tuned", "scratch": "same architecture, from scratch", "part": "ParT (weaver-core), from scratch"}


def _plot_rocs(out: Path, rows: list[dict]) -> list[str]:
    """One ROC plot per budget with every model (first seed), from the saved test predictions."""
    from scipy.special import softmax

    from foundation.evaluation.plots import plot_roc

    paths = []
    for budget in sorted({r["budget"] for r in rows}):
        curves = {}
        for r in rows:
            if r["budget"] == budget and r["seed"] == rows[0]["seed"]:
                pred = np.load(r["predictions"])
                signal = list(pred["class_names"]).index("top")
                curves[NAMES[r["model"]]] = (pred["labels"] == signal, softmax(pred["logits"], axis=-1)[:, signal])
        paths.append(str(plot_roc(curves, out / f"roc-budget-{budget:g}.png")))
    return paths


if __name__ == "__main__":
    main()
