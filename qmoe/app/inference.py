"""Classify a sound: decode -> figure -> embedding -> shipped model on ONNX Runtime (and its routing, for an MoE).

Shipped models live in data/models/ (`<dataset>-<task>-<variant>.safetensors`); each was trained
on ESC-50 folds 1, 2, 3, 5, so the fold-4 example clips are honest tests.

A fresh process classifies without torch (seconds of imports): the model's ONNX graphs are exported once and
cached (`deployment_graphs`), the backbone runs as ONNX too (`qmoe.audio.backbones`), and the z-scoring comes from the
checkpoint read as numpy. Only an MoE's routing record is computed by the engine (torch).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from ..core import paths
from ..core.errors import CacheError, ConfigError

SHIP_FOLD = 4  # held out by every shipped model


def model_file_stem(dataset: str, task: str, variant: str) -> str:
    return f"{dataset}-{task}-{variant}".replace("/", "_").replace("@", "_alpha").replace(".", "p")


def shipped_models() -> dict[str, Path]:
    """Display name ('esc50 / major / FP32-Base') -> checkpoint path; the paper's task first."""
    out = {}
    for p in paths.MODELS_DIR.glob("*.safetensors"):
        meta_path = p.with_suffix(".json")
        if meta_path.exists():
            meta = json.loads(meta_path.read_text())
            cfg = meta.get("config", {})
            out[f"{cfg.get('dataset')} / {cfg.get('task')} / {meta['variant']}"] = p
    order = {"major": 0, "class": 1}
    return dict(sorted(out.items(), key=lambda kv: (order.get(kv[0].split(" / ")[1], 2), kv[0])))


@lru_cache(maxsize=16)
def load_model(path: str):
    """The trained engine model (`checkpoint.TrainedModel`, torch)."""
    from ..models import checkpoint

    return checkpoint.load(path)


@lru_cache(maxsize=16)
def model_info(path: str) -> dict:
    """A model's JSON sidecar (variant, config, class names, the key of its cached run), without torch."""
    meta_path = Path(path).with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())
    except FileNotFoundError as e:
        raise CacheError(f"model file missing: {e.filename}") from e
    except ValueError as e:
        raise CacheError(f"model {meta_path.name} is unreadable ({e}); retrain it with `python -m qmoe ship`") from e


@lru_cache(maxsize=16)
def _standardizer(path: str) -> tuple[np.ndarray, np.ndarray]:
    """The z-scoring (mean, scale) fitted on the model's training folds, read from its checkpoint as numpy."""
    from safetensors import safe_open

    try:
        with safe_open(str(Path(path).with_suffix(".safetensors")), framework="np") as f:
            return f.get_tensor("__standardize_mean"), f.get_tensor("__standardize_scale")
    except FileNotFoundError as e:
        raise CacheError(f"model file missing: {e.filename}") from e
    except Exception as e:
        raise CacheError(f"model {Path(path).name} is unreadable ({e}); retrain it with `python -m qmoe ship`") from e


def standardize(path: str, X: np.ndarray) -> np.ndarray:
    """`TrainedModel.standardize` of the model at `path`, without loading the model."""
    mean, scale = _standardizer(str(path))
    return ((np.atleast_2d(X) - mean) / scale).astype(np.float32)


EXPORTS_VERSION = 1  # bump when what `deployment_graphs` stores changes


@lru_cache(maxsize=1)
def _export_code_id() -> str:
    """What else a model's exported graphs depend on: the engine's sources and the torch/onnx versions."""
    from importlib.metadata import version

    from ..core.cache import source_sha256

    return hashlib.sha256(f"{EXPORTS_VERSION}|{version('torch')}|{version('onnx')}|{source_sha256()}".encode()
                          ).hexdigest()[:16]


