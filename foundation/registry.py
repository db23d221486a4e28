"""Released models by name: `load_bundle("jet-foundation-small")`, `--from NAME`, `--model NAME`.

Each name maps to a folder shipped in the repository (`checkpoints/<name>/`, git-tracked, verified
by its manifest like any bundle: a fresh clone works offline) and, for installs without that
folder, a hub repo id with a pinned revision (downloaded once into the hub cache; HF_HUB_OFFLINE=1
then works from the cache). `foundation models` lists them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]  # the checkout (pip install -e .) holding checkpoints/


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: int  # bumped whenever the weights change; the name always means the newest
    description: str
    folder: str  # the shipped bundle, relative to the repository root
    repo_id: str | None = None  # hub copy for installs without the folder (None: not published)
    revision: str | None = None  # hub commit pinned for this version

    @property
    def local_path(self) -> Path:
        return REPOSITORY / self.folder

    def is_local(self) -> bool:
        return (self.local_path / "manifest.json").is_file()

    @property
    def hub(self) -> str | None:
        return f"{self.repo_id}@{self.revision}" if self.repo_id else None


# The released models. jet-foundation-small is trained by its recipe and shipped in its folder
# (see checkpoints/README.md); until the folder is there, loading it says so.
MODELS: dict[str, RegisteredModel] = {
    m.name: m
    for m in (
        RegisteredModel(
            name="jet-foundation-small",
            version=2,  # v1: pretrain/release.yaml alone; v2: then pretrain/release_jet_target.yaml
            description="the released backbone: VQ-VAE tokens + jet transformer, pretrained on generated top and QCD jets",
            folder="checkpoints/jet-foundation-small",
        ),
    )
}


def lookup(name: str | Path) -> RegisteredModel | None:
    """The registered model of that name; None for anything else (a folder, a hub repo id)."""
    return MODELS.get(str(name))


def locate(entry: RegisteredModel, revision: str | None = None, cache_dir: str | Path | None = None) -> Path:
    """The registered model's bundle folder: shipped in the repository, else its pinned hub copy."""
    from foundation.hub import BundleError, download

    if entry.is_local() and revision is None:
        return entry.local_path
    if entry.repo_id is None:
        raise BundleError(
            f"{entry.name} (v{entry.version}): not shipped in {entry.local_path} and not published on the hub; "
            "train it with its recipe or pass a bundle folder"
        )
    return download(entry.repo_id, revision or entry.revision, cache_dir)


def listing() -> list[dict]:
    """Name, version, whether the bundle is here, and where: for `foundation models`."""
    return [
        {
            "name": m.name,
            "version": m.version,
            "local": m.is_local(),
            "where": str(m.local_path) if m.is_local() else (m.hub or f"{m.local_path} (absent; not published)"),
            "hub": m.hub,
            "description": m.description,
        }
        for m in MODELS.values()
    ]
