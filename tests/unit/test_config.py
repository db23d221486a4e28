from dataclasses import dataclass, field

import pytest

from foundation.config import from_dict, load_recipe
from foundation.data.dataset import DataConfig
from foundation.errors import ConfigError
from foundation.training import TrainingConfig


@dataclass
class Recipe:
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def _write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text)
    return path


def test_unknown_key_names_the_key_and_file(tmp_path):
    path = _write(tmp_path, "training:\n  max_step: 10\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path, Recipe)
    assert "training.max_step" in str(err.value) and str(path) in str(err.value)


def test_wrong_type(tmp_path):
    path = _write(tmp_path, "training:\n  max_steps: lots\n")
    with pytest.raises(ConfigError, match="training.max_steps.*integer"):
        load_recipe(path, Recipe)


def test_impossible_value_names_the_nested_key(tmp_path):
    path = _write(tmp_path, "data:\n  validation_fraction: 1.5\n")
    with pytest.raises(ConfigError) as err:
        load_recipe(path, Recipe)
    assert "data.validation_fraction" in str(err.value) and str(path) in str(err.value)


def test_a_padding_multiple_below_one_is_refused_with_its_key(tmp_path):
    path = _write(tmp_path, "training:\n  pad_to_multiple_of: 0\n")
    with pytest.raises(ConfigError, match="training.pad_to_multiple_of.*must be positive, got 0") as err:
        load_recipe(path, Recipe)
    assert str(path) in str(err.value)


def test_unknown_feature(tmp_path):
    path = _write(tmp_path, "data:\n  features: [log_pt, mass]\n")
    with pytest.raises(ConfigError, match="data.features.*mass"):
        load_recipe(path, Recipe)


def test_not_yaml_and_missing(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_recipe(tmp_path / "nope.yaml", Recipe)
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(_write(tmp_path, "training: [unclosed\n"), Recipe)


def test_numbers_in_yaml_forms():
    r = from_dict(Recipe, {"training": {"learning_rate": "1e-4", "max_grad_norm": 1}})
    assert r.training.learning_rate == 1e-4 and r.training.max_grad_norm == 1.0


def test_gradient_accumulation_is_derived():
    t = TrainingConfig(global_batch_size=256, micro_batch_size=32)
    assert t.gradient_accumulation_steps(1) == 8
    assert t.gradient_accumulation_steps(2) == 4
    with pytest.raises(ValueError, match="not a multiple"):
        t.gradient_accumulation_steps(3)


def test_a_parameter_group_that_joins_later_warms_up_from_zero():
    t = TrainingConfig(warmup_steps=4, max_steps=100)
    assert [t.delayed_start_factor(step, 10) for step in (0, 9, 10, 11, 13, 50)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]
    assert t.delayed_start_factor(0, 0) == 1.0  # a group that starts with the run has the run's warm-up only
