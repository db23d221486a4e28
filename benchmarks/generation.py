"""Benchmark 4: generated jets against real ones, for a few sampling temperatures.

    python -m benchmarks.generation --model jet-foundation-small --jets 5000

For each temperature, samples jets from the pretrained model (default: the released one) and
compares them with reference jets: by default an independent top + QCD sample generated once with
the benchmark's own Pythia seed (--reference-seed, disjoint from every shipped model's data; made
into OUT/reference and reused), or --reference files (e.g. a run's held-out test jets). Metrics: W1 of jet mass, pT, multiplicity and particle features, FPD and KPD,
each beside the same metric between two halves of the reference (the statistical floor).
The reference is taken as tokens can represent it: massless constituents, cut to the tokenizer's
particle count. Also prints the model's stop calibration on the reference jets (the stop-token
probability summed up to each real jet's end; 1 when the model knows where real jets end).

A class-conditional model (pretrain/class_conditional.yaml) samples the reference's class mix
(each class in its reference fraction; --no-class-mix samples from the generic start token
instead), and each class is also compared with the reference jets of that class (rows with
class = its name; the floor is then that class's half against half).

Rows with T = "tokens" separate the tokenizer's share from the backbone's: half of the reference
jets encoded into tokens and decoded back, against the other half (what a perfect backbone would
generate with this tokenizer), each beside the floor of that smaller sample.
"""

from __future__ import annotations

from benchmarks.common import (
    base_parser,
    generated_sample,
    print_table,
    run_script,
    write_results,
)

REFERENCE_SEED = 2703  # the benchmark's own generator seed, beside benchmark 1's 2701 and 2702


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "generation")
    parser.add_argument("--model", default="jet-foundation-small", help="bundle: a registered name, a folder or a hub repo id")
    parser.add_argument("--reference", nargs="+", default=None, help="reference jet files (default: a sample generated with --reference-seed)")
    parser.add_argument("--reference-seed", type=int, default=REFERENCE_SEED, help="Pythia seed of the generated reference")
    parser.add_argument("--reference-jets", type=int, default=2500, help="jets per class of the generated reference")
    parser.add_argument("--jets", type=int, default=5000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.8, 1.0, 1.2])
    parser.add_argument("--top-k", type=int, default=None)
    parser.add_argument("--guidance", type=float, default=1.0, help="classifier-free guidance of class-conditional sampling (1: none)")
    parser.add_argument("--jet-pt-range", type=float, nargs=2, metavar=("LOW", "HIGH"), help="keep only generated jets with this pT in GeV (the reference's selection, e.g. 550 650)")
    parser.add_argument("--no-class-mix", dest="class_mix", action="store_false", help="sample a class-conditional model from its generic start token")
    args = parser.parse_args(argv)
    args.reference = args.reference or generated_sample(args.out / "reference", "reference", args.reference_jets, args.reference_seed, max_particles=128)

    from foundation.pipelines.generate import evaluate_generation_by_class, generate_jets, stop_calibration

    mix = _reference_class_mix(args) if args.class_mix else None
    rows = _tokenizer_rows(args)
    acceptance: dict[str, dict[str, float]] = {}  # with --jet-pt-range: {"T=.. seed ..": {class: fraction kept}}
    for temperature in args.temperatures:
        for seed in args.seeds:
            out = args.out / f"t{temperature:g}-seed{seed}"
            generated = generate_jets(args.model, args.jets, out / "generated.h5", mix, temperature=temperature, top_k=args.top_k, seed=seed, progress=not args.tiny, guidance=args.guidance, jet_pt_range=args.jet_pt_range)
            if args.jet_pt_range:
                acceptance[f"T={temperature:g} seed {seed}"] = _acceptance(generated)
            reports = evaluate_generation_by_class(str(generated), args.reference, [None, *(mix or ())], out_dir=out, seed=seed)
            for name, report in reports.items():
                rows += _with_ratio(report, temperature=temperature, seed=seed, **{"class": name or "all"})
    columns = [("temperature", "T", "g"), ("class", "class", ""), ("metric", "metric", ""), ("value", "generated vs real", ".4g"), ("error", "±", ".2g"),
               ("floor", "real vs real", ".4g"), ("floor_error", "±", ".2g"), ("ratio", "ratio", ".2f")]
    table = print_table(rows, [("seed", "seed", ""), *columns] if len(args.seeds) > 1 else columns)
    means = _seed_means(rows) if len(args.seeds) > 1 else []
    if means:
        print(f"mean over seeds {args.seeds} (± their spread; the floor's halves are drawn anew with each seed):")
        table += "\n\n" + print_table(means, columns)
    calibration = stop_calibration(args.model, args.reference, limit=1000, progress=not args.tiny)
    print(
        f"stop calibration on {calibration['jets']} reference jets ({calibration['mean_particles']:.1f} particles on average): "
        f"summed stop probability up to each jet's end {calibration['cumulative_stop_probability']:.3f} "
        f"± {calibration['cumulative_stop_probability_error']:.3f} (calibrated: 1); "
        + ", ".join(f"{name} {c['cumulative_stop_probability']:.3f} ± {c['cumulative_stop_probability_error']:.3f} ({c['mean_particles']:.1f} particles)" for name, c in calibration["by_class"].items())
    )
    if acceptance:
        print(f"jets kept by the pT window {args.jet_pt_range} GeV: " + "; ".join(f"{run}: " + ", ".join(f"{name} {a:.1%}" for name, a in kept.items()) for run, kept in acceptance.items()))
    rows += means
    folders = [args.out / f"t{t:g}-seed{args.seeds[0]}" for t in args.temperatures]
    plots = [p for folder in folders for p in sorted(folder.glob("**/generated_*.png")) if p.stem in ("generated_mass", "generated_pt", "generated_multiplicity")]
    write_results(args, "generation", rows, {"headline": _headline(means or rows), "plots": plots, "table": table, "jets": args.jets, "class_mix": mix, "guidance": args.guidance, "jet_pt_range": args.jet_pt_range, "acceptance": acceptance, "stop_calibration": calibration}, models=[args.model])
    return rows


