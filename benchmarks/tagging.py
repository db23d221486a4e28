"""Benchmark 1: top tagging against a peer, at label budgets.

    python -m benchmarks.tagging --pretrained jet-foundation-small --budgets 0.01 0.1 1 --seeds 0 1 2

Three models, on fair terms: the pretrained backbone fine-tuned (--recipe, default finetune/top_tagging_token_dropout.yaml), the
same architecture from scratch (by default the same recipe reading the particles' features without
their codes, SCRATCH_ARCHITECTURE; --scratch-recipe for another), and ParT (weaver-core) from
scratch, all on the same 13 particle features, batch size and training loop. `--models ... main_job` adds the main job's model (the one
`foundation run` pretrains, --main-job-model) fine-tuned the same way: the released model should beat it.

Data: labelled top + QCD jets generated with --train-seed (25k by default), of which 10% are split
off for validation, and an independent test sample generated with --test-seed (10k): disjoint
Pythia seeds, both disjoint from the seed of the shipped recipes' data (main job, tokenizer,
pretraining), which the script checks. Made once into --data-dir and reused.

Protocol, identical for every model: train until the validation AUC has not improved for --patience
evaluations (one evaluation per epoch, at least every --min-eval-steps steps), for at most
--max-epochs epochs (at least --min-steps steps, for the small budgets), ending with the weights of
the best validation AUC. The learning rate is chosen per model from the same grid (--learning-rates)
by validation AUC with the first seed, at each budget (budgets above --select-at reuse the rate chosen
there: their runs are the longest, four of them per model the most costly part). --refine adds a
refinement round, one more configuration per model so that every model's search stays the same size:
a pretrained model tries a head-only start (--head-first-steps, LP-FT) at its chosen rate, a model
from scratch (ours, ParT) a rate between its chosen one and the better neighbour. The other seeds
then train with the chosen configuration. A budget's labelled jets are one fixed random subset of the pool, the
same for every model and seed (the models are compared on the same jets; the seeds vary the
initialisation and the order of the batches). Only the chosen runs are ever evaluated on the test
sample: training runs get no test file at all. Every run is cached under --runs, keyed by all its settings, and
resumes where it stopped; finished ones are reused (run the expensive ParT once with --models part).
--validation-only stops before the test sample: it trains, selects and prints validation AUCs, for
choosing settings (a backbone, a recipe) without looking at the test jets; the full command
later reuses its runs. A run's validation AUC is the best of its evaluations, so it is biased
upwards, the more so the noisier the run's curve; --validation-only therefore also scores each
chosen run's kept weights on a development sample (--dev-data, or generated with --dev-seed),
independent of the training, validation and test jets: the figure to compare settings by.
Prints AUC, accuracy, 1/eps_B at eps_S = 0.3 and 0.5 (mean and spread over seeds), the epochs each
model used, its wall-clock, and the goal checks: pretrained ahead of ParT (and of the main job's
model, when it runs) beyond the seed spread.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np

from benchmarks.common import (
    RECIPE_DATA_SEED,
    RELEASE_DATA_SEED,
    ROOT,
    base_parser,
    chunk_seeds_of,
    generated_sample,
    mean_and_spread,
    print_table,
    reserved_seeds,
    run_script,
    write_results,
)

FEATURES = [
    "log_pt", "log_e", "log_pt_rel", "log_e_rel", "eta_rel", "phi_rel", "delta_r",
    "charge", "is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron",
]
MODELS = ["pretrained", "main_job", "scratch", "part"]
PRETRAINED_KINDS = ("pretrained", "main_job")  # the models that start from pretrained weights
NAMES = {
    "pretrained": "pretrained + fine-tuned", "main_job": "main job's model (`foundation run`) + fine-tuned",
    "scratch": "same architecture, from scratch", "part": "ParT (weaver-core), from scratch",
}
SHORT_NAMES = {"pretrained": "pretrained", "main_job": "main job's model", "scratch": "scratch", "part": "ParT"}  # in verdicts and column heads
# Where `foundation run` leaves its pretrained bundle: the model a user gets without the released one
# (issue 29: the released model must beat it on benchmarks 1 and 2).
MAIN_JOB_MODEL = "checkpoints/main/pretrain/model"
MAX_PARTICLES = 128
TRAIN_SEED, TEST_SEED = 2701, 2702  # the benchmark's own generator seeds (issue 27)
DEV_SEED = 2704  # the development sample of --validation-only (2703 is benchmark 4's reference)
# The grid every model's learning rate is chosen from. 3e-5 was added when the pretrained model chose
# 1e-4, the grid's lowest then, at 22 and 225 labels: a choice at the edge says the grid is too short.
LEARNING_RATES = [3e-5, 1e-4, 3e-4, 1e-3]
# The from-scratch model's inputs when --scratch-recipe is not given: the particles' exact features
# without the tokenizer's codes. Chosen on validation jets (docs/results/tagging_choices.md, benchmarks.tagging_choices): from
# scratch the codes are a channel to memorise a few thousand labelled jets by, and without them the
# same backbone tags better at both budgets the page compares (most at 2250 labels).
SCRATCH_ARCHITECTURE = {"token_inputs": False}
# The pretrained models' fine-tuning recipe, chosen on development jets by benchmarks.tagging_choices
# (token dropout: level at 225 labels, +0.0085 AUC beyond the seed spread at 2250).
RECIPE = "finetune/top_tagging_token_dropout.yaml"
# Every run's settings and figures, committed (docs/benchmarks.md): a fresh clone reuses them.
RECORDS = ROOT / "docs" / "results" / "runs" / "tagging"
RUN_FORMAT = 1  # part of every run's key: bump when a change makes old runs incomparable
# The recipe's data fields that hold paths; a run's key names these files (the benchmark's split) by file name.
DATA_FILE_FIELDS = ("files", "validation_files", "test_files")


def fail(message: str):
    """Bad input: one line, exit code 2."""
    print(f"error: {message}", file=sys.stderr, flush=True)
    raise SystemExit(2)


# ----- training protocol -----
@dataclass(frozen=True)
class Protocol:
    """The stopping rule and batch every model trains with."""

    batch: int = 64  # jets per optimizer step
    max_epochs: int = 30  # at most this many epochs ...
    min_steps: int = 600  # ... but at least this many steps (a few-jet budget has 1 step per epoch)
    patience: int = 5  # evaluations without a better validation AUC before stopping
    min_eval_steps: int = 20  # evaluate every epoch, but not more often than this

    def schedule(self, jets: int) -> dict:
        per_epoch = max(1, jets // self.batch)  # the loader drops the last partial batch
        max_steps = max(self.max_epochs * per_epoch, self.min_steps)
        eval_every = max(per_epoch, self.min_eval_steps)
        return {"steps_per_epoch": per_epoch, "max_steps": max_steps, "eval_every": eval_every, "max_epochs": max_steps / per_epoch}

    def overrides(self, jets: int, seed: int, learning_rate: float) -> dict:
        s = self.schedule(jets)
        return {
            "training.max_steps": s["max_steps"],
            "training.seed": seed,
            "training.learning_rate": learning_rate,
            "training.global_batch_size": self.batch,
            "training.micro_batch_size": self.batch,
            "training.eval_every": s["eval_every"],
            "training.warmup_steps": s["eval_every"],  # the first evaluation comes after the warm-up
            "training.keep_best": "eval/auc",
            "training.keep_best_mode": "max",
            "training.early_stopping_patience": self.patience,
            "training.save_every": s["eval_every"],  # a killed run loses at most one evaluation interval
            "training.log_every": max(s["eval_every"] // 5, 1),
            "training.tensorboard": False,
            "training.progress": False,
        }


TINY_PROTOCOL = Protocol(batch=16, max_epochs=4, min_steps=6, patience=2, min_eval_steps=2)


@dataclass(frozen=True)
class Setting:
    """One configuration of a run: what the search on validation jets chooses between."""

    learning_rate: float
    # Our pretrained models only: steps the head trains alone before the backbone joins (LP-FT);
    # None keeps the recipe's head_only_steps (the refinement round sets it).
    head_only_steps: int | None = None

    @property
    def label(self) -> str:
        return f"{self.learning_rate:g}" + (f" head-first {self.head_only_steps}" if self.head_only_steps else "")


# ----- data -----
@dataclass
class BenchmarkData:
    train: list[str]
    validation: list[str]
    test: list[str]
    record: dict  # what the data are: files, seeds, split (results.json and the runs' keys)
    # --validation-only's development sample (not part of the record: runs do not depend on it)
    dev: list[str] | None = None

    @property
    def digest(self) -> str:
        return _digest(self.record)

    @cached_property
    def dev_digest(self) -> str:
        """The development sample by its files' metadata (read once, not once per run)."""
        return _digest(_file_record(self.dev))


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def check_independent(train: list[str], test: list[str], dev: list[str] | None = None) -> dict:
    """Refuse a test (or development) sample that shares generator seeds with the training jets, with
    each other, or with the recipes' data."""
    train_seeds, test_seeds, dev_seeds = chunk_seeds_of(train), chunk_seeds_of(test), chunk_seeds_of(dev or [])
    if train_seeds & test_seeds:
        fail(f"--test-data: {len(train_seeds & test_seeds)} Pythia seed(s) of the test files are also in the training files; the test sample must be independent")
    for other, seeds in (("training", train_seeds), ("test", test_seeds)):
        if dev_seeds & seeds:
            fail(f"--dev-data: {len(dev_seeds & seeds)} Pythia seed(s) of the development files are also in the {other} files; it must be an independent sample")
    reserved = reserved_seeds()
    for option, seeds in (("--data", train_seeds), ("--test-data", test_seeds), ("--dev-data", dev_seeds)):
        if seeds & reserved:
            fail(f"{option}: generated with Pythia seeds the shipped models were pretrained on (seed {RECIPE_DATA_SEED} or {RELEASE_DATA_SEED}); use other seeds")
    known = bool(train_seeds) and bool(test_seeds)
    return {"checked": known, "train_pythia_seeds": len(train_seeds), "test_pythia_seeds": len(test_seeds)}


