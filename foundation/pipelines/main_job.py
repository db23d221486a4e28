"""`foundation run`: the whole chain on generated jets, one stage after another.

generate top + QCD -> inspect -> tokenizer -> pretrain -> fine-tune tagging -> evaluate ->
generate jets -> anomaly scores -> embeddings -> summary. A stage that finished is recorded in
<output>/stages.json and skipped when the job runs again; training stages resume from their
last checkpoint, so a killed job continues where it stopped.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from foundation.pipelines.common import write_json

logger = logging.getLogger(__name__)


@dataclass
class MainJobConfig:
    """What `foundation run` runs: FULL (the default) or QUICK (--quick)."""

    jets_per_class: int  # generated top and QCD jets each, split into training, validation and test
    tokenizer_recipe: str  # recipe paths, relative to the recipes root (the repository)
    pretrain_recipe: str
    finetune_recipe: str
    background_recipe: str  # the background model of the anomaly stage
    generated_jets: int  # jets sampled from the pretrained model for the generation stage
    max_particles: int = 128  # constituents kept per generated jet
    seed: int = 1  # data generation seed
    overrides: dict | None = None  # extra recipe overrides per stage (tests, --quick)


FULL = MainJobConfig(
    jets_per_class=10_000,
    tokenizer_recipe="tokenizers/small.yaml",
    pretrain_recipe="pretrain/small.yaml",
    finetune_recipe="finetune/top_tagging.yaml",
    background_recipe="finetune/anomaly_background.yaml",
    generated_jets=2_000,
)
QUICK = MainJobConfig(
    jets_per_class=500,
    tokenizer_recipe="tokenizers/tiny.yaml",
    pretrain_recipe="pretrain/tiny.yaml",
    finetune_recipe="finetune/top_tagging_tiny.yaml",
    background_recipe="finetune/anomaly_background.yaml",
    generated_jets=200,
    max_particles=64,
    overrides={"background": {"training.max_steps": 30, "training.eval_every": 15, "training.save_every": 15, "training.log_every": 5, "training.tensorboard": False}},
)


class MainJob:
    def __init__(self, config: MainJobConfig, output: str | Path, recipes_root: str | Path = ".", progress: bool = True):
        self.config = config
        self.out = Path(output)
        self.root = Path(recipes_root)
        self.progress = progress
        for recipe in (config.tokenizer_recipe, config.pretrain_recipe, config.finetune_recipe, config.background_recipe):
            if not (self.root / recipe).exists():
                raise FileNotFoundError(f"{self.root / recipe}: recipe not found; pass --recipes DIR (the folder holding tokenizers/, pretrain/ and finetune/)")
        self.state_file = self.out / "stages.json"
        self.state = json.loads(self.state_file.read_text()) if self.state_file.exists() else {}

    # ----- bookkeeping -----
    def _stage(self, name: str, fn: Callable[[], dict]) -> dict:
        if name in self.state:
            logger.info("[bold]%s[/]: done before, skipped", name, extra={"markup": True})
            return self.state[name]
        logger.info("[bold]%s[/] ...", name, extra={"markup": True})
        start = time.perf_counter()
        result = fn()
        result["seconds"] = round(time.perf_counter() - start, 1)
        self.state[name] = result
        write_json(self.state_file, self.state)
        logger.info("%s finished in %.0f s", name, result["seconds"])
        return result

    def _overrides(self, stage: str, output: Path, extra: dict) -> dict:
        values = {"training.output_dir": str(output), "training.progress": self.progress, **extra}
        values.update((self.config.overrides or {}).get(stage, {}))
        return values

    # ----- stages -----
    def data(self) -> dict:
        from foundation.data.canonical import write_jets
        from foundation.data.dataset import DataConfig, GeneratedDataConfig, build_splits
        from foundation.data.defaults import default_jet_files

        gen = GeneratedDataConfig(jets_per_class=self.config.jets_per_class, seed=self.config.seed, max_particles=self.config.max_particles)
        files = [str(p) for p in default_jet_files(gen)]
        # The held-out test jets of every training stage (all use the default split), as one file.
        splits = build_splits(DataConfig(files=files, max_particles=self.config.max_particles))
        test_file = self.out / "data" / "test.h5"
        write_jets(test_file, splits.test.read_jets(), {"source": "test split of the main job", "files": files})
        return {"files": files, "test_file": str(test_file), "train_jets": len(splits.train), "test_jets": len(splits.test)}

    def inspect(self, data: dict) -> dict:
        from foundation.pipelines.inspect import inspect_jets

        report = inspect_jets(data["files"], plots_dir=self.out / "plots" / "data")
        return {"classes": report["classes"], "plots": report["plots"]}

    def tokenizer(self, data: dict) -> dict:
        from foundation.evaluation.tokenization import evaluate_tokenizer
        from foundation.pipelines.tokenizer import load_tokenizer, load_tokenizer_recipe, train_tokenizer

        recipe, model_config = load_tokenizer_recipe(self.root / self.config.tokenizer_recipe, self._overrides("tokenizer", self.out / "tokenizer", {"data.files": data["files"]}))
        path = train_tokenizer(recipe, model_config, resume=True)
        metrics = evaluate_tokenizer(load_tokenizer(path), data["test_file"], plots_dir=self.out / "plots" / "tokenizer", progress=self.progress)
        return {"path": str(path), **{k: metrics[k] for k in ("code_usage", "codes_used", "perplexity", "jet_mass_relative_rms", "jet_pt_relative_rms", "plots")}}

    def pretrain(self, data: dict, tokenizer: dict) -> dict:
        from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

        recipe = load_pretrain_recipe(self.root / self.config.pretrain_recipe, self._overrides("pretrain", self.out / "pretrain", {"tokenizer": tokenizer["path"], "data.files": data["files"]}))
        bundle = pretrain(recipe, resume=True)
        summary = json.loads((bundle.parent / "train_summary.json").read_text())
        final = {k.removeprefix("eval/"): v for k, v in summary["final"].items() if k.startswith("eval/")}
        return {"bundle": str(bundle), "jets_per_second": summary["jets_per_second"], **final}

    def finetune(self, data: dict, pretrained: dict) -> dict:
        from foundation.pipelines.finetune import finetune, load_finetune_recipe

        recipe = load_finetune_recipe(self.root / self.config.finetune_recipe, self._overrides("finetune", self.out / "finetune", {"model": pretrained["bundle"], "data.files": data["files"]}))
        bundle = finetune(recipe, resume=True)
        metrics = json.loads((bundle.parent / "metrics.json").read_text())
        return {"bundle": str(bundle), **{k: metrics[k] for k in ("auc", "accuracy", "rejection_at_0.3", "rejection_at_0.5", "roc_plot")}}

    def generation(self, data: dict, pretrained: dict) -> dict:
        from foundation.pipelines.generate import evaluate_generation, generate_jets

        generated = generate_jets(pretrained["bundle"], self.config.generated_jets, self.out / "generated.h5", progress=self.progress)
        rows = evaluate_generation(str(generated), data["test_file"], out_dir=self.out / "plots" / "generation")
        plots = json.loads((self.out / "plots" / "generation" / "generation_metrics.json").read_text())["plots"]
        return {"file": str(generated), "metrics": {r["metric"]: {"value": r["value"], "floor": r["floor"]} for r in rows}, "plots": plots}

    def anomaly(self, data: dict, pretrained: dict) -> dict:
        from foundation.pipelines.anomaly import score_file
        from foundation.pipelines.pretrain import load_pretrain_recipe, pretrain

        recipe = load_pretrain_recipe(
            self.root / self.config.background_recipe,
            self._overrides("background", self.out / "anomaly" / "background", {"init_from": pretrained["bundle"], "data.files": data["files"]}),
        )
        background = pretrain(recipe, resume=True)
        report = score_file(
            background, data["test_file"], self.out / "anomaly" / "scores.h5", signal_class="top",
            plots_dir=self.out / "plots" / "anomaly", reference=pretrained["bundle"],
        )
        return {"background_model": str(background), **report}

    def embeddings(self, data: dict, pretrained: dict) -> dict:
        import h5py

        from foundation.pipelines.embed import embed

        path = embed(pretrained["bundle"], data["test_file"], self.out / "embeddings.h5", progress=self.progress)
        with h5py.File(path) as f:
            shape = list(f["embedding"].shape)
        return {"file": str(path), "shape": shape}

    def run(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / "job_config.json", asdict(self.config))
        start = time.perf_counter()
        data = self._stage("data", self.data)
        self._stage("inspect", lambda: self.inspect(data))
        tokenizer = self._stage("tokenizer", lambda: self.tokenizer(data))
        pretrained = self._stage("pretrain", lambda: self.pretrain(data, tokenizer))
        self._stage("finetune", lambda: self.finetune(data, pretrained))
        self._stage("generation", lambda: self.generation(data, pretrained))
        self._stage("anomaly", lambda: self.anomaly(data, pretrained))
        self._stage("embeddings", lambda: self.embeddings(data, pretrained))
        self.state["total_seconds"] = round(sum(v["seconds"] for v in self.state.values() if isinstance(v, dict) and "seconds" in v), 1)
        self.state["wall_seconds_this_run"] = round(time.perf_counter() - start, 1)
        write_json(self.state_file, self.state)
        summary = summarize(self.state)
        (self.out / "summary.md").write_text(summary)
        return self.state


def _total_line(seconds) -> str:
    if not isinstance(seconds, (int, float)):
        return f"total: {seconds}"
    return f"total: {seconds:.0f} s ({seconds / 60:.1f} min) over the stages run"


def summarize(state: dict) -> str:
    """Markdown summary: one line per result, then where the plots and the model bundles are."""
    def f(x, digits=3):
        return f"{x:.{digits}g}" if isinstance(x, (int, float)) else str(x)

    rows = [("stage", "result", "seconds")]
    d, t, p, ft, g, a, e = (state.get(k, {}) for k in ("data", "tokenizer", "pretrain", "finetune", "generation", "anomaly", "embeddings"))
    rows.append(("data", f"{d.get('train_jets')} training / {d.get('test_jets')} test jets (top + QCD, Pythia 8)", f(d.get("seconds"))))
    rows.append(("tokenizer", f"code usage {f(t.get('code_usage'))}, perplexity {f(t.get('perplexity'), 4)}, jet mass resolution {f(100 * t.get('jet_mass_relative_rms', float('nan')), 3)}%", f(t.get("seconds"))))
    rows.append(("pretrain", f"perplexity {f(p.get('perplexity'))}, token accuracy {f(p.get('token_accuracy'))}, masked accuracy {f(p.get('masked_accuracy'))}", f(p.get("seconds"))))
    rows.append(("tagging", f"AUC {f(ft.get('auc'), 4)}, accuracy {f(ft.get('accuracy'))}, 1/eps_B at 0.3: {f(ft.get('rejection_at_0.3'))}, at 0.5: {f(ft.get('rejection_at_0.5'))}", f(ft.get("seconds"))))
    w1 = g.get("metrics", {}).get("w1_mass", {})
    rows.append(("generation", f"W1(mass) {f(w1.get('value'))} GeV (floor {f(w1.get('floor'))} GeV)", f(g.get("seconds"))))
    nll, llr = a.get("nll_per_token", {}), a.get("llr", {})
    anomaly = f"top in QCD: NLL per token AUC {f(nll.get('auc'))} (max SIC {f(nll.get('max_sic'))})"
    if llr:
        anomaly += f"; likelihood ratio AUC {f(llr.get('auc'))} (max SIC {f(llr.get('max_sic'))})"
    rows.append(("anomaly", anomaly, f(a.get("seconds"))))
    rows.append(("embeddings", f"{e.get('shape')} in {e.get('file')}", f(e.get("seconds"))))
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|---|---|---|")
    lines += ["", _total_line(state.get("total_seconds")), "", "model bundles:", f"- pretrained: {p.get('bundle')}", f"- tagger: {ft.get('bundle')}", "", "plots:"]
    for stage in (state.get("inspect", {}), t, ft, a):
        for plot in (stage.get("plots") or ([stage["roc_plot"]] if "roc_plot" in stage else [])):
            lines.append(f"- {plot}")
    return "\n".join(lines) + "\n"
