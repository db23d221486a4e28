"""Benchmark 6: speed and memory.

    python -m benchmarks.speed --tokenizer checkpoints/jet-foundation-small/tokenizer --model jet-foundation-small

- pretraining throughput of each recipe (default pretrain/small.yaml) with 1 and 2 processes
  (torchrun, gloo on CPU), one thread per process, in fp32 and in the precision the recipe asks for
  (`mixed_precision: auto` is bf16 on CPUs with AVX-512 BF16 / AMX and on GPUs): jets/s, real tokens/s
  (padding excluded), achieved FLOP/s, the hardware peak measured in the same run (a 2048^3 matmul in
  the same precision and thread count, per process) and their ratio, the model FLOP utilisation (MFU);
- with --token-file, each recipe (its own precision) also reading a token file made once by
  `foundation tokenizer encode` (`tokens:` in a recipe) instead of tokenising jets in the loader,
  beside the rate of that one-off encoding;
- inference throughput of `foundation embed` (jets/s);
- peak memory of the streaming loader over one epoch of 10k, 100k and 1M jets (a shard opened
  as often as needed), each in a fresh process: it should not grow with the data.

Training FLOPs per real token are counted from the model's shapes: 6 x the matmul parameters a
token passes through in each pass (causal and masked: two passes of the backbone), the heads only
where they score (every next-token target, the masked particles), and 12 x layers x mean length x
width for attention scores and values.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import base_parser, default_files, print_table, run_script, write_results

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = str(ROOT / "benchmarks" / "speed.py")  # run again as the train and loader workers


def training_flops_per_token(config, mean_length: float) -> float:
    """Training FLOPs (forward + backward) per real token of a JetTransformerForPretraining step."""
    d, layers = config.hidden_size, config.num_layers
    block = 4 * d * d + 2 * d * config.intermediate_size  # qkv + out, fc + proj: matmul weights per layer
    attention = 12 * layers * mean_length * d  # QK^T and AV, forward + backward
    backbone = 6 * layers * block + attention
    flops = 0.0
    if config.causal_loss_weight > 0:
        flops += backbone + 6 * d * config.vocab_size  # every real token but the last is a target
    if config.masked_loss_weight > 0:
        flops += backbone + config.mask_fraction * 6 * (d * d + d * config.vocab_codes)
    return flops


def measured_peak_flops(precision: str, size: int = 2048, seconds: float = 2.0) -> float:
    """FLOP/s of a large square matmul in this process's thread count and the given precision."""
    import torch

    dtype = torch.bfloat16 if precision == "bf16" else torch.float16 if precision == "fp16" else torch.float32
    device = "cuda" if torch.cuda.is_available() else "cpu"
    a, b = (torch.randn(size, size, dtype=dtype, device=device) for _ in range(2))
    for _ in range(2):
        a @ b
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        reps += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * reps / (time.perf_counter() - start)