def _file_record(files: list[str]) -> list[dict]:
    """Jet files by name, size and (generated ones) Pythia seed and process: what keys the runs.
    Not by folder, so that a run recorded in one checkout (or on another machine) is the same run
    in another; not by a hash of the contents, which a regenerated file's metadata would change."""
    from foundation.data.canonical import CanonicalSource, is_canonical

    out = []
    for path in files:
        meta = CanonicalSource(path).metadata if is_canonical(path) else {}
        out.append({"name": Path(path).name, "bytes": Path(path).stat().st_size, "seed": meta.get("seed"), "process": (meta.get("generator") or {}).get("process")})
    return out


def split_pool(pool: list[str], folder: Path, validation_fraction: float, split_seed: int) -> tuple[list[str], list[str]]:
    """Write the pool's jets as train.h5 and validation.h5 (a random split, fixed by split_seed)."""
    from foundation.data.canonical import write_jets
    from foundation.data.sources import JetCollection

    collection = JetCollection.open(pool, max_particles=MAX_PARTICLES)
    order = np.random.default_rng(split_seed).permutation(len(collection))
    n_val = max(1, int(round(len(collection) * validation_fraction)))
    paths = []
    for name, idx in (("train", order[n_val:]), ("validation", order[:n_val])):
        jets = collection.read_indices(np.sort(idx)).padded_to(MAX_PARTICLES)
        meta = {"source": f"{name} split of {pool}", "split_seed": split_seed, "validation_fraction": validation_fraction, "chunk_seeds": sorted(chunk_seeds_of(pool))}
        paths.append(str(write_jets(folder / f"{name}.h5", jets, meta)))
    return [paths[0]], [paths[1]]


