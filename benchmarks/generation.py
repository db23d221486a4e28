"""Benchmark 4: generated jets against real ones, for a few sampling temperatures.

    python -m benchmarks.generation --model checkpoints/main/pretrain/model --reference checkpoints/main/data/test.h5 --jets 5000

For each temperature, samples jets from the pretrained model and compares them with the
reference (held-out) jets: W1 of jet mass, pT, multiplicity and particle features, FPD and KPD,
each beside the same metric between two halves of the reference (the statistical floor).
The reference is taken as tokens can represent it: massless constituents, cut to the tokenizer's
particle count. Also prints the model's stop calibration on the reference jets (the stop-token
probability summed up to each real jet's end; 1 when the model knows where real jets end).
"""

from __future__ import annotations

from benchmarks.common import base_parser, print_table, write_results


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "generation")
    parser.add_argument("--model", default="checkpoints/main/pretrain/model")
    parser.add_argument("--reference", nargs="+", default=["checkpoints/main/data/test.h5"])
    parser.add_argument("--jets", type=int, default=5000)
    parser.add_argument("--temperatures", type=float, nargs="+", default=[0.8, 1.0, 1.2])
    parser.add_argument("--top-k", type=int, default=None)
    args = parser.parse_args(argv)

    from foundation.pipelines.generate import evaluate_generation, generate_jets, stop_calibration

    rows = []
    for temperature in args.temperatures:
        for seed in args.seeds:
            out = args.out / f"t{temperature:g}-seed{seed}"
            generated = generate_jets(args.model, args.jets, out / "generated.h5", temperature=temperature, top_k=args.top_k, seed=seed, progress=not args.tiny)
            for r in evaluate_generation(str(generated), args.reference, out_dir=out, seed=seed):
                # No ratio where either side is not resolved from 0 (e.g. an FPD fit that ends on its a >= 0 bound).
                resolved = r["floor"] > 0 and r["value"] > r["error"]
                rows.append({"temperature": temperature, "seed": seed, **r, "ratio": r["value"] / r["floor"] if resolved else None})
    table = print_table(
        rows,
        [("temperature", "T", "g"), ("metric", "metric", ""), ("value", "generated vs real", ".4g"), ("error", "±", ".2g"),
         ("floor", "real vs real", ".4g"), ("floor_error", "±", ".2g"), ("ratio", "ratio", ".2f")],
    )
    calibration = stop_calibration(args.model, args.reference, limit=1000, progress=not args.tiny)
    print(
        f"stop calibration on {calibration['jets']} reference jets ({calibration['mean_particles']:.1f} particles on average): "
        f"summed stop probability up to each jet's end {calibration['cumulative_stop_probability']:.3f} "
        f"± {calibration['cumulative_stop_probability_error']:.3f} (calibrated: 1); "
        + ", ".join(f"{name} {c['cumulative_stop_probability']:.3f} ± {c['cumulative_stop_probability_error']:.3f} ({c['mean_particles']:.1f} particles)" for name, c in calibration["by_class"].items())
    )
    write_results(args.out, "generation", rows, {"table": table, "jets": args.jets, "model": args.model, "stop_calibration": calibration})
    return rows


if __name__ == "__main__":
    main()