def _headline(rows: list[dict]) -> dict | None:
    """W1(jet mass) of all classes at the temperature closest to 1, against the real-vs-real floor."""
    mass = [r for r in rows if r["metric"] == "w1_mass" and r["class"] == "all" and r["temperature"] != "tokens"]
    if not mass:
        return None
    best = min(mass, key=lambda r: abs(r["temperature"] - 1.0))
    ratio = f" ({best['ratio']:.2f}x the floor)" if best.get("ratio") is not None else ""
    return {"metric": f"W1(jet mass) at T = {best['temperature']:g}", "ours": f"{best['value']:.4g}{ratio}", "peer": f"real vs real: {best['floor']:.4g}"}


def _acceptance(generated) -> dict[str, float]:
    """{class: fraction of sampled jets the pT window kept}, from the generated file's metadata."""
    from foundation.data.canonical import CanonicalSource

    return CanonicalSource(generated).metadata["acceptance"]


def _with_ratio(report: list[dict], **labels) -> list[dict]:
    rows = []
    for r in report:
        # No ratio where either side is not resolved from 0 (e.g. an FPD fit that ends on its a >= 0
        # bound, or a KPD floor within its error of 0).
        resolved = r["floor"] > r["floor_error"] and r["value"] > r["error"]
        rows.append({**labels, **r, "ratio": r["value"] / r["floor"] if resolved else None})
    return rows


def _seed_means(rows: list[dict]) -> list[dict]:
    """One row per (T, class, metric): value and floor averaged over the seeds, ratio of the means."""
    from benchmarks.common import mean_and_spread

    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r["temperature"] != "tokens":
            groups.setdefault((r["temperature"], r["class"], r["metric"]), []).append(r)
    means = []
    for (temperature, name, metric), group in groups.items():
        value, error = mean_and_spread([r["value"] for r in group])
        floor, floor_error = mean_and_spread([r["floor"] for r in group])
        means.append(_with_ratio([{"metric": metric, "value": value, "error": error, "floor": floor, "floor_error": floor_error}], temperature=temperature, seed="mean", **{"class": name})[0])
    return means


def _reference_class_mix(args) -> dict[str, float] | None:
    """{class: fraction of the reference} when the model is class-conditional over the reference's classes."""
    import numpy as np

    from foundation.data.sources import JetCollection
    from foundation.errors import InputError
    from foundation.hub import resolve
    from foundation.models import JetTransformerConfig

    cfg = JetTransformerConfig.from_pretrained(resolve(args.model))  # the config alone: generate_jets loads and verifies the weights
    if not cfg.num_generation_classes:
        return None
    reference = JetCollection.open(args.reference)
    names = reference.class_names
    missing = [c for c in names if c not in cfg.generation_class_names]
    if missing:
        raise InputError(f"{', '.join(map(str, args.reference))}: classes {missing} are not among the model's {cfg.generation_class_names}; pass --no-class-mix")
    counts = np.bincount(reference.labels(), minlength=len(names))
    return {name: float(n) / counts.sum() for name, n in zip(names, counts, strict=True) if n > 0}


def _tokenizer_rows(args) -> list[dict]:
    """Half the reference through the model's tokenizer and back, against the other half."""
    import numpy as np

    from foundation.data.canonical import write_jets
    from foundation.data.sources import JetCollection
    from foundation.errors import InputError
    from foundation.pipelines.generate import evaluate_generation, tokenizer_round_trip

    reference = JetCollection.open(args.reference).read_all()
    if len(reference) < 8:  # each half is split in halves again for its floor
        raise InputError(f"{', '.join(map(str, args.reference))}: {len(reference)} reference jets; the tokenizer rows need at least 8")
    order = np.random.default_rng(0).permutation(len(reference))
    half = len(reference) // 2
    out = args.out / "tokens"
    tokenized = tokenizer_round_trip(args.model, reference.subset(np.sort(order[:half])), out / "tokenized_half.h5")
    other_half = write_jets(out / "reference_half.h5", reference.subset(np.sort(order[half:])))
    return _with_ratio(evaluate_generation(str(tokenized), str(other_half), out_dir=out), temperature="tokens", seed=0, **{"class": "all"})


if __name__ == "__main__":
    run_script(main)
