"""Checks that need a CUDA device: bf16, gradient checkpointing, DeepSpeed ZeRO-2/3 on a GPU.

Skipped without one (CI has none); run on a GPU machine with `python -m pytest tests/gpu`.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]
ROOT = Path(__file__).resolve().parents[2]


def _pretrain(jet_files, tokenizer, out, **overrides):
    from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

    values = {"tokenizer": str(tokenizer), "training.output_dir": str(out), "training.progress": False, "training.max_steps": 30, "training.save_every": 30, "training.eval_every": 30}
    values.update(overrides)
    recipe = load_pretrain_recipe("pretrain/tiny.yaml", values)
    recipe.data.files = [str(p) for p in jet_files]
    return pretrain(recipe)


def test_bf16_pretraining_on_the_gpu(jet_files, tiny_tokenizer, tmp_path):
    bundle = _pretrain(jet_files, tiny_tokenizer, tmp_path / "bf16", **{"training.mixed_precision": "bf16"})
    rows = [json.loads(line) for line in (bundle.parent / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    summary = json.loads((bundle.parent / "train_summary.json").read_text())
    assert summary["peak_memory_mb"] > 0  # torch.cuda.max_memory_allocated: the run was on the GPU


def test_compiled_blocks_train_in_bf16_on_the_gpu(jet_files, tiny_tokenizer, tmp_path):
    bundle = _pretrain(jet_files, tiny_tokenizer, tmp_path / "compiled", **{"training.mixed_precision": "bf16", "training.compile_blocks": True})
    rows = [json.loads(line) for line in (bundle.parent / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]


def test_gradient_checkpointing_gives_the_same_loss(tmp_path):
    from foundation.models import JetTransformerConfig, JetTransformerForPretraining

    cfg = JetTransformerConfig(vocab_codes=64, max_particles=30, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, masked_loss_weight=0.5)
    torch.manual_seed(0)
    model = JetTransformerForPretraining(cfg).cuda()
    ids = torch.randint(0, 64, (8, 32), device="cuda")
    ids[:, 0] = cfg.start_token_id
    mask = torch.ones_like(ids, dtype=torch.bool)
    torch.manual_seed(1)
    plain = model(ids, mask, labels=ids).loss
    plain.backward()
    grad = model.transformer.wte.weight.grad.clone()
    model.zero_grad()
    model.gradient_checkpointing_enable()
    torch.manual_seed(1)
    checkpointed = model(ids, mask, labels=ids).loss
    checkpointed.backward()
    assert torch.allclose(plain, checkpointed, atol=1e-5)
    assert torch.allclose(grad, model.transformer.wte.weight.grad, atol=1e-5)


@pytest.mark.parametrize("stage", ["zero2", "zero3"])
def test_deepspeed_on_the_gpu(stage, jet_files, tiny_tokenizer, tmp_path):
    out = tmp_path / stage
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", str(ROOT / "tests/distributed/worker.py"),
        "--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--out", str(out),
        "--deepspeed", str(ROOT / f"launch/deepspeed/{stage}.json"), "--mixed-precision", "bf16",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-6000:]
    report = json.loads((out / "rank0.json").read_text())
    assert "DEEPSPEED" in report["distributed_type"]
    assert report["losses"][-1] < report["losses"][0]
    # The export holds full weights (gathered under ZeRO-3) and loads without DeepSpeed.
    from foundation.models import JetTransformerForPretraining

    model = JetTransformerForPretraining.from_pretrained(out / "model")
    assert model.transformer.wte.weight.shape[0] == model.config.vocab_size


def test_inference_commands_run_on_the_gpu(jet_files, tiny_bundle, tmp_path):
    import h5py
    import numpy as np

    from foundation.data.canonical import CanonicalSource
    from foundation.pipelines.anomaly import likelihood_scores
    from foundation.pipelines.embed import embed
    from foundation.pipelines.generate import generate_jets

    generated = generate_jets(tiny_bundle, 64, tmp_path / "gen.h5", top_k=20, progress=False)
    jets = CanonicalSource(generated).read(0, 64)
    assert np.isfinite(jets.constituents).all() and jets.mask.any(1).all()
    scores = likelihood_scores(tiny_bundle, jet_files, limit=50, progress=False)
    assert np.isfinite(scores["nll"]).all()
    path = embed(tiny_bundle, jet_files, tmp_path / "emb.h5", limit=50, progress=False)
    with h5py.File(path) as f:
        assert f["embedding"].shape[0] == 50 and np.isfinite(f["embedding"][:]).all()


def test_interaction_attention_on_the_gpu():
    """The float bias goes through SDPA's CUDA kernels in bf16 (forward and backward, bias
    gradients included), and cached sampling draws what uncached sampling draws."""
    from benchmarks.model_sizes import random_kinematics
    from foundation.models import (
        JetTransformerConfig,
        JetTransformerForCausalJetModeling,
        JetTransformerForPretraining,
    )

    cfg = JetTransformerConfig(vocab_codes=64, max_particles=30, hidden_size=64, num_layers=3, num_heads=4, intermediate_size=128, masked_loss_weight=0.5, interaction_attention=True)
    torch.manual_seed(0)
    model = JetTransformerForPretraining(cfg).cuda()
    torch.nn.init.normal_(model.transformer.interaction.mlp[-1].weight)
    model.transformer.set_code_kinematics(random_kinematics((64,), "cuda"))
    ids = torch.randint(0, 64, (8, 32), device="cuda")
    ids[:, 0] = cfg.start_token_id
    mask = torch.arange(32, device="cuda")[None] < torch.randint(5, 33, (8, 1), device="cuda")
    kinematics = random_kinematics((8, 32), "cuda") * (mask & (ids < 64))[..., None]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(ids, mask, particle_kinematics=kinematics, labels=ids.masked_fill(~mask, -100)).loss
    loss.backward()
    grad = model.transformer.interaction.mlp[0].weight.grad
    assert torch.isfinite(loss) and grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0
    causal = JetTransformerForCausalJetModeling(cfg).cuda().eval()
    causal.load_state_dict(model.state_dict(), strict=False)
    cached = causal.sample(16, generator=torch.Generator("cuda").manual_seed(0))
    assert torch.equal(cached, causal.sample(16, generator=torch.Generator("cuda").manual_seed(0), use_cache=False))
