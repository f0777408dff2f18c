"""UrbanSound8K (Salamon et al. 2014): 8,732 clips (<= 4 s), 10 classes, 10 predefined folds.

Get it with `python -m qmoe data download urbansound8k` (or `data prepare`). Clips are rendered with
the ESC-50 figure recipe by default (`urbansound8k-logmel` for the plain log-mel image) and embedded
through the shared cache. Groups are the Freesound recording (fsID): the predefined folds already keep
a recording's slices together; the `paper` protocol (shuffled 5-fold) does not.
"""
from __future__ import annotations

import pandas as pd

from ..audio.backbones import DEFAULT_BACKBONE
from ..core.errors import DataError
from .base import EmbeddedDataset
from .folder import audio_dataset
from .registry import register_dataset
from .sources import SOURCES, dataset_root, verify_layout


def load_urbansound8k(backbone: str = DEFAULT_BACKBONE, recipe: str = "esc50-figure",
                      name: str = "urbansound8k") -> EmbeddedDataset:
    source = SOURCES["urbansound8k"]
    root = dataset_root("urbansound8k")
    report = verify_layout(source, root)
    if report.missing or report.problems:  # partial folds are allowed (a subset), missing listed files not
        raise DataError(report.message())
    meta = pd.read_csv(root / source.metadata).sort_values(["fold", "slice_file_name"], ignore_index=True)
    class_names = tuple(meta.sort_values("classID").drop_duplicates("classID")["class"])
    files = [root / source.audio.format(**r) for r in meta.to_dict("records")]
    return audio_dataset(name, files, meta, class_names, meta["classID"].to_numpy(), meta["fold"].to_numpy(),
                         meta["fsID"].astype(str).to_numpy(), recipe, backbone, source.citation,
                         "the 10 UrbanSound8K classes", {"source": "UrbanSound8K audio", "folds": "predefined 10"})


register_dataset("urbansound8k", source="urbansound8k")(load_urbansound8k)
register_dataset("urbansound8k-logmel", source="urbansound8k")(
    lambda backbone=DEFAULT_BACKBONE: load_urbansound8k(backbone, "logmel", "urbansound8k-logmel"))
