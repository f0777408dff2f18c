"""Classify a sound: decode -> figure -> embedding -> shipped model on ONNX Runtime (and its routing, for an MoE).

Shipped models live in data/models/ (`<dataset>-<task>-<variant>.safetensors`); each was trained
on ESC-50 folds 1, 2, 3, 5, so the fold-4 example clips are honest tests.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from . import checkpoint, paths
from .errors import ConfigError

SHIP_FOLD = 4  # held out by every shipped model


def model_file_stem(dataset: str, task: str, variant: str) -> str:
    return f"{dataset}-{task}-{variant}".replace("/", "_").replace("@", "_alpha").replace(".", "p")


def shipped_models() -> dict[str, Path]:
    """Display name ('esc50 / major / FP32-Base') -> checkpoint path; the paper's task first."""
    import json

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
def load_model(path: str) -> checkpoint.TrainedModel:
    return checkpoint.load(path)


@lru_cache(maxsize=16)
def deployed(path: str):
    """A shipped model on ONNX Runtime, what a device runs; an MoE with its routing outputs (`explain`), which
    Classify shows. Loaded once per process."""
    from .deploy.runtime import load

    model = load_model(path).model
    return load(model, "onnxruntime", explain=hasattr(model, "record_from"))


@lru_cache(maxsize=16)
def onnx_file(path: str) -> bytes:
    """The shipped model as the ONNX file a user deploys (one clip per call, z-scoring inside, metadata)."""
    from .deploy.export import export_trained

    return export_trained(load_model(path)).SerializeToString()


def audio_recipe() -> str:
    from .spectrogram import RECIPES

    return "audio->" + RECIPES["esc50-figure"]


def embed_clip(samples: np.ndarray, sr: int, backbone: str) -> tuple[np.ndarray, np.ndarray]:
    """(figure image, embedding) of a decoded clip, through the cached embedding pipeline."""
    from .embeddings import content_hash, embed_images
    from .spectrogram import render_figure

    image = render_figure(samples, sr)
    emb = embed_images([image], [content_hash(samples)], audio_recipe(), backbone=backbone, progress=False)
    return image, emb[0]


@dataclass
class Prediction:
    class_names: list[str]
    probs: np.ndarray  # (n_classes,)
    image: np.ndarray
    embedding: np.ndarray
    clip: object
    routing: dict | None = None
    timings_ms: dict = field(default_factory=dict)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        order = np.argsort(-self.probs)[:k]
        return [(self.class_names[i], float(self.probs[i])) for i in order]

    @property
    def label(self) -> str:
        return self.class_names[int(np.argmax(self.probs))]


def classify(source, model_path, max_seconds: float = 60.0) -> Prediction:
    """Classify an audio file/bytes/upload with a checkpoint; raises AudioError on bad audio."""
    from .audio import load_audio

    model_path = Path(model_path)
    if not model_path.exists():
        raise ConfigError(f"no trained model at {model_path}")
    tm = load_model(str(model_path))
    t = {"start": time.perf_counter()}
    clip = load_audio(source, sr=22050, max_seconds=max_seconds)
    t["decode"] = time.perf_counter()
    image, emb = embed_clip(clip.samples, clip.sr, tm.info["config"]["backbone"])
    t["render+embed"] = time.perf_counter()
    model = deployed(str(model_path))  # ONNX Runtime
    routing = None
    x = tm.standardize(emb)
    if hasattr(tm.model, "record_from"):  # the routing primitives come out of the same ONNX Runtime pass
        out = model.run_all(x)
        rec = tm.model.record_from(out["router_probs"], out["mc_probs"], out["expert_logits"])
        routing = {k: np.asarray(v)[0] for k, v in rec.items()}
        probs = routing["class_probs"].astype(np.float64)
    else:
        logits = model(x)[0].astype(np.float64)
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
    t["model"] = time.perf_counter()
    steps = list(t)
    timings = {s: 1000 * (t[s] - t[p]) for p, s in zip(steps, steps[1:])}
    return Prediction(tm.class_names, probs, image, emb, clip, routing, timings)


def audio_path_check(model_path, progress: bool = True) -> dict:
    """Macro-F1 of a shipped model on the fold-4 audio (decode, render, embed) vs the shared figures."""
    from sklearn.metrics import f1_score
    from tqdm.auto import tqdm

    from .audio import load_audio
    from .datasets import get_dataset

    tm = load_model(str(model_path))
    cfg = tm.info["config"]
    ds = get_dataset(cfg["dataset"], cfg["backbone"])
    y = ds.task(cfg["task"]).labels
    rows = np.flatnonzero(ds.folds == SHIP_FOLD)
    audio_dir = paths.SHARED_DIR / "datasets" / "esc50" / "audio"
    emb = []
    for i in tqdm(rows, desc="fold-4 audio", disable=not progress):
        clip = load_audio(audio_dir / f"{ds.meta['name'].iloc[i]}.flac")
        emb.append(embed_clip(clip.samples, clip.sr, cfg["backbone"])[1])
    pred_audio = tm.predict_proba(np.stack(emb)).argmax(1)
    pred_fig = tm.predict_proba(ds.X[rows]).argmax(1)
    return {"n": int(len(rows)), "f1_audio": float(f1_score(y[rows], pred_audio, average="macro")),
            "f1_figures": float(f1_score(y[rows], pred_fig, average="macro")),
            "agreement": float((pred_audio == pred_fig).mean()),
            "embedding_hash": hashlib.sha256(np.stack(emb).tobytes()).hexdigest()[:12]}
