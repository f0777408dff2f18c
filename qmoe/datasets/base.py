"""A dataset of embeddings with named tasks, groups and cross-validation protocols.

Protocols:
- `predefined`: the dataset's own folds (leak-free: takes of one source recording stay together).
- `paper`: shuffled StratifiedKFold(5, seed 42) over all rows, as the reference implementation
  does. Leaky: takes of one recording land on both sides of a split.

Model selection never looks at the reported fold: a validation split is carved from the training
folds, grouped by source recording when groups are known.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..core.errors import ConfigError

PROTOCOLS = {
    "predefined": "the dataset's predefined folds (leak-free)",
    "paper": "shuffled StratifiedKFold(5, seed 42) as in the reference code (leaky: same-source takes cross folds)",
}
LEAKY_PROTOCOLS = {"paper"}
VALIDATION_SHARE = 8  # 1/8 of the training folds is held out for early stopping


@dataclass(frozen=True)
class Task:
    name: str
    labels: np.ndarray  # int class index per row
    class_names: tuple[str, ...]
    description: str = ""


@dataclass
class EmbeddedDataset:
    name: str
    X: np.ndarray  # (n, d) float32 embeddings
    meta: pd.DataFrame  # one row per item, aligned with X
    tasks: dict[str, Task]
    folds: np.ndarray  # predefined fold id per row
    groups: np.ndarray  # source-recording id per row (for grouped splits)
    embedding_info: dict = field(default_factory=dict)  # backbone, weights, recipe
    citation: str = ""

    def __post_init__(self):
        if len(self.X) != len(self.meta) or not np.isfinite(self.X).all():
            raise ConfigError(f"{self.name}: embeddings must be finite and one per row")

    @property
    def dim(self) -> int:
        return self.X.shape[1]

    def task(self, name: str) -> Task:
        if name not in self.tasks:
            raise ConfigError(f"unknown task {name!r} for {self.name}; choose from {', '.join(self.tasks)}")
        return self.tasks[name]

    def fold_ids(self, protocol: str) -> list[int]:
        check_protocol(protocol)
        return sorted(int(f) for f in np.unique(self.folds)) if protocol == "predefined" else [1, 2, 3, 4, 5]

    def split(self, task: str, protocol: str, fold: int) -> tuple[np.ndarray, np.ndarray]:
        """(train indices, test indices) of `fold` under `protocol`."""
        check_protocol(protocol)
        if fold not in self.fold_ids(protocol):
            raise ConfigError(f"fold {fold} does not exist under protocol {protocol!r}: {self.fold_ids(protocol)}")
        if protocol == "predefined":
            test = self.folds == fold
            return np.flatnonzero(~test), np.flatnonzero(test)
        y = self.task(task).labels
        skf = StratifiedKFold(n_splits=5, shuffle=True, random_state=42)
        train, test = list(skf.split(np.zeros(len(y)), y))[fold - 1]
        return train, test

    def validation_split(self, task: str, train: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Carve (fit, validation) out of the training indices, grouped by source recording."""
        y = self.task(task).labels[train]
        n_splits = min(VALIDATION_SHARE, max(2, int(np.bincount(y).max())))  # small datasets: fewer, larger splits
        sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
        fit, val = next(sgkf.split(np.zeros(len(train)), y, self.groups[train]))
        return train[fit], train[val]


def check_protocol(protocol: str) -> None:
    if protocol not in PROTOCOLS:
        raise ConfigError(f"unknown protocol {protocol!r}; choose from {', '.join(PROTOCOLS)}")