@lru_cache(maxsize=16)
def deployment_graphs(path: str) -> dict[str, bytes]:
    """A model's ONNX graphs: `device` (one clip per call) and `batched` (any batch), or for an MoE `explain` (any
    batch, with the routing outputs), and `download` (the file a user deploys: z-scoring inside, metadata).

    Exported from the engine once and cached under the cache directory, keyed by the checkpoint's bytes and the
    code that exports it (`_export_code_id`), so later processes need no torch."""
    import io

    from ..core.cache import atomic_write_bytes

    stem = Path(path).with_suffix("")
    h = hashlib.sha256(_export_code_id().encode())
    for suffix in (".safetensors", ".json"):
        h.update(stem.with_suffix(suffix).read_bytes())
    cached = paths.CACHE_DIR / "models" / f"{stem.name}-{h.hexdigest()[:20]}.npz"
    try:
        with np.load(cached, allow_pickle=False) as z:
            return {k: z[k].tobytes() for k in z.files}
    except (OSError, ValueError):  # not exported yet, or a damaged entry
        pass
    from ..deploy.export import export, export_trained

    tm = load_model(str(path))
    graphs = {"download": export_trained(tm).SerializeToString()}
    if hasattr(tm.model, "record_from"):
        graphs["explain"] = export(tm.model, explain=True).SerializeToString()
    else:
        graphs.update(device=export(tm.model, batch=1).SerializeToString(),
                      batched=export(tm.model).SerializeToString())
    buf = io.BytesIO()
    np.savez(buf, **{k: np.frombuffer(v, dtype=np.uint8) for k, v in graphs.items()})
    atomic_write_bytes(cached, buf.getvalue())
    for old in cached.parent.glob(f"{stem.name}-*.npz"):  # exports of older code or weights: never read again
        if old != cached and old.stem[:-21] == stem.name:
            old.unlink(missing_ok=True)
    return graphs


@lru_cache(maxsize=16)
def deployed(path: str):
    """A shipped model on ONNX Runtime, what a device runs; an MoE with its routing outputs (`explain`), which
    Classify shows. Loaded once per process, from the cached export (`deployment_graphs`)."""
    from ..deploy.runtime import OnnxRuntimeModel

    graphs = deployment_graphs(str(path))
    if "explain" in graphs:
        return OnnxRuntimeModel(graphs["explain"])
    return OnnxRuntimeModel(graphs["device"], graphs["batched"])


def onnx_file(path: str) -> bytes:
    """The shipped model as the ONNX file a user deploys (one clip per call, z-scoring inside, metadata)."""
    return deployment_graphs(str(path))["download"]