def _train_worker(args) -> None:
    """Runs under torchrun: a short pretraining; rank 0 prints its throughput as JSON."""
    from foundation.pipelines.pretrain import build_pretraining, load_pretrain_recipe
    from foundation.training.distributed import resolve_mixed_precision

    overrides = {
        "tokenizer": args.tokenizer, "training.output_dir": args.out_dir, "training.max_steps": args.steps,
        "training.eval_every": 10**6, "training.save_every": 10**6, "training.log_every": max(args.steps // 4, 1),
        "training.progress": False, "training.tensorboard": False, "training.threads_per_process": 1,
        # The same global batch for 1 and 2 processes: 2 micro-batches accumulated, or 1 on each.
        "training.global_batch_size": 2 * args.micro_batch,
        "training.micro_batch_size": args.micro_batch,
    }
    if args.precision:
        overrides["training.mixed_precision"] = args.precision
    if args.tokens:
        overrides["tokens"] = args.tokens
    recipe = load_pretrain_recipe(args.recipe, overrides)
    recipe.data.files = args.data
    precision = resolve_mixed_precision(recipe.training.mixed_precision)
    run = build_pretraining(recipe)
    result = run.trainer.train()
    peak = measured_peak_flops(precision)  # after training: the same warm process, same threads
    if run.trainer.accelerator.is_main_process:
        mean_length = result.tokens_per_second / result.samples_per_second  # real tokens per jet
        achieved = training_flops_per_token(run.config, mean_length) * result.tokens_per_second
        print("RESULT " + json.dumps({
            "precision": precision, "jets_per_second": result.samples_per_second, "tokens_per_second": result.tokens_per_second,
            "flops_per_second": achieved, "peak_flops_per_second": peak * result.world_size, "mfu": achieved / (peak * result.world_size),
            "peak_memory_mb": result.peak_memory_mb, "world_size": result.world_size, "seconds": result.seconds,
        }), flush=True)


def loss_parity(args, data: list[str]) -> list[dict]:
    """The recipe trained for its full length in fp32 and in its own precision, one process each, for
    every seed: validation losses after the same number of jets, so a faster setting is seen to
    learn the same. Each run is cached in its folder (train_summary.json) and reused."""
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain
    from foundation.training.distributed import resolve_mixed_precision

    rows = []
    for recipe_path in args.recipes:
        for seed in args.seeds:  # seed by seed, so the first pair to compare comes early
            for precision in ("no", None):
                out_dir = args.out / f"parity-{Path(recipe_path).stem}-{precision or 'recipe'}-seed{seed}"
                overrides = {"tokenizer": args.tokenizer, "training.output_dir": str(out_dir), "training.seed": seed, "training.progress": False, "training.tensorboard": False, "training.threads_per_process": 1}
                if precision:
                    overrides["training.mixed_precision"] = precision
                if args.tiny:
                    overrides.update({"training.max_steps": 4, "training.eval_every": 4, "training.save_every": 4})
                recipe = load_pretrain_recipe(recipe_path, overrides)
                if precision is None and resolve_mixed_precision(recipe.training.mixed_precision) == "no":
                    continue  # the recipe trains in fp32: the run above is its run
                recipe.data.files = data
                summary_file = out_dir / "train_summary.json"
                if not summary_file.exists():
                    pretrain(recipe)
                summary = json.loads(summary_file.read_text())
                rows.append({
                    "what": f"{Path(recipe_path).stem}, {resolve_mixed_precision(recipe.training.mixed_precision)}, seed {seed}",
                    "jets": summary["steps"] * recipe.training.global_batch_size,
                    "validation_loss": summary["final"].get("eval/loss"),
                    "jets_per_second": summary["jets_per_second"],
                })
    return rows


def _loader_worker(args) -> None:
    """Iterates one epoch of the streaming loader over `args.jets` jets; prints peak RSS."""
    import numpy as np
    from torch.utils.data import DataLoader

    from foundation.data.dataset import BlockShuffleSampler, JetDataset, collate_batch
    from foundation.data.sources import JetCollection

    single = JetCollection.open(args.data[0])
    copies = -(-args.jets // len(single))
    collection = JetCollection.open([args.data[0]] * copies)
    dataset = JetDataset(collection, np.arange(args.jets), ["log_pt", "eta_rel", "phi_rel", "delta_r"], 128)
    loader = DataLoader(dataset, batch_size=512, sampler=BlockShuffleSampler(len(dataset), 32, seed=0), collate_fn=collate_batch)
    start, seen = time.perf_counter(), 0
    for batch in loader:
        seen += len(batch["labels"])
    seconds = time.perf_counter() - start
    print("RESULT " + json.dumps({"jets": seen, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "jets_per_second": seen / seconds}), flush=True)


def _run(cmd: list[str], env_extra: dict | None = None, timeout: int = 3600) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} failed:\n{proc.stderr[-4000:]}")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def main(argv=None) -> dict:
    parser = base_parser(__doc__, "speed")
    parser.add_argument("--tokenizer", default="checkpoints/jet-foundation-small/tokenizer")
    parser.add_argument("--model", default="jet-foundation-small")
    parser.add_argument("--recipes", nargs="+", default=["pretrain/small.yaml"], help="pretraining recipes to time (GPU: pretrain/base.yaml pretrain/large.yaml)")
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2], help="process counts to time (one thread each on CPU)")
    parser.add_argument("--recipe", default=None, help=argparse_hidden())
    parser.add_argument("--precision", default=None, help=argparse_hidden())
    parser.add_argument("--data", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=64, help="jets per process and forward pass")
    parser.add_argument("--loader-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--worker", choices=["train", "loader"], default=None, help=argparse_hidden())
    parser.add_argument("--jets", type=int, default=0, help=argparse_hidden())
    parser.add_argument("--out-dir", default="", help=argparse_hidden())
    parser.add_argument("--token-file", action="store_true", help="also time each token-only recipe reading a token file (encoded once, its rate a row of its own)")
    parser.add_argument("--tokens", default=None, help=argparse_hidden())
    parser.add_argument("--loss-parity", action="store_true", help="instead of timing: train each recipe fully in fp32 and in its own precision (per seed) and compare validation losses")
    args = parser.parse_args(argv)
    if args.worker == "train":
        return _train_worker(args)
    if args.worker == "loader":
        return _loader_worker(args)
    data = args.data or default_files()
    if args.loss_parity:
        rows = loss_parity(args, data)
        table = print_table(rows, [("what", "what", ""), ("jets", "jets seen", "d"), ("validation_loss", "validation loss", ".4f"), ("jets_per_second", "jets/s (1 process)", ".1f")])
        write_results(args, "speed_loss_parity", rows, {"table": table})
        return {"rows": rows}
    steps = 4 if args.tiny else args.steps
    sizes = [200, 400] if args.tiny else args.loader_sizes
    micro = 8 if args.tiny else args.micro_batch
    rows = []
    tokens, encode_row = None, None  # the token file, made at the first recipe that can read one
    for recipe in args.recipes:
        name = Path(recipe).stem
        common = ["--tokenizer", args.tokenizer, "--recipe", recipe, "--steps", str(steps), "--micro-batch", str(micro), "--data", *data]
        # fp32 first (the reference), then the recipe's own precision when it asks for another
        for precision in ("no", None):
            for nproc in args.processes:
                result = _time_training(args.out / f"train-{name}-{precision or 'recipe'}-{nproc}", nproc, [*common, *(["--precision", precision] if precision else [])])
                if precision is None and result["precision"] == "no":
                    break  # the recipe trains in fp32: its rows are the ones above
                rows.append({"what": _row_name(name, result), "recipe": name, **result})
        if args.token_file and _token_only(recipe):
            if tokens is None:
                tokens, encode_row = _encode_token_file(args, data)
            for nproc in args.processes:
                result = _time_training(args.out / f"train-{name}-tokens-{nproc}", nproc, [*common, "--tokens", str(tokens)])
                rows.append({"what": _row_name(name, result) + ", token file", "recipe": name, "input": "token file", **result})
    if encode_row:
        rows.append(encode_row)
    # each row against its recipe's fp32 run on the fewest processes timed
    reference = {}
    timed = [r for r in rows if "precision" in r]
    for row in timed:
        if row["precision"] == "no":
            reference.setdefault(row["recipe"], row["jets_per_second"])
    for row in timed:
        row["speedup_vs_fp32"] = row["jets_per_second"] / reference[row["recipe"]]
    loader = [r for r in timed if r.get("input") != "token file"]
    speedup = loader[-1]["speedup_vs_fp32"]  # the last recipe, its own precision, the most processes, jets tokenised by the loader

    from foundation.pipelines.embed import embed

    limit = 200 if args.tiny else 4000
    start = time.perf_counter()
    embed(args.model, data, args.out / "embeddings.h5", limit=limit, progress=False)
    rows.append({"what": f"inference: foundation embed ({limit} jets)", "jets_per_second": limit / (time.perf_counter() - start)})
    for size in sizes:
        result = _run([sys.executable, SCRIPT, "--worker", "loader", "--jets", str(size), "--data", data[0]])
        rows.append({"what": f"streaming loader, {size} jets", "jets_per_second": result["jets_per_second"], "peak_memory_mb": result["peak_rss_mb"]})
    table = print_table(rows, [
        ("what", "what", ""), ("jets_per_second", "jets/s", ".2f"), ("tokens_per_second", "real tokens/s", ".0f"),
        ("flops_per_second", "FLOP/s", ".3g"), ("peak_flops_per_second", "measured peak FLOP/s", ".3g"), ("mfu", "MFU", ".3f"),
        ("speedup_vs_fp32", "x fp32 on the fewest processes", ".2f"), ("peak_memory_mb", "peak memory MB", ".0f"),
    ])
    write_results(args, "speed", rows, {"table": table, "headline": _headline(rows), "speedup": speedup, "steps": steps})
    return {"rows": rows, "speedup": speedup}


