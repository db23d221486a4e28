"""Every recipe shipped loads with the loader its command uses (no data needed), and recipes
written before a key was renamed still load."""

from pathlib import Path

import pytest

from foundation.config import ConfigError
from foundation.pipelines.finetune import FinetuneRecipe, load_finetune_recipe
from foundation.pipelines.pretrain import PretrainRecipe, load_pretrain_recipe
from foundation.pipelines.tokenizer import TokenizerRecipe, load_tokenizer_recipe
from foundation.tokenizer import JetTokenizerConfig

ROOT = Path(__file__).resolve().parents[2]
RECIPES = sorted(str(p.relative_to(ROOT)) for folder in ("tokenizers", "pretrain", "finetune") for p in (ROOT / folder).glob("*.yaml"))
# finetune/ also holds the background model of anomaly detection: `foundation anomaly background`
# continues pretraining, so its recipe is a pretraining one.
PRETRAINING_RECIPES_IN_FINETUNE = {"finetune/anomaly_background.yaml"}


def load(recipe: str):
    """The recipe as its command loads it: tokenizer train, pretrain / anomaly background, finetune / anomaly cwola."""
    if recipe.startswith("tokenizers/"):
        return load_tokenizer_recipe(ROOT / recipe)
    if recipe.startswith("pretrain/") or recipe in PRETRAINING_RECIPES_IN_FINETUNE:
        return load_pretrain_recipe(ROOT / recipe)
    return load_finetune_recipe(ROOT / recipe)


def test_every_recipe_folder_is_covered():
    assert {"tokenizers/vqvae_8k.yaml", "pretrain/base.yaml", "pretrain/large.yaml", "finetune/jetclass.yaml", "finetune/cwola.yaml"} <= set(RECIPES)
    assert PRETRAINING_RECIPES_IN_FINETUNE <= set(RECIPES)


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_loads(recipe):
    loaded = load(recipe)
    if recipe.startswith("tokenizers/"):
        tokenizer_recipe, model_config = loaded
        assert isinstance(tokenizer_recipe, TokenizerRecipe) and isinstance(model_config, JetTokenizerConfig)
        assert model_config.feature_names == tokenizer_recipe.data.features
        training = tokenizer_recipe.training
    else:
        assert isinstance(loaded, PretrainRecipe if recipe.startswith("pretrain/") or recipe in PRETRAINING_RECIPES_IN_FINETUNE else FinetuneRecipe)
        training = loaded.training
    # Every recipe names its own run folder, so two recipes never write into one another's.
    assert training.output_dir != "checkpoints/run"
    assert training.gradient_accumulation_steps(1) >= 1


def test_recipe_comments_say_what_the_recipe_is_for():
    """A recipe opens with a comment saying what it is for; no run log (commit hashes, table rows)."""
    import re

    for recipe in RECIPES:
        text = (ROOT / recipe).read_text()
        assert text.startswith("# "), f"{recipe}: no opening comment"
        assert not re.search(r"\brow \d+|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,40}\b|instead of \d|README, \"", text), f"{recipe}: a comment reads like a run log"


def test_a_recipe_with_the_old_shuffle_key_still_loads(tmp_path, caplog):
    old = tmp_path / "old.yaml"
    old.write_text("data: {block_size: 8}\ntraining: {output_dir: run}\n")
    assert load_pretrain_recipe(old).data.shuffle_block_jets == 8
    assert "'data.block_size' is now called 'data.shuffle_block_jets'" in caplog.text
    both = tmp_path / "both.yaml"
    both.write_text("data: {block_size: 8, shuffle_block_jets: 2}\n")
    with pytest.raises(ConfigError, match=r"both.yaml, key 'data.block_size': was renamed to data.shuffle_block_jets"):
        load_pretrain_recipe(both)
