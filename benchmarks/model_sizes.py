"""Benchmark 7: model sizes, and on a GPU the peak memory and speed of one training step.

    python -m benchmarks.model_sizes

Parameter counts of the pretraining recipes (--recipes, default tiny, small, base and large).

The step is forward + backward + AdamW on the recipe's micro-batch of full-length sequences
(max particles + 2 tokens), in the recipe's precision; memory is torch.cuda.max_memory_allocated.
Full-length jets are the worst case for interaction attention, whose pair MLP runs on real pairs
only. --interaction adds a row per recipe with model.interaction_attention on (random kinematics);
--cpu times the step on the CPU (no peak memory). Without a GPU and --cpu only the parameter
counts are printed.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from benchmarks.common import base_parser, print_table, run_script, write_results
from foundation.config import load_yaml
from foundation.models import JetTransformerConfig, JetTransformerForPretraining

VOCAB_CODES = {"tokenizers/small.yaml": 2048, "default": 8192}


def model_for(recipe_path: str, interaction: bool = False) -> tuple[JetTransformerForPretraining, dict]:
    recipe = load_yaml(recipe_path)
    tokenizer = recipe.get("tokenizer", "")
    codes = VOCAB_CODES["tokenizers/small.yaml"] if "small" in tokenizer or "tiny" in tokenizer else VOCAB_CODES["default"]
    max_particles = recipe.get("data", {}).get("max_particles", 128)
    fields = {**recipe.get("model", {}), **({"interaction_attention": True} if interaction else {})}
    config = JetTransformerConfig(vocab_codes=codes, max_particles=max_particles, **fields)
    return JetTransformerForPretraining(config), recipe


def random_kinematics(shape: tuple[int, ...], device) -> torch.Tensor:
    """(*shape, 4) (pT, η_rel, φ_rel, E) of plausible particles: pT ~ 1-100 GeV within ΔR ~ 0.8."""
    pt = torch.exp(torch.randn(shape, device=device) + 1.5)
    eta, phi = 0.3 * torch.randn(shape, device=device), 0.3 * torch.randn(shape, device=device)
    return torch.stack([pt, eta, phi, pt * torch.cosh(eta)], dim=-1)


def measure(model: JetTransformerForPretraining, recipe: dict, steps: int, device: str = "cuda") -> dict:
    training = recipe.get("training", {})
    batch = training.get("micro_batch_size", 64)
    dtype = torch.bfloat16 if training.get("mixed_precision") == "bf16" else torch.float32
    cuda = device == "cuda"
    cfg = model.config
    model = model.to(device)
    if training.get("gradient_checkpointing"):
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, cfg.vocab_codes, (batch, cfg.max_sequence_length), device=device)
    ids[:, 0] = cfg.start_token_id
    mask = torch.ones_like(ids, dtype=torch.bool)
    inputs = {"labels": ids}
    if cfg.interaction_attention:  # codes' and particles' kinematics, zero at the start token
        model.transformer.set_code_kinematics(random_kinematics((cfg.vocab_codes,), device))
        inputs["particle_kinematics"] = random_kinematics(tuple(ids.shape), device) * (ids < cfg.vocab_codes)[..., None]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(steps):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.autocast(device, dtype=dtype, enabled=dtype != torch.float32):
            loss = model(ids, mask, **inputs).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    step = sorted(times)[len(times) // 2]
    return {
        "micro_batch": batch,
        "precision": "bf16" if dtype == torch.bfloat16 else "fp32",
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan"),
        "step_seconds": step,
        "jets_per_second": batch / step,
    }


def main(argv=None) -> list[dict]:
    parser = base_parser(__doc__, "model_sizes")
    parser.add_argument("--recipes", nargs="+", default=["pretrain/tiny.yaml", "pretrain/small.yaml", "pretrain/base.yaml", "pretrain/large.yaml"])
    parser.add_argument("--steps", type=int, default=5, help="training steps timed on a GPU (the median is reported)")
    parser.add_argument("--interaction", action="store_true", help="also measure each recipe with model.interaction_attention on")
    parser.add_argument("--cpu", action="store_true", help="time the step on the CPU (no peak memory)")
    args = parser.parse_args(argv)
    gpu = torch.cuda.is_available() and not args.cpu
    timed = gpu or args.cpu
    print(f"device: {torch.cuda.get_device_name() if gpu else ('CPU' if args.cpu else 'no GPU (parameter counts only)')}")
    rows = []
    for path in args.recipes:
        for interaction in (False, True) if args.interaction else (False,):
            model, recipe = model_for(path, interaction)
            row = {
                "recipe": path, "interaction": model.config.interaction_attention, "layers": model.config.num_layers,
                "hidden": model.config.hidden_size, "params_millions": sum(p.numel() for p in model.parameters()) / 1e6,
            }
            if timed:
                row.update(measure(model, recipe, 1 if args.tiny else args.steps, "cuda" if gpu else "cpu"))
                del model
                if gpu:
                    torch.cuda.empty_cache()
            rows.append(row)
    columns = [("recipe", "recipe", ""), ("layers", "layers", "d"), ("hidden", "hidden", "d"), ("params_millions", "params (M)", ".2f")]
    if args.interaction:
        columns.insert(1, ("interaction", "interaction", ""))
    if timed:
        columns += [("micro_batch", "micro batch", "d"), ("precision", "precision", ""), ("peak_memory_gib", "peak GiB", ".2f"), ("jets_per_second", "jets/s", ".0f")]
    table = print_table(rows, columns)
    headline = {"metric": "parameters (M) of " + ", ".join(Path(r["recipe"]).stem for r in rows), "ours": " / ".join(f"{r['params_millions']:.3g}" for r in rows)}
    if gpu:
        headline["metric"] += ", peak GiB of one step"
        headline["ours"] += "; " + " / ".join(f"{r['peak_memory_gib']:.1f}" for r in rows)
    write_results(args, "model_sizes", rows, {"table": table, "headline": headline, "steps": args.steps if gpu else None})
    return rows


if __name__ == "__main__":
    run_script(main)
