"""foundation: pretrain, fine-tune and share foundation models for particle jets.

    import foundation
    vectors = foundation.embed("path/to/bundle", jets, mask)   # see foundation.api

Importing the package stays light (no torch): the API functions load on first use, and the jet
classes are registered with transformers' Auto classes on the first AutoConfig.from_pretrained
(which every AutoModel*.from_pretrained calls), whether transformers was imported before or after
this package, so `AutoModel.from_pretrained(bundle)` works after a plain `import foundation`.
(Registering while transformers' auto module is still being imported would be circular.)
"""

from __future__ import annotations

import functools
import importlib.abc
import sys

__version__ = "0.1.0"

_API = ("tokenize", "embed", "tag", "class_names", "as_jet_arrays")
_AUTO_MODULE = "transformers.models.auto.configuration_auto"  # AutoConfig, imported by every Auto class

__all__ = [*_API, "load_bundle", "__version__"]


def __getattr__(name: str):
    if name in _API:
        from foundation import api

        return getattr(api, name)
    if name == "load_bundle":
        from foundation.hub import load_bundle

        return load_bundle
    raise AttributeError(f"module 'foundation' has no attribute {name!r}")


def _register() -> None:
    from foundation.models.registration import register_auto_classes

    register_auto_classes()


def _register_on_first_use(configuration_auto) -> None:
    """AutoConfig.from_pretrained registers the jet classes before it reads a config."""
    auto_config = configuration_auto.AutoConfig
    if getattr(auto_config.from_pretrained, "_registers_foundation", False):
        return
    original = auto_config.from_pretrained.__func__

    @functools.wraps(original)
    def from_pretrained(cls, *args, **kwargs):
        _register()
        return original(cls, *args, **kwargs)

    from_pretrained._registers_foundation = True
    auto_config.from_pretrained = classmethod(from_pretrained)


class _RegisterAfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Wraps the loader of transformers' auto configuration module: once it has run, its
    AutoConfig registers the jet classes on first use (a post-import hook: nothing of transformers
    is imported before the user imports it)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != _AUTO_MODULE:
            return None
        import importlib.util

        sys.meta_path.remove(self)  # find the real spec, once
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _register_on_first_use(module)


if _AUTO_MODULE in sys.modules:
    _register_on_first_use(sys.modules[_AUTO_MODULE])
elif not any(isinstance(f, _RegisterAfterImport) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterImport())
