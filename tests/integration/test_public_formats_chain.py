"""The same jets in all three formats give the same features, and a tagger evaluates on each."""

import numpy as np
import pytest
from helpers.public_formats import JETCLASS_CLASSES, write_jetclass_file, write_toptagging_file
from typer.testing import CliRunner

from foundation.cli import app
from foundation.data.dataset import JetDataset
from foundation.data.features import FEATURE_NAMES
from foundation.data.sources import JetCollection
from foundation.pipelines.finetune import evaluate_tagger, finetune, load_finetune_recipe


@pytest.fixture(scope="module")
def three_formats(jets, tmp_path_factory):
    root = tmp_path_factory.mktemp("formats")
    sample = jets.subset(np.r_[0:60, 150:210])  # 60 QCD, 60 top
    from foundation.data.canonical import write_jets

    canonical = write_jets(root / "canonical.h5", sample)
    landscape = root / "landscape.h5"
    write_toptagging_file(landscape, sample, n_constituents=sample.max_particles)
    jetclass = root / "jetclass.root"
    onehot = np.eye(len(JETCLASS_CLASSES), dtype=bool)[np.where(sample.label == 1, JETCLASS_CLASSES.index("Tbqq"), JETCLASS_CLASSES.index("QCD"))]
    write_jetclass_file(jetclass, sample, onehot=onehot)
    return {"canonical": canonical, "toptagging": landscape, "jetclass": jetclass}


def test_all_formats_give_the_same_features(three_formats):
    features = {}
    for name, path in three_formats.items():
        collection = JetCollection.open(path, max_particles=64)
        assert collection.sources[0].format_name == name
        ds = JetDataset(collection, np.arange(len(collection)), list(FEATURE_NAMES), 64)
        features[name] = ds.__getitems__(list(range(len(ds))))
    ref = features["canonical"]
    for name in ("toptagging", "jetclass"):
        assert np.array_equal(features[name]["mask"], ref["mask"]), name
        # Charge and particle type are unknown in the landscape set; kinematics agree everywhere.
        kinematic = [i for i, n in enumerate(FEATURE_NAMES) if n in ("log_pt", "log_e", "log_pt_rel", "log_e_rel", "eta_rel", "phi_rel", "delta_r")]
        assert np.allclose(features[name]["features"][..., kinematic], ref["features"][..., kinematic], atol=1e-5), name
    assert np.allclose(features["jetclass"]["features"], ref["features"], atol=1e-5), "JetClass keeps charge and particle type"


def test_tagger_evaluates_on_every_format(jet_files, tiny_bundle, three_formats, tmp_path):
    recipe = load_finetune_recipe("finetune/top_tagging_tiny.yaml", {"model": str(tiny_bundle), "training.output_dir": str(tmp_path / "ft"), "training.progress": False})
    recipe.data.files = [str(p) for p in jet_files]
    tagger = finetune(recipe)
    aucs = {}
    for name in ("canonical", "toptagging"):
        aucs[name] = evaluate_tagger(str(tagger), str(three_formats[name]), out_dir=tmp_path / name)["auc"]
    result = CliRunner().invoke(app, ["evaluate", "--model", str(tagger), "--data", str(three_formats["jetclass"]), "--class-map", "QCD=qcd", "--class-map", "Tbqq=top"])
    assert result.exit_code == 0, result.output
    assert aucs["canonical"] > 0.6
    assert aucs["toptagging"] == pytest.approx(aucs["canonical"], abs=0.02)
    with pytest.raises(ValueError, match="class map"):
        evaluate_tagger(str(tagger), str(three_formats["jetclass"]))
