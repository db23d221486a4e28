"""How good a tokenizer is: codebook usage, and how well decoded jets match the originals."""

from __future__ import annotations

import itertools
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.data.features import compute_features, features_to_constituents
from foundation.data.jets import jet_kinematics
from foundation.data.sources import JetCollection

logger = logging.getLogger(__name__)


def codebook_metrics(counts: np.ndarray) -> dict[str, float]:
    """counts (V,): how often each code occurred. Usage = fraction of codes seen; perplexity = exp(entropy)."""
    total = counts.sum()
    p = counts[counts > 0] / max(total, 1)
    return {
        "codes_used": int((counts > 0).sum()),
        "code_usage": float((counts > 0).mean()),
        "perplexity": float(np.exp(-(p * np.log(p)).sum())) if total else 0.0,
    }


def _relative_error(decoded: np.ndarray, original: np.ndarray) -> np.ndarray:
    return (decoded - original) / np.where(original != 0, original, 1.0)


def relative_resolution(decoded: np.ndarray, original: np.ndarray, prefix: str) -> dict[str, float]:
    rel = _relative_error(decoded, original)
    q16, q84 = np.percentile(rel, [16, 84])
    return {
        f"{prefix}_relative_rms": float(np.sqrt(np.mean(rel**2))),
        f"{prefix}_relative_bias": float(np.mean(rel)),
        f"{prefix}_relative_iqr68": float((q84 - q16) / 2),  # robust width, insensitive to tails
    }


# Jet-mass bins (GeV) for the resolution by mass: the QCD bulk, W/Z, in between, the top peak, above.
JET_MASS_BINS_GEV = (0.0, 40.0, 80.0, 140.0, 200.0, float("inf"))


def relative_rms_by_bin(decoded: np.ndarray, original: np.ndarray, edges=JET_MASS_BINS_GEV) -> list[dict]:
    """Relative RMS of decoded vs original in bins of the original value, and each bin's share of
    the total squared error: which jets set the overall RMS (e.g. a few narrow low-mass jets)."""
    rel2 = _relative_error(decoded, original) ** 2
    total = rel2.sum()
    rows = []
    for low, high in itertools.pairwise(edges):
        in_bin = (original >= low) & (original < high)
        n = int(in_bin.sum())
        rows.append({
            "low": float(low),
            "high": None if np.isinf(high) else float(high),  # None: open-ended (JSON has no inf)
            "jets": n,
            "relative_rms": float(np.sqrt(rel2[in_bin].mean())) if n else None,
            "share_of_squared_error": float(rel2[in_bin].sum() / total) if total else 0.0,
        })
    return rows


# Beyond this |eta_rel| a particle of an R = 0.8 jet is "wide": in generated particle-level jets
# these are soft hadrons with pT below their mass, whose rapidity is near the jet's (as the
# clustering wants) but whose pseudorapidity, the eta of the features, lies far from the axis.
WIDE_ETA_REL = 1.0


def _feature_jet_mass(features: np.ndarray, mask: np.ndarray, names: list[str]) -> np.ndarray:
    """(J,) mass of the jets made of the massless particles that the features describe."""
    return jet_kinematics(features_to_constituents(features, names, mask), mask)["mass"]


