"""Quinn et al. 2022 soundscape clips (ABGQI: anthropophony, biophony, geophony, quiet, interference).

No public archive URL is known (see qmoe.datasets.sources): prepare a copy with
`python -m qmoe data prepare quinn --from <folder or archive>`, laid out as
`quinn/<class>/<clip>.wav` with the five class folders. The source defines no folds, so the
`predefined` folds are grouped by site: the site id is the file name up to its first `_`
(Soundscapes-to-Landscapes names such as `s2lam050_190411_...` start with the recorder site),
and StratifiedGroupKFold(5, shuffle, seed 42) keeps every site in one fold. Clips carrying several
components are single-labelled by their folder here.
"""
from __future__ import annotations

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from ..audio.backbones import DEFAULT_BACKBONE
from ..core.errors import DataError
from .base import EmbeddedDataset
from .folder import FOLD_SEED, N_FOLDS, audio_dataset, scan_folder
from .registry import register_dataset
from .sources import QUINN_CLASSES, SOURCES, dataset_root, verify_layout


def site_id(stem: str) -> str:
    return stem.split("_", 1)[0]


def load_quinn(backbone: str = DEFAULT_BACKBONE, recipe: str = "esc50-figure", name: str = "quinn") -> EmbeddedDataset:
    source = SOURCES["quinn"]
    root = dataset_root("quinn")
    report = verify_layout(source, root)
    if not report.ok:
        raise DataError(report.message())
    meta = scan_folder(root)
    labels = meta["class_name"].map({c: i for i, c in enumerate(QUINN_CLASSES)}).to_numpy()
    sites = meta["name"].map(site_id).to_numpy()
    if len(set(sites)) < N_FOLDS:
        raise DataError(f"quinn: only {len(set(sites))} sites in the file names; site-grouped folds need {N_FOLDS}")
    folds = np.zeros(len(meta), dtype=np.int64)
    sgkf = StratifiedGroupKFold(N_FOLDS, shuffle=True, random_state=FOLD_SEED)
    for k, (_, test) in enumerate(sgkf.split(np.zeros(len(meta)), labels, sites), start=1):
        folds[test] = k
    meta = meta.assign(site=sites, fold=folds, target=labels)
    return audio_dataset(name, [root / f for f in meta["file"]], meta, QUINN_CLASSES, labels, folds, sites,
                         recipe, backbone, source.citation, "the 5 ABGQI soundscape components",
                         {"source": "Quinn audio", "folds": f"grouped by site, {N_FOLDS} folds (seed {FOLD_SEED})"})


register_dataset("quinn", source="quinn")(load_quinn)
register_dataset("quinn-logmel", source="quinn")(lambda backbone=DEFAULT_BACKBONE: load_quinn(backbone, "logmel", "quinn-logmel"))