def prepare_data(args) -> BenchmarkData:
    """The training pool (split into train + validation) and the independent test sample, made once."""
    folder = Path(args.data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    if args.data is None and args.test_data is not None:
        fail("--test-data: give the training jets with --data too (or neither, to generate both)")
    if args.data is not None and args.test_data is None:
        fail("--data: give an independent test sample with --test-data (generated with other seeds), or neither to generate both")
    if args.data is None:
        if args.train_seed == args.test_seed:
            fail(f"--test-seed: must differ from --train-seed ({args.train_seed})")
        pool = generated_sample(folder, "pool", args.train_jets_per_class, args.train_seed, MAX_PARTICLES)
        test = generated_sample(folder, "test", args.test_jets_per_class, args.test_seed, MAX_PARTICLES)
    else:
        pool, test = list(args.data), list(args.test_data)
        require_files(pool + test)
    dev = development_sample(args, folder)
    independence = check_independent(pool, test, dev)
    record = {
        "train_pool": _file_record(pool), "test": _file_record(test), "validation_fraction": 0.1, "split_seed": 0,
        "max_particles": MAX_PARTICLES, "independence": independence,
    }
    meta = folder / "data.json"
    if meta.exists() and json.loads(meta.read_text()) != record:
        fail(f"--data-dir {folder}: holds a split of other data ({meta}); pass another --data-dir")
    if not (meta.exists() and (folder / "train.h5").exists() and (folder / "validation.h5").exists()):
        split_pool(pool, folder, record["validation_fraction"], record["split_seed"])
        meta.write_text(json.dumps(record, indent=1))  # last: its presence says the split is complete
    return BenchmarkData([str(folder / "train.h5")], [str(folder / "validation.h5")], test, record, dev)


def require_files(paths: list[str]) -> None:
    for path in paths:
        if not Path(path).exists():
            fail(f"{path}: no such file")


def development_sample(args, folder: Path) -> list[str] | None:
    """--validation-only's development sample: --dev-data, else generated with --dev-seed when the
    training jets are generated too; None outside --validation-only or for given --data without one."""
    if args.dev_data is not None and not args.validation_only:
        fail("--dev-data: only --validation-only reads a development sample (the final figures come from the test sample)")
    if not args.validation_only:
        return None
    if args.dev_data is not None:
        require_files(args.dev_data)
        return list(args.dev_data)
    if args.data is not None:
        print("--validation-only with --data: no development sample (pass --dev-data); validation AUCs only", flush=True)
        return None
    if args.dev_seed in (args.train_seed, args.test_seed):
        fail(f"--dev-seed: must differ from --train-seed ({args.train_seed}) and --test-seed ({args.test_seed})")
    return generated_sample(folder, "dev", args.dev_jets_per_class, args.dev_seed, MAX_PARTICLES)


# ----- runs -----
@dataclass
class Bench:
    """Everything a run depends on besides (model, jets, seed, learning rate)."""

    data: BenchmarkData
    protocol: Protocol
    runs: Path
    recipe: str
    pretrained: str
    tiny: bool
    main_job: str | None = None  # the main job's pretrained bundle, for the "main_job" model
    scratch_recipe: str | None = None  # the from-scratch model's recipe; None: `recipe` with SCRATCH_ARCHITECTURE
    # The committed record of the runs (`runs`' layout, each run's small files without its weights),
    # so a fresh machine reuses what another trained; None: no record.
    records: Path | None = None

    def bundle(self, kind: str) -> str:
        """The bundle a model of ours starts from (scratch: its architecture and tokenizer only)."""
        return self.main_job if kind == "main_job" else self.pretrained

    def bundle_digest(self, kind: str) -> str:
        """That bundle by content (the sha256 of its weights, configs and tokenizer), not by path."""
        from foundation.hub import content_sha256, resolve

        return _digest(content_sha256(resolve(self.bundle(kind))))


def our_recipe(bench: Bench, kind: str, jets: int, seed: int, setting: Setting, output_dir: str):
    from foundation.pipelines.finetune import load_finetune_recipe

    values = {
        "model": bench.bundle(kind), "init": "scratch" if kind == "scratch" else "pretrained", "particle_features": FEATURES,
        **bench.protocol.overrides(jets, seed, setting.learning_rate), "training.output_dir": output_dir,
    }
    if setting.head_only_steps is not None:
        values["head_only_steps"] = setting.head_only_steps
    if kind == "scratch":
        # Random weights have nothing to keep: the recipe's frozen or layer-wise mode, or its head-only
        # start, is for the pretrained model; from scratch every layer trains at the chosen rate throughout.
        values["mode"], values["head_only_steps"] = "full", 0
        if bench.scratch_recipe is None:
            values.update({f"architecture.{key}": value for key, value in SCRATCH_ARCHITECTURE.items()})
            # No codes to hide: token dropout does nothing without them. At 0, the model's key is the
            # same whichever fine-tuning recipe (with token dropout or not) --recipe names.
            values["head.token_dropout"] = 0.0
    recipe = load_finetune_recipe(bench.scratch_recipe if kind == "scratch" and bench.scratch_recipe else bench.recipe, values)
    # The training runs never get the test sample: their own "test" pass is on the validation jets.
    recipe.data.files, recipe.data.validation_files, recipe.data.test_files = bench.data.train, bench.data.validation, bench.data.validation
    recipe.data.train_limit = jets
    return recipe


def run_settings(bench: Bench, kind: str, jets: int, seed: int, setting: Setting) -> dict:
    """All a run's result depends on: its cache key."""
    settings = {
        "format": RUN_FORMAT, "model": kind, "labelled_jets": jets, "seed": seed, "learning_rate": setting.learning_rate,
        "protocol": asdict(bench.protocol), "data": bench.data.digest, "features": FEATURES,
    }
    if kind == "part":
        from benchmarks.baselines import PART_DEFAULT, PART_TINY

        settings["part"] = {**PART_DEFAULT, **(PART_TINY if bench.tiny else {})}
    else:
        from foundation.config import to_dict
        from foundation.training.checkpoint import without_fields_at_as_before

        # Fields added since, at their as-before value, are left out: runs cached before they existed stay valid.
        recipe = without_fields_at_as_before(to_dict(our_recipe(bench, kind, jets, seed, setting, "<run>")))
        recipe.pop("model")
        # The split's files are what settings["data"] names; by file name here too, not by folder.
        recipe["data"].update({key: [Path(path).name for path in recipe["data"][key]] for key in DATA_FILE_FIELDS})
        settings.update(recipe=recipe, pretrained=bench.bundle_digest(kind))
    return json.loads(json.dumps(settings, default=str))


def head_only_steps_of(settings: dict) -> int:
    """The head-only steps a run's key records (absent at 0, the value before the field existed; ParT: 0)."""
    return settings.get("recipe", {}).get("head_only_steps", 0)


def run_folder(bench: Bench, settings: dict) -> Path:
    # the digest tells runs apart; the name only helps a reader (and stays as it was, for the cache)
    name = f"{settings['model']}-seed{settings['seed']}-lr{settings['learning_rate']:g}-{_digest(settings)}"
    return bench.runs / f"jets-{settings['labelled_jets']}" / name


# A run's files the record keeps (besides its development-sample scores, dev-*.json): all but its weights.
RECORD_FILES = ("settings.json", "run.json", "test.json", "test_predictions.npz")


def record_run(bench: Bench, folder: Path) -> None:
    """Copy a run's small files into the committed record (its weights stay in --runs)."""
    if bench.records is None:
        return
    target = bench.records / folder.relative_to(bench.runs)
    target.mkdir(parents=True, exist_ok=True)
    tested = (folder / "test.json").exists()
    for path in folder.iterdir():
        # Before its test pass, a run's test_predictions.npz is the fine-tuning's own, on validation jets.
        if path.name == "test_predictions.npz" and not tested:
            continue
        if path.is_file() and (path.name in RECORD_FILES or path.name.startswith("dev-")) and not _same_file(path, target / path.name):
            shutil.copy2(path, target / path.name)


def _same_file(path: Path, copy: Path) -> bool:
    """Whether `copy` is a copy2 of `path` already (a restored or once-recorded run is not copied again)."""
    if not copy.exists():
        return False
    a, b = path.stat(), copy.stat()
    return (a.st_size, a.st_mtime_ns) == (b.st_size, b.st_mtime_ns)


def restore_run(bench: Bench, folder: Path) -> bool:
    """A run another machine trained and recorded: its files back into `folder` (without weights)."""
    source = None if bench.records is None else bench.records / folder.relative_to(bench.runs)
    if source is None or not (source / "run.json").exists():
        return False
    folder.mkdir(parents=True, exist_ok=True)
    for path in source.iterdir():
        shutil.copy2(path, folder / path.name)
    return True


def needs_weights(bench: Bench, run: dict, test: bool) -> bool:
    """Whether a chosen run must be scored (test, or development sample) but has only its record."""
    if not test and bench.data.dev is None:
        return False  # a validation pass without a development sample scores nothing
    folder = Path(run["folder"])
    scored = folder / ("test.json" if test else f"dev-{bench.data.dev_digest}.json")
    return not scored.exists() and not (folder / "model").exists()


def train_run(bench: Bench, kind: str, jets: int, seed: int, setting: Setting, again: bool = False) -> dict:
    """One training run (validation metrics only), reused when finished (here or in the record),
    resumed when interrupted; `again`: trained anew (a recorded run whose weights are needed)."""
    settings = run_settings(bench, kind, jets, seed, setting)
    head_first = head_only_steps_of(settings)
    what = f"{kind}, {jets} jets, seed {seed}, lr {setting.learning_rate:g}" + (f", head first for {head_first} steps" if head_first else "")
    folder = run_folder(bench, settings)
    done = folder / "run.json"
    schedule = bench.protocol.schedule(jets)
    if again:
        print(f"--- {what}: recorded without its weights, which the scoring needs: trained again", flush=True)
        done.unlink()
    elif done.exists() or restore_run(bench, folder):
        record_run(bench, folder)  # a run finished before the record existed joins it
        run = {**json.loads(done.read_text()), "folder": str(folder)}  # a recorded run may come from another --runs
        run.setdefault("head_only_steps", head_first)  # runs finished before the field was recorded
        print(f"--- {what}: done before ({folder})", flush=True)
        return run
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "settings.json").write_text(json.dumps(settings, indent=1))
    print(
        f"--- {what}: up to {schedule['max_steps']} steps "
        f"({schedule['max_epochs']:g} epochs), evaluated every {schedule['eval_every']} steps, patience {bench.protocol.patience}",
        flush=True,
    )
    start = time.perf_counter()
    result = _train_part(bench, jets, seed, setting.learning_rate, folder) if kind == "part" else _train_ours(bench, kind, jets, seed, setting, folder)
    run = {
        "model": kind, "labelled_jets": jets, "seed": seed, "learning_rate": setting.learning_rate, "head_only_steps": head_first, "folder": str(folder), **result,
        "epochs": result["steps"] / schedule["steps_per_epoch"], "max_epochs": schedule["max_epochs"],
        "wall_seconds": time.perf_counter() - start,  # of this invocation (a resumed run: its last part)
    }
    done.write_text(json.dumps(run, indent=1))
    from foundation.training import checkpoint as ckpt

    shutil.rmtree(ckpt.checkpoint_root(folder), ignore_errors=True)  # resume state, no longer needed
    record_run(bench, folder)
    print(
        f"    {'stopped early' if run['stopped_early'] else 'ran to the maximum'} at step {run['steps']} ({run['epochs']:.1f} epochs); "
        f"best validation AUC {run['validation_auc']:.4f}; {run['wall_seconds']:.0f} s",
        flush=True,
    )
    return run


