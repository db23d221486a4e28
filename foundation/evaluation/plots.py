"""Figures of the evaluation metrics, each written as a PNG; every function returns the path it wrote.

Figures are drawn on `matplotlib.figure.Figure` objects rendered by the Agg canvas, without
pyplot: nothing here needs a display or changes matplotlib's global backend.
"""

from __future__ import annotations

import bisect
import itertools
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score, roc_curve

from foundation.evaluation.anomaly import MIN_BACKGROUND_JETS, sic_curve

logger = logging.getLogger(__name__)

_DPI = 150


def _figure(size=(5.5, 4.5)) -> tuple[Figure, object]:
    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")  # keeps a legend placed outside the axes
    logger.debug("wrote %s", path)
    return path


def plot_roc(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], path: str | Path, title: str | None = None
) -> Path:
    """Background rejection 1/eps_B (log scale) against signal efficiency eps_S, one line per tagger.

    curves: name -> (labels (J,) 1 = signal, scores (J,)). Points with eps_B = 0 (infinite
    rejection) cannot be drawn and are left out. The dashed line is a random classifier.
    """
    fig, ax = _figure()
    for name, (labels, scores) in curves.items():
        fpr, tpr, _ = roc_curve(labels, scores)
        keep = fpr > 0
        auc = roc_auc_score(labels, scores)
        ax.plot(tpr[keep], 1.0 / fpr[keep], label=f"{name} (AUC = {auc:.3f})")
    eff = np.linspace(0.01, 1.0, 100)
    ax.plot(eff, 1.0 / eff, "k--", lw=1, label="random")
    ax.set_yscale("log")
    ax.set_xlim(0, 1)
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"background rejection $1/\epsilon_B$")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_sic(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]],
    path: str | Path,
    min_background_jets: int = MIN_BACKGROUND_JETS,
    title: str | None = None,
) -> Path:
    """SIC = eps_S / sqrt(eps_B) against eps_S, one line per anomaly score (see `sic_curve`: each
    point rests on at least `min_background_jets` background jets).

    curves: name -> (labels (J,) 1 = signal, scores (J,)). The dashed line is a random score.
    """
    fig, ax = _figure()
    for name, (labels, scores) in curves.items():
        eps_s, sic = sic_curve(labels, scores, min_background_jets)
        ax.plot(eps_s, sic, label=f"{name} (max SIC = {sic.max():.2f})")
    eff = np.linspace(0.0, 1.0, 100)
    ax.plot(eff, np.sqrt(eff), "k--", lw=1, label="random")
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel(r"signal efficiency $\epsilon_S$")
    ax.set_ylabel(r"significance improvement $\epsilon_S/\sqrt{\epsilon_B}$")
    ax.grid(True, alpha=0.3)
    # Below the axes: the method names are long and the curves fill the frame.
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    if title:
        ax.set_title(title)
    return _save(fig, path)


def histogram_edges(samples: list[np.ndarray], bins: int) -> np.ndarray:
    """Common bin edges spanning the finite values of all samples together.

    Integer data (multiplicities) get bins a whole number of integers wide, centred on them, so
    no bin holds one more integer than its neighbours (a comb pattern); one bin per integer when
    that is at most `bins` bins.
    """
    pooled = np.concatenate([x for x in samples if len(x)] or [np.zeros(1)])
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    if np.all(pooled == np.round(pooled)):
        width = max(1, int(np.ceil((hi - lo + 1) / int(bins))))
        return np.arange(lo - 0.5, hi + width + 0.5, width)
    return np.linspace(lo, hi, int(bins) + 1)


