"""Benchmark 2: label efficiency, pretrained vs the same architecture from scratch.

    python -m benchmarks.label_efficiency --pretrained jet-foundation-small --budgets 0.001 0.01 0.1 1 --seeds 0 1 2

Test AUC against the number of labelled jets for both, on the data, protocol and run cache of
benchmark 1 (benchmarks/tagging.py: independent test sample, early stopping on validation AUC,
learning rate, and with --refine one more configuration, chosen on validation; the page lists
each model's choice): its runs are reused, and these are reused by it. Prints the
labels saved: the largest budget's labels divided by the labels the pretrained model needs to reach
the from-scratch model's test AUC there (interpolated in log(jets) on the pretrained curve); 10x is
the floor, 100x the aim. Also, per pretrained point, the labels scratch needs for the same AUC.
`--models pretrained main_job scratch` adds the main job's model (what `foundation run` pretrains)
as a third curve, with its own labels saved: the released model should save more.
"""

from __future__ import annotations

import numpy as np

from benchmarks.common import base_parser, print_table, run_script, write_results
from benchmarks.tagging import (
    NAMES,
    RESULTS_TITLE,
    SELECTION_TITLE,
    SHORT_NAMES,
    add_arguments,
    fail,
    labels_saved_line,
    measured_bundles,
    prepare,
    run_models,
    search_record,
    selection_table,
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
    add_arguments(parser, [0.001, 0.01, 0.1, 1.0], ["pretrained", "scratch"], ["pretrained", "main_job", "scratch"])  # benchmark 1's budgets and 0.1%: its runs are reused
    args, bench = prepare(parser, argv)
    models = [m for m in ("pretrained", "main_job", "scratch") if m in args.models]
    if "pretrained" not in models or "scratch" not in models:
        fail("--models: labels saved compare pretrained with scratch; give both")
    if args.validation_only:
        return validation_pass(bench, args, models)
    rows = run_models(bench, args, models)
    summary = summarise(rows)
    curves = {kind: [r for r in summary if r["model"] == kind] for kind in models}
    pretrained_kinds = [m for m in models if m != "scratch"]
    table_rows = factor_rows(curves, pretrained_kinds)
    table = print_table(table_rows, factor_columns(pretrained_kinds))
    selection = selection_table(rows)
    saved = {kind: labels_saved_line(summary, kind) for kind in pretrained_kinds}
    for kind in pretrained_kinds:
        print(("" if kind == "pretrained" else f"{SHORT_NAMES[kind]}: ") + saved[kind].line, flush=True)
    wall = wall_clock(bench, models)
    print("training wall-clock per model, every run (learning-rate search included): " + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in wall.items()), flush=True)
    from foundation.evaluation.plots import plot_label_efficiency

    plot = plot_label_efficiency(
        {NAMES[kind] if kind != "scratch" else "from scratch": ([r["labelled_jets"] for r in rows_], [r["auc"] for r in rows_], _spread(rows_)) for kind, rows_ in curves.items()},
        args.out / "label_efficiency.png",
    )
    released = saved["pretrained"]
    # the largest budget's labels are the full data set only when the budgets reach 1
    headline = {
        "metric": f"labels saved at the from-scratch model's test AUC with {released.target_jets} labels", "ours": released.figure,
        "peer": f"main job's model {saved['main_job'].figure}" if "main_job" in saved else None,
    }
    extra = {"labels_saved_main_job": saved["main_job"].line, "labels_saved_main_job_factor": saved["main_job"].factor} if "main_job" in saved else {}
    write_results(args, "label_efficiency", rows, {
        "summary": summary, "factors": table_rows, "headline": headline,
        "tables": {RESULTS_TITLE: table, SELECTION_TITLE: selection}, "labels_saved": released.line, "labels_saved_factor": released.factor,
        **extra, "wall_clock_seconds": wall, "data": bench.data.record, **search_record(args), "plot": str(plot), "plots": [str(plot)],
    }, models=measured_bundles(bench, models))
    return {"summary": summary, "factors": table_rows, "labels_saved": released.factor, **({"labels_saved_main_job": saved["main_job"].factor} if "main_job" in saved else {})}


def factor_rows(curves: dict[str, list[dict]], pretrained_kinds: list[str]) -> list[dict]:
    """One row per budget: each model's test AUC and spread, epochs, and for each pretrained model
    the labels scratch needs for its AUC, as a multiple of the labels it used."""
    scr = curves["scratch"]
    out = [{"labelled_jets": s["labelled_jets"], "auc_scratch": s["auc"], "auc_scratch_std": s["auc_std"], "epochs_scratch": s["epochs"]} for s in scr]
    for kind in pretrained_kinds:
        pre = curves[kind]
        factors = label_factor(
            np.array([r["labelled_jets"] for r in pre], float), np.array([r["auc"] for r in pre]),
            np.array([r["labelled_jets"] for r in scr], float), np.array([r["auc"] for r in scr]),
        )
        for row, p, f in zip(out, pre, factors, strict=True):
            row.update({f"auc_{kind}": p["auc"], f"auc_{kind}_std": p["auc_std"], f"epochs_{kind}": p["epochs"], f"label_factor_{kind}": f if f is not None else "beyond range"})
    return out


def factor_columns(pretrained_kinds: list[str]) -> list[tuple[str, str, str]]:
    columns = [("labelled_jets", "labelled jets", "d")]
    for kind in pretrained_kinds:
        columns += [(f"auc_{kind}", f"AUC {SHORT_NAMES[kind]}", ".4f"), (f"auc_{kind}_std", "±", ".4f")]
    columns += [("auc_scratch", "AUC scratch", ".4f"), ("auc_scratch_std", "±", ".4f")]
    columns += [(f"epochs_{kind}", f"epochs ({SHORT_NAMES[kind]})", ".1f") for kind in pretrained_kinds] + [("epochs_scratch", "epochs (scratch)", ".1f")]
    return columns + [(f"label_factor_{kind}", f"scratch labels for {SHORT_NAMES[kind]}'s AUC (x)", ".1f") for kind in pretrained_kinds]


if __name__ == "__main__":
    run_script(main)
