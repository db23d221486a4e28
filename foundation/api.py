"""The Python API on jets held in memory: tokenize, embed and tag numpy or awkward arrays.

    import foundation
    ids, attention = foundation.tokenize("jet-foundation-small", jets, mask)   # (J, N + 2) each
    vectors = foundation.embed("jet-foundation-small", jets, mask)             # (J, D)
    scores = foundation.tag("runs/top-tagger/bundle", jets, mask)              # (J, C)

`jets` is a numpy array (J, N, 4) of constituent E, px, py, pz in GeV with a mask (J, N) (without
one, constituents with E > 0 are real), or an awkward array of J jets of constituents: records
with fields E, px, py, pz, or lists of 4 numbers in that order. Models and tokenizers are a
loaded Bundle, a bundle folder, a registered name or a hub repo id. The jets go through the same
datasets, collators and models as the files of `foundation embed` / `predict` / `tokenizer
encode`, so the numbers are the same.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from foundation.errors import InputError

MOMENTUM_FIELDS = ("E", "px", "py", "pz")


def as_jet_arrays(jets, mask=None):
    """JetArrays from (J, N, 4) numpy + (J, N) mask, or an awkward array of constituents.
    Charge and PDG id are unknown (0); every jet gets the class 'jet'."""
    from foundation.data.jets import JetArrays

    if isinstance(jets, JetArrays):
        return jets
    if type(jets).__module__.startswith("awkward"):
        if mask is not None:
            raise InputError("mask: awkward arrays carry their own lengths; pass no mask")
        jets, mask = _from_awkward(jets)
    jets = np.asarray(jets, dtype=np.float32)
    if jets.ndim != 3 or jets.shape[-1] != 4:
        raise InputError(f"jets: expected shape (J, N, 4) of E, px, py, pz; got {jets.shape}")
    mask = jets[..., 0] > 0 if mask is None else np.asarray(mask, dtype=bool)
    if mask.shape != jets.shape[:2]:
        raise InputError(f"mask: expected shape {jets.shape[:2]} (jets, constituents); got {mask.shape}")
    count, n = jets.shape[:2]
    zeros = np.zeros((count, n), dtype=np.int8)
    return JetArrays(
        constituents=np.where(mask[..., None], jets, 0).astype(np.float32),
        mask=mask,
        charge=zeros,
        pid=zeros.astype(np.int32),
        label=np.zeros(count, dtype=np.int64),
        class_names=["jet"],
    )


def _from_awkward(jets) -> tuple[np.ndarray, np.ndarray]:
    """(J, var) constituents -> (J, N, 4) padded numpy and (J, N) mask, N the longest jet."""
    import awkward as ak

    counts = ak.to_numpy(ak.num(jets, axis=1)).astype(np.int64)  # (J,)
    fields = ak.fields(jets)
    if fields:
        missing = [f for f in MOMENTUM_FIELDS if f not in fields]
        if missing:
            raise InputError(f"jets: awkward records need fields {list(MOMENTUM_FIELDS)}; missing {missing} (has {fields})")
        flat = np.stack([ak.to_numpy(ak.flatten(jets[f], axis=1)) for f in MOMENTUM_FIELDS], axis=-1)  # (P, 4)
    else:
        flat = ak.to_numpy(ak.to_regular(ak.flatten(jets, axis=1), axis=1))  # (P, 4)
    n = max(int(counts.max()) if len(counts) else 0, 1)
    mask = np.arange(n)[None] < counts[:, None]  # (J, N)
    padded = np.zeros((len(counts), n, 4), dtype=np.float32)
    padded[mask] = flat  # row-major order of mask matches the flattened constituents
    return padded, mask


def _bundle(model, model_class, revision: str | None = None):
    from foundation.hub import Bundle, load_bundle

    if isinstance(model, Bundle):
        return model
    return load_bundle(model, model_class=model_class, revision=revision)


def _collection(jets, mask):
    from foundation.data.sources import ArraySource, JetCollection

    return JetCollection([ArraySource(as_jet_arrays(jets, mask))])


def tokenize(tokenizer, jets, mask=None, batch_size: int = 512) -> tuple[np.ndarray, np.ndarray]:
    """Token sequences of the jets: ids (J, N + 2) int32 [start, codes..., stop, pad...] and their
    attention mask (J, N + 2) bool, N the tokenizer's max_particles; what `foundation tokenizer
    encode` writes. `tokenizer`: a JetTokenizer, a Bundle, a tokenizer or bundle folder, a name."""
    from foundation.hub import MANIFEST, Bundle
    from foundation.pipelines.inference import inference_device
    from foundation.pipelines.tokenizer import encode_jets, load_tokenizer
    from foundation.tokenizer import JetTokenizer

    if isinstance(tokenizer, Bundle):
        tokenizer = tokenizer.tokenizer
    elif not isinstance(tokenizer, JetTokenizer):
        folder = Path(tokenizer)
        is_tokenizer_folder = folder.is_dir() and not (folder / MANIFEST).exists()  # a bundle has a manifest
        tokenizer = load_tokenizer(folder) if is_tokenizer_folder else _bundle(tokenizer, None).tokenizer
    device = inference_device()
    tokenizer = tokenizer.to(device).eval()
    arrays = _collection(jets, mask).read_all()
    parts = [encode_jets(tokenizer, arrays.subset(slice(s, s + batch_size)), device) for s in range(0, len(arrays), batch_size)]
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def embed(model, jets, mask=None, per_particle: bool = False, batch_size: int = 256, revision: str | None = None) -> np.ndarray:
    """Per-jet embeddings (J, D) float32: the backbone's output averaged over the jet's tokens, as
    `foundation embed` writes them. With per_particle, (J, N, D) hidden states of the constituents
    in pT order (hardest first; zeros past each jet's last one), N the model's max_particles."""
    import torch

    from foundation.models import JetTransformerModel
    from foundation.pipelines.embed import embedding_batches
    from foundation.pipelines.inference import bundle_inputs, inference_device, jet_dataset

    bundle = _bundle(model, JetTransformerModel, revision)
    device = inference_device()
    backbone = bundle.model.base_model.eval().to(device)  # a bundle of any head: its backbone
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config, kinematics=backbone.config.interaction_attention)
    dataset = jet_dataset(_collection(jets, mask), inputs)
    with torch.no_grad():
        parts = [emb for emb, *_ in embedding_batches(backbone, dataset, inputs, per_particle, batch_size, progress=False, device=device)]
    return np.concatenate(parts)


def tag(model, jets, mask=None, batch_size: int = 256, revision: str | None = None) -> np.ndarray:
    """Class probabilities (J, C) of a fine-tuned tagger, columns in the order of class_names(model);
    the score_<class> columns `foundation predict` writes."""
    from foundation.models import JetTransformerForJetClassification
    from foundation.pipelines.inference import bundle_inputs, jet_dataset
    from foundation.pipelines.predict import class_probabilities

    bundle = _bundle(model, JetTransformerForJetClassification, revision)
    if not isinstance(bundle.model, JetTransformerForJetClassification):
        raise InputError(f"{bundle.path}: not a tagger (a bundle fine-tuned with `foundation finetune`)")
    inputs = bundle_inputs(bundle.tokenizer, bundle.data_config, kinematics=bundle.model.config.interaction_attention)
    dataset = jet_dataset(_collection(jets, mask), inputs)
    probs, _ = class_probabilities(bundle.model, dataset, inputs, batch_size, progress=False)
    return probs


def class_names(model) -> list[str]:
    """The classes of a tagger, in the order of tag()'s columns."""
    from foundation.models import JetTransformerForJetClassification
    from foundation.pipelines.predict import class_names_of

    return class_names_of(_bundle(model, JetTransformerForJetClassification).model)
