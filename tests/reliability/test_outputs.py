"""Outputs are never silently replaced and never left half-written (issue 30, runs and outputs).

Every refusal is checked before any data or model is read: the inputs named here do not even exist.
"""

from __future__ import annotations

import sys

import h5py
import numpy as np
import pytest

from foundation.cli import main


def _run_cli(monkeypatch, capsys, *args: str) -> tuple[int, str]:
    """`foundation ARGS` in this process: (exit code, stderr)."""
    monkeypatch.setattr(sys, "argv", ["foundation", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


FILE_COMMANDS = {
    "data generate": ["data", "generate", "--process", "qcd", "--jets", "5"],
    "data convert": ["data", "convert", "missing-input.h5"],
    "tokenizer encode": ["tokenizer", "encode", "--tokenizer", "missing-tokenizer", "--data", "missing.h5"],
    "generate": ["generate", "--model", "missing-bundle", "--jets", "5"],
    "anomaly score": ["anomaly", "score", "--model", "missing-bundle", "--data", "missing.h5"],
    "embed": ["embed", "--model", "missing-bundle", "--data", "missing.h5"],
    "predict": ["predict", "--model", "missing-bundle", "--data", "missing.h5"],
}


@pytest.mark.parametrize("command", FILE_COMMANDS)
def test_an_existing_output_file_needs_overwrite(command, tmp_path, monkeypatch, capsys):
    out = tmp_path / "result.h5"
    out.write_bytes(b"an earlier result")
    code, err = _run_cli(monkeypatch, capsys, *FILE_COMMANDS[command], "--out", str(out))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(out) in err and "--overwrite" in err
    assert out.read_bytes() == b"an earlier result"


RUN_COMMANDS = {
    # data that do not exist: the refusal must come before any data are looked at
    "pretrain": ["pretrain", "--config", "pretrain/tiny.yaml", "--set", "data.files=[missing.h5]"],
    "finetune": ["finetune", "--config", "finetune/top_tagging_tiny.yaml", "--set", "data.files=[missing.h5]"],
    "tokenizer train": ["tokenizer", "train", "--config", "tokenizers/tiny.yaml", "--set", "data.files=[missing.h5]"],
    "anomaly background": ["anomaly", "background", "--config", "finetune/anomaly_background.yaml"],
    "anomaly cwola": ["anomaly", "cwola", "--config", "finetune/cwola.yaml"],
}


@pytest.mark.parametrize("command", RUN_COMMANDS)
def test_an_existing_run_folder_needs_resume_or_overwrite(command, tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "metrics.jsonl").write_text('{"step": 5}\n')
    code, err = _run_cli(monkeypatch, capsys, *RUN_COMMANDS[command], "--output", str(run))
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(run) in err and "--resume" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == '{"step": 5}\n'


def test_overwrite_removes_the_old_run_and_refuses_a_folder_that_holds_none(tmp_path):
    from foundation.errors import InputError
    from foundation.outputs import prepare_run_folder

    run = tmp_path / "run"
    (run / "checkpoints" / "step-000015").mkdir(parents=True)
    (run / "metrics.jsonl").write_text("{}\n")
    prepare_run_folder(run, resume=True, overwrite=False)  # continuing keeps everything
    assert (run / "metrics.jsonl").exists()
    with pytest.raises(InputError, match="exclude each other"):
        prepare_run_folder(run, resume=True, overwrite=True)
    prepare_run_folder(run, resume=False, overwrite=True)
    assert not run.exists()  # no checkpoint or metrics row of the old run can mix with the new one
    prepare_run_folder(run, resume=False, overwrite=False)  # a new folder needs nothing

    other = tmp_path / "my-papers"
    other.mkdir()
    (other / "thesis.tex").write_text("precious")
    with pytest.raises(InputError, match="holds no run"):
        prepare_run_folder(other, resume=False, overwrite=True)
    assert (other / "thesis.tex").read_text() == "precious"


def test_a_stale_temporary_file_is_replaced_and_an_interrupted_write_leaves_nothing(tmp_path):
    from foundation.data.canonical import CanonicalWriter
    from foundation.outputs import atomic_output, temporary_path

    out = tmp_path / "jets.h5"
    tmp = temporary_path(out)
    tmp.write_bytes(b"left by kill -9")  # not an HDF5 file: h5py would refuse to open it for appending
    with CanonicalWriter(out, 4, ["qcd"], {}) as writer:
        assert writer.num_jets == 0
    assert out.exists() and not tmp.exists()

    again = tmp_path / "again.h5"
    with pytest.raises(KeyboardInterrupt), CanonicalWriter(again, 4, ["qcd"], {}):
        raise KeyboardInterrupt  # Ctrl-C in the middle of writing
    assert not again.exists() and not temporary_path(again).exists()

    scores = tmp_path / "scores.h5"
    with pytest.raises(SystemExit), atomic_output(scores) as path, h5py.File(path, "w") as f:
        f["nll"] = np.zeros(3)
        sys.exit(1)
    assert not scores.exists() and not temporary_path(scores).exists()


SIGTERM_WRITER = """
import sys, time
from foundation.outputs import atomic_output, exit_on_sigterm
exit_on_sigterm()  # as foundation's main() does
with atomic_output(sys.argv[1]) as tmp:
    tmp.write_text("half")
    print("writing", flush=True)
    time.sleep(60)
"""


def test_sigterm_in_the_middle_of_a_write_leaves_no_temporary_file(tmp_path):
    import signal
    import subprocess

    from foundation.outputs import temporary_path

    out = tmp_path / "scores.h5"
    proc = subprocess.Popen([sys.executable, "-c", SIGTERM_WRITER, str(out)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"  # blocks until the .tmp exists
    assert temporary_path(out).exists()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 143
    assert not out.exists() and not temporary_path(out).exists()
