"""Parameter counts of the pretraining recipes and, on a GPU, the peak memory of one training step.

    python -m benchmarks.model_sizes [--recipes pretrain/small.yaml pretrain/base.yaml ...] [--steps 3]

The step is forward + backward + AdamW on the recipe's micro-batch of full-length sequences
(max particles + 2 tokens), in the recipe's precision; memory is torch.cuda.max_memory_allocated.
Without a GPU only the parameter counts are printed.
"""

from __future__ import annotations

import argparse
import time

import torch

from foundation.config import load_yaml
from foundation.models import JetTransformerConfig, JetTransformerForPretraining

VOCAB_CODES = {"tokenizers/small.yaml": 2048, "default": 8192}


def model_for(recipe_path: str) -> tuple[JetTransformerForPretraining, dict]:
    recipe = load_yaml(recipe_path)
    tokenizer = recipe.get("tokenizer", "")
    codes = VOCAB_CODES["tokenizers/small.yaml"] if "small" in tokenizer or "tiny" in tokenizer else VOCAB_CODES["default"]
    max_particles = recipe.get("data", {}).get("max_particles", 128)
    config = JetTransformerConfig(vocab_codes=codes, max_particles=max_particles, **recipe.get("model", {}))
    return JetTransformerForPretraining(config), recipe


def measure(model: JetTransformerForPretraining, recipe: dict, steps: int) -> dict:
    training = recipe.get("training", {})
    batch = training.get("micro_batch_size", 64)
    dtype = torch.bfloat16 if training.get("mixed_precision") == "bf16" else torch.float32
    cfg = model.config
    model = model.cuda()
    if training.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_codes, (batch, cfg.max_sequence_length), device="cuda")
    ids[:, 0] = cfg.start_token_id
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
            loss = model(ids, mask).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {
        "micro_batch": batch,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30,
        "step_seconds": step,
        "jets_per_second": batch / step,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipes", nargs="+", default=["pretrain/tiny.yaml", "pretrain/small.yaml", "pretrain/base.yaml", "pretrain/large.yaml"])
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    gpu = torch.cuda.is_available()
    device = torch.cuda.get_device_name() if gpu else "no GPU (parameter counts only)"
    print(f"device: {device}")
    header = f"{'recipe':24s} {'layers':>6s} {'hidden':>6s} {'params (M)':>10s}"
    if gpu:
        header += f" {'micro batch':>11s} {'precision':>9s} {'peak GiB':>9s} {'jets/s':>9s}"
    print(header)
    for path in args.recipes:
        model, recipe = model_for(path)
        params = sum(p.numel() for p in model.parameters()) / 1e6
        row = f"{path:24s} {model.config.num_layers:6d} {model.config.hidden_size:6d} {params:10.2f}"
        if gpu:
            m = measure(model, recipe, args.steps)
            row += f" {m['micro_batch']:11d} {m['precision']:>9s} {m['peak_memory_gib']:9.2f} {m['jets_per_second']:9.0f}"
            del model
            torch.cuda.empty_cache()
        print(row, flush=True)


if __name__ == "__main__":
    main()
