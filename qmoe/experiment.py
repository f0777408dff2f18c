"""Cross-validation runs: one run = (dataset, task, protocol, variant, fold, seed, options).

Each run is cached in the result store under the hash of its full config (hyper-parameters,
embedding backbone/weights/recipe, selection rule), with the code version that produced it, so
the same config never computes twice.
"""
from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field, replace
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
from .deploy.runtime import DEFAULT_RUNTIME, load, parity
from .measure import exclusive, measure_model, model_bytes, param_count, torch_threads
from .train import fit, seed_everything
from .variants import create_model, get_variant

THREADS = int(os.environ.get("QMOE_THREADS", "1"))  # fixed, so timings and float rounding are repeatable
SCALE_FLOOR = 0.1
LATENCY_STRIDE, LATENCY_ROUNDS = 4, 3  # per-sample latency over every 4th test clip (100 distinct), 3 rounds
ENERGY_SECONDS = 1.0  # codecarbon tracks at least this long per runtime (its estimate is power x duration)
COMPARE_RUNTIME, COMPARE_SEEDS = "torch-eager", (0,)  # seed-0 runs are also measured on torch eager, to compare
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


ENGINE = 2  # bumped when the same config would give a different result: 2 = int8 steps, qmoe PTQ, ONNX Runtime


def full_config(cfg: RunConfig, ds) -> dict:
    """Everything that determines a run's result (the cache key is its hash): the run's config, the variant's full
    builder options (its registered ones and the run's overrides), the training recipe and the embedding."""
    spec = get_variant(cfg.variant)
    return {**asdict(cfg), "model": {**spec.options, **cfg.options}, "train": spec.train.to_dict(),
            "embedding": ds.embedding_info,
            "standardize": f"z-score fitted on the training folds, std floored at {SCALE_FLOOR} x median std",
            "engine": ENGINE}


def run_key(cfg: RunConfig) -> str:
    """The cache key of a run: the hash of its full config."""
    return config_key(full_config(cfg, get_dataset(cfg.dataset, cfg.backbone)))


