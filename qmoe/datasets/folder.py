"""Your own labelled audio as a dataset: `root/<class>/<clip>.<wav|flac|ogg|mp3|...>`.

Name it `folder:<path>` (figure recipe) or `folder:<path>?recipe=logmel` anywhere a dataset name goes.
A relative path is looked up under `data/folders/` first, then the working directory: folders kept
there have machine-independent names (`folder:esc50-fold4-major`, made by `python -m qmoe data
esc50-folder`), so their cached runs mean the same on every checkout.

Folds (the `predefined` protocol), first rule that applies:
1. `root/folds.csv` with columns `file,fold`: `file` is the path under root (`dog/a.wav`) or the bare file
   name; every clip must be listed, folds are integers.
2. Every file name carries a source-recording id -> StratifiedGroupKFold(5, shuffle, seed 42) over
   recordings, so takes of one recording never sit in two folds. Recognised names:
   ESC-50 `FOLD-CLIPID-TAKE-TARGET` (recording = CLIPID), UrbanSound8K `FSID-CLASS-OCC-SLICE`
   (recording = FSID) and `<recording>_<n>` (recording = everything before the last `_<digits>`).
   Only used when some recording has more than one clip (otherwise grouping changes nothing).
3. Otherwise StratifiedKFold(5, shuffle, seed 42) over clips.

Embeddings go through the same cache as everything else (`qmoe.audio.embeddings.embed_images`), keyed by the
samples' hash and the recipe `audio-><recipe text>`: the exact key `qmoe.app.inference.embed_windows` uses (one
vector per 5 s training window), so a clip classified in the app and the same clip in a folder dataset share
their vectors. A small manifest (path, size, mtime, recipe -> window hashes) spares decoding unchanged files.
"""
from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from ..audio.backbones import DEFAULT_BACKBONE, get_backbone
from ..core import paths
from ..core.cache import atomic_write_bytes
from ..core.errors import AudioError, ConfigError, DataError
from .base import EmbeddedDataset, Task

PREFIX = "folder:"
N_FOLDS = 5
FOLD_SEED = 42
DEFAULT_RECIPE = "esc50-figure"
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".caf",
                  ".w64", ".rf64", ".wave"}
_RECORDING_PATTERNS = (
    re.compile(r"^\d+-(?P<rec>[^-]+)-[A-Za-z]-\d+$"),   # ESC-50: FOLD-CLIPID-TAKE-TARGET
    re.compile(r"^(?P<rec>\d+)-\d+-\d+-\d+$"),           # UrbanSound8K: FSID-CLASS-OCCURRENCE-SLICE
    re.compile(r"^(?P<rec>.+)_\d+$"),                     # <recording>_<n>
)


def recording_id(stem: str) -> str | None:
    """The source recording a clip was cut from, when its file name says so (rules in the module doc)."""
    for pattern in _RECORDING_PATTERNS:
        if m := pattern.match(stem):
            return m.group("rec")
    return None


def parse_name(name: str) -> tuple[Path, str]:
    """`folder:<path>[?recipe=<recipe>]` -> (root, recipe)."""
    if not name.startswith(PREFIX):
        raise ConfigError(f"a folder dataset is named 'folder:<path>', got {name!r}")
    body, _, query = name[len(PREFIX):].partition("?")
    recipe = DEFAULT_RECIPE
    if query:
        key, _, value = query.partition("=")
        if key != "recipe" or not value:
            raise ConfigError(f"{name!r}: the only option is '?recipe=<name>' (esc50-figure or logmel)")
        recipe = value
    return resolve_root(Path(body).expanduser()), recipe


def folders_dir() -> Path:
    return paths.DATA_DIR / "folders"


def resolve_root(path: Path) -> Path:
    """Absolute paths as given; a relative one under data/folders/ if it exists there, else under the cwd."""
    if path.is_absolute() or not (folders_dir() / path).is_dir():
        return path
    return folders_dir() / path


