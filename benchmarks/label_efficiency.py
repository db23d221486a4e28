"""Benchmark 2: label efficiency, pretrained vs the same architecture from scratch.

    python -m benchmarks.label_efficiency --pretrained jet-foundation-small --budgets 0.001 0.01 0.1 1 --seeds 0 1 2

Test AUC against the number of labelled jets for both, on the data, protocol and run cache of
benchmark 1 (benchmarks/tagging.py: independent test sample, early stopping on validation AUC,
learning rate chosen on validation): its runs are reused, and these are reused by it. Prints the
labels saved: the largest budget's labels divided by the labels the pretrained model needs to reach
the from-scratch model's test AUC there (interpolated in log(jets) on the pretrained curve); 10x is
the floor, 100x the aim. Also, per pretrained point, the labels scratch needs for the same AUC.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import base_parser, print_table, run_script, write_results
from benchmarks.tagging import (
    add_arguments,
    labels_saved_line,
    prepare,
    run_models,
    summarise,
    validation_pass,
    wall_clock,
)


def label_factor(n_pre: np.ndarray, auc_pre: np.ndarray, n_scr: np.ndarray, auc_scr: np.ndarray) -> list[float | None]:
    """Labels scratch needs for each pretrained AUC / labels pretrained used (None beyond the scratch curve)."""
    order = np.argsort(n_scr)
    n_scr, auc_scr = n_scr[order], np.maximum.accumulate(auc_scr[order])  # a monotone envelope
    out = []
    for n, auc in zip(n_pre, auc_pre, strict=True):
        if auc > auc_scr[-1]:
            out.append(None)  # scratch never gets there with the labels available
        elif auc <= auc_scr[0]:
            out.append(float(n_scr[0] / n))
        else:
            i = int(np.searchsorted(auc_scr, auc))
            frac = (auc - auc_scr[i - 1]) / max(auc_scr[i] - auc_scr[i - 1], 1e-12)
            log_n = np.log(n_scr[i - 1]) + frac * (np.log(n_scr[i]) - np.log(n_scr[i - 1]))
            out.append(float(np.exp(log_n) / n))
    return out


def _spread(rows: list[dict]) -> list[float] | None:
    """Error bars where every point has several seeds."""
    spread = [r["auc_std"] for r in rows]
    return None if any(s is None for s in spread) else spread


def main(argv=None) -> dict:
    parser = base_parser(__doc__, "label_efficiency")
    add_arguments(parser, [0.001, 0.01, 0.1, 1.0], None)  # benchmark 1's budgets and 0.1%: its runs are reused
    args, bench = prepare(parser, argv)
    models = ["pretrained", "scratch"]
    if args.validation_only:
        return validation_pass(bench, args, models)
    rows = run_models(bench, args, models)
    summary = summarise(rows)
    pre = [r for r in summary if r["model"] == "pretrained"]
    scr = [r for r in summary if r["model"] == "scratch"]
    factors = label_factor(
        np.array([r["labelled_jets"] for r in pre], float), np.array([r["auc"] for r in pre]),
        np.array([r["labelled_jets"] for r in scr], float), np.array([r["auc"] for r in scr]),
    )
    table_rows = [
        {
            "labelled_jets": p["labelled_jets"], "auc_pretrained": p["auc"], "auc_pretrained_std": p["auc_std"], "auc_scratch": s["auc"], "auc_scratch_std": s["auc_std"],
            "epochs_pretrained": p["epochs"], "epochs_scratch": s["epochs"], "label_factor": f if f is not None else "beyond range",
        }
        for p, s, f in zip(pre, scr, factors, strict=True)
    ]
    table = print_table(table_rows, [
        ("labelled_jets", "labelled jets", "d"), ("auc_pretrained", "AUC pretrained", ".4f"), ("auc_pretrained_std", "±", ".4f"),
        ("auc_scratch", "AUC scratch", ".4f"), ("auc_scratch_std", "±", ".4f"), ("epochs_pretrained", "epochs (pre)", ".1f"),
        ("epochs_scratch", "epochs (scratch)", ".1f"), ("label_factor", "scratch labels for the same AUC (x)", ".1f"),
    ])
    saved = labels_saved_line(summary)
    print(saved.line, flush=True)
    wall = wall_clock(bench, ["pretrained", "scratch"])
    print("training wall-clock per model, every run (learning-rate search included): " + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in wall.items()), flush=True)
    from foundation.evaluation.plots import plot_label_efficiency

    plot = plot_label_efficiency(
        {
            "pretrained + fine-tuned": ([r["labelled_jets"] for r in pre], [r["auc"] for r in pre], _spread(pre)),
            "from scratch": ([r["labelled_jets"] for r in scr], [r["auc"] for r in scr], _spread(scr)),
        },
        args.out / "label_efficiency.png",
    )
    # the largest budget's labels are the full data set only when the budgets reach 1
    headline = {"metric": f"labels saved at the from-scratch model's test AUC with {saved.target_jets} labels", "ours": saved.figure, "peer": None}
    write_results(args, "label_efficiency", rows, {
        "summary": summary, "factors": table_rows, "table": table, "headline": headline, "labels_saved": saved.line, "labels_saved_factor": saved.factor,
        "wall_clock_seconds": wall, "data": bench.data.record, "plot": str(plot), "plots": [str(plot)],
    }, models=[args.pretrained])
    return {"summary": summary, "factors": table_rows, "labels_saved": saved.factor}


if __name__ == "__main__":
    run_script(main)
