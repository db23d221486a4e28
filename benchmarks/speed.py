"""Benchmark 6: speed and memory.

    python -m benchmarks.speed --tokenizer checkpoints/main/tokenizer/tokenizer --model checkpoints/main/pretrain/model

- training throughput (jets/s, tokens/s) and peak memory of pretrain/small.yaml with 1 and 2
  processes (torchrun, gloo on CPU), one thread per process, and the speed-up;
- inference throughput of `foundation embed` (jets/s);
- peak memory of the streaming loader over one epoch of 10k, 100k and 1M jets (a shard opened
  as often as needed), each in a fresh process: it should not grow with the data.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import base_parser, print_table, write_results

ROOT = Path(__file__).resolve().parents[1]


def _train_worker(args) -> None:
    """Runs under torchrun: a short pretraining; rank 0 prints its throughput as JSON."""
    from foundation.pipelines.pretrain import build_pretraining, load_pretrain_recipe

    overrides = {
        "tokenizer": args.tokenizer, "training.output_dir": args.out_dir, "training.max_steps": args.steps,
        "training.eval_every": 10**6, "training.save_every": 10**6, "training.log_every": max(args.steps // 4, 1),
        "training.progress": False, "training.tensorboard": False, "training.threads_per_process": 1,
        # The same global batch for 1 and 2 processes: 2 micro-batches accumulated, or 1 on each.
        "training.global_batch_size": 2 * args.micro_batch,
        "training.micro_batch_size": args.micro_batch,
    }
    recipe = load_pretrain_recipe(args.recipe, overrides)
    recipe.data.files = args.data
    run = build_pretraining(recipe)
    result = run.trainer.train()
    if run.trainer.accelerator.is_main_process:
        print("RESULT " + json.dumps({"jets_per_second": result.samples_per_second, "tokens_per_second": result.tokens_per_second, "peak_memory_mb": result.peak_memory_mb, "world_size": result.world_size, "seconds": result.seconds}), flush=True)


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
    parser.add_argument("--tokenizer", default="checkpoints/main/tokenizer/tokenizer")
    parser.add_argument("--model", default="checkpoints/main/pretrain/model")
    parser.add_argument("--recipe", default="pretrain/small.yaml")
    parser.add_argument("--data", nargs="+", default=None)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--micro-batch", type=int, default=64, help="jets per process and forward pass")
    parser.add_argument("--loader-sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--worker", choices=["train", "loader"], default=None, help=argparse_hidden())
    parser.add_argument("--jets", type=int, default=0, help=argparse_hidden())
    parser.add_argument("--out-dir", default="", help=argparse_hidden())
    args = parser.parse_args(argv)
    if args.worker == "train":
        return _train_worker(args)
    if args.worker == "loader":
        return _loader_worker(args)
    from benchmarks.tagging import default_files

    data = args.data or default_files()
    steps = 4 if args.tiny else args.steps
    sizes = [200, 400] if args.tiny else args.loader_sizes
    script = str(ROOT / "benchmarks" / "speed.py")
    micro = 8 if args.tiny else args.micro_batch
    common = ["--tokenizer", args.tokenizer, "--recipe", args.recipe, "--steps", str(steps), "--micro-batch", str(micro), "--data", *data]
    training = {}
    for nproc in (1, 2):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, "--worker", "train", "--out-dir", str(args.out / f"train-{nproc}"), *common]
        training[nproc] = _run(cmd)
    speedup = training[2]["jets_per_second"] / training[1]["jets_per_second"]
    rows = [{"what": f"pretraining, {n} process{'es' if n > 1 else ''} x 1 thread", **training[n]} for n in (1, 2)]
    rows.append({"what": "speed-up, 2 vs 1 processes", "jets_per_second": speedup})

    from foundation.pipelines.embed import embed

    limit = 200 if args.tiny else 4000
    start = time.perf_counter()
    embed(args.model, data, args.out / "embeddings.h5", limit=limit, progress=False)
    rows.append({"what": f"inference: foundation embed ({limit} jets)", "jets_per_second": limit / (time.perf_counter() - start)})
    for size in sizes:
        result = _run([sys.executable, script, "--worker", "loader", "--jets", str(size), "--data", data[0]])
        rows.append({"what": f"streaming loader, {size} jets", "jets_per_second": result["jets_per_second"], "peak_memory_mb": result["peak_rss_mb"]})
    table = print_table(rows, [("what", "what", ""), ("jets_per_second", "jets/s (or ratio)", ".2f"), ("tokens_per_second", "tokens/s", ".0f"), ("peak_memory_mb", "peak memory MB", ".0f")])
    write_results(args, "speed", rows, {"table": table, "speedup": speedup, "steps": steps})
    return {"rows": rows, "speedup": speedup}


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
