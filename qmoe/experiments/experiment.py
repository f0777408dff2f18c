"""Cross-validation runs: one run = (dataset, task, protocol, variant, fold, seed, options).

Each run is cached in the result store under the hash of its full config (hyper-parameters,
embedding backbone/weights/recipe, selection rule), with the code version that produced it, so
the same config never computes twice.
"""
from __future__ import annotations

import inspect
import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone

import numpy as np
import torch
from sklearn.metrics import accuracy_score, f1_score
from tqdm.auto import tqdm

from ..audio.backbones import DEFAULT_BACKBONE
from ..core.cache import code_version, config_key
from ..core.errors import ConfigError
from ..datasets import get_dataset
from ..datasets.base import LEAKY_PROTOCOLS
from ..deploy.runtime import DEFAULT_RUNTIME, load, parity
from ..measure.energy import EnergyTracker
from ..measure.suite import exclusive, measure_model
from ..measure.timing import model_bytes, param_count, torch_threads
from ..models import checkpoint
from ..models.registry import create_model, get_variant
from .store import ResultStore
from .train import fit, fit_views, seed_everything

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


@dataclass(frozen=True)
class FoldData:
    """One fold ready to train on: its splits and every item standardized with the fold's training statistics.

    It depends on (dataset, backbone, task, protocol, fold, seed, selection) only, not on the variant: the runs of
    a sweep that share a fold share it (`DataCache`). `Xs` is read-only, since it may be shared."""

    ds: object
    train_idx: np.ndarray
    test_idx: np.ndarray
    fit_idx: np.ndarray
    val_idx: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    Xs: np.ndarray


def prepare_fold(cfg: RunConfig, ds) -> FoldData:
    """Split `cfg`'s fold (validation carved from the training folds, or the reported fold as the reference does)
    and standardize every item with the training folds' statistics."""
    train_idx, test_idx = ds.split(cfg.task, cfg.protocol, cfg.fold)
    if cfg.selection == "validation":
        fit_idx, val_idx = ds.validation_split(cfg.task, train_idx, cfg.seed)
    else:
        fit_idx, val_idx = train_idx, test_idx
    mean, scale = _scaler(ds.X[train_idx])
    Xs = (ds.X - mean) / scale
    Xs.flags.writeable = False
    return FoldData(ds, train_idx, test_idx, fit_idx, val_idx, mean, scale, Xs)


class DataCache:
    """Datasets and prepared folds kept in memory, for a process that runs many configs (a sweep's worker).

    A sweep repeats the same folds for every alpha or bit-width: loading the embeddings and carving the grouped
    validation split (a third of a second on ESC-50) once per worker instead of once per run. Keep one only as long
    as the data on disk cannot change under it (a worker pool lives for one grid); `DataCache()` per call otherwise.
    """

    def __init__(self, max_folds: int = 10):
        self.max_folds = max_folds
        self._datasets: dict = {}
        self._folds: OrderedDict = OrderedDict()

    def dataset(self, name: str, backbone: str = DEFAULT_BACKBONE):
        if (name, backbone) not in self._datasets:
            self._datasets[name, backbone] = get_dataset(name, backbone)
        return self._datasets[name, backbone]

    def fold(self, cfg: RunConfig) -> FoldData:
        key = (cfg.dataset, cfg.backbone, cfg.task, cfg.protocol, cfg.fold, cfg.seed, cfg.selection)
        if key in self._folds:
            self._folds.move_to_end(key)
        else:
            self._folds[key] = prepare_fold(cfg, self.dataset(cfg.dataset, cfg.backbone))
            while len(self._folds) > self.max_folds:
                self._folds.popitem(last=False)
        return self._folds[key]


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
    shared: int = 1  # runs that one training served (`fit_shared`); its time and energy are theirs together


