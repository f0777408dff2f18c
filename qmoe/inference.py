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


def embed_windows(windows: np.ndarray, backbone: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(figure images, embeddings (n, D)) of 5 s training windows at 44.1 kHz, through the cached pipeline."""
    from .audio import SAMPLE_RATE
    from .embeddings import content_hash, embed_images
    from .spectrogram import render_figure

    images = [render_figure(w, SAMPLE_RATE) for w in windows]
    emb = embed_images(images, [content_hash(w) for w in windows], audio_recipe(), backbone=backbone, progress=False)
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

    The clip is brought to the training conditions first (44.1 kHz; 5 s windows, see `qmoe.audio.training_windows`);
    every window is answered, and the clip's answer is `AGGREGATION`.
    """
    from .audio import load_audio, training_windows

    model_path = Path(model_path)
    if not model_path.exists():
        raise ConfigError(f"no trained model at {model_path}")
    tm = load_model(str(model_path))
    t = {"start": time.perf_counter()}
    clip = load_audio(source, max_seconds=max_seconds)
    windows, starts = training_windows(clip)
    t["decode"] = time.perf_counter()
    images, emb = embed_windows(windows, tm.info["config"]["backbone"])
    t["render+embed"] = time.perf_counter()
    model = deployed(str(model_path))  # ONNX Runtime
    x = tm.standardize(emb)
    if hasattr(tm.model, "record_from"):  # the routing primitives come out of the same ONNX Runtime pass
        out = model.run_all(x)
        rec = tm.model.record_from(out["router_probs"], out["mc_probs"], out["expert_logits"])
        routing = [{k: np.asarray(v)[i] for k, v in rec.items()} for i in range(len(x))]
        probs = rec["class_probs"].astype(np.float64)
    else:
        logits = model(x).astype(np.float64)
        probs = np.exp(logits - logits.max(1, keepdims=True))
        probs /= probs.sum(1, keepdims=True)
        routing = [None] * len(x)
    t["model"] = time.perf_counter()
    steps = list(t)
    timings = {s: 1000 * (t[s] - t[p]) for p, s in zip(steps, steps[1:])}
    parts = [Window(float(s), p, im, r) for s, p, im, r in zip(starts, probs, images, routing)]
    return Prediction(tm.class_names, probs.mean(0), parts, clip, timings)


def audio_path_check(model_path, progress: bool = True) -> dict:
    """Macro-F1 of a shipped model on the fold-4 audio (decode, render, embed) vs the shared figures."""
    from sklearn.metrics import f1_score
    from tqdm.auto import tqdm

    from .audio import load_audio, training_windows
    from .datasets import get_dataset

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
