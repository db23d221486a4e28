"""Commands run from any folder: recipes by name, paths in a recipe relative to it or FOUNDATION_HOME,
and nothing written into the repository."""

import subprocess

import pytest
from typer.testing import CliRunner

from foundation.cli import app
from foundation.errors import ConfigError
from foundation.pipelines.pretrain import load_pretrain_recipe
from foundation.recipes import find_recipe, recipe_roots

REPOSITORY = recipe_roots()[0]


def _repository_state() -> str:
    """Everything git sees in the repository, ignored files included (runs would land in checkpoints/)."""
    done = subprocess.run(["git", "status", "--porcelain", "--ignored", "--untracked-files=all"], cwd=REPOSITORY, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip("not a git checkout")
    return "\n".join(line for line in done.stdout.splitlines() if "__pycache__" not in line and ".pytest_cache" not in line)


def test_recipes_by_name_and_their_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FOUNDATION_HOME", str(tmp_path / "home"))
    assert find_recipe("small", "pretrain") == REPOSITORY / "pretrain" / "small.yaml"
    assert find_recipe("small", "tokenizers") == REPOSITORY / "tokenizers" / "small.yaml"
    recipe = load_pretrain_recipe("large", {"training.output_dir": "mine"})
    assert recipe.training.deepspeed == str(REPOSITORY / "launch" / "deepspeed" / "zero2.json")  # beside the recipe
    assert recipe.tokenizer.startswith(str(tmp_path / "home"))  # checkpoints/... -> FOUNDATION_HOME
    assert recipe.training.output_dir == "mine"  # the command line's own value: relative to the working folder
    bare = tmp_path / "recipes" / "pretrain" / "bare.yaml"  # no output_dir: the default lands under FOUNDATION_HOME
    bare.parent.mkdir(parents=True)
    bare.write_text("tokenizer: checkpoints/tok\n")
    recipe = load_pretrain_recipe(bare)
    assert recipe.training.output_dir == str(tmp_path / "home" / "run") and recipe.tokenizer == str(tmp_path / "home" / "tok")
    with pytest.raises(ConfigError, match="nor a recipe of that name"):
        find_recipe("no_such_recipe", "pretrain")


def test_a_tiny_chain_from_another_folder_writes_only_to_foundation_home(jet_files, tmp_path, monkeypatch):
    before = _repository_state()
    monkeypatch.chdir(tmp_path)
    home = tmp_path / "home"
    monkeypatch.setenv("FOUNDATION_HOME", str(home))
    data = f"data.files=[{jet_files[0]},{jet_files[1]}]"
    steps = ["--set", "training.max_steps=2", "--set", "training.save_every=2", "--set", "training.eval_every=2", "--set", "training.progress=false"]
    runner = CliRunner()
    for command in (["tokenizer", "train", "--config", "tiny"], ["pretrain", "--config", "tiny"], ["finetune", "--config", "top_tagging_tiny"]):
        result = runner.invoke(app, [*command, "--set", data, *steps])
        assert result.exit_code == 0, (command, result.output)
    # Each recipe found the previous one's output through FOUNDATION_HOME (tokenizer: / model: checkpoints/...).
    assert (home / "tokenizer-tiny" / "tokenizer" / "config.json").exists()
    assert (home / "pretrain-tiny" / "model" / "manifest.json").exists()
    assert (home / "finetune-tiny" / "metrics.json").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]  # nothing in the working folder
    assert _repository_state() == before  # nor in the repository
