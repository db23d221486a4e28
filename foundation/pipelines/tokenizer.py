"""`foundation tokenizer train | evaluate | encode`."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.config import build_model_config, load_recipe, save_recipe
from foundation.data.dataset import DataConfig, build_splits, feature_statistics
from foundation.data.features import compute_features
from foundation.data.sources import JetCollection
from foundation.data.tokens import TokenWriter
from foundation.pipelines.common import write_json
from foundation.tokenizer import JetTokenizer, JetTokenizerConfig
from foundation.tokenizer.modeling_jet_tokenizer import jet_mass_and_pt
from foundation.training import Trainer, TrainingConfig

logger = logging.getLogger(__name__)


@dataclass
class TokenizerRecipe:
    data: DataConfig = field(default_factory=DataConfig)
    model: dict = field(default_factory=dict)  # JetTokenizerConfig fields (feature_names/max_particles come from data)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    codebook_init_jets: int = 2000  # jets whose particles seed the k-means codebook initialisation


def load_tokenizer_recipe(path: str | Path, overrides: dict | None = None) -> tuple[TokenizerRecipe, JetTokenizerConfig]:
    recipe = load_recipe(path, TokenizerRecipe, overrides)
    model_config = build_model_config(
        JetTokenizerConfig, recipe.model, path, feature_names=recipe.data.features, max_particles=recipe.data.max_particles
    )
    return recipe, model_config


class _ValidationCodesAndMass:
    """eval/ metrics of tokenizer training: code usage and perplexity on the validation jets, and
    the relative RMS of the decoded jets' mass (what keep_best watches in vqvae_8k.yaml)."""

    def __init__(self, config: JetTokenizerConfig):
        self.config = config
        self.counts: torch.Tensor | None = None  # (vocab_codes,) particles per code
        self.relative_mass_errors: list[torch.Tensor] = []

    def update(self, batch: dict, output, accelerator) -> None:
        cfg = self.config
        mask = batch["mask"].bool()
        if self.counts is None:
            self.counts = torch.zeros(cfg.vocab_codes, dtype=torch.long, device=accelerator.device)
        self.counts += torch.bincount(output.token_ids[mask].long(), minlength=cfg.vocab_codes)[: cfg.vocab_codes]
        if all(n in cfg.feature_names for n in ("log_pt", "eta_rel", "phi_rel")):
            m_rec, _ = jet_mass_and_pt(output.reconstruction, mask, cfg.feature_names)
            m_true, _ = jet_mass_and_pt(batch["features"], mask, cfg.feature_names)
            self.relative_mass_errors.append(accelerator.gather_for_metrics((m_rec - m_true) / m_true))

    def compute(self, accelerator) -> dict:
        from foundation.evaluation.tokenization import codebook_metrics

        if self.counts is None:
            return {}
        metrics = codebook_metrics(accelerator.reduce(self.counts, reduction="sum").cpu().numpy())
        if self.relative_mass_errors:
            metrics["jet_mass_relative_rms"] = float(torch.sqrt(torch.mean(torch.cat(self.relative_mass_errors) ** 2)))
        return metrics


def codebook_warnings(config: JetTokenizerConfig, training: TrainingConfig, particles_per_step: float) -> list[str]:
    """Settings under which an EMA codebook (vq, rvq) cannot settle; empty when there are none.

    - vector-quantize-pytorch re-seeds every code whose EMA count of particles per step is below
      `dead_code_threshold`. A code's average count is particles per step / codebook size, so a
      threshold near that average throws away the codes used less than average at every step
      (with 8192 codes and 128 jets a step: about 1500 codes a step).
    - The EMA follows the last few batches, so batches of jets of one multiplicity
      (training.group_by_length) pull it back and forth.
    """
    if config.quantizer == "fsq":
        return []
    warnings = []
    mean_usage = particles_per_step / config.codebook_size
    if config.dead_code_threshold > 0.25 * mean_usage:
        warnings.append(
            f"dead_code_threshold {config.dead_code_threshold:g} is close to a code's average use "
            f"({particles_per_step:.0f} particles a step / {config.codebook_size} codes = {mean_usage:.2f}): "
            f"codes used less than average are re-seeded every step and the codebook cannot settle; "
            f"use at most {0.25 * mean_usage:.2g} (a code unused for tens of steps), or larger batches"
        )
    if training.group_by_length:
        warnings.append(
            "training.group_by_length is on: the EMA codebook follows the last few batches, and batches of "
            "jets of one multiplicity pull it back and forth (much worse resolution); set it to false"
        )
    return warnings


