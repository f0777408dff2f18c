"""Cross-validation runs: one run = (dataset, task, protocol, variant, fold, seed, options).

Each run is cached in the result store under the hash of its full config (hyper-parameters,
embedding backbone/weights/recipe, selection rule), with the code version that produced it, so
the same config never computes twice.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from . import checkpoint
from .backbones import DEFAULT_BACKBONE
from .datasets import get_dataset
from .datasets.base import LEAKY_PROTOCOLS
from .errors import ConfigError
from .store import ResultStore, code_version, config_key
from .energy import EnergyTracker
from .measure import measure_model, model_bytes, param_count, torch_threads
from .train import fit, seed_everything
from .variants import create_model, get_variant

THREADS = int(os.environ.get("QMOE_THREADS", "1"))  # fixed, so timings and float rounding are repeatable
SCALE_FLOOR = 0.1
LATENCY_STRIDE, LATENCY_ROUNDS = 4, 3  # per-sample latency over every 4th test clip (100 distinct), 3 rounds
SELECTIONS = {
    "validation": "early stopping on a validation split carved from the training folds (leak-free)",
    "reported-fold": "early stopping on the reported fold, as the reference code does (optimistic, leaky)",
}


@dataclass(frozen=True)
class RunConfig:
    dataset: str = "esc50"
    task: str = "major"
    protocol: str = "predefined"
    variant: str = "FP32-Base"
    fold: int = 1
    seed: int = 0
    backbone: str = DEFAULT_BACKBONE
    selection: str = "validation"
    options: dict = field(default_factory=dict)  # builder overrides, e.g. {"alpha": 0.2}

    def validate(self) -> None:
        get_variant(self.variant)
        if self.selection not in SELECTIONS:
            raise ConfigError(f"unknown selection {self.selection!r}; choose from {', '.join(SELECTIONS)}")


def full_config(cfg: RunConfig, ds) -> dict:
    """Everything that determines a run's result (the cache key is its hash)."""
    spec = get_variant(cfg.variant)
    return {**asdict(cfg), "train": spec.train.to_dict(), "embedding": ds.embedding_info,
            "standardize": f"z-score fitted on the training folds, std floored at {SCALE_FLOOR} x median std", "engine": 1}


def run_key(cfg: RunConfig) -> str:
    """The cache key of a run: the hash of its full config."""
    return config_key(full_config(cfg, get_dataset(cfg.dataset, cfg.backbone)))


