"""Bad inputs a user can give: each gets one line naming the file or option and what is wrong,
exit code 2, and leaves no output behind. The command runs in-process (`foundation.cli.main`).

Each case builds its bad input in a fresh folder and returns the command line and the outputs
that must not exist afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest
from helpers.public_formats import random_jets, write_jetclass_file, write_toptagging_file

from foundation.cli import main
from foundation.data.canonical import CanonicalSource, CanonicalWriter, write_jets
from foundation.hub import write_manifest


@dataclass
class Ctx:
    """What a case builds its input from: a fresh folder and the session's tiny artefacts."""

    tmp: Path
    jet_files: list[Path]
    tokenizer: Path
    bundle: Path
    tagger: Path

    def jets(self, name: str = "jets.h5", edit=None) -> Path:
        """A canonical copy of the first 20 QCD jets, after `edit(jets)` changed them in place."""
        jets = CanonicalSource(self.jet_files[0]).read(0, 20)
        if edit is not None:
            edit(jets)
        path = self.tmp / name
        with h5py.File(write_jets(path, jets), "a") as f:  # the writer sorts; store the edit as made
            for key in ("constituents", "mask"):
                f[key][...] = getattr(jets, key)
        return path

    def truncated(self, source: Path, name: str) -> Path:
        path = self.tmp / name
        path.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
        return path

    def bundle_copy(self, name: str = "bundle") -> Path:
        return Path(shutil.copytree(self.bundle, self.tmp / name))

    def recipe(self, text: str, name: str = "recipe.yaml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path


ROOT = Path(__file__).resolve().parents[2]  # recipes are given by absolute path: the cases run in a fresh folder
TINY = str(ROOT / "pretrain" / "tiny.yaml")
TAGGING = str(ROOT / "finetune" / "top_tagging_tiny.yaml")
CASES: dict[str, tuple] = {}


def case(fragment: str):
    """Register `builder(ctx) -> (argv, outputs)`: the run must fail with `fragment` in its one line."""

    def register(builder):
        CASES[builder.__name__.removeprefix("case_")] = (builder, fragment)
        return builder

    return register


# ---------------------------------------------------------------- corrupted files
@case("cannot be read as HDF5, truncated or corrupted")
def case_truncated_hdf5(c):
    return ["data", "inspect", str(c.truncated(c.jet_files[0], "cut.h5"))], []


@case("cannot be read")
def case_truncated_toptagging(c):
    full = write_toptagging_file(c.tmp / "full.h5", random_jets(200, 30), n_constituents=30)
    return ["data", "convert", str(c.truncated(full, "cut.h5")), "--out", str(c.tmp / "out.h5")], [c.tmp / "out.h5"]


@case("truncated or corrupted")
def case_truncated_root(c):
    full = write_jetclass_file(c.tmp / "full.root", random_jets(400, 30, class_names=["QCD"] * 10))
    return ["data", "convert", str(c.truncated(full, "cut.root")), "--out", str(c.tmp / "out.h5")], [c.tmp / "out.h5"]


@case("model.safetensors")
def case_truncated_tokenizer_weights(c):
    tok = Path(shutil.copytree(c.tokenizer, c.tmp / "tok"))
    weights = tok / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    return ["tokenizer", "encode", "--tokenizer", str(tok), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "t.h5")], [c.tmp / "t.h5"]


