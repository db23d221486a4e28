"""Two real processes on CPU (gloo): DDP and DeepSpeed ZeRO-2 pretraining, sharded data, resume.

A test that only checks "it ran" would miss accelerate's silent world of one, so each asserts the
world size, that ranks hold the same weights, and that they were given disjoint jets.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.distributed
ROOT = Path(__file__).resolve().parents[2]


def _torchrun(args, nproc=2, deepspeed=False, timeout=600):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if deepspeed:
        env["DS_ACCELERATOR"] = "cpu"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", str(ROOT / "tests/distributed/worker.py"), *args]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _reports(out, nproc=2):
    return [json.loads((Path(out) / f"rank{r}.json").read_text()) for r in range(nproc)]


def _check_two_ranks(reports, kind):
    assert [r["world_size"] for r in reports] == [2, 2]
    assert [r["torch_world_size"] for r in reports] == [2, 2]
    assert all(kind in r["distributed_type"] for r in reports)
    assert reports[0]["fingerprint"] == reports[1]["fingerprint"], "ranks must hold the same weights"
    assert reports[0]["losses"][-1] < reports[0]["losses"][0], "loss must fall"
    a, b = (set(r["first_epoch_indices"]) for r in reports)
    assert not a & b, "ranks must see disjoint jets"
    # Training drops only the last incomplete round of micro-batches (other jets each epoch).
    assert reports[0]["train_size"] - len(a | b) < 2 * reports[0]["micro_batch_size"]
    # Evaluation covers every jet exactly once across the ranks.
    for r in reports:
        assert sorted(r["gathered_eval_indices"]) == sorted(r["eval_indices"])


@pytest.fixture(scope="module")
def ddp_run(jet_files, tiny_tokenizer, tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp") / "run"
    _torchrun(["--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--out", str(out)])
    return out


def test_ddp_two_processes(ddp_run):
    _check_two_ranks(_reports(ddp_run), "MULTI_CPU")
    assert (ddp_run / "model" / "model.safetensors").exists(), "exported after training, with TensorBoard on"
    assert any((ddp_run / "logs").rglob("events.out.tfevents.*"))


def test_deepspeed_zero2_two_processes(jet_files, tiny_tokenizer, tmp_path, ddp_run):
    out = tmp_path / "zero2"
    _torchrun(["--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--out", str(out), "--deepspeed", str(ROOT / "launch/deepspeed/zero2.json")], deepspeed=True)
    reports = _reports(out)
    _check_two_ranks(reports, "DEEPSPEED")
    # Same recipe, same data order: ZeRO-2 follows the DDP run step for step.
    ddp = _reports(ddp_run)[0]
    assert reports[0]["losses"] == pytest.approx(ddp["losses"], rel=1e-4)
    assert (out / "model" / "model.safetensors").exists()


def test_deepspeed_zero3_matches_ddp_and_its_export_is_whole(jet_files, tiny_tokenizer, tmp_path, ddp_run):
    """ZeRO-3 shards the parameters: training must still follow the DDP run step for step, and the
    exported bundle must hold the full weights."""
    out = tmp_path / "zero3"
    _torchrun(["--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--out", str(out), "--deepspeed", str(ROOT / "launch/deepspeed/zero3.json")], deepspeed=True)
    reports = _reports(out)
    assert [r["world_size"] for r in reports] == [2, 2] and all("DEEPSPEED" in r["distributed_type"] for r in reports)
    ddp = _reports(ddp_run)[0]
    assert len(reports[0]["losses"]) == len(ddp["losses"]) == 10
    assert reports[0]["losses"] == pytest.approx(ddp["losses"], rel=1e-4)
    from foundation.models import JetTransformerForPretraining

    model = JetTransformerForPretraining.from_pretrained(out / "model")
    assert model.transformer.wte.weight.shape == (model.config.vocab_size, model.config.hidden_size)
    assert model.transformer.wte.weight.abs().sum() > 0


def test_resume_with_another_number_of_processes(ddp_run, jet_files, tiny_tokenizer, tmp_path):
    """A 2-process checkpoint resumes on 1 process at the same place in the data."""
    out = tmp_path / "one"
    (out / "checkpoints").mkdir(parents=True)
    shutil.copytree(ddp_run / "checkpoints" / "step-000010", out / "checkpoints" / "step-000010")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, str(ROOT / "tests/distributed/worker.py"), "--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--out", str(out), "--resume"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    one = _reports(out, nproc=1)[0]
    two = _reports(ddp_run)[0]
    # Masked-modelling masks come from each rank's RNG, so losses agree closely, not bit for bit.
    assert one["losses"][-1] == pytest.approx(two["losses"][-1], rel=0.02)
    state = json.loads((out / "checkpoints" / "step-000020" / "trainer_state.json").read_text())
    assert state["step"] == 20 and state["world_size"] == 1


def test_launch_script_in_a_fresh_home_makes_the_default_data_once(tiny_tokenizer, tmp_path):
    """`launch/torchrun/pretrain.sh 2 pretrain/tiny.yaml` with no data yet: rank 0 generates the
    built-in data set, rank 1 waits for the completed files (no race on one temporary file)."""
    home = tmp_path / "home"
    env = dict(os.environ, FOUNDATION_HOME=str(home), PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    args = ["--tokenizer", str(tiny_tokenizer), "--output", str(tmp_path / "run"), "--set", "data.generated.jets_per_class=40",
            "--set", "training.max_steps=4", "--set", "training.save_every=4", "--set", "training.eval_every=4", "--set", "training.progress=false"]
    proc = subprocess.run(["bash", str(ROOT / "launch/torchrun/pretrain.sh"), "2", "pretrain/tiny.yaml", *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    assert sorted(p.name for p in (home / "data").iterdir()) == ["qcd-40-n64-seed1.h5", "top-40-n64-seed1.h5"]  # no .tmp left
    assert (tmp_path / "run" / "model" / "model.safetensors").exists()
    state = json.loads((tmp_path / "run" / "checkpoints" / "step-000004" / "trainer_state.json").read_text())
    assert state["step"] == 4


def test_two_processes_equal_one_at_the_same_global_batch(jet_files, tiny_tokenizer, tmp_path):
    """Global batch 32 as 2 processes x 16 jets, or 1 process x 16 jets x 2 accumulation steps: the
    same jets in each optimizer step, so the same losses up to fp32 reduction order. (Next-token loss
    only, no dropout: masked modelling draws its masks from each rank's RNG.)"""
    common = ["--tokenizer", str(tiny_tokenizer), "--data", *map(str, jet_files), "--steps", "10",
              "--set", "model.masked_loss_weight=0", "--set", "training.tensorboard=false",
              # 256 training jets of the 300: 8 whole global batches an epoch (at an epoch's end 2 processes
              # pad their last micro-batches, 1 process carries the accumulation over, so the jets differ)
              "--set", "data.validation_fraction=0.08", "--set", "data.test_fraction=0.0667"]
    _torchrun([*common, "--out", str(tmp_path / "two")])
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, str(ROOT / "tests/distributed/worker.py"), *common, "--out", str(tmp_path / "one")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-5000:]
    one, two = _reports(tmp_path / "one", nproc=1)[0], _reports(tmp_path / "two")[0]
    assert one["world_size"] == 1 and two["world_size"] == 2 and one["train_size"] == 256
    assert len(one["losses"]) == 5 and one["losses"] != pytest.approx([one["losses"][0]] * 5)  # training moved
    assert two["losses"] == pytest.approx(one["losses"], rel=1e-5, abs=1e-6)


