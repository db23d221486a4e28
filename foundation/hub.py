"""Model bundles: one folder (or Hugging Face hub repo) per pretrained or fine-tuned model.

    config.json, model.safetensors   the jet transformer (any head)
    tokenizer/                       its VQ-VAE tokenizer (config.json, model.safetensors)
    data_config.yaml                 features, scaling and data settings it was trained with
    README.md                        model card: data, size, objective, metrics
    manifest.json                    sha256 of every other file; verified on every load

Loading takes a registered name (foundation.registry), a local folder or a hub repo id (downloaded with huggingface_hub into the usual
cache, revision pinned if asked; HF_HUB_OFFLINE=1 works from the cache). Only safetensors
weights are read, never pickles.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

from foundation.errors import one_line

logger = logging.getLogger(__name__)

MANIFEST = "manifest.json"
DATA_CONFIG = "data_config.yaml"
TOKENIZER_DIR = "tokenizer"


class BundleError(ValueError):
    """A model bundle is missing, incomplete or corrupted."""


@dataclass
class Bundle:
    path: Path
    model: object
    tokenizer: object
    data_config: dict


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_manifest(folder: str | Path) -> Path:
    folder = Path(folder)
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.name != MANIFEST and not p.name.endswith(".tmp"))
    manifest = {"files": {str(p.relative_to(folder)): {"sha256": _sha256(p), "bytes": p.stat().st_size} for p in files}}
    tmp = folder / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2))
    os.replace(tmp, folder / MANIFEST)
    return folder / MANIFEST


def _read_manifest(folder: Path) -> dict[str, dict]:
    """{relative path: {"sha256", "bytes"}} from the bundle's manifest, refused unless well formed."""
    path = folder / MANIFEST
    if not path.exists():
        if _model_type(folder / "config.json") == "jet_tokenizer":
            raise BundleError(f"{folder}: is a tokenizer folder, not a model bundle (give it as the tokenizer: --tokenizer, or the recipe's `tokenizer`)")
        raise BundleError(f"{folder}: no {MANIFEST}; not a foundation model bundle (or an incomplete download)")
    try:
        files = json.loads(path.read_text())["files"]
        if not isinstance(files, dict) or not all(isinstance(e, dict) and isinstance(e.get("sha256"), str) for e in files.values()):
            raise TypeError("expected {'files': {name: {'sha256': ...}}}")
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise BundleError(f"{path}: not valid JSON ({err}); the bundle is corrupted") from None
    except (KeyError, TypeError) as err:
        raise BundleError(f"{path}: not a bundle manifest ({err})") from None
    return files


def _model_type(config: Path) -> str | None:
    try:
        return json.loads(config.read_text()).get("model_type")
    except (OSError, ValueError, AttributeError):
        return None


def _loaded_files(folder: Path) -> list[Path]:
    """Every file of the bundle that loading reads: configs, weights, tokenizer, data config (all
    but the model card, the manifest itself and hub bookkeeping such as .gitattributes)."""
    return sorted(
        p for p in folder.rglob("*")
        if p.is_file() and p.name not in (MANIFEST, "README.md") and not p.name.startswith(".") and not p.name.endswith(".tmp")
    )


# What loading a bundle reads; weights may be sharded (model.safetensors.index.json + shards).
REQUIRED_FILES = ("config.json", "model.safetensors", f"{TOKENIZER_DIR}/config.json", f"{TOKENIZER_DIR}/model.safetensors", DATA_CONFIG)


def verify_bundle(folder: str | Path) -> None:
    """Every file loading reads is present and listed in the manifest, every file listed exists
    with its checksum; pickled weights are refused."""
    folder = Path(folder)
    files = _read_manifest(folder)
    for pickled in list(folder.glob("*.bin")) + list(folder.glob("*.pt")) + list(folder.glob("*.pth")):
        raise BundleError(f"{pickled}: pickled weights are never loaded; bundles hold safetensors only")
    for needed in REQUIRED_FILES:
        sharded = needed.endswith(".safetensors") and (folder / (needed + ".index.json")).exists()
        if not (folder / needed).exists() and not sharded:
            raise BundleError(f"{folder / needed}: missing; the bundle is incomplete")
    for path in _loaded_files(folder):
        if path.relative_to(folder).as_posix() not in files:
            raise BundleError(f"{path}: not listed in {MANIFEST}; the bundle was changed after it was written (or its manifest is incomplete)")
    for name, entry in files.items():
        path = folder / name
        if not path.exists():
            raise BundleError(f"{path}: listed in {MANIFEST} but missing")
        if _sha256(path) != entry["sha256"]:
            raise BundleError(f"{path}: checksum does not match {MANIFEST}; the file is corrupted or was changed")


def looks_like_path(model: str) -> bool:
    """A name that can only mean a local folder: ./x, ../x, /x, ~/x, more or less than one '/',
    another separator, or an owner/name whose owner part is a local folder."""
    text = str(model)
    if text.startswith((".", "/", "~")) or text.count("/") != 1 or (os.sep != "/" and os.sep in text):
        return True
    return Path(text.split("/")[0]).is_dir()


