"""Real jets from Pythia 8 + FastJet, following the top tagging landscape recipe at particle level.

14 TeV pp, no multi-parton interactions, anti-kT R = 0.8 on visible stable final-state particles,
jets with 550 < pT < 650 GeV and |eta| < 2. Top jets come from fully hadronic ttbar and are
truth-matched (the top and its b, q, q' within Delta R < R of the jet axis); QCD jets from hard
QCD 2 -> 2 scattering.

Work is split into chunks of jets, each with its own seed drawn from the run seed, so a given
seed gives the same jets whatever the number of worker processes.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import math
import multiprocessing as mp
import os
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from tqdm.auto import tqdm

from foundation.config import check
from foundation.data.jets import JetArrays
from foundation.data.sources import check_output
from foundation.errors import InputError

logger = logging.getLogger(__name__)

CLASS_NAMES = ["qcd", "top"]  # label 0 = QCD, 1 = top, as `is_signal_new` in the landscape set
PROCESS_LABELS = {"qcd": 0, "top": 1}


@dataclass
class GeneratorConfig:
    """Pythia 8 + FastJet settings of `foundation data generate` (the top tagging landscape recipe)."""

    process: Literal["top", "qcd"] = "qcd"  # top: fully hadronic ttbar; qcd: hard QCD 2 -> 2
    sqrt_s: float = 14000.0  # GeV
    jet_radius: float = 0.8  # anti-kT R
    jet_pt_min: float = 550.0  # GeV: jets kept in [jet_pt_min, jet_pt_max]
    jet_pt_max: float = 650.0  # GeV
    jet_abs_eta_max: float = 2.0  # jets kept with |eta| below this
    # Hard-process pT-hat window [jet_pt_min - margin, jet_pt_max + margin]: wide enough that
    # radiation in and out of the cone does not sculpt the jet pT window.
    pthat_margin: float = 100.0
    max_particles: int = 200  # constituents kept per jet, hardest first
    mpi: bool = False  # multi-parton interactions (off, as in the landscape data set)
    truth_match: bool = True  # top jets only: require t, b, q, q' within the jet radius
    extra_settings: list[str] = field(default_factory=list)  # any further Pythia readString lines

    def __post_init__(self):
        check(self.process in PROCESS_LABELS, "process", f"must be one of {list(PROCESS_LABELS)}, got {self.process!r}")
        check(0 < self.jet_radius <= 2.0, "jet_radius", f"must be in (0, 2], got {self.jet_radius}")
        check(0 <= self.jet_pt_min < self.jet_pt_max, "jet_pt_max", "must exceed jet_pt_min >= 0")
        check(self.max_particles > 0, "max_particles", "must be positive")
        check(self.jet_pt_min - self.pthat_margin >= 0, "pthat_margin", "pT-hat window would start below 0")

    def pythia_settings(self, seed: int) -> list[str]:
        settings = [
            f"Beams:eCM = {self.sqrt_s}",
            f"PartonLevel:MPI = {'on' if self.mpi else 'off'}",
            f"PhaseSpace:pTHatMin = {self.jet_pt_min - self.pthat_margin}",
            f"PhaseSpace:pTHatMax = {self.jet_pt_max + self.pthat_margin}",
            "Next:numberCount = 0",
            "Print:quiet = on",
            "Random:setSeed = on",
            f"Random:seed = {seed}",
        ]
        if self.process == "top":
            settings += [
                "Top:gg2ttbar = on",
                "Top:qqbar2ttbar = on",
                "24:onMode = off",  # W -> quarks only: fully hadronic ttbar
                "24:onIfAny = 1 2 3 4 5",
            ]
        else:
            settings += ["HardQCD:all = on"]
        return settings + list(self.extra_settings)


def _delta_r(eta1: float, phi1: float, eta2: float, phi2: float) -> float:
    dphi = (phi1 - phi2 + math.pi) % (2 * math.pi) - math.pi
    return math.hypot(eta1 - eta2, dphi)


def _top_decays(event) -> list[list[tuple[float, float]]]:
    """(eta, phi) of each top and its b, q, q' decay partons, one list per top in the event."""
    tops = []
    seen = set()
    for i in range(event.size()):
        p = event[i]
        if p.idAbs() != 6:
            continue
        last = p.iBotCopyId()
        if last in seen:
            continue
        seen.add(last)
        top = event[last]
        partons = [(top.eta(), top.phi())]
        for d in top.daughterList():
            child = event[d]
            if child.idAbs() == 5:
                partons.append((child.eta(), child.phi()))
            elif child.idAbs() == 24:
                w = event[child.iBotCopyId()]
                partons += [(event[q].eta(), event[q].phi()) for q in w.daughterList()]
        if len(partons) == 4:
            tops.append(partons)
    return tops


