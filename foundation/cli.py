"""The `foundation` command. Thin: parse arguments, load the recipe, call the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console
from typer.core import TyperGroup

from foundation.errors import (
    ConfigError,
    DataFormatError,
    InputError,
    TrainingDiverged,
    TrainingInterrupted,
    one_line,
)
from foundation.hub import BundleError
from foundation.outputs import check_new_output, exit_on_sigterm, prepare_run_folder


def spread_values(args: list[str], flags: set[str]) -> list[str]:
    """--data a.h5 b.h5 --out x -> --data a.h5 --data b.h5 --out x, for the repeatable options `flags`
    (typer has no nargs for options); repeated flags pass through unchanged."""
    out: list[str] = []
    flag, taken = None, 0  # the repeatable option being read, and how many values it has had
    for arg in args:
        if arg.startswith("-"):
            name, has_value, _ = arg.partition("=")
            flag, taken = (name, int(bool(has_value))) if name in flags else (None, 0)
        elif flag is not None:
            if taken:
                out.append(flag)
            taken += 1
        out.append(arg)
    return out


class SeveralValuesGroup(TyperGroup):
    """Commands whose repeatable options also take several values after one flag (spread_values).
    Commands with positional arguments keep click's parsing, where the two would be ambiguous."""

    def get_command(self, ctx, name):
        command = super().get_command(ctx, name)
        if command is None or isinstance(command, TyperGroup) or getattr(command, "_spreads_values", False):
            return command
        # (typer ships its own copy of click: parameters are told apart by param_type_name)
        flags = {opt for p in command.params if p.param_type_name == "option" and p.multiple for opt in p.opts}
        if flags and not any(p.param_type_name == "argument" for p in command.params):
            parse_args = command.parse_args
            command.parse_args = lambda ctx, args: parse_args(ctx, spread_values(list(args), flags))
        command._spreads_values = True
        return command


app = typer.Typer(
    cls=SeveralValuesGroup, help="Foundation models for particle jets: data, tokenizer, pretraining, fine-tuning.", no_args_is_help=True, pretty_exceptions_enable=False
)
data_app = typer.Typer(cls=SeveralValuesGroup, help="Generate, convert and inspect jet data.", no_args_is_help=True)
tokenizer_app = typer.Typer(cls=SeveralValuesGroup, help="Train, evaluate and apply the VQ-VAE particle tokenizer.", no_args_is_help=True)
anomaly_app = typer.Typer(cls=SeveralValuesGroup, help="Anomaly detection: likelihood scores (unsupervised) and CWoLa (weakly supervised).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")
app.add_typer(anomaly_app, name="anomaly")

console = Console(stderr=True, soft_wrap=True)  # messages stay one line: long paths are not broken up
VERBOSE = {"on": False}


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and full tracebacks.")):
    from foundation.pipelines.common import setup_logging

    VERBOSE["on"] = verbose
    setup_logging(verbose)


OVERWRITE_FILE_HELP = "replace the output if it exists (without it an existing output is refused)"
OVERWRITE_RUN_HELP = "remove an existing run in the run folder first (without --resume or this, an existing run is refused)"
SET_HELP = "recipe override KEY=VALUE (dotted key, YAML value), repeatable: --set training.max_steps=3000"


def _overrides(pairs: list[str] | None) -> dict:
    """--set training.max_steps=3000 --set data.files=[a.h5,b.h5] -> {"training.max_steps": 3000, ...}"""
    import yaml

    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise InputError(f"--set {pair}: expected KEY=VALUE (a dotted key, a YAML value)")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise InputError(f"--set {pair}: not a valid YAML value ({getattr(err, 'problem', None) or one_line(err)})") from None
    return out


def _check_resume(resume: bool, recipe, config: Path) -> None:
    """Before any data is read: the run to resume has a readable checkpoint of the same micro-batch size."""
    if resume:
        from foundation.training.checkpoint import check_resume

        check_resume(recipe.training.output_dir, recipe.training.micro_batch_size, str(config))


def _print_json(data: dict) -> None:
    from foundation.pipelines.common import json_safe

    typer.echo(json.dumps(json_safe(data), indent=2))


