"""`foundation generate` (sample jets) and `foundation evaluate-generation` (compare with real jets)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from foundation.data.canonical import CanonicalWriter
from foundation.data.jets import JetArrays, jet_kinematics
from foundation.data.sources import JetCollection
from foundation.errors import InputError
from foundation.hub import BundleError, load_bundle
from foundation.models import JetTransformerForCausalJetModeling
from foundation.pipelines.common import write_json

logger = logging.getLogger(__name__)

GENERATIVE_ARCHITECTURES = ("JetTransformerForPretraining", "JetTransformerForCausalJetModeling")
# Tokens hold particles relative to their jet, so every decoded jet comes out along this axis.
DECODED_JET_AXIS = "decoded jets are centred at eta = phi = 0"


def load_generator(model: str | Path, revision: str | None = None):
    bundle = load_bundle(model, model_class=JetTransformerForCausalJetModeling, revision=revision)
    cfg = bundle.model.config
    if cfg.causal_loss_weight <= 0 or not set(cfg.architectures or []) & set(GENERATIVE_ARCHITECTURES):
        raise BundleError(f"{bundle.path}: this model was not trained autoregressively (architectures {cfg.architectures}); generation needs a pretrained next-token model")
    if cfg.num_particle_features:
        raise BundleError(f"{bundle.path}: this model takes particle features beside its tokens (pretrained with particle_features), which sampled particles do not have; generation needs a token-only model")
    bundle.model.eval()
    return bundle


def teacher_forced(
    model: str | Path, data, batch_size: int = 256, limit: int | None = None, spread: bool = False,
    progress: bool = True, desc: str = "jets", revision: str | None = None,
):
    """A bundle's next-token model run over real jets, batch by batch (call under torch.no_grad).

    Returns (model config, the jet data set, an iterator of (batch, CausalJetModelingOutput)).
    """
    from foundation.pipelines.inference import bundle_inputs, inference_device, iterate_batches, jet_dataset

    bundle = load_generator(model, revision)
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config)
    dataset = jet_dataset(data, inputs, limit=limit, spread=spread)
    device = inference_device()
    net = bundle.model.to(device)
    outputs = (
        (batch, net(batch["input_ids"], batch["attention_mask"], batch.get("particle_features")))
        for batch in iterate_batches(dataset, inputs, batch_size, progress, desc=desc, device=device)
    )
    return net.config, dataset, outputs


def _decoded_jets(tokenizer, ids: torch.Tensor, mask: torch.Tensor, label: np.ndarray, class_names: list[str]) -> JetArrays:
    """Token ids (B, N) + mask -> jets of massless particles (no charge or particle id: tokens carry none)."""
    constituents, mask_np = tokenizer.decode_to_constituents(ids, mask)
    return JetArrays(constituents, mask_np, np.zeros(mask_np.shape, np.int8), np.zeros(mask_np.shape, np.int32), label, class_names)


def class_plan(cfg, classes, num_jets: int, source) -> list[tuple[int, int]]:
    """(class index, jets) to sample for `classes`: one name, names (an even split) or
    {name: fraction} (normalised; counts by largest remainder, so they add up to num_jets)."""
    if not cfg.num_generation_classes:
        raise InputError(f"{source}: the model was not trained class-conditionally; drop --class (or continue its training with model.num_generation_classes, pretrain/class_conditional.yaml)")
    if isinstance(classes, str):
        classes = {classes: 1.0}
    elif not isinstance(classes, Mapping):
        classes = {name: 1.0 for name in classes}
    if not classes:
        raise InputError(f"no classes given; the model's classes are {cfg.generation_class_names}")
    unknown = [name for name in classes if name not in cfg.generation_class_names]
    if unknown:
        raise InputError(f"class {unknown[0]!r} is not one of the model's classes {cfg.generation_class_names}")
    weights = np.array([float(w) for w in classes.values()])
    if (weights < 0).any() or not np.isfinite(weights).all() or weights.sum() <= 0:
        raise InputError(f"class fractions must be non-negative with a positive sum, got {dict(classes)}")
    exact = num_jets * weights / weights.sum()
    counts = np.floor(exact).astype(int)
    counts[np.argsort(counts - exact)[: num_jets - counts.sum()]] += 1  # largest remainders
    return [(cfg.generation_class_names.index(name), int(n)) for name, n in zip(classes, counts, strict=True) if n > 0]


@torch.no_grad()
def generate_jets(
    model: str | Path,
    num_jets: int,
    out: str | Path,
    class_name: str | Sequence[str] | Mapping[str, float] | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    batch_size: int = 256,
    seed: int = 0,
    revision: str | None = None,
    progress: bool = True,
    guidance: float = 1.0,
    jet_pt_range: tuple[float, float] | None = None,
) -> Path:
    """Sample `num_jets` token sequences, decode them into particles, write the canonical layout.

    class_name (class-conditional models): one class, several (an even split) or {class: fraction};
    the file then carries the model's class names and each jet's class as its label.
    guidance: classifier-free guidance scale for class-conditional sampling (1: none).
    jet_pt_range: (low, high) GeV: keep only jets whose summed pT lies inside, sampling on until
    each class has its count. This is the fiducial selection that defined the training data
    (e.g. 550-650 GeV): rejection sampling draws from the model's distribution within it. The
    acceptance per class goes into the file's metadata.
    """
    if num_jets <= 0:
        raise InputError(f"number of jets must be positive, got {num_jets}")
    if jet_pt_range is not None and not 0 <= jet_pt_range[0] < jet_pt_range[1]:
        raise InputError(f"jet pT range must be 0 <= low < high GeV, got {tuple(jet_pt_range)}")
    if guidance != 1.0 and class_name is None:
        raise InputError(f"guidance {guidance} steers class-conditional sampling: give --class")
    if guidance < 0:
        raise InputError(f"guidance must be >= 0, got {guidance}")
    bundle = load_generator(model, revision)
    from foundation.pipelines.inference import inference_device

    device = inference_device()
    net, tokenizer, cfg = bundle.model.to(device), bundle.tokenizer.to(device), bundle.model.config
    if class_name is not None:
        plan, class_names = class_plan(cfg, class_name, num_jets, bundle.path), list(cfg.generation_class_names)
    else:
        plan, class_names = [(None, num_jets)], ["generated"]
    generator = torch.Generator(device=device).manual_seed(seed)
    metadata = {
        "source": "foundation generate",
        "model": str(bundle.path),
        "class": None if class_name is None else {class_names[c]: n for c, n in plan},
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "guidance": guidance,
        "jet_pt_range": None if jet_pt_range is None else [float(v) for v in jet_pt_range],
        "seed": seed,
        "jet_axis": DECODED_JET_AXIS,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    n = tokenizer.config.max_particles
    with CanonicalWriter(out, n, class_names, metadata) as writer, tqdm(total=num_jets, unit="jet", desc="generating", disable=not progress) as bar:
        done, acceptance = 0, {}
        for class_index, count in plan:
            kept = sampled = 0
            while kept < count:
                # Without a selection every sampled jet is kept; with one, sample what the
                # acceptance so far says will fill the count (a whole batch at first).
                rate = kept / sampled if sampled else 1.0
                size = min(batch_size, count - kept) if jet_pt_range is None else min(batch_size, max(16, int(np.ceil((count - kept) / max(rate, 0.05)))))
                try:
                    sequences = net.sample(size, class_index=class_index, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator, guidance=guidance)
                except ValueError as err:  # settings this model cannot sample with: one line, naming it
                    raise InputError(f"{bundle.path}: {err}") from None
                ids, mask = tokenizer.from_sequence(sequences, n)
                jets = _decoded_jets(tokenizer, ids, mask, np.full(size, class_index or 0, np.int64), class_names)
                jets.validate(f"generated batch at jet {done}")
                sampled += size
                if jet_pt_range is not None:
                    jets = jets.subset(np.flatnonzero(in_pt_range(jets, jet_pt_range))[: count - kept])
                    if not kept + len(jets) and sampled >= max(20 * count, 1000):
                        raise InputError(f"{bundle.path}: none of {sampled} sampled jets{_class_label(class_names, class_index)} has a jet pT in {list(jet_pt_range)} GeV")
                if len(jets):
                    writer.append(jets)
                kept += len(jets)
                done += len(jets)
                bar.update(len(jets))
                if jet_pt_range is not None:
                    bar.set_postfix(acceptance=f"{kept / sampled:.0%}")
            acceptance[class_names[class_index or 0]] = kept / sampled
        if jet_pt_range is not None:
            metadata["acceptance"] = acceptance
            writer.set_metadata(metadata)
            logger.info("jet pT in %s GeV: acceptance %s", list(jet_pt_range), ", ".join(f"{name} {a:.1%}" for name, a in acceptance.items()))
    return Path(out)


def in_pt_range(jets: JetArrays, pt_range: tuple[float, float]) -> np.ndarray:
    """(J,) bool: jets whose summed constituent pT lies in [low, high) GeV."""
    pt = jet_kinematics(jets.constituents, jets.mask)["pt"]
    return (pt >= pt_range[0]) & (pt < pt_range[1])


def _class_label(class_names: list[str], class_index: int | None) -> str:
    return "" if class_index is None else f" of class {class_names[class_index]}"


@torch.no_grad()
def tokenizer_round_trip(model: str | Path, jets: JetArrays, out: str | Path, batch_size: int = 256, revision: str | None = None) -> Path:
    """Real jets encoded into tokens and decoded back by a bundle's tokenizer, written like generated jets.

    Against other real jets they show how close any generator with this tokenizer can come: the
    tokenizer's share of a generated-vs-real distance (a perfect backbone would reproduce these).
    Labels and class names are kept.
    """
    bundle = load_generator(model, revision)
    from foundation.pipelines.inference import inference_device

    device = inference_device()
    tokenizer = bundle.tokenizer.to(device).eval()
    n = tokenizer.config.max_particles
    metadata = {"source": "foundation tokenizer round trip", "model": str(bundle.path), "jet_axis": DECODED_JET_AXIS}
    with CanonicalWriter(out, n, jets.class_names, metadata) as writer:
        for start in range(0, len(jets), batch_size):
            batch = jets.subset(slice(start, start + batch_size))
            features, mask = tokenizer.jet_features(batch)  # (B, N, F), (B, N)
            mask_t = torch.as_tensor(mask, device=device)
            ids = tokenizer.encode(torch.as_tensor(features, device=device), mask_t)
            decoded = _decoded_jets(tokenizer, ids, mask_t, batch.label, jets.class_names)
            decoded.validate(f"round-tripped batch at jet {start}")
            writer.append(decoded)
    return Path(out)


@torch.no_grad()
def stop_calibration(model: str | Path, data, limit: int | None = 1000, batch_size: int = 256, progress: bool = True) -> dict:
    """How well the model knows where real jets end, teacher-forced on real jets.

    For each jet, the stop-token probability summed over every position up to and including
    its true end (start, p1 .. pk -> stop). For a calibrated model this cumulative hazard
    averages 1 (a jet ends exactly once); below 1 the model expects real jets to run on, above
    1 it expects them to stop sooner. Generated jets that stop early while this is near 1 lose
    their length to the model's own samples, not to how it reads real jets. Measured on `limit`
    jets spread evenly through `data` (files are often written class by class), overall and
    per class.
    """
    cfg, dataset, outputs = teacher_forced(model, data, batch_size, limit, spread=True, progress=progress, desc="stop calibration")
    cumulative, particles, labels = [], [], []
    for batch, out in outputs:
        ids, mask = batch["input_ids"], batch["attention_mask"].bool()  # (B, L)
        stop = torch.softmax(out.logits.float(), -1)[..., cfg.stop_token_id]  # (B, L): P(next = stop)
        # Position i predicts token i + 1: the stop token sits at k + 1 for a jet of k particles,
        # so positions 0 .. k are the ones that could have stopped it.
        count = ((ids < cfg.vocab_codes) & mask).sum(1)  # (B,)
        upto_end = torch.arange(ids.shape[1], device=ids.device)[None] <= count[:, None]  # (B, L)
        cumulative.append((stop * upto_end).sum(1).cpu().numpy())
        particles.append(count.cpu().numpy())
        labels.append(batch["labels"].cpu().numpy())
    cumulative, particles, labels = np.concatenate(cumulative), np.concatenate(particles), np.concatenate(labels)

    def summary(selected: np.ndarray) -> dict:
        values = cumulative[selected]
        return {
            "jets": int(selected.sum()),
            "mean_particles": float(particles[selected].mean()),
            "cumulative_stop_probability": float(values.mean()),
            "cumulative_stop_probability_error": float(values.std(ddof=1) / np.sqrt(len(values))) if len(values) > 1 else float("nan"),
        }

    names = dataset.class_names
    by_class = {names[c] if c < len(names) else str(c): summary(labels == c) for c in np.unique(labels) if c >= 0}
    return {**summary(np.ones(len(cumulative), dtype=bool)), "by_class": by_class}


def _as_tokenizer_sees(jets: JetArrays, max_particles: int) -> JetArrays:
    """Massless constituents, cut to the generated width: what a token model can reproduce."""
    jets = jets.padded_to(max_particles)
    c = jets.constituents.copy()
    c[..., 0] = np.linalg.norm(c[..., 1:], axis=-1) * jets.mask
    return JetArrays(c, jets.mask, jets.charge, jets.pid, jets.label, jets.class_names, jets.metadata)


def evaluate_generation(
    generated,
    reference,
    out_dir: str | Path | None = None,
    reference_class: str | None = None,
    limit: int | None = 50_000,
    raw_reference: bool = False,
    seed: int = 0,
) -> list[dict]:
    """W1 of jet mass, pT, multiplicity and particle features, FPD and KPD, each beside its floor."""
    return evaluate_generation_by_class(generated, reference, [reference_class], out_dir, limit, raw_reference, seed)[reference_class]


def evaluate_generation_by_class(
    generated,
    reference,
    classes: Sequence[str | None],
    out_dir: str | Path | None = None,
    limit: int | None = 50_000,
    raw_reference: bool = False,
    seed: int = 0,
) -> dict[str | None, list[dict]]:
    """`evaluate_generation` for several reference classes at once ({class: rows}; None: all jets).

    Both files are read once and each jet's metrics inputs (kinematics, EFPs) computed once,
    however many classes are compared. Plots and metrics JSON go to out_dir, those of each class
    to out_dir/<class> when several are compared.
    """
    from foundation.evaluation.generation import generation_report, prepare_jets

    gen = JetCollection.open(generated).read_all(limit)
    ref = JetCollection.open(reference).read_all()
    unknown = [c for c in classes if c is not None and c not in ref.class_names]
    if unknown:
        raise InputError(f"class {unknown[0]!r} not in the reference classes {ref.class_names}")
    if not raw_reference:
        ref = _as_tokenizer_sees(ref, gen.max_particles)
    selected = {c: (_jets_of_class(gen, c), _jets_of_class(ref, c, limit, seed)) for c in classes}
    # Prepare only the jets some comparison uses (a large reference is cut to `limit` per class).
    gen_used = np.unique(np.concatenate([g for g, _ in selected.values()]))
    ref_used = np.unique(np.concatenate([r for _, r in selected.values()]))
    gen_prepared, ref_prepared = prepare_jets(gen.subset(gen_used)), prepare_jets(ref.subset(ref_used))
    reports = {}
    for name, (g, r) in selected.items():
        g_sample = gen_prepared.subset(np.searchsorted(gen_used, g))
        r_sample = ref_prepared.subset(np.searchsorted(ref_used, r))
        rows = generation_report(g_sample, r_sample, seed=seed)
        if out_dir is not None:
            folder = Path(out_dir) if name is None or len(classes) == 1 else Path(out_dir) / name
            plots = _generation_plots(g_sample, r_sample, folder)
            write_json(folder / "generation_metrics.json", {"rows": rows, "generated_jets": len(g_sample), "reference_jets": len(r_sample), "plots": [str(p) for p in plots]})
        reports[name] = rows
    return reports


def _jets_of_class(jets: JetArrays, name: str | None, limit: int | None = None, seed: int = 0) -> np.ndarray:
    """Indices of the jets of class `name` (all jets for None, or when the file has no such class:
    unconditional samples), at most `limit` of them drawn at random (sorted)."""
    index = np.arange(len(jets))
    if name is not None and name in jets.class_names:
        index = index[jets.label == jets.class_names.index(name)]
    if limit is not None and len(index) > limit:
        index = np.sort(np.random.default_rng(seed).choice(index, limit, replace=False))
    return index


def _generation_plots(gen, ref, folder: Path) -> list[Path]:
    """Generated-over-reference histograms of jet mass, pT, multiplicity and particle features."""
    from foundation.evaluation.generation import PARTICLE_FEATURES
    from foundation.evaluation.plots import plot_histograms

    plots = []
    for key, label in (("mass", "jet mass [GeV]"), ("pt", "jet $p_T$ [GeV]"), ("multiplicity", "constituents per jet")):
        plots.append(plot_histograms({"reference": ref.jet[key], "generated": gen.jet[key]}, folder / f"generated_{key}.png", xlabel=label))
    for i, name in enumerate(PARTICLE_FEATURES):
        hists = {"reference": ref.particles[..., i][ref.mask], "generated": gen.particles[..., i][gen.mask]}
        plots.append(plot_histograms(hists, folder / f"generated_particle_{name}.png", xlabel=name, log=True))
    return plots