def wide_particle_diagnostics(original: np.ndarray, decoded: np.ndarray, mask: np.ndarray, ids: np.ndarray,
                              names: list[str], pt_below_mass: np.ndarray | None = None,
                              original_mass: np.ndarray | None = None) -> dict:
    """How much of the jet-mass error the few wide particles (|eta_rel| > WIDE_ETA_REL) cause.

    original/decoded (J, N, F) features, mask (J, N), ids (J, N) tokens; pt_below_mass (J, N)
    whether a particle's pT is below its mass (from the file's massive constituents), if known;
    original_mass (J,) the original features' jet mass, if the caller has it already.
    "jet_mass_relative_rms_if_exact": the jet mass RMS with these particles kept as they were."""
    wide = mask & (np.abs(original[..., names.index("eta_rel")]) > WIDE_ETA_REL)  # (J, N)
    mass = {
        "original": _feature_jet_mass(original, mask, names) if original_mass is None else original_mass,
        "without": _feature_jet_mass(original, mask & ~wide, names),
        "exact": _feature_jet_mass(np.where(wide[..., None], original, decoded), mask, names),
    }
    share_of_m2 = 1 - (mass["without"] / np.where(mass["original"] > 0, mass["original"], 1.0)) ** 2  # (J,)
    out = {
        "eta_rel_above": WIDE_ETA_REL,
        "particles": int(wide.sum()),
        "fraction_of_particles": float(wide.sum() / max(mask.sum(), 1)),
        "distinct_codes": int(len(np.unique(ids[wide]))),
        "median_pt": float(np.median(np.exp(original[..., names.index("log_pt")][wide]))) if wide.any() else None,
        "jets_with_over_5pct_of_mass2": int((share_of_m2 > 0.05).sum()),
        "max_share_of_mass2": float(share_of_m2.max()) if len(share_of_m2) else 0.0,
        "jet_mass_relative_rms_if_exact": relative_resolution(mass["exact"], mass["original"], "m")["m_relative_rms"],
        "by_mass_if_exact": relative_rms_by_bin(mass["exact"], mass["original"]),
    }
    for i, name in enumerate(names):
        out[f"resolution/{name}"] = float(np.sqrt(np.mean((decoded[..., i] - original[..., i])[wide] ** 2))) if wide.any() else None
    if pt_below_mass is not None and wide.any():
        out["fraction_pt_below_mass"] = float(pt_below_mass[wide].mean())
    return out


