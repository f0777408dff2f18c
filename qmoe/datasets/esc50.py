"""ESC-50 (Piczak 2015): 2,000 clips, 50 classes in 5 major categories, 5 predefined folds.

Licence CC BY-NC 3.0 (clips from freesound.org); see data/esc50/ATTRIBUTION.md. The embeddings
shipped in data/esc50/ are those of the 2,000 shared mel-spectrogram figures; `python -m qmoe embed
esc50` regenerates them bit-for-bit from ../shared/datasets/esc50/mel-png.

Two more ways in, both through audio: `esc50-audio` is ESC-50 from its source archive (`python -m qmoe
data download esc50`), rendered and embedded like an upload; `make_class_folders` lays clips out as a
folder dataset (`root/<class>/<clip>`) — the shared fold-4 audio by default — to exercise that path on
real data.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from ..audio.backbones import DEFAULT_BACKBONE, get_backbone
from ..core import paths
from ..core.cache import atomic_write_bytes
from ..core.errors import DataError
from .base import EmbeddedDataset, Task
from .registry import register_dataset

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

    from ..audio.embeddings import embed_images

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


@register_dataset("esc50", tasks=("major", "class", "reference-categories"))
def load_esc50(backbone: str = DEFAULT_BACKBONE) -> EmbeddedDataset:
    meta = load_meta()
    path = embeddings_path(backbone)
    if not path.exists():
        embed_esc50(backbone)
    X = np.load(path, allow_pickle=False).astype(np.float32)
    info = json.loads(path.with_suffix(".json").read_text())
    return EmbeddedDataset("esc50", X, meta, _tasks(meta), meta["fold"].to_numpy(), _groups(meta), info, CITATION)


def _tasks(meta: pd.DataFrame) -> dict[str, Task]:
    target = meta["target"].to_numpy()
    class_names = tuple(meta.sort_values("target").drop_duplicates("target")["class_name"])
    return {
        "major": Task("major", meta["major_id"].to_numpy(), MAJOR_NAMES,
                      "5 major categories (target // 10): the paper's ESC-50 task"),
        "class": Task("class", target, class_names, "the 50 ESC-50 classes"),
        "reference-categories": Task("reference-categories", reference_category(target), REFERENCE_CATEGORY_NAMES,
                                     "the reference code's 5 'categories': non-semantic cyclic blocks of targets"),
    }


def _groups(meta: pd.DataFrame) -> np.ndarray:
    return meta["name"].str.split("-").str[1].to_numpy()  # FOLD-CLIPID-TAKE-TARGET: one source recording


@register_dataset("esc50-audio", tasks=("major", "class", "reference-categories"), source="esc50")
def load_esc50_audio(backbone: str = DEFAULT_BACKBONE, recipe: str = "esc50-figure") -> EmbeddedDataset:
    """ESC-50 from its source audio (data/datasets/esc50), rendered by `recipe` and embedded via the cache."""
    from .folder import audio_dataset
    from .sources import SOURCES, dataset_root, verify_layout

    source = SOURCES["esc50"]
    root = dataset_root("esc50")
    report = verify_layout(source, root)
    if report.missing or report.problems:
        raise DataError(report.message())
    meta = pd.read_csv(root / source.metadata).sort_values(["fold", "filename"], ignore_index=True)
    meta = meta.assign(name=meta["filename"].str.rsplit(".", n=1).str[0], class_name=meta["category"],
                       major_id=meta["target"] // 10)
    tasks = _tasks(meta)
    cls = tasks.pop("class")
    return audio_dataset("esc50-audio", [root / source.audio.format(**r) for r in meta.to_dict("records")], meta,
                         cls.class_names, cls.labels, meta["fold"].to_numpy(), _groups(meta), recipe, backbone,
                         CITATION, cls.description, {"source": "ESC-50 audio", "folds": "predefined 5"}, tasks)


def make_class_folders(to: Path | None = None, fold: int = 4, task: str = "major", audio_dir: Path | None = None,
                       copy: bool = False) -> Path:
    """Lay out ESC-50 clips of `fold` as a folder dataset `to/<class>/<clip>` (links, or copies).

    Default source: the shared fold-4 audio; default target: data/folders/esc50-fold<fold>-<task>, which the
    engine and the app name `folder:esc50-fold<fold>-<task>`. File names keep ESC-50's FOLD-CLIPID-TAKE-TARGET,
    so the folder dataset groups its folds by source recording.
    """
    from .folder import folders_dir

    if task not in ("major", "class"):
        raise DataError(f"task must be 'major' (5 categories) or 'class' (50 classes), got {task!r}")
    audio_dir = Path(audio_dir or shared_dir() / "audio")
    meta = load_meta()
    meta = meta[meta["fold"] == fold]
    sources = {r.name: audio_dir / f"{r.name}.flac" for r in meta.itertuples()}
    missing = [n for n, f in sources.items() if not f.exists()]
    if not sources or missing:
        raise DataError(f"{audio_dir} lacks {len(missing) or 'the'} fold-{fold} clip(s)"
                        + (f", e.g. {missing[0]}.flac" if missing else "")
                        + " (the shared copy has fold 4 only; `python -m qmoe data download esc50` has all folds)")
    to = Path(to or folders_dir() / f"esc50-fold{fold}-{task}")
    tmp = to.with_name(f".tmp-{to.name}")
    shutil.rmtree(tmp, ignore_errors=True)
    labels = MAJOR_NAMES if task == "major" else None
    for r in meta.itertuples():
        label = labels[r.major_id] if labels else r.class_name
        dest = tmp / label / f"{r.name}.flac"
        dest.parent.mkdir(parents=True, exist_ok=True)
        if copy:
            shutil.copyfile(sources[r.name], dest)
        else:
            os.symlink(sources[r.name].resolve(), dest)
    (tmp / "ATTRIBUTION.md").write_text(f"ESC-50 fold {fold} clips ({task} labels). {CITATION}\n")
    shutil.rmtree(to, ignore_errors=True)  # a complete tree replaces the old one, never a half-made one
    os.replace(tmp, to)
    return to