def _params(bundle: Path) -> int:
    from safetensors import safe_open

    with safe_open(bundle / "model.safetensors", "pt") as f:
        return int(sum(np.prod(f.get_slice(k).get_shape()) for k in f.keys() if not k.startswith(("lm_head", "mpm_head", "jet_head", "jet_target_"))))


def _train_ours(bench: Bench, kind: str, jets: int, seed: int, setting: Setting, folder: Path) -> dict:
    from foundation.pipelines.finetune import finetune

    bundle = finetune(our_recipe(bench, kind, jets, seed, setting, str(folder)), resume=True)
    metrics = json.loads((folder / "metrics.json").read_text())
    return {
        "validation_auc": metrics["weights_from"]["value"], "best_step": metrics["weights_from"]["step"], "steps": metrics["steps"],
        "stopped_early": metrics["stopped_early"], "train_seconds": metrics["train_seconds"], "params": _params(bundle),
    }


def _train_part(bench: Bench, jets: int, seed: int, learning_rate: float, folder: Path) -> dict:
    import torch

    from benchmarks.baselines import PART_TINY, ParTTagger, part_collator, part_inputs, save_part
    from foundation.data.dataset import DataConfig, build_splits
    from foundation.pipelines.finetune import ValidationAUC
    from foundation.training import Trainer, TrainingConfig

    data = DataConfig(
        files=bench.data.train, validation_files=bench.data.validation, test_files=bench.data.validation,
        features=FEATURES, max_particles=MAX_PARTICLES, train_limit=jets,
    )
    splits = build_splits(data)
    for ds in (splits.train, splits.validation):
        ds.include_momenta = True
    mean, std = part_inputs(splits.train, FEATURES, seed)
    torch.manual_seed(seed)
    kwargs = PART_TINY if bench.tiny else {}
    model = ParTTagger(len(FEATURES), len(splits.class_names), **kwargs)
    config = TrainingConfig(**{k.removeprefix("training."): v for k, v in bench.protocol.overrides(jets, seed, learning_rate).items()}, output_dir=str(folder))
    signal = splits.class_names.index("top")
    trainer = Trainer(model, splits.train, splits.validation, config, collate_fn=part_collator(mean, std), eval_metrics=lambda: ValidationAUC(signal, 1 - signal))
    result = trainer.train(resume=True)
    save_part(trainer.unwrapped_model(), mean, std, kwargs, folder / "model")
    return {
        "validation_auc": result.best["value"], "best_step": result.best["step"], "steps": result.step, "stopped_early": result.stopped_early,
        "train_seconds": result.seconds, "params": sum(p.numel() for p in model.parameters()),
    }


# ----- the test sample: only for the selected runs -----
def evaluate_on_test(bench: Bench, run: dict) -> dict:
    """Test metrics of a selected run (computed once, then read back)."""
    folder = Path(run["folder"])
    path, predictions = folder / "test.json", folder / "test_predictions.npz"
    if not path.exists():
        metrics, logits, labels, class_names = _score_run(run, bench.data.test)
        np.savez_compressed(predictions, logits=logits, labels=labels, class_names=np.array(class_names))
        path.write_text(json.dumps(metrics, indent=1, default=float))
        record_run(bench, folder)
    return {**json.loads(path.read_text()), "predictions": str(predictions)}


def evaluate_on_dev(bench: Bench, run: dict) -> float:
    """AUC of a run's kept weights on the development sample (cached per sample in the run's folder)."""
    path = Path(run["folder"]) / f"dev-{bench.data.dev_digest}.json"
    if not path.exists():
        metrics = _score_run(run, bench.data.dev)[0]
        path.write_text(json.dumps({"dev_data": bench.data.dev, "auc": metrics["auc"]}, default=float))
        record_run(bench, Path(run["folder"]))
    return json.loads(path.read_text())["auc"]