def resolve(model: str | Path, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """A registered name (foundation.registry), a local folder, or the snapshot folder of a hub
    repo id (downloaded or from the cache). A name that can only be a path (`looks_like_path`) and
    does not exist is refused at once."""
    from foundation.registry import locate, lookup

    registered = lookup(model)
    if registered is not None:
        return locate(registered, revision, cache_dir)
    local = Path(model).expanduser()
    if local.exists():
        if not local.is_dir():
            raise BundleError(f"{local}: expected a model folder, got a file")
        return local
    if looks_like_path(str(model)):
        raise BundleError(f"{model}: no such folder, no registered model (`foundation models`), and not a hub repo id of the form 'owner/name'")
    return download(str(model), revision, cache_dir)


def download(repo_id: str, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The snapshot folder of a hub repo (from the cache when it is there and pinned, or offline)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    name = f"{repo_id}@{revision}" if revision else repo_id
    try:
        return Path(snapshot_download(repo_id=repo_id, revision=revision, cache_dir=cache_dir))
    except LocalEntryNotFoundError as err:
        raise BundleError(f"{name}: no such folder, not in the local hub cache, and the hub cannot be reached ({one_line(err)})") from None
    except HfHubHTTPError as err:
        raise BundleError(f"{name}: no such folder, and the hub download failed ({one_line(err)})") from None
    except ValueError as err:  # huggingface_hub's check of the repo id's characters
        raise BundleError(f"{name}: no such folder, and not a valid hub repo id ({one_line(err)})") from None


def bundle_folder(model: str | Path, revision: str | None = None) -> Path:
    """The folder of a bundle, checked to be one (a manifest, not a tokenizer folder), without
    reading its weights: for checks that should come before any long work."""
    folder = resolve(model, revision=revision)
    _read_manifest(folder)
    return folder


def weights_sha256(folder: str | Path) -> str | None:
    """The sha256 of a bundle's weights (model.safetensors) as its manifest records it: which weights
    a figure was measured on, whatever name or folder they were loaded by."""
    entry = _read_manifest(Path(folder)).get("model.safetensors")
    return entry["sha256"] if entry else None


def content_sha256(folder: str | Path) -> dict[str, str]:
    """{file: sha256} from the bundle's manifest for what the model computes with (weights, configs,
    tokenizer), leaving out its documentation (the model card and plots): a card rewritten by
    `foundation release` does not make the same weights a different model for a cache key."""
    return {name: entry["sha256"] for name, entry in _read_manifest(Path(folder)).items() if name != "README.md" and not name.endswith(".png")}


def read_data_config(folder: str | Path) -> dict:
    path = Path(folder) / DATA_CONFIG
    if not path.exists():
        raise BundleError(f"{path}: missing; the bundle does not say which features it was trained on")
    return yaml.safe_load(path.read_text()) or {}


def save_bundle(folder: str | Path, tokenizer, data_config: dict, card: str) -> Path:
    """Complete a folder the model was already saved into (save_pretrained): add the tokenizer,
    the data config, the model card, and the manifest last."""
    folder = Path(folder)
    tokenizer.save_pretrained(folder / TOKENIZER_DIR, safe_serialization=True)
    (folder / DATA_CONFIG).write_text(yaml.safe_dump(data_config, sort_keys=False))
    (folder / "README.md").write_text(card)
    write_manifest(folder)
    return folder


def load_bundle(
    model: str | Path,
    model_class=None,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    **model_kwargs,
) -> Bundle:
    """Resolve, verify and load a bundle: (model of `model_class`, tokenizer, data config)."""
    from foundation.models import JetTransformerForPretraining
    from foundation.tokenizer import JetTokenizer

    folder = resolve(model, revision=revision, cache_dir=cache_dir)
    verify_bundle(folder)
    model_class = model_class or JetTransformerForPretraining
    loaded = load_weights_folder(folder, lambda: model_class.from_pretrained(folder, use_safetensors=True, **model_kwargs))
    tokenizer = load_weights_folder(folder / TOKENIZER_DIR, lambda: JetTokenizer.from_pretrained(folder / TOKENIZER_DIR, use_safetensors=True).eval())
    return Bundle(folder, loaded, tokenizer, read_data_config(folder))


def load_weights_folder(folder: Path, load):
    """load() of the model or tokenizer saved in `folder`; a file that cannot be read (written
    truncated, a config of another model) gets one line naming the folder, not a traceback."""
    from safetensors import SafetensorError

    try:
        return load()
    except (OSError, ValueError, SafetensorError) as err:
        raise BundleError(f"{folder}: config.json / model.safetensors cannot be loaded ({type(err).__name__}: {one_line(err)})") from None


def push_bundle(folder: str | Path, repo_id: str, private: bool = False, revision: str | None = None) -> str:
    """Upload a verified bundle to the hub (needs a token: `hf auth login` or HF_TOKEN).

    The repo id is checked locally first; no network, no or a wrong token, or a refusal by the hub
    is one BundleError line, not the HTTP client's traceback."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError, HFValidationError, LocalTokenNotFoundError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise BundleError(f"--repo {repo_id}: not a hub repo id, expected owner/name ({one_line(err)})") from None
    verify_bundle(folder)
    api = HfApi()
    try:
        api.create_repo(repo_id, private=private, exist_ok=True)
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, revision=revision, commit_message="Upload foundation model bundle")
    except LocalTokenNotFoundError:
        raise BundleError(f"pushing to {repo_id}: no hub token; run `hf auth login` or set HF_TOKEN") from None
    except (HfHubHTTPError, OSError, *_network_errors()) as err:
        raise BundleError(
            f"pushing to {repo_id}: {type(err).__name__}: {one_line(err)} (network reachable? token valid: `hf auth whoami`?)"
        ) from None
    return str(getattr(info, "commit_url", info))


def _network_errors() -> tuple[type[BaseException], ...]:
    """Error classes of the HTTP library the installed hub client uses (httpx2 in huggingface_hub 2,
    httpx in 1, requests before): a refused connection is one of these, not an OSError."""
    import importlib

    found = []
    for module, name in (("httpx2", "HTTPError"), ("httpx", "HTTPError"), ("requests", "RequestException")):
        try:
            found.append(getattr(importlib.import_module(module), name))
        except ImportError:
            pass
    return tuple(found)

