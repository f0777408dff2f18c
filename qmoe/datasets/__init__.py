"""Datasets: labelled embeddings with their tasks and cross-validation protocols."""
from __future__ import annotations

from ..errors import ConfigError
from .base import EmbeddedDataset, PROTOCOLS

_LOADERS = {}


def register_dataset(name):
    def deco(fn):
        _LOADERS[name] = fn
        return fn
    return deco


def list_datasets() -> list[str]:
    return sorted(_LOADERS)


def get_dataset(name: str, backbone: str | None = None) -> EmbeddedDataset:
    """Load dataset `name` with its embeddings (computed and cached on first use)."""
    from .folder import load_prefixed  # "folder:<path>[?recipe=logmel]"

    if (ds := load_prefixed(name, backbone)) is not None:
        return ds
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _LOADERS[name](backbone) if backbone else _LOADERS[name]()


from . import esc50, quinn, urbansound8k  # noqa: E402,F401  (they register themselves)

__all__ = ["EmbeddedDataset", "PROTOCOLS", "get_dataset", "list_datasets", "register_dataset"]