def _score_run(run: dict, files: list[str]) -> tuple[dict, np.ndarray, np.ndarray, list[str]]:
    """A run's kept weights on jet files: (classification metrics, logits, labels, class names)."""
    from foundation.pipelines.finetune import classification_report

    predict = _predict_part if run["model"] == "part" else _predict_ours
    logits, labels, class_names = predict(Path(run["folder"]) / "model", files)
    signal = class_names.index("top")
    return classification_report(logits, labels, class_names, signal, 1 - signal, None), logits, labels, class_names


def _predict(model, dataset, collate) -> tuple[np.ndarray, np.ndarray]:
    from accelerate import Accelerator
    from torch.utils.data import DataLoader

    from foundation.pipelines.inference import predict

    acc = Accelerator()
    loader = acc.prepare(DataLoader(dataset, batch_size=256, collate_fn=collate))
    out = predict(acc.prepare(model), loader, acc)
    return out["logits"], out["labels"]


def _predict_ours(bundle_dir: Path, test: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from foundation.hub import load_bundle
    from foundation.models import JetTransformerForJetClassification
    from foundation.pipelines.inference import bundle_inputs, jet_dataset

    bundle = load_bundle(bundle_dir, model_class=JetTransformerForJetClassification)
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config)
    dataset = jet_dataset(test, inputs)
    classes = [bundle.model.config.id2label[i] for i in range(bundle.model.config.num_labels)]
    if dataset.class_names != classes:
        fail(f"--test-data: classes {dataset.class_names} differ from the training data's {classes}")
    return (*_predict(bundle.model, dataset, inputs.collator), classes)


