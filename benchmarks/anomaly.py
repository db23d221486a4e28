"""Benchmark 5: anomaly detection of top jets among QCD jets.

    python -m benchmarks.anomaly --pretrained jet-foundation-small

Three ways, scored on the same held-out test jets (truth labels only for scoring):
- unsupervised: a background model (the pretrained model after next-token training on QCD jets
  only, finetune/anomaly_background.yaml) scores each jet by its negative log-likelihood;
- density ratio: that NLL minus the NLL under the pretrained model, which saw the unlabelled
  data (here 50% top: far richer in signal than a search, so read it as an upper bound);
- weakly supervised (CWoLa): the tagging head learns mixed sample A vs B, signal fractions
  0.3 and 0.05, never told which jets are top;
- supervised (the ceiling): the tagging head fine-tuned with the true labels.
Prints AUC and the maximum significance improvement SIC = eps_S / sqrt(eps_B) over the cuts that keep
at least 25 background jets (eps_B known to 20%; foundation.evaluation.anomaly.MIN_BACKGROUND_JETS);
plots SIC curves.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import base_parser, default_files, print_table, run_script, write_results


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "anomaly")
    parser.add_argument("--pretrained", default="jet-foundation-small", help="pretrained bundle: a registered name, a folder or a hub repo id")
    parser.add_argument("--data", nargs="+", default=None, help="jet files (default: the generated 10k + 10k set)")
    parser.add_argument("--fractions", type=float, nargs=2, default=[0.3, 0.05])
    parser.add_argument("--steps", type=int, default=None, help="training steps of each model (default: the recipes')")
    args = parser.parse_args(argv)

    from scipy.special import softmax

    from foundation.data.canonical import write_jets
    from foundation.data.dataset import DataConfig, build_splits
    from foundation.evaluation.anomaly import anomaly_metrics
    from foundation.evaluation.plots import plot_sic
    from foundation.hub import bundle_folder, weights_sha256
    from foundation.pipelines.anomaly import cwola, likelihood_scores
    from foundation.pipelines.finetune import finetune, load_finetune_recipe
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    files = args.data or default_files()
    test_file = args.out / "test.h5"
    if not test_file.exists():
        write_jets(test_file, build_splits(DataConfig(files=files, max_particles=128)).test.read_jets())

    def steps(recipe_steps: dict) -> dict:
        if args.tiny:
            return {"training.max_steps": 4, "training.eval_every": 4, "training.save_every": 4, "training.log_every": 2, "training.warmup_steps": 1}
        if args.steps:
            return {"training.max_steps": args.steps, "training.eval_every": args.steps, "training.save_every": args.steps}
        return recipe_steps

    # The runs of each pretrained model apart: the background model resumes a finished run, which
    # must be this model's (a registered name's new version is other weights under the same name).
    runs = args.out / f"weights-{weights_sha256(bundle_folder(args.pretrained))[:12]}"
    rows, curves = [], {}
    for seed in args.seeds:
        common = {"training.seed": seed, "training.progress": False, "training.tensorboard": False}
        # Unsupervised: likelihood under a background-only model.
        background_recipe = load_pretrain_recipe("finetune/anomaly_background.yaml", {"init_from": args.pretrained, "training.output_dir": str(runs / f"background-seed{seed}"), **common, **steps({})})
        background_recipe.data.files = files
        background = pretrain(background_recipe, resume=True)
        scores = likelihood_scores(background, str(test_file), progress=False, reference=args.pretrained)
        is_top = scores["label"] == scores["class_names"].index("top")
        for key, name in (("nll", "unsupervised: NLL (total)"), ("nll_per_token", "unsupervised: NLL per token"), ("llr", "density ratio: NLL_background - NLL_pretrained")):
            rows.append({"method": name, "seed": seed, **anomaly_metrics(is_top, scores[key])})
            curves.setdefault(name, (is_top, scores[key]))
        # Weakly supervised: CWoLa.
        cwola_recipe = load_finetune_recipe("finetune/cwola.yaml", {"model": args.pretrained, "training.output_dir": str(runs / f"cwola-seed{seed}"), **common, **steps({})})
        cwola_recipe.data.files = files
        report = cwola(cwola_recipe, tuple(args.fractions))
        name = f"weakly supervised: CWoLa (f = {args.fractions[0]:g} vs {args.fractions[1]:g})"
        rows.append({"method": name, "seed": seed, **{k: report[k] for k in ("auc", "max_sic", "eps_s_at_max_sic", "eps_b_at_max_sic")}})
        cwola_scores = np.load(report["scores"])
        curves.setdefault(name, (cwola_scores["is_signal"], cwola_scores["score"]))
        # Supervised ceiling.
        sup_recipe = load_finetune_recipe("finetune/cwola.yaml", {"model": args.pretrained, "training.output_dir": str(runs / f"supervised-seed{seed}"), **common, **steps({})})
        sup_recipe.data.files = files
        bundle = finetune(sup_recipe)
        pred = np.load(bundle.parent / "test_predictions.npz")
        signal = list(pred["class_names"]).index("top")
        truth, score = pred["labels"] == signal, softmax(pred["logits"], -1)[:, signal]
        rows.append({"method": "supervised (ceiling)", "seed": seed, **anomaly_metrics(truth, score)})
        curves.setdefault("supervised (ceiling)", (truth, score))
    table = print_table(rows, [("method", "method", ""), ("seed", "seed", "d"), ("auc", "AUC", ".4f"), ("max_sic", "max SIC", ".2f"), ("eps_s_at_max_sic", "eps_S at max", ".2f")])
    plot = plot_sic(curves, args.out / "sic.png")
    write_results(args, "anomaly", rows, {"table": table, "headline": _headline(rows), "plots": [plot], "fractions": args.fractions}, models=[args.pretrained])
    return rows


def _headline(rows: list[dict]) -> dict:
    """CWoLa's max SIC (first seed), beside the supervised ceiling's."""
    first = [r for r in rows if r["seed"] == rows[0]["seed"]]
    cwola = next(r for r in first if r["method"].startswith("weakly"))
    ceiling = next(r for r in first if r["method"].startswith("supervised"))
    return {"metric": "max SIC, weakly supervised (CWoLa)", "ours": f"{cwola['max_sic']:.2f}", "peer": f"supervised ceiling: {ceiling['max_sic']:.2f}"}


if __name__ == "__main__":
    run_script(main)
