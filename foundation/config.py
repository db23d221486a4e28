"""YAML recipes loaded into typed dataclasses.

Every field has a type and a default; unknown keys, wrong types and impossible values raise
`ConfigError` naming the file and the dotted key. Dataclasses check their values in
`__post_init__` by raising ValueError (or ConfigError) with the key in the message.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin

import yaml

from foundation.errors import ConfigError

T = TypeVar("T")
logger = logging.getLogger(__name__)


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value: Any, tp: Any, key: str, source: str | None) -> Any:
    """Check `value` against the annotation `tp`, converting where YAML is loose (int for float)."""
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        options = get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except ConfigError as err:
                errors.append(err.problem)
        raise ConfigError(source, key, f"expected {' or '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        allowed = get_args(tp)
        if value not in allowed:
            raise ConfigError(source, key, f"must be one of {list(allowed)}, got {value!r}")
        return value
    if origin in (list, tuple, typing.Sequence):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {value!r}")
        args = get_args(tp)
        item_tp = args[0] if args else Any
        items = [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {value!r}")
        k_tp, v_tp = get_args(tp) or (Any, Any)
        return {_coerce(k, k_tp, key, source): _coerce(v, v_tp, f"{key}.{k}", source) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping of {tp.__name__} fields, got {value!r}")
        return from_dict(tp, value, source=source, prefix=key + ".")
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            # YAML reads 1e-4 as a string; accept numeric strings.
            if isinstance(value, str):
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(source, key, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {value!r}")
        return value
    return value


def from_dict(cls: type[T], data: dict, source: str | Path | None = None, prefix: str = "") -> T:
    """Build dataclass `cls` from a mapping, rejecting unknown keys and wrong types."""
    source = None if source is None else str(source)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, prefix.rstrip(".") or None, f"expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    data = _renamed(cls, data, source, prefix)
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            source, prefix + unknown[0], f"unknown key (known keys here: {', '.join(sorted(fields))})"
        )
    kwargs = {name: _coerce(value, hints[name], prefix + name, source) for name, value in data.items()}
    try:
        return cls(**kwargs)
    except ConfigError as err:
        if err.path is None:
            raise ConfigError(source, (prefix + err.key) if err.key else None, err.problem) from None
        raise
    except (ValueError, TypeError) as err:
        raise ConfigError(source, prefix.rstrip(".") or None, str(err)) from None


def _renamed(cls: type, data: dict, source: str | None, prefix: str) -> dict:
    """Recipes written before a key was renamed still load: the old key (listed in the dataclass's
    `RENAMED_KEYS`, old name -> new name) is read as the new one, with a warning; both is an error."""
    renamed = getattr(cls, "RENAMED_KEYS", {})
    if not any(old in data for old in renamed):
        return data
    data = dict(data)
    for old, new in renamed.items():
        if old in data:
            if new in data:
                raise ConfigError(source, prefix + old, f"was renamed to {prefix + new}, which is also given; keep only {prefix + new}")
            logger.warning("%s: key '%s' is now called '%s'; read as that", source or "<config>", prefix + old, prefix + new)
            data[new] = data.pop(old)
    return data


def to_dict(obj: Any) -> dict:
    """Plain-data form of a dataclass (for YAML/JSON)."""
    return dataclasses.asdict(obj)


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(path, None, "recipe file does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(path, None, f"is not valid YAML: {err}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(path, None, f"expected a mapping at the top level, got {type(data).__name__}")
    return data


def apply_overrides(data: dict, overrides: dict | None) -> dict:
    """Set dotted keys ("training.max_steps") in a recipe mapping; they win over the file."""
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for depth, part in enumerate(parents):
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                section = ".".join(parents[: depth + 1])
                raise ConfigError(None, dotted, f"{section} is a value ({node!r}), not a section with keys")
        node[last] = value
    return data


def load_recipe(path: str | Path, cls: type[T], overrides: dict | None = None) -> T:
    """Read a YAML recipe (a path, or a name such as `small`: foundation.recipes) into `cls`; paths
    in the file resolve relative to it (or FOUNDATION_HOME); `overrides` (dotted keys) win over the file."""
    from foundation.recipes import find_recipe, resolve_default_paths, resolve_recipe_paths

    path = find_recipe(path, getattr(cls, "RECIPE_FOLDER", None))
    try:
        data = apply_overrides(resolve_recipe_paths(load_yaml(path), path), overrides)
    except ConfigError as err:
        raise ConfigError(path, err.key, err.problem) from None
    recipe = from_dict(cls, data, source=path)
    resolve_default_paths(recipe, overrides)
    if hasattr(recipe, "__dict__"):
        recipe.source = str(path)  # for messages about keys derived later
    return recipe


def save_recipe(obj: Any, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(to_dict(obj), sort_keys=False))
    return path


def check(condition: bool, key: str, problem: str) -> None:
    """Raise ConfigError for `key` unless `condition` holds (for __post_init__ checks)."""
    if not condition:
        raise ConfigError(None, key, problem)


def build_model_config(cls: type[T], mapping: dict, source: str | Path | None, section: str = "model", **fixed) -> T:
    """A PretrainedConfig subclass from a recipe section, rejecting keys its __init__ does not take
    (PretrainedConfig itself would silently keep them)."""
    import inspect

    mapping = dict(mapping or {})
    known = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    for key in mapping:
        if key not in known:
            raise ConfigError(source, f"{section}.{key}", f"unknown key (known keys here: {', '.join(sorted(known - set(fixed)))})")
        if key in fixed:
            raise ConfigError(source, f"{section}.{key}", "is set from another section of the recipe; remove it here")
    try:
        return cls(**mapping, **fixed)
    except (ValueError, TypeError) as err:
        raise ConfigError(source, section, str(err)) from None