@torch.no_grad()
def evaluate_tokenizer(
    tokenizer,
    data: str | Path | list,
    batch_size: int = 256,
    limit: int | None = None,
    plots_dir: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Encode and decode jets from `data`; return usage and resolution figures (and write plots)."""
    tokenizer.eval()
    cfg = tokenizer.config
    names = list(cfg.feature_names)
    collection = JetCollection.open(data, max_particles=cfg.max_particles)
    n_jets = len(collection) if limit is None else min(limit, len(collection))
    counts = np.zeros(cfg.vocab_codes, dtype=np.int64)
    originals, decodeds, masks, tokens, pt_below_mass, true_mass, true_pt = [], [], [], [], [], [], []
    without_codebook = []  # decoded from the encoder's latents, not the codes: the quantisation's share
    searching = cfg.encode_search_candidates > 1
    nearest_codes = []  # with encode_search: decoded from the nearest codes, what the search adds
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    tokenizer = tokenizer.to(device)
    bar = tqdm(total=n_jets, unit="jet", desc="evaluating tokenizer", disable=not progress)
    for start in range(0, n_jets, batch_size):
        jets = collection.read(start, min(start + batch_size, n_jets)).padded_to(cfg.max_particles)
        feats = compute_features(jets, names)
        f_t, m_t = torch.as_tensor(feats, device=device), torch.as_tensor(jets.mask, device=device)
        ids = tokenizer.encode(f_t, m_t)
        decoded = tokenizer.decode(ids, m_t).float().cpu().numpy()
        without_codebook.append(tokenizer.reconstruct_without_codebook(f_t, m_t).float().cpu().numpy())
        if searching:
            nearest_codes.append(tokenizer.decode(tokenizer.encode(f_t, m_t, search=False), m_t).float().cpu().numpy())
        valid_ids = ids[m_t].cpu().numpy()
        counts += np.bincount(valid_ids, minlength=cfg.vocab_codes)
        originals.append(feats)
        decodeds.append(decoded)
        masks.append(jets.mask)
        tokens.append(ids.cpu().numpy())
        e, px, py, pz = np.moveaxis(jets.constituents, -1, 0)  # (B, N) each
        pt_below_mass.append(px**2 + py**2 < e**2 - px**2 - py**2 - pz**2)
        truth = jet_kinematics(jets.constituents, jets.mask)
        true_mass.append(truth["mass"])
        true_pt.append(truth["pt"])
        bar.update(len(jets))
    bar.close()
    original, decoded, mask = np.concatenate(originals), np.concatenate(decodeds), np.concatenate(masks)
    metrics: dict = {"jets": int(n_jets), "particles": int(mask.sum()), "vocab_codes": int(cfg.vocab_codes),
                     "encode_search_candidates": cfg.encode_search_candidates, "encode_search_particles": cfg.encode_search_particles}
    metrics.update(codebook_metrics(counts))
    for i, name in enumerate(names):
        residual = decoded[..., i][mask] - original[..., i][mask]
        metrics[f"resolution/{name}"] = float(np.sqrt(np.mean(residual**2)))
        metrics[f"bias/{name}"] = float(np.mean(residual))
    result = {}
    if cfg.has_jet_features:
        orig_kin = jet_kinematics(features_to_constituents(original, names, mask), mask)
        dec_kin = jet_kinematics(features_to_constituents(decoded, names, mask), mask)
        # Against the same jets rebuilt from the input features: the loss from tokenisation alone.
        metrics.update(relative_resolution(dec_kin["mass"], orig_kin["mass"], "jet_mass"))
        metrics.update(relative_resolution(dec_kin["pt"], orig_kin["pt"], "jet_pt"))
        metrics["jet_mass_resolution_by_mass"] = relative_rms_by_bin(dec_kin["mass"], orig_kin["mass"])
        # The same encoder and decoder with the codebook skipped: what quantisation costs.
        unquantised_mass = _feature_jet_mass(np.concatenate(without_codebook), mask, names)
        metrics["jet_mass_relative_rms_without_codebook"] = relative_resolution(unquantised_mass, orig_kin["mass"], "m")["m_relative_rms"]
        if searching:  # the same codebook and decoder, each particle given its nearest code
            nearest_mass = _feature_jet_mass(np.concatenate(nearest_codes), mask, names)
            metrics["jet_mass_relative_rms_nearest_codes"] = relative_resolution(nearest_mass, orig_kin["mass"], "m")["m_relative_rms"]
        metrics["wide_particles"] = wide_particle_diagnostics(
            original, decoded, mask, np.concatenate(tokens), names, np.concatenate(pt_below_mass), orig_kin["mass"])
        # Against the file's own jets (massive constituents, cut to max_particles), for reference.
        metrics["jet_mass_vs_file_relative_rms"] = relative_resolution(dec_kin["mass"], np.concatenate(true_mass), "m")["m_relative_rms"]
        result = {"orig_kin": orig_kin, "dec_kin": dec_kin, "by_mass": metrics["jet_mass_resolution_by_mass"]}
    if plots_dir is not None:
        metrics["plots"] = _plots(Path(plots_dir), counts, original, decoded, mask, names, result)
    return metrics


def _plots(plots_dir: Path, counts, original, decoded, mask, names, kin) -> list[str]:
    from foundation.evaluation.plots import plot_binned_resolution, plot_code_usage, plot_histograms

    plots_dir.mkdir(parents=True, exist_ok=True)
    paths = [plot_code_usage(counts, plots_dir / "code_usage.png")]
    for i, name in enumerate(names):
        paths.append(
            plot_histograms(
                {"original": original[..., i][mask], "decoded": decoded[..., i][mask]},
                plots_dir / f"feature_{name}.png",
                xlabel=name,
            )
        )
    if kin:
        for key, label in (("mass", "jet mass [GeV]"), ("pt", "jet $p_T$ [GeV]")):
            paths.append(
                plot_histograms(
                    {"original": kin["orig_kin"][key], "decoded": kin["dec_kin"][key]}, plots_dir / f"jet_{key}.png", xlabel=label
                )
            )
        paths.append(plot_binned_resolution(kin["by_mass"], plots_dir / "jet_mass_resolution.png", xlabel="original jet mass [GeV]", ylabel="jet mass relative RMS"))
    return [str(p) for p in paths]
