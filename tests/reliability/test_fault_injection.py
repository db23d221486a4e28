"""Fault injection: a real `foundation` process killed with SIGKILL once a checkpoint exists (and a
checkpoint half-written when it died), then `--resume`: the final weights equal, bit for bit,
those of a run that was never interrupted.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from foundation.cli import main

ROOT = Path(__file__).resolve().parents[2]
COMMON = ["--set", "training.progress=false", "--set", "training.tensorboard=false"]


def _command(args: list[str], output: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "foundation", *args, "--output", str(output), *COMMON, *extra]


def _env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")


def _run(args: list[str], output: Path, *extra: str) -> None:
    proc = subprocess.run(_command(args, output, *extra), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]


def _kill_after_checkpoint(args: list[str], output: Path, step: int, timeout: float = 120) -> None:
    """Start the run, SIGKILL it as soon as checkpoint `step` is complete (no chance to clean up)."""
    marker = output / "checkpoints" / f"step-{step:06d}" / "trainer_state.json"
    proc = subprocess.Popen(_command(args, output), cwd=ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    start = time.monotonic()
    while not marker.exists() and proc.poll() is None and time.monotonic() - start < timeout:
        time.sleep(0.05)  # polling a file another process writes; nothing to wait on instead
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the run ended by itself before it could be killed: {err[-2000:]!r}"
    assert marker.exists(), err[-2000:]


def _half_written_checkpoint(output: Path, step: int) -> Path:
    """What a kill in the middle of a checkpoint write leaves: the temporary folder, partly filled."""
    partial = output / "checkpoints" / f".incomplete-step-{step:06d}"
    partial.mkdir(parents=True, exist_ok=True)
    (partial / "model.safetensors").write_bytes(b"\x00" * 100)  # truncated
    return partial


def _assert_same_weights(a: Path, b: Path) -> None:
    x, y = load_file(a), load_file(b)
    assert x.keys() == y.keys()
    for key in x:
        assert torch.equal(x[key], y[key]), key


CASES = {
    # command, the first checkpoint step to kill after, the step of a half-written later one, final weights
    "pretrain": (["pretrain", "--config", "pretrain/tiny.yaml", "--set", "training.max_steps=24", "--set", "training.save_every=8",
                  "--set", "training.eval_every=8", "--set", "training.log_every=4"], 8, 16, "model/model.safetensors"),
    "finetune": (["finetune", "--config", "finetune/top_tagging_tiny.yaml", "--set", "training.max_steps=24", "--set", "training.save_every=8",
                  "--set", "training.eval_every=8", "--set", "training.log_every=4"], 8, 16, "model/model.safetensors"),
    "tokenizer train": (["tokenizer", "train", "--config", "tokenizers/tiny.yaml", "--set", "training.max_steps=24", "--set", "training.save_every=8",
                         "--set", "training.eval_every=8", "--set", "training.log_every=4"], 8, 16, "tokenizer/model.safetensors"),
}


@pytest.mark.parametrize("case", CASES)
def test_kill_9_then_resume_equals_an_uninterrupted_run(case, jet_files, tiny_tokenizer, tiny_bundle, tmp_path, monkeypatch, capsys):
    args, kill_step, partial_step, weights = CASES[case]
    files = "[" + ",".join(str(p) for p in jet_files) + "]"
    args = [*args, "--set", f"data.files={files}"]
    if case == "pretrain":
        args += ["--tokenizer", str(tiny_tokenizer)]
    if case == "finetune":
        args += ["--from", str(tiny_bundle)]

    straight = tmp_path / "straight"
    _run(args, straight)

    killed = tmp_path / "killed"
    _kill_after_checkpoint(args, killed, kill_step)
    assert not (killed / weights).exists()
    partial = _half_written_checkpoint(killed, partial_step)
    # Without --resume the interrupted run is not replaced by accident (checked before any work).
    monkeypatch.setattr(sys, "argv", _command(args, killed)[2:])
    with pytest.raises(SystemExit) as refused:
        main()
    assert refused.value.code == 2 and "--resume" in capsys.readouterr().err
    _run(args, killed, "--resume")

    assert not partial.exists(), "the half-written checkpoint is removed, never resumed from"
    _assert_same_weights(straight / weights, killed / weights)