@case("model.safetensors")
def case_truncated_bundle_weights_with_matching_manifest(c):
    b = c.bundle_copy()
    weights = b / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    write_manifest(b)
    return ["embed", "--model", str(b), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


# ---------------------------------------------------------------- jets that cannot be real
@case("jet 3 has a particle with negative energy")
def case_negative_energy(c):
    return ["data", "inspect", str(c.jets(edit=lambda j: j.constituents[3, 0].__setitem__(0, -5.0)))], []


@case("jet 2 has a particle with non-zero momentum marked as padding")
def case_mask_false_on_real_particle(c):
    return ["data", "inspect", str(c.jets(edit=lambda j: j.mask[2].__setitem__(slice(1, None), False)))], []


@case("jet 4 has a particle marked real (mask True) with zero momentum")
def case_mask_true_on_zero_momentum(c):
    def zero_last_particle(jets):
        jets.constituents[4, jets.mask[4].sum() - 1] = 0

    return ["data", "inspect", str(c.jets(edit=zero_last_particle))], []


@case("jet 1 has a momentum component beyond 1e+05 GeV")
def case_absurd_momentum(c):
    return ["data", "inspect", str(c.jets(edit=lambda j: j.constituents[1, 0].__setitem__(1, 3e38)))], []


@case("jet 5 has NaN or inf momenta")
def case_infinite_momentum(c):
    path = c.jets(edit=lambda j: j.constituents[5, 0].__setitem__(2, np.inf))
    return ["data", "convert", str(path), "--out", str(c.tmp / "out.h5")], [c.tmp / "out.h5"]


@case("jet 0 has a particle with negative energy")
def case_negative_energy_top_tagging(c):
    jets = random_jets(10, 20)
    jets.constituents[0, :, 0] *= -1  # every particle of jet 0
    path = write_toptagging_file(c.tmp / "top.h5", jets, n_constituents=20)
    return ["data", "convert", str(path), "--out", str(c.tmp / "out.h5")], [c.tmp / "out.h5"]


@case("field 'label'")
def case_label_shorter_than_jets(c):
    path = c.jets()
    with h5py.File(path, "a") as f:
        labels = f["label"][:-1]
        del f["label"]
        f["label"] = labels
    return ["data", "inspect", str(path)], []


# ---------------------------------------------------------------- files without jets
def _empty(c) -> Path:
    with CanonicalWriter(c.tmp / "empty.h5", 16, ["qcd", "top"]):
        pass
    return c.tmp / "empty.h5"


@case("empty.h5: holds no jets")
def case_empty_file_convert(c):
    return ["data", "convert", str(_empty(c)), "--out", str(c.tmp / "out.h5")], [c.tmp / "out.h5"]


@case("empty.h5: holds no jets")
def case_empty_file_encode(c):
    return ["tokenizer", "encode", "--tokenizer", str(c.tokenizer), "--data", str(_empty(c)), "--out", str(c.tmp / "t.h5")], [c.tmp / "t.h5"]


@case("empty.h5: holds no jets")
def case_empty_file_embed(c):
    return ["embed", "--model", str(c.bundle), "--data", str(_empty(c)), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


# ---------------------------------------------------------------- bundles
@case("model.safetensors: not listed in manifest.json")
def case_manifest_leaves_out_weights(c):
    b = c.bundle_copy()
    manifest = json.loads((b / "manifest.json").read_text())
    del manifest["files"]["model.safetensors"]
    (b / "manifest.json").write_text(json.dumps(manifest))
    return ["embed", "--model", str(b), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


@case("not listed in manifest.json")
def case_manifest_empty(c):
    b = c.bundle_copy()
    (b / "manifest.json").write_text('{"files": {}}')
    return ["embed", "--model", str(b), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


@case("manifest.json: not valid JSON")
def case_manifest_not_json(c):
    b = c.bundle_copy()
    (b / "manifest.json").write_text('{"files": ')
    return ["embed", "--model", str(b), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


@case("NaN or inf")
def case_bundle_with_nan_weights(c):
    from safetensors.torch import load_file, save_file

    b = c.bundle_copy()
    weights = load_file(b / "model.safetensors")
    save_file({k: v.fill_(float("nan")) if v.is_floating_point() else v for k, v in weights.items()}, b / "model.safetensors", metadata={"format": "pt"})
    write_manifest(b)
    return ["embed", "--model", str(b), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "e.h5")], [c.tmp / "e.h5"]


@case("is a tokenizer folder, not a model bundle")
def case_pretrain_from_tokenizer(c):
    return ["pretrain", "--config", TINY, "--from", str(c.tokenizer), "--output", str(c.tmp / "run")], [c.tmp / "run"]


@case("no such folder")
def case_missing_local_folder(c):
    return ["evaluate", "--model", str(c.tmp / "runs" / "model"), "--data", str(c.jet_files[0])], []


@case("runs/model: no such folder")
def case_missing_relative_folder(c):
    (c.tmp / "runs").mkdir()  # the test runs in c.tmp
    return ["evaluate", "--model", "runs/model", "--data", str(c.jet_files[0])], []


# ---------------------------------------------------------------- evaluation
@case("only class 'qcd'")
def case_evaluate_one_class(c):
    return ["evaluate", "--model", str(c.tagger), "--data", str(c.jet_files[0]), "--out", str(c.tmp / "eval")], [c.tmp / "eval"]


@case("is a file")
def case_evaluate_output_parent_is_a_file(c):
    (c.tmp / "notes").write_text("")
    data = ["--data", str(c.jet_files[0]), "--data", str(c.jet_files[1])]
    return ["evaluate", "--model", str(c.tagger), *data, "--out", str(c.tmp / "notes" / "eval")], []


@case("is a file")
def case_convert_output_parent_is_a_file(c):
    (c.tmp / "notes").write_text("")
    return ["data", "convert", str(c.jet_files[0]), "--out", str(c.tmp / "notes" / "out.h5")], []


# ---------------------------------------------------------------- recipes and options
@case("key 'training.global_batch_size'")
def case_global_batch_not_divisible(c):
    return ["pretrain", "--config", TINY, "--output", str(c.tmp / "run"), "--set", "training.global_batch_size=40"], [c.tmp / "run"]


@case("key 'training.learning_rate'")
def case_learning_rate_infinite(c):
    return ["pretrain", "--config", str(c.recipe("training:\n  learning_rate: .inf\n")), "--output", str(c.tmp / "run")], [c.tmp / "run"]


@case("key 'training.learning_rate'")
def case_learning_rate_absurd(c):
    return ["pretrain", "--config", TINY, "--output", str(c.tmp / "run"), "--set", "training.learning_rate=1e6"], [c.tmp / "run"]


@case("training.max_steps")
def case_set_below_a_value(c):
    return ["pretrain", "--config", TINY, "--output", str(c.tmp / "run"), "--set", "training.max_steps.x=1"], [c.tmp / "run"]


@case("--set training.max_steps=[1,: not a valid YAML value")
def case_set_unparsable(c):
    return ["pretrain", "--config", TINY, "--output", str(c.tmp / "run"), "--set", "training.max_steps=[1,"], [c.tmp / "run"]


@case("key 'data.train_limit': must be positive")
def case_train_limit_zero(c):
    return ["finetune", "--config", TAGGING, "--from", str(c.bundle), "--train-limit", "0", "--output", str(c.tmp / "run")], [c.tmp / "run"]


@case("number of jets must be positive")
def case_generate_zero_jets(c):
    return ["data", "generate", "--process", "qcd", "--jets", "0", "--out", str(c.tmp / "q.h5")], [c.tmp / "q.h5"]


# ---------------------------------------------------------------- resuming
def _run_with_checkpoint(c) -> Path:
    """A run folder holding a real checkpoint of a 2-step tiny pretraining."""
    run = c.tmp / "run"
    args = ["pretrain", "--config", TINY, "--tokenizer", str(c.tokenizer), "--output", str(run), "--set", f"data.files=[{c.jet_files[0]},{c.jet_files[1]}]"]
    args += ["--set", "training.max_steps=2", "--set", "training.save_every=2", "--set", "training.eval_every=2", "--set", "training.progress=false"]
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 0
    return run


@case("micro_batch_size")
def case_resume_with_another_micro_batch(c):
    run = _run_with_checkpoint(c)
    return ["pretrain", "--config", TINY, "--tokenizer", str(c.tokenizer), "--output", str(run), "--resume", "--set", "training.micro_batch_size=8", "--set", "training.max_steps=4"], []


@case("trainer_state.json")
def case_resume_from_invalid_trainer_state(c):
    run = _run_with_checkpoint(c)
    (run / "checkpoints" / "step-000002" / "trainer_state.json").write_text("{")
    return ["pretrain", "--config", TINY, "--tokenizer", str(c.tokenizer), "--output", str(run), "--resume", "--set", "training.max_steps=4"], []


@case("step-000002")
def case_resume_from_truncated_checkpoint(c):
    run = _run_with_checkpoint(c)
    weights = run / "checkpoints" / "step-000002" / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:500])
    return ["pretrain", "--config", TINY, "--tokenizer", str(c.tokenizer), "--output", str(run), "--resume", "--set", "training.max_steps=4"], []


# ---------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def tiny_tagger(jet_files, tiny_bundle, tmp_path_factory):
    """A tagger fine-tuned for 2 steps from tiny_bundle: its bundle folder."""
    from foundation.pipelines.finetune import finetune, load_finetune_recipe

    recipe = load_finetune_recipe("finetune/top_tagging_tiny.yaml", {
        "model": str(tiny_bundle), "training.output_dir": str(tmp_path_factory.mktemp("tagger") / "run"), "training.progress": False,
        "training.max_steps": 2, "training.save_every": 2, "training.eval_every": 2,
    })
    recipe.data.files = [str(p) for p in jet_files]
    return finetune(recipe)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_line_and_exit_code_2(name, tmp_path, jet_files, tiny_tokenizer, tiny_bundle, tiny_tagger, capsys, monkeypatch):
    builder, fragment = CASES[name]
    monkeypatch.chdir(tmp_path)
    ctx = Ctx(tmp_path, jet_files, tiny_tokenizer, tiny_bundle, tiny_tagger)
    argv, outputs = builder(ctx)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert exit_.value.code == 2, err
    assert len(lines) == 1 and fragment in lines[0], err
    assert "Traceback" not in err
    for path in outputs:
        assert not path.exists(), f"{path} was left behind"


def test_verbose_shows_the_traceback(tmp_path):
    from foundation.errors import DataFormatError

    with pytest.raises(DataFormatError, match="file does not exist"):
        main(["-v", "data", "inspect", str(tmp_path / "missing.h5")])


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_read_only_output_folder_is_refused_before_any_work(jet_files, tmp_path, capsys):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    with pytest.raises(SystemExit) as exit_:
        main(["data", "convert", str(jet_files[0]), "--out", str(folder / "out.h5")])
    assert exit_.value.code == 2 and "ro is not writable" in capsys.readouterr().err
    assert not list(folder.iterdir())


def test_a_file_without_jets_can_be_inspected(tmp_path, capsys):
    with CanonicalWriter(tmp_path / "empty.h5", 16, ["qcd", "top"]):
        pass
    with pytest.raises(SystemExit) as exit_:
        main(["data", "inspect", str(tmp_path / "empty.h5")])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert json.loads(out[out.index("{"):])["jets_total"] == 0


def test_impossible_jets_are_dropped_with_a_count_when_asked(jet_files, tmp_path, capsys):
    from foundation.data.sources import JetCollection

    jets = CanonicalSource(jet_files[0]).read(0, 20)
    jets.constituents[[3, 7], 0, 0] = -1.0  # negative energy in two jets
    path = write_jets(tmp_path / "bad.h5", jets)
    with h5py.File(path, "a") as f:
        f["constituents"][...] = jets.constituents
    with pytest.raises(SystemExit) as exit_:
        main(["data", "convert", str(path), "--out", str(tmp_path / "good.h5"), "--drop-invalid"])
    assert exit_.value.code == 0
    assert "dropped 2 of 20 jets that cannot be real" in " ".join("".join(capsys.readouterr()).split())  # the log, however wrapped
    kept = JetCollection.open(tmp_path / "good.h5").read_all()
    assert len(kept) == 18 and (kept.constituents[..., 0][kept.mask] >= 0).all()
