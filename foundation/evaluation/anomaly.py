"""Anomaly-detection metrics: the significance improvement characteristic (SIC)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

logger = logging.getLogger(__name__)


# Fewest background jets a SIC point may rest on: eps_B's relative statistical error is then at
# most 1/sqrt(25) = 20%. With fewer, the curve's tail is a count of one or two jets and its maximum
# mostly measures which background jet happened to score highest.
MIN_BACKGROUND_JETS = 25


def sic_curve(labels: np.ndarray, scores: np.ndarray, min_background_jets: int = MIN_BACKGROUND_JETS) -> tuple[np.ndarray, np.ndarray]:
    """SIC = eps_S / sqrt(eps_B) along the ROC curve. labels (J,) 1 = signal; scores (J,) higher = more anomalous.

    Points whose cut keeps fewer than `min_background_jets` background jets are left out (all
    points but eps_B = 1 when the sample has fewer background jets than that).
    Returns (eps_s, sic), both (P,), ordered by increasing eps_B.
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_background = int((labels == 0).sum())
    if n_background == 0 or n_background == len(labels):
        raise ValueError("SIC needs both signal (1) and background (0) jets")
    if min_background_jets < 1:
        raise ValueError(f"min_background_jets must be at least 1, got {min_background_jets}")
    floor = min(min_background_jets, n_background) / n_background
    eps_s, eps_b = _sic_points(labels, scores, floor)
    return eps_s, eps_s / np.sqrt(eps_b)


def _sic_points(labels: np.ndarray, scores: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    # Every threshold is kept: sklearn's pruning of collinear points would drop the corner at the
    # start of a flat stretch, which is where the SIC of that stretch is largest.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    keep = (fpr >= floor) & (fpr > 0)
    return tpr[keep], fpr[keep]  # (P,), (P,)


def anomaly_metrics(labels: np.ndarray, scores: np.ndarray, min_background_jets: int = MIN_BACKGROUND_JETS) -> dict[str, float]:
    """auc, max_sic and the signal and background efficiencies where the SIC is largest (over the
    points of `sic_curve`: each resting on at least `min_background_jets` background jets)."""
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    eps_s, sic = sic_curve(labels, scores, min_background_jets)
    best = int(np.argmax(sic))
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "max_sic": float(sic[best]),
        "eps_s_at_max_sic": float(eps_s[best]),
        "eps_b_at_max_sic": float((eps_s[best] / sic[best]) ** 2) if sic[best] > 0 else float("nan"),
    }
