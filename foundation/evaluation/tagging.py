"""Jet-tagging metrics: AUC, accuracy and background rejection at fixed signal efficiency."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from foundation.data.jets import class_index

logger = logging.getLogger(__name__)


def background_efficiency_at(labels: np.ndarray, scores: np.ndarray, signal_efficiency: float) -> float:
    """eps_B at eps_S = `signal_efficiency`, read off the ROC curve with linear interpolation.

    Where the curve passes through the requested eps_S exactly, the smallest eps_B reaching it is
    taken (the best cut); in between two points the straight segment of the ROC curve is used.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    i = int(np.searchsorted(tpr, signal_efficiency, side="left"))  # first point with tpr >= eff
    if i >= len(tpr):
        return float(fpr[-1])
    if tpr[i] == signal_efficiency or i == 0:
        return float(fpr[i])
    # tpr[i-1] < eff < tpr[i]: the segment from the last point below to the first point above
    t = (signal_efficiency - tpr[i - 1]) / (tpr[i] - tpr[i - 1])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def rejection_key(signal_efficiency: float) -> str:
    return f"rejection_at_{signal_efficiency:g}"


def tagging_metrics(
    labels: np.ndarray, scores: np.ndarray, signal_efficiencies: Sequence[float] = (0.3, 0.5)
) -> dict[str, float]:
    """Binary tagging metrics. labels (J,) 1 = signal, 0 = background; scores (J,) higher = more signal-like.

    accuracy: scores inside [0, 1] are taken as probabilities and cut at 0.5; any score outside
    [0, 1] means the scores are logits, cut at 0 (the same cut as p = 0.5 after a sigmoid).
    rejection_at_<eff>: 1/eps_B at eps_S = eff; float('inf') when no background passes the cut
    (foundation.pipelines.common.json_safe writes it as the string "inf").
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.shape != scores.shape:
        raise ValueError(f"labels {labels.shape} and scores {scores.shape} differ in length")
    present = set(np.unique(labels).tolist())
    if present != {0, 1}:
        raise ValueError(f"binary labels need both classes 0 and 1, got {sorted(present)}")
    probabilities = scores.min() >= 0.0 and scores.max() <= 1.0
    cut = 0.5 if probabilities else 0.0
    out = {
        "auc": float(roc_auc_score(labels, scores)),
        "accuracy": float(np.mean((scores >= cut) == (labels == 1))),
    }
    for eff in signal_efficiencies:
        eps_b = background_efficiency_at(labels, scores, eff)
        out[rejection_key(eff)] = 1.0 / eps_b if eps_b > 0 else math.inf
    return out


def multiclass_tagging_metrics(
    labels: np.ndarray,
    probs: np.ndarray,
    class_names: Sequence[str],
    signal_class: int | str | None = None,
    background_class: int | str | None = None,
    signal_efficiencies: Sequence[float] = (0.3, 0.5),
) -> dict:
    """Metrics of a C-class tagger. labels (J,) in [0, C); probs (J, C) class probabilities.

    accuracy: argmax over all classes. auc: macro average of the one-vs-rest AUCs of the classes
    present (`auc_per_class` lists them). With `signal_class` and `background_class` (names or
    indices), `binary` holds `tagging_metrics` of score = p_s / (p_s + p_b) on the jets of those
    two classes only, as the ParT paper (arXiv 2202.03772) reports rejections on JetClass.
    """
    labels = np.asarray(labels).astype(int).ravel()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != (len(labels), len(class_names)):
        raise ValueError(f"probs must have shape ({len(labels)}, {len(class_names)}), got {probs.shape}")
    per_class = {}
    for c, name in enumerate(class_names):
        is_c = labels == c
        if is_c.any() and not is_c.all():
            per_class[name] = float(roc_auc_score(is_c, probs[:, c]))
    out: dict = {
        "accuracy": float(np.mean(probs.argmax(axis=1) == labels)),
        "auc": float(np.mean(list(per_class.values()))) if per_class else math.nan,
        "auc_per_class": per_class,
    }
    if (signal_class is None) != (background_class is None):
        raise ValueError("give both signal_class and background_class, or neither")
    if signal_class is not None:
        s = class_index(signal_class, class_names)
        b = class_index(background_class, class_names)
        keep = (labels == s) | (labels == b)
        p_s, p_b = probs[keep, s], probs[keep, b]
        total = p_s + p_b
        # both zero: the tagger has no preference between the two, so 0.5
        score = np.divide(p_s, total, out=np.full_like(total, 0.5), where=total > 0)
        out["binary"] = {
            "signal_class": class_names[s],
            "background_class": class_names[b],
            **tagging_metrics(labels[keep] == s, score, signal_efficiencies),
        }
    return out