def _time_training(out_dir: Path, nproc: int, worker_args: list[str]) -> dict:
    """A short pretraining under torchrun on `nproc` processes (the train worker); its RESULT."""
    return _run([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", SCRIPT, "--worker", "train", "--out-dir", str(out_dir), *worker_args])


def _row_name(recipe: str, result: dict) -> str:
    processes = result["world_size"]
    return f"{recipe}, {result['precision']}, {processes} process{'es' if processes > 1 else ''} x 1 thread"


def _headline(rows: list[dict]) -> dict | None:
    """The README's row: the last recipe at the most processes, in its precision against fp32 on as many."""
    timed = [r for r in rows if "precision" in r and r.get("input") != "token file"]
    if not timed:
        return None
    best = timed[-1]
    fp32 = next((r for r in timed if r["recipe"] == best["recipe"] and r["precision"] == "no" and r["world_size"] == best["world_size"]), None)
    return {
        "metric": f"pretraining jets/s, {best['recipe']} recipe, {best['world_size']} processes ({best['precision']}; MFU {best['mfu']:.2f})",
        "ours": f"{best['jets_per_second']:.0f}",
        "peer": f"{fp32['jets_per_second']:.0f} in fp32" if fp32 and fp32 is not best else None,
    }


def _token_only(recipe: str) -> bool:
    """Whether the recipe can read a token file: no particle features or kinematics beside the tokens."""
    from foundation.pipelines.pretrain import load_pretrain_recipe

    loaded = load_pretrain_recipe(recipe)
    if loaded.particle_features or loaded.model.get("interaction_attention"):
        print(f"{recipe}: takes particle features or kinematics beside the tokens, which a token file does not hold; no token-file rows", flush=True)
        return False
    return True


def _encode_token_file(args, data: list[str]) -> tuple[Path, dict]:
    """The data encoded once into a token file (replacing an earlier run's), and the encoding rate."""
    import torch

    from foundation.data.tokens import TokenFile
    from foundation.pipelines.tokenizer import encode_to_file, load_tokenizer

    path = args.out / "tokens.h5"
    path.unlink(missing_ok=True)
    start = time.perf_counter()
    encode_to_file(load_tokenizer(args.tokenizer), data, path, progress=not args.tiny)
    seconds = time.perf_counter() - start
    jets = len(TokenFile(path))
    rate = jets / seconds
    return path, {"what": f"tokenizer encode into a token file ({jets} jets, once; {torch.get_num_threads()} threads)", "jets_per_second": rate}


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    run_script(main)
