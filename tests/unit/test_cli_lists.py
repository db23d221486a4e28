"""List options take several values after one flag (--data a.h5 b.h5) as well as repeated flags."""

import pytest
from typer.testing import CliRunner

import foundation.pipelines.generate as generate_module
from foundation.cli import app, spread_values


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--data", "a", "b", "--out", "o"], ["--data", "a", "--data", "b", "--out", "o"]),
        (["--data", "a", "--data", "b"], ["--data", "a", "--data", "b"]),
        (["--data=a", "b", "--limit", "3"], ["--data=a", "--data", "b", "--limit", "3"]),
        (["--out", "o", "--data", "a"], ["--out", "o", "--data", "a"]),
    ],
)
def test_spread_values(args, expected):
    assert spread_values(args, {"--data"}) == expected


def test_readme_evaluate_generation_takes_two_references(monkeypatch, tmp_path):
    seen = {}

    def fake_evaluate(generated, reference, *rest):
        seen.update(generated=generated, reference=reference)
        return []

    monkeypatch.setattr(generate_module, "evaluate_generation", fake_evaluate)
    args = ["evaluate-generation", "--generated", "gen.h5", "--reference", "jets/qcd.h5", "jets/top.h5"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert seen == {"generated": ["gen.h5"], "reference": ["jets/qcd.h5", "jets/top.h5"]}
    result = CliRunner().invoke(app, [*args[:3], "--reference", "jets/qcd.h5", "--reference", "jets/top.h5"])
    assert result.exit_code == 0 and seen["reference"] == ["jets/qcd.h5", "jets/top.h5"]
