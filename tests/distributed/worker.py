"""Run by torchrun in the distributed tests: a tiny pretraining run, then every rank writes what
it saw (world size, its weights' fingerprint, the jets it was given) for the test to compare."""

import argparse
import hashlib
import json
import os
import sys
from pathlib import Path

import torch


def fingerprint(model) -> dict:
    flat = torch.cat([p.detach().float().flatten() for _, p in sorted(model.named_parameters())])
    return {"sum": float(flat.sum()), "norm": float(flat.norm()), "sha": hashlib.sha256(flat.cpu().numpy().tobytes()).hexdigest()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--tokenizer", required=True)
    parser.add_argument("--data", nargs="+", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--deepspeed", default=None)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--mixed-precision", default="no")
    parser.add_argument("--set", action="append", default=[], help="extra recipe override KEY=VALUE (YAML value)")
    args = parser.parse_args()

    from foundation.pipelines.pretrain import build_pretraining, load_pretrain_recipe

    overrides = {
        "tokenizer": args.tokenizer,
        "training.output_dir": args.out,
        "training.max_steps": args.steps,
        "training.progress": False,
        "training.save_every": 10,
        "training.eval_every": 10,
        "training.log_every": 2,
        "training.threads_per_process": 1,
        "training.mixed_precision": args.mixed_precision,
        # On, as in the real recipes: closing the trackers once ended the process group, and the
        # export after training then failed on every rank.
        "training.tensorboard": True,
    }
    if args.deepspeed:
        overrides["training.deepspeed"] = args.deepspeed
    import yaml

    for pair in args.set:
        key, _, value = pair.partition("=")
        overrides[key] = yaml.safe_load(value)
    recipe = load_pretrain_recipe("pretrain/tiny.yaml", overrides)
    recipe.data.files = args.data
    run = build_pretraining(recipe)
    acc = run.trainer.accelerator
    seen = []
    for batch in run.trainer.train_loader:
        seen.extend(batch["index"].tolist())
    # Evaluation over ranks: gather_for_metrics must give every validation jet exactly once.
    gathered = []
    for batch in run.trainer.eval_loader:
        gathered.extend(acc.gather_for_metrics(batch["index"]).tolist())
    result = run.trainer.train(resume=args.resume)
    rank = int(os.environ.get("RANK", 0))
    model = acc.unwrap_model(run.trainer.model)
    report = {
        "rank": rank,
        "world_size": acc.num_processes,
        "torch_world_size": torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1,
        "distributed_type": str(acc.distributed_type),
        "fingerprint": fingerprint(model),
        "losses": [row["train/loss"] for row in result.history if "train/loss" in row],
        "eval": {k: v for k, v in result.final_metrics.items() if k.startswith("eval/")},
        "first_epoch_indices": seen,
        "train_size": len(run.data.train),
        "micro_batch_size": recipe.training.micro_batch_size,
        "gathered_eval_indices": gathered,
        "eval_indices": run.data.validation.indices.tolist(),
    }
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"rank{rank}.json").write_text(json.dumps(report))
    run.trainer.export(Path(args.out) / "model")
    sys.exit(0)


if __name__ == "__main__":
    main()
