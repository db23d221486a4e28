"""Does training.compile_blocks pay on this machine? Steady-state pretraining steps, eager against
torch.compile of each transformer block, in one process with the same threads and precision.

    python -m benchmarks.compile_blocks --model jet-foundation-small --pad-to-multiple-of 1 16

The model is the bundle's architecture with fresh weights (JetTransformerForPretraining, both
objectives, fused AdamW); batches are random codes at realistic multiplicities: each batch's jets
lie within 10 of a length drawn between 20 and 110 tokens, as length-grouped batches do. Timing
starts after --warmup steps, so the first compilation is reported apart from the rate; recompiling
for lengths met later counts in it, as it would in a run. Each --pad-to-multiple-of K times both
with batches padded to a multiple of K positions (training.pad_to_multiple_of; K > 1 compiles with
static shapes, one graph per length). It prints its figures; the verdict goes into the comments of
training.compile_blocks and pad_to_multiple_of.
"""

from __future__ import annotations

import argparse
import time

from benchmarks.common import run_script
from benchmarks.tagging import fail


def _random_batch(generator, micro_batch: int, config):
    """(input_ids (B, L), attention_mask (B, L)): right-padded random codes of similar lengths."""
    import torch

    highest = min(110, config.max_sequence_length - 9)  # the model's own limit for smaller ones
    shortest = int(torch.randint(min(20, highest - 1), highest, (1,), generator=generator))
    lengths = torch.randint(shortest, shortest + 10, (micro_batch,), generator=generator)  # (B,)
    width = int(lengths.max())
    input_ids = torch.randint(0, config.vocab_codes, (micro_batch, width), generator=generator)
    attention_mask = torch.arange(width)[None] < lengths[:, None]
    return input_ids, attention_mask


def time_steps(config, compiled: bool, multiple: int, args) -> dict:
    """Seconds of the warm-up steps and jets/s of the timed ones, for one fresh model, with batches
    padded to a multiple of `multiple` positions."""
    import torch

    from foundation.models.modeling_jet_transformer import JetTransformerForPretraining, language_model_labels
    from foundation.training.inputs import pad_to_multiple
    from foundation.training.loop import compile_transformer_blocks

    torch.manual_seed(0)
    model = JetTransformerForPretraining(config)
    if compiled:
        compile_transformer_blocks(model, static_shapes=multiple > 1)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    generator = torch.Generator().manual_seed(1)
    bf16 = args.precision == "bf16"

    def step() -> None:
        input_ids, attention_mask = _random_batch(generator, args.micro_batch, config)
        batch = pad_to_multiple({"input_ids": input_ids, "attention_mask": attention_mask, "labels": language_model_labels(input_ids, attention_mask)}, multiple)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    start = time.perf_counter()
    for _ in range(args.warmup):
        step()
    warmup_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    return {"warmup_seconds": warmup_seconds, "jets_per_second": args.steps * args.micro_batch / (time.perf_counter() - start)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="jet-foundation-small", help="bundle whose architecture is timed (registered name or folder)")
    parser.add_argument("--micro-batch", type=int, default=32, help="jets per step (the small recipe's per process on 2 processes)")
    parser.add_argument("--precision", choices=["bf16", "no"], default="bf16")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--warmup", type=int, default=10, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=160, help="timed steps (enough to meet most lengths, so recompilation counts)")
    parser.add_argument("--pad-to-multiple-of", type=int, nargs="+", default=[1], help="sequence-length multiples to time (1: batches cut to their longest jet)")
    args = parser.parse_args(argv)
    for option in ("micro_batch", "threads", "steps"):
        if getattr(args, option) <= 0:
            fail(f"--{option.replace('_', '-')}: must be positive, got {getattr(args, option)}")
    if min(args.pad_to_multiple_of) <= 0:
        fail(f"--pad-to-multiple-of: must be positive, got {min(args.pad_to_multiple_of)}")
    if args.warmup < 0:
        fail(f"--warmup: must be >= 0, got {args.warmup}")

    import torch

    from foundation.hub import load_bundle

    torch.set_num_threads(args.threads)
    config = load_bundle(args.model).model.config
    config.jet_loss_weight = 0.0  # the pretraining recipes' objectives: next token and masked particles
    print(f"{args.model}, {args.precision}, {args.threads} thread(s), {args.micro_batch} jets a step, {args.steps} timed steps after {args.warmup}")
    for multiple in args.pad_to_multiple_of:
        for compiled in (False, True):
            figures = time_steps(config, compiled, multiple, args)
            name = ("compiled blocks" if compiled else "eager") + (f", lengths padded to a multiple of {multiple}" if multiple > 1 else "")
            print(f"{name:52s} {figures['jets_per_second']:8.1f} jets/s   warm-up {figures['warmup_seconds']:.1f} s", flush=True)


if __name__ == "__main__":
    run_script(main)