def fit_fold(cfg: RunConfig, progress: bool = False, save_model_to=None, train_overrides: dict | None = None,
             data: DataCache | None = None) -> FittedFold:
    """Train one fold of `cfg` (deterministic given its seed); nothing is cached here (see `run`).

    `train_overrides` replaces fields of the variant's TrainConfig (e.g. fewer epochs in a quick test); a run
    cached by `run` never uses it. `data`: datasets and folds already prepared (a sweep's worker keeps one).
    """
    cfg.validate()
    fold = (data or DataCache()).fold(cfg)
    ds = fold.ds
    config = full_config(cfg, ds)
    task = ds.task(cfg.task)
    n_classes = len(task.class_names)
    test_idx, fit_idx, val_idx = fold.test_idx, fold.fit_idx, fold.val_idx
    mean, scale, Xs = fold.mean, fold.scale, fold.Xs
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


INFERENCE_ONLY = ("bayesian", "mc_samples", "mc_seed")  # MoE options that training never reads
CURIOSITY = ("alpha", "curiosity_mode", "curiosity_in_training")  # ... nor these, when curiosity is off in training


def training_view(cfg: RunConfig) -> tuple[str, dict] | None:
    """(what an MoE run's training depends on, as text; the settings only its inference reads), None for a single
    model. MoE runs with the same text train identically, step for step: they differ only in the Bayesian router's
    Monte Carlo passes and, when curiosity is off in training (alpha 0, `curiosity_in_training=False` or the
    reference-main mode), in Eq. 8's alpha and mode, which act at inference only. `fit_shared` trains them once."""
    spec = get_variant(cfg.variant)
    if spec.family != "moe":
        return None
    from ..models.moe import QuantizedMoE

    defaults = {k: p.default for k, p in inspect.signature(QuantizedMoE).parameters.items()
                if p.default is not inspect.Parameter.empty}
    o = {**defaults, **spec.options, **cfg.options}
    o.update(alpha=float(o["alpha"]), bayesian=bool(o["bayesian"]), mc_samples=int(o["mc_samples"]),
             mc_seed=int(o["mc_seed"]), curiosity_in_training=bool(o["curiosity_in_training"]))
    curious_in_training = o["alpha"] > 0 and o["curiosity_mode"] != "reference-main" and o["curiosity_in_training"]
    view = {k: o[k] for k in INFERENCE_ONLY + (() if curious_in_training else CURIOSITY)}
    trains_on = {"run": [cfg.dataset, cfg.backbone, cfg.task, cfg.protocol, cfg.fold, cfg.seed, cfg.selection],
                 "model": {k: v for k, v in o.items() if k not in view}, "train": spec.train.to_dict()}
    return json.dumps(trains_on, sort_keys=True, default=str), view