def _silence_stdout():
    """Pythia and FastJet print banners from C++; keep them off the user's terminal."""
    @contextlib.contextmanager
    def ctx():
        sys.stdout.flush()
        saved = os.dup(1)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        try:
            yield
        finally:
            os.dup2(saved, 1)
            os.close(devnull)
            os.close(saved)

    return ctx()


def generate_chunk(config: GeneratorConfig, num_jets: int, seed: int) -> JetArrays:
    """Run Pythia until `num_jets` jets pass the selection. Deterministic for a given seed."""
    import fastjet
    import pythia8mc

    with _silence_stdout():
        pythia = pythia8mc.Pythia("", False)
        for line in config.pythia_settings(seed):
            if not pythia.readString(line):
                raise ValueError(f"Pythia rejected the setting {line!r}")
        if not pythia.init():
            raise RuntimeError("Pythia failed to initialise with settings " + "; ".join(config.pythia_settings(seed)))
        jet_def = fastjet.JetDefinition(fastjet.antikt_algorithm, config.jet_radius)
        # Touch FastJet once under the silencer so its banner goes nowhere.
        fastjet.ClusterSequence([fastjet.PseudoJet(1.0, 0.0, 0.0, 1.0)], jet_def).inclusive_jets(0.0)

    n = config.max_particles
    constituents = np.zeros((num_jets, n, 4), dtype=np.float32)
    mask = np.zeros((num_jets, n), dtype=bool)
    charge = np.zeros((num_jets, n), dtype=np.int8)
    pid = np.zeros((num_jets, n), dtype=np.int32)
    filled = 0
    events = 0
    max_events = 1000 + 200 * num_jets  # guard against a selection that never passes
    while filled < num_jets:
        events += 1
        if events > max_events:
            raise RuntimeError(
                f"only {filled} of {num_jets} jets passed the selection in {events} events; check the settings"
            )
        if not pythia.next():
            continue
        event = pythia.event
        inputs = []
        info = []
        for i in range(event.size()):
            p = event[i]
            if p.isFinal() and p.isVisible():
                pj = fastjet.PseudoJet(p.px(), p.py(), p.pz(), p.e())
                pj.set_user_index(len(info))
                inputs.append(pj)
                info.append((round(p.charge()), p.id()))
        sequence = fastjet.ClusterSequence(inputs, jet_def)
        top_partons = _top_decays(event) if config.process == "top" and config.truth_match else None
        for jet in fastjet.sorted_by_pt(sequence.inclusive_jets(config.jet_pt_min)):
            if filled >= num_jets:
                break
            if not (config.jet_pt_min < jet.pt() < config.jet_pt_max and abs(jet.eta()) < config.jet_abs_eta_max):
                continue
            if top_partons is not None:
                eta, phi = jet.eta(), jet.phi_std()
                if not any(all(_delta_r(eta, phi, pe, pp) < config.jet_radius for pe, pp in partons) for partons in top_partons):
                    continue
            parts = fastjet.sorted_by_pt(jet.constituents())[:n]
            for k, c in enumerate(parts):
                constituents[filled, k] = (c.e(), c.px(), c.py(), c.pz())
                q, pdg = info[c.user_index()]
                charge[filled, k] = q
                pid[filled, k] = pdg
            mask[filled, : len(parts)] = True
            filled += 1
    label = np.full(num_jets, PROCESS_LABELS[config.process], dtype=np.int64)
    return JetArrays(constituents, mask, charge, pid, label, list(CLASS_NAMES), {"events": events})


def _run_chunk(args: tuple[GeneratorConfig, int, int]) -> JetArrays:
    config, num_jets, seed = args
    return generate_chunk(config, num_jets, seed)


