"""How close generated jets are to reference jets: the metrics of arXiv 2211.10295 and the jetnet package.

Written from the definitions, without jetnet or energyflow (both pin numpy < 2):

- W1 (1-Wasserstein) distances of jet mass, jet pT and multiplicity, and of the particle
  eta_rel, phi_rel and pT_rel, as means and standard deviations over random batches (jetnet's
  w1m / w1p);
- FPD and KPD on the 36 energy flow polynomials of degree d <= 4 that jetnet's
  `get_fpd_kpd_jet_features` computes (their enumeration and evaluation: foundation/evaluation/efp.py):
- FPD: Fréchet distance of Gaussians fitted to the EFPs, extrapolated to infinite sample size;
- KPD: unbiased MMD^2 of the EFPs with a polynomial kernel, median and spread over batches.

All random draws come from numpy Generators seeded by the `seed` arguments, so results repeat.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import curve_fit
from scipy.stats import wasserstein_distance

from foundation.data.features import wrap_phi
from foundation.data.jets import jet_kinematics
from foundation.errors import InputError
from foundation.evaluation.efp import energy_flow_polynomials, particle_pt_eta_phi

logger = logging.getLogger(__name__)

# jetnet's recommended sizes (arXiv 2211.10295, Sec. V): 50k jets for W1 and FPD, 5k per KPD batch.
W1_BATCH_SIZE = 50_000
KPD_BATCH_SIZE = 5_000
FPD_MIN_SAMPLES = 20_000
FPD_MAX_SAMPLES = 50_000

# --------------------------------------------------------------------------------------------
# Wasserstein distances
# --------------------------------------------------------------------------------------------


def w1(a: np.ndarray, b: np.ndarray) -> float:
    """1-Wasserstein distance between the 1-D samples a and b (scipy.stats.wasserstein_distance)."""
    return float(wasserstein_distance(np.ravel(a), np.ravel(b)))


def w1_batched(
    a: np.ndarray, b: np.ndarray, num_batches: int = 5, batch_size: int | None = None, seed: int = 0
) -> tuple[float, float]:
    """Mean and standard deviation of W1 over `num_batches` random batches, as jetnet's w1m.

    Each batch draws `batch_size` values from a and from b with replacement (jetnet draws 50k
    from each); the default is the smaller sample, at most 50k, since drawing more than there
    are only repeats values.
    """
    a, b = np.ravel(a), np.ravel(b)
    if len(a) == 0 or len(b) == 0:
        raise ValueError("W1 needs non-empty samples")
    size = min(len(a), len(b), W1_BATCH_SIZE) if batch_size is None else int(batch_size)
    rng = np.random.default_rng(seed)
    vals = [w1(a[rng.choice(len(a), size)], b[rng.choice(len(b), size)]) for _ in range(num_batches)]
    return float(np.mean(vals)), float(np.std(vals))


def w1_particles_batched(
    features_a: np.ndarray,
    mask_a: np.ndarray,
    features_b: np.ndarray,
    mask_b: np.ndarray,
    num_batches: int = 5,
    batch_size: int | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature W1 of particle features, as jetnet's w1p: batches of jets, then their real particles.

    features_*: (J, N, F); mask_*: (J, N). Returns (means (F,), stds (F,)) over the batches.
    """
    size = min(len(features_a), len(features_b), W1_BATCH_SIZE) if batch_size is None else int(batch_size)
    rng = np.random.default_rng(seed)
    n_features = features_a.shape[-1]
    vals = np.empty((num_batches, n_features))
    for i in range(num_batches):
        ia, ib = rng.choice(len(features_a), size), rng.choice(len(features_b), size)
        pa = features_a[ia][mask_a[ia]]  # (P_a, F)
        pb = features_b[ib][mask_b[ib]]  # (P_b, F)
        vals[i] = [w1(pa[:, f], pb[:, f]) if len(pa) and len(pb) else np.inf for f in range(n_features)]
    return vals.mean(axis=0), vals.std(axis=0)


# --------------------------------------------------------------------------------------------
# Particle kinematics
# --------------------------------------------------------------------------------------------

PARTICLE_FEATURES = ("eta_rel", "phi_rel", "pt_rel")