def _scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a floored std: near-constant features (float16 noise) must not blow up to |z| ~ 1000."""
    mean = X.mean(0)
    std = X.std(0)
    return mean.astype(np.float32), np.maximum(std, SCALE_FLOOR * np.median(std)).astype(np.float32)


def run(cfg: RunConfig, store: ResultStore | None = None, progress: bool = True,
        save_model_to=None, force: bool = False) -> dict:
    """Run (or fetch from cache) one fold; returns the cached record."""
    cfg.validate()
    store = store or ResultStore()
    ds = get_dataset(cfg.dataset, cfg.backbone)
    config = full_config(cfg, ds)
    key = config_key(config)
    if not force and save_model_to is None and (hit := store.get(key)) is not None:
        return hit

    task = ds.task(cfg.task)
    n_classes = len(task.class_names)
    train_idx, test_idx = ds.split(cfg.task, cfg.protocol, cfg.fold)
    if cfg.selection == "validation":
        fit_idx, val_idx = ds.validation_split(cfg.task, train_idx, cfg.seed)
    else:
        fit_idx, val_idx = train_idx, test_idx
    mean, scale = _scaler(ds.X[train_idx])
    Xs = (ds.X - mean) / scale
    y = task.labels

    spec = get_variant(cfg.variant)
    with torch_threads(THREADS):
        seed_everything(cfg.seed)
        model = create_model(cfg.variant, ds.dim, n_classes, **cfg.options)
        t0 = time.perf_counter()
        with EnergyTracker(n_items=len(fit_idx)) as tracker:
            history = fit(model, spec.train, Xs[fit_idx], y[fit_idx], Xs[val_idx], y[val_idx], n_classes, cfg.seed,
                          progress=progress, desc=f"{cfg.variant} fold {cfg.fold}")
        train_seconds = time.perf_counter() - t0
        if save_model_to is not None:
            checkpoint.save(model, save_model_to, cfg.variant, ds.dim, n_classes, mean, scale,
                            {"config": config, "class_names": list(task.class_names), "key": key})
        if hasattr(model, "after_training"):
            model = model.after_training()
        model.eval()

        X_test = torch.as_tensor(Xs[test_idx])
        with torch.no_grad():
            probs = torch.softmax(model(X_test).float(), -1).numpy()
        y_true, y_pred = y[test_idx], probs.argmax(1)
        arrays = {"test_idx": test_idx, "y_true": y_true, "y_pred": y_pred, "probs": probs.astype(np.float32)}
        if hasattr(model, "routing_record"):
            for k, v in model.routing_record(X_test).items():
                arrays[f"routing__{k}"] = np.asarray(v)
        deploy = model.packed() if hasattr(model, "packed") else model  # what a device would run
        measured = measure_model(deploy, X_test[::LATENCY_STRIDE], batch_size=len(test_idx), rounds=LATENCY_ROUNDS,
                                 threads=THREADS, rss=cfg.fold == ds.fold_ids(cfg.protocol)[0])  # RAM once per config
        measured.update(params=param_count(model), model_bytes=model_bytes(model),
                        load_average_1min=os.getloadavg()[0])  # timings taken on a busy machine are noisier
    arrays["latency_timings_ms"] = measured.pop("latency_timings_ms")
    for k in arrays:  # probability tables are the bulk of the cache; 3 significant digits are plenty
        if k == "probs" or (k.startswith("routing__") and ("probs" in k or k.startswith("routing__mc_"))):
            arrays[k] = np.asarray(arrays[k]).astype(np.float16)

    record = {
        "config": config,
        "dataset": cfg.dataset, "task": cfg.task, "protocol": cfg.protocol, "variant": cfg.variant,
        "fold": cfg.fold, "seed": cfg.seed, "selection": cfg.selection, "options": cfg.options,
        "leaky": cfg.protocol in LEAKY_PROTOCOLS or cfg.selection == "reported-fold",
        "family": spec.family, "bits": spec.bits, "class_names": list(task.class_names),
        "expert_names": list(getattr(model, "expert_names", [])),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n_train": int(len(fit_idx)), "n_val": int(len(val_idx)), "n_test": int(len(test_idx)),
        "best_epoch": history["best_epoch"], "epochs": history["epochs"],
        "train_seconds": train_seconds,
        "train_energy_mj": tracker.record.energy_mj, "train_co2_ug": tracker.record.co2_ug,
        "code_version": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **measured,
    }
    store.put(key, record, arrays)
    return store.get(key)


def run_grid(dataset: str = "esc50", tasks=("major",), protocols=("predefined",), variants=("FP32-Base",),
             folds=None, seeds=(0,), store: ResultStore | None = None, progress: bool = True,
             on_progress=None, **kw) -> list[dict]:
    """Run every combination (cached ones are read back, not recomputed)."""
    store = store or ResultStore()
    ds = get_dataset(dataset)
    jobs = [RunConfig(dataset, t, p, v, f, s, **kw) for t in tasks for p in protocols for v in variants
            for f in (folds or ds.fold_ids(p)) for s in seeds]
    for j in jobs:
        j.validate()
    out = []
    bar = tqdm(jobs, desc="runs", unit="run", disable=not progress)
    for i, job in enumerate(bar):
        bar.set_postfix_str(f"{job.task}/{job.protocol}/{job.variant}/fold {job.fold}")
        out.append(run(job, store, progress=progress))
        if on_progress:
            on_progress(i + 1, len(jobs), job)
    return out
