"""`foundation finetune` (tagging) and `foundation evaluate` (tagging metrics of a fine-tuned model)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch

from foundation.config import ConfigError, check, load_recipe, save_recipe, to_dict
from foundation.data.dataset import DataConfig, JetDataset, build_splits, feature_statistics
from foundation.data.features import FEATURES
from foundation.data.jets import class_index
from foundation.data.sources import check_output
from foundation.errors import InputError
from foundation.evaluation.tagging import multiclass_tagging_metrics, tagging_metrics
from foundation.hub import load_bundle, save_bundle, weights_sha256
from foundation.models import JetTransformerConfig, JetTransformerForJetClassification
from foundation.pipelines.card import model_card
from foundation.pipelines.common import require_finite, write_json
from foundation.pipelines.inference import bundle_inputs, jet_dataset, predict
from foundation.training import Trainer, TrainingConfig
from foundation.training.loop import default_param_groups

logger = logging.getLogger(__name__)

# Model config fields a fine-tuning recipe may set (`head:`); interaction attention may be added to a
# backbone pretrained without it (its bias starts at zero, so the backbone starts unchanged).
HEAD_FIELDS = ("classifier_pooling", "classifier_dropout", "classifier_attention", "dropout", "token_dropout", "interaction_attention", "interaction_hidden_size")
# The backbone's shape, which only a model from scratch may change (a pretrained one's is its weights'):
# for asking on validation whether depth or width is what a from-scratch tagger lacks.
ARCHITECTURE_FIELDS = ("hidden_size", "num_layers", "num_heads", "intermediate_size", "particle_embedding", "token_inputs")


@dataclass
class FinetuneRecipe:
    """A fine-tuning recipe (finetune/*.yaml), for `foundation finetune` and `foundation anomaly cwola`."""

    RECIPE_FOLDER: ClassVar[str] = "finetune"  # where --config NAME looks first (foundation.recipes)
    model: str = "checkpoints/pretrain-small/model"  # pretrained bundle (folder or hub repo id)
    revision: str | None = None  # hub revision (tag, branch or commit) to pin
    init: Literal["pretrained", "scratch"] = "pretrained"  # scratch: same architecture, random weights
    mode: Literal["full", "frozen", "layerwise"] = "full"  # train everything, the head only, or with layer-wise rates
    layerwise_lr_decay: float = 0.75  # mode layerwise: lr x decay^(depth from the top)
    # Modes full and layerwise: train the head (and new particle-feature inputs) alone for this many
    # steps before the backbone joins, its rate warming up again (LP-FT, arXiv 2202.10054): the
    # first gradients of a random head would otherwise reach, and scramble, the pretrained features.
    head_only_steps: int = 0
    particle_features: list[str] | None = None  # None: as pretrained; a list adds inputs (zero-initialised)
    head: dict = field(default_factory=dict)  # model config overrides, one of HEAD_FIELDS
    architecture: dict = field(default_factory=dict)  # init scratch only: backbone shape, one of ARCHITECTURE_FIELDS
    signal_class: str | None = None  # for binary metrics (e.g. top); default: the last class
    background_class: str | None = None  # default: the other of two classes; else all other classes
    data: DataConfig = field(default_factory=DataConfig)  # labelled jets (features come from the bundle)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def __post_init__(self):
        check(0 < self.layerwise_lr_decay <= 1, "layerwise_lr_decay", "must be in (0, 1]")
        check(self.head_only_steps >= 0, "head_only_steps", f"must be >= 0, got {self.head_only_steps}")
        check(not self.head_only_steps or self.init == "pretrained", "head_only_steps", "a model from scratch (init: scratch) has no pretrained features to keep; set 0")
        check(not self.head_only_steps or self.mode != "frozen", "head_only_steps", "mode frozen trains the head alone throughout; set 0")
        unknown = [f for f in (self.particle_features or []) if f not in FEATURES]
        check(not unknown, "particle_features", f"unknown feature(s) {unknown}; known: {list(FEATURES)}")
        _check_known_keys("head", self.head, HEAD_FIELDS)
        _check_known_keys("architecture", self.architecture, ARCHITECTURE_FIELDS)
        check(not self.architecture or self.init == "scratch", "architecture", "only with init: scratch (a pretrained model keeps the shape of its weights)")


def _check_known_keys(section: str, mapping: dict, known: tuple[str, ...]) -> None:
    bad = [k for k in mapping if k not in known]
    check(not bad, f"{section}.{bad[0] if bad else ''}", f"unknown key (known keys here: {', '.join(known)})")


def load_finetune_recipe(path: str | Path, overrides: dict | None = None) -> FinetuneRecipe:
    recipe = load_recipe(path, FinetuneRecipe, overrides)
    return recipe


def layerwise_param_groups(
    model: JetTransformerForJetClassification, decay: float, weight_decay: float, new_inputs: bool = False
) -> list[dict]:
    """Learning rate x decay^(distance from the top): embeddings learn least, the head at full rate.

    new_inputs: the particle-feature input is new to the pretrained model (zero-initialised, it
    has everything to learn), so it learns at the head's rate instead of the embeddings'.
    """
    num_layers = model.config.num_layers
    groups: dict[tuple[int, bool], dict] = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if new_inputs and name.startswith("transformer.feature_proj"):
            depth = num_layers + 1
        elif name.startswith(("transformer.wte", "transformer.wpe", "transformer.feature_proj")):
            depth = 0
        elif name.startswith("transformer.stack.blocks."):
            depth = int(name.split(".")[3]) + 1
        elif name.startswith("transformer.stack.ln_final"):
            depth = num_layers
        else:
            depth = num_layers + 1  # the head
        decays = param.ndim >= 2
        key = (depth, decays)
        group = groups.setdefault(key, {"params": [], "weight_decay": weight_decay if decays else 0.0, "lr_scale": decay ** (num_layers + 1 - depth)})
        group["params"].append(param)
    return list(groups.values())


def is_backbone(name: str) -> bool:
    """A pretrained backbone weight: not the head, nor a particle-feature input the backbone lacked
    (mode frozen trains the same two)."""
    return name.startswith("transformer.") and not name.startswith("transformer.feature_proj")


def backbone_joins_later(groups: list[dict], model: torch.nn.Module, start_step: int) -> list[dict]:
    """Each parameter group split in two: the backbone's part starts training at start_step (the
    trainer's "start_step"), the rest (head, new inputs) at once, with the group's other settings."""
    backbone = {id(p) for name, p in model.named_parameters() if is_backbone(name)}
    out = []
    for group in groups:
        for joins_later in (False, True):
            params = [p for p in group["params"] if (id(p) in backbone) == joins_later]
            if params:
                out.append({**group, "params": params, **({"start_step": start_step} if joins_later else {})})
    return out


class ValidationAUC:
    """eval/auc of fine-tuning: signal-vs-background AUC of the validation jets, gathered from the
    trainer's validation pass (with more than two classes, signal against `background`, or against
    all others when it is None)."""

    def __init__(self, signal: int, background: int | None):
        self.signal, self.background = signal, background
        self.logits: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def update(self, batch: dict, output, accelerator) -> None:
        gathered = accelerator.gather_for_metrics({"logits": output.logits.float(), "labels": batch["labels"]})
        self.logits.append(gathered["logits"].cpu().numpy())
        self.labels.append(gathered["labels"].cpu().numpy())

    def compute(self, accelerator) -> dict:
        from scipy.special import softmax

        probs = softmax(np.concatenate(self.logits), axis=-1)
        labels = np.concatenate(self.labels)
        signal, background = self.signal, self.background
        accuracy = float(np.mean(probs.argmax(1) == labels))
        if probs.shape[1] == 2:
            return {"auc": tagging_metrics(labels == signal, probs[:, signal])["auc"], "accuracy": accuracy}
        keep = np.isin(labels, [signal, background]) if background is not None else np.ones(len(labels), bool)
        score = probs[:, signal] / (probs[:, signal] + (probs[:, background] if background is not None else 1 - probs[:, signal]))
        return {"auc": tagging_metrics(labels[keep] == signal, score[keep])["auc"], "accuracy": accuracy}


def signal_and_background(class_names: list[str], signal_class: str | None, background_class: str | None, source=None) -> tuple[int, int | None]:
    """Indices of the signal class (default: the last) and the background class (default: the first
    of two classes, else none: signal against all others). A class the data lacks is refused with the key."""
    indices = []
    for key, name, default in (("signal_class", signal_class, len(class_names) - 1), ("background_class", background_class, 0 if len(class_names) == 2 else None)):
        try:
            indices.append(default if name is None else class_index(name, class_names))
        except ValueError:
            raise ConfigError(source, key, f"class {name!r} is not among the data's classes {class_names}") from None
    return indices[0], indices[1]


def build_classifier(recipe: FinetuneRecipe, base, class_names: list[str], features: list[str]) -> JetTransformerForJetClassification:
    """The classification model on the bundle's architecture: pretrained weights or random (scratch)."""
    overrides = dict(
        num_labels=len(class_names),
        id2label=dict(enumerate(class_names)),
        label2id={n: i for i, n in enumerate(class_names)},
        particle_feature_names=features,
        **recipe.head,
    )
    config = JetTransformerConfig.from_pretrained(base.path, **overrides, **recipe.architecture)
    try:
        config.validate()  # from_pretrained sets the overrides after __init__'s own checks
    except ValueError as err:
        raise ConfigError(getattr(recipe, "source", None), "architecture" if recipe.architecture else "head", str(err)) from None
    if recipe.init == "scratch":
        torch.manual_seed(recipe.training.seed)
        return JetTransformerForJetClassification(config)
    return JetTransformerForJetClassification.from_pretrained(base.path, use_safetensors=True, **overrides)


def finetune(recipe: FinetuneRecipe, resume: bool = False, data_root=None) -> Path:
    """Fine-tune for tagging; writes <output_dir>/model (bundle), metrics.json and roc.png."""
    torch.manual_seed(recipe.training.seed)
    source = getattr(recipe, "source", None)
    base = load_bundle(recipe.model, revision=recipe.revision)  # verified: tokenizer, data config
    pretrained_features = list(base.data_config.get("particle_features") or [])
    features = pretrained_features if recipe.particle_features is None else list(recipe.particle_features)
    if pretrained_features and features != pretrained_features:
        raise ConfigError(source, "particle_features", f"the pretrained model takes {pretrained_features}; keep them (or leave the key out)")
    interactions = bool(recipe.head.get("interaction_attention", base.model.config.interaction_attention))
    names = bundle_inputs(base.tokenizer, base.data_config, features, kinematics=interactions).feature_names
    data = DataConfig(**{**vars(recipe.data), "features": names, "max_particles": base.tokenizer.config.max_particles})
    splits = build_splits(data, data_root=data_root)
    class_names = splits.class_names
    signal, background = signal_and_background(class_names, recipe.signal_class, recipe.background_class, source)

    model = build_classifier(recipe, base, class_names, features)
    tokenizer, base_data_config = base.tokenizer, base.data_config
    mean, std = base_data_config.get("particle_feature_mean"), base_data_config.get("particle_feature_std")
    new_feature_input = bool(features and not pretrained_features)
    if new_feature_input:  # features new to this model: scale them on the fine-tuning data
        cols = [data.features.index(n) for n in features]
        m, s = feature_statistics(splits.train, seed=recipe.training.seed)
        mean, std = m[cols].tolist(), np.maximum(s[cols], 1e-3).tolist()
    inputs = bundle_inputs(tokenizer, base_data_config, features, mean, std, kinematics=model.config.interaction_attention)

    if recipe.mode == "frozen":
        for name, param in model.named_parameters():
            # a newly added feature input must still learn
            if is_backbone(name):
                param.requires_grad = False
    groups = (
        layerwise_param_groups(model, recipe.layerwise_lr_decay, recipe.training.weight_decay, new_inputs=new_feature_input)
        if recipe.mode == "layerwise"
        else default_param_groups(model, recipe.training.weight_decay)
    )
    if recipe.head_only_steps:
        groups = backbone_joins_later(groups, model, recipe.head_only_steps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    logger.info(
        "fine-tuning (%s, %s) %.2f M of %.2f M parameters on %d jets, classes %s",
        recipe.init, recipe.mode, trainable / 1e6, sum(p.numel() for p in model.parameters()) / 1e6, len(splits.train), class_names,
    )
    trainer = Trainer.from_recipe(
        model, recipe, splits.train, splits.validation, data=data,
        collate_fn=inputs.collator, param_groups=groups, eval_metrics=lambda: ValidationAUC(signal, background),
        starts_from={"weights_sha256": weights_sha256(base.path)},  # a new version of a registered name is another run
    )
    result = trainer.train(resume=resume)

    # Test-set metrics with the weights the run ended with: the best validation ones under training.keep_best.
    from torch.utils.data import DataLoader

    acc = trainer.accelerator
    test_loader = acc.prepare(DataLoader(splits.test, batch_size=recipe.training.micro_batch_size, collate_fn=inputs.collator))
    out = predict(trainer.model, test_loader, acc)
    require_finite(out["logits"], "the fine-tuned model's outputs on the test jets (logits)", recipe.training.output_dir)
    out_dir = Path(recipe.training.output_dir)
    bundle = out_dir / "model"
    trainer.export(bundle)
    metrics = {}
    if acc.is_main_process:
        metrics = classification_report(out["logits"], out["labels"], class_names, signal, background, out_dir)
        # The test predictions themselves, for plots and comparisons made later.
        np.savez(out_dir / "test_predictions.npz", logits=out["logits"], labels=out["labels"], index=out["index"], class_names=np.array(class_names))
        metrics.update({"train_seconds": result.seconds, "steps": result.step, "stopped_early": result.stopped_early, "train_jets": len(splits.train), "init": recipe.init, "mode": recipe.mode, "weights_from": result.best or "last step"})
        write_json(out_dir / "metrics.json", metrics)
        data_config = {
            **{k: v for k, v in base_data_config.items() if k not in ("particle_features", "particle_feature_mean", "particle_feature_std")},
            "particle_features": features,
            "particle_feature_mean": mean,
            "particle_feature_std": std,
            "class_names": class_names,
            "finetune_data": to_dict(data),
        }
        card = model_card(
            title=f"Jet tagger ({', '.join(class_names)}) fine-tuned from {recipe.model if recipe.init == 'pretrained' else 'scratch'}",
            summary=f"Jet classification head ({model.config.classifier_pooling} pooling) on the jet transformer backbone; mode: {recipe.mode}.",
            model=trainer.unwrapped_model(),
            objective="supervised classification (cross entropy)",
            data={"training jets (labelled)": len(splits.train), "test jets": len(splits.test), "classes": class_names},
            metrics={k: v for k, v in metrics.items() if isinstance(v, (int, float))},
            recipe=to_dict(recipe),
            usage=f'foundation evaluate --model {bundle} --data YOUR_JETS.h5',
        )
        save_bundle(bundle, tokenizer, data_config, card)
        save_recipe(recipe, out_dir / "recipe.yaml")
    acc.wait_for_everyone()
    return bundle


def classification_report(logits: np.ndarray, labels: np.ndarray, class_names, signal: int, background: int | None, out_dir: Path | None, name: str = "model") -> dict:
    from scipy.special import softmax

    from foundation.evaluation.plots import plot_roc

    probs = softmax(logits, axis=-1)
    if len(class_names) == 2:
        metrics = tagging_metrics(labels == signal, probs[:, signal])
        binary_labels, scores = labels == signal, probs[:, signal]
    else:
        metrics = multiclass_tagging_metrics(
            labels, probs, class_names,
            signal_class=class_names[signal], background_class=class_names[background] if background is not None else None,
        )
        keep = np.isin(labels, [signal, background]) if background is not None else np.ones(len(labels), bool)
        denominator = probs[:, signal] + (probs[:, background] if background is not None else 1 - probs[:, signal])
        binary_labels, scores = labels[keep] == signal, (probs[:, signal] / denominator)[keep]
    metrics.update({"jets": int(len(labels)), "signal_class": class_names[signal]})
    if background is not None:
        metrics["background_class"] = class_names[background]
    if out_dir is not None:
        metrics["roc_plot"] = str(plot_roc({name: (binary_labels, scores)}, Path(out_dir) / "roc.png"))
    return metrics


def _check_both_classes(dataset: JetDataset, remap: np.ndarray, model_classes: list[str], signal: int, background: int | None) -> None:
    """ROC metrics need jets of the signal and of the background class (any other, without one)."""
    present = np.unique(remap[dataset.collection.labels()[dataset.indices]])
    names = [model_classes[i] for i in present]
    has_background = background in present if background is not None else bool(set(present) - {signal})
    if signal not in present or not has_background:
        files = ", ".join(str(p) for p in dataset.collection.paths)
        only = f"only class {names[0]!r}" if len(names) == 1 else f"classes {names}"
        wanted = model_classes[background] if background is not None else "any other class"
        raise InputError(f"{files}: the jets evaluated have {only}; ROC metrics need signal {model_classes[signal]!r} and background {wanted!r} jets")


def evaluate_tagger(
    model: str,
    data,
    out_dir: str | Path | None = None,
    signal_class: str | None = None,
    background_class: str | None = None,
    batch_size: int = 256,
    limit: int | None = None,
    revision: str | None = None,
    class_map: dict[str, str] | None = None,
) -> dict:
    """AUC, accuracy and background rejection of a fine-tuned bundle on any jet file.

    class_map renames the file's classes to the model's (JetClass "QCD" -> "qcd", "Tbqq" -> "top");
    jets of classes the map leaves out are skipped. Without it, class names must match.
    """
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    if out_dir is not None:
        check_output(out_dir, folder=True)
    bundle = load_bundle(model, model_class=JetTransformerForJetClassification, revision=revision)
    model_classes = [bundle.model.config.id2label[i] for i in range(bundle.model.config.num_labels)]
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config, kinematics=bundle.model.config.interaction_attention)
    dataset = jet_dataset(data, inputs, limit=limit)
    file_classes = dataset.class_names
    mapping = class_map or {c: c for c in file_classes if c in model_classes}
    bad = {k: v for k, v in mapping.items() if k not in file_classes or v not in model_classes}
    if bad or not mapping:
        raise InputError(
            f"classes of the data {file_classes} do not map onto the model's {model_classes}"
            + (f" ({bad})" if bad else "") + "; pass a class map such as QCD=qcd Tbqq=top"
        )
    if class_map is None and set(file_classes) - set(model_classes):
        raise InputError(f"the data has classes {file_classes}, the model knows {model_classes}; pass a class map")
    # Keep the jets of mapped classes; relabel them with the model's class indices.
    remap = np.array([model_classes.index(mapping[c]) if c in mapping else -1 for c in file_classes])
    keep = remap[dataset.collection.labels()[dataset.indices]] >= 0
    dataset = JetDataset(dataset.collection, dataset.indices[keep], dataset.feature_names, dataset.max_particles)
    signal, background = signal_and_background(model_classes, signal_class, background_class)
    _check_both_classes(dataset, remap, model_classes, signal, background)
    remap_t = torch.as_tensor(remap)

    def collate(batch):
        b = inputs.collator(batch)
        b["labels"] = remap_t[b["labels"]]  # the model's class indices
        return b

    acc = Accelerator()
    loader = acc.prepare(DataLoader(dataset, batch_size=batch_size, collate_fn=collate))
    net = acc.prepare(bundle.model)
    out = predict(net, loader, acc)
    require_finite(out["logits"], "the model's outputs (logits)", bundle.path)
    metrics = classification_report(out["logits"], out["labels"], model_classes, signal, background, out_dir)
    metrics["data"] = [str(p) for p in dataset.collection.paths]
    metrics["class_map"] = mapping
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics
