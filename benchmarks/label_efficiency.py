"""Benchmark 2: label efficiency, pretrained vs the same architecture from scratch.

    python -m benchmarks.label_efficiency --pretrained checkpoints/main/pretrain/model --budgets 0.005 0.01 0.03 0.1 0.3 1

AUC against the number of labelled jets for both, and the factor in labels that pretraining
saves at equal AUC: for each pretrained point, how many labelled jets the scratch curve
(interpolated in log(jets)) needs to reach the same AUC, divided by the pretrained count.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.common import base_parser, print_table, write_results
from benchmarks.tagging import run_budgets, summarise


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
    parser.add_argument("--pretrained", default="checkpoints/main/pretrain/model")
    parser.add_argument("--data", nargs="+", default=None)
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.005, 0.01, 0.03, 0.1, 0.3, 1.0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--recipe", default="finetune/top_tagging.yaml")
    parser.add_argument("--learning-rate", type=float, default=None, help="peak learning rate (default: the recipe's); runs of benchmarks/tagging.py with the same one are reused")
    parser.add_argument("--runs", type=Path, default=None, help="folder of the individual runs, shared with benchmarks/tagging.py")
    args = parser.parse_args(argv)
    args.runs = args.runs or (None if args.tiny else Path("checkpoints/benchmarks/tagging-runs"))
    rows = run_budgets(args, ["pretrained", "scratch"])
    summary = summarise(rows)
    pre = [r for r in summary if r["model"] == "pretrained"]
    scr = [r for r in summary if r["model"] == "scratch"]
    factors = label_factor(
        np.array([r["labelled_jets"] for r in pre], float), np.array([r["auc"] for r in pre]),
        np.array([r["labelled_jets"] for r in scr], float), np.array([r["auc"] for r in scr]),
    )
    table_rows = [
        {"labelled_jets": p["labelled_jets"], "auc_pretrained": p["auc"], "auc_scratch": s["auc"], "label_factor": f if f is not None else "beyond range"}
        for p, s, f in zip(pre, scr, factors, strict=True)
    ]
    table = print_table(table_rows, [("labelled_jets", "labelled jets", "d"), ("auc_pretrained", "AUC pretrained", ".4f"), ("auc_scratch", "AUC scratch", ".4f"), ("label_factor", "labels saved (x)", ".1f")])
    from foundation.evaluation.plots import plot_label_efficiency

    plot = plot_label_efficiency(
        {
            "pretrained + fine-tuned": ([r["labelled_jets"] for r in pre], [r["auc"] for r in pre], _spread(pre)),
            "from scratch": ([r["labelled_jets"] for r in scr], [r["auc"] for r in scr], _spread(scr)),
        },
        args.out / "label_efficiency.png",
    )
    write_results(args, "label_efficiency", rows, {"summary": summary, "factors": table_rows, "table": table, "plot": str(plot)})
    return {"summary": summary, "factors": table_rows}


if __name__ == "__main__":
    main()
