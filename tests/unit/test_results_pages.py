"""Results pages: rendered from results.json alone, written whole by write_results, and the committed
ones (and the README's headline table) equal to what their results.json renders to."""

import json
import time

import pytest

from benchmarks import render
from benchmarks.common import base_parser, write_results

PAYLOAD = {
    "benchmark": "tagging",
    "date": "2026-01-02 03:04 UTC",
    "commit": "0123abc",
    "machine": {"cpu": "Test CPU", "cores": 2, "torch_threads": 1, "gpus": ["Test GPU"], "cuda": "12.4", "torch": "2.5", "python": "3.11", "system": "Linux"},
    "command": "python -m benchmarks.tagging --budgets 1",
    "description": "Benchmark 1: top tagging against a peer.\n\n    python -m benchmarks.tagging --budgets 1\n\nThree models on one split.",
    "rows": [{"model": "pretrained", "auc": 0.95}],
    "table": "| model | AUC |\n|---|---|\n| pretrained | 0.9500 |",
    "headline": {"metric": "AUC", "ours": "0.9500", "peer": "ParT 0.9400"},
    "plots": ["roc.png"],
    "steps_rule": "max(300, 20 epochs)",
    "summary": [{"model": "pretrained"}],
}


def test_a_page_is_rendered_from_its_results_json():
    page = render.render_page(PAYLOAD)
    assert page.startswith("# Top tagging against a peer\n")
    for text in ("2026-01-02 03:04 UTC", "`0123abc`", "Test CPU, 2 cores (1 torch threads); Test GPU (CUDA 12.4); torch 2.5",
                 "`python -m benchmarks.tagging --budgets 1`", "| pretrained | 0.9500 |", "![roc.png](tagging/roc.png)",
                 "**AUC**: 0.9500 (peer: ParT 0.9400)", "- steps_rule: `max(300, 20 epochs)`", "Three models on one split."):
        assert text in page
    assert "summary" not in page and page.count("python -m benchmarks.tagging --budgets 1") == 1  # no usage line twice
    assert render.render_page(json.loads(json.dumps(PAYLOAD))) == page  # a function of the JSON alone


def _args(tmp_path, argv):
    parser = base_parser("Benchmark 9: a test.\n\nMore text.", "demo")
    return parser.parse_args(["--out", str(tmp_path / "out"), "--docs", str(tmp_path / "docs"), *argv])


def test_write_results_writes_the_json_the_plots_and_the_page(tmp_path):
    args = _args(tmp_path, ["--seeds", "3"])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "curve.png").write_bytes(b"png")
    write_results(args, "demo", [{"x": 1.5, "inf": float("inf")}], {"table": "| x |\n|---|\n| 1.5 |", "jets": 20})
    saved = json.loads((tmp_path / "docs" / "demo" / "results.json").read_text())
    assert saved == json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["command"] == f"python -m benchmarks.demo --out {tmp_path / 'out'} --docs {tmp_path / 'docs'} --seeds 3"
    assert saved["plots"] == ["curve.png"] and saved["rows"] == [{"x": 1.5, "inf": "inf"}]
    assert set(saved["machine"]) >= {"cpu", "cores", "torch", "gpus"} and saved["commit"]
    assert (tmp_path / "docs" / "demo" / "curve.png").read_bytes() == b"png"
    assert (tmp_path / "docs" / "demo.md").read_text() == render.render_page(saved)
    # A second run replaces the folder whole: the first run's plot does not stay beside the new page.
    args = _args(tmp_path, [])
    time.sleep(0.01)
    write_results(args, "demo", [], {"plots": []})
    assert sorted(p.name for p in (tmp_path / "docs" / "demo").iterdir()) == ["results.json"]
    assert sorted(p.name for p in (tmp_path / "docs").iterdir()) == ["demo", "demo.md"]


