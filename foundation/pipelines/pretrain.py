"""`foundation pretrain`: the backbone on token sequences, causal and/or masked objective."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from foundation.config import (
    ConfigError,
    build_model_config,
    load_recipe,
    save_recipe,
    to_dict,
)
from foundation.data.dataset import DataConfig, _split_indices, build_splits, feature_statistics
from foundation.data.features import FEATURES
from foundation.data.tokens import TokenDataset, TokenFile
from foundation.errors import InputError
from foundation.hub import bundle_folder, save_bundle, weights_sha256
from foundation.models import JetTransformerConfig, JetTransformerForPretraining, add_generation_classes
from foundation.models.inputs import (
    JetSequenceCollator,
    LanguageModelingInputs,
    collate_sequences,
    dataset_feature_names,
)
from foundation.models.interaction import measure_code_kinematics
from foundation.models.jet_observables import measure_jet_observable_scaling
from foundation.models.modeling_jet_transformer import IGNORE_INDEX
from foundation.pipelines.card import model_card
from foundation.pipelines.common import write_json
from foundation.pipelines.tokenizer import load_tokenizer
from foundation.training import Trainer, TrainingConfig
from foundation.training import checkpoint as ckpt

logger = logging.getLogger(__name__)


# Model fields that need each jet's particle kinematics in the batches (hence jets, not a token
# file): interaction attention reads them, the jet-level target is computed from them.
KINEMATICS_FIELDS = ("interaction_attention", "jet_loss_weight")


@dataclass
class PretrainRecipe:
    """A pretraining recipe (pretrain/*.yaml, finetune/anomaly_background.yaml), for `foundation pretrain`
    and `foundation anomaly background`."""

    RECIPE_FOLDER: ClassVar[str] = "pretrain"  # where --config NAME looks first (foundation.recipes)
    tokenizer: str = "checkpoints/tokenizer-small/tokenizer"  # a trained tokenizer folder
    init_from: str | None = None  # continue from a pretrained bundle (its tokenizer and architecture)
    tokens: str | None = None  # a token file (foundation tokenizer encode); else tokenise jets on the fly
    particle_features: list[str] = field(default_factory=list)  # continuous features beside the tokens
    data: DataConfig = field(default_factory=DataConfig)  # the jets (features come from the tokenizer)
    model: dict = field(default_factory=dict)  # JetTransformerConfig fields (models/configuration_jet_transformer.py)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    # model.interaction_attention: the codes' mean particle kinematics (what generation knows of a
    # token) are measured on this many training jets before training, and stored in the model
    code_kinematics_jets: int = 20000
    # model.jet_loss_weight: the jet observables' centre and scale (the targets' standardisation)
    # are measured on this many training jets before training, and stored in the model
    jet_target_jets: int = 20000

    def __post_init__(self):
        unknown = [f for f in self.particle_features if f not in FEATURES]
        if unknown:
            raise InputError(f"particle_features: unknown feature(s) {unknown}; known: {list(FEATURES)}")
        if self.tokens and self.particle_features:
            raise InputError("particle_features need jets, not a token file: drop `tokens` to tokenise on the fly")
        for needs_jets in KINEMATICS_FIELDS:
            if self.tokens and self.model.get(needs_jets):
                raise InputError(f"model.{needs_jets} needs the jets' kinematics, not a token file: drop `tokens` to tokenise on the fly")
        for name in ("code_kinematics_jets", "jet_target_jets"):
            if getattr(self, name) < 1:
                raise InputError(f"{name} must be >= 1, got {getattr(self, name)}")


# Fields of the model config that come from elsewhere in the recipe or from the tokenizer.
DERIVED_MODEL_FIELDS = ("vocab_codes", "max_particles", "particle_feature_names", "generation_class_names")


def load_pretrain_recipe(path: str | Path, overrides: dict | None = None) -> PretrainRecipe:
    recipe = load_recipe(path, PretrainRecipe, overrides)
    for key in DERIVED_MODEL_FIELDS:
        if key in recipe.model:
            raise ConfigError(path, f"model.{key}", "is derived from the tokenizer / particle_features; remove it")
    # Validate the model section now (unknown keys, impossible values), before any data is touched.
    if not recipe.init_from:
        build_model_config(JetTransformerConfig, recipe.model, path, vocab_codes=8, max_particles=8)
    return recipe


@dataclass
class SequenceData:
    """Training and validation sets of token sequences, with how they were made."""

    train: torch.utils.data.Dataset
    validation: torch.utils.data.Dataset
    test: torch.utils.data.Dataset | None
    collate_fn: object
    class_names: list[str]
    data_config: dict  # saved into the bundle: what a user must feed the model


def build_sequence_data(
    recipe_data: DataConfig, tokenizer, particle_features: list[str], tokens: str | None, seed: int, data_root=None, kinematics: bool = False
) -> SequenceData:
    """kinematics: batches also hold particle_kinematics (interaction attention, the jet-level target)."""
    tok_cfg = tokenizer.config
    if tokens:
        token_file = TokenFile(tokens)
        if token_file.tokenizer_info["vocab_codes"] != tok_cfg.vocab_codes:
            raise InputError(f"{tokens}: encoded with {token_file.tokenizer_info['vocab_codes']} codes, the tokenizer has {tok_cfg.vocab_codes}")
        tr, va, te = _split_indices(len(token_file), recipe_data.validation_fraction, recipe_data.test_fraction, recipe_data.split_seed)
        if recipe_data.train_limit:
            tr = np.sort(np.random.default_rng(recipe_data.split_seed + 1).choice(tr, min(recipe_data.train_limit, len(tr)), replace=False))
        info = {"token_file": str(tokens), "tokenizer_features": list(tok_cfg.feature_names), "particle_features": [], "max_particles": tok_cfg.max_particles, "class_names": token_file.class_names}
        return SequenceData(TokenDataset(token_file, tr), TokenDataset(token_file, va), TokenDataset(token_file, te), collate_sequences, token_file.class_names, info)
    features = dataset_feature_names(tok_cfg.feature_names, particle_features, kinematics)
    data = DataConfig(**{**vars(recipe_data), "features": features, "max_particles": tok_cfg.max_particles})
    splits = build_splits(data, data_root=data_root)
    mean = std = None
    if particle_features:
        cols = [data.features.index(n) for n in particle_features]
        m, s = feature_statistics(splits.train, seed=seed)
        mean, std = m[cols].tolist(), np.maximum(s[cols], 1e-3).tolist()
    collate = JetSequenceCollator(tokenizer, data.features, particle_features, mean, std, kinematics=kinematics)
    info = {
        "tokenizer_features": list(tok_cfg.feature_names),
        "particle_features": list(particle_features),
        "particle_feature_mean": mean,
        "particle_feature_std": std,
        "max_particles": tok_cfg.max_particles,
        "class_names": splits.class_names,
        "data": to_dict(data),
    }
    return SequenceData(splits.train, splits.validation, splits.test, collate, splits.class_names, info)


class PretrainingAccuracy:
    """eval/token_accuracy (next token) and eval/masked_accuracy (masked particles), computed from
    the model's logits during the trainer's validation pass."""

    def __init__(self):
        self.correct: dict[str, torch.Tensor] = {}
        self.count: dict[str, torch.Tensor] = {}

    def _add(self, name: str, logits: torch.Tensor, targets: torch.Tensor) -> None:
        hits = (logits.max(-1).indices == targets).sum().float()  # max, not argmax: same ids, several times faster on CPUs
        self.correct[name] = self.correct.get(name, 0) + hits
        self.count[name] = self.count.get(name, 0) + torch.tensor(float(targets.numel()), device=hits.device)

    def update(self, batch: dict, output, accelerator) -> None:
        labels = batch["labels"]  # (B, L)
        if output.get("target_logits") is not None:  # (T, V) at the tokens to predict, in order
            targets = labels[:, 1:]  # position i predicts token i + 1
            self._add("token_accuracy", output.target_logits, targets[targets != IGNORE_INDEX])
        if output.get("masked_logits") is not None:  # (M, vocab_codes) at the masked positions
            self._add("masked_accuracy", output.masked_logits, labels[output.masked_positions])

    def compute(self, accelerator) -> dict:
        names = sorted(self.correct)
        if not names:
            return {}
        totals = accelerator.reduce(torch.stack([self.correct[n] for n in names] + [self.count[n] for n in names]), reduction="sum")
        return {n: (totals[i] / totals[len(names) + i].clamp(min=1)).item() for i, n in enumerate(names)}


def _perplexity(metrics: dict) -> dict:
    if "eval/causal_loss" in metrics:
        return {"eval/perplexity": math.exp(min(metrics["eval/causal_loss"], 50.0))}
    return {}


@dataclass
class Pretraining:
    trainer: Trainer
    data: SequenceData
    config: JetTransformerConfig
    tokenizer: object


# What may change when training continues from a bundle (init_from): the objective, not the shape,
# and class start tokens may be added (num_generation_classes: a model becomes class-conditional).
CONTINUE_FIELDS = ("causal_loss_weight", "masked_loss_weight", "mask_fraction", "dropout", "unconditional_fraction", "num_generation_classes", "jet_loss_weight")


def _continued_model(recipe: PretrainRecipe):
    """Model, tokenizer and particle features of the bundle that training continues from."""
    from foundation.hub import load_bundle

    bundle_folder(recipe.init_from)  # a tokenizer or a missing folder is named as such, before the keys below
    bad = [k for k in recipe.model if k not in CONTINUE_FIELDS]
    if bad:
        raise ConfigError(getattr(recipe, "source", None), f"model.{bad[0]}", f"cannot change when continuing from a bundle (init_from); only {', '.join(CONTINUE_FIELDS)}")
    overrides = {k: v for k, v in recipe.model.items() if k != "num_generation_classes"}  # added after loading
    if overrides.get("masked_loss_weight") == 0 and "jet_loss_weight" not in overrides:
        # The jet-level target reads the masked pass: a run without it (next-token training on
        # background jets, finetune/anomaly_background.yaml) drops the target with its head.
        overrides["jet_loss_weight"] = 0.0
    bundle = load_bundle(recipe.init_from, model_class=JetTransformerForPretraining, **overrides)
    try:  # from_pretrained sets the overrides without validating them together with the bundle's config
        bundle.model.config.validate()
    except ValueError as err:
        raise ConfigError(getattr(recipe, "source", None), "model", f"{recipe.init_from}: {err}") from None
    features = list(bundle.data_config.get("particle_features") or [])
    if recipe.particle_features and recipe.particle_features != features:
        raise ConfigError(getattr(recipe, "source", None), "particle_features", f"the bundle takes {features}")
    return bundle.model, bundle.tokenizer, features, bundle.data_config


def build_pretraining(recipe: PretrainRecipe, data_root=None) -> Pretraining:
    """Everything a pretraining run needs, ready to train."""
    torch.manual_seed(recipe.training.seed)
    if recipe.init_from:
        model, tokenizer, features, bundle_data = _continued_model(recipe)
        kinematics = needs_kinematics(model.config)
        if kinematics and recipe.tokens:
            raise ConfigError(getattr(recipe, "source", None), "tokens", f"{recipe.init_from} has interaction attention or a jet-level target, which need the jets' kinematics, not a token file")
        seq = build_sequence_data(recipe.data, tokenizer, features, recipe.tokens, recipe.training.seed, data_root, kinematics)
        if recipe.model.get("num_generation_classes"):
            _check_generation_classes(recipe, seq.class_names)
            try:
                add_generation_classes(model, seq.class_names)
            except ValueError as err:
                raise ConfigError(getattr(recipe, "source", None), "model.num_generation_classes", f"{recipe.init_from}: {err}") from None
        if features:  # keep the bundle's feature scaling: the weights were trained with it
            seq.collate_fn.mean = torch.as_tensor(bundle_data["particle_feature_mean"], dtype=torch.float32)
            seq.collate_fn.std = torch.as_tensor(bundle_data["particle_feature_std"], dtype=torch.float32)
            seq.data_config.update({k: bundle_data[k] for k in ("particle_feature_mean", "particle_feature_std")})
        return _pretraining(recipe, model, seq, tokenizer)
    tokenizer = load_tokenizer(recipe.tokenizer)
    kinematics = any(recipe.model.get(name) for name in KINEMATICS_FIELDS)
    seq = build_sequence_data(recipe.data, tokenizer, recipe.particle_features, recipe.tokens, recipe.training.seed, data_root, kinematics)
    model_fields = dict(recipe.model)
    if model_fields.get("num_generation_classes"):
        _check_generation_classes(recipe, seq.class_names)
        model_fields["generation_class_names"] = seq.class_names
    config = build_model_config(
        JetTransformerConfig,
        model_fields,
        getattr(recipe, "source", None),
        vocab_codes=tokenizer.config.vocab_codes,
        max_particles=tokenizer.config.max_particles,
        particle_feature_names=recipe.particle_features,
    )
    model = JetTransformerForPretraining(config)
    if config.interaction_attention:
        _measure_code_kinematics(model, seq, recipe.code_kinematics_jets, recipe.training.seed)
    return _pretraining(recipe, model, seq, tokenizer)


def needs_kinematics(config: JetTransformerConfig) -> bool:
    """Whether pretraining batches must carry particle_kinematics (KINEMATICS_FIELDS)."""
    return any(getattr(config, name) for name in KINEMATICS_FIELDS)


def _training_jet_batches(seq: SequenceData, jets: int, seed: int):
    """Batches of up to `jets` training jets drawn with `seed`, for measurements before training."""
    from torch.utils.data import DataLoader, Subset

    n = min(jets, len(seq.train))
    chosen = np.sort(np.random.default_rng(seed).choice(len(seq.train), n, replace=False))
    return DataLoader(Subset(seq.train, chosen.tolist()), batch_size=256, collate_fn=seq.collate_fn)


def _measure_code_kinematics(model: JetTransformerForPretraining, seq: SequenceData, jets: int, seed: int) -> None:
    """Store each code's mean particle kinematics in the model (interaction attention), measured on
    up to `jets` training jets, so that next-token modelling and sampling see what they will know."""
    loader = _training_jet_batches(seq, jets, seed)
    model.transformer.set_code_kinematics(measure_code_kinematics(loader, model.config.vocab_codes))
    logger.info("measured the mean kinematics of %d codes on %d jets", model.config.vocab_codes, len(loader.dataset))


def _measure_jet_target_scaling(model: JetTransformerForPretraining, seq: SequenceData, jets: int, seed: int) -> None:
    """Standardisation of the jet-level target (model.jet_loss_weight), measured on up to `jets`
    training jets, unless the model already holds it (continuing a run that measured it)."""
    if model.jet_head is None or model.jet_target_scaling_measured:
        return
    loader = _training_jet_batches(seq, jets, seed)
    model.set_jet_target_scaling(*measure_jet_observable_scaling(loader))
    logger.info("measured the jet observables' scaling on %d jets", len(loader.dataset))


def _check_generation_classes(recipe: PretrainRecipe, class_names: list[str]) -> None:
    if recipe.model["num_generation_classes"] != len(class_names):
        raise ConfigError(getattr(recipe, "source", None), "model.num_generation_classes", f"the data has {len(class_names)} classes {class_names}")


def _pretraining(recipe: PretrainRecipe, model, seq: SequenceData, tokenizer) -> Pretraining:
    """The trainer of a model built from scratch or continued from a bundle, its jet-level target's
    scaling measured first where it needs one."""
    _measure_jet_target_scaling(model, seq, recipe.jet_target_jets, recipe.training.seed)
    logger.info("pretraining %.2f M parameters on %d jets", sum(p.numel() for p in model.parameters()) / 1e6, len(seq.train))
    collate = LanguageModelingInputs(seq.collate_fn)
    # A resumed run must tokenise with the same tokenizer and start from the same weights, which
    # the recipe only names by path (a retrained tokenizer, a new version of a registered model).
    starts_from = {"tokenizer_sha256": ckpt.state_sha256(tokenizer)}
    if recipe.init_from:
        starts_from["weights_sha256"] = weights_sha256(bundle_folder(recipe.init_from))
    trainer = Trainer.from_recipe(
        model, recipe, seq.train, seq.validation, collate_fn=collate, eval_metrics=PretrainingAccuracy, derive_metrics=_perplexity,
        starts_from=starts_from,
    )
    return Pretraining(trainer, seq, model.config, tokenizer)


def pretrain(recipe: PretrainRecipe, resume: bool = False, data_root=None) -> Path:
    """Pretrain and export a model bundle to <output_dir>/model; returns that folder."""
    run = build_pretraining(recipe, data_root)
    trainer, seq, config, tokenizer = run.trainer, run.data, run.config, run.tokenizer
    result = trainer.train(resume=resume)
    out = Path(recipe.training.output_dir)
    bundle = out / "model"
    trainer.export(bundle)
    if trainer.accelerator.is_main_process:
        objective = " + ".join(
            name
            for name, weight in (
                ("next-token prediction", config.causal_loss_weight),
                ("masked particle modelling", config.masked_loss_weight),
                ("jet observables regression", config.jet_loss_weight),
            )
            if weight > 0
        )
        metrics = {k.removeprefix("eval/"): v for k, v in result.final_metrics.items() if k.startswith("eval/")}
        card = model_card(
            title=f"Jet transformer pretrained on {len(seq.train)} jets",
            summary="A jet foundation model from the `foundation` platform: a transformer over VQ-VAE particle tokens.",
            model=trainer.unwrapped_model(),
            objective=objective,
            data={"training jets": len(seq.train), "validation jets": len(seq.validation), "classes": seq.class_names, "source": seq.data_config.get("data", {}).get("files") or "generated top + QCD jets (Pythia 8 + FastJet)"},
            metrics=metrics,
            recipe=to_dict(recipe),
            usage=f'from foundation.hub import load_bundle\nbundle = load_bundle("{bundle}")',
        )
        save_bundle(bundle, tokenizer, {**seq.data_config, "objective": objective}, card)
        save_recipe(recipe, out / "recipe.yaml")
        write_json(out / "train_summary.json", result.summary())
    trainer.accelerator.wait_for_everyone()
    return bundle