def _cached_run(key: str) -> dict | None:
    """A cached run's record, read only (no quarantining here: classify never writes into results/)."""
    from ..experiments.store import ResultStore

    try:
        record = json.loads((ResultStore().runs / f"{key}.json").read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("key") == key else None


def model_scores(path: str) -> dict:
    """How well the model does on data it never saw, from the cached runs of its own training config (results/).

    `held_out`: the run that produced this very model (same config key): its test fold (ESC-50 fold 4 for the
    shipped models, trained on the other folds). `cross_validation`: the same config on every fold cached (mean
    and sample std over folds). Either is None when its runs are not cached.
    """
    from ..core.cache import config_key

    meta = model_info(str(path))
    cfg = meta.get("config", {})
    out = {"variant": meta.get("variant"), "dataset": cfg.get("dataset"), "task": cfg.get("task"),
           "protocol": cfg.get("protocol"), "seed": cfg.get("seed"), "selection": cfg.get("selection"),
           "held_out": None, "cross_validation": None}
    own = _cached_run(meta["key"]) if meta.get("key") else None
    if own is not None:
        out["held_out"] = {"fold": own["fold"], "f1_macro": float(own["f1_macro"]), "accuracy": float(own["accuracy"]),
                           "n_test": own.get("n_test"), "key": meta["key"]}
    runs = {}
    for fold in range(1, 11):  # the dataset's folds: ESC-50 and folder datasets have 5, UrbanSound8K 10
        rec = _cached_run(config_key({**cfg, "fold": fold})) if cfg else None
        if rec is not None:
            runs[fold] = rec
    if len(runs) >= 2:
        f1 = np.array([r["f1_macro"] for r in runs.values()], dtype=float)
        acc = np.array([r["accuracy"] for r in runs.values()], dtype=float)
        out["cross_validation"] = {"folds": sorted(runs), "f1_mean": float(f1.mean()), "f1_std": float(f1.std(ddof=1)),
                                   "accuracy_mean": float(acc.mean()), "accuracy_std": float(acc.std(ddof=1))}
    return out


def describe_scores(scores: dict) -> str:
    """One line a user can weigh an answer by: the held-out figures, what they were measured on, and the CV."""
    h, cv = scores["held_out"], scores["cross_validation"]
    if h is None and cv is None:
        return "held-out scores: not available (this model's cross-validation runs are not in results/)"
    parts = []
    where = f"{scores['dataset']} {scores['protocol']} folds, seed {scores['seed']}"
    if h is not None:
        n = f", {h['n_test']} clips" if h.get("n_test") else ""
        parts.append(f"held-out macro-F1 {h['f1_macro']:.3f}, accuracy {h['accuracy']:.3f} "
                     f"(test fold {h['fold']}, unseen in training{n}; {where})")
    if cv is not None:
        folds = ", ".join(map(str, cv["folds"]))
        parts.append(f"its recipe under {len(cv['folds'])}-fold cross-validation (folds {folds}): macro-F1 "
                     f"{cv['f1_mean']:.3f} ± {cv['f1_std']:.3f}, accuracy {cv['accuracy_mean']:.3f} ± "
                     f"{cv['accuracy_std']:.3f}")
    return "; ".join(parts)


def audio_recipe() -> str:
    from ..audio.spectrogram import RECIPES

    return "audio->" + RECIPES["esc50-figure"]


def embed_windows(windows: np.ndarray, backbone: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(figure images, embeddings (n, D)) of 5 s training windows at 44.1 kHz, through the cached pipeline."""
    from ..audio.decode import SAMPLE_RATE
    from ..audio.embeddings import content_hash, embed_images
    from ..audio.spectrogram import render_figure

    images = [render_figure(w, SAMPLE_RATE) for w in windows]
    emb = embed_images(images, [content_hash(w) for w in windows], audio_recipe(), backbone=backbone, progress=False,
                       runtime="onnxruntime")
    return images, emb


@dataclass
class Window:
    """One 5 s window of a clip and the model's answer for it."""

    start_s: float
    probs: np.ndarray  # (n_classes,)
    image: np.ndarray
    routing: dict | None = None  # an MoE's routing record for this window


@dataclass
class Prediction:
    """A clip's answer: the mean of its windows' class probabilities (`AGGREGATION`), and every window's own."""

    class_names: list[str]
    probs: np.ndarray  # (n_classes,)
    windows: list[Window]
    clip: object
    timings_ms: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(self.class_names[i], float(self.probs[i])) for i in order]

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probs))]

    @property
    def shown(self) -> Window:
        """The window that speaks most for the clip's answer (highest probability of the answer's class)."""
        c = int(np.argmax(self.probs))
        return max(self.windows, key=lambda w: w.probs[c])

    @property
    def image(self) -> np.ndarray:
        return self.shown.image

    @property
    def routing(self) -> dict | None:
        return self.shown.routing

    def timeline(self) -> list[dict]:
        """One row per window: start, end, top class and its probability (and the MoE's chosen expert)."""
        rows = []
        for w in self.windows:
            c = int(np.argmax(w.probs))
            row = {"start_s": w.start_s, "end_s": w.start_s + WINDOW_S, "label": self.class_names[c],
                   "probability": float(w.probs[c])}
            if w.routing is not None:
                row["expert"] = int(w.routing["chosen_expert"])
            rows.append(row)
        return rows


WINDOW_S = 5.0
AGGREGATION = ("mean of the 5 s windows' class probabilities (windows every 2.5 s; a clip of up to 5 s is one window, "
               "padded with silence)")