def plot_histograms(
    samples: Mapping[str, np.ndarray],
    path: str | Path,
    xlabel: str,
    bins: int | np.ndarray = 50,
    log: bool = False,
    density: bool = True,
    title: str | None = None,
) -> Path:
    """Overlaid step histograms of 1-D samples (name -> array) on common bins.

    With an integer `bins`, the edges come from `histogram_edges`, common to all samples so the
    curves are comparable. `log` puts the y axis on a log scale.
    """
    fig, ax = _figure()
    data = {name: np.asarray(x, dtype=np.float64).ravel() for name, x in samples.items()}
    data = {name: x[np.isfinite(x)] for name, x in data.items()}
    edges = histogram_edges(list(data.values()), bins) if np.isscalar(bins) else bins
    for name, x in data.items():
        if len(x) == 0:
            logger.warning("plot_histograms: sample %r is empty, not drawn in %s", name, path)
            continue
        ax.hist(x, bins=edges, histtype="step", lw=1.5, density=density, label=f"{name} ({len(x)})")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density" if density else "entries")
    if log:
        ax.set_yscale("log")
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_code_usage(counts: np.ndarray, path: str | Path, title: str | None = None) -> Path:
    """How often each code of a VQ codebook is used, codes sorted from most to least used.

    A healthy codebook gives a slowly falling curve; a cliff to zero shows dead codes.
    """
    counts = np.asarray(counts, dtype=np.float64).ravel()
    ranked = np.sort(counts)[::-1]
    total = ranked.sum()
    used = int((ranked > 0).sum())
    p = ranked[ranked > 0] / total if total else np.zeros(0)
    perplexity = float(np.exp(-(p * np.log(p)).sum())) if total else 0.0
    fig, ax = _figure((6.5, 4.0))
    frac = ranked / total if total else ranked
    ax.bar(np.arange(len(ranked)), frac, width=1.0, color="tab:blue")
    ax.set_yscale("log")
    ax.set_xlim(-0.5, len(ranked) - 0.5)
    ax.set_xlabel("code rank (most used first)")
    ax.set_ylabel("fraction of tokens")
    ax.set_title(title or f"{used}/{len(ranked)} codes used, perplexity {perplexity:.1f}")
    return _save(fig, path)


def plot_binned_resolution(bins: list[dict], path: str | Path, xlabel: str, ylabel: str) -> Path:
    """A resolution per bin (rows of relative_rms_by_bin) as steps, with each bin's jet count.

    The open last bin is drawn as wide as the one before it.
    """
    rows = [b for b in bins if b["jets"]]
    fig, ax = _figure()
    for b in rows:
        high = b["high"] if b["high"] is not None else b["low"] + (b["low"] - bins[-2]["low"] if len(bins) > 1 else 1.0)
        ax.hlines(b["relative_rms"], b["low"], high, color="tab:blue", lw=2)
        ax.annotate(f"{b['jets']} jets\n{100 * b['share_of_squared_error']:.0f}% of error²", ((b["low"] + high) / 2, b["relative_rms"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
    ax.set_ylim(0, 1.3 * max((b["relative_rms"] for b in rows), default=1.0))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    return _save(fig, path)


def plot_label_efficiency(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    ylabel: str = "AUC",
    title: str | None = None,
) -> Path:
    """Test AUC against the number of labelled training jets (log x), one line per model.

    curves: name -> (n_labels (K,), auc (K,), auc_err (K,) or None), e.g. a pretrained and a
    from-scratch model fine-tuned on growing labelled subsets.
    """
    fig, ax = _figure()
    for name, (n_labels, auc, err) in curves.items():
        order = np.argsort(n_labels)
        x, y = np.asarray(n_labels)[order], np.asarray(auc)[order]
        yerr = None if err is None else np.asarray(err)[order]
        ax.errorbar(x, y, yerr=yerr, marker="o", capsize=3, label=name)
    ax.set_xscale("log")
    ax.set_xlabel("labelled training jets")
    ax.set_ylabel(ylabel)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_training_curve(history: list[dict], jets_per_step: int, path: Path, stage_starts: list[int] = ()) -> Path:
    """Training loss (each logged step) and validation loss (each evaluation) against jets seen;
    a dashed line where each later training stage (a run continued from the one before) begins,
    at `stage_starts` steps: its objective, and so its loss, may differ."""
    fig, ax = _figure((6.5, 4.2))
    for i, step in enumerate(stage_starts, start=2):
        ax.axvline(step * jets_per_step, color="grey", ls="--", lw=1)
        ax.annotate(f"stage {i}", (step * jets_per_step, 1), xycoords=("data", "axes fraction"), xytext=(3, -12), textcoords="offset points", fontsize=8)
    # One line per stage (rows in step order; a row at a stage's first step belongs to the stage
    # before): no line joins two stages' losses.
    for i, rows in itertools.groupby(history, key=lambda r: bisect.bisect_left(stage_starts, r["step"])):
        rows = list(rows)
        train = [(r["step"] * jets_per_step, r["train/loss"]) for r in rows if "train/loss" in r]
        valid = [(r["step"] * jets_per_step, r["eval/loss"]) for r in rows if "eval/loss" in r]
        if train:
            ax.plot(*zip(*train, strict=True), lw=1, color="C0", label="training loss" if i == 0 else None)
        if valid:
            ax.plot(*zip(*valid, strict=True), "o-", color="C1", label="validation loss" if i == 0 else None)
    ax.set_xlabel("jets seen")
    ax.set_ylabel("loss (the run's objective)")
    ax.legend()
    ax.grid(alpha=0.3)
    return _save(fig, path)