def particle_features(constituents: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(J, N, 3) eta_rel, phi_rel (wrapped into [-pi, pi)), pT_rel = pT / pT_jet; zero at padded entries."""
    pt, eta, phi = particle_pt_eta_phi(constituents, mask)
    jet = jet_kinematics(constituents, mask)
    jet_pt = np.where(jet["pt"] > 0, jet["pt"], 1.0)[:, None]
    out = np.stack([eta - jet["eta"][:, None], wrap_phi(phi - jet["phi"][:, None]), pt / jet_pt], axis=-1)
    return np.where(mask[..., None], out, 0.0)


# --------------------------------------------------------------------------------------------
# FPD and KPD
# --------------------------------------------------------------------------------------------


def _normalise(real: np.ndarray, gen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Both divided by the largest |real| per feature (jetnet's normalise=True), so no feature dominates."""
    scale = np.max(np.abs(real), axis=0)
    scale = np.where(scale > 0, scale, 1.0)  # a feature that is 0 everywhere stays 0
    return real / scale, gen / scale


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    Tr (S1 S2)^(1/2) is computed as the sum of square roots of the eigenvalues of the symmetric
    S1^(1/2) S2 S1^(1/2) (same spectrum as S1 S2), which avoids complex round-off of sqrtm.
    """
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    diff = mu1 - mu2
    s1h = _sqrt_psd(sigma1)
    inner = s1h @ sigma2 @ s1h
    ev = np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * np.sqrt(ev).sum())


def _fit_intercept(inverse_n: np.ndarray, values: np.ndarray) -> tuple[float, float]:
    """Intercept and its error of values = a + b / N, with a, b >= 0 (as in the paper)."""
    if np.allclose(values, values[0]) or len(values) < 3:
        return float(np.mean(values)), float(np.std(values))
    params, cov = curve_fit(
        lambda x, a, b: a + b * x,
        inverse_n,
        values,
        p0=(max(values.min(), 0.0), 0.0),
        bounds=([0, 0], [np.inf, np.inf]),
    )
    err = float(np.sqrt(cov[0, 0])) if np.isfinite(cov[0, 0]) else float("nan")
    return float(params[0]), err


def fpd(
    real_features: np.ndarray,
    gen_features: np.ndarray,
    min_samples: int = FPD_MIN_SAMPLES,
    max_samples: int = FPD_MAX_SAMPLES,
    num_batches: int = 20,
    num_points: int = 10,
    seed: int = 0,
    normalise: bool = True,
) -> tuple[float, float]:
    """Fréchet physics distance (value, error) between (J, K) feature sets, arXiv 2211.10295.

    For `num_points` batch sizes N evenly spaced in 1/N between min_samples and max_samples, the
    Fréchet distance is averaged over `num_batches` draws (with replacement) from each set; a
    straight line in 1/N (intercept, slope >= 0) is fitted and its intercept, the value at
    infinite N, is returned with the fit's error on it. Features are first divided by the
    largest |real| value of each. With fewer jets than max_samples both sizes are scaled down
    by the same factor, with a warning: the value is then less precise than the paper's.
    """
    real, gen = np.asarray(real_features, np.float64), np.asarray(gen_features, np.float64)
    if real.ndim == 1:
        real, gen = real[:, None], gen[:, None]
    available = min(len(real), len(gen))
    if available < 10:
        raise InputError(f"FPD needs at least 10 jets in each set, got {len(real)} and {len(gen)}")
    if available < max_samples:
        factor = available / max_samples
        new_min = max(5, int(min_samples * factor))
        logger.warning(
            "FPD: %d jets available, fewer than max_samples=%d; using batch sizes %d..%d (the paper uses 20k..50k)",
            available,
            max_samples,
            new_min,
            available,
        )
        min_samples, max_samples = new_min, available
    if normalise:
        real, gen = _normalise(real, gen)
    sizes = (1.0 / np.linspace(1.0 / min_samples, 1.0 / max_samples, num_points)).astype(int)
    rng = np.random.default_rng(seed)
    values = []
    for n in sizes:
        batch = []
        for _ in range(num_batches):
            x = real[rng.choice(len(real), n)]
            y = gen[rng.choice(len(gen), n)]
            batch.append(
                frechet_distance(x.mean(0), np.cov(x, rowvar=False), y.mean(0), np.cov(y, rowvar=False))
            )
        values.append(np.mean(batch))
    return _fit_intercept(1.0 / sizes, np.asarray(values))


def _kernel_sum(x: np.ndarray, y: np.ndarray, degree: int, skip_diagonal: bool, block: int = 1024) -> float:
    """Sum of k(x_i, y_j) = (x_i . y_j / d + 1)^degree over all pairs, in row blocks to bound memory."""
    d = x.shape[1]
    total = 0.0
    for start in range(0, len(x), block):
        base = x[start : start + block] @ y.T / d + 1.0  # (B, M)
        k = base.copy()
        for _ in range(degree - 1):  # in-place products: several times faster than np.power
            k *= base
        if skip_diagonal:
            rows = np.arange(k.shape[0])
            k[rows, start + rows] = 0.0
        total += float(k.sum())
    return total


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, degree: int = 4) -> float:
    """Unbiased estimate of MMD^2 between samples x (m, K) and y (n, K) with a polynomial kernel."""
    m, n = len(x), len(y)
    kxx = _kernel_sum(x, x, degree, skip_diagonal=True) / (m * (m - 1))
    kyy = _kernel_sum(y, y, degree, skip_diagonal=True) / (n * (n - 1))
    kxy = _kernel_sum(x, y, degree, skip_diagonal=False) / (m * n)
    return kxx + kyy - 2.0 * kxy


def kpd(
    real_features: np.ndarray,
    gen_features: np.ndarray,
    num_batches: int = 10,
    batch_size: int = KPD_BATCH_SIZE,
    seed: int = 0,
    normalise: bool = True,
    degree: int = 4,
) -> tuple[float, float]:
    """Kernel physics distance (median, error) between (J, K) feature sets, arXiv 2211.10295.

    Unbiased MMD^2 with k(x, y) = (x.y / K + 1)^degree on `num_batches` batches of `batch_size`
    jets drawn with replacement from each set; returns the median and half the spread between
    the 16.275th and 83.725th percentiles (a Gaussian's +-1 sigma), as jetnet does. Degree 4 is
    jetnet's kernel, with which the published KPD values were computed; degree=3 gives KID's
    cubic kernel. Features are divided by the largest |real| value of each first.
    """
    real, gen = np.asarray(real_features, np.float64), np.asarray(gen_features, np.float64)
    if real.ndim == 1:
        real, gen = real[:, None], gen[:, None]
    available = min(len(real), len(gen))
    if available < 2:
        raise InputError(f"KPD needs at least 2 jets in each set, got {len(real)} and {len(gen)}")
    if available < batch_size:
        logger.warning(
            "KPD: %d jets available, fewer than batch_size=%d; using batches of %d",
            available,
            batch_size,
            available,
        )
        batch_size = available
    if normalise:
        real, gen = _normalise(real, gen)
    values = []
    for i in range(num_batches):
        rng = np.random.default_rng(seed + 1000 * i)
        x = real[rng.choice(len(real), batch_size)]
        y = gen[rng.choice(len(gen), batch_size)]
        values.append(mmd2_unbiased(x, y, degree))
    lo, hi = np.percentile(values, [16.275, 83.725])
    return float(np.median(values)), float((hi - lo) / 2)


# --------------------------------------------------------------------------------------------
# All metrics together
# --------------------------------------------------------------------------------------------

METRICS = (
    "w1_mass",
    "w1_pt",
    "w1_multiplicity",
    "w1_particle_eta_rel",
    "w1_particle_phi_rel",
    "w1_particle_pt_rel",
    "fpd",
    "kpd",
)


@dataclass
class PreparedJets:
    """Everything the metrics need of one jet sample, computed once (`prepare_jets`); subsets
    (one class, one half) reuse it, so EFPs are never computed twice for the same jets."""

    jet: dict[str, np.ndarray]  # mass, pt, multiplicity: (J,)
    particles: np.ndarray  # (J, N, 3) eta_rel, phi_rel, pt_rel
    mask: np.ndarray  # (J, N)
    efps: np.ndarray  # (J, 36)

    def __len__(self) -> int:
        return len(self.mask)

    def subset(self, index: np.ndarray) -> PreparedJets:
        return PreparedJets(
            {k: v[index] for k, v in self.jet.items()},
            self.particles[index],
            self.mask[index],
            self.efps[index],
        )


def _arrays(jets) -> tuple[np.ndarray, np.ndarray]:
    """(constituents, mask) of a dict with those keys or of an object with those attributes (JetArrays)."""
    if isinstance(jets, Mapping):
        c, m = jets["constituents"], jets["mask"]
    else:
        c, m = jets.constituents, jets.mask
    c, m = np.asarray(c), np.asarray(m).astype(bool)
    if c.ndim != 3 or c.shape[-1] != 4 or m.shape != c.shape[:2]:
        raise ValueError(f"expected constituents (J, N, 4) and mask (J, N), got {c.shape} and {m.shape}")
    return c, m


def prepare_jets(jets) -> PreparedJets:
    """Jet kinematics, particle features and EFPs of jets (JetArrays or a dict, see `_arrays`)."""
    if isinstance(jets, PreparedJets):
        return jets
    c, m = _arrays(jets)
    kin = jet_kinematics(c, m)
    return PreparedJets(
        jet={"mass": kin["mass"], "pt": kin["pt"], "multiplicity": kin["multiplicity"].astype(np.float64)},
        particles=particle_features(c, m),
        mask=m,
        efps=energy_flow_polynomials(c, m),
    )


def _metrics(
    gen: PreparedJets, ref: PreparedJets, seed: int, sample_size: int | None
) -> dict[str, tuple[float, float]]:
    n = min(len(gen), len(ref)) if sample_size is None else int(sample_size)
    w1_size = min(n, W1_BATCH_SIZE)
    out = {}
    for key in ("mass", "pt", "multiplicity"):
        out[f"w1_{key}"] = w1_batched(gen.jet[key], ref.jet[key], batch_size=w1_size, seed=seed)
    means, stds = w1_particles_batched(
        gen.particles, gen.mask, ref.particles, ref.mask, batch_size=w1_size, seed=seed
    )
    for name, mean, std in zip(PARTICLE_FEATURES, means, stds, strict=True):
        out[f"w1_particle_{name}"] = (float(mean), float(std))
    fpd_max = min(n, FPD_MAX_SAMPLES)
    fpd_min = max(5, int(fpd_max * FPD_MIN_SAMPLES / FPD_MAX_SAMPLES))
    if fpd_max < FPD_MAX_SAMPLES:
        logger.info("FPD with batch sizes %d..%d (the paper uses 20k..50k jets)", fpd_min, fpd_max)
    out["fpd"] = fpd(ref.efps, gen.efps, min_samples=fpd_min, max_samples=fpd_max, seed=seed)
    out["kpd"] = kpd(ref.efps, gen.efps, batch_size=min(n, KPD_BATCH_SIZE), seed=seed)
    return out


def generation_metrics(
    generated, reference, seed: int = 0, sample_size: int | None = None
) -> dict[str, tuple[float, float]]:
    """Every metric of `METRICS` as (value, error) for generated jets against reference jets.

    generated, reference: dicts with constituents (J, N, 4) E, px, py, pz and mask (J, N), or
    JetArrays. W1 values are in the units of the quantity (GeV for mass and pT); their error is
    the standard deviation over 5 batches. FPD and KPD are computed on the 36 EFPs.
    `sample_size` (jets per batch) defaults to the smaller sample, capped at jetnet's sizes.
    """
    return _metrics(prepare_jets(generated), prepare_jets(reference), seed, sample_size)


def generation_report(generated, reference, seed: int = 0) -> list[dict]:
    """Rows {metric, value, error, floor, floor_error}: generated vs reference, and the floor.

    The floor is the same metric between two random halves of the reference: what a perfect
    generator would score with this many jets. Both use the same batch sizes (the smaller of the
    generated sample and half the reference), so value and floor can be compared directly.
    Either sample may be given already prepared (`prepare_jets`).
    """
    gen, ref = prepare_jets(generated), prepare_jets(reference)
    if len(ref) < 4:
        raise InputError(f"the reference needs at least 4 jets to be split in halves, got {len(ref)}")
    order = np.random.default_rng(seed).permutation(len(ref))
    half_a, half_b = ref.subset(order[: len(ref) // 2]), ref.subset(order[len(ref) // 2 :])
    size = min(len(gen), len(half_a))
    main = _metrics(gen, ref, seed, size)
    floor = _metrics(half_a, half_b, seed, size)
    return [
        {
            "metric": k,
            "value": main[k][0],
            "error": main[k][1],
            "floor": floor[k][0],
            "floor_error": floor[k][1],
        }
        for k in METRICS
    ]
