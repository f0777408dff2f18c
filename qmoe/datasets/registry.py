"""The dataset registry: loaders by name, their tasks and the source each needs.

Dataset modules (`esc50`, `quinn`, `urbansound8k`) declare themselves with `@register_dataset`; the package's
`__init__` imports them, so importing `qmoe.datasets` (or anything in it) registers every dataset. This module
imports none of them (folder datasets are reached through `folder`'s hooks, imported when needed).
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import ConfigError
from .base import EmbeddedDataset

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


def register_folder(root, recipe: str | None = None) -> str:
    """Register `root` under its `folder:` name (so it shows in list_datasets()); returns the name.
    `recipe`: the rendering recipe (default: the folder datasets' default, the ESC-50 figure)."""
    from .folder import DEFAULT_BACKBONE, DEFAULT_RECIPE, PREFIX, load_prefixed

    recipe = recipe or DEFAULT_RECIPE
    root = Path(root).expanduser().resolve()
    name = f"{PREFIX}{root}" + ("" if recipe == DEFAULT_RECIPE else f"?recipe={recipe}")
    _LOADERS[name] = lambda backbone=DEFAULT_BACKBONE: load_prefixed(name, backbone)
    return name
