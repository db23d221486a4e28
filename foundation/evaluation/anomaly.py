"""Anomaly-detection metrics: the significance improvement characteristic (SIC)."""

from __future__ import annotations

import logging

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

logger = logging.getLogger(__name__)


def sic_curve(
    labels: np.ndarray, scores: np.ndarray, min_background_efficiency: float | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """SIC = eps_S / sqrt(eps_B) along the ROC curve. labels (J,) 1 = signal; scores (J,) higher = more anomalous.

    Points with eps_B below `min_background_efficiency` are left out: there the estimate of eps_B
    rests on almost no background jets, and at eps_B = 0 the SIC is infinite. The default floor is
    1 / (number of background jets), i.e. at least one background jet must pass the cut.
    Returns (eps_s, sic), both (P,), ordered by increasing eps_B.
    """
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    n_background = int((labels == 0).sum())
    if n_background == 0 or n_background == len(labels):
        raise ValueError("SIC needs both signal (1) and background (0) jets")
    floor = 1.0 / n_background if min_background_efficiency is None else float(min_background_efficiency)
    eps_s, eps_b = _sic_points(labels, scores, floor)
    return eps_s, eps_s / np.sqrt(eps_b)


def _sic_points(labels: np.ndarray, scores: np.ndarray, floor: float) -> tuple[np.ndarray, np.ndarray]:
    # Every threshold is kept: sklearn's pruning of collinear points would drop the corner at the
    # start of a flat stretch, which is where the SIC of that stretch is largest.
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    keep = (fpr >= floor) & (fpr > 0)
    return tpr[keep], fpr[keep]  # (P,), (P,)


def anomaly_metrics(
    labels: np.ndarray, scores: np.ndarray, min_background_efficiency: float | None = None
) -> dict[str, float]:
    """auc, max_sic and the signal and background efficiencies where the SIC is largest."""
    labels = np.asarray(labels).astype(int).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    eps_s, sic = sic_curve(labels, scores, min_background_efficiency)
    best = int(np.argmax(sic))
    return {
        "auc": float(roc_auc_score(labels, scores)),
        "max_sic": float(sic[best]),
        "eps_s_at_max_sic": float(eps_s[best]),
        "eps_b_at_max_sic": float((eps_s[best] / sic[best]) ** 2) if sic[best] > 0 else float("nan"),
    }