def _scaler(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and a floored std: near-constant features (float16 noise) must not blow up to |z| ~ 1000."""
    mean = X.mean(0)
    std = X.std(0)
    return mean.astype(np.float32), np.maximum(std, SCALE_FLOOR * np.median(std)).astype(np.float32)


@dataclass
class FittedFold:
    """One trained fold: the deployable model (post-training steps applied) and how it was trained."""

    cfg: RunConfig
    config: dict
    key: str
    model: torch.nn.Module
    mean: np.ndarray
    scale: np.ndarray
    X: np.ndarray  # every item of the dataset, standardized with this fold's training statistics
    y: np.ndarray
    class_names: tuple
    fit_idx: np.ndarray
    val_idx: np.ndarray
    test_idx: np.ndarray
    history: dict
    train_seconds: float
    train_energy: object  # EnergyRecord of the training
    params: int  # learned numbers of the trained model (before post-training quantization)


def fit_fold(cfg: RunConfig, progress: bool = False, save_model_to=None, train_overrides: dict | None = None) -> FittedFold:
    """Train one fold of `cfg` (deterministic given its seed); nothing is cached here (see `run`).

    `train_overrides` replaces fields of the variant's TrainConfig (e.g. fewer epochs in a quick test); a run
    cached by `run` never uses it.
    """
    cfg.validate()
    ds = get_dataset(cfg.dataset, cfg.backbone)
    config = full_config(cfg, ds)
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
    recipe = replace(spec.train, **(train_overrides or {}))
    with torch_threads(THREADS):
        seed_everything(cfg.seed)
        model = create_model(cfg.variant, ds.dim, n_classes, **cfg.options)
        t0 = time.perf_counter()
        with EnergyTracker(n_items=len(fit_idx)) as tracker:
            history = fit(model, recipe, Xs[fit_idx], y[fit_idx], Xs[val_idx], y[val_idx], n_classes, cfg.seed,
                          progress=progress, desc=f"{cfg.variant} fold {cfg.fold}")
        train_seconds = time.perf_counter() - t0
        key = config_key(config)
        params = param_count(model)
        if save_model_to is not None:
            checkpoint.save(model, save_model_to, cfg.variant, ds.dim, n_classes, mean, scale,
                            {"config": config, "class_names": list(task.class_names), "key": key})
        if hasattr(model, "after_training"):
            model = model.after_training()
        model.eval()
    return FittedFold(cfg, config, key, model, mean, scale, Xs.astype(np.float32), y, tuple(task.class_names),
                      fit_idx, val_idx, test_idx, history, train_seconds, tracker.record, params)


def measure_runtimes(model: torch.nn.Module, x: np.ndarray, *, rss: bool, compare: bool,
                     deployed=None) -> tuple[dict, dict]:
    """(record fields, arrays) of `model` measured on the deployment runtime and, if `compare`, on torch eager.

    The deployment runtime's figures are the record's top-level columns; the comparison runtime's go under
    `by_runtime`. `deployed`: the model already loaded on the deployment runtime. One process measures at a time
    (`measure.exclusive`), so parallel workers' timings do not disturb each other.
    """
    fields, arrays = {}, {}
    runtimes = [DEFAULT_RUNTIME] + ([COMPARE_RUNTIME] if compare else [])
    with exclusive():
        for runtime in runtimes:
            target = deployed if runtime == DEFAULT_RUNTIME and deployed is not None else load(model, runtime, THREADS)
            m = measure_model(target, x, batch_size=len(x), rounds=LATENCY_ROUNDS, threads=THREADS, rss=rss,
                              energy_seconds=ENERGY_SECONDS)
            timings = m.pop("latency_timings_ms")
            m.update(load_average_1min=os.getloadavg()[0])  # timings taken on a busy machine are noisier
            if runtime == DEFAULT_RUNTIME:
                fields.update(m)
                arrays["latency_timings_ms"] = timings
            else:
                fields.setdefault("by_runtime", {})[runtime] = {k: v for k, v in m.items() if k != "machine"}
                arrays[f"latency_timings_ms__{runtime}"] = timings
    return fields, arrays


def run(cfg: RunConfig, store: ResultStore | None = None, progress: bool = True,
        save_model_to=None, force: bool = False) -> dict:
    """Run (or fetch from cache) one fold; returns the cached record."""
    cfg.validate()
    store = store or ResultStore()
    key = run_key(cfg)
    if not force and save_model_to is None and (hit := store.get(key)) is not None:
        return hit
    key, record, arrays = compute(cfg, progress=progress, save_model_to=save_model_to)
    store.put(key, record, arrays)
    return store.get(key)


def compute(cfg: RunConfig, progress: bool = False, save_model_to=None) -> tuple[str, dict, dict]:
    """Train, evaluate and measure one fold: (cache key, record, per-sample arrays), not stored. Whoever holds the
    store writes it (a worker on another machine hands its result back instead of writing)."""
    cfg.validate()
    f = fit_fold(cfg, progress=progress, save_model_to=save_model_to)
    model, test_idx = f.model, f.test_idx
    spec = get_variant(cfg.variant)
    with torch_threads(THREADS):
        X_test = torch.as_tensor(f.X[test_idx])
        with torch.no_grad():
            probs = torch.softmax(model(X_test).float(), -1).numpy()
        y_true, y_pred = f.y[test_idx], probs.argmax(1)
        arrays = {"test_idx": test_idx, "y_true": y_true, "y_pred": y_pred, "probs": probs.astype(np.float32)}
        if hasattr(model, "routing_record"):
            for k, v in model.routing_record(X_test).items():
                arrays[f"routing__{k}"] = np.asarray(v)
        ds = get_dataset(cfg.dataset, cfg.backbone)
        deployed = load(model, DEFAULT_RUNTIME, THREADS)
        agreement = parity(model, f.X[test_idx], deployed)  # does the deployed model answer as the engine does?
        measured, timings = measure_runtimes(model, f.X[test_idx][::LATENCY_STRIDE],
                                             rss=cfg.fold == ds.fold_ids(cfg.protocol)[0],  # RAM once per config
                                             compare=cfg.seed in COMPARE_SEEDS, deployed=deployed)
        measured.update(params=f.params, model_bytes=model_bytes(model), onnx_agreement=agreement["agreement"],
                        onnx_max_prob_diff=agreement["max_prob_diff"])
    arrays.update(timings)
    for k in arrays:  # probability tables are the bulk of the cache; 3 significant digits are plenty
        if k == "probs" or (k.startswith("routing__") and ("probs" in k or k.startswith("routing__mc_"))):
            arrays[k] = np.asarray(arrays[k]).astype(np.float16)

    record = {
        "config": f.config,
        "dataset": cfg.dataset, "task": cfg.task, "protocol": cfg.protocol, "variant": cfg.variant,
        "fold": cfg.fold, "seed": cfg.seed, "selection": cfg.selection, "options": cfg.options,
        "leaky": cfg.protocol in LEAKY_PROTOCOLS or cfg.selection == "reported-fold",
        "family": spec.family, "bits": spec.bits, "class_names": list(f.class_names),
        "expert_names": list(getattr(model, "expert_names", [])),
        "f1_macro": float(f1_score(y_true, y_pred, average="macro")),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "n_train": int(len(f.fit_idx)), "n_val": int(len(f.val_idx)), "n_test": int(len(test_idx)),
        "best_epoch": f.history["best_epoch"], "epochs": f.history["epochs"],
        "train_seconds": f.train_seconds,
        "train_energy_mj": f.train_energy.energy_mj, "train_co2_ug": f.train_energy.co2_ug,
        "code_version": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **measured,
    }
    return f.key, record, arrays


def export_run(cfg: RunConfig, to, store: ResultStore | None = None) -> dict:
    """Run one fold (retrained: weights are not cached) and write its model as ONNX into the folder `to`."""
    import tempfile
    from pathlib import Path

    from .deploy.export import export_trained

    with tempfile.TemporaryDirectory(prefix="qmoe-export-") as tmp:
        record = run(cfg, store, progress=False, save_model_to=Path(tmp) / "model")
        tm = checkpoint.load(Path(tmp) / "model")
    name = f"{cfg.dataset}-{cfg.task}-{cfg.protocol}-{cfg.variant}-fold{cfg.fold}-seed{cfg.seed}"
    path = Path(to) / (name.replace("/", "_").replace(":", "_") + ".onnx")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(export_trained(tm).SerializeToString())
    return {**record, "onnx_path": str(path)}


def run_grid(dataset: str = "esc50", tasks=("major",), protocols=("predefined",), variants=("FP32-Base",),
             folds=None, seeds=(0,), store: ResultStore | None = None, progress: bool = True,
             on_progress=None, export_to=None, **kw) -> list[dict]:
    """Run every combination (cached ones are read back, not recomputed; with `export_to` every fold is retrained
    and written as ONNX there)."""
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
        out.append(export_run(job, export_to, store) if export_to else run(job, store, progress=progress))
        if on_progress:
            on_progress(i + 1, len(jobs), job)
    return out
