"""Datasets: labelled embeddings with their tasks and cross-validation protocols.

`registry` names the datasets (`get_dataset`, `list_datasets`, `dataset_tasks`); `esc50`, `urbansound8k` and `quinn`
register themselves into it when this package is imported (as the model zoo does); `folder` turns a folder of
audio files into a dataset; `sources` downloads and checks the public archives; `cli` is `python -m qmoe data`.
May import the core and the audio front end; never the models or anything above them.
"""
from __future__ import annotations

from .base import PROTOCOLS, EmbeddedDataset
from .registry import dataset_tasks, get_dataset, list_datasets, register_dataset, register_folder

from . import esc50, quinn, urbansound8k  # noqa: F401  (they register themselves)

__all__ = ["EmbeddedDataset", "PROTOCOLS", "dataset_tasks", "get_dataset", "list_datasets", "register_dataset",
           "register_folder"]