def test_sigterm_to_torchrun_checkpoints_before_its_grace_period_ends(jet_files, tiny_tokenizer, tmp_path):
    """torchrun passes SIGTERM on to its workers and kills them 30 s later: the ranks must agree to
    stop and write their checkpoint well within that, even when log and checkpoint steps are far apart."""
    import signal
    import time

    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    far = "100000"  # no log, evaluation or checkpoint step comes before the SIGTERM
    args = ["--tokenizer", str(tiny_tokenizer), "--output", str(tmp_path / "run"), "--set", "data.files=[" + ",".join(map(str, jet_files)) + "]",
            "--set", f"training.max_steps={far}", "--set", f"training.save_every={far}", "--set", f"training.eval_every={far}",
            "--set", f"training.log_every={far}", "--set", "training.progress=false"]
    proc = subprocess.Popen(["bash", str(ROOT / "launch/torchrun/pretrain.sh"), "2", "pretrain/tiny.yaml", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:  # until training has begun
            lines.append(line)
            if "pretraining" in line and "parameters" in line:
                break
        time.sleep(3)
        proc.send_signal(signal.SIGTERM)  # the launch script execs torchrun: this is torchrun
        output = "".join(lines) + proc.communicate(timeout=120)[0]
    finally:
        proc.kill()
    assert "stopped on SIGTERM" in output and "forcefully" not in output, output[-3000:]
    saved = sorted((tmp_path / "run" / "checkpoints").glob("step-*"))
    assert len(saved) == 1 and int(saved[0].name.split("-")[1]) % 10 == 0
