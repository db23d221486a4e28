"""`foundation tokenizer train | evaluate | encode`."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.config import build_model_config, check, load_recipe, save_recipe
from foundation.data.dataset import DataConfig, build_splits, feature_statistics
from foundation.data.features import compute_features
from foundation.data.sources import JetCollection, check_output
from foundation.data.tokens import TokenWriter
from foundation.errors import ConfigError, InputError
from foundation.hub import load_weights_folder
from foundation.pipelines.common import write_json
from foundation.tokenizer import JetTokenizer, JetTokenizerConfig
from foundation.tokenizer.modeling_jet_tokenizer import jet_mass_and_pt
from foundation.training import Trainer, TrainingConfig
from foundation.training import checkpoint as ckpt

logger = logging.getLogger(__name__)


@dataclass
class CodebookRefineConfig:
    """After training: refit the codebook to the final encoder, then train the decoder on it.

    The EMA codebook ends as noisy averages of the last few batches; weighted k-means over all
    training particles (started from it) lowers the quantisation error, and the decoder (with
    train_encoder, also the encoder) then learns the fixed, refit codes (see codebook_refit.py). Off when both
    counts are 0. Its run lives in <output_dir>/refine (checkpoints, resumable, keep_best as training).
    """

    kmeans_iterations: int = 0  # weighted Lloyd iterations over the training particles
    decoder_steps: int = 0  # optimizer steps of training against the fixed codebook after the refit
    learning_rate: float = 3e-4  # peak learning rate of the decoder training (cosine schedule as training's)
    warmup_steps: int = 50  # its linear warmup
    train_encoder: bool = False  # also train the encoder (against the fixed codes); else tokens stay fixed
    # The jet mass and pT term's weight while the tokens are fixed (None: model.jet_loss_weight). It
    # can be larger here than in training, where it pulled the codebook away from the particles.
    jet_loss_weight: float | None = None
    # Whether the decoder learns (and ends) with the phi-axis constraint (None: model.phi_axis_constraint).
    phi_axis_constraint: bool | None = None
    jets: int | None = None  # training jets whose particles the refit sees; None: all

    def __post_init__(self):
        check(self.kmeans_iterations >= 0, "refine.kmeans_iterations", f"must be >= 0, got {self.kmeans_iterations}")
        check(self.decoder_steps >= 0, "refine.decoder_steps", f"must be >= 0, got {self.decoder_steps}")
        check(self.learning_rate > 0, "refine.learning_rate", f"must be positive, got {self.learning_rate}")
        check(self.warmup_steps >= 0, "refine.warmup_steps", f"must be >= 0, got {self.warmup_steps}")
        check(self.jet_loss_weight is None or self.jet_loss_weight >= 0, "refine.jet_loss_weight", f"must be >= 0, got {self.jet_loss_weight}")
        check(self.jets is None or self.jets > 0, "refine.jets", f"must be positive (or null: all), got {self.jets}")

    @property
    def enabled(self) -> bool:
        return self.kmeans_iterations > 0 or self.decoder_steps > 0


@dataclass
class TokenizerRecipe:
    """A tokenizer recipe (tokenizers/*.yaml), for `foundation tokenizer train`."""

    RECIPE_FOLDER: ClassVar[str] = "tokenizers"  # where --config NAME looks first (foundation.recipes)
    data: DataConfig = field(default_factory=DataConfig)  # the jets, and data.features: the tokenizer's inputs
    model: dict = field(default_factory=dict)  # JetTokenizerConfig fields (feature_names/max_particles come from data)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    codebook_init_jets: int = 2000  # jets whose particles seed the k-means codebook initialisation
    refine: CodebookRefineConfig = field(default_factory=CodebookRefineConfig)


def load_tokenizer_recipe(path: str | Path, overrides: dict | None = None) -> tuple[TokenizerRecipe, JetTokenizerConfig]:
    recipe = load_recipe(path, TokenizerRecipe, overrides)
    model_config = build_model_config(
        JetTokenizerConfig, recipe.model, path, feature_names=recipe.data.features, max_particles=recipe.data.max_particles
    )
    if recipe.refine.kmeans_iterations and (model_config.quantizer != "vq" or model_config.cosine_similarity):
        raise ConfigError(path, "refine.kmeans_iterations", f"refits a Euclidean vq codebook; model.quantizer is {model_config.quantizer!r}"
                          f"{' with cosine_similarity' if model_config.cosine_similarity else ''} (set it to 0)")
    for key in ("jet_loss_weight", "phi_axis_constraint"):
        if getattr(recipe.refine, key) and not model_config.has_jet_features:
            raise ConfigError(path, f"refine.{key}", "needs the features log_pt, eta_rel and phi_rel (set it to 0 or null)")
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
        if cfg.has_jet_features:
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
    summary = result.summary()
    out = Path(recipe.training.output_dir)
    if recipe.refine.enabled:
        trainer, summary = _refine(trainer, model, recipe, splits, summary, resume)
    trainer.export(out / "tokenizer")
    if trainer.accelerator.is_main_process:
        save_recipe(recipe, out / "recipe.yaml")
        write_json(out / "train_summary.json", summary)
    return out / "tokenizer"


@torch.no_grad()
def refit_codebook(model: JetTokenizer, dataset, iterations: int, jets: int | None = None, batch_size: int = 256, progress: bool = True) -> dict:
    """Weighted k-means of the codebook over the encoder's latents of `dataset`'s particles."""
    from foundation.tokenizer.codebook_refit import weighted_kmeans

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    count = len(dataset) if jets is None else min(jets, len(dataset))
    latents, weights = [], []
    for start in tqdm(range(0, count, batch_size), desc="encoding for the refit", unit="batch", disable=not progress):
        batch = dataset.__getitems__(list(range(start, min(start + batch_size, count))))
        z, w = model.particle_latents(torch.as_tensor(batch["features"], device=device), torch.as_tensor(batch["mask"], device=device))
        latents.append(z.float().cpu())
        weights.append(w.float().cpu())
    points, point_weights = torch.cat(latents).numpy(), torch.cat(weights).numpy()
    codebook = model.quantizer.codebook.detach().float().cpu().numpy()
    codes, errors = weighted_kmeans(points, point_weights, codebook, iterations, progress=progress)
    model.set_codebook(torch.as_tensor(codes))
    model.train(was_training)
    # errors[0] is the trained codebook's; the last iteration's own error is not measured
    return {"jets": count, "particles": len(points), "iterations": iterations, "weighted_squared_error": errors}


def _refine(trainer: Trainer, model: JetTokenizer, recipe: TokenizerRecipe, splits, summary: dict, resume: bool) -> tuple[Trainer, dict]:
    """The refine stage (CodebookRefineConfig): refit, then training against the fixed codebook in <output_dir>/refine.
    Returns the trainer whose model to export and the run's summary.

    A resumed run continues the training from its last checkpoint, which holds the refit codebook
    (refit.json keeps the refit's figures); without one it refits again."""
    refine, training = recipe.refine, recipe.training
    stage_dir = Path(training.output_dir) / "refine"
    refit_record = stage_dir / "refit.json"
    started = time.perf_counter()
    refit = None
    if resume and refine.decoder_steps and refit_record.exists() and ckpt.latest_checkpoint(stage_dir) is not None:
        refit = json.loads(refit_record.read_text())  # the checkpoint holds the refit codebook
    elif refine.kmeans_iterations:
        refit = refit_codebook(model, splits.train, refine.kmeans_iterations, refine.jets, progress=training.progress)
        errors = refit["weighted_squared_error"]
        logger.info("codebook refit on %d particles: weighted squared error %.5g -> %.5g", refit["particles"], errors[0], errors[-1])
        refit["seconds"] = time.perf_counter() - started
        if trainer.accelerator.is_main_process:
            write_json(refit_record, refit)
    refit_seconds = refit["seconds"] if refit else 0.0
    decoder = None
    if refine.decoder_steps:
        stage = dataclasses.replace(
            training,
            output_dir=str(stage_dir),
            max_steps=refine.decoder_steps,
            learning_rate=refine.learning_rate,
            warmup_steps=min(refine.warmup_steps, refine.decoder_steps),
            eval_every=min(training.eval_every, refine.decoder_steps),
            save_every=min(training.save_every, refine.decoder_steps),
        )
        model.freeze_codebook(train_encoder=refine.train_encoder)
        if refine.jet_loss_weight is not None:
            model.config.jet_loss_weight = refine.jet_loss_weight  # saved with the model: the loss it ended with
        if refine.phi_axis_constraint is not None:
            model.config.phi_axis_constraint = refine.phi_axis_constraint  # saved with the model: decoding keeps it
        trainer = Trainer.from_recipe(
            model, dataclasses.replace(recipe, training=stage), splits.train, splits.validation,
            eval_metrics=lambda: _ValidationCodesAndMass(model.config),
        )
        decoder = trainer.train(resume=resume).summary()
    combined = {
        **(decoder or summary),
        "seconds": summary["seconds"] + refit_seconds + (decoder["seconds"] if decoder else 0.0),  # the whole recipe's training
        "training": summary,
        "refine": {"refit": refit, "decoder": decoder},
    }
    return trainer, combined


def load_tokenizer(path: str | Path, search_candidates: int | None = None, search_particles: int | None = None) -> JetTokenizer:
    """A trained tokenizer from its folder (config.json + model.safetensors). `search_candidates`
    and `search_particles` override the config's encode_search_candidates (1: each particle gets
    its nearest code) and encode_search_particles."""
    path = Path(path)
    if not (path / "config.json").exists():
        # a training run folder holds the tokenizer in a subfolder
        if (path / "tokenizer" / "config.json").exists():
            path = path / "tokenizer"
        else:
            raise FileNotFoundError(f"{path}: no tokenizer here (expected config.json and model.safetensors)")
    tokenizer = load_weights_folder(path, lambda: JetTokenizer.from_pretrained(path).eval())  # its saved config is validated on loading
    overrides = {"encode_search_candidates": search_candidates, "encode_search_particles": search_particles}
    overrides = {key: value for key, value in overrides.items() if value is not None}
    if overrides:
        for key, value in overrides.items():
            setattr(tokenizer.config, key, value)
        try:
            tokenizer.config.validate()
        except ValueError as err:
            raise InputError(f"--search-candidates/--search-particles do not fit the tokenizer in {path}: {err}") from None
    return tokenizer


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
        # how the tokens were chosen (1: nearest codes; more: the encode search; see JetTokenizerConfig)
        "encode_search_candidates": cfg.encode_search_candidates,
        "encode_search_particles": cfg.encode_search_particles,
    }


@torch.no_grad()
def encode_jets(tokenizer: JetTokenizer, jets, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences of a JetArrays: ids (J, N + 2) int32 (start, codes, stop, padding) and their
    attention mask (J, N + 2) bool, N the tokenizer's max_particles (longer jets are cut)."""
    cfg = tokenizer.config
    jets = jets.padded_to(cfg.max_particles)
    feats = torch.as_tensor(compute_features(jets, cfg.feature_names), device=device)
    mask = torch.as_tensor(jets.mask, device=device)
    seq, attn = tokenizer.to_sequence(tokenizer.encode(feats, mask), mask)
    return seq.cpu().numpy().astype(np.int32), attn.cpu().numpy().astype(bool)


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
    check_output(out)
    collection = JetCollection.open(data, max_particles=cfg.max_particles)
    length = cfg.max_particles + 2
    source = {"files": [str(p) for p in collection.paths]}
    from foundation.pipelines.inference import inference_device

    device = inference_device()  # the encode search decodes each batch many times: a GPU if there is one
    tokenizer = tokenizer.to(device).eval()
    bar = tqdm(total=len(collection), unit="jet", desc="encoding", disable=not progress)
    with TokenWriter(out, length, collection.class_names, tokenizer_info(tokenizer), source) as writer:
        for start in range(0, len(collection), batch_size):
            jets = collection.read(start, start + batch_size)
            seq, attn = encode_jets(tokenizer, jets, device)
            writer.append(seq, attn.sum(1).astype(np.int32), jets.label)
            bar.update(len(jets))
    bar.close()
    return Path(out)
