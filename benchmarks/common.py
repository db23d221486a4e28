"""Shared pieces of the benchmark scripts: arguments, tables, result files and results pages.

Every benchmark ends with one `write_results(args, name, rows, extra)` call. It writes, into the
run's `--out` folder and into the results folder (`--docs`, default `docs/results`):

    docs/results/<name>/results.json   date, commit, machine, command, description, rows, tables
    docs/results/<name>/<plots>        the plots this run wrote (paths kept relative to --out)
    docs/results/<name>.md             the page, rendered from results.json alone

`python -m benchmarks.render` renders every page again from its committed results.json (and the
README's headline table from all of them), so a page cannot say anything its run did not write.
"""

from __future__ import annotations

import argparse
import datetime
import math
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from foundation.pipelines.common import write_json

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "results"


# Pythia seeds of the shipped models' data; every benchmark sample is generated with others.
RECIPE_DATA_SEED = 1  # data.generated.seed of every shipped recipe and of the main job
RELEASE_DATA_SEED = 1001  # the released model's data (launch/release.sh)
RESERVED_JETS_PER_CLASS = 500_000  # the largest generated set a recipe asks for (pretrain/large.yaml)


class BenchmarkParser(argparse.ArgumentParser):
    """An ArgumentParser that remembers the arguments it parsed and when, for the results page."""

    def parse_known_args(self, args=None, namespace=None):
        argv = list(sys.argv[1:] if args is None else args)
        parsed, rest = super().parse_known_args(argv, namespace)
        parsed.argv, parsed.started, parsed.description, parsed.prog = argv, time.time(), self.description or "", self.prog
        return parsed, rest