def local_folders() -> list[str]:
    """`folder:<name>` for each dataset folder kept under data/folders/ (shown in the app's pickers)."""
    root = folders_dir()
    return [f"{PREFIX}{p.name}" for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []


def scan_folder(root: Path) -> pd.DataFrame:
    """One row per audio file: file (posix path under root), class_name, name (stem)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"folder dataset {root} does not exist or is not a directory")
    rows = []
    for cls in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for f in sorted(cls.rglob("*")):
            if f.is_file() and f.suffix.lower() in AUDIO_SUFFIXES and not f.name.startswith("."):
                rows.append({"file": f.relative_to(root).as_posix(), "class_name": cls.name, "name": f.stem})
    meta = pd.DataFrame(rows, columns=["file", "class_name", "name"])
    counts = meta["class_name"].value_counts()
    if len(counts) < 2:
        raise DataError(f"{root} must hold one sub-folder of audio files per class (at least 2 classes); "
                        f"found {len(counts)} class folder(s) with audio ({', '.join(counts.index) or 'none'})")
    return meta


def assign_folds(root: Path, meta: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, str]:
    """(fold per row, group per row, the rule used), following the rules in the module doc."""
    rec = meta["name"].map(recording_id)
    groups = np.where(rec.notna(), rec.astype(object), meta["file"]).astype(str)
    folds_csv = Path(root) / "folds.csv"
    if folds_csv.exists():
        return _folds_from_csv(folds_csv, meta), groups, "folds.csv"
    labels = meta["class_name"].to_numpy()
    small = meta["class_name"].value_counts()
    small = small[small < N_FOLDS]
    if len(small):
        raise DataError(f"{root}: each class needs at least {N_FOLDS} clips for {N_FOLDS} folds (or give a "
                        f"folds.csv); too few in: " + ", ".join(f"{c} ({n})" for c, n in small.items()))
    x = np.zeros(len(meta))
    folds = np.zeros(len(meta), dtype=np.int64)
    if rec.notna().all() and rec.nunique() < len(meta):
        if rec.nunique() < N_FOLDS:
            raise DataError(f"{root}: only {rec.nunique()} source recordings; grouped folds need {N_FOLDS}")
        splitter, rule = StratifiedGroupKFold(N_FOLDS, shuffle=True, random_state=FOLD_SEED), "grouped by recording"
        splits = splitter.split(x, labels, rec.to_numpy())
    else:
        splitter, rule = StratifiedKFold(N_FOLDS, shuffle=True, random_state=FOLD_SEED), "stratified"
        splits = splitter.split(x, labels)
    for k, (_, test) in enumerate(splits, start=1):
        folds[test] = k
    return folds, groups, f"{rule} {N_FOLDS} folds (seed {FOLD_SEED})"


def _folds_from_csv(path: Path, meta: pd.DataFrame) -> np.ndarray:
    table = pd.read_csv(path, dtype={"file": str})
    if not {"file", "fold"} <= set(table.columns):
        raise DataError(f"{path} needs the columns file,fold; it has {', '.join(table.columns)}")
    if not pd.api.types.is_integer_dtype(table["fold"]):
        raise DataError(f"{path}: the fold column must hold integers")
    by_file = dict(zip(table["file"], table["fold"]))
    if len(by_file) != len(table):
        raise DataError(f"{path} lists some files twice")
    folds, missing = [], []
    for file in meta["file"]:
        fold = by_file.get(file, by_file.get(file.rsplit("/", 1)[-1]))
        if fold is None:
            missing.append(file)
        folds.append(fold)
    if missing:
        raise DataError(f"{path} gives no fold for {len(missing)} clip(s), e.g. {', '.join(missing[:3])}")
    folds = np.asarray(folds, dtype=np.int64)
    if len(np.unique(folds)) < 2:
        raise DataError(f"{path} must define at least 2 folds")
    return folds


# --- embedding audio files through the shared cache --------------------------------------------------

def audio_recipe_key(recipe: str) -> str:
    """The embedding cache's recipe string for audio rendered with `recipe` (as in qmoe.app.inference)."""
    from ..audio.spectrogram import RECIPES

    if recipe not in RECIPES:
        raise ConfigError(f"unknown spectrogram recipe {recipe!r}; choose one of {sorted(RECIPES)}")
    return "audio->" + RECIPES[recipe]


def _manifest_path(files: list[Path]) -> Path:
    h = hashlib.sha256("\n".join(str(f.resolve()) for f in files).encode()).hexdigest()[:24]
    return paths.CACHE_DIR / "audio-manifests" / f"{h}.json"


def embed_audio_files(files: list[Path], recipe: str = DEFAULT_RECIPE, backbone: str = DEFAULT_BACKBONE,
                      progress=True) -> tuple[np.ndarray, dict]:
    """(embeddings (n, dim) float32, embedding_info) of audio files rendered with `recipe`.

    The ESC-50 figure recipe sees a clip as the app does (`qmoe.app.inference.classify`): at 44.1 kHz, in 5 s
    training windows (`qmoe.audio.decode.training_windows`; a clip of up to 5 s is one window padded with silence); a
    clip's embedding is the mean of its windows' (its one window's, for every clip of at most 5 s). Other recipes
    render the whole clip at their own rate. Undecodable files raise DataError naming the file (a dataset with a
    broken clip should be fixed, not silently shrunk).
    """
    from ..audio.decode import load_audio, training_windows
    from ..audio.embeddings import content_hash, embed_images
    from ..audio.spectrogram import RECIPE_SR, render

    files = [Path(f) for f in files]
    recipe_key = audio_recipe_key(recipe)
    sr, windowed = RECIPE_SR[recipe], recipe == DEFAULT_RECIPE
    manifest_path = _manifest_path(files)
    try:
        manifest = json.loads(manifest_path.read_text())
    except (FileNotFoundError, ValueError):
        manifest = {}
    decoded = {}

    def decode(i: int) -> list[np.ndarray]:
        """File i as the inputs its figures are drawn from: its training windows, or the whole clip."""
        if i not in decoded:
            try:
                clip = load_audio(files[i], sr=sr)
            except AudioError as e:
                raise DataError(f"cannot use {files[i]}: {e}") from None
            decoded[i] = list(training_windows(clip)[0]) if windowed else [clip.samples]
        return decoded[i]

    parts = []  # (file index, content hash) per figure
    for i, f in enumerate(files):
        st = f.stat()
        stamp = f"{st.st_size}:{st.st_mtime_ns}:{recipe}"
        entry = manifest.get(str(f.resolve()))
        if not (entry and entry[0] == stamp):
            entry = [stamp, [content_hash(x) for x in decode(i)]]
            manifest[str(f.resolve())] = entry
        parts += [(i, h) for h in entry[1]]
    if decoded:
        atomic_write_bytes(manifest_path, json.dumps(manifest).encode())
    first = {}
    for j, (i, _) in enumerate(parts):
        first.setdefault(i, j)
    vectors = embed_images(lambda j: render(decode(parts[j][0])[j - first[parts[j][0]]], sr, recipe),
                           [h for _, h in parts], recipe_key, backbone=backbone, progress=progress)
    owner = np.array([i for i, _ in parts])
    X = np.stack([vectors[owner == i].mean(0) for i in range(len(files))]).astype(np.float32)
    bb = get_backbone(backbone)
    info = {"backbone": bb.name, "weights": bb.weights_id, "recipe": recipe, "recipe_key": recipe_key,
            "source": "audio files", "n": len(files), "figures": len(parts),
            "clip": "mean of its 5 s training windows' embeddings" if windowed else "the whole clip",
            "inputs_sha256": hashlib.sha256("".join(h for _, h in parts).encode()).hexdigest()[:16]}
    return X, info


def audio_dataset(name: str, files: list[Path], meta: pd.DataFrame, class_names: tuple[str, ...],
                  labels: np.ndarray, folds: np.ndarray, groups: np.ndarray, recipe: str, backbone: str,
                  citation: str = "", task_description: str = "", extra_info: dict | None = None,
                  extra_tasks: dict[str, Task] | None = None) -> EmbeddedDataset:
    """An EmbeddedDataset with a `class` task (and any `extra_tasks`) over audio files (folder, UrbanSound8K,
    Quinn, ESC-50 audio)."""
    X, info = embed_audio_files(files, recipe, backbone)
    info.update(extra_info or {})
    task = Task("class", np.asarray(labels, dtype=np.int64), tuple(class_names), task_description)
    return EmbeddedDataset(name, X, meta.reset_index(drop=True), {**(extra_tasks or {}), "class": task},
                           np.asarray(folds), np.asarray(groups), info, citation)


def load_folder(root, recipe: str = DEFAULT_RECIPE, backbone: str = DEFAULT_BACKBONE,
                name: str | None = None) -> EmbeddedDataset:
    """The folder dataset at `root` (layout and fold rules in the module doc)."""
    root = Path(root).expanduser()
    meta = scan_folder(root)
    folds, groups, rule = assign_folds(root, meta)
    class_names = tuple(sorted(meta["class_name"].unique()))
    labels = meta["class_name"].map({c: i for i, c in enumerate(class_names)}).to_numpy()
    meta = meta.assign(fold=folds, group=groups, target=labels)
    suffix = "" if recipe == DEFAULT_RECIPE else f"?recipe={recipe}"
    return audio_dataset(name or f"{PREFIX}{root}{suffix}", [root / f for f in meta["file"]], meta, class_names,
                         labels, folds, groups, recipe, backbone,
                         task_description=f"the {len(class_names)} class folders of {root}",
                         extra_info={"folds": rule, "classes": len(class_names)})


def load_prefixed(name: str, backbone: str | None = None) -> EmbeddedDataset | None:
    """The registry hook: a dataset for a prefixed name (`folder:<path>`), or None if `name` has no known prefix."""
    if not name.startswith(PREFIX):
        return None
    root, recipe = parse_name(name)
    return load_folder(root, recipe, backbone or DEFAULT_BACKBONE, name=name)
