"""Refit a trained VQ codebook to its encoder's final latents: weighted k-means (Lloyd) iterations.

During training the EMA codebook follows the last few batches of a moving encoder, so its codes
end as noisy averages (with 8192 codes and 32 jets a step, a code has seen a few particles per
batch). Once the encoder is fixed, Lloyd iterations over all training particles, started from the
trained codes, move every code to the weighted mean of the particles nearest to it, which lowers
the quantisation error the decoder has to undo. Weights let hard particles, which set a jet's mass,
count more (the same pT weighting as codebook_pt_weighting during training).
"""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree
from tqdm.auto import tqdm


def weighted_kmeans(
    points: np.ndarray,
    weights: np.ndarray,
    centroids: np.ndarray,
    iterations: int,
    progress: bool = False,
) -> tuple[np.ndarray, list[float]]:
    """Lloyd iterations from `centroids` (K, C) over `points` (P, C) with `weights` (P,).

    Returns the new centroids (K, C) and the weighted mean squared distance of the points to their
    nearest centroid before each iteration. A centroid that no point is nearest to keeps its place.
    Nearest centroids come from a k-d tree: with low-dimensional codes (the recipes use 4) that is
    ~20x faster than the dense distance matrix scikit-learn's KMeans computes (8192 codes x ~10^6
    particles), and it takes the trained codebook as the start, which is the point here.
    """
    points = np.asarray(points, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    centroids = np.array(centroids, dtype=np.float64)
    if points.ndim != 2 or centroids.ndim != 2 or points.shape[1] != centroids.shape[1]:
        raise ValueError(f"points {points.shape} and centroids {centroids.shape} must be (N, C) with the same C")
    if weights.shape != (len(points),) or (weights < 0).any():
        raise ValueError(f"weights must be {len(points)} non-negative numbers, got shape {weights.shape}")
    k = len(centroids)
    errors = []
    for _ in tqdm(range(iterations), desc="codebook refit", unit="iteration", disable=not progress):
        distance, nearest = cKDTree(centroids).query(points, workers=-1)
        errors.append(float(np.average(distance**2, weights=weights)))
        mass = np.bincount(nearest, weights=weights, minlength=k)  # (K,)
        sums = np.stack([np.bincount(nearest, weights=weights * points[:, c], minlength=k) for c in range(points.shape[1])], 1)
        filled = mass > 0
        centroids[filled] = sums[filled] / mass[filled, None]
    return centroids, errors
