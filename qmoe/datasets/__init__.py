"""Datasets: labelled embeddings with their tasks and cross-validation protocols."""
from __future__ import annotations

from ..errors import ConfigError
from .base import EmbeddedDataset, PROTOCOLS

_LOADERS = {}
_TASKS = {}
_SOURCES = {}  # dataset -> the downloadable source it needs (checked before a run starts)


def register_dataset(name, tasks=("class",), source: str | None = None):
    def deco(fn):
        _LOADERS[name], _TASKS[name], _SOURCES[name] = fn, tuple(tasks), source
        return fn
    return deco


def list_datasets() -> list[str]:
    """Registered datasets, then the folder datasets kept under data/folders/ (`folder:<name>`)."""
    from .folder import local_folders

    return sorted(_LOADERS) + [f for f in local_folders() if f not in _LOADERS]


def dataset_tasks(name: str) -> tuple[str, ...]:
    """The task names of a dataset, without loading or embedding it.

    Fails early (DataError with the command to run) when a folder is unusable or a source is not prepared."""
    from .folder import PREFIX, parse_name, scan_folder
    from .sources import dataset_root

    if name.startswith(PREFIX):
        scan_folder(parse_name(name)[0])
        return ("class",)
    if name not in _TASKS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    if _SOURCES[name]:
        dataset_root(_SOURCES[name])
    return _TASKS[name]


def get_dataset(name: str, backbone: str | None = None) -> EmbeddedDataset:
    """Load dataset `name` with its embeddings (computed and cached on first use)."""
    from .folder import load_prefixed  # "folder:<path>[?recipe=logmel]"

    if (ds := load_prefixed(name, backbone)) is not None:
        return ds
    if name not in _LOADERS:
        raise ConfigError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    return _LOADERS[name](backbone) if backbone else _LOADERS[name]()


from . import esc50, quinn, urbansound8k  # noqa: E402,F401  (they register themselves)

__all__ = ["EmbeddedDataset", "PROTOCOLS", "dataset_tasks", "get_dataset", "list_datasets", "register_dataset"]
