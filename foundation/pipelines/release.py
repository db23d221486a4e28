"""Publishing a released model: a finished pretraining run becomes the folder a registered name
points to (foundation/registry.py), with a model card that says how it was made.

    foundation release --run checkpoints/release/pretrain --name jet-foundation-small

The run's exported bundle (model/) is copied, verified by its manifest first; the card gives the
data (files, jets, Pythia seeds and settings read from the shards themselves), the tokenizer,
parameters, compute, the training curve (a plot beside the card), and the tagging benchmarks'
figures for this name where docs/results holds a run of them, else the commands that measure them.
The folder is written beside the target and renamed into place, so a failure leaves the old
release (or none), never half of one.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from foundation.data.canonical import CanonicalSource
from foundation.data.defaults import foundation_home
from foundation.data.sources import expand_paths
from foundation.errors import InputError
from foundation.evaluation.plots import plot_training_curve
from foundation.hub import MANIFEST, verify_bundle, weights_sha256, write_manifest
from foundation.outputs import temporary_path
from foundation.registry import REPOSITORY, lookup

logger = logging.getLogger(__name__)

CURVE = "training_curve.png"
MAX_WEIGHT_MB = 20  # a registered folder lives in git: keep its safetensors small (issue 29)
# The benchmarks whose figures a release card reports, by results folder (docs/results/<name>/)
BENCHMARKS = {
    "tagging": "python -m benchmarks.tagging --pretrained {name} --budgets 0.01 0.1 1 --seeds 0 1 2",
    "label_efficiency": "python -m benchmarks.label_efficiency --pretrained {name} --budgets 0.001 0.01 0.1 1 --seeds 0 1 2",
}


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


@dataclass
class TrainingStage:
    """One pretraining run of a release; a later stage continued from the model of the one before."""

    run: Path
    recipe: dict  # the run's recipe.yaml
    summary: dict  # its train_summary.json
    metrics: list[dict]  # its metrics.jsonl


def training_stages(run: Path) -> list[TrainingStage]:
    """The run and the runs it continued from (`init_from` naming another run's model/ folder), first first."""
    stages: list[TrainingStage] = []
    while run is not None and all(run.resolve() != s.run.resolve() for s in stages):
        recipe = yaml.safe_load((run / "recipe.yaml").read_text())
        summary = json.loads((run / "train_summary.json").read_text())
        stages.insert(0, TrainingStage(run, recipe, summary, _jsonl(run / "metrics.jsonl")))
        base = Path(recipe["init_from"]) if recipe.get("init_from") else None
        is_run = base is not None and base.name == "model" and (base.parent / "train_summary.json").exists()
        run = base.parent if is_run else None
    return stages


def _stage_lines(stages: list[TrainingStage]) -> list[str]:
    """The card's training and compute lines, one pair per stage."""
    lines = []
    for i, stage in enumerate(stages, start=1):
        training, summary, model = stage.recipe.get("training", {}), stage.summary, stage.recipe.get("model", {})
        label = f" (stage {i} of {len(stages)}, run {_shown(stage.run)})" if len(stages) > 1 else ""
        compute_label = f" (stage {i})" if len(stages) > 1 else ""
        continued = f", continued from stage {i - 1}" if i > 1 else ""
        continued += f" with the jet-level target (weight {model['jet_loss_weight']})" if model.get("jet_loss_weight") else ""
        steps, batch = summary.get("steps") or 0, training.get("global_batch_size") or 0
        seconds = summary.get("seconds") or 0.0
        lines += [
            f"- training{label}: {steps} steps of {batch} jets ({steps * batch} jets seen){continued}, learning rate "
            f"{training.get('learning_rate')}, mixed precision {training.get('mixed_precision')}, {summary.get('world_size')} process(es)",
            f"- compute{compute_label}: {seconds / 3600:.2f} h of training "
            f"({summary.get('jets_per_second', 0):.0f} jets/s), peak memory {summary.get('peak_memory_mb', 0):.0f} MB per process",
        ]
    return lines


def _shown(path: Path) -> str:
    """A run folder as the card names it: relative to FOUNDATION_HOME or the repository when inside."""
    for root in (foundation_home(), REPOSITORY):
        try:
            return str(Path(path).resolve().relative_to(Path(root).resolve()))
        except ValueError:
            continue
    return str(path)


def data_provenance(files: list[Path]) -> dict:
    """What the jet files say about themselves: jets per class, generator seeds and settings."""
    jets: dict[str, int] = {}
    seeds: set[int] = set()
    settings, versions = None, None
    for path in files:
        source = CanonicalSource(path)
        for index, count in zip(*np.unique(source.read_labels(), return_counts=True), strict=True):
            jets[source.class_names[index]] = jets.get(source.class_names[index], 0) + int(count)
        source.close()
        meta = source.metadata
        if "seed" in meta:
            seeds.add(int(meta["seed"]))
        settings = settings or meta.get("pythia_settings")
        versions = versions or meta.get("versions")
    return {"files": len(files), "jets": jets, "seeds": sorted(seeds), "pythia_settings": settings, "versions": versions}


def benchmark_figures(name: str, weights: str, results_root: Path) -> list[str]:
    """Lines for the card: each tagging benchmark's headline measured on these weights (the sha256 its
    results.json records), or its command: a figure of an earlier version is not this one's."""
    lines = []
    for bench, command in BENCHMARKS.items():
        command = command.format(name=name)
        results = results_root / bench / "results.json"
        payload = json.loads(results.read_text()) if results.exists() else {}
        measured = any(m.get("weights_sha256") == weights for m in payload.get("models") or [])
        if measured and payload.get("headline"):
            head = payload["headline"]
            lines.append(f"- {bench}: {head['metric']}: {head['ours']} (peer: {head.get('peer') or '-'}); "
                         f"docs/results/{bench}.md, `{payload['command']}`")
        else:
            lines.append(f"- {bench}: not yet measured for this version; `{command}`")
    return lines


def release_card(name: str, version: int, description: str, run_bundle: Path, bundle_card: str, stages: list[TrainingStage],
                 provenance: dict, benchmarks: list[str]) -> str:
    """The released model's README.md: the last run's own card, preceded by how the release was made."""
    data = stages[-1].recipe.get("data", {})
    jets_total = sum(provenance["jets"].values())
    # the run's own card, without its front matter, naming the release instead of the run's folder
    run_card = bundle_card.split("---\n", 2)[-1].lstrip().replace(str(run_bundle), name).replace(str(REPOSITORY) + "/", "")
    lines = [
        f"# {name} (v{version})",
        "",
        f"{description}. Load it by name: `load_bundle(\"{name}\")`, `foundation finetune --from {name}`, "
        f"`foundation embed --model {name}`.",
        "",
        "## How it was made",
        f"- data: {jets_total} generated jets in {provenance['files']} files ({', '.join(f'{k} {v}' for k, v in provenance['jets'].items())}), "
        f"Pythia 8 + FastJet, run seed(s) {provenance['seeds']} (the recipes' default data use seed 1, the tagging benchmark "
        f"2701 and 2702); fractions {data.get('validation_fraction')} / {data.get('test_fraction')} held out for validation / test",
        f"- generator settings: {'; '.join(provenance['pythia_settings'] or [])}",
        *_stage_lines(stages),
        f"- training curve: [{CURVE}]({CURVE})",
        "- reproduce: `launch/release.sh` (data, tokenizer, pretraining, this folder)",
        "",
        "## Tagging benchmarks",
        *benchmarks,
        "",
        "---",
        "",
        run_card,
    ]
    front = "---\nlibrary_name: foundation\ntags: [particle-physics, jets, lhc, foundation-model]\n---\n"
    return front + "\n".join(lines)


def _weights_mb(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) / 2**20


def publish(run: str | Path, name: str, overwrite: bool = False, results_root: Path | None = None, target: Path | None = None) -> Path:
    """Copy the finished run's bundle into the registered folder of `name` (or `target`), with the release card."""
    entry = lookup(name)
    if entry is None:
        raise InputError(f"--name {name}: not a registered model (foundation/registry.py); register it first")
    run = Path(run)
    bundle = run / "model"
    if not (bundle / MANIFEST).exists() or not (run / "train_summary.json").exists():
        raise InputError(f"--run {run}: no finished pretraining run (model/{MANIFEST} and train_summary.json)")
    verify_bundle(bundle)
    if (weights := _weights_mb(bundle)) > MAX_WEIGHT_MB:
        raise InputError(f"--run {run}: {weights:.1f} MB of safetensors, over the {MAX_WEIGHT_MB} MB a shipped model may hold")
    target = Path(target or entry.local_path)
    if target.exists() and not overwrite:
        raise InputError(f"{target}: a release is there; pass --overwrite to replace it")
    stages = training_stages(run)
    data_files = stages[-1].recipe.get("data", {}).get("files")
    if not data_files:
        raise InputError(f"--run {run}: its recipe names no data.files (the generated default set) to describe")
    files = expand_paths(data_files)
    staging = temporary_path(target)
    shutil.rmtree(staging, ignore_errors=True)
    shutil.copytree(bundle, staging)
    (staging / MANIFEST).unlink()
    history, starts, jets = [], [], 0
    for stage in stages:  # one curve over every stage, in jets seen since the first (batch sizes may differ)
        batch = stage.recipe["training"]["global_batch_size"]
        if jets:
            starts.append(jets)
        history += [{**row, "step": jets + row["step"] * batch} for row in stage.metrics]
        jets += (stage.summary.get("steps") or 0) * batch
    plot_training_curve(history, 1, staging / CURVE, starts)  # "steps" of one jet each
    card = release_card(
        name, entry.version, entry.description, bundle, (bundle / "README.md").read_text(), stages,
        data_provenance(files), benchmark_figures(name, weights_sha256(bundle), results_root or REPOSITORY / "docs" / "results"),
    )
    (staging / "README.md").write_text(card)
    write_manifest(staging)
    verify_bundle(staging)
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    logger.info("released %s v%d: %s (%.1f MB of weights)", name, entry.version, target, weights)
    return target
