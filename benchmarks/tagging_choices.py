"""Tagging choices, on validation jets only: what the from-scratch model reads, and token dropout.

    python -m benchmarks.tagging_choices --budgets 0.01 0.1 --seeds 0 --learning-rates 1e-4 3e-4 1e-3

Benchmarks 1 and 2 compare a pretrained model with the best model trained from scratch; this study
makes their settings' choices the way every choice is made, on validation jets, never the test
sample. Each variant below is a model (pretrained, or our backbone from scratch) with a recipe; all
share benchmark 1's data, protocol (early stopping on validation AUC, the same maximum of epochs),
learning-rate grid and run cache, so its runs are reused there and the other way round. Per variant
and budget the page gives the learning rate chosen on validation AUC (first seed), the best
validation AUC, and the AUC of the kept weights on the development sample (independent of the
training, validation and test jets; the figure to compare by, since the best of many evaluations is
biased upwards), with the epochs used and whether each run stopped early.

Variants (--variants):
- scratch-codes: our backbone from scratch reading each particle's code (token) and its features,
  the scratch model of benchmarks 1 and 2 before this study;
- scratch-features: the same reading the particles' features alone (SCRATCH_ARCHITECTURE in
  benchmarks/tagging.py), benchmark 1 and 2's scratch model since;
- pretrained: the released model fine-tuned with finetune/top_tagging.yaml;
- pretrained-token-dropout: the same, each particle's code hidden behind the mask token with
  probability 0.3 while training (finetune/top_tagging_token_dropout.yaml).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace

from benchmarks.common import base_parser, print_table, run_script, write_results
from benchmarks.tagging import (
    VALIDATION_COLUMNS,
    add_protocol_arguments,
    measured_bundles,
    prepare,
    run_models,
    search_record,
    selection_table,
    summarise,
)

BASE_RECIPE = "finetune/top_tagging.yaml"


@dataclass(frozen=True)
class Variant:
    """One setting under study: a model of benchmarks 1 and 2 and the recipe it trains with."""

    name: str  # on the page
    model: str  # "pretrained" or "scratch", as benchmarks.tagging calls them
    recipe: str = BASE_RECIPE  # the pretrained model's recipe
    scratch_recipe: str | None = None  # the scratch model's; None: benchmark 1's default (features only)


VARIANTS = {
    "scratch-codes": Variant("scratch, codes and features", "scratch", scratch_recipe=BASE_RECIPE),
    "scratch-features": Variant("scratch, features only", "scratch"),
    "pretrained": Variant("pretrained", "pretrained"),
    "pretrained-token-dropout": Variant("pretrained, token dropout 0.3", "pretrained", recipe="finetune/top_tagging_token_dropout.yaml"),
}

# benchmark 1's validation columns, the variant in place of the model (no variant trains its head first)
COLUMNS = [VALIDATION_COLUMNS[0], VALIDATION_COLUMNS[1], ("variant", "variant", "")] + [c for c in VALIDATION_COLUMNS if c[0] not in ("budget", "labelled_jets", "model", "head_only_steps")]


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "tagging_choices")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.01, 0.1], help="fractions of the labelled training jets")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), help="default: every variant")
    add_protocol_arguments(parser)
    # Benchmark 1's checks read these; a study reads no test jet, so it is validation-only throughout.
    parser.set_defaults(seeds=[0], validation_only=True, recipe=BASE_RECIPE, scratch_recipe=None, models=[], main_job_model=None)
    args, bench = prepare(parser, argv)
    rows, summary = [], []
    for key in args.variants:
        variant = VARIANTS[key]
        variant_rows = run_models(replace(bench, recipe=variant.recipe, scratch_recipe=variant.scratch_recipe), args, [variant.model], test=False)
        rows += [{**row, "variant": variant.name} for row in variant_rows]
        summary += [{**row, "variant": variant.name} for row in summarise(variant_rows)]
    summary.sort(key=lambda r: r["budget"])  # stable: the variants' order within a budget
    table = print_table(summary, COLUMNS)
    selection = selection_table([{**row, "model": row["variant"]} for row in rows])
    plot = plot_choices(args.out, summary)
    write_results(args, "tagging_choices", rows, {
        "summary": summary, "tables": {"Validation results (mean and spread over seeds)": table, "Selection (validation only)": selection},
        "variants": {key: VARIANTS[key].name for key in args.variants}, "data": bench.data.record, "protocol": asdict(bench.protocol),
        **search_record(args), "plots": [plot],
    }, models=measured_bundles(bench, [VARIANTS[key].model for key in args.variants]))
    return summary


def plot_choices(out, summary: list[dict]):
    """AUC against labelled jets, one line per variant: on the development sample where there is one."""
    from foundation.evaluation.plots import plot_label_efficiency

    metric = "dev_auc" if all("dev_auc" in r for r in summary) else "validation_auc"
    curves = {}
    for name in dict.fromkeys(r["variant"] for r in summary):
        points = [r for r in summary if r["variant"] == name]
        spread = [r[metric + "_std"] for r in points]
        curves[name] = ([r["labelled_jets"] for r in points], [r[metric] for r in points], None if None in spread else spread)
    ylabel = "AUC on the development sample (kept weights)" if metric == "dev_auc" else "best validation AUC"
    return plot_label_efficiency(curves, out / "tagging_choices.png", ylabel=ylabel)


if __name__ == "__main__":
    run_script(main)