def train_tokenizer(
    recipe: TokenizerRecipe,
    model_config: JetTokenizerConfig,
    resume: bool = False,
    data_root: str | None = None,
) -> Path:
    """Train and export to <output_dir>/tokenizer; returns that folder."""
    torch.manual_seed(recipe.training.seed)
    splits = build_splits(recipe.data, data_root=data_root)
    model = JetTokenizer(model_config)
    particles_per_step = float(np.mean(splits.train.lengths())) * recipe.training.micro_batch_size
    for warning in codebook_warnings(model_config, recipe.training, particles_per_step):
        logger.warning(warning)
    mean, std = feature_statistics(splits.train, seed=recipe.training.seed)
    model.set_feature_scaling(mean, std)
    init = splits.train.__getitems__(list(range(min(recipe.codebook_init_jets, len(splits.train)))))
    if model.initialize_codebook(torch.as_tensor(init["features"]), torch.as_tensor(init["mask"])):
        logger.info("k-means initialised the codebook on %d particles", int(init["mask"].sum()))
    trainer = Trainer.from_recipe(model, recipe, splits.train, splits.validation, eval_metrics=lambda: _ValidationCodesAndMass(model.config))
    result = trainer.train(resume=resume)
    out = Path(recipe.training.output_dir)
    trainer.export(out / "tokenizer")
    if trainer.accelerator.is_main_process:
        save_recipe(recipe, out / "recipe.yaml")
        write_json(out / "train_summary.json", result.summary())
    return out / "tokenizer"


def load_tokenizer(path: str | Path) -> JetTokenizer:
    """A trained tokenizer from its folder (config.json + model.safetensors)."""
    path = Path(path)
    if not (path / "config.json").exists():
        # a training run folder holds the tokenizer in a subfolder
        if (path / "tokenizer" / "config.json").exists():
            path = path / "tokenizer"
        else:
            raise FileNotFoundError(f"{path}: no tokenizer here (expected config.json and model.safetensors)")
    return JetTokenizer.from_pretrained(path).eval()


def tokenizer_info(tokenizer: JetTokenizer, path: str | Path | None = None) -> dict:
    cfg = tokenizer.config
    return {
        "vocab_codes": cfg.vocab_codes,
        "vocab_size": cfg.vocab_size,
        "start_token_id": cfg.start_token_id,
        "stop_token_id": cfg.stop_token_id,
        "pad_token_id": cfg.pad_token_id,
        "max_particles": cfg.max_particles,
        "feature_names": list(cfg.feature_names),
        "path": None if path is None else str(path),
    }


@torch.no_grad()
def encode_to_file(
    tokenizer: JetTokenizer,
    data,
    out: str | Path,
    batch_size: int = 512,
    progress: bool = True,
) -> Path:
    """Token sequences of every jet in `data` (any format), written as a token file."""
    cfg = tokenizer.config
    collection = JetCollection.open(data, max_particles=cfg.max_particles)
    length = cfg.max_particles + 2
    source = {"files": [str(p) for p in collection.paths]}
    device = next(tokenizer.parameters()).device
    bar = tqdm(total=len(collection), unit="jet", desc="encoding", disable=not progress)
    with TokenWriter(out, length, collection.class_names, tokenizer_info(tokenizer), source) as writer:
        for start in range(0, len(collection), batch_size):
            jets = collection.read(start, start + batch_size).padded_to(cfg.max_particles)
            feats = torch.as_tensor(compute_features(jets, cfg.feature_names), device=device)
            mask = torch.as_tensor(jets.mask, device=device)
            seq, attn = tokenizer.to_sequence(tokenizer.encode(feats, mask), mask)
            writer.append(seq.cpu().numpy().astype(np.int32), attn.sum(1).cpu().numpy().astype(np.int32), jets.label)
            bar.update(len(jets))
    bar.close()
    return Path(out)