def fit_shared(cfgs: list[RunConfig], progress: bool = False, data: DataCache | None = None,
               train_overrides: dict | None = None) -> list[FittedFold]:
    """Train runs that train alike (one `training_view` text) once, and give each its own best epoch, picked by its
    own validation loss (`train.fit_views`): each FittedFold is exactly what `fit_fold` gives for its config (same
    weights, history, predictions), except its training time and energy, which are the one shared training's
    (`shared` > 1 says so). A sweep over alpha with curiosity at inference only trains once per fold."""
    if len(cfgs) == 1:
        return [fit_fold(cfgs[0], progress=progress, train_overrides=train_overrides, data=data)]
    views = [training_view(c) for c in cfgs]
    if any(v is None for v in views) or len({v[0] for v in views}) != 1:
        raise ConfigError("these runs do not train alike (only MoE runs that differ in inference-time settings do): "
                          + "; ".join(f"{c.variant} {c.options}" for c in cfgs))
    first = cfgs[0]
    first.validate()
    fold = (data or DataCache()).fold(first)
    ds, fit_idx, val_idx, Xs = fold.ds, fold.fit_idx, fold.val_idx, fold.Xs
    task = ds.task(first.task)
    n_classes, y = len(task.class_names), task.labels
    recipe = replace(get_variant(first.variant).train, **(train_overrides or {}))
    out = []
    with torch_threads(THREADS):
        seed_everything(first.seed)
        model = create_model(first.variant, ds.dim, n_classes, **first.options)
        t0 = time.perf_counter()
        with EnergyTracker(n_items=len(fit_idx)) as tracker:
            trained = fit_views(model, recipe, Xs[fit_idx], y[fit_idx], Xs[val_idx], y[val_idx], n_classes,
                                first.seed, views=[v for _, v in views], progress=progress,
                                desc=f"{first.variant} fold {first.fold} (x{len(cfgs)})")
        train_seconds = time.perf_counter() - t0
        for cfg, (history, state) in zip(cfgs, trained):
            cfg.validate()
            m = create_model(cfg.variant, ds.dim, n_classes, **cfg.options)
            m.load_state_dict(state)
            m.eval()
            params = param_count(m)
            if hasattr(m, "after_training"):
                m = m.after_training()
            m.eval()
            config = full_config(cfg, ds)
            out.append(FittedFold(cfg, config, config_key(config), m, fold.mean, fold.scale, Xs.astype(np.float32),
                                  y, tuple(task.class_names), fit_idx, val_idx, fold.test_idx, history, train_seconds,
                                  tracker.record, params, len(cfgs)))
    return out


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


def compute(cfg: RunConfig, progress: bool = False, save_model_to=None,
            data: DataCache | None = None) -> tuple[str, dict, dict]:
    """Train, evaluate and measure one fold: (cache key, record, per-sample arrays), not stored. Whoever holds the
    store writes it (a worker on another machine hands its result back instead of writing). `data`: see fit_fold."""
    cfg.validate()
    data = data or DataCache()
    return evaluate(fit_fold(cfg, progress=progress, save_model_to=save_model_to, data=data), data)


def compute_shared(cfgs: list[RunConfig], progress: bool = False,
                   data: DataCache | None = None) -> list[tuple[str, dict, dict]]:
    """`compute` for runs that train alike (see `fit_shared`): one training, each run evaluated and measured."""
    data = data or DataCache()
    return [evaluate(f, data) for f in fit_shared(cfgs, progress=progress, data=data)]


def evaluate(f: FittedFold, data: DataCache | None = None) -> tuple[str, dict, dict]:
    """Evaluate and measure a trained fold: (cache key, record, per-sample arrays), as `compute` stores them."""
    cfg, data = f.cfg, data or DataCache()
    model, test_idx = f.model, f.test_idx
    spec = get_variant(cfg.variant)
    with torch_threads(THREADS):
        X_test = torch.as_tensor(f.X[test_idx])
        routing = model.routing_record(X_test) if hasattr(model, "routing_record") else None
        if routing is not None and getattr(model, "runs_every_expert", False):
            probs = routing["class_probs"]  # the forward's very output: its expert pass is not run a second time
        else:
            with torch.no_grad():
                probs = torch.softmax(model(X_test).float(), -1).numpy()
        y_true, y_pred = f.y[test_idx], probs.argmax(1)
        arrays = {"test_idx": test_idx, "y_true": y_true, "y_pred": y_pred, "probs": probs.astype(np.float32)}
        for k, v in (routing or {}).items():
            arrays[f"routing__{k}"] = np.asarray(v)
        ds = data.dataset(cfg.dataset, cfg.backbone)
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
        **({"train_shared_by": f.shared} if f.shared > 1 else {}),  # one training served this many runs
        "code_version": code_version(),
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        **measured,
    }
    return f.key, record, arrays


def export_run(cfg: RunConfig, to, store: ResultStore | None = None) -> dict:
    """Run one fold (retrained: weights are not cached) and write its model as ONNX into the folder `to`."""
    import tempfile
    from pathlib import Path

    from ..deploy.export import export_trained

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