def base_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes; results go to checkpoints/benchmarks/<name> by default."""
    parser = BenchmarkParser(prog=f"python -m benchmarks.{name}", description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("checkpoints/benchmarks") / name, help="folder for results.json and plots")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat with these seeds")
    parser.add_argument("--tiny", action="store_true", help="seconds-long setting (CI runs it so the script cannot rot)")
    parser.add_argument(
        "--docs", type=Path, default=None,
        help=f"folder of the results pages (default: {DOCS.relative_to(ROOT)}; with --tiny: OUT/docs, so a smoke run never replaces a committed page)",
    )
    return parser


def run_script(main) -> None:
    """A benchmark's entry point, as the `foundation` commands: bad input (a missing file, a refused
    seed) is one line on stderr and exit code 2; a training stopped by SIGTERM (its checkpoint
    written; the same command resumes it) one line and exit code 143. Not a traceback."""
    from foundation.cli import USER_ERRORS
    from foundation.errors import TrainingInterrupted
    from foundation.pipelines.common import quiet_libraries

    quiet_libraries()  # as the `foundation` commands: a benchmark's log holds its own lines, not the libraries'
    try:
        main()
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None
    except TrainingInterrupted as err:
        print(f"{err.output_dir}: stopped on SIGTERM at step {err.step}, checkpoint written; the same command resumes it", file=sys.stderr, flush=True)
        raise SystemExit(143) from None  # 128 + SIGTERM, as `foundation`: schedulers see a terminated job


def cpu_model() -> str:
    """The CPU's model name as the kernel reports it (platform.processor() is often empty on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict:
    """What the numbers were measured on."""
    import torch

    gpus = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "gpus": gpus,
        "cuda": torch.version.cuda if gpus else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def commit() -> str:
    """The checked-out commit, marked when tracked files differ from it (the figures may not be reproducible from it)."""
    def git(*cmd: str) -> str:
        return subprocess.run(["git", *cmd], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        head = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return head + (" with uncommitted changes" if dirty else "")


def results_folder(args: argparse.Namespace) -> Path:
    """Where the pages go: --docs, or docs/results, or OUT/docs for a --tiny run."""
    if args.docs is not None:
        return Path(args.docs)
    return Path(args.out) / "docs" if getattr(args, "tiny", False) else DOCS


def plots_of_run(out: Path, started: float, extra: dict) -> list[Path]:
    """The plots a run wrote: `extra["plots"]` when the script lists them, else the PNG files directly
    in its --out folder written since its arguments were parsed (older ones belong to other runs)."""
    if "plots" in extra:
        return [Path(p) for p in extra["plots"]]
    return sorted(p for p in Path(out).glob("*.png") if p.stat().st_mtime >= started - 1)


def write_results(args: argparse.Namespace, name: str, rows: list[dict], extra: dict | None = None,
                  models: list[str] = ()) -> Path:
    """results.json in --out, and results.json, plots and the rendered page in the results folder.

    `extra` holds what else the page shows: "table" (or "tables": {title: Markdown table}), "headline"
    ({"metric", "ours", "peer"}: the README's row), "plots" (paths; default: the PNGs in --out this
    run wrote) and any settings (numbers, strings, short lists). `models` are the pretrained bundles
    the figures measure (names or folders), recorded with their registered version and the sha256 of
    their weights. Returns the results.json in --out.
    """
    from benchmarks.render import render_page  # one module renders, here and in `python -m benchmarks.render`

    if not hasattr(args, "argv"):
        raise TypeError("write_results takes the arguments base_parser parsed (its command line and --docs), not a folder")
    extra = dict(extra or {})
    out = Path(args.out)
    plots = plots_of_run(out, args.started, extra)
    payload = {
        "benchmark": name,
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "commit": commit(),
        "machine": machine(),
        # the script that ran (a script may write more than one page: benchmarks.speed --loss-parity)
        "command": f"{getattr(args, 'prog', f'python -m benchmarks.{name}')} {shlex.join(args.argv)}".strip(),
        "description": args.description,
        "rows": rows,
        "models": [measured_model(m) for m in models],
        **{k: v for k, v in extra.items() if k != "plots"},
        "plots": [_relative_plot(p, out) for p in plots],
    }
    result = write_json(out / "results.json", payload)
    _publish(results_folder(args), name, payload, plots, render_page)
    return result


def measured_model(model: str) -> dict:
    """Which weights a figure was measured on: the name or folder as given, the registered version
    when it is a registered name (the name always means the newest), and the weights' sha256."""
    from foundation import registry
    from foundation.hub import bundle_folder, weights_sha256

    entry = registry.lookup(model)
    return {"model": _as_typed(model), "version": entry.version if entry else None, "weights_sha256": weights_sha256(bundle_folder(model))}


def _as_typed(model: str) -> str:
    """A folder under the working directory as the page's command would name it (relative), not as
    this machine's absolute path (a default such as $FOUNDATION_HOME/main/pretrain/model is absolute)."""
    path = Path(model)
    if path.is_absolute():
        try:
            return path.relative_to(Path.cwd().resolve()).as_posix()
        except ValueError:
            pass
    return str(model)


def _relative_plot(plot: Path, out: Path) -> str:
    """A plot's name inside the results folder: its path under --out, or its file name."""
    try:
        return Path(plot).resolve().relative_to(out.resolve()).as_posix()
    except ValueError:
        return Path(plot).name


def _publish(docs: Path, name: str, payload: dict, plots: list[Path], render_page) -> None:
    """Replaces docs/<name>/ and docs/<name>.md as a whole: built beside them, then renamed into place,
    so an interrupted run leaves the previous page complete and no plot of another run stays behind."""
    docs.mkdir(parents=True, exist_ok=True)
    staging, old = docs / f".{name}.new", docs / f".{name}.old"
    for leftover in (staging, old):
        shutil.rmtree(leftover, ignore_errors=True)
    staging.mkdir()
    for plot, relative in zip(plots, payload["plots"], strict=True):
        (staging / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(plot, staging / relative)
    write_json(staging / "results.json", payload)
    page = docs / f"{name}.md"
    page_tmp = page.with_name(page.name + ".tmp")
    page_tmp.write_text(render_page(payload))
    final = docs / name
    if final.exists():
        final.rename(old)
    staging.rename(final)
    os.replace(page_tmp, page)
    shutil.rmtree(old, ignore_errors=True)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format). Prints and returns a Markdown table."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            if value is None:
                cells.append("")  # not measured for this row
            else:
                cells.append(format(value, fmt) if isinstance(value, (int, float)) and fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None  # no spread from one seed


def default_files() -> list[str]:
    """The main job's data set (generated on first use): what pretrain/small.yaml trains on."""
    from foundation.data.dataset import GeneratedDataConfig
    from foundation.data.defaults import default_jet_files

    return [str(p) for p in default_jet_files(GeneratedDataConfig(jets_per_class=10_000, seed=1, max_particles=128))]


def generated_sample(folder: Path, name: str, jets_per_class: int, seed: int, max_particles: int) -> list[str]:
    """QCD and top jets generated with `seed` into `folder` (made once; a file is complete or absent).
    A seed whose Pythia chunks the shipped models were pretrained on is refused before any work: a
    benchmark must never score a model on jets it has seen."""
    from foundation.data.generation import GeneratorConfig, generate
    from foundation.errors import InputError

    if sample_seeds(seed, jets_per_class) & reserved_seeds():
        raise InputError(f"{name} sample, seed {seed}: shares Pythia seeds with the shipped models' data (seeds {RECIPE_DATA_SEED} and {RELEASE_DATA_SEED}); use another seed")
    files = []
    for process in ("qcd", "top"):
        path = folder / f"{name}-{process}-{jets_per_class}-n{max_particles}-seed{seed}.h5"
        if not path.exists():
            print(f"--- generating {jets_per_class} {process} jets (seed {seed}) into {path}", flush=True)
            generate(GeneratorConfig(process=process, max_particles=max_particles), jets_per_class, path, seed=seed, workers=os.cpu_count() or 1)
        files.append(str(path))
    return files


def chunk_seeds_of(files: list[str]) -> set[int]:
    """The Pythia seeds the files were generated with (their metadata), empty when not recorded."""
    from foundation.data.canonical import CanonicalSource, is_canonical

    seeds: set[int] = set()
    for path in files:
        if is_canonical(path):
            seeds.update(CanonicalSource(path).metadata.get("chunk_seeds") or [])
    return seeds


def sample_seeds(seed: int, jets_per_class: int, processes=None) -> set[int]:
    """The Pythia seeds of a sample generated with `seed` (each chunk of 250 jets has its own,
    foundation.data.generation.chunk_seeds), for QCD and top unless `processes` says otherwise."""
    from foundation.data.generation import chunk_seeds

    chunks = math.ceil(jets_per_class / 250)
    return {s for process in processes or ("qcd", "top") for s in chunk_seeds(seed, process, chunks)}


def reserved_seeds() -> set[int]:
    """Pythia seeds the shipped models were pretrained on: the recipes' data (seed 1) and the
    released model's (seed 1001), each up to 500k jets per class of every process."""
    from foundation.data.generation import PROCESS_LABELS

    return {s for seed in (RECIPE_DATA_SEED, RELEASE_DATA_SEED) for s in sample_seeds(seed, RESERVED_JETS_PER_CLASS, PROCESS_LABELS)}