def _default_signals() -> None:
    """In each pool worker: SIGTERM kills at once and Ctrl-C is left to the parent. A worker must not
    run the CLI's SIGTERM handler (foundation.outputs raises SystemExit to clean up its .tmp files):
    in a worker blocked on the pool's task-queue lock that cleanup never ends, and Pool.terminate()
    waited for it forever after the last chunk."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def worker_pool(workers: int):
    """Workers from a fork server: each starts from a clean single-threaded process, so none inherits
    the parent's Python SIGTERM handler or a lock that another of the parent's threads held when it
    forked. Forked straight from a parent with threads (tqdm's monitor, fsspec's loop), a worker could
    hang before its initializer ran and then ignore SIGTERM, and Pool.terminate() waited for it for
    ever (seen once in the test suite). Each chunk builds its own Pythia, so nothing is shared."""
    return mp.get_context("forkserver").Pool(workers, initializer=_default_signals)


def chunk_seeds(seed: int, process: str, num_chunks: int) -> list[int]:
    """Independent Pythia seeds (1..900000000) for each chunk, derived from the run seed."""
    entropy = [seed, PROCESS_LABELS[process]]
    states = np.random.SeedSequence(entropy).generate_state(num_chunks, dtype=np.uint32)
    return [int(s % 900_000_000) + 1 for s in states]


def shard_chunks(shard: tuple[int, int], num_chunks: int) -> tuple[int, int]:
    """[first, last) chunk indices of shard (i, n): n contiguous, nearly equal ranges."""
    index, count = shard
    if not 0 <= index < count:
        raise ValueError(f"shard index must be in 0..{count - 1}, got {index}")
    if count > num_chunks:
        raise ValueError(f"{count} shards need at least as many chunks; the run has {num_chunks} (lower chunk_jets)")
    bounds = np.linspace(0, num_chunks, count + 1).round().astype(int)
    return int(bounds[index]), int(bounds[index + 1])


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("foundation", "pythia8mc", "fastjet", "numpy", "torch", "h5py"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


def generate(
    config: GeneratorConfig,
    num_jets: int,
    out: str | Path,
    seed: int = 0,
    workers: int = 1,
    chunk_jets: int = 250,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
) -> Path:
    """Generate `num_jets` jets into the canonical HDF5 file `out`, in parallel over `workers`.

    shard=(i, n): only the i-th of n contiguous ranges of the run's chunks (each chunk keeps its
    own seed), so n jobs (SLURM array tasks, nodes) make disjoint files whose concatenation in
    shard order is exactly the file one job would write.
    """
    from foundation.data.canonical import CanonicalWriter

    if num_jets <= 0:
        raise InputError(f"--jets: number of jets must be positive, got {num_jets}")
    if workers <= 0:
        raise InputError(f"--workers: number of workers must be positive, got {workers}")
    check_output(out)
    sizes = [chunk_jets] * (num_jets // chunk_jets) + ([num_jets % chunk_jets] if num_jets % chunk_jets else [])
    seeds = chunk_seeds(seed, config.process, len(sizes))
    if shard is not None:
        first, last = shard_chunks(shard, len(sizes))
        sizes, seeds = sizes[first:last], seeds[first:last]
        num_jets = sum(sizes)
    metadata = {
        "source": "pythia8mc + fastjet (foundation data generate)",
        "generator": asdict(config),
        "pythia_settings": config.pythia_settings(seed="<per chunk>"),  # type: ignore[arg-type]
        "seed": seed,
        "chunk_jets": chunk_jets,
        "chunk_seeds": seeds,
        "workers": workers,
        "shard": None if shard is None else {"index": shard[0], "num_shards": shard[1], "chunks": [first, last]},
        "versions": package_versions(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    tasks = [(config, size, s) for size, s in zip(sizes, seeds, strict=True)]
    events = 0
    bar = tqdm(total=num_jets, unit="jet", desc=f"generating {config.process} jets", disable=not progress, smoothing=0.1)
    with CanonicalWriter(out, config.max_particles, CLASS_NAMES, metadata) as writer:
        if workers == 1:
            results = map(_run_chunk, tasks)
            pool = None
        else:
            pool = worker_pool(workers)
            results = pool.imap(_run_chunk, tasks)  # ordered: output independent of worker count
        finished = False
        try:
            for jets in results:
                events += jets.metadata.get("events", 0)
                jets.metadata = {}
                writer.append(jets)
                bar.update(len(jets))
            finished = True
        finally:
            if pool is not None:
                # all chunks done: idle workers leave when told; else (an error, Ctrl-C) they are killed
                pool.close() if finished else pool.terminate()
                pool.join()
        metadata["events"] = events
        writer.set_metadata(metadata)
    bar.close()
    logger.info("wrote %d %s jets from %d events to %s", num_jets, config.process, events, out)
    return Path(out)