# ---------------------------------------------------------------- data
@data_app.command("generate")
def data_generate(
    process: str = typer.Option(..., help="top (hadronic ttbar, truth-matched) or qcd (hard QCD dijets)"),
    jets: int = typer.Option(..., "--jets", help="number of jets"),
    out: Path = typer.Option(..., help="output file (.h5, canonical layout)"),
    seed: int = typer.Option(0, help="run seed; the same seed gives the same jets"),
    workers: int = typer.Option(0, help="worker processes (0: one per core)"),
    max_particles: int = typer.Option(200, help="constituents kept per jet (hardest first)"),
    pt_min: float = typer.Option(550.0, help="jet pT window, lower edge [GeV]"),
    pt_max: float = typer.Option(650.0, help="jet pT window, upper edge [GeV]"),
    chunk_jets: int = typer.Option(250, help="jets per work unit (each has its own seed)"),
    shard: int | None = typer.Option(None, help="write only shard I of --num-shards (0-based) of the --jets jets: disjoint seeds, the shards together equal the unsharded file"),
    num_shards: int | None = typer.Option(None, help="number of shards the run is split into (one per SLURM array task or worker)"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
):
    """Generate jets with Pythia 8 + FastJet (top tagging landscape recipe, particle level)."""
    from foundation.data.generation import GeneratorConfig, generate

    if (shard is None) != (num_shards is None):
        raise InputError("--shard and --num-shards go together")
    if num_shards is not None and not 0 <= shard < num_shards:
        raise InputError(f"--shard {shard}: must be in 0..{num_shards - 1} for --num-shards {num_shards}")
    if num_shards is not None and num_shards > -(-jets // chunk_jets):
        raise InputError(f"--num-shards {num_shards}: more shards than chunks of --chunk-jets {chunk_jets} in --jets {jets}; lower --chunk-jets")
    check_new_output(out, overwrite)
    config = GeneratorConfig(process=process, max_particles=max_particles, jet_pt_min=pt_min, jet_pt_max=pt_max)
    sharding = None if num_shards is None else (shard, num_shards)
    path = generate(config, jets, out, seed=seed, workers=workers or os.cpu_count() or 1, chunk_jets=chunk_jets, shard=sharding)
    console.print(f"[green]wrote {process} jets{'' if sharding is None else f' (shard {shard} of {num_shards})'} to {path}")


@data_app.command("convert")
def data_convert(
    inputs: list[Path] = typer.Argument(..., help="input file(s), folder or glob: top tagging HDF5, JetClass ROOT, canonical"),
    out: Path = typer.Option(..., help="output .h5 file, or a folder when --shard-jets is given"),
    max_particles: int | None = typer.Option(None, help="constituents kept per jet (default: as in the input)"),
    shard_jets: int | None = typer.Option(None, help="write shards of this many jets into the folder OUT"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP + "; a shard folder is emptied of its shards first"),
    drop_invalid: bool = typer.Option(False, help="drop jets that cannot be real (negative energy, mask against momenta, NaN or > 1e5 GeV momenta) and log how many, instead of refusing the input"),
):
    """Convert public formats to the canonical layout."""
    from foundation.data.convert import convert

    check_new_output(out, overwrite)
    if overwrite and shard_jets is not None and out.is_dir():
        for old in out.glob("shard-*.h5"):
            old.unlink()  # no shard of the old conversion stays beside the new ones
    paths = convert([str(p) for p in inputs], out, max_particles=max_particles, shard_jets=shard_jets, drop_invalid=drop_invalid)
    console.print(f"[green]wrote {', '.join(str(p) for p in paths)}")


@data_app.command("inspect")
def data_inspect(
    files: list[Path] = typer.Argument(..., help="jet file(s) or folder, any supported format"),
    plots: Path | None = typer.Option(None, help="folder for PNG histograms per class"),
    limit: int = typer.Option(50_000, help="inspect at most this many jets"),
):
    """Counts per class, jet mass / pT / multiplicity summaries, and histograms."""
    from foundation.pipelines.inspect import inspect_jets

    report = inspect_jets([str(f) for f in files], plots_dir=plots, limit=limit)
    _print_summary_table(report)
    _print_json(report)


def _print_summary_table(report: dict) -> None:
    from rich.table import Table

    table = Table(title=f"{report['jets_total']} jets ({', '.join(report['formats'])})")
    for col in ("class", "jets", "mass median [GeV]", "mass 16-84% [GeV]", "pT median [GeV]", "multiplicity mean"):
        table.add_column(col)
    for name, c in report["classes"].items():
        table.add_row(
            name,
            str(c["jets"]),
            f"{c['mass']['median']:.1f}",
            f"{c['mass']['p16']:.1f} - {c['mass']['p84']:.1f}",
            f"{c['pt']['median']:.1f}",
            f"{c['multiplicity']['mean']:.1f}",
        )
    console.print(table)


# ---------------------------------------------------------------- tokenizer
SEARCH_HELP = ("codes tried for each of the hardest particles when encoding (default: the tokenizer's "
               "encode_search_candidates; 1 = nearest codes, fastest)")
SEARCH_PARTICLES_HELP = "how many of each jet's hardest particles the search tries (default: the tokenizer's encode_search_particles)"


@tokenizer_app.command("train")
def tokenizer_train(
    config: Path = typer.Option(..., help="recipe: a file, or a name such as small (tokenizers/small.yaml, installed)"),
    output: Path | None = typer.Option(None, help="run folder (default: the recipe's training.output_dir)"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint in the run folder"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_RUN_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
):
    """Train the VQ-VAE tokenizer (on generated jets unless the recipe names files)."""
    from foundation.pipelines.tokenizer import load_tokenizer_recipe, train_tokenizer

    overrides = _overrides(set_)
    if output:
        overrides["training.output_dir"] = str(output)
    recipe, model_config = load_tokenizer_recipe(config, overrides)
    prepare_run_folder(recipe.training.output_dir, resume, overwrite)
    _check_resume(resume, recipe, config)
    path = train_tokenizer(recipe, model_config, resume=resume)
    console.print(f"[green]tokenizer saved to {path}")


@tokenizer_app.command("evaluate")
def tokenizer_evaluate(
    tokenizer: Path = typer.Option(..., help="tokenizer folder (or a run folder holding tokenizer/)"),
    data: list[Path] = typer.Option(..., help="jet file(s), any supported format"),
    plots: Path | None = typer.Option(None, help="folder for code-usage and original-vs-decoded plots"),
    limit: int | None = typer.Option(None, help="evaluate at most this many jets"),
    out: Path | None = typer.Option(None, help="also write the metrics JSON here"),
    search_candidates: int | None = typer.Option(None, help=SEARCH_HELP),
    search_particles: int | None = typer.Option(None, help=SEARCH_PARTICLES_HELP),
):
    """Codebook usage, perplexity, feature and jet mass / pT resolution of decoded jets (JSON)."""
    from foundation.evaluation.tokenization import evaluate_tokenizer
    from foundation.pipelines.common import write_json
    from foundation.pipelines.tokenizer import load_tokenizer

    metrics = evaluate_tokenizer(load_tokenizer(tokenizer, search_candidates, search_particles), [str(d) for d in data], limit=limit, plots_dir=plots)
    if out:
        write_json(out, metrics)
    _print_json(metrics)


@tokenizer_app.command("encode")
def tokenizer_encode(
    tokenizer: Path = typer.Option(..., help="tokenizer folder"),
    data: list[Path] = typer.Option(..., help="jet file(s), any supported format"),
    out: Path = typer.Option(..., help="token file to write (.h5)"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
    batch_size: int = typer.Option(512, help="jets per batch"),
    search_candidates: int | None = typer.Option(None, help=SEARCH_HELP),
    search_particles: int | None = typer.Option(None, help=SEARCH_PARTICLES_HELP),
):
    """Write the token sequences of a whole data set (pretraining reads this file)."""
    from foundation.pipelines.tokenizer import encode_to_file, load_tokenizer

    check_new_output(out, overwrite)
    path = encode_to_file(load_tokenizer(tokenizer, search_candidates, search_particles), [str(d) for d in data], out, batch_size=batch_size)
    console.print(f"[green]wrote token sequences to {path}")


# ---------------------------------------------------------------- pretraining
@app.command("pretrain")
def pretrain_command(
    config: Path = typer.Option(..., help="recipe: a file, or a name such as small (pretrain/small.yaml, installed)"),
    output: Path | None = typer.Option(None, help="run folder (default: the recipe's training.output_dir)"),
    tokenizer: Path | None = typer.Option(None, help="tokenizer folder (default: the recipe's `tokenizer`)"),
    from_: str | None = typer.Option(None, "--from", help="pretrained bundle (folder or hub id) to continue training; its tokenizer and shape are kept"),
    deepspeed: Path | None = typer.Option(None, help="DeepSpeed JSON, e.g. launch/deepspeed/zero2.json"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint in the run folder"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_RUN_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
):
    """Pretrain the jet transformer (next-token and/or masked particle modelling).

    Multi-GPU / multi-node: launch this command with `accelerate launch` or `torchrun`
    (see launch/); the same recipe runs on one CPU, several processes or DeepSpeed ZeRO.
    With --from, training continues from a bundle; `--set model.num_generation_classes=2`
    then adds class start tokens, making it a class-conditional generator.
    """
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    overrides = _overrides(set_)
    if from_:
        overrides["init_from"] = from_
    if output:
        overrides["training.output_dir"] = str(output)
    if tokenizer:
        overrides["tokenizer"] = str(tokenizer)
    if deepspeed:
        overrides["training.deepspeed"] = str(deepspeed)
    recipe = load_pretrain_recipe(config, overrides)
    prepare_run_folder(recipe.training.output_dir, resume, overwrite)
    _check_resume(resume, recipe, config)
    bundle = pretrain(recipe, resume=resume)
    console.print(f"[green]model bundle saved to {bundle}")


# ---------------------------------------------------------------- fine-tuning and evaluation
@app.command("finetune")
def finetune_command(
    config: Path = typer.Option(..., help="recipe: a file, or a name such as top_tagging (finetune/top_tagging.yaml, installed)"),
    from_: str | None = typer.Option(None, "--from", help="pretrained bundle (folder, registered name or hub repo id), or 'scratch' for the same architecture with random weights"),
    mode: str | None = typer.Option(None, help="full | frozen | layerwise (default: the recipe's)"),
    output: Path | None = typer.Option(None, help="run folder (default: the recipe's training.output_dir)"),
    train_limit: int | None = typer.Option(None, help="use only this many labelled training jets"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint in the run folder"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_RUN_HELP),
    set_: list[str] | None = typer.Option(None, "--set", help=SET_HELP),
):
    """Fine-tune a tagging head on a pretrained model; writes a bundle, metrics.json and roc.png."""
    from foundation.pipelines.finetune import finetune, load_finetune_recipe

    overrides: dict = _overrides(set_)
    if from_ == "scratch":
        overrides["init"] = "scratch"
    elif from_:
        overrides["model"] = from_
    if mode:
        overrides["mode"] = mode
    if output:
        overrides["training.output_dir"] = str(output)
    if train_limit is not None:  # 0 is refused by the recipe's check, not taken as "no limit"
        overrides["data.train_limit"] = train_limit
    recipe = load_finetune_recipe(config, overrides)
    prepare_run_folder(recipe.training.output_dir, resume, overwrite)
    _check_resume(resume, recipe, config)
    bundle = finetune(recipe, resume=resume)
    console.print(f"[green]fine-tuned model saved to {bundle}")
    metrics = json.loads((bundle.parent / "metrics.json").read_text())
    console.print({k: metrics[k] for k in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5") if k in metrics})


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Option(..., help="fine-tuned bundle (folder, registered name or hub repo id)"),
    data: list[Path] = typer.Option(..., help="jet file(s): canonical, top tagging landscape HDF5 or JetClass ROOT"),
    out: Path | None = typer.Option(None, help="folder for metrics.json and roc.png"),
    signal_class: str | None = typer.Option(None, help="signal class for the ROC (default: the last class)"),
    background_class: str | None = typer.Option(None, help="background class (default: the first, for two classes)"),
    limit: int | None = typer.Option(None, help="evaluate at most this many jets"),
    revision: str | None = typer.Option(None, help="hub revision to pin"),
    class_map: list[str] | None = typer.Option(None, help="FILE_CLASS=MODEL_CLASS, repeatable (e.g. QCD=qcd Tbqq=top for JetClass); other classes are skipped"),
):
    """AUC, accuracy, background rejection 1/eps_B at eps_S = 0.3 and 0.5, ROC plot, JSON."""
    from foundation.pipelines.finetune import evaluate_tagger

    mapping = None
    if class_map:
        bad = [m for m in class_map if m.count("=") != 1]
        if bad:
            raise typer.BadParameter(f"expected FILE_CLASS=MODEL_CLASS, got {bad[0]!r}", param_hint="--class-map")
        mapping = dict(m.split("=") for m in class_map)
    metrics = evaluate_tagger(model, [str(d) for d in data], out_dir=out, signal_class=signal_class, background_class=background_class, limit=limit, revision=revision, class_map=mapping)
    _print_json(metrics)


# ---------------------------------------------------------------- generation
@app.command("generate")
def generate_command(
    model: str = typer.Option(..., help="pretrained bundle with a next-token head"),
    jets: int = typer.Option(..., help="number of jets"),
    out: Path = typer.Option(..., help="output file (canonical .h5)"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
    class_name: list[str] | None = typer.Option(None, "--class", help="class to generate (class-conditional models); repeat for an even mix, or give fractions: --class qcd=0.7 --class top=0.3"),
    temperature: float = typer.Option(1.0, help="sampling temperature"),
    top_k: int | None = typer.Option(None, help="sample among the k most likely tokens"),
    top_p: float | None = typer.Option(None, help="nucleus sampling: smallest set with probability >= p"),
    batch_size: int = typer.Option(256, help="jets sampled together"),
    seed: int = typer.Option(0, help="sampling seed"),
    guidance: float = typer.Option(1.0, help="classifier-free guidance with --class: > 1 leans each token towards its class (1: none)"),
    jet_pt_range: tuple[float, float] | None = typer.Option(
        None, help="keep only jets with LOW <= pT < HIGH GeV (the training data's selection, e.g. 550 650), sampling on until there are enough"
    ),
):
    """Sample jets autoregressively (key/value cache) and decode them into particles."""
    from foundation.pipelines.generate import generate_jets

    check_new_output(out, overwrite)
    path = generate_jets(model, jets, out, _class_mix(class_name), temperature, top_k, top_p, batch_size, seed, guidance=guidance, jet_pt_range=jet_pt_range)
    console.print(f"[green]wrote {jets} generated jets to {path}")


def _class_mix(values: list[str] | None) -> dict[str, float] | None:
    """--class NAME[=FRACTION] ... -> {name: fraction} (an even mix where no fraction is given)."""
    if not values:
        return None
    mix = {}
    for value in values:
        name, _, fraction = value.partition("=")
        try:
            mix[name] = float(fraction) if fraction else 1.0
        except ValueError:
            raise InputError(f"--class {value}: expected NAME or NAME=FRACTION") from None
    return mix


@app.command("evaluate-generation")
def evaluate_generation_command(
    generated: list[Path] = typer.Option(..., help="generated jets"),
    reference: list[Path] = typer.Option(..., help="real jets to compare with"),
    reference_class: str | None = typer.Option(None, help="compare with this class of the reference only"),
    plots: Path | None = typer.Option(None, help="folder for overlay plots and the metrics JSON"),
    raw_reference: bool = typer.Option(False, help="compare with the reference as is (default: massless constituents, cut to the generated width, as tokens can represent them)"),
    limit: int = typer.Option(50_000, help="jets used from each side"),
):
    """W1 of jet mass, pT, multiplicity and particle features, FPD and KPD, each beside the real-vs-real floor."""
    from rich.table import Table

    from foundation.pipelines.generate import evaluate_generation

    rows = evaluate_generation([str(g) for g in generated], [str(r) for r in reference], plots, reference_class, limit, raw_reference)
    table = Table(title="generated vs reference (floor: reference half vs half)")
    for col in ("metric", "value", "floor"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["metric"], f"{r['value']:.4g} ± {r['error']:.2g}", f"{r['floor']:.4g} ± {r['floor_error']:.2g}")
    console.print(table)
    _print_json({"rows": rows})


# ---------------------------------------------------------------- anomaly detection
@anomaly_app.command("score")
def anomaly_score_command(
    model: str = typer.Option(..., help="pretrained bundle with a next-token head"),
    data: list[Path] = typer.Option(..., help="jets to score"),
    out: Path = typer.Option(..., help="scores file (.h5): nll, nll_per_token, label, index"),
    signal_class: str | None = typer.Option(None, help="if the data are labelled: AUC and SIC for this class as the anomaly"),
    plots: Path | None = typer.Option(None, help="folder for ROC and SIC plots"),
    limit: int | None = typer.Option(None, help="score at most this many jets"),
    reference: str | None = typer.Option(None, help="model pretrained on the unlabelled data: also score the likelihood ratio to it"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
):
    """Unsupervised: each jet's negative log-likelihood under the background model (and the ratio to a reference)."""
    from foundation.pipelines.anomaly import score_file

    check_new_output(out, overwrite)
    _print_json(score_file(model, [str(d) for d in data], out, signal_class, plots, limit=limit, reference=reference))


@anomaly_app.command("cwola")
def anomaly_cwola_command(
    config: Path = typer.Option(..., help="fine-tuning recipe (finetune/cwola.yaml): model, data, training"),
    fractions: tuple[float, float] = typer.Option((0.3, 0.05), help="signal fractions of mixed samples A and B"),
    from_: str | None = typer.Option(None, "--from", help="pretrained bundle (or 'scratch')"),
    output: Path | None = typer.Option(None, help="run folder"),
    plots: Path | None = typer.Option(None, help="folder for the SIC plot"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_RUN_HELP),
):
    """Weakly supervised: learn sample A vs B (different, unknown signal fractions); score true labels."""
    from foundation.pipelines.anomaly import cwola
    from foundation.pipelines.finetune import load_finetune_recipe

    overrides: dict = {}
    if from_ == "scratch":
        overrides["init"] = "scratch"
    elif from_:
        overrides["model"] = from_
    if output:
        overrides["training.output_dir"] = str(output)
    recipe = load_finetune_recipe(config, overrides)
    prepare_run_folder(recipe.training.output_dir, False, overwrite)
    _print_json(cwola(recipe, tuple(fractions), plots))


# ---------------------------------------------------------------- embeddings and the hub
@app.command("embed")
def embed_command(
    model: str = typer.Option(..., help="bundle (folder, registered name or hub repo id)"),
    data: list[Path] = typer.Option(..., help="jets to embed"),
    out: Path = typer.Option(..., help="output .h5 or .parquet"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
    per_particle: bool = typer.Option(False, help="token-level embeddings instead of one per jet"),
    batch_size: int = typer.Option(256, help="jets per batch"),
    limit: int | None = typer.Option(None, help="embed at most this many jets"),
    revision: str | None = typer.Option(None, help="hub revision to pin"),
):
    """Per-jet embeddings (mean-pooled backbone output) with labels, source_file and row, for numpy/h5py/pandas/awkward."""
    from foundation.pipelines.embed import embed

    check_new_output(out, overwrite)
    path = embed(model, [str(d) for d in data], out, per_particle, batch_size, limit, revision)
    console.print(f"[green]wrote embeddings to {path}")


@app.command("predict")
def predict_command(
    model: str = typer.Option(..., help="fine-tuned tagger bundle (folder, registered name or hub repo id)"),
    data: list[Path] = typer.Option(..., help="jets to score (labels, if any, are not used)"),
    out: Path = typer.Option(..., help="output .h5, .parquet or .csv"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_FILE_HELP),
    batch_size: int = typer.Option(256, help="jets per batch"),
    limit: int | None = typer.Option(None, help="score at most this many jets"),
    revision: str | None = typer.Option(None, help="hub revision to pin"),
):
    """Per-jet class scores of a tagger: one row per jet with source_file, row and score_<class>."""
    from foundation.pipelines.predict import predict_file

    check_new_output(out, overwrite)
    path = predict_file(model, [str(d) for d in data], out, batch_size, limit, revision)
    console.print(f"[green]wrote per-jet scores to {path}")


@app.command("models")
def models_command(as_json: bool = typer.Option(False, "--json", help="print JSON instead of a table")):
    """Registered model names (--model NAME, --from NAME, load_bundle(NAME)): version, whether here, and where."""
    from foundation.registry import listing

    rows = listing()
    if as_json:
        _print_json({"models": rows})
        return
    from rich.table import Table

    table = Table("name", "version", "here", "where")
    for row in rows:
        table.add_row(row["name"], f"v{row['version']}", "yes" if row["local"] else "no", row["where"])
    Console(soft_wrap=True).print(table)


@app.command("release")
def release_command(
    run: Path = typer.Option(..., help="a finished pretraining run folder (e.g. checkpoints/release/pretrain)"),
    name: str = typer.Option("jet-foundation-small", help="the registered name it becomes (foundation models)"),
    overwrite: bool = typer.Option(False, help="replace the release already in the name's folder"),
):
    """Make a finished pretraining run the registered model NAME: its bundle, a model card and the
    training curve, in the folder the registry ships (checkpoints/NAME/); launch/release.sh runs it all."""
    from foundation.pipelines.release import publish

    console.print(f"[green]released {name}: {publish(run, name, overwrite)}")


@app.command("push")
def push_command(
    model: Path = typer.Option(..., help="bundle folder to upload"),
    repo: str = typer.Option(..., help="hub repo id, owner/name"),
    private: bool = typer.Option(False, help="create the repo private"),
):
    """Upload a verified model bundle to the Hugging Face hub (needs HF_TOKEN or `hf auth login`)."""
    from foundation.hub import push_bundle

    console.print(f"[green]uploaded: {push_bundle(model, repo, private)}")


# ---------------------------------------------------------------- the main job
@app.command("run")
def run_command(
    quick: bool = typer.Option(False, help="tiny recipes and a few hundred jets: a few minutes"),
    output: Path | None = typer.Option(None, help="job folder (default: $FOUNDATION_HOME/main or main-quick; FOUNDATION_HOME defaults to ./checkpoints)"),
    recipes: Path | None = typer.Option(None, help="folder holding tokenizers/, pretrain/ and finetune/ (default: the installed recipes)"),
    restart: bool = typer.Option(False, help="forget finished stages and run everything again"),
):
    """The whole chain on generated jets: data, tokenizer, pretraining, tagging, generation, anomaly scores, embeddings."""
    import shutil

    from foundation.data.defaults import foundation_home
    from foundation.pipelines.main_job import FULL, QUICK, MainJob
    from foundation.recipes import recipe_roots

    output = output or foundation_home() / ("main-quick" if quick else "main")
    recipes = recipes or next(iter(recipe_roots()), Path("."))
    if restart and output.exists():
        shutil.rmtree(output)
    job = MainJob(QUICK if quick else FULL, output, recipes)
    job.run()
    console.print((output / "summary.md").read_text())
    console.print(f"[green]everything is in {output}/ (summary.md, stages.json, plots/, model bundles)")


@anomaly_app.command("background")
def anomaly_background_command(
    config: Path = typer.Option(..., help="recipe, e.g. finetune/anomaly_background.yaml"),
    from_: str | None = typer.Option(None, "--from", help="pretrained bundle to continue from"),
    output: Path | None = typer.Option(None, help="run folder"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint"),
    overwrite: bool = typer.Option(False, help=OVERWRITE_RUN_HELP),
):
    """Train the background model for `anomaly score`: next-token training on background jets only."""
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    overrides: dict = {}
    if from_:
        overrides["init_from"] = from_
    if output:
        overrides["training.output_dir"] = str(output)
    recipe = load_pretrain_recipe(config, overrides)
    prepare_run_folder(recipe.training.output_dir, resume, overwrite)
    _check_resume(resume, recipe, config)
    bundle = pretrain(recipe, resume=resume)
    console.print(f"[green]background model saved to {bundle}")


# What a user can mend from the message alone: printed as one line, exit code 2.
USER_ERRORS = (DataFormatError, ConfigError, InputError, BundleError, FileNotFoundError, TrainingDiverged)


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one clear line and exit code 2, not a traceback.
    `argv` (default: sys.argv[1:]) lets tests run the command in-process."""
    exit_on_sigterm()
    try:
        app(args=argv, prog_name="foundation")
    except USER_ERRORS as err:
        if VERBOSE["on"]:
            raise
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)
    except TrainingInterrupted as err:
        console.print(f"[yellow]{err}")
        sys.exit(143)  # 128 + SIGTERM: schedulers see a terminated job (and requeue it)


if __name__ == "__main__":
    main()
