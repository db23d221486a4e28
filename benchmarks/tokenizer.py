"""Benchmark 3: tokenizer quality against codebook size.

    python -m benchmarks.tokenizer --sizes 512 2048 8192

Trains tokenizers/vqvae_8k.yaml with each codebook size on the generated top + QCD set and
evaluates on the held-out test jets: fraction of codes used, perplexity, per-feature resolution,
and the relative RMS of decoded jets' mass and pT against the same jets before tokenisation.
The quality bar for 8192 codes: >= 95% of codes used and jet mass within 2.5%.
"""

from __future__ import annotations

import json

from benchmarks.common import base_parser, print_table, run_script, write_results

TARGET_USAGE, TARGET_MASS = 0.95, 0.025


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "tokenizer")
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--recipe", default="tokenizers/vqvae_8k.yaml")
    parser.add_argument("--data", nargs="+", default=None, help="jet files (default: the recipe's generated set)")
    parser.add_argument("--steps", type=int, default=None, help="training steps (default: the recipe's)")
    args = parser.parse_args(argv)

    from foundation.data.canonical import write_jets
    from foundation.data.dataset import build_splits
    from foundation.evaluation.tokenization import evaluate_tokenizer
    from foundation.pipelines.tokenizer import load_tokenizer, load_tokenizer_recipe, train_tokenizer

    rows, by_mass, wide = [], [], []
    for size in args.sizes:
        for seed in args.seeds:
            out = args.out / f"codes-{size}-seed{seed}"
            overrides = {"training.output_dir": str(out), "training.seed": seed, "model.codebook_size": size, "training.progress": not args.tiny, "training.tensorboard": False}
            if args.steps:
                # Keep the recipe's evaluation and checkpoint cadence (keep_best picks among the
                # evaluations), but at least four of each in a short run.
                default = load_tokenizer_recipe(args.recipe)[0].training
                quarter = max(args.steps // 4, 1)
                overrides.update({"training.max_steps": args.steps, "training.eval_every": min(default.eval_every, quarter), "training.save_every": min(default.save_every, quarter)})
            if args.tiny:
                overrides.update({"model.hidden_size": 16, "model.num_heads": 2, "model.intermediate_size": 32, "model.num_encoder_layers": 1, "model.num_decoder_layers": 1, "codebook_init_jets": 50, "training.micro_batch_size": 16, "training.global_batch_size": 16})
            recipe, model_config = load_tokenizer_recipe(args.recipe, overrides)
            if args.tiny and recipe.refine.enabled:  # a few iterations and steps of the refine stage
                recipe.refine.kmeans_iterations = min(recipe.refine.kmeans_iterations, 2)
                recipe.refine.decoder_steps = min(recipe.refine.decoder_steps, 4)
            if args.data:
                recipe.data.files = args.data
            splits = build_splits(recipe.data)
            test_file = args.out / "test.h5"
            if not test_file.exists():
                write_jets(test_file, splits.test.read_jets())
            # A finished run is reused (resume returns at once); its summary still holds the training
            # time of the whole run (without evaluations and checkpoints), carried through resumes.
            path = train_tokenizer(recipe, model_config, resume=True)
            seconds = json.loads((out / "train_summary.json").read_text())["seconds"]
            m = evaluate_tokenizer(load_tokenizer(path), str(test_file), plots_dir=out / "plots", progress=False)
            row = {"codebook_size": size, "seed": seed, "train_seconds": seconds, "steps": recipe.training.max_steps, **{k: v for k, v in m.items() if not isinstance(v, list)}}
            if size == 8192:
                row["meets_bar"] = m["code_usage"] >= TARGET_USAGE and m["jet_mass_relative_rms"] <= TARGET_MASS
            rows.append(row)
            if "wide_particles" in m:
                wide.append({"codebook_size": size, "seed": seed, "jet_mass_relative_rms": m["jet_mass_relative_rms"], **m["wide_particles"]})
            for b in m.get("jet_mass_resolution_by_mass", []):
                upper = "" if b["high"] is None else f"{b['high']:.0f}"
                by_mass.append({"codebook_size": size, "seed": seed, "mass_bin": f"{b['low']:.0f}-{upper} GeV", **b})
    table = print_table(
        rows,
        [("codebook_size", "codes", "d"), ("code_usage", "used", ".3f"), ("perplexity", "perplexity", ".0f"),
         ("resolution/log_pt", "σ log pT", ".3f"), ("resolution/eta_rel", "σ η_rel", ".4f"), ("resolution/phi_rel", "σ φ_rel", ".4f"),
         ("jet_mass_relative_rms", "mass RMS", ".4f"), ("jet_mass_relative_iqr68", "mass 68% width", ".4f"), ("jet_pt_relative_rms", "pT RMS", ".4f"),
         ("jet_mass_relative_rms_nearest_codes", "mass RMS, nearest codes", ".4f"), ("jet_mass_relative_rms_without_codebook", "mass RMS, no codebook", ".4f"),
         ("train_seconds", "train s (no evals)", ".0f"), ("steps", "steps", "d")],
    )
    # Which jets set the mass RMS: its value in bins of the original jet mass, and each bin's share.
    mass_table = print_table(
        by_mass,
        [("codebook_size", "codes", "d"), ("mass_bin", "jet mass", ""), ("jets", "jets", "d"),
         ("relative_rms", "mass RMS", ".4f"), ("share_of_squared_error", "share of error²", ".2f")],
    )
    # The few wide particles (|eta_rel| > 1, soft hadrons far from the axis in pseudorapidity):
    # how they come back, and the jet mass RMS were they kept exact.
    wide_table = print_table(
        wide,
        [("codebook_size", "codes", "d"), ("particles", "wide particles", "d"), ("fraction_of_particles", "fraction", ".4f"),
         ("distinct_codes", "their codes", "d"), ("median_pt", "median pT", ".2f"), ("fraction_pt_below_mass", "pT < mass", ".2f"),
         ("jets_with_over_5pct_of_mass2", "jets with > 5% of M²", "d"), ("resolution/log_pt", "σ log pT", ".2f"), ("resolution/eta_rel", "σ η_rel", ".2f"),
         ("jet_mass_relative_rms", "mass RMS", ".4f"), ("jet_mass_relative_rms_if_exact", "mass RMS, them exact", ".4f")],
    )
    first_seed = args.seeds[0]
    plots = [args.out / f"codes-{size}-seed{first_seed}" / "plots" / f"{name}.png" for size in args.sizes for name in ("code_usage", "jet_mass", "jet_mass_resolution")]
    write_results(args, "tokenizer", rows, {
        "tables": {"Quality against codebook size": table, "Jet mass RMS in bins of the original jet mass": mass_table,
                   "Wide particles (|eta_rel| > 1)": wide_table},
        "headline": _headline(rows), "plots": [p for p in plots if p.exists()],
        "by_mass": by_mass, "wide": wide, "bar": {"code_usage": TARGET_USAGE, "jet_mass_relative_rms": TARGET_MASS},
    })
    return rows


def _headline(rows: list[dict]) -> dict | None:
    """The largest codebook's figures (first seed) against the bar, for the README."""
    if not rows:
        return None
    top = max(rows, key=lambda r: (r["codebook_size"], -r["seed"]))
    return {
        "metric": f"{top['codebook_size']} codes: jet mass RMS, codes used",
        "ours": f"{top['jet_mass_relative_rms']:.2%}, {top['code_usage']:.1%}",
        "peer": f"bar: {TARGET_MASS:.1%}, {TARGET_USAGE:.0%}",
    }


if __name__ == "__main__":
    run_script(main)
