"""The README's Python quickstart runs as written, on the tiny bundle and jets in place of the main job's."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_readme_python_quickstart_runs(tiny_bundle, jet_files, tmp_path, monkeypatch, capsys):
    block = re.search(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    assert "checkpoints/pretrain-small/model" in block and "jets/top.h5" in block
    code = block.replace("checkpoints/pretrain-small/model", str(tiny_bundle)).replace("jets/top.h5", str(jet_files[1]))
    monkeypatch.chdir(tmp_path)  # the block writes embeddings.h5 and generated.h5 where it runs
    exec(compile(code, "README.md", "exec"), {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("JetTransformerForPretraining ")
    assert (tmp_path / "embeddings.h5").exists() and (tmp_path / "generated.h5").exists()


def test_the_readme_python_api_block_runs(tiny_bundle, tiny_tagger, jet_files, tmp_path, monkeypatch, capsys):
    section = (ROOT / "README.md").read_text().split("## Python API", 1)[1]
    block = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    replacements = {"checkpoints/pretrain-small/model": tiny_bundle, "checkpoints/finetune-top/model": tiny_tagger, "jets/top.h5": jet_files[1]}
    for old, new in replacements.items():
        assert old in block
        block = block.replace(old, str(new))
    monkeypatch.chdir(tmp_path)
    exec(compile(block, "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("['qcd', 'top'] [[")