def _predict_part(folder: Path, test: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from benchmarks.baselines import load_part, part_collator
    from foundation.data.dataset import JetDataset
    from foundation.data.sources import JetCollection

    collection = JetCollection.open(test, max_particles=MAX_PARTICLES)
    dataset = JetDataset(collection, np.arange(len(collection)), FEATURES, MAX_PARTICLES)
    dataset.include_momenta = True
    model, mean, std = load_part(folder, len(FEATURES), len(collection.class_names))
    return (*_predict(model, dataset, part_collator(mean, std)), list(collection.class_names))


# ----- selection, seeds, summary -----
def budget_jets(budget: float, full: int) -> int:
    return max(int(round(budget * full)), 16)


def selection_budget(budget: float, select_at: float | None) -> float:
    """The budget whose chosen configuration `budget` trains with: its own, or select_at's for larger ones."""
    return budget if select_at is None or budget <= select_at else select_at


def refinement(kind: str, chosen: float, auc: dict[float, float], head_only_steps: int) -> Setting:
    """The one configuration the refinement round adds after the learning-rate grid, the same for
    every model in number: a pretrained model tries a head-only start at its chosen rate; a model
    from scratch (ours, ParT), with nothing to keep, a rate between the chosen one and its better
    neighbour on the grid (half a grid step beyond the chosen one when it is at the grid's edge)."""
    if kind in PRETRAINED_KINDS:
        return Setting(chosen, head_only_steps)
    grid = sorted(auc)
    i = grid.index(chosen)
    if len(grid) == 1:
        return Setting(float(f"{chosen * math.sqrt(10):.3g}"))  # no neighbour: half a decade up
    if i in (0, len(grid) - 1):  # at the edge: a choice there says the grid may be too short
        neighbour = grid[1] if i == 0 else grid[-2]
        rate = chosen * math.sqrt(chosen / neighbour)
    else:
        neighbour = max(grid[i - 1], grid[i + 1], key=lambda lr: auc[lr])
        rate = math.sqrt(chosen * neighbour)
    return Setting(float(f"{rate:.3g}"))


def select_setting(bench: Bench, kind: str, jets: int, seed: int, grid: list[float], head_only_steps: int | None) -> tuple[Setting, dict]:
    """The configuration with the best validation AUC (ties: the first tried), and every one's AUC:
    the learning-rate grid, then (with `head_only_steps`, --refine) the refinement round's one more."""
    auc = {lr: train_run(bench, kind, jets, seed, Setting(lr))["validation_auc"] for lr in grid}
    tried = {Setting(lr): a for lr, a in auc.items()}
    if head_only_steps is not None:
        extra = refinement(kind, max(grid, key=lambda lr: auc[lr]), auc, head_only_steps)
        if extra not in tried:
            tried[extra] = train_run(bench, kind, jets, seed, extra)["validation_auc"]
    chosen = max(tried, key=lambda s: tried[s])
    print(f"=== {kind}, {jets} jets: {chosen.label} chosen on validation AUC ({', '.join(f'{s.label}: {a:.4f}' for s, a in tried.items())})", flush=True)
    return chosen, {s.label: a for s, a in tried.items()}


def run_models(bench: Bench, args, models: list[str], test: bool = True) -> list[dict]:
    """For each model and budget: select the configuration on validation, train every seed with it,
    then (and only then, with `test`) evaluate those runs on the test sample. One row per
    (model, budget, seed)."""
    from foundation.data.sources import JetCollection

    full = len(JetCollection.open(bench.data.train, max_particles=MAX_PARTICLES))
    rows = []
    for kind in models:
        for budget in args.budgets:
            jets = budget_jets(budget, full)
            select_jets = budget_jets(selection_budget(budget, args.select_at), full)
            setting, tried = select_setting(bench, kind, select_jets, args.seeds[0], args.learning_rates, args.head_first_steps if args.refine else None)
            for seed in args.seeds:
                run = train_run(bench, kind, jets, seed, setting)
                if needs_weights(bench, run, test):
                    run = train_run(bench, kind, jets, seed, setting, again=True)
                row = {
                    "model": kind, "budget": budget, "labelled_jets": jets, "seed": seed, "learning_rate": setting.learning_rate,
                    "head_only_steps": run["head_only_steps"], "setting": setting.label, "selection_jets": select_jets, "validation_auc_by_setting": tried,
                    **{k: run[k] for k in ("validation_auc", "steps", "best_step", "epochs", "max_epochs", "stopped_early", "train_seconds", "wall_seconds", "params")},
                }
                if test:
                    metrics = evaluate_on_test(bench, run)
                    row.update({k: metrics[k] for k in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5", "predictions")})
                elif bench.data.dev:
                    row["dev_auc"] = evaluate_on_dev(bench, run)
                rows.append(row)
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    """Mean (and spread over seeds) per model and budget."""
    out = []
    for key in sorted({(r["budget"], r["model"]) for r in rows}, key=lambda k: (k[0], MODELS.index(k[1]))):
        group = [r for r in rows if (r["budget"], r["model"]) == key]
        first = group[0]
        row = {k: first[k] for k in ("budget", "model", "labelled_jets", "learning_rate", "head_only_steps", "params", "max_epochs")}
        row.update(seeds=len(group), stopped_early=sum(g["stopped_early"] for g in group))
        for metric in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5", "validation_auc", "dev_auc", "epochs", "steps", "train_seconds", "wall_seconds"):
            if metric in first:  # test metrics are absent in a validation-only pass, dev_auc in the final one
                row[metric], row[metric + "_std"] = mean_and_spread([g[metric] for g in group])
        out.append(row)
    return out


def ahead(ours: dict, peer: dict, metric: str) -> str:
    """PASS when ours leads by more than the seeds' combined spread; MISS otherwise; n/a with one seed."""
    if ours.get(metric + "_std") is None or peer.get(metric + "_std") is None:
        return "n/a (one seed: no spread)"
    return "PASS" if ours[metric] - peer[metric] > math.hypot(ours[metric + "_std"], peer[metric + "_std"]) else "MISS"


def labels_saved(jets: np.ndarray, auc: np.ndarray, target_auc: float, target_jets: int) -> tuple[float | None, str]:
    """target_jets / the labels the pretrained curve needs to reach target_auc (interpolated in log(jets)
    on its monotone envelope). Returns (factor, how): "interpolated", "at least" (reached at the
    smallest budget already) or "not reached" (None)."""
    order = np.argsort(jets)
    jets, auc = jets[order].astype(float), np.maximum.accumulate(np.asarray(auc, float)[order])
    if auc[-1] < target_auc:
        return None, "not reached"
    if auc[0] >= target_auc:
        return float(target_jets / jets[0]), "at least"
    i = int(np.searchsorted(auc, target_auc))  # first point at or above the target; i >= 1
    frac = (target_auc - auc[i - 1]) / max(auc[i] - auc[i - 1], 1e-12)
    needed = math.exp(math.log(jets[i - 1]) + frac * (math.log(jets[i]) - math.log(jets[i - 1])))
    return float(target_jets / needed), "interpolated"


@dataclass(frozen=True)
class LabelsSaved:
    """Benchmark 2's figure: the largest budget's labels over the labels the pretrained model needs
    for scratch's test AUC there."""

    line: str  # the printed verdict
    factor: float | None  # None: the pretrained curve never reaches that AUC
    at_least: bool  # the smallest budget already reaches it: a lower bound
    target_jets: int | None  # scratch's labels at the largest budget

    @property
    def figure(self) -> str:
        if self.factor is None:
            return "not reached"
        return f"{'at least ' if self.at_least else ''}{self.factor:.1f}x"


def labels_saved_line(summary: list[dict], kind: str = "pretrained") -> LabelsSaved:
    """Benchmark 2's goal: labels a pretrained model (`kind`: the released one, or the main job's)
    needs to match scratch at the largest budget."""
    name = SHORT_NAMES[kind]
    pre = [r for r in summary if r["model"] == kind]
    scr = [r for r in summary if r["model"] == "scratch"]
    if not pre or not scr:
        return LabelsSaved(f"labels saved: needs {name} and scratch runs", None, False, None)
    if len({r["labelled_jets"] for r in pre}) < 2:  # one budget compares the two models, it saves no labels
        return LabelsSaved("labels saved: needs at least two budgets", None, False, None)
    top = max(scr, key=lambda r: r["labelled_jets"])
    factor, how = labels_saved(np.array([r["labelled_jets"] for r in pre]), np.array([r["auc"] for r in pre]), top["auc"], top["labelled_jets"])
    target = f"scratch's test AUC {top['auc']:.4f} with {top['labelled_jets']} labels (budget {top['budget']:g})"
    if factor is None:
        return LabelsSaved(f"labels saved: MISS ({name} never reaches {target})", None, False, top["labelled_jets"])
    verdict = "PASS" if factor >= 10 else "MISS"
    aim = "reached" if factor >= 100 else "not reached"
    saved = LabelsSaved("", factor, how == "at least", top["labelled_jets"])
    return replace(saved, line=f"labels saved: {verdict} — {saved.figure} to reach {target} (floor 10x; aim 100x {aim})")


def goal_table(summary: list[dict], ours: str = "pretrained", peer: str = "part") -> str:
    """Per budget, `ours` against `peer` on test AUC and 1/eps_B at eps_S = 0.3 ("" when either is missing)."""
    rows = []
    for budget in sorted({r["budget"] for r in summary}):
        by = {r["model"]: r for r in summary if r["budget"] == budget}
        if ours in by and peer in by:
            a, b = by[ours], by[peer]
            rows.append({
                "budget": budget, "jets": a["labelled_jets"],
                "auc": f"{a['auc']:.4f} vs {b['auc']:.4f}: {ahead(a, b, 'auc')}",
                "rej": f"{a['rejection_at_0.3']:.0f} vs {b['rejection_at_0.3']:.0f}: {ahead(a, b, 'rejection_at_0.3')}",
            })
    if not rows:
        return ""
    versus = f"{SHORT_NAMES[ours]} vs {SHORT_NAMES[peer]}"
    return print_table(rows, [("budget", "labels", "g"), ("jets", "jets", "d"), ("auc", f"AUC: {versus}", ""), ("rej", f"1/eps_B @0.3: {versus}", "")])


SUMMARY_COLUMNS = [
    ("budget", "labels", "g"), ("labelled_jets", "jets", "d"), ("model", "model", ""), ("learning_rate", "lr (chosen)", "g"), ("head_only_steps", "head-first steps", "d"), ("seeds", "seeds", "d"),
    ("auc", "AUC", ".4f"), ("auc_std", "±", ".4f"), ("accuracy", "accuracy", ".4f"), ("rejection_at_0.3", "1/eps_B @0.3", ".0f"),
    ("rejection_at_0.3_std", "±", ".0f"), ("rejection_at_0.5", "1/eps_B @0.5", ".0f"), ("validation_auc", "val AUC", ".4f"),
    ("epochs", "epochs", ".1f"), ("max_epochs", "max epochs", ".0f"), ("stopped_early", "stopped early", "d"), ("wall_seconds", "wall s / run", ".0f"), ("params", "params", "d"),
]


VALIDATION_COLUMNS = [
    ("budget", "labels", "g"), ("labelled_jets", "jets", "d"), ("model", "model", ""), ("learning_rate", "lr (chosen)", "g"), ("head_only_steps", "head-first steps", "d"), ("seeds", "seeds", "d"),
    ("validation_auc", "val AUC (best evaluation)", ".4f"), ("validation_auc_std", "±", ".4f"), ("dev_auc", "dev AUC", ".4f"), ("dev_auc_std", "±", ".4f"),
    ("epochs", "epochs", ".1f"), ("stopped_early", "stopped early", "d"), ("wall_seconds", "wall s / run", ".0f"),
]


RESULTS_TITLE = "Test results (mean and spread over seeds)"
SELECTION_TITLE = "Selection (validation only)"


def selection_table(rows: list[dict]) -> str:
    """One row per model and budget: every configuration tried on validation and the one chosen;
    a budget above --select-at names the smaller budget whose choice it reuses."""
    seen, out = set(), []
    for r in rows:
        if (r["model"], r["budget"]) not in seen:
            seen.add((r["model"], r["budget"]))
            out.append({
                "model": r["model"], "jets": r["labelled_jets"], "selected_at": r["selection_jets"], "chosen": r["setting"],
                "auc": ", ".join(f"{s}: {a:.4f}" for s, a in r["validation_auc_by_setting"].items()),
            })
    columns = [("model", "model", ""), ("jets", "labelled jets", "d"), ("selected_at", "selected at (jets)", "d"),
               ("auc", "validation AUC by setting (first seed)", ""), ("chosen", "chosen", "")]
    return print_table(out, columns)


def search_record(args) -> dict:
    """What benchmarks 1 and 2 record of their configuration search: the grid and the refinement round."""
    return {"learning_rates": args.learning_rates, "refinement": {"head_first_steps": args.head_first_steps} if args.refine else None}


def wall_clock(bench: Bench, models: list[str]) -> dict:
    """Training wall-clock per model, over every finished run of it in --runs (the search included)."""
    totals = {}
    for kind in models:
        runs = [json.loads(p.read_text()) for p in bench.runs.glob(f"jets-*/{kind}-*/run.json")]
        totals[kind] = round(sum(r["wall_seconds"] for r in runs), 1)
    return totals


# ----- command line -----
def add_arguments(parser, budgets: list[float], models: list[str], choices: list[str]) -> None:
    """The arguments benchmarks 1 and 2 share (their runs and data are shared too); `models` is the
    default of --models, `choices` what it accepts."""
    parser.add_argument("--main-job-model", default=None, help=f"the main job's pretrained bundle, for --models main_job (default: {MAIN_JOB_MODEL} under FOUNDATION_HOME, where `foundation run` leaves it)")
    parser.add_argument("--recipe", default=RECIPE, help="fine-tuning recipe: mode, head, weight decay (the protocol sets its schedule, batch and learning rate)")
    parser.add_argument("--scratch-recipe", default=None, help="the from-scratch model's recipe (default: --recipe, reading the particles' features without their codes)")
    parser.add_argument("--budgets", type=float, nargs="+", default=budgets, help="fractions of the labelled training jets")
    parser.add_argument("--models", nargs="+", default=models, choices=choices, help=f"default: {' '.join(models)}; main_job: the main job's model (--main-job-model)")
    add_protocol_arguments(parser)


def add_protocol_arguments(parser) -> None:
    """How every model is trained and its configuration chosen, on which data and run cache: the
    arguments of add_arguments a study of one choice (benchmarks.tagging_choices) shares."""
    parser.add_argument("--pretrained", default="jet-foundation-small", help="pretrained bundle: a registered name, a folder or a hub repo id")
    parser.add_argument("--learning-rates", type=float, nargs="+", default=LEARNING_RATES, help="the grid every model's learning rate is chosen from")
    parser.add_argument("--refine", action="store_true", help="after the grid, one more configuration per model on validation: a head-only start (--head-first-steps) for pretrained models, a rate between the best and its better neighbour for models from scratch")
    parser.add_argument("--head-first-steps", type=int, default=200, help="--refine: the head-only steps a pretrained model tries")
    parser.add_argument("--select-at", type=float, default=None, help="budgets above this one reuse the configuration chosen at it (learning rate; with --refine, head-first or not); budgets up to it choose their own (default: every budget chooses)")
    parser.add_argument("--max-epochs", type=int, default=Protocol.max_epochs)
    parser.add_argument("--min-steps", type=int, default=Protocol.min_steps)
    parser.add_argument("--patience", type=int, default=Protocol.patience, help="evaluations without a better validation AUC before a run stops")
    add_data_arguments(parser)
    parser.add_argument("--runs", type=Path, default=None, help="cache of the individual runs, shared by benchmarks 1 and 2 (default: checkpoints/benchmarks/tagging-runs)")
    parser.add_argument("--records", type=Path, default=None, help=f"the runs' committed record (settings, validation and test figures; no weights), read where --runs lacks a run (default: {RECORDS.relative_to(ROOT)}; --tiny: OUT/records)")
    parser.set_defaults(seeds=[0, 1, 2])  # mean and spread need several seeds per point


def add_data_arguments(parser) -> None:
    """The labelled jets of benchmarks 1 and 2, shared with the linear probe: generated or given,
    split once into --data-dir."""
    parser.add_argument("--data", nargs="+", default=None, help="labelled training jets (default: generated with --train-seed)")
    parser.add_argument("--test-data", nargs="+", default=None, help="independent test jets (required with --data)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where the data are made and split (default: checkpoints/benchmarks/tagging-data)")
    parser.add_argument("--train-seed", type=int, default=TRAIN_SEED)
    parser.add_argument("--test-seed", type=int, default=TEST_SEED)
    parser.add_argument("--train-jets-per-class", type=int, default=None, help="generated labelled pool (default 12500, 90%% of it for training; --tiny: 100)")
    parser.add_argument("--test-jets-per-class", type=int, default=None, help="generated test sample (default 5000; --tiny: 50)")
    parser.add_argument("--validation-only", action="store_true", help="train, select and compare on validation jets only: no test jets read, no results page (for choosing settings before the final figures)")
    parser.add_argument("--dev-data", nargs="+", default=None, help="--validation-only: an independent development sample the chosen runs are also scored on (default with generated data: generated with --dev-seed)")
    parser.add_argument("--dev-seed", type=int, default=DEV_SEED)
    parser.add_argument("--dev-jets-per-class", type=int, default=None, help="generated development sample (default 2500; --tiny: 50)")


def prepare(parser, argv) -> tuple:
    args = parser.parse_args(argv)
    if any(not 0 < b <= 1 for b in args.budgets):
        fail(f"--budgets: fractions in (0, 1], got {args.budgets}")
    if len(set(args.seeds)) != len(args.seeds):
        fail(f"--seeds: repeated seed in {args.seeds}")
    if any(lr <= 0 for lr in args.learning_rates):
        fail(f"--learning-rates: must be positive, got {args.learning_rates}")
    for option in ("max_epochs", "min_steps", "patience", "head_first_steps"):
        if getattr(args, option) <= 0:
            fail(f"--{option.replace('_', '-')}: must be positive")
    check_data_arguments(args)
    for option in ("recipe", "scratch_recipe"):
        path = getattr(args, option)
        if path is not None and not Path(path).exists():
            fail(f"--{option.replace('_', '-')} {path}: no such file")
    check_refinement(args)
    check_main_job_model(args)
    args.runs = args.runs or (args.out / "runs" if args.tiny else Path("checkpoints/benchmarks/tagging-runs"))
    args.records = args.records or (args.out / "records" if args.tiny else RECORDS)
    protocol = TINY_PROTOCOL if args.tiny else Protocol(max_epochs=args.max_epochs, min_steps=args.min_steps, patience=args.patience)
    bench = Bench(prepare_data(args), protocol, args.runs, args.recipe, args.pretrained, args.tiny, args.main_job_model, args.scratch_recipe, args.records)
    return args, bench


def check_refinement(args) -> None:
    """--refine tries a head-only start: a recipe that already has one would only repeat it."""
    if not args.refine:
        return
    from foundation.pipelines.finetune import load_finetune_recipe

    recipe = load_finetune_recipe(args.recipe)
    if recipe.head_only_steps:
        fail(f"--refine: --recipe {args.recipe} already trains the head first (head_only_steps); the refinement round would repeat it")
    if recipe.mode == "frozen":
        fail(f"--refine: --recipe {args.recipe} has mode frozen, which trains the head alone throughout; a head-only start means nothing there")


def check_main_job_model(args) -> None:
    """--main-job-model's default, and a bundle there before any run starts (only with --models main_job)."""
    if "main_job" not in args.models:
        if args.main_job_model is not None:
            fail("--main-job-model: given without main_job in --models")
        return
    from foundation.hub import BundleError, bundle_folder
    from foundation.recipes import under_home

    args.main_job_model = args.main_job_model or under_home(MAIN_JOB_MODEL)
    try:
        bundle_folder(args.main_job_model)
    except BundleError as err:
        fail(f"--main-job-model: {err} (`foundation run` writes the main job's model to {under_home(MAIN_JOB_MODEL)})")


def check_data_arguments(args) -> None:
    """Defaults of add_data_arguments' sample sizes and folder (smaller with --tiny), and their checks."""
    if args.train_jets_per_class is None:
        args.train_jets_per_class = 100 if args.tiny else 12_500
    if args.test_jets_per_class is None:
        args.test_jets_per_class = 50 if args.tiny else 5_000
    if args.dev_jets_per_class is None:
        args.dev_jets_per_class = 50 if args.tiny else 2_500
    for option in ("train_jets_per_class", "test_jets_per_class", "dev_jets_per_class"):
        if getattr(args, option) <= 0:
            fail(f"--{option.replace('_', '-')}: must be positive")
    args.data_dir = args.data_dir or (args.out / "data" if args.tiny else Path("checkpoints/benchmarks/tagging-data"))


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "tagging")
    add_arguments(parser, [0.01, 0.1, 1.0], ["pretrained", "scratch", "part"], MODELS)
    args, bench = prepare(parser, argv)
    if args.validation_only:
        return validation_pass(bench, args, args.models)
    rows = run_models(bench, args, args.models)
    summary = summarise(rows)
    table = print_table(summary, SUMMARY_COLUMNS)
    selection = selection_table(rows)
    goal = goal_table(summary)
    over_main_job = goal_table(summary, peer="main_job")
    saved = labels_saved_line(summary).line
    print(saved, flush=True)
    wall = wall_clock(bench, args.models)
    print("training wall-clock per model, every run (learning-rate search included): " + ", ".join(f"{k} {v / 3600:.2f} h" for k, v in wall.items()), flush=True)
    plots = _plot_rocs(args.out, rows)
    tables = {RESULTS_TITLE: table, SELECTION_TITLE: selection}
    if goal:
        tables["Goal: pretrained ahead of ParT beyond the seed spread"] = goal
    if over_main_job:
        tables["Goal: the released model ahead of the main job's model beyond the seed spread"] = over_main_job
    headline = tagging_headline(summary, max(args.budgets))
    write_results(args, "tagging", rows, {
        "summary": summary, "tables": tables, "headline": headline, "labels_saved": saved, "wall_clock_seconds": wall,
        "data": bench.data.record, "protocol": asdict(bench.protocol), **search_record(args), "plots": plots,
    }, models=measured_bundles(bench, args.models))
    return summary


def tagging_headline(summary: list[dict], budget: float) -> dict | None:
    """README's row: the pretrained model's test AUC at `budget` beside ParT's, and at how many
    budgets it is ahead of ParT beyond the seeds' spread on both AUC and 1/eps_B at eps_S = 0.3."""
    by = {r["model"]: r for r in summary if r["budget"] == budget}
    if "pretrained" not in by:
        return None
    ours = by["pretrained"]
    metric = f"test AUC, {ours['labelled_jets']} labels"
    figure = f"{ours['auc']:.4f}" + (f" ± {ours['auc_std']:.4f}" if ours.get("auc_std") is not None else "")
    if "part" not in by:
        return {"metric": metric, "ours": figure, "peer": None}
    compared = [
        all(ahead(b["pretrained"], b["part"], m) == "PASS" for m in ("auc", "rejection_at_0.3"))
        for b in ({r["model"]: r for r in summary if r["budget"] == x} for x in sorted({r["budget"] for r in summary}))
        if "pretrained" in b and "part" in b
    ]
    metric += f"; ahead of ParT beyond the seed spread on AUC and 1/eps_B at {sum(compared)} of {len(compared)} label budgets"
    peer = by["part"]
    peer_figure = f"{peer['auc']:.4f}" + (f" ± {peer['auc_std']:.4f}" if peer.get("auc_std") is not None else "")
    return {"metric": metric, "ours": figure, "peer": f"ParT {peer_figure}"}


def measured_bundles(bench: Bench, models: list[str]) -> list[str]:
    """The pretrained bundles the page's figures measure (scratch uses the released one's shape only)."""
    return [bench.bundle(kind) for kind in PRETRAINED_KINDS if kind in models]


def validation_pass(bench: Bench, args, models: list[str]) -> list[dict]:
    """Train, select and compare on validation jets only: for choosing settings (a backbone, a
    recipe) before the final figures. The test sample is not read and no results page is written;
    the runs are the cache's, so the full command later reuses them."""
    rows = run_models(bench, args, models, test=False)
    summary = summarise(rows)
    print("validation only (no test jets read, no results page)" + (f"; dev AUC: the kept weights on the development sample {bench.data.dev}" if bench.data.dev else "") + ":", flush=True)
    print_table(summary, VALIDATION_COLUMNS)
    selection_table(rows)
    return summary


def _plot_rocs(out: Path, rows: list[dict]) -> list[str]:
    """One ROC plot per budget with every model (first seed), from the saved test predictions."""
    from scipy.special import softmax

    from foundation.evaluation.plots import plot_roc

    paths = []
    for budget in sorted({r["budget"] for r in rows}):
        curves = {}
        for r in rows:
            if r["budget"] == budget and r["seed"] == rows[0]["seed"]:
                pred = np.load(r["predictions"])
                signal = list(pred["class_names"]).index("top")
                curves[NAMES[r["model"]]] = (pred["labels"] == signal, softmax(pred["logits"], axis=-1)[:, signal])
        paths.append(str(plot_roc(curves, out / f"roc-budget-{budget:g}.png")))
    return paths


if __name__ == "__main__":
    run_script(main)
