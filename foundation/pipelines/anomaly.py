"""`foundation anomaly score` (likelihood under the pretrained model) and `foundation anomaly cwola`."""

from __future__ import annotations

import logging
from pathlib import Path

import h5py
import numpy as np
import torch

from foundation.data.dataset import JetDataset
from foundation.data.sources import JetCollection, check_output
from foundation.errors import InputError
from foundation.evaluation.anomaly import anomaly_metrics, sic_curve
from foundation.models.modeling_jet_transformer import language_model_labels, next_token_nll
from foundation.outputs import atomic_output
from foundation.pipelines.common import require_finite, write_json
from foundation.pipelines.generate import teacher_forced
from foundation.pipelines.inference import bundle_inputs

logger = logging.getLogger(__name__)


@torch.no_grad()
def likelihood_scores(
    model, data, batch_size: int = 256, limit: int | None = None, progress: bool = True, revision: str | None = None, reference=None
) -> dict[str, np.ndarray]:
    """Per jet: negative log-likelihood under the autoregressive model (total and per token).

    With a `reference` model (pretrained on the unlabelled data), also the log-likelihood ratio
    NLL_model - NLL_reference (total and per token): it cancels how complex a jet is (more
    particles, more NLL) and keeps how unusual it is for the model's (background) jets.
    """
    if reference is not None:
        scores = likelihood_scores(model, data, batch_size, limit, progress, revision)
        ref = likelihood_scores(reference, data, batch_size, limit, progress)
        scores["llr"] = scores["nll"] - ref["nll"]
        scores["llr_per_token"] = scores["nll_per_token"] - ref["nll_per_token"]
        return scores
    _, dataset, outputs = teacher_forced(model, data, batch_size, limit, progress=progress, desc="scoring", revision=revision)
    nll, per_token, labels, index = [], [], [], []
    for batch, out in outputs:
        jet_nll, tokens = next_token_nll(out.logits, language_model_labels(batch["input_ids"], batch["attention_mask"]))  # (B,), (B,)
        nll.append(jet_nll.cpu().numpy())
        per_token.append((jet_nll / tokens.clamp(min=1)).cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
        index.append(batch["index"].cpu().numpy())
    return {
        "nll": np.concatenate(nll),
        "nll_per_token": np.concatenate(per_token),
        "label": np.concatenate(labels),
        "index": np.concatenate(index),
        "class_names": dataset.class_names,
        "files": [str(p) for p in dataset.collection.paths],
    }


def score_file(
    model,
    data,
    out: str | Path,
    signal_class: str | None = None,
    plots_dir: str | Path | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    reference=None,
) -> dict:
    """Write anomaly scores per jet; with labels and a signal class, also AUC and SIC (and plots).

    `model` is the background model; a `reference` adds the likelihood ratio (likelihood_scores).
    """
    out = check_output(out)
    scores = likelihood_scores(model, data, batch_size, limit, reference=reference)
    keys = [k for k in ("nll", "nll_per_token", "llr", "llr_per_token") if k in scores]
    for key in keys:
        require_finite(scores[key], f"anomaly scores ({key})", model)
    source_file, row = JetCollection.open(data).locate(scores["index"])  # the columns embeddings have too
    with atomic_output(out) as tmp, h5py.File(tmp, "w") as f:
        for key in (*keys, "label"):
            f[key] = scores[key]
        f["source_file"] = source_file.astype(str).astype(object)
        f["row"] = row
        f.attrs["class_names"] = str(scores["class_names"])
        f.attrs["files"] = str(scores["files"])
        f.attrs["model"] = str(model)
        if reference is not None:
            f.attrs["reference"] = str(reference)
    report: dict = {"jets": int(len(scores["nll"])), "scores_file": str(out)}
    names = scores["class_names"]
    if signal_class is not None:
        if signal_class not in names:
            raise InputError(f"signal class {signal_class!r} not among the data's classes {names}")
        is_signal = scores["label"] == names.index(signal_class)
        if 0 < is_signal.sum() < len(is_signal):
            for key in keys:
                report[key] = anomaly_metrics(is_signal, scores[key])
            if plots_dir is not None:
                from foundation.evaluation.plots import plot_roc, plot_sic

                labels = {"nll": "NLL (total)", "nll_per_token": "NLL per token", "llr": "likelihood ratio", "llr_per_token": "likelihood ratio per token"}
                curves = {labels[k]: (is_signal, scores[k]) for k in keys}
                report["plots"] = [str(plot_roc(curves, Path(plots_dir) / "anomaly_roc.png")), str(plot_sic(curves, Path(plots_dir) / "anomaly_sic.png"))]
    return report


class RelabeledDataset(torch.utils.data.Dataset):
    """A jet dataset whose labels are replaced (CWoLa: which mixed sample a jet came from)."""

    def __init__(self, dataset: JetDataset, labels: np.ndarray, class_names: list[str]):
        self.dataset, self.labels, self.class_names = dataset, np.asarray(labels, np.int64), class_names

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitems__(self, positions):
        batch = self.dataset.__getitems__(positions)
        batch["labels"] = self.labels[np.asarray(positions, dtype=np.int64)]
        return batch


def mixed_samples(labels: np.ndarray, signal: int, fractions: tuple[float, float], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two disjoint index sets with signal fractions f_a > f_b, as large as the jets allow."""
    rng = np.random.default_rng(seed)
    sig = rng.permutation(np.flatnonzero(labels == signal))
    bkg = rng.permutation(np.flatnonzero(labels != signal))
    fa, fb = fractions
    if not 0 <= fb < fa <= 1:
        raise InputError(f"signal fractions must satisfy 0 <= f_b < f_a <= 1, got {fractions}")
    # Equal-sized samples of n jets: n(fa + fb) signal and n(2 - fa - fb) background jets needed.
    n = int(min(len(sig) / max(fa + fb, 1e-9), len(bkg) / max(2 - fa - fb, 1e-9)))
    na, nb = int(round(n * fa)), int(round(n * fb))
    a = np.concatenate([sig[:na], bkg[: n - na]])
    b = np.concatenate([sig[na : na + nb], bkg[n - na : n - na + n - nb]])
    return np.sort(a), np.sort(b)


def cwola(recipe, fractions: tuple[float, float] = (0.3, 0.05), plots_dir: str | Path | None = None, data_root=None) -> dict:
    """Classification without labels: train the tagging head to tell mixed sample A from B (signal
    fractions f_a > f_b, unknown to it), then score held-out jets with true labels."""
    from torch.utils.data import DataLoader

    from foundation.data.dataset import DataConfig, build_splits
    from foundation.hub import load_bundle, weights_sha256
    from foundation.pipelines.finetune import build_classifier
    from foundation.pipelines.inference import predict
    from foundation.training import Trainer
    from foundation.training.loop import default_param_groups


    base = load_bundle(recipe.model, revision=recipe.revision)
    features = list(base.data_config.get("particle_features") or [])
    interactions = bool(recipe.head.get("interaction_attention", base.model.config.interaction_attention))
    inputs = bundle_inputs(base.tokenizer, base.data_config, features, kinematics=interactions)
    data = DataConfig(**{**vars(recipe.data), "features": inputs.feature_names, "max_particles": base.tokenizer.config.max_particles})
    splits = build_splits(data, data_root=data_root)
    names = splits.class_names
    signal = names.index(recipe.signal_class) if recipe.signal_class else len(names) - 1
    truth = {name: split.collection.read_indices(split.indices).label for name, split in (("train", splits.train), ("validation", splits.validation))}
    datasets = {}
    for name, split in (("train", splits.train), ("validation", splits.validation)):
        a, b = mixed_samples(truth[name], signal, fractions, seed=recipe.training.seed)
        picked = np.concatenate([a, b])
        subset = JetDataset(split.collection, split.indices[picked], split.feature_names, split.max_particles)
        datasets[name] = RelabeledDataset(subset, np.r_[np.ones(len(a)), np.zeros(len(b))], ["sample_b", "sample_a"])
        logger.info("CWoLa %s: sample A %d jets (%.0f%% signal), sample B %d jets (%.0f%% signal)", name, len(a), 100 * truth[name][a].mean() if signal == 1 else 0, len(b), 100 * truth[name][b].mean() if signal == 1 else 0)
    model = build_classifier(recipe, base, ["sample_b", "sample_a"], features)
    trainer = Trainer.from_recipe(
        model, recipe, datasets["train"], datasets["validation"], data=data,
        collate_fn=inputs.collator, param_groups=default_param_groups(model, recipe.training.weight_decay),
        starts_from={"weights_sha256": weights_sha256(base.path)},
    )
    trainer.train()
    acc = trainer.accelerator
    loader = acc.prepare(DataLoader(splits.test, batch_size=recipe.training.micro_batch_size, collate_fn=inputs.collator))
    out = predict(trainer.model, loader, acc)
    is_signal = out["labels"] == signal
    score = out["logits"][:, 1] - out["logits"][:, 0]
    report = {"fractions": list(fractions), "train_jets": len(datasets["train"]), "test_jets": int(len(score)), **anomaly_metrics(is_signal, score)}
    eps_s, sic = sic_curve(is_signal, score)
    report["sic_curve_points"] = int(len(sic))
    if plots_dir is not None and acc.is_main_process:
        from foundation.evaluation.plots import plot_sic

        report["plots"] = [str(plot_sic({"CWoLa": (is_signal, score)}, Path(plots_dir) / "cwola_sic.png"))]
    if acc.is_main_process:
        # The per-jet scores, so that SIC curves of several methods can be drawn together.
        report["scores"] = str(Path(recipe.training.output_dir) / "test_scores.npz")
        np.savez(report["scores"], is_signal=is_signal, score=score, index=out["index"])
        write_json(Path(recipe.training.output_dir) / "cwola_metrics.json", report)
    return report
