"""Model cards: the README.md of a model bundle."""

from __future__ import annotations

import datetime

import yaml


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def model_card(
    title: str,
    summary: str,
    model,
    objective: str,
    data: dict,
    metrics: dict,
    recipe: dict,
    usage: str,
) -> str:
    params = sum(p.numel() for p in model.parameters())
    cfg = model.config
    lines = [
        "---",
        "library_name: foundation",
        "tags: [particle-physics, jets, lhc, foundation-model]",
        "---",
        f"# {title}",
        "",
        summary,
        "",
        "## Model",
        f"- architecture: {type(model).__name__}, {cfg.num_layers} layers, hidden size {cfg.hidden_size}, "
        f"{cfg.num_heads} heads, {params / 1e6:.2f} M parameters",
        f"- vocabulary: {cfg.vocab_codes} particle tokens + special tokens ({cfg.vocab_size} in all), up to {cfg.max_particles} particles per jet",
        f"- particle features beside the tokens: {cfg.particle_feature_names or 'none'}",
        f"- objective: {objective}",
        "",
        "## Training data",
    ]
    lines += [f"- {k}: {_fmt(v)}" for k, v in data.items()]
    lines += ["", "## Metrics (held-out jets)", "", "| metric | value |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in metrics.items() if isinstance(v, (int, float))]
    lines += [
        "",
        "## Usage",
        "```python",
        usage.strip(),
        "```",
        "",
        "## Recipe",
        "```yaml",
        yaml.safe_dump(recipe, sort_keys=False).strip(),
        "```",
        "",
        f"Written by foundation on {datetime.date.today().isoformat()}.",
        "",
    ]
    return "\n".join(lines)
