"""Shared pieces of the benchmark scripts: arguments, tables, result files."""

from __future__ import annotations

import argparse
import datetime
import platform
from pathlib import Path

import torch

from foundation.pipelines.common import write_json


def base_parser(description: str, name: str) -> argparse.ArgumentParser:
    """The arguments every benchmark takes; results go to checkpoints/benchmarks/<name> by default."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("checkpoints/benchmarks") / name, help="folder for results.json and plots")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="repeat with these seeds")
    parser.add_argument("--tiny", action="store_true", help="seconds-long setting (CI runs it so the script cannot rot)")
    return parser


def machine() -> str:
    cpu = f"{torch.get_num_threads()} threads, {platform.processor() or platform.machine()}"
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU"
    return f"{platform.node()}: {cpu}, {gpu}, torch {torch.__version__}"


def write_results(out: Path, name: str, rows: list[dict], extra: dict | None = None) -> Path:
    payload = {
        "benchmark": name,
        "date": datetime.date.today().isoformat(),
        "machine": machine(),
        "rows": rows,
        **(extra or {}),
    }
    return write_json(out / "results.json", payload)


def print_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """columns: (key, header, format). Prints and returns a Markdown table."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for row in rows:
        cells = []
        for key, _, fmt in columns:
            value = row.get(key)
            if value is None:
                cells.append("")  # not measured for this row
            else:
                cells.append(format(value, fmt) if isinstance(value, (int, float)) and fmt else str(value))
        lines.append("| " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    import numpy as np

    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else None  # no spread from one seed
