"""Recipes by name or path, from any folder.

`--config small` finds pretrain/small.yaml for `foundation pretrain` (tokenizers/small.yaml for
`tokenizer train`, finetune/... for `finetune`): recipes live at the top of the repository and are
installed with the package (pyproject's data-files, under <prefix>/share/foundation/).

Paths inside a recipe resolve relative to the recipe, never the working folder: `checkpoints/X`
(where runs and data land) becomes $FOUNDATION_HOME/X, and any other relative path (e.g.
`launch/deepspeed/zero2.json`) is taken from the layout the recipe sits in (the folder above
tokenizers/, pretrain/, finetune/). Hub repo ids and registered names are left as they are.
Values given on the command line (--set, --output, --from) are the user's and stay relative to
the working folder.
"""

from __future__ import annotations

import sys
from pathlib import Path

from foundation.errors import ConfigError

FOLDERS = ("tokenizers", "pretrain", "finetune")
CHECKPOINTS = "checkpoints"
# Dotted recipe keys that hold paths (a str or a list of str).
PATH_KEYS = ("tokenizer", "model", "init_from", "training.output_dir", "training.deepspeed", "data.files", "data.validation_files", "data.test_files")


def recipe_roots() -> list[Path]:
    """Folders holding tokenizers/, pretrain/, finetune/: the checkout this package runs from, then
    the copy installed with it."""
    roots = [Path(__file__).resolve().parents[1], Path(sys.prefix) / "share" / "foundation"]
    return [r for r in roots if all((r / f).is_dir() for f in FOLDERS)]  # not site-packages (it has tokenizers/)


def find_recipe(spec: str | Path, folder: str | None = None) -> Path:
    """A recipe file from a path, or from a name (`small`, `pretrain/small`, `small.yaml`) looked up in
    `folder` first, then the other recipe folders, of every recipe root."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_absolute() or str(spec).startswith("."):
        raise ConfigError(path, None, "recipe file does not exist")
    name = path if path.suffix in (".yaml", ".yml") else path.with_suffix(".yaml")
    folders = ([folder] if folder else []) + [f for f in FOLDERS if f != folder]
    for root in recipe_roots():
        for candidate in [root / name] + [root / f / name for f in folders]:
            if candidate.is_file():
                return candidate
    known = sorted(f"{p.parent.name}/{p.stem}" for root in recipe_roots() for f in FOLDERS for p in (root / f).glob("*.yaml"))
    raise ConfigError(path, None, f"no such recipe file, nor a recipe of that name (installed: {', '.join(known) or 'none'})")


def under_home(value: str) -> str:
    """checkpoints/X -> $FOUNDATION_HOME/X (absolute; FOUNDATION_HOME defaults to ./checkpoints)."""
    from foundation.data.defaults import foundation_home

    return str(foundation_home().resolve().joinpath(*Path(value).parts[1:]))


def resolve_default_paths(recipe, overrides: dict | None) -> None:
    """Defaults of the recipe's dataclasses (training.output_dir: checkpoints/run) land under
    FOUNDATION_HOME too; values the file or the command line gave are left alone."""
    for key in PATH_KEYS:
        if key in (overrides or {}):
            continue
        *parents, leaf = key.split(".")
        holder = recipe
        for name in parents:
            holder = getattr(holder, name, None)
        value = getattr(holder, leaf, None)
        if isinstance(value, str) and Path(value).parts[:1] == (CHECKPOINTS,):
            setattr(holder, leaf, under_home(value))


def resolve_recipe_paths(data: dict, recipe: str | Path) -> dict:
    """The recipe's own path values made absolute (see the module docstring); a copy."""
    root = Path(recipe).resolve().parent.parent  # the layout the recipe sits in

    def resolve(value):
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if not isinstance(value, str) or not value or Path(value).is_absolute():
            return value
        if Path(value).parts[0] == CHECKPOINTS:
            return under_home(value)
        if (root / value).exists():
            return str(root / value)
        return value  # a hub repo id, a registered name, or a file the run will make

    data = dict(data)
    for key in PATH_KEYS:
        section, _, leaf = key.rpartition(".")
        holder = data.get(section) if section else data
        if isinstance(holder, dict) and leaf in holder:
            if section:
                holder = data[section] = dict(holder)  # a copy: the caller's dict stays as read
            holder[leaf] = resolve(holder[leaf])
    return data
