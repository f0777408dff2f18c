"""ESC-50 (Piczak 2015): 2,000 clips, 50 classes in 5 major categories, 5 predefined folds.

Licence CC BY-NC 3.0 (clips from freesound.org); see data/esc50/ATTRIBUTION.md. The embeddings
shipped in data/esc50/ are those of the 2,000 shared mel-spectrogram figures; `python -m qmoe embed
esc50` regenerates them bit-for-bit from ../shared/datasets/esc50/mel-png.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from .. import paths
from ..backbones import DEFAULT_BACKBONE, get_backbone
from ..errors import DataError
from ..store import atomic_write_bytes
from . import register_dataset
from .base import EmbeddedDataset, Task

CITATION = ("K. J. Piczak, ESC: Dataset for Environmental Sound Classification, ACM MM 2015. "
            "CC BY-NC 3.0, clips from freesound.org; non-commercial use only.")
PNG_RECIPE = "image-file"  # the input is the figure itself (rendered by the dataset recipe)
MAJOR_NAMES = ("animals", "natural_soundscapes", "human_non_speech", "interior_domestic", "exterior_urban")
# The reference implementation's "categories": cyclic blocks of five targets, codes alphabetical.
REFERENCE_CATEGORY_NAMES = ("Animals", "Exterior", "Human", "Interior", "Natural")
_REFERENCE_BLOCK_TO_CODE = (0, 4, 2, 3, 1)  # block (target % 25) // 5 -> alphabetical code


def data_dir() -> Path:
    return paths.DATA_DIR / "esc50"


def shared_dir() -> Path:
    return paths.SHARED_DIR / "datasets" / "esc50"


def load_meta() -> pd.DataFrame:
    path = data_dir() / "meta.csv"
    if not path.exists():
        raise DataError(f"{path} is missing: restore it from git, or copy ../shared/datasets/esc50/meta.csv")
    meta = pd.read_csv(path)
    if len(meta) != 2000 or not meta["target"].between(0, 49).all():
        raise DataError(f"{path} must list the 2,000 ESC-50 clips with targets 0..49")
    return meta


def embeddings_path(backbone: str) -> Path:
    safe = backbone.replace(":", "_").replace("/", "_")
    return data_dir() / "embeddings" / f"{safe}.npy"


def reference_category(target: np.ndarray) -> np.ndarray:
    return np.asarray(_REFERENCE_BLOCK_TO_CODE)[(np.asarray(target) % 25) // 5]


def embed_esc50(backbone: str = DEFAULT_BACKBONE, progress=True) -> Path:
    """Embed the 2,000 shared figures and write the compact (float16) copy under data/esc50/."""
    from PIL import Image

    from ..embeddings import embed_images

    meta = load_meta()
    files = [shared_dir() / "mel-png" / f"{n}.png" for n in meta["name"]]
    missing = [f for f in files if not f.exists()]
    if missing:
        raise DataError(f"{len(missing)} ESC-50 figures are missing under {shared_dir() / 'mel-png'} "
                        f"(first: {missing[0].name}); the shared dataset must sit beside the repo")
    contents = [hashlib.sha256(f.read_bytes()).hexdigest() for f in files]
    X = embed_images(lambda i: np.array(Image.open(files[i]).convert("RGB")), contents, PNG_RECIPE,
                     backbone=backbone, progress=progress)
    bb = get_backbone(backbone)
    path = embeddings_path(backbone)
    import io

    buf = io.BytesIO()
    np.save(buf, X.astype(np.float16), allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())
    info = {"backbone": bb.name, "weights": bb.weights_id, "recipe": PNG_RECIPE, "dtype": "float16",
            "rows": "data/esc50/meta.csv order", "source": "../shared/datasets/esc50/mel-png",
            "images_sha256": hashlib.sha256("".join(contents).encode()).hexdigest()[:16],
            "licence": "CC BY-NC 3.0 (derived from ESC-50), non-commercial use only"}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(info, indent=1, sort_keys=True).encode())
    return path


@register_dataset("esc50")
def load_esc50(backbone: str = DEFAULT_BACKBONE) -> EmbeddedDataset:
    meta = load_meta()
    path = embeddings_path(backbone)
    if not path.exists():
        embed_esc50(backbone)
    X = np.load(path, allow_pickle=False).astype(np.float32)
    info = json.loads(path.with_suffix(".json").read_text())
    target = meta["target"].to_numpy()
    class_names = tuple(meta.sort_values("target").drop_duplicates("target")["class_name"])
    tasks = {
        "major": Task("major", meta["major_id"].to_numpy(), MAJOR_NAMES,
                      "5 major categories (target // 10): the paper's ESC-50 task"),
        "class": Task("class", target, class_names, "the 50 ESC-50 classes"),
        "reference-categories": Task("reference-categories", reference_category(target), REFERENCE_CATEGORY_NAMES,
                                     "the reference code's 5 'categories': non-semantic cyclic blocks of targets"),
    }
    groups = meta["name"].str.split("-").str[1].to_numpy()  # FOLD-CLIPID-TAKE-TARGET: one source recording
    return EmbeddedDataset("esc50", X, meta, tasks, meta["fold"].to_numpy(), groups, info, CITATION)