def classify(source, model_path, max_seconds: float = 60.0) -> Prediction:
    """Classify an audio file/bytes/upload with a shipped model on ONNX Runtime; raises AudioError on bad audio.

    The clip is brought to the training conditions first (44.1 kHz; 5 s windows, see `qmoe.audio.decode.training_windows`);
    every window is answered, and the clip's answer is `AGGREGATION`.
    """
    from ..audio.decode import load_audio, training_windows

    model_path = Path(model_path)
    if not model_path.exists():
        raise ConfigError(f"no trained model at {model_path}")
    meta = model_info(str(model_path))
    t = {"start": time.perf_counter()}
    clip = load_audio(source, max_seconds=max_seconds)
    windows, starts = training_windows(clip)
    t["decode"] = time.perf_counter()
    images, emb = embed_windows(windows, meta["config"]["backbone"])
    t["render+embed"] = time.perf_counter()
    model = deployed(str(model_path))  # ONNX Runtime
    x = standardize(str(model_path), emb)
    if "router_probs" in model.outputs:  # the routing primitives come out of the same ONNX Runtime pass
        out = model.run_all(x)
        rec = load_model(str(model_path)).model.record_from(out["router_probs"], out["mc_probs"],
                                                            out["expert_logits"])
        routing = [{k: np.asarray(v)[i] for k, v in rec.items()} for i in range(len(x))]
        probs = rec["class_probs"].astype(np.float64)
    else:
        from ..deploy.runtime import softmax

        probs = softmax(model(x).astype(np.float64))
        routing = [None] * len(x)
    t["model"] = time.perf_counter()
    steps = list(t)
    timings = {s: 1000 * (t[s] - t[p]) for p, s in zip(steps, steps[1:])}
    parts = [Window(float(s), p, im, r) for s, p, im, r in zip(starts, probs, images, routing)]
    return Prediction(list(meta["class_names"]), probs.mean(0), parts, clip, timings)


AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".au", ".caf", ".w64")


def audio_files(sources) -> list[Path]:
    """The files to classify: a folder stands for its audio files (recursively, by suffix, sorted), a file for
    itself whatever its suffix (a bad one gets its own error)."""
    out = []
    for s in map(Path, sources):
        if s.is_dir():
            out += sorted(f for f in s.rglob("*") if f.suffix.lower() in AUDIO_SUFFIXES and f.is_file())
        else:
            out.append(s)
    return out


def audio_path_check(model_path, progress: bool = True) -> dict:
    """Macro-F1 of a shipped model on the fold-4 audio (decode, render, embed) vs the shared figures."""
    from sklearn.metrics import f1_score
    from tqdm.auto import tqdm

    from ..audio.decode import load_audio, training_windows
    from ..datasets import get_dataset

    tm = load_model(str(model_path))
    cfg = tm.info["config"]
    ds = get_dataset(cfg["dataset"], cfg["backbone"])
    y = ds.task(cfg["task"]).labels
    rows = np.flatnonzero(ds.folds == SHIP_FOLD)
    audio_dir = paths.SHARED_DIR / "datasets" / "esc50" / "audio"
    emb = []
    for i in tqdm(rows, desc="fold-4 audio", disable=not progress):
        windows, _ = training_windows(load_audio(audio_dir / f"{ds.meta['name'].iloc[i]}.flac"))
        emb.append(embed_windows(windows, cfg["backbone"])[1][0])  # a 5 s ESC-50 clip is one window
    pred_audio = tm.predict_proba(np.stack(emb)).argmax(1)
    pred_fig = tm.predict_proba(ds.X[rows]).argmax(1)
    return {"n": int(len(rows)), "f1_audio": float(f1_score(y[rows], pred_audio, average="macro")),
            "f1_figures": float(f1_score(y[rows], pred_fig, average="macro")),
            "agreement": float((pred_audio == pred_fig).mean()),
            "embedding_hash": hashlib.sha256(np.stack(emb).tobytes()).hexdigest()[:12]}