def test_a_tiny_run_writes_its_page_beside_its_results_not_into_docs(tmp_path):
    args = base_parser("Benchmark 9: a test.", "demo").parse_args(["--tiny", "--out", str(tmp_path / "out")])
    write_results(args, "demo", [{"x": 1}])
    assert (tmp_path / "out" / "docs" / "demo.md").exists() and (tmp_path / "out" / "docs" / "demo" / "results.json").exists()


def test_render_rewrites_a_hand_edited_page_and_check_finds_it(tmp_path, capsys):
    docs = tmp_path / "results"
    (docs / "tagging").mkdir(parents=True)
    (docs / "tagging" / "results.json").write_text(json.dumps(PAYLOAD))
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n\n{render.HEADLINE_START}\nold\n{render.HEADLINE_END}\n\nrest\n")
    assert render.main(["--docs", str(docs), "--readme", str(readme), "--check"]) == 1
    assert render.main(["--docs", str(docs), "--readme", str(readme)]) == 0
    assert render.main(["--docs", str(docs), "--readme", str(readme), "--check"]) == 0
    text = readme.read_text()
    assert "| Top tagging against a peer, at label budgets | AUC: 0.9500 | ParT 0.9400 | `python -m benchmarks.tagging --budgets 1` |" in text
    assert "not yet re-run" in text and text.endswith("\n\nrest\n")  # the other benchmarks, with their commands
    (docs / "tagging.md").write_text((docs / "tagging.md").read_text().replace("0.9500", "0.9900"))
    assert render.main(["--docs", str(docs), "--readme", str(readme), "--check"]) == 1
    assert "tagging.md: differs" in capsys.readouterr().err


def test_a_page_records_the_weights_it_measured_and_the_readme_says_when_the_name_moved_on(tmp_path, monkeypatch):
    from foundation import registry
    from foundation.hub import write_manifest

    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "model.safetensors").write_bytes(b"weights of version 1")
    write_manifest(bundle)
    entry = registry.RegisteredModel("jet-test", 1, "a test model", "bundle")
    monkeypatch.setattr(registry, "REPOSITORY", tmp_path)
    monkeypatch.setattr(registry, "MODELS", {"jet-test": entry})
    args = _args(tmp_path, [])
    write_results(args, "probe", [], {k: PAYLOAD[k] for k in ("table", "headline")}, models=["jet-test", str(bundle)])
    saved = json.loads((tmp_path / "docs" / "probe" / "results.json").read_text())
    sha = "f58703a9ed36"  # sha256 of b"weights of version 1", first 12
    assert [(m["model"], m["version"], m["weights_sha256"][:12]) for m in saved["models"]] == [("jet-test", 1, sha), (str(bundle), None, sha)]
    assert f"| models | `jet-test` v1 (weights sha256 `{sha}`), `{bundle}` (weights sha256 `{sha}`) |" in render.render_page(saved)
    assert "AUC: 0.9500 |" in render.headline_table(tmp_path / "docs")
    monkeypatch.setitem(registry.MODELS, "jet-test", registry.RegisteredModel("jet-test", 2, "a test model", "bundle"))
    assert "AUC: 0.9500 (measured on jet-test v1; now v2) |" in render.headline_table(tmp_path / "docs")


def test_render_refuses_a_readme_without_the_headline_markers(tmp_path, capsys):
    (tmp_path / "README.md").write_text("# no block\n")
    assert render.main(["--docs", str(tmp_path), "--readme", str(tmp_path / "README.md")]) == 2
    assert "has no headline block" in capsys.readouterr().err


def test_the_committed_pages_and_the_readme_table_are_what_their_results_json_render_to():
    assert render.main(["--check"]) == 0


@pytest.mark.parametrize("name", render.BENCHMARKS)
def test_every_benchmark_has_a_command_for_the_readme(name):
    assert render.default_command(name).startswith(f"python -m benchmarks.{name}")


def test_machine_is_a_record():
    from benchmarks.common import machine

    m = machine()
    assert m["cores"] >= 1 and m["torch"] and isinstance(m["gpus"], list)
