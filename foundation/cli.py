"""The `foundation` command. Thin: parse arguments, load the recipe, call the library."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import typer
from rich.console import Console

from foundation.errors import ConfigError, DataFormatError

app = typer.Typer(help="Foundation models for particle jets: data, tokenizer, pretraining, fine-tuning.", no_args_is_help=True, pretty_exceptions_enable=False)
data_app = typer.Typer(help="Generate, convert and inspect jet data.", no_args_is_help=True)
tokenizer_app = typer.Typer(help="Train, evaluate and apply the VQ-VAE particle tokenizer.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(tokenizer_app, name="tokenizer")

console = Console(stderr=True)
VERBOSE = {"on": False}


@app.callback()
def _main(verbose: bool = typer.Option(False, "--verbose", "-v", help="Debug logging and full tracebacks.")):
    from foundation.pipelines.common import setup_logging

    VERBOSE["on"] = verbose
    setup_logging(verbose)


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
):
    """Generate jets with Pythia 8 + FastJet (top tagging landscape recipe, particle level)."""
    from foundation.data.generation import GeneratorConfig, generate

    config = GeneratorConfig(process=process, max_particles=max_particles, jet_pt_min=pt_min, jet_pt_max=pt_max)
    path = generate(config, jets, out, seed=seed, workers=workers or os.cpu_count() or 1, chunk_jets=chunk_jets)
    console.print(f"[green]wrote {jets} {process} jets to {path}")


@data_app.command("convert")
def data_convert(
    inputs: list[Path] = typer.Argument(..., help="input file(s), folder or glob: top tagging HDF5, JetClass ROOT, canonical"),
    out: Path = typer.Option(..., help="output .h5 file, or a folder when --shard-jets is given"),
    max_particles: int | None = typer.Option(None, help="constituents kept per jet (default: as in the input)"),
    shard_jets: int | None = typer.Option(None, help="write shards of this many jets into the folder OUT"),
):
    """Convert public formats to the canonical layout."""
    from foundation.data.convert import convert

    paths = convert([str(p) for p in inputs], out, max_particles=max_particles, shard_jets=shard_jets)
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
@tokenizer_app.command("train")
def tokenizer_train(
    config: Path = typer.Option(..., help="recipe, e.g. tokenizers/vqvae_8k.yaml"),
    output: Path | None = typer.Option(None, help="run folder (default: the recipe's training.output_dir)"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint in the run folder"),
):
    """Train the VQ-VAE tokenizer (on generated jets unless the recipe names files)."""
    from foundation.pipelines.tokenizer import load_tokenizer_recipe, train_tokenizer

    overrides = {"training.output_dir": str(output)} if output else {}
    recipe, model_config = load_tokenizer_recipe(config, overrides)
    path = train_tokenizer(recipe, model_config, resume=resume)
    console.print(f"[green]tokenizer saved to {path}")


@tokenizer_app.command("evaluate")
def tokenizer_evaluate(
    tokenizer: Path = typer.Option(..., help="tokenizer folder (or a run folder holding tokenizer/)"),
    data: list[Path] = typer.Option(..., help="jet file(s), any supported format"),
    plots: Path | None = typer.Option(None, help="folder for code-usage and original-vs-decoded plots"),
    limit: int | None = typer.Option(None, help="evaluate at most this many jets"),
    out: Path | None = typer.Option(None, help="also write the metrics JSON here"),
):
    """Codebook usage, perplexity, feature and jet mass / pT resolution of decoded jets (JSON)."""
    from foundation.evaluation.tokenization import evaluate_tokenizer
    from foundation.pipelines.common import write_json
    from foundation.pipelines.tokenizer import load_tokenizer

    metrics = evaluate_tokenizer(load_tokenizer(tokenizer), [str(d) for d in data], limit=limit, plots_dir=plots)
    if out:
        write_json(out, metrics)
    _print_json(metrics)


@tokenizer_app.command("encode")
def tokenizer_encode(
    tokenizer: Path = typer.Option(..., help="tokenizer folder"),
    data: list[Path] = typer.Option(..., help="jet file(s), any supported format"),
    out: Path = typer.Option(..., help="token file to write (.h5)"),
    batch_size: int = typer.Option(512, help="jets per batch"),
):
    """Write the token sequences of a whole data set (pretraining reads this file)."""
    from foundation.pipelines.tokenizer import encode_to_file, load_tokenizer

    path = encode_to_file(load_tokenizer(tokenizer), [str(d) for d in data], out, batch_size=batch_size)
    console.print(f"[green]wrote token sequences to {path}")


# ---------------------------------------------------------------- pretraining
@app.command("pretrain")
def pretrain_command(
    config: Path = typer.Option(..., help="recipe, e.g. pretrain/small.yaml"),
    output: Path | None = typer.Option(None, help="run folder (default: the recipe's training.output_dir)"),
    tokenizer: Path | None = typer.Option(None, help="tokenizer folder (default: the recipe's `tokenizer`)"),
    resume: bool = typer.Option(False, help="continue from the latest checkpoint in the run folder"),
):
    """Pretrain the jet transformer (next-token and/or masked particle modelling).

    Multi-GPU / multi-node: launch this command with `accelerate launch` or `torchrun`
    (see launch/); the same recipe runs on one CPU, several processes or DeepSpeed ZeRO.
    """
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    overrides = {}
    if output:
        overrides["training.output_dir"] = str(output)
    if tokenizer:
        overrides["tokenizer"] = str(tokenizer)
    bundle = pretrain(load_pretrain_recipe(config, overrides), resume=resume)
    console.print(f"[green]model bundle saved to {bundle}")


def main() -> None:
    """Entry point: user errors become one clear line and exit code 2, not a traceback."""
    try:
        app()
    except (DataFormatError, ConfigError, FileNotFoundError) as err:
        if VERBOSE["on"]:
            raise
        console.print(f"[bold red]error:[/] {err}")
        sys.exit(2)


if __name__ == "__main__":
    main()
