"""Generated jets must be physics: top mass peak, QCD falling spectrum, the selection applied."""

import json
import threading

import h5py
import numpy as np

from foundation.data.canonical import CanonicalSource
from foundation.data.generation import GeneratorConfig, generate
from foundation.data.jets import jet_kinematics


def test_top_jets_peak_at_the_top_mass(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    top_mass = kin["mass"][jets.label == 1]
    assert 160 < np.median(top_mass) < 190
    assert np.mean((top_mass > 140) & (top_mass < 210)) > 0.6


def test_qcd_jets_have_a_falling_mass_spectrum(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    qcd_mass = kin["mass"][jets.label == 0]
    assert np.median(qcd_mass) < 110
    counts, _ = np.histogram(qcd_mass, bins=[40, 90, 140, 190, 240])
    assert counts[0] > counts[2] > counts[3]


def test_selection_and_ordering(jets):
    kin = jet_kinematics(jets.constituents, jets.mask)
    # The selection is on the full jet; kept constituents (64 of them at most) carry nearly all its pT.
    assert np.all(kin["pt"] < 650.5) and np.all(kin["pt"] > 500)
    assert np.mean(kin["pt"] > 550) > 0.9
    assert np.all(np.abs(kin["eta"]) < 2.05)
    c = jets.constituents
    pt = np.hypot(c[..., 1], c[..., 2])
    pt = np.where(jets.mask, pt, -1)
    assert np.all(np.diff(pt, axis=1) <= 1e-3), "constituents must be pT-ordered"
    assert np.all(jets.mask[:, 0]) and np.all(jets.mask.sum(1) >= 5)
    charged = jets.charge[jets.mask] != 0
    assert 0.3 < charged.mean() < 0.9, "about 2/3 of visible particles are charged"
    assert set(np.unique(np.abs(jets.pid[jets.mask]))) >= {22, 211}


def test_same_seed_same_jets_whatever_the_worker_count(tmp_path):
    config = GeneratorConfig(process="qcd", max_particles=32)
    a = generate(config, 12, tmp_path / "a.h5", seed=3, workers=1, chunk_jets=6, progress=False)
    b = generate(config, 12, tmp_path / "b.h5", seed=3, workers=2, chunk_jets=6, progress=False)
    c = generate(config, 12, tmp_path / "c.h5", seed=4, workers=1, chunk_jets=6, progress=False)
    ja, jb, jc = (CanonicalSource(p).read(0, 12) for p in (a, b, c))
    assert np.array_equal(ja.constituents, jb.constituents)
    assert not np.array_equal(ja.constituents, jc.constituents)


def test_file_records_settings_seed_and_versions(jet_files):
    with h5py.File(jet_files[1], "r") as f:
        meta = json.loads(f.attrs["metadata"])
        assert f.attrs["format"] == "foundation-jets"
        assert json.loads(f.attrs["class_names"]) == ["qcd", "top"]
    assert meta["seed"] == 7
    assert meta["generator"]["process"] == "top"
    assert meta["generator"]["jet_radius"] == 0.8
    assert "pythia8mc" in meta["versions"] and "fastjet" in meta["versions"]
    assert any("Top:gg2ttbar" in s for s in meta["pythia_settings"])


def test_shards_are_disjoint_and_together_equal_the_unsharded_file(tmp_path):
    """`data generate --shard I --num-shards N`: each shard runs its own chunks (own seeds); in shard
    order they are exactly the file one job writes, so SLURM array tasks can make a large set."""
    config = GeneratorConfig(process="qcd", max_particles=16)
    whole = CanonicalSource(generate(config, 12, tmp_path / "whole.h5", seed=5, chunk_jets=4, progress=False)).read(0, 12)
    parts = [CanonicalSource(generate(config, 12, tmp_path / f"s{i}.h5", seed=5, chunk_jets=4, progress=False, shard=(i, 2))) for i in range(2)]
    assert [len(p) for p in parts] == [8, 4]  # chunks [0, 2) and [2, 3)
    joined = np.concatenate([parts[0].read(0, 8).constituents, parts[1].read(0, 4).constituents])
    np.testing.assert_array_equal(joined, whole.constituents)
    assert not np.array_equal(parts[0].read(0, 4).constituents, parts[1].read(0, 4).constituents)


def test_other_ranks_wait_for_the_default_data_and_time_out_clearly(tmp_path, monkeypatch):
    """Only rank 0 generates the default data; rank 1 waits for the completed file (never
    generates into the same temporary file), and says what to do when it does not come."""

    import pytest

    from foundation.data.dataset import GeneratedDataConfig
    from foundation.data.defaults import WAIT_ENV, default_jet_files
    from foundation.errors import InputError

    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv(WAIT_ENV, "1.5")
    config = GeneratedDataConfig(jets_per_class=7, seed=3, max_particles=16)
    with pytest.raises(InputError, match="rank 1 waited .* for rank 0 to generate .*foundation data generate"):
        default_jet_files(config, root=tmp_path)
    assert not list(tmp_path.iterdir())  # rank 1 wrote nothing

    monkeypatch.setenv(WAIT_ENV, "30")
    names = ("qcd-7-n16-seed3.h5", "top-7-n16-seed3.h5")
    timer = threading.Timer(1.0, lambda: [(tmp_path / n).write_bytes(b"made by rank 0") for n in names])
    timer.start()  # rank 0 finishing its files while rank 1 waits
    assert default_jet_files(config, root=tmp_path) == [tmp_path / n for n in names]
    timer.join()


def _sigterm_action(_):
    import signal

    return signal.getsignal(signal.SIGTERM) is signal.SIG_DFL, signal.getsignal(signal.SIGINT) is signal.SIG_IGN


def _terminate_within(pool, seconds: float) -> None:
    """pool.terminate() + join() in a thread: a hang fails the test instead of stalling the suite."""
    stopper = threading.Thread(target=lambda: (pool.terminate(), pool.join()), daemon=True)
    stopper.start()
    stopper.join(seconds)
    assert not stopper.is_alive(), f"Pool.terminate() still waiting on its workers after {seconds} s"


def test_pool_workers_die_on_sigterm_even_under_the_cleanup_handler():
    """The CLI's SIGTERM handler (exit_on_sigterm: SystemExit, cleanup) must not reach the pool's
    workers: in a worker blocked on the task queue it never finished, and Pool.terminate() after
    the last chunk waited forever (a shard of launch/generate_data.sh hung so)."""
    import signal

    from foundation.data.generation import worker_pool
    from foundation.outputs import exit_on_sigterm

    previous = signal.getsignal(signal.SIGTERM)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        exit_on_sigterm()
        pool = worker_pool(2)
        try:
            assert pool.map(_sigterm_action, range(4)) == [(True, True)] * 4
        finally:
            _terminate_within(pool, seconds=60)
        for _ in range(5):  # terminated at once: workers still starting must die too
            _terminate_within(worker_pool(2), seconds=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
